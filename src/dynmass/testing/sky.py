"""A toy cluster on the sky: galaxies around a centre in a box, and their RA, Dec and z.

The same galaxies can be seen as the observe stage sees them in a simulation box (offsets
[comoving Mpc/h], first-order line-of-sight velocity [km/s]) and as a survey sees them (RA,
Dec [deg], observed redshift), so that the box and sky paths of dynmass can be compared.

Examples
--------
>>> import numpy as np
>>> from dynmass.cosmology import MDPL2, to_astropy
>>> dx, dy, dz, vp = cluster_box(np.random.default_rng(0), n_members=20, n_field=5)
>>> ra, dec, z = place_on_sky(dx, dy, dz, vp, 150.0, 2.0, 0.1, to_astropy(MDPL2))
>>> ra.shape, bool(np.all(np.abs(z - 0.1) < 0.02))
((25,), True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dynmass.cosmology import C_KMS, hubble_h_units

__all__ = ["cluster_box", "box_rv", "place_on_sky"]


def cluster_box(rng: np.random.Generator, sigma_v: float = 700.0, n_members: int = 60,
                n_field: int = 150, centre: tuple[float, float] = (0.0, 0.0),
                v_centre: float = 0.0) -> tuple[np.ndarray, ...]:
    """Galaxies around a cluster: Gaussian members plus a uniform field, LOS along z.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    sigma_v : float
        Members' line-of-sight velocity dispersion, km/s.
    n_members : int
        Members: positions Gaussian with sd 0.5 comoving Mpc/h in each direction about
        ``centre``.
    n_field : int
        Field galaxies, uniform in |x|, |y| <= 2.5 and |z| <= 30 comoving Mpc/h, peculiar
        velocities Gaussian with sd 300 km/s.
    centre : tuple of float
        (x, y) of the members' centre relative to the origin, comoving Mpc/h.
    v_centre : float
        Members' mean line-of-sight peculiar velocity, km/s.

    Returns
    -------
    dx, dy, dz, v_pec : numpy.ndarray
        Offsets from the origin [comoving Mpc/h] and line-of-sight peculiar velocities [km/s].
    """
    mem = rng.normal(0, 0.5, (n_members, 3)) + [centre[0], centre[1], 0.0]
    v_mem = rng.normal(v_centre, sigma_v, n_members)
    field = np.column_stack([rng.uniform(-2.5, 2.5, n_field), rng.uniform(-2.5, 2.5, n_field),
                             rng.uniform(-30, 30, n_field)])
    v_field = rng.normal(0, 300, n_field)
    pos = np.vstack([mem, field])
    return pos[:, 0], pos[:, 1], pos[:, 2], np.concatenate([v_mem, v_field])


def box_rv(dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, v_pec: np.ndarray, z_c: float,
           cosmology: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sky-plane offsets and velocities as the observe stage sees them (LOS = z axis).

    Parameters
    ----------
    dx, dy, dz : numpy.ndarray
        Offsets from the origin, comoving Mpc/h.
    v_pec : numpy.ndarray
        Line-of-sight peculiar velocities relative to the origin, km/s.
    z_c : float
        Redshift of the origin.
    cosmology : dict
        Cosmological parameters (:mod:`dynmass.cosmology`).

    Returns
    -------
    p : numpy.ndarray
        (m, 2) sky-plane offsets, comoving Mpc/h.
    R : numpy.ndarray
        Projected radii, comoving Mpc/h.
    v : numpy.ndarray
        First-order velocities ``H(z) dz / (h (1 + z)) + v_pec``, km/s.
    """
    p = np.column_stack([dx, dy])
    v = hubble_h_units(cosmology, z_c) * np.asarray(dz) / (1 + z_c) + np.asarray(v_pec)
    return p, np.hypot(dx, dy), v


def place_on_sky(dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, v_pec: np.ndarray,
                 ra_c: float, dec_c: float, z_c: float,
                 cosmo: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RA, Dec, z of box galaxies for an origin at (``ra_c``, ``dec_c``, ``z_c``), LOS = z.

    Comoving distance ``chi_c + dz`` gives the cosmological redshift (interpolated comoving
    distance), combined with the peculiar velocity as ``1 + z_obs = (1 + z_cos)(1 + v/c)``.
    Transverse offsets become angles ``theta = r_perp / chi_c`` at position angle
    ``atan2(dx, dy)`` (x towards East, y towards North).

    Parameters
    ----------
    dx, dy, dz : numpy.ndarray
        Offsets from the origin, comoving Mpc/h.
    v_pec : numpy.ndarray
        Line-of-sight peculiar velocities, km/s.
    ra_c, dec_c : float
        Sky position of the origin, degrees.
    z_c : float
        Redshift of the origin (< 0.9).
    cosmo : astropy.cosmology.Cosmology
        Cosmology of the comoving distance.

    Returns
    -------
    ra, dec, z : numpy.ndarray
        Degrees (RA in [0, 360)) and observed redshifts.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    h = cosmo.h
    chi_c = cosmo.comoving_distance(z_c).to_value(u.Mpc) * h
    zgrid = np.linspace(0.0, 1.2, 12001)
    chigrid = cosmo.comoving_distance(zgrid).to_value(u.Mpc) * h
    z_cos = np.interp(chi_c + np.asarray(dz), chigrid, zgrid)
    z_obs = (1 + z_cos) * (1 + np.asarray(v_pec) / C_KMS) - 1
    theta = np.hypot(dx, dy) / chi_c
    pa = np.arctan2(dx, dy)
    pos = SkyCoord(ra_c * u.deg, dec_c * u.deg).directional_offset_by(pa * u.rad,
                                                                       theta * u.rad)
    return pos.ra.wrap_at(360 * u.deg).deg, pos.dec.deg, z_obs
