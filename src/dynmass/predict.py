"""Masses of real clusters from their member galaxies (RA, Dec, z), with honest intervals.

Steps for every cluster of an input table (a ``cluster_id`` column groups the rows):

1. **Centre** (RA, Dec, z_c): given (``centers``), or estimated from the members
   (:func:`estimate_center`): z_c is the biweight location (Beers, Flynn & Gebhardt 1990,
   AJ 100, 32) of the member redshifts, iteratively restricted to galaxies within the
   velocity cut and aperture of the current centre; the sky centre is the component-wise
   median of the members' offsets in a tangent frame about the current centre (handles
   RA = 0/360 and the poles), iterated likewise until both change by less than 1e-7.
2. **R and v** with an astropy cosmology (default: the one of the model's training data):
   projected comoving radius ``R = D_M(z_c) * theta`` [comoving Mpc/h], ``D_M`` the comoving
   transverse distance (Hogg 1999, astro-ph/9905116, eq. 16) and ``theta`` the angular
   separation from the centre (astropy ``SkyCoord.separation``); rest-frame line-of-sight
   velocity ``v = c (z - z_c) / (1 + z_c)`` [km/s] (Danese, de Zotti & di Tullio 1980, A&A
   82, 322; the convention of the observe stage). Users may give ``R`` and ``v`` directly.
3. The **same cuts** as the training mocks: ``R <= aperture`` and ``|v| <= vcut``.
4. :class:`dynmass.observations.Observations` via ``from_views`` with the training observe
   settings, and the bundle's ensemble prediction with its calibrated interval
   (:mod:`dynmass.bundle`).

A cluster that cannot be estimated (rows without redshift, coordinates out of range, fewer
than :data:`HARD_MIN_GALAXIES` galaxies in the cylinder, a model failure) gets a message in
the ``error`` column; the other clusters are still estimated. Clusters outside what the model
was trained on get ``flags`` (see :data:`FLAG_DOC`).
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_path, atomic_write_json, file_sha256, provenance
from dynmass.bundle import Bundle, load_bundle
from dynmass.cosmology import C_KMS, MDPL2, from_astropy, to_astropy, validate_cosmology
from dynmass.errors import InputError
from dynmass.intervals import pct_name
from dynmass.observations import from_views

log = logging.getLogger(__name__)

#: Fewest galaxies in the cylinder for which a mass is attempted at all.
HARD_MIN_GALAXIES = 3
#: Largest |z_c - z_train| before the ``redshift`` flag is raised.
REDSHIFT_TOLERANCE = 0.05
#: What each flag means.
FLAG_DOC: dict[str, str] = {
    "redshift": f"cluster redshift differs from the training redshift by > {REDSHIFT_TOLERANCE}",
    "n_gal": "number of galaxies in the cylinder outside the training range",
    "sigma_v": "velocity spread (std of v, km/s) outside the training range",
    "few_members": "fewer galaxies than the training minimum (min_members)",
    "mass": "median mass outside the calibrated mass range (where interval coverage was "
            "checked), or 68% interval reaching the end of the belt (truncated there; the "
            "true mass may lie beyond it)",
    "center_estimated": "centre estimated from members while the model trained on true centres",
}
DEFAULT_MODEL_RESOURCE = "data/default_model.h5"


# --------------------------------------------------------------------------- model, cosmology


def default_model_path() -> Path:
    """Path of the default bundle shipped in the package (``dynmass/data/default_model.h5``).

    Raises
    ------
    InputError
        When this installation ships no default model, with the commands that make one.
    """
    res = importlib.resources.files("dynmass").joinpath(DEFAULT_MODEL_RESOURCE)
    if not res.is_file():
        raise InputError(
            "no default model is shipped in this installation. Make one with "
            "`dynmass reproduce` (trains on the embedded default universe; see the README) and "
            "`dynmass bundle RUN_DIR -o src/dynmass/data/default_model.h5`, or pass "
            "--model BUNDLE.h5",
            path=str(res),
        )
    return Path(str(res))


def resolve_bundle(model: Bundle | str | os.PathLike | None) -> Bundle:
    """A :class:`Bundle` from an object, a bundle file, or ``None`` (the shipped default)."""
    if isinstance(model, Bundle):
        return model
    return load_bundle(default_model_path() if model is None else model)


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


# --------------------------------------------------------------------------- tables


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


# --------------------------------------------------------------------------- geometry


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


def estimate_center(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    z: np.ndarray,
    *,
    aperture: float,
    vcut: float,
    cosmo,
    max_iter: int = 50,
) -> tuple[float, float, float]:
    """Cluster centre from its members: biweight redshift and median sky position, iterated.

    Parameters
    ----------
    ra_deg, dec_deg, z : numpy.ndarray
        Member coordinates (deg) and redshifts.
    aperture : float
        Aperture radius, comoving Mpc/h.
    vcut : float
        Velocity cut, km/s.
    cosmo : astropy.cosmology.Cosmology
        Cosmology for distances.
    max_iter : int
        Most iterations.

    Returns
    -------
    tuple of float
        ``(ra [deg], dec [deg], z_c)``.

    Notes
    -----
    Start: z_c = median redshift; sky centre = median offset about the normalised mean
    direction of all members. Then repeat: select members with ``|v| <= vcut`` and (after the
    first pass) ``R <= aperture``; z_c = biweight location of their redshifts (Beers et al.
    1990); sky centre = component-wise median of their offsets in the tangent frame of the
    current centre; stop when z_c changes by < 1e-7 and the centre moves by < 1e-7 deg.
    """
    import astropy.units as u
    from astropy.coordinates import CartesianRepresentation, SkyCoord, UnitSphericalRepresentation
    from astropy.stats import biweight_location

    ra_deg, dec_deg, z = (np.asarray(a, float) for a in (ra_deg, dec_deg, z))
    coords = SkyCoord(ra_deg * u.deg, dec_deg * u.deg)
    mean_dir = CartesianRepresentation(coords.cartesian.xyz.mean(axis=1))
    rep = mean_dir.represent_as(UnitSphericalRepresentation)
    centre = _median_centre(coords, SkyCoord(rep.lon, rep.lat))
    z_c = float(np.median(z))
    use_aperture = False
    for _ in range(max_iter):
        R, v = sky_to_rv(ra_deg, dec_deg, z, (centre.ra.deg, centre.dec.deg, z_c), cosmo)
        sel = np.abs(v) <= vcut
        if use_aperture:
            sel &= R <= aperture
        if sel.sum() < 1:
            raise InputError("no member lies within the velocity cut and aperture of the "
                             "estimated centre; give the centre explicitly")
        new_z = float(biweight_location(z[sel])) if sel.sum() > 2 else float(np.median(z[sel]))
        new_centre = _median_centre(coords[sel], centre)
        moved = centre.separation(new_centre).deg
        done = use_aperture and abs(new_z - z_c) < 1e-7 and moved < 1e-7
        z_c, centre, use_aperture = new_z, new_centre, True
        if done:
            break
    return float(centre.ra.deg), float(centre.dec.deg), z_c


def _median_centre(coords, centre):
    """Component-wise median of ``coords`` offsets in the tangent frame of ``centre``."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    frame = centre.skyoffset_frame()
    off = coords.transform_to(frame)
    lon = np.median(off.lon.wrap_at("180d").deg)
    lat = np.median(off.lat.deg)
    return SkyCoord(lon * u.deg, lat * u.deg, frame=frame).icrs


