"""Prediction throughput of the CNNs, KDE inputs included (cluster views per second).

Views are cluster-like: galaxy counts log-uniform in [10, 150] (mean ~52, like mock clusters
above the paper's 10-galaxy cut), Gaussian velocities with the Evrard et al. (2008) sigma(M200c)
clipped to vcut = 2200 km/s, R in a 1.6 Mpc/h aperture. The CNNs are fitted for one epoch on a
few hundred views (weights do not change the cost of a forward pass). Every number is the best
of several repeats (the machine is shared). torch uses its default thread count, except
``..._1thr`` (``num_threads=1``): on a shared, busy 2-core machine two OpenMP threads can be
slower than one (threads spin-waiting for a core); the KDEs use their own thread pool.

``ensemble_*``: the 10 fold models of a bundle predicting the same views, as
:func:`dynmass.models.base.ensemble_predictions` does it (the KDE images computed once for all
models, as they share one featurizer) and model by model (each ``predict`` computing its own
images, as bundles did before); the ratio is measured in the same run.

Run: ``python benchmarks/bench_predict.py [--quick]`` (prints JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np


def cluster_views(n_views: int, seed: int = 0):
    """``n_views`` one-view halos, log10 M200c uniform in [14, 15.3] Msun/h, 10-150 galaxies
    (log-uniform), sigma_v = 1082.9 km/s (M/1e15 Msun/h)^0.3361 (Evrard et al. 2008)."""
    from dynmass.observations import from_views

    rng = np.random.default_rng(seed)
    logm = rng.uniform(14.0, 15.3, n_views)
    n_gal = np.exp(rng.uniform(np.log(10), np.log(151), n_views)).astype(int)
    sigma = 1082.9 * 10 ** (0.3361 * (logm - 15))
    views = []
    for k in range(n_views):
        v = np.clip(rng.normal(0, sigma[k], n_gal[k]), -2200.0, 2200.0)
        views.append((1.6 * rng.random(n_gal[k]) ** 0.6, v))
    return from_views(views, {"aperture": 1.6, "vcut": 2200.0},
                      clusters={"halo_id": np.arange(n_views), "m200c": 10**logm})


def best_seconds(func: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of ``repeats`` calls of ``func``."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - t0)
    return best


def run(quick: bool = False) -> dict[str, float]:
    """Measure prediction throughput; returns a flat dict (views/s unless the key says)."""
    import torch

    from dynmass.features import kde1d, kde2d
    from dynmass.models.base import ensemble_predictions
    from dynmass.models.cnn import CNN1D, CNN2D

    n = 3000 if quick else 10000
    reps = 3 if quick else 5
    obs = cluster_views(n, seed=1)
    train = cluster_views(300, seed=0)
    cnn2d = CNN2D(epochs=1, val_fraction=0.0, device="cpu").fit(train, seed=0)
    cnn1d = CNN1D(epochs=1, val_fraction=0.0, device="cpu").fit(train, seed=0)
    X2 = kde2d(obs)
    cnn2d.predict_features(X2[:500])  # warm up
    t_kde2 = best_seconds(lambda: kde2d(obs), reps)
    t_kde1 = best_seconds(lambda: kde1d(obs), reps)
    t_net2 = best_seconds(lambda: cnn2d.predict_features(X2), reps)
    t_full2 = best_seconds(lambda: cnn2d.predict(obs), reps)
    t_full1 = best_seconds(lambda: cnn1d.predict(obs), reps)
    cnn2d.settings["num_threads"] = 1  # one torch thread (see module docstring)
    t_full2_1 = best_seconds(lambda: cnn2d.predict(obs), reps)
    folds = [CNN2D(epochs=1, val_fraction=0.0, device="cpu", num_threads=1).fit(train, seed=s)
             for s in range(10)]
    t_ens = best_seconds(lambda: ensemble_predictions(folds, obs), reps)
    t_each = best_seconds(lambda: [m.predict(obs) for m in folds], max(1, reps // 2))
    return {
        "cnn2d_predict_views_per_s_with_features": n / t_full2,
        "cnn2d_predict_views_per_s_network_only": n / t_net2,
        "kde2d_views_per_s": n / t_kde2,
        "kde1d_views_per_s": n / t_kde1,
        "cnn1d_predict_views_per_s_with_features": n / t_full1,
        "cnn2d_predict_views_per_s_with_features_1thr": n / t_full2_1,
        "ensemble10_cnn2d_views_per_s_features_once": n / t_ens,
        "ensemble10_cnn2d_views_per_s_features_per_model": n / t_each,
        "ensemble10_speedup": t_each / t_ens,
        "n_views": float(n),
        "mean_galaxies_per_view": float(np.mean(obs.n_gal)),
        "torch_threads": float(torch.get_num_threads()),
        "cpu_count": float(os.cpu_count() or 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
