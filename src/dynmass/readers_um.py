"""Reader of UniverseMachine SFR catalogs (Behroozi et al. 2019, MNRAS 488, 3143).

ASCII ``sfr_catalog_<a>.txt`` (columns named in the ``#`` header: ID DescID UPID Flags
Uparent_Dist X Y Z VX VY VZ M V MP VMP R ... SM ICL SFR obs_SM ...) or binary
``sfr_catalog_<a>.bin`` (array of UniverseMachine's ``struct catalog_halo``,
:data:`UM_BINARY_DTYPE`). Units: positions comoving Mpc/h, velocities peculiar km/s, halo masses
M_vir (Bryan & Norman 1998) Msun/h, stellar masses Msun. Rows with flag bit 4
(:data:`UM_IGNORE_FLAG`) set are ignored, as UniverseMachine prescribes. Halos: rows with
UPID = -1, M200c converted from M_vir with the Diemer & Joyce 2019 concentration
(:func:`mvir_to_m200c`); galaxies: every row (optionally above a stellar-mass threshold), host =
the row itself for centrals, UPID for satellites.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dynmass.catalog import Catalog
from dynmass.cosmology import colossus_cosmology
from dynmass.errors import InputError
from dynmass.readers_ascii import _header_meta, _read_ascii, _resolve_meta
from dynmass.readers_columns import _check_exists, _finite, _r200c, _wrap_or_check

__all__ = ["UM_BINARY_DTYPE", "UM_IGNORE_FLAG", "mvir_to_m200c", "read_universemachine"]

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
                                                               c_model="diemer19")[0]
                         for g in grid])
    return m * 10 ** np.interp(np.log10(m), grid, np.log10(m200) - grid)


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
                **{c: raw["pos"][:, k].astype(np.float64)
                   for k, c in enumerate(("x", "y", "z", "vx", "vy", "vz"))},
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
                "host_id": host, "is_central": is_host[gsel],
                "log10_mstar": log_ms[gsel].astype(np.float32),
                "um_id": ids[gsel]}
    settings = {"reader": "universemachine", "source": str(path.resolve()), "binary": bool(binary),
                "stellar_mass": sm_key, "mstar_min": mstar_min, "wrap": wrap,
                "m200c": "from M_vir via colossus changeMassDefinitionCModel(diemer19)"}
    return Catalog(halos, galaxies, box, z, cosmo, None, settings).validate(path)
