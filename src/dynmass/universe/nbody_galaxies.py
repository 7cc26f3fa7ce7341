"""Galaxies painted on an N-body snapshot: halo occupation on FoF/SO halos and field particles.

The galaxy painter of the ``nbody`` universe engine. Its galaxies come from the same occupation
models as the analytic engine (:mod:`dynmass.universe.occupation`), but sit on simulation
particles, so they inherit the particles' infall, substructure and velocities (velocity bias
1) instead of a smooth truncated NFW profile.

Method
------
* **Occupation of resolved halos** (those of :func:`dynmass.universe.nbody_halos.find_halos`):
  :func:`dynmass.universe.galaxies.populate` (``leauthaud11``) or
  :func:`dynmass.universe.occupation.populate_zheng07` (``zheng07``) is called on the halo
  table, so centrals (Bernoulli / stellar-mass threshold), satellite numbers (Poisson with the
  model's mean) and stellar masses are exactly the analytic engine's. Centrals keep what these
  give (the halo centre, the halo velocity). With ``satellites_inside="jeans"`` (the nbody
  engine's default, for halos whose cores the PM run does not resolve) the satellites keep
  their NFW positions and Jeans velocities too; with ``"particles"`` they are thrown away and
  each satellite moves onto a particle (next item).
* **Satellites on particles**: a halo's candidate particles are its own FoF members within
  ``r_max_r200c`` R200c of its centre. The occupation-model satellites (the model's count is
  that within R200c) go to members inside R200c, chosen uniformly without replacement, so
  their number density follows the particles'. Beyond R200c each member particle carries
  satellites at the same rate as inside, <N_sat> / n_in (n_in: members inside R200c): a
  Poisson number with mean <N_sat> n_out / n_in goes to members between R200c and
  ``r_max_r200c`` R200c (stellar masses drawn like the other satellites). Positions and
  velocities are those of the particles. A FoF group extends to roughly the b = 0.2
  isodensity contour, about 80 times the mean density (More et al. 2011, ApJS 195, 4), near
  R200m, so this adds the splashback satellites of the halo beyond R200c (~ 20-40% more at
  the concentrations of clusters) without double counting: particles of the surroundings that
  are in no halo carry the galaxies of unresolved halos (below), and particles of another
  resolved halo carry that halo's galaxies. Where a halo has fewer candidate particles than
  satellites, every candidate gets one and the rest are drawn with replacement (several
  satellites share a particle); a halo without members inside R200c uses all its members.
  Both cases are counted in the log.
* **Unresolved halos** (M200c below ``min_particles`` particle masses, not found): their
  centrals and satellites, from the same occupation model integrated over the Tinker et al.
  2008 mass function (:func:`dynmass.universe.massfunction.dndlnm`) from
  :data:`M_UNRESOLVED_MIN` to the resolution limit, times the box volume, are two seeded
  Poisson numbers. Each galaxy sits on a random particle that belongs to no halo (or to a
  halo's FoF group beyond ``r_max_r200c`` R200c), with its velocity; ``host_id`` is -1,
  centrals have ``is_central`` True, satellites False. **Approximation**: these galaxies have
  the bias of the unresolved matter, not that of their (unresolved) halos, and satellites of
  an unresolved halo are not clustered around its central. Stellar masses (``leauthaud11``):
  halo masses drawn from <N> dn/dlnM, then the central's log M* from the Behroozi et al. 2010
  relation with its scatter truncated at the threshold, a satellite's from the model's
  N_sat(> M*).

Examples
--------
A toy snapshot: one halo of 2000 particles (the FoF group) in a field of 3000 particles:

>>> import numpy as np
>>> from dynmass.cosmology import MDPL2
>>> from dynmass.universe.nbody_galaxies import paint_galaxies
>>> rng = np.random.default_rng(2)
>>> u = rng.normal(size=(2000, 3))
>>> pos = np.vstack([50.0 + 0.5 * rng.uniform(size=(2000, 1)) ** 2 * u
...                  / np.linalg.norm(u, axis=1)[:, None], rng.uniform(0, 100, (3000, 3))])
>>> vel = rng.normal(0.0, 500.0, (5000, 3))
>>> halos = {"id": np.array([0]), "x": np.array([50.0]), "y": np.array([50.0]),
...          "z": np.array([50.0]), "vx": np.zeros(1), "vy": np.zeros(1), "vz": np.zeros(1),
...          "m200c": np.array([1e14]), "r200c": np.array([0.4])}
>>> particle_halo = np.r_[np.zeros(2000, np.int64), np.full(3000, -1)]
>>> g = paint_galaxies(halos, pos, vel, particle_halo, 5e10, 100.0, 0.117, MDPL2, seed=1)
>>> sat = (g["host_id"] == 0) & ~g["is_central"]
>>> bool(np.all(pos[g["particle_index"][sat], 0] == g["x"][sat])), sorted(g)[:3]
(True, ['host_id', 'is_central', 'log10_mstar'])
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from dynmass.errors import InputError
from dynmass.stellar_mass import h1_from_msun, msun_from_h1
from dynmass.universe import ZHENG07_DEFAULT_THRESHOLD
from dynmass.universe.galaxies import (  # private helpers reused on purpose: the same model
    _LOG_MH_GRID,
    _satellite_log_mstar,
    _satellite_table,
    _smhm_mean_log_mstar,
    populate,
)
from dynmass.universe.massfunction import dndlnm
from dynmass.universe.nbody_halos import _check_inputs, _periodic_distance
from dynmass.universe.occupation import (
    check_occupation,
    populate_zheng07,
    zheng07_mean_occupation,
)

__all__ = ["M_UNRESOLVED_MIN", "SATELLITES_INSIDE", "paint_galaxies", "unresolved_occupation"]

log = logging.getLogger(__name__)

#: Sources of the satellites inside R200c of resolved halos (see :func:`paint_galaxies`).
SATELLITES_INSIDE: tuple[str, ...] = ("particles", "jeans")
#: Lower end of the unresolved-halo integral, Msun/h (both occupation models are ~0 below).
M_UNRESOLVED_MIN = 1e9

_HALO_KEYS = ("id", "x", "y", "z", "vx", "vy", "vz", "m200c", "r200c")


def _mean_occupation(m: np.ndarray, redshift: float, cosmology: dict[str, Any], occupation: str,
                     mstar_min: float, threshold: float, smhm_scatter_dex: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """<N_cen | M200c> and <N_sat | M200c> of the occupation model (halotools)."""
    if occupation == "zheng07":
        return zheng07_mean_occupation(m, threshold)
    from halotools.empirical_models import Leauthaud11Cens

    thr_h1 = float(h1_from_msun(float(mstar_min), cosmology))
    cens = Leauthaud11Cens(threshold=thr_h1, redshift=float(redshift))
    cens.param_dict["scatter_model_param1"] = float(smhm_scatter_dex)
    n_cen = np.asarray(cens.mean_occupation(prim_haloprop=m), dtype=float)
    _, table = _satellite_table(round(thr_h1, 6), float(redshift))
    return n_cen, np.interp(np.log10(m), _LOG_MH_GRID, table[:, 0])


def unresolved_occupation(m_resolved: float, redshift: float, cosmology: dict[str, Any], *,
                          occupation: str = "leauthaud11", mstar_min: float = 9.5,
                          zheng07_threshold: float = ZHENG07_DEFAULT_THRESHOLD,
                          smhm_scatter_dex: float = 0.2, n_grid: int = 400
                          ) -> dict[str, np.ndarray]:
    """Mean galaxy densities of halos below the resolution limit (Tinker et al. 2008 x HOD).

    n_cen = int <N_cen | M> dn/dlnM dlnM and n_sat = int <N_sat | M> dn/dlnM dlnM from
    :data:`M_UNRESOLVED_MIN` to ``m_resolved`` (trapezoid rule in ln M), M = M200c.

    Parameters
    ----------
    m_resolved : float
        Resolution limit M200c, Msun/h (the upper end of the integral).
    redshift : float
        Redshift.
    cosmology : dict
        Cosmological parameters.
    occupation : str
        ``"leauthaud11"`` or ``"zheng07"`` (:mod:`dynmass.universe.occupation`).
    mstar_min : float
        Stellar-mass threshold of ``leauthaud11``, log10 Msun (h-free).
    zheng07_threshold : float
        r-band threshold of ``zheng07``, M_r - 5 log10 h.
    smhm_scatter_dex : float
        Central stellar-mass scatter of ``leauthaud11``, dex.
    n_grid : int
        Points of the ln M grid.

    Returns
    -------
    dict
        ``n_cen``, ``n_sat`` (comoving (Mpc/h)^-3, floats), and on the grid ``ln_m``,
        ``w_cen`` = <N_cen> dn/dlnM, ``w_sat`` = <N_sat> dn/dlnM ((Mpc/h)^-3).

    Examples
    --------
    >>> from dynmass.cosmology import MDPL2
    >>> d = unresolved_occupation(1.6e12, 0.117, MDPL2)
    >>> 1e-3 < float(d["n_cen"]) < 1e-1, float(d["n_sat"]) < float(d["n_cen"])
    (True, True)
    """
    if m_resolved <= M_UNRESOLVED_MIN:
        z = np.zeros(2)
        return {"n_cen": 0.0, "n_sat": 0.0, "ln_m": np.log([M_UNRESOLVED_MIN] * 2),
                "w_cen": z, "w_sat": z}
    ln_m = np.linspace(np.log(M_UNRESOLVED_MIN), np.log(m_resolved), n_grid)
    m = np.exp(ln_m)
    n_cen, n_sat = _mean_occupation(m, redshift, cosmology, occupation, mstar_min,
                                    zheng07_threshold, smhm_scatter_dex)
    mf = dndlnm(m, redshift, cosmology)
    w_cen, w_sat = n_cen * mf, n_sat * mf
    return {"n_cen": float(np.trapezoid(w_cen, ln_m)), "n_sat": float(np.trapezoid(w_sat, ln_m)),
            "ln_m": ln_m, "w_cen": w_cen, "w_sat": w_sat}


def _sample_ln_m(ln_m: np.ndarray, w: np.ndarray, n: int, rng: np.random.Generator
                 ) -> np.ndarray:
    """Draw ln M from the tabulated density w(ln M) (inverse CDF, linear between points)."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(ln_m))])
    return np.interp(rng.uniform(size=n) * cdf[-1], cdf, ln_m)


