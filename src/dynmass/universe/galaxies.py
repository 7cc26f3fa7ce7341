"""Galaxies in halos: a stellar-mass-threshold halo occupation model, NFW satellites and
Jeans-equation velocities.

This is the default occupation model (``occupation="leauthaud11"``) of the mock universe; the
luminosity-threshold model of Zheng et al. 2007 (``occupation="zheng07"``) is in
:mod:`dynmass.universe.occupation`. Both place their galaxies with :func:`place_galaxies`.

Ingredients and references
--------------------------
* Centrals: stellar mass from the Behroozi et al. 2010 (ApJ 717, 379) stellar-to-halo-mass
  relation (halotools ``Behroozi10SmHm``) with 0.2 dex log-normal scatter; a central exists when
  its stellar mass is above the threshold. This is exactly the central occupation of Leauthaud
  et al. 2011 (ApJ 738, 45; halotools ``Leauthaud11Cens``). halotools works in h = 1 units
  (halo masses Msun/h, stellar masses Msun/h^2); stellar masses and the threshold are in Msun
  here, converted with the cosmology's h (:mod:`dynmass.stellar_mass`:
  log10 M* = log10 M*_{h=1} - 2 log10 h).
* Satellites: Poisson numbers with the mean of Leauthaud et al. 2011 (halotools
  ``Leauthaud11Sats``) for the threshold; each satellite's stellar mass is drawn from the same
  model's cumulative satellite count N_sat(>M*|M_h) (inverse transform over thresholds).
  The model was calibrated on M_vir at z ~ 0.2-1 (COSMOS); it is applied to M200c here, a
  difference of ~ 0.05-0.1 dex in halo mass at these masses.
* Satellite positions: NFW profile (Navarro, Frenk & White 1997) truncated at R200c, drawn by
  inverse transform with the Lambert W function; concentration from the Diemer & Joyce 2019
  (ApJ 871, 168) c200c(M) relation (colossus ``diemer19``) with log-normal scatter (default
  0.16 dex; Diemer & Kravtsov 2015, ApJ 799, 108).
* Satellite velocities: host velocity plus a Gaussian draw with the radial dispersion of the
  spherical Jeans equation in the (untruncated) NFW potential with constant anisotropy beta
  (Binney & Tremaine 2008, eq. 4.216; Lokas & Mamon 2001, MNRAS 321, 155); tangential
  dispersion sqrt(1 - beta) sigma_r per component; all dispersions multiplied by the velocity
  bias. For beta = 0 this is halotools' ``NFWPhaseSpace`` dispersion (tested).
* Centrals sit at the halo centre with the halo velocity.

Examples
--------
Populate two halos of 10^14 and 10^15 Msun/h (centrals at the centres; satellites within
R200c of their host):

>>> import numpy as np
>>> from dynmass.cosmology import MDPL2
>>> from dynmass.universe.galaxies import populate
>>> from dynmass.universe.massfunction import r200c_comoving
>>> m = np.array([1e14, 1e15])
>>> halos = {"id": np.array([0, 1]), "x": np.array([10.0, 60.0]), "y": np.full(2, 50.0),
...          "z": np.full(2, 50.0), "vx": np.zeros(2), "vy": np.zeros(2), "vz": np.zeros(2),
...          "m200c": m, "r200c": r200c_comoving(m, 0.117, MDPL2)}
>>> g = populate(halos, 100.0, 0.117, MDPL2, np.random.default_rng(0))
>>> int(g["is_central"].sum()), bool(np.all(g["r_host"] <= halos["r200c"][1]))
(2, True)
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.special import lambertw

from dynmass.cosmology import colossus_cosmology
from dynmass.errors import InputError
from dynmass.stellar_mass import h1_from_msun, msun_from_h1
from dynmass.universe.massfunction import MDEF

if TYPE_CHECKING:
    from dynmass.universe.outskirts import OutskirtsModel

#: Newton's constant in km^2 s^-2 Mpc / Msun (so G M/R works with Msun/h and Mpc/h).
G_KMS_MPC_MSUN = 4.300917e-9

#: Top of the tabulated satellite stellar-mass thresholds, log10 Msun/h^2 (halotools' h = 1).
_LOG_MSTAR_TOP = 12.6


def nfw_mass(x: np.ndarray) -> np.ndarray:
    """Dimensionless NFW enclosed mass m(x) = ln(1 + x) - x / (1 + x), x = r / r_s."""
    x = np.asarray(x, dtype=float)
    return np.log1p(x) - x / (1.0 + x)


def sample_nfw_scaled_radius(conc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw x = r / r_s from an NFW profile truncated at x = c (one draw per entry of ``conc``).

    Inverse transform: m(x) = u m(c) is solved exactly by
    x = -1 / W0(-exp(-q - 1)) - 1 with q = u m(c) (W0: principal Lambert W branch).

    Parameters
    ----------
    conc : array_like
        Concentrations c = R200c / r_s.
    rng : numpy.random.Generator
        Random generator.

    Returns
    -------
    numpy.ndarray
        Scaled radii in (0, c].
    """
    conc = np.asarray(conc, dtype=float)
    q = rng.uniform(size=conc.shape) * nfw_mass(conc)
    w = lambertw(-np.exp(-q - 1.0), 0).real
    return np.clip(-1.0 / w - 1.0, 1e-8, conc)


