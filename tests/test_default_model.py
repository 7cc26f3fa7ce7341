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
#: A poor, cold group (sigma_v 150 km/s: about 10^12.4 Msun/h, far below the calibrated
#: range; no interlopers, which would inflate its sigma_v) and a cluster in the middle of the
#: calibrated range with as many galaxies as mock clusters of its mass have. The shipped model
#: reads mass from the dynamics only and inverts it with the belt of the cluster's richness
#: band, so a group is "poor" by its velocities, not by its number of galaxies.
POOR, NORMAL = (150.0, 8, 0), (750.0, 80, 4)


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


#: Poor groups and normal clusters per seed in the flag check.
N_FLAG = 10


@functools.cache
def flag_result(seed: int, broken: str | None = None):
    """Default-model masses of :data:`N_FLAG` :data:`POOR` groups and :data:`NORMAL` clusters
    (draws of seed ``seed``). ``broken``: ``"constant"`` uses :func:`constant_bundle`,
    ``"swapped"`` draws each as the other."""
    poor, normal = (NORMAL, POOR) if broken == "swapped" else (POOR, NORMAL)
    spec = {**{f"poor_{i}": poor for i in range(N_FLAG)},
            **{f"normal_{i}": normal for i in range(N_FLAG)}}
    bundle = constant_bundle() if broken == "constant" else shipped_bundle()
    out = predict_members(_members(np.random.default_rng(seed), spec), bundle)
    return {str(r["cluster_id"]): r for r in out}


def flag_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Fraction of the poor groups flagged ``mass`` and of the normal clusters not flagged
    ``mass``, and the median distance of the normal clusters' medians to the nearer end of the
    calibrated range (dex)."""
    out = flag_result(seed, broken)
    lo, hi = shipped_bundle().domain["log10_m200c_calibrated"]

    def flagged(r) -> bool:
        return "mass" in str(r["flags"]).split(";")

    p50 = np.array([float(out[f"normal_{i}"]["log10_m200c_p50"]) for i in range(N_FLAG)])
    return {"poor_flagged": float(np.mean([flagged(out[f"poor_{i}"]) for i in range(N_FLAG)])),
            "normal_not_flagged": float(np.mean([not flagged(out[f"normal_{i}"])
                                                 for i in range(N_FLAG)])),
            "normal_p50_margin": float(np.median(np.minimum(p50 - lo, hi - p50)))}


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


def sampling_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """The views of a fresh 250 Mpc/h universe (seed ``seed``, hosts above 10^13.6 Msun/h, 3
    lines of sight) with every galaxy, and each galaxy kept with probability 0.25 (seeded):
    over views of true mass 10^14-10^15 Msun/h that keep >= 10 galaxies, the median of
    ``p50 - true`` at r = 0.25 minus that at r = 1 (dex) on the same views, and the 68%
    coverage at r = 0.25. ``broken``: ``"full_richness"`` the thinned views are inverted with
    the belt of their richness before thinning (a pipeline that reads the number of galaxies
    from the wrong table)."""
    from dynmass.observe import observe
    from dynmass.universe.build import build_universe

    obs = observe(build_universe(box_size=250.0, seed=seed), min_mass=10**13.6, n_los=3,
                  seed=seed)
    thin = obs.resample(0.25, seed)
    bundle = shipped_bundle()
    true = obs.log10_m200c()
    full, part = bundle.predict(obs), bundle.predict(thin)
    if broken == "full_richness":
        q = bundle.intervals(part["log10_m200c_mean"], obs.n_gal)
        part = {f"log10_m200c_{p}": q[:, j] for j, p in enumerate(("p2_5", "p16", "p50", "p84",
                                                                    "p97_5"))}
    keep = (thin.n_gal >= 10) & (true >= 14.0) & (true < 15.0)
    d_full = full["log10_m200c_p50"][keep] - true[keep]
    d_part = part["log10_m200c_p50"][keep] - true[keep]
    in68 = (part["log10_m200c_p16"] <= true) & (true <= part["log10_m200c_p84"])
    return {"median_shift": float(np.median(d_part) - np.median(d_full)),
            "coverage_68_r025": float(in68[keep].mean()), "n_views": float(keep.sum())}


STOCHASTIC = {
    "sampling": StochasticCheck(
        run=sampling_stats, seed=778,
        bounds={"median_shift": Bound(-0.033, 0.067), "coverage_68_r025": Bound(0.655, 0.815),
                "n_views": Bound(lo=150)},
        broken={"full_richness": partial(sampling_stats, broken="full_richness")}),
    "dispersion_ordering": StochasticCheck(
        run=ordering_stats, seed=7,
        bounds={"median_p50_warm_minus_cold": Bound(lo=0.0),
                "median_p50_hot_minus_warm": Bound(lo=0.0)},
        broken={b: partial(ordering_stats, broken=b) for b in ("constant", "swapped")}),
    "mass_flags": StochasticCheck(
        run=flag_stats, seed=3,
        bounds={"poor_flagged": Bound(lo=0.4), "normal_not_flagged": Bound(lo=0.5),
                "normal_p50_margin": Bound(lo=0.1)},
        broken={b: partial(flag_stats, broken=b) for b in ("constant", "swapped")}),
    "fresh_universe": StochasticCheck(
        run=fresh_universe_stats, seed=777,
        bounds={"n_hosts": Bound(860, 1240), "spearman": Bound(lo=0.693),
                "median_eps": Bound(-0.103, -0.040), "std_eps": Bound(hi=0.277),
                "pull_68": Bound(-3.6, 2.9), "pull_95": Bound(-6.9, 5.1)},
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
    median_p50_warm_minus_cold: mean 0.6516, sd 0.11, range [0.4406, 0.8379];
      bound (0, inf) = 6.2 sd from the mean
    median_p50_hot_minus_warm: mean 0.4848, sd 0.065, range [0.402, 0.6645];
      bound (0, inf) = 7.5 sd from the mean
    Broken variants rejected (seeds 0-2): constant 3/3, swapped 3/3.
    """
    STOCHASTIC["dispersion_ordering"].check()
    out = ordering_result(7)["table"]
    assert len(out) == 3 * N_PER_KIND and not any(out["error"])
    # R, v without a centre redshift: estimated as before, the unchecked redshift noted
    assert all("redshift unknown" in n and "[0, 1.05]" in n for n in out["notes"])
    assert not any("extrapolated_redshift" in f for f in out["flags"])
    q = np.column_stack([np.asarray(out[f"log10_m200c_{p}"], float)
                         for p in ("p2_5", "p16", "p50", "p84", "p97_5")])
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=1) >= 0)


