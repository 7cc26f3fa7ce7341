"""SDM fit + predict wall time against the number of training views (it grows ~ N^2).

Toy views (mass sets the Gaussian velocity width, Evrard et al. 2008 slope; 15-60 galaxies per
view, mean ~35), default SDM settings (inner 3-fold CV grid), prediction on 200 views.
Run: ``python benchmarks/bench_sdm.py [--quick]`` (prints JSON).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from dynmass.models.sdm import SDM
from dynmass.observations import from_views


def toy_views(n_views: int, seed: int) -> object:
    """Views whose Gaussian velocity width is set by the mass, 10^14-10^15 Msun/h."""
    rng = np.random.default_rng(seed)
    logm = rng.uniform(14, 15, n_views)
    views = []
    for lm in logm:
        v = rng.normal(0, 1082.9 * 10 ** (0.3361 * (lm - 15)), int(rng.integers(15, 60)))
        v = v[np.abs(v) < 2200]
        views.append((1.6 * rng.random(len(v)) ** 0.6, v))
    return from_views(views, {"aperture": 1.6, "vcut": 2200.0},
                      clusters={"m200c": 10**logm, "halo_id": np.arange(n_views)})


def run(quick: bool = False) -> dict:
    """Time SDM (dims 1 and 2) fit and predict at three training sizes."""
    sizes = (100, 200, 400) if quick else (250, 500, 1000)
    test = toy_views(200, 99)
    out: dict = {}
    for dims in (1, 2):
        fits = []
        for n in sizes:
            train = toy_views(n, n)
            t0 = time.perf_counter()
            model = SDM(dims=dims).fit(train, seed=0)
            t1 = time.perf_counter()
            pred = model.predict(test)
            t2 = time.perf_counter()
            out[f"sdm{dims}d_fit_s_n{n}"] = t1 - t0
            out[f"sdm{dims}d_predict200_s_n{n}"] = t2 - t1
            out[f"sdm{dims}d_scatter_dex_n{n}"] = float(np.std(pred - test.log10_m200c()))
            fits.append(t1 - t0)
        out[f"sdm{dims}d_fit_time_growth_exponent"] = float(np.polyfit(np.log(sizes), np.log(fits), 1)[0])
    out["constant_predictor_scatter_dex"] = float(np.std(test.log10_m200c()))
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
