"""Honest coverage checks of a bundle's (or a run's) prediction intervals.

:func:`coverage` tests the 68% and 95% intervals on views not used to calibrate them: views of
independent universes predicted exactly as ``dynmass predict`` does, or the calibration views
cross-fitted by fold (each fold's views get intervals calibrated on the other folds). It
judges the overall coverage and every bin of true mass inside the calibrated range, with host
bootstrap errors (the views of one host move together); :func:`plot_coverage` draws it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynmass import intervals
from dynmass._io import atomic_path, atomic_write_json, provenance
from dynmass.bundle import Bundle, held_out_calibration, load_bundle
from dynmass.errors import InputError
from dynmass.folds import random_host_folds
from dynmass.intervals import (
    EDGE_MARGIN,
    MAX_HALFWIDTH,
    MIN_HOSTS,
    PERCENTILES,
    Calibration,
    apply_intervals,
    calibrated_range,
    default_k_neighbors,
    host_labels,
    pct_name,
)
from dynmass.observations import read_independent_views, universe_of, universes_of
from dynmass.redshift import views_correction_dex


def coverage_summary(res: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a :func:`coverage` result."""
    keys = ("scheme", "coverage_68", "coverage_95", "n_views_in_range", "calibrated_range",
            "passed", "passed_pred")
    return {k: res[k] for k in keys}


def _calibration_of(source: Bundle | str | os.PathLike) -> tuple[Calibration, dict[str, Any],
                                                                 Bundle | None]:
    if isinstance(source, Bundle):
        return source.calibration, dict(source.interval), source
    p = Path(source)
    if p.is_dir():
        return held_out_calibration(p / "predictions.csv"), {}, None
    b = load_bundle(p)
    return b.calibration, dict(b.interval), b


