"""The ``nbody`` universe engine: a particle-mesh N-body run, FoF halos, painted galaxies.

Where the analytic engine (:mod:`dynmass.universe.build`) places halos on a log-normal field
with linear flows, this engine evolves dark-matter particles with gravity
(:func:`run_pm`, :mod:`dynmass.universe.nbody_pm`: jaxpm, 2LPT initial conditions from the same
colossus P(k), kick-drift-kick particle-mesh steps), so that filaments, infall regions and
neighbouring groups -- the interlopers of a dynamical mass estimate -- come from real
structure formation. Then:

1. :func:`dynmass.universe.nbody_halos.find_halos`: friends-of-friends groups of the particles
   (linking length 0.2 of the mean separation, at least ``min_particles`` particles) with
   centres and bulk velocities, and M200c from the FoF mass by matched abundance
   (:mod:`dynmass.universe.nbody_masses`; the SO mass on the particles is kept as
   ``m200c_so``, biased low because the PM run does not resolve halo cores);
2. :func:`dynmass.universe.nbody_galaxies.paint_galaxies`: galaxies of the occupation model:
   satellites inside R200c on an NFW profile with Jeans velocities (the PM halos are too cold
   inside), those beyond R200c and the galaxies of unresolved halos on particles, so that the
   infall regions, filaments and neighbours -- the interlopers -- come from the simulation.

The catalog has the format of :func:`dynmass.catalog.write_catalog` (``dynmass observe`` and
``dynmass check`` read it unchanged), with ``settings["engine"] = "nbody"`` and the PM settings
(particles per side, mesh, a_start, steps, particle mass, force resolution).

Resolution: see :mod:`dynmass.universe.nbody_pm` (halo cores are not resolved below about a
mesh cell; halos below 20-30 particles are unusable).

Resuming: :func:`run_pm` with ``checkpoint=PATH`` writes the particles (``pos``, ``vel``,
``particle_mass``, the settings JSON and their SHA-256) atomically to ``PATH`` (``.npz``)
after the run; a later call with the same PM settings loads them instead of running again;
a call with different settings is **refused** (:class:`~dynmass.errors.SettingsMismatchError`
naming the settings that differ) rather than silently overwriting a costly run.
:func:`write_nbody_universe` keeps the checkpoint at ``<output>.pm.npz``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_path
from dynmass.catalog import GALAXY_COLUMNS, HALO_COLUMNS, Catalog, write_catalog
from dynmass.cosmology import MDPL2, validate_cosmology
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.universe import DEFAULT_REDSHIFT, OCCUPATIONS, nbody_pm
from dynmass.universe.nbody_pm import PMResult, PMSettings

log = logging.getLogger(__name__)

#: Default particles per side of the nbody engine.
DEFAULT_PARTICLES = 256
#: FoF particles above which the PM halo mass function is complete: on the default run the
#: FoF mass function is 0.75 of Watson et al. 2013 at 70-125 particles and 0.92-1.16 above
#: 125 (``dynmass check`` compares the catalog with Tinker et al. 2008 above this limit).
MASS_FUNCTION_PARTICLES = 200


def run_pm(box_size: float, n_side: int, *, mesh_factor: int = 2, redshift: float = 0.117,
           cosmology: dict[str, Any] | None = None, seed: int = 0, a_start: float = 0.1,
           n_steps: int = 30, checkpoint: str | os.PathLike | None = None) -> PMResult:
    """Particle-mesh N-body run from 2LPT initial conditions to the snapshot redshift.

    Parameters
    ----------
    box_size : float
        Side of the periodic box, comoving Mpc/h.
    n_side : int
        Particles per side (n_side^3 particles).
    mesh_factor : int
        PM mesh cells per particle spacing, 1 or 2 (default 2: force resolution half the
        particle spacing).
    redshift : float
        Snapshot redshift (default 0.117).
    cosmology : dict, optional
        Flat cosmology (default MDPL2).
    seed : int
        Seed of the initial conditions; the same seed and settings give the same particles.
    a_start : float
        Scale factor of the 2LPT initial conditions (default 0.1, z = 9).
    n_steps : int
        Kick-drift-kick steps, evenly spaced in a (default 30).
    checkpoint : str or os.PathLike, optional
        ``.npz`` file: loaded when it holds a run with the same settings; written atomically
        after the run when missing; a file made with other settings is refused.

    Returns
    -------
    PMResult
        Positions (comoving Mpc/h), peculiar velocities (km/s), particle mass (Msun/h),
        settings.

    Raises
    ------
    InputError
        A setting out of range (named), jaxpm missing, or an unreadable checkpoint.
    SettingsMismatchError
        ``checkpoint`` holds a run with other settings.

    Examples
    --------
    A tiny run (8^3 particles, 2 steps; seconds):

    >>> from dynmass.universe.nbody import run_pm
    >>> r = run_pm(100.0, 8, seed=1, n_steps=2)
    >>> r.pos.shape, r.vel.dtype.name, f"{r.particle_mass:.3e}"
    ((512, 3), 'float32', '1.665e+14')
    >>> bool(r.pos.min() >= 0 and r.pos.max() < 100.0), r.settings["force_resolution"]
    (True, 6.25)
    """
    s = PMSettings(box_size=box_size, n_side=n_side, mesh_factor=mesh_factor,
                   redshift=redshift, cosmology=dict(cosmology or MDPL2), seed=seed,
                   a_start=a_start, n_steps=n_steps)
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint, s)
        if loaded is not None:
            return loaded
    pos, vel = nbody_pm.simulate(s)
    result = PMResult(pos=pos, vel=vel, particle_mass=s.particle_mass, settings=s.to_dict())
    if checkpoint is not None:
        save_checkpoint(checkpoint, result)
    return result


def save_checkpoint(path: str | os.PathLike, result: PMResult) -> Path:
    """Write a PM result to an ``.npz`` file atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    result : PMResult
        The run to store (its ``settings`` must hold ``settings_sha256``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, pos=result.pos, vel=result.vel,
                 particle_mass=np.float64(result.particle_mass),
                 settings=np.array(json.dumps(result.settings, sort_keys=True)),
                 settings_sha256=np.array(result.settings["settings_sha256"]))
    return path


