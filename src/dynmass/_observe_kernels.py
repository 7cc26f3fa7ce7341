"""Private kernels of :mod:`dynmass.observe`: geometry, redshift-space velocities, chunk worker.

Everything here is a pure function of its arguments so that a chunk of cluster views gives
the same bytes whether it runs in this process or on a Dask worker, whatever the chunking:

* the galaxies a view keeps are decided by an exact cut (``R <= aperture``,
  ``|v| <= vcut``) on quantities computed from the catalog's global coordinates with one fixed
  formula; the spatial trees only supply a superset of candidates;
* galaxies inside a view are ordered by their catalog row;
* random draws come from :class:`numpy.random.SeedSequence` keyed by
  ``(seed, halo row, line-of-sight index, purpose)``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.spatial import cKDTree

from dynmass.centring import PAD_R, PAD_V, centre_on_members
from dynmass.cosmology import C_KMS, to_astropy
from dynmass.observing import Draw
from dynmass.selection import keep_mask, view_limits

#: Purpose tags of the per-view random streams (last entry of the SeedSequence key).
SEED_SAMPLING = 1
SEED_DIRECTIONS = 2
SEED_FLAT = 3
SEED_SURVEY = 4  # per-view draws of randomised survey settings
SEED_VERR = 5  # velocity errors
SEED_TARGETS = 6  # the n_targets galaxies that get a redshift
SEED_SELECTION = 7  # per-view draws of the galaxy selection limit (dynmass.selection)

#: Per-view survey values returned by :func:`observe_chunk`.
VIEW_SURVEY = ("survey_sampling_rate", "survey_completeness_edge", "survey_velocity_error")
#: Per-view selection limit returned by :func:`observe_chunk` (NaN without a selection).
VIEW_SELECTION = ("survey_selection_limit",)

def view_rng(seed: int, halo_row: int, los: int, purpose: int) -> np.random.Generator:
    """Random generator of one view, keyed by ``(seed, halo_row, los, purpose)``.

    Parameters
    ----------
    seed : int
        Observe seed.
    halo_row : int
        Row of the host in the halo table.
    los : int
        Line-of-sight index of the view.
    purpose : int
        What the draws are for (``SEED_*`` tags), so that streams never overlap.

    Returns
    -------
    numpy.random.Generator
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(halo_row), int(los),
                                                         int(purpose)]))


# --------------------------------------------------------------------------------------------
# cosmology: comoving line-of-sight offset <-> cosmological redshift
# --------------------------------------------------------------------------------------------
def redshift_table(cosmo: dict[str, Any], z: float, z_lo: float, z_hi: float,
                   n: int = 20001) -> tuple[np.ndarray, np.ndarray]:
    """Table of cosmological redshift against comoving line-of-sight offset from a cluster.

    The comoving distance between redshifts ``z`` and ``z'`` is
    ``chi(z') - chi(z) = (c / H0) * integral_z^z' dz'' / E(z'')`` (Hogg 1999,
    arXiv:astro-ph/9905116, eq. 15); in Mpc/h, ``c / H0 = c / 100``.

    Parameters
    ----------
    cosmo : dict
        Cosmological parameters (``H0`` km/s/Mpc, ``Om0``, ...).
    z : float
        Redshift of the cluster (the snapshot).
    z_lo, z_hi : float
        The table covers at least the redshifts ``[z_lo, z_hi]`` (``z_lo > -1``).
    n : int
        Number of table points.

    Returns
    -------
    d : numpy.ndarray
        Comoving offsets from the cluster, Mpc/h, increasing (``d = 0`` at ``z``).
    zz : numpy.ndarray
        Cosmological redshift at each offset.
    """
    astro = to_astropy(cosmo)
    margin = 0.05 * (z_hi - z_lo) + 1e-4
    lo = max(min(z_lo, z) - margin, -0.9)
    zz = np.linspace(lo, max(z_hi, z) + margin, n)
    inv_e = 1.0 / np.asarray(astro.efunc(zz), dtype=float)
    chi = cumulative_trapezoid(inv_e, zz, initial=0.0) * (C_KMS / 100.0)
    return chi - np.interp(z, zz, chi), zz


