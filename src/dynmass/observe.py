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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dynmass import _observe_kernels as K
from dynmass._io import atomic_path, atomic_write_json, file_sha256
from dynmass.catalog import Catalog, read_catalog
from dynmass.errors import InputError
from dynmass.observations import Observations, _ragged_rows, ragged_std

__all__ = ["PRESETS", "observe", "observe_file", "check_observations_file", "plan_views"]

log = logging.getLogger("dynmass.observe")

#: Named (aperture [comoving Mpc/h], vcut [km/s]) pairs of the authors' public example code
#: (Ho et al. 2019); "paper" is the revised paper's cylinder.
PRESETS: dict[str, tuple[float, float]] = {
    "paper": (1.6, 2200.0),
    "small": (1.1, 1570.0),
    "large": (2.3, 3785.0),
    "xlarge": (3.5, 6000.0),
}

#: Flat mass function defaults (Ho et al. 2019): 0.02 dex bins, at most ~80 views per host,
#: views per bin = 10^-5.2 (Mpc/h)^-3 dex^-1 times box volume times bin width (126 for MDPL2).
FLAT_BIN_DEX = 0.02
FLAT_DENSITY = 10**-5.2
MAX_LOS = 80

_GALAXY_COLUMNS = ["x", "y", "z", "vx", "vy", "vz", "host_id"]


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------
def _check_options(aperture: float, vcut: float, min_mass: float, min_members: int, n_los: int,
                   sampling_rate: float, center: str, seed: int, max_los: int,
                   flat_bin_dex: float, flat_target: int | None, flat_density: float,
                   workers: int | None, dask_scheduler: Any, chunk_size: int) -> None:
    """Raise :class:`InputError` for an option outside its sense."""

    def bad(msg: str, col: str) -> InputError:
        return InputError(msg, column=col)

    if not (np.isfinite(aperture) and aperture > 0):
        raise bad(f"aperture={aperture} must be a positive number (comoving Mpc/h)", "aperture")
    if not (np.isfinite(vcut) and vcut > 0):
        raise bad(f"vcut={vcut} must be a positive number (km/s)", "vcut")
    if not (np.isfinite(min_mass) and min_mass >= 0):
        raise bad(f"min_mass={min_mass} must be finite and >= 0 (Msun/h)", "min_mass")
    for name, val, lo in (("min_members", min_members, 1), ("n_los", n_los, 1),
                          ("max_los", max_los, 1), ("chunk_size", chunk_size, 1),
                          ("seed", seed, 0)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < lo:
            raise bad(f"{name}={val!r} must be an integer >= {lo}", name)
    if max_los < n_los:
        raise bad(f"max_los={max_los} must be >= n_los={n_los}", "max_los")
    if not (np.isfinite(sampling_rate) and 0 < sampling_rate <= 1):
        raise bad(f"sampling_rate={sampling_rate} is outside (0, 1]", "sampling_rate")
    if center not in ("true", "members"):
        raise bad(f"center={center!r} must be 'true' or 'members'", "center")
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
# which views
# --------------------------------------------------------------------------------------------
def flat_los_counts(log10_m: np.ndarray, *, target: int, bin_dex: float, n_min: int,
                    max_los: int) -> np.ndarray:
    """Number of views per host for a near-flat distribution of views in log10 M.

    Rule (after Ho et al. 2019, sec. 2.2): hosts are binned in ``log10 M200c`` with width
    ``bin_dex``. In a bin of ``N`` hosts every host gets ``clip(floor(target / N), n_min,
    max_los)`` views, so a bin holds about ``target`` views until its hosts run out of allowed
    views (rare massive hosts: ``max_los`` each). Crowded bins (``n_min * N > target``) are
    handled by :func:`plan_views`, which keeps ``target`` of their ``n_min * N`` views.

    Parameters
    ----------
    log10_m : numpy.ndarray
        log10 M200c of the hosts [Msun/h].
    target : int
        Views wanted per bin.
    bin_dex : float
        Bin width, dex.
    n_min, max_los : int
        Fewest and most views per host.

    Returns
    -------
    numpy.ndarray of int
        Views per host.
    """
    b = np.floor(np.asarray(log10_m) / bin_dex + 1e-9).astype(np.int64)
    _, inv, cnt = np.unique(b, return_inverse=True, return_counts=True)
    per = np.floor(target / cnt[inv]).astype(np.int64)
    return np.clip(per, n_min, max_los)


def plan_views(catalog: Catalog, *, min_mass: float, n_los: int, flat_mass_function: bool,
               flat_target: int | None, flat_bin_dex: float, flat_density: float, max_los: int,
               seed: int) -> dict[str, np.ndarray]:
    """Every (host, line of sight) pair to observe, in canonical order (halo row, los index).

    Parameters
    ----------
    catalog : Catalog
        The universe.
    min_mass : float
        Hosts need ``m200c >= min_mass`` [Msun/h].
    n_los : int
        Views per host (with ``flat_mass_function``, the fewest per host).
    flat_mass_function : bool
        Use :func:`flat_los_counts`; crowded bins keep a seeded random ``flat_target`` of their
        views.
    flat_target : int or None
        Views per bin; ``None``: ``flat_density * box_size**3 * flat_bin_dex`` (at least 1).
    flat_bin_dex, flat_density, max_los, seed
        See :func:`observe`.

    Returns
    -------
    dict
        ``halo_row``, ``los_index``, ``los`` (k, 3), ``axis`` (0/1/2 or -1) and
        ``flat_target`` (0-d, views per bin; -1 without flattening).
    """
    m = np.asarray(catalog.halos["m200c"], dtype=float)
    rows = np.flatnonzero(m >= min_mass)
    target = -1
    if flat_mass_function and rows.size:
        if flat_target is None:
            target = max(1, int(round(flat_density * catalog.box_size**3 * flat_bin_dex)))
        else:
            target = int(flat_target)
        logm = np.log10(m[rows])
        counts = flat_los_counts(logm, target=target, bin_dex=flat_bin_dex, n_min=n_los,
                                 max_los=max_los)
    else:
        counts = np.full(rows.size, n_los, dtype=np.int64)
    halo_row = np.repeat(rows, counts)
    los_index = _ragged_rows(np.zeros(rows.size, np.int64), counts)
    if flat_mass_function and rows.size:
        keep = np.ones(halo_row.size, dtype=bool)
        b = np.floor(np.log10(m[halo_row]) / flat_bin_dex + 1e-9).astype(np.int64)
        for bin_id in np.unique(b):
            in_bin = np.flatnonzero(b == bin_id)
            if in_bin.size > target:
                rng = K.view_rng(seed, int(bin_id) & 0x7FFFFFFF, 0, K.SEED_FLAT)
                chosen = np.sort(rng.choice(in_bin.size, size=target, replace=False))
                keep[in_bin] = False
                keep[in_bin[chosen]] = True
        halo_row, los_index = halo_row[keep], los_index[keep]
    los = np.zeros((halo_row.size, 3))
    axis = np.where(los_index < 3, los_index, -1)
    los[axis >= 0] = np.eye(3)[axis[axis >= 0]]
    extra = np.flatnonzero(axis < 0)
    if extra.size:
        # halo_row is sorted, so each host's extra views are contiguous in ``extra``
        hosts, first, cnt = np.unique(halo_row[extra], return_index=True, return_counts=True)
        for h, f, c in zip(hosts, first, cnt, strict=True):
            sel = extra[f:f + c]
            n_h = int(counts[np.searchsorted(rows, h)])
            los[sel] = K.host_directions(n_h, seed, int(h))[los_index[sel]]
    return {"halo_row": halo_row.astype(np.int64), "los_index": los_index.astype(np.int64),
            "los": los, "axis": axis.astype(np.int64), "flat_target": np.asarray(target)}


# --------------------------------------------------------------------------------------------
# chunks
# --------------------------------------------------------------------------------------------
class _GalaxyGrid:
    """Galaxies sorted by the cell of a regular grid, to gather those near a region fast."""

    def __init__(self, pos: np.ndarray, box: float, cell_size: float):
        self.box = box
        self.n = int(np.clip(np.floor(box / max(cell_size, 1e-9)), 1, 128))
        self.g = box / self.n
        ijk = np.clip(np.floor(pos / self.g).astype(np.int64), 0, self.n - 1)
        cid = (ijk[:, 0] * self.n + ijk[:, 1]) * self.n + ijk[:, 2]
        self.order = np.argsort(cid, kind="stable")
        self.start = np.searchsorted(cid[self.order], np.arange(self.n**3))
        self.count = np.diff(np.append(self.start, len(cid)))

    def rows_near(self, lo: np.ndarray, hi: np.ndarray, pad: np.ndarray) -> np.ndarray:
        """Sorted rows of every galaxy within ``pad[a]`` (periodic) of [lo, hi] along each axis."""
        idx = []
        for a in range(3):
            if hi[a] - lo[a] + 2 * pad[a] >= self.box - self.g:
                idx.append(np.arange(self.n))
            else:
                i0 = int(np.floor((lo[a] - pad[a]) / self.g))
                i1 = int(np.floor((hi[a] + pad[a]) / self.g))
                idx.append(np.unique(np.mod(np.arange(i0, i1 + 1), self.n)))
        if all(len(i) == self.n for i in idx):
            return np.arange(len(self.order))
        ids = ((idx[0][:, None, None] * self.n + idx[1][None, :, None]) * self.n
               + idx[2][None, None, :]).ravel()
        return np.sort(self.order[_ragged_rows(self.start[ids], self.count[ids])])


def _chunk_views(cen_pos: np.ndarray, kind: np.ndarray, box: float, chunk_size: int,
                 pad: float) -> list[tuple[int, np.ndarray]]:
    """Group views into chunks ``(kind, view indices)`` of one kind and one cell of the box.

    Axis-aligned views (kind 0/1/2) are grouped in columns along their axis (a grid in the sky
    plane), so a chunk needs only the galaxies of a column; other views (kind -1) in cubic
    cells no smaller than twice the cylinder depth ``pad``. Cells hold about ``chunk_size``
    views; a chunk may hold more when cells cannot shrink (it then cuts them in batches).
    """
    chunks: list[tuple[int, np.ndarray]] = []
    for kd in (0, 1, 2, -1):
        sel = np.flatnonzero(kind == kd)
        if sel.size == 0:
            continue
        if kd >= 0:
            dims = [i for i in (0, 1, 2) if i != kd]
            n_c = max(1, int(round(np.sqrt(sel.size / chunk_size))))
        else:
            dims = [0, 1, 2]
            n_c = max(1, int(round((sel.size / chunk_size) ** (1 / 3))))
            n_c = min(n_c, max(1, int(box // (2 * pad))))
        ijk = np.clip(np.floor(cen_pos[sel][:, dims] / box * n_c).astype(np.int64), 0, n_c - 1)
        cid = np.ravel_multi_index(tuple(ijk.T), (n_c,) * len(dims))
        order = np.argsort(cid, kind="stable")
        bounds = np.flatnonzero(np.diff(cid[order])) + 1
        for group in np.split(order, bounds):
            chunks.append((kd, np.sort(sel[group])))
    return chunks


def _tasks(catalog: Catalog, plan: dict[str, np.ndarray], chunks: list[tuple[int, np.ndarray]],
           common: dict[str, Any], grid: _GalaxyGrid, r_pad: float, depth_pad: float,
           gal: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """Yield the task of each chunk (its views and the galaxies of its padded region)."""
    halos = catalog.halos
    for kind, sel in chunks:
        hr = plan["halo_row"][sel]
        cen = np.column_stack([halos[c][hr] for c in ("x", "y", "z")]).astype(float)
        pad = np.full(3, depth_pad)
        if kind >= 0:
            pad[:] = r_pad
            pad[kind] = np.inf  # the whole column along the line of sight
        rows = grid.rows_near(cen.min(axis=0), cen.max(axis=0), pad)
        yield {
            **common,
            "kind": int(kind),
            "view_id": sel,
            "cen_pos": cen,
            "cen_vel": np.column_stack([halos[c][hr] for c in ("vx", "vy", "vz")]).astype(float),
            "los": plan["los"][sel],
            "halo_id": np.asarray(halos["id"])[hr],
            "halo_row": hr,
            "los_index": plan["los_index"][sel],
            "gal_pos": gal["pos"][rows],
            "gal_vel": gal["vel"][rows],
            "gal_host": gal["host"][rows],
            "gal_index": rows.astype(np.int64),
        }


def _run_serial(tasks: Iterator[dict[str, Any]], n_chunks: int,
                progress: bool) -> list[dict[str, Any]]:
    it = tasks
    if progress:
        from tqdm import tqdm

        it = tqdm(tasks, total=n_chunks, desc="observe", unit="chunk")
    return [K.observe_chunk(t) for t in it]


def _run_dask(tasks: Iterator[dict[str, Any]], n_chunks: int, client: Any,
              progress: bool) -> list[dict[str, Any]]:
    """Run chunks on a Dask client, a bounded number in flight (memory stays bounded)."""
    from distributed import as_completed

    n_threads = max(1, sum(client.nthreads().values()))
    in_flight = 2 * n_threads
    results: list[dict[str, Any] | None] = [None] * n_chunks
    ac = as_completed()
    index: dict[Any, int] = {}
    task_iter = enumerate(tasks)

    def submit_next() -> None:
        nxt = next(task_iter, None)
        if nxt is not None:
            i, task = nxt
            payload = client.scatter([task], hash=False)[0]
            fut = client.submit(K.observe_chunk, payload, pure=False,
                                key=f"observe-chunk-{i}-" + os.urandom(4).hex())
            index[fut.key] = i
            ac.add(fut)

    for _ in range(in_flight):
        submit_next()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_chunks, desc="observe (dask)", unit="chunk")
    for fut in ac:
        results[index.pop(fut.key)] = fut.result()
        fut.release()
        if bar is not None:
            bar.update(1)
        submit_next()
    if bar is not None:
        bar.close()
    return results  # type: ignore[return-value]


def _assemble(results: list[dict[str, Any]], n_views: int) -> dict[str, np.ndarray]:
    """Concatenate chunk results in canonical view order."""
    if not results:
        z = np.zeros(0)
        return {"counts": np.zeros(n_views, np.int64), "R": z, "v": z,
                "is_member": np.zeros(0, bool), "galaxy_index": np.zeros(0, np.int64),
                "center_dR": np.zeros(n_views), "center_dv": np.zeros(n_views)}
    view_id = np.concatenate([r["view_id"] for r in results])
    counts = np.concatenate([r["counts"] for r in results]).astype(np.int64)
    starts = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    order = np.argsort(view_id, kind="stable")
    if not np.array_equal(view_id[order], np.arange(n_views)):
        raise RuntimeError("internal error: chunks do not cover every view exactly once")
    rows = _ragged_rows(starts[order], counts[order])
    out = {"counts": counts[order]}
    for name in ("R", "v", "is_member", "galaxy_index"):
        out[name] = np.concatenate([r[name] for r in results])[rows]
    for name in ("center_dR", "center_dv"):
        out[name] = np.concatenate([r[name] for r in results])[order]
    return out


def _client(workers: int | None, dask_scheduler: Any) -> tuple[Any, Any]:
    """(client, cluster_to_close) for the Dask options; ``(None, None)`` for serial."""
    if workers is None and dask_scheduler is None:
        return None, None
    from distributed import Client, LocalCluster

    if dask_scheduler is not None:
        if isinstance(dask_scheduler, Client):
            return dask_scheduler, None
        return Client(str(dask_scheduler)), "client"
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


# --------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------
def observe(
    catalog: Catalog,
    *,
    aperture: float = PRESETS["paper"][0],
    vcut: float = PRESETS["paper"][1],
    min_mass: float = 10**13.5,
    min_members: int = 10,
    n_los: int = 3,
    flat_mass_function: bool = False,
    flat_target: int | None = None,
    flat_bin_dex: float = FLAT_BIN_DEX,
    flat_density: float = FLAT_DENSITY,
    max_los: int = MAX_LOS,
    sampling_rate: float = 1.0,
    center: str = "true",
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
    aperture : float
        Cylinder radius, projected comoving Mpc/h (Ho et al. 2019: 1.6).
    vcut : float
        Velocity cut, km/s: galaxies with ``|v| <= vcut`` relative to the cluster (2200).
    min_mass : float
        Hosts with ``m200c >= min_mass`` [Msun/h] are observed (10^13.5).
    min_members : int
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
    sampling_rate : float
        Keep each galaxy of a view with this probability (seeded per view), in (0, 1].
    center : {"true", "members"}
        Cylinder about the true halo centre and velocity, or about an observer's estimate
        from the galaxies (median sky position, biweight velocity; iterated).
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
        An option outside its sense, or a catalog that fails validation.
    """
    _check_options(aperture, vcut, min_mass, min_members, n_los, sampling_rate, center, seed,
                   max_los, flat_bin_dex, flat_target, flat_density, workers, dask_scheduler,
                   chunk_size)
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
    u_gal = float(np.sqrt((gal["vel"] ** 2).sum(axis=1)).max()) if len(gal["vel"]) else 0.0
    hr = np.unique(plan["halo_row"])
    hv = np.column_stack([halos[c][hr] for c in ("vx", "vy", "vz")]).astype(float)
    u_clu = float(np.sqrt((hv**2).sum(axis=1)).max()) if hr.size else 0.0
    members = center == "members"
    r_cand = aperture * (K.CENTER_PAD_R if members else 1.0)
    v_cand = vcut * (K.CENTER_PAD_V if members else 1.0)
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
              "sampling_rate": float(sampling_rate), "seed": int(seed), "center": center,
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
    settings = {
        "aperture": float(aperture), "vcut": float(vcut), "redshift": z,
        "cosmology": dict(catalog.cosmology), "box_size": box,
        "min_members": int(min_members), "min_mass": float(min_mass), "n_los": int(n_los),
        "flat_mass_function": bool(flat_mass_function),
        "flat_target": int(plan["flat_target"]) if flat_mass_function else None,
        "flat_bin_dex": float(flat_bin_dex), "flat_density": float(flat_density),
        "max_los": int(max_los), "sampling_rate": float(sampling_rate), "center": center,
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
        Keyword arguments of :func:`observe`.

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

    unknown = set(options) - set(_OBSERVE_KW)
    if unknown:
        raise InputError(f"unknown observe options: {sorted(unknown)}")
    opts = {**_OBSERVE_KW, **options}
    _check_options(opts["aperture"], opts["vcut"], opts["min_mass"], opts["min_members"],
                   opts["n_los"], opts["sampling_rate"], opts["center"], opts["seed"],
                   opts["max_los"], opts["flat_bin_dex"], opts["flat_target"],
                   opts["flat_density"], opts["workers"], opts["dask_scheduler"],
                   opts["chunk_size"])
    universe_path, out_path = Path(universe_path), Path(out_path)
    if out_path.exists() and universe_path.exists() and out_path.samefile(universe_path):
        raise InputError("the output would overwrite the universe file", path=out_path)
    catalog = read_catalog(universe_path,
                           columns={"halos": [], "galaxies": list(_GALAXY_COLUMNS)})
    sha = file_sha256(universe_path)
    obs = observe(catalog, universe_sha256=sha, **options)
    obs.settings["universe_file"] = str(universe_path.resolve())
    return write_observations(obs, out_path,
                              extra_attrs={"universe_sha256": sha, "seed": int(opts["seed"])})


_OBSERVE_KW: dict[str, Any] = {
    "aperture": PRESETS["paper"][0], "vcut": PRESETS["paper"][1], "min_mass": 10**13.5,
    "min_members": 10, "n_los": 3, "flat_mass_function": False, "flat_target": None,
    "flat_bin_dex": FLAT_BIN_DEX, "flat_density": FLAT_DENSITY, "max_los": MAX_LOS,
    "sampling_rate": 1.0, "center": "true", "seed": 0, "workers": None, "dask_scheduler": None,
    "chunk_size": 500, "progress": False,
}


# --------------------------------------------------------------------------------------------
# validation report
# --------------------------------------------------------------------------------------------
#: Bin edges of R / R200c for the interloper-fraction profile (last bin open).
R_OVER_R200_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, np.inf)


def _binned_fraction(x: np.ndarray, interloper: np.ndarray,
                     edges: np.ndarray) -> list[dict[str, Any]]:
    idx = np.digitize(x, edges) - 1
    rows = []
    for b in range(len(edges) - 1):
        sel = idx == b
        n = int(sel.sum())
        f = float(interloper[sel].mean()) if n else float("nan")
        err = float(np.sqrt(f * (1 - f) / n)) if n else float("nan")
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n_gal": n,
                     "interloper_fraction": f, "error": err})
    return rows


def check_observations_file(path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Validation report of an observations file: interloper fraction vs R/R200c and mass.

    Writes ``interlopers.png`` (interloper fraction against R/R200c and against log10 M200c)
    and ``observations_check.json`` into ``out_dir``.

    Checks (all must hold for ``passed``): the file reads and validates (R within the
    aperture, ``|v| <= vcut``); ``n_gal``, ``n_members_true`` and ``sigma_v`` agree with the
    galaxy arrays; every view has at least ``min_members`` galaxies; interlopers are not more
    common inside 0.5 R200c than beyond R200c (members concentrate to the centre).

    Parameters
    ----------
    path : str or os.PathLike
        Observations file.
    out_dir : str or os.PathLike
        Folder for the figure and the JSON summary.

    Returns
    -------
    dict
        ``passed`` (bool), ``checks`` (name -> bool), ``summary`` (numbers), ``figure`` (path).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dynmass.observations import read_observations

    obs = read_observations(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    interloper = ~obs.is_member
    view = obs.view_of_galaxy
    r200 = obs.clusters["r200c"].astype(float)
    x_r = obs.R / r200[view] if obs.n_views else np.zeros(0)
    logm = obs.log10_m200c()
    edges_r = np.asarray(R_OVER_R200_EDGES)
    prof_r = _binned_fraction(x_r, interloper, edges_r)
    if obs.n_views and np.all(np.isfinite(logm)):
        lo, hi = np.floor(logm.min() * 5) / 5, np.ceil(logm.max() * 5 + 1e-9) / 5
        edges_m = np.arange(lo, hi + 0.1, 0.2)
    else:
        edges_m = np.array([0.0, 20.0])
    prof_m = _binned_fraction(logm[view] if obs.n_views else np.zeros(0), interloper, edges_m)
    n_mem = np.bincount(view, weights=obs.is_member, minlength=obs.n_views)
    min_members = int(obs.settings.get("min_members", 1))
    inner = [b for b in prof_r if b["hi"] <= 0.5 and b["n_gal"]]
    outer = [b for b in prof_r if b["lo"] >= 1.0 and b["n_gal"]]

    def frac(bins: list[dict[str, Any]]) -> float:
        n = sum(b["n_gal"] for b in bins)
        return sum(b["interloper_fraction"] * b["n_gal"] for b in bins) / n if n else float("nan")

    f_in, f_out = frac(inner), frac(outer)
    checks = {
        "n_gal_matches_offsets": bool(np.array_equal(obs.clusters["n_gal"], obs.n_gal)),
        "n_members_true_matches": bool(np.array_equal(obs.clusters["n_members_true"], n_mem)),
        "sigma_v_matches": bool(np.allclose(obs.clusters["sigma_v"],
                                            ragged_std(obs.v, obs.offsets), equal_nan=True)),
        "min_members_respected": bool(np.all(obs.n_gal >= min_members)),
        "interlopers_rise_with_radius": bool(not (f_in > f_out)),
    }
    summary = {
        "file": str(path), "n_views": obs.n_views, "n_galaxies": int(len(obs.R)),
        "aperture": obs.aperture, "vcut": obs.vcut,
        "interloper_fraction": float(interloper.mean()) if len(obs.R) else float("nan"),
        "interloper_fraction_inside_0.5R200c": f_in,
        "interloper_fraction_beyond_R200c": f_out,
        "median_n_gal": float(np.median(obs.n_gal)) if obs.n_views else float("nan"),
        "n_views_dropped": obs.settings.get("n_views_dropped"),
        "vs_R_over_R200c": prof_r, "vs_log10_m200c": prof_m,
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, prof, label in ((axes[0], prof_r, r"$R / R_{200c}$"),
                            (axes[1], prof_m, r"$\log_{10} M_{200c}$ [$M_\odot/h$]")):
        lo = np.array([b["lo"] for b in prof])
        hi = np.array([b["hi"] for b in prof])
        hi = np.where(np.isfinite(hi), hi, lo + (lo[-1] - lo[-2] if len(lo) > 1 else 1.0))
        f = np.array([b["interloper_fraction"] for b in prof])
        e = np.array([b["error"] for b in prof])
        ax.errorbar(0.5 * (lo + hi), f, yerr=e, xerr=0.5 * (hi - lo), fmt="o", ms=4)
        ax.set_xlabel(label)
        ax.set_ylabel("interloper fraction")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].axvline(1.0, color="0.5", ls=":")
    fig.suptitle(f"{Path(path).name}: aperture {obs.aperture} Mpc/h, vcut {obs.vcut} km/s, "
                 f"{obs.n_views} views; overall {summary['interloper_fraction']:.3f}")
    fig.tight_layout()
    fig_path = out_dir / "interlopers.png"
    with atomic_path(fig_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    result = {"passed": all(checks.values()), "checks": checks, "summary": summary,
              "figure": str(fig_path)}
    atomic_write_json(out_dir / "observations_check.json", result)
    return result
