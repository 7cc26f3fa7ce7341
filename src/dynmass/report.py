"""The evaluation report: ``report.md`` and a self-contained ``report.html``.

The report tabulates the result of :func:`dynmass.evaluate.evaluate_runs` (summary, interval
coverage, sampling-rate test with the median shift at fixed true mass, its claim and the
scatter against the Poisson floor, bias and scatter in bins of true mass, the settings of every
stage) and shows the figures of :mod:`dynmass.figures`, written beside it and linked by
relative path.

Public API: :func:`write_report` (all of it). The single figures :func:`plot_pred_vs_true`,
:func:`plot_residual_vs_true`, :func:`plot_residual_hist`, :func:`plot_scatter_bars`,
:func:`plot_interval_coverage`, :func:`plot_sampling_rate`, and :func:`running_percentiles`
and :data:`FIGURES`, are defined in :mod:`dynmass.figures` and importable from here too.

Examples
--------
The report of a synthetic run folder (three views per halo, residuals ~ N(0.1, 0.2) dex),
written from the result of :func:`dynmass.evaluate.evaluate_runs`, which calls
:func:`write_report` itself when ``figures=True``:

>>> import shutil
>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from dynmass.evaluate import evaluate_runs
>>> from dynmass.report import write_report
>>> from dynmass.rundir import load_runs
>>> from dynmass.testing.runs import synthetic_predictions_run
>>> tmp = Path(tempfile.mkdtemp())
>>> folder = synthetic_predictions_run(tmp / "run", np.random.default_rng(0), n_halos=300)
>>> result = evaluate_runs([folder], tmp / "eval", sampling_rates=None, n_boot=10,
...                        figures=False)
>>> files = write_report(load_runs([folder]), result, tmp / "report")
>>> files["figures"]
['pred_vs_true.png', 'residual_vs_true.png', 'residual_hist.png', 'scatter.png', 'coverage.png']
>>> (tmp / "report" / files["report_md"]).read_text().splitlines()[0]
'# dynmass evaluation report'
>>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynmass._io import atomic_write_text
from dynmass.figures import (
    FIGURES,
    _f,
    _nan,
    plot_interval_coverage,
    plot_pred_vs_true,
    plot_residual_hist,
    plot_residual_vs_true,
    plot_sampling_rate,
    plot_scatter_bars,
    running_percentiles,
)
from dynmass.rundir import Run
from dynmass.sampling import (
    BIN_MIN_GAL,
    BIN_MIN_VIEWS,
    BIN_WIDTH_DEX,
    MEDIAN_SHIFT_TOL_DEX,
    claim_verdict,
)

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
    if any(m.get("n_failed") for m in result["models"].values()):
        # views a model failed on (NaN prediction): counted here, left out of the statistics
        head.insert(3, "failed (no prediction)")
        for row, m in zip(rows, result["models"].values(), strict=True):
            row.insert(3, f"{m.get('n_failed') or 0} ({_f(m.get('failure_fraction'), '.1%')})")
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


def _median_shift_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Rows = models, columns = rates: median shift ± host-bootstrap error (worst judged bin)."""
    samp = {n: m["sampling"] for n, m in result["models"].items()
            if m.get("sampling") and "median_err" in m["sampling"]}
    if not samp:
        return None
    rates = next(iter(samp.values()))["rates"]
    head = ["run", *[f"r = {r:g}" for r in rates]]
    rows = [[n, *[f"{_f(m, '+.3f')} ± {_f(e)} ({_f(w, '+.3f')})" for m, e, w in
                  zip(s["median"], s["median_err"], s["worst_bin_median"], strict=True)]]
            for n, s in samp.items()]
    return head, rows


def _floor_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Rows = models and the Poisson floor, columns = rates: scatter of prediction - truth."""
    samp = {n: m["sampling"] for n, m in result["models"].items()
            if m.get("sampling") and "eps_std" in m["sampling"]}
    if not samp:
        return None
    first = next(iter(samp.values()))
    head = ["run", *[f"r = {r:g}" for r in first["rates"]]]
    rows = [[n, *[f"{_f(h)} ({_f(sd)})" for h, sd in
                  zip(s["eps_half_width_16_84"], s["eps_std"], strict=True)]]
            for n, s in samp.items()]
    rows.append(["median galaxies per view", *[_f(x, ".0f") for x in first["n_gal_median"]]])
    rows.append(["Poisson floor", *[_f(x) for x in first["poisson_floor_dex"]]])
    return head, rows


def _claim_lines(result: dict[str, Any]) -> list[str]:
    """``VERDICT: claim (value)`` of every model's median-shift claim."""
    out = []
    for m in result["models"].values():
        c = (m.get("sampling") or {}).get("median_shift_claim")
        if c:
            out.append(f"{claim_verdict(c['holds'])}: {c['claim']} ({c['value']})")
    return out


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
_MEDIAN_SHIFT_TEXT = (
    "Median shift at fixed true mass: median of d = pred(r) - pred(1) over all views "
    "± its host-bootstrap error (dex); in brackets the median of d in the worst judged "
    f"{BIN_WIDTH_DEX:g}-dex bin of true log10 M200c (views keeping >= {BIN_MIN_GAL} galaxies; "
    f"bins in 1e14-1e15 Msun/h with >= {BIN_MIN_VIEWS} such views are judged). A model "
    "that weighs clusters partly by how many galaxies it sees predicts lower masses when "
    "galaxies are missing, which a survey of other completeness would inherit. The claim "
    f"holds when |median shift| <= {MEDIAN_SHIFT_TOL_DEX:g} dex in every judged bin at every "
    "rate; the point estimate is judged, so a bin whose error approaches the tolerance can "
    "fail by chance."
)
_FLOOR_TEXT = (
    "Scatter of log10(M_pred/M_true) at each rate over all views of the test: half 16-84 "
    "width (standard deviation), dex. Poisson floor: the scatter from estimating a velocity "
    "dispersion from N galaxies alone, 3 / (ln 10 sqrt(2 (N - 1))) dex (Gaussian velocities, "
    "M ∝ sigma^3, Evrard et al. 2008), at the median N of the views at that rate."
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
    shift, floor, claims = _median_shift_rows(result), _floor_rows(result), _claim_lines(result)
    if sampling:
        md += ["", "## Sampling-rate test", "", _SAMPLING_TEXT, "", _md_table(*sampling)]
    if shift:
        md += ["", "### Median shift at fixed true mass", "", _MEDIAN_SHIFT_TEXT, "",
               _md_table(*shift)]
        md += ["", *[f"- {c}" for c in claims]]
    if floor:
        md += ["", "### Scatter at each rate and the Poisson floor", "", _FLOOR_TEXT, "",
               _md_table(*floor)]
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
    if shift:
        h += ["<h3>Median shift at fixed true mass</h3>",
              f"<p>{html.escape(_MEDIAN_SHIFT_TEXT)}</p>", _html_table(*shift),
              "<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in claims) + "</ul>"]
    if floor:
        h += ["<h3>Scatter at each rate and the Poisson floor</h3>",
              f"<p>{html.escape(_FLOOR_TEXT)}</p>", _html_table(*floor)]
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
