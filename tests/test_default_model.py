"""The model shipped in the package works right after install and behaves physically.

Tests of random experiments declare a :class:`~dynmass.testing.StochasticCheck` in
``STOCHASTIC``; their bounds were set from the spread of each statistic over seeds
measured by ``python tests/calibrate_bounds.py --jobs 1 --seeds 20 --only <check id>``
(ids ``test_default_model.<name>``), which each test's docstring quotes.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial

import numpy as np
import pytest
from astropy.table import Table

from dynmass.bundle import Bundle, load_bundle
from dynmass.predict import default_model_path, predict_members
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.estimators import ToyConst


def _members(rng: np.random.Generator, spec: dict[str, tuple[float, int, int]]) -> Table:
    """R [Mpc/h] and v [km/s] of toy clusters: ``{id: (sigma_v, members, interlopers)}``.

    Members are Gaussian in v and concentrated in R; interlopers are uniform in the cylinder.
    """
    rows: dict[str, list] = {"cluster_id": [], "R": [], "v": []}
    for cid, (sig, n_mem, n_int) in spec.items():
        v = np.concatenate([rng.normal(0, sig, n_mem), rng.uniform(-2200, 2200, n_int)])
        R = 1.6 * np.concatenate([rng.uniform(0, 1, n_mem) ** 0.75,
                                  np.sqrt(rng.uniform(0, 1, n_int))])
        keep = np.abs(v) < 2200
        rows["cluster_id"] += [cid] * int(keep.sum())
        rows["R"] += list(R[keep])
        rows["v"] += list(v[keep])
    return Table(rows)


#: Richer clusters are hotter (N grows roughly as sigma^3), as in the mocks:
#: ``{name: (sigma_v [km/s], members, interlopers)}``.
TOYS = {"cold": (350.0, 15, 5), "warm": (650.0, 60, 10), "hot": (1000.0, 200, 20)}
#: Toy clusters of each kind in the ordering test (the shipped CNN scatters by ~0.25 dex on
#: one toy cluster; the medians of 20 order robustly).
N_PER_KIND = 20
#: A poor group (far below the calibrated range; no interlopers, which would inflate its
#: sigma_v) and a cluster in the middle of the calibrated range.
POOR, NORMAL = (250.0, 8, 0), (750.0, 200, 2)


@functools.cache
def shipped_bundle() -> Bundle:
    """The default model, read once per process."""
    return load_bundle(default_model_path())


def constant_bundle(log10_m200c: float = 14.3) -> Bundle:
    """The shipped bundle with every fold model replaced by one predicting ``log10_m200c``
    whatever the galaxies (a broken model)."""
    bundle = shipped_bundle()
    const = ToyConst()
    const.coef = np.array([log10_m200c])
    return dataclasses.replace(bundle, models=[const] * len(bundle.models))


@functools.cache
def ordering_result(seed: int, broken: str | None = None) -> dict[str, np.ndarray]:
    """Median log10 M200c of :data:`N_PER_KIND` toy clusters of each kind of :data:`TOYS`
    (draws of seed ``seed``), predicted by the default model (``model`` not given), and the
    table of every cluster. ``broken``: ``"constant"`` uses :func:`constant_bundle`,
    ``"swapped"`` draws the cold clusters as hot and the hot ones as cold."""
    toys = dict(TOYS)
    if broken == "swapped":
        toys["cold"], toys["hot"] = TOYS["hot"], TOYS["cold"]
    spec = {f"{kind}_{i}": toys[kind] for kind in TOYS for i in range(N_PER_KIND)}
    table = _members(np.random.default_rng(seed), spec)
    out = (predict_members(table, constant_bundle()) if broken == "constant"
           else predict_members(table))  # no model: the shipped default
    p50 = dict(zip(out["cluster_id"], np.asarray(out["log10_m200c_p50"], float), strict=True))
    medians = {kind: float(np.median([p50[f"{kind}_{i}"] for i in range(N_PER_KIND)]))
               for kind in TOYS}
    return {"medians": medians, "table": out}


def ordering_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    med = ordering_result(seed, broken)["medians"]
    return {"median_p50_warm_minus_cold": med["warm"] - med["cold"],
            "median_p50_hot_minus_warm": med["hot"] - med["warm"]}


@functools.cache
def flag_result(seed: int, broken: str | None = None):
    """Default-model masses of a :data:`POOR` group and a :data:`NORMAL` cluster (draws of
    seed ``seed``). ``broken``: ``"constant"`` uses :func:`constant_bundle`, ``"swapped"``
    draws each as the other."""
    spec = ({"poor": NORMAL, "normal": POOR} if broken == "swapped"
            else {"poor": POOR, "normal": NORMAL})
    bundle = constant_bundle() if broken == "constant" else shipped_bundle()
    out = predict_members(_members(np.random.default_rng(seed), spec), bundle)
    return {str(r["cluster_id"]): r for r in out}


def flag_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Median of the poor group minus the lower end of the calibrated range (dex; below:
    flagged), distance of the normal cluster's median to the nearer end of the calibrated
    range and of its 68% interval to the nearer end of the belt (dex; above 0: not flagged)."""
    out = flag_result(seed, broken)
    bundle = shipped_bundle()
    lo, hi = bundle.domain["log10_m200c_calibrated"]
    g_lo, g_hi = float(bundle.grid[0]), float(bundle.grid[-1])
    poor, normal = out["poor"], out["normal"]
    return {"poor_p50_minus_calibrated_lo": float(poor["log10_m200c_p50"]) - lo,
            "normal_p50_margin": min(float(normal["log10_m200c_p50"]) - lo,
                                     hi - float(normal["log10_m200c_p50"])),
            "normal_interval_margin": min(float(normal["log10_m200c_p16"]) - g_lo,
                                          g_hi - float(normal["log10_m200c_p84"]))}


