"""Reader of Rockstar / consistent-trees ``hlist_<a>.list`` halo catalogs.

ASCII files (Behroozi et al. 2013, ApJ 762, 109 and ApJ 763, 18) whose first ``#`` line names
the columns with ``(n)`` suffixes; the header's ``a =``, ``Omega_M``/``h0`` and ``box size``
lines are used when present. Halos: distinct halos (``upid`` = -1) with their ``M200c`` column
(Msun/h); R200c (comoving Mpc/h) from M200c and rho_crit(z). Galaxies: one per distinct halo
(central) and per subhalo (satellite of its ``upid``), or, with ``galaxies="hod"``, the dynmass
halo occupation model (:func:`dynmass.universe.galaxies.populate`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dynmass.catalog import Catalog
from dynmass.errors import InputError
from dynmass.readers_ascii import _header_meta, _read_ascii, _resolve_meta
from dynmass.readers_columns import _finite, _r200c, _wrap_or_check

__all__ = ["read_hlist"]


def read_hlist(
    path: str | os.PathLike,
    *,
    box_size: float | None = None,
    redshift: float | None = None,
    cosmology: dict[str, Any] | None = None,
    mass_column: str = "M200c",
    galaxies: str = "subhalos",
    min_subhalo_mass: float = 0.0,
    mstar_min: float = 9.5,
    seed: int = 0,
    wrap: bool = False,
) -> Catalog:
    """Read a Rockstar / consistent-trees ``hlist`` ASCII halo catalog.

    Parameters
    ----------
    path : str or os.PathLike
        ``hlist_<a>.list`` file.
    box_size, redshift, cosmology : optional
        Override (or supply what the header lacks): comoving Mpc/h, redshift, parameter dict.
    mass_column : str
        Column holding M200c in Msun/h (default ``M200c``).
    galaxies : {"subhalos", "hod"}
        ``subhalos``: a galaxy at every distinct halo and every subhalo with ``mass_column``
        >= ``min_subhalo_mass``; ``hod``: populate distinct halos with the dynmass occupation
        model (:func:`dynmass.universe.galaxies.populate`, threshold ``mstar_min``, ``seed``).
    min_subhalo_mass : float
        Msun/h, for ``galaxies="subhalos"``.
    mstar_min : float
        log10 Msun, for ``galaxies="hod"``.
    seed : int
        Seed, for ``galaxies="hod"``.
    wrap : bool
        Wrap positions outside the box periodically instead of raising.

    Returns
    -------
    Catalog
    """
    path = Path(path)
    wanted = {"id": "id", "upid": "upid", "x": "x", "y": "y", "z": "z", "vx": "vx", "vy": "vy",
              "vz": "vz", "m": mass_column}
    cols, header, _ = _read_ascii(path, wanted)
    box, z, cosmo = _resolve_meta(path, _header_meta(header), box_size, redshift, cosmology)
    for key in ("x", "y", "z", "vx", "vy", "vz", "m"):
        cols[key] = _finite(cols[key], path, wanted[key])
    _wrap_or_check(cols, box, wrap, path, wanted)
    ids = cols["id"].astype(np.int64)
    upid = cols["upid"].astype(np.int64)
    is_host = (upid == -1) & (cols["m"] > 0)
    m200c = cols["m"][is_host]
    halos = {"id": ids[is_host], **{c: cols[c][is_host] for c in ("x", "y", "z", "vx", "vy", "vz")},
             "m200c": m200c, "r200c": _r200c(m200c, z, cosmo)}
    if galaxies == "subhalos":
        gsel = is_host | ((upid != -1) & (cols["m"] >= min_subhalo_mass))
        host = np.where(is_host, ids, upid)[gsel]
        host = np.where(np.isin(host, halos["id"]), host, -1)
        gal = {**{c: cols[c][gsel] for c in ("x", "y", "z", "vx", "vy", "vz")},
               "host_id": host, "is_central": is_host[gsel], "halo_mass": cols["m"][gsel]}
    elif galaxies == "hod":
        from dynmass.universe.galaxies import populate

        gal = populate(halos, box, z, cosmo, np.random.default_rng(seed), mstar_min=mstar_min)
    else:
        raise InputError(f"galaxies must be 'subhalos' or 'hod', not {galaxies!r}", path=path)
    settings = {"reader": "hlist", "source": str(path.resolve()), "mass_column": mass_column,
                "galaxies": galaxies, "min_subhalo_mass": min_subhalo_mass, "wrap": wrap}
    if galaxies == "hod":
        settings.update(mstar_min=mstar_min, seed=seed)
    return Catalog(halos, gal, box, z, cosmo, seed if galaxies == "hod" else None,
                   settings).validate(path)
