"""Evaluation: metrics on synthetic predictions, bad run folders, the sampling-rate test.

Tests of random experiments declare a :class:`~dynmass.testing.StochasticCheck` in
``STOCHASTIC``; their bounds were set from the spread of each statistic over seeds
measured by ``python tests/calibrate_bounds.py --jobs 1 --seeds 20 --only <check id>``
(ids ``test_evaluate.<name>``), which each test's docstring quotes.
"""

from __future__ import annotations

import functools
import json
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from dynmass import InputError
from dynmass.evaluate import evaluate_runs, format_table
from dynmass.metrics import mass_bin_edges, metrics, residuals, summarize
from dynmass.models.msigma import MSigma
from dynmass.observations import Observations
from dynmass.rundir import PREDICTION_COLUMNS, load_run, load_runs
from dynmass.sampling import sampling_rate_test
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.estimators import (
    ToyConst,
    ToySigma,
    cv_run,
    make_observations,
    toy_models_registered,
)
from dynmass.testing.runs import (
    TOY_OBS_SETTINGS,
    scratch_folder,
    synthetic_predictions_run,
    write_predictions_run,
)

#: The seed of the ``rng`` fixture (tests/conftest.py): the checks' seed reproduces its draws.
RNG_SEED = 12345

# --------------------------------------------------------------------------- experiments


def _damaged(true: np.ndarray, pred: np.ndarray, broken: str | None) -> np.ndarray:
    """Predictions as a broken pipeline would report them: ``"sign"`` writes ``true - pred``
    as the residual, ``"ln_units"`` natural-log masses (residuals x ln 10)."""
    if broken == "sign":
        return true - (pred - true)
    if broken == "ln_units":
        return true + np.log(10) * (pred - true)
    return pred


@functools.cache
def metrics_result(seed: int, broken: str | None = None) -> tuple:
    """A synthetic run (3000 hosts x 3 views, residual N(0.1, 0.2) dex per view, draws of
    seed ``seed``) and its metrics (100 bootstrap draws of seed ``seed``). ``broken``: see
    :func:`_damaged`, or ``"host_means"``: each view reports its host's mean prediction."""
    rng = np.random.default_rng(seed)
    folder = synthetic_predictions_run(scratch_folder("metrics_") / "a", rng)
    run = load_run(folder)
    if broken is not None:
        pred = run.log_m_pred.copy()
        if broken == "host_means":
            sums = np.bincount(run.halo_id, weights=pred)
            pred = (sums / np.bincount(run.halo_id))[run.halo_id]
        pred = _damaged(run.log_m_true, pred, broken)
        run.predictions["log10_m200c_pred"] = pred
    return run, metrics(run, n_boot=100, seed=seed)


def metrics_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    o = metrics_result(seed, broken)[1]["overall"]
    keys = ("bias_median", "std", "half_width_16_84", "catastrophic_fraction", "std_err",
            "bias_median_err")
    return {k: o[k] for k in keys}


def bootstrap_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """200 hosts x 10 views sharing their host's residual N(0, 0.2): bootstrap error of the
    std resampling hosts, over its expectation ``0.2 / sqrt(2 x 200)`` and over the error from
    resampling views. ``broken``: ``"by_view"`` resamples views, ``"shuffled_groups"`` gives
    the views random host labels."""
    rng = np.random.default_rng(seed)
    eps = np.repeat(rng.normal(0, 0.2, 200), 10)
    groups = np.repeat(np.arange(200), 10)
    if broken == "shuffled_groups":
        groups = rng.permutation(groups)
    by_halo = summarize(eps, None if broken == "by_view" else groups, n_boot=200,
                        seed=seed)["std_err"]
    by_view = summarize(eps, None, n_boot=200, seed=seed)["std_err"]
    return {"by_halo_over_expected": by_halo / (0.2 / np.sqrt(2 * 200)),
            "by_halo_over_by_view": by_halo / by_view}


