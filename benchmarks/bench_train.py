"""Training and prediction speed of the CNNs (Ho et al. 2019 architecture).

Measures, on a synthetic set of cluster views (Gaussian velocities with the Evrard et al. 2008
sigma(M200c), 50-100 galaxies per view, vcut 2200 km/s, aperture 1.6 Mpc/h):

* wall seconds per training epoch of CNN1D and CNN2D at a fixed data size (features
  precomputed; the training set is doubled by v-flipping, 10% of the halos held out);
* prediction throughput of CNN2D in views/s, KDE features included, with batched inference,
  and its two parts (kde2d alone, the network alone);
* :func:`train_predict_timing`, a helper other benchmarks use for any registered model.

Run ``python benchmarks/bench_train.py [--quick]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np


def toy_observations(n_views: int, seed: int = 0, vcut_kms: float = 2200.0):
    """Synthetic views: ``n_views`` halos (one view each), log10 M200c uniform in
    [13.5, 15.5] Msun/h, Gaussian velocities with sigma = 1082.9 km/s (M/1e15)^0.3361
    (Evrard et al. 2008), 50-100 galaxies, R uniform on a 1.6 Mpc/h disc."""
    from dynmass.observations import from_views

    rng = np.random.default_rng(seed)
    logm = rng.uniform(13.5, 15.5, n_views)
    n_gal = rng.integers(50, 101, n_views)
    sigma = 1082.9 * 10 ** (0.3361 * (logm - 15))
    views = []
    for k in range(n_views):
        v = rng.normal(0, sigma[k], 3 * n_gal[k])
        v = v[np.abs(v) <= vcut_kms][: n_gal[k]]
        views.append((1.6 * np.sqrt(rng.random(len(v))), v))
    return from_views(views, {"aperture": 1.6, "vcut": vcut_kms},
                      clusters={"halo_id": np.arange(n_views), "m200c": 10 ** logm})


def train_predict_timing(obs, model_name: str, *, seed: int = 0,
                         model_settings: dict[str, Any] | None = None,
                         predict_obs=None) -> dict[str, float]:
    """Wall time to fit ``model_name`` on ``obs`` and to predict ``predict_obs`` (default
    ``obs``), input features included in both.

    Parameters
    ----------
    obs : Observations
        Training views (with ``m200c`` [Msun/h]).
    model_name : str
        A registered model (msigma, sdm, cnn1d, cnn2d).
    seed : int
        Seed of the fit.
    model_settings : dict, optional
        Hyper-parameters.
    predict_obs : Observations, optional
        Views to predict.

    Returns
    -------
    dict
        ``train_seconds``, ``predict_seconds``, ``n_train_views``, ``n_predict_views``,
        ``predict_views_per_s`` and, for CNNs, ``epochs_run``.
    """
    from dynmass.models import get_model

    predict_obs = obs if predict_obs is None else predict_obs
    model = get_model(model_name, **(model_settings or {}))
    t0 = time.perf_counter()
    model.fit(obs, seed=seed)
    t1 = time.perf_counter()
    model.predict(predict_obs)
    t2 = time.perf_counter()
    out = {
        "train_seconds": t1 - t0,
        "predict_seconds": t2 - t1,
        "n_train_views": float(obs.n_views),
        "n_predict_views": float(predict_obs.n_views),
        "predict_views_per_s": predict_obs.n_views / max(t2 - t1, 1e-12),
    }
    if "history" in model.extra:
        out["epochs_run"] = float(len(model.extra["history"]))
    return out


def epoch_seconds(obs, model_name: str, epochs: int, threads: int) -> float:
    """Median wall seconds of one training epoch (features precomputed)."""
    from dynmass.models import get_model

    model = get_model(model_name, epochs=epochs, patience=0, num_threads=threads, device="cpu")
    X = model.compute_features(obs)
    model.fit(obs, seed=0, features=X)
    return float(np.median([h["seconds"] for h in model.extra["history"]]))


def predict_throughput(obs, threads: int) -> dict[str, float]:
    """CNN2D prediction speed on ``obs``: kde2d, network, and both (views/s)."""
    from dynmass.features import kde2d
    from dynmass.models import get_model

    train = obs.subset(np.arange(min(500, obs.n_views)))
    model = get_model("cnn2d", epochs=1, num_threads=threads, device="cpu").fit(train, seed=0)
    model.predict(train)  # warm up
    t0 = time.perf_counter()
    X = kde2d(obs, int(model.settings["n_bins"]), float(model.settings["bandwidth"]))
    t1 = time.perf_counter()
    model.predict_features(X)
    t2 = time.perf_counter()
    model.predict(obs)
    t3 = time.perf_counter()
    n = obs.n_views
    return {
        "cnn2d_predict_views_per_s_with_features": n / (t3 - t2),
        "cnn2d_kde2d_views_per_s": n / (t1 - t0),
        "cnn2d_network_only_views_per_s": n / (t2 - t1),
    }


def run(quick: bool = False) -> dict[str, float]:
    """Measure; returns a flat dict of numbers (units in the keys).

    Epoch times and throughputs are measured with 1 and with 2 torch threads: on a shared
    2-core machine, 2 threads can be much slower than 1 (OpenMP threads spin-waiting for a
    core), so both are reported.
    """
    import torch

    n_train = 1000 if quick else 4000
    n_pred = 4000 if quick else 20000
    epochs = 2 if quick else 3
    obs = toy_observations(n_train, seed=0)
    pred_obs = toy_observations(n_pred, seed=1)
    res: dict[str, float] = {"n_train_views": float(n_train), "n_predict_views": float(n_pred),
                             "cpu_count": float(os.cpu_count() or 1)}
    for threads in (1, 2):
        for name in ("cnn1d", "cnn2d"):
            res[f"{name}_epoch_seconds_{n_train}_views_{threads}thr"] = epoch_seconds(
                obs, name, epochs, threads)
        for key, val in predict_throughput(pred_obs, threads).items():
            res[f"{key}_{threads}thr"] = val
    t = train_predict_timing(obs.subset(np.arange(min(n_train, 1000))), "cnn1d",
                             model_settings={"epochs": 2, "num_threads": 1, "device": "cpu"},
                             predict_obs=pred_obs)
    res["cnn1d_train_seconds_1000_views_2_epochs_with_features_1thr"] = t["train_seconds"]
    res["cnn1d_predict_views_per_s_with_features_1thr"] = t["predict_views_per_s"]
    res["torch_version"] = float(".".join(torch.__version__.split("+")[0].split(".")[:2]))
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(quick=parser.parse_args().quick), indent=2))