@lru_cache(maxsize=16)
def _jeans_table(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """ln x grid and ln J_beta(x), J = x^(1-2b) (1+x)^2 int_x^inf y^(2b-3) m(y)/(1+y)^2 dy."""
    ln_y = np.linspace(np.log(1e-5), np.log(1e6), 12001)
    y = np.exp(ln_y)
    integrand = y ** (2 * beta - 3) * nfw_mass(y) / (1 + y) ** 2 * y  # d/dln y
    cum = cumulative_trapezoid(integrand, ln_y, initial=0.0)
    tail = cum[-1] - cum  # int_x^{y_max}; beyond 1e6 the integrand ~ y^(2b-4) ln y is negligible
    j = y ** (1 - 2 * beta) * (1 + y) ** 2 * tail
    keep = (y >= 1e-4) & (y <= 1e3)
    return ln_y[keep], np.log(j[keep])


def jeans_sigma_r_dimensionless(x: np.ndarray, conc: np.ndarray, beta: float = 0.0) -> np.ndarray:
    """Radial velocity dispersion of NFW tracers, in units of V200c, for constant anisotropy.

    sigma_r^2 / V200^2 = c / m(c) * x^(1-2 beta) (1+x)^2 * int_x^inf y^(2 beta-3) m(y)/(1+y)^2 dy

    (spherical Jeans equation, Binney & Tremaine 2008 eq. 4.216, tracer density = NFW mass
    density, integrated to infinity in the untruncated NFW potential).

    Parameters
    ----------
    x : array_like
        Scaled radius r / r_s (1e-4 <= x <= 1e3).
    conc : array_like
        Concentration c = R200c / r_s (broadcast with ``x``).
    beta : float
        Constant velocity anisotropy 1 - sigma_t^2 / sigma_r^2 (< 1).

    Returns
    -------
    numpy.ndarray
        sigma_r / V200c.
    """
    beta = float(beta)
    if not (np.isfinite(beta) and -5.0 <= beta < 1.0):
        raise InputError(f"anisotropy beta={beta} must lie in [-5, 1)", column="beta")
    ln_x, ln_j = _jeans_table(round(beta, 12))
    x = np.clip(np.asarray(x, dtype=float), 1e-4, 1e3)
    j = np.exp(np.interp(np.log(x), ln_x, ln_j))
    conc = np.asarray(conc, dtype=float)
    return np.sqrt(conc / nfw_mass(conc) * j)


def concentration_200c(m200c_msunh: np.ndarray, redshift: float, cosmo: dict[str, Any]) -> np.ndarray:
    """Mean c200c(M) of Diemer & Joyce 2019 (colossus ``diemer19``), interpolated in log M.

    Valid (as calibrated) for roughly 10^11-10^15.5 Msun/h at z < 6.

    Parameters
    ----------
    m200c_msunh : array_like
        Halo masses M200c, Msun/h (> 0).
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    numpy.ndarray
        Concentrations c200c = R200c / r_s, one per mass (empty for no masses).
    """
    from colossus.halo import concentration

    m = np.asarray(m200c_msunh, dtype=float)
    if m.size == 0:
        return np.zeros(0)
    lo, hi = np.log10(m.min()) - 0.01, np.log10(m.max()) + 0.01
    grid = np.linspace(lo, hi, max(2, min(200, int((hi - lo) / 0.02) + 2)))
    with colossus_cosmology(cosmo):
        c = concentration.concentration(10**grid, MDEF, redshift, model="diemer19")
    return np.interp(np.log10(m), grid, np.asarray(c, dtype=float))


#: log10 M200c grid [Msun/h] on which the occupation model is tabulated.
_LOG_MH_GRID = np.round(np.arange(9.0, 16.5 + 1e-9, 0.01), 2)


@lru_cache(maxsize=8)
def _smhm_mean_log_mstar(redshift: float) -> np.ndarray:
    """Mean log10 M* of Behroozi et al. 2010 (halotools) on :data:`_LOG_MH_GRID`, in
    halotools' h = 1 units (log10 Msun/h^2; subtract 2 log10 h for Msun)."""
    from halotools.empirical_models import Behroozi10SmHm

    model = Behroozi10SmHm(redshift=redshift)
    return np.log10(model.mean_stellar_mass(prim_haloprop=10**_LOG_MH_GRID))


@lru_cache(maxsize=8)
def _satellite_table(mstar_min_h1: float, redshift: float) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds [log10 Msun/h^2, halotools' h = 1 units] from ``mstar_min_h1`` and
    <N_sat(> threshold) | M_h> of Leauthaud et al. 2011 (halotools) on :data:`_LOG_MH_GRID`,
    shape (n_mh, n_thr)."""
    from halotools.empirical_models import Leauthaud11Sats

    thresholds = np.arange(mstar_min_h1, max(_LOG_MSTAR_TOP, mstar_min_h1 + 0.5), 0.05)
    table = np.empty((_LOG_MH_GRID.size, thresholds.size))
    for j, t in enumerate(thresholds):
        model = Leauthaud11Sats(threshold=float(t), redshift=redshift)
        table[:, j] = model.mean_occupation(prim_haloprop=10**_LOG_MH_GRID)
    # enforce monotonic decrease with threshold (numerical noise only)
    return thresholds, np.minimum.accumulate(table, axis=1)


#: Columns :func:`place_galaxies` returns (every occupation model's galaxies have them).
GALAXY_PLACEMENT_COLUMNS = ("x", "y", "z", "vx", "vy", "vz", "host_id", "is_central", "r_host")


def populate(
    halos: dict[str, np.ndarray],
    box_size: float,
    redshift: float,
    cosmo: dict[str, Any],
    rng: np.random.Generator,
    *,
    mstar_min: float = 9.5,
    beta: float = 0.0,
    velocity_bias: float = 1.0,
    conc_scatter_dex: float = 0.16,
    smhm_scatter_dex: float = 0.2,
    concentration_table: tuple[np.ndarray, np.ndarray] | None = None,
    outskirts: OutskirtsModel | None = None,
) -> dict[str, np.ndarray]:
    """Put galaxies in halos: centrals and Poisson satellites above a stellar-mass threshold.

    The occupation of Leauthaud et al. 2011 with the Behroozi et al. 2010 stellar-to-halo-mass
    relation (module docstring); galaxies are placed by :func:`place_galaxies`. The other
    occupation model of the mock universe is
    :func:`dynmass.universe.occupation.populate_zheng07`.

    Random draws, in order: one central stellar mass per halo, the satellite numbers, one
    uniform per satellite (its stellar mass), then those of :func:`place_galaxies`.

    Parameters
    ----------
    halos : dict
        Halo table with ``id``, ``x``, ``y``, ``z`` (comoving Mpc/h), ``vx``, ``vy``, ``vz``
        (km/s), ``m200c`` (Msun/h), ``r200c`` (comoving Mpc/h).
    box_size : float
        Periodic box side, comoving Mpc/h (satellite positions wrap).
    redshift : float
        Redshift (SMHM relation, concentrations, physical R200c for V200c).
    cosmo : dict
        Cosmological parameters.
    rng : numpy.random.Generator
        Random generator.
    mstar_min : float
        Stellar-mass threshold, log10 Msun (h-free; halotools' h = 1 threshold is
        ``mstar_min + 2 log10 h``).
    beta : float
        Constant velocity anisotropy of satellites (0 isotropic, > 0 radial).
    velocity_bias : float
        Ratio of satellite to dark-matter velocity dispersion.
    conc_scatter_dex : float
        Log-normal scatter of concentration at fixed mass, dex.
    smhm_scatter_dex : float
        Scatter of central stellar mass at fixed halo mass, dex.
    concentration_table : (log10 M grid, c200c grid), optional
        Precomputed :func:`concentration_200c` table to interpolate (saves colossus calls).
    outskirts : OutskirtsModel, optional
        The ``outskirts`` halo model (:mod:`dynmass.universe.outskirts`): satellites placed by
        :func:`~dynmass.universe.outskirts.place_outskirts` (triaxial halos, satellites added
        beyond R200c with stellar masses drawn like the others, one more uniform each);
        ``None`` (default): :func:`place_galaxies`.

    Returns
    -------
    dict of numpy.ndarray
        Galaxy columns ``x, y, z, vx, vy, vz, host_id, is_central, log10_mstar`` (log10 Msun,
        h-free, see :mod:`dynmass.stellar_mass`) and ``r_host`` (3D distance to the host
        centre, comoving Mpc/h).
    """
    if not (np.isfinite(velocity_bias) and velocity_bias > 0):
        raise InputError(f"velocity bias {velocity_bias} must be positive", column="velocity_bias")
    m = np.asarray(halos["m200c"], dtype=float)
    n_h = m.size
    if n_h == 0:
        return _empty_galaxies()
    log_mh = np.log10(m)
    # ---- centrals
    grid = _LOG_MH_GRID
    if log_mh.min() < grid[0] or log_mh.max() > grid[-1]:
        raise InputError(
            f"halo masses must lie in 10^{grid[0]}-10^{grid[-1]} Msun/h to be populated",
            column="m200c",
        )
    # halotools' h = 1 stellar masses (Msun/h^2) -> Msun with this cosmology's h
    mean_cen = msun_from_h1(np.interp(log_mh, grid, _smhm_mean_log_mstar(float(redshift))),
                            cosmo)
    log_ms_cen = mean_cen + smhm_scatter_dex * rng.standard_normal(n_h)
    has_cen = log_ms_cen >= mstar_min
    # ---- satellites: numbers and stellar masses (the table's thresholds in h = 1 units)
    thresholds, table = _satellite_table(round(float(h1_from_msun(float(mstar_min), cosmo)), 6),
                                         float(redshift))
    row = np.clip(np.rint((log_mh - grid[0]) / 0.01).astype(np.int64), 0, grid.size - 1)
    n_mean = np.interp(log_mh, grid, table[:, 0])
    n_sat = rng.poisson(n_mean)
    host_idx = np.repeat(np.arange(n_h), n_sat)
    u = rng.uniform(size=host_idx.size)
    log_ms_sat = _satellite_log_mstar(u, row[host_idx], table, thresholds, mstar_min, cosmo)
    # ---- satellite phase space, positions and velocities of every galaxy
    if outskirts is None:
        placed = place_galaxies(
            halos, has_cen, host_idx, box_size, redshift, cosmo, rng, beta=beta,
            velocity_bias=velocity_bias, conc_scatter_dex=conc_scatter_dex,
            concentration_table=concentration_table,
        )
    else:
        from dynmass.universe.outskirts import place_outskirts

        placed = place_outskirts(halos, has_cen, host_idx, n_mean, box_size, redshift, rng,
                                 outskirts, beta=beta, velocity_bias=velocity_bias,
                                 conc_scatter_dex=conc_scatter_dex)
        extra = placed.pop("extra_rows")
        log_ms_sat = np.concatenate([log_ms_sat, _satellite_log_mstar(
            rng.uniform(size=extra.size), row[extra], table, thresholds, mstar_min, cosmo)])
    out = {c: placed[c] for c in GALAXY_PLACEMENT_COLUMNS if c != "r_host"}
    out["log10_mstar"] = np.concatenate(
        [log_ms_cen[has_cen], log_ms_sat]
    ).astype(np.float32)
    out["r_host"] = placed["r_host"]
    return out


def _satellite_log_mstar(u: np.ndarray, sat_rows: np.ndarray, table: np.ndarray,
                         thresholds: np.ndarray, mstar_min: float, cosmo: dict[str, Any]
                         ) -> np.ndarray:
    """Satellite stellar masses [log10 Msun] by inverting N(>t)/N(>t_min) = u per mass row."""
    log_ms_sat = np.empty(u.size)
    for r in np.unique(sat_rows):
        sel = sat_rows == r
        frac = table[r] / table[r, 0] if table[r, 0] > 0 else np.zeros_like(table[r])
        # frac decreases from 1 at mstar_min; invert N(>t)/N(>t_min) = u
        log_ms_sat[sel] = np.interp(u[sel], frac[::-1], thresholds[::-1])
    # back to Msun (>= mstar_min also after rounding the table's first threshold)
    return np.maximum(msun_from_h1(log_ms_sat, cosmo), mstar_min)


def place_galaxies(
    halos: dict[str, np.ndarray],
    has_central: np.ndarray,
    host_idx: np.ndarray,
    box_size: float,
    redshift: float,
    cosmo: dict[str, Any],
    rng: np.random.Generator,
    *,
    beta: float = 0.0,
    velocity_bias: float = 1.0,
    conc_scatter_dex: float = 0.16,
    concentration_table: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Phase-space coordinates of centrals and satellites, whatever the occupation model.

    Centrals sit at the centre of their halo with its velocity. Satellites are drawn from an
    NFW profile truncated at R200c (concentration from :func:`concentration_200c` with
    log-normal scatter, Diemer & Joyce 2019) with isotropic directions, and move with the host
    velocity plus Gaussian velocities of the Jeans dispersion
    (:func:`jeans_sigma_r_dimensionless`, constant anisotropy ``beta``) times
    ``velocity_bias``. Every occupation model (:func:`populate`,
    :func:`dynmass.universe.occupation.populate_zheng07`) places its galaxies here.

    Random draws, in order: one concentration scatter per halo, then per satellite the NFW
    radius, cos(theta), phi and the three velocity components.

    Parameters
    ----------
    halos : dict
        Halo table with ``id``, ``x``, ``y``, ``z`` (comoving Mpc/h), ``vx``, ``vy``, ``vz``
        (km/s), ``m200c`` (Msun/h), ``r200c`` (comoving Mpc/h).
    has_central : numpy.ndarray of bool
        One entry per halo: whether it hosts a central galaxy.
    host_idx : numpy.ndarray of int
        Row in ``halos`` of each satellite's host (one entry per satellite).
    box_size : float
        Periodic box side, comoving Mpc/h (satellite positions wrap).
    redshift : float
        Redshift (concentrations, physical R200c for V200c).
    cosmo : dict
        Cosmological parameters.
    rng : numpy.random.Generator
        Random generator.
    beta : float
        Constant velocity anisotropy of satellites (0 isotropic, > 0 radial).
    velocity_bias : float
        Ratio of satellite to dark-matter velocity dispersion.
    conc_scatter_dex : float
        Log-normal scatter of concentration at fixed mass, dex.
    concentration_table : (log10 M grid, c200c grid), optional
        Precomputed :func:`concentration_200c` table to interpolate (saves colossus calls).

    Returns
    -------
    dict of numpy.ndarray
        :data:`GALAXY_PLACEMENT_COLUMNS`: ``x, y, z`` (comoving Mpc/h), ``vx, vy, vz``
        (peculiar km/s), ``host_id``, ``is_central`` and ``r_host`` (3D distance to the host
        centre, comoving Mpc/h); the centrals first (in halo order), then the satellites.
    """
    if not (np.isfinite(velocity_bias) and velocity_bias > 0):
        raise InputError(f"velocity bias {velocity_bias} must be positive", column="velocity_bias")
    m = np.asarray(halos["m200c"], dtype=float)
    n_h = m.size
    host_idx = np.asarray(host_idx, dtype=np.int64)
    if concentration_table is None:
        c_mean = concentration_200c(m, redshift, cosmo)
    else:
        c_mean = np.interp(np.log10(m), concentration_table[0], concentration_table[1])
    conc_h = c_mean * 10 ** (
        conc_scatter_dex * rng.standard_normal(n_h)
    )
    c_s = conc_h[host_idx]
    r200 = np.asarray(halos["r200c"], dtype=float)[host_idx]
    x = sample_nfw_scaled_radius(c_s, rng)
    r = x * r200 / c_s
    cos_t = rng.uniform(-1, 1, host_idx.size)
    sin_t = np.sqrt(1 - cos_t**2)
    phi = rng.uniform(0, 2 * np.pi, host_idx.size)
    e_r = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    e_t = np.stack([cos_t * np.cos(phi), cos_t * np.sin(phi), -sin_t], axis=1)
    e_p = np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)], axis=1)
    r200_phys = r200 / (1.0 + redshift)
    v200 = np.sqrt(G_KMS_MPC_MSUN * m[host_idx] / r200_phys)
    sig_r = velocity_bias * v200 * jeans_sigma_r_dimensionless(x, c_s, beta)
    sig_t = sig_r * np.sqrt(1.0 - beta)
    v_rel = (
        e_r * (sig_r * rng.standard_normal(host_idx.size))[:, None]
        + e_t * (sig_t * rng.standard_normal(host_idx.size))[:, None]
        + e_p * (sig_t * rng.standard_normal(host_idx.size))[:, None]
    )
    # ---- assemble
    cen_idx = np.flatnonzero(has_central)
    out: dict[str, np.ndarray] = {}
    for k, col in enumerate("xyz"):
        hc = np.asarray(halos[col], dtype=float)
        sat = np.mod(hc[host_idx] + r * e_r[:, k], box_size)
        sat[sat >= box_size] = 0.0  # float rounding of tiny negatives
        out[col] = np.concatenate([hc[cen_idx], sat])
    for k, col in enumerate(("vx", "vy", "vz")):
        hv = np.asarray(halos[col], dtype=float)
        out[col] = np.concatenate([hv[cen_idx], hv[host_idx] + v_rel[:, k]])
    ids = np.asarray(halos["id"], dtype=np.int64)
    out["host_id"] = np.concatenate([ids[cen_idx], ids[host_idx]])
    out["is_central"] = np.concatenate(
        [np.ones(cen_idx.size, bool), np.zeros(host_idx.size, bool)]
    )
    out["r_host"] = np.concatenate([np.zeros(cen_idx.size), r]).astype(np.float32)
    return out


def _empty_galaxies() -> dict[str, np.ndarray]:
    out = {c: np.zeros(0) for c in ("x", "y", "z", "vx", "vy", "vz")}
    out["host_id"] = np.zeros(0, np.int64)
    out["is_central"] = np.zeros(0, bool)
    out["log10_mstar"] = np.zeros(0, np.float32)
    out["r_host"] = np.zeros(0, np.float32)
    return out