def bias_of(lm: np.ndarray) -> np.ndarray:
    """The bias (dex) of the mass-bin test: 0.2 below 14, 0 up to 15, -0.3 above."""
    return np.where(lm < 14.0, 0.2, np.where(lm < 15.0, 0.0, -0.3))


@functools.cache
def mass_bins_result(seed: int, broken: str | None = None) -> tuple:
    """4000 hosts, log10 M uniform in 13.5-15.1, residual :func:`bias_of` + N(0, 0.05), one
    view each (draws of seed ``seed``); metrics in 0.2-dex bins without bootstrap."""
    rng = np.random.default_rng(seed)
    n = 4000
    lm = rng.uniform(13.5, 15.1, n)
    pred = _damaged(lm, lm + bias_of(lm) + rng.normal(0, 0.05, n), broken)
    run = load_run(write_predictions_run(scratch_folder("bins_") / "b", np.arange(n), lm, pred))
    return lm, metrics(run, mass_bins=0.2, n_boot=0)


def mass_bins_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Worst |bias_median - 0.2| over the bins inside 13.5-14, worst |bias_median| over the
    bins inside 14-15, and the median bias and std in the paper's range 14-15."""
    m = mass_bins_result(seed, broken)[1]
    low = [b for b in m["bins"] if b["n"] and b["lo"] >= 13.5 and b["hi"] <= 14.0]
    mid = [b for b in m["bins"] if b["n"] and b["lo"] >= 14.0 and b["hi"] <= 15.0]
    assert (len(low), len(mid)) == (2, 5), [(b["lo"], b["n"]) for b in m["bins"]]
    return {"worst_bias_low": max(abs(b["bias_median"] - 0.2) for b in low),
            "worst_bias_mid": max(abs(b["bias_median"]) for b in mid),
            "paper_bias_median": m["paper_range"]["bias_median"],
            "paper_std": m["paper_range"]["std"]}


SAMPLING_RATES = (1.0, 0.9, 0.7, 0.5)


@functools.cache
def sampling_world(seed: int, n_halos: int = 400) -> dict[str, Path]:
    """Toy observations (``n_halos`` hosts x 2 views, draws of seed ``seed``) and 3-fold runs
    ``sig`` (:class:`ToySigma`), ``const`` (:class:`ToyConst`) and ``msigma`` on them."""
    tmp = scratch_folder("sampling_")
    obs_path = make_observations(tmp / "obs.h5", np.random.default_rng(seed), n_halos=n_halos)
    return {"obs": obs_path,
            **{name: cv_run(tmp / name, obs_path, cls, seed=seed)
               for name, cls in (("sig", ToySigma), ("const", ToyConst), ("msigma", MSigma))}}


def _resample_ignoring_rate():
    """A broken :meth:`Observations.resample` that keeps every galaxy whatever the rate."""
    original = Observations.resample

    def resample(self, rate, seed, min_gal=1):
        return original(self, 1.0, seed, min_gal)

    return mock.patch.object(Observations, "resample", resample)


@functools.cache
def sampling_result(seed: int, model: str = "sig", rates: tuple = SAMPLING_RATES,
                    n_halos: int = 400, broken: str | None = None) -> dict:
    """Sampling-rate test (seed ``seed``, every view) of run ``model`` of
    :func:`sampling_world`. ``broken``: ``"const"`` tests the ``const`` run instead (a model
    that ignores the galaxies), ``"rate_ignored"`` resamples keeping every galaxy."""
    world = sampling_world(seed, n_halos)
    name = "const" if broken == "const" else model
    with toy_models_registered():
        runs = load_runs([world[name]])
        if broken == "rate_ignored":
            with _resample_ignoring_rate():
                return sampling_rate_test(runs, rates=rates, seed=seed, max_views=None)[name]
        return sampling_rate_test(runs, rates=rates, seed=seed, max_views=None)[name]


