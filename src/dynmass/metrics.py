"""Accuracy of a run's held-out predictions: bias, scatter, outliers, with halo bootstrap.

The residual of a view is ``eps = log10(M_pred / M_true)`` (dex, M200c in Msun/h). Following
Ho et al. 2019 (ApJ 887, 25; arXiv:1902.05950, section 4) we quote the median of ``eps`` as the
bias and two scatters: half the 16-84 percentile width and the standard deviation, overall, in
bins of true mass, and in the paper's range 10^14 <= M200c < 10^15 Msun/h. Uncertainties come
from a bootstrap over *halos* (all views of a halo are drawn together, since they share the
halo's mass and its neighbours and are therefore correlated).

Examples
--------
>>> import numpy as np
>>> from dynmass.metrics import summarize
>>> eps = np.random.default_rng(0).normal(0.1, 0.2, 3000)
>>> s = summarize(eps, n_boot=0)
>>> round(s["bias_median"], 1), round(s["std"], 1)
(0.1, 0.2)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dynmass.errors import InputError
from dynmass.rundir import Run

log = logging.getLogger(__name__)


#: |eps| above this (dex) counts as a catastrophic outlier.
CATASTROPHIC_DEX: float = 0.5
#: log10 M200c [Msun/h] range in which Ho et al. 2019 quote their statistics.
PAPER_RANGE: tuple[float, float] = (14.0, 15.0)


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
    """Bin edges of log10 M200c [Msun/h], multiples of ``width_dex`` covering the data.

    Parameters
    ----------
    log_m_true : numpy.ndarray
        True log10 M200c [Msun/h] to cover.
    width_dex : float
        Bin width, dex (> 0).

    Returns
    -------
    numpy.ndarray
        Edges from the multiple of ``width_dex`` at or below the smallest mass to the one at or
        above the largest (at least one bin), rounded to 10 decimals.

    Raises
    ------
    InputError
        If ``width_dex <= 0``.
    """
    if width_dex <= 0:
        raise InputError(f"mass bin width must be > 0 dex, got {width_dex}")
    lo = math.floor(float(np.min(log_m_true)) / width_dex + 1e-9) * width_dex
    hi = math.ceil(float(np.max(log_m_true)) / width_dex - 1e-9) * width_dex
    if hi <= lo:
        hi = lo + width_dex
    n = round((hi - lo) / width_dex)
    return np.round(lo + width_dex * np.arange(n + 1), 10)


def richness_correlation(
    log_m_true: np.ndarray, eps: np.ndarray, n_gal: np.ndarray,
    mass_range: tuple[float, float] = PAPER_RANGE, bin_dex: float = 0.2, min_views: int = 20,
) -> dict[str, float]:
    """Rank correlation of the residual with richness at fixed true mass.

    A mass used to calibrate a richness-mass relation must not be correlated with richness at
    fixed true mass (machine-learned masses elsewhere were found at rho ~ 0.45; issue "Beyond
    the paper"). Within each ``bin_dex`` bin of true log10 M200c [Msun/h] in ``mass_range``
    (bins with >= ``min_views`` views), the residual ``eps`` [dex] and ``log10 n_gal`` are
    replaced by their ranks scaled to (0, 1); Spearman's rho is the Pearson correlation of the
    pooled within-bin ranks, so the trend of both with mass cannot make a correlation.

    Parameters
    ----------
    log_m_true : numpy.ndarray
        True log10 M200c [Msun/h] of each view.
    eps : numpy.ndarray
        Residual log10(M_pred / M_true) [dex]; NaN (failed views) are left out.
    n_gal : numpy.ndarray
        Galaxies in each view's cylinder.
    mass_range : (float, float)
        Range ``[lo, hi)`` of true log10 M200c [Msun/h] judged.
    bin_dex : float
        Width of the true-mass bins [dex].
    min_views : int
        Smallest number of views for a bin to count.

    Returns
    -------
    dict
        ``rho`` (NaN when no bin counts) and ``n`` (views used).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> m = rng.uniform(14, 15, 4000)
    >>> n = np.round(10 ** (m - 12.3 + rng.normal(0, 0.2, m.size)))
    >>> eps = rng.normal(0, 0.1, m.size)  # independent of richness
    >>> abs(richness_correlation(m, eps, n)["rho"]) < 0.05
    True
    >>> r = richness_correlation(m, eps + (np.log10(n) - (m - 12.3)), n)["rho"]
    >>> bool(r > 0.7)
    True
    """
    lm = np.asarray(log_m_true, dtype=float)
    e = np.asarray(eps, dtype=float)
    ln = np.log10(np.maximum(np.asarray(n_gal, dtype=float), 1.0))
    lo, hi = mass_range
    ok = np.isfinite(e) & (lm >= lo) & (lm < hi)
    edges = np.arange(lo, hi + 1e-9, bin_dex)
    ra, rb = [], []
    for k in range(len(edges) - 1):
        sel = ok & (lm >= edges[k]) & (lm < edges[k + 1])
        m = int(sel.sum())
        if m < min_views:
            continue
        ra.append((np.argsort(np.argsort(e[sel], kind="stable")) + 0.5) / m)
        rb.append((np.argsort(np.argsort(ln[sel], kind="stable")) + 0.5) / m)
    if not ra:
        return {"rho": float("nan"), "n": 0}
    a, b = np.concatenate(ra), np.concatenate(rb)
    if a.std() == 0 or b.std() == 0:
        return {"rho": float("nan"), "n": int(len(a))}
    return {"rho": float(np.corrcoef(a, b)[0, 1]), "n": int(len(a))}


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
        ``model``, ``run_dir``, ``n_views``, ``n_halos``, ``n_failed`` and
        ``failure_fraction`` (views whose prediction is NaN: the model failed on them, e.g. a
        classical estimator with too few members), ``overall``, ``paper_range``,
        ``bins`` (list of ``{"lo", "hi", ...stats}``), ``richness_correlation``
        (:func:`richness_correlation` over ``paper_range``), ``timing``, and ``train_seconds`` /
        ``predict_seconds`` (wall seconds from timing.json, None if absent). Statistics keys are
        those of :func:`summarize`, computed on the views *with* a prediction, plus
        ``n_failed`` (failed views of that block, not in its ``n``).
    """
    # views the model failed on: kept apart by load_run (run.failed), or NaN in a Run built
    # directly; both are counted in n_failed and left out of the statistics
    fail_cols = getattr(run, "failed", None) or {}
    n_apart = len(fail_cols.get("halo_id", ()))
    eps = np.concatenate([residuals(run), np.full(n_apart, np.nan)])
    lm = np.concatenate([run.log_m_true, fail_cols.get("log10_m200c_true", np.zeros(0))])
    hid = np.concatenate([run.halo_id, fail_cols.get("halo_id", np.zeros(0, np.int64))])
    los_all = np.concatenate([np.asarray(run.predictions["los"]),
                              fail_cols.get("los", np.zeros(0, np.int64))])
    failed = ~np.isfinite(eps)
    ok = ~failed
    n_failed = int(failed.sum())
    n_all = len(eps)
    if n_failed:
        log.warning("%s: %d of %d views have no prediction (NaN: the model failed on them); "
                    "their statistics use the other %d views", run.name, n_failed, n_all,
                    n_all - n_failed)

    def block(sel: np.ndarray) -> dict[str, float]:
        return {**summarize(eps[sel & ok], hid[sel & ok], n_boot, seed),
                "n_failed": int((sel & failed).sum())}

    edges = (mass_bin_edges(lm, float(mass_bins)) if np.isscalar(mass_bins)
             else np.asarray(mass_bins, dtype=float))
    lo, hi = paper_range
    in_range = (lm >= lo) & (lm < hi)
    axes = los_all < 3
    bins = []
    for k in range(len(edges) - 1):
        sel = (lm >= edges[k]) & (lm < edges[k + 1])
        if k == len(edges) - 2:
            sel |= lm == edges[k + 1]
        bins.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), **block(sel)})
    timing = _timing_block(run)
    return {
        "model": run.model,
        "run_dir": str(run.path),
        "n_views": n_all,
        "n_halos": int(len(np.unique(hid))),
        "n_failed": n_failed,
        "failure_fraction": n_failed / n_all if n_all else 0.0,
        "overall": block(np.ones(len(eps), dtype=bool)),
        "paper_range": {"lo": float(lo), "hi": float(hi), **block(in_range)},
        # the paper's test set: the 3 orthogonal (box-axis) views of each host only, so that
        # hosts given extra lines of sight to flatten the training mass function are not
        # over-weighted
        "paper_range_axes": {"lo": float(lo), "hi": float(hi), "views": "los < 3",
                             **block(in_range & axes)},
        "bins": bins,
        # residual against richness at fixed true mass (10^14-10^15): a mass used to calibrate
        # a richness-mass relation must not correlate with richness
        "richness_correlation": richness_correlation(
            lm, eps, np.concatenate([np.asarray(run.predictions["n_gal"], dtype=float),
                                     np.asarray(fail_cols.get("n_gal", np.zeros(0)),
                                                dtype=float)]), paper_range),
        "timing": timing,
        "train_seconds": timing["train_seconds"],
        "predict_seconds": timing["predict_seconds"],
    }
