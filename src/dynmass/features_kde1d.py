"""1D KDE features: the density of each view's line-of-sight velocities (Ho et al. 2019).

The line-of-sight velocity ``v`` [km/s] of a view's galaxies, on ``n_bins`` (48) bin centres
over ``[-vcut, vcut]``, with kernel variance ``bandwidth**2 * var(v)`` (scipy
``gaussian_kde`` semantics, the covariance floor and normalisation of
:mod:`dynmass.features_grid`). The input of the CNN1D.

Speed: the galaxies of a chunk of consecutive views are evaluated on the whole grid in one array
expression (float32) and summed per view with :func:`numpy.add.reduceat`; no Python loop runs
per view.
"""

from __future__ import annotations

import numpy as np

from dynmass.features_grid import (
    BANDWIDTH,
    N_BINS,
    SIGMA_FLOOR_BINS,
    _check_args,
    _chunks,
    _normalise,
    _segment_moments,
)
from dynmass.observations import Observations

__all__ = ["kde1d", "kde1d_arrays"]


def kde1d_arrays(
    v: np.ndarray,
    offsets: np.ndarray,
    vcut: float,
    n_bins: int = N_BINS,
    bandwidth: float = BANDWIDTH,
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


def kde1d(obs: Observations, n_bins: int = N_BINS, bandwidth: float = BANDWIDTH) -> np.ndarray:
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