def _ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is 0 (a model whose predictions never move)."""
    return a / b if b else float("nan")


def sampling_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Half-width 16-84 (dex) of the shift at rate 0.9, its growth (ratio) to 0.7 and from
    0.7 to 0.5, the growth (ratio) of the std from 0.9 to 0.5, and the pooled 16-84 width
    (dex) at rates 0.6-0.8."""
    s = sampling_result(seed, broken=broken)
    hw, sd = s["half_width_16_84"], s["std"]
    return {"half_width_0_9": hw[1], "half_width_0_7_over_0_9": _ratio(hw[2], hw[1]),
            "half_width_0_5_over_0_7": _ratio(hw[3], hw[2]), "std_0_5_over_0_9": _ratio(sd[3], sd[1]),
            "width_16_84_rate_0_6_0_8": s["width_16_84_rate_0.6_0.8"]}


def msigma_sampling_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """M-sigma on 200 toy hosts: half-width 16-84 (dex) of the shift at rate 0.8 and its
    growth (ratio) to rate 0.5."""
    hw = sampling_result(seed, "msigma", (1.0, 0.8, 0.5), 200, broken)["half_width_16_84"]
    return {"half_width_0_8": hw[1], "half_width_0_5_over_0_8": _ratio(hw[2], hw[1])}


STOCHASTIC = {
    "metrics": StochasticCheck(
        run=metrics_stats, seed=RNG_SEED,
        bounds={"bias_median": Bound(0.086, 0.114), "std": Bound(0.193, 0.207),
                "half_width_16_84": Bound(0.188, 0.212),
                "catastrophic_fraction": Bound(0.0171, 0.0311),
                "std_err": Bound(0.0009, 0.002), "bias_median_err": Bound(0.0015, 0.0038)},
        broken={b: partial(metrics_stats, broken=b) for b in ("sign", "ln_units", "host_means")}),
    "bootstrap_by_halo": StochasticCheck(
        run=bootstrap_stats, seed=RNG_SEED,
        bounds={"by_halo_over_expected": Bound(0.45, 1.5),
                "by_halo_over_by_view": Bound(1.8, 4.6)},
        broken={b: partial(bootstrap_stats, broken=b) for b in ("by_view", "shuffled_groups")}),
    "mass_bins": StochasticCheck(
        run=mass_bins_stats, seed=RNG_SEED,
        bounds={"worst_bias_low": Bound(hi=0.013), "worst_bias_mid": Bound(hi=0.0135),
                "paper_bias_median": Bound(-0.005, 0.005), "paper_std": Bound(0.0465, 0.0535)},
        broken={b: partial(mass_bins_stats, broken=b) for b in ("sign", "ln_units")}),
    "sampling_rate": StochasticCheck(
        run=sampling_stats, seed=RNG_SEED,
        bounds={"half_width_0_9": Bound(0.03, 0.067), "half_width_0_7_over_0_9": Bound(1.7, 2.9),
                "half_width_0_5_over_0_7": Bound(1.12, 2.1), "std_0_5_over_0_9": Bound(2.4, 4.2),
                "width_16_84_rate_0_6_0_8": Bound(0.155, 0.29)},
        broken={b: partial(sampling_stats, broken=b) for b in ("const", "rate_ignored")}),
    "msigma_sampling": StochasticCheck(
        run=msigma_sampling_stats, seed=RNG_SEED,
        bounds={"half_width_0_8": Bound(0.07, 0.32), "half_width_0_5_over_0_8": Bound(1.25, 3.2)},
        broken={b: partial(msigma_sampling_stats, broken=b) for b in ("const", "rate_ignored")}),
}


# ------------------------------------------------------------------------------- metrics


