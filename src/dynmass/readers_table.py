"""Reader of generic halo and galaxy tables (HDF5, Parquet, CSV, FITS) with a column mapping.

Tables are read with h5py (HDF5 files with ``halos`` and ``galaxies`` groups of column
datasets, or one table of columns), pyarrow (Parquet) or :mod:`astropy.table` (CSV, ECSV,
FITS). A mapping ``{dynmass_name: file_column}`` (names may be prefixed ``halos.`` /
``galaxies.``; :func:`parse_column_mapping` reads the ``"x=X,halos.m200c=Mass"`` form) says
which file column holds which dynmass column.

Units in, units out: ``units={"position": "kpc/h", "mass": "Msun"}`` converts on the way in
(positions: Mpc/h, kpc/h, Mpc, kpc; masses: Msun/h, Msun, 1e10Msun/h); the catalog is always in
comoving Mpc/h, peculiar km/s and Msun/h.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import hdf5_read_errors
from dynmass.catalog import Catalog
from dynmass.cosmology import MDPL2, little_h, validate_cosmology
from dynmass.errors import InputError
from dynmass.readers_columns import _check_exists, _finite, _integers, _r200c, _wrap_or_check

__all__ = ["parse_column_mapping", "read_table"]

_POSITION_UNITS = {"mpc/h": ("h", 1.0), "kpc/h": ("h", 1e-3), "mpc": ("noh", 1.0),
                   "kpc": ("noh", 1e-3)}
_MASS_UNITS = {"msun/h": ("h", 1.0), "msun": ("noh", 1.0), "1e10msun/h": ("h", 1e10)}


def _unit_factor(kind: str, unit: str, h: float, path: Path) -> float:
    table = _POSITION_UNITS if kind == "position" else _MASS_UNITS
    key = unit.strip().lower()
    if key not in table:
        raise InputError(f"unknown {kind} unit '{unit}'; choose from {sorted(table)}", path=path)
    hflag, f = table[key]
    # h-free lengths / masses are converted to h^-1 units by multiplying by h
    return f * (h if hflag == "noh" else 1.0)


def parse_column_mapping(text: str | None) -> dict[str, str]:
    """Parse ``"x=X,y=Y,halos.m200c=Mass"`` into a dict (dynmass name -> file column)."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise InputError(f"column mapping item '{item}' is not NAME=COLUMN", column="columns")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _load_tables(path: Path, fmt: str | None) -> dict[str, dict[str, np.ndarray]]:
    """Tables in a file: {"halos": {...}, "galaxies": {...}} or {"table": {...}}."""
    _check_exists(path)
    ext = (fmt or path.suffix.lstrip(".")).lower()
    if ext in ("h5", "hdf5", "hdf"):
        import h5py

        try:
            fh = h5py.File(path, "r")
        except OSError as exc:
            raise InputError(f"not a readable HDF5 file (truncated or foreign?): {exc}",
                             path=path) from exc
        with hdf5_read_errors(path), fh:
            tables = {}
            for name in ("halos", "galaxies"):
                if name in fh:
                    tables[name] = _h5_table(fh[name])
            if not tables:
                tables["table"] = _h5_table(fh)
            return tables
    if ext in ("parquet", "pq"):
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError on foreign files
            raise InputError(f"cannot read as Parquet (truncated or foreign file?): {exc}",
                             path=path) from exc
        if t.num_rows == 0:
            raise InputError("table has no rows", path=path)
        return {"table": {c: t.column(c).to_numpy() for c in t.column_names}}
    astropy_fmt = {"csv": "ascii.csv", "fits": "fits", "fit": "fits", "ecsv": "ascii.ecsv"}.get(ext)
    if astropy_fmt is None:
        raise InputError(f"unknown table format '{ext}' (use .h5/.hdf5, .parquet, .csv, .fits)",
                         path=path)
    from astropy.table import Table

    try:
        t = Table.read(path, format=astropy_fmt)
    except Exception as exc:  # astropy raises many types on foreign / truncated files
        raise InputError(f"cannot read as {astropy_fmt} (truncated or foreign file?): {exc}",
                         path=path) from exc
    if len(t) == 0:
        raise InputError("table has no rows", path=path)
    out = {}
    for c in t.colnames:
        mask = getattr(t[c], "mask", None)
        if mask is not None and np.any(mask):
            raise InputError(f"{int(np.sum(mask))} empty or missing values (truncated file?), "
                             f"first at row {int(np.flatnonzero(mask)[0])}", path=path, column=c)
        out[c] = np.asarray(t[c])
    return {"table": out}


