"""Report: figures, report.md and a self-contained report.html are written and complete.

Tests of random experiments declare a :class:`~dynmass.testing.StochasticCheck` in
``STOCHASTIC``; their bounds were set from the spread of each statistic over seeds
measured by ``python tests/calibrate_bounds.py --jobs 1 --seeds 20 --only <check id>``
(ids ``test_report.<name>``), which each test's docstring quotes.
"""

from __future__ import annotations

import json
import re
from functools import partial

import numpy as np
import pytest

from dynmass.evaluate import evaluate_runs
from dynmass.report import FIGURES, running_percentiles, write_report
from dynmass.rundir import load_runs
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.estimators import (
    ToyConst,
    ToySigma,
    broken_calibration,
    cv_run,
    make_observations,
)
from dynmass.testing.richness import (
    ToyRichness,
    make_rich_observations,
    richness_model_registered,
)
from dynmass.testing.runs import scratch_folder, synthetic_predictions_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: The seed of the ``rng`` fixture (tests/conftest.py): the checks' seed reproduces its draws.
RNG_SEED = 12345


def running_width_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """16-84 width (dex) of y ~ N(0, 0.1) in the two bins 14-14.5 and 14.5-15 of x (2500
    points each on average). ``broken``: ``"quartiles"`` takes the 25th-75th percentiles,
    ``"ln_units"`` scales y by ln 10."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(14, 15, 5000)
    y = rng.normal(0, 0.1, 5000) * (np.log(10) if broken == "ln_units" else 1.0)
    _, p16, _, p84 = running_percentiles(x, y, np.array([14.0, 14.5, 15.0]), min_count=5)
    if broken == "quartiles":
        p16, p84 = (np.array([np.percentile(y[(x >= a) & (x < a + 0.5)], q) for a in (14, 14.5)])
                    for q in (25, 75))
    w = p84 - p16
    return {"min_width_16_84": float(w.min()), "max_width_16_84": float(w.max())}


def report_runs(seed: int, n_halos: int = 300) -> list:
    """Runs ``good`` (cnn2d, residual N(0, 0.1) dex) and ``bad`` (msigma, N(0.05, 0.3)) of
    ``n_halos`` hosts x 3 views each, drawn in that order from seed ``seed``."""
    rng = np.random.default_rng(seed)
    runs = scratch_folder("report_") / "runs"
    return [synthetic_predictions_run(runs / "good", rng, n_halos=n_halos, bias=0.0, sigma=0.1,
                                      model="cnn2d"),
            synthetic_predictions_run(runs / "bad", rng, n_halos=n_halos, bias=0.05, sigma=0.3,
                                      model="msigma")]


def report_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Interval coverage (Neyman, cross-fitted over two random halves of the hosts, seed
    ``seed``) of both :func:`report_runs`, and the ratio of their residual std, as
    ``evaluate_runs`` reports them. ``broken``: ``"shrunk"`` / ``"shuffled"`` as
    :func:`~dynmass.testing.estimators.broken_calibration`, ``"swapped"`` swaps the runs'
    names."""
    dirs = report_runs(seed)
    if broken == "swapped":
        dirs = [dirs[0].rename(dirs[0].with_name("tmp")), dirs[1]]
        dirs = [dirs[1].rename(dirs[1].with_name("good")), dirs[0].rename(dirs[0].with_name("bad"))]
    with broken_calibration(None if broken == "swapped" else broken, seed):
        res = evaluate_runs(dirs, scratch_folder("report_out_"), sampling_rates=None, n_boot=20,
                            seed=seed, figures=False)
    m = res["models"]
    stats = {f"{key}_{name}": m[name]["intervals"][key]
             for name in ("good", "bad") for key in ("coverage_68", "coverage_95")}
    stats["std_good_over_bad"] = m["good"]["overall"]["std"] / m["bad"]["overall"]["std"]
    return stats


STOCHASTIC = {
    "running_widths": StochasticCheck(
        run=running_width_stats, seed=RNG_SEED,
        bounds={"min_width_16_84": Bound(0.182, 0.218), "max_width_16_84": Bound(0.182, 0.218)},
        broken={b: partial(running_width_stats, broken=b) for b in ("quartiles", "ln_units")}),
    "report_intervals": StochasticCheck(
        run=report_stats, seed=RNG_SEED,
        bounds={"coverage_68_good": Bound(0.634, 0.726), "coverage_95_good": Bound(0.918, 0.982),
                "coverage_68_bad": Bound(0.642, 0.718), "coverage_95_bad": Bound(0.928, 0.972),
                "std_good_over_bad": Bound(0.265, 0.40)},
        broken={b: partial(report_stats, broken=b) for b in ("shrunk", "shuffled", "swapped")}),
}