def _draw_in_groups(cand_group: np.ndarray, want: np.ndarray, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """Pick ``want[g]`` candidates of each group g: without replacement while enough exist,
    the rest with replacement. Returns (candidate positions, their group, number of groups
    short of candidates), sorted by group."""
    n_g = want.size
    order = np.lexsort((rng.uniform(size=cand_group.size), cand_group))
    grp_sorted = cand_group[order]
    n_have = np.bincount(cand_group, minlength=n_g)
    start = np.concatenate([[0], np.cumsum(n_have)[:-1]])
    rank = np.arange(order.size) - start[grp_sorted]
    take = order[rank < want[grp_sorted]]
    short = np.flatnonzero((want > n_have) & (n_have > 0))
    extra_g = np.repeat(short, (want - n_have)[short])
    extra = order[start[extra_g] + (rng.uniform(size=extra_g.size) * n_have[extra_g]).astype(
        np.int64)]
    picked = np.concatenate([take, extra])
    grp = cand_group[picked]
    keep = np.argsort(grp, kind="stable")
    return picked[keep], grp[keep], int(short.size)


def _check_halos(halos: dict[str, np.ndarray], particle_halo: Any, n_particles: int
                 ) -> np.ndarray:
    for key in _HALO_KEYS:
        if key not in halos:
            raise InputError("halo table lacks this column", column=f"halos/{key}")
    n_h = np.asarray(halos["id"]).size
    for key in _HALO_KEYS:
        col = np.asarray(halos[key])
        if col.shape != (n_h,) or not np.all(np.isfinite(col)):
            raise InputError(f"must be {n_h} finite values", column=f"halos/{key}")
    if n_h and (np.min(halos["m200c"]) <= 0 or np.min(halos["r200c"]) <= 0):
        raise InputError("halo masses and radii must be positive", column="halos/m200c")
    ph = np.asarray(particle_halo)
    if ph.shape != (n_particles,) or not np.issubdtype(ph.dtype, np.integer):
        raise InputError(f"must be {n_particles} integers (one per particle), got shape "
                         f"{ph.shape} of {ph.dtype}", column="particle_halo")
    if ph.size and (ph.min() < -1 or ph.max() >= n_h):
        raise InputError(f"halo rows must lie in [-1, {n_h})", column="particle_halo")
    return ph.astype(np.int64, copy=False)


def paint_galaxies(
    halos: dict[str, np.ndarray],
    pos: np.ndarray,
    vel: np.ndarray,
    particle_halo: np.ndarray,
    particle_mass: float,
    box_size: float,
    redshift: float,
    cosmology: dict[str, Any],
    *,
    occupation: str = "leauthaud11",
    mstar_min: float = 9.5,
    seed: int = 0,
    r_max_r200c: float = 3.0,
    min_particles: int = 20,
    zheng07_threshold: float = ZHENG07_DEFAULT_THRESHOLD,
    smhm_scatter_dex: float = 0.2,
    satellites_inside: str = "particles",
) -> dict[str, np.ndarray]:
    """Galaxies of resolved halos on their particles and of unresolved halos on field particles.

    See the module docstring for the method. Random streams (children of
    ``numpy.random.SeedSequence(seed)``): the occupation of resolved halos, the choice of
    particles and the satellites beyond R200c, the unresolved-halo galaxies.

    Parameters
    ----------
    halos : dict of numpy.ndarray
        Halo table (:func:`~dynmass.universe.nbody_halos.find_halos`): ``id``, ``x, y, z``
        (centre, comoving Mpc/h), ``vx, vy, vz`` (km/s), ``m200c`` (Msun/h), ``r200c``
        (comoving Mpc/h).
    pos : numpy.ndarray
        (N, 3) particle positions in [0, box_size), comoving Mpc/h.
    vel : numpy.ndarray
        (N, 3) particle peculiar velocities, km/s.
    particle_halo : numpy.ndarray
        (N,) row in ``halos`` of each particle's FoF group, -1 for none.
    particle_mass : float
        Particle mass, Msun/h.
    box_size : float
        Periodic box side, comoving Mpc/h.
    redshift : float
        Redshift of the snapshot.
    cosmology : dict
        Cosmological parameters.
    occupation : str
        ``"leauthaud11"`` (stellar-mass threshold, galaxies with ``log10_mstar``) or
        ``"zheng07"`` (r-band threshold, no stellar masses).
    mstar_min : float
        Stellar-mass threshold of ``leauthaud11``, log10 Msun (h-free).
    seed : int
        Seed of every random draw.
    r_max_r200c : float
        Outermost radius of satellites, in units of the host's R200c (>= 1).
    min_particles : int
        FoF resolution limit of the halo finder: halos below ``min_particles`` x
        ``particle_mass`` are the unresolved ones.
    zheng07_threshold : float
        r-band threshold of ``zheng07``, M_r - 5 log10 h.
    smhm_scatter_dex : float
        Central stellar-mass scatter of ``leauthaud11``, dex.
    satellites_inside : str
        Where the satellites inside R200c of resolved halos come from: ``"particles"``
        (default; on the halo's particles, with their velocities) or ``"jeans"`` (the
        occupation model's NFW positions and isotropic Jeans velocities about the halo's
        centre and velocity, as in the analytic engine; for halos whose cores the PM run does
        not resolve). Either way the satellites beyond R200c sit on particles: in ``"jeans"``
        at the halo's mean rate per unit mass, <N_sat> m_particle / M200c per member particle.

    Returns
    -------
    dict of numpy.ndarray
        ``x, y, z`` (comoving Mpc/h), ``vx, vy, vz`` (peculiar km/s), ``host_id`` (halo id,
        -1 for galaxies of unresolved halos), ``is_central``, ``log10_mstar`` (log10 Msun,
        h-free; ``leauthaud11`` only), ``r_host`` (distance to the host centre, comoving
        Mpc/h; 0 for centrals and host-less galaxies) and ``particle_index`` (the particle a
        galaxy sits on, -1 for centrals of resolved halos). Rows: resolved centrals, their
        satellites inside R200c, those beyond, then unresolved-halo galaxies.

    Raises
    ------
    InputError
        Bad particle arrays (``pos``, ``vel``), ``particle_halo``, halo table or option.
    """
    p, v, mp, box = _check_inputs(pos, vel, particle_mass, box_size)
    occupation, thr = check_occupation(occupation, zheng07_threshold)
    ph = _check_halos(halos, particle_halo, p.shape[0])
    if not (np.isfinite(r_max_r200c) and r_max_r200c >= 1.0):
        raise InputError(f"r_max_r200c={r_max_r200c} must be >= 1", column="r_max_r200c")
    if isinstance(min_particles, bool) or int(min_particles) != min_particles \
            or min_particles < 1:
        raise InputError(f"min_particles={min_particles!r} must be a positive integer",
                         column="min_particles")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed={seed!r} must be a non-negative integer", column="seed")
    if satellites_inside not in SATELLITES_INSIDE:
        raise InputError(f"satellites_inside={satellites_inside!r} is not one of "
                         f"{list(SATELLITES_INSIDE)}", column="satellites_inside")
    rng_occ, rng_place, rng_field = (np.random.default_rng(s)
                                     for s in np.random.SeedSequence(seed).spawn(3))
    h = {k: np.asarray(halos[k]) for k in _HALO_KEYS}
    n_h = h["id"].size
    parts = []
    n_mean = np.zeros(n_h)
    if n_h:
        # ---- the analytic engine's occupation; satellites then move onto particles
        if occupation == "zheng07":
            g = populate_zheng07(h, box, redshift, cosmology, rng_occ, threshold=thr)
        else:
            g = populate(h, box, redshift, cosmology, rng_occ, mstar_min=mstar_min,
                         smhm_scatter_dex=smhm_scatter_dex)
        n_mean = _mean_occupation(h["m200c"], redshift, cosmology, occupation, mstar_min,
                                  thr, smhm_scatter_dex)[1]
        cen = g["is_central"]
        jeans = satellites_inside == "jeans"
        keep = np.ones_like(cen) if jeans else cen  # jeans: the occupation's satellites stay
        kept = {k: np.asarray(val)[keep] for k, val in g.items()}
        kept["particle_index"] = np.full(int(keep.sum()), -1, np.int64)
        parts.append(kept)
        row_of_id = np.argsort(h["id"])
        sat_row = row_of_id[np.searchsorted(h["id"], g["host_id"][~cen], sorter=row_of_id)]
        sat_ms = np.asarray(g["log10_mstar"])[~cen] if "log10_mstar" in g else None
        sat_ms = None if sat_ms is None else sat_ms[np.argsort(sat_row, kind="stable")]
        # ---- candidate particles: own FoF members within r_max_r200c R200c
        mem = np.flatnonzero(ph >= 0)
        row = ph[mem]
        centre = np.stack([h["x"], h["y"], h["z"]], axis=1).astype(float)
        r_mem = _periodic_distance(p[mem], centre[row], box)
        x_mem = r_mem / h["r200c"][row]
        inner = x_mem < 1.0
        outer = (x_mem >= 1.0) & (x_mem < r_max_r200c)
        n_in = np.bincount(row[inner], minlength=n_h)
        n_out = np.bincount(row[outer], minlength=n_h)
        no_inner = n_in == 0
        cand = inner | (no_inner[row])  # halos without members inside R200c: all members
        want = np.bincount(sat_row, minlength=n_h) * (not jeans)
        pick, pick_row, n_short = _draw_in_groups(row[cand], want, rng_place)
        pick = np.flatnonzero(cand)[pick]
        n_nowhere = int((want[np.bincount(row, minlength=n_h) == 0]).sum())
        if n_short or no_inner.any() or n_nowhere:
            log.info("paint_galaxies: %d halos with fewer members inside R200c than satellites "
                     "(particles shared), %d without members inside R200c (all members "
                     "used), %d satellites of halos without members dropped", n_short,
                     int(no_inner.sum()), n_nowhere)
        if n_nowhere and sat_ms is not None:  # keep the stellar masses of placed satellites
            sat_ms = sat_ms[np.isin(np.sort(sat_row), pick_row)]
        # ---- satellites beyond R200c: the inner rate per member particle
        if jeans:  # galaxies per unit mass of the halo beyond R200c as inside it on average
            rate = n_mean * mp / h["m200c"]
        else:
            rate = np.where(no_inner, 0.0, n_mean / np.maximum(n_in, 1))
        n_extra = rng_place.poisson(rate * n_out)
        ext, ext_row, _ = _draw_in_groups(row[outer], n_extra, rng_place)
        ext = np.flatnonzero(outer)[ext]
        for idx, rows, ms in ((pick, pick_row, sat_ms), (ext, ext_row, None))[jeans:]:
            part = _on_particles(p, v, mem[idx], h["id"][rows], False)
            part["r_host"] = r_mem[idx].astype(np.float32)
            if occupation == "leauthaud11":
                part["log10_mstar"] = (ms if ms is not None else _sat_mstar(
                    h["m200c"][rows], redshift, cosmology, mstar_min, rng_place)
                ).astype(np.float32)
            parts.append(part)
        log.info("paint_galaxies: %d centrals, %d satellites inside R200c (%s), %d beyond (to "
                 "%g R200c, on particles) in %d halos", int(cen.sum()),
                 int((~cen).sum()) if jeans else pick.size,
                 "NFW + Jeans" if jeans else "on particles", ext.size, r_max_r200c, n_h)
        field = np.flatnonzero(ph < 0)
        field = np.sort(np.concatenate([field, mem[x_mem >= r_max_r200c]]))
    else:
        field = np.arange(p.shape[0])
    parts.extend(_unresolved(p, v, field, min_particles * mp, box, redshift, cosmology,
                             occupation, mstar_min, thr, smhm_scatter_dex, rng_field))
    cols = ("x", "y", "z", "vx", "vy", "vz", "host_id", "is_central")
    cols += ("log10_mstar",) if occupation == "leauthaud11" else ()
    cols += ("r_host", "particle_index")
    dtypes = {"host_id": np.int64, "is_central": bool, "log10_mstar": np.float32,
              "r_host": np.float32, "particle_index": np.int64}
    return {c: np.concatenate([np.asarray(q[c]) for q in parts]).astype(dtypes.get(c, float))
            for c in cols}


def _on_particles(p: np.ndarray, v: np.ndarray, idx: np.ndarray, host_id: Any,
                  central: bool) -> dict[str, np.ndarray]:
    """Galaxy columns of galaxies sitting on particles ``idx``."""
    out = {c: p[idx, k] for k, c in enumerate("xyz")}
    out.update({c: v[idx, k] for k, c in enumerate(("vx", "vy", "vz"))})
    out["host_id"] = np.broadcast_to(np.asarray(host_id, np.int64), idx.shape).copy()
    out["is_central"] = np.full(idx.size, central)
    out["particle_index"] = idx.astype(np.int64)
    out["r_host"] = np.zeros(idx.size, np.float32)
    return out


def _sat_mstar(m: np.ndarray, redshift: float, cosmology: dict[str, Any], mstar_min: float,
               rng: np.random.Generator) -> np.ndarray:
    """Satellite stellar masses [log10 Msun] of ``leauthaud11`` in hosts of mass ``m``."""
    thresholds, table = _satellite_table(round(float(h1_from_msun(float(mstar_min), cosmology)),
                                               6), float(redshift))
    rows = np.clip(np.rint((np.log10(m) - _LOG_MH_GRID[0]) / 0.01).astype(np.int64), 0,
                   _LOG_MH_GRID.size - 1)
    return _satellite_log_mstar(rng.uniform(size=m.size), rows, table, thresholds, mstar_min,
                                cosmology)


def _unresolved(p: np.ndarray, v: np.ndarray, field: np.ndarray, m_res: float, box: float,
                redshift: float, cosmology: dict[str, Any], occupation: str, mstar_min: float,
                thr: float, smhm_scatter_dex: float, rng: np.random.Generator
                ) -> list[dict[str, np.ndarray]]:
    """Centrals and satellites of unresolved halos on random field particles."""
    occ = unresolved_occupation(m_res, redshift, cosmology, occupation=occupation,
                                mstar_min=mstar_min, zheng07_threshold=thr,
                                smhm_scatter_dex=smhm_scatter_dex)
    n_cen = int(rng.poisson(occ["n_cen"] * box**3))
    n_sat = int(rng.poisson(occ["n_sat"] * box**3))
    n = n_cen + n_sat
    if n and field.size == 0:
        log.warning("paint_galaxies: no field particles; %d galaxies of unresolved halos "
                    "dropped", n)
        return []
    idx = field[rng.choice(field.size, size=n, replace=n > field.size)] if n else field[:0]
    out = _on_particles(p, v, idx, -1, False)
    out["is_central"][:n_cen] = True
    if occupation == "leauthaud11":
        m_cen = np.exp(_sample_ln_m(occ["ln_m"], occ["w_cen"], n_cen, rng))
        m_sat = np.exp(_sample_ln_m(occ["ln_m"], occ["w_sat"], n_sat, rng))
        mean = msun_from_h1(np.interp(np.log10(m_cen), _LOG_MH_GRID,
                                      _smhm_mean_log_mstar(float(redshift))), cosmology)
        # log M* | M ~ N(mean, scatter) truncated below at the threshold (inverse CDF)
        lo = ndtr((mstar_min - mean) / smhm_scatter_dex)
        u = lo + rng.uniform(size=n_cen) * (1.0 - lo)
        ms_cen = mean + smhm_scatter_dex * ndtri(np.clip(u, 1e-300, 1 - 1e-16))
        ms_sat = _sat_mstar(m_sat, redshift, cosmology, mstar_min, rng)
        out["log10_mstar"] = np.maximum(np.concatenate([ms_cen, ms_sat]), mstar_min).astype(
            np.float32)
    log.info("paint_galaxies: %d centrals and %d satellites of unresolved halos (%.3g-%.3g "
             "Msun/h) on %d field particles", n_cen, n_sat, M_UNRESOLVED_MIN, m_res, field.size)
    return [out]
