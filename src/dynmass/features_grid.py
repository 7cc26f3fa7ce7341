"""The KDE grid and what the 1D and 2D KDE features share.

The features of :mod:`dynmass.features` are Gaussian kernel density estimates of each view's
galaxies on a fixed grid of bin centres (:func:`bin_centres`), with the semantics of
:class:`scipy.stats.gaussian_kde` (Scott-style *bandwidth factor* times the sample covariance,
``ddof=1``) and the settings of Ho et al. 2019 (ApJ 887, 25, arXiv:1902.05950 section 3):
:data:`N_BINS` = 48 bins per axis, bandwidth factor :data:`BANDWIDTH` = 0.25. Each KDE is
normalised to sum 1 over its grid (so the kernel's normalising constant drops out).

This module holds those defaults, :data:`FEATURE_VERSION` (the identity of the feature
definition, part of every cache key) and the per-view machinery both KDEs use: argument checks,
per-view sample moments of ragged arrays, chunking of views into bounded work arrays, and
normalisation of the images.

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
"""

from __future__ import annotations

import numpy as np

from dynmass.errors import InputError

__all__ = ["BANDWIDTH", "FEATURE_VERSION", "N_BINS", "SIGMA_FLOOR_BINS", "bin_centres"]

#: Bins per axis of the KDE images and the scipy ``gaussian_kde`` bandwidth factor of Ho et al.
#: 2019 (ApJ 887, 25): the defaults of every featurizer and model.
N_BINS: int = 48
BANDWIDTH: float = 0.25
#: Version of the feature definition; bump when the numbers :func:`~dynmass.features.kde1d` /
#: :func:`~dynmass.features.kde2d` return change, so that disk caches made by older code are not
#: reused.
FEATURE_VERSION: int = 2  # 2: factored float64 kde2d (round-off level change)

#: Floor of the sample standard deviation along any direction, in grid bin widths (see module
#: docstring): 2 vcut / n_bins km/s in v, aperture / n_bins Mpc/h in R.
SIGMA_FLOOR_BINS: float = 1.0

#: Elements of the float32 work array per chunk (about 16 MB).
_CHUNK_ELEMENTS: int = 1 << 22


def bin_centres(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """Centres of ``n_bins`` equal bins over ``[lo, hi]`` (same units as ``lo``, ``hi``).

    Parameters
    ----------
    lo, hi : float
        Ends of the grid, e.g. ``-vcut, vcut`` km/s or ``0, aperture`` comoving Mpc/h.
    n_bins : int
        Number of bins.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_bins,)``.

    Examples
    --------
    >>> from dynmass.features_grid import bin_centres
    >>> bin_centres(-2200.0, 2200.0, 4)  # km/s
    array([-1650.,  -550.,   550.,  1650.])
    """
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
