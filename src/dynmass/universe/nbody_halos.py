"""Halos of an N-body snapshot: friends-of-friends groups with spherical-overdensity masses.

The halo finder of the ``nbody`` universe engine turns particles (comoving positions, peculiar
velocities, one particle mass) into a halo table with the columns of
:data:`dynmass.catalog.HALO_COLUMNS` and a map from particles to halos.

Method and references
---------------------
* **Friends-of-friends** (Davis et al. 1985, ApJ 292, 371): two particles closer than
  ``b`` times the mean interparticle separation are friends; groups are the connected
  components of the friendship graph. b = 0.2 encloses an isodensity contour of roughly 80
  times the mean density (More et al. 2011, ApJS 195, 4). Pairs come from
  :class:`scipy.spatial.cKDTree` (periodic ``boxsize``) and the components from
  :func:`scipy.sparse.csgraph.connected_components`. Memory: a plain all-pairs search holds
  every pair at once (16 bytes each, more while the sparse graph is built), and halo cores
  hold tens to hundreds of friends per particle (a mock of unsoftened NFW halos with 43% of
  2.1 million particles in halos has 13 million pairs; a particle-mesh snapshot, with softened
  cores, fewer). :func:`fof_labels` therefore cuts the box into slabs along x, finds all pairs inside each
  slab extended by one linking length on its upper side, labels the slab's components, and
  merges the labels of the particles in the overlap (which belong to two slabs) with a second
  connected-components pass over the (small) graph of slab labels. Every friendship pair lies
  inside at least one extended slab, so this is exact FoF (tested against one all-pairs slab);
  only one slab's pairs are held at a time.
* **Centre**: the densest particle of the group, density from the distance to the
  :data:`DENSITY_NEIGHBOURS`-th nearest neighbour among all particles (the SPH-like estimate
  of e.g. Casertano & Hut 1985, ApJ 298, 80).
* **Spherical overdensity** (Lacey & Cole 1994, MNRAS 271, 676): around the centre, all
  particles (any group or none) are sorted by distance; the sphere grows until its mean
  density drops below 200 rho_c(z) (the first crossing); the crossing radius is interpolated
  linearly in (log r, log mean density) between the last particle inside and the first
  outside, and M200c = 200 rho_c(z) 4 pi R200c^3 / 3. rho_c(z) is colossus' (the same as
  :func:`dynmass.universe.massfunction.r200c_comoving`); in comoving coordinates the threshold
  is 200 rho_c(z) / (1 + z)^3, so R200c comes out comoving (physical R200c times 1 + z).
  Groups with fewer than :data:`MIN_SO_PARTICLES` particles inside R200c have no defined SO
  mass: they are dropped (their particles get no halo) and counted in the log.
* **Velocity**: the mean velocity of the particles within ``0.5 R200c`` (within R200c when
  fewer than :data:`MIN_CORE_PARTICLES` are there). The core moves with the central galaxy
  and is less disturbed by substructure falling through the outer halo; Rockstar (Behroozi et
  al. 2013, ApJ 762, 109) uses the inner 10% of the radius for the same reason, which holds too
  few particles in a particle-mesh halo. ``sigma_v_3d`` is the 3D velocity dispersion
  (sqrt of the summed variances of the three components) of the particles within R200c about
  their own mean.

Examples
--------
One NFW-like clump of 400 particles in an otherwise empty 50 Mpc/h box at z = 0:

>>> import numpy as np
>>> from dynmass.cosmology import MDPL2
>>> from dynmass.universe.nbody_halos import find_halos
>>> rng = np.random.default_rng(1)
>>> r = 0.3 * rng.uniform(size=400) ** 1.5
>>> u = rng.normal(size=(400, 3))
>>> pos = 25.0 + r[:, None] * u / np.linalg.norm(u, axis=1)[:, None]
>>> vel = np.full((400, 3), 100.0)
>>> halos, particle_halo = find_halos(pos, vel, 1e11, 50.0, 0.0, MDPL2)
>>> len(halos["id"]), int((particle_halo == 0).sum()), float(halos["vx"][0])
(1, 400, 100.0)
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from dynmass.cosmology import colossus_cosmology
from dynmass.errors import InputError

__all__ = ["DENSITY_NEIGHBOURS", "HALO_TABLE_COLUMNS", "MIN_CORE_PARTICLES", "MIN_SO_PARTICLES",
           "find_halos", "fof_labels", "so_threshold_comoving"]

log = logging.getLogger(__name__)

#: Columns of the halo table :func:`find_halos` returns.
HALO_TABLE_COLUMNS: tuple[str, ...] = ("id", "x", "y", "z", "vx", "vy", "vz", "m200c", "r200c",
                                       "n_particles", "m_fof", "n200", "sigma_v_3d",
                                       "m200c_so", "r200c_so")
#: Neighbour rank of the density estimate that picks the centre.
DENSITY_NEIGHBOURS = 16
#: Fewest particles inside R200c for a defined SO mass.
MIN_SO_PARTICLES = 5
#: Fewest particles within 0.5 R200c for the core velocity (else the mean within R200c).
MIN_CORE_PARTICLES = 10
#: Target number of particles per FoF slab when ``n_slabs`` is not given.
_SLAB_PARTICLES = 1_000_000
#: Groups whose SO spheres are searched together (bounds the ball-query lists).
_SO_CHUNK = 4096


def _positive(value: Any, what: str, unit: str, column: str) -> float:
    """``value`` as a positive finite float, else :class:`InputError` naming ``column``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not (np.isfinite(x) and x > 0):
        raise InputError(f"{what} {value!r} must be a positive number ({unit})", column=column)
    return x


