"""Report: figures, report.md and a self-contained report.html are written and complete."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from dynmass.evaluate import evaluate_runs, load_runs  # noqa: E402
from dynmass.report import FIGURES, running_percentiles, write_report  # noqa: E402
from test_evaluate import (  # noqa: E402
    ToyConst,
    ToySigma,
    cv_run,
    make_observations,
    synthetic_run,
    toy_models,  # noqa: F401 - fixture
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_running_percentiles_match_numpy(rng):
    x = rng.uniform(14, 15, 5000)
    y = rng.normal(0, 0.1, 5000)
    c, p16, p50, p84 = running_percentiles(x, y, np.array([14.0, 14.5, 15.0]), min_count=5)
    np.testing.assert_allclose(c, [14.25, 14.75])
    sel = x >= 14.5
    np.testing.assert_allclose([p16[1], p50[1], p84[1]], np.percentile(y[sel], [16, 50, 84]))
    assert np.all(p84 - p16 > 0.15) and np.all(p84 - p16 < 0.25)
    empty = running_percentiles(x, y, np.array([10.0, 11.0]))
    assert all(len(a) == 0 for a in empty)


def test_report_without_sampling_test(tmp_path, rng):
    a = synthetic_run(tmp_path / "runs" / "good", rng, n_halos=300, bias=0.0, sigma=0.1,
                      model="cnn2d")
    b = synthetic_run(tmp_path / "runs" / "bad", rng, n_halos=300, bias=0.05, sigma=0.3,
                      model="msigma")
    out = tmp_path / "report"
    res = evaluate_runs([a, b], out, sampling_rates=None, n_boot=20)
    for name in ("pred_vs_true.png", "residual_vs_true.png", "residual_hist.png", "scatter.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert not (out / "sampling_rate.png").exists()
    assert res["files"]["figures"] == ["pred_vs_true.png", "residual_vs_true.png",
                                       "residual_hist.png", "scatter.png", "coverage.png"]
    for name in ("good", "bad"):  # Neyman intervals, cross-fit by fold, cover honestly
        iv = res["models"][name]["intervals"]
        assert iv["coverage_68"] == pytest.approx(0.68, abs=0.04), (name, iv)
        assert iv["coverage_95"] == pytest.approx(0.95, abs=0.025), (name, iv)
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
    assert metrics["models"]["good"]["overall"]["std"] < metrics["models"]["bad"]["overall"]["std"]


def test_report_with_sampling_test(tmp_path, rng, toy_models):  # noqa: F811
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


@pytest.mark.parametrize("n_runs", [1, 4])
def test_figures_for_one_or_many_runs(tmp_path, rng, n_runs):
    dirs = [synthetic_run(tmp_path / f"r{i}", rng, n_halos=40, sigma=0.1 * (i + 1))
            for i in range(n_runs)]
    evaluate_runs(dirs, tmp_path / "out", sampling_rates=None, n_boot=0)
    assert (tmp_path / "out" / "pred_vs_true.png").stat().st_size > 5000
