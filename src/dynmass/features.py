"""Kernel density estimates of cluster views: the inputs of the CNNs (Ho et al. 2019).

For every view (one cluster along one line of sight) we evaluate a Gaussian kernel density
estimate of its galaxies on a fixed grid of bin centres, with the semantics of
:class:`scipy.stats.gaussian_kde` (Scott-style *bandwidth factor* times the sample covariance,
``ddof=1``) and the paper's settings (Ho et al. 2019, ApJ 887, 25, arXiv:1902.05950 section 3):

* 1D: the line-of-sight velocity ``v`` [km/s] on ``n_bins`` (48) bin centres over
  ``[-vcut, vcut]``; kernel variance ``bandwidth**2 * var(v)``.
* 2D: the joint ``(R, v)`` [comoving Mpc/h, km/s] on ``n_bins x n_bins`` (48 x 48) centres
  over ``[0, aperture] x [-vcut, vcut]`` with the *full* 2x2 kernel covariance
  ``bandwidth**2 * cov(R, v)``; output axis 1 is ``R``, axis 2 is ``v``.

Each KDE is normalised to sum 1 over its grid (so the kernel's normalising constant drops out);
degenerate views (one galaxy, identical velocities, collinear points) get a covariance floor of
one bin width (:data:`SIGMA_FLOOR_BINS`, see :mod:`dynmass.features_grid`), and a view with no
galaxies a uniform KDE.

Modules
-------
This module evaluates the 2D KDEs (:func:`kde2d`, :func:`kde2d_arrays`) and re-exports the rest
of the features stage, so every name below can be imported from here:

* :mod:`dynmass.features_grid`: defaults (:data:`N_BINS`, :data:`BANDWIDTH`), the covariance
  floor, :data:`FEATURE_VERSION`, :func:`bin_centres` and the machinery both KDEs share;
* :mod:`dynmass.features_kde1d`: the 1D KDEs (:func:`kde1d`, :func:`kde1d_arrays`);
* :mod:`dynmass.features_cache`: the disk cache (:func:`cached_features`,
  :func:`feature_cache_key`);
* :mod:`dynmass.features_augment`: v-flip augmentation (:func:`flip_v`, :func:`augment_flip`).

Speed
-----
The Gaussian exponent factorises into a galaxy-by-R-bin part, a galaxy-by-v-bin part and a
per-view grid factor, so each view's image is one (48 x n) @ (n x 48) matrix product in float64
(:func:`_factored_2d`: 2 x 48 instead of 48 x 48 exponentials per galaxy), computed on padded
chunks of views of similar size on a small thread pool, with maxima shifted out so nothing
overflows; views where that bound could fail (strongly correlated or degenerate samples) are
evaluated directly (:func:`_direct_2d`). The result matches direct float64 evaluation (and
scipy) to float32 round-off, ~5e-8 of the image peak. See ``benchmarks/bench_predict.py`` and
``benchmarks/bench_features.py`` for throughput.

Examples
--------
The 2D KDE image of one view of five galaxies (and of an empty view) on an 8 x 8 grid over
R in [0, 1.6] comoving Mpc/h and v in [-2200, 2200] km/s:

>>> import numpy as np
>>> from dynmass.features import kde2d_arrays
>>> R = np.array([0.1, 0.3, 0.4, 0.8, 1.2])  # comoving Mpc/h
>>> v = np.array([-400.0, -100.0, 50.0, 300.0, 600.0])  # km/s
>>> img = kde2d_arrays(R, v, np.array([0, 5, 5]), aperture=1.6, vcut=2200.0, n_bins=8)
>>> img.shape, img.dtype  # views, R bins, v bins
((2, 8, 8), dtype('float32'))
>>> img.sum(axis=(1, 2)).round(6).tolist()
[1.0, 1.0]
>>> [int(i) for i in np.unravel_index(img[0].argmax(), img[0].shape)]  # peak: small R, v ~ 0
[0, 3]
>>> float(img[1].min()) == float(img[1].max()) == 1 / 64  # an empty view is uniform
True
"""

from __future__ import annotations

import os

import numpy as np

from dynmass.features_augment import augment_flip, flip_v
from dynmass.features_cache import cached_features, feature_cache_key
from dynmass.features_grid import (
    BANDWIDTH,
    FEATURE_VERSION,
    N_BINS,
    SIGMA_FLOOR_BINS,
    _check_args,
    _chunks,
    _normalise,
    _segment_moments,
    bin_centres,
)
from dynmass.features_kde1d import kde1d, kde1d_arrays
from dynmass.observations import Observations, _ragged_rows

