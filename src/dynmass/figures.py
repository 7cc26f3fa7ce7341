"""The figures of the evaluation report, written as PNG beside it.

Figures follow Ho et al. 2019 (ApJ 887, 25; figures 4-8): predicted against true mass with the
running 16/50/84 percentiles, residuals against true mass, residual histograms of all models,
the sampling-rate stability test, and the scatter of every model. They are drawn with
matplotlib's object-oriented API (no pyplot state, Agg canvas) and written atomically as PNG.
:func:`dynmass.report.write_report` draws them all and links them from the report.

Public API: the single figures :func:`plot_pred_vs_true`, :func:`plot_residual_vs_true`,
:func:`plot_residual_hist`, :func:`plot_scatter_bars`, :func:`plot_interval_coverage`,
:func:`plot_sampling_rate`; :func:`running_percentiles`; :data:`FIGURES` (file names and
captions). All of them are importable from :mod:`dynmass.report` too.

Examples
--------
Running percentiles of the residuals, and the predicted-against-true figure, of a synthetic
run folder (three views per halo, residuals ~ N(0.1, 0.2) dex):

>>> import shutil
>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from dynmass.figures import plot_pred_vs_true, running_percentiles
>>> from dynmass.rundir import load_runs
>>> from dynmass.testing.runs import synthetic_predictions_run
>>> tmp = Path(tempfile.mkdtemp())
>>> (run,) = load_runs([synthetic_predictions_run(tmp / "run", np.random.default_rng(0),
...                                               n_halos=300)])
>>> edges = np.array([13.5, 14.0, 14.5, 15.0])  # log10 M200c [Msun/h]
>>> centres, p16, p50, p84 = running_percentiles(run.log_m_true,
...                                              run.log_m_pred - run.log_m_true, edges)
>>> centres.tolist(), np.round(p50, 1).tolist(), np.round((p84 - p16) / 2, 1).tolist()
([13.75, 14.25, 14.75], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2])
>>> plot_pred_vs_true([run], tmp / "pred_vs_true.png").name
'pred_vs_true.png'
>>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dynmass._io import atomic_path
from dynmass.metrics import CATASTROPHIC_DEX, PAPER_RANGE, residuals
from dynmass.rundir import Run

__all__ = [
    "FIGURES",
    "plot_interval_coverage",
    "plot_pred_vs_true",
    "plot_residual_hist",
    "plot_residual_vs_true",
    "plot_sampling_rate",
    "plot_scatter_bars",
    "running_percentiles",
]

#: File names of the figures, with their captions.
FIGURES: dict[str, str] = {
    "pred_vs_true.png": "Predicted against true mass, one panel per model: points are test "
    "views, the line and band the running median and 16-84 percentiles, dashed the 1:1 line.",
    "residual_vs_true.png": "Residual eps = log10(M_pred/M_true) against true mass with the "
    "running 16/50/84 percentiles; dotted lines mark catastrophic outliers (|eps| > 0.5 dex).",
    "residual_hist.png": "Residual histograms of all models on one plot.",
    "scatter.png": "Scatter per model (half the 16-84 width and standard deviation, bootstrap "
    "errors over halos), all masses and 10^14 <= M200c < 10^15 Msun/h.",
    "coverage.png": "Interval coverage: fraction of held-out views whose Neyman-belt 68% "
    "(left) and 95% (right) interval contains the true mass, per 0.2 dex bin of true mass, "
    "intervals of each fold calibrated on the other folds only; bands 68 +/- 3% and 95 +/- 2%, "
    "error bars host bootstrap, open symbols outside the calibrated range.",
    "sampling_rate.png": "Sampling-rate test, each galaxy kept with probability r. Left: "
    "spread of the prediction shift d = pred(r) - pred(1). Middle: median of d (error bars: "
    "host bootstrap) and, open symbols, d in the worst judged 0.2-dex bin of true mass (views "
    "keeping >= 10 galaxies, bins of >= 20 views in 1e14-1e15); shaded: the claim's +/- 0.03 "
    "dex. Right: scatter of log10(M_pred/M_true) at each rate and the Poisson floor "
    "3 / (ln 10 sqrt(2 (N - 1))) dex at the median N.",
}

_MASS_LABEL = r"$\log_{10} M_{200c}$ [$h^{-1} M_\odot$]"
_EPS_LABEL = r"$\epsilon = \log_{10}(M_{\rm pred}/M_{\rm true})$ [dex]"
_COLORS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9")


def running_percentiles(
    x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """16th, 50th and 84th percentiles of ``y`` in bins of ``x``.

    Parameters
    ----------
    x, y : numpy.ndarray
        Abscissa (e.g. true log10 M200c [Msun/h]) and values.
    edges : numpy.ndarray
        Bin edges of ``x``.
    min_count : int
        Bins with fewer points are dropped.

    Returns
    -------
    centres, p16, p50, p84 : numpy.ndarray
    """
    idx = np.digitize(x, edges) - 1
    rows = []
    for k in range(len(edges) - 1):
        yk = y[idx == k]
        if len(yk) >= min_count:
            rows.append((0.5 * (edges[k] + edges[k + 1]), *np.percentile(yk, [16, 50, 84])))
    if not rows:
        return (np.zeros(0),) * 4
    arr = np.array(rows)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def _grid(n: int, size: float = 4.0) -> tuple[Figure, list[Any]]:
    ncol = min(n, 3)
    nrow = math.ceil(n / ncol)
    fig = Figure(figsize=(size * ncol + 0.5, size * nrow + 0.3), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _edges(lo: float, hi: float, width: float = 0.1) -> np.ndarray:
    lo = math.floor(lo / width) * width
    hi = math.ceil(hi / width) * width
    return np.arange(lo, hi + width / 2, width) if hi > lo else np.array([lo, lo + width])


def _points(ax: Any, x: np.ndarray, y: np.ndarray, color: str) -> None:
    alpha = float(np.clip(30.0 / math.sqrt(max(len(x), 1)), 0.05, 0.6))
    ax.scatter(x, y, s=3, alpha=alpha, color=color, lw=0, rasterized=True, label="test views")


def _percentile_lines(ax: Any, x: np.ndarray, y: np.ndarray, edges: np.ndarray,
                      color: str) -> None:
    c, p16, p50, p84 = running_percentiles(x, y, edges)
    if len(c):
        ax.fill_between(c, p16, p84, color=color, alpha=0.25, label="16-84 percentiles")
        ax.plot(c, p50, color="k", lw=1.5, label="running median")


def plot_pred_vs_true(runs: Sequence[Run], path: str | os.PathLike) -> Path:
    """Predicted against true log10 M200c, one panel per run, with running percentiles.

    Parameters
    ----------
    runs : sequence of Run
        Evaluated runs (:func:`dynmass.rundir.load_runs`), one panel each.
    path : str or os.PathLike
        PNG file to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    t_lo = min(r.log_m_true.min() for r in runs)
    t_hi = max(r.log_m_true.max() for r in runs)
    # axis range: all true masses and the predictions, but at most 0.7 dex beyond the true range
    lo = max(min(np.percentile(r.log_m_pred, 0.5) for r in runs), t_lo - 0.7)
    hi = min(max(np.percentile(r.log_m_pred, 99.5) for r in runs), t_hi + 0.7)
    lo, hi = min(lo, t_lo), max(hi, t_hi)
    pad = 0.05 * (hi - lo + 1e-3)
    lim = (lo - pad, hi + pad)
    edges = _edges(t_lo, t_hi)
    fig, axes = _grid(len(runs))
    for k, (ax, run) in enumerate(zip(axes, runs, strict=True)):
        col = _COLORS[k % len(_COLORS)]
        _points(ax, run.log_m_true, np.clip(run.log_m_pred, *lim), col)
        _percentile_lines(ax, run.log_m_true, run.log_m_pred, edges, col)
        ax.plot(lim, lim, "k--", lw=1, label="1:1")
        ax.set(xlim=lim, ylim=lim, aspect="equal", xlabel="true " + _MASS_LABEL,
               ylabel="predicted " + _MASS_LABEL, title=f"{run.name} ({run.model})")
        ax.legend(loc="upper left", fontsize=8, markerscale=3)
    fig.suptitle("Predicted vs true cluster mass (cross-validated test views)")
    return _save(fig, Path(path))