def los_redshift_bounds(vcut: float, u_gal_max: float, u_clu_max: Any,
                        z: float) -> tuple[Any, Any]:
    """Range of cosmological redshift a galaxy with ``|v| <= vcut`` can have.

    From ``1 + z_obs = (1 + z_cos)(1 + u/c)`` (Harrison 1974, ApJ 191, L51; Davis & Scrimgeour
    2014, MNRAS 442, 1117) and ``v = c (z_obs - z_c) / (1 + z_c)``:
    ``(1 + z_cos,g) = (1 + v/c)(1 + z)(1 + u_c/c) / (1 + u_g/c)``, bounded with ``|v| <= vcut``,
    ``|u_g| <= u_gal_max``, ``|u_c| <= u_clu_max`` (all km/s).

    Parameters
    ----------
    vcut : float
        Velocity cut, km/s.
    u_gal_max : float
        Largest galaxy peculiar speed, km/s.
    u_clu_max : float or numpy.ndarray
        Largest line-of-sight cluster peculiar speed, km/s.
    z : float
        Snapshot redshift.

    Returns
    -------
    z_lo, z_hi : float
    """
    vc, ug, uc = vcut / C_KMS, u_gal_max / C_KMS, np.asarray(u_clu_max) / C_KMS
    if np.any(ug >= 1) or np.any(uc >= 1) or np.any(vc >= 1):
        raise ValueError("velocities must be below the speed of light")
    z_hi = (1 + vc) * (1 + z) * (1 + uc) / (1 - ug) - 1
    z_lo = (1 - vc) * (1 + z) * (1 - uc) / (1 + ug) - 1
    return z_lo, z_hi


def los_half_depth(z_lo: Any, z_hi: Any, table: tuple[np.ndarray, np.ndarray]) -> Any:
    """Largest comoving line-of-sight offset [Mpc/h] between redshifts ``z_lo`` and ``z_hi``.

    Works elementwise on arrays; a float for scalar input.

    Parameters
    ----------
    z_lo, z_hi : float or numpy.ndarray
        Cosmological redshift range.
    table : tuple of numpy.ndarray
        ``(offset [comoving Mpc/h], z)`` from :func:`redshift_table`.

    Returns
    -------
    float or numpy.ndarray
        Half-depth, comoving Mpc/h (padded by 1e-6 relative and absolute).
    """
    d, zz = table
    if np.any(np.asarray(z_lo) < zz[0]) or np.any(np.asarray(z_hi) > zz[-1]):
        raise ValueError("redshift table does not cover the requested range")
    out = np.maximum(np.abs(np.interp(z_lo, zz, d)), np.abs(np.interp(z_hi, zz, d)))
    out = out * (1 + 1e-6) + 1e-6
    return float(out) if np.ndim(out) == 0 else out