__all__ = [
    "BANDWIDTH",
    "FEATURE_VERSION",
    "N_BINS",
    "SIGMA_FLOOR_BINS",
    "augment_flip",
    "bin_centres",
    "cached_features",
    "feature_cache_key",
    "flip_v",
    "kde1d",
    "kde2d",
    "kde1d_arrays",
    "kde2d_arrays",
]


def _direct_2d(x: np.ndarray, y: np.ndarray, offsets: np.ndarray, ha: np.ndarray,
               hb: np.ndarray, hc: np.ndarray, n_bins: int) -> np.ndarray:
    """Unnormalised 2D KDEs by direct evaluation of every (galaxy, grid point) pair, float32.

    ``x``, ``y``: coordinates in grid units centred on the grid (bin centres at
    ``j + 0.5 - n_bins / 2``); the exponent is ``ha dx^2 + hc dy^2 + hb dx dy`` per view. Used
    for the views :func:`_factored_2d` cannot evaluate safely (strong correlations, galaxies far
    off the grid).
    """
    counts = np.diff(offsets)
    centres = (np.arange(n_bins) + 0.5 - 0.5 * n_bins).astype(np.float32)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    ha, hb, hc = ha.astype(np.float32), hb.astype(np.float32), hc.astype(np.float32)
    out = np.zeros((len(counts), n_bins, n_bins), dtype=np.float32)
    for a, b in _chunks(counts, n_bins * n_bins):
        sel = np.flatnonzero(counts[a:b] > 0) + a
        if len(sel) == 0:
            continue
        lo, hi = offsets[a], offsets[b]
        rep = counts[a:b]
        dx = centres[None, :] - x32[lo:hi, None]  # (rows, nR)
        dy = centres[None, :] - y32[lo:hi, None]  # (rows, nv)
        qx = dx * dx * np.repeat(ha[a:b], rep)[:, None]
        qy = dy * dy * np.repeat(hc[a:b], rep)[:, None]
        dx *= np.repeat(hb[a:b], rep)[:, None]
        work = np.multiply(dx[:, :, None], dy[:, None, :])
        work += qx[:, :, None]
        work += qy[:, None, :]
        np.exp(work, out=work)
        out[sel] = np.add.reduceat(work, offsets[sel] - lo, axis=0)
    return out