def plot_residual_vs_true(runs: Sequence[Run], path: str | os.PathLike) -> Path:
    """Residual eps against true log10 M200c, one panel per run, with running percentiles.

    Parameters
    ----------
    runs : sequence of Run
        Evaluated runs (:func:`dynmass.rundir.load_runs`), one panel each.
    path : str or os.PathLike
        PNG file to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    edges = _edges(min(r.log_m_true.min() for r in runs), max(r.log_m_true.max() for r in runs))
    all_eps = np.concatenate([residuals(r) for r in runs])
    ylim = float(np.clip(np.percentile(np.abs(all_eps), 99.5) * 1.1, 0.6, 3.0))
    fig, axes = _grid(len(runs))
    for k, (ax, run) in enumerate(zip(axes, runs, strict=True)):
        col = _COLORS[k % len(_COLORS)]
        eps = residuals(run)
        _points(ax, run.log_m_true, eps, col)
        _percentile_lines(ax, run.log_m_true, eps, edges, col)
        ax.axhline(0, color="k", lw=1, ls="--")
        for s in (-1, 1):
            ax.axhline(s * CATASTROPHIC_DEX, color="gray", lw=1, ls=":")
        for m in PAPER_RANGE:
            ax.axvline(m, color="gray", lw=0.6, ls="-.")
        ax.set(ylim=(-ylim, ylim), xlabel="true " + _MASS_LABEL, ylabel=_EPS_LABEL,
               title=f"{run.name} ({run.model})")
        ax.legend(loc="upper right", fontsize=8, markerscale=3)
    fig.suptitle("Residual vs true mass (dotted: |eps| = 0.5 dex; dash-dot: 1e14, 1e15)")
    return _save(fig, Path(path))


def plot_residual_hist(runs: Sequence[Run], result: dict[str, Any],
                       path: str | os.PathLike) -> Path:
    """Residual histograms of all runs on one plot (normalised to unit area).

    Parameters
    ----------
    runs : sequence of Run
        Evaluated runs, one histogram each (eps in dex).
    result : dict
        Output of :func:`dynmass.evaluate.evaluate_runs`; the legend quotes each run's overall
        bias and standard deviation from ``result["models"][run.name]["overall"]``.
    path : str or os.PathLike
        PNG file to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    all_eps = np.concatenate([residuals(r) for r in runs])
    lim = float(np.clip(np.percentile(np.abs(all_eps), 99.5) * 1.05, 0.5, 3.0))
    bins = np.linspace(-lim, lim, 61)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for k, run in enumerate(runs):
        o = result["models"][run.name]["overall"]
        ax.hist(np.clip(residuals(run), -lim, lim), bins=bins, density=True, histtype="step",
                lw=2, color=_COLORS[k % len(_COLORS)],
                label=f"{run.name}: bias {_f(o['bias_median'], '+.3f')}, "
                      f"std {_f(o['std'])} dex")
    ax.axvline(0, color="k", lw=1, ls="--")
    ax.set(xlabel=_EPS_LABEL, ylabel="probability density [1/dex]",
           title="Residual distribution of all models (all test views)")
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def plot_scatter_bars(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Bars of the scatter per run: 16-84 half width and std, all masses and 1e14-1e15.

    Parameters
    ----------
    result : dict
        Output of :func:`dynmass.evaluate.evaluate_runs`: the ``overall`` and ``paper_range``
        scatters (dex) of every model, with their bootstrap errors as error bars.
    path : str or os.PathLike
        PNG file to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    names = list(result["models"])
    fig = Figure(figsize=(max(6.0, 1.6 * len(names) + 3), 4.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    series = [("overall", "half_width_16_84", "half 16-84 width, all masses"),
              ("overall", "std", "std, all masses"),
              ("paper_range", "half_width_16_84", "half 16-84 width, 1e14-1e15"),
              ("paper_range", "std", "std, 1e14-1e15")]
    w = 0.8 / len(series)
    for j, (block, key, label) in enumerate(series):
        vals = [_nan(result["models"][n][block][key]) for n in names]
        errs = [_nan(result["models"][n][block].get(f"{key}_err")) for n in names]
        errs = [0.0 if not np.isfinite(e) else e for e in errs]
        bars = ax.bar(x + (j - (len(series) - 1) / 2) * w, vals, w, yerr=errs, capsize=2,
                      label=label, color=f"C{j}", alpha=0.85)
        ax.bar_label(bars, labels=[_f(v, ".3f") for v in vals], fontsize=7, rotation=90,
                     padding=2)
    ax.set_xticks(x, [f"{n}\n({result['models'][n]['model']})" for n in names])
    ax.set(ylabel="scatter of eps [dex]", title="Scatter of log10(M_pred/M_true) per model")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, Path(path))


def plot_interval_coverage(result: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Coverage of 68% and 95% intervals against true mass, one line per model.

    Parameters
    ----------
    result : dict
        Output of :func:`dynmass.evaluate.evaluate_runs`; models whose ``intervals`` entry
        lacks ``bins_true`` (coverage not computed) are left out.
    path : str or os.PathLike
        PNG file to write (atomically).

    Returns
    -------
    pathlib.Path or None
        ``path``, or None (nothing written) when no model has interval coverage.
    """
    models = {n: m["intervals"] for n, m in result["models"].items()
              if "bins_true" in m.get("intervals", {})}
    if not models:
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for ax, level, tol in ((axes[0], 68, 0.03), (axes[1], 95, 0.02)):
        ax.axhspan(level / 100 - tol, level / 100 + tol, color="0.85")
        ax.axhline(level / 100, color="0.4", lw=0.8)
        for i, (name, iv) in enumerate(models.items()):
            rows = [b for b in iv["bins_true"] if b["n"] and np.isfinite(_nan(b.get("se_68")))]
            x = np.array([(b["lo"] + b["hi"]) / 2 for b in rows])
            y = np.array([b[f"coverage_{level}"] for b in rows])
            se = np.array([_nan(b[f"se_{level}"]) for b in rows])
            inside = np.array([b.get("in_calibrated_range", True) for b in rows], bool)
            c = _COLORS[i % len(_COLORS)]
            ax.errorbar(x[inside], y[inside], yerr=se[inside], fmt="o-", color=c, ms=4,
                        label=f"{name} ({iv[f'coverage_{level}']:.3f} in range)")
            ax.errorbar(x[~inside], y[~inside], yerr=se[~inside], fmt="o", mfc="none",
                        color=c, ms=4)
        ax.set_ylim(max(0.0, level / 100 - 0.3), 1.0)
        ax.set_xlabel(_MASS_LABEL)
        ax.set_title(f"{level}% intervals")
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("fraction of held-out views covered")
    return _save(fig, Path(path))


def plot_sampling_rate(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """The sampling-rate test against rate, every run on one plot: three panels.

    Left: width of the prediction shift d = pred(r) - pred(1). Middle: median shift with its
    host-bootstrap error bars and, open symbols, the shift of the worst judged 0.2-dex bin of
    true mass, against the claim's band of +/- :data:`dynmass.sampling.MEDIAN_SHIFT_TOL_DEX`
    (shaded). Right: scatter of log10(M_pred/M_true) at each rate next to the Poisson floor
    (:func:`dynmass.sampling.poisson_floor_dex` at the median number of galaxies).

    Parameters
    ----------
    result : dict
        Output of :func:`dynmass.evaluate.evaluate_runs`; models without a ``sampling`` entry
        are left out. Results written before the median-shift keys existed are drawn without
        error bars and without the right panel's lines.
    path : str or os.PathLike
        PNG file to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from dynmass.sampling import MEDIAN_SHIFT_TOL_DEX

    fig = Figure(figsize=(16, 4.8), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    tol = MEDIAN_SHIFT_TOL_DEX
    ax2.axhspan(-tol, tol, color="0.88", zorder=0,
                label=f"claim: |median shift| <= {tol:g} dex")
    floors: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for k, (name, m) in enumerate(result["models"].items()):
        s = m.get("sampling")
        if not s:
            continue
        col = _COLORS[k % len(_COLORS)]
        r = np.asarray(s["rates"], dtype=float)
        ax1.plot(r, [_nan(v) for v in s["half_width_16_84"]], "o-", color=col,
                 label=f"{name}: half 16-84 width")
        ax1.plot(r, [_nan(v) for v in s["std"]], "s--", color=col, alpha=0.7,
                 label=f"{name}: std")
        err = [_nan(v) for v in s.get("median_err", [None] * len(r))]
        ax2.errorbar(r, [_nan(v) for v in s["median"]],
                     yerr=[0.0 if not np.isfinite(e) else e for e in err], fmt="o-", color=col,
                     capsize=3, label=f"{name}: all views")
        if "worst_bin_median" in s:
            ax2.plot(r, [_nan(v) for v in s["worst_bin_median"]], "o:", mfc="none", color=col,
                     label=f"{name}: worst judged mass bin")
        if "eps_half_width_16_84" in s:
            ax3.plot(r, [_nan(v) for v in s["eps_half_width_16_84"]], "o-", color=col,
                     label=f"{name}: half 16-84 width")
            ax3.plot(r, [_nan(v) for v in s["eps_std"]], "s--", color=col, alpha=0.7,
                     label=f"{name}: std")
            floor = np.array([_nan(v) for v in s["poisson_floor_dex"]])
            floors.setdefault(tuple(np.round(floor, 6)), (r, floor))
    for j, (r, floor) in enumerate(floors.values()):
        ax3.plot(r, floor, "k:", lw=2.2, zorder=5,
                 label="Poisson floor (dispersion from N galaxies)" if j == 0 else None)
    ax1.set(xlabel="sampling rate r (fraction of galaxies kept)",
            ylabel="spread of shift pred(r) - pred(1) [dex]",
            title="Stability when galaxies are dropped (lower is better)")
    ax2.axhline(0, color="k", lw=1, ls="--")
    ax2.set(xlabel="sampling rate r (fraction of galaxies kept)",
            ylabel="median shift pred(r) - pred(1) [dex]",
            title="Median shift (error bars: host bootstrap)")
    ax3.set(xlabel="sampling rate r (fraction of galaxies kept)",
            ylabel="scatter of log10(M_pred/M_true) [dex]",
            title="Scatter at each rate vs the Poisson floor")
    for ax in (ax1, ax2, ax3):
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    return _save(fig, Path(path))


# ----------------------------------------------------------- number formatting (shared)
# Used by the figure labels here and by the tables of dynmass.report.


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _f(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)
