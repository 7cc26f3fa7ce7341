"""k-nearest-neighbour Kullback-Leibler divergences between the galaxy samples of cluster views.

The distribution-regression maths of the SDM estimator (:mod:`dynmass.models.sdm`). Each view
is a sample from a distribution: of ``|v| / vcut`` (``dims=1``) or of ``(|v| / vcut,
R / aperture)`` (``dims=2``), both in unit ranges (:func:`view_samples`; v in km/s, R in
comoving Mpc/h). Between two samples ``X`` (n points) and ``Y`` (m points) in ``d`` dimensions
the divergence is estimated with k-th nearest neighbour distances (Wang, Kulkarni & Verdu
2009, IEEE Trans. Inf. Theory 55, 2392; Poczos, Xiong & Schneider 2011, UAI)::

    D(X || Y) = d / n sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1)),

``rho_k(i)`` the distance from ``X_i`` to its k-th neighbour in ``X`` (itself excluded),
``nu_k(i)`` that to its k-th neighbour in ``Y``; :func:`pairwise_divergence` returns the
symmetrised ``(D(X||Y) + D(Y||X)) / 2`` for every pair of views.

``k`` is reduced per pair to ``min(k, n - 1, m)`` (at least 1) for views with few galaxies; a
view with a single galaxy has ``rho`` set to the unit range (1). Distances are floored at
``distance_floor`` so duplicate points cannot give ``log 0``.

The divergences are computed on padded blocks of views of similar size (views sorted by galaxy
count), on a thread pool over block pairs: in 1D the k-th neighbour distances come exactly from
sorted samples (binary search plus a window of k + 2 candidates, O(n log m) per pair), in 2D
from all squared point distances of a block pair with :func:`numpy.partition`. Distances are
float32 like the samples; logarithms and sums are float64 (agreement with a float64
:class:`scipy.spatial.cKDTree` reference ~1e-8).

Examples
--------
Two views of the same Gaussian are closer to each other than to a view twice as wide:

>>> import numpy as np
>>> from dynmass.models.divergence import pairwise_divergence
>>> rng = np.random.default_rng(0)
>>> a, b, c = rng.normal(0, 0.1, 200), rng.normal(0, 0.1, 200), rng.normal(0, 0.2, 200)
>>> points = np.abs(np.concatenate([a, b, c]))[:, None].astype(np.float32)
>>> D = pairwise_divergence(points, np.array([0, 200, 400, 600]), threads=1)
>>> D.shape, bool(D[0, 1] < D[0, 2]), bool(np.allclose(D, D.T))
((3, 3), True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dynmass.errors import InputError
from dynmass.observations import Observations, _ragged_rows

__all__ = ["pairwise_divergence", "view_samples"]


def view_samples(obs: Observations, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-range samples of every view: ``|v| / vcut`` (and ``R / aperture`` if ``dims=2``).

    Parameters
    ----------
    obs : Observations
        Views (``v`` in km/s, ``R`` in comoving Mpc/h, cut at ``vcut`` and ``aperture``).
    dims : {1, 2}
        1: ``|v| / vcut`` only; 2: also ``R / aperture``.

    Returns
    -------
    points : numpy.ndarray
        float32, shape ``(n_rows, dims)``.
    offsets : numpy.ndarray
        int64, view ``k`` owns ``points[offsets[k]:offsets[k+1]]``.
    """
    if dims not in (1, 2):
        raise InputError(f"sdm setting 'dims' must be 1 or 2, got {dims}")
    cols = [np.abs(np.asarray(obs.v, dtype=np.float64)) / obs.vcut]
    if dims == 2:
        cols.append(np.asarray(obs.R, dtype=np.float64) / obs.aperture)
    return np.stack(cols, axis=1).astype(np.float32), np.asarray(obs.offsets, dtype=np.int64)


#: Coordinate given to padding points: far outside the unit range, so they are never among the
#: k nearest neighbours of a real point (squared distance ~ 1e6).
_SENTINEL = 1.0e3