def _factored_2d(idx: np.ndarray, x: np.ndarray, y: np.ndarray, offsets: np.ndarray,
                 inv: np.ndarray, n_bins: int, out: np.ndarray) -> np.ndarray:
    """Normalised 2D KDEs of the views ``idx`` (all non-empty) as a batched matrix product.

    With ``u = X_j - x_i``, ``w = Y_k - y_i`` (grid point ``(X_j, Y_k)``, galaxy ``i``, all
    coordinates in grid units centred on the grid) and the inverse kernel covariance
    ``[[a, b], [b, c]]``, the kernel exponent splits exactly as::

        -(a u^2 + 2 b u w + c w^2) / 2 = A_ij + B_ik - b X_j Y_k,
        A_ij = -a u^2 / 2 + b X_j y_i,   B_ik = -c w^2 / 2 + b x_i w,

    so the density is ``exp(-b X_j Y_k) * sum_i exp(A_ij) exp(B_ik)``: 2 x 48 exponentials
    per galaxy and one (48 x n) @ (n x 48) product per view instead of 48 x 48 exponentials
    per galaxy. To keep every factor in range, ``A`` and ``B`` are shifted by their maxima over
    the view's galaxies (``alpha_j``, ``beta_k``; so ``0 <= exp(A - alpha) <= 1``) and the
    shifts go into the outer factor ``E_jk = exp(-b X_j Y_k + alpha_j + beta_k)``. All terms are
    positive (no cancellation); in float64, every term above ``exp(-100)`` is represented
    without underflow as long as ``log E <= _FACTORED_MAX_LOG`` (any term ``t = A B E`` with
    ``A, B <= 1`` has ``log A, log B >= log t - log E``). Views beyond that bound (strong
    (R, v) correlation with a narrow kernel, galaxies far off the grid) or whose image sums to
    less than ``_FACTORED_MIN_SUM`` are left to :func:`_direct_2d`.

    Arrays are laid out galaxy-major, ``(galaxy slot, view, grid)``, so that the maxima over
    galaxies are element-wise maxima of contiguous rows and the exponents are one matrix
    product each. Writes float32 images normalised to sum 1 into ``out[idx]`` and returns the
    indices of the views it could not evaluate safely.
    """
    counts = np.diff(offsets)[idx]
    n_views, width = len(idx), int(counts.max())
    valid = np.arange(width)[:, None] < counts[None, :]  # (slot, view)
    slot = np.arange(len(idx))[None, :] + n_views * np.arange(width)[:, None]
    rows = _ragged_rows(offsets[:-1][idx], counts)
    xp = np.zeros((width, n_views))
    yp = np.zeros((width, n_views))
    xp.flat[slot.T[valid.T]] = x[rows]  # view-major order of valid slots = order of rows
    yp.flat[slot.T[valid.T]] = y[rows]
    a, b, c = inv[idx, 0, 0], inv[idx, 0, 1], inv[idx, 1, 1]
    grid = np.arange(n_bins) + 0.5 - 0.5 * n_bins
    # A_ij + a X_j^2 / 2 = (a x_i + b y_i) X_j - a x_i^2 / 2 (the X_j^2 term goes into alpha)
    fa, alpha = _shifted_exp(a * xp + b * yp, -0.5 * a * xp * xp, valid, grid)
    fb, beta = _shifted_exp(c * yp + b * xp, -0.5 * c * yp * yp - b * xp * yp, valid, grid)
    dens = np.matmul(fa.transpose(1, 2, 0), fb.transpose(1, 0, 2))  # (views, nR, nv)
    # log E_jk = -b X_j Y_k + (alpha_j - a X_j^2 / 2) + (beta_k - c Y_k^2 / 2)
    lhs = np.stack([-b[:, None] * grid, alpha - 0.5 * a[:, None] * grid * grid], axis=-1)
    log_e = (lhs.reshape(-1, 2) @ np.stack([grid, np.ones(n_bins)])).reshape(dens.shape)
    log_e += (beta - 0.5 * c[:, None] * grid * grid)[:, None, :]
    peak = log_e.max(axis=(1, 2))
    with np.errstate(over="ignore", invalid="ignore"):  # such views go to the direct path
        np.exp(log_e, out=log_e)
        dens *= log_e
        tot = dens.sum(axis=(1, 2))
    ok = (peak <= _FACTORED_MAX_LOG) & (tot >= _FACTORED_MIN_SUM) & np.isfinite(tot)
    if ok.all():
        dens /= tot[:, None, None]
        out[idx] = dens
    else:
        out[idx[ok]] = dens[ok] / tot[ok, None, None]
    return idx[~ok]


def _shifted_exp(slope: np.ndarray, const: np.ndarray, valid: np.ndarray, grid: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``exp(slope_iv g_j + const_iv - shift_vj)`` for padded galaxy slots ``i`` of views
    ``v`` on grid ``g`` (shape ``(slot, view, grid)``), ``shift_vj`` the maximum over the
    view's valid galaxies; padding slots give 0. Returns the array and ``shift``."""
    const = np.where(valid, const, -1e300)
    expo = (np.stack([slope, const], axis=-1).reshape(-1, 2)
            @ np.stack([grid, np.ones(len(grid))])).reshape(*slope.shape, len(grid))
    shift = expo.max(axis=0)
    expo -= shift[None]
    np.exp(expo, out=expo)
    return expo, shift


#: Largest log of the outer factor of :func:`_factored_2d` accepted (float64 safety margin:
#: terms down to exp(-100) stay above the smallest normal double, exp(-708)).
_FACTORED_MAX_LOG: float = 600.0
#: Smallest unnormalised image sum accepted from :func:`_factored_2d` (else direct path).
_FACTORED_MIN_SUM: float = 1e-30
#: Padded galaxy slots (views x width) per chunk of :func:`_factored_2d` (~1.5 MB per array).
_FACTORED_SLOTS: int = 4096
#: Most views per chunk of :func:`_factored_2d` (bounds the (views, 48, 48) float64 arrays).
_FACTORED_VIEWS: int = 256


def _default_threads() -> int:
    """Worker threads for the KDEs: the CPUs this process may use (at most 8)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _size_chunks(counts: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
    """Views (in ``order``, ascending size) split into chunks of bounded padded size."""
    out, start = [], 0
    while start < len(order):
        stop = start + 1
        while (stop < len(order) and stop - start < _FACTORED_VIEWS
               and (stop - start + 1) * counts[order[stop]] <= _FACTORED_SLOTS):
            stop += 1
        out.append(order[start:stop])
        start = stop
    return out


def _run_parallel(func, tasks: list, threads: int) -> list:
    """``[func(t) for t in tasks]`` on a pool of ``threads`` threads (numpy releases the GIL);
    BLAS limited to one thread per worker so the pool is the only parallelism."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        if threads <= 1 or len(tasks) <= 1:
            return [func(t) for t in tasks]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(func, tasks))


