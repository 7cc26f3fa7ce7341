"""Training run folders as ``dynmass train`` writes them, read for evaluation.

A *run* is a folder::

    runs/<name>/settings.json     model, model_settings, observations (path),
                                  observations_sha256, obs_settings, folds, seed, ...
    runs/<name>/fold_00.h5 ...    one saved model per fold
    runs/<name>/predictions.csv   halo_id,los,fold,log10_m200c_true,log10_m200c_pred,n_gal
    runs/<name>/timing.json       train_seconds, predict_seconds, n_train_views, ...

:func:`load_run` reads one into a :class:`Run` (masses as log10 M200c in Msun/h), with clear
errors naming the file, row and column of anything malformed; :func:`load_runs` reads several
and checks they were trained on the same observations.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_write_text, to_json
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.observing import check_same_observing

log = logging.getLogger(__name__)

#: Columns every predictions.csv must have.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "halo_id", "los", "fold", "log10_m200c_true", "log10_m200c_pred", "n_gal",
)

_INT_COLUMNS = ("halo_id", "los", "fold", "n_gal")


@dataclass
class Run:
    """One training run's predictions, settings and timing.

    Parameters
    ----------
    name : str
        Short name (the folder name unless two runs share it).
    path : pathlib.Path
        The run folder.
    model : str
        Model name (``settings.json`` key ``model``).
    settings : dict
        The run's ``settings.json``.
    timing : dict
        The run's ``timing.json`` (empty when the file is absent).
    predictions : dict of str to numpy.ndarray
        The columns of ``predictions.csv`` (:data:`PREDICTION_COLUMNS` at least) for the views
        the model predicted; masses are log10 M200c [Msun/h].
    failed : dict of str to numpy.ndarray
        The same columns for the views the model failed on (``log10_m200c_pred`` NaN in the
        file, e.g. a classical estimator left with too few members): kept apart so that every
        statistic is computed on predicted views while the failures are counted and reported
        (:attr:`n_failed`), never dropped silently.
    """

    name: str
    path: Path
    model: str
    settings: dict[str, Any]
    timing: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    failed: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        """Number of views without a prediction (the model failed on them)."""
        return len(self.failed.get("halo_id", ()))

    @property
    def n_views(self) -> int:
        """Number of predicted views."""
        return len(self.predictions["halo_id"])

    @property
    def log_m_true(self) -> np.ndarray:
        """True log10 M200c [Msun/h] of every view."""
        return self.predictions["log10_m200c_true"]

    @property
    def log_m_pred(self) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] of every view."""
        return self.predictions["log10_m200c_pred"]

    @property
    def halo_id(self) -> np.ndarray:
        """Host halo id of every view."""
        return self.predictions["halo_id"]

    @property
    def eps(self) -> np.ndarray:
        """Residuals ``log10(M_pred / M_true)`` in dex."""
        return self.log_m_pred - self.log_m_true



@dataclass(frozen=True)
class RunDir:
    """A training run folder: the one place that knows its file names and how to read them.

    ``dynmass train`` writes ``settings.json`` first, ``fold_XX.h5`` as each fold finishes
    (``fold_XX.ckpt.pt`` while a CNN fold trains), ``timing.json`` and, last,
    ``predictions.csv``: a run is complete when ``predictions.csv`` exists.

    Parameters
    ----------
    path : str or os.PathLike
        The folder.

    Examples
    --------
    >>> from dynmass.rundir import RunDir
    >>> run = RunDir("runs/cnn2d")
    >>> run.fold_path(3).name, run.checkpoint_path(3).name, run.complete
    ('fold_03.h5', 'fold_03.ckpt.pt', False)
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def settings_path(self) -> Path:
        """``settings.json``: model, settings, observations (path and sha256), folds, seed."""
        return self.path / "settings.json"

    @property
    def predictions_path(self) -> Path:
        """``predictions.csv``: one held-out prediction per view (:data:`PREDICTION_COLUMNS`)."""
        return self.path / "predictions.csv"

    @property
    def timing_path(self) -> Path:
        """``timing.json``: train / predict wall seconds, per fold."""
        return self.path / "timing.json"

    @property
    def cache_dir(self) -> Path:
        """``cache/``: features (KDE images) cached between resumptions."""
        return self.path / "cache"

    def fold_path(self, fold: int) -> Path:
        """``fold_XX.h5``: the model that did not see fold ``fold``'s hosts."""
        return self.path / f"fold_{int(fold):02d}.h5"

    def checkpoint_path(self, fold: int) -> Path:
        """``fold_XX.ckpt.pt``: per-epoch checkpoint of a fold in training (transient)."""
        return self.path / f"fold_{int(fold):02d}.ckpt.pt"

    def fold_paths(self) -> list[Path]:
        """Every ``fold_XX.h5`` in the folder, in fold order."""
        return sorted(self.path.glob("fold_[0-9][0-9].h5"))

    @property
    def complete(self) -> bool:
        """True when ``predictions.csv`` (written last) exists."""
        return self.predictions_path.exists()

    def read_settings(self) -> dict[str, Any]:
        """``settings.json`` (see :func:`read_settings`)."""
        return read_settings(self.path)

    def read_timing(self) -> dict[str, Any]:
        """``timing.json``, or ``{}`` with a warning when it is absent."""
        if self.timing_path.exists():
            return _read_json(self.timing_path)
        log.warning("%s: no timing.json; wall times will be missing", self.path)
        return {}

    def read_predictions(self) -> dict[str, np.ndarray]:
        """``predictions.csv`` (see :func:`read_predictions`)."""
        return read_predictions(self.predictions_path)

    def load_models(self) -> list[Any]:
        """The fold models (:func:`dynmass.models.load_model`), checked against the number of
        folds ``settings.json`` records.

        Raises
        ------
        InputError
            No ``fold_XX.h5`` files, or fewer than the run's folds (an incomplete run).
        """
        from dynmass.models import load_model

        files = self.fold_paths()
        if not files:
            raise InputError("run folder holds no fold_XX.h5 models", path=self.path)
        if self.settings_path.exists():
            n = self.read_settings().get("folds")
            if n is not None and len(files) != int(n):
                raise InputError(f"run folder holds {len(files)} of {n} fold models "
                                 "(incomplete run?)", path=self.path)
        return [load_model(f) for f in files]

    def load(self, name: str | None = None) -> Run:
        """The run's predictions, settings and timing (see :func:`load_run`)."""
        return load_run(self.path, name)


