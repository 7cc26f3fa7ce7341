"""Evaluation: metrics on synthetic predictions, bad run folders, the sampling-rate test."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from dynmass import InputError
from dynmass._io import atomic_write_json, file_sha256
from dynmass.evaluate import (
    PREDICTION_COLUMNS,
    evaluate_runs,
    format_table,
    load_run,
    load_runs,
    mass_bin_edges,
    metrics,
    residuals,
    sampling_rate_test,
    summarize,
)
from dynmass.models import base as model_base
from dynmass.models.base import Estimator
from dynmass.observations import Observations, from_views, ragged_std, write_observations

OBS_SETTINGS = {"aperture": 1.6, "vcut": 2500.0, "redshift": 0.117, "seed": 7}


# ------------------------------------------------------------------------------- helpers


def write_run(
    folder: Path,
    halo_id: np.ndarray,
    log_m_true: np.ndarray,
    log_m_pred: np.ndarray,
    *,
    los: np.ndarray | None = None,
    fold: np.ndarray | None = None,
    n_gal: np.ndarray | None = None,
    model: str = "toy",
    settings: dict | None = None,
    timing: dict | None = None,
    columns: tuple[str, ...] = PREDICTION_COLUMNS,
) -> Path:
    """A run folder with predictions.csv, settings.json and timing.json."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(halo_id)
    cols = {
        "halo_id": halo_id, "los": np.zeros(n, int) if los is None else los,
        "fold": np.zeros(n, int) if fold is None else fold,
        "log10_m200c_true": log_m_true, "log10_m200c_pred": log_m_pred,
        "n_gal": np.full(n, 30) if n_gal is None else n_gal,
    }
    with open(folder / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for i in range(n):
            w.writerow([repr(float(cols[c][i])) if c.startswith("log10") else int(cols[c][i])
                        for c in columns])
    base = {"model": model, "model_settings": {}, "observations": "/nonexistent/obs.h5",
            "observations_sha256": "a" * 64, "obs_settings": dict(OBS_SETTINGS), "folds": 3,
            "seed": 0, "fold_scheme": "rank_mod_k"}
    atomic_write_json(folder / "settings.json", {**base, **(settings or {})})
    atomic_write_json(folder / "timing.json", timing or {
        "train_seconds": 12.0, "predict_seconds": 0.5, "n_train_views": 2 * n,
        "n_predict_views": n, "per_fold": []})
    return folder


def synthetic_run(folder: Path, rng: np.random.Generator, n_halos: int = 3000,
                  bias: float = 0.1, sigma: float = 0.2, **kw) -> Path:
    """Three views per halo, eps ~ N(bias, sigma) independently per view."""
    hid = np.repeat(np.arange(n_halos), 3)
    los = np.tile(np.arange(3), n_halos)
    lm = np.repeat(rng.uniform(13.5, 15.1, n_halos), 3)
    pred = lm + rng.normal(bias, sigma, len(lm))
    return write_run(folder, hid, lm, pred, los=los, **kw)


# ------------------------------------------------------------------------------- metrics


def test_metrics_recover_known_bias_and_scatter(tmp_path, rng):
    run = load_run(synthetic_run(tmp_path / "a", rng))
    m = metrics(run, n_boot=100, seed=1)
    o = m["overall"]
    assert m["n_views"] == 9000 and m["n_halos"] == 3000
    assert o["bias_median"] == pytest.approx(0.1, abs=0.012)
    assert o["std"] == pytest.approx(0.2, abs=0.006)
    assert o["half_width_16_84"] == pytest.approx(0.2, abs=0.01)
    assert o["width_16_84"] == pytest.approx(2 * o["half_width_16_84"])
    # P(|N(0.1, 0.2)| > 0.5) = P(Z > 2) + P(Z < -3) = 0.0241
    assert o["catastrophic_fraction"] == pytest.approx(0.0241, abs=0.006)
    # bootstrap error of the std: about sigma / sqrt(2 n) = 0.0015
    assert 0.0007 < o["std_err"] < 0.004
    assert 0.001 < o["bias_median_err"] < 0.006
    assert m["train_seconds"] == 12.0 and m["predict_seconds"] == 0.5
    assert m["timing"]["predict_ms_per_view"] == pytest.approx(1e3 * 0.5 / 9000)
    np.testing.assert_allclose(residuals(run), run.log_m_pred - run.log_m_true)
    # same seed -> same numbers
    assert metrics(run, n_boot=100, seed=1) == m


def test_bootstrap_resamples_halos_not_views(rng):
    # all views of a halo share its residual: the error must reflect 200 halos, not 2000 views
    eps_halo = rng.normal(0, 0.2, 200)
    eps = np.repeat(eps_halo, 10)
    groups = np.repeat(np.arange(200), 10)
    by_halo = summarize(eps, groups, n_boot=200, seed=0)["std_err"]
    by_view = summarize(eps, None, n_boot=200, seed=0)["std_err"]
    assert by_halo == pytest.approx(0.2 / np.sqrt(2 * 200), rel=0.35)
    assert by_halo > 2 * by_view


def test_mass_bins_and_paper_range(tmp_path, rng):
    n = 4000
    lm = rng.uniform(13.5, 15.1, n)
    bias = np.where(lm < 14.0, 0.2, np.where(lm < 15.0, 0.0, -0.3))
    pred = lm + bias + rng.normal(0, 0.05, n)
    run = load_run(write_run(tmp_path / "b", np.arange(n), lm, pred))
    m = metrics(run, mass_bins=0.2, n_boot=0)
    edges = [b["lo"] for b in m["bins"]] + [m["bins"][-1]["hi"]]
    np.testing.assert_allclose(edges, mass_bin_edges(lm, 0.2))
    assert edges[0] == pytest.approx(13.4) and edges[-1] == pytest.approx(15.2)
    assert sum(b["n"] for b in m["bins"]) == n
    for b in m["bins"]:
        mid = 0.5 * (b["lo"] + b["hi"])
        if b["n"] and b["lo"] >= 13.5 and b["hi"] <= 14.0:
            assert b["bias_median"] == pytest.approx(0.2, abs=0.02)
        if b["lo"] >= 14.0 and b["hi"] <= 15.0:
            assert b["bias_median"] == pytest.approx(0.0, abs=0.02)
        assert b["lo"] < mid < b["hi"]
    p = m["paper_range"]
    assert p["n"] == int(np.sum((lm >= 14) & (lm < 15)))
    assert p["bias_median"] == pytest.approx(0.0, abs=0.01)
    assert p["std"] == pytest.approx(0.05, abs=0.005)
    # explicit edges
    m2 = metrics(run, mass_bins=[13.0, 14.0, 16.0], n_boot=0)
    assert [b["n"] for b in m2["bins"]] == [int(np.sum(lm < 14)), int(np.sum(lm >= 14))]


def test_catastrophic_fraction_exact(tmp_path):
    lm = np.full(10, 14.5)
    eps = np.array([0.0, 0.1, -0.2, 0.49, 0.51, -0.6, 1.0, 0.3, -0.49, 0.0])
    run = load_run(write_run(tmp_path / "c", np.arange(10), lm, lm + eps))
    assert metrics(run, n_boot=0)["overall"]["catastrophic_fraction"] == pytest.approx(0.3)


# --------------------------------------------------------------------------- bad inputs


def test_folder_without_predictions_named(tmp_path, rng):
    folder = synthetic_run(tmp_path / "incomplete", rng, n_halos=5)
    (folder / "predictions.csv").unlink()
    with pytest.raises(InputError, match=r"incomplete.*predictions\.csv"):
        load_run(folder)
    with pytest.raises(InputError, match="not a run folder"):
        load_run(tmp_path / "nothing_here")


def test_nan_predictions_named(tmp_path, rng):
    folder = synthetic_run(tmp_path / "nanrun", rng, n_halos=5)
    text = (folder / "predictions.csv").read_text().splitlines()
    parts = text[3].split(",")
    parts[4] = "nan"
    text[3] = ",".join(parts)
    (folder / "predictions.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match="NaN/inf") as err:
        load_run(folder)
    msg = str(err.value)
    assert "nanrun" in msg and "predictions.csv" in msg and "log10_m200c_pred" in msg
    assert "row 3" in msg


def test_missing_column_and_bad_json_named(tmp_path, rng):
    cols = tuple(c for c in PREDICTION_COLUMNS if c != "fold")
    folder = synthetic_run(tmp_path / "nofold", rng, n_halos=5, columns=cols)
    with pytest.raises(InputError, match=r"predictions\.csv.*column 'fold'"):
        load_run(folder)
    folder = synthetic_run(tmp_path / "badjson", rng, n_halos=5)
    (folder / "settings.json").write_text("{not json")
    with pytest.raises(InputError, match=r"badjson.settings\.json.*not valid JSON"):
        load_run(folder)


def test_mixed_observations_named(tmp_path, rng):
    a = synthetic_run(tmp_path / "a", rng, n_halos=5)
    b = synthetic_run(tmp_path / "b", rng, n_halos=5, settings={"observations_sha256": "b" * 64})
    with pytest.raises(InputError, match=r"b.settings\.json.*observations sha256"):
        load_runs([a, b])
    c = synthetic_run(tmp_path / "c", rng, n_halos=5,
                      settings={"obs_settings": {**OBS_SETTINGS, "vcut": 2200.0}})
    with pytest.raises(InputError, match=r"c.settings\.json.*differ in \['vcut'\]"):
        load_runs([a, c])
    with pytest.raises(InputError, match="mixed|observations"):
        evaluate_runs([a, c], tmp_path / "out", sampling_rates=None, figures=False)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_duplicate_names_get_suffix_and_table(tmp_path, rng):
    a = synthetic_run(tmp_path / "x" / "run", rng, n_halos=50)
    b = synthetic_run(tmp_path / "y" / "run", rng, n_halos=50, bias=0.0)
    res = evaluate_runs([a, b], tmp_path / "out", sampling_rates=None, figures=False, n_boot=20)
    assert list(res["models"]) == ["run", "run-2"]
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["models"]["run"]["overall"]["n"] == 150
    table = format_table(res)
    assert "run-2" in table and "s68" in table and "train_s" in table


# --------------------------------------------------------------------- sampling-rate test


class ToySigma(Estimator):
    """log10 M = a + b log10(sigma_v): depends on the galaxies (like M-sigma)."""

    name = "toy_sigma"
    defaults: dict = {}

    def fit(self, obs: Observations, *, seed: int = 0, **kw) -> ToySigma:
        self.remember_obs_settings(obs)
        x = np.log10(ragged_std(obs.v, obs.offsets))
        self.coef = np.polyfit(x, obs.log10_m200c(), 1)
        return self

    def predict(self, obs: Observations) -> np.ndarray:
        self.check_obs(obs)
        return np.polyval(self.coef, np.log10(ragged_std(obs.v, obs.offsets)))

    def get_arrays(self) -> dict:
        return {"coef": self.coef}

    def set_arrays(self, arrays: dict) -> None:
        self.coef = arrays["coef"]


class ToyConst(ToySigma):
    """Predicts the training mean: ignores the galaxies entirely."""

    name = "toy_const"

    def fit(self, obs: Observations, *, seed: int = 0, **kw) -> ToyConst:
        self.remember_obs_settings(obs)
        self.coef = np.array([float(np.mean(obs.log10_m200c()))])
        return self

    def predict(self, obs: Observations) -> np.ndarray:
        self.check_obs(obs)
        return np.full(obs.n_views, self.coef[0])


@pytest.fixture
def toy_models(monkeypatch):
    """Register the toy estimators so dynmass.models.load_model can rebuild them."""
    mod = types.ModuleType("_dynmass_test_toys")
    mod.ToySigma, mod.ToyConst = ToySigma, ToyConst
    monkeypatch.setitem(sys.modules, "_dynmass_test_toys", mod)
    monkeypatch.setitem(model_base.MODEL_NAMES, "toy_sigma", "_dynmass_test_toys:ToySigma")
    monkeypatch.setitem(model_base.MODEL_NAMES, "toy_const", "_dynmass_test_toys:ToyConst")
    return {"toy_sigma": ToySigma, "toy_const": ToyConst}


def make_observations(path: Path, rng: np.random.Generator, n_halos: int = 60,
                      n_los: int = 2) -> Path:
    """Views with Gaussian velocities of dispersion sigma(M) (Evrard et al. 2008) + interlopers."""
    lm = rng.uniform(13.8, 15.0, n_halos)
    views, hid, los, m = [], [], [], []
    for h in range(n_halos):
        sigma = 1082.9 * (10 ** lm[h] / 1e15) ** 0.3361
        for j in range(n_los):
            n_mem = int(15 + 40 * (lm[h] - 13.8))
            v = np.clip(rng.normal(0, sigma, n_mem), -2499, 2499)
            v = np.concatenate([v, rng.uniform(-2500, 2500, 5)])
            views.append((rng.uniform(0, 1.6, len(v)), v))
            hid.append(1000 + h)
            los.append(j)
            m.append(10 ** lm[h])
    obs = from_views(views, OBS_SETTINGS, clusters={
        "halo_id": np.array(hid), "los": np.array(los), "m200c": np.array(m)})
    return write_observations(obs, path)


def cv_run(folder: Path, obs_path: Path, model_cls: type, k: int = 3) -> Path:
    """Cross-validated toy run: folds by halo mass rank mod k, a model per fold."""
    from dynmass.observations import read_observations

    obs = read_observations(obs_path)
    hosts, first = np.unique(obs.clusters["halo_id"], return_index=True)
    rank = np.argsort(np.argsort(-obs.clusters["m200c"][first]))
    fold_of_host = dict(zip(hosts.tolist(), (rank % k).tolist(), strict=True))
    fold = np.array([fold_of_host[int(h)] for h in obs.clusters["halo_id"]])
    pred = np.empty(obs.n_views)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(k):
        model = model_cls().fit(obs.subset(fold != f))
        model.save(folder / f"fold_{f:02d}.h5")
        pred[fold == f] = model.predict(obs.subset(fold == f))
    return write_run(folder, obs.clusters["halo_id"], obs.log10_m200c(), pred,
                     los=obs.clusters["los"], fold=fold, n_gal=obs.n_gal,
                     model=model_cls.name,
                     settings={"observations": str(obs_path.resolve()),
                               "observations_sha256": file_sha256(obs_path), "folds": k,
                               "obs_settings": obs.settings})


def test_sampling_rate_shift_zero_at_one_and_grows(tmp_path, rng, toy_models):
    obs_path = make_observations(tmp_path / "obs.h5", rng)
    runs = load_runs([cv_run(tmp_path / "sig", obs_path, ToySigma),
                      cv_run(tmp_path / "const", obs_path, ToyConst)])
    rates = (1.0, 0.9, 0.7, 0.5)
    res = sampling_rate_test(runs, rates=rates, seed=3, max_views=None)
    s, c = res["sig"], res["const"]
    assert s["rates"] == list(rates) and s["n_views"] == 120
    # the fold models reproduce the run's own predictions: the right fold model was used
    assert s["max_abs_diff_vs_predictions_csv"] < 1e-9
    assert s["half_width_16_84"][0] == 0 and s["std"][0] == 0 and s["median"][0] == 0
    hw = s["half_width_16_84"]
    assert 0 < hw[1] < hw[2] < hw[3]
    assert 0 < s["std"][1] < s["std"][3]
    assert s["width_16_84_rate_0.6_0.8"] > 0
    # a model that ignores the galaxies does not move
    assert max(c["half_width_16_84"]) == 0 and max(c["std"]) == 0
    # same seed -> same numbers; other seed -> other draws
    again = sampling_rate_test(runs, rates=rates, seed=3, max_views=None)
    assert again["sig"]["std"] == s["std"]
    other = sampling_rate_test(runs, rates=rates, seed=4, max_views=None)
    assert other["sig"]["std"][3] != s["std"][3]
    capped = sampling_rate_test(runs, rates=(1.0, 0.5), seed=3, max_views=25)
    assert capped["sig"]["n_views"] == capped["const"]["n_views"] == 25


def test_sampling_rate_errors_named(tmp_path, rng, toy_models):
    obs_path = make_observations(tmp_path / "obs.h5", rng, n_halos=12)
    folder = cv_run(tmp_path / "sig", obs_path, ToySigma)
    other = make_observations(tmp_path / "other.h5", rng, n_halos=12)
    runs = load_runs([folder])
    with pytest.raises(InputError, match=r"other\.h5.*sha256"):
        sampling_rate_test(runs, observations=other, rates=(1.0, 0.5))
    (folder / "fold_01.h5").unlink()
    with pytest.raises(InputError, match=r"fold_01\.h5.*fold model missing"):
        sampling_rate_test(runs, rates=(1.0, 0.5))
    with pytest.raises(InputError, match="outside"):
        sampling_rate_test(runs, rates=(1.0, 1.5))


def test_evaluate_runs_with_sampling_cli(tmp_path, rng, toy_models, capsys):
    from dynmass.cli import main

    obs_path = make_observations(tmp_path / "obs.h5", rng, n_halos=30)
    a = cv_run(tmp_path / "runs" / "sig", obs_path, ToySigma)
    b = cv_run(tmp_path / "runs" / "const", obs_path, ToyConst)
    out = tmp_path / "report"
    rc = main(["evaluate", str(a), str(b), "-o", str(out), "--sampling-rates", "1,0.8,0.6",
               "--max-views", "40", "--n-boot", "10", "--seed", "2"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "sampling-rate test" in printed and "sig" in printed and "r=0.6" in printed
    res = json.loads((out / "metrics.json").read_text())
    assert res["models"]["sig"]["sampling"]["n_views"] == 40
    assert res["evaluation"]["seed"] == 2
    assert (out / "sampling_rate.png").stat().st_size > 1000
    # bad input through the CLI: a clear error and exit status 2
    (a / "predictions.csv").unlink()
    assert main(["evaluate", str(a), "-o", str(tmp_path / "r2")]) == 2
    assert "predictions.csv" in capsys.readouterr().err


def test_sampling_rate_with_msigma_if_available(tmp_path, rng):
    msigma = pytest.importorskip("dynmass.models.msigma")
    obs_path = make_observations(tmp_path / "obs.h5", rng, n_halos=30)
    runs = load_runs([cv_run(tmp_path / "msigma", obs_path, msigma.MSigma)])
    res = sampling_rate_test(runs, rates=(1.0, 0.8, 0.5), seed=0)["msigma"]
    assert res["max_abs_diff_vs_predictions_csv"] < 1e-6
    assert res["half_width_16_84"][0] == 0
    assert 0 < res["half_width_16_84"][1] < res["half_width_16_84"][2]
