r"""Readers for catalogs users bring; each returns a validated :class:`~dynmass.catalog.Catalog`.

Formats
-------
``universemachine``
    UniverseMachine SFR catalogs (Behroozi et al. 2019, MNRAS 488, 3143), ASCII
    ``sfr_catalog_<a>.txt`` (columns named in the ``#`` header: ID DescID UPID Flags
    Uparent_Dist X Y Z VX VY VZ M V MP VMP R ... SM ICL SFR obs_SM ...) or binary
    ``sfr_catalog_<a>.bin`` (array of UniverseMachine's ``struct catalog_halo``: int64 id,
    descid, upid; int32 flags; float32 uparent_dist, pos[6] (x, y, z, vx, vy, vz), vmp, lvmp,
    mp, m, v, r, rank1, rank2, ra, rarank, A_UV, sm, icl, sfr, obs_sm, obs_sfr, obs_uv; padded
    to 128 bytes). Units: positions comoving Mpc/h, velocities peculiar km/s, halo masses
    M_vir (Bryan & Norman 1998) Msun/h, stellar masses Msun. Rows with flag bit 4 set are
    ignored, as UniverseMachine prescribes. Halos: rows with UPID = -1, M200c converted from
    M_vir with the Diemer & Joyce 2019 concentration (colossus); galaxies: every row (optionally
    above a stellar-mass threshold), host = the row itself for centrals, UPID for satellites.
``hlist``
    Rockstar / consistent-trees ``hlist_<a>.list`` ASCII (Behroozi et al. 2013, ApJ 762, 109 and
    ApJ 763, 18): columns named in the first ``#`` line with ``(n)`` suffixes; the header's
    ``a =``, ``Omega_M``/``h0`` and ``box size`` lines are used when present. Halos: distinct
    halos (``upid`` = -1) with their ``M200c`` column (Msun/h); R200c from M200c and
    rho_crit(z). Galaxies: one per distinct halo (central) and per subhalo (satellite of its
    ``upid``), or, with ``galaxies="hod"``, the dynmass halo occupation model.
``table``
    Generic tables (HDF5, Parquet, CSV, FITS via astropy.table; HDF5 files with ``halos`` and
    ``galaxies`` groups of column datasets are read with h5py), with a column mapping
    ``{dynmass_name: file_column}``; names may be prefixed ``halos.`` / ``galaxies.``.

Units in, units out: ``units={"position": "kpc/h", "mass": "Msun"}`` converts on the way in
(positions: Mpc/h, kpc/h, Mpc, kpc; masses: Msun/h, Msun, 1e10Msun/h); the catalog is always in
comoving Mpc/h, peculiar km/s and Msun/h.

Modules
-------
This module holds the dispatcher :func:`read_external` and re-exports every reader:
:mod:`~dynmass.readers_um` (UniverseMachine), :mod:`~dynmass.readers_hlist` (hlist),
:mod:`~dynmass.readers_table` (generic tables); the column checks they share are in
:mod:`~dynmass.readers_columns`, the ASCII header parsing in :mod:`~dynmass.readers_ascii`.

Examples
--------
A two-halo ``hlist`` file (one subhalo) written to a temporary folder; the header gives the
scale factor, the cosmology and the box:

>>> import os, tempfile
>>> from dynmass.readers import read_external
>>> tmp = tempfile.mkdtemp()
>>> path = os.path.join(tmp, "hlist_0.89526.list")
>>> with open(path, "w") as fh:
...     _ = fh.write("#id(1) upid(2) x(3) y(4) z(5) vx(6) vy(7) vz(8) M200c(9)\n"
...                  "#a = 0.89526\n#Omega_M = 0.307115; h0 = 0.6777\n"
...                  "#Full box size = 100.0 Mpc/h\n"
...                  "1 -1 10.0 20.0 30.0 100.0 0.0 -50.0 1e14\n"
...                  "2 1 10.3 20.1 29.8 600.0 -300.0 0.0 5e12\n"
...                  "3 -1 50.0 60.0 70.0 0.0 10.0 0.0 2e13\n")
>>> cat = read_external(path, "hlist")
>>> cat.n_halos, cat.n_galaxies, cat.box_size, round(cat.redshift, 3)
(2, 3, 100.0, 0.117)
>>> cat.galaxies["host_id"].tolist(), cat.galaxies["is_central"].tolist()
([1, 1, 3], [True, False, True])
>>> cat.halos["r200c"].round(3).tolist()  # comoving Mpc/h, from M200c (Msun/h)
[0.812, 0.475]
"""

from __future__ import annotations

import os
from typing import Any

from dynmass.catalog import Catalog
from dynmass.errors import InputError
from dynmass.readers_hlist import read_hlist
from dynmass.readers_table import parse_column_mapping, read_table
from dynmass.readers_um import (
    UM_BINARY_DTYPE,
    UM_IGNORE_FLAG,
    mvir_to_m200c,
    read_universemachine,
)

__all__ = [
    "FORMATS",
    "UM_BINARY_DTYPE",
    "UM_IGNORE_FLAG",
    "mvir_to_m200c",
    "parse_column_mapping",
    "read_external",
    "read_hlist",
    "read_table",
    "read_universemachine",
]

#: Formats :func:`read_external` reads (``dynmass universe --from FORMAT``).
FORMATS = ("universemachine", "universemachine-bin", "hlist", "table")


def read_external(path: str | os.PathLike, fmt: str, **kw: Any) -> Catalog:
    """Dispatch to the reader of ``fmt`` (one of :data:`FORMATS`).

    Parameters
    ----------
    path : str or os.PathLike
        The catalog file (for ``"table"``: the HDF5 file or the halo table).
    fmt : {"universemachine", "universemachine-bin", "hlist", "table"}
        Format: :func:`read_universemachine` (``"universemachine-bin"`` forces
        ``binary=True``), :func:`read_hlist` or :func:`read_table`.
    **kw
        Keyword arguments of that reader (``box_size`` in comoving Mpc/h, ``redshift``,
        ``cosmology``, ``wrap``, ...).

    Returns
    -------
    Catalog
        The validated catalog (comoving Mpc/h, peculiar km/s, Msun/h).

    Raises
    ------
    InputError
        Unknown ``fmt``, or whatever the reader finds wrong with the file.
    """
    if fmt in ("universemachine", "universemachine-bin"):
        if fmt == "universemachine-bin":
            kw["binary"] = True
        return read_universemachine(path, **kw)
    if fmt == "hlist":
        return read_hlist(path, **kw)
    if fmt == "table":
        return read_table(path, **kw)
    raise InputError(f"unknown format '{fmt}'; choose from {', '.join(FORMATS)}", path=path)
