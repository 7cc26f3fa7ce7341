"""Toy catalogs for tests of the observe stage: halos with Gaussian members and a uniform field.

Units as in :class:`~dynmass.catalog.Catalog`: positions in comoving Mpc/h inside a periodic box
``[0, box)``, peculiar velocities in km/s, masses M200c in Msun/h, radii R200c in comoving Mpc/h.
Every catalog is at redshift :data:`Z` (0.117, that of Ho et al. 2019) in the MDPL2 cosmology.
Random functions draw from the :class:`numpy.random.Generator` they are given, so a seeded
generator gives the same catalog.

Examples
--------
>>> import numpy as np
>>> from dynmass.testing.catalogs import halo, make_catalog, members_of, random_universe
>>> h = halo(7, (50.0, 50.0, 50.0), vel=(200.0, 0.0, 0.0), m=1e14)
>>> cat = make_catalog([h], members_of(np.random.default_rng(0), h, 40))
>>> cat.n_halos, cat.n_galaxies, cat.box_size
(1, 40, 100.0)
>>> uni = random_universe(np.random.default_rng(1), n_field=100)
>>> uni.n_halos, uni.n_galaxies  # 12 halos x 25 members + 100 field galaxies
(12, 400)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dynmass.catalog import Catalog
from dynmass.cosmology import MDPL2

__all__ = ["Z", "concat", "halo", "make_catalog", "members_of", "random_universe"]

#: Redshift of every toy catalog (Ho et al. 2019).
Z = 0.117


def make_catalog(halos: list[dict], galaxies: dict[str, np.ndarray] | None = None,
                 box: float = 100.0) -> Catalog:
    """Catalog from a list of halo dicts and galaxy columns (host_id -1 if absent).

    Parameters
    ----------
    halos : list of dict
        One dict per halo as made by :func:`halo`: ``id``, ``x, y, z`` (comoving Mpc/h),
        ``vx, vy, vz`` (km/s), ``m200c`` (Msun/h), ``r200c`` (comoving Mpc/h).
    galaxies : dict of str to numpy.ndarray, optional
        Galaxy columns ``x, y, z`` (comoving Mpc/h, inside the box), ``vx, vy, vz`` (km/s) and
        optionally ``host_id`` (default -1, no host) and ``is_central`` (default False).
        Default: no galaxies.
    box : float
        Side of the periodic box, comoving Mpc/h.

    Returns
    -------
    Catalog
        At redshift :data:`Z` in the MDPL2 cosmology.
    """
    h = {k: np.array([d[k] for d in halos], dtype=float) for k in
         ("x", "y", "z", "vx", "vy", "vz", "m200c", "r200c")}
    h["id"] = np.array([d["id"] for d in halos], dtype=np.int64)
    g = dict(galaxies or {c: np.zeros(0) for c in ("x", "y", "z", "vx", "vy", "vz")})
    n = len(g["x"])
    g.setdefault("host_id", np.full(n, -1, np.int64))
    g.setdefault("is_central", np.zeros(n, bool))
    return Catalog(halos=h, galaxies=g, box_size=box, redshift=Z, cosmology=dict(MDPL2))


def halo(i: int, pos: Sequence[float], vel: Sequence[float] = (0, 0, 0), m: float = 1e14,
         r: float = 1.0) -> dict[str, Any]:
    """One halo as a dict, for :func:`make_catalog`.

    Parameters
    ----------
    i : int
        Halo id.
    pos : sequence of 3 float
        Centre, comoving Mpc/h.
    vel : sequence of 3 float
        Peculiar velocity, km/s.
    m : float
        M200c, Msun/h.
    r : float
        R200c, comoving Mpc/h.

    Returns
    -------
    dict
        Keys ``id, x, y, z, vx, vy, vz, m200c, r200c``.
    """
    return {"id": i, "x": pos[0], "y": pos[1], "z": pos[2], "vx": vel[0], "vy": vel[1],
            "vz": vel[2], "m200c": m, "r200c": r}


def members_of(rng: np.random.Generator, h: dict[str, Any], n: int, scale: float = 0.4,
               sigma: float = 400.0, box: float = 100.0) -> dict[str, np.ndarray]:
    """``n`` member galaxies of halo ``h``: Gaussian in position and velocity about the halo.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws.
    h : dict
        The host, as made by :func:`halo`.
    n : int
        Number of members.
    scale : float
        Standard deviation of each position coordinate about the centre, comoving Mpc/h.
    sigma : float
        Standard deviation of each velocity component about the halo's, km/s.
    box : float
        Side of the periodic box, comoving Mpc/h (positions are wrapped into it).

    Returns
    -------
    dict of str to numpy.ndarray
        Galaxy columns ``x, y, z, vx, vy, vz, host_id`` (``host_id`` = the halo's id).
    """
    pos = np.mod(np.array([h["x"], h["y"], h["z"]]) + rng.normal(0, scale, (n, 3)), box)
    vel = np.array([h["vx"], h["vy"], h["vz"]]) + rng.normal(0, sigma, (n, 3))
    return {"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "vx": vel[:, 0], "vy": vel[:, 1],
            "vz": vel[:, 2], "host_id": np.full(n, h["id"], np.int64)}


def concat(*tables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate column tables with the keys of the first one.

    Parameters
    ----------
    *tables : dict of str to numpy.ndarray
        At least one table; every table has the first one's keys.

    Returns
    -------
    dict of str to numpy.ndarray
        Each column the concatenation of the tables' columns, in order.
    """
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def random_universe(rng: np.random.Generator, box: float = 60.0, n_halos: int = 12,
                    n_field: int = 6000) -> Catalog:
    """Halos at random places with 25 Gaussian members each, plus a uniform field.

    Halos: positions uniform in the box (comoving Mpc/h), velocities Gaussian with 300 km/s
    per component, log10 M200c uniform in [13.6, 15) (Msun/h), R200c uniform in [0.5, 1.5)
    comoving Mpc/h, ids ``1 .. n_halos``. Members: :func:`members_of` defaults (0.4 Mpc/h,
    400 km/s). Field galaxies: positions uniform in the box, velocities Gaussian with
    300 km/s per component, ``host_id`` -1.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw.
    box : float
        Side of the periodic box, comoving Mpc/h.
    n_halos : int
        Number of halos.
    n_field : int
        Number of field galaxies.

    Returns
    -------
    Catalog
        ``25 n_halos + n_field`` galaxies at redshift :data:`Z`.
    """
    hs = [halo(i + 1, rng.uniform(0, box, 3), rng.normal(0, 300, 3),
               m=10 ** rng.uniform(13.6, 15), r=rng.uniform(0.5, 1.5)) for i in range(n_halos)]
    mem = [members_of(rng, h, 25, box=box) for h in hs]
    field = {c: rng.uniform(0, box, n_field) for c in "xyz"}
    field.update({f"v{c}": rng.normal(0, 300, n_field) for c in "xyz"})
    field["host_id"] = np.full(n_field, -1, np.int64)
    return make_catalog(hs, concat(*mem, field), box=box)
