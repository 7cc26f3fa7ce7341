"""Model bundles: making, reading, interval calibration and honest coverage checks.

Tests of random experiments declare a :class:`~dynmass.testing.StochasticCheck` in
``STOCHASTIC``; their bounds were set from the spread of each statistic over seeds
measured by ``python tests/calibrate_bounds.py --jobs 1 --seeds 20 --only <check id>``
(ids ``test_bundle.<name>``), which each test's docstring quotes.
"""

from __future__ import annotations

import functools
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from dynmass.bundle import held_out_calibration, load_bundle, make_bundle
from dynmass.coverage import coverage, plot_coverage
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.intervals import (
    PERCENTILES,
    Calibration,
    apply_intervals,
    belt_table,
    calibrate,
    calibrated_range,
    interpolate_quantiles,
    quantile_table,
)
from dynmass.observations import Observations, read_observations, write_observations
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.estimators import broken_calibration
from dynmass.testing.runs import scratch_folder, write_fold_run
from dynmass.testing.worlds import CYLINDER_SETTINGS, cylinder_views

#: Seeds of the worlds the tests use (those of the tests before their bounds were measured).
RUN_SEED, INDEPENDENT_SEED = 7, 21
#: Interval-calibration breakages every coverage check must reject.
BROKEN = ("shrunk", "shuffled")

# ---------------------------------------------------------------------------- toy worlds


@functools.cache
def cross_fit_world(seed: int) -> tuple[Path, Observations]:
    """1000 rich toy hosts x 3 views (world seed ``seed``) and a 5-fold msigma run on them."""
    obs = cylinder_views(np.random.default_rng(seed), n_halos=1000, richness=60.0,
                         n_interlopers=1.0)
    tmp = scratch_folder(f"cross_fit_{seed}_")
    obs_path = write_observations(obs, tmp / "obs.h5")
    return write_fold_run(tmp / "run", obs, obs_path=obs_path, seed=seed), obs


def _with_universe(obs: Observations, sha: str) -> Observations:
    obs.settings = {**obs.settings, "universe_sha256": sha}
    return obs


@functools.cache
def independent_world(seed: int) -> tuple[Path, dict[str, Path], Observations]:
    """A 5-fold msigma run on 600 hosts of universe 'A', and views of universes 'B' (1500
    hosts, calibration) and 'C' (800 hosts, test), all drawn from seed ``seed``."""
    tmp = scratch_folder(f"independent_{seed}_")
    rng = np.random.default_rng(seed)
    train = _with_universe(cylinder_views(rng, n_halos=600, richness=60.0, n_interlopers=1.0),
                           "A")
    run = write_fold_run(tmp / "run", train, obs_path=write_observations(train, tmp / "train.h5"),
                         seed=seed)
    files = {}
    for name, n in (("B", 1500), ("C", 800)):
        obs = _with_universe(cylinder_views(rng, n_halos=n, richness=60.0, n_interlopers=1.0),
                             name)
        files[name] = write_observations(obs, tmp / f"obs_{name}.h5")
    return run, files, train


@pytest.fixture(scope="module")
def run_folder():
    return cross_fit_world(RUN_SEED)


@pytest.fixture(scope="module")
def independent_files():
    """A training run on universe 'A' and views of universes 'B' (calibration), 'C' (test)."""
    return independent_world(INDEPENDENT_SEED)


def pulled_views(rng: np.random.Generator, n_hosts: int, n_los: int = 4, pull: float = 0.25):
    """Toy learner output: pulled towards the middle of 13.5-15.0, hardest at the edges.

    Every host has its own offset (shared by its lines of sight) plus a per-view error, as a
    real learner has; the pull ``-pull x^3`` (x = true - 14.25) is 0.1 dex at the edges.
    """
    true_h = rng.uniform(13.5, 15.0, n_hosts)
    host_off = rng.normal(0, 0.06, n_hosts)
    true = np.repeat(true_h, n_los)
    host = np.repeat(np.arange(n_hosts), n_los)
    x = true - 14.25
    pred = true - pull * x**3 + host_off[host] + rng.normal(0, 0.08, true.size)
    return true, pred, host


