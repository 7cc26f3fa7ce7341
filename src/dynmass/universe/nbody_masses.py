"""Halo masses of a particle-mesh snapshot: M200c from the FoF mass by matched abundance.

Why not the spherical overdensity of the particles
---------------------------------------------------
A particle-mesh run resolves forces only down to about a mesh cell (0.49 comoving Mpc/h for the
default 256^3 particles in 250 Mpc/h on a 512^3 mesh), while R200c of a 10^14 Msun/h cluster is
0.7 Mpc/h. Halo cores are therefore puffed up: on the default run (seed 1, z = 0.117) the
stacked mass inside 0.5 / 1 / 2 R200c of hosts of 10^14-10^14.7 Msun/h is 0.27 / 0.76 / 1.45
of M200c, against 0.53 / 1.00 / 1.62 for an NFW halo of the Diemer & Joyce 2019 concentration;
a sphere enclosing 200 rho_c(z) is too small, and the SO masses come out 0.3-0.6 dex below the
FoF masses, a mass function at 0.24-0.54 of Tinker et al. 2008 (measured with
``dynmass check``). The **friends-of-friends mass** is set by the b = 0.2 isodensity contour at
about 80 times the mean density (More et al. 2011, ApJS 195, 4), far outside the core, and is
what particle-mesh codes get right: on the same run the FoF mass function is 0.92-1.16 of
Watson et al. 2013's FoF fit over 10^13-10^14.75 Msun/h (above ~100 particles; PM FoF groups
of fewer particles are too light, as in Feng et al. 2016 for FastPM).

The map
-------
:func:`fof_to_m200c` gives each halo the M200c of the same cumulative abundance,

    n_T08(> M200c; z) = n_W13(> M_FoF; z),

with n_W13 the Watson et al. 2013 (MNRAS 433, 1230) universal FoF (b = 0.2) mass function
and n_T08 the Tinker et al. 2008 (ApJ 688, 709) M200c mass function, both from colossus for
the snapshot's cosmology and redshift. This converts the mass *definition* with two published
fits; it uses nothing of the simulation's own halo counts, so the snapshot's M200c mass
function compared with Tinker08 still tests the run (it equals its FoF mass function compared
with Watson13). At z = 0.117 the map lowers the mass by 0.07 dex at 10^13, 0.15 dex at
10^14.2-10^15 Msun/h. Limitation: the map is one-to-one, so the scatter of M200c at fixed
FoF mass (~0.1 dex, from concentration and mergers) is not in the catalog.

Examples
--------
>>> import numpy as np
>>> from dynmass.cosmology import MDPL2
>>> from dynmass.universe.nbody_masses import fof_to_m200c
>>> m = fof_to_m200c(np.array([1e13, 1e14, 1e15]), 0.117, MDPL2)
>>> np.round(np.log10(m), 2).tolist()
[12.92, 13.86, 14.84]
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from dynmass.cosmology import colossus_cosmology
from dynmass.errors import InputError

__all__ = ["HALO_MASS_DEFINITIONS", "fof_to_m200c"]

#: How the nbody engine gives its halos M200c: ``"fof-abundance"`` (:func:`fof_to_m200c`, the
#: default) or ``"so"`` (spherical overdensity on the particles, biased low in PM runs).
HALO_MASS_DEFINITIONS: tuple[str, ...] = ("fof-abundance", "so")

#: log10 mass grid of the abundance map, Msun/h.
_LOG_M_GRID = np.linspace(10.0, 16.5, 651)


@lru_cache(maxsize=16)
def _map_table(redshift: float, cosmo_items: tuple[tuple[str, Any], ...]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(log10 M_FoF, log10 M200c) of equal cumulative abundance on :data:`_LOG_M_GRID`."""
    from colossus.lss import mass_function

    m = 10.0 ** _LOG_M_GRID
    ln_m = np.log(m)
    cum = {}
    with colossus_cosmology(dict(cosmo_items)):
        for mdef, model in (("fof", "watson13"), ("200c", "tinker08")):
            dn = np.asarray(mass_function.massFunction(m, float(redshift), mdef=mdef,
                                                       model=model, q_out="dndlnM"), float)
            # n(> M) by the trapezoid rule from the top of the grid down
            seg = 0.5 * (dn[1:] + dn[:-1]) * np.diff(ln_m)
            cum[mdef] = np.append(np.cumsum(seg[::-1])[::-1], 0.0)
    ok = (cum["fof"] > 0) & (cum["200c"] > 0)
    log_fof, log_c = -np.log(cum["fof"][ok]), -np.log(cum["200c"][ok])
    return _LOG_M_GRID[ok], np.interp(log_fof, log_c, _LOG_M_GRID[ok])


def fof_to_m200c(m_fof: np.ndarray, redshift: float, cosmology: dict[str, Any]) -> np.ndarray:
    """M200c of the FoF (b = 0.2) masses by matched abundance (see the module docstring).

    Parameters
    ----------
    m_fof : array_like
        Friends-of-friends masses, Msun/h, within 10^10.5-10^16 Msun/h.
    redshift : float
        Snapshot redshift (>= 0).
    cosmology : dict
        Cosmological parameters (:mod:`dynmass.cosmology`).

    Returns
    -------
    numpy.ndarray
        M200c, Msun/h, the same shape as ``m_fof``; monotonic in ``m_fof``.

    Raises
    ------
    InputError
        A mass that is not finite or outside the map's range (column ``m_fof``), or a
        negative redshift.
    """
    m = np.asarray(m_fof, dtype=float)
    if not (np.isfinite(redshift) and redshift >= 0):
        raise InputError(f"redshift {redshift!r} must be >= 0", column="redshift")
    lm = np.log10(np.where(m > 0, m, np.nan)) if m.size else m
    bad = ~np.isfinite(lm) | (lm < 10.5) | (lm > 16.0)
    if np.any(bad):
        first = float(m.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]])
        raise InputError(f"{int(np.sum(bad))} FoF masses outside 10^10.5-10^16 Msun/h (first "
                         f"{first:.4g}); the abundance map is not defined there", column="m_fof")
    items = tuple(sorted((k, v) for k, v in cosmology.items() if not isinstance(v, dict)))
    grid_fof, grid_c = _map_table(round(float(redshift), 6), items)
    return 10.0 ** np.interp(lm, grid_fof, grid_c)