def load_checkpoint(path: str | os.PathLike, settings: PMSettings) -> PMResult | None:
    """The PM result stored in ``path`` if it was made with ``settings``.

    Parameters
    ----------
    path : str or os.PathLike
        Checkpoint written by :func:`save_checkpoint`.
    settings : PMSettings
        The settings the caller wants.

    Returns
    -------
    PMResult or None
        The stored run; ``None`` when ``path`` does not exist.

    Raises
    ------
    SettingsMismatchError
        The file holds a run with other settings (the differing ones are named).
    InputError
        The file is not a readable checkpoint.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            digest = str(z["settings_sha256"])
            stored = json.loads(str(z["settings"]))
            if digest == settings.digest():
                pos, vel = z["pos"], z["vel"]
                if pos.shape != (settings.n_side**3, 3) or vel.shape != pos.shape:
                    raise ValueError(f"pos/vel shapes {pos.shape}/{vel.shape}, expected "
                                     f"({settings.n_side**3}, 3)")
                return PMResult(pos=pos, vel=vel, particle_mass=float(z["particle_mass"]),
                                settings=stored)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a readable PM checkpoint ({exc}); remove it to rerun",
                         path=path) from exc
    want = settings.key()
    diff = sorted(k for k in want if stored.get(k) != want[k])
    shown = ", ".join(f"{k}={stored.get(k)!r} (wanted {want[k]!r})" for k in diff
                      if k != "cosmology")
    if "cosmology" in diff:
        shown = ", ".join(filter(None, [shown, "cosmology differs"]))
    raise SettingsMismatchError(f"PM checkpoint was made with other settings: {shown}; "
                                "remove the file or choose another checkpoint path",
                                path=path)


def _table(name: str, table: dict[str, Any], required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The 1-D columns of a table from the halo finder or the galaxy painter."""
    missing = [c for c in required if c not in table]
    if missing:
        raise InputError(f"the nbody {name} lack columns {missing}", column=name)
    n = len(np.asarray(table[required[0]]))
    out, dropped = {}, []
    for col, values in table.items():
        arr = np.asarray(values)
        if arr.ndim == 1 and arr.shape[0] == n:
            out[col] = arr
        else:
            dropped.append(col)
    if dropped:
        log.warning("nbody %s: columns %s are not one value per row; not stored", name, dropped)
    return out