def test_running_percentiles_match_numpy(rng):
    """Percentiles per bin equal numpy's; the 16-84 width of N(0, 0.1) is 0.2 in each bin.

    Measured over seeds 0-19 (``--only test_report.running_widths``):
    min_width_16_84: mean 0.1963, sd 0.0028, range [0.1885, 0.2012];
      bound (0.182, 0.218) = 5.1 sd from the mean
    max_width_16_84: mean 0.2005, sd 0.0027, range [0.1959, 0.206];
      bound (0.182, 0.218) = 6.5 sd from the mean
    Broken variants rejected (seeds 0-2): quartiles 3/3, ln_units 3/3.
    """
    STOCHASTIC["running_widths"].check()
    x = rng.uniform(14, 15, 5000)
    y = rng.normal(0, 0.1, 5000)
    c, p16, p50, p84 = running_percentiles(x, y, np.array([14.0, 14.5, 15.0]), min_count=5)
    np.testing.assert_allclose(c, [14.25, 14.75])
    sel = x >= 14.5
    np.testing.assert_allclose([p16[1], p50[1], p84[1]], np.percentile(y[sel], [16, 50, 84]))
    empty = running_percentiles(x, y, np.array([10.0, 11.0]))
    assert all(len(a) == 0 for a in empty)


def test_report_intervals_and_scatter():
    """Neyman intervals cross-fitted over halves of the hosts cover honestly for a good and a
    bad run alike, and the good run has the smaller scatter.

    Measured over seeds 0-19 (``--only test_report.report_intervals``):
    coverage_68_good: mean 0.6796, sd 0.0089, range [0.6579, 0.6974];
      bound (0.634, 0.726) = 5.1 sd from the mean
    coverage_95_good: mean 0.9503, sd 0.0062, range [0.9345, 0.9605];
      bound (0.918, 0.982) = 5.1 sd from the mean
    coverage_68_bad: mean 0.6797, sd 0.0075, range [0.6681, 0.6985];
      bound (0.642, 0.718) = 5.0 sd from the mean
    coverage_95_bad: mean 0.95, sd 0.0044, range [0.9412, 0.9577];
      bound (0.928, 0.972) = 5.0 sd from the mean
    std_good_over_bad: mean 0.3316, sd 0.013, range [0.3145, 0.3584];
      bound (0.265, 0.4) = 5.2 sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, shuffled 3/3, swapped 3/3.
    """
    STOCHASTIC["report_intervals"].check()