def test_metrics_recover_known_bias_and_scatter():
    """Median bias, std, 16-84 half-width and catastrophic fraction (P(|N(0.1, 0.2)| > 0.5) =
    0.0241) of a run with residuals N(0.1, 0.2) dex, and bootstrap errors of about
    sigma / sqrt(2 n) = 0.0015 (std) and 0.003 (median).

    Measured over seeds 0-19 (``--only test_evaluate.metrics``):
    bias_median: mean 0.1004, sd 0.0026, range [0.09567, 0.1043];
      bound (0.086, 0.114) = 5.1 sd from the mean
    std: mean 0.2002, sd 0.0013, range [0.1968, 0.2022];
      bound (0.193, 0.207) = 5.4 sd from the mean
    half_width_16_84: mean 0.199, sd 0.0021, range [0.1953, 0.2028];
      bound (0.188, 0.212) = 5.3 sd from the mean
    catastrophic_fraction: mean 0.02434, sd 0.0013, range [0.02256, 0.02711];
      bound (0.0171, 0.0311) = 5.3 sd from the mean
    std_err: mean 0.00144, sd 0.0001, range [0.001263, 0.001719];
      bound (0.0009, 0.002) = 5.2 sd from the mean
    bias_median_err: mean 0.00264, sd 0.00021, range [0.002241, 0.003129];
      bound (0.0015, 0.0038) = 5.4 sd from the mean
    Broken variants rejected (seeds 0-2): sign 3/3, ln_units 3/3, host_means 3/3.
    """
    STOCHASTIC["metrics"].check()
    run, m = metrics_result(RNG_SEED)
    o = m["overall"]
    assert m["n_views"] == 9000 and m["n_halos"] == 3000
    assert o["width_16_84"] == pytest.approx(2 * o["half_width_16_84"])
    assert m["train_seconds"] == 12.0 and m["predict_seconds"] == 0.5
    assert m["timing"]["predict_ms_per_view"] == pytest.approx(1e3 * 0.5 / 9000)
    np.testing.assert_allclose(residuals(run), run.log_m_pred - run.log_m_true)
    # same seed -> same numbers
    assert metrics(run, n_boot=100, seed=RNG_SEED) == m


def test_bootstrap_resamples_halos_not_views():
    """All views of a halo share its residual: the error must reflect 200 halos, not 2000
    views (about sqrt(10) times the error from resampling views).

    Measured over seeds 0-19 (``--only test_evaluate.bootstrap_by_halo``):
    by_halo_over_expected: mean 0.9656, sd 0.098, range [0.8018, 1.136];
      bound (0.45, 1.5) = 5.3 sd from the mean
    by_halo_over_by_view: mean 3.191, sd 0.27, range [2.713, 3.777];
      bound (1.8, 4.6) = 5.2 sd from the mean
    Broken variants rejected (seeds 0-2): by_view 3/3, shuffled_groups 3/3.
    """
    STOCHASTIC["bootstrap_by_halo"].check()


def test_mass_bins_and_paper_range():
    """Median bias per 0.2-dex bin of true mass follows a bias that changes with mass (0.2
    below 14, 0 in 14-15), and the paper-range block sees only 14-15.

    Measured over seeds 0-19 (``--only test_evaluate.mass_bins``):
    worst_bias_low: mean 0.00342, sd 0.0018, range [0.001067, 0.007811];
      bound (-inf, 0.013) = 5.2 sd from the mean
    worst_bias_mid: mean 0.004342, sd 0.0017, range [0.002421, 0.008167];
      bound (-inf, 0.0135) = 5.5 sd from the mean
    paper_bias_median: mean 6.513e-05, sd 0.00091, range [-0.001685, 0.002399];
      bound (-0.005, 0.005) = 5.4 sd from the mean
    paper_std: mean 0.04991, sd 0.00067, range [0.04873, 0.05145];
      bound (0.0465, 0.0535) = 5.1 sd from the mean
    Broken variants rejected (seeds 0-2): sign 3/3, ln_units 3/3.
    """
    STOCHASTIC["mass_bins"].check()
    lm, m = mass_bins_result(RNG_SEED)
    n = len(lm)
    edges = [b["lo"] for b in m["bins"]] + [m["bins"][-1]["hi"]]
    np.testing.assert_allclose(edges, mass_bin_edges(lm, 0.2))
    assert edges[0] == pytest.approx(13.4) and edges[-1] == pytest.approx(15.2)
    assert sum(b["n"] for b in m["bins"]) == n
    assert all(b["lo"] < 0.5 * (b["lo"] + b["hi"]) < b["hi"] for b in m["bins"])
    assert m["paper_range"]["n"] == int(np.sum((lm >= 14) & (lm < 15)))
    # explicit edges
    run = load_run(Path(m["run_dir"]))
    m2 = metrics(run, mass_bins=[13.0, 14.0, 16.0], n_boot=0)
    assert [b["n"] for b in m2["bins"]] == [int(np.sum(lm < 14)), int(np.sum(lm >= 14))]