def _test_views(bundle: Bundle, paths: Sequence[str | os.PathLike]
                ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Bundle predictions (ensemble + intervals) of independent test views, with truths."""
    used = universes_of(bundle.obs_settings)
    for f in bundle.interval.get("files", []):
        used |= universes_of(f)
    cols: dict[str, list[np.ndarray]] = {}
    records = []
    for i, path in enumerate(paths):
        obs = read_independent_views(path, bundle.obs_settings, used, "a coverage test")
        true = obs.log10_m200c()
        uni = universe_of(obs.settings)
        res = bundle.predict(obs)
        d_z = views_correction_dex(obs.settings, bundle.obs_settings)  # as predict adds it
        q = np.column_stack([res[f"log10_m200c_{pct_name(p)}"] for p in PERCENTILES]) + d_z
        for key, arr in (("true", true), ("pred", res["log10_m200c_mean"] + d_z), ("q", q),
                         ("halo_id", np.asarray(obs.clusters["halo_id"], np.int64)),
                         ("source", np.full(obs.n_views, i, np.int64))):
            cols.setdefault(key, []).append(arr)
        records.append({"path": str(path), "universe_sha256": uni,
                        "universes_sha256": sorted(universes_of(obs.settings)),
                        "n_views": int(obs.n_views),
                        "universe_file": obs.settings.get("universe_file"),
                        "redshift": obs.settings.get("redshift")})
    if not records:
        raise InputError("no test observations given")
    return {k: np.concatenate(v) for k, v in cols.items()}, records


def _cross_fit(cal: Calibration, host: np.ndarray, interval: dict[str, Any], method: str,
               k_neighbors: int | None, seed: int) -> tuple[np.ndarray, str, list[int]]:
    """Percentiles of every calibration view (hosts ``host``) from a belt calibrated on the
    other folds."""
    groups = np.unique(cal.fold)
    scheme = "cross-fit by fold"
    if len(groups) < 2:
        part = random_host_folds(host, 2, seed)
        scheme = "two random halves by halo"
    else:
        part = cal.fold
    q = np.empty((len(cal.pred), len(PERCENTILES)))
    ks = []
    for g in np.unique(part):
        val = part == g
        train = ~val
        k = default_k_neighbors(int(train.sum())) if k_neighbors is None else k_neighbors
        ks.append(k)
        grid, table = intervals.calibrate(cal.pred[train], cal.true[train], method, k, PERCENTILES,
                                          host[train], int(interval.get("min_hosts", MIN_HOSTS)),
                                          float(interval.get("max_halfwidth_dex", MAX_HALFWIDTH)),
                                          n_gal=cal.n_gal[train])
        q[val] = apply_intervals(cal.pred[val], grid, table, method, PERCENTILES,
                                 n_gal=cal.n_gal[val])
    return q, scheme, ks


def _host_bootstrap_se(covered: np.ndarray, host: np.ndarray, n_boot: int,
                       rng: np.random.Generator) -> float:
    """Standard error of a coverage fraction, resampling hosts (their views move together)."""
    uniq, inv = np.unique(host, return_inverse=True)
    n_h = np.bincount(inv.ravel(), minlength=len(uniq)).astype(float)
    c_h = np.bincount(inv.ravel(), weights=covered.astype(float), minlength=len(uniq))
    if len(uniq) < 2:
        return float("nan")
    draw = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    frac = c_h[draw].sum(axis=1) / n_h[draw].sum(axis=1)
    return float(np.std(frac, ddof=1))


def coverage_bins(calibrated: Sequence[float], width: float = 0.2) -> np.ndarray:
    """Bin edges of log10 M200c: ``width`` dex bins across ``calibrated``, a narrower last bin
    merged into the one before when under half a bin.

    Parameters
    ----------
    calibrated : sequence of float
        ``[lo, hi]`` calibrated range, log10 M200c [Msun/h]; the first and last edge.
    width : float
        Bin width, dex.

    Returns
    -------
    numpy.ndarray
        Increasing edges, log10 Msun/h, rounded to 6 decimals.
    """
    lo, hi = float(calibrated[0]), float(calibrated[1])
    edges = list(np.arange(lo, hi, width))
    if hi - edges[-1] < width / 2 and len(edges) > 1:
        edges.pop()
    return np.round(np.append(edges, hi), 6)


def coverage(
    bundle_or_run: Bundle | str | os.PathLike,
    *,
    observations: Sequence[str | os.PathLike] | None = None,
    k_neighbors: int | None = None,
    mass_bins: Sequence[float] | None = None,
    min_per_bin: int = 30,
    min_hosts_per_bin: int = 10,
    figure: str | os.PathLike | None = None,
    seed: int = 0,
    method: str | None = None,
    n_boot: int = 300,
) -> dict[str, Any]:
    """Coverage of the 68% and 95% intervals on views not used to calibrate them.

    Two schemes:

    - ``observations`` given (a bundle only): **independent test**. Views of universes the
      bundle never saw are predicted exactly as ``dynmass predict`` does (fold-ensemble mean,
      the bundle's belt), and their true masses are checked against the intervals.
    - otherwise **cross-fitting**: the calibration views of fold (or pseudo-fold) f get
      intervals calibrated on the other folds' views only, split by host.

    Judged: overall, and every bin of true mass inside the bundle's calibrated range
    (``domain["log10_m200c_calibrated"]``, else the whole range) with at least ``min_per_bin``
    views of ``min_hosts_per_bin`` hosts: 68% +/- 3% and 95% +/- 2%. Views of one host are
    correlated, so every fraction's standard error is a bootstrap over hosts.

    Parameters
    ----------
    bundle_or_run : Bundle, bundle file or training run folder
        Source of the intervals (and of the views, without ``observations``).
    observations : sequence of path, optional
        Observations files of independent universes to test on.
    k_neighbors : int, optional
        Window size for cross-fitting (default: :func:`default_k_neighbors`).
    mass_bins : sequence of float, optional
        Bin edges in log10 M200c [Msun/h] (default: :func:`coverage_bins` of the calibrated
        range, plus 0.2 dex bins beyond it, reported but not judged).
    min_per_bin, min_hosts_per_bin : int
        Smaller bins are reported but not judged.
    figure : str or os.PathLike, optional
        Write a PNG of coverage against true and predicted mass here (atomically).
    seed : int
        Seed of the bootstrap and of single-fold halves.
    method : {"neyman", "knn_pred"}, optional
        Interval method for cross-fitting (default: the bundle's; ``"neyman"`` for a run).
    n_boot : int
        Host bootstrap draws per standard error.

    Returns
    -------
    dict
        ``coverage_68``, ``coverage_95``, ``n_views``, ``n_hosts``, ``scheme``, ``method``,
        ``calibrated_range``, ``bins_true`` and ``bins_pred`` (per bin: lo, hi, n, n_hosts,
        coverage_68, coverage_95, se_68, se_95 [host bootstrap], median_offset, width_68,
        judged), ``passed`` (overall and every judged bin of true mass), ``passed_pred``
        (the same for bins of predicted mass: not guaranteed by a Neyman belt, reported).
    """
    cal, interval, bundle = _calibration_of(bundle_or_run)
    cal_host = cal.host
    rng = np.random.default_rng(seed)
    if observations:
        if bundle is None:
            raise InputError("an independent coverage test needs a bundle, not a run folder")
        cols, files = _test_views(bundle, observations)
        true, pred, q = cols["true"], cols["pred"], cols["q"]
        host = host_labels(cols["source"], cols["halo_id"])
        method = interval.get("method", "neyman")
        scheme, ks, extra = "independent test views", [], {"test_files": files}
    else:
        method = method or interval.get("method", "neyman")
        q, scheme, ks = _cross_fit(cal, cal_host, interval, method, k_neighbors, seed)
        true, pred, host, extra = cal.true, cal.pred, cal_host, {}
    lo95, lo68, med, hi68, hi95 = q.T
    in68 = (true >= lo68) & (true <= hi68)
    in95 = (true >= lo95) & (true <= hi95)
    calibrated = bundle.domain.get("log10_m200c_calibrated") if bundle is not None else None
    if calibrated is None:  # a run folder or an older bundle: the same rule as make_bundle
        calibrated = calibrated_range(
            cal.true, cal_host, [float(cal.true.min()), float(cal.true.max())],
            int(interval.get("min_hosts", MIN_HOSTS)),
            float(interval.get("edge_margin_dex", EDGE_MARGIN)))
    judged_range = [float(x) for x in calibrated]
    if mass_bins is None:
        inner = coverage_bins(judged_range)
        below = np.arange(inner[0] - 0.2, np.floor(true.min() * 5) / 5 - 0.2, -0.2)[::-1]
        above = np.arange(inner[-1] + 0.2, np.ceil(true.max() * 5) / 5 + 0.2, 0.2)
        mass_bins = np.round(np.concatenate([below, inner, above]), 6)
    edges = np.asarray(mass_bins, float)

    def per_bin(x: np.ndarray) -> list[dict[str, Any]]:
        rows = []
        idx = np.digitize(x, edges) - 1
        for b in range(len(edges) - 1):
            m = idx == b
            n = int(m.sum())
            row: dict[str, Any] = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                                   "n_hosts": int(np.unique(host[m]).size)}
            if n:
                inside = (edges[b] >= judged_range[0] - 1e-6
                          and edges[b + 1] <= judged_range[1] + 1e-6)
                row.update(coverage_68=float(in68[m].mean()), coverage_95=float(in95[m].mean()),
                           se_68=_host_bootstrap_se(in68[m], host[m], n_boot, rng),
                           se_95=_host_bootstrap_se(in95[m], host[m], n_boot, rng),
                           median_offset=float(np.median(med[m] - true[m])),
                           width_68=float(np.median(hi68[m] - lo68[m])),
                           in_calibrated_range=bool(inside),
                           judged=bool(inside and n >= min_per_bin
                                       and row["n_hosts"] >= min_hosts_per_bin))
            rows.append(row)
        return rows

    def ok(c_68: float, c_95: float) -> bool:
        return abs(c_68 - 0.68) <= 0.03 and abs(c_95 - 0.95) <= 0.02

    in_range = (true >= judged_range[0]) & (true <= judged_range[1])
    c68, c95 = float(in68[in_range].mean()), float(in95[in_range].mean())
    bins_true, bins_pred = per_bin(true), per_bin(pred)
    judged = [b for b in bins_true if b.get("judged")]
    judged_pred = [b for b in bins_pred if b.get("judged")]
    result = {
        "coverage_68": c68,
        "coverage_95": c95,
        "coverage_68_all_views": float(in68.mean()),
        "coverage_95_all_views": float(in95.mean()),
        "n_views": int(len(true)),
        "n_views_in_range": int(in_range.sum()),
        "n_hosts": int(np.unique(host).size),
        "scheme": scheme,
        "method": method,
        "calibrated_range": judged_range,
        "k_neighbors": int(np.median(ks)) if ks else int(interval.get("k_neighbors", 0)),
        "passed_overall": ok(c68, c95),
        "passed": ok(c68, c95) and bool(judged) and all(ok(b["coverage_68"], b["coverage_95"])
                                                        for b in judged),
        "passed_pred": all(ok(b["coverage_68"], b["coverage_95"]) for b in judged_pred),
        "bins_true": bins_true,
        "bins_pred": bins_pred,
        "width_68_median_dex": float(np.median((hi68 - lo68)[in_range])),
        "width_95_median_dex": float(np.median((hi95 - lo95)[in_range])),
        **extra,
    }
    if figure is not None:
        plot_coverage(result, figure)
    return result


def plot_coverage(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """PNG of 68% and 95% interval coverage against true and predicted log10 M200c.

    Parameters
    ----------
    result : dict
        Output of :func:`coverage` (``bins_true``, ``bins_pred``, ``calibrated_range``,
        ``coverage_68``, ``coverage_95``, ``method``, ``scheme``, ``n_views``, ``n_hosts``).
    path : str or os.PathLike
        PNG file to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in zip(axes, ("bins_true", "bins_pred"),
                              ("true", "predicted (ensemble)"), strict=True):
        rows = [b for b in result[key] if b["n"]]
        x = np.array([(b["lo"] + b["hi"]) / 2 for b in rows])
        shown = np.array([b.get("in_calibrated_range", True) and b["n_hosts"] >= 10
                          for b in rows], bool)
        for level, colour, tol in ((68, "C0", 0.03), (95, "C1", 0.02)):
            y = np.array([b[f"coverage_{level}"] for b in rows])
            se = np.array([b[f"se_{level}"] for b in rows], float)
            ax.axhspan(level / 100 - tol, level / 100 + tol, color=colour, alpha=0.15)
            ax.axhline(level / 100, color=colour, lw=0.8)
            ax.errorbar(x[shown], y[shown], yerr=se[shown], fmt="o-", color=colour, ms=4,
                        label=f"{level}% interval (in range: {result[f'coverage_{level}']:.3f})")
            ax.errorbar(x[~shown], y[~shown], yerr=se[~shown], fmt="o", mfc="none",
                        color=colour, ms=4)
            for xi, yi, b in zip(x[~shown], y[~shown], np.array(rows, object)[~shown],
                                 strict=True):
                if b["n_hosts"] < 10 and yi > 0.4:
                    ax.annotate(f"{b['n_hosts']} hosts", (xi, yi), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
        lo, hi = result["calibrated_range"]
        ax.axvspan(min(x.min() - 0.1, lo), lo, color="0.85", zorder=0)
        ax.axvspan(hi, max(x.max() + 0.1, hi), color="0.85", zorder=0)
        ax.set_xlim(min(x.min() - 0.1, lo), max(x.max() + 0.1, hi))
        ax.set_xlabel(f"{label} log10 M200c [Msun/h]")
        ax.set_ylim(0.4, 1.02)
    axes[0].set_ylabel("fraction of test views inside the interval")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{result['method']} interval coverage ({result['scheme']}, {result['n_views']} "
                 f"views of {result['n_hosts']} hosts)\nbands: 68% +/- 3%, 95% +/- 2%; grey: "
                 "outside the calibrated range (open symbols: not judged); error bars: host "
                 "bootstrap", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_coverage(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a :func:`coverage` result as JSON (atomically), with its provenance.

    Parameters
    ----------
    result : dict
        Output of :func:`coverage`.
    path : str or os.PathLike
        JSON file to write; a ``provenance`` entry is added to the written copy only.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    atomic_write_json(path, {**result, "provenance": provenance()})
    return Path(path)
