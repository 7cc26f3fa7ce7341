"""Physics kernels of the mock universe checked against reference versions.

Statistics of random draws (NFW radii, Jeans anisotropy of populated halos, mass-function
sampling) are :class:`StochasticCheck` s in ``STOCHASTIC``, with bounds set from their spread
over seeds 0-19 (``python tests/calibrate_bounds.py --only test_universe_physics --seeds 20``).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from scipy.integrate import quad

from dynmass.cosmology import MDPL2, little_h
from dynmass.testing import Bound, StochasticCheck
from dynmass.universe.field import cic_interpolate, make_linear_field, sample_cells
from dynmass.universe.galaxies import (
    jeans_sigma_r_dimensionless,
    nfw_mass,
    populate,
    sample_nfw_scaled_radius,
)
from dynmass.universe.massfunction import MassFunctionTable, r200c_comoving

RNG_SEED = 12345  # the seed of the ``rng`` fixture (tests/conftest.py)
NFW_CONC, NFW_N, NFW_Q = 6.0, 200_000, (0.5, 1.0, 3.0)


def nfw_fractions(seed: int, broken: str | None = None) -> dict[str, float]:
    """Draw 200,000 radii x = r / r_s from an NFW profile of concentration 6 truncated at
    x = 6 (generator seed ``seed``); for q = 0.5, 1, 3 the fraction below q as a binomial
    z-score ``z_q = (frac - p) / sqrt(p (1 - p) / n)``, ``p = m(q) / m(6)``. ``broken``:
    ``"r_over_r200c"`` returns r / R200c instead of r / r_s, ``"conc5"`` samples with
    concentration 5."""
    rng = np.random.default_rng(seed)
    conc = np.full(NFW_N, 5.0 if broken == "conc5" else NFW_CONC)
    x = sample_nfw_scaled_radius(conc, rng)
    if broken == "r_over_r200c":
        x = x / conc
    out = {"x_max": float(x.max())}
    for q in NFW_Q:
        p = nfw_mass(q) / nfw_mass(NFW_CONC)
        out[f"z_{q:g}"] = (np.mean(x < q) - p) / np.sqrt(p * (1 - p) / NFW_N)
    return out


def anisotropy(seed: int, broken: str | None = None) -> dict[str, float]:
    """Populate 40 halos of 1e15 Msun/h (galaxies above 1e9 Msun, generator seed ``seed`` for
    each beta) with beta = 0 and 0.5; per beta the ratio <v_t^2> / (2 <v_r^2>) of the
    satellites (1 - beta for a constant anisotropy) and the fewest satellites of the two.
    ``broken``: ``"beta_ignored"`` populates with beta = 0 always, ``"beta_sign"`` with
    -beta."""
    n = 40
    halos = {"id": np.arange(n), **{c: np.full(n, 50.0) for c in "xyz"},
             **{c: np.zeros(n) for c in ("vx", "vy", "vz")}, "m200c": np.full(n, 1e15)}
    halos["r200c"] = r200c_comoving(halos["m200c"], 0.117, MDPL2)
    out = {}
    n_sat = []
    for beta in (0.0, 0.5):
        used = {"beta_ignored": 0.0, "beta_sign": -beta}.get(broken, beta)
        g = populate(halos, 100.0, 0.117, MDPL2, np.random.default_rng(seed), mstar_min=9.0,
                     beta=used)
        sat = ~g["is_central"]
        d = np.column_stack([g[c][sat] - 50.0 for c in "xyz"])
        v = np.column_stack([g[c][sat] for c in ("vx", "vy", "vz")])
        rhat = d / np.linalg.norm(d, axis=1)[:, None]
        vr = np.sum(v * rhat, 1)
        vt2 = np.sum(v**2, 1) - vr**2
        out[f"ratio_beta{beta:g}"] = np.mean(vt2) / (2 * np.mean(vr**2))
        n_sat.append(int(sat.sum()))
    out["n_sat_min"] = float(min(n_sat))
    return out


MASS_N, MASS_SPLIT = 50_000, 10**12.5


def mass_sampling(seed: int, broken: str | None = None) -> dict[str, float]:
    """Draw 50,000 masses from the mass function between 1e12 and 1e13 Msun/h (generator seed
    ``seed``); the fraction below 10^12.5 as a binomial z-score against the tabulated
    fraction. ``broken``: ``"uniform_logm"`` draws log10 M uniformly, ``"msun"`` returns
    masses in Msun (numerically larger by 1/h)."""
    rng = np.random.default_rng(seed)
    table = _mass_table()
    if broken == "uniform_logm":
        m = 10 ** rng.uniform(12.0, 13.0, MASS_N)
    else:
        m = table.sample(MASS_N, 1e12, 1e13, rng)
    if broken == "msun":
        m = m / little_h(MDPL2)
    p = float(table.n_between(1e12, MASS_SPLIT) / table.n_between(1e12, 1e13))
    return {"z_below_12.5": (np.mean(m < MASS_SPLIT) - p) / np.sqrt(p * (1 - p) / MASS_N)}


_TABLES: dict[str, MassFunctionTable] = {}


def _mass_table() -> MassFunctionTable:
    if "t" not in _TABLES:
        _TABLES["t"] = MassFunctionTable(0.117, MDPL2, 1e12)
    return _TABLES["t"]


STOCHASTIC = {
    "nfw_radii": StochasticCheck(
        run=nfw_fractions, seed=RNG_SEED,
        bounds={f"z_{q:g}": Bound(-6.0, 6.0) for q in NFW_Q},
        broken={b: partial(nfw_fractions, broken=b) for b in ("r_over_r200c", "conc5")}),
    "anisotropy": StochasticCheck(
        run=anisotropy, seed=1,
        bounds={"ratio_beta0": Bound(0.93, 1.07), "ratio_beta0.5": Bound(0.46, 0.54),
                "n_sat_min": Bound(30800, 32700)},
        broken={b: partial(anisotropy, broken=b) for b in ("beta_ignored", "beta_sign")}),
    "mass_sampling": StochasticCheck(
        run=mass_sampling, seed=RNG_SEED,
        bounds={"z_below_12.5": Bound(-5.0, 5.0)},
        broken={b: partial(mass_sampling, broken=b) for b in ("uniform_logm", "msun")}),
}


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


def test_nfw_radii_follow_truncated_profile():
    """Radii drawn from a truncated NFW profile: the fractions below r_s / 2, r_s and 3 r_s
    follow the enclosed mass within binomial errors (check ``nfw_radii``, z-scores).

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_universe_physics.nfw_radii --seeds 20``):
    z_0.5: mean -0.2214, sd 1, range [-2.114, 1.68]; bound (-6, 6), 5.6 sd from the mean.
    z_1: mean -0.01888, sd 1.2, range [-2.663, 2.663]; bound (-6, 6), 4.9 sd from the mean.
    z_3: mean 0.07058, sd 1.2, range [-1.572, 2.611]; bound (-6, 6), 5.1 sd from the mean.
    Broken variants caught (seeds 0-2): r_over_r200c 3/3, conc5 3/3.
    """
    stats = STOCHASTIC["nfw_radii"].check()
    assert stats["x_max"] <= NFW_CONC  # truncation is exact


def test_anisotropy_and_velocity_bias_in_populated_halos():
    """Satellites of populated halos have <v_t^2> / (2 <v_r^2>) = 1 - beta (check
    ``anisotropy``).

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_universe_physics.anisotropy --seeds 20``):
    ratio_beta0: mean 1.003, sd 0.0098, range [0.9891, 1.022];
      bound (0.93, 1.07), 6.8 sd from the mean.
    ratio_beta0.5: mean 0.5018, sd 0.0051, range [0.4955, 0.5116];
      bound (0.46, 0.54), 7.5 sd from the mean.
    n_sat_min: mean 3.172e+04, sd 1.8e+02, range [3.132e+04, 3.204e+04];
      bound (30800, 32700), 5.1 sd from the mean (above 10^9 Msun, h-free; it was 2.376e+04
      when the threshold was in halotools' h = 1 units, 10^9.34 Msun).
    Broken variants caught (seeds 0-2): beta_ignored 3/3, beta_sign 3/3.
    """
    STOCHASTIC["anisotropy"].check()


def test_mass_sampling_follows_the_table():
    """Masses drawn from the mass function fall below 10^12.5 Msun/h as often as the table
    says, within binomial errors (check ``mass_sampling``, z-score).

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_universe_physics.mass_sampling --seeds 20``):
    z_below_12.5: mean 0.05156, sd 0.94, range [-1.622, 1.845];
      bound (-5, 5), 5.3 sd from the mean.
    Broken variants caught (seeds 0-2): uniform_logm 3/3, msun 3/3.
    """
    STOCHASTIC["mass_sampling"].check()


def test_field_helpers(rng):
    field = make_linear_field(16, 100.0, 0.117, MDPL2, rng)
    grid = rng.normal(size=(16, 16, 16))
    nodes = np.array([[0.0, 0.0, 0.0], [6.25, 12.5, 93.75]])
    np.testing.assert_allclose(cic_interpolate(grid, nodes, 100.0), [grid[0, 0, 0], grid[1, 2, 15]])
    mid = np.array([[3.125, 0.0, 0.0]])
    assert cic_interpolate(grid, mid, 100.0)[0] == pytest.approx(
        0.5 * (grid[0, 0, 0] + grid[1, 0, 0]))
    dens = np.zeros((16, 16, 16), np.float32)
    dens[3, 4, 5] = 1.0
    pos = sample_cells(dens, 100, 100.0, rng)
    assert pos.shape == (100, 3)
    np.testing.assert_array_less(np.abs(pos - np.array([3, 4, 5]) * 6.25), 3.125 + 1e-9)
    v = field.velocity_grids()
    assert len(v) == 3 and all(c.shape == (16, 16, 16) for c in v)
    assert all(np.isfinite(c).all() for c in v)
