"""Masses of real clusters from their member galaxies (RA, Dec, z), with honest intervals.

Steps for every cluster of an input table (a ``cluster_id`` column groups the rows):

1. **Centre** (RA, Dec, z_c): given (``centers``), or estimated from the members
   (:func:`estimate_center`) with the one algorithm of :mod:`dynmass.centring` that the mock
   observations use too: the biweight velocity (Beers, Flynn & Gebhardt 1990, AJ 100, 32)
   and median sky position (in a tangent plane, so RA = 0/360 and the poles are handled) of
   the galaxies in the cylinder about the current centre, iterated from the members' median.
2. **R and v** with an astropy cosmology (default: the one of the model's training data):
   projected comoving radius ``R = D_M(z_c) * theta`` [comoving Mpc/h], ``D_M`` the comoving
   transverse distance (Hogg 1999, astro-ph/9905116, eq. 16) and ``theta`` the angular
   separation from the centre (astropy ``SkyCoord.separation``); rest-frame line-of-sight
   velocity ``v = c (z - z_c) / (1 + z_c)`` [km/s] (Danese, de Zotti & di Tullio 1980, A&A
   82, 322; the convention of the observe stage). Users may give ``R`` and ``v`` directly.
3. The **same cut** as the training mocks (:meth:`dynmass.observing.ObservingSetup.cut`):
   ``R <= aperture`` and ``|v| <= vcut``, in the self-similar frame of the training redshift:
   radii are divided by ``s = aperture_scale(z_c, z_train)`` first
   (:func:`dynmass.redshift.aperture_scale`; ``s = 1`` at the training redshift and within
   2% of it over the validated range of the shipped model), so the comoving aperture is
   ``aperture x s`` (column ``aperture_mpc_h``; ``redshift_frame="fixed"`` keeps ``s = 1``).
4. :class:`dynmass.observations.Observations` via ``from_views`` with the training observe
   settings, and the bundle's ensemble prediction with its calibrated interval
   (:mod:`dynmass.bundle`).

A cluster that cannot be estimated (rows without redshift, coordinates out of range, fewer
than :data:`HARD_MIN_GALAXIES` galaxies in the cylinder, a model failure) gets a message in
the ``error`` column; the other clusters are still estimated. Clusters outside what the model
was trained on get ``flags`` (see :data:`FLAG_DOC`).

**Redshift.** A cluster whose centre redshift lies outside the model's validated redshift
range (:attr:`dynmass.bundle.Bundle.redshift_range`: the snapshot redshifts of its training
and calibration views +/- :data:`REDSHIFT_TOLERANCE`, see :mod:`dynmass.redshift`) gets **no
mass** by default: its ``error`` says so, with the range. With ``allow_extrapolation=True``
(``dynmass predict --allow-extrapolation``) its mass is computed and its ``flags`` hold
``extrapolated_redshift``, so no mass outside the validated range is given without the row
saying so. Clusters given as R, v without a centre redshift cannot be checked; their
``notes`` say so.

Examples
--------
A toy M-sigma bundle (5 folds on 300 hosts), then a cluster of 60 members and 100 field
galaxies placed on the sky at z = 0.117; its centre is estimated from the galaxies:

>>> import shutil, tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from astropy.table import Table
>>> from dynmass.bundle import make_bundle
>>> from dynmass.cosmology import MDPL2, to_astropy
>>> from dynmass.testing.runs import write_fold_run
>>> from dynmass.testing.sky import cluster_box, place_on_sky
>>> from dynmass.testing.worlds import cylinder_views
>>> tmp = Path(tempfile.mkdtemp())
>>> views = cylinder_views(np.random.default_rng(1), n_halos=300, richness=60.0)
>>> bundle = make_bundle(write_fold_run(tmp / "run", views), tmp / "model.h5")
>>> dx, dy, dz, vp = cluster_box(np.random.default_rng(2), 500.0, 60, 100)
>>> ra, dec, z = place_on_sky(dx, dy, dz, vp, 150.0, 2.2, 0.117, to_astropy(MDPL2))
>>> out = predict_members(Table({"ra": ra, "dec": dec, "z": z}), bundle)
>>> str(out["center_source"][0]), int(out["n_gal"][0]) >= 60
('estimated', True)
>>> bool(out["log10_m200c_p16"][0] < out["log10_m200c_p50"][0] < out["log10_m200c_p84"][0])
True
>>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_path, atomic_write_json, file_sha256, provenance
from dynmass.bundle import Bundle, load_bundle
from dynmass.centring import sky_centre
from dynmass.cosmology import from_astropy
from dynmass.errors import InputError
from dynmass.intervals import pct_name
from dynmass.members import (  # noqa: F401 (re-exported: the predict API)
    _centre_map,
    _coordinate_problem,
    _find_column,
    _float_column,
    _id_strings,
    _input_mode,
    _rows_text,
    parse_cosmology,
    read_centers,
    read_table,
    sky_to_rv,
)
from dynmass.observing import ObservingSetup
from dynmass.predict_table import (  # noqa: F401 (FLAG_DOC re-exported: the predict API)
    FLAG_DOC,
    _columns,
    _empty_row,
    _flags,
    _predict_views,
)
from dynmass.redshift import (  # noqa: F401 (re-exported: the predict API)
    REDSHIFT_FRAMES,
    REDSHIFT_TOLERANCE,
    _correct_redshift,
    _redshift_check,
    aperture_scale,
    frame_scale,
    redshift_correction_dex,
)

log = logging.getLogger(__name__)

#: Fewest galaxies in the cylinder for which a mass is attempted at all.
HARD_MIN_GALAXIES = 3
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


# --------------------------------------------------------------------------- centre


def estimate_center(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    z: np.ndarray,
    *,
    aperture: float,
    vcut: float,
    cosmo,
) -> tuple[float, float, float]:
    """Cluster centre from its members, with the algorithm of the mock observations.

    :func:`dynmass.centring.sky_centre`: median sky position and biweight velocity of the
    galaxies in the cylinder about the current centre, iterated from the members' median
    (the same :func:`dynmass.centring.centre_on_members` that ``dynmass observe --center
    members`` runs on the mocks).

    Parameters
    ----------
    ra_deg, dec_deg : numpy.ndarray
        Member coordinates, degrees (ICRS).
    z : numpy.ndarray
        Member redshifts.
    aperture : float
        Aperture radius, comoving Mpc/h.
    vcut : float
        Velocity cut, km/s.
    cosmo : astropy.cosmology.Cosmology
        Cosmology for distances.

    Returns
    -------
    tuple of float
        ``(ra [deg], dec [deg], z_c)``.
    """
    ra_c, dec_c, z_c = sky_centre(ra_deg, dec_deg, z, aperture=aperture, vcut=vcut, cosmo=cosmo)
    R, v = sky_to_rv(ra_deg, dec_deg, z, (ra_c, dec_c, z_c), cosmo)
    if not np.any((R <= aperture) & (np.abs(v) <= vcut)):
        raise InputError("no member lies within the velocity cut and aperture of the "
                         "estimated centre; give the centre explicitly")
    return ra_c, dec_c, z_c


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
    allow_extrapolation: bool = False,
    redshift_frame: str = "self-similar",
    survey: Any = None,
    posterior: Any = None,
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
    allow_extrapolation : bool
        Estimate clusters whose centre redshift lies outside the model's validated redshift
        range (:attr:`dynmass.bundle.Bundle.redshift_range`) too, flagged
        ``extrapolated_redshift``. Default ``False``: such a cluster gets no mass and an
        ``error`` naming its redshift, the range and this setting.
    redshift_frame : {"self-similar", "fixed"}
        How a cluster at redshift z is matched to the training views at z_train.
        ``"self-similar"`` (default): the cylinder's comoving radius is the training aperture
        times ``s = aperture_scale(z, z_train)`` and radii are divided by ``s`` before the
        model sees them (:func:`dynmass.redshift.aperture_scale`: the geometry relative to
        R200c of a cluster with the same velocities); ``"fixed"``: the training comoving
        aperture at every redshift. Both then add the E(z) term. The column
        ``aperture_mpc_h`` gives the comoving aperture used; clusters without a redshift (R, v
        given without a centre) use the training aperture.
    survey : sequence of "NAME=VALUE" or mapping, optional
        The survey that produced the members (:mod:`dynmass.survey_inputs`: ``sampling_rate``,
        ``completeness_edge``, ``selection_limit``, ``velocity_error``). When given, the
        table also holds the *survey-aware* mass, ``log10_m200c_survey_<p>`` and
        ``log10_m200c_msun_survey_<p>`` (:func:`dynmass.predict_survey.add_survey_aware`).
    posterior : Posterior, str, os.PathLike or None
        Survey-aware posterior of this model (default: the shipped one, made for the shipped
        model); only used with ``survey``.
    path : optional
        File name for messages (set automatically when ``table`` is a path).

    Returns
    -------
    astropy.table.Table
        One row per cluster, in order of first appearance; columns ``cluster_id``, ``ra``,
        ``dec``, ``z``, ``center_source``, ``n_gal``, ``sigma_v`` [km/s],
        ``log10_m200c_<p>`` [Msun/h] and ``log10_m200c_msun_<p>`` [Msun, with the
        cosmology's h] for p in 2.5, 16, 50, 84, 97.5 (suffixes p2_5, p16, p50, p84, p97_5),
        ``log10_m200c_mean``, ``log10_m200c_fold_std``, ``aperture_mpc_h`` [comoving Mpc/h],
        ``redshift_correction_dex``, ``flags``, ``error``, ``notes``.
        ``meta`` holds the settings used, among them ``allow_extrapolation`` and
        ``validated_redshift_range``.
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
    setup = ObservingSetup.from_settings(obs_settings, bundle.path)
    aperture, vcut = setup.aperture, setup.vcut
    if min_members is None:
        min_members = int(obs_settings.get("min_members") or bundle.domain["n_gal"][0])
    z_range = bundle.redshift_range
    z_train = obs_settings.get("redshift")
    frame_scale(np.nan, z_train, cosmo, redshift_frame)  # refuse an unknown frame up front

    def scale_of(z: float) -> float:
        return frame_scale(z, z_train, cosmo, redshift_frame)

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
                setup, cosmo, skip_bad_rows, scale_of,
            )
        except (_ClusterError, InputError) as exc:
            row["error"] = str(exc)
            continue
        row.update(ra=centre[0], dec=centre[1], z=centre[2], center_source=source, notes=note)
        s = scale_of(row["z"])
        R = R / s  # radii in the training frame (s = 1 at z_train, or frame "fixed")
        row["aperture_mpc_h"] = aperture * s
        keep = setup.cut(R, v)
        row["n_gal"] = int(keep.sum())
        if row["n_gal"] < HARD_MIN_GALAXIES:
            row["error"] = (f"only {row['n_gal']} galaxies within R <= {aperture * s:.4g} Mpc/h "
                            f"and |v| <= {vcut} km/s of the centre; need at least "
                            f"{HARD_MIN_GALAXIES}")
            continue
        row["sigma_v"] = float(np.std(v[keep]))
        refusal, z_note = _redshift_check(row["z"], z_range, allow_extrapolation)
        row["notes"] = "; ".join(n for n in (row["notes"], z_note) if n)
        if refusal:
            row["error"] = refusal
            continue
        views.append((R[keep], v[keep]))
        view_row.append(len(rows) - 1)

    _predict_views(bundle, views, view_row, rows, obs_settings)
    for row in rows:
        _correct_redshift(row, bundle, z_train, cosmo)
    h = float(cosmo.h)
    for row in rows:
        for p in bundle.percentiles:
            name = pct_name(p)
            row[f"log10_m200c_msun_{name}"] = row[f"log10_m200c_{name}"] - np.log10(h)
        row["flags"] = (";".join(_flags(row, bundle, min_members, z_range))
                        if not row["error"] else "")
    out = Table(rows=[[r[c] for c in _columns(bundle)] for r in rows], names=_columns(bundle))
    out.meta.update(
        model=bundle.path, model_name=bundle.model_name, n_folds=len(bundle.models),
        cosmology=from_astropy(cosmo), h=h, aperture_mpc_h=aperture, vcut_kms=vcut,
        min_members=min_members, input_mode=mode, flags=FLAG_DOC,
        allow_extrapolation=bool(allow_extrapolation), validated_redshift_range=z_range,
        redshift_frame=redshift_frame, z_train=z_train,
        redshift_tolerance=bundle.domain.get("redshift_tolerance", REDSHIFT_TOLERANCE),
        training_domain=bundle.domain,
        interval={k: v for k, v in bundle.interval.items() if k != "files"},
    )
    if survey is not None:
        from dynmass.predict_survey import add_survey_aware

        add_survey_aware(out, bundle, survey, posterior, allow_extrapolation=allow_extrapolation)
    elif posterior is not None:
        raise InputError("a posterior is given but no survey: declare it (survey / --survey)")
    return out


def _cluster_rv(mode, d, idx, centre, setup, cosmo, skip_bad_rows, scale_of=lambda z: 1.0):
    """R [comoving Mpc/h], v [km/s], centre, centre source and a note for one cluster
    (``scale_of(z)``: aperture scale of the redshift frame, for the centring)."""
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
        if centre is None:  # the cylinder of the frame at the members' median redshift
            centre = estimate_center(ra, dec, z, aperture=setup.aperture * scale_of(np.median(z)),
                                     vcut=setup.vcut, cosmo=cosmo)
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


def write_masses(result, path: str | os.PathLike) -> Path:
    """Write a :func:`predict_members` table as CSV, atomically.

    Parameters
    ----------
    result : astropy.table.Table
        Output of :func:`predict_members`.
    path : str or os.PathLike
        CSV file to write.

    Returns
    -------
    pathlib.Path
    """
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
    *,
    allow_extrapolation: bool = False,
    **kwargs: Any,
):
    """:func:`predict_members` on a file; writes ``out`` (CSV) and ``<out stem>.settings.json``.

    The settings file records, among the rest, ``allow_extrapolation`` and the model's
    ``validated_redshift_range``.

    Parameters
    ----------
    members : str or os.PathLike
        Members table (see :func:`predict_members`).
    out : str or os.PathLike
        CSV file of masses to write.
    model : str or os.PathLike, optional
        Bundle file; default the shipped model.
    centers : optional
        Cluster centres (see :func:`predict_members`).
    cosmology : optional
        Cosmology (see :func:`parse_cosmology`).
    allow_extrapolation : bool
        Estimate clusters outside the model's validated redshift range too (flagged
        ``extrapolated_redshift``); default: they get no mass (see :func:`predict_members`).
    **kwargs
        Other keyword arguments of :func:`predict_members`.

    Returns
    -------
    astropy.table.Table
        The result table.
    """
    result = predict_members(members, model, centers, cosmology,
                             allow_extrapolation=allow_extrapolation, **kwargs)
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
                    "log10_m200c_survey_*": "log10 Msun/h, survey-aware (with --survey)",
                    "sigma_v": "km/s", "ra/dec": "deg"},
    }
    atomic_write_json(out.with_name(out.stem + ".settings.json"), settings)
    return result
