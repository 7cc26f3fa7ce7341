"""Figures and the evaluation report (Markdown and self-contained HTML).

Figures follow Ho et al. 2019 (ApJ 887, 25; figures 4-8): predicted against true mass with the
running 16/50/84 percentiles, residuals against true mass, residual histograms of all models,
the sampling-rate stability test, and the scatter of every model. They are drawn with
matplotlib's object-oriented API (no pyplot state, Agg canvas) and written atomically as PNG.

Public API: :func:`write_report` (all of it), and the single figures :func:`plot_pred_vs_true`,
:func:`plot_residual_vs_true`, :func:`plot_residual_hist`, :func:`plot_sampling_rate`,
:func:`plot_scatter_bars`; :func:`running_percentiles`.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dynmass._io import atomic_path, atomic_write_text
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
    "write_report",
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
    "sampling_rate.png": "Sampling-rate test: spread of the prediction shift "
    "d = pred(r) - pred(1) when each galaxy is kept with probability r.",
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
    """Predicted against true log10 M200c, one panel per run, with running percentiles."""
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
    """Residual eps against true log10 M200c, one panel per run, with running percentiles."""
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
    """Residual histograms of all runs on one plot (normalised to unit area)."""
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
    """Bars of the scatter per run: 16-84 half width and std, all masses and 1e14-1e15."""
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
    """Coverage of 68% and 95% intervals against true mass, one line per model."""
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
    """Width of the prediction shift against sampling rate, every run on one plot."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
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
        ax2.plot(r, [_nan(v) for v in s["median"]], "o-", color=col, label=name)
        ax2.fill_between(r, [_nan(v) for v in s["p16"]], [_nan(v) for v in s["p84"]],
                         color=col, alpha=0.15)
    ax1.set(xlabel="sampling rate r (fraction of galaxies kept)",
            ylabel="spread of shift pred(r) - pred(1) [dex]",
            title="Stability when galaxies are dropped (lower is better)")
    ax1.invert_xaxis()
    ax1.legend(fontsize=7)
    ax2.axhline(0, color="k", lw=1, ls="--")
    ax2.set(xlabel="sampling rate r (fraction of galaxies kept)",
            ylabel="median shift (band: 16-84) [dex]", title="Systematic shift of predictions")
    ax2.invert_xaxis()
    ax2.legend(fontsize=8)
    return _save(fig, Path(path))


# ------------------------------------------------------------------------------------ report


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _f(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _pm(block: dict[str, Any], key: str) -> str:
    err = block.get(f"{key}_err")
    return _f(block.get(key)) + ("" if err is None else f" ± {_f(err)}")


def _summary_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "model", "views", "halos", "bias (median eps)", "scatter (half 16-84)", "std",
            "catastrophic (abs eps > 0.5 dex)", "bias 1e14-1e15", "scatter 1e14-1e15", "std 1e14-1e15",
            "train [s]", "predict [s]"]
    rows = []
    for name, m in result["models"].items():
        o, p = m["overall"], m["paper_range"]
        rows.append([name, m["model"], str(m["n_views"]), str(m["n_halos"]),
                     _f(o["bias_median"], "+.3f"), _pm(o, "half_width_16_84"), _pm(o, "std"),
                     _f(o["catastrophic_fraction"], ".2%"), _f(p["bias_median"], "+.3f"),
                     _pm(p, "half_width_16_84"), _pm(p, "std"),
                     _f(m.get("train_seconds"), ".1f"), _f(m.get("predict_seconds"), ".2f")])
    return head, rows


_INTERVAL_TEXT = ("Neyman-belt intervals (dynmass bundle) on held-out views, the views of each "
                  "fold calibrated on the other folds only. Judged within the calibrated range "
                  "(0.2 dex inside the training range, 25 hosts beyond each end): 68% +/- 3% and "
                  "95% +/- 2% overall and in every 0.2 dex bin of true mass with 10 or more hosts. "
                  "In small runs a bin's standard error is itself near the tolerance: the last "
                  "column says how many standard errors the worst bin is off.")


