"""Prediction intervals of log10 M200c from calibration views ``(pred, true, host)``.

Interval methods (quantiles with Weibull plotting positions ``p (k+1)``, so that for
exchangeable data an order statistic covers its nominal fraction on average; Vovk, Gammerman &
Shafer 2005, *Algorithmic Learning in a Random World*; Lei et al. 2018, JASA 113, 1094):

- ``"neyman"`` (default): a Neyman (1937) confidence belt. For every true mass m, quantiles of
  ``pred - true`` in a window of calibration views around m (at least ``k`` views and
  :data:`MIN_HOSTS` distinct hosts, local-linear in m; :func:`belt_table`) give the belt
  curves ``c_q(m) = m + Q_q(m)``; a cluster with ensemble prediction ``mu`` gets the
  percentile p at the m where ``c_{100-p}(m) = mu``. The 68% (95%) interval then contains the
  true mass in 68% (95%) of clusters *at every true mass*, whatever the mass function of the
  clusters one applies it to (the training set's is flat, the sky's is steep), and the median
  is median-unbiased at every mass; this undoes the pull of learners towards the middle of the
  training range (Ho et al. 2019, ApJ 887, 25). Where a belt curve is not monotonic (a learner
  that saturates) it is replaced by its running maximum, which widens the interval. Masses
  are clipped to the belt's ends. Coverage *in bins of predicted mass* is not guaranteed: it
  depends on the mass function of the clusters (Eddington bias), and is reported, not judged.
- ``"neyman_n"``: one Neyman belt per band of the number of galaxies in the cylinder
  (:data:`RICHNESS_EDGES`, adjacent bands merged until each has enough hosts;
  :func:`richness_belts`). A cluster gets the belt of its band, so its interval covers, and
  its median is median-unbiased, at every true mass *and* every number of galaxies: whatever
  a survey's completeness does to the number of galaxies, the estimate at fixed true mass does
  not move with it. With calibration views whose sampling was drawn per view (domain
  randomisation, :class:`dynmass.observing.Draw`) this is the dynamics-only estimate: the
  number of galaxies only selects which belt inverts the learner's output, it cannot pull the
  mass.
- ``"knn_pred"``: quantiles of ``true - pred`` among the ``k`` views nearest in *predicted*
  mass, added to ``mu``. Calibrated on average over the calibration views' mass distribution
  at each predicted mass (a posterior under that prior), hence not at each true mass.

The belts are built in :mod:`dynmass.belts` (:func:`belt_table`, :func:`richness_belts`);
this module re-exports its names, calibrates tables and inverts them into intervals.

Intervals are claimed on the **calibrated range** (:func:`calibrated_range`): at least
:data:`EDGE_MARGIN` dex inside the training mass range and with :data:`MIN_HOSTS` calibration
hosts beyond each end. :func:`coverage` checks them, on independent test universes or by
cross-fitting, in bins of true mass with host-bootstrap errors.

Examples
--------
>>> import numpy as np
>>> from dynmass.intervals import apply_intervals, calibrate
>>> rng = np.random.default_rng(5)
>>> true = rng.uniform(13.5, 15.5, 20000)
>>> pred = true + rng.normal(0.0, 0.1, true.size)  # an unbiased 0.1 dex estimator
>>> grid, table = calibrate(pred, true, "neyman", 1000)
>>> q = apply_intervals(np.array([14.5]), grid, table, "neyman")[0]
>>> np.round(q - 14.5, 1).tolist()  # 2.5, 16, 50, 84, 97.5 percentiles around the truth
[-0.2, -0.1, 0.0, 0.1, 0.2]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dynmass.belts import (  # noqa: F401 (re-exported: belts are part of the intervals API)
    MAX_HALFWIDTH,
    MIN_BAND_HOSTS,
    MIN_HOSTS,
    PERCENTILES,
    RICHNESS_EDGES,
    belt_ends,
    belt_table,
    default_k_neighbors,
    richness_band,
    richness_belts,
)
from dynmass.errors import InputError

#: Interval methods (see :func:`calibrate`).
METHODS: tuple[str, ...] = ("neyman", "knn_pred", "neyman_n")


def pct_name(p: float) -> str:
    """Column suffix of percentile ``p`` (per cent): 2.5 -> ``"p2_5"``, 16 -> ``"p16"``."""
    text = f"{p:g}".replace(".", "_")
    return f"p{text}"


@dataclass
class Calibration:
    """Held-out predictions of a training run (one row per view).

    Parameters
    ----------
    pred, true : numpy.ndarray
        Predicted and true log10 M200c [Msun/h].
    fold, halo_id, los, n_gal : numpy.ndarray
        Fold of the view's halo (for independent calibration views: a pseudo-fold drawn per
        host, used only to cross-fit coverage), halo id, line-of-sight index, number of
        galaxies.
    source : numpy.ndarray, optional
        Index of the observations file a view came from (0 for a run's held-out views);
        ``(source, halo_id)`` names a host uniquely.
    """

    pred: np.ndarray
    true: np.ndarray
    fold: np.ndarray
    halo_id: np.ndarray
    los: np.ndarray
    n_gal: np.ndarray
    source: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = np.zeros(len(self.pred), dtype=np.int64)

    @property
    def host(self) -> np.ndarray:
        """Integer label of each view's host (:func:`host_labels`)."""
        return host_labels(self.source, self.halo_id)

    @property
    def residual(self) -> np.ndarray:
        """``true - pred`` in dex (minus the paper's eps = log10 M_pred / M_true)."""
        return self.true - self.pred

    def subset(self, mask: np.ndarray) -> Calibration:
        """Rows where ``mask`` is true."""
        return Calibration(**{k: getattr(self, k)[mask] for k in _CAL_FIELDS})


def host_labels(source: np.ndarray, halo_id: np.ndarray) -> np.ndarray:
    """Integer label per view, one per distinct ``(source file, halo_id)`` pair.

    Parameters
    ----------
    source : numpy.ndarray
        Index of the observations file of every view.
    halo_id : numpy.ndarray
        Host halo id of every view (unique within its file only).

    Returns
    -------
    numpy.ndarray
        Labels ``0 .. n_hosts - 1``, in the sorted order of the pairs.
    """
    pairs = np.column_stack([np.asarray(source, np.int64), np.asarray(halo_id, np.int64)])
    return np.unique(pairs, axis=0, return_inverse=True)[1].ravel()


_CAL_FIELDS = ("pred", "true", "fold", "halo_id", "los", "n_gal", "source")



def quantile_table(
    pred: np.ndarray,
    residual: np.ndarray,
    k_neighbors: int | None = None,
    percentiles: Sequence[float] = PERCENTILES,
    n_grid: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles of ``residual`` among the ``k`` views nearest in predicted mass, on a grid.

    Parameters
    ----------
    pred : numpy.ndarray
        Held-out predicted log10 M200c [Msun/h].
    residual : numpy.ndarray
        ``true - pred`` [dex] of the same views.
    k_neighbors : int, optional
        Views per window (default :func:`default_k_neighbors`).
    percentiles : sequence of float
        Percentiles (per cent) to tabulate.
    n_grid : int
        Most grid nodes (placed at quantiles of ``pred``).

    Returns
    -------
    grid : numpy.ndarray
        Predicted log10 M200c of each node, increasing.
    table : numpy.ndarray
        ``(len(grid), len(percentiles))`` residual quantiles [dex].
    """
    pred = np.asarray(pred, float)
    residual = np.asarray(residual, float)
    n = len(pred)
    if n < 10:
        raise InputError(f"only {n} held-out views to calibrate intervals on; need at least 10")
    k = default_k_neighbors(n) if k_neighbors is None else int(min(max(k_neighbors, 5), n))
    order = np.argsort(pred, kind="stable")
    ps, rs = pred[order], residual[order]
    grid = np.unique(np.quantile(ps, np.linspace(0.0, 1.0, min(n_grid, n))))
    centre = np.searchsorted(ps, grid)
    start = np.clip(centre - k // 2, 0, n - k)
    probs = np.asarray(percentiles, float) / 100.0
    table = np.empty((len(grid), len(probs)))
    for i, s in enumerate(start):
        table[i] = np.quantile(rs[s : s + k], probs, method="weibull")
    return grid, table


def interpolate_quantiles(mu: np.ndarray, grid: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Residual quantiles at predicted masses ``mu`` (linear in between, constant beyond).

    Parameters
    ----------
    mu : numpy.ndarray
        Predicted log10 M200c [Msun/h].
    grid, table : numpy.ndarray
        Nodes [log10 Msun/h] and residual quantiles [dex] of :func:`quantile_table`.

    Returns
    -------
    numpy.ndarray
        ``(len(mu), table.shape[1])`` residual quantiles [dex].
    """
    mu = np.atleast_1d(np.asarray(mu, float))
    out = np.empty((len(mu), table.shape[1]))
    for j in range(table.shape[1]):
        out[:, j] = np.interp(mu, grid, table[:, j])
    return out


#: Margin [dex] between each edge of the training mass range and the calibrated range, where
#: learners are pulled towards the middle of the range (Ho et al. 2019, ApJ 887, 25).
EDGE_MARGIN: float = 0.2


def calibrated_range(
    true: np.ndarray,
    host: np.ndarray,
    training_range: Sequence[float],
    min_hosts: int = MIN_HOSTS,
    edge_margin: float = EDGE_MARGIN,
) -> list[float]:
    """log10 M200c range [Msun/h] over which a bundle's intervals are claimed.

    ``edge_margin`` dex inside each end of the training range, and with at least
    ``min_hosts`` calibration hosts below its lower end and above its upper end (counting a
    host at its true mass), so that the belt at both ends rests on many hosts rather than a
    few views of one.

    Parameters
    ----------
    true : numpy.ndarray
        True log10 M200c [Msun/h] of the calibration views.
    host : numpy.ndarray
        Host label of every view (:func:`host_labels`); a host counts once, at the true mass
        of its first view.
    training_range : sequence of float
        ``[min, max]`` true log10 M200c [Msun/h] of the training views.
    min_hosts : int
        Fewest calibration hosts beyond each end of the range.
    edge_margin : float
        Distance [dex] of each end inside the training range.

    Returns
    -------
    list of float
        ``[lo, hi]``, log10 Msun/h.

    Raises
    ------
    InputError
        When the range is empty.
    """
    true, host = np.asarray(true, float), np.asarray(host)
    _, first = np.unique(host, return_index=True)
    hm = np.sort(true[first])
    lo = float(training_range[0]) + edge_margin
    hi = float(training_range[1]) - edge_margin
    if len(hm) >= min_hosts:
        lo, hi = max(lo, float(hm[min_hosts - 1])), min(hi, float(hm[-min_hosts]))
    if len(hm) < 2 * min_hosts or hi <= lo:
        raise InputError(f"{len(hm)} calibration hosts leave no mass range with {min_hosts} "
                         f"hosts beyond each end, {edge_margin} dex inside the training range "
                         f"{[round(float(x), 3) for x in training_range]}")
    return [lo, hi]


def calibrate(
    pred: np.ndarray,
    true: np.ndarray,
    method: str = "neyman",
    k_neighbors: int | None = None,
    percentiles: Sequence[float] = PERCENTILES,
    host: np.ndarray | None = None,
    min_hosts: int = MIN_HOSTS,
    max_halfwidth: float = MAX_HALFWIDTH,
    n_gal: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Interval calibration table from held-out ``(pred, true)`` log10 M200c [Msun/h].

    Parameters
    ----------
    pred, true : numpy.ndarray
        Held-out (or independent) predicted and true log10 M200c.
    method : {"neyman", "neyman_n", "knn_pred"}
        ``"neyman"``: the confidence belt of :func:`belt_table`, inverted by
        :func:`apply_intervals`; ``"neyman_n"``: one belt per richness band
        (:func:`richness_belts`); ``"knn_pred"``: quantiles of ``true - pred`` among views
        nearest in *predicted* mass (:func:`quantile_table`).
    k_neighbors : int, optional
        Views per window.
    percentiles : sequence of float
        Percentiles (per cent); must be symmetric about 50 for ``"neyman"``.
    host : numpy.ndarray, optional
        Host label of every view (``"neyman"`` only; default: each view its own host).
    min_hosts, max_halfwidth
        See :func:`belt_table`.
    n_gal : numpy.ndarray, optional
        Galaxies in each view's cylinder (``"neyman_n"`` only, required there).

    Returns
    -------
    grid, table : numpy.ndarray
        Nodes and quantiles (see :func:`belt_table`, :func:`richness_belts` and
        :func:`quantile_table`).
    """
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if method == "neyman_n":
        if n_gal is None:
            raise InputError("interval method 'neyman_n' needs the number of galaxies of "
                             "every calibration view", column="n_gal")
        _check_symmetric(percentiles)
        return richness_belts(true, pred, n_gal, host, k_neighbors, percentiles, min_hosts,
                              max_halfwidth)
    if method == "neyman":
        p = np.asarray(percentiles, float)
        if not np.allclose(np.sort(100 - p), np.sort(p)):
            raise InputError(f"percentiles {list(p)} are not symmetric about 50")
        return belt_table(true, pred, host, k_neighbors, percentiles, min_hosts, max_halfwidth)
    if method == "knn_pred":
        return quantile_table(pred, true - pred, k_neighbors, percentiles)
    raise InputError(f"unknown interval method {method!r}; choose from {list(METHODS)}")


def _check_symmetric(percentiles: Sequence[float]) -> None:
    p = np.asarray(percentiles, float)
    if not np.allclose(np.sort(100 - p), np.sort(p)):
        raise InputError(f"percentiles {list(p)} are not symmetric about 50")


def apply_intervals(
    mu: np.ndarray,
    grid: np.ndarray,
    table: np.ndarray,
    method: str = "neyman",
    percentiles: Sequence[float] = PERCENTILES,
    n_gal: np.ndarray | None = None,
) -> np.ndarray:
    """Percentiles of log10 M200c [Msun/h] for predictions ``mu`` from a :func:`calibrate` table.

    For ``"neyman"`` (Neyman 1937, Phil. Trans. R. Soc. A 236, 333; Feldman & Cousins 1998,
    PRD 57, 3873 for the belt picture) the belt curve ``c_q(m) = m + Q_q(pred - true | m)``
    is made non-decreasing and inverted: the output percentile ``p`` is the true mass ``m``
    with ``c_{100-p}(m) = mu``, so the central 68% (95%) interval contains the true mass with
    probability 68% (95%) *for every true mass*, whatever the mass function of the clusters.
    Masses are clipped to the calibrated (training) range. For ``"knn_pred"`` the output is
    ``mu + Q_p(true - pred | pred ~ mu)``, calibrated on average over the training mass
    distribution.

    Parameters
    ----------
    mu : numpy.ndarray
        Ensemble-mean predicted log10 M200c [Msun/h].
    grid, table : numpy.ndarray
        Output of :func:`calibrate` with the same ``method`` (nodes [log10 Msun/h] and
        quantiles [dex]).
    method : {"neyman", "neyman_n", "knn_pred"}
        Interval method the table was made with.
    percentiles : sequence of float
        Percentiles (per cent) the table was made with (the columns of ``table``).
    n_gal : numpy.ndarray, optional
        Galaxies in each cluster's cylinder (``"neyman_n"`` only, required there): picks the
        belt of its richness band.

    Returns
    -------
    numpy.ndarray
        ``(len(mu), len(percentiles))`` log10 M200c [Msun/h].
    """
    mu = np.atleast_1d(np.asarray(mu, float))
    if method == "knn_pred":
        return mu[:, None] + interpolate_quantiles(mu, grid, table)
    if method == "neyman_n":
        if n_gal is None:
            raise InputError("interval method 'neyman_n' needs the number of galaxies of "
                             "every cluster", column="n_gal")
        n_gal = np.broadcast_to(np.asarray(n_gal, float), mu.shape)
        starts = np.unique(table[:, -1])
        use = starts[np.clip(np.searchsorted(starts, richness_band(n_gal), side="right") - 1,
                             0, len(starts) - 1)]
        out = np.empty((len(mu), len(percentiles)))
        for s0 in starts:
            rows, views = table[:, -1] == s0, use == s0
            if views.any():
                out[views] = apply_intervals(mu[views], grid[rows], table[rows, :-1], "neyman",
                                             percentiles)
        return out
    if method != "neyman":
        raise InputError(f"unknown interval method {method!r}; choose from {list(METHODS)}")
    p = np.asarray(percentiles, float)
    out = np.empty((len(mu), len(p)))
    tiny = 1e-9 * np.arange(len(grid))
    for j, pj in enumerate(p):
        jj = int(np.argmin(np.abs(p - (100.0 - pj))))
        curve = np.maximum.accumulate(grid + table[:, jj]) + tiny
        out[:, j] = np.interp(mu, curve, grid)
    return out
