"""Cross-validated training (dynmass.train and the train / predict-mock CLI): folds split by
halo, the run folder format, resumption after interruptions, settings checks, fit on all data
and prediction of another observations file, for every registered model."""

from __future__ import annotations

import csv
import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from dynmass.cli import main
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.models import load_model
from dynmass.observations import write_observations
from dynmass.rundir import PREDICTION_COLUMNS
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.worlds import evrard_views
from dynmass.train import (
    assign_folds,
    cross_validate,
    fit_all,
    load_run_models,
    predict_mock,
)

CNN_FAST = {"epochs": 2, "num_threads": 1, "batch_size": 25}


def toy_obs(n_halos: int, n_los: int, seed: int, vcut: float = 3000.0):
    """Gaussian velocities with sigma = 1082.9 km/s (M/1e15)^0.3361 (Evrard et al. 2008);
    the toy world of tests/test_cnn.py with halo ids from 1000."""
    return evrard_views(n_halos, n_los, seed, vcut=vcut, halo_id_offset=1000)


def msigma_slope(seed: int, broken: str | None = None) -> dict[str, float]:
    """``fit_all`` of msigma on the first two views of 40 toy hosts (``toy_obs(40, 3, seed)``),
    then the slope of the predicted against the true log10 M200c over all 120 views (1 for an
    unbiased estimator; attenuated by the scatter of sigma at fixed mass). ``broken``:
    ``"constant"`` predicts the training mean, ``"shuffled"`` trains on masses shuffled among
    hosts (a fit slope <= 0 fails: NaN)."""
    obs = toy_obs(40, 3, seed=seed)
    small = obs.subset(np.flatnonzero(obs.clusters["los"] < 2))
    if broken == "constant":
        return {"slope": 0.0}
    if broken == "shuffled":
        hosts, inv = np.unique(small.clusters["halo_id"], return_inverse=True)
        first = np.unique(inv, return_index=True)[1]
        perm = np.random.default_rng(seed).permutation(len(hosts))
        small.clusters["m200c"] = small.clusters["m200c"][first][perm][inv]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = fit_all(small, "msigma", Path(tmp) / "all.h5", device="cpu", progress=False)
        except InputError:
            return {"slope": float("nan")}
        pred = load_model(path).predict(obs)
    return {"slope": float(np.polyfit(obs.log10_m200c(), pred, 1)[0])}


STOCHASTIC = {
    "msigma_slope": StochasticCheck(
        run=msigma_slope, seed=0, bounds={"slope": Bound(0.95, 1.055)},
        broken={b: partial(msigma_slope, broken=b) for b in ("constant", "shuffled")}),
}


@pytest.fixture(scope="module")
def obs():
    return toy_obs(40, 3, seed=0)


@pytest.fixture(scope="module")
def obs_file(tmp_path_factory, obs):
    return write_observations(obs, tmp_path_factory.mktemp("obs") / "obs.h5")


def read_csv(path):
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def test_assign_folds_by_halo_rank(obs):
    folds = assign_folds(obs, 4)
    halo = obs.clusters["halo_id"]
    for f in range(4):
        inside = set(halo[folds == f])
        outside = set(halo[folds != f])
        assert inside and not inside & outside, "a halo's views must share one fold"
    # rank mod k: the 4 most massive hosts are in 4 different folds, fold sizes balanced
    hosts, first = np.unique(halo, return_index=True)
    mass = obs.clusters["m200c"][first]
    top = first[np.argsort(-mass)[:4]]
    assert sorted(folds[top]) == [0, 1, 2, 3]
    counts = np.bincount(folds)
    assert counts.max() - counts.min() <= 3
    with pytest.raises(InputError, match="folds"):
        assign_folds(obs, 1)
    with pytest.raises(InputError, match="folds"):
        assign_folds(obs, 41)