# ------------------------------------------------------------------------ the experiments


def _judged(bins: list[dict]) -> list[dict]:
    return [b for b in bins if b.get("judged")]


def _max_pull(bins: list[dict], level: int) -> float:
    """Largest ``|coverage - p| / sqrt(p (1 - p) / n_hosts)`` over the judged bins, ``p`` the
    nominal fraction: a binomial error on hosts, as if the views of a host moved together
    (the bins' bootstrap errors shrink where the observed coverage nears 1)."""
    judged = _judged(bins)
    if not judged:
        return float("nan")
    p = level / 100
    return max(abs(b[f"coverage_{level}"] - p) / np.sqrt(p * (1 - p) / b["n_hosts"])
               for b in judged)


def coverage_stats(res: dict, bins: str = "bins_true") -> dict[str, float]:
    """Overall coverage, worst pull over the judged bins of ``bins``, their number, widths."""
    return {"coverage_68": res["coverage_68"], "coverage_95": res["coverage_95"],
            "max_pull_68": _max_pull(res[bins], 68), "max_pull_95": _max_pull(res[bins], 95),
            "n_judged": float(len(_judged(res[bins]))),
            "width_68": res["width_68_median_dex"]}


@functools.cache
def cross_fit_result(seed: int, method: str = "neyman", broken: str | None = None) -> dict:
    """Coverage of the run of :func:`cross_fit_world` by cross-fitting over its folds
    (bootstrap seed ``seed``); ``broken``: see :func:`~dynmass.testing.estimators.broken_calibration`,
    or ``"constant"``: every held-out prediction replaced by the mean true mass."""
    run, _ = cross_fit_world(seed)
    if broken == "constant":
        b = make_bundle(run)
        c = b.calibration
        b.calibration = Calibration(pred=np.full_like(c.pred, c.true.mean()), true=c.true,
                                    fold=c.fold, halo_id=c.halo_id, los=c.los, n_gal=c.n_gal)
        return coverage(b, seed=seed, method=method)
    with broken_calibration(broken, seed):
        return coverage(run, seed=seed, method=method)


def cross_fit_stats(seed: int, method: str = "neyman", broken: str | None = None) -> dict:
    bins = "bins_true" if method == "neyman" else "bins_pred"
    return coverage_stats(cross_fit_result(seed, method, broken), bins)


def quantile_table_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """4000 residuals N(0.05, 0.1) below predicted 14.5 and N(0.05, 0.3) above; the 16-84
    width (dex) of the table in each half and its median offset. ``broken``: ``"shrunk"``
    tabulates 0.6 x the residuals, ``"one_window"`` one window of all views (no locality)."""
    rng = np.random.default_rng(seed)
    pred = rng.uniform(14, 15, 4000)
    scale = np.where(pred < 14.5, 0.1, 0.3)  # heteroscedastic residuals
    res = rng.normal(0.05, scale)
    k = 4000 if broken == "one_window" else 300
    grid, table = quantile_table(pred, 0.6 * res if broken == "shrunk" else res,
                                 k_neighbors=k, percentiles=PERCENTILES)
    lo, hi = table[grid < 14.3], table[grid > 14.7]
    return {"width_68_low": float(np.median(lo[:, 3] - lo[:, 1])),
            "width_68_high": float(np.median(hi[:, 3] - hi[:, 1])),
            "median_offset": float(np.median(table[:, 2]))}


