"""Physics kernels of the mock universe checked against reference versions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from dynmass.cosmology import MDPL2
from dynmass.universe.field import cic_interpolate, make_linear_field, sample_cells
from dynmass.universe.galaxies import (
    jeans_sigma_r_dimensionless,
    nfw_mass,
    populate,
    sample_nfw_scaled_radius,
)
from dynmass.universe.massfunction import MassFunctionTable, r200c_comoving


def test_jeans_isotropic_matches_halotools():
    from halotools.empirical_models import NFWPhaseSpace

    ref = NFWPhaseSpace()
    scaled = np.linspace(0.02, 1.0, 25)
    for conc in (3.0, 7.0, 12.0):
        mine = jeans_sigma_r_dimensionless(conc * scaled, conc, beta=0.0)
        theirs = ref.dimensionless_radial_velocity_dispersion(scaled, conc)
        np.testing.assert_allclose(mine, theirs, rtol=3e-3)


@pytest.mark.parametrize("beta", [-0.5, 0.3, 0.6])
def test_jeans_anisotropic_matches_direct_integral(beta):
    conc = 5.0
    for x in (0.05, 0.7, 3.0, 5.0):
        integral = quad(lambda y: y ** (2 * beta - 3) * nfw_mass(y) / (1 + y) ** 2, x, np.inf,
                        limit=200)[0]
        ref = np.sqrt(conc / nfw_mass(conc) * x ** (1 - 2 * beta) * (1 + x) ** 2 * integral)
        assert jeans_sigma_r_dimensionless(x, conc, beta) == pytest.approx(ref, rel=3e-3)


def test_nfw_radii_follow_truncated_profile(rng):
    conc = np.full(200_000, 6.0)
    x = sample_nfw_scaled_radius(conc, rng)
    assert x.max() <= 6.0
    for q in (0.5, 1.0, 3.0):
        assert np.mean(x < q) == pytest.approx(nfw_mass(q) / nfw_mass(6.0), abs=0.005)


def test_anisotropy_and_velocity_bias_in_populated_halos(rng):
    n = 40
    halos = {"id": np.arange(n), **{c: np.full(n, 50.0) for c in "xyz"},
             **{c: np.zeros(n) for c in ("vx", "vy", "vz")}, "m200c": np.full(n, 1e15)}
    halos["r200c"] = r200c_comoving(halos["m200c"], 0.117, MDPL2)
    out = {}
    for beta in (0.0, 0.5):
        g = populate(halos, 100.0, 0.117, MDPL2, np.random.default_rng(1), mstar_min=9.0, beta=beta)
        sat = ~g["is_central"]
        d = np.column_stack([g[c][sat] - 50.0 for c in "xyz"])
        v = np.column_stack([g[c][sat] for c in ("vx", "vy", "vz")])
        rhat = d / np.linalg.norm(d, axis=1)[:, None]
        vr = np.sum(v * rhat, 1)
        vt2 = np.sum(v**2, 1) - vr**2
        out[beta] = np.mean(vt2) / (2 * np.mean(vr**2))
        assert sat.sum() > 3000
    assert out[0.0] == pytest.approx(1.0, abs=0.05)
    assert out[0.5] == pytest.approx(0.5, abs=0.05)


def test_mass_sampling_and_field_helpers(rng):
    table = MassFunctionTable(0.117, MDPL2, 1e12)
    m = table.sample(50_000, 1e12, 1e13, rng)
    frac = np.mean(m < 10**12.5)
    expect = table.n_between(1e12, 10**12.5) / table.n_between(1e12, 1e13)
    assert frac == pytest.approx(float(expect), abs=0.01)
    field = make_linear_field(16, 100.0, 0.117, MDPL2, rng)
    grid = rng.normal(size=(16, 16, 16))
    nodes = np.array([[0.0, 0.0, 0.0], [6.25, 12.5, 93.75]])
    np.testing.assert_allclose(cic_interpolate(grid, nodes, 100.0), [grid[0, 0, 0], grid[1, 2, 15]])
    mid = np.array([[3.125, 0.0, 0.0]])
    assert cic_interpolate(grid, mid, 100.0)[0] == pytest.approx(0.5 * (grid[0, 0, 0] + grid[1, 0, 0]))
    dens = np.zeros((16, 16, 16), np.float32)
    dens[3, 4, 5] = 1.0
    pos = sample_cells(dens, 100, 100.0, rng)
    np.testing.assert_array_less(np.abs(pos - np.array([3, 4, 5]) * 6.25), 3.125 + 1e-9)
    v = field.velocity_grids()
    assert all(np.isfinite(c).all() for c in v)
