"""Members and centres of real clusters: tables, sky coordinates, cosmology, R and v.

Reading what a user brings to ``dynmass predict``: a members table (any astropy-readable
format) with RA, Dec [deg] and redshift or R [comoving Mpc/h] and v [km/s], a centres table,
and a cosmology; and turning sky coordinates into the projected comoving radius and the
rest-frame line-of-sight velocity about a centre (:func:`sky_to_rv`). Problems name the file,
the column and the rows.

Examples
--------
>>> import numpy as np
>>> R, v = sky_to_rv(np.array([150.0, 150.01]), np.array([2.0, 2.0]), np.array([0.1, 0.101]),
...                  (150.0, 2.0, 0.1), parse_cosmology("MDPL2"))
>>> np.round(R, 3).tolist(), np.round(v, 1).tolist()
([0.0, 0.051], [0.0, 272.5])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynmass.cosmology import C_KMS, MDPL2, to_astropy, validate_cosmology
from dynmass.errors import InputError

# messages of the table helpers keep the logger name of predict, where they are used
log = logging.getLogger("dynmass.predict")

__all__ = ["parse_cosmology", "read_table", "read_centers", "sky_to_rv"]


def parse_cosmology(spec: Any = None, default: dict[str, Any] | None = None):
    """An astropy cosmology from a user specification.

    Parameters
    ----------
    spec : None, str, dict or astropy.cosmology.Cosmology
        ``None``: ``default`` (the model's training cosmology; MDPL2 if that is unknown).
        ``"H0,Om0"`` (flat LambdaCDM, H0 in km/s/Mpc), an astropy realisation name such as
        ``"Planck18"`` or ``"WMAP9"``, ``"MDPL2"``, a parameter dict, or a cosmology object.
    default : dict, optional
        Parameter dict used when ``spec`` is ``None``.
    """
    import astropy.cosmology as ac

    if spec is None:
        return to_astropy(default or MDPL2)
    if isinstance(spec, ac.Cosmology):
        return spec
    if isinstance(spec, Mapping):
        return to_astropy(validate_cosmology(dict(spec)))
    text = str(spec).strip()
    if "," in text:
        parts = text.split(",")
        try:
            values = [float(x) for x in parts]
        except ValueError as exc:
            raise InputError(f"cosmology '{text}' is not 'H0,Om0' numbers", column="cosmology") from exc
        if len(values) not in (2, 3):
            raise InputError(f"cosmology '{text}': give H0,Om0 or H0,Om0,Ob0", column="cosmology")
        keys = ("H0", "Om0", "Ob0")
        return to_astropy(validate_cosmology({"name": text, **dict(zip(keys, values, strict=False))}))
    if text.upper() == "MDPL2":
        return to_astropy(MDPL2)
    names = list(ac.realizations.available)
    if text in names:
        return getattr(ac, text)
    raise InputError(f"unknown cosmology '{text}'; give 'H0,Om0' or one of {names + ['MDPL2']}",
                     column="cosmology")


def read_table(path: str | os.PathLike):
    """Read a table (CSV, ECSV, FITS, Parquet, or any astropy-readable format).

    Parquet is read with pyarrow directly (astropy's reader needs pandas).
    """
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path=path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            pa_table = pq.read_table(path)
            return Table({n: pa_table.column(n).to_numpy(zero_copy_only=False)
                          for n in pa_table.column_names})
        if path.suffix.lower() in (".csv", ".txt"):
            return Table.read(path, format="ascii.csv")
        return Table.read(path)
    except InputError:
        raise
    except Exception as exc:  # astropy/pyarrow raise many types for foreign files
        raise InputError(f"cannot read as a table: {exc}", path=path) from exc


def _find_column(table, name: str) -> str | None:
    """Actual column name matching ``name`` case-insensitively (``None`` if absent)."""
    if name in table.colnames:
        return name
    low = {c.lower(): c for c in table.colnames}
    return low.get(name.lower())


def _float_column(table, name: str, path: object) -> np.ndarray:
    col = table[name]
    try:
        arr = np.ma.asarray(col).astype(float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"values are not numbers: {exc}", path=path, column=name) from exc
    return np.ma.filled(arr, np.nan)


def _id_strings(values: np.ndarray, path: object, column: str) -> np.ndarray:
    """Cluster ids as strings; integral floats lose their '.0' so files match each other."""
    masked = np.ma.getmaskarray(np.ma.asarray(values))
    out = []
    for i, x in enumerate(np.ma.asarray(values).data):
        if masked[i]:
            raise InputError(f"data row {i} has no cluster id", path=path, column=column)
        if isinstance(x, bytes):
            x = x.decode()
        if isinstance(x, (float, np.floating)):
            if not np.isfinite(x):
                raise InputError(f"data row {i} has no cluster id", path=path, column=column)
            if float(x).is_integer():
                x = int(x)
        out.append(str(x).strip())
    return np.array(out, dtype=object)


def read_centers(source: Any, path: object = None) -> dict[str, tuple[float, float, float]]:
    """Cluster centres ``{cluster_id: (ra [deg], dec [deg], z)}`` from a file or table.

    Parameters
    ----------
    source : str, os.PathLike, astropy.table.Table or mapping
        A table with columns ``cluster_id``, ``ra``, ``dec``, ``z`` (case-insensitive), or a
        mapping already in the output form.
    path : optional
        File name for messages when ``source`` is a table.
    """
    if isinstance(source, Mapping):
        return {str(k): tuple(float(x) for x in v) for k, v in source.items()}
    if isinstance(source, (str, os.PathLike)):
        path = source
        source = read_table(source)
    cols = {}
    for name in ("cluster_id", "ra", "dec", "z"):
        found = _find_column(source, name)
        if found is None:
            raise InputError("required column is missing from the centres table", path=path,
                             column=name)
        cols[name] = found
    ids = _id_strings(source[cols["cluster_id"]], path, cols["cluster_id"])
    vals = {k: _float_column(source, cols[k], path) for k in ("ra", "dec", "z")}
    out: dict[str, tuple[float, float, float]] = {}
    for i, cid in enumerate(ids):
        c = (vals["ra"][i], vals["dec"][i], vals["z"][i])
        problem = _coordinate_problem(*(np.array([x]) for x in c))
        if problem is not None:
            raise InputError(f"centre of cluster '{cid}' (data row {i}): {problem[0]}", path=path)
        if cid in out:
            raise InputError(f"cluster '{cid}' appears twice (data row {i})", path=path,
                             column=cols["cluster_id"])
        out[cid] = c
    return out


def _coordinate_problem(ra: np.ndarray, dec: np.ndarray, z: np.ndarray) -> tuple[str, np.ndarray] | None:
    """First problem with sky coordinates and the bad positions, or ``None``."""
    checks = (
        (~np.isfinite(ra), "no RA (missing or non-finite)"),
        (~np.isfinite(dec), "no Dec (missing or non-finite)"),
        (~np.isfinite(z), "no redshift (missing or non-finite)"),
        (np.isfinite(dec) & (np.abs(dec) > 90), "Dec outside [-90, 90] deg"),
        (np.isfinite(ra) & ((ra < 0) | (ra >= 360)), "RA outside [0, 360) deg"),
        (np.isfinite(z) & (z < 0), "redshift < 0"),
    )
    for bad, what in checks:
        if bad.any():
            return what, np.flatnonzero(bad)
    return None


def _rows_text(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"data row{'s' if len(rows) > 1 else ''} {shown}{more} (0-based, header not counted)"




def sky_to_rv(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    z: np.ndarray,
    center: tuple[float, float, float],
    cosmo,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected comoving radius and rest-frame LOS velocity of galaxies about a centre.

    Parameters
    ----------
    ra_deg, dec_deg : numpy.ndarray
        Galaxy coordinates, degrees (ICRS).
    z : numpy.ndarray
        Galaxy redshifts (observed: cosmological and peculiar).
    center : tuple of float
        ``(ra [deg], dec [deg], z_c)`` of the cluster.
    cosmo : astropy.cosmology.Cosmology
        Cosmology for the comoving transverse distance.

    Returns
    -------
    R : numpy.ndarray
        ``D_M(z_c) * theta``, comoving Mpc/h (Hogg 1999, eq. 16).
    v : numpy.ndarray
        ``c (z - z_c) / (1 + z_c)``, km/s.
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ra_c, dec_c, z_c = (float(x) for x in center)
    c0 = SkyCoord(ra_c * u.deg, dec_c * u.deg)
    theta = c0.separation(SkyCoord(np.asarray(ra_deg) * u.deg, np.asarray(dec_deg) * u.deg))
    d_m = cosmo.comoving_transverse_distance(z_c).to_value(u.Mpc) * cosmo.h  # Mpc/h
    R = d_m * theta.to_value(u.rad)
    v = C_KMS * (np.asarray(z, float) - z_c) / (1.0 + z_c)
    return R, v


def _input_mode(table, path, ra_col, dec_col, z_col, r_col, v_col) -> tuple[str, dict[str, str]]:
    """``("sky" | "rv", {role: column})`` of a members table, else :class:`InputError`."""
    sky = {k: _find_column(table, c) for k, c in (("ra", ra_col), ("dec", dec_col), ("z", z_col))}
    if all(sky.values()):
        return "sky", sky
    rv = {k: _find_column(table, c) for k, c in (("R", r_col), ("v", v_col))}
    if all(rv.values()):
        return "rv", rv
    missing = [n for n, c in zip((ra_col, dec_col, z_col), sky.values(), strict=True) if c is None]
    raise InputError(
        f"members need columns '{ra_col}', '{dec_col}', '{z_col}' (degrees, redshift) or "
        f"'{r_col}', '{v_col}' (comoving Mpc/h, km/s); missing: {', '.join(missing)} "
        f"(columns present: {', '.join(table.colnames)})",
        path=path, column=missing[0],
    )


def _centre_map(centers: Any, order: list[str], path: object) -> dict[str, tuple[float, float, float]]:
    """Centres per cluster id from a 3-tuple (one cluster), a mapping or a table/file."""
    if centers is None:
        return {}
    if isinstance(centers, Sequence) and not isinstance(centers, (str, bytes)) and len(centers) == 3 \
            and all(np.isscalar(x) for x in centers):
        if len(order) != 1:
            raise InputError(f"one --center given but the table holds {len(order)} clusters; "
                             "use --centers FILE with cluster_id, ra, dec, z", path=path)
        c = tuple(float(x) for x in centers)
        problem = _coordinate_problem(*(np.array([x]) for x in c))
        if problem is not None:
            raise InputError(f"centre {c}: {problem[0]}")
        return {order[0]: c}
    cmap = read_centers(centers)
    unknown = sorted(set(cmap) - set(order))
    if unknown:
        log.warning("centres given for clusters not in the members table: %s", unknown[:10])
    return cmap
