"""The one algorithm that estimates a cluster's centre from its galaxies.

Used by the mock observations (``dynmass observe --center members``) and by ``dynmass
predict`` (centres not given), so that a model trained on centres estimated from members is
applied with the same estimator.

Algorithm (:func:`centre_on_members`), on sky-plane offsets ``p`` [comoving Mpc/h] and
line-of-sight velocities ``v`` [km/s] about a reference point:

1. start at the component-wise median of ``p`` and the median of ``v`` over all the galaxies
   given (an observer's first guess from the member list);
2. keep the galaxies of the cylinder about the current centre (``R <= aperture``,
   ``|v'| <= vcut``, velocities moved to the centre as ``v' = (v - dv) / (1 + dv / c)``, exact
   for ``v = c dz / (1 + z_c)``);
3. new centre: the component-wise median of their ``p`` and the biweight location of their
   ``v`` (Beers, Flynn & Gebhardt 1990, AJ 100, 32; :func:`astropy.stats.biweight_location`);
   the centre may lie at most ``max_shift`` apertures (projected) and ``max_shift`` vcut
   (velocity) from the reference point, so that it stays on this cluster;
4. repeat 2-3 until the centre moves by less than ``1e-4`` aperture and ``0.1`` km/s (at most
   ``max_iter`` times) or fewer than 3 galaxies remain.

In the mocks the reference point is the true halo centre and the galaxies given are the
candidates within ``1.5`` apertures and ``1.6`` vcut of it (:data:`PAD_R`, :data:`PAD_V`);
on the sky (:func:`sky_centre`) it is the median position and redshift of the members, and
positions are taken to the plane by the azimuthal equidistant projection about it, so that
``|p|`` is exactly ``D_M(z) * theta`` (Hogg 1999, astro-ph/9905116, eq. 16).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.normal(0.0, 0.3, (200, 2)) + [0.2, 0.0]   # galaxies centred 0.2 Mpc/h along x
>>> v = rng.normal(150.0, 500.0, 200)                  # moving at +150 km/s
>>> c = centre_on_members(p, v, aperture=1.6, vcut=2200.0)
>>> bool(abs(c.shift[0] - 0.2) < 0.1), bool(abs(c.dv - 150.0) < 150.0), int(c.selected.sum())
(True, True, 200)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dynmass.cosmology import C_KMS

__all__ = ["PAD_R", "PAD_V", "MAX_SHIFT", "MAX_ITER", "Centre", "centre_on_members",
           "sky_centre"]

#: The mocks give the centring the galaxies within ``PAD_R`` apertures and ``PAD_V`` vcut of
#: the true centre (a member list a little wider than the cylinder).
PAD_R = 1.5
PAD_V = 1.6
#: Farthest the centre may lie from the reference point, in apertures and in vcut.
MAX_SHIFT = 0.5
#: Most iterations.
MAX_ITER = 20


@dataclass(frozen=True)
class Centre:
    """An estimated centre relative to the reference point, and the cylinder about it.

    Parameters
    ----------
    shift : numpy.ndarray
        (2,) sky-plane offset of the centre from the reference point, comoving Mpc/h.
    dv : float
        Line-of-sight velocity of the centre relative to the reference point, km/s.
    selected : numpy.ndarray
        (m,) bool, the galaxies within the cylinder about the centre.
    R : numpy.ndarray
        (m,) projected radii about the centre, comoving Mpc/h (all galaxies).
    v : numpy.ndarray
        (m,) velocities relative to the centre, km/s (all galaxies).
    n_iter : int
        Iterations made.
    """

    shift: np.ndarray
    dv: float
    selected: np.ndarray
    R: np.ndarray
    v: np.ndarray
    n_iter: int

    @property
    def dR(self) -> float:
        """Projected distance of the centre from the reference point, comoving Mpc/h."""
        return float(np.hypot(*self.shift))


def _cylinder(p: np.ndarray, v: np.ndarray, shift: np.ndarray, dv: float, aperture: float,
              vcut: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = p - shift
    r = np.sqrt(np.sum(q * q, axis=1))
    vv = (v - dv) / (1.0 + dv / C_KMS)
    return (r <= aperture) & (np.abs(vv) <= vcut), r, vv


def _clamp(shift: np.ndarray, dv: float, aperture: float, vcut: float,
           max_shift: float) -> tuple[np.ndarray, float]:
    norm = float(np.hypot(*shift))
    if norm > max_shift * aperture:
        shift = shift * (max_shift * aperture / norm)
    return shift, float(np.clip(dv, -max_shift * vcut, max_shift * vcut))


def centre_on_members(p: np.ndarray, v: np.ndarray, *, aperture: float, vcut: float,
                      max_shift: float = MAX_SHIFT, max_iter: int = MAX_ITER) -> Centre:
    """Centre of a cluster from its galaxies (see the module docstring for the algorithm).

    Parameters
    ----------
    p : numpy.ndarray
        (m, 2) sky-plane offsets of the galaxies from the reference point, comoving Mpc/h.
    v : numpy.ndarray
        (m,) line-of-sight velocities relative to the reference point, km/s.
    aperture : float
        Cylinder radius, comoving Mpc/h.
    vcut : float
        Velocity cut, km/s.
    max_shift : float
        Farthest the centre may lie from the reference point, in apertures (projected) and in
        vcut (velocity).
    max_iter : int
        Most iterations.

    Returns
    -------
    Centre
        Offset of the centre from the reference point and the cylinder about it.
    """
    from astropy.stats import biweight_location

    p = np.asarray(p, dtype=float).reshape(-1, 2)
    v = np.asarray(v, dtype=float)
    if len(p) != len(v):
        raise ValueError(f"p has {len(p)} rows but v has {len(v)}")
    if len(v) == 0:
        sel, r, vv = _cylinder(p, v, np.zeros(2), 0.0, aperture, vcut)
        return Centre(np.zeros(2), 0.0, sel, r, vv, 0)
    shift, dv = _clamp(np.median(p, axis=0), float(np.median(v)), aperture, vcut, max_shift)
    sel, r, vv = _cylinder(p, v, shift, dv, aperture, vcut)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        if sel.sum() < 3:
            break
        new_shift, new_dv = _clamp(np.median(p[sel], axis=0),
                                   float(biweight_location(v[sel])), aperture, vcut, max_shift)
        moved = (np.hypot(*(new_shift - shift)) > 1e-4 * aperture or abs(new_dv - dv) > 0.1)
        shift, dv = new_shift, new_dv
        sel, r, vv = _cylinder(p, v, shift, dv, aperture, vcut)
        if not moved:
            break
    return Centre(shift, dv, sel, r, vv, n_iter)


def _tangent_offsets(ra_deg: np.ndarray, dec_deg: np.ndarray, ref: Any) -> np.ndarray:
    """Azimuthal equidistant offsets (radians, (m, 2)) of sky positions about ``ref``."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    off = SkyCoord(ra_deg * u.deg, dec_deg * u.deg).transform_to(ref.skyoffset_frame())
    xyz = off.cartesian.xyz.value  # the reference point is (1, 0, 0)
    theta = np.arccos(np.clip(xyz[0], -1.0, 1.0))
    s = np.hypot(xyz[1], xyz[2])
    scale = np.divide(theta, s, out=np.ones_like(theta), where=s > 0)
    return np.column_stack([xyz[1] * scale, xyz[2] * scale])


