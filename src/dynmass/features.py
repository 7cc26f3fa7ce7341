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

Each KDE is normalised to sum 1 over its grid (so the kernel's normalising constant drops out).

Degenerate views
----------------
A view with one galaxy, identical velocities or collinear ``(R, v)`` points has a singular
sample covariance, where scipy fails. Here the sample covariance, expressed in units of the
grid's bin widths (``2 vcut / n_bins`` km/s and ``aperture / n_bins`` Mpc/h), has its
eigenvalues clipped from below at ``SIGMA_FLOOR_BINS**2`` (one bin width squared): the sample
standard deviation along any direction is at least one bin width (91.7 km/s and 0.033 Mpc/h for
the paper's grid). Real cluster views (sigma of hundreds of km/s, R spread of tenths of Mpc/h)
are far above the floor, so for them the result equals scipy's exactly. With the floor the
kernel is at least ``bandwidth`` bins wide, so a galaxy always puts weight on a nearby bin centre
and no row can underflow to zero or NaN. A view with *no* galaxies gets a uniform KDE.

Speed
-----
The evaluation is vectorised over galaxies of many views at once: the galaxies of a chunk of
consecutive views are evaluated on the whole grid in one array expression (float32) and summed
per view with :func:`numpy.add.reduceat`; no Python loop runs per view. See
``benchmarks/bench_features.py`` for throughput.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from dynmass._io import atomic_path, atomic_write_json
from dynmass.errors import InputError
from dynmass.observations import Observations

__all__ = [
    "FEATURE_VERSION",
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

#: Version of the feature definition; bump when the numbers :func:`kde1d`/:func:`kde2d` return
#: change, so that disk caches made by older code are not reused.
FEATURE_VERSION: int = 1

#: Floor of the sample standard deviation along any direction, in grid bin widths (see module
#: docstring): 2 vcut / n_bins km/s in v, aperture / n_bins Mpc/h in R.
SIGMA_FLOOR_BINS: float = 1.0

#: Elements of the float32 work array per chunk (about 16 MB).
_CHUNK_ELEMENTS: int = 1 << 22


def bin_centres(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """Centres of ``n_bins`` equal bins over ``[lo, hi]`` (same units as ``lo``, ``hi``)."""
    edges = np.linspace(lo, hi, n_bins + 1)
    return 0.5 * (edges[1:] + edges[:-1])


def _check_args(n_bins: int, bandwidth: float) -> None:
    if int(n_bins) != n_bins or n_bins < 2:
        raise InputError(f"n_bins must be an integer >= 2, got {n_bins}")
    if not (np.isfinite(bandwidth) and bandwidth > 0):
        raise InputError(f"bandwidth factor must be positive and finite, got {bandwidth}")


def _segment_moments(
    x: np.ndarray, y: np.ndarray | None, offsets: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Per-segment means and ddof=1 (co)variances; zero variance where n < 2."""
    counts = np.diff(offsets)
    seg = np.repeat(np.arange(len(counts)), counts)
    nz = np.maximum(counts, 1)
    mx = np.bincount(seg, weights=x, minlength=len(counts)) / nz
    dx = x - mx[seg]
    denom = np.maximum(counts - 1, 1)
    sxx = np.bincount(seg, weights=dx * dx, minlength=len(counts)) / denom
    if y is None:
        return (sxx,)
    my = np.bincount(seg, weights=y, minlength=len(counts)) / nz
    dy = y - my[seg]
    syy = np.bincount(seg, weights=dy * dy, minlength=len(counts)) / denom
    sxy = np.bincount(seg, weights=dx * dy, minlength=len(counts)) / denom
    return sxx, syy, sxy


def _chunks(counts: np.ndarray, per_row: int) -> list[tuple[int, int]]:
    """Split views into consecutive chunks of at most ``_CHUNK_ELEMENTS`` work elements."""
    max_rows = max(1, _CHUNK_ELEMENTS // per_row)
    out, start, n = [], 0, len(counts)
    csum = np.concatenate([[0], np.cumsum(counts)])
    while start < n:
        stop = int(np.searchsorted(csum, csum[start] + max_rows, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        out.append((start, stop))
        start = stop
    return out


def _normalise(dens: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Rows summing to 1; empty or (impossible with the floor) all-zero rows become uniform."""
    flat = dens.reshape(len(dens), -1)
    tot = flat.sum(axis=1, dtype=np.float64)
    bad = (counts == 0) | ~(tot > 0) | ~np.isfinite(tot)
    flat[bad] = 1.0
    tot[bad] = flat.shape[1]
    flat /= tot[:, None].astype(np.float32)
    return dens


def kde1d_arrays(
    v: np.ndarray, offsets: np.ndarray, vcut: float, n_bins: int = 48, bandwidth: float = 0.25
) -> np.ndarray:
    """1D KDEs of ragged velocity samples (the engine of :func:`kde1d`).

    Parameters
    ----------
    v : numpy.ndarray
        Line-of-sight velocities of all views concatenated, km/s.
    offsets : numpy.ndarray of int
        View ``k`` owns ``v[offsets[k]:offsets[k+1]]``.
    vcut : float
        Velocity cut, km/s; the grid spans ``[-vcut, vcut]``.
    n_bins : int
        Number of bins.
    bandwidth : float
        scipy ``gaussian_kde`` bandwidth factor (kernel sigma = factor x sample sigma).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n_views, n_bins)``, rows summing to 1.
    """
    _check_args(n_bins, bandwidth)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    width = 2.0 * vcut / n_bins  # km/s per bin
    y = (np.asarray(v, dtype=np.float64) + vcut) / width  # grid units; centres at 0.5 .. n-0.5
    (syy,) = _segment_moments(y, None, offsets)
    syy = np.maximum(syy, SIGMA_FLOOR_BINS**2)
    # -0.5 / kernel variance, per view
    coef = (-0.5 / (bandwidth**2 * syy)).astype(np.float32)
    centres = (np.arange(n_bins) + 0.5).astype(np.float32)
    out = np.zeros((len(counts), n_bins), dtype=np.float32)
    y32 = y.astype(np.float32)
    for a, b in _chunks(counts, n_bins):
        sel = np.flatnonzero(counts[a:b] > 0) + a
        if len(sel) == 0:
            continue
        lo, hi = offsets[a], offsets[b]
        d = centres[None, :] - y32[lo:hi, None]
        d *= d
        d *= np.repeat(coef[a:b], counts[a:b])[:, None]
        np.exp(d, out=d)
        out[sel] = np.add.reduceat(d, offsets[sel] - lo, axis=0)
    return _normalise(out, counts)


def kde2d_arrays(
    R: np.ndarray,
    v: np.ndarray,
    offsets: np.ndarray,
    aperture: float,
    vcut: float,
    n_bins: int = 48,
    bandwidth: float = 0.25,
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

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n_views, n_bins, n_bins)`` (axis 1: R, axis 2: v), each image
        summing to 1.
    """
    _check_args(n_bins, bandwidth)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    x = np.asarray(R, dtype=np.float64) / (aperture / n_bins)
    y = (np.asarray(v, dtype=np.float64) + vcut) / (2.0 * vcut / n_bins)
    sxx, syy, sxy = _segment_moments(x, y, offsets)
    cov = np.empty((len(counts), 2, 2))
    cov[:, 0, 0], cov[:, 1, 1], cov[:, 0, 1], cov[:, 1, 0] = sxx, syy, sxy, sxy
    lam, vec = np.linalg.eigh(cov)
    lam = np.maximum(lam, SIGMA_FLOOR_BINS**2) * bandwidth**2  # kernel covariance eigenvalues
    inv = np.einsum("nij,nj,nkj->nik", vec, 1.0 / lam, vec)  # inverse kernel covariance
    # exponent -0.5 Q = ha dx^2 + hc dy^2 + hb dx dy
    ha = (-0.5 * inv[:, 0, 0]).astype(np.float32)
    hc = (-0.5 * inv[:, 1, 1]).astype(np.float32)
    hb = (-inv[:, 0, 1]).astype(np.float32)
    centres = (np.arange(n_bins) + 0.5).astype(np.float32)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
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
    return _normalise(out, counts)


def kde1d(obs: Observations, n_bins: int = 48, bandwidth: float = 0.25) -> np.ndarray:
    """Gaussian KDE of each view's line-of-sight velocities on bin centres over [-vcut, vcut].

    scipy ``gaussian_kde`` semantics with bandwidth factor ``bandwidth`` (Ho et al. 2019 use
    0.25); degenerate views use the covariance floor of :data:`SIGMA_FLOOR_BINS`.

    Parameters
    ----------
    obs : Observations
        Views; ``obs.vcut`` (km/s) sets the grid.
    n_bins : int
        Number of velocity bins (48 in the paper).
    bandwidth : float
        Bandwidth factor.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n_views, n_bins)``, each row summing to 1.
    """
    return kde1d_arrays(obs.v, obs.offsets, obs.vcut, n_bins, bandwidth)


def kde2d(obs: Observations, n_bins: int = 48, bandwidth: float = 0.25) -> np.ndarray:
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


def flip_v(features: np.ndarray) -> np.ndarray:
    """Mirror KDE features along the velocity axis (``v -> -v``; the last axis, 1D or 2D).

    The grid is symmetric about ``v = 0``, so the KDE of the mirrored view equals the reversed
    KDE exactly (Ho et al. 2019 double their training set this way).
    """
    return np.ascontiguousarray(np.asarray(features)[..., ::-1])


def augment_flip(features: np.ndarray, *targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Training set doubled by v-flipping: ``(concat(X, flip(X)), concat(t, t), ...)``.

    Parameters
    ----------
    features : numpy.ndarray
        KDEs, shape ``(n, ...)`` with v on the last axis.
    *targets : numpy.ndarray
        Per-view arrays (labels, weights, halo ids) repeated for the mirrored copies.
    """
    out = [np.concatenate([features, flip_v(features)], axis=0)]
    out += [np.concatenate([t, t], axis=0) for t in targets]
    return tuple(out)


def feature_cache_key(
    obs: Observations, kind: str, n_bins: int, bandwidth: float, key: str
) -> str:
    """SHA-256 of everything that defines a feature array (see :func:`cached_features`)."""
    record = {
        "key": str(key),
        "kind": kind,
        "n_bins": int(n_bins),
        "bandwidth": float(bandwidth),
        "aperture": obs.aperture,
        "vcut": obs.vcut,
        "n_views": obs.n_views,
        "n_rows": int(obs.offsets[-1]),
        "feature_version": FEATURE_VERSION,
        "sigma_floor_bins": SIGMA_FLOOR_BINS,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cached_features(
    obs: Observations,
    kind: Literal["1d", "2d"],
    n_bins: int = 48,
    bandwidth: float = 0.25,
    cache_dir: str | os.PathLike | None = None,
    key: str = "",
) -> np.ndarray:
    """KDE features of ``obs``, read from a disk cache when present, computed and stored if not.

    The cache file ``<cache_dir>/kde<kind>_<hash16>.npy`` is keyed by a SHA-256 of ``key``
    (e.g. the observations file's sha256), ``kind``, ``n_bins``, ``bandwidth``, aperture,
    vcut, the number of views and galaxies and :data:`FEATURE_VERSION`; a JSON sidecar records
    those settings. Files are written atomically; an unreadable or mis-shaped cache file is
    recomputed and replaced.

    Parameters
    ----------
    obs : Observations
        Views.
    kind : {"1d", "2d"}
        :func:`kde1d` or :func:`kde2d`.
    n_bins : int
        Bins per axis.
    bandwidth : float
        Bandwidth factor.
    cache_dir : path, optional
        Cache folder; ``None`` disables caching.
    key : str
        Identity of the data (e.g. the observations file's sha256). An empty key hashes the
        galaxy arrays themselves.

    Returns
    -------
    numpy.ndarray
        As :func:`kde1d` or :func:`kde2d`.
    """
    if kind not in ("1d", "2d"):
        raise InputError(f"feature kind must be '1d' or '2d', got {kind!r}")
    func = kde1d if kind == "1d" else kde2d
    if cache_dir is None:
        return func(obs, n_bins, bandwidth)
    if not key:
        h = hashlib.sha256()
        for arr in (obs.R, obs.v, obs.offsets):
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        key = "data:" + h.hexdigest()
    digest = feature_cache_key(obs, kind, n_bins, bandwidth, key)
    path = Path(cache_dir) / f"kde{kind}_{digest[:16]}.npy"
    shape = (obs.n_views, n_bins) if kind == "1d" else (obs.n_views, n_bins, n_bins)
    if path.exists():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == shape and arr.dtype == np.float32:
                return arr
        except (OSError, ValueError):
            pass
    arr = func(obs, n_bins, bandwidth)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    atomic_write_json(
        path.with_suffix(".json"),
        {"key": key, "kind": kind, "n_bins": n_bins, "bandwidth": bandwidth,
         "aperture": obs.aperture, "vcut": obs.vcut, "n_views": obs.n_views,
         "feature_version": FEATURE_VERSION, "sha256": digest},
    )
    return arr
