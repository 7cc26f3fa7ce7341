"""Synthetic run folders, as ``dynmass train`` writes them, for tests of evaluate and bundle.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from dynmass.testing.runs import synthetic_predictions_run
>>> folder = synthetic_predictions_run(Path(tempfile.mkdtemp()) / "run",
...                                    np.random.default_rng(0), n_halos=5)
>>> sorted(p.name for p in folder.iterdir())
['predictions.csv', 'settings.json', 'timing.json']
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_write_json
from dynmass.models import get_model
from dynmass.observations import Observations
from dynmass.rundir import PREDICTION_COLUMNS

__all__ = ["TOY_OBS_SETTINGS", "scratch_folder", "synthetic_predictions_run", "toy_universe_files",
           "write_fold_run", "write_predictions_run"]

#: Observing settings recorded in synthetic run folders (aperture Mpc/h, vcut km/s).
TOY_OBS_SETTINGS: dict[str, Any] = {"aperture": 1.6, "vcut": 2500.0, "redshift": 0.117, "seed": 7}


_SCRATCH: list[tempfile.TemporaryDirectory] = []


def scratch_folder(prefix: str = "run_") -> Path:
    """A new empty folder that lives until the process ends (then it is removed).

    For test worlds cached per process (e.g. with :func:`functools.cache`), which outlive the
    test that first made them and so cannot use pytest's ``tmp_path``.

    Parameters
    ----------
    prefix : str
        Start of the folder's name.

    Returns
    -------
    pathlib.Path
        The folder, inside one temporary directory per process.
    """
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="dynmass_testing_"))
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH[0].name))


def write_predictions_run(
    folder: Path,
    halo_id: np.ndarray,
    log_m_true: np.ndarray,
    log_m_pred: np.ndarray,
    *,
    los: np.ndarray | None = None,
    fold: np.ndarray | None = None,
    n_gal: np.ndarray | None = None,
    model: str = "toy",
    settings: dict | None = None,
    timing: dict | None = None,
    columns: tuple[str, ...] = PREDICTION_COLUMNS,
) -> Path:
    """A run folder with ``predictions.csv``, ``settings.json`` and ``timing.json`` only.

    Parameters
    ----------
    folder : pathlib.Path
        Created if missing.
    halo_id, log_m_true, log_m_pred : numpy.ndarray
        One row per view; masses as log10 M200c in Msun/h.
    los, fold, n_gal : numpy.ndarray, optional
        Line-of-sight index, fold and galaxy count per view (default 0, 0, 30).
    model : str
        Model name recorded in ``settings.json``.
    settings, timing : dict, optional
        Entries overriding the defaults of ``settings.json`` / replacing ``timing.json``.
    columns : tuple of str
        Columns written to ``predictions.csv`` (drop one to test error messages).

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = len(halo_id)
    cols = {
        "halo_id": halo_id, "los": np.zeros(n, int) if los is None else los,
        "fold": np.zeros(n, int) if fold is None else fold,
        "log10_m200c_true": log_m_true, "log10_m200c_pred": log_m_pred,
        "n_gal": np.full(n, 30) if n_gal is None else n_gal,
    }
    with open(folder / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for i in range(n):
            w.writerow([repr(float(cols[c][i])) if c.startswith("log10") else int(cols[c][i])
                        for c in columns])
    base = {"model": model, "model_settings": {}, "observations": "/nonexistent/obs.h5",
            "observations_sha256": "a" * 64, "obs_settings": dict(TOY_OBS_SETTINGS), "folds": 3,
            "seed": 0, "fold_scheme": "rank_mod_k"}
    atomic_write_json(folder / "settings.json", {**base, **(settings or {})})
    atomic_write_json(folder / "timing.json", timing or {
        "train_seconds": 12.0, "predict_seconds": 0.5, "n_train_views": 2 * n,
        "n_predict_views": n, "per_fold": []})
    return folder


def synthetic_predictions_run(folder: Path, rng: np.random.Generator, n_halos: int = 3000,
                              bias: float = 0.1, sigma: float = 0.2, **kw: Any) -> Path:
    """Three views per halo, residual ``eps ~ N(bias, sigma)`` (dex) independently per view.

    Parameters
    ----------
    folder : pathlib.Path
        Run folder to write.
    rng : numpy.random.Generator
        Source of the masses (log10 M200c uniform in [13.5, 15.1)) and residuals.
    n_halos : int
        Hosts.
    bias, sigma : float
        Mean and standard deviation of the residual, dex.
    **kw
        Passed to :func:`write_predictions_run`.
    """
    hid = np.repeat(np.arange(n_halos), 3)
    los = np.tile(np.arange(3), n_halos)
    lm = np.repeat(rng.uniform(13.5, 15.1, n_halos), 3)
    pred = lm + rng.normal(bias, sigma, len(lm))
    return write_predictions_run(folder, hid, lm, pred, los=los, **kw)


def write_fold_run(run_dir: Path, obs: Observations, k: int = 5, model: str = "msigma",
                   seed: int = 0, obs_path: Path | None = None) -> Path:
    """A cross-validated run folder with fold models (folds = host mass rank mod ``k``).

    Parameters
    ----------
    run_dir : pathlib.Path
        Created if missing.
    obs : Observations
        Views with ``halo_id`` and ``m200c`` (Msun/h).
    k : int
        Number of folds.
    model : str
        Registered model name, fitted with default settings on each fold's complement.
    seed : int
        Seed of every fit.
    obs_path : pathlib.Path, optional
        File ``obs`` was written to, recorded in ``settings.json``.

    Returns
    -------
    pathlib.Path
        ``run_dir``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    halo_ids, first = np.unique(obs.clusters["halo_id"], return_index=True)
    rank = np.empty(len(halo_ids), dtype=int)
    rank[np.argsort(-obs.clusters["m200c"][first], kind="stable")] = np.arange(len(halo_ids))
    fold = (rank % k)[np.searchsorted(halo_ids, obs.clusters["halo_id"])]
    pred = np.empty(obs.n_views)
    for f in range(k):
        est = get_model(model).fit(obs.subset(fold != f), seed=seed)
        est.save(run_dir / f"fold_{f:02d}.h5")
        pred[fold == f] = est.predict(obs.subset(fold == f))
    true = obs.log10_m200c()
    lines = ["halo_id,los,fold,log10_m200c_true,log10_m200c_pred,n_gal"]
    lines += [f"{obs.clusters['halo_id'][i]},{obs.clusters['los'][i]},{fold[i]},{true[i]:.6f},"
              f"{pred[i]:.6f},{obs.n_gal[i]}" for i in range(obs.n_views)]
    (run_dir / "settings.json").write_text(json.dumps({
        "model": model, "model_settings": {}, "observations": str(obs_path or ""),
        "obs_settings": obs.settings, "folds": k, "seed": seed, "fold_scheme": "rank mod k"}))
    (run_dir / "predictions.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def toy_universe_files(folder: Path, views: dict[str, Observations]) -> tuple[dict[str, Path], Path]:
    """Observation files of distinct toy "universes" and a bundle trained on the first one.

    Each views object is written to ``folder/NAME.h5`` with ``universe_sha256 = NAME`` (so the
    universes count as independent); the first gets a 5-fold M-sigma run and a bundle
    (``folder/b.h5``), for tests of calibration and posterior checks on the others.

    Parameters
    ----------
    folder : pathlib.Path
        Where the files go.
    views : dict of str to Observations
        Universe name -> its views (the first is the training universe).

    Returns
    -------
    dict of str to pathlib.Path, pathlib.Path
        The observation files by name, and the bundle file.
    """
    from dynmass.bundle import make_bundle
    from dynmass.observations import write_observations

    paths: dict[str, Path] = {}
    run = None
    for name, obs in views.items():
        obs.settings = {**obs.settings, "universe_sha256": name}
        paths[name] = write_observations(obs, folder / f"{name}.h5")
        if run is None:
            run = write_fold_run(folder / "run", obs, obs_path=paths[name])
    make_bundle(run, folder / "b.h5")
    return paths, folder / "b.h5"