def _worst_pull(bins: list[dict[str, Any]]) -> float:
    """Largest |coverage - nominal| / (host-bootstrap standard error) over judged bins."""
    pulls = [abs(b[f"coverage_{lv}"] - lv / 100) / _nan(b[f"se_{lv}"])
             for b in bins if b.get("judged") for lv in (68, 95) if _nan(b[f"se_{lv}"]) > 0]
    return max(pulls) if pulls else float("nan")


def _interval_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "calibrated log10 M200c", "68% coverage", "95% coverage",
            "median 68% width [dex]", "every true-mass bin within tolerance",
            "largest bin miss / its std error"]
    rows = []
    for name, m in result["models"].items():
        iv = m.get("intervals") or {}
        if "error" in iv or not iv:
            rows.append([name, "—", "—", "—", "—", f"not computed: {iv.get('error', '')}", "—"])
            continue
        lo, hi = iv["calibrated_range"]
        rows.append([name, f"{lo:.2f}–{hi:.2f}", _f(iv["coverage_68"]), _f(iv["coverage_95"]),
                     _f(iv["width_68_median_dex"]), "yes" if iv["passed"] else "no",
                     _f(_worst_pull(iv["bins_true"]), ".1f")])
    return head, rows


def _sampling_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    samp = {n: m["sampling"] for n, m in result["models"].items() if m.get("sampling")}
    if not samp:
        return None
    rates = next(iter(samp.values()))["rates"]
    head = ["run", "views", *[f"r = {r:g}" for r in rates], "16-84 width, r = 0.6-0.8"]
    rows = [[n, str(s["n_views"]),
             *[f"{_f(h)} ({_f(sd)})" for h, sd in zip(s["half_width_16_84"], s["std"],
                                                      strict=True)],
             _f(s.get("width_16_84_rate_0.6_0.8"))] for n, s in samp.items()]
    return head, rows


def _bin_rows(m: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["log10 M range", "views", "bias", "scatter (half 16-84)", "std", "catastrophic"]
    rows = [[f"[{b['lo']:.2f}, {b['hi']:.2f})", str(b["n"]), _f(b["bias_median"], "+.3f"),
             _pm(b, "half_width_16_84"), _pm(b, "std"), _f(b["catastrophic_fraction"], ".1%")]
            for b in m["bins"] if b["n"] > 0]
    return head, rows


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *["| " + " | ".join(r) + " |" for r in rows]])


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                  for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _settings_sections(runs: Sequence[Run], result: dict[str, Any]) -> list[tuple[str, Any]]:
    sections: list[tuple[str, Any]] = [("Evaluation settings", result.get("evaluation", {})),
                                       ("Observations (observe stage)", result.get("observations",
                                                                                   {}))]
    obs_path = (result.get("observations") or {}).get("path")
    if obs_path and Path(obs_path).is_file():
        try:
            from dynmass.observations import observation_attrs

            attrs = observation_attrs(obs_path)
            sections.append(("Observations file attributes", attrs))
        except Exception as exc:  # noqa: BLE001 - the report must not fail on a foreign file
            sections.append(("Observations file attributes", f"unreadable: {exc}"))
    for run in runs:
        sections.append((f"Run '{run.name}': settings.json ({run.path})", run.settings))
        sections.append((f"Run '{run.name}': timing.json", run.timing))
    sections.append(("Provenance of this report", result.get("provenance", {})))
    return sections


_INTRO = (
    "Residuals eps = log10(M_pred/M_true) of cross-validated predictions (every view predicted "
    "by the fold model that did not see its halo). Bias = median eps; scatter = half the 16-84 "
    "percentile width and the standard deviation (dex); errors are bootstrap standard "
    "deviations over halos. Ho et al. 2019 (ApJ 887, 25) quote statistics for "
    "1e14 <= M200c < 1e15 Msun/h. Masses are M200c in Msun/h."
)
_SAMPLING_TEXT = (
    "Sampling-rate test (Ho et al. 2019, sec. 5.3): each galaxy of a test view is kept with "
    "probability r (same random draws for every model); shift d = pred(r) - pred(1) of the "
    "same view by the same fold model. Cells: half 16-84 width of d (standard deviation), dex; "
    "last column: full 16-84 width of d pooled over r = 0.6-0.8 (the paper's stability number)."
)

