"""Mock observations: every galaxy in a cylinder along the line of sight of each cluster.

For each host halo above a mass cut and each of its lines of sight, a *view* keeps every
galaxy of the catalog (members and interlopers alike) within a projected comoving radius
``aperture`` [Mpc/h] of the cluster centre and within ``|v| <= vcut`` [km/s] of the cluster in
line-of-sight velocity, as a spectroscopic survey would (Ho et al. 2019, ApJ 887, 25, sec. 2).

Physics
-------
* Lines of sight: the x, y, z axes of the box first, then directions of a Fibonacci
  hemisphere (Gonzalez 2010) turned by a random rotation per host.
* Velocity: the galaxy's cosmological redshift follows from its comoving line-of-sight offset
  from the cluster (the cluster sits at the snapshot redshift, as in Ho et al. 2019; Hogg 1999
  for the distance-redshift relation); peculiar velocities combine as
  ``1 + z_obs = (1 + z_cos)(1 + u/c)`` and ``v = c (z_obs - z_c) / (1 + z_c)``, ``z_c`` the
  cluster's observed redshift. To first order ``v = u_g - u_c + H(z) d / (h (1 + z))``
  (``d`` comoving Mpc/h).
* The box is periodic in all three directions (each galaxy at its nearest periodic image).
* ``is_member``: the galaxy's ``host_id`` equals the cluster's halo ``id``.

Scale: views are cut in chunks of nearby clusters; each chunk only needs the galaxies of its
region of the box (padded by the cylinder's depth), queried with periodic
:class:`scipy.spatial.cKDTree` trees, so memory per chunk is bounded. Chunks run here or on Dask
workers with byte-identical results.

Examples
--------
Twelve halos with 25 members each in a 60 Mpc/h box with 6,000 field galaxies, seen along
x, y and z with the "small" cylinder, centred on the galaxies as an observer would:

>>> import numpy as np
>>> from dynmass.observing import ObservingSetup
>>> from dynmass.testing.catalogs import random_universe
>>> cat = random_universe(np.random.default_rng(0))
>>> setup = ObservingSetup.preset("small", center="members", min_members=3)
>>> obs = observe(cat, setup, min_mass=1e13, n_los=3, seed=1)
>>> obs.n_views, obs.settings["center"], bool(np.all(obs.R <= 1.1))
(36, 'members', True)
>>> bool(obs.is_member.mean() > 0.5)  # mostly members, some interlopers
True
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dynmass import _observe_kernels as K
from dynmass._io import file_sha256
from dynmass._observe_chunks import (
    _assemble,
    _chunk_views,
    _client,
    _GalaxyGrid,
    _run_dask,
    _run_serial,
    _tasks,
)
from dynmass.catalog import Catalog, read_catalog
from dynmass.centring import PAD_R, PAD_V
from dynmass.errors import InputError
from dynmass.observations import Observations, _ragged_rows, ragged_std
from dynmass.observe_check import R_OVER_R200_EDGES, check_observations_file
from dynmass.observe_plan import FLAT_BIN_DEX, FLAT_DENSITY, MAX_LOS, flat_los_counts, plan_views
from dynmass.observing import PRESETS, SELECTION_KEYS, ObservingSetup, value_range
from dynmass.selection import check_selection_column, selection_sense

__all__ = ["PRESETS", "ObservingSetup", "observe", "observe_file", "resolve_setup",
           "check_observations_file", "plan_views", "flat_los_counts", "FLAT_BIN_DEX",
           "FLAT_DENSITY", "MAX_LOS", "R_OVER_R200_EDGES"]

log = logging.getLogger("dynmass.observe")

_GALAXY_COLUMNS = ["x", "y", "z", "vx", "vy", "vz", "host_id"]


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------
def _check_options(setup: ObservingSetup, min_mass: float, n_los: int, seed: int,
                   max_los: int, flat_bin_dex: float, flat_target: int | None,
                   flat_density: float, workers: int | None, dask_scheduler: Any,
                   chunk_size: int) -> None:
    """Raise :class:`InputError` for an option outside its sense (the setup checks itself)."""

    def bad(msg: str, col: str) -> InputError:
        return InputError(msg, column=col)

    if not (np.isfinite(min_mass) and min_mass >= 0):
        raise bad(f"min_mass={min_mass} must be finite and >= 0 (Msun/h)", "min_mass")
    for name, val, lo in (("n_los", n_los, 1),
                          ("max_los", max_los, 1), ("chunk_size", chunk_size, 1),
                          ("seed", seed, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise bad(f"{name}={val!r} must be an integer >= {lo}", name)
    if max_los < n_los:
        raise bad(f"max_los={max_los} must be >= n_los={n_los}", "max_los")
    if not (np.isfinite(flat_bin_dex) and flat_bin_dex > 0):
        raise bad(f"flat_bin_dex={flat_bin_dex} must be > 0 (dex)", "flat_bin_dex")
    if flat_target is not None and (not isinstance(flat_target, (int, np.integer))
                                    or flat_target < 1):
        raise bad(f"flat_target={flat_target!r} must be an integer >= 1 (views per bin)",
                  "flat_target")
    if not (np.isfinite(flat_density) and flat_density > 0):
        raise bad(f"flat_density={flat_density} must be > 0 ((Mpc/h)^-3 dex^-1)", "flat_density")
    if workers is not None and dask_scheduler is not None:
        raise bad("give either workers (a local Dask cluster) or dask_scheduler, not both",
                  "workers")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise bad(f"workers={workers!r} must be an integer >= 1", "workers")


# --------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------
def resolve_setup(setup: ObservingSetup | None = None, **fields: Any) -> ObservingSetup:
    """``setup`` (default :class:`~dynmass.observing.ObservingSetup`) with ``fields`` not None.

    Parameters
    ----------
    setup : ObservingSetup, optional
        Starting setup.
    **fields
        Fields of :class:`~dynmass.observing.ObservingSetup` to override; ``None`` keeps.

    Returns
    -------
    ObservingSetup
    """
    if setup is not None and not isinstance(setup, ObservingSetup):
        raise InputError(f"setup must be an ObservingSetup, not {type(setup).__name__}",
                         column="setup")
    given = {k: v for k, v in fields.items() if v is not None}
    base = setup if setup is not None else ObservingSetup()
    return base.replace(**given) if given else base


def observe(
    catalog: Catalog,
    setup: ObservingSetup | None = None,
    *,
    aperture: float | None = None,
    vcut: float | None = None,
    min_mass: float = 10**13.5,
    min_members: int | None = None,
    n_los: int = 3,
    flat_mass_function: bool = False,
    flat_target: int | None = None,
    flat_bin_dex: float = FLAT_BIN_DEX,
    flat_density: float = FLAT_DENSITY,
    max_los: int = MAX_LOS,
    sampling_rate: float | None = None,
    center: str | None = None,
    seed: int = 0,
    workers: int | None = None,
    dask_scheduler: Any = None,
    chunk_size: int = 500,
    progress: bool = False,
    universe_sha256: str | None = None,
) -> Observations:
    """Mock observations of every host halo above ``min_mass`` along its lines of sight.

    Parameters
    ----------
    catalog : Catalog
        The universe: halos and galaxies in a periodic box.
    setup : ObservingSetup, optional
        The observing setup (cylinder, centring, sampling, fewest galaxies); default
        ``ObservingSetup()`` (the paper's cylinder, true centres, every galaxy, 10 galaxies).
        ``aperture``, ``vcut``, ``min_members``, ``sampling_rate`` and ``center`` given here
        override its fields.
    aperture : float, optional
        Cylinder radius, projected comoving Mpc/h (Ho et al. 2019: 1.6).
    vcut : float, optional
        Velocity cut, km/s: galaxies with ``|v| <= vcut`` relative to the cluster (2200).
    min_mass : float
        Hosts with ``m200c >= min_mass`` [Msun/h] are observed (10^13.5).
    min_members : int, optional
        Views with fewer galaxies (members plus interlopers, after sampling) are dropped; the
        number dropped is logged and recorded in ``settings["n_views_dropped"]``.
    n_los : int
        Lines of sight per host: the x, y, z axes, then random-rotated Fibonacci directions.
        With ``flat_mass_function`` the fewest views a host gets (the paper: 3).
    flat_mass_function : bool
        View massive hosts along more lines of sight and thin crowded mass bins so that views
        are near flat in log10 M (see :func:`flat_los_counts` and :func:`plan_views`).
    flat_target : int, optional
        Views per mass bin; default ``flat_density * box_size**3 * flat_bin_dex``.
    flat_bin_dex : float
        Mass bin width, dex (0.02 as in the paper).
    flat_density : float
        Flat level in views per (Mpc/h)^3 per dex (10^-5.2, giving the paper's 126 per 0.02 dex
        in MDPL2's 1 (Gpc/h)^3).
    max_los : int
        Most views per host (80).
    sampling_rate : float, optional
        Keep each galaxy of a view with this probability (seeded per view), in (0, 1]. The
        other survey settings (radial completeness, targets per cluster, velocity errors,
        settings drawn per view, and the galaxy selection by a property column,
        :mod:`dynmass.selection`) are given with ``setup``.
    center : {"true", "members"}, optional
        Cylinder about the true halo centre and velocity, or about an observer's estimate
        from the galaxies (:func:`dynmass.centring.centre_on_members`, the algorithm of
        ``dynmass predict``).
    seed : int
        Seed of every random step (extra directions, flat-mass-function thinning, sampling).
    workers : int, optional
        Run on a local Dask cluster of this many single-threaded worker processes.
    dask_scheduler : str or distributed.Client, optional
        Run on this Dask scheduler (address) or client.
    chunk_size : int
        Views per chunk, about (results do not depend on it).
    progress : bool
        Show a progress bar.
    universe_sha256 : str, optional
        Checksum of the universe file, recorded in the settings.

    Returns
    -------
    Observations
        One view per (host, line of sight) kept, in order of halo row then line of sight.

    Raises
    ------
    InputError
        An option outside its sense, a catalog that fails validation, or a selection whose
        column the catalog lacks or that leaves no galaxy in any view.
    """
    setup = resolve_setup(setup, aperture=aperture, vcut=vcut, min_members=min_members,
                          sampling_rate=sampling_rate, center=center)
    aperture, vcut, min_members = setup.aperture, setup.vcut, setup.min_members
    sampling_rate, center = setup.sampling_rate, setup.center
    _check_options(setup, min_mass, n_los, seed, max_los, flat_bin_dex, flat_target,
                   flat_density, workers, dask_scheduler, chunk_size)
    catalog.validate()
    box = float(catalog.box_size)
    if aperture >= box / 2:
        raise InputError(f"aperture={aperture} Mpc/h must be < half the box ({box / 2} Mpc/h)",
                         column="aperture")
    z = float(catalog.redshift)
    plan = plan_views(catalog, min_mass=min_mass, n_los=n_los,
                      flat_mass_function=flat_mass_function, flat_target=flat_target,
                      flat_bin_dex=flat_bin_dex, flat_density=flat_density, max_los=max_los,
                      seed=seed)
    n_views = plan["halo_row"].size
    halos, gals = catalog.halos, catalog.galaxies

    gal = {"pos": catalog.galaxy_positions().astype(float),
           "vel": catalog.galaxy_velocities().astype(float),
           "host": np.asarray(gals["host_id"], dtype=np.int64)}
    selection = None  # the galaxy selection (dynmass.selection), applied in the kernel
    if setup.selection_column is not None:
        check_selection_column(gals, setup.selection_column, setup.selection_limit)
        selection = {k: setup.to_settings()[k] for k in SELECTION_KEYS}
        gal["prop"] = np.asarray(gals[setup.selection_column], dtype=float)
    u_gal = float(np.sqrt((gal["vel"] ** 2).sum(axis=1)).max()) if len(gal["vel"]) else 0.0
    hr = np.unique(plan["halo_row"])
    hv = np.column_stack([halos[c][hr] for c in ("vx", "vy", "vz")]).astype(float)
    u_clu = float(np.sqrt((hv**2).sum(axis=1)).max()) if hr.size else 0.0
    members = center == "members"
    # a galaxy measured within the cut may truly lie up to 5 velocity errors beyond it
    v_pad = 5.0 * value_range(setup.velocity_error)[1]
    r_cand = aperture * (PAD_R if members else 1.0)
    v_cand = vcut * (PAD_V if members else 1.0) + v_pad
    z_lo, z_hi = K.los_redshift_bounds(v_cand, u_gal, u_clu, z)
    dz = max(z_hi - z, z - z_lo)
    table = K.redshift_table(catalog.cosmology, z, z - 1.1 * dz, z + 1.1 * dz)
    half_depth = K.los_half_depth(z_lo, z_hi, table)
    if not (table[0][0] < -half_depth and table[0][-1] > half_depth):  # pragma: no cover
        raise RuntimeError("internal error: redshift table shorter than the cylinder")
    if half_depth > box / 2:
        log.warning("the cylinder's line-of-sight half-depth (%.1f Mpc/h) exceeds half the box "
                    "(%.1f Mpc/h): each galaxy is seen once, at its nearest periodic image",
                    half_depth, box / 2)
    depth_pad = float(np.hypot(half_depth, r_cand)) + 1e-6
    r_pad = r_cand * (1 + 1e-6) + 1e-6

    common = {"box": box, "aperture": float(aperture), "vcut": float(vcut), "redshift": z,
              "half_depth": half_depth, "u_gal_max": u_gal, "table": table,
              "survey": setup.survey_settings(), "v_pad": v_pad, "seed": int(seed),
              "center": center, "selection": selection,
              "batch": int(chunk_size)}
    cen_all = np.column_stack([halos[c][plan["halo_row"]] for c in ("x", "y", "z")])
    chunks = _chunk_views(cen_all.astype(float), plan["axis"], box, int(chunk_size), depth_pad)
    grid = _GalaxyGrid(gal["pos"], box, 4 * r_cand)
    tasks = _tasks(catalog, plan, chunks, common, grid, r_pad, depth_pad, gal)
    client, owned = _client(workers, dask_scheduler)
    try:
        if client is None:
            results = _run_serial(tasks, len(chunks), progress)
        else:
            results = _run_dask(tasks, len(chunks), client, progress)
    finally:
        if owned is not None:
            client.close()
            if owned != "client":
                owned.close()
    out = _assemble(results, n_views)
    if selection is not None and n_views and not out["counts"].any():
        raise InputError(f"selection {setup.selection_column} "
                         f"{selection_sense(setup.selection_column)} {setup.selection_limit} "
                         f"leaves no galaxy in any of the {n_views} views",
                         column="selection_limit")

    counts = out["counts"]
    keep_view = counts >= min_members
    n_dropped = int((~keep_view).sum())
    if n_dropped:
        log.warning("dropped %d of %d views with fewer than %d galaxies (min_members)",
                    n_dropped, n_views, min_members)
    starts = np.zeros(n_views, np.int64)
    if n_views:
        np.cumsum(counts[:-1], out=starts[1:])
    rows = _ragged_rows(starts[keep_view], counts[keep_view])
    offsets = np.zeros(int(keep_view.sum()) + 1, np.int64)
    np.cumsum(counts[keep_view], out=offsets[1:])
    R, v = out["R"][rows], out["v"][rows]
    is_member = out["is_member"][rows].astype(bool)
    galaxy_index = out["galaxy_index"][rows].astype(np.int64)
    hrow = plan["halo_row"][keep_view]
    seg = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    clusters = {
        "halo_id": np.asarray(halos["id"], dtype=np.int64)[hrow],
        "los": plan["los_index"][keep_view],
        "los_x": plan["los"][keep_view, 0],
        "los_y": plan["los"][keep_view, 1],
        "los_z": plan["los"][keep_view, 2],
        "m200c": np.asarray(halos["m200c"], dtype=float)[hrow],
        "r200c": np.asarray(halos["r200c"], dtype=float)[hrow],
        "n_gal": np.diff(offsets),
        "n_members_true": np.bincount(seg, weights=is_member,
                                      minlength=len(offsets) - 1).astype(np.int64),
        "sigma_v": ragged_std(v, offsets),
        "halo_index": hrow,
        "center_dR": out["center_dR"][keep_view],
        "center_dv": out["center_dv"][keep_view],
    }
    if setup.survey_active:  # what the survey was for each view
        clusters.update({name: out[name][keep_view] for name in K.VIEW_SURVEY})
    if selection is not None:  # and the selection limit
        clusters.update({name: out[name][keep_view] for name in K.VIEW_SELECTION})
    settings = {
        "aperture": float(aperture), "vcut": float(vcut), "redshift": z,
        "cosmology": dict(catalog.cosmology), "box_size": box,
        "min_members": int(min_members), "min_mass": float(min_mass), "n_los": int(n_los),
        "flat_mass_function": bool(flat_mass_function),
        "flat_target": int(plan["flat_target"]) if flat_mass_function else None,
        "flat_bin_dex": float(flat_bin_dex), "flat_density": float(flat_density),
        "max_los": int(max_los), "sampling_rate": setup.to_settings()["sampling_rate"],
        "center": center,
        **{key: setup.to_settings()[key] for key in ("completeness_edge", "n_targets",
                                                     "velocity_error")},
        **({**selection, "selection_sense": selection_sense(setup.selection_column)}
           if selection is not None else {}),
        "seed": int(seed), "universe_sha256": universe_sha256,
        "n_hosts": int(hr.size), "n_views_planned": int(n_views),
        "n_views": int(keep_view.sum()), "n_views_dropped": n_dropped,
        "los_half_depth": float(half_depth),
        "velocity": "v = c (z_obs - z_c)/(1 + z_c), 1 + z_obs = (1 + z_cos)(1 + u_los/c)",
        "periodic": "nearest periodic image",
    }
    obs = Observations(clusters=clusters, R=R, v=v, is_member=is_member,
                       galaxy_index=galaxy_index, offsets=offsets, settings=settings)
    log.info("observed %d views of %d hosts (%d galaxies)", obs.n_views, hr.size, len(R))
    return obs


def observe_file(universe_path: str | os.PathLike, out_path: str | os.PathLike,
                 **options: Any) -> Path:
    """Read a catalog file, observe it, write the observations file atomically.

    Parameters
    ----------
    universe_path : str or os.PathLike
        Catalog (HDF5, :func:`dynmass.catalog.write_catalog`).
    out_path : str or os.PathLike
        Observations file to write (root attributes ``universe_sha256`` and ``seed``).
    **options
        Keyword arguments of :func:`observe`, and ``training_redshift`` (float, optional):
        observe in the self-similar frame of a model trained at that redshift, as ``dynmass
        predict`` sees a real cluster at the universe's redshift z: the cylinder's comoving
        radius is the aperture times ``s = aperture_scale(z, training_redshift)`` and every
        ``R`` is divided by ``s`` (:func:`dynmass.redshift.to_training_frame`; the settings
        record ``redshift_frame``).

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    InputError
        Bad options, a missing or foreign universe file, missing columns. Nothing is written.
    """
    from dynmass.observations import write_observations

    options = dict(options)
    z_train = options.pop("training_redshift", None)
    unknown = set(options) - set(_OBSERVE_KW)
    if unknown:
        raise InputError(f"unknown observe options: {sorted(unknown)}")
    opts = {**_OBSERVE_KW, **options}
    setup = resolve_setup(opts.pop("setup"), **{k: opts.pop(k) for k in _SETUP_KW})
    aperture_train = setup.aperture
    _check_options(setup, opts["min_mass"], opts["n_los"], opts["seed"], opts["max_los"],
                   opts["flat_bin_dex"], opts["flat_target"], opts["flat_density"],
                   opts["workers"], opts["dask_scheduler"], opts["chunk_size"])
    universe_path, out_path = Path(universe_path), Path(out_path)
    if out_path.exists() and universe_path.exists() and out_path.samefile(universe_path):
        raise InputError("the output would overwrite the universe file", path=out_path)
    column = setup.selection_column  # the galaxy selection's column is read as well
    try:
        catalog = read_catalog(universe_path, columns={
            "halos": [], "galaxies": list(_GALAXY_COLUMNS) + ([column] if column else [])})
    except InputError as exc:
        if column is None or exc.column != f"galaxies/{column}":
            raise
        raise InputError("the selection column is not a galaxy column of this universe file",
                         path=universe_path, column=exc.column) from None
    if column is not None:
        check_selection_column(catalog.galaxies, column, setup.selection_limit, universe_path)
    sha = file_sha256(universe_path)
    if z_train is not None:  # the cylinder of the self-similar frame of the training redshift
        from dataclasses import replace

        from dynmass.cosmology import to_astropy
        from dynmass.redshift import aperture_scale, to_training_frame

        cosmo = to_astropy(catalog.cosmology)
        setup = replace(setup, aperture=aperture_train * aperture_scale(
            float(catalog.redshift), float(z_train), cosmo))
    obs = observe(catalog, setup, universe_sha256=sha, **opts)
    if z_train is not None:
        obs = to_training_frame(obs, float(z_train), aperture_train, cosmo)
    obs.settings["universe_file"] = str(universe_path.resolve())
    from dynmass.combine import universe_record

    obs.settings["universe"] = universe_record(catalog.settings)
    return write_observations(obs, out_path,
                              extra_attrs={"universe_sha256": sha, "seed": int(opts["seed"])})


_SETUP_KW = ("aperture", "vcut", "min_members", "sampling_rate", "center")
_OBSERVE_KW: dict[str, Any] = {
    "setup": None, "aperture": None, "vcut": None, "min_mass": 10**13.5,
    "min_members": None, "n_los": 3, "flat_mass_function": False, "flat_target": None,
    "flat_bin_dex": FLAT_BIN_DEX, "flat_density": FLAT_DENSITY, "max_los": MAX_LOS,
    "sampling_rate": None, "center": None, "seed": 0, "workers": None, "dask_scheduler": None,
    "chunk_size": 500, "progress": False,
}