def _check_inputs(pos: Any, vel: Any, particle_mass: Any, box_size: Any
                  ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Validated float64 copies of the particle arrays and the scalars (InputError otherwise)."""
    box = _positive(box_size, "box size", "Mpc/h", "box_size")
    mp = _positive(particle_mass, "particle mass", "Msun/h", "particle_mass")
    p = np.asarray(pos, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"positions must have shape (N, 3), got {p.shape}", column="pos")
    v = np.asarray(vel, dtype=np.float64)
    if v.shape != p.shape:
        raise InputError(f"velocities must have the shape of the positions {p.shape}, got "
                         f"{v.shape}", column="vel")
    if not np.all(np.isfinite(p)):
        raise InputError("positions must be finite", column="pos")
    if not np.all(np.isfinite(v)):
        raise InputError("velocities must be finite", column="vel")
    bad = (p < 0) | (p >= box)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise InputError(f"{int(bad.any(axis=1).sum())} positions outside the box [0, {box}) "
                         f"Mpc/h, first at row {row} ({p[row].tolist()})", column="pos")
    return p, v, mp, box


def so_threshold_comoving(redshift: float, cosmology: dict[str, Any],
                          overdensity: float = 200.0) -> float:
    """Mean density inside R_Delta,c in comoving units: Delta rho_c(z) / (1 + z)^3.

    Parameters
    ----------
    redshift : float
        Redshift (>= 0).
    cosmology : dict
        Cosmological parameters (:mod:`dynmass.cosmology`).
    overdensity : float
        Delta, relative to the critical density at ``redshift``.

    Returns
    -------
    float
        Density threshold in Msun/h per comoving (Mpc/h)^3.

    Examples
    --------
    >>> from dynmass.cosmology import MDPL2
    >>> round(so_threshold_comoving(0.0, MDPL2) / 1e13, 3)  # 200 x 2.775e11 h^2 Msun/Mpc^3
    5.551
    """
    with colossus_cosmology(cosmology) as cc:
        rho_c_phys = float(cc.rho_c(float(redshift))) * 1e9  # Msun h^2 / kpc^3 -> / Mpc^3
    return overdensity * rho_c_phys / (1.0 + float(redshift)) ** 3


def fof_labels(pos: np.ndarray, box_size: float, linking_length: float, *,
               n_slabs: int | None = None, workers: int = -1) -> np.ndarray:
    """Friends-of-friends group label of every particle (exact, periodic, slab by slab).

    Parameters
    ----------
    pos : numpy.ndarray
        (N, 3) positions in [0, box_size), comoving Mpc/h.
    box_size : float
        Periodic box side, comoving Mpc/h.
    linking_length : float
        Absolute linking length, comoving Mpc/h (pairs at most this far apart are friends).
    n_slabs : int, optional
        Number of slabs along x (1: one all-pairs search over the whole box). Default: about
        one per million particles, at most ``box_size / (2 linking_length)``.
    workers : int
        Threads of the tree queries (-1: all cores).

    Returns
    -------
    numpy.ndarray
        (N,) int64 labels 0..n_groups-1 (singletons are groups of one).

    Examples
    --------
    >>> import numpy as np
    >>> pos = np.array([[0.1, 5.0, 5.0], [9.95, 5.0, 5.0], [5.0, 5.0, 5.0]])
    >>> fof_labels(pos, 10.0, 0.2).tolist()  # the first two are friends across x = 0
    [0, 0, 1]
    """
    pos = np.asarray(pos, dtype=np.float64)
    n = pos.shape[0]
    box, link = float(box_size), float(linking_length)
    if not (np.isfinite(link) and 0 < link < box / 2):
        raise InputError(f"linking length {linking_length} Mpc/h must lie in (0, box/2)",
                         column="linking_length")
    max_slabs = max(1, int(box / (2.0 * link)))
    if n_slabs is None:
        n_slabs = max(1, min(n // _SLAB_PARTICLES, max_slabs))
    if not (1 <= int(n_slabs) <= max_slabs):
        raise InputError(f"n_slabs={n_slabs} must lie in [1, {max_slabs}] (slabs at least two "
                         "linking lengths wide)", column="n_slabs")
    n_slabs = int(n_slabs)
    if n == 0:
        return np.zeros(0, np.int64)
    width = box / n_slabs
    slab = np.minimum((pos[:, 0] / width).astype(np.int64), n_slabs - 1)
    order = np.argsort(slab, kind="stable")
    bounds = np.searchsorted(slab[order], np.arange(n_slabs + 1))
    core_label = np.empty(n, np.int64)
    margin_idx, margin_lab = [], []
    offset = n_pairs = max_pairs = 0
    for s in range(n_slabs):
        core = order[bounds[s]:bounds[s + 1]]
        if n_slabs > 1:  # particles of the next slab within one linking length of its edge
            nxt = order[bounds[(s + 1) % n_slabs]:bounds[(s + 1) % n_slabs + 1]]
            edge = ((s + 1) % n_slabs) * width
            margin = nxt[pos[nxt, 0] - edge <= link]
        else:
            margin = np.zeros(0, np.int64)
        ext = np.concatenate([core, margin])
        if ext.size == 0:
            continue
        pairs = cKDTree(pos[ext], boxsize=box).query_pairs(link, output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs), np.int8),
                            (pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32))),
                           shape=(ext.size, ext.size))
        n_pairs += len(pairs)
        max_pairs = max(max_pairs, len(pairs))
        del pairs
        n_comp, lab = connected_components(graph, directed=False)
        del graph
        core_label[core] = lab[:core.size] + offset
        margin_idx.append(margin)
        margin_lab.append(lab[core.size:] + offset)
        offset += n_comp
    log.info("FoF: %d particles, %d slabs, %d friend pairs (at most %d in one slab)", n,
             n_slabs, n_pairs, max_pairs)
    # merge: a particle in the overlap carries one label per slab it belongs to
    mi, ml = np.concatenate(margin_idx), np.concatenate(margin_lab)
    graph = coo_matrix((np.ones(mi.size, np.int8), (ml, core_label[mi])), shape=(offset, offset))
    _, merged = connected_components(graph, directed=False)
    return np.unique(merged[core_label], return_inverse=True)[1].astype(np.int64)


def _periodic_distance(a: np.ndarray, b: np.ndarray, box: float) -> np.ndarray:
    """Minimum-image distance between rows of ``a`` and ``b``, comoving Mpc/h."""
    d = a - b
    d -= box * np.rint(d / box)
    return np.sqrt(np.einsum("ij,ij->i", d, d))


def _group_centres(tree: cKDTree, pos: np.ndarray, members: np.ndarray, group: np.ndarray,
                   n_groups: int, workers: int) -> np.ndarray:
    """Index of the densest particle (k-th neighbour distance) of each group."""
    k = min(DENSITY_NEIGHBOURS, pos.shape[0])
    dist, _ = tree.query(pos[members], k=[k], workers=workers)
    # densest = smallest k-th neighbour distance; ties broken by particle index
    order = np.lexsort((members, dist[:, 0], group))
    first = np.searchsorted(group[order], np.arange(n_groups))
    return members[order[first]]


def _so_chunk(tree: cKDTree, pos: np.ndarray, vel: np.ndarray, centres: np.ndarray,
              r_guess: np.ndarray, mp: float, threshold: float, box: float, workers: int
              ) -> dict[str, np.ndarray]:
    """SO quantities of a few groups around their centres (growing the search if needed)."""
    g = centres.shape[0]
    out = {k: np.zeros(g) for k in ("r200c", "m200c", "vx", "vy", "vz", "sigma_v_3d")}
    out["n200"] = np.zeros(g, np.int64)
    todo, radius = np.arange(g), np.minimum(1.5 * r_guess, box / 2)
    while todo.size:
        lists = tree.query_ball_point(centres[todo], radius[todo], workers=workers,
                                      return_sorted=False)
        lens = np.fromiter(map(len, lists), dtype=np.int64, count=todo.size)
        idx = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64,
                          count=int(lens.sum()))
        del lists
        grp = np.repeat(np.arange(todo.size), lens)
        r = _periodic_distance(pos[idx], centres[todo][grp], box)
        order = np.lexsort((r, grp))
        idx, grp, r = idx[order], grp[order], r[order]
        start = np.concatenate([[0], np.cumsum(lens)[:-1]])
        count = np.arange(idx.size) - start[grp] + 1  # particles within r (inclusive)
        with np.errstate(divide="ignore"):
            dens = count * mp / (4.0 / 3.0 * np.pi * r**3)
        below = np.flatnonzero(dens < threshold)
        grp_b, first = np.unique(grp[below], return_index=True)
        j = below[first]  # first particle outside the sphere, per group that crossed
        # interpolate log mean density linearly in log r between j-1 (inside) and j (outside)
        with np.errstate(invalid="ignore", divide="ignore"):  # r = 0: only the centre inside
            lr0, lr1 = np.log(r[j - 1]), np.log(r[j])
            ld0, ld1 = np.log(dens[j - 1]), np.log(dens[j])
            t = np.where(ld0 > ld1, (ld0 - np.log(threshold)) / (ld0 - ld1), 0.0)
        r200 = np.full(todo.size, np.nan)
        n_in = np.zeros(todo.size, np.int64)
        r200[grp_b] = np.exp(lr0 + np.clip(t, 0.0, 1.0) * (lr1 - lr0))
        n_in[grp_b] = count[j] - 1
        # no particle outside the sphere but the search edge below the threshold: the mean
        # density of all n particles found falls as r^-3 beyond the last one
        edge = np.ones(todo.size, bool)
        edge[grp_b] = False
        edge &= lens * mp / (4.0 / 3.0 * np.pi * radius[todo] ** 3) < threshold
        r200[edge] = (3.0 * lens[edge] * mp / (4.0 * np.pi * threshold)) ** (1.0 / 3.0)
        n_in[edge] = lens[edge]
        done = edge.copy()
        done[grp_b] = True
        ok = done & (n_in >= MIN_SO_PARTICLES) & np.isfinite(r200)
        rows = todo[ok]
        out["r200c"][rows] = r200[ok]
        out["m200c"][rows] = threshold * 4.0 / 3.0 * np.pi * r200[ok] ** 3
        out["n200"][rows] = n_in[ok]
        r200_of = np.where(ok, r200, 0.0)
        # velocities: particles inside R200c, and inside 0.5 R200c (the core)
        inside = r < r200_of[grp]
        core = r < 0.5 * r200_of[grp]
        n_core = np.bincount(grp[core], minlength=todo.size)
        use_core = n_core >= MIN_CORE_PARTICLES
        sel = np.where(use_core[grp], core, inside)
        n_sel = np.maximum(np.bincount(grp[sel], minlength=todo.size), 1)
        v_in, g_in = vel[idx[inside]], grp[inside]
        n_inside = np.maximum(np.bincount(g_in, minlength=todo.size), 1)
        var = np.zeros(todo.size)
        for k, col in enumerate(("vx", "vy", "vz")):
            out[col][todo] = np.bincount(grp[sel], weights=vel[idx[sel], k],
                                         minlength=todo.size) / n_sel
            mean = np.bincount(g_in, weights=v_in[:, k], minlength=todo.size) / n_inside
            var += np.bincount(g_in, weights=v_in[:, k] ** 2, minlength=todo.size) / n_inside \
                - mean**2
        out["sigma_v_3d"][todo] = np.sqrt(np.maximum(var, 0.0))
        # groups that did not cross inside the search radius: search twice as far
        grow = ~done & (radius[todo] < box / 2)
        radius[todo[grow]] = np.minimum(2.0 * radius[todo[grow]], box / 2)
        todo = todo[grow]
    return out


def find_halos(
    pos: np.ndarray,
    vel: np.ndarray,
    particle_mass: float,
    box_size: float,
    redshift: float,
    cosmology: dict[str, Any],
    *,
    linking_length: float = 0.2,
    min_particles: int = 20,
    n_slabs: int | None = None,
    workers: int = -1,
    mass_definition: str = "so",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Friends-of-friends halos with M200c/R200c by spherical overdensity (module docstring).

    Parameters
    ----------
    pos : numpy.ndarray
        (N, 3) particle positions in [0, box_size), comoving Mpc/h (float32 or float64).
    vel : numpy.ndarray
        (N, 3) peculiar velocities, km/s.
    particle_mass : float
        Mass of one particle, Msun/h.
    box_size : float
        Periodic box side, comoving Mpc/h.
    redshift : float
        Redshift of the snapshot (rho_c(z) of the SO threshold).
    cosmology : dict
        Cosmological parameters (:mod:`dynmass.cosmology`, e.g. ``MDPL2``).
    linking_length : float
        FoF linking length in units of the mean interparticle separation box_size / N^(1/3).
    min_particles : int
        Fewest FoF members of a group that becomes a halo.
    n_slabs : int, optional
        Slabs of the FoF pair search (:func:`fof_labels`; 1 = all pairs at once).
    workers : int
        Threads of the tree queries (-1: all cores).
    mass_definition : str
        ``"so"`` (default): ``m200c``/``r200c`` are the spherical-overdensity values;
        ``"fof-abundance"``: ``m200c`` is the FoF mass mapped by matched abundance
        (:func:`dynmass.universe.nbody_masses.fof_to_m200c`, for particle-mesh runs whose
        cores are unresolved) and ``r200c`` its radius at 200 rho_c(z). The SO values are kept
        in ``m200c_so``/``r200c_so`` either way.

    Returns
    -------
    halos : dict of numpy.ndarray
        :data:`HALO_TABLE_COLUMNS`, sorted by descending ``m200c``, ``id`` = row = 0..n-1:
        ``x, y, z`` the centre (densest particle, comoving Mpc/h), ``vx, vy, vz`` (km/s, core
        mean), ``m200c`` (Msun/h), ``r200c`` (comoving Mpc/h), ``n_particles`` (FoF members),
        ``m_fof`` (Msun/h), ``n200`` (particles inside the SO R200c), ``sigma_v_3d`` (km/s,
        particles inside the SO R200c), ``m200c_so`` (Msun/h), ``r200c_so`` (comoving Mpc/h).
    particle_halo : numpy.ndarray
        (N,) int64: the row in ``halos`` of each particle's FoF group, -1 for particles in no
        halo (groups below ``min_particles`` or without an SO mass).

    Raises
    ------
    InputError
        Positions outside the box or of the wrong shape (``pos``), velocities of another shape
        (``vel``), non-positive particle mass or box, linking length or ``min_particles`` out
        of range.
    """
    p, v, mp, box = _check_inputs(pos, vel, particle_mass, box_size)
    if not (np.isfinite(linking_length) and 0 < linking_length < 1):
        raise InputError(f"linking length {linking_length} (in mean separations) must lie in "
                         "(0, 1)", column="linking_length")
    if isinstance(min_particles, bool) or int(min_particles) != min_particles \
            or min_particles < 2:
        raise InputError(f"min_particles={min_particles!r} must be an integer >= 2",
                         column="min_particles")
    from dynmass.universe.nbody_masses import HALO_MASS_DEFINITIONS, fof_to_m200c

    if mass_definition not in HALO_MASS_DEFINITIONS:
        raise InputError(f"mass_definition={mass_definition!r} is not one of "
                         f"{list(HALO_MASS_DEFINITIONS)}", column="mass_definition")
    n = p.shape[0]
    particle_halo = np.full(n, -1, np.int64)
    empty = {c: np.zeros(0) for c in HALO_TABLE_COLUMNS}
    for c in ("id", "n_particles", "n200"):
        empty[c] = np.zeros(0, np.int64)
    if n == 0:
        return empty, particle_halo
    link = linking_length * box / n ** (1.0 / 3.0)
    labels = fof_labels(p, box, link, n_slabs=n_slabs, workers=workers)
    size = np.bincount(labels)
    big = np.flatnonzero(size >= min_particles)
    log.info("FoF (b=%g, %d particles): %d groups with >= %d particles", linking_length, n,
             big.size, min_particles)
    if big.size == 0:
        return empty, particle_halo
    grp_of_label = np.full(size.size, -1, np.int64)
    grp_of_label[big] = np.arange(big.size)
    group = grp_of_label[labels]
    del labels
    members = np.flatnonzero(group >= 0)
    tree = cKDTree(p, boxsize=box)
    centre_idx = _group_centres(tree, p, members, group[members], big.size, workers)
    centres = p[centre_idx]
    threshold = so_threshold_comoving(redshift, cosmology)
    n_fof = size[big]
    # first guess of R200c: the radius of the FoF mass at 200 rho_c
    r_guess = (3.0 * n_fof * mp / (4.0 * np.pi * threshold)) ** (1.0 / 3.0)
    so = {k: [] for k in ("r200c", "m200c", "vx", "vy", "vz", "sigma_v_3d", "n200")}
    for lo in range(0, big.size, _SO_CHUNK):
        part = _so_chunk(tree, p, v, centres[lo:lo + _SO_CHUNK], r_guess[lo:lo + _SO_CHUNK],
                         mp, threshold, box, workers)
        for k in so:
            so[k].append(part[k])
    so_cat = {k: np.concatenate(val) for k, val in so.items()}
    keep = so_cat["n200"] >= MIN_SO_PARTICLES
    n_drop = int((~keep).sum())
    if n_drop:
        log.info("find_halos: %d of %d FoF groups dropped (fewer than %d particles inside "
                 "R200c: no SO mass)", n_drop, big.size, MIN_SO_PARTICLES)
    so_cat["m200c_so"], so_cat["r200c_so"] = so_cat["m200c"], so_cat["r200c"]
    if mass_definition == "fof-abundance":
        so_cat["m200c"] = fof_to_m200c(n_fof * mp, redshift, cosmology)
        so_cat["r200c"] = (3.0 * so_cat["m200c"] / (4.0 * np.pi * threshold)) ** (1.0 / 3.0)
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(-so_cat["m200c"][rows], kind="stable")]
    halos: dict[str, np.ndarray] = {"id": np.arange(rows.size, dtype=np.int64)}
    for k, col in enumerate("xyz"):
        halos[col] = centres[rows, k]
    for col in ("vx", "vy", "vz", "m200c", "r200c", "m200c_so", "r200c_so"):
        halos[col] = so_cat[col][rows]
    halos["n_particles"] = n_fof[rows].astype(np.int64)
    halos["m_fof"] = n_fof[rows] * mp
    halos["n200"] = so_cat["n200"][rows]
    halos["sigma_v_3d"] = so_cat["sigma_v_3d"][rows]
    halos = {c: halos[c] for c in HALO_TABLE_COLUMNS}
    row_of_group = np.full(big.size, -1, np.int64)
    row_of_group[rows] = np.arange(rows.size)
    particle_halo[members] = row_of_group[group[members]]
    log.info("find_halos: %d halos, M200c %.3g-%.3g Msun/h", rows.size,
             halos["m200c"].min() if rows.size else 0.0,
             halos["m200c"].max() if rows.size else 0.0)
    return halos, particle_halo