def relative_velocity(d_par: np.ndarray, u_gal: np.ndarray, u_clu: np.ndarray, z: float,
                      table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Rest-frame line-of-sight velocity of galaxies relative to their cluster, km/s.

    The cosmological redshift of a galaxy at comoving offset ``d_par`` behind the cluster
    (cluster at the snapshot redshift ``z``, as Ho et al. 2019 place every cluster) is read
    from ``table``; the peculiar velocities combine multiplicatively,
    ``1 + z_obs = (1 + z_cos)(1 + u/c)`` (Harrison 1974; Davis & Scrimgeour 2014), and the
    velocity relative to the cluster is ``v = c (z_obs - z_c) / (1 + z_c)`` (Danese, de Zotti &
    di Tullio 1980, A&A 82, 322). To first order ``v = u_g - u_c + H(z) d_par / (h (1 + z))``.

    Parameters
    ----------
    d_par : numpy.ndarray
        Comoving line-of-sight offsets from the cluster, Mpc/h (positive: farther away).
    u_gal, u_clu : numpy.ndarray
        Line-of-sight peculiar velocities of the galaxy and of its cluster, km/s.
    z : float
        Cluster (snapshot) redshift.
    table : tuple
        Output of :func:`redshift_table`.
    """
    d, zz = table
    z_cos = np.interp(d_par, d, zz)
    ratio = (1.0 + z_cos) * (1.0 + u_gal / C_KMS) / ((1.0 + z) * (1.0 + u_clu / C_KMS))
    return C_KMS * (ratio - 1.0)


# --------------------------------------------------------------------------------------------
# lines of sight
# --------------------------------------------------------------------------------------------
def fibonacci_hemisphere(n: int) -> np.ndarray:
    """``n`` near-uniform unit vectors on the upper hemisphere (a Fibonacci lattice).

    Point ``k`` has ``cos(theta) = 1 - (k + 1/2)/n`` and azimuth ``k`` times the golden angle
    (Gonzalez 2010, Math. Geosci. 42, 49). A hemisphere, because ``n`` and ``-n`` give the same
    view mirrored in ``v``.
    """
    k = np.arange(n, dtype=float)
    cos_t = 1.0 - (k + 0.5) / n
    sin_t = np.sqrt(np.maximum(0.0, 1.0 - cos_t**2))
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    return np.column_stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])


def host_directions(n_los: int, seed: int, halo_row: int) -> np.ndarray:
    """Lines of sight of one host: the x, y, z axes first, then rotated Fibonacci directions.

    Views ``0, 1, 2`` look along x, y, z. Views ``3 .. n_los-1`` look along a Fibonacci
    hemisphere of ``n_los - 3`` points turned by a random rotation drawn from the host's own
    stream (so hosts do not share directions and none coincides with an axis).

    Parameters
    ----------
    n_los : int
        Lines of sight of the host.
    seed : int
        Observe seed.
    halo_row : int
        Row of the host in the halo table (keys its random stream).

    Returns
    -------
    numpy.ndarray
        ``(n_los, 3)`` unit vectors.
    """
    axes = np.eye(3)[: min(n_los, 3)]
    if n_los <= 3:
        return axes
    from scipy.spatial.transform import Rotation

    rng = view_rng(seed, halo_row, 0, SEED_DIRECTIONS)
    extra = Rotation.random(random_state=rng).apply(fibonacci_hemisphere(n_los - 3))
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.vstack([axes, extra])


def perpendicular_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors ``(e1, e2)`` perpendicular to each row of ``n`` (shape (k, 3)).

    For an axis-aligned ``n`` the basis is the other two axes in cyclic order.
    """
    n = np.atleast_2d(n)
    helper = np.zeros_like(n)
    idx = np.argmin(np.abs(n), axis=1)
    helper[np.arange(len(n)), idx] = 1.0
    e1 = helper - np.sum(helper * n, axis=1, keepdims=True) * n
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(n, e1)
    return e1, e2


# --------------------------------------------------------------------------------------------
# candidate search
# --------------------------------------------------------------------------------------------
def _flatten(lists: np.ndarray | list) -> tuple[np.ndarray, np.ndarray]:
    """(owner, item) pairs of a sequence of index lists."""
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # chain.from_iterable iterates in C: ~3x faster than a generator expression per item
    items = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=total)
    return np.repeat(np.arange(len(lists), dtype=np.int64), lens), items


def build_tree(gal_pos: np.ndarray, axis: int, box: float) -> cKDTree:
    """Periodic tree of the galaxies: 2D on the sky plane of ``axis`` (0/1/2), 3D for -1.

    Parameters
    ----------
    gal_pos : numpy.ndarray
        (m, 3) galaxy positions in [0, box), comoving Mpc/h.
    axis : int
        Line of sight along x, y, z (0, 1, 2), or -1 for other directions.
    box : float
        Box side, comoving Mpc/h (the tree is periodic).

    Returns
    -------
    scipy.spatial.cKDTree
    """
    pts = gal_pos if axis < 0 else gal_pos[:, [i for i in (0, 1, 2) if i != axis]]
    return cKDTree(pts, boxsize=box, balanced_tree=False, compact_nodes=False)