# ----------------------------------------------------------------------------------- writing


def write_predictions_csv(path: str | os.PathLike, columns: dict[str, np.ndarray]) -> Path:
    """Write a predictions table (CSV with a header) atomically.

    Parameters
    ----------
    path : path
        Destination.
    columns : dict of str to numpy.ndarray
        Equal-length columns, written in insertion order; integers as integers, floats with
        10 significant digits (log10 masses in Msun/h).
    """
    names = list(columns)
    text_cols = []
    for name in names:
        arr = np.asarray(columns[name])
        if np.issubdtype(arr.dtype, np.integer):
            text_cols.append([str(int(x)) for x in arr])
        else:
            text_cols.append([f"{float(x):.10g}" for x in arr])
    lines = [",".join(names)] + [",".join(row) for row in zip(*text_cols, strict=True)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------------- loading


def _read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object with a clear error naming the file."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError("no such file", path=path) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", path=path) from exc
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object", path=path)
    return obj


def read_settings(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run folder's ``settings.json`` (clear errors naming the file when it is missing or bad).

    Parameters
    ----------
    run_dir : str or os.PathLike
        The run folder.
    """
    path = Path(run_dir) / "settings.json"
    if not path.exists():
        raise InputError("not a training run folder: settings.json is missing", path=path)
    return _read_json(path)


def read_predictions(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and check a ``predictions.csv`` file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    dict of str to numpy.ndarray
        One array per column; :data:`PREDICTION_COLUMNS` as int64 / float64.

    Raises
    ------
    InputError
        Missing file or column, no rows, non-numeric or infinite values, NaN outside
        ``log10_m200c_pred`` (where NaN marks a view the model failed on), duplicate views.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no predictions.csv: the run is missing or incomplete "
                         "(predictions.csv is written last by dynmass train)", path=path)
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [r for r in reader if r]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"not a CSV text file (corrupted?): {exc}", path=path) from exc
    if header is None:
        raise InputError("empty file", path=path)
    header = [h.strip() for h in header]
    for col in PREDICTION_COLUMNS:
        if col not in header:
            raise InputError(f"required column is missing (found {header})", path, col)
    if not rows:
        raise InputError("no rows", path=path)
    out: dict[str, np.ndarray] = {}
    for j, col in enumerate(header):
        values = [r[j] if j < len(r) else "" for r in rows]
        try:
            arr = np.array(values, dtype=float)
        except ValueError:
            if col in PREDICTION_COLUMNS:
                bad = next(i for i, v in enumerate(values) if not _is_float(v))
                raise InputError(f"non-numeric value {values[bad]!r} at data row {bad + 1}",
                                 path, col) from None
            out[col] = np.array(values)
            continue
        if col in PREDICTION_COLUMNS:
            # a NaN prediction is a view the model failed on (counted by load_run and the
            # metrics); NaN anywhere else, and inf anywhere, is a broken file
            finite = np.isfinite(arr) | (np.isnan(arr) if col == "log10_m200c_pred" else False)
            if not finite.all():
                first = int(np.flatnonzero(~finite)[0])
                what = "inf" if col == "log10_m200c_pred" else "NaN/inf"
                raise InputError(
                    f"{int((~finite).sum())} {what} values, first at data row {first + 1} "
                    f"(halo_id {rows[first][header.index('halo_id')]})", path, col)
        out[col] = arr.astype(np.int64) if col in _INT_COLUMNS else arr
    key = np.rec.fromarrays([out["halo_id"], out["los"]])
    uniq, counts = np.unique(key, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        raise InputError(f"view (halo_id={dup[0]}, los={dup[1]}) appears {counts.max()} times",
                         path, "halo_id,los")
    return out


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def load_run(run_dir: str | os.PathLike, name: str | None = None) -> Run:
    """Read a training run folder.

    Parameters
    ----------
    run_dir : str or os.PathLike
        Folder with ``predictions.csv``, ``settings.json`` and (optionally) ``timing.json``.
    name : str, optional
        Name of the run (default: the folder name).

    Returns
    -------
    Run

    Raises
    ------
    InputError
        Not a folder; missing ``predictions.csv`` or ``settings.json``; bad JSON; missing
        columns; inf or non-numeric predictions, NaN outside ``log10_m200c_pred`` or NaN in every
        prediction; duplicate views. The message names the file.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError("not a run folder (expected predictions.csv, settings.json, "
                         "timing.json inside)", path=path)
    rd = RunDir(path)
    columns = rd.read_predictions()
    settings = _read_json(rd.settings_path)
    if "model" not in settings:
        raise InputError("settings lack the key 'model'", path=rd.settings_path)
    timing = rd.read_timing()
    ok = np.isfinite(columns["log10_m200c_pred"])
    if not ok.any():
        raise InputError("the model failed on every view (all predictions NaN)",
                         rd.predictions_path, "log10_m200c_pred")
    predictions = {k: v[ok] for k, v in columns.items()}
    failed = {k: v[~ok] for k, v in columns.items()} if not ok.all() else {}
    if failed:
        log.warning("%s: the model failed on %d of %d views (NaN predictions); they are "
                    "counted as failures and left out of the statistics", rd.predictions_path,
                    int((~ok).sum()), len(ok))
    return Run(name=name or path.resolve().name, path=path, model=str(settings["model"]),
               settings=settings, timing=timing, predictions=predictions, failed=failed)


def check_same_observations(runs: Sequence[Run]) -> None:
    """Raise :class:`InputError` if the runs were made from different observations.

    Runs compare fairly only on the same mock observations: the same file (``settings.json``
    key ``observations_sha256``) and the same observe settings (``obs_settings``).

    Parameters
    ----------
    runs : sequence of Run
        Runs to compare.
    """
    if len(runs) < 2:
        return
    ref = runs[0]
    for run in runs[1:]:
        where = run.path / "settings.json"
        a, b = ref.settings.get("observations_sha256"), run.settings.get("observations_sha256")
        if a and b and a != b:
            raise InputError(
                f"run '{run.name}' was made from observations sha256 {b[:12]}... but run "
                f"'{ref.name}' from {a[:12]}...; compare runs made from the same observations",
                path=where, column="observations_sha256")
        sa, sb = ref.settings.get("obs_settings"), run.settings.get("obs_settings")
        if sa is not None and sb is not None:
            try:  # the observing setups first (one rule: ObservingSetup.compatible_with)
                check_same_observing(sb, sa, f"run '{ref.name}'", where)
            except SettingsMismatchError as exc:
                raise InputError(
                    f"run '{run.name}' has other observation settings than run '{ref.name}' "
                    f"(differ in ['{exc.column}']); compare runs made from the same "
                    "observations", path=where, column="obs_settings") from None
        if sa is not None and sb is not None and to_json(sa) != to_json(sb):
            diff = sorted(k for k in set(sa) | set(sb) if to_json(sa.get(k)) != to_json(sb.get(k)))
            raise InputError(
                f"run '{run.name}' has other observation settings than run '{ref.name}' "
                f"(differ in {diff}); compare runs made from the same observations",
                path=where, column="obs_settings")


def load_runs(run_dirs: Sequence[str | os.PathLike]) -> list[Run]:
    """Read several runs, give them unique names and check they share their observations.

    Parameters
    ----------
    run_dirs : sequence of str or os.PathLike
        Run folders.

    Returns
    -------
    list of Run
    """
    if not run_dirs:
        raise InputError("no run folders given")
    runs: list[Run] = []
    seen: set[str] = set()
    for d in run_dirs:
        run = load_run(d)
        base, k = run.name, 2
        while run.name in seen:
            run.name = f"{base}-{k}"
            k += 1
        seen.add(run.name)
        runs.append(run)
    check_same_observations(runs)
    return runs
