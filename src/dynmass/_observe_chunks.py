"""Running the views of :func:`dynmass.observe.observe` in chunks, here or on Dask workers.

Views are grouped in chunks of one kind (line of sight along x, y, z, or another direction)
and one cell of the box (:func:`_chunk_views`); each chunk's task carries only the galaxies of
its padded region, gathered from a regular grid (:class:`_GalaxyGrid`), so memory per chunk is
bounded. Chunks run serially or on a Dask client with a bounded number in flight; the results
are put back in canonical view order (:func:`_assemble`), so they do not depend on the
chunking or on where the chunks ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from dynmass import _observe_kernels as K
from dynmass.catalog import Catalog
from dynmass.observations import _ragged_rows


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
            **({"gal_prop": gal["prop"][rows]} if "prop" in gal else {}),
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
                "center_dR": np.zeros(n_views), "center_dv": np.zeros(n_views),
                **{name: np.zeros(n_views) for name in (*K.VIEW_SURVEY, *K.VIEW_SELECTION)}}
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
    for name in ("center_dR", "center_dv", *K.VIEW_SURVEY, *K.VIEW_SELECTION):
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