def candidate_pairs(tree: cKDTree, axis: int, cen_pos: np.ndarray, los: np.ndarray,
                    box: float, radius: float,
                    half_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(view, galaxy) pairs that may lie in each view's cylinder; a superset, deduplicated.

    Axis-aligned views (``axis`` 0/1/2) query a 2D periodic tree of the galaxies projected on
    the sky plane: a disc of ``radius``, the full column along the line of sight. Other views
    (``axis=-1``) query a 3D periodic tree with a chain of balls of radius ``sqrt(2) radius``
    spaced at most ``2 radius`` along the segment ``[-half_depth, half_depth]``, which covers
    the cylinder.

    Parameters
    ----------
    tree : scipy.spatial.cKDTree
        From :func:`build_tree` for this ``axis``.
    axis : int
        0/1/2 for views along x/y/z, -1 for other directions.
    cen_pos : numpy.ndarray
        (k, 3) view centres in [0, box), comoving Mpc/h.
    los : numpy.ndarray
        (k, 3) unit lines of sight.
    box : float
        Periodic box side, comoving Mpc/h.
    radius : float
        Cylinder radius, comoving Mpc/h.
    half_depth : numpy.ndarray
        (k,) cylinder half lengths, comoving Mpc/h (used for ``axis=-1``).

    Returns
    -------
    view, gal : numpy.ndarray
        Local view and tree-galaxy indices, sorted by (view, galaxy).
    """
    r_q = radius * (1 + 1e-9) + 1e-12
    n_data = tree.n
    if n_data == 0 or len(cen_pos) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if axis >= 0:
        other = [i for i in (0, 1, 2) if i != axis]
        view, gal = _flatten(tree.query_ball_point(cen_pos[:, other], r_q))
    else:
        n_balls = (np.ceil(2 * half_depth / (2 * radius)).astype(np.int64) + 1)
        owner = np.repeat(np.arange(len(cen_pos)), n_balls)
        step = np.repeat(2 * half_depth / (n_balls - 1), n_balls)
        first = np.concatenate([[0], np.cumsum(n_balls)[:-1]])
        t = (np.arange(owner.size) - np.repeat(first, n_balls)) * step - np.repeat(half_depth,
                                                                                   n_balls)
        pts = np.mod(cen_pos[owner] + t[:, None] * los[owner], box)
        pts[pts >= box] = 0.0
        ball, gal = _flatten(tree.query_ball_point(pts, np.sqrt(2.0) * r_q))
        view = owner[ball]
    key = np.sort(view * np.int64(n_data) + gal)  # = np.unique, ~10x faster than numpy 2.4's
    key = key[np.concatenate([key[:1] == key[:1], key[1:] != key[:-1]])]  # hash unique
    return key // n_data, key % n_data


# --------------------------------------------------------------------------------------------
# the chunk worker
# --------------------------------------------------------------------------------------------
def observe_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """Cut the cylinders of one chunk of views. Pure: same views -> same bytes.

    All views of a chunk share one kind (``task["kind"]``: 0/1/2 along x/y/z, -1 other
    directions) and one tree of the galaxies of the chunk's region; they are cut in batches of
    ``task["batch"]`` views so that candidate arrays stay small.

    Parameters
    ----------
    task : dict
        ``gal_pos`` (m, 3), ``gal_vel`` (m, 3), ``gal_host`` (m,), ``gal_index`` (m,) for the
        galaxies of the chunk's region (a superset of every galaxy its cylinders can hold);
        ``view_id``, ``cen_pos`` (k, 3), ``cen_vel`` (k, 3), ``los`` (k, 3), ``halo_id``,
        ``halo_row``, ``los_index`` for its views; and the settings ``kind``, ``batch``,
        ``box``, ``aperture``, ``vcut``, ``redshift``, ``half_depth``, ``u_gal_max``,
        ``table``, ``survey`` (:meth:`dynmass.observing.ObservingSetup.survey_settings`),
        ``v_pad`` (km/s added to the velocity window for velocity errors), ``seed``,
        ``center``; with a galaxy selection ``selection`` and ``gal_prop`` (m,).

    Returns
    -------
    dict
        ``view_id`` (k,), ``counts`` (k,), ``R``, ``v``, ``is_member``, ``galaxy_index``
        (concatenated in view order), ``center_dR``, ``center_dv`` and the survey values of
        each view (:data:`VIEW_SURVEY`, :data:`VIEW_SELECTION`) (k,).
    """
    kind = int(task["kind"])
    tree = build_tree(task["gal_pos"], kind, float(task["box"]))
    k = len(task["view_id"])
    batch = max(1, int(task["batch"]))
    parts = []
    for b0 in range(0, k, batch):
        sel = slice(b0, min(k, b0 + batch))
        parts.append(_cut_batch(task, tree, kind, sel))
    if not parts:
        parts.append(_cut_batch(task, tree, kind, slice(0, 0)))
    out = {"view_id": task["view_id"]}
    for name in ("counts", "R", "v", "is_member", "galaxy_index", "center_dR", "center_dv",
                 *VIEW_SURVEY, *VIEW_SELECTION):
        out[name] = np.concatenate([p[name] for p in parts])
    return out


def _cut_batch(task: dict[str, Any], tree: cKDTree, kind: int, sel: slice) -> dict[str, Any]:
    """Cut the cylinders of the views ``sel`` of a chunk (see :func:`observe_chunk`)."""
    box = float(task["box"])
    ap = float(task["aperture"])
    vcut = float(task["vcut"])
    z = float(task["redshift"])
    members = task["center"] == "members"
    r_cand = ap * PAD_R if members else ap
    v_cand = (vcut * PAD_V if members else vcut) + float(task.get("v_pad", 0.0))
    cen_pos, cen_vel, los = task["cen_pos"][sel], task["cen_vel"][sel], task["los"][sel]
    halo_id, halo_row = task["halo_id"][sel], task["halo_row"][sel]
    los_index = task["los_index"][sel]
    gal_pos, gal_vel = task["gal_pos"], task["gal_vel"]
    k = len(cen_pos)
    half_depth = float(task["half_depth"])

    if kind < 0:
        # per-view depth from the view's own line-of-sight cluster velocity
        u_c = np.abs(np.sum(cen_vel * los, axis=1))
        z_lo, z_hi = los_redshift_bounds(v_cand, float(task["u_gal_max"]), u_c, z)
        depth = np.minimum(los_half_depth(z_lo, z_hi, task["table"]), half_depth)
    else:
        depth = np.full(k, half_depth)
    vi, gi = candidate_pairs(tree, kind, cen_pos, los, box, r_cand, depth)
    # exact geometry from global coordinates (minimum periodic image)
    d = gal_pos[gi] - cen_pos[vi]
    d -= box * np.round(d / box)
    n = los[vi]
    d_par = np.sum(d * n, axis=1)
    perp = d - d_par[:, None] * n
    R = np.sqrt(np.sum(perp * perp, axis=1))
    keep = (R <= r_cand) & (np.abs(d_par) <= half_depth)
    vi, gi, d_par, perp, R, n = vi[keep], gi[keep], d_par[keep], perp[keep], R[keep], n[keep]
    u_g = np.sum(gal_vel[gi] * n, axis=1)
    u_c = np.sum(cen_vel[vi] * n, axis=1)
    v = relative_velocity(d_par, u_g, u_c, z, task["table"])
    keep = np.abs(v) <= v_cand
    vi, gi, perp, R, v = vi[keep], gi[keep], perp[keep], R[keep], v[keep]

    # order inside each view by catalog row (chunking-independent)
    gidx = task["gal_index"][gi]
    order = np.lexsort((gidx, vi))
    vi, gi, perp, R, v, gidx = vi[order], gi[order], perp[order], R[order], v[order], gidx[order]
    sel_spec = task.get("selection")  # the galaxy selection, before the survey
    limits = view_limits(sel_spec, halo_row, los_index,
                         lambda h, j: view_rng(task["seed"], h, j, SEED_SELECTION))
    if sel_spec is not None:
        keep = keep_mask(sel_spec["selection_column"], task["gal_prop"][gi], limits[vi])
        vi, gi, perp, R, v, gidx = vi[keep], gi[keep], perp[keep], R[keep], v[keep], gidx[keep]
    is_mem = task["gal_host"][gi] == halo_id[vi]
    counts = np.bincount(vi, minlength=k).astype(np.int64)
    center_dR = np.zeros(k)
    center_dv = np.zeros(k)
    sv = task["survey"]
    rate_s, edge_s, verr_s = (Draw.parse(sv[key]) for key in ("sampling_rate",
                                                               "completeness_edge",
                                                               "velocity_error"))
    n_targets = sv.get("n_targets")
    randomised = any(isinstance(x, Draw) for x in (rate_s, edge_s, verr_s))
    per_view = {name: np.full(k, x if not isinstance(x, Draw) else np.nan)
                for name, x in zip(VIEW_SURVEY, (rate_s, edge_s, verr_s), strict=True)}
    per_view[VIEW_SELECTION[0]] = limits
    active = randomised or rate_s < 1 or edge_s < 1 or verr_s > 0 or n_targets is not None
    if not members and not active:
        return {"counts": counts, "R": R, "v": v, "is_member": is_mem, "galaxy_index": gidx,
                "center_dR": center_dR, "center_dv": center_dv, **per_view}

    starts = np.concatenate([[0], np.cumsum(counts)])
    e1, e2 = perpendicular_basis(los) if members and k else (None, None)
    seed = task["seed"]
    out_sel, out_R, out_v = [], [], []
    for j in range(k):
        idx = np.arange(starts[j], starts[j + 1])
        key = (seed, halo_row[j], los_index[j])
        if randomised:
            rng_s = view_rng(*key, SEED_SURVEY)
            rate, edge, verr = (x.sample(rng_s) if isinstance(x, Draw) else x
                                for x in (rate_s, edge_s, verr_s))
            for name, x in zip(VIEW_SURVEY, (rate, edge, verr), strict=True):
                per_view[name][j] = x
        else:
            rate, edge, verr = rate_s, edge_s, verr_s
        vj = v[idx]
        if verr > 0:
            vj = vj + view_rng(*key, SEED_VERR).normal(0.0, verr, idx.size)
        if rate < 1.0 or edge < 1.0:
            prob = rate if edge >= 1.0 else rate * (1 - (1 - edge) * np.minimum(R[idx] / ap, 1))
            keep = view_rng(*key, SEED_SAMPLING).random(idx.size) < prob
            idx, vj = idx[keep], vj[keep]
        if members:
            p = np.column_stack([perp[idx] @ e1[j], perp[idx] @ e2[j]])
            c = centre_on_members(p, vj, aperture=ap, vcut=vcut)
            idx, Rj, vj = idx[c.selected], c.R[c.selected], c.v[c.selected]
            center_dR[j], center_dv[j] = c.dR, c.dv
        else:
            inside = (R[idx] <= ap) & (np.abs(vj) <= vcut)
            idx, Rj, vj = idx[inside], R[idx][inside], vj[inside]
        if n_targets is not None and idx.size > n_targets:
            chosen = np.sort(view_rng(*key, SEED_TARGETS).choice(idx.size, n_targets,
                                                                 replace=False))
            idx, Rj, vj = idx[chosen], Rj[chosen], vj[chosen]
        out_sel.append(idx)
        out_R.append(Rj)
        out_v.append(vj)
        counts[j] = idx.size
    sel_all = np.concatenate(out_sel) if out_sel else np.zeros(0, np.int64)
    return {"counts": counts,
            "R": np.concatenate(out_R) if out_R else np.zeros(0),
            "v": np.concatenate(out_v) if out_v else np.zeros(0),
            "is_member": is_mem[sel_all], "galaxy_index": gidx[sel_all],
            "center_dR": center_dR, "center_dv": center_dv, **per_view}
