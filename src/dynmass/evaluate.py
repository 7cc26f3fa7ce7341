"""Evaluation of cross-validated training runs: residuals, bias, scatter, stability.

A *run* is a folder written by ``dynmass train`` (see ``/work/shared/DESIGN.md``)::

    runs/<name>/settings.json     model, model_settings, observations (path),
                                  observations_sha256, obs_settings, folds, seed, ...
    runs/<name>/fold_00.h5 ...    one saved model per fold
    runs/<name>/predictions.csv   halo_id,los,fold,log10_m200c_true,log10_m200c_pred,n_gal
    runs/<name>/timing.json       train_seconds, predict_seconds, n_train_views, ...

The residual of a view is ``eps = log10(M_pred / M_true)`` (dex, M200c in Msun/h). Following
Ho et al. 2019 (ApJ 887, 25; arXiv:1902.05950, section 4) we quote the median of ``eps`` as the
bias and two scatters: half the 16-84 percentile width and the standard deviation, overall, in
bins of true mass, and in the paper's range 10^14 <= M200c < 10^15 Msun/h. Uncertainties come
from a bootstrap over *halos* (all views of a halo are drawn together, since they share the
halo's mass and its neighbours and are therefore correlated).

The *sampling-rate test* (Ho et al. 2019, section 5.3) keeps every galaxy of a test view with
probability ``r`` and measures how far a model's prediction moves from its prediction with all
galaxies (``r = 1``), always using the fold model that did not see the view in training.

Public API: :func:`load_run`, :func:`load_runs`, :func:`residuals`, :func:`summarize`,
:func:`metrics`, :func:`sampling_rate_test`, :func:`evaluate_runs`, :func:`format_table`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_write_json, file_sha256, provenance, to_json
from dynmass.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "CATASTROPHIC_DEX",
    "DEFAULT_SAMPLING_RATES",
    "PAPER_RANGE",
    "PREDICTION_COLUMNS",
    "Run",
    "check_same_observations",
    "evaluate_runs",
    "format_table",
    "load_run",
    "load_runs",
    "mass_bin_edges",
    "metrics",
    "residuals",
    "sampling_rate_test",
    "summarize",
]

#: Columns every predictions.csv must have.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "halo_id", "los", "fold", "log10_m200c_true", "log10_m200c_pred", "n_gal",
)
#: |eps| above this (dex) counts as a catastrophic outlier.
CATASTROPHIC_DEX: float = 0.5
#: log10 M200c [Msun/h] range in which Ho et al. 2019 quote their statistics.
PAPER_RANGE: tuple[float, float] = (14.0, 15.0)
#: Sampling rates of the paper's stability test.
DEFAULT_SAMPLING_RATES: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
#: Rates pooled for the single stability number the paper quotes (its figure 8 discussion).
PAPER_SAMPLING_RATES: tuple[float, float] = (0.6, 0.8)

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
        The columns of ``predictions.csv`` (:data:`PREDICTION_COLUMNS` at least);
        masses are log10 M200c [Msun/h].
    """

    name: str
    path: Path
    model: str
    settings: dict[str, Any]
    timing: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)

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
        return residuals(self)


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
        Missing file or column, no rows, non-numeric or non-finite values, duplicate views.
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
            finite = np.isfinite(arr)
            if not finite.all():
                first = int(np.flatnonzero(~finite)[0])
                raise InputError(
                    f"{int((~finite).sum())} NaN/inf values, first at data row {first + 1} "
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
        columns; NaN/inf or non-numeric predictions; duplicate views. The message names the file.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError("not a run folder (expected predictions.csv, settings.json, "
                         "timing.json inside)", path=path)
    predictions = read_predictions(path / "predictions.csv")
    settings = _read_json(path / "settings.json")
    if "model" not in settings:
        raise InputError("settings lack the key 'model'", path=path / "settings.json")
    timing_path = path / "timing.json"
    if timing_path.exists():
        timing = _read_json(timing_path)
    else:
        log.warning("%s: no timing.json; wall times will be missing", path)
        timing = {}
    return Run(name=name or path.resolve().name, path=path, model=str(settings["model"]),
               settings=settings, timing=timing, predictions=predictions)


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


# ----------------------------------------------------------------------------------- metrics


def residuals(run: Run) -> np.ndarray:
    """``eps = log10(M_pred / M_true)`` (dex) of every view of ``run``."""
    return run.log_m_pred - run.log_m_true


def _basic_stats(eps: np.ndarray) -> dict[str, float]:
    n = len(eps)
    if n == 0:
        nan = float("nan")
        return {"bias_median": nan, "mean": nan, "p16": nan, "p84": nan, "width_16_84": nan,
                "half_width_16_84": nan, "std": nan, "catastrophic_fraction": nan}
    p16, p50, p84 = np.percentile(eps, [16, 50, 84])
    return {
        "bias_median": float(p50),
        "mean": float(eps.mean()),
        "p16": float(p16),
        "p84": float(p84),
        "width_16_84": float(p84 - p16),
        "half_width_16_84": float((p84 - p16) / 2),
        "std": float(eps.std(ddof=1)) if n > 1 else float("nan"),
        "catastrophic_fraction": float(np.mean(np.abs(eps) > CATASTROPHIC_DEX)),
    }


def summarize(
    eps: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Bias, scatter and outlier fraction of residuals, with bootstrap errors.

    Parameters
    ----------
    eps : numpy.ndarray
        Residuals log10(M_pred / M_true), dex.
    groups : numpy.ndarray, optional
        Group label of every residual (the host halo id); the bootstrap resamples groups with
        replacement and keeps all members of a drawn group. Default: every residual alone.
    n_boot : int
        Bootstrap replicates (0: no errors).
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    dict
        ``n``, ``n_halos``, ``bias_median``, ``mean``, ``p16``, ``p84``, ``width_16_84``,
        ``half_width_16_84``, ``std`` (ddof=1), ``catastrophic_fraction`` (|eps| > 0.5 dex),
        and ``<key>_err`` (bootstrap standard deviation) for the bias, both scatters and the
        outlier fraction.
    """
    eps = np.asarray(eps, dtype=float)
    groups = np.arange(len(eps)) if groups is None else np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    out: dict[str, float] = {"n": int(len(eps)), "n_halos": int(len(uniq))}
    out.update(_basic_stats(eps))
    err_keys = ("bias_median", "width_16_84", "half_width_16_84", "std", "catastrophic_fraction")
    if n_boot > 0 and len(uniq) > 1:
        rng = np.random.default_rng(seed)
        reps = {k: np.empty(n_boot) for k in err_keys}
        for b in range(n_boot):
            counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
            sample = np.repeat(eps, counts[inverse])
            stats = _basic_stats(sample)
            for k in err_keys:
                reps[k][b] = stats[k]
        for k in err_keys:
            out[f"{k}_err"] = float(np.nanstd(reps[k], ddof=1))
    else:
        for k in err_keys:
            out[f"{k}_err"] = float("nan")
    return out


def mass_bin_edges(log_m_true: np.ndarray, width_dex: float = 0.2) -> np.ndarray:
    """Bin edges of log10 M200c [Msun/h], multiples of ``width_dex`` covering the data."""
    if width_dex <= 0:
        raise InputError(f"mass bin width must be > 0 dex, got {width_dex}")
    lo = math.floor(float(np.min(log_m_true)) / width_dex + 1e-9) * width_dex
    hi = math.ceil(float(np.max(log_m_true)) / width_dex - 1e-9) * width_dex
    if hi <= lo:
        hi = lo + width_dex
    n = round((hi - lo) / width_dex)
    return np.round(lo + width_dex * np.arange(n + 1), 10)


def _timing_block(run: Run) -> dict[str, Any]:
    t = run.timing
    out: dict[str, Any] = {
        "train_seconds": t.get("train_seconds"),
        "predict_seconds": t.get("predict_seconds"),
        "n_train_views": t.get("n_train_views"),
        "n_predict_views": t.get("n_predict_views"),
    }
    for kind in ("train", "predict"):
        s, n = out[f"{kind}_seconds"], out[f"n_{kind}_views"]
        out[f"{kind}_ms_per_view"] = (1e3 * float(s) / float(n)) if s is not None and n else None
    return out


def metrics(
    run: Run,
    mass_bins: float | Sequence[float] = 0.2,
    paper_range: tuple[float, float] = PAPER_RANGE,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Bias, scatter and outliers of a run, overall, in the paper's range and in mass bins.

    Parameters
    ----------
    run : Run
        The run.
    mass_bins : float or sequence of float
        Bin width in dex of true log10 M200c [Msun/h] (edges at multiples of it), or the edges.
    paper_range : (float, float)
        log10 M200c [Msun/h] range ``[lo, hi)`` of the ``paper_range`` block (Ho et al. 2019
        quote 10^14 - 10^15 Msun/h).
    n_boot : int
        Bootstrap replicates over halos for the errors (0: none).
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    dict
        ``model``, ``run_dir``, ``n_views``, ``n_halos``, ``overall``, ``paper_range``,
        ``bins`` (list of ``{"lo", "hi", ...stats}``), ``timing``, and ``train_seconds`` /
        ``predict_seconds`` (wall seconds from timing.json, None if absent). Statistics keys are
        those of :func:`summarize`.
    """
    eps = residuals(run)
    lm = run.log_m_true
    hid = run.halo_id
    edges = (mass_bin_edges(lm, float(mass_bins)) if np.isscalar(mass_bins)
             else np.asarray(mass_bins, dtype=float))
    lo, hi = paper_range
    in_range = (lm >= lo) & (lm < hi)
    axes = np.asarray(run.predictions["los"]) < 3
    bins = []
    for k in range(len(edges) - 1):
        sel = (lm >= edges[k]) & (lm < edges[k + 1])
        if k == len(edges) - 2:
            sel |= lm == edges[k + 1]
        bins.append({"lo": float(edges[k]), "hi": float(edges[k + 1]),
                     **summarize(eps[sel], hid[sel], n_boot, seed)})
    timing = _timing_block(run)
    return {
        "model": run.model,
        "run_dir": str(run.path),
        "n_views": run.n_views,
        "n_halos": int(len(np.unique(hid))),
        "overall": summarize(eps, hid, n_boot, seed),
        "paper_range": {"lo": float(lo), "hi": float(hi),
                        **summarize(eps[in_range], hid[in_range], n_boot, seed)},
        # the paper's test set: the 3 orthogonal (box-axis) views of each host only, so that
        # hosts given extra lines of sight to flatten the training mass function are not
        # over-weighted
        "paper_range_axes": {"lo": float(lo), "hi": float(hi), "views": "los < 3",
                             **summarize(eps[in_range & axes], hid[in_range & axes], n_boot,
                                         seed)},
        "bins": bins,
        "timing": timing,
        "train_seconds": timing["train_seconds"],
        "predict_seconds": timing["predict_seconds"],
    }


# ------------------------------------------------------------------------- sampling-rate test


def _observations_path(runs: Sequence[Run], observations: str | os.PathLike | None) -> Path:
    if observations is not None:
        return Path(observations)
    path = runs[0].settings.get("observations")
    if not path:
        raise InputError("settings lack 'observations' (the observations file); pass it "
                         "explicitly (--observations)", path=runs[0].path / "settings.json")
    return Path(path)


def _check_observations_file(runs: Sequence[Run], path: Path) -> str:
    if not path.is_file():
        raise InputError("observations file not found (needed by the sampling-rate test; "
                         "pass --observations or --no-sampling-test)", path=path)
    sha = file_sha256(path)
    for run in runs:
        want = run.settings.get("observations_sha256")
        if want and want != sha:
            raise InputError(
                f"sha256 {sha[:12]}... differs from {want[:12]}... recorded in "
                f"{run.path / 'settings.json'}: not the observations run '{run.name}' was "
                "trained on", path=path)
    return sha


def _view_index(obs: Any, runs: Sequence[Run], obs_path: Path) -> dict[str, np.ndarray]:
    """Row of the observations file for every prediction row of every run."""
    lookup = {(int(h), int(los)): i for i, (h, los) in
              enumerate(zip(obs.clusters["halo_id"], obs.clusters["los"], strict=True))}
    out = {}
    for run in runs:
        idx = np.empty(run.n_views, dtype=np.int64)
        for j, (h, los) in enumerate(zip(run.halo_id, run.predictions["los"], strict=True)):
            i = lookup.get((int(h), int(los)))
            if i is None:
                raise InputError(
                    f"view (halo_id={h}, los={los}) of {run.path / 'predictions.csv'} is not in "
                    "this observations file", path=obs_path)
            idx[j] = i
        out[run.name] = idx
    return out


def _shift_stats(d: np.ndarray) -> dict[str, float]:
    finite = np.isfinite(d)
    x = d[finite]
    if len(x) == 0:
        nan = float("nan")
        return {"median": nan, "p16": nan, "p84": nan, "half_width_16_84": nan, "std": nan,
                "mean_abs": nan, "n_nonfinite": int((~finite).sum())}
    p16, p50, p84 = np.percentile(x, [16, 50, 84])
    return {"median": float(p50), "p16": float(p16), "p84": float(p84),
            "half_width_16_84": float((p84 - p16) / 2),
            "std": float(x.std(ddof=1)) if len(x) > 1 else float("nan"),
            "mean_abs": float(np.abs(x).mean()), "n_nonfinite": int((~finite).sum())}


def sampling_rate_test(
    runs: Sequence[Run],
    observations: str | os.PathLike | None = None,
    rates: Sequence[float] = DEFAULT_SAMPLING_RATES,
    seed: int = 0,
    max_views: int | None = 2000,
    min_gal: int = 3,
) -> dict[str, dict[str, Any]]:
    """How far predictions move when galaxies are dropped at random (Ho et al. 2019, sec. 5.3).

    Every test view is predicted by the fold model that did not see it in training
    (``fold_XX.h5`` of the run, ``XX`` from ``predictions.csv``), once with all its galaxies and
    once after keeping each galaxy with probability ``r``
    (:meth:`dynmass.observations.Observations.resample`). The shift of a view is
    ``d = pred(r) - pred(1)`` in dex. The same random draws (same seed, same views) are used
    for every model and every rate (a galaxy kept at rate r is also kept at every larger rate),
    so the models are compared on identical inputs.

    Parameters
    ----------
    runs : sequence of Run
        Runs made from the same observations (checked).
    observations : str or os.PathLike, optional
        Observations file (default: ``settings.json`` key ``observations`` of the first run).
        Its sha256 must match the runs' ``observations_sha256``.
    rates : sequence of float
        Sampling rates in (0, 1].
    seed : int
        Seed of the view subset and of the galaxy draws.
    max_views : int or None
        At most this many test views (a seeded random subset of the views the runs predicted);
        None: all.
    min_gal : int
        A resampled view keeps at least this many galaxies (the paper draws N >= 3).

    Returns
    -------
    dict
        Per run name: ``rates``, ``n_views``, per-rate lists ``median``, ``p16``, ``p84``,
        ``half_width_16_84``, ``std``, ``mean_abs``, ``n_nonfinite`` of ``d`` (dex);
        ``width_16_84_rate_0.6_0.8`` and ``std_rate_0.6_0.8`` (``d`` pooled over the rates in
        [0.6, 0.8], the paper's stability number); ``max_abs_diff_vs_predictions_csv`` (dex,
        a consistency check of the fold models against the run's own predictions);
        ``seconds`` (wall time).
    """
    from dynmass.models import load_model
    from dynmass.observations import read_observations

    rates = [float(r) for r in rates]
    for r in rates:
        if not 0 < r <= 1:
            raise InputError(f"sampling rate {r} is outside (0, 1]")
    check_same_observations(runs)
    obs_path = _observations_path(runs, observations)
    _check_observations_file(runs, obs_path)
    obs = read_observations(obs_path)
    rows = _view_index(obs, runs, obs_path)
    union = np.unique(np.concatenate(list(rows.values())))
    rng = np.random.default_rng(seed)
    if max_views is not None and len(union) > max_views:
        union = np.sort(rng.choice(union, size=int(max_views), replace=False))
    sel = obs.subset(union)
    position = {int(g): p for p, g in enumerate(union)}
    resampled = {r: sel.resample(r, seed=seed, min_gal=min_gal) for r in rates}

    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        t0 = time.perf_counter()
        mine = np.flatnonzero(np.isin(rows[run.name], union))
        pos = np.array([position[int(g)] for g in rows[run.name][mine]], dtype=np.int64)
        folds = run.predictions["fold"][mine]
        ref = np.full(len(mine), np.nan)
        pred = {r: np.full(len(mine), np.nan) for r in rates}
        for f in np.unique(folds):
            model_path = run.path / f"fold_{int(f):02d}.h5"
            if not model_path.is_file():
                raise InputError(f"fold model missing (needed for the views of fold {int(f)} "
                                 "in the sampling-rate test)", path=model_path)
            model = load_model(model_path)
            here = folds == f
            ref[here] = model.predict(sel.subset(pos[here]))
            for r in rates:
                pred[r][here] = model.predict(resampled[r].subset(pos[here]))
        per_rate = [_shift_stats(pred[r] - ref) for r in rates]
        res: dict[str, Any] = {"rates": rates, "n_views": int(len(mine)), "seed": seed,
                               "min_gal": min_gal}
        for key in per_rate[0] if per_rate else ():
            res[key] = [s[key] for s in per_rate]
        lo, hi = PAPER_SAMPLING_RATES
        pooled = [pred[r] - ref for r in rates if lo - 1e-9 <= r <= hi + 1e-9]
        if pooled:
            pst = _shift_stats(np.concatenate(pooled))
            res["width_16_84_rate_0.6_0.8"] = 2 * pst["half_width_16_84"]
            res["std_rate_0.6_0.8"] = pst["std"]
        csv_pred = run.log_m_pred[mine]
        res["max_abs_diff_vs_predictions_csv"] = float(np.nanmax(np.abs(ref - csv_pred)))
        res["seconds"] = time.perf_counter() - t0
        out[run.name] = res
        log.info("sampling-rate test of %s: %d views in %.1f s", run.name, len(mine),
                 res["seconds"])
    return out


# --------------------------------------------------------------------------------- top level


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, paths -> str."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def interval_coverage(run: Run, seed: int = 0) -> dict[str, Any]:
    """Coverage of Neyman-belt 68%/95% intervals on a run's held-out views (cross-fit by fold).

    The views of each fold get intervals calibrated only on the other folds' residuals
    (:func:`dynmass.bundle.coverage`), as ``dynmass bundle RUN --coverage`` reports them.

    Returns
    -------
    dict
        ``coverage_68``, ``coverage_95``, ``passed``, ``calibrated_range`` and ``bins_true``
        (see :func:`dynmass.bundle.coverage`), or ``{"error": reason}`` when the run has too
        few hosts to calibrate intervals on.
    """
    from dynmass.bundle import coverage
    from dynmass.errors import InputError

    try:
        res = coverage(run.path, seed=seed)
    except InputError as exc:
        return {"error": str(exc)}
    keys = ("coverage_68", "coverage_95", "passed", "passed_pred", "calibrated_range",
            "scheme", "n_views_in_range", "width_68_median_dex", "bins_true", "bins_pred")
    return {k: res[k] for k in keys}


def evaluate_runs(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    observations: str | os.PathLike | None = None,
    sampling_rates: Sequence[float] | None = DEFAULT_SAMPLING_RATES,
    seed: int = 0,
    max_views: int | None = 2000,
    mass_bins: float | Sequence[float] = 0.2,
    n_boot: int = 200,
    min_gal: int = 3,
    figures: bool = True,
) -> dict[str, Any]:
    """Evaluate runs: ``metrics.json``, figures and ``report.md`` / ``report.html`` in ``out_dir``.

    Parameters
    ----------
    run_dirs : sequence of str or os.PathLike
        Training run folders (made from the same observations).
    out_dir : str or os.PathLike
        Output folder (created).
    observations : str or os.PathLike, optional
        Observations file for the sampling-rate test (default: the runs' ``settings.json``).
    sampling_rates : sequence of float or None
        Rates of the sampling-rate test; None or empty skips the test (no fold models needed).
    seed : int
        Seed of the bootstrap, the sampling-test view subset and its galaxy draws.
    max_views : int or None
        Cap on the test views of the sampling-rate test.
    mass_bins : float or sequence of float
        Width (dex) or edges of the true-mass bins, the same for every run.
    n_boot : int
        Bootstrap replicates over halos.
    min_gal : int
        Fewest galaxies a view keeps in the sampling-rate test.
    figures : bool
        Write the PNG figures and the report.

    Returns
    -------
    dict
        ``{"models": {run name: metrics(...) + "sampling"}, "evaluation": settings,
        "observations": {...}, "provenance": {...}}`` as written to ``metrics.json``.
    """
    out = Path(out_dir)
    runs = load_runs(run_dirs)
    all_lm = np.concatenate([r.log_m_true for r in runs])
    edges = (mass_bin_edges(all_lm, float(mass_bins)) if np.isscalar(mass_bins)
             else np.asarray(mass_bins, dtype=float))
    models = {r.name: metrics(r, edges, n_boot=n_boot, seed=seed) for r in runs}
    rates = list(sampling_rates or [])
    obs_info: dict[str, Any] = {
        "path": str(_observations_path(runs, observations)) if (
            observations or runs[0].settings.get("observations")) else None,
        "sha256": runs[0].settings.get("observations_sha256"),
        "obs_settings": runs[0].settings.get("obs_settings"),
    }
    if rates:
        shifts = sampling_rate_test(runs, observations, rates, seed=seed, max_views=max_views,
                                    min_gal=min_gal)
        for name, res in shifts.items():
            models[name]["sampling"] = res
    for r in runs:
        models[r.name]["intervals"] = interval_coverage(r, seed=seed)
    result: dict[str, Any] = {
        "models": models,
        "evaluation": {"mass_bin_edges": edges.tolist(), "n_boot": n_boot, "seed": seed,
                       "sampling_rates": rates, "sampling_max_views": max_views,
                       "sampling_min_gal": min_gal, "catastrophic_dex": CATASTROPHIC_DEX,
                       "paper_range": list(PAPER_RANGE),
                       "run_dirs": [str(r.path) for r in runs]},
        "observations": obs_info,
        "provenance": provenance(),
    }
    result = _clean(result)
    out.mkdir(parents=True, exist_ok=True)
    if figures:
        from dynmass.report import write_report

        result["files"] = write_report(runs, result, out)
    atomic_write_json(out / "metrics.json", result)
    return result


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _pm(block: dict[str, Any], key: str) -> str:
    val, err = block.get(key), block.get(f"{key}_err")
    if val is None or err is None:
        return _fmt(val)
    return f"{_fmt(val)}±{_fmt(err)}"


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table of :func:`evaluate_runs`' result for the terminal.

    Scatter columns are half the 16-84 percentile width ("s68") and the standard deviation
    ("std") of eps = log10(M_pred/M_true) in dex, with bootstrap errors; "[14,15)" columns are
    restricted to 10^14 <= M200c < 10^15 Msun/h.
    """
    models = result.get("models", {})
    head = ["run", "model", "views", "bias", "s68", "std", "catastr", "bias[14,15)",
            "s68[14,15)", "std[14,15)", "train_s", "predict_s"]
    rows = []
    for name, m in models.items():
        o, p = m["overall"], m["paper_range"]
        rows.append([
            name, m["model"], str(m["n_views"]), _fmt(o["bias_median"], "+.3f"),
            _pm(o, "half_width_16_84"), _pm(o, "std"),
            _fmt(o["catastrophic_fraction"], ".1%"), _fmt(p["bias_median"], "+.3f"),
            _pm(p, "half_width_16_84"),
            _fmt(p["std"]), _fmt(m.get("train_seconds"), ".1f"),
            _fmt(m.get("predict_seconds"), ".2f"),
        ])
    lines = ["eps = log10(M_pred/M_true) [dex]; s68 = half 16-84 width; "
             "[14,15) = 1e14 <= M200c < 1e15 Msun/h", *_columns(head, rows)]
    samp = {n: m["sampling"] for n, m in models.items() if m.get("sampling")}
    if samp:
        rates = next(iter(samp.values()))["rates"]
        head2 = ["run", "views", *[f"r={r:g}" for r in rates], "w68[0.6-0.8]"]
        rows2 = []
        for name, s in samp.items():
            cells = [f"{_fmt(h)}({_fmt(sd)})" for h, sd in
                     zip(s["half_width_16_84"], s["std"], strict=True)]
            rows2.append([name, str(s["n_views"]), *cells,
                          _fmt(s.get("width_16_84_rate_0.6_0.8"))])
        lines += ["", "sampling-rate test: shift d = pred(r) - pred(1) [dex], "
                  "half 16-84 width (std); w68 = full 16-84 width pooled over r = 0.6-0.8",
                  *_columns(head2, rows2)]
    return "\n".join(lines)


def _columns(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head), fmt.format(*["-" * w for w in widths]),
            *[fmt.format(*r) for r in rows]]