def belt_inversion_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Belt of 20000 views ``pred = true + N(0, 0.1)``, true uniform in 13.5-15.5, inverted at
    mu = 14.5: offset (dex) of each percentile from ``14.5 + 0.1 z_p``. ``broken``:
    ``"shrunk"`` / ``"shuffled"`` as :func:`~dynmass.testing.estimators.broken_calibration`."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(13.5, 15.5, 20000)
    pred = true + rng.normal(0, 0.1, true.size)
    if broken == "shrunk":
        pred = true + 0.6 * (pred - true)
    elif broken == "shuffled":
        true = rng.permutation(true)
    grid, table = calibrate(pred, true, "neyman", 1000)
    q = apply_intervals(np.array([14.5]), grid, table, "neyman")[0]
    dev = q - (14.5 + 0.1 * np.array([-1.96, -1, 0, 1, 1.96]))
    return {f"offset_p{p:g}".replace(".", "_"): float(d)
            for p, d in zip(PERCENTILES, dev, strict=True)}


def overconfident_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """In-sample coverage of knn-pred tables of the cross-fit run's residuals, shrunk by 0.3
    and as they are. ``broken`` scales every residual before tabulating: ``"shrunk"`` by 0.6,
    ``"ln_units"`` by ln 10 (natural-log masses)."""
    run, _ = cross_fit_world(seed)
    cal = held_out_calibration(run / "predictions.csv")
    unit = {None: 1.0, "shrunk": 0.6, "ln_units": float(np.log(10))}[broken]

    def inside(scale: float) -> float:
        grid, table = quantile_table(cal.pred, scale * unit * cal.residual)
        q = cal.pred[:, None] + interpolate_quantiles(cal.pred, grid, table)
        return float(np.mean((cal.true >= q[:, 1]) & (cal.true <= q[:, 3])))

    return {"coverage_68_shrunk_0_3": inside(0.3), "coverage_68_in_sample": inside(1.0)}


@functools.cache
def single_fold_result(seed: int, broken: str | None = None) -> dict:
    """Coverage of the cross-fit run's views relabelled as one fold: two random halves by
    host (seed ``seed``) calibrate each other."""
    run, _ = cross_fit_world(seed)
    cal = held_out_calibration(run / "predictions.csv")
    one = make_bundle(run)
    one.calibration = Calibration(pred=cal.pred, true=cal.true, fold=np.zeros_like(cal.fold),
                                  halo_id=cal.halo_id, los=cal.los, n_gal=cal.n_gal)
    with broken_calibration(broken, seed):
        return coverage(one, seed=seed)


def single_fold_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    res = single_fold_result(seed, broken)
    return {"coverage_68": res["coverage_68"], "coverage_95": res["coverage_95"]}