def kde2d_arrays(
    R: np.ndarray,
    v: np.ndarray,
    offsets: np.ndarray,
    aperture: float,
    vcut: float,
    n_bins: int = N_BINS,
    bandwidth: float = BANDWIDTH,
    *,
    threads: int | None = None,
) -> np.ndarray:
    """2D full-covariance KDEs of ragged ``(R, v)`` samples (the engine of :func:`kde2d`).

    Parameters
    ----------
    R : numpy.ndarray
        Projected radii of all views concatenated, comoving Mpc/h.
    v : numpy.ndarray
        Line-of-sight velocities, km/s.
    offsets : numpy.ndarray of int
        View ``k`` owns rows ``offsets[k]:offsets[k+1]``.
    aperture : float
        Aperture, comoving Mpc/h; the R grid spans ``[0, aperture]``.
    vcut : float
        Velocity cut, km/s; the v grid spans ``[-vcut, vcut]``.
    n_bins : int
        Bins along each axis.
    bandwidth : float
        scipy ``gaussian_kde`` bandwidth factor (kernel covariance = factor**2 x sample
        covariance).
    threads : int, optional
        Worker threads (default: the CPUs available, at most 8).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n_views, n_bins, n_bins)`` (axis 1: R, axis 2: v), each image
        summing to 1.

    Notes
    -----
    Views are evaluated in float64 as a batched matrix product (:func:`_factored_2d`, ~30x
    fewer exponentials than direct evaluation), in chunks of views of similar size on a thread
    pool; the few views where that could lose accuracy are evaluated directly
    (:func:`_direct_2d`). Both agree with :class:`scipy.stats.gaussian_kde` to float32
    round-off.
    """
    _check_args(n_bins, bandwidth)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    # grid units, centred on the grid: bin centres at j + 0.5 - n_bins / 2
    x = np.asarray(R, dtype=np.float64) / (aperture / n_bins) - 0.5 * n_bins
    y = np.asarray(v, dtype=np.float64) / (2.0 * vcut / n_bins)
    sxx, syy, sxy = _segment_moments(x, y, offsets)
    cov = np.empty((len(counts), 2, 2))
    cov[:, 0, 0], cov[:, 1, 1], cov[:, 0, 1], cov[:, 1, 0] = sxx, syy, sxy, sxy
    lam, vec = np.linalg.eigh(cov)
    lam = np.maximum(lam, SIGMA_FLOOR_BINS**2) * bandwidth**2  # kernel covariance eigenvalues
    inv = np.einsum("nij,nj,nkj->nik", vec, 1.0 / lam, vec)  # inverse kernel covariance
    out = np.empty((len(counts), n_bins, n_bins), dtype=np.float32)  # every view is written
    order = np.flatnonzero(counts > 0)
    order = order[np.argsort(counts[order], kind="stable")]
    tasks = _size_chunks(counts, order)
    failed = _run_parallel(lambda idx: _factored_2d(idx, x, y, offsets, inv, n_bins, out), tasks,
                           threads or _default_threads())
    failed = np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *failed]))
    if len(failed):
        sub_off = np.zeros(len(failed) + 1, dtype=np.int64)
        np.cumsum(counts[failed], out=sub_off[1:])
        rows = _ragged_rows(offsets[:-1][failed], counts[failed])
        # exponent -0.5 Q = ha dx^2 + hc dy^2 + hb dx dy
        dens = _direct_2d(x[rows], y[rows], sub_off, -0.5 * inv[failed, 0, 0],
                          -inv[failed, 0, 1], -0.5 * inv[failed, 1, 1], n_bins)
        out[failed] = _normalise(dens, counts[failed])
    empty = counts == 0
    out[empty] = 1.0 / (n_bins * n_bins)
    return out


def kde2d(obs: Observations, n_bins: int = N_BINS, bandwidth: float = BANDWIDTH) -> np.ndarray:
    """Full-covariance Gaussian KDE of each view's ``(R, v)`` on a grid over
    [0, aperture] x [-vcut, vcut].

    Parameters
    ----------
    obs : Observations
        Views; ``obs.aperture`` (Mpc/h) and ``obs.vcut`` (km/s) set the grid.
    n_bins : int
        Bins along each axis (48 in the paper).
    bandwidth : float
        Bandwidth factor (0.25 in the paper).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n_views, n_bins_R, n_bins_v)``, each image summing to 1.
    """
    return kde2d_arrays(obs.R, obs.v, obs.offsets, obs.aperture, obs.vcut, n_bins, bandwidth)
