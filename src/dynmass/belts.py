"""Neyman confidence belts of log10 M200c: one per calibration set, or one per richness band.

A belt tabulates, at every true mass m, quantiles of ``pred - true`` among calibration views
near m (:func:`belt_table`: a window of at least ``k`` views and :data:`MIN_HOSTS` distinct
hosts, at most :data:`MAX_HALFWIDTH` dex wide, local-linear in m). :func:`richness_belts`
stacks one belt per band of the number of galaxies in the cylinder (:data:`RICHNESS_EDGES`,
bands merged until each holds :data:`MIN_BAND_HOSTS` hosts), the table of the ``"neyman_n"``
method; :func:`richness_band` names a cluster's band and :func:`belt_ends` the ends of the
belt that inverts its prediction. Inverting a belt into intervals, the other interval methods
and the calibrated mass range are in :mod:`dynmass.intervals`, which re-exports every name
here; :data:`PERCENTILES` and :func:`default_k_neighbors`, shared by all methods, live here,
below :mod:`dynmass.intervals`, so that neither module imports the other in a circle.

Examples
--------
>>> import numpy as np
>>> from dynmass.belts import belt_table, richness_band
>>> richness_band(np.array([10, 15, 30, 300])).tolist()  # bands of RICHNESS_EDGES
[0, 1, 2, 8]
>>> rng = np.random.default_rng(5)
>>> true = rng.uniform(13.5, 15.5, 20000)
>>> pred = true + rng.normal(0.0, 0.1, true.size)  # an unbiased 0.1 dex estimator
>>> grid, table = belt_table(true, pred, k_neighbors=1000)
>>> np.round(np.median(table, axis=0), 1).tolist()  # quantiles of pred - true [dex]
[-0.2, -0.1, 0.0, 0.1, 0.2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dynmass.errors import InputError

#: Percentiles (in per cent) of log10 M200c every prediction reports.
PERCENTILES: tuple[float, ...] = (2.5, 16.0, 50.0, 84.0, 97.5)
#: Band edges of the number of galaxies in the cylinder for ``"neyman_n"`` (factors of 1.5
#: from 10, the usual fewest galaxies of a view); bands are merged upwards until each holds
#: :data:`MIN_BAND_HOSTS` hosts.
RICHNESS_EDGES: tuple[float, ...] = (15.0, 22.5, 33.75, 50.6, 75.9, 113.9, 170.9, 256.3)
#: Fewest distinct calibration hosts of one richness band's belt.
MIN_BAND_HOSTS = 150


def default_k_neighbors(n_calibration: int) -> int:
    """Window size: 1/20 of the calibration views, at least 200, at most all of them."""
    return int(min(n_calibration, max(200, n_calibration // 20)))


#: Fewest distinct hosts a belt window must hold, and fewest calibration hosts beyond each end
#: of the calibrated mass range (views of one host along different lines of sight are
#: correlated, so hosts, not views, set how well a quantile is known).
MIN_HOSTS: int = 25
#: Widest half-width [dex] a belt window may grow to in search of ``MIN_HOSTS`` hosts.
MAX_HALFWIDTH: float = 0.25


def belt_table(
    true: np.ndarray,
    pred: np.ndarray,
    host: np.ndarray | None = None,
    k_neighbors: int | None = None,
    percentiles: Sequence[float] = PERCENTILES,
    min_hosts: int = MIN_HOSTS,
    max_halfwidth: float = MAX_HALFWIDTH,
    n_grid: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Neyman confidence belt: quantiles of ``pred - true`` at each true mass, edge-corrected.

    At a node ``m0`` (nodes at quantiles of ``true``) the window holds the ``k`` views nearest
    in true mass, widened symmetrically in mass until it holds ``min_hosts`` distinct hosts.
    Within the window the linear trend of the residual with true mass (least squares on its
    central 95%) is removed, moving every residual to ``m0``; the Weibull quantiles of the
    moved residuals are the belt at ``m0``. This is a local-linear estimate (Fan & Gijbels
    1996, *Local Polynomial Modelling*), free of the first-order bias a plain window has where
    it is one-sided, at the edges of the training range, exactly where learners are biased.
    Nodes that would need a window wider than ``max_halfwidth`` are dropped: the belt, and so
    every interval, ends there.

    Parameters
    ----------
    true, pred : numpy.ndarray
        True and predicted log10 M200c [Msun/h] of calibration views.
    host : numpy.ndarray, optional
        Host label of every view (default: every view its own host).
    k_neighbors : int, optional
        Fewest views per window (default :func:`default_k_neighbors`).
    percentiles : sequence of float
        Percentiles (per cent) to tabulate.
    min_hosts : int
        Fewest distinct hosts per window.
    max_halfwidth : float
        Widest window half-width [dex].
    n_grid : int
        Most nodes.

    Returns
    -------
    grid : numpy.ndarray
        True log10 M200c of every kept node, increasing.
    table : numpy.ndarray
        ``(len(grid), len(percentiles))`` quantiles of ``pred - true`` [dex].
    """
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    n = len(true)
    if n < 10:
        raise InputError(f"only {n} calibration views; need at least 10")
    host = np.arange(n) if host is None else np.asarray(host)
    k = default_k_neighbors(n) if k_neighbors is None else int(min(max(k_neighbors, 5), n))
    order = np.argsort(true, kind="stable")
    t, r, h = true[order], (pred - true)[order], host[order]
    probs = np.asarray(percentiles, float) / 100.0
    nodes, rows = [], []
    for m0 in np.unique(np.quantile(t, np.linspace(0.0, 1.0, min(n_grid, n)))):
        c = int(np.searchsorted(t, m0))
        s = int(np.clip(c - k // 2, 0, n - k))
        hw_k = max(m0 - t[s], t[s + k - 1] - m0)
        reach = max(hw_k, max_halfwidth)
        a = int(np.searchsorted(t, m0 - reach, side="left"))
        b = int(np.searchsorted(t, m0 + reach, side="right"))
        d = np.abs(t[a:b] - m0)
        by_d = np.argsort(d, kind="stable")
        _, first = np.unique(h[a:b][by_d], return_index=True)
        if len(first) < min_hosts:
            continue
        hw_h = d[by_d[np.sort(first)[min_hosts - 1]]]
        if hw_h > max_halfwidth:
            continue
        w = d <= max(hw_k, hw_h)
        x, y = t[a:b][w] - m0, r[a:b][w]
        lo, hi = np.quantile(y, [0.025, 0.975])
        core = (y >= lo) & (y <= hi)
        var = float(np.var(x[core]))
        slope = float(np.cov(x[core], y[core], bias=True)[0, 1] / var) if var > 1e-10 else 0.0
        nodes.append(m0)
        rows.append(np.quantile(y - slope * x, probs, method="weibull"))
    if len(nodes) < 2:
        raise InputError(f"no true mass has {min_hosts} calibration hosts within "
                         f"{max_halfwidth} dex: too few hosts to calibrate intervals on")
    return np.asarray(nodes), np.asarray(rows)


def richness_band(n_gal: np.ndarray) -> np.ndarray:
    """Index of the band of :data:`RICHNESS_EDGES` that each number of galaxies falls in.

    Parameters
    ----------
    n_gal : numpy.ndarray
        Galaxies in each view's cylinder.

    Returns
    -------
    numpy.ndarray of int
        0 below the first edge, ``len(RICHNESS_EDGES)`` above the last.
    """
    return np.searchsorted(np.asarray(RICHNESS_EDGES), np.asarray(n_gal, float), side="right")


def richness_belts(
    true: np.ndarray,
    pred: np.ndarray,
    n_gal: np.ndarray,
    host: np.ndarray | None = None,
    k_neighbors: int | None = None,
    percentiles: Sequence[float] = PERCENTILES,
    min_hosts: int = MIN_HOSTS,
    max_halfwidth: float = MAX_HALFWIDTH,
    min_band_hosts: int = MIN_BAND_HOSTS,
) -> tuple[np.ndarray, np.ndarray]:
    """One Neyman belt (:func:`belt_table`) per richness band, stacked in one table.

    Bands of :data:`RICHNESS_EDGES` are taken from the poorest up and merged with the next
    until a group holds ``min_band_hosts`` distinct hosts; a last group short of them joins
    the one before.

    Parameters
    ----------
    true, pred : numpy.ndarray
        True and predicted log10 M200c [Msun/h] of calibration views.
    n_gal : numpy.ndarray
        Galaxies in each calibration view's cylinder.
    host : numpy.ndarray, optional
        Host label of every view (default: every view its own host).
    k_neighbors : int, optional
        Fewest views per window of each belt (default: :func:`default_k_neighbors` of the
        band's views).
    percentiles : sequence of float
        Percentiles (per cent) to tabulate.
    min_hosts, max_halfwidth
        See :func:`belt_table`.
    min_band_hosts : int
        Fewest distinct hosts of a group of bands.

    Returns
    -------
    grid : numpy.ndarray
        Nodes [log10 Msun/h] of all belts, one belt after the other.
    table : numpy.ndarray
        ``(len(grid), len(percentiles) + 1)``: quantiles of ``pred - true`` [dex], and in the
        last column the first band of the group the node's belt belongs to.
    """
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    host = np.arange(len(true)) if host is None else np.asarray(host)
    band = richness_band(n_gal)
    groups: list[list[int]] = []
    current: list[int] = []
    for b in range(len(RICHNESS_EDGES) + 1):
        current.append(b)
        if np.unique(host[np.isin(band, current)]).size >= min_band_hosts:
            groups.append(current)
            current = []
    if current:
        if groups:
            groups[-1] = groups[-1] + current
        else:
            groups.append(current)
    grids, tables = [], []
    for g in groups:
        sel = np.isin(band, g)
        if not sel.any():
            continue
        k = None if k_neighbors is None else min(int(k_neighbors), int(sel.sum()))
        grid, table = belt_table(true[sel], pred[sel], host[sel], k, percentiles, min_hosts,
                                 max_halfwidth)
        grids.append(grid)
        tables.append(np.column_stack([table, np.full(len(grid), float(g[0]))]))
    return np.concatenate(grids), np.concatenate(tables)


def belt_ends(grid: np.ndarray, table: np.ndarray, method: str,
              n_gal: float | None = None) -> tuple[float, float]:
    """True log10 M200c [Msun/h] at the ends of the belt that inverts a cluster's prediction.

    Parameters
    ----------
    grid, table : numpy.ndarray
        A ``"neyman"`` or ``"neyman_n"`` table (:func:`dynmass.intervals.calibrate`).
    method : {"neyman", "neyman_n"}
        Its method.
    n_gal : float, optional
        The cluster's galaxies in the cylinder (``"neyman_n"``: picks the band's belt).

    Returns
    -------
    tuple of float
        ``(lo, hi)``: intervals are clipped there.
    """
    if method == "neyman_n" and n_gal is not None:
        starts = np.unique(table[:, -1])
        b = int(richness_band(np.array([n_gal]))[0])
        s0 = starts[max(0, int(np.searchsorted(starts, b, side="right")) - 1)]
        g = grid[table[:, -1] == s0]
        return float(g[0]), float(g[-1])
    return float(grid[0]), float(grid[-1])