def matter_correlation(pos: np.ndarray, box_size: float, *, n_points: int = 200_000,
                       r_range: tuple[float, float] = (10.0, 40.0), n_bins: int = 6,
                       seed: int = 0) -> dict[str, list[float]]:
    """Matter correlation function of a particle snapshot on the clustering check's bins.

    ``dynmass check`` judges the halo bias of an N-body catalog against the simulation's own
    matter xi (:func:`dynmass.universe.validate.check_clustering`): a finite box lacks the
    modes longer than the box, so xi at 10-40 Mpc/h falls below linear theory (0.81-0.85 at
    10-25 Mpc/h, 0.46 at 35 Mpc/h in a 250 Mpc/h box, seed 1).

    Parameters
    ----------
    pos : numpy.ndarray
        (N, 3) particle positions, comoving Mpc/h.
    box_size : float
        Periodic box side, comoving Mpc/h.
    n_points : int
        Particles drawn (seeded, without replacement) for the pair counts.
    r_range : (float, float)
        Separation range, comoving Mpc/h (the check's default 10-40).
    n_bins : int
        Logarithmic bins (the check's default 6).
    seed : int
        Seed of the subsample.

    Returns
    -------
    dict
        ``r_edges`` (comoving Mpc/h), ``xi`` and ``xi_err`` (lists of floats), ``n_points``.

    Examples
    --------
    >>> import numpy as np
    >>> pos = np.random.default_rng(0).uniform(0, 100.0, (20000, 3))
    >>> xi = matter_correlation(pos, 100.0, n_points=5000)
    >>> bool(np.all(np.abs(xi["xi"]) < 5 * np.array(xi["xi_err"]) + 0.01))
    True
    """
    from dynmass.universe.validate import halo_correlation

    p = np.asarray(pos)
    n = min(int(n_points), p.shape[0])
    idx = np.sort(np.random.default_rng(seed).choice(p.shape[0], n, replace=False))
    r_edges = np.logspace(np.log10(r_range[0]), np.log10(r_range[1]), n_bins + 1)
    xi, err = halo_correlation(np.mod(p[idx].astype(np.float64), box_size), box_size, r_edges)
    return {"r_edges": r_edges.tolist(), "xi": np.asarray(xi).tolist(),
            "xi_err": np.asarray(err).tolist(), "n_points": n}


