"""The embedded mock universe: build, reproducibility, file round trip, validation relations.

The statistics of random universes (galaxy density, bulk-flow amplitude, mass-function
residuals, clustering amplitude, satellite velocity dispersions) are :class:`StochasticCheck`
s in ``STOCHASTIC``, with bounds set from their spread over seeds 0-9
(``python tests/calibrate_bounds.py --only test_universe``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache, partial

import numpy as np
import pytest

from dynmass import InputError, read_catalog
from dynmass.catalog import Catalog
from dynmass.cli import main
from dynmass.cosmology import little_h
from dynmass.testing import Bound, StochasticCheck
from dynmass.universe import build_universe, check_catalog, write_universe
from dynmass.universe.validate import (
    check_clustering,
    check_mass_function,
    check_velocity_dispersion,
)

SMALL_SEED = 7  # the seed of the small_universe fixture and of the checks on it


@lru_cache(maxsize=12)
def small_universe_at(seed: int) -> Catalog:
    """A 100 Mpc/h box with every ingredient (halos from 10^11.5, galaxies from 10^9.5 Msun).

    Cached: the fixture and the checks share one build per seed; callers must not modify it.
    """
    return build_universe(box_size=100.0, seed=seed)


@lru_cache(maxsize=12)
def clustering_universe_at(seed: int) -> Catalog:
    """A 400 Mpc/h box of halos above 1e13 Msun/h (fixed-amplitude field, Angulo & Pontzen
    2016, keeps the cosmic variance of the correlation function small in a test box)."""
    return build_universe(box_size=400.0, seed=seed, min_mass=1e13, mstar_min=11.5,
                          fixed_amplitude=True)


@lru_cache(maxsize=24)
def evrard_universe_at(seed: int, velocity_bias: float = 1.0) -> Catalog:
    """A handful of massive halos (M200c > 10^14.2 Msun/h) with many satellites (10^8.5 Msun)
    and no unresolved velocity dispersion, for the satellite velocity dispersion."""
    return build_universe(box_size=300.0, seed=seed, min_mass=10**14.2, mstar_min=8.5,
                          unresolved_velocities=False, velocity_bias=velocity_bias)


@pytest.fixture(scope="module")
def small_universe():
    return small_universe_at(SMALL_SEED)


def with_tables(cat: Catalog, halos: dict | None = None, galaxies: dict | None = None,
                **meta) -> Catalog:
    """A copy of ``cat`` with some columns (and metadata such as box_size) replaced."""
    return replace(cat, halos={**cat.halos, **(halos or {})},
                   galaxies={**cat.galaxies, **(galaxies or {})}, **meta)


def in_mpc(cat: Catalog) -> Catalog:
    """Unit bug: positions and box in Mpc (numerically larger by 1/h), read as Mpc/h."""
    h = little_h(cat.cosmology)
    return with_tables(cat, {c: cat.halos[c] / h for c in "xyz"},
                       {c: cat.galaxies[c] / h for c in "xyz"}, box_size=cat.box_size / h)


def masses_in_msun(cat: Catalog) -> Catalog:
    """Unit bug: halo masses in Msun (numerically larger by 1/h), read as Msun/h."""
    return with_tables(cat, {"m200c": cat.halos["m200c"] / little_h(cat.cosmology)})


def velocities_times_h(cat: Catalog) -> Catalog:
    """Unit bug: every velocity multiplied by h (as if km/s were converted to h-units)."""
    h = little_h(cat.cosmology)
    v = ("vx", "vy", "vz")
    return with_tables(cat, {c: cat.halos[c] * h for c in v}, {c: cat.galaxies[c] * h for c in v})


def uniform_halos(cat: Catalog, seed: int) -> Catalog:
    """Broken placement: halos (and their galaxies) uniform in the box, no clustering."""
    rng = np.random.default_rng(seed)
    return with_tables(cat, {c: rng.uniform(0, cat.box_size, cat.n_halos) for c in "xyz"})


# ---------------------------------------------------------------------------------- checks
def universe_contents(seed: int, broken: str | None = None) -> dict[str, float]:
    """Galaxy number density ((Mpc/h)^-3, galaxies above 10^9.5 Msun) and satellite fraction
    of the 100 Mpc/h box of seed ``seed``. ``broken``: ``"mpc"`` positions and box in Mpc,
    ``"no_satellites"`` centrals only."""
    cat = small_universe_at(seed)
    if broken == "mpc":
        cat = in_mpc(cat)
    elif broken == "no_satellites":
        cen = cat.galaxies["is_central"]
        cat = replace(cat, galaxies={k: v[cen] for k, v in cat.galaxies.items()})
    return {"density": cat.n_galaxies / cat.box_size**3,
            "satellite_fraction": float(np.mean(~cat.galaxies["is_central"]))}


def mass_function_residuals(seed: int, broken: str | None = None) -> dict[str, float]:
    """chi^2 per degree of freedom and the largest |pull| of the halo counts in 0.1 dex bins
    against Tinker et al. 2008 (Poisson errors), 100 Mpc/h box of seed ``seed``. ``broken``:
    ``"thinned"`` drops every other halo below 10^12 Msun/h, ``"msun"`` masses in Msun."""
    cat = small_universe_at(seed)
    if broken == "thinned":
        m = cat.halos["m200c"]
        keep = (m > 1e12) | (np.arange(m.size) % 2 == 0)
        cat = replace(cat, halos={k: v[keep] for k, v in cat.halos.items()})
    elif broken == "msun":
        cat = masses_in_msun(cat)
    res = check_mass_function(cat)
    return {"chi2_per_dof": res["chi2"] / res["dof"], "max_abs_pull": res["max_abs_pull"],
            "dof": float(res["dof"])}


def linear_theory(seed: int, broken: str | None = None) -> dict[str, float]:
    """Halos above 1e13 Msun/h in the fixed-amplitude 400 Mpc/h box of seed ``seed``: the mean
    Tinker et al. 2010 bias b_eff, the fitted amplitude of their correlation function on
    10-40 Mpc/h over b_eff^2 xi_lin, and the rms halo velocity per axis (km/s, the three axes
    pooled: linear bulk flows plus the dispersion of modes finer than the grid). ``broken``:
    ``"uniform"`` halos placed uniformly, ``"mpc"`` positions and box in Mpc, ``"msun"``
    masses in Msun, ``"velocity_h"`` velocities multiplied by h."""
    cat = clustering_universe_at(seed)
    if broken == "uniform":
        cat = uniform_halos(cat, seed)
    elif broken == "mpc":
        cat = in_mpc(cat)
    elif broken == "msun":
        cat = masses_in_msun(cat)
    elif broken == "velocity_h":
        cat = velocities_times_h(cat)
    res = check_clustering(cat, thresholds_log10_msunh=(13.0,))
    smp = res["samples"]["13"]
    assert res["passed"] == (abs(smp["amplitude"] - 1) < res["tolerance"])
    v2 = np.mean([cat.halos[c] ** 2 for c in ("vx", "vy", "vz")])
    return {"b_eff": smp["b_eff"], "amplitude": smp["amplitude"], "vrms": float(np.sqrt(v2)),
            "n": float(smp["n"])}


def satellite_dispersion(seed: int, broken: str | None = None) -> dict[str, float]:
    """Fit of the satellite velocity dispersion against E(z) M200c (halos with >= 30
    satellites) compared with Evrard et al. 2008: ``norm_ratio`` (sigma15 / 1082.9 km/s),
    ``slope_diff`` (alpha - 0.3361), ``n_halos``, and ``bias_ratio``: the norm_ratio of the
    same universe built with velocity_bias 1.3, over that of the unbiased one, over 1.3.
    ``broken``: ``"biased"`` satellites with velocity_bias 1.3 taken as unbiased,
    ``"msun"`` masses in Msun, ``"velocity_h"`` velocities times h, ``"bias_ignored"`` the
    velocity_bias setting has no effect."""
    cat = evrard_universe_at(seed)
    biased = evrard_universe_at(seed, 1.3)
    if broken == "biased":
        cat = replace(biased, settings={**biased.settings, "velocity_bias": 1.0})
    elif broken == "msun":
        cat = masses_in_msun(cat)
    elif broken == "velocity_h":
        cat = velocities_times_h(cat)
    elif broken == "bias_ignored":
        biased = replace(cat, settings={**cat.settings, "velocity_bias": 1.3})
    res = check_velocity_dispersion(cat, min_satellites=30)
    rb = check_velocity_dispersion(biased, min_satellites=30)
    assert not rb["applicable"]
    return {"norm_ratio": res["norm_ratio"], "slope_diff": res["slope_diff"],
            "n_halos": float(res["n_halos"]),
            "bias_ratio": rb["norm_ratio"] / res["norm_ratio"] / 1.3}


STOCHASTIC = {
    "contents": StochasticCheck(
        n_seeds=10, run=universe_contents, seed=SMALL_SEED,
        bounds={"density": Bound(0.0172, 0.0227), "satellite_fraction": Bound(0.385, 0.505)},
        broken={b: partial(universe_contents, broken=b) for b in ("mpc", "no_satellites")}),
    "mass_function": StochasticCheck(
        n_seeds=10, run=mass_function_residuals, seed=SMALL_SEED,
        bounds={"chi2_per_dof": Bound(hi=3.0), "max_abs_pull": Bound(hi=5.5)},
        broken={b: partial(mass_function_residuals, broken=b) for b in ("thinned", "msun")}),
    "linear_theory": StochasticCheck(
        n_seeds=10, run=linear_theory, seed=0,
        bounds={"b_eff": Bound(1.58, 1.62), "amplitude": Bound(0.55, 1.5),
                "vrms": Bound(279, 300)},
        broken={b: partial(linear_theory, broken=b)
                for b in ("uniform", "mpc", "msun", "velocity_h")}),
    "velocity_dispersion": StochasticCheck(
        n_seeds=10, run=satellite_dispersion, seed=3,
        bounds={"norm_ratio": Bound(0.92, 1.01), "slope_diff": Bound(-0.05, 0.05),
                "n_halos": Bound(110, 280), "bias_ratio": Bound(0.99, 1.01)},
        broken={b: partial(satellite_dispersion, broken=b)
                for b in ("biased", "msun", "velocity_h", "bias_ignored")}),
}


# ----------------------------------------------------------------------------------- tests
def test_build_contents_and_settings(small_universe):
    """Structure of the small box; its galaxy density (a realistic spectroscopic density,
    ~2e-2 (Mpc/h)^-3 above 10^9.5 Msun) is bounded by the check ``contents``. (Its bulk
    flows vary too much between seeds in a 100 Mpc/h box, sd 14 %, to catch a unit bug: they
    are bounded in the fixed-amplitude box of the check ``linear_theory``.) Stellar masses
    are in Msun, h-free (the threshold's unit is tested in ``tests/test_selection.py``;
    before, 9.5 meant 10^9.84 Msun: density 0.0175, satellite fraction 0.38).

    Measured over seeds 0-9
    (``python tests/calibrate_bounds.py --only test_universe.contents``):
    density: mean 0.01994, sd 0.00054, range [0.01925, 0.02078];
      bound (0.0172, 0.0227), 5.0 sd from the mean.
    satellite_fraction: mean 0.4451, sd 0.012, range [0.4261, 0.4624];
      bound (0.385, 0.505), 4.8 sd from the mean.
    Broken variants caught (seeds 0-2): mpc 3/3, no_satellites 3/3.
    """
    cat = small_universe
    h, g = cat.halos, cat.galaxies
    assert cat.box_size == 100.0 and cat.redshift == pytest.approx(0.117) and cat.seed == 7
    assert h["m200c"].min() >= 10**11.5
    assert cat.settings["mstar_min"] == 9.5 and cat.settings["cosmology"]["H0"] == 67.77
    assert np.all(g["log10_mstar"] >= 9.5)
    # centrals: at most one per halo, at the halo centre with the halo velocity
    cen = g["is_central"]
    assert cen.any() and (~cen).any()
    assert np.unique(g["host_id"][cen]).size == cen.sum()
    idx = np.searchsorted(h["id"], g["host_id"][cen])
    np.testing.assert_allclose(g["x"][cen], h["x"][idx])
    np.testing.assert_allclose(g["vz"][cen], h["vz"][idx])
    # satellites inside R200c of their host (periodic distance)
    sat = ~cen
    idx = np.searchsorted(h["id"], g["host_id"][sat])
    d = np.abs(cat.galaxy_positions()[sat] - cat.halo_positions()[idx])
    d = np.minimum(d, cat.box_size - d)
    assert np.all(np.sqrt((d**2).sum(1)) <= h["r200c"][idx] * (1 + 1e-6))
    STOCHASTIC["contents"].check()


def test_same_seed_same_numbers_and_streaming_file(tmp_path, small_universe):
    again = build_universe(box_size=100.0, seed=7)
    np.testing.assert_array_equal(again.galaxies["vx"], small_universe.galaxies["vx"])
    other = build_universe(box_size=100.0, seed=8)
    assert other.n_halos != small_universe.n_halos or not np.array_equal(
        other.halos["x"], small_universe.halos["x"])
    info = write_universe(tmp_path / "u.h5", box_size=100.0, seed=7)
    back = read_catalog(info["path"])
    assert back.n_galaxies == small_universe.n_galaxies == info["n_galaxies"]
    np.testing.assert_array_equal(back.halos["m200c"], small_universe.halos["m200c"])
    assert back.settings["seed"] == 7 and back.settings["grid"] == small_universe.settings["grid"]


def test_mass_function_matches_tinker08(small_universe):
    """Halo counts in 0.1 dex bins follow Tinker et al. 2008 within Poisson errors (check
    ``mass_function``); a catalog missing every other halo below 1e12 Msun/h, or with masses
    in Msun, violates the bounds, and the library's own verdict flags the first.

    Measured over seeds 0-9
    (``python tests/calibrate_bounds.py --only test_universe.mass_function``):
    chi2_per_dof: mean 1.031, sd 0.36, range [0.717, 1.59];
      bound (-inf, 3), 5.4 sd from the mean.
    max_abs_pull: mean 2.409, sd 0.55, range [1.653, 3.206];
      bound (-inf, 5.5), 5.6 sd from the mean.
    Broken variants caught (seeds 0-2): thinned 3/3, msun 3/3.
    """
    res = check_mass_function(small_universe)
    assert res["dof"] >= 10
    # the library's verdict follows its rule (chi^2 probability > 1e-3, every |pull| < 5)
    assert res["passed"] == (res["p_value"] > 1e-3 and res["max_abs_pull"] < 5.0)
    STOCHASTIC["mass_function"].check()
    # a wrong mass function is caught: drop every other halo below 10^12
    cat = small_universe
    m = cat.halos["m200c"]
    keep = (m > 1e12) | (np.arange(m.size) % 2 == 0)
    thin = type(cat)({k: v[keep] for k, v in cat.halos.items()}, cat.galaxies, cat.box_size,
                     cat.redshift, cat.cosmology, cat.seed, cat.settings)
    assert not check_mass_function(thin)["passed"]


@pytest.mark.slow
def test_clustering_and_bulk_flows_follow_linear_theory():
    """Halos above 1e13 Msun/h: their correlation function on 10-40 Mpc/h is b_eff^2 xi_lin,
    and their velocities are bulk flows of a few hundred km/s (check ``linear_theory``). The
    box has a fixed-amplitude field (Angulo & Pontzen 2016), which keeps the cosmic variance
    of both small in a test box.

    Measured over seeds 0-9
    (``python tests/calibrate_bounds.py --only test_universe.linear_theory``):
    b_eff: mean 1.601, sd 0.0037, range [1.594, 1.607];
      bound (1.58, 1.62), 5.1 sd from the mean.
    amplitude: mean 1.019, sd 0.089, range [0.8543, 1.167];
      bound (0.55, 1.5), 5.3 sd from the mean.
    vrms: mean 289.5, sd 2.1, range [286.8, 293.5]; bound (279, 300), 5.0 sd from the mean.
    Broken variants caught (seeds 0-2): uniform 3/3, mpc 3/3, msun 3/3, velocity_h 3/3.
    """
    STOCHASTIC["linear_theory"].check()


@pytest.mark.slow
def test_velocity_dispersion_follows_evrard_and_options():
    """Satellite velocity dispersions follow Evrard et al. 2008 and velocity_bias scales them
    (check ``velocity_dispersion``).

    Measured over seeds 0-9
    (``python tests/calibrate_bounds.py --only test_universe.velocity_dispersion``):
    norm_ratio: mean 0.9671, sd 0.0036, range [0.9627, 0.9736];
      bound (0.92, 1.01), 12.0 sd from the mean.
    slope_diff: mean -0.003575, sd 0.0039, range [-0.007942, 0.004213];
      bound (-0.05, 0.05), 11.9 sd from the mean.
    n_halos: mean 195, sd 16, range [159, 211]; bound (110, 280), 5.3 sd from the mean.
    bias_ratio: mean 1, sd 2e-14, range [1, 1]; bound (0.99, 1.01): the biased and unbiased
      builds share every random draw, so the ratio is 1.3 up to rounding and the bound is a
      tolerance, not a spread.
    Broken variants caught (seeds 0-2): biased 3/3, msun 3/3, velocity_h 3/3, bias_ignored 3/3.
    """
    STOCHASTIC["velocity_dispersion"].check()
    assert check_velocity_dispersion(evrard_universe_at(3), min_satellites=30)["applicable"]


@pytest.mark.slow
def test_check_report_and_cli(tmp_path, capsys):
    out = tmp_path / "u.h5"
    rc = main(["universe", "-o", str(out), "--box", "60", "--min-mass", "1e12", "--seed", "2"])
    assert rc == 0 and out.exists()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["n_halos"] > 0
    rc = main(["check", str(out), "-o", str(tmp_path / "chk")])
    summary = json.loads((tmp_path / "chk" / "summary.json").read_text())
    assert {"hmf_chi2", "hmf_p_value", "n_halos_above_1e13.5"} <= set(summary)
    # the verdict is reported; the statistics behind it are bounded by the check mass_function
    assert isinstance(summary["hmf_passed"], bool) and summary["hmf_dof"] > 0
    for fig in ("mass_function.png", "velocity_dispersion.png", "halo_clustering.png"):
        assert (tmp_path / "chk" / fig).stat().st_size > 1000
    assert rc in (0, 1)
    assert rc == (0 if summary["passed"] else 1)


def test_bad_settings_write_nothing(tmp_path, capsys):
    out = tmp_path / "u.h5"
    assert main(["universe", "-o", str(out), "--box", "-5"]) == 2
    assert main(["universe", "-o", str(out), "--beta", "1.5"]) == 2
    assert "beta" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    with pytest.raises(InputError, match="unknown universe settings"):
        build_universe(box_size=50.0, bogus=1)


def test_check_catalog_in_memory(small_universe):
    res = check_catalog(small_universe, thresholds_log10_msunh=(12.0,))
    assert set(res) >= {"passed", "summary", "figures", "details"}
    assert res["summary"]["n_halos"] == small_universe.n_halos


def test_clustering_reference_is_the_catalogs_own_matter_xi_when_it_has_one():
    """N-body catalogs carry the particles' xi (settings["xi_matter"]): the halo bias is judged
    against it; halos clustered like b^2 xi_lin pass against xi_lin and, against a matter xi
    of half that, read twice the amplitude and fail."""
    cat = clustering_universe_at(1)
    base = check_clustering(cat, thresholds_log10_msunh=(13.0,))
    assert base["reference"] == "linear theory"
    r_edges = base["r_edges"]
    own = {"r_edges": list(r_edges), "xi": list(0.5 * base["samples"]["13"]["xi_model"]
                                              / base["samples"]["13"]["b_eff"] ** 2)}
    res = check_clustering(replace(cat, settings={**cat.settings, "xi_matter": own}),
                           thresholds_log10_msunh=(13.0,))
    smp = res["samples"]["13"]
    assert res["reference"] == "simulation matter"
    assert np.allclose(smp["xi_model"], smp["b_eff"] ** 2 * np.asarray(own["xi"]))
    assert smp["amplitude"] == pytest.approx(2 * base["samples"]["13"]["amplitude"], rel=1e-9)
    assert base["passed"] and not res["passed"]
    # bins that do not match the check's are not used
    other = {"r_edges": list(np.asarray(r_edges) * 1.1), "xi": own["xi"]}
    res = check_clustering(replace(cat, settings={**cat.settings, "xi_matter": other}),
                           thresholds_log10_msunh=(13.0,))
    assert res["reference"] == "linear theory"
