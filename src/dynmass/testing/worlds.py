"""Toy worlds for tests: views whose mass-velocity relation is known exactly.

Every function here draws from a seeded :class:`numpy.random.Generator`, so the same seed gives
the same views. The velocity dispersion of a host of mass ``M200c`` follows the dark-matter
relation of Evrard et al. 2008 (ApJ 672, 122) with ``h(z) = 1``::

    sigma_DM = 1082.9 km/s (M200c / 1e15 Msun/h)^0.3361

Examples
--------
>>> from dynmass.testing.worlds import evrard_sigma, evrard_views
>>> round(float(evrard_sigma(15.0)), 1)
1082.9
>>> obs = evrard_views(4, 2, seed=0)
>>> obs.n_views, sorted(set(obs.clusters["los"].tolist()))
(8, [0, 1])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dynmass.cosmology import MDPL2
from dynmass.observations import Observations, from_views

__all__ = ["ALPHA", "CYLINDER_SETTINGS", "SIGMA15_KMS", "cylinder_views", "evrard_sigma",
           "evrard_views"]

#: Evrard et al. 2008: sigma_DM at M200c = 1e15 Msun/h (km/s, h(z) = 1) and the slope.
SIGMA15_KMS, ALPHA = 1082.9, 0.3361

#: Observing settings of toy cylinders: the paper's aperture (Mpc/h) and velocity cut (km/s).
CYLINDER_SETTINGS: dict[str, Any] = {
    "aperture": 1.6, "vcut": 2200.0, "redshift": 0.117, "cosmology": dict(MDPL2),
    "min_members": 10, "center": "true"}


def evrard_sigma(log10_m200c: np.ndarray | float) -> np.ndarray:
    """Dark-matter velocity dispersion (km/s) of hosts of mass ``10**log10_m200c`` Msun/h.

    Parameters
    ----------
    log10_m200c : float or numpy.ndarray
        log10 of M200c in Msun/h.

    Returns
    -------
    numpy.ndarray
        sigma_DM in km/s (Evrard et al. 2008, h(z) = 1).
    """
    return SIGMA15_KMS * 10 ** (ALPHA * (np.asarray(log10_m200c, dtype=float) - 15))


def evrard_views(n_halos: int, n_los: int, seed: int, vcut: float = 3000.0, lo: float = 13.5,
                 hi: float = 15.5, halo_id_offset: int = 0, n_gal: tuple[int, int] = (50, 101),
                 aperture: float = 1.6) -> Observations:
    """Views of pure members whose velocities are Gaussian with the Evrard sigma(M) exactly.

    Parameters
    ----------
    n_halos, n_los : int
        Hosts and views per host.
    seed : int
        Seed of every random draw.
    vcut : float
        Velocity cut, km/s; galaxies beyond it are dropped.
    lo, hi : float
        log10 M200c (Msun/h) of the hosts is uniform in ``[lo, hi)``.
    halo_id_offset : int
        First halo id.
    n_gal : (int, int)
        Galaxies per view, uniform integers in ``[n_gal[0], n_gal[1])`` (fewer after the cut).
    aperture : float
        Aperture, Mpc/h; ``R`` is uniform on the disc of that radius.

    Returns
    -------
    Observations
        With ``halo_id``, ``los`` and ``m200c`` (Msun/h) set.
    """
    rng = np.random.default_rng(seed)
    logm = rng.uniform(lo, hi, n_halos)
    views, hid, los, mass = [], [], [], []
    for h in range(n_halos):
        sigma = evrard_sigma(logm[h])
        for j in range(n_los):
            n = int(rng.integers(*n_gal))
            v = rng.normal(0, sigma, 3 * n)
            v = v[np.abs(v) <= vcut][:n]
            views.append((aperture * np.sqrt(rng.random(len(v))), v))
            hid.append(halo_id_offset + h)
            los.append(j)
            mass.append(10 ** logm[h])
    return from_views(views, {"aperture": aperture, "vcut": vcut},
                      clusters={"halo_id": np.array(hid), "los": np.array(los),
                                "m200c": np.array(mass)})


def cylinder_views(rng: np.random.Generator, n_halos: int = 300, n_los: int = 3,
                   settings: dict[str, Any] | None = None, richness: float = 12.0,
                   n_interlopers: float = 4.0, lo: float = 13.6, hi: float = 15.1,
                   central: bool = False) -> Observations:
    """Toy cylinders: Evrard members whose number grows with mass, plus uniform interlopers.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    n_halos, n_los : int
        Hosts and views per host.
    settings : dict, optional
        Observing settings (default :data:`CYLINDER_SETTINGS`); ``aperture`` in Mpc/h and
        ``vcut`` in km/s are used.
    richness : float
        Mean member count at 1e14 Msun/h; it scales as ``M^0.7`` (plus 3 members).
    n_interlopers : float
        Mean number of interlopers, uniform in the cylinder.
    lo, hi : float
        log10 M200c (Msun/h) of the hosts is uniform in ``[lo, hi)``.
    central : bool
        Put one more galaxy, the central, at ``R = 0``, ``v = 0`` first in every view (as
        ``observe`` sees it from the true centre); the other draws are unchanged.

    Returns
    -------
    Observations
        With ``halo_id``, ``los`` and ``m200c`` (Msun/h) set.
    """
    settings = settings or CYLINDER_SETTINGS
    ap, vcut = settings["aperture"], settings["vcut"]
    logm = rng.uniform(lo, hi, n_halos)
    views, hid, los, m = [], [], [], []
    for h, lm in enumerate(logm):
        sigma = evrard_sigma(lm)
        for j in range(n_los):
            n_mem = rng.poisson(richness * 10 ** (0.7 * (lm - 14))) + 3
            n_int = rng.poisson(n_interlopers)
            v = np.concatenate([rng.normal(0, sigma, n_mem), rng.uniform(-vcut, vcut, n_int)])
            R = ap * np.sqrt(rng.uniform(0, 1, len(v)))
            keep = np.abs(v) <= vcut
            R, v = R[keep], v[keep]
            if central:
                R, v = np.concatenate([[0.0], R]), np.concatenate([[0.0], v])
            views.append((R, v))
            hid.append(h)
            los.append(j)
            m.append(10**lm)
    clusters = {"halo_id": np.array(hid), "los": np.array(los), "m200c": np.array(m)}
    return from_views(views, settings, clusters)