def test_shipped_bundle_validated_redshift_range():
    """Trained at z = 0.117, calibrated there and, in the self-similar frame of predict
    (observe --training-redshift 0.117), on universes at z = 0.02, 0.2, 0.4, 0.7 and 1.0: the
    validated range is the span of those snapshot redshifts +/- REDSHIFT_TOLERANCE, clipped at
    0 (no calibration redshift is more than 0.3 from the next; the robustness check tests the
    redshifts in between: docs/robustness/robustness_z.md)."""
    from dynmass.bundle import REDSHIFT_TOLERANCE

    bundle = shipped_bundle()
    assert bundle.domain["redshift"] == pytest.approx(0.117)
    zs = sorted({round(float(f.get("redshift", 0.117)), 3) for f in bundle.interval["files"]}
                | {0.117})
    assert zs == [0.02, 0.117, 0.2, 0.4, 0.7, 1.0]
    assert max(np.diff(zs)) <= 0.3 + 1e-9
    assert bundle.redshift_range == pytest.approx([0.0, 1.0 + REDSHIFT_TOLERANCE])
    assert bundle.domain["redshift_range_source"].startswith("snapshot redshifts")


def test_shipped_model_refuses_redshifts_beyond_its_range_unless_allowed():
    """Coma (z = 0.0231) now lies inside the validated range [0, 1.05]; a cluster at z = 1.3
    gets no mass by default, and with allow_extrapolation a mass flagged
    extrapolated_redshift."""
    table = _members(np.random.default_rng(0), {"coma": NORMAL})
    out = predict_members(table, centers=(194.95, 27.98, 0.0231))
    assert out["error"][0] == "" and np.isfinite(out["log10_m200c_p50"][0])
    assert "extrapolated_redshift" not in str(out["flags"][0])
    far = (150.0, 2.0, 1.3)
    out = predict_members(_members(np.random.default_rng(0), {"far": NORMAL}),
                          centers=far)
    assert out["error"][0] == ("redshift z=1.3 outside the model's validated range "
                               "[0, 1.05]; use --allow-extrapolation "
                               "(allow_extrapolation=True) to get a mass anyway")
    assert not np.isfinite(out["log10_m200c_p50"][0])
    out = predict_members(_members(np.random.default_rng(0), {"far": NORMAL}),
                          centers=far, allow_extrapolation=True)
    assert out["error"][0] == "" and np.isfinite(out["log10_m200c_p50"][0])
    assert "extrapolated_redshift" in str(out["flags"][0]).split(";")