# --------------------------------------------------------------------------- prediction


class _ClusterError(Exception):
    """A problem confined to one cluster (reported in its ``error`` column)."""


def predict_members(
    table,
    model: Bundle | str | os.PathLike | None = None,
    centers: Any = None,
    cosmology: Any = None,
    *,
    ra_col: str = "ra",
    dec_col: str = "dec",
    z_col: str = "z",
    cluster_col: str = "cluster_id",
    r_col: str = "R",
    v_col: str = "v",
    min_members: int | None = None,
    skip_bad_rows: bool = False,
    path: object = None,
):
    """Mass estimates of one or many clusters from their member galaxies.

    Parameters
    ----------
    table : astropy.table.Table, str or os.PathLike
        Members: ``ra``, ``dec`` [deg] and ``z``, or ``R`` [comoving Mpc/h] and ``v`` [km/s];
        optionally ``cluster_id`` (all rows are one cluster without it). Files are read with
        :func:`read_table` (CSV, ECSV, FITS, Parquet).
    model : Bundle, str, os.PathLike or None
        A bundle (see :mod:`dynmass.bundle`); ``None`` uses the shipped default model.
    centers : None, (ra, dec, z), mapping, table or file
        Cluster centres. ``None`` estimates every centre from the members
        (:func:`estimate_center`); a 3-tuple is the centre of the only cluster; a mapping or a
        table/file with ``cluster_id, ra, dec, z`` gives centres per cluster (clusters missing
        from it are estimated, ``center_source`` says which).
    cosmology : None, str, dict or astropy cosmology
        See :func:`parse_cosmology`; default: the training cosmology of the model.
    ra_col, dec_col, z_col, cluster_col, r_col, v_col : str
        Column names (matched case-insensitively).
    min_members : int, optional
        Below this many galaxies the ``few_members`` flag is raised (default: the training
        ``min_members``, else the smallest training view).
    skip_bad_rows : bool
        Drop members without coordinates/redshift or out of range (noted in ``notes``)
        instead of refusing the cluster.
    path : optional
        File name for messages (set automatically when ``table`` is a path).

    Returns
    -------
    astropy.table.Table
        One row per cluster, in order of first appearance; columns ``cluster_id``, ``ra``,
        ``dec``, ``z``, ``center_source``, ``n_gal``, ``sigma_v`` [km/s],
        ``log10_m200c_<p>`` [Msun/h] and ``log10_m200c_msun_<p>`` [Msun, with the
        cosmology's h] for p in 2.5, 16, 50, 84, 97.5 (suffixes p2_5, p16, p50, p84, p97_5),
        ``log10_m200c_mean``, ``log10_m200c_fold_std``, ``flags``, ``error``, ``notes``.
        ``meta`` holds the settings used.
    """
    from astropy.table import Table

    if isinstance(table, (str, os.PathLike)):
        path = table
        table = read_table(table)
    bundle = resolve_bundle(model)
    obs_settings = bundle.obs_settings
    cosmo = parse_cosmology(cosmology, obs_settings.get("cosmology"))
    mode, cols = _input_mode(table, path, ra_col, dec_col, z_col, r_col, v_col)
    ccol = _find_column(table, cluster_col)
    ids = (_id_strings(table[ccol], path, ccol) if ccol is not None
           else np.full(len(table), "0", dtype=object))
    if len(table) == 0:
        raise InputError("the members table has no rows", path=path)
    data = {k: _float_column(table, c, path) for k, c in cols.items()}
    order = list(dict.fromkeys(ids.tolist()))
    centre_map = _centre_map(centers, order, path)
    aperture, vcut = float(obs_settings["aperture"]), float(obs_settings["vcut"])
    if min_members is None:
        min_members = int(obs_settings.get("min_members") or bundle.domain["n_gal"][0])

    rows: list[dict[str, Any]] = []
    views: list[tuple[np.ndarray, np.ndarray]] = []
    view_row: list[int] = []
    for cid in order:
        idx = np.flatnonzero(ids == cid)
        row = _empty_row(cid, bundle)
        rows.append(row)
        try:
            R, v, centre, source, note = _cluster_rv(
                mode, {k: a[idx] for k, a in data.items()}, idx, centre_map.get(cid),
                aperture, vcut, cosmo, skip_bad_rows,
            )
        except (_ClusterError, InputError) as exc:
            row["error"] = str(exc)
            continue
        row.update(ra=centre[0], dec=centre[1], z=centre[2], center_source=source, notes=note)
        keep = (R <= aperture) & (np.abs(v) <= vcut)
        row["n_gal"] = int(keep.sum())
        if row["n_gal"] < HARD_MIN_GALAXIES:
            row["error"] = (f"only {row['n_gal']} galaxies within R <= {aperture} Mpc/h and "
                            f"|v| <= {vcut} km/s of the centre; need at least {HARD_MIN_GALAXIES}")
            continue
        row["sigma_v"] = float(np.std(v[keep]))
        views.append((R[keep], v[keep]))
        view_row.append(len(rows) - 1)

    _predict_views(bundle, views, view_row, rows, obs_settings)
    h = float(cosmo.h)
    for row in rows:
        for p in bundle.percentiles:
            name = pct_name(p)
            row[f"log10_m200c_msun_{name}"] = row[f"log10_m200c_{name}"] - np.log10(h)
        row["flags"] = ";".join(_flags(row, bundle, min_members)) if not row["error"] else ""
    out = Table(rows=[[r[c] for c in _columns(bundle)] for r in rows], names=_columns(bundle))
    out.meta.update(
        model=bundle.path, model_name=bundle.model_name, n_folds=len(bundle.models),
        cosmology=from_astropy(cosmo), h=h, aperture_mpc_h=aperture, vcut_kms=vcut,
        min_members=min_members, input_mode=mode, flags=FLAG_DOC,
        training_domain=bundle.domain,
        interval={k: v for k, v in bundle.interval.items() if k != "files"},
    )
    return out