@functools.cache
def fresh_universe(seed: int) -> dict[str, np.ndarray]:
    """A 250 Mpc/h mock universe (seed ``seed``), 3 views of every host above 10^13.6 Msun/h
    (observe seed ``seed``), and the default model's masses of them."""
    from dynmass.observe import observe
    from dynmass.universe.build import build_universe

    obs = observe(build_universe(box_size=250.0, seed=seed), min_mass=10**13.6, n_los=3,
                  seed=seed)
    res = shipped_bundle().predict(obs)
    return {"true": obs.log10_m200c(), "halo_id": np.asarray(obs.clusters["halo_id"]), **res}


def fresh_universe_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """On the views of :func:`fresh_universe` with true mass in the calibrated range: hosts,
    Spearman rank correlation of ensemble mean and truth, median and std of ``p50 - true``
    (dex), and the pulls ``(coverage - p) / sqrt(p (1 - p) / n_hosts)`` of the 68% and 95%
    intervals (a binomial error on hosts: views of one host move together). ``broken``:
    ``"shuffled"`` permutes the predictions among views, ``"msun"`` takes true masses in
    Msun instead of Msun/h, ``"overconfident"`` shrinks every interval by 0.6 about p50."""
    from scipy.stats import spearmanr

    r = dict(fresh_universe(seed))
    true = r["true"]
    if broken == "shuffled":
        perm = np.random.default_rng(seed).permutation(len(true))
        r = {k: (v[perm] if k.startswith("log10") else v) for k, v in r.items()}
    elif broken == "msun":
        true = true - np.log10(0.6777)
    elif broken == "overconfident":
        for p in ("p2_5", "p16", "p84", "p97_5"):
            r[f"log10_m200c_{p}"] = (r["log10_m200c_p50"]
                                     + 0.6 * (r[f"log10_m200c_{p}"] - r["log10_m200c_p50"]))
    lo, hi = shipped_bundle().domain["log10_m200c_calibrated"]
    m = (true >= lo) & (true <= hi)
    n_hosts = np.unique(r["halo_id"][m]).size
    eps = r["log10_m200c_p50"][m] - true[m]
    in68 = (true >= r["log10_m200c_p16"]) & (true <= r["log10_m200c_p84"])
    in95 = (true >= r["log10_m200c_p2_5"]) & (true <= r["log10_m200c_p97_5"])
    return {"n_hosts": float(n_hosts),
            "spearman": float(spearmanr(r["log10_m200c_mean"][m], true[m])[0]),
            "median_eps": float(np.median(eps)), "std_eps": float(np.std(eps)),
            "coverage_68": float(in68[m].mean()), "coverage_95": float(in95[m].mean()),
            "pull_68": float((in68[m].mean() - 0.68) / np.sqrt(0.68 * 0.32 / n_hosts)),
            "pull_95": float((in95[m].mean() - 0.95) / np.sqrt(0.95 * 0.05 / n_hosts))}


