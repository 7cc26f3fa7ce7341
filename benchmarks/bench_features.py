"""KDE feature throughput (views per second), 1D and 2D, on synthetic cluster views.

Views have log-uniform galaxy counts in [10, 150] (mean ~50; Ho et al. 2019 views need > 10
galaxies), the paper's grid (48 bins; 48 x 48), aperture 1.6 Mpc/h, vcut 2200 km/s.
Run: ``python benchmarks/bench_features.py [--quick]`` (prints JSON).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from dynmass.features import kde1d, kde2d
from dynmass.observations import from_views


def synthetic_views(n_views: int, seed: int = 0) -> object:
    """Cluster-like views: Gaussian v (sigma 200-1000 km/s) clipped to vcut, R in [0, 1.6]."""
    rng = np.random.default_rng(seed)
    views = []
    for n in np.exp(rng.uniform(np.log(10), np.log(150), n_views)).astype(int):
        R = 1.6 * rng.random(n) ** 0.6
        v = np.clip(rng.normal(0, rng.uniform(200, 1000), n), -2200, 2200)
        views.append((R, v))
    return from_views(views, {"aperture": 1.6, "vcut": 2200.0})


def _best_time(func, obs, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        func(obs)
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool = False) -> dict:
    """Measure KDE throughput; returns a flat dict of numbers."""
    n1, n2 = (4000, 1000) if quick else (20000, 4000)
    obs1, obs2 = synthetic_views(n1, 1), synthetic_views(n2, 2)
    reps = 2 if quick else 3
    t1 = _best_time(kde1d, obs1, reps)
    t2 = _best_time(kde2d, obs2, reps)
    return {
        "kde1d_views_per_s": n1 / t1,
        "kde2d_views_per_s": n2 / t2,
        "kde1d_n_views": n1,
        "kde2d_n_views": n2,
        "mean_galaxies_per_view": float(np.mean(obs1.n_gal)),
        "kde1d_seconds": t1,
        "kde2d_seconds": t2,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