def build_nbody_universe(
    box_size: float,
    n_side: int = DEFAULT_PARTICLES,
    redshift: float = DEFAULT_REDSHIFT,
    cosmology: dict[str, Any] | None = None,
    seed: int = 0,
    *,
    occupation: str = "leauthaud11",
    mstar_min: float = 9.5,
    checkpoint: str | os.PathLike | None = None,
    mesh_factor: int = 2,
    a_start: float = 0.1,
    n_steps: int = 30,
    linking_length: float = 0.2,
    min_particles: int = 20,
    halo_mass: str = "fof-abundance",
    satellites_inside: str = "jeans",
) -> Catalog:
    """Build a universe from a particle-mesh N-body run: FoF halos and painted galaxies.

    Parameters
    ----------
    box_size : float
        Side of the periodic box, comoving Mpc/h.
    n_side : int
        Particles per side (default 256; n_side^3 particles).
    redshift : float
        Snapshot redshift (default 0.117).
    cosmology : dict, optional
        Flat cosmology (default MDPL2).
    seed : int
        Seed of the initial conditions and of the galaxy painting.
    occupation : str
        Halo occupation model of the galaxies, ``"leauthaud11"`` or ``"zheng07"``.
    mstar_min : float
        Galaxy stellar-mass threshold, log10 Msun, h-free (``leauthaud11``).
    checkpoint : str or os.PathLike, optional
        ``.npz`` file of the PM particles: loaded when it holds a run with the same PM
        settings, written after the run otherwise (other settings are refused).
    mesh_factor : int
        PM mesh cells per particle spacing, 1 or 2 (default 2).
    a_start : float
        Scale factor of the 2LPT initial conditions (default 0.1).
    n_steps : int
        Kick-drift-kick steps from ``a_start`` to the snapshot (default 30).
    linking_length : float
        Friends-of-friends linking length in units of the mean particle separation.
    min_particles : int
        Fewest particles of a halo (default 20).
    halo_mass : str
        ``"fof-abundance"`` (default): M200c from the FoF mass by matched abundance
        (:mod:`dynmass.universe.nbody_masses`; the PM cores are unresolved, so the SO mass on
        the particles is 0.3-0.6 dex low); ``"so"``: the SO mass on the particles.
    satellites_inside : str
        ``"jeans"`` (default): satellites inside R200c from the occupation model's NFW
        profile with Jeans velocities (the PM halos' inner velocity dispersions are too low,
        0.84 of Evrard et al. 2008 at 10^14 Msun/h on the default run); ``"particles"``: on
        the halo's particles. Beyond R200c galaxies sit on particles either way
        (:func:`dynmass.universe.nbody_galaxies.paint_galaxies`).

    Returns
    -------
    Catalog
        Halos (:data:`~dynmass.catalog.HALO_COLUMNS` plus the finder's extras, e.g.
        ``n_particles``, ``m_fof``), galaxies (:data:`~dynmass.catalog.GALAXY_COLUMNS` plus
        ``log10_mstar`` for ``leauthaud11``), ``settings["engine"] == "nbody"`` and the PM
        settings in ``settings["pm"]``.

    Raises
    ------
    InputError
        A setting out of range (named) or jaxpm missing.

    Examples
    --------
    A toy run (16^3 particles in 60 Mpc/h, 4 steps; with the halo finder and the galaxy
    painter of :mod:`dynmass.universe.nbody_halos` and
    :mod:`dynmass.universe.nbody_galaxies`):

    >>> from dynmass.universe.nbody import build_nbody_universe
    >>> cat = build_nbody_universe(60.0, 16, seed=2, n_steps=4, mesh_factor=1)
    >>> cat.settings["engine"], cat.settings["pm"]["n_side"], cat.settings["force_resolution"]
    ('nbody', 16, 3.75)
    """
    cosmo = validate_cosmology(dict(cosmology or MDPL2))
    if occupation not in OCCUPATIONS:
        raise InputError(f"occupation={occupation!r} is not one of {list(OCCUPATIONS)}",
                         column="occupation")
    if not np.isfinite(mstar_min):
        raise InputError(f"setting mstar_min={mstar_min!r} must be finite", column="mstar_min")
    if not (0 < linking_length < 1):
        raise InputError(f"setting linking_length={linking_length!r} must lie in (0, 1)",
                         column="linking_length")
    from dynmass.universe.nbody_galaxies import SATELLITES_INSIDE
    from dynmass.universe.nbody_masses import HALO_MASS_DEFINITIONS

    if halo_mass not in HALO_MASS_DEFINITIONS:
        raise InputError(f"setting halo_mass={halo_mass!r} is not one of "
                         f"{list(HALO_MASS_DEFINITIONS)}", column="halo_mass")
    if satellites_inside not in SATELLITES_INSIDE:
        raise InputError(f"setting satellites_inside={satellites_inside!r} is not one of "
                         f"{list(SATELLITES_INSIDE)}", column="satellites_inside")
    if int(min_particles) < 2:
        raise InputError(f"setting min_particles={min_particles!r} must be >= 2",
                         column="min_particles")
    pm_kw = dict(mesh_factor=mesh_factor, redshift=redshift, cosmology=cosmo, seed=seed,
                 a_start=a_start, n_steps=n_steps)
    PMSettings(box_size=box_size, n_side=n_side, **pm_kw)  # checks before anything is imported
    from dynmass.universe.nbody_galaxies import paint_galaxies
    from dynmass.universe.nbody_halos import find_halos

    pm = run_pm(box_size, n_side, checkpoint=checkpoint, **pm_kw)
    s = pm.settings
    box, z = float(s["box_size"]), float(s["redshift"])
    log.info("PM run: %d^3 particles, mesh %d^3, particle mass %.3g Msun/h", s["n_side"],
             s["n_mesh"], pm.particle_mass)
    halos, particle_halo = find_halos(pm.pos, pm.vel, pm.particle_mass, box, z, cosmo,
                                      linking_length=linking_length,
                                      min_particles=int(min_particles),
                                      mass_definition=halo_mass)
    paint_kw: dict[str, Any] = dict(occupation=occupation, mstar_min=mstar_min, seed=s["seed"],
                                    satellites_inside=satellites_inside)
    if "min_particles" in inspect.signature(paint_galaxies).parameters:
        paint_kw["min_particles"] = int(min_particles)  # the painter's resolution limit
    galaxies = paint_galaxies(halos, pm.pos, pm.vel, particle_halo, pm.particle_mass, box, z,
                              cosmo, **paint_kw)
    from dynmass.universe.nbody_masses import fof_to_m200c

    n_complete = MASS_FUNCTION_PARTICLES * pm.particle_mass
    mf_limit = fof_to_m200c(n_complete, z, cosmo) if halo_mass == "fof-abundance" \
        else n_complete
    gal_required = GALAXY_COLUMNS + (("log10_mstar",) if occupation == "leauthaud11" else ())
    settings = {
        "engine": "nbody",
        "generator": "dynmass.universe.nbody.build_nbody_universe",
        "box_size": box, "redshift": z, "cosmology": cosmo, "seed": int(s["seed"]),
        "occupation": occupation, "mstar_min": float(mstar_min),
        "n_side": int(s["n_side"]), "mesh_factor": int(s["mesh_factor"]),
        "n_mesh": int(s["n_mesh"]), "a_start": float(s["a_start"]),
        "n_steps": int(s["n_steps"]), "particle_mass": float(pm.particle_mass),
        "force_resolution": float(s["force_resolution"]),
        "min_mass": float(min_particles) * float(pm.particle_mass),
        "mass_function_limit": float(mf_limit),
        "xi_matter": matter_correlation(pm.pos, box, seed=int(s["seed"])),
        "halo_finder": {"method": "friends-of-friends", "linking_length": float(linking_length),
                        "min_particles": int(min_particles), "halo_mass": halo_mass},
        "satellites_inside": satellites_inside,
        "pm": s,
    }
    cat = Catalog(halos=_table("halos", halos, HALO_COLUMNS),
                  galaxies=_table("galaxies", galaxies, gal_required),
                  box_size=box, redshift=z, cosmology=cosmo, seed=int(s["seed"]),
                  settings=settings)
    return cat.validate()