STOCHASTIC = {
    "dispersion_ordering": StochasticCheck(
        run=ordering_stats, seed=7,
        bounds={"median_p50_warm_minus_cold": Bound(lo=0.0),
                "median_p50_hot_minus_warm": Bound(lo=0.0)},
        broken={b: partial(ordering_stats, broken=b) for b in ("constant", "swapped")}),
    "mass_flags": StochasticCheck(
        run=flag_stats, seed=3,
        bounds={"poor_p50_minus_calibrated_lo": Bound(hi=0.0),
                "normal_p50_margin": Bound(lo=0.0), "normal_interval_margin": Bound(lo=0.0)},
        broken={b: partial(flag_stats, broken=b) for b in ("constant", "swapped")}),
    "fresh_universe": StochasticCheck(
        run=fresh_universe_stats, seed=777,
        bounds={"n_hosts": Bound(860, 1240), "spearman": Bound(lo=0.80),
                "median_eps": Bound(-0.016, 0.016), "std_eps": Bound(hi=0.133),
                "pull_68": Bound(-3, 3), "pull_95": Bound(-4.5, 4.5)},
        broken={b: partial(fresh_universe_stats, broken=b)
                for b in ("shuffled", "msun", "overconfident")}),
}


def test_shipped_bundle_is_complete():
    bundle = load_bundle(default_model_path())
    assert bundle.model_name == "cnn2d"
    assert bundle.obs_settings["aperture"] == pytest.approx(1.6)
    assert bundle.obs_settings["vcut"] == pytest.approx(2200.0)
    assert len(bundle.models) >= 5


def test_predict_without_model_argument_orders_masses_by_dispersion():
    """Without a model argument the shipped default is used, and hotter clusters come out
    heavier: medians of 20 toy clusters of each kind, cold < warm < hot.

    Measured over seeds 0-19 (``--only test_default_model.dispersion_ordering``):
    median_p50_warm_minus_cold: mean 0.5646, sd 0.075, range [0.4166, 0.6988];
      bound (0, inf) = 7.5 sd from the mean
    median_p50_hot_minus_warm: mean 0.7973, sd 0.12, range [0.575, 1.012];
      bound (0, inf) = 6.8 sd from the mean
    Broken variants rejected (seeds 0-2): constant 3/3, swapped 3/3.
    """
    STOCHASTIC["dispersion_ordering"].check()
    out = ordering_result(7)["table"]
    assert len(out) == 3 * N_PER_KIND and not any(out["error"])
    # R, v without a centre redshift: estimated as before, the unchecked redshift noted
    assert all("redshift unknown" in n and "[0.067, 0.167]" in n for n in out["notes"])
    assert not any("extrapolated_redshift" in f for f in out["flags"])
    q = np.column_stack([np.asarray(out[f"log10_m200c_{p}"], float)
                         for p in ("p2_5", "p16", "p50", "p84", "p97_5")])
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=1) >= 0)


def test_shipped_bundle_validated_redshift_range():
    """The shipped file predates ``redshift_range``: it is derived on load as the training
    redshift +/- REDSHIFT_TOLERANCE. Within it, ignoring the E(z)^alpha scaling of sigma at
    fixed mass (Evrard et al. 2008, alpha = 0.3361) biases the mass by log10(E(z)/E(z_train))
    = at most 0.0113 dex with the model's cosmology, inside the +/-0.016 dex median bias the
    fresh-universe test allows (the justification of the tolerance, see dynmass.bundle)."""
    from dynmass.bundle import REDSHIFT_TOLERANCE
    from dynmass.cosmology import to_astropy

    bundle = shipped_bundle()
    z_train = bundle.domain["redshift"]
    assert z_train == pytest.approx(0.117)
    assert bundle.redshift_range == pytest.approx([z_train - REDSHIFT_TOLERANCE,
                                                   z_train + REDSHIFT_TOLERANCE])
    assert "derived on load" in bundle.domain["redshift_range_source"]
    cosmo = to_astropy(bundle.obs_settings["cosmology"])
    bias = [float(np.log10(cosmo.efunc(z) / cosmo.efunc(z_train))) for z in bundle.redshift_range]
    assert bias == pytest.approx([-0.0109, 0.0113], abs=1e-4)
    assert max(abs(b) for b in bias) < STOCHASTIC["fresh_universe"].bounds["median_eps"].hi


def test_shipped_model_refuses_coma_redshift_unless_allowed():
    """Coma (z = 0.0231) lies below the shipped model's validated range [0.067, 0.167]: no
    mass by default; with allow_extrapolation a mass flagged extrapolated_redshift (the README
    example)."""
    table = _members(np.random.default_rng(0), {"coma": NORMAL})
    out = predict_members(table, centers=(194.95, 27.98, 0.0231))
    assert out["error"][0] == ("redshift z=0.0231 outside the model's validated range "
                               "[0.067, 0.167]; use --allow-extrapolation "
                               "(allow_extrapolation=True) to get a mass anyway")
    assert not np.isfinite(out["log10_m200c_p50"][0])
    out = predict_members(table, centers=(194.95, 27.98, 0.0231), allow_extrapolation=True)
    assert out["error"][0] == "" and np.isfinite(out["log10_m200c_p50"][0])
    assert "extrapolated_redshift" in str(out["flags"][0]).split(";")


