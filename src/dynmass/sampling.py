"""The sampling-rate test (Ho et al. 2019, ApJ 887, 25, section 5.3).

Every galaxy of a test view is kept with probability ``r``, and the prediction of the fold
model that did not see the view in training is compared with its prediction with all galaxies
(``r = 1``); :func:`sampling_rate_test` reports the median and the spread of that shift (dex)
per rate.

Besides the width of the shift (the paper's stability number), the test reports whether the
*median* prediction at fixed true mass moves when galaxies are dropped: the median shift with a
host-bootstrap error, the median shift in 0.2-dex bins of true log10 M200c [Msun/h] over views
that keep at least :data:`BIN_MIN_GAL` galaxies, and the judged claim of
:func:`median_shift_claim`. A model that weighs clusters partly by how many galaxies it sees
(richness) predicts lower masses when galaxies are missing, and a survey whose completeness
differs from the training mock's would inherit that bias. For comparison it also reports the
scatter of prediction minus truth at each rate and the "Poisson floor"
(:func:`poisson_floor_dex`), the scatter expected from estimating a velocity dispersion from N
galaxies alone.

The statistics and the claim live in :mod:`dynmass.sampling_claims` (re-exported here).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import file_sha256
from dynmass.errors import InputError
from dynmass.rundir import Run, RunDir, check_same_observations
from dynmass.sampling_claims import (  # noqa: F401 (re-exported: the sampling-test API)
    BIN_MIN_GAL,
    BIN_MIN_VIEWS,
    BIN_WIDTH_DEX,
    CLAIM_RANGE,
    MASS_SIGMA_SLOPE,
    MEDIAN_SHIFT_TOL_DEX,
    _eps_stats,
    _median_shift_block,
    claim_verdict,
    host_bootstrap_median_err,
    median_shift_claim,
    poisson_floor_dex,
)

log = logging.getLogger(__name__)


#: Sampling rates of the paper's stability test.
DEFAULT_SAMPLING_RATES: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
#: Rates pooled for the single stability number the paper quotes (its figure 8 discussion).
PAPER_SAMPLING_RATES: tuple[float, float] = (0.6, 0.8)
__all__ = ["BIN_MIN_GAL", "BIN_MIN_VIEWS", "BIN_WIDTH_DEX", "CLAIM_RANGE",
           "DEFAULT_SAMPLING_RATES", "MASS_SIGMA_SLOPE", "MEDIAN_SHIFT_TOL_DEX",
           "PAPER_SAMPLING_RATES", "claim_verdict", "host_bootstrap_median_err", "median_shift_claim",
           "poisson_floor_dex", "sampling_rate_test"]


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
    n_boot: int = 200,
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
    n_boot : int
        Host-bootstrap replicates for the errors of the median shifts (0: errors NaN). They
        draw from a stream of their own, so the other numbers do not depend on ``n_boot``.

    Returns
    -------
    dict
        Per run name: ``rates``, ``n_views``, per-rate lists ``median``, ``p16``, ``p84``,
        ``half_width_16_84``, ``std``, ``mean_abs``, ``n_nonfinite`` of ``d`` (dex);
        ``width_16_84_rate_0.6_0.8`` and ``std_rate_0.6_0.8`` (``d`` pooled over the rates in
        [0.6, 0.8], the paper's stability number); ``max_abs_diff_vs_predictions_csv`` (dex,
        a consistency check of the fold models against the run's own predictions);
        ``seconds`` (wall time). The median shift at fixed true mass adds, per rate:
        ``median_err`` (host-bootstrap standard error of ``median``, dex); ``n_gal_median``
        (median galaxies per view after sampling) and ``poisson_floor_dex``
        (:func:`poisson_floor_dex` at that N, dex of M200c); ``eps_median``,
        ``eps_half_width_16_84`` and ``eps_std`` of prediction minus true log10 M200c at that
        rate (dex, all views); ``worst_bin_median``, ``worst_bin_median_err`` and
        ``worst_bin_lo`` (the judged bin with the largest |median shift| at that rate, NaN if
        none). Also ``bins_true``: per bin of true log10 M200c [Msun/h] on the fixed
        :data:`BIN_WIDTH_DEX` grid covering the data and 14-15, ``lo``, ``hi``,
        ``in_claim_range`` and per-rate lists ``n`` (views keeping >= :data:`BIN_MIN_GAL`
        galaxies), ``median``, ``median_err`` (dex) and ``judged`` (in range and ``n >=``
        :data:`BIN_MIN_VIEWS`); ``bin_settings``; ``n_boot``; and ``median_shift_claim``
        (:func:`median_shift_claim` of the run).
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
            model_path = RunDir(run.path).fold_path(int(f))
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
        res.update(_median_shift_block(
            rates, ref, pred, run.log_m_true[mine], run.halo_id[mine],
            {r: resampled[r].n_gal[pos] for r in rates}, n_boot, seed))
        res["median_shift_claim"] = median_shift_claim(run.name, res)
        res["seconds"] = time.perf_counter() - t0
        out[run.name] = res
        log.info("sampling-rate test of %s: %d views in %.1f s", run.name, len(mine),
                 res["seconds"])
    return out
