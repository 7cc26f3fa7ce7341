"""Support-distribution-machine-like distribution regression (the SDM baseline of Ho et al. 2019).

Each view is treated as a *sample from a distribution*: of ``|v| / vcut`` (``dims=1``) or of
``(|v| / vcut, R / aperture)`` (``dims=2``), both scaled to unit ranges (Ntampaka et al. 2015,
ApJ 803, 50; 2016, ApJ 831, 135). Between two samples ``X`` (n points) and ``Y`` (m points) in
``d`` dimensions the Kullback-Leibler divergence is estimated with k-th nearest neighbour
distances (Wang, Kulkarni & Verdu 2009, IEEE Trans. Inf. Theory 55, 2392; Poczos, Xiong &
Schneider 2011, UAI; k = 4 as Ntampaka et al.)::

    D(X || Y) = d / n sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1)),

``rho_k(i)`` the distance from ``X_i`` to its k-th neighbour in ``X`` (itself excluded),
``nu_k(i)`` that to its k-th neighbour in ``Y``. It is symmetrised,
``D_s = (D(X||Y) + D(Y||X)) / 2``, clipped at 0 and turned into a kernel
``K = exp(-D_s / (2 sigma^2))`` (``kernel="exp"``; ``"rbf"`` uses ``D_s**2``). The training
kernel matrix is made positive semi-definite by clipping its negative eigenvalues, and test
kernels are mapped with the same projection (Chen et al. 2009, JMLR 10, 747, "clip"). A
nu-support vector regression (:class:`sklearn.svm.NuSVR`, ``kernel="precomputed"``; Ntampaka et
al. and Ho et al. use nu-SVR) predicts ``log10 M200c`` scaled to [0, 1]. The kernel width
``sigma`` (as a multiple of ``sqrt(median D_s)``), ``C`` and ``nu`` are chosen on a grid by an
inner 3-fold cross-validation over the training views, split by halo (halos ranked by mass,
fold = rank mod 3, as the paper's outer folds).

Practical choices (documented, not from the papers)
---------------------------------------------------
* The divergence matrix costs O(N_views^2 x n_gal^2). ``max_train_views`` (default 2000)
  subsamples the training views, stratified in mass and seeded, to keep fitting tractable.
* ``k`` is reduced per pair to ``min(k, n - 1, m)`` (at least 1) for views with few galaxies; a
  view with a single galaxy has ``rho`` set to the unit range (1). Distances are floored at
  ``distance_floor`` (1e-3 of the unit range: 2.2 km/s for vcut = 2200) so duplicate points
  cannot give ``log 0``.
* Prediction needs divergences only to the views with non-zero coefficients, which the model
  file stores (points, offsets and coefficients), so a loaded model predicts identically.

The pairwise divergences are computed on padded blocks of views of similar size (views sorted
by galaxy count), on a thread pool over block pairs: in 1D the k-th neighbour distances come
exactly from sorted samples (binary search plus a window of k + 2 candidates, O(n log m) per
pair), in 2D from all squared point distances of a block pair with :func:`numpy.partition`.
Distances are float32 like the samples; logarithms and sums are float64 (agreement with a
float64 :class:`scipy.spatial.cKDTree` reference ~1e-8).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dynmass.errors import InputError
from dynmass.folds import rank_folds
from dynmass.models.base import Estimator
from dynmass.observations import Observations, _ragged_rows

__all__ = ["SDM", "pairwise_divergence", "view_samples"]


def view_samples(obs: Observations, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-range samples of every view: ``|v| / vcut`` (and ``R / aperture`` if ``dims=2``).

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


def _psd_clip(K: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """PSD version of symmetric ``K`` and the projection for test rows (None when K is PSD)."""
    K = 0.5 * (K + K.T)
    try:
        np.linalg.cholesky(K + 1e-10 * np.trace(K) / len(K) * np.eye(len(K)))
        return K, None
    except np.linalg.LinAlgError:
        pass
    lam, vec = np.linalg.eigh(K)
    pos = lam > 0
    Kp = (vec[:, pos] * lam[pos]) @ vec[:, pos].T
    P = vec[:, pos] @ vec[:, pos].T
    return Kp, P


def _kernel(D: np.ndarray, sigma: float, form: str) -> np.ndarray:
    D = np.maximum(D, 0.0)
    return np.exp(-(D if form == "exp" else D * D) / (2.0 * sigma * sigma))


def _stratified_subsample(logm: np.ndarray, n_keep: int, seed: int) -> np.ndarray:
    """``n_keep`` view indices, one drawn at random from each of ``n_keep`` equal-count mass strata."""
    rng = np.random.default_rng(seed)
    order = np.argsort(logm, kind="stable")
    picks = [rng.choice(s) for s in np.array_split(order, n_keep)]
    return np.sort(np.asarray(picks, dtype=np.int64))


class SDM(Estimator):
    """nu-SVR on a k-NN KL divergence kernel between view distributions (Ntampaka et al. 2015).

    Settings
    --------
    dims : int
        1: samples of ``|v|``; 2: samples of ``(|v|, R)``.
    k : int
        Neighbour order of the divergence estimator (4).
    kernel : {"exp", "rbf"}
        ``exp(-D / 2 sigma^2)`` or ``exp(-D^2 / 2 sigma^2)``.
    sigma_factors, C_grid, nu_grid : list of float
        Hyper-parameter grid (sigma in units of ``sqrt(median D)`` or ``median D``).
    inner_folds : int
        Folds of the inner cross-validation (3).
    max_train_views : int
        Training views kept (mass-stratified, seeded subsample) to bound the O(N^2) cost.
    distance_floor : float
        Smallest neighbour distance, unit-range coordinates.
    block_points : int
        Padded points per block of the divergence computation (memory/speed trade-off).
    """

    name: ClassVar[str] = "sdm"
    defaults: ClassVar[dict[str, Any]] = {
        "dims": 1,
        "k": 4,
        "kernel": "exp",
        "sigma_factors": [0.5, 1.0, 2.0, 4.0, 8.0],
        "C_grid": [0.1, 1.0, 10.0],
        "nu_grid": [0.3, 0.6],
        "inner_folds": 3,
        "max_train_views": 2000,
        "distance_floor": 1e-3,
        "block_points": 2048,
    }

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        s = self.settings
        if s["dims"] not in (1, 2):
            raise InputError(f"sdm setting 'dims' must be 1 or 2, got {s['dims']}")
        if s["kernel"] not in ("exp", "rbf"):
            raise InputError(f"sdm setting 'kernel' must be 'exp' or 'rbf', got {s['kernel']!r}")
        if int(s["k"]) < 1 or int(s["max_train_views"]) < 10 or int(s["inner_folds"]) < 2:
            raise InputError("sdm settings need k >= 1, max_train_views >= 10, inner_folds >= 2")
        self._arrays: dict[str, np.ndarray] | None = None

    # -- divergences -------------------------------------------------------------------------
    def _div(self, pa: np.ndarray, oa: np.ndarray, pb: np.ndarray | None = None,
             ob: np.ndarray | None = None) -> np.ndarray:
        s = self.settings
        return pairwise_divergence(pa, oa, pb, ob, k=int(s["k"]), distance_floor=s["distance_floor"],
                                   block_points=int(s["block_points"]))

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, obs: Observations, *, seed: int = 0, **kwargs: Any) -> SDM:
        """Fit on the views of ``obs`` (subsampled to ``max_train_views``), grid-search by inner CV.

        Parameters
        ----------
        obs : Observations
            Training views with ``clusters["m200c"]`` [Msun/h].
        seed : int
            Seed of the mass-stratified subsample.
        """
        self.remember_obs_settings(obs)
        s = self.settings
        logm = obs.log10_m200c()
        keep = np.flatnonzero(np.isfinite(logm))
        if len(keep) < max(10, 2 * s["inner_folds"]):
            raise InputError(f"sdm needs at least 10 training views with known mass, got {len(keep)}")
        if len(keep) > s["max_train_views"]:
            keep = keep[_stratified_subsample(logm[keep], int(s["max_train_views"]), seed)]
        tr = obs.subset(keep)
        y_all = logm[keep]
        y_lo, y_hi = float(y_all.min()), float(y_all.max())
        if y_hi <= y_lo:
            raise InputError("sdm needs training views with different masses")
        y = (y_all - y_lo) / (y_hi - y_lo)
        pts, off = view_samples(tr, int(s["dims"]))
        D = self._div(pts, off)
        # single-threaded BLAS: OpenBLAS threads fighting torch's spinning OpenMP workers made
        # eigh ~20x slower on a 2-core machine (measured); the matrices here are small.
        with threadpool_limits(1, user_api="blas"):
            return self._fit_kernel(tr, D, y, (y_lo, y_hi), pts, off, len(keep))

    def _fit_kernel(self, tr: Observations, D: np.ndarray, y: np.ndarray,
                    y_range: tuple[float, float], pts: np.ndarray, off: np.ndarray,
                    n_train: int) -> SDM:
        """Inner-CV grid search on the divergence matrix ``D`` and the final nu-SVR fit."""
        from sklearn.svm import NuSVR

        s = self.settings
        off_diag = D[~np.eye(len(D), dtype=bool)]
        scale = float(np.median(np.maximum(off_diag, 0.0)))
        scale = scale if scale > 0 else 1.0
        unit = np.sqrt(scale) if s["kernel"] == "exp" else scale
        if np.unique(tr.clusters["halo_id"]).size < 2:
            raise InputError("sdm inner cross-validation needs views of at least two halos")
        n_hosts = np.unique(tr.clusters["halo_id"]).size
        folds = rank_folds(tr.clusters["halo_id"], tr.clusters["m200c"],
                           min(int(s["inner_folds"]), n_hosts))
        grid = [(f, C, nu) for f in s["sigma_factors"] for C in s["C_grid"] for nu in s["nu_grid"]]
        mse = np.zeros(len(grid))
        # libsvm releases the GIL while it trains: the (C, nu) fits of one kernel run on
        # torch's thread count; each fit is independent and sums keep their order, so the
        # numbers are those of the serial loop.
        n_workers = max(1, torch.get_num_threads())
        for fac in s["sigma_factors"]:
            K = _kernel(D, fac * unit, s["kernel"])
            for fold in np.unique(folds):
                te, trn = folds == fold, folds != fold
                Ktr, P = _psd_clip(K[np.ix_(trn, trn)])
                Kte = K[np.ix_(te, trn)]
                if P is not None:
                    Kte = Kte @ P
                jobs = [(g_i, C, nu) for g_i, (f, C, nu) in enumerate(grid) if f == fac]

                def cv_error(job: tuple[int, float, float], Ktr=Ktr, Kte=Kte, te=te,
                             trn=trn) -> float:
                    _, C, nu = job
                    svr = NuSVR(kernel="precomputed", C=C, nu=nu).fit(Ktr, y[trn])
                    return float(np.sum((svr.predict(Kte) - y[te]) ** 2) / len(y))

                if n_workers == 1 or len(jobs) == 1:
                    errors = [cv_error(job) for job in jobs]
                else:
                    with ThreadPoolExecutor(max_workers=min(n_workers, len(jobs))) as pool:
                        errors = list(pool.map(cv_error, jobs))
                for (g_i, _, _), err in zip(jobs, errors, strict=True):
                    mse[g_i] += err
            del K
        best = int(np.argmin(mse))
        fac, C, nu = grid[best]
        sigma = fac * unit
        Kfull, P = _psd_clip(_kernel(D, sigma, s["kernel"]))
        svr = NuSVR(kernel="precomputed", C=C, nu=nu).fit(Kfull, y)
        coef = np.zeros(len(y))
        coef[svr.support_] = svr.dual_coef_.ravel()
        if P is not None:
            coef = P @ coef
        sup = np.flatnonzero(coef != 0.0)
        rows = _ragged_rows(off[:-1][sup], np.diff(off)[sup])
        sup_off = np.zeros(len(sup) + 1, dtype=np.int64)
        np.cumsum(np.diff(off)[sup], out=sup_off[1:])
        self._arrays = {
            "support_points": pts[rows],
            "support_offsets": sup_off,
            "coef": coef[sup],
            "intercept": np.array(float(svr.intercept_[0])),
            "sigma": np.array(sigma),
            "y_range": np.array(y_range),
        }
        self.extra = {
            "n_train_views": int(n_train), "n_support_views": int(len(sup)),
            "n_sv": int(len(svr.support_)), "psd_clipped": P is not None,
            "best": {"sigma_factor": fac, "C": C, "nu": nu, "sigma": sigma},
            "cv_mse_scaled": {f"{g[0]}|{g[1]}|{g[2]}": float(m) for g, m in zip(grid, mse, strict=True)},
        }
        return self

    # -- prediction --------------------------------------------------------------------------
    def predict(self, obs: Observations) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] of every view of ``obs``."""
        if self._arrays is None:
            raise InputError("model 'sdm' is not fitted")
        self.check_obs(obs)
        a = self._arrays
        pts, off = view_samples(obs, int(self.settings["dims"]))
        if obs.n_views == 0:
            return np.zeros(0)
        D = self._div(pts, off, a["support_points"], a["support_offsets"])
        K = _kernel(D, float(a["sigma"]), self.settings["kernel"])
        y = K @ a["coef"] + float(a["intercept"])
        lo, hi = a["y_range"]
        return lo + y * (hi - lo)

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Support samples (ragged points + offsets), coefficients, intercept, kernel width."""
        if self._arrays is None:
            raise InputError("model 'sdm' is not fitted")
        return dict(self._arrays)

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore a fitted model."""
        need = {"support_points", "support_offsets", "coef", "intercept", "sigma", "y_range"}
        missing = need - set(arrays)
        if missing:
            raise InputError(f"sdm model file lacks arrays {sorted(missing)}")
        self._arrays = {k: np.asarray(arrays[k]) for k in need}