def _input_mode(table, path, ra_col, dec_col, z_col, r_col, v_col) -> tuple[str, dict[str, str]]:
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


def _cluster_rv(mode, d, idx, centre, aperture, vcut, cosmo, skip_bad_rows):
    """R [Mpc/h], v [km/s], centre, centre source and a note for one cluster."""
    note = ""
    if mode == "sky":
        ra, dec, z = d["ra"], d["dec"], d["z"]
        good = np.ones(len(ra), dtype=bool)
        while (problem := _coordinate_problem(ra[good], dec[good], z[good])) is not None:
            what, pos = problem
            bad_rows = idx[np.flatnonzero(good)[pos]]
            if not skip_bad_rows:
                raise _ClusterError(f"{_rows_text(bad_rows)}: {what}")
            good[np.flatnonzero(good)[pos]] = False
            note += f"skipped {_rows_text(bad_rows)}: {what}; "
        ra, dec, z = ra[good], dec[good], z[good]
        if len(ra) == 0:
            raise _ClusterError("no usable members")
        if centre is None:
            centre = estimate_center(ra, dec, z, aperture=aperture, vcut=vcut, cosmo=cosmo)
            source = "estimated"
        else:
            source = "given"
        R, v = sky_to_rv(ra, dec, z, centre, cosmo)
        return R, v, centre, source, note.rstrip("; ")
    R, v = d["R"], d["v"]
    bad = ~np.isfinite(R) | ~np.isfinite(v) | (np.nan_to_num(R, nan=0.0) < 0)
    if bad.any():
        if not skip_bad_rows:
            raise _ClusterError(f"{_rows_text(idx[bad])}: R or v missing, non-finite or R < 0")
        note = f"skipped {_rows_text(idx[bad])}: R or v missing, non-finite or R < 0"
    centre = centre if centre is not None else (np.nan, np.nan, np.nan)
    return R[~bad], v[~bad], centre, "given R, v", note