def _h5_table(node) -> dict[str, np.ndarray]:
    import h5py

    if isinstance(node, h5py.Dataset):
        arr = node[...]
        return {n: arr[n] for n in arr.dtype.names or ()}
    out = {}
    for k, v in node.items():
        if isinstance(v, h5py.Dataset):
            if v.dtype.names:
                arr = v[...]
                out.update({n: arr[n] for n in v.dtype.names})
            elif v.ndim == 1:
                out[k] = v[...]
    return out


def _map_table(raw: dict[str, np.ndarray], mapping: dict[str, str], group: str,
               required: tuple[str, ...], optional: tuple[str, ...], path: Path
               ) -> dict[str, np.ndarray]:
    lower = {k.lower(): k for k in raw}
    out = {}
    for name in required + optional:
        src = mapping.get(f"{group}.{name}", mapping.get(name, name))
        key = src if src in raw else lower.get(src.lower())
        if key is None:
            if name in required:
                raise InputError(f"required column is missing (mapped to '{name}'; columns: "
                                 f"{', '.join(sorted(raw)[:15])})", path=path, column=src)
            continue
        out[name] = _finite(np.asarray(raw[key]), path, src)
    return out


def read_table(
    path: str | os.PathLike,
    *,
    galaxies_path: str | os.PathLike | None = None,
    columns: dict[str, str] | str | None = None,
    box_size: float | None = None,
    redshift: float | None = None,
    cosmology: dict[str, Any] | None = None,
    units: dict[str, str] | None = None,
    table_format: str | None = None,
    wrap: bool = False,
) -> Catalog:
    """Read generic tables (HDF5, Parquet, CSV, FITS) with a column mapping.

    Parameters
    ----------
    path : str or os.PathLike
        An HDF5 file with ``halos`` and ``galaxies`` groups, or the halo table.
    galaxies_path : str or os.PathLike, optional
        The galaxy table when ``path`` holds only halos.
    columns : dict or str, optional
        Mapping dynmass name -> file column (``"x=X,halos.m200c=Mvir"`` also accepted).
        Halo columns: id, x, y, z, vx, vy, vz, m200c, [r200c]; galaxy columns: x, y, z, vx,
        vy, vz, host_id, [is_central, log10_mstar]. Without ``is_central`` a galaxy is central
        when it lies within 1e-4 Mpc/h of its host's centre. ``log10_mstar`` must be log10
        Msun, h-free (:mod:`dynmass.stellar_mass`), not Msun/h^2.
    box_size : float
        Box side, comoving Mpc/h (HDF5 root attribute ``box_size`` used if present).
    redshift : float
        Redshift (HDF5 root attribute ``redshift`` used if present).
    cosmology : dict, optional
        Default MDPL2.
    units : dict, optional
        ``{"position": "Mpc/h"|"kpc/h"|"Mpc"|"kpc", "mass": "Msun/h"|"Msun"|"1e10Msun/h"}``.
    table_format : str, optional
        Override the format guessed from the extension.
    wrap : bool
        Wrap positions outside the box periodically instead of raising.

    Returns
    -------
    Catalog
    """
    path = Path(path)
    mapping = parse_column_mapping(columns) if isinstance(columns, str) else dict(columns or {})
    tables = _load_tables(path, table_format)
    if "halos" not in tables:
        tables = {"halos": tables["table"]}
    gpath = path
    if galaxies_path is not None:
        gpath = Path(galaxies_path)
        gt = _load_tables(gpath, None)
        tables["galaxies"] = gt.get("galaxies", gt.get("table"))
    if "galaxies" not in tables:
        raise InputError("no galaxy table: give an HDF5 file with a 'galaxies' group or "
                         "galaxies_path= (--galaxies)", path=path)
    attrs = _h5_attrs(path)
    box = box_size if box_size is not None else attrs.get("box_size")
    z = redshift if redshift is not None else attrs.get("redshift")
    if box is None or z is None:
        raise InputError("box size and redshift are needed (--box, --redshift)", path=path)
    cosmo = validate_cosmology(dict(cosmology or MDPL2), path)
    h = little_h(cosmo)
    units = units or {}
    fpos = _unit_factor("position", units.get("position", "Mpc/h"), h, path)
    fmass = _unit_factor("mass", units.get("mass", "Msun/h"), h, path)
    halos = _map_table(tables["halos"], mapping, "halos",
                       ("id", "x", "y", "z", "vx", "vy", "vz", "m200c"), ("r200c",), path)
    gal = _map_table(tables["galaxies"], mapping, "galaxies",
                     ("x", "y", "z", "vx", "vy", "vz", "host_id"), ("is_central", "log10_mstar"),
                     gpath)
    for t in (halos, gal):
        for c in ("x", "y", "z"):
            t[c] = t[c].astype(np.float64) * fpos
    if "r200c" in halos:
        halos["r200c"] = halos["r200c"].astype(np.float64) * fpos
    halos["m200c"] = halos["m200c"].astype(np.float64) * fmass
    if np.any(halos["m200c"] <= 0):
        raise InputError("halo masses must be positive", path=path,
                         column=mapping.get("halos.m200c", mapping.get("m200c", "m200c")))
    if "r200c" not in halos:
        halos["r200c"] = _r200c(halos["m200c"], float(z), cosmo)
    hnames = {c: mapping.get(f"halos.{c}", mapping.get(c, c)) for c in "xyz"}
    gnames = {c: mapping.get(f"galaxies.{c}", mapping.get(c, c)) for c in "xyz"}
    _wrap_or_check(halos, float(box), wrap, path, hnames)
    _wrap_or_check(gal, float(box), wrap, gpath, gnames)
    halos["id"] = _integers(halos["id"], path, mapping.get("halos.id", mapping.get("id", "id")))
    gal["host_id"] = _integers(gal["host_id"], gpath,
                               mapping.get("galaxies.host_id", mapping.get("host_id", "host_id")))
    if "is_central" not in gal:
        gal["is_central"] = _infer_centrals(halos, gal, float(box))
    settings = {"reader": "table", "source": str(path.resolve()),
                "galaxies_source": str(gpath.resolve()), "columns": mapping, "units": units,
                "wrap": wrap}
    return Catalog(halos, gal, float(box), float(z), cosmo, None, settings).validate(path)


def _h5_attrs(path: Path) -> dict[str, float]:
    if path.suffix.lower() not in (".h5", ".hdf5", ".hdf"):
        return {}
    import h5py

    with hdf5_read_errors(path), h5py.File(path, "r") as fh:
        return {k: float(fh.attrs[k]) for k in ("box_size", "redshift") if k in fh.attrs}


def _infer_centrals(halos: dict, gal: dict, box: float) -> np.ndarray:
    order = np.argsort(halos["id"])
    idx = np.searchsorted(halos["id"], gal["host_id"], sorter=order)
    idx = order[np.clip(idx, 0, len(order) - 1)]
    found = halos["id"][idx] == gal["host_id"]
    d2 = np.zeros(len(gal["x"]))
    for c in ("x", "y", "z"):
        d = np.abs(gal[c] - halos[c][idx])
        d = np.minimum(d, box - d)
        d2 += d**2
    return found & (d2 < 1e-8)
