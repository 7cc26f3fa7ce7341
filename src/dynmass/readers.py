"""Readers for catalogs users bring; each returns a validated :class:`~dynmass.catalog.Catalog`.

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
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import hdf5_read_errors
from dynmass.catalog import Catalog
from dynmass.cosmology import MDPL2, colossus_cosmology, little_h, validate_cosmology
from dynmass.errors import InputError

#: numpy dtype of UniverseMachine's binary ``struct catalog_halo`` (128 bytes, aligned).
UM_BINARY_DTYPE = np.dtype(
    [("id", "<i8"), ("descid", "<i8"), ("upid", "<i8"), ("flags", "<i4"),
     ("uparent_dist", "<f4"), ("pos", "<f4", (6,)), ("vmp", "<f4"), ("lvmp", "<f4"),
     ("mp", "<f4"), ("m", "<f4"), ("v", "<f4"), ("r", "<f4"), ("rank1", "<f4"),
     ("rank2", "<f4"), ("ra", "<f4"), ("rarank", "<f4"), ("A_UV", "<f4"), ("sm", "<f4"),
     ("icl", "<f4"), ("sfr", "<f4"), ("obs_sm", "<f4"), ("obs_sfr", "<f4"), ("obs_uv", "<f4")],
    align=True,
)
#: UniverseMachine flag bit marking rows to ignore.
UM_IGNORE_FLAG = 16

FORMATS = ("universemachine", "universemachine-bin", "hlist", "table")

_POSITION_UNITS = {"mpc/h": ("h", 1.0), "kpc/h": ("h", 1e-3), "mpc": ("noh", 1.0), "kpc": ("noh", 1e-3)}
_MASS_UNITS = {"msun/h": ("h", 1.0), "msun": ("noh", 1.0), "1e10msun/h": ("h", 1e10)}


def read_external(path: str | os.PathLike, fmt: str, **kw: Any) -> Catalog:
    """Dispatch to the reader of ``fmt`` (one of :data:`FORMATS`)."""
    if fmt in ("universemachine", "universemachine-bin"):
        if fmt == "universemachine-bin":
            kw["binary"] = True
        return read_universemachine(path, **kw)
    if fmt == "hlist":
        return read_hlist(path, **kw)
    if fmt == "table":
        return read_table(path, **kw)
    raise InputError(f"unknown format '{fmt}'; choose from {', '.join(FORMATS)}", path=path)


# --------------------------------------------------------------------------- helpers
def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", path=path)
    if path.stat().st_size == 0:
        raise InputError("file is empty", path=path)


def _finite(arr: np.ndarray, path: Path, col: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(
                f"{int(bad.sum())} non-finite (NaN or infinite) values, first at row "
                f"{int(np.flatnonzero(bad)[0])}", path=path, column=col)
    return arr


def _integers(arr: np.ndarray, path: Path, col: str) -> np.ndarray:
    """``arr`` as int64; non-integral values raise :class:`InputError` instead of truncating."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
        r = int(np.flatnonzero(arr != np.round(arr))[0])
        raise InputError(f"non-integer id at row {r} (value {arr[r]})", path=path, column=col)
    return arr.astype(np.int64)


def _wrap_or_check(pos: dict[str, np.ndarray], box: float, wrap: bool, path: Path, names: dict) -> None:
    for c in ("x", "y", "z"):
        a = pos[c]
        if wrap:
            a = np.mod(a, box)
            a[a >= box] = 0.0
            pos[c] = a
        else:
            out = (a < 0) | (a >= box)
            if out.any():
                r = int(np.flatnonzero(out)[0])
                raise InputError(
                    f"{int(out.sum())} positions outside the box [0, {box}) Mpc/h, first at row "
                    f"{r} (value {a[r]}); pass wrap=True (--wrap) to wrap them periodically",
                    path=path, column=names.get(c, c))


def _unit_factor(kind: str, unit: str, h: float, path: Path) -> float:
    table = _POSITION_UNITS if kind == "position" else _MASS_UNITS
    key = unit.strip().lower()
    if key not in table:
        raise InputError(f"unknown {kind} unit '{unit}'; choose from {sorted(table)}", path=path)
    hflag, f = table[key]
    # h-free lengths / masses are converted to h^-1 units by multiplying by h
    return f * (h if hflag == "noh" else 1.0)


def _redshift_from_name(path: Path) -> float | None:
    m = re.search(r"_(\d+\.\d+)\.(?:txt|bin|list|dat)$", path.name)
    if m:
        a = float(m.group(1))
        if 0 < a <= 1.5:
            return 1.0 / a - 1.0
    return None