def test_cross_validate_run_folder(tmp_path, obs_file, obs):
    out = cross_validate(obs_file, "cnn1d", tmp_path / "run", folds=3, seed=1,
                         model_settings=CNN_FAST, device="cpu", progress=False)
    names = sorted(p.name for p in out.iterdir() if p.name != "cache")
    assert names == ["fold_00.h5", "fold_01.h5", "fold_02.h5", "predictions.csv",
                     "settings.json", "timing.json"]
    settings = json.loads((out / "settings.json").read_text())
    for key in ("model", "model_settings", "observations", "observations_sha256",
                "obs_settings", "folds", "seed", "fold_scheme", "dynmass_version", "command"):
        assert key in settings
    assert settings["observations"] == str(obs_file.resolve())
    assert settings["model_settings"]["epochs"] == 2
    timing = json.loads((out / "timing.json").read_text())
    assert timing["n_predict_views"] == obs.n_views and len(timing["per_fold"]) == 3
    assert timing["train_seconds"] > 0 and timing["predict_seconds"] > 0
    with open(out / "predictions.csv") as fh:
        assert fh.readline().strip().split(",") == list(PREDICTION_COLUMNS)
    pred = read_csv(out / "predictions.csv")
    assert len(pred["halo_id"]) == obs.n_views
    np.testing.assert_array_equal(pred["halo_id"], obs.clusters["halo_id"])
    np.testing.assert_array_equal(pred["fold"], assign_folds(obs, 3))
    assert np.all(np.isfinite(pred["log10_m200c_pred"]))
    # fold models never saw their held-out halos
    for f in range(3):
        m = load_model(out / f"fold_{f:02d}.h5")
        assert m.extra["fold"] == f
        assert m.extra["n_train_views"] == int(np.sum(pred["fold"] != f))
    # a held-out prediction equals the saved fold model's prediction
    held = np.flatnonzero(pred["fold"] == 2)
    m2 = load_model(out / "fold_02.h5")
    np.testing.assert_allclose(m2.predict(obs.subset(held)), pred["log10_m200c_pred"][held],
                               atol=1e-8)


def test_resume_after_interruptions_is_exact(tmp_path, obs):
    kw = dict(folds=3, seed=4, model_settings=dict(CNN_FAST, epochs=3), device="cpu",
              progress=False)
    ref = cross_validate(obs, "cnn1d", tmp_path / "ref", **kw)

    def kill_fold_1_epoch_1(epoch, record, state={"fits": 0}):  # noqa: B006
        if epoch == 0:
            state["fits"] += 1
        if state["fits"] == 2 and epoch == 1:
            raise KeyboardInterrupt("simulated kill inside fold 1")

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        cross_validate(obs, "cnn1d", run, epoch_callback=kill_fold_1_epoch_1, **kw)
    assert (run / "fold_00.h5").exists() and (run / "fold_01.ckpt.pt").exists()
    assert not (run / "predictions.csv").exists()

    def kill_after_fold_1(fold, model):
        if fold == 1:
            raise RuntimeError("simulated crash after fold 1")

    with pytest.raises(RuntimeError):
        cross_validate(obs, "cnn1d", run, fold_callback=kill_after_fold_1, **kw)
    assert (run / "fold_01.h5").exists() and not (run / "fold_01.ckpt.pt").exists()
    seen = []
    cross_validate(obs, "cnn1d", run, fold_callback=lambda f, m: seen.append(f), **kw)
    assert seen == [2], "finished folds are not retrained"
    a, b = read_csv(ref / "predictions.csv"), read_csv(run / "predictions.csv")
    np.testing.assert_array_equal(a["log10_m200c_pred"], b["log10_m200c_pred"])
    assert not list(run.glob("*.ckpt.pt"))
    # other settings into the same folder: a clear error, unless resume=False
    other = dict(kw, model_settings=dict(CNN_FAST, epochs=4))
    with pytest.raises(SettingsMismatchError, match="epochs"):
        cross_validate(obs, "cnn1d", run, **other)
    cross_validate(obs, "cnn1d", run, **dict(other, resume=False))
    assert load_model(run / "fold_00.h5").settings["epochs"] == 4


