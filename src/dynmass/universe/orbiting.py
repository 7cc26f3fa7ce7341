"""The orbiting (1-halo) satellite profile of the ``outskirts`` halo model: NFW times the
steepening term of Diemer & Kravtsov 2014, its cumulative count, the fraction beyond R200c and
numerical inverse-transform sampling of radii (:mod:`dynmass.universe.outskirts`).

References
----------
* Diemer & Kravtsov 2014 (ApJ 789, 1), eqs. 3-4 and 6: rho_inner f_trans,
  f_trans = [1 + (r / r_t)^beta]^(-gamma/beta); for mass-selected halos beta = 4, gamma = 8,
  r_t = (1.9 - 0.18 nu200m) R200m (colossus ``DK14Profile.deriveParameters(selected_by="M")``).
* Inner profile: NFW (Navarro, Frenk & White 1997) with the c200c of the mock universe.
* R200m, M200m from M200c and c200c: colossus ``mass_defs.changeMassDefinition`` (NFW); peak
  height nu200m: colossus ``peaks.peakHeight``.

Examples
--------
The fraction of satellites added beyond R200c, and the profile's density at 1, 2 and 4 R200c
relative to R200c, for a cluster with c = 4 and r_t = 1.8 R200c:

>>> import numpy as np
>>> from dynmass.universe.orbiting import orbiting_density, outskirt_fraction
>>> round(float(outskirt_fraction(np.array([4.0]), np.array([1.8]))[0]), 3)
0.346
>>> rho = orbiting_density(np.array([1.0, 2.0, 4.0]), 4.0, 1.8)
>>> np.round(rho / rho[0], 5).tolist()
[1.0, 0.02906, 4e-05]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.integrate import cumulative_trapezoid

from dynmass.cosmology import colossus_cosmology
from dynmass.universe.galaxies import nfw_mass

__all__ = ["DK14_BETA", "DK14_GAMMA", "DK14_NU_MAX", "R_MAX_R200C", "Y_GRID", "cumulative_profile",
           "interp_rows", "orbiting_density", "outskirt_fraction", "sample_orbiting_radii",
           "truncation_radius_r200c"]

#: Outer edge of the satellite profile, in R200c.
R_MAX_R200C = 4.0
#: Highest peak height given to the DK14 r_t relation: its calibration sample reaches nu200m
#: of about 4-5, r_t = (1.9 - 0.18 nu) R200m falls below R200m beyond 5 and colossus refuses
#: nu > 10. Rarer peaks (above ~6e15 Msun/h at z = 0.117, ~1e15 at z = 1) use nu = 5.
DK14_NU_MAX = 5.0

#: Sharpness and asymptotic slope of the DK14 steepening for mass-selected halos (DK14 sec. 3.3).
DK14_BETA, DK14_GAMMA = 4.0, 8.0
#: Grid of r / R200c on which cumulative profiles are tabulated (0, then logarithmic).
Y_GRID = np.concatenate([[0.0], np.geomspace(1e-3, R_MAX_R200C, 240)])


def orbiting_density(y: np.ndarray, conc: float | np.ndarray, tau: float | np.ndarray
                     ) -> np.ndarray:
    """Shape of the orbiting (DK14 inner) profile: NFW times the DK14 transition term.

    rho(y) ~ f_trans(y) / (c y (1 + c y)^2), f_trans = [1 + (y / tau)^4]^(-2), y = r / R200c.

    Parameters
    ----------
    y : numpy.ndarray
        Radii in units of R200c (> 0).
    conc : float or numpy.ndarray
        Concentration c200c (broadcast with ``y``).
    tau : float or numpy.ndarray
        Truncation radius r_t in units of R200c (broadcast with ``y``).

    Returns
    -------
    numpy.ndarray
        Density in arbitrary units (same normalisation for every ``y``).
    """
    x = np.asarray(conc) * np.asarray(y)
    f_t = (1.0 + (np.asarray(y) / np.asarray(tau)) ** DK14_BETA) ** (-DK14_GAMMA / DK14_BETA)
    return f_t / (x * (1.0 + x) ** 2)


def cumulative_profile(conc: np.ndarray, tau: np.ndarray, y: np.ndarray = Y_GRID) -> np.ndarray:
    """Cumulative number of the orbiting profile within y, per halo.

    Parameters
    ----------
    conc : numpy.ndarray
        Concentrations c200c.
    tau : numpy.ndarray
        Truncation radii r_t / R200c (same shape).
    y : numpy.ndarray
        Increasing grid of r / R200c (may start at 0).

    Returns
    -------
    numpy.ndarray
        (n, len(y)), in units where the NFW profile gives m(c y).
    """
    conc, tau = np.atleast_1d(conc)[:, None], np.atleast_1d(tau)[:, None]
    yp = y[y > 0]
    integrand = yp[None, :] ** 3 * orbiting_density(yp[None, :], conc, tau) * conc**3
    inner = nfw_mass(conc[:, 0] * yp[0])  # below the first radius (<< r_t) the profile is NFW
    cum = inner[:, None] + cumulative_trapezoid(integrand, np.log(yp), axis=1, initial=0.0)
    return np.concatenate([np.zeros((conc.shape[0], y.size - yp.size)), cum], axis=1)


def outskirt_fraction(conc: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Satellites between R200c and :data:`R_MAX_R200C` per satellite within R200c.

    Parameters
    ----------
    conc : numpy.ndarray
        Concentrations c200c.
    tau : numpy.ndarray
        Truncation radii r_t / R200c (same shape).

    Returns
    -------
    numpy.ndarray
        F_out = N(1 < y < 4) / N(y < 1) of :func:`orbiting_density`.
    """
    cum = cumulative_profile(np.asarray(conc, float), np.asarray(tau, float))
    at_1 = np.array([np.interp(1.0, Y_GRID, row) for row in cum])
    return (cum[:, -1] - at_1) / at_1