def test_catastrophic_fraction_exact(tmp_path):
    lm = np.full(10, 14.5)
    eps = np.array([0.0, 0.1, -0.2, 0.49, 0.51, -0.6, 1.0, 0.3, -0.49, 0.0])
    run = load_run(write_predictions_run(tmp_path / "c", np.arange(10), lm, lm + eps))
    assert metrics(run, n_boot=0)["overall"]["catastrophic_fraction"] == pytest.approx(0.3)


# --------------------------------------------------------------------------- bad inputs


def test_folder_without_predictions_named(tmp_path, rng):
    folder = synthetic_predictions_run(tmp_path / "incomplete", rng, n_halos=5)
    (folder / "predictions.csv").unlink()
    with pytest.raises(InputError, match=r"incomplete.*predictions\.csv"):
        load_run(folder)
    with pytest.raises(InputError, match="not a run folder"):
        load_run(tmp_path / "nothing_here")


def test_nan_predictions_named(tmp_path, rng):
    folder = synthetic_predictions_run(tmp_path / "nanrun", rng, n_halos=5)
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
    folder = synthetic_predictions_run(tmp_path / "nofold", rng, n_halos=5, columns=cols)
    with pytest.raises(InputError, match=r"predictions\.csv.*column 'fold'"):
        load_run(folder)
    folder = synthetic_predictions_run(tmp_path / "badjson", rng, n_halos=5)
    (folder / "settings.json").write_text("{not json")
    with pytest.raises(InputError, match=r"badjson.settings\.json.*not valid JSON"):
        load_run(folder)


def test_mixed_observations_named(tmp_path, rng):
    a = synthetic_predictions_run(tmp_path / "a", rng, n_halos=5)
    b = synthetic_predictions_run(tmp_path / "b", rng, n_halos=5, settings={"observations_sha256": "b" * 64})
    with pytest.raises(InputError, match=r"b.settings\.json.*observations sha256"):
        load_runs([a, b])
    c = synthetic_predictions_run(tmp_path / "c", rng, n_halos=5,
                      settings={"obs_settings": {**TOY_OBS_SETTINGS, "vcut": 2200.0}})
    with pytest.raises(InputError, match=r"c.settings\.json.*differ in \['vcut'\]"):
        load_runs([a, c])
    with pytest.raises(InputError, match="mixed|observations"):
        evaluate_runs([a, c], tmp_path / "out", sampling_rates=None, figures=False)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_duplicate_names_get_suffix_and_table(tmp_path, rng):
    a = synthetic_predictions_run(tmp_path / "x" / "run", rng, n_halos=50)
    b = synthetic_predictions_run(tmp_path / "y" / "run", rng, n_halos=50, bias=0.0)
    res = evaluate_runs([a, b], tmp_path / "out", sampling_rates=None, figures=False, n_boot=20)
    assert list(res["models"]) == ["run", "run-2"]
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["models"]["run"]["overall"]["n"] == 150
    table = format_table(res)
    assert "run-2" in table and "s68" in table and "train_s" in table