@pytest.mark.parametrize("name", ["msigma", "sdm", "cnn2d"])
def test_every_model_cross_validates_and_predicts_mock(tmp_path, obs, obs_file, name):
    """Every model cross-validates, fits on all data and predicts another file; the M-sigma
    fit recovers the input relation (check ``msigma_slope``: slope of predicted against true
    log10 M200c).

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_train.msigma_slope --seeds 20``):
    slope: mean 1.001, sd 0.01, range [0.9785, 1.023];
      bound (0.95, 1.055), 5.1 sd from the mean.
    Broken variants caught (seeds 0-2): constant 3/3, shuffled 3/3.
    """
    settings = {"cnn2d": CNN_FAST, "msigma": None,
                "sdm": {"sigma_factors": [1.0], "C_grid": [1.0], "nu_grid": [0.5],
                        "inner_folds": 2}}[name]
    small = obs.subset(np.flatnonzero(obs.clusters["los"] < (1 if name == "sdm" else 2)))
    run = cross_validate(small, name, tmp_path / "run", folds=2, model_settings=settings,
                         device="cpu", progress=False)
    pred = read_csv(run / "predictions.csv")
    assert np.all(np.isfinite(pred["log10_m200c_pred"]))
    model_path = fit_all(small, name, tmp_path / "all.h5", model_settings=settings,
                         device="cpu", progress=False)
    for src in (model_path, run):
        out = predict_mock(src, obs_file, tmp_path / f"pm_{src.name}.csv")
        pm = read_csv(out)
        assert len(pm["log10_m200c_pred"]) == obs.n_views
        assert np.all(np.isfinite(pm["log10_m200c_pred"]))
    folds = load_run_models(run)
    mean = np.mean([m.predict(obs) for m in folds], axis=0)
    np.testing.assert_allclose(read_csv(tmp_path / "pm_run.csv")["log10_m200c_pred"], mean,
                               atol=1e-8)
    if name == "msigma":
        # the M-sigma fit recovers the input relation: predicted against true mass has slope
        # ~1 (check msigma_slope, whose seed 0 is this very fit)
        direct = load_model(model_path).predict(obs)
        slope = np.polyfit(obs.log10_m200c(), direct, 1)[0]
        stats = STOCHASTIC["msigma_slope"].check()
        assert slope == pytest.approx(stats["slope"], rel=1e-12)


def test_predict_mock_refuses_other_vcut(tmp_path, obs):
    model_path = fit_all(obs, "cnn1d", tmp_path / "m.h5", model_settings=CNN_FAST,
                         device="cpu", progress=False)
    other = write_observations(toy_obs(4, 1, seed=9, vcut=2200.0), tmp_path / "other.h5")
    with pytest.raises(SettingsMismatchError, match="vcut") as err:
        predict_mock(model_path, other, tmp_path / "p.csv")
    assert "other.h5" in str(err.value)
    assert not (tmp_path / "p.csv").exists()


def test_cli_train_and_predict_mock(tmp_path, obs_file, capsys):
    run = tmp_path / "runs" / "cnn1d"
    rc = main(["train", str(obs_file), "--model", "cnn1d", "-o", str(run), "--folds", "2",
               "--epochs", "2", "--batch-size", "25", "--device", "cpu", "--set",
               "num_threads=1", "--set", "val_fraction=0.2", "--no-progress"])
    assert rc == 0 and (run / "predictions.csv").exists()
    assert json.loads((run / "settings.json").read_text())["model_settings"]["val_fraction"] == 0.2
    out_csv = tmp_path / "pm.csv"
    assert main(["predict-mock", str(run), str(obs_file), "-o", str(out_csv)]) == 0
    assert out_csv.exists()
    rc = main(["train", str(obs_file), "--model", "msigma", "--all", "-o",
               str(tmp_path / "ms.h5")])
    assert rc == 0 and load_model(tmp_path / "ms.h5").name == "msigma"
    # a setting a model does not have is a clean CLI error (exit status 2)
    assert main(["train", str(obs_file), "--model", "msigma", "-o", str(tmp_path / "x"),
                 "--epochs", "3"]) == 2
    assert "unknown settings" in capsys.readouterr().err