class _Blocks:
    """Views grouped into padded blocks of similar size.

    Padding points sit at :data:`_SENTINEL`; per view we keep the within-sample squared k-NN
    distances summed as ``0.5 sum_i log max(rho_j(i)^2, floor^2)`` for every order ``j <= k``.
    In 1D each view's points are sorted (``x`` is then sorted along the point axis, padding
    last), and ``windows`` holds them between ``k + 1`` copies of ``-SENTINEL`` and
    ``+SENTINEL`` for the sorted-window k-NN search of :func:`_knn_1d`.
    """

    def __init__(self, points: np.ndarray, offsets: np.ndarray, k: int, block_points: int,
                 floor2: float):
        counts = np.diff(offsets)
        self.n_views = len(counts)
        order = np.argsort(counts, kind="stable")
        self.blocks: list[dict[str, Any]] = []
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * max(counts[order[stop]], k + 1) <= block_points:
                stop += 1
            self.blocks.append(self._make(points, offsets, order[start:stop], k, floor2))
            start = stop

    @staticmethod
    def _make(points: np.ndarray, offsets: np.ndarray, idx: np.ndarray, k: int,
              floor2: float) -> dict[str, Any]:
        counts = np.diff(offsets)[idx]
        width = max(int(counts.max()), k + 1)
        pad = np.full((len(idx), width, points.shape[1]), _SENTINEL, dtype=np.float32)
        valid = np.arange(width)[None, :] < counts[:, None]
        pad[valid] = points[_ragged_rows(offsets[:-1][idx], counts)]
        block: dict[str, Any] = {"idx": idx, "n": counts.astype(np.int64),
                                 "valid": valid.astype(np.float64)}
        if points.shape[1] == 1:
            pad = np.sort(pad, axis=1)  # padding (SENTINEL > any real point) stays last
            edge = np.full((len(idx), k + 1), _SENTINEL, dtype=np.float32)
            block["windows"] = torch.from_numpy(
                np.concatenate([-edge, pad[:, :, 0], edge], axis=1))
        block["x"] = pad
        x = torch.from_numpy(pad)
        d2 = _sqdist(x[:, :, None, :], x[:, None, :, :])
        d2.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        rho2 = torch.topk(d2, k, dim=-1, largest=False).values.numpy()  # (b, L, k) ascending
        # neighbours of order > n - 1 do not exist: single-galaxy views get rho = 1 (unit range)
        exists = np.arange(k)[None, None, :] < (counts - 1)[:, None, None]
        rho2 = np.where(exists, rho2, np.float32(1.0))
        logrho = 0.5 * np.log(np.maximum(rho2, floor2).astype(np.float64))
        block["logrho_sum"] = (logrho * block["valid"][:, :, None]).sum(1)  # (b, k)
        return block


def _sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance over the last axis (size 1 or 2) with broadcasting; summing
    per component is several times faster than reducing a 5-D broadcast tensor."""
    out = x[..., 0] - y[..., 0]
    out.square_()
    for c in range(1, x.shape[-1]):
        t = x[..., c] - y[..., c]
        out += t.square_()
    return out


def _keff(n_x: np.ndarray, n_y: np.ndarray, k: int) -> np.ndarray:
    """Neighbour order used for every (X_a, Y_b) pair: ``min(k, n_x - 1, n_y)``, at least 1."""
    return np.clip(np.minimum(np.minimum(n_x[:, None] - 1, n_y[None, :]), k), 1, None)


def _knn_1d(bx: dict[str, Any], by: dict[str, Any], keff: np.ndarray, k: int) -> np.ndarray:
    """Squared ``keff``-th nearest-neighbour distance from every point of X_a to Y_b, 1D.

    Exact, by sorting: with ``p`` the insertion position of ``x`` in the sorted ``Y``, the
    ``keff`` nearest neighbours are ``keff`` consecutive sorted points whose window contains
    ``Y[p-1]`` or ``Y[p]``, so the answer is the smallest over windows starting at
    ``p - k - 1 .. p`` of ``max(x - Y[start], Y[end] - x)``; out-of-range window ends read the
    +-SENTINEL padding and never win. Returns float32 ``(a, b, Lx)``.
    """
    xs = torch.from_numpy(bx["x"][:, :, 0])  # (a, Lx)
    ys = torch.from_numpy(by["x"][:, :, 0])  # (b, Ly) sorted, padding last
    n_a, n_b = xs.shape[0], ys.shape[0]
    xv = xs[:, None, :].expand(n_a, n_b, -1).contiguous()
    pos = torch.searchsorted(ys[None].expand(n_a, n_b, -1).contiguous(), xv)  # (a, b, Lx)
    win = by["windows"][None].expand(n_a, n_b, -1)  # Y[q] is windows[q + k + 1]
    span = torch.from_numpy(keff - 1)[:, :, None]
    best = None
    for j in range(k + 2):  # window start p - k - 1 + j, at windows index p + j
        lo = torch.gather(win, 2, pos + j)
        hi = torch.gather(win, 2, pos + j + span)
        dist = torch.maximum(xv - lo, hi - xv)
        best = dist if best is None else torch.minimum(best, dist)
    return best.square_().numpy()


def _knn_2d(x: np.ndarray, y: np.ndarray, keff: np.ndarray, k: int) -> np.ndarray:
    """Squared ``keff``-th nearest-neighbour distance from every point of X_a to Y_b, 2D.

    All squared distances of the block pair, shape (a, b, Lx, Ly), partitioned in place along
    the last axis (:meth:`numpy.ndarray.partition`). Returns float32 (a, b, Lx).
    """
    d2 = _sqdist(torch.from_numpy(x)[:, None, :, None, :],
                 torch.from_numpy(y)[None, :, None, :, :]).numpy()
    if (keff == k).all():
        d2.partition(k - 1, axis=3)
        return d2[..., k - 1].copy()
    d2.partition(list(range(k)), axis=3)
    return np.take_along_axis(d2, (keff - 1)[:, :, None, None], axis=3)[..., 0]


def _directional(nu2: np.ndarray, bx: dict[str, Any], n_y: np.ndarray, keff: np.ndarray,
                 d: int, floor2: float) -> np.ndarray:
    """D(X_a || Y_b) for a block pair; ``nu2``: (a, b, Lx) squared ``keff``-th neighbour
    distances from X_a's points to Y_b. Returns float64 (a, b)."""
    lognu = 0.5 * np.log(np.maximum(nu2, floor2).astype(np.float64))
    lognu_sum = (lognu * bx["valid"][:, None, :]).sum(-1)
    logrho_sum = np.take_along_axis(bx["logrho_sum"], keff - 1, axis=1)
    nxf = bx["n"].astype(np.float64)[:, None]
    return (d * (lognu_sum - logrho_sum) / np.maximum(nxf, 1)
            + np.log(n_y.astype(np.float64)[None, :] / np.maximum(nxf - 1, 1)))