def test_report_without_sampling_test(tmp_path):
    a, b = report_runs(RNG_SEED)
    out = tmp_path / "report"
    res = evaluate_runs([a, b], out, sampling_rates=None, n_boot=20)
    for name in ("pred_vs_true.png", "residual_vs_true.png", "residual_hist.png", "scatter.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert not (out / "sampling_rate.png").exists()
    assert res["files"]["figures"] == ["pred_vs_true.png", "residual_vs_true.png",
                                       "residual_hist.png", "scatter.png", "coverage.png"]
    for name in ("good", "bad"):  # their values: test_report_intervals_and_scatter
        assert "error" not in res["models"][name]["intervals"]
    md = (out / "report.md").read_text()
    assert "| good | cnn2d |" in md and "| bad | msigma |" in md
    assert "![" in md and "(scatter.png)" in md and "## Interval coverage" in md
    assert '"fold_scheme": "rank_mod_k"' in md  # the run settings are in the report
    html = (out / "report.html").read_text()
    # self-contained: no external stylesheet, script or remote URL
    assert "<link" not in html and "<script" not in html and "http" not in html
    srcs = re.findall(r"<img src='([^']+)'", html)
    assert sorted(srcs) == sorted(res["files"]["figures"])
    assert all((out / s).is_file() for s in srcs)
    assert "Settings of every stage" in html and "aperture" in html
    # no temporary files left behind by the atomic writes
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["good"]["overall"] == res["models"]["good"]["overall"]


def test_report_median_shift_table_and_claims(tmp_path, toy_models):
    """The report's sampling section gets the median-shift table (rows = models, columns =
    rates, median shift ± error (worst judged bin)), every model's claim and the scatter per
    rate next to the Poisson floor; the figure is drawn. ToyRichness shifts by about -0.3 dex
    at r = 0.5 (``test_evaluate.median_shift``), ten times the claim's 0.03 dex: it FAILS."""
    obs_path = make_rich_observations(tmp_path / "obs.h5", np.random.default_rng(RNG_SEED),
                                      n_halos=120)
    dirs = [cv_run(tmp_path / "sig", obs_path, ToySigma),
            cv_run(tmp_path / "rich", obs_path, ToyRichness)]
    out = tmp_path / "rep"
    with richness_model_registered():
        res = evaluate_runs(dirs, out, sampling_rates=(1.0, 0.7, 0.5), n_boot=10,
                            max_views=None)
    assert (out / "sampling_rate.png").read_bytes().startswith(PNG_MAGIC)
    assert "sampling_rate.png" in res["files"]["figures"]
    md = (out / "report.md").read_text()
    section = md[md.index("### Median shift at fixed true mass"):md.index("## Figures")]
    assert "| run | r = 1 | r = 0.7 | r = 0.5 |" in section
    rich = res["models"]["rich"]["sampling"]
    cells = [f"{m:+.3f} ± {e:.3f} ({w:+.3f})" for m, e, w in
             zip(rich["median"], rich["median_err"], rich["worst_bin_median"], strict=True)]
    assert "| rich | " + " | ".join(cells) + " |" in section
    assert cells[0] == "+0.000 ± 0.000 (+0.000)"
    assert ("- FAILS: rich's median prediction at fixed true mass does not move with "
            "sampling: |median shift| <= 0.03 dex") in section
    assert "- HOLDS: sig's" in section or "- FAILS: sig's" in section
    floor = " | ".join(f"{x:.3f}" for x in rich["poisson_floor_dex"])
    assert f"| Poisson floor | {floor} |" in section
    html = (out / "report.html").read_text()
    assert "<h3>Median shift at fixed true mass</h3>" in html
    assert "<li>FAILS: rich&#x27;s median prediction" in html
    assert "Poisson floor" in html
    saved = json.loads((out / "metrics.json").read_text())
    claim = saved["models"]["rich"]["sampling"]["median_shift_claim"]
    assert claim["holds"] is False and claim["worst"]["rate"] == 0.5


@pytest.mark.slow
def test_report_with_sampling_test(tmp_path, rng, toy_models):
    obs_path = make_observations(tmp_path / "obs.h5", rng, n_halos=30)
    runs = load_runs([cv_run(tmp_path / "sig", obs_path, ToySigma),
                      cv_run(tmp_path / "const", obs_path, ToyConst)])
    res = evaluate_runs([r.path for r in runs], tmp_path / "rep", sampling_rates=(1.0, 0.7, 0.5),
                        n_boot=10, max_views=None)
    out = tmp_path / "rep"
    assert (out / "sampling_rate.png").read_bytes().startswith(PNG_MAGIC)
    html = (out / "report.html").read_text()
    assert "Sampling-rate test" in html and "sampling_rate.png" in html
    assert "Observations file attributes" in html  # observe-stage settings from the file
    # 30 halos are too few to calibrate intervals on: said, not plotted
    assert set(res["files"]["figures"]) == set(FIGURES) - {"coverage.png"}
    assert all("hosts" in m["intervals"]["error"] for m in res["models"].values())
    # write_report is usable on its own (the reproduce command calls it after evaluate)
    files = write_report(runs, res, tmp_path / "again")
    assert (tmp_path / "again" / files["report_html"]).stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("n_runs", [1, 4])
def test_figures_for_one_or_many_runs(tmp_path, rng, n_runs):
    dirs = [synthetic_predictions_run(tmp_path / f"r{i}", rng, n_halos=40, sigma=0.1 * (i + 1))
            for i in range(n_runs)]
    evaluate_runs(dirs, tmp_path / "out", sampling_rates=None, n_boot=0)
    assert (tmp_path / "out" / "pred_vs_true.png").stat().st_size > 5000
