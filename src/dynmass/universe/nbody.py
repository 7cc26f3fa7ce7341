"""The ``nbody`` universe engine: a particle-mesh N-body run, FoF halos, painted galaxies.

Where the analytic engine (:mod:`dynmass.universe.build`) places halos on a log-normal field
with linear flows, this engine evolves dark-matter particles with gravity
(:func:`run_pm`, :mod:`dynmass.universe.nbody_pm`: jaxpm, 2LPT initial conditions from the same
colossus P(k), kick-drift-kick particle-mesh steps), so that filaments, infall regions and
neighbouring groups -- the interlopers of a dynamical mass estimate -- come from real
structure formation. Then:

1. :func:`dynmass.universe.nbody_halos.find_halos`: friends-of-friends groups of the particles
   (linking length 0.2 of the mean separation, at least ``min_particles`` particles) with
   M200c, R200c, centres and bulk velocities;
2. :func:`dynmass.universe.nbody_galaxies.paint_galaxies`: galaxies of the occupation model
   placed on halos and their particles.

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
                                      min_particles=int(min_particles))
    paint_kw: dict[str, Any] = dict(occupation=occupation, mstar_min=mstar_min, seed=s["seed"])
    if "min_particles" in inspect.signature(paint_galaxies).parameters:
        paint_kw["min_particles"] = int(min_particles)  # the painter's resolution limit
    galaxies = paint_galaxies(halos, pm.pos, pm.vel, particle_halo, pm.particle_mass, box, z,
                              cosmo, **paint_kw)
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
        "halo_finder": {"method": "friends-of-friends", "linking_length": float(linking_length),
                        "min_particles": int(min_particles)},
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
