"""Cross-validated training and training on all data: the ``dynmass train`` stage.

Folds follow Ho et al. 2019 (arXiv:1902.05950, section 3): hosts are ranked by M200c and
``fold = rank mod k``, so every fold spans the whole mass range and all views (lines of sight)
of one halo share a fold: no halo is ever in both the training and the test set.

A cross-validation run writes one folder (the format every later stage reads)::

    <out_dir>/settings.json     model, model_settings, observations (absolute path),
                                observations_sha256, obs_settings, folds, seed, fold_scheme,
                                dynmass_version, command
    <out_dir>/fold_00.h5 ...    one saved model per fold (dynmass.models.load_model)
    <out_dir>/timing.json       train_seconds, predict_seconds, features_seconds,
                                n_train_views, n_predict_views, per_fold [...]
    <out_dir>/predictions.csv   halo_id,los,fold,log10_m200c_true,log10_m200c_pred,n_gal
                                (written last, atomically: its presence marks a complete run)

Resuming: a fold whose ``fold_XX.h5`` exists is not retrained; a CNN fold that was interrupted
resumes from its per-epoch checkpoint ``fold_XX.ckpt.pt`` (transient, deleted when the fold's
model is saved). Re-running with different settings into the same folder raises
:class:`~dynmass.errors.SettingsMismatchError` instead of mixing runs (the checks are in
:mod:`dynmass.resume`).

Data parallel: when started by ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised
here (gloo on CPU, NCCL on CUDA; :mod:`dynmass.ddp`), every rank trains on its shard of each
batch through :class:`torch.nn.parallel.DistributedDataParallel`, and only rank 0 writes files.

Predicting another observations file with the result is :mod:`dynmass.predict_mock`
(:func:`predict_mock` and :func:`load_run_models` are importable from here too).

Examples
--------
Three-fold cross-validation of the M-sigma model on toy observations (Evrard et al. 2008
members plus interlopers, 30 hosts seen along 2 lines of sight):

>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from dynmass.rundir import RunDir
>>> from dynmass.testing.estimators import make_observations
>>> from dynmass.train import cross_validate
>>> tmp = Path(tempfile.mkdtemp())
>>> obs = make_observations(tmp / "obs.h5", np.random.default_rng(0), n_halos=30)
>>> run = cross_validate(obs, "msigma", tmp / "run", folds=3, seed=0, progress=False)
>>> sorted(p.name for p in run.iterdir())
['fold_00.h5', 'fold_01.h5', 'fold_02.h5', 'predictions.csv', 'settings.json', 'timing.json']
>>> pred = RunDir(run).read_predictions()
>>> len(pred["log10_m200c_pred"]), sorted(set(pred["fold"].tolist()))
(60, [0, 1, 2])
>>> err = pred["log10_m200c_pred"] - pred["log10_m200c_true"]
>>> bool(np.isfinite(err).all() and abs(np.median(err)) < 0.3)  # dex
True
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_write_json, provenance
from dynmass.ddp import barrier, distributed, init_distributed
from dynmass.folds import rank_folds
from dynmass.models.base import Estimator, get_model
from dynmass.observations import Observations
from dynmass.predict_mock import load_run_models, predict_mock
from dynmass.resume import check_fold_model, load_obs, load_saved_fold, prepare_run_dir
from dynmass.rundir import RunDir, write_predictions_csv

log = logging.getLogger(__name__)

__all__ = [
    "assign_folds",
    "cross_validate",
    "fit_all",
    "predict_mock",
    "load_run_models",
    "init_distributed",
]

#: How folds are assigned (recorded in settings.json; see :func:`assign_folds`).
FOLD_SCHEME = "hosts ranked by m200c, fold = rank mod k (Ho et al. 2019)"


# ----------------------------------------------------------------------------- folds


def assign_folds(obs: Observations, k: int) -> np.ndarray:
    """Cross-validation fold of every view, split by halo (Ho et al. 2019).

    Hosts (unique ``halo_id``) are ranked by M200c (descending; ties by ``halo_id``) and host
    ``i`` in that order goes to fold ``i mod k``, so each fold samples the whole mass range
    and all views of one halo share a fold.

    Parameters
    ----------
    obs : Observations
        Views with ``clusters/halo_id`` and ``clusters/m200c`` [Msun/h].
    k : int
        Number of folds (>= 2 and at most the number of distinct halos).

    Returns
    -------
    numpy.ndarray of int
        Fold index in ``[0, k)`` of every view.
    """
    return rank_folds(obs.clusters["halo_id"], obs.clusters["m200c"], k)


# ----------------------------------------------------------------------------- helpers


def _make_model(model_name: str, model_settings: dict[str, Any] | None,
                device: str | None) -> Estimator:
    """A new ``model_name`` model; ``device`` applies to torch models unless the settings name
    one."""
    settings = dict(model_settings or {})
    model = get_model(model_name, **settings)
    if device is not None and "device" in model.settings and "device" not in settings:
        model.settings["device"] = device
    return model


def _fold_seed(seed: int, fold: int) -> int:
    """Seed of fold ``fold``'s fit, derived from the master seed."""
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])