def mvir_to_m200c(mvir_msunh: np.ndarray, redshift: float, cosmo: dict[str, Any]) -> np.ndarray:
    """Convert Bryan & Norman 1998 virial masses to M200c assuming NFW halos with the
    Diemer & Joyce 2019 concentration (colossus ``changeMassDefinitionCModel``), tabulated
    every 0.05 dex and interpolated.

    Parameters
    ----------
    mvir_msunh : array_like
        M_vir, Msun/h (> 0).
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    numpy.ndarray
        M200c, Msun/h.
    """
    from colossus.halo import mass_adv

    m = np.asarray(mvir_msunh, dtype=float)
    if m.size == 0:
        return m.copy()
    lo, hi = np.log10(m.min()) - 0.05, np.log10(m.max()) + 0.05
    grid = np.arange(lo, hi + 0.05, 0.05)
    with colossus_cosmology(cosmo):
        m200 = np.array([mass_adv.changeMassDefinitionCModel(10**g, redshift, "vir", "200c",
                                                               c_model="diemer19")[0] for g in grid])
    return m * 10 ** np.interp(np.log10(m), grid, np.log10(m200) - grid)


def _r200c(m200c: np.ndarray, z: float, cosmo: dict[str, Any]) -> np.ndarray:
    from dynmass.universe.massfunction import r200c_comoving

    return r200c_comoving(m200c, z, cosmo)


def _parse_header_columns(line: str, path: Path) -> list[str]:
    tokens = line.lstrip("#").split()
    if not tokens:
        raise InputError("the first '#' header line names no columns (foreign file?)", path=path)
    return [re.sub(r"\(\d+\)$", "", t) for t in tokens]


def _read_ascii(path: Path, wanted: dict[str, str], comment: str = "#") -> tuple[dict, list[str], dict]:
    """Read named columns of a whitespace ASCII file whose first line names the columns.

    Returns the columns (by dynmass key), the header comment lines and the name->index map.
    """
    _check_exists(path)
    header: list[str] = []
    with open(path, errors="replace") as fh:
        for line in fh:
            if not line.startswith(comment):
                break
            header.append(line.rstrip("\n"))
    if not header:
        raise InputError("no '#' header line naming the columns (foreign file?)", path=path)
    names = _parse_header_columns(header[0], path)
    index = {n.lower(): i for i, n in enumerate(names)}
    use = {}
    for key, col in wanted.items():
        if col.lower() not in index:
            raise InputError(f"required column is missing from the header ({len(names)} columns: "
                             f"{' '.join(names[:12])}{' ...' if len(names) > 12 else ''})",
                             path=path, column=col)
        use[key] = index[col.lower()]
    cols = sorted(set(use.values()))
    try:
        data = np.loadtxt(path, comments=comment, usecols=cols, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"unreadable rows (truncated or foreign file?): {exc}", path=path) from exc
    if data.shape[0] == 0:
        raise InputError("no data rows", path=path)
    pos = {c: j for j, c in enumerate(cols)}
    out = {key: data[:, pos[i]] for key, i in use.items()}
    return out, header, index


def _header_value(header: list[str], patterns: list[str]) -> float | None:
    for line in header:
        for pat in patterns:
            m = re.search(pat, line, flags=re.IGNORECASE)
            if m:
                return float(m.group(1))
    return None


_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def _header_meta(header: list[str]) -> dict[str, float | None]:
    return {
        "a": _header_value(header, [rf"^#\s*a\s*=\s*{_NUM}"]),
        "Om0": _header_value(header, [rf"Omega_M\s*=\s*{_NUM}", rf"\bOm\s*=\s*{_NUM}"]),
        "h": _header_value(header, [rf"\bh0\s*=\s*{_NUM}", rf"\bh\s*=\s*{_NUM}"]),
        "box": _header_value(header, [rf"box\s*size\s*[:=]\s*{_NUM}"]),
    }


def _resolve_meta(path, meta, box_size, redshift, cosmology) -> tuple[float, float, dict]:
    cosmo = dict(cosmology) if cosmology is not None else dict(MDPL2)
    if cosmology is None and meta.get("Om0") and meta.get("h"):
        cosmo.update(name="from header", Om0=meta["Om0"], H0=100.0 * meta["h"])
    cosmo = validate_cosmology(cosmo, path)
    if redshift is None:
        if meta.get("a"):
            redshift = 1.0 / meta["a"] - 1.0
        else:
            redshift = _redshift_from_name(path)
    if redshift is None:
        raise InputError("redshift unknown: not in the header or file name; pass redshift= "
                         "(--redshift)", path=path)
    box = box_size if box_size is not None else meta.get("box")
    if box is None:
        raise InputError("box size unknown: not in the header; pass box_size= (--box)", path=path)
    return float(box), float(max(redshift, 0.0)), cosmo


# --------------------------------------------------------------------------- UniverseMachine
_UM_ASCII = {"id": "ID", "upid": "UPID", "flags": "Flags", "x": "X", "y": "Y", "z": "Z",
             "vx": "VX", "vy": "VY", "vz": "VZ", "m": "M"}