_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
        "th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}"
        "th{background:#eee}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:0.6em;"
        "overflow-x:auto;font-size:0.85em}figcaption{font-size:0.9em;color:#444}")


def write_report(runs: Sequence[Run], result: dict[str, Any],
                 out_dir: str | os.PathLike) -> dict[str, str]:
    """Write every figure, ``report.md`` and ``report.html`` into ``out_dir``.

    Parameters
    ----------
    runs : sequence of Run
        The evaluated runs (for the per-view points).
    result : dict
        Output of :func:`dynmass.evaluate.evaluate_runs` (before ``files`` is added).
    out_dir : str or os.PathLike
        Folder; figures are written beside the report and linked by relative path.

    Returns
    -------
    dict
        ``{"figures": [file names], "report_md": "report.md", "report_html": "report.html"}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = [plot_pred_vs_true(runs, out / "pred_vs_true.png"),
            plot_residual_vs_true(runs, out / "residual_vs_true.png"),
            plot_residual_hist(runs, result, out / "residual_hist.png"),
            plot_scatter_bars(result, out / "scatter.png")]
    cov = plot_interval_coverage(result, out / "coverage.png")
    if cov is not None:
        figs.append(cov)
    sampling = _sampling_rows(result)
    if sampling:
        figs.append(plot_sampling_rate(result, out / "sampling_rate.png"))
    names = [p.name for p in figs]
    summary = _summary_rows(result)
    sections = _settings_sections(runs, result)

    md = ["# dynmass evaluation report", "", _INTRO, "", "## Summary", "", _md_table(*summary)]
    intervals = _interval_rows(result)
    md += ["", "## Interval coverage", "", _INTERVAL_TEXT, "", _md_table(*intervals)]
    if sampling:
        md += ["", "## Sampling-rate test", "", _SAMPLING_TEXT, "", _md_table(*sampling)]
    md += ["", "## Figures", ""]
    for n in names:
        md += [f"![{FIGURES[n]}]({n})", "", f"*{FIGURES[n]}*", ""]
    md += ["## Bias and scatter in bins of true mass", ""]
    for name, m in result["models"].items():
        md += [f"### {name} ({m['model']})", "", _md_table(*_bin_rows(m)), ""]
    md += ["## Settings of every stage", ""]
    for title, obj in sections:
        md += [f"### {title}", "", "```json", json.dumps(obj, indent=2, default=str), "```", ""]
    atomic_write_text(out / "report.md", "\n".join(md))

    h = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>dynmass evaluation report"
         f"</title><style>{_CSS}</style></head><body>", "<h1>dynmass evaluation report</h1>",
         f"<p>{html.escape(_INTRO)}</p>", "<h2>Summary</h2>", _html_table(*summary)]
    h += ["<h2>Interval coverage</h2>", f"<p>{html.escape(_INTERVAL_TEXT)}</p>",
          _html_table(*intervals)]
    if sampling:
        h += ["<h2>Sampling-rate test</h2>", f"<p>{html.escape(_SAMPLING_TEXT)}</p>",
              _html_table(*sampling)]
    h.append("<h2>Figures</h2>")
    for n in names:
        cap = html.escape(FIGURES[n])
        h.append(f"<figure><img src='{html.escape(n)}' alt='{cap}'><figcaption>{cap}"
                 "</figcaption></figure>")
    h.append("<h2>Bias and scatter in bins of true mass</h2>")
    for name, m in result["models"].items():
        h += [f"<h3>{html.escape(name)} ({html.escape(m['model'])})</h3>",
              _html_table(*_bin_rows(m))]
    h.append("<h2>Settings of every stage</h2>")
    for title, obj in sections:
        h += [f"<h3>{html.escape(title)}</h3>",
              f"<pre>{html.escape(json.dumps(obj, indent=2, default=str))}</pre>"]
    h.append("</body></html>")
    atomic_write_text(out / "report.html", "\n".join(h))
    return {"figures": names, "report_md": "report.md", "report_html": "report.html"}