def _fit(model: Estimator, obs: Observations, seed: int, features: np.ndarray | None,
         progress: bool, checkpoint: Path | None,
         epoch_callback: Callable[[int, dict[str, float]], None] | None) -> None:
    """Fit ``model``, with the resumable-training hooks where it takes them."""
    if model.supports_checkpoint:
        model.fit(obs, seed=seed, features=features, progress=progress, checkpoint=checkpoint,
                  epoch_callback=epoch_callback)
    else:
        model.fit(obs, seed=seed)


def _predict(model: Estimator, obs: Observations, features: np.ndarray | None) -> np.ndarray:
    """log10 M200c [Msun/h] of the views of ``obs``, from precomputed features if given."""
    if features is not None and model.featurizer is not None:
        model.check_obs(obs)
        return np.asarray(model.predict_features(features), dtype=float)
    return np.asarray(model.predict(obs), dtype=float)


def _features(model: Estimator, obs: Observations, cache_dir: Path | None, key: str
              ) -> tuple[np.ndarray | None, float]:
    """Model input features for all views (None for models without a featurizer)."""
    featurizer = model.featurizer
    if featurizer is None:
        return None, 0.0
    t0 = time.perf_counter()
    X = featurizer.transform(obs, cache_dir=cache_dir, key=key)
    return X, time.perf_counter() - t0


# ----------------------------------------------------------------------------- cross-validation


def cross_validate(
    obs_path_or_obs: Observations | str | os.PathLike,
    model_name: str,
    out_dir: str | os.PathLike,
    *,
    folds: int = 10,
    seed: int = 0,
    model_settings: dict[str, Any] | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    cache_features: bool = True,
    fold_callback: Callable[[int, Estimator], None] | None = None,
    epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """k-fold cross-validation split by halo; writes a run folder (see module docs).

    Parameters
    ----------
    obs_path_or_obs : Observations or path
        Training views (an observations file, or an in-memory object whose run folder then
        records ``observations: null`` and a content hash).
    model_name : str
        A registered model (:data:`dynmass.models.MODEL_NAMES`: ``msigma``, ``sdm``, ``cnn1d``,
        ``cnn2d``, ``deepset`` and the classical estimators).
    out_dir : path
        Run folder (created).
    folds : int
        Number of folds (10 in the paper).
    seed : int
        Master seed; fold ``i`` fits with a seed derived from ``(seed, i)``.
    model_settings : dict, optional
        Hyper-parameters of the model (its ``defaults`` otherwise).
    device : {"auto", "cpu", "cuda", "mps"}
        Device for torch models (unless ``model_settings`` names one).
    resume : bool
        Keep finished folds and epoch checkpoints of an earlier run with the same settings;
        if false, earlier run files in ``out_dir`` are deleted first.
    progress : bool
        Progress bars (folds; epochs and loss for CNNs).
    cache_features : bool
        Cache KDE features in ``out_dir/cache`` (reused on resume).
    fold_callback : callable, optional
        ``f(fold, model)`` after each newly trained fold is saved (tests use it to interrupt).
    epoch_callback : callable, optional
        Passed to CNN fits: ``f(epoch, record)`` after each epoch.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    SettingsMismatchError
        If ``out_dir`` holds a run with other settings and ``resume`` is true.
    """
    out = Path(out_dir)
    run = RunDir(out)
    obs, obs_path, sha = load_obs(obs_path_or_obs)
    template = _make_model(model_name, model_settings, device)
    with distributed(template.settings.get("device", device)) as (rank, world):
        fold_of = assign_folds(obs, folds)
        record = {
            "model": model_name,
            "model_settings": template.settings,
            "observations": None if obs_path is None else str(obs_path),
            "observations_sha256": sha,
            "obs_settings": obs.settings,
            "folds": int(folds),
            "seed": int(seed),
            "fold_scheme": FOLD_SCHEME,
            "world_size": world,
            **{k: v for k, v in provenance().items() if k in ("dynmass_version", "command")},
        }
        done = prepare_run_dir(run, record, resume, rank)
        if done:
            log.info("run %s is already complete; nothing to do", out)
            return out
        key = sha if obs_path is not None else ""
        X, feat_seconds = _features(template, obs, run.cache_dir if cache_features else None, key)
        pred = np.full(obs.n_views, np.nan)
        per_fold: list[dict[str, Any]] = []
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=folds, desc=f"{model_name} folds", unit="fold")
        for f in range(folds):
            test = np.flatnonzero(fold_of == f)
            train = np.flatnonzero(fold_of != f)
            info = _run_fold(run, f, obs, train, test, X, model_name, model_settings, device,
                             seed, progress, rank, fold_callback, epoch_callback)
            pred[test] = info.pop("pred")
            per_fold.append(info)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if rank == 0:
            n_train = int(sum(p["n_train_views"] for p in per_fold))
            atomic_write_json(run.timing_path, {
                "train_seconds": float(sum(p["train_seconds"] for p in per_fold) + feat_seconds),
                "predict_seconds": float(sum(p["predict_seconds"] for p in per_fold)),
                "features_seconds": float(feat_seconds),
                "n_train_views": n_train,
                "n_predict_views": int(obs.n_views),
                "world_size": world,
                "note": "train_seconds = sum of fold fits + features_seconds (KDEs of all "
                        "views, computed once); predict_seconds = model evaluation of the "
                        "held-out views (features precomputed) and, for models without "
                        "precomputed features, their own feature work",
                "per_fold": per_fold,
            })
            write_predictions_csv(run.predictions_path, {
                "halo_id": np.asarray(obs.clusters["halo_id"]).astype(np.int64),
                "los": np.asarray(obs.clusters["los"]).astype(np.int64),
                "fold": fold_of.astype(np.int64),
                "log10_m200c_true": obs.log10_m200c(),
                "log10_m200c_pred": pred,
                "n_gal": obs.n_gal.astype(np.int64),
            })
        barrier()
    return out