def read_universemachine(
    path: str | os.PathLike,
    *,
    box_size: float | None = None,
    redshift: float | None = None,
    cosmology: dict[str, Any] | None = None,
    binary: bool | None = None,
    stellar_mass: str = "obs_sm",
    mstar_min: float | None = None,
    wrap: bool = False,
) -> Catalog:
    """Read a UniverseMachine SFR catalog (ASCII ``.txt`` or binary ``.bin``).

    Parameters
    ----------
    path : str or os.PathLike
        ``sfr_catalog_<a>.txt`` or ``.bin``.
    box_size : float, optional
        Box side, comoving Mpc/h (from the header when it says; required for binary files).
    redshift : float, optional
        Default: from the scale factor in the file name.
    cosmology : dict, optional
        Default MDPL2 (or the header's Omega_M and h).
    binary : bool, optional
        Default: by the ``.bin`` suffix.
    stellar_mass : {"obs_sm", "sm"}
        Stellar mass column (Msun) stored as ``log10_mstar`` (zero masses become 0).
    mstar_min : float, optional
        Keep galaxies with log10 stellar mass >= this (log10 Msun).
    wrap : bool
        Wrap positions outside the box periodically instead of raising.

    Returns
    -------
    Catalog
    """
    path = Path(path)
    _check_exists(path)
    binary = path.suffix == ".bin" if binary is None else binary
    sm_key = stellar_mass.lower()
    if sm_key not in ("obs_sm", "sm"):
        raise InputError("stellar_mass must be 'obs_sm' or 'sm'", path=path, column=stellar_mass)
    if binary:
        size = path.stat().st_size
        if size % UM_BINARY_DTYPE.itemsize:
            raise InputError(
                f"size {size} bytes is not a multiple of the {UM_BINARY_DTYPE.itemsize}-byte "
                "UniverseMachine catalog_halo record (truncated or foreign file?)", path=path)
        raw = np.fromfile(path, dtype=UM_BINARY_DTYPE)
        cols = {"id": raw["id"], "upid": raw["upid"], "flags": raw["flags"],
                **{c: raw["pos"][:, k].astype(np.float64) for k, c in enumerate(("x", "y", "z", "vx", "vy", "vz"))},
                "m": raw["m"].astype(np.float64), "sm": raw[sm_key].astype(np.float64)}
        header: list[str] = []
        names = {"x": "pos[0]", "y": "pos[1]", "z": "pos[2]", "vx": "pos[3]", "vy": "pos[4]",
                 "vz": "pos[5]", "m": "m", "sm": sm_key}
    else:
        wanted = dict(_UM_ASCII, sm="obs_SM" if sm_key == "obs_sm" else "SM")
        cols, header, _ = _read_ascii(path, wanted)
        names = wanted
    box, z, cosmo = _resolve_meta(path, _header_meta(header), box_size, redshift, cosmology)
    for key in ("x", "y", "z", "vx", "vy", "vz", "m", "sm"):
        cols[key] = _finite(cols[key], path, names.get(key, key))
    keep = (np.asarray(cols["flags"]).astype(np.int64) & UM_IGNORE_FLAG) == 0
    cols = {k: np.asarray(v)[keep] for k, v in cols.items()}
    if np.any(cols["m"] <= 0):
        raise InputError("halo masses must be positive", path=path, column=names["m"])
    _wrap_or_check(cols, box, wrap, path, names)
    ids = cols["id"].astype(np.int64)
    upid = cols["upid"].astype(np.int64)
    is_host = upid == -1
    m200c = mvir_to_m200c(cols["m"][is_host], z, cosmo)
    halos = {"id": ids[is_host], **{c: cols[c][is_host] for c in ("x", "y", "z", "vx", "vy", "vz")},
             "m200c": m200c, "r200c": _r200c(m200c, z, cosmo), "mvir": cols["m"][is_host]}
    log_ms = np.log10(np.maximum(cols["sm"], 1.0))
    gsel = np.ones(ids.size, bool) if mstar_min is None else log_ms >= mstar_min
    host = np.where(is_host, ids, upid)[gsel]
    host = np.where(np.isin(host, halos["id"]), host, -1)
    galaxies = {**{c: cols[c][gsel] for c in ("x", "y", "z", "vx", "vy", "vz")},
                "host_id": host, "is_central": is_host[gsel], "log10_mstar": log_ms[gsel].astype(np.float32),
                "um_id": ids[gsel]}
    settings = {"reader": "universemachine", "source": str(path.resolve()), "binary": bool(binary),
                "stellar_mass": sm_key, "mstar_min": mstar_min, "wrap": wrap,
                "m200c": "from M_vir via colossus changeMassDefinitionCModel(diemer19)"}
    return Catalog(halos, galaxies, box, z, cosmo, None, settings).validate(path)


# --------------------------------------------------------------------------- hlist
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


# --------------------------------------------------------------------------- generic tables
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
            raise InputError(f"not a readable HDF5 file (truncated or foreign?): {exc}", path=path) from exc
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
               required: tuple[str, ...], optional: tuple[str, ...], path: Path) -> dict[str, np.ndarray]:
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
        when it lies within 1e-4 Mpc/h of its host's centre.
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
    halos = _map_table(tables["halos"], mapping, "halos", ("id", "x", "y", "z", "vx", "vy", "vz", "m200c"),
                       ("r200c",), path)
    gal = _map_table(tables["galaxies"], mapping, "galaxies",
                     ("x", "y", "z", "vx", "vy", "vz", "host_id"), ("is_central", "log10_mstar"), gpath)
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
