"""Run-folder bookkeeping of training: the settings record, the data's identity, resuming.

A cross-validation run folder (:mod:`dynmass.train`, files in :class:`dynmass.rundir.RunDir`)
starts with ``settings.json``. Started again into the same folder, a run resumes only when the
record agrees on :data:`RESUME_KEYS` (model, model settings other than the hardware-only
:data:`~dynmass.models.base.RUNTIME_SETTINGS`, the data's sha256, folds, seed, fold scheme);
otherwise :class:`~dynmass.errors.SettingsMismatchError` is raised instead of mixing runs.
Finished fold models are reused after the same check (:func:`check_fold_model`).

Examples
--------
Device and thread settings may change between sessions; hyper-parameters may not:

>>> from dynmass.resume import comparable
>>> a = {"model": "cnn1d", "model_settings": {"epochs": 20, "device": "cpu"}, "seed": 0}
>>> b = {"model": "cnn1d", "model_settings": {"epochs": 20, "device": "cuda"}, "seed": 0}
>>> comparable(a) == comparable(b)
True
>>> comparable(a) == comparable({**b, "model_settings": {"epochs": 5}})
False
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_write_json, file_sha256
from dynmass.ddp import barrier
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.models.base import RUNTIME_SETTINGS, Estimator, load_model
from dynmass.observations import Observations, read_observations
from dynmass.rundir import RunDir

log = logging.getLogger(__name__)

__all__ = ["RESUME_KEYS", "check_fold_model", "comparable", "jsonable", "load_obs",
           "load_saved_fold", "prepare_run_dir"]

#: Keys of settings.json that must agree for a run folder to be resumed.
RESUME_KEYS: tuple[str, ...] = ("model", "model_settings", "observations_sha256", "folds",
                                "seed", "fold_scheme")


def load_obs(obs: Observations | str | os.PathLike) -> tuple[Observations, Path | None, str]:
    """Observations and their identity, from a path or an in-memory object.

    Parameters
    ----------
    obs : Observations or path
        An observations file (read and validated) or an in-memory object (validated here).

    Returns
    -------
    observations : Observations
        The views.
    path : pathlib.Path or None
        Absolute path of the file; None for an in-memory object.
    sha256 : str
        The file's sha256, or ``"memory:<sha256>"`` of the object's arrays (R, v, offsets,
        halo_id, m200c) and settings.
    """
    if isinstance(obs, Observations):
        obs.validate()  # files are validated on reading; in-memory data must be too (NaN R/v)
        h = hashlib.sha256()
        for arr in (obs.R, obs.v, obs.offsets, obs.clusters["halo_id"], obs.clusters["m200c"]):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(json.dumps(obs.settings, sort_keys=True, default=str).encode())
        return obs, None, "memory:" + h.hexdigest()
    path = Path(obs).resolve()
    return read_observations(path), path, file_sha256(path)


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars strings ...)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a settings record that must agree for resuming (:data:`RESUME_KEYS`,
    model settings without :data:`~dynmass.models.base.RUNTIME_SETTINGS`), JSON-normalised."""
    out = {k: record.get(k) for k in RESUME_KEYS}
    out["model_settings"] = {k: v for k, v in (record.get("model_settings") or {}).items()
                             if k not in RUNTIME_SETTINGS}
    return jsonable(out)


def prepare_run_dir(run: RunDir, record: dict[str, Any], resume: bool, rank: int) -> bool:
    """Check or write ``settings.json``; returns True when the run is already complete.

    Parameters
    ----------
    run : RunDir
        The run folder (created if missing).
    record : dict
        This run's settings record (written when the folder has none).
    resume : bool
        False: earlier run files in the folder (settings, predictions, timing, fold models and
        checkpoints, feature cache) are deleted first.
    rank : int
        Process rank; only rank 0 deletes and writes.

    Raises
    ------
    SettingsMismatchError
        If the folder holds a run whose record differs on :data:`RESUME_KEYS`.
    InputError
        If its ``settings.json`` cannot be read.
    """
    out, settings_path = run.path, run.settings_path
    if not resume and rank == 0 and out.exists():
        for p in out.iterdir():
            if p.name in ("settings.json", "predictions.csv", "timing.json") or (
                    p.name.startswith("fold_") and p.suffix in (".h5", ".pt")):
                p.unlink()
            elif p.name == "cache" and p.is_dir():
                shutil.rmtree(p)
    barrier()
    if settings_path.exists():
        try:
            old = json.loads(settings_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"unreadable run settings ({exc}); use another folder or "
                             "--no-resume", path=settings_path) from exc
        a, b = comparable(old), comparable(record)
        diff = [k for k in RESUME_KEYS if a.get(k) != b.get(k)]
        if diff:
            detail = "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in diff)
            raise SettingsMismatchError(
                f"this folder holds a run with other settings ({detail}); choose another "
                "output folder or pass --no-resume (resume=False) to overwrite it",
                path=settings_path)
        if run.complete:
            return True
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(settings_path, record)
    barrier()
    return False


def load_saved_fold(path: Path, fold: int) -> Estimator | None:
    """The saved model of a finished fold, or None (with a warning) if it cannot be read.

    Parameters
    ----------
    path : pathlib.Path
        The fold's model file (``fold_XX.h5``), which exists.
    fold : int
        Fold index (named in the warning).
    """
    try:
        return load_model(path)
    except InputError as exc:
        log.warning("retraining fold %d: %s", fold, exc)
    return None


def check_fold_model(model: Estimator, name: str, settings: dict[str, Any], path: Path) -> None:
    """Raise if a saved fold model is not what this run trains.

    Parameters
    ----------
    model : Estimator
        The model read from ``path``.
    name : str
        The model name this run trains.
    settings : dict
        The settings this run's models get; compared without
        :data:`~dynmass.models.base.RUNTIME_SETTINGS`.
    path : pathlib.Path
        The fold's model file, named in the error.

    Raises
    ------
    SettingsMismatchError
        If the name or settings differ.
    """
    mine = {k: v for k, v in model.settings.items() if k not in RUNTIME_SETTINGS}
    want = {k: v for k, v in settings.items() if k not in RUNTIME_SETTINGS}
    if model.name != name or jsonable(mine) != jsonable(want):
        raise SettingsMismatchError(
            f"saved fold model is a '{model.name}' with settings {mine}, but this run "
            f"trains '{name}' with {want}; use another folder or --no-resume",
            path=path)