def test_shipped_bundle_is_calibrated_on_independent_universes():
    """Its belt comes from the fold ensemble on universes it was not trained on."""
    bundle = load_bundle(default_model_path())
    iv = bundle.interval
    assert iv["method"] == "neyman_n" and iv["residuals"].startswith("fold-ensemble")
    from dynmass.observations import universes_of

    train_universes = universes_of(bundle.obs_settings)  # the default and --outskirts engines
    assert len(train_universes) == 2
    engines = [r["universe"]["outskirts"] for r in bundle.obs_settings["combined_from"]]
    assert sorted(engines) == [False, True]
    shas = [f["universe_sha256"] for f in iv["files"]]
    assert len(shas) >= 2 and len(set(shas)) == len(shas) and not train_universes & set(shas)
    lo, hi = bundle.domain["log10_m200c_calibrated"]
    t_lo, t_hi = bundle.domain["log10_m200c"]
    assert t_lo + 0.2 <= lo < 14.0 < 15.0 < hi <= t_hi - 0.2


@pytest.mark.xfail(strict=True, reason="known: cross-fitted, the richness-band belts of the "
                   "shipped model cover 64.6% (68% target) at 10^13.5-10^13.7 and 75.0% "
                   "at 10^15.1-10^15.2")
def test_shipped_bundle_intervals_cover_by_cross_fitting():
    """Recomputed here: the belt of each pseudo-fold, calibrated on the other pseudo-folds'
    views, covers 68% / 95% of its views overall and in every judged bin of true mass.

    Overall it does (67.0% / 95.0%), but two bins fall outside the targets (68 +/- 3), so this
    is a strict xfail: it must start passing (and lose the mark) once the belts are fixed."""
    from dynmass.coverage import coverage

    res = coverage(load_bundle(default_model_path()))
    assert res["scheme"] == "cross-fit by fold"
    assert res["passed"], [(b["lo"], b["coverage_68"], b["coverage_95"])
                           for b in res["bins_true"] if b.get("judged")]
    assert sum(b.get("judged", False) for b in res["bins_true"]) >= 7


def test_shipped_bundle_coverage_on_independent_universes_as_recorded():
    """The coverage the bundle build measured on its two independent test universes
    (``default_model_coverage.json``): within the targets overall, and every judged bin within
    68 +/- 5 and 95 +/- 2.5 (recorded: 67.8% / 95.0% overall, bins 64.1-69.3% and
    94.4-95.3%; every bin within the targets 68 +/- 3 and 95 +/- 2 but 10^13.5-10^13.7 at
    64.1%, where complete-survey calibration views moved it from 65.6%)."""
    import json

    rec = json.loads((default_model_path().parent / "default_model_coverage.json").read_text())
    assert rec["scheme"] == "independent test views"
    assert abs(rec["coverage_68"] - 0.68) <= 0.03 and abs(rec["coverage_95"] - 0.95) <= 0.02
    judged = [b for b in rec["bins_true"] if b.get("judged")]
    assert len(judged) >= 7
    bad = [(b["lo"], b["coverage_68"], b["coverage_95"]) for b in judged
           if abs(b["coverage_68"] - 0.68) > 0.05 or abs(b["coverage_95"] - 0.95) > 0.025]
    assert not bad, bad