def _run_fold(run: RunDir, f: int, obs: Observations, train: np.ndarray, test: np.ndarray,
              X: np.ndarray | None, model_name: str, model_settings: dict[str, Any] | None,
              device: str, seed: int, progress: bool, rank: int,
              fold_callback: Callable[[int, Estimator], None] | None,
              epoch_callback: Callable[[int, dict[str, float]], None] | None) -> dict[str, Any]:
    """Train (or reload) fold ``f`` and predict its held-out views."""
    path, ckpt = run.fold_path(f), run.checkpoint_path(f)
    model: Estimator | None = load_saved_fold(path, f) if path.exists() else None
    reused = model is not None
    if model is not None:
        check_fold_model(model, model_name,
                         _make_model(model_name, model_settings, device).settings, path)
    barrier()  # every rank decided before rank 0 may write this fold's file
    if model is None:
        model = _make_model(model_name, model_settings, device)
        sub = obs.subset(train)
        t0 = time.perf_counter()
        _fit(model, sub, _fold_seed(seed, f), None if X is None else X[train], progress, ckpt,
             epoch_callback)
        # a fit resumed from a checkpoint adds the training time of the earlier session(s)
        train_seconds = time.perf_counter() - t0 + float(model.extra.get("resumed_seconds", 0))
        model.extra.update({"fold": f, "train_seconds": train_seconds,
                            "n_train_views": int(len(train))})
        if rank == 0:
            model.save(path)
            ckpt.unlink(missing_ok=True)
        barrier()
        if fold_callback is not None:
            fold_callback(f, model)
    t0 = time.perf_counter()
    pred = _predict(model, obs.subset(test), None if X is None else X[test])
    predict_seconds = time.perf_counter() - t0
    return {
        "fold": f,
        "train_seconds": float(model.extra.get("train_seconds", float("nan"))),
        "predict_seconds": predict_seconds,
        "n_train_views": int(len(train)),
        "n_predict_views": int(len(test)),
        "epochs_run": len(model.extra.get("history") or []) or None,
        "best_epoch": model.extra.get("best_epoch"),
        "reused_saved_fold": reused,
        "pred": pred,
    }


# ----------------------------------------------------------------------------- all data


def fit_all(
    obs_path_or_obs: Observations | str | os.PathLike,
    model_name: str,
    out_path: str | os.PathLike,
    *,
    seed: int = 0,
    model_settings: dict[str, Any] | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Train one model on every view and save it (for predicting other data sets).

    Parameters
    ----------
    obs_path_or_obs : Observations or path
        Training views.
    model_name : str
        A registered model.
    out_path : path
        Model file to write (HDF5, :func:`dynmass.models.load_model`). CNN fits checkpoint to
        ``<out_path>.ckpt.pt`` while training and resume from it when ``resume``.
    seed : int
        Seed of the fit.
    model_settings : dict, optional
        Hyper-parameters.
    device : {"auto", "cpu", "cuda", "mps"}
        Device for torch models.
    resume : bool
        Resume from an interrupted fit's checkpoint.
    progress : bool
        Progress bar with the loss per epoch.

    Returns
    -------
    pathlib.Path
        ``out_path``.
    """
    out = Path(out_path)
    obs, obs_path, sha = load_obs(obs_path_or_obs)
    model = _make_model(model_name, model_settings, device)
    ckpt = out.with_name(out.name + ".ckpt.pt")
    with distributed(model.settings.get("device", device)) as (rank, _world):
        if not resume and rank == 0:
            ckpt.unlink(missing_ok=True)
        barrier()
        t0 = time.perf_counter()
        X, _ = _features(model, obs, None, sha)
        _fit(model, obs, int(seed), X, progress, ckpt, None)
        model.extra.update({
            "train_seconds": time.perf_counter() - t0,
            "n_train_views": int(obs.n_views),
            "observations": None if obs_path is None else str(obs_path),
            "observations_sha256": sha,
            "seed": int(seed),
        })
        if rank == 0:
            model.save(out)
            ckpt.unlink(missing_ok=True)
        barrier()
    return out