def _empty_row(cid: str, bundle: Bundle) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cluster_id": cid, "ra": np.nan, "dec": np.nan, "z": np.nan, "center_source": "",
        "n_gal": 0, "sigma_v": np.nan, "log10_m200c_mean": np.nan,
        "log10_m200c_fold_std": np.nan, "flags": "", "error": "", "notes": "",
    }
    for p in bundle.percentiles:
        row[f"log10_m200c_{pct_name(p)}"] = np.nan
    return row


def _columns(bundle: Bundle) -> list[str]:
    pcts = [pct_name(p) for p in bundle.percentiles]
    return (["cluster_id", "ra", "dec", "z", "center_source", "n_gal", "sigma_v"]
            + [f"log10_m200c_{p}" for p in pcts] + [f"log10_m200c_msun_{p}" for p in pcts]
            + ["log10_m200c_mean", "log10_m200c_fold_std", "flags", "error", "notes"])


def _predict_views(bundle, views, view_row, rows, obs_settings) -> None:
    """Predict all good clusters at once; on failure, one at a time to isolate the culprit."""
    if not views:
        return
    obs = from_views(views, dict(obs_settings))
    try:
        results = [bundle.predict(obs)]
        groups = [list(range(len(views)))]
    except Exception as exc:  # a model may fail on one odd cluster; isolate it
        log.warning("batch prediction failed (%s); predicting clusters one by one", exc)
        results, groups = [], []
        for i in range(len(views)):
            try:
                results.append(bundle.predict(obs.subset([i])))
                groups.append([i])
            except Exception as one_exc:
                rows[view_row[i]]["error"] = f"model failed: {type(one_exc).__name__}: {one_exc}"
    for res, group in zip(results, groups, strict=True):
        for j, i in enumerate(group):
            row = rows[view_row[i]]
            for key, arr in res.items():
                row[key] = float(arr[j])