def belt_edge_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Belt calibrated on 3000 pulled toy hosts x 4 views, tested on 3000 others; worst pull
    ``|coverage - nominal| / se`` over ten 0.15-dex bins of true mass (se binomial on hosts).
    ``broken``: ``"shrunk"`` / ``"shuffled"`` damage the calibration views, ``"no_pull"``
    calibrates on views without the edge pull of the test views."""
    rng = np.random.default_rng(seed)
    t_cal, p_cal, h_cal = pulled_views(rng, 3000, pull=0.0 if broken == "no_pull" else 0.25)
    t_test, p_test, h_test = pulled_views(rng, 3000)
    if broken == "shrunk":
        p_cal = t_cal + 0.6 * (p_cal - t_cal)
    elif broken == "shuffled":
        t_cal = rng.permutation(t_cal)
    grid, table = belt_table(t_cal, p_cal, h_cal)
    q = apply_intervals(p_test, grid, table, "neyman")
    in68 = (t_test >= q[:, 1]) & (t_test <= q[:, 3])
    in95 = (t_test >= q[:, 0]) & (t_test <= q[:, 4])
    edges = np.linspace(13.5, 15.0, 11)
    idx = np.digitize(t_test, edges) - 1
    pulls68, pulls95 = [], []
    for b in range(10):
        m = idx == b
        n_h = np.unique(h_test[m]).size  # hosts, not views, are independent
        pulls68.append(abs(in68[m].mean() - 0.68) / np.sqrt(0.68 * 0.32 / n_h))
        pulls95.append(abs(in95[m].mean() - 0.95) / np.sqrt(0.95 * 0.05 / n_h))
    return {"max_pull_68": float(max(pulls68)), "max_pull_95": float(max(pulls95))}


@functools.cache
def independent_result(seed: int, broken: str | None = None) -> dict:
    """Bundle of :func:`independent_world`'s run calibrated on universe 'B', its coverage
    tested on universe 'C' (bootstrap seed ``seed``)."""
    run, files, _ = independent_world(seed)
    with broken_calibration(broken, seed):
        b = make_bundle(run, calibration_observations=[files["B"]])
    return coverage(b, observations=[files["C"]], seed=seed)


def independent_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    return coverage_stats(independent_result(seed, broken))


STOCHASTIC = {
    "cross_fit": StochasticCheck(
        run=cross_fit_stats, seed=RUN_SEED,
        bounds={"coverage_68": Bound(0.66, 0.70), "coverage_95": Bound(0.938, 0.962),
                "max_pull_68": Bound(hi=1.25), "max_pull_95": Bound(hi=1.6),
                "n_judged": Bound(lo=3.5), "width_68": Bound(0.14, 0.25)},
        broken={b: partial(cross_fit_stats, broken=b) for b in (*BROKEN, "constant")}),
    "knn_pred": StochasticCheck(
        run=partial(cross_fit_stats, method="knn_pred"), seed=RUN_SEED,
        bounds={"coverage_68": Bound(0.68, 0.73), "max_pull_68": Bound(hi=1.8),
                "n_judged": Bound(lo=3.5)},
        broken={b: partial(cross_fit_stats, method="knn_pred", broken=b) for b in BROKEN}),
    "quantile_table": StochasticCheck(
        run=quantile_table_stats, seed=3,
        bounds={"width_68_low": Bound(0.17, 0.23), "width_68_high": Bound(0.5, 0.7),
                "median_offset": Bound(0.033, 0.067)},
        broken={b: partial(quantile_table_stats, broken=b) for b in ("shrunk", "one_window")}),
    "belt_inversion": StochasticCheck(
        run=belt_inversion_stats, seed=5,
        bounds={"offset_p2_5": Bound(-0.05, 0.05), "offset_p16": Bound(-0.025, 0.025),
                "offset_p50": Bound(-0.025, 0.025), "offset_p84": Bound(-0.035, 0.035),
                "offset_p97_5": Bound(-0.045, 0.045)},
        broken={b: partial(belt_inversion_stats, broken=b) for b in BROKEN}),
    "overconfident": StochasticCheck(
        run=overconfident_stats, seed=RUN_SEED,
        bounds={"coverage_68_shrunk_0_3": Bound(hi=0.26),
                "coverage_68_in_sample": Bound(0.67, 0.705)},
        broken={b: partial(overconfident_stats, broken=b) for b in ("shrunk", "ln_units")}),
    "single_fold": StochasticCheck(
        run=single_fold_stats, seed=RUN_SEED,
        bounds={"coverage_68": Bound(0.662, 0.698), "coverage_95": Bound(0.932, 0.968)},
        broken={b: partial(single_fold_stats, broken=b) for b in BROKEN}),
    "belt_edges": StochasticCheck(
        run=belt_edge_stats, seed=11,
        bounds={"max_pull_68": Bound(hi=3.0), "max_pull_95": Bound(hi=4.2)},
        broken={b: partial(belt_edge_stats, broken=b) for b in (*BROKEN, "no_pull")}),
    "independent": StochasticCheck(
        run=independent_stats, seed=INDEPENDENT_SEED,
        bounds={"coverage_68": Bound(0.61, 0.765), "coverage_95": Bound(0.92, 0.985),
                "max_pull_68": Bound(hi=2.9), "max_pull_95": Bound(hi=3.0),
                "n_judged": Bound(lo=2.5)},
        broken={b: partial(independent_stats, broken=b) for b in BROKEN}),
}


# ---------------------------------------------------------------------------------- tests


def test_bundle_round_trip_and_ensemble(run_folder, tmp_path):
    run, obs = run_folder
    b = make_bundle(run, tmp_path / "b.h5")
    back = load_bundle(tmp_path / "b.h5")
    assert back.model_name == "msigma" and len(back.models) == 5
    assert back.obs_settings["aperture"] == 1.6 and back.obs_settings["vcut"] == 2200.0
    dom = back.domain
    assert 13.6 <= dom["log10_m200c"][0] < dom["log10_m200c"][1] <= 15.1
    assert dom["sigma_v"] is not None and dom["sigma_v"][0] < dom["sigma_v"][1]
    assert dom["redshift"] == pytest.approx(0.117)
    sub = obs.subset(np.arange(20))
    res, res2 = b.predict(sub), back.predict(sub)
    folds = np.vstack([m.predict(sub) for m in back.models])
    np.testing.assert_allclose(res["log10_m200c_mean"], folds.mean(axis=0))
    for p in ("p2_5", "p16", "p50", "p84", "p97_5"):
        np.testing.assert_allclose(res[f"log10_m200c_{p}"], res2[f"log10_m200c_{p}"])
    q = np.column_stack([res[f"log10_m200c_{p}"] for p in ("p2_5", "p16", "p50", "p84", "p97_5")])
    assert np.all(np.diff(q, axis=1) >= 0), "percentiles must be ordered"
    assert np.all(q[:, 3] > q[:, 1]), "a 68% interval has a width (its size: test_coverage_*)"


def test_quantile_table_follows_local_scatter():
    """Residual quantiles among nearest neighbours in predicted mass follow a scatter that
    changes with mass (0.1 dex below 14.5, 0.3 above: 16-84 widths 0.2 and 0.6).

    Measured over seeds 0-19 (``--only test_bundle.quantile_table``):
    width_68_low: mean 0.2011, sd 0.0056, range [0.1913, 0.2096];
      bound (0.17, 0.23) = 5.2 sd from the mean
    width_68_high: mean 0.5987, sd 0.018, range [0.5666, 0.6294];
      bound (0.5, 0.7) = 5.6 sd from the mean
    median_offset: mean 0.05056, sd 0.0031, range [0.04522, 0.05801];
      bound (0.033, 0.067) = 5.3 sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, one_window 3/3.
    """
    STOCHASTIC["quantile_table"].check()


def test_coverage_cross_fit_is_honest(run_folder, tmp_path):
    """Neyman intervals cross-fitted over the folds of an msigma run cover 68% / 95% of the
    views overall and in every judged bin of true mass, edges included: the worst pull
    ``|c - p| / sqrt(p (1 - p) / n_hosts)`` over the judged bins (a binomial error on hosts,
    conservative as views of a host partly move together) is bounded.

    Measured over seeds 0-19 (``--only test_bundle.cross_fit``):
    coverage_68: mean 0.6793, sd 0.0034, range [0.6729, 0.6853];
      bound (0.66, 0.7) = 5.7 sd from the mean
    coverage_95: mean 0.953, sd 0.0015, range [0.9496, 0.955];
      bound (0.938, 0.962) = 5.9 sd from the mean
    max_pull_68: mean 0.3788, sd 0.15, range [0.1787, 0.6391];
      bound (-inf, 1.25) = 6.0 sd from the mean
    max_pull_95: mean 0.5364, sd 0.2, range [0.2205, 1.022];
      bound (-inf, 1.6) = 5.2 sd from the mean
    n_judged: mean 5, sd 0, range [5, 5];
      bound (3.5, inf) = inf sd from the mean
    width_68: mean 0.1927, sd 0.0096, range [0.1774, 0.2089];
      bound (0.14, 0.25) = 5.5 sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, shuffled 3/3, constant 3/3.
    """
    stats = STOCHASTIC["cross_fit"].check()
    res = cross_fit_result(RUN_SEED)
    assert res["scheme"] == "cross-fit by fold" and res["method"] == "neyman"
    assert res["n_views"] == 3000 and stats["n_judged"] == len(_judged(res["bins_true"]))
    plot_coverage(res, tmp_path / "cov.png")
    assert (tmp_path / "cov.png").stat().st_size > 1000


def test_knn_pred_method_is_calibrated_in_predicted_mass(run_folder):
    """Intervals from the nearest neighbours in predicted mass cover 68% overall and in every
    judged bin of predicted mass. On this flat mass function they over-cover by about 0.025
    at every seed (a window in predicted mass mixes views of different mean offset), so the
    bound is set about the measured mean, not about 0.68; pulls are ``|c - 0.68| /
    sqrt(0.68 0.32 / n_hosts)`` per judged bin.

    Measured over seeds 0-19 (``--only test_bundle.knn_pred``):
    coverage_68: mean 0.7045, sd 0.0045, range [0.6966, 0.7153];
      bound (0.68, 0.73) = 5.4 sd from the mean
    max_pull_68: mean 0.6093, sd 0.23, range [0.2042, 0.9793];
      bound (-inf, 1.8) = 5.1 sd from the mean
    n_judged: mean 5, sd 0, range [5, 5];
      bound (3.5, inf) = inf sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, shuffled 3/3.
    """
    STOCHASTIC["knn_pred"].check()
    res = cross_fit_result(RUN_SEED, "knn_pred")
    assert res["method"] == "knn_pred" and len(_judged(res["bins_pred"])) >= 4


def test_neyman_belt_inversion_recovers_truth():
    """With pred = true + N(0, 0.1) the belt gives mu + 0.1 z_p in the middle of the range.

    Measured over seeds 0-19 (``--only test_bundle.belt_inversion``):
    offset_p2_5: mean -0.003742, sd 0.0084, range [-0.01777, 0.01498];
      bound (-0.05, 0.05) = 5.5 sd from the mean
    offset_p16: mean 0.001881, sd 0.0043, range [-0.006873, 0.008128];
      bound (-0.025, 0.025) = 5.3 sd from the mean
    offset_p50: mean -0.0009591, sd 0.004, range [-0.009666, 0.005785];
      bound (-0.025, 0.025) = 6.1 sd from the mean
    offset_p84: mean -0.001508, sd 0.0065, range [-0.01005, 0.01125];
      bound (-0.035, 0.035) = 5.1 sd from the mean
    offset_p97_5: mean 0.002659, sd 0.0081, range [-0.01465, 0.01548];
      bound (-0.045, 0.045) = 5.2 sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, shuffled 3/3.
    """
    STOCHASTIC["belt_inversion"].check()
    # beyond the calibrated range the masses are clipped to it
    rng = np.random.default_rng(5)
    true = rng.uniform(13.5, 15.5, 2000)
    grid, table = calibrate(true + rng.normal(0, 0.1, true.size), true, "neyman", 200)
    assert apply_intervals(np.array([17.0]), grid, table, "neyman")[0, 2] <= 15.5


def test_overconfident_calibration_shows_under_coverage(run_folder):
    """Intervals calibrated on residuals shrunk by 0.3 miss the truth far too often; those of
    the residuals themselves cover the nominal 68% in sample.

    Measured over seeds 0-19 (``--only test_bundle.overconfident``):
    coverage_68_shrunk_0_3: mean 0.2257, sd 0.0065, range [0.21, 0.241];
      bound (-inf, 0.26) = 5.3 sd from the mean
    coverage_68_in_sample: mean 0.6869, sd 0.0028, range [0.683, 0.6933];
      bound (0.67, 0.705) = 5.9 sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, ln_units 3/3.
    """
    STOCHASTIC["overconfident"].check()


def test_single_fold_run_splits_by_halo(run_folder):
    """A run of one fold is cross-fitted over two random halves of its hosts.

    Measured over seeds 0-19 (``--only test_bundle.single_fold``):
    coverage_68: mean 0.6798, sd 0.0032, range [0.6727, 0.685];
      bound (0.662, 0.698) = 5.5 sd from the mean
    coverage_95: mean 0.9535, sd 0.0028, range [0.9451, 0.9581];
      bound (0.932, 0.968) = 5.3 sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, shuffled 3/3.
    """
    STOCHASTIC["single_fold"].check()
    assert single_fold_result(RUN_SEED)["scheme"] == "two random halves by halo"


def test_bad_runs_and_files(run_folder, tmp_path):
    run, _ = run_folder
    with pytest.raises(InputError, match="settings.json"):
        make_bundle(tmp_path)
    incomplete = tmp_path / "inc"
    incomplete.mkdir()
    (incomplete / "settings.json").write_text((run / "settings.json").read_text())
    with pytest.raises(InputError, match="predictions.csv"):
        make_bundle(incomplete)
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"certainly not HDF5")
    with pytest.raises(InputError, match="foreign.h5"):
        load_bundle(foreign)
    with pytest.raises(InputError, match="dynmass bundle"):
        load_bundle(run / "fold_00.h5")


def test_cli_bundle_with_coverage(run_folder, tmp_path, capsys):
    from dynmass.cli import main

    run, _ = run_folder
    out = tmp_path / "model.h5"
    rc = main(["bundle", str(run), "-o", str(out), "--coverage"])
    assert rc in (0, 1)
    assert out.exists() and (tmp_path / "model_coverage.png").exists()
    res = json.loads((tmp_path / "model_coverage.json").read_text())
    assert rc == (0 if res["passed"] else 1)
    assert "coverage_68" in capsys.readouterr().out


def test_belt_is_honest_at_the_edges_of_the_range():
    """Calibrated on one toy sample, tested on another: every 0.15-dex bin of true mass, the
    two biased edge bins included, covers 68% / 95% (worst pull over the ten bins bounded).

    Measured over seeds 0-19 (``--only test_bundle.belt_edges``):
    max_pull_68: mean 1.33, sd 0.33, range [0.7174, 2.011];
      bound (-inf, 3) = 5.1 sd from the mean
    max_pull_95: mean 1.401, sd 0.55, range [0.6267, 2.728];
      bound (-inf, 4.2) = 5.1 sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, shuffled 3/3, no_pull 3/3.
    """
    STOCHASTIC["belt_edges"].check()


def test_belt_needs_enough_hosts():
    from dynmass.intervals import belt_table

    rng = np.random.default_rng(2)
    true = np.repeat(rng.uniform(14, 15, 30), 40)  # 1,200 views of only 30 hosts
    host = np.repeat(np.arange(30), 40)
    pred = true + rng.normal(0, 0.1, true.size)
    with pytest.raises(InputError, match="hosts"):
        belt_table(true, pred, host, min_hosts=25, max_halfwidth=0.25)
    with pytest.raises(InputError, match="calibration hosts"):
        calibrated_range(true, host, [14, 15], min_hosts=25)
    lo, hi = calibrated_range(true, host, [14.0, 15.0], min_hosts=5, edge_margin=0.2)
    hosts_mass = np.sort(true[::40])
    assert lo == pytest.approx(max(14.2, hosts_mass[4]))
    assert hi == pytest.approx(min(14.8, hosts_mass[-5]))


def test_independent_calibration_and_test(independent_files, tmp_path):
    """A bundle calibrated on the fold ensemble's predictions of universe 'B' covers 68% /
    95% of the views of universe 'C', overall and in every judged bin of true mass (worst
    pull over the bins with a binomial error on hosts, as in the cross-fit test).

    Measured over seeds 0-19 (``--only test_bundle.independent``):
    coverage_68: mean 0.6863, sd 0.015, range [0.6608, 0.709];
      bound (0.61, 0.765) = 5.1 sd from the mean
    coverage_95: mean 0.9536, sd 0.0061, range [0.9394, 0.9638];
      bound (0.92, 0.985) = 5.2 sd from the mean
    max_pull_68: mean 1.081, sd 0.35, range [0.3886, 1.721];
      bound (-inf, 2.9) = 5.2 sd from the mean
    max_pull_95: mean 0.9528, sd 0.39, range [0.2535, 1.691];
      bound (-inf, 3) = 5.3 sd from the mean
    n_judged: mean 5, sd 0, range [5, 5];
      bound (2.5, inf) = inf sd from the mean
    Broken variants rejected (seeds 0-2): shrunk 3/3, shuffled 3/3.
    """
    run, files, _ = independent_files
    b = make_bundle(run, tmp_path / "b.h5", calibration_observations=[files["B"]])
    back = load_bundle(tmp_path / "b.h5")
    assert back.interval["residuals"].startswith("fold-ensemble")
    assert back.interval["files"][0]["universe_sha256"] == "B"
    assert back.interval["n_calibration_hosts"] == 1500
    assert len(back.calibration.pred) == 4500
    lo, hi = back.domain["log10_m200c_calibrated"]
    t_lo, t_hi = back.domain["log10_m200c"]
    assert t_lo + 0.2 <= lo < hi <= t_hi - 0.2
    # calibration views carry the ensemble mean, not single-fold predictions
    obs_b = read_observations(files["B"])
    ens = np.mean([m.predict(obs_b) for m in b.models], axis=0)
    np.testing.assert_allclose(back.calibration.pred, ens)
    # the file read back tests as the bundle made in memory
    res = coverage(back, observations=[files["C"]], figure=tmp_path / "c.png",
                   seed=INDEPENDENT_SEED)
    assert res["scheme"] == "independent test views" and res["n_views"] == 2400
    assert res["coverage_68"] == independent_result(INDEPENDENT_SEED)["coverage_68"]
    assert (tmp_path / "c.png").stat().st_size > 1000
    STOCHASTIC["independent"].check()


def test_calibration_and_test_views_must_be_independent(independent_files, tmp_path):
    run, files, train = independent_files
    with pytest.raises(InputError, match="universe"):
        make_bundle(run, calibration_observations=[write_observations(train, tmp_path / "a.h5")])
    b = make_bundle(run, calibration_observations=[files["B"]])
    with pytest.raises(InputError, match="coverage test needs independent hosts"):
        coverage(b, observations=[files["B"]])
    with pytest.raises(InputError, match="needs a bundle"):
        coverage(run, observations=[files["C"]])


def test_calibration_views_observed_otherwise_are_refused(independent_files, tmp_path):
    run, _, _ = independent_files
    rng = np.random.default_rng(4)
    other = {**CYLINDER_SETTINGS, "redshift": 0.3}
    obs = _with_universe(cylinder_views(rng, n_halos=200, settings=other), "D")
    path = write_observations(obs, tmp_path / "z03.h5")
    with pytest.raises(SettingsMismatchError, match="redshift") as err:
        make_bundle(run, calibration_observations=[path])
    assert "z03.h5" in str(err.value)


def test_cli_bundle_calibrate_and_test_on(independent_files, tmp_path, capsys):
    from dynmass.cli import main

    run, files, _ = independent_files
    out = tmp_path / "m.h5"
    rc = main(["bundle", str(run), "-o", str(out), "--calibrate-on", str(files["B"]),
               "--test-on", str(files["C"]), "--coverage"])
    res = json.loads((tmp_path / "m_coverage.json").read_text())
    cross = json.loads((tmp_path / "m_coverage_crossfit.json").read_text())
    assert res["scheme"] == "independent test views"
    assert cross["scheme"] == "cross-fit by fold"
    assert rc == (0 if res["passed"] and cross["passed"] else 1)
    rc2 = main(["coverage", str(out), str(files["C"]), "-o", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["coverage_68"] == res["coverage_68"] and rc2 == (0 if res["passed"] else 1)
    assert "independent test views" in capsys.readouterr().out
