"""Train + predict wall time of SDM against the CNNs on the same data at several data sizes.

Data: :func:`bench_train.toy_observations` (one view per halo, log10 M200c uniform in
[13.5, 15.5] Msun/h, Evrard et al. 2008 Gaussian velocities, 50-100 galaxies per view); the
training sets have 250, 500, 1000 and 2000 views (``--quick``: 100, 200, 400), the test set 200
views; seeds fixed, so every model sees exactly the same views. Each model is fitted with its
default settings (SDM: inner 3-fold CV grid, ``dims=1``, plus ``dims=2`` reported as
``sdm2d``; CNNs: up to 20 epochs with early stopping, device cpu, :data:`CNN_THREADS`) and then predicts the test
set; times include the input features (KDEs, k-NN divergences). Same protocol as
:func:`bench_train.train_predict_timing`, keeping the predictions for a scatter check. Ratios between models are
only meaningful within one run (the machine is shared).

Run: ``python benchmarks/bench_sdm.py [--quick]`` (prints JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import toy_observations  # noqa: E402

#: torch threads of the CNNs. One: on the shared 2-core machine two OpenMP threads made CNN1D
#: training erratic (173 s instead of ~5 s at 1000 views in one run: threads spin-waiting for a
#: busy core); SDM's divergences likewise run single-threaded ops on a small thread pool.
CNN_THREADS: int = 1

#: Model name -> (registered model, settings).
MODELS: dict[str, tuple[str, dict]] = {
    "sdm": ("sdm", {"dims": 1}),
    "sdm2d": ("sdm", {"dims": 2}),
    "cnn1d": ("cnn1d", {"device": "cpu", "num_threads": CNN_THREADS}),
    "cnn2d": ("cnn2d", {"device": "cpu", "num_threads": CNN_THREADS}),
}


def measure(sizes: Sequence[int], models: Sequence[str] = tuple(MODELS), n_test: int = 200
            ) -> dict[str, float]:
    """Fit + predict wall seconds of ``models`` at every training size.

    Returns keys ``<model>_train_predict_s_<n>``, ``<model>_train_s_<n>``,
    ``<model>_predict_s_<n>``, ``<model>_scatter_dex_<n>`` and
    ``<model>_time_growth_exponent`` (slope of log time against log n).
    """
    from dynmass.models import get_model

    test = toy_observations(n_test, seed=99)
    truth = test.log10_m200c()
    out: dict[str, float] = {"n_test_views": float(n_test),
                             "cpu_count": float(os.cpu_count() or 1)}
    for key in models:
        name, settings = MODELS[key]
        totals = []
        for n in sizes:
            train = toy_observations(n, seed=n)
            model = get_model(name, **settings)
            t0 = time.perf_counter()
            model.fit(train, seed=0)
            t1 = time.perf_counter()
            pred = model.predict(test)
            t2 = time.perf_counter()
            out[f"{key}_train_predict_s_{n}"] = t2 - t0
            out[f"{key}_train_s_{n}"] = t1 - t0
            out[f"{key}_predict_s_{n}"] = t2 - t1
            out[f"{key}_scatter_dex_{n}"] = float(np.std(pred - truth))
            totals.append(t2 - t0)
        out[f"{key}_time_growth_exponent"] = float(
            np.polyfit(np.log(sizes), np.log(totals), 1)[0])
    out["constant_predictor_scatter_dex"] = float(np.std(truth))
    return out


def run(quick: bool = False) -> dict[str, float]:
    """Measure SDM, CNN1D and CNN2D train + predict at three sizes; flat dict of numbers."""
    return measure((100, 200, 400) if quick else (250, 500, 1000, 2000))


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
