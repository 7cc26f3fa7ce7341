"""reproduce: the paper's claims are checked on measured numbers; a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from dynmass.reproduce import ReproduceSettings, check_claims, format_comparison, reproduce


def _row(std, width, train, predict):
    return {"ours": {"median": 0.0, "width_16_84": 2 * std, "std": std, "sampling_width": width,
                     "train_s": train, "predict_s": predict}, "paper": {}}


def test_claims_hold_and_fail():
    rows = {"msigma": _row(0.30, 0.30, 0.01, 0.01), "sdm": _row(0.18, 0.2, 100.0, 100.0),
            "cnn1d": _row(0.14, 0.15, 5.0, 0.1), "cnn2d": _row(0.10, 0.12, 10.0, 0.1)}
    claims = check_claims(rows)
    assert len(claims) == 5 and all(c["holds"] for c in claims)
    rows["cnn2d"] = _row(0.2, 0.4, 30.0, 0.1)
    failed = {c["claim"] for c in check_claims(rows) if not c["holds"]}
    assert failed == {"cnn2d scatter <= 0.5 x msigma scatter", "cnn2d scatter < sdm scatter",
                      "cnn2d moves less than msigma when galaxies are dropped",
                      "cnn2d train+predict >= 10x faster than sdm"}
    assert "cnn2d" in format_comparison(rows)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_tiny_end_to_end(tmp_path):
    settings = ReproduceSettings.preset(
        True, box_size=150.0, folds=3, models=("msigma", "cnn1d"), sampling_max_views=50,
        observe={"n_los": 3, "min_mass": 10**13.3},
        model_settings={"cnn1d": {"epochs": 2, "num_threads": 1}},
    )
    result = reproduce(tmp_path, settings)
    assert set(result["comparison"]) == {"msigma", "cnn1d"}
    for stage in ("universe.h5", "observations.h5", "runs/msigma/predictions.csv",
                  "runs/cnn1d/predictions.csv", "report/report.html", "report/comparison.md"):
        assert (tmp_path / stage).stat().st_size > 0, stage
    saved = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert saved["settings"]["folds"] == 3
    # rerun resumes: nothing is rebuilt, the same numbers come back
    again = reproduce(tmp_path, settings)
    assert again["comparison"]["msigma"]["ours"] == result["comparison"]["msigma"]["ours"]
