"""Halo abundance and bias: Tinker et al. 2008 mass function, Tinker et al. 2010 bias (M200c).

Both come from colossus (Diemer 2018, ApJS 239, 35) evaluated for an explicit cosmology
dictionary. Validity (as published): Tinker et al. 2008 was calibrated for
10^10.5 < M < 10^15.5 Msun/h and 0 < z < 2.5; Tinker et al. 2010 bias for
10^10.5 < M < 10^15.5 Msun/h as well. Masses are M200c in Msun/h throughout.

References
----------
Tinker, J. et al. 2008, ApJ 688, 709 (mass function).
Tinker, J. et al. 2010, ApJ 724, 878 (halo bias).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dynmass.cosmology import colossus_cosmology
from dynmass.errors import InputError

#: Mass definition used everywhere in the mock universe.
MDEF = "200c"

#: Upper end of the sampled mass range, Msun/h (the abundance above it is negligible).
M_MAX_DEFAULT = 10**16.0


def dndlnm(m200c_msunh: np.ndarray, redshift: float, cosmo: dict[str, Any]) -> np.ndarray:
    """Tinker et al. 2008 halo mass function dn/dlnM for M200c.

    Parameters
    ----------
    m200c_msunh : array_like
        Halo masses M200c, Msun/h.
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters (see :mod:`dynmass.cosmology`).

    Returns
    -------
    numpy.ndarray
        dn/dlnM in comoving (Mpc/h)^-3.
    """
    from colossus.lss import mass_function

    m = np.atleast_1d(np.asarray(m200c_msunh, dtype=float))
    with colossus_cosmology(cosmo):
        return np.asarray(
            mass_function.massFunction(m, redshift, mdef=MDEF, model="tinker08", q_out="dndlnM"),
            dtype=float,
        )


def halo_bias(m200c_msunh: np.ndarray, redshift: float, cosmo: dict[str, Any]) -> np.ndarray:
    """Linear halo bias b(M) of Tinker et al. 2010 for M200c.

    Parameters
    ----------
    m200c_msunh : array_like
        Halo masses M200c, Msun/h.
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    numpy.ndarray
        Large-scale bias (dimensionless).
    """
    from colossus.lss import bias

    m = np.atleast_1d(np.asarray(m200c_msunh, dtype=float))
    with colossus_cosmology(cosmo):
        return np.asarray(bias.haloBias(m, model="tinker10", z=redshift, mdef=MDEF), dtype=float)


def r200c_comoving(m200c_msunh: np.ndarray, redshift: float, cosmo: dict[str, Any]) -> np.ndarray:
    """R200c of halos of mass M200c: the radius enclosing 200 times the critical density.

    Parameters
    ----------
    m200c_msunh : array_like
        Halo masses M200c, Msun/h.
    redshift : float
        Redshift (rho_crit(z) from the cosmology).
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    numpy.ndarray
        R200c in comoving Mpc/h.
    """
    from colossus.halo import mass_so

    m = np.asarray(m200c_msunh, dtype=float)
    with colossus_cosmology(cosmo):
        r_phys_kpch = mass_so.M_to_R(m, redshift, MDEF)  # physical kpc/h
    return np.asarray(r_phys_kpch, dtype=float) * (1.0 + redshift) / 1000.0


class MassFunctionTable:
    """Cumulative abundance n(>M) of the Tinker et al. 2008 M200c mass function on a fine grid.

    Parameters
    ----------
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.
    m_min_msunh, m_max_msunh : float
        Mass range M200c, Msun/h.
    n_grid : int
        Number of grid points in ln M (trapezoid integration; 4000 points over 4.5 dex give
        relative errors < 1e-5).
    """

    def __init__(
        self,
        redshift: float,
        cosmo: dict[str, Any],
        m_min_msunh: float,
        m_max_msunh: float = M_MAX_DEFAULT,
        n_grid: int = 4000,
    ):
        if not (np.isfinite(m_min_msunh) and m_min_msunh > 0 and m_max_msunh > m_min_msunh):
            raise InputError(
                f"mass range [{m_min_msunh:g}, {m_max_msunh:g}] Msun/h is empty or invalid",
                column="min_mass",
            )
        self.redshift = float(redshift)
        self.ln_m = np.linspace(np.log(m_min_msunh), np.log(m_max_msunh), n_grid)
        self.dndlnm = dndlnm(np.exp(self.ln_m), redshift, cosmo)
        seg = 0.5 * (self.dndlnm[1:] + self.dndlnm[:-1]) * np.diff(self.ln_m)
        # n(>M) on the grid, comoving (Mpc/h)^-3
        self.n_above = np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]])

    def n_between(self, m_lo_msunh: np.ndarray, m_hi_msunh: np.ndarray) -> np.ndarray:
        """Number density of halos with m_lo <= M200c < m_hi, comoving (Mpc/h)^-3.

        Parameters
        ----------
        m_lo_msunh, m_hi_msunh : array_like
            Bin edges M200c, Msun/h (broadcast together; clamped to the table's range).

        Returns
        -------
        numpy.ndarray
            Number densities, comoving (Mpc/h)^-3.
        """
        return self._n_above(m_lo_msunh) - self._n_above(m_hi_msunh)

    def _n_above(self, m: np.ndarray) -> np.ndarray:
        return np.interp(np.log(np.asarray(m, dtype=float)), self.ln_m, self.n_above)

    def sample(
        self, n: int, m_lo_msunh: float, m_hi_msunh: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Draw ``n`` masses from the mass function restricted to [m_lo, m_hi).

        Inverse-transform sampling of the tabulated n(>M), linear in ln M between grid points.

        Parameters
        ----------
        n : int
            Number of masses.
        m_lo_msunh, m_hi_msunh : float
            Mass range M200c, Msun/h.
        rng : numpy.random.Generator
            Random generator (consumed).

        Returns
        -------
        numpy.ndarray
            M200c, Msun/h.
        """
        n_lo, n_hi = self._n_above(m_lo_msunh), self._n_above(m_hi_msunh)
        target = n_hi + rng.uniform(size=n) * (n_lo - n_hi)
        # n_above decreases with ln m: interpolate on the reversed (increasing) arrays.
        ln_m = np.interp(target, self.n_above[::-1], self.ln_m[::-1])
        return np.clip(np.exp(ln_m), m_lo_msunh, np.nextafter(m_hi_msunh, 0))