def _block_pair(bx: dict[str, Any], by: dict[str, Any], k: int, floor2: float) -> np.ndarray:
    """Symmetrised divergence ``(D(X||Y) + D(Y||X)) / 2`` for all view pairs of two blocks."""
    d = bx["x"].shape[-1]
    k_xy = _keff(bx["n"], by["n"], k)
    k_yx = _keff(by["n"], bx["n"], k)
    if d == 1:
        nu_xy = _knn_1d(bx, by, k_xy, k)
        nu_yx = _knn_1d(by, bx, k_yx, k)
    else:  # the distance tensor is recomputed transposed: cheaper than transposing it
        nu_xy = _knn_2d(bx["x"], by["x"], k_xy, k)
        nu_yx = _knn_2d(by["x"], bx["x"], k_yx, k)
    fwd = _directional(nu_xy, bx, by["n"], k_xy, d, floor2)
    bwd = _directional(nu_yx, by, bx["n"], k_yx, d, floor2)
    return 0.5 * (fwd + bwd.T)


@contextlib.contextmanager
def _single_threaded_ops() -> Iterator[int]:
    """torch intra-op and BLAS threads set to 1 for the block (parallelism comes from a thread
    pool over block pairs instead: OpenMP teams spin-waiting for a busy core made the
    divergence 3x slower with 2 threads than with 1 on a shared 2-core machine). Yields the
    number of pool workers to use (torch's previous thread count)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield old
    finally:
        torch.set_num_threads(old)


def pairwise_divergence(
    points_a: np.ndarray,
    offsets_a: np.ndarray,
    points_b: np.ndarray | None = None,
    offsets_b: np.ndarray | None = None,
    *,
    k: int = 4,
    distance_floor: float = 1e-3,
    block_points: int = 2048,
    threads: int | None = None,
) -> np.ndarray:
    """Symmetrised k-NN KL divergence between every view of ``a`` and every view of ``b``.

    Parameters
    ----------
    points_a, offsets_a : numpy.ndarray
        Ragged samples (see :func:`view_samples`).
    points_b, offsets_b : numpy.ndarray, optional
        Second set; ``None`` computes the symmetric matrix of ``a`` with itself (diagonal 0).
    k : int
        Neighbour order (4 as Ntampaka et al. 2015).
    distance_floor : float
        Smallest distance used in the logarithms (unit-range coordinates).
    block_points : int
        Padded points per block (memory ~ 8 x block_points^2 bytes per block pair in 2D).
    threads : int, optional
        Worker threads over block pairs (default: torch's thread count).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_a, n_b)``: ``(D(A_i||B_j) + D(B_j||A_i)) / 2``.

    Notes
    -----
    Views are grouped into padded blocks of similar size. In 1D the k-th neighbour distances
    are found exactly by sorting (:func:`_knn_1d`, O(n log m) per pair); in 2D from all squared
    point distances of a block pair with :func:`numpy.partition`. Distances are float32 (as the
    samples), logarithms and sums float64.
    """
    floor2 = float(distance_floor) ** 2
    with torch.no_grad(), _single_threaded_ops() as workers:
        ba = _Blocks(points_a, offsets_a, k, block_points, floor2)
        same = points_b is None
        bb = ba if same else _Blocks(points_b, offsets_b, k, block_points, floor2)
        out = np.zeros((ba.n_views, bb.n_views))
        pairs = [(x, y) for i, x in enumerate(ba.blocks) for j, y in enumerate(bb.blocks)
                 if not (same and j < i)]

        def work(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
            x, y = pair
            sym = _block_pair(x, y, k, floor2)
            out[np.ix_(x["idx"], y["idx"])] = sym
            if same:
                out[np.ix_(y["idx"], x["idx"])] = sym.T

        n_workers = max(1, int(threads or workers))
        if n_workers == 1 or len(pairs) == 1:
            for pair in pairs:
                work(pair)
        else:
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                list(pool.map(work, pairs))
        if same:
            np.fill_diagonal(out, 0.0)
    return out
