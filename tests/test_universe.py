"""The embedded mock universe: build, reproducibility, file round trip, validation relations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dynmass import InputError, read_catalog
from dynmass.cli import main
from dynmass.universe import build_universe, check_catalog, write_universe
from dynmass.universe.validate import (
    check_clustering,
    check_mass_function,
    check_velocity_dispersion,
)


@pytest.fixture(scope="module")
def small_universe():
    """A 100 Mpc/h box with every ingredient (halos from 10^11.5, galaxies from 10^9.5)."""
    return build_universe(box_size=100.0, seed=7)


def test_build_contents_and_settings(small_universe):
    cat = small_universe
    h, g = cat.halos, cat.galaxies
    assert cat.box_size == 100.0 and cat.redshift == pytest.approx(0.117) and cat.seed == 7
    assert h["m200c"].min() >= 10**11.5
    assert cat.settings["mstar_min"] == 9.5 and cat.settings["cosmology"]["H0"] == 67.77
    # realistic spectroscopic density: ~1e-2 (Mpc/h)^-3 above 10^9.5 Msun
    density = cat.n_galaxies / cat.box_size**3
    assert 5e-3 < density < 3e-2
    assert np.all(g["log10_mstar"] >= 9.5)
    # centrals: at most one per halo, at the halo centre with the halo velocity
    cen = g["is_central"]
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
    # bulk flows: halo velocities of a few hundred km/s, correlated between neighbours
    vrms = np.sqrt(np.mean(h["vx"] ** 2))
    assert 150 < vrms < 600


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
    res = check_mass_function(small_universe)
    assert res["dof"] >= 10
    assert res["passed"], res
    # a wrong mass function is caught: drop every other halo below 10^12
    cat = small_universe
    m = cat.halos["m200c"]
    keep = (m > 1e12) | (np.arange(m.size) % 2 == 0)
    thin = type(cat)({k: v[keep] for k, v in cat.halos.items()}, cat.galaxies, cat.box_size,
                     cat.redshift, cat.cosmology, cat.seed, cat.settings)
    assert not check_mass_function(thin)["passed"]


def test_clustering_follows_linear_bias():
    # fixed-amplitude field (Angulo & Pontzen 2016) keeps cosmic variance small in a test box
    cat = build_universe(box_size=400.0, seed=0, min_mass=1e13, mstar_min=11.5,
                         fixed_amplitude=True)
    res = check_clustering(cat, thresholds_log10_msunh=(13.0,))
    smp = res["samples"]["13"]
    assert 1.3 < smp["b_eff"] < 2.0
    assert abs(smp["amplitude"] - 1) < 0.2, smp["ratio"]
    assert res["passed"]


def test_velocity_dispersion_follows_evrard_and_options():
    # a handful of massive halos with many satellites (threshold 10^8.5 Msun)
    cat = build_universe(box_size=300.0, seed=3, min_mass=10**14.2, mstar_min=8.5,
                         unresolved_velocities=False)
    res = check_velocity_dispersion(cat, min_satellites=30)
    assert res["n_halos"] >= 10
    assert abs(res["norm_ratio"] - 1) < 0.10 and abs(res["slope_diff"]) < 0.03, res
    assert res["passed"] and res["applicable"]
    biased = build_universe(box_size=300.0, seed=3, min_mass=10**14.2, mstar_min=8.5,
                            unresolved_velocities=False, velocity_bias=1.3)
    rb = check_velocity_dispersion(biased, min_satellites=30)
    assert not rb["applicable"]
    assert rb["norm_ratio"] / res["norm_ratio"] == pytest.approx(1.3, rel=0.05)


def test_check_report_and_cli(tmp_path, capsys):
    out = tmp_path / "u.h5"
    rc = main(["universe", "-o", str(out), "--box", "60", "--min-mass", "1e12", "--seed", "2"])
    assert rc == 0 and out.exists()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["n_halos"] > 0
    rc = main(["check", str(out), "-o", str(tmp_path / "chk")])
    summary = json.loads((tmp_path / "chk" / "summary.json").read_text())
    assert {"hmf_chi2", "hmf_p_value", "n_halos_above_1e13.5"} <= set(summary)
    assert summary["hmf_passed"]
    for fig in ("mass_function.png", "velocity_dispersion.png", "halo_clustering.png"):
        assert (tmp_path / "chk" / fig).stat().st_size > 1000
    assert rc in (0, 1)


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