def _flags(row: dict[str, Any], bundle: Bundle, min_members: int) -> list[str]:
    dom = bundle.domain
    flags = []
    z_train = dom.get("redshift")
    if z_train is not None and np.isfinite(row["z"]) and abs(row["z"] - z_train) > REDSHIFT_TOLERANCE:
        flags.append("redshift")
    if dom.get("n_gal") and not dom["n_gal"][0] <= row["n_gal"] <= dom["n_gal"][1]:
        flags.append("n_gal")
    sv = dom.get("sigma_v")
    if sv and not sv[0] <= row["sigma_v"] <= sv[1]:
        flags.append("sigma_v")
    if row["n_gal"] < min_members:
        flags.append("few_members")
    if np.isfinite(row["log10_m200c_p50"]) and _mass_flag(row, bundle):
        flags.append("mass")
    if row["center_source"] == "estimated" and bundle.obs_settings.get("center", "true") == "true":
        flags.append("center_estimated")
    return flags


def _mass_flag(row: dict[str, Any], bundle: Bundle) -> bool:
    """True when the median lies outside the calibrated range or the 68% interval is clipped."""
    dom = bundle.domain
    cal = dom.get("log10_m200c_calibrated") or dom.get("log10_m200c")
    if cal and not cal[0] <= row["log10_m200c_p50"] <= cal[1]:
        return True
    if bundle.interval.get("method", "neyman") == "neyman" and len(bundle.grid):
        eps = 1e-6  # the Neyman interval is clipped to the ends of the belt
        lo, hi = float(bundle.grid[0]), float(bundle.grid[-1])
        return bool(row["log10_m200c_p16"] <= lo + eps or row["log10_m200c_p84"] >= hi - eps)
    return False


def write_masses(result, path: str | os.PathLike) -> Path:
    """Write a :func:`predict_members` table as CSV, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        result.write(tmp, format="ascii.csv")
    return path


def predict_file(
    members: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    centers: Any = None,
    cosmology: Any = None,
    **kwargs: Any,
):
    """:func:`predict_members` on a file; writes ``out`` (CSV) and ``<out stem>.settings.json``.

    Returns
    -------
    astropy.table.Table
        The result table.
    """
    result = predict_members(members, model, centers, cosmology, **kwargs)
    out = Path(out)
    write_masses(result, out)
    model_path = result.meta["model"]
    settings = {
        **provenance(), **{k: v for k, v in result.meta.items()},
        "members": str(Path(members).resolve()),
        "members_sha256": file_sha256(members),
        "model_sha256": file_sha256(model_path) if model_path else None,
        "centers": str(centers) if centers is not None else "estimated from members",
        "columns": {"log10_m200c_*": "log10 Msun/h", "log10_m200c_msun_*": "log10 Msun",
                    "sigma_v": "km/s", "ra/dec": "deg"},
    }
    atomic_write_json(out.with_name(out.stem + ".settings.json"), settings)
    return result