# --------------------------------------------------------------------- sampling-rate test


@pytest.mark.usefixtures("toy_models")
def test_sampling_rate_shift_zero_at_one_and_grows():
    """The shift d = pred(r) - pred(1) is zero at r = 1 and spreads more the fewer galaxies
    are kept; a model that ignores the galaxies does not move.

    Measured over seeds 0-19 (``--only test_evaluate.sampling_rate``):
    half_width_0_9: mean 0.04841, sd 0.0036, range [0.04237, 0.05632];
      bound (0.03, 0.067) = 5.1 sd from the mean
    half_width_0_7_over_0_9: mean 2.304, sd 0.11, range [2.13, 2.565];
      bound (1.7, 2.9) = 5.3 sd from the mean
    half_width_0_5_over_0_7: mean 1.611, sd 0.095, range [1.43, 1.773];
      bound (1.12, 2.1) = 5.1 sd from the mean
    std_0_5_over_0_9: mean 3.307, sd 0.17, range [3.005, 3.569];
      bound (2.4, 4.2) = 5.1 sd from the mean
    width_16_84_rate_0_6_0_8: mean 0.2226, sd 0.013, range [0.2011, 0.2498];
      bound (0.155, 0.29) = 5.1 sd from the mean
    Broken variants rejected (seeds 0-2): const 3/3, rate_ignored 3/3.
    """
    STOCHASTIC["sampling_rate"].check()
    world = sampling_world(RNG_SEED)
    runs = load_runs([world["sig"], world["const"]])
    res = sampling_rate_test(runs, rates=SAMPLING_RATES, seed=RNG_SEED, max_views=None)
    s, c = res["sig"], res["const"]
    assert s["std"] == sampling_result(RNG_SEED)["std"], "one run alone or two: same draws"
    assert s["rates"] == list(SAMPLING_RATES) and s["n_views"] == 800
    # the fold models reproduce the run's own predictions: the right fold model was used
    assert s["max_abs_diff_vs_predictions_csv"] < 1e-9
    assert s["half_width_16_84"][0] == 0 and s["std"][0] == 0 and s["median"][0] == 0
    # a model that ignores the galaxies does not move
    assert max(c["half_width_16_84"]) == 0 and max(c["std"]) == 0
    # same seed -> same numbers; other seed -> other draws
    again = sampling_rate_test(runs, rates=SAMPLING_RATES, seed=RNG_SEED, max_views=None)
    assert again["sig"]["std"] == s["std"]
    other = sampling_rate_test(runs, rates=SAMPLING_RATES, seed=RNG_SEED + 1, max_views=None)
    assert other["sig"]["std"][3] != s["std"][3]
    capped = sampling_rate_test(runs, rates=(1.0, 0.5), seed=RNG_SEED, max_views=25)
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


def test_sampling_rate_with_msigma():
    """M-sigma's fold models reproduce the run's predictions, and its shifts grow as galaxies
    are dropped.

    Measured over seeds 0-19 (``--only test_evaluate.msigma_sampling``):
    half_width_0_8: mean 0.1928, sd 0.024, range [0.1524, 0.2511];
      bound (0.07, 0.32) = 5.1 sd from the mean
    half_width_0_5_over_0_8: mean 2.235, sd 0.19, range [1.801, 2.576];
      bound (1.25, 3.2) = 5.1 sd from the mean
    Broken variants rejected (seeds 0-2): const 3/3, rate_ignored 3/3.
    """
    STOCHASTIC["msigma_sampling"].check()
    res = sampling_result(RNG_SEED, "msigma", (1.0, 0.8, 0.5), 200)
    assert res["max_abs_diff_vs_predictions_csv"] < 1e-6
    assert res["half_width_16_84"][0] == 0 and res["n_views"] == 400