def _from_tangent(offset_rad: np.ndarray, ref: Any) -> Any:
    """Inverse of :func:`_tangent_offsets` for one offset (radians)."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    theta = float(np.hypot(*offset_rad))
    if theta == 0:
        return ref
    s = np.sin(theta) / theta
    x, y, z = np.cos(theta), offset_rad[0] * s, offset_rad[1] * s
    lon, lat = np.arctan2(y, x), np.arcsin(np.clip(z, -1.0, 1.0))
    return SkyCoord(lon * u.rad, lat * u.rad, frame=ref.skyoffset_frame()).icrs


def sky_centre(ra_deg: np.ndarray, dec_deg: np.ndarray, z: np.ndarray, *, aperture: float,
               vcut: float, cosmo: Any, n_pass: int = 3) -> tuple[float, float, float]:
    """Cluster centre (RA, Dec, z) from member coordinates with :func:`centre_on_members`.

    The reference point is the median of the members' offsets about their mean direction and
    their median redshift ``z0``; members are projected to ``p = D_M(z_c) * theta`` (azimuthal
    equidistant about the reference point, comoving Mpc/h) and ``v = c (z - z0) / (1 + z0)``.
    ``D_M`` is evaluated at the latest estimate ``z_c`` (first ``z0``), ``n_pass`` times at
    most (until ``z_c`` changes by < 1e-8), so that the aperture is that of the final centre.

    Parameters
    ----------
    ra_deg, dec_deg : numpy.ndarray
        Member coordinates, degrees (ICRS).
    z : numpy.ndarray
        Member redshifts (observed).
    aperture : float
        Cylinder radius, comoving Mpc/h.
    vcut : float
        Velocity cut, km/s.
    cosmo : astropy.cosmology.Cosmology
        Cosmology of the comoving transverse distance ``D_M``.
    n_pass : int
        Most evaluations of ``D_M`` at the latest centre redshift.

    Returns
    -------
    tuple of float
        ``(ra [deg], dec [deg], z_c)``.
    """
    import astropy.units as u
    from astropy.coordinates import CartesianRepresentation, SkyCoord, UnitSphericalRepresentation

    ra_deg, dec_deg, z = (np.asarray(a, dtype=float) for a in (ra_deg, dec_deg, z))
    if len(z) == 0:
        raise ValueError("no members to centre on")
    coords = SkyCoord(ra_deg * u.deg, dec_deg * u.deg)
    mean = CartesianRepresentation(coords.cartesian.xyz.mean(axis=1))
    rep = mean.represent_as(UnitSphericalRepresentation)
    first = SkyCoord(rep.lon, rep.lat)
    ref = _from_tangent(np.median(_tangent_offsets(ra_deg, dec_deg, first), axis=0), first)
    z0 = float(np.median(z))
    off = _tangent_offsets(ra_deg, dec_deg, ref)  # radians about the reference point
    v = C_KMS * (z - z0) / (1.0 + z0)
    z_c = z0
    for _ in range(max(1, n_pass)):
        d_m = cosmo.comoving_transverse_distance(z_c).to_value(u.Mpc) * cosmo.h  # Mpc/h
        c = centre_on_members(off * d_m, v, aperture=aperture, vcut=vcut)
        new_z = z0 + c.dv * (1.0 + z0) / C_KMS
        done = abs(new_z - z_c) < 1e-8
        z_c = new_z
        if done:
            break
    centre = _from_tangent(c.shift / d_m, ref)
    return float(centre.ra.deg), float(centre.dec.deg), float(z_c)