def write_nbody_universe(path: str | os.PathLike, box_size: float,
                         n_side: int = DEFAULT_PARTICLES, redshift: float = DEFAULT_REDSHIFT,
                         cosmology: dict[str, Any] | None = None, seed: int = 0, *,
                         checkpoint: str | os.PathLike | bool = True,
                         **settings: Any) -> dict[str, Any]:
    """Build an nbody universe and write it atomically as a catalog file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination HDF5 catalog (format of :func:`dynmass.catalog.write_catalog`).
    box_size, n_side, redshift, cosmology, seed
        As for :func:`build_nbody_universe`.
    checkpoint : str, os.PathLike or bool
        PM checkpoint: ``True`` (default) for ``<path>.pm.npz``, ``False`` for none, or a
        file. A rerun with the same settings reuses the particles.
    **settings
        Other keywords of :func:`build_nbody_universe` (``occupation``, ``mstar_min``,
        ``mesh_factor``, ``a_start``, ``n_steps``, ``linking_length``, ``min_particles``).

    Returns
    -------
    dict
        ``{"path", "n_halos", "n_galaxies", "checkpoint", "settings"}``.
    """
    path = Path(path)
    if checkpoint is True:
        ckpt: Path | None = path.with_name(path.name + ".pm.npz")
    elif checkpoint is False or checkpoint is None:
        ckpt = None
    else:
        ckpt = Path(checkpoint)
    cat = build_nbody_universe(box_size, n_side, redshift, cosmology, seed, checkpoint=ckpt,
                               **settings)
    write_catalog(cat, path)
    return {"path": str(path), "n_halos": cat.n_halos, "n_galaxies": cat.n_galaxies,
            "checkpoint": None if ckpt is None else str(ckpt), "settings": cat.settings}