def test_masses_outside_the_calibrated_range_are_flagged():
    """Poor, cold groups (sigma_v 150 km/s, ~10^12.4 Msun/h) lie below the calibrated range and
    are flagged "mass"; clusters in the middle of it are not. With 8 galaxies the groups are
    below the training minimum too (flag ``few_members``): the dynamics-only model then now and
    then puts one at 10^13.8 (a few galaxies' dispersion is noisy), hence fractions of 10.

    Measured over seeds 0-19 (``--only test_default_model.mass_flags``):
    poor_flagged: mean 1.0, sd 0, range [1, 1]; bound (0.4, inf)
    normal_not_flagged: mean 0.995, sd 0.022, range [0.9, 1]; bound (0.5, inf) = 22 sd
    normal_p50_margin: mean 0.557, sd 0.057, range [0.465, 0.671]; bound (0.1, inf) = 7.9 sd
    Broken variants rejected (seeds 0-2): constant 3/3, swapped 3/3.
    """
    STOCHASTIC["mass_flags"].check()


@pytest.mark.slow
def test_shipped_model_does_not_move_with_sampling():
    """Dropping three galaxies in four moves the median mass at fixed true mass by a few
    hundredths of a dex only (the shipped model was trained over surveys drawn per view and its
    belts are per richness band; the default model before those moved by -0.33 dex at this
    rate). On this default-engine universe the full-sampling median reads a little low (about
    -0.03 dex over 10^14-10^15: the model is trained on the default and --outskirts engines
    and, with every galaxy, cannot quite tell a sharp-edged mock cluster from a lighter one
    with outskirts), so thinning moves it *up* by about +0.02; its 68% intervals over-cover at
    r = 0.25.

    Measured over seeds 0-19 (``--only test_default_model.sampling``; the belts recalibrated
    with complete surveys; before: shift 0.0495, sd 0.011):
    median_shift: mean 0.0173, sd 0.010, range [-0.003, 0.038]; bound (-0.033, 0.067) = 4.8 sd
    coverage_68_r025: mean 0.735, sd 0.014, range [0.715, 0.771]; bound (0.655, 0.815) = 5.6 sd
    n_views: mean 770, sd 58, range [662, 867]; bound (150, inf) = 10.7 sd from the mean
    Broken variant rejected (seeds 0-2): full_richness 3/3.
    """
    STOCHASTIC["sampling"].check()


@pytest.mark.slow
def test_shipped_model_on_a_fresh_mock_universe():
    """End to end on a universe it never saw (seed 777, 250 Mpc/h default engine, views of
    hosts above 10^13.6 Msun/h, every galaxy): masses track the truth (Spearman 0.76), with a
    known offset: the median reads about 0.07 dex low over 10^13.6-10^15.2 on this engine at
    full sampling (trained on a mixture of the default and --outskirts engines, the model
    cannot quite tell a sharp-edged default-engine cluster with every galaxy from a lighter
    cluster with outskirts and infall; README, "How it holds on other skies"), and its
    intervals cover about what they claim (pulls -0.4 and -0.9; -0.6 and -4.7 before the belts
    were recalibrated with complete surveys, when the median read 0.11 low).

    Measured over seeds 0-19 (``--only test_default_model.fresh_universe``; the belts
    recalibrated with complete surveys):
    n_hosts: mean 1051, sd 36, range [1000, 1115]; bound (860, 1240) = 5.3 sd from the mean
    spearman: mean 0.7576, sd 0.013, range [0.737, 0.778]; bound (0.693, inf) = 4.8 sd
    median_eps: mean -0.0713, sd 0.0063, range [-0.082, -0.061]; bound (-0.103, -0.040) = 4.9 sd
    std_eps: mean 0.2531, sd 0.0046, range [0.2462, 0.2623]; bound (-inf, 0.277) = 5.2 sd
    pull_68: mean -0.363, sd 0.65, range [-1.961, 0.440]; bound (-3.6, 2.9) = 5.0 sd
    pull_95: mean -0.863, sd 1.2, range [-4.879, 0.640]; bound (-6.9, 5.1) = 4.9 sd
    Broken variants rejected (seeds 0-2): shuffled 3/3, msun 3/3, overconfident 3/3.
    """
    STOCHASTIC["fresh_universe"].check()
