"""Evaluation of cross-validated training runs: ``metrics.json``, figures, the report.

:func:`evaluate_runs` reads run folders (:mod:`dynmass.rundir`), computes their accuracy
(:mod:`dynmass.metrics`), the sampling-rate test (:mod:`dynmass.sampling`) and the coverage of
their intervals (:mod:`dynmass.coverage`), and writes the report (:mod:`dynmass.report`);
:func:`format_table` prints the summary table.

Examples
--------
A synthetic run folder (three views per halo, residuals ~ N(0.1, 0.2) dex), evaluated without
the sampling-rate test (which needs fold models) and without figures:

>>> import shutil
>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from dynmass.evaluate import evaluate_runs
>>> from dynmass.testing.runs import synthetic_predictions_run
>>> tmp = Path(tempfile.mkdtemp())
>>> run = synthetic_predictions_run(tmp / "run", np.random.default_rng(0), n_halos=300)
>>> result = evaluate_runs([run], tmp / "report", sampling_rates=None, n_boot=50,
...                        figures=False)
>>> m = result["models"]["run"]
>>> m["n_views"], round(m["overall"]["bias_median"], 2), round(m["overall"]["std"], 2)
(900, 0.09, 0.19)
>>> round(m["intervals"]["coverage_68"], 2)  # cross-fitted 68% intervals, in range
0.68
>>> sorted(p.name for p in (tmp / "report").iterdir())
['metrics.json']
>>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_write_json, provenance
from dynmass.errors import InputError
from dynmass.metrics import CATASTROPHIC_DEX, PAPER_RANGE, mass_bin_edges, metrics
from dynmass.report import write_report
from dynmass.rundir import Run, load_runs
from dynmass.sampling import (
    DEFAULT_SAMPLING_RATES,
    _observations_path,
    claim_verdict,
    sampling_rate_test,
)

log = logging.getLogger(__name__)


__all__ = ["evaluate_runs", "format_table", "interval_coverage"]


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
    (:func:`dynmass.coverage.coverage`), as ``dynmass bundle RUN --coverage`` reports them.

    Parameters
    ----------
    run : Run
        The run; its ``predictions.csv`` holds the held-out views.
    seed : int
        Seed of the host bootstrap (and of the two random halves of a single-fold run).

    Returns
    -------
    dict
        ``coverage_68``, ``coverage_95``, ``passed``, ``calibrated_range`` and ``bins_true``
        (see :func:`dynmass.coverage.coverage`), or ``{"error": reason}`` when the run has too
        few hosts to calibrate intervals on.
    """
    from dynmass.coverage import coverage

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
        Bootstrap replicates over halos (of the metrics and of the sampling-rate test's median
        shifts).
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
                                    min_gal=min_gal, n_boot=n_boot)
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
    restricted to 10^14 <= M200c < 10^15 Msun/h. With the sampling-rate test it adds the width
    of the shift per rate, the median shift per rate (host-bootstrap error, worst judged 0.2-dex
    bin of true mass), the scatter of prediction minus truth per rate next to the Poisson floor
    (:func:`dynmass.sampling.poisson_floor_dex`), and the verdict of each model's median-shift
    claim (:func:`dynmass.sampling.median_shift_claim`). When a run has views without a
    prediction (NaN), a "failed" column gives their number and fraction (the statistics leave
    them out).
    """
    models = result.get("models", {})
    head = ["run", "model", "views", "bias", "s68", "std", "catastr", "bias[14,15)",
            "s68[14,15)", "std[14,15)", "rho_N[14,15)", "train_s", "predict_s"]
    failures = any(m.get("n_failed") for m in models.values())
    if failures:
        head.insert(3, "failed")
    rows = []
    for name, m in models.items():
        o, p = m["overall"], m["paper_range"]
        rows.append([
            name, m["model"], str(m["n_views"]), _fmt(o["bias_median"], "+.3f"),
            _pm(o, "half_width_16_84"), _pm(o, "std"),
            _fmt(o["catastrophic_fraction"], ".1%"), _fmt(p["bias_median"], "+.3f"),
            _pm(p, "half_width_16_84"),
            _fmt(p["std"]), _fmt((m.get("richness_correlation") or {}).get("rho"), "+.2f"),
            _fmt(m.get("train_seconds"), ".1f"),
            _fmt(m.get("predict_seconds"), ".2f"),
        ])
        if failures:
            frac = _fmt(m.get("failure_fraction"), ".1%")
            rows[-1].insert(3, f"{m.get('n_failed') or 0} ({frac})")
    lines = ["eps = log10(M_pred/M_true) [dex]; s68 = half 16-84 width; "
             "[14,15) = 1e14 <= M200c < 1e15 Msun/h; rho_N = Spearman rho of eps with the "
             "number of galaxies at fixed true mass", *_columns(head, rows)]
    if failures:
        lines.insert(1, "failed = views without a prediction (NaN: the estimator failed); "
                        "the statistics use the other views only")
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
        lines += _median_shift_lines(samp, rates)
    return "\n".join(lines)


def _median_shift_lines(samp: dict[str, dict[str, Any]], rates: list[float]) -> list[str]:
    """Terminal lines of the median shift, the scatter vs the Poisson floor, and the claims."""
    samp = {n: s for n, s in samp.items() if "median_err" in s}
    if not samp:
        return []
    head = ["run", *[f"r={r:g}" for r in rates]]
    rows = [[name, *[f"{_fmt(m, '+.3f')}±{_fmt(e)} [{_fmt(w, '+.3f')}]" for m, e, w in
                     zip(s["median"], s["median_err"], s["worst_bin_median"], strict=True)]]
            for name, s in samp.items()]
    first = next(iter(samp.values()))
    rows2 = [[name, *[f"{_fmt(h)} ({_fmt(sd)})" for h, sd in
                      zip(s["eps_half_width_16_84"], s["eps_std"], strict=True)]]
             for name, s in samp.items()]
    rows2.append(["Poisson floor", *[_fmt(f) for f in first["poisson_floor_dex"]]])
    lines = ["", "median shift [dex] ± host-bootstrap error [worst judged 0.2-dex bin of true "
             "mass, views keeping >= 10 galaxies]", *_columns(head, rows),
             "", "scatter of log10(M_pred/M_true) at each rate [dex]: half 16-84 width (std); "
             "Poisson floor = 3 / (ln 10 sqrt(2 (N - 1))) at the median N", *_columns(head, rows2),
             ""]
    for s in samp.values():
        c = s.get("median_shift_claim")
        if c:
            lines.append(f"{claim_verdict(c['holds'])}: {c['claim']} ({c['value']})")
    return lines


def _columns(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head), fmt.format(*["-" * w for w in widths]),
            *[fmt.format(*r) for r in rows]]