def test_shipped_bundle_is_calibrated_on_independent_universes():
    """Its belt comes from the fold ensemble on universes it was not trained on."""
    bundle = load_bundle(default_model_path())
    iv = bundle.interval
    assert iv["method"] == "neyman" and iv["residuals"].startswith("fold-ensemble")
    train_universe = bundle.obs_settings["universe_sha256"]
    shas = [f["universe_sha256"] for f in iv["files"]]
    assert len(shas) >= 2 and len(set(shas)) == len(shas) and train_universe not in shas
    lo, hi = bundle.domain["log10_m200c_calibrated"]
    t_lo, t_hi = bundle.domain["log10_m200c"]
    assert t_lo + 0.2 <= lo < 14.0 < 15.0 < hi <= t_hi - 0.2


def test_shipped_bundle_intervals_cover_by_cross_fitting():
    """Recomputed here: the belt of each pseudo-fold, calibrated on the other pseudo-folds'
    views, covers 68% / 95% of its views overall and in every judged bin of true mass."""
    from dynmass.coverage import coverage

    res = coverage(load_bundle(default_model_path()))
    assert res["scheme"] == "cross-fit by fold"
    assert res["passed"], [(b["lo"], b["coverage_68"], b["coverage_95"])
                           for b in res["bins_true"] if b.get("judged")]
    assert sum(b.get("judged", False) for b in res["bins_true"]) >= 7


def test_masses_outside_the_calibrated_range_are_flagged():
    """A poor group lies below the calibrated range and is flagged "mass"; a cluster in the
    middle of it is not (the bounds are the flag's thresholds). The former toys, a group
    with 4 interlopers among 12 galaxies and the "warm" cluster, were flagged the other way
    round at some seeds.

    Measured over seeds 0-19 (``--only test_default_model.mass_flags``):
    poor_p50_minus_calibrated_lo: mean -0.4736, sd 0.062, range [-0.5009, -0.2633];
      bound (-inf, 0) = 7.7 sd from the mean
    normal_p50_margin: mean 0.7201, sd 0.091, range [0.4556, 0.8267];
      bound (0, inf) = 7.9 sd from the mean
    normal_interval_margin: mean 0.9141, sd 0.096, range [0.7778, 1.094];
      bound (0, inf) = 9.5 sd from the mean
    Broken variants rejected (seeds 0-2): constant 3/3, swapped 3/3.
    """
    STOCHASTIC["mass_flags"].check()
    out = flag_result(3)
    assert "mass" not in str(out["normal"]["flags"]).split(";")
    assert "mass" in str(out["poor"]["flags"]).split(";")


@pytest.mark.slow
def test_shipped_model_on_a_fresh_mock_universe():
    """End to end on a universe it never saw (seed 777, 250 Mpc/h, views of hosts above
    10^13.6 Msun/h): masses track the truth and the intervals cover about as often as they
    claim. The 95% intervals cover 0.943 +/- 0.004 of the views (seeds 0-19), slightly under
    0.95, hence the wider bound on ``pull_95`` (binomial error on hosts).

    Measured over seeds 0-19 (``--only test_default_model.fresh_universe``):
    n_hosts: mean 1051, sd 36, range [1000, 1115];
      bound (860, 1240) = 5.3 sd from the mean
    spearman: mean 0.8448, sd 0.0087, range [0.8294, 0.8616];
      bound (0.8, inf) = 5.1 sd from the mean
    median_eps: mean 0.001206, sd 0.0029, range [-0.004414, 0.00721];
      bound (-0.016, 0.016) = 5.2 sd from the mean
    std_eps: mean 0.1209, sd 0.0022, range [0.1157, 0.1253];
      bound (-inf, 0.133) = 5.4 sd from the mean
    pull_68: mean -0.3482, sd 0.49, range [-1.095, 0.4323];
      bound (-3, 3) = 5.4 sd from the mean
    pull_95: mean -1.039, sd 0.64, range [-1.978, 0.4681];
      bound (-4.5, 4.5) = 5.4 sd from the mean
    Broken variants rejected (seeds 0-2): shuffled 3/3, msun 3/3, overconfident 3/3.
    """
    STOCHASTIC["fresh_universe"].check()