def sample_orbiting_radii(conc_h: np.ndarray, tau_h: np.ndarray, rows: np.ndarray,
                          y_lo: np.ndarray, y_hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Radii (in R200c) of satellites drawn from :func:`orbiting_density` between two radii.

    Numerical inverse transform: the cumulative count of each host is tabulated on a grid of
    r / R200c and inverted by linear interpolation (one flat ``searchsorted`` for all hosts).

    Parameters
    ----------
    conc_h, tau_h : numpy.ndarray
        Per host: concentration c200c and r_t / R200c.
    rows : numpy.ndarray of int
        Host row of each satellite.
    y_lo, y_hi : numpy.ndarray
        Per satellite: range of r / R200c (0 <= y_lo < y_hi <= :data:`R_MAX_R200C`).
    u : numpy.ndarray
        Per satellite: uniform random numbers in [0, 1).

    Returns
    -------
    numpy.ndarray
        r / R200c per satellite.
    """
    if rows.size == 0:
        return np.zeros(0)
    hosts, inv = np.unique(rows, return_inverse=True)
    cum = cumulative_profile(np.asarray(conc_h, float)[hosts], np.asarray(tau_h, float)[hosts])
    cum /= cum[:, -1:]
    ny = Y_GRID.size
    flat = (cum + 2.0 * np.arange(hosts.size)[:, None]).ravel()
    off = 2.0 * inv
    lo = interp_rows(cum, inv, np.asarray(y_lo, float))
    hi = interp_rows(cum, inv, np.asarray(y_hi, float))
    target = lo + np.asarray(u, float) * (hi - lo)
    pos = np.searchsorted(flat, target + off, side="right") - 1
    i = np.clip(pos - inv * ny, 0, ny - 2)
    c0, c1 = cum[inv, i], cum[inv, i + 1]
    frac = np.clip((target - c0) / np.maximum(c1 - c0, 1e-300), 0.0, 1.0)
    y = Y_GRID[i] + frac * (Y_GRID[i + 1] - Y_GRID[i])
    return np.clip(y, np.maximum(y_lo, 1e-6), y_hi)


def interp_rows(cum: np.ndarray, inv: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Value of row ``inv`` of ``cum`` (tabulated on :data:`Y_GRID`) at ``y``, linearly.

    Parameters
    ----------
    cum : numpy.ndarray
        (n, len(Y_GRID)) tabulated rows.
    inv : numpy.ndarray of int
        Row per point.
    y : numpy.ndarray
        r / R200c per point.

    Returns
    -------
    numpy.ndarray
        One value per point.
    """
    i = np.clip(np.searchsorted(Y_GRID, y, side="right") - 1, 0, Y_GRID.size - 2)
    w = (y - Y_GRID[i]) / (Y_GRID[i + 1] - Y_GRID[i])
    return cum[inv, i] * (1 - w) + cum[inv, i + 1] * w


def truncation_radius_r200c(m200c: np.ndarray, conc: np.ndarray, redshift: float,
                            cosmo: dict[str, Any]) -> np.ndarray:
    """DK14 truncation radius r_t of mass-selected halos, in units of R200c.

    r_t = (1.9 - 0.18 nu200m) R200m (Diemer & Kravtsov 2014 eq. 6, colossus
    ``DK14Profile.deriveParameters``); M200m and R200m from M200c and c200c (NFW, colossus
    ``changeMassDefinition``); nu200m = peak height of M200m, at most :data:`DK14_NU_MAX`.

    Parameters
    ----------
    m200c : numpy.ndarray
        Halo masses M200c, Msun/h.
    conc : numpy.ndarray
        Concentrations c200c (same shape).
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    numpy.ndarray
        r_t / R200c.
    """
    from colossus.halo import mass_defs, mass_so
    from colossus.halo.profile_dk14 import DK14Profile
    from colossus.lss import peaks

    m = np.atleast_1d(np.asarray(m200c, float))
    c = np.atleast_1d(np.asarray(conc, float))
    out = np.empty(m.size)
    with colossus_cosmology(cosmo):
        r200c = mass_so.M_to_R(m, redshift, "200c")
        for k in range(m.size):
            m200m, r200m, _ = mass_defs.changeMassDefinition(m[k], c[k], redshift, "200c", "200m")
            nu = min(float(peaks.peakHeight(m200m, redshift)), DK14_NU_MAX)
            rt_r200m = DK14Profile.deriveParameters("M", nu200m=nu, z=redshift)[3]
            out[k] = rt_r200m * r200m / r200c[k]
    return out
