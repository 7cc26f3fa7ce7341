"""Model bundles: every fold model of a training run plus what is needed to use it honestly.

A *bundle* is the self-describing file ``dynmass predict --model`` takes. It holds

- the k fold models of a cross-validated training run (any registered model name), whose
  **ensemble mean** is the point estimate for a new cluster;
- the observe settings of the training data (aperture [comoving Mpc/h], vcut [km/s],
  redshift, cosmology, min_members, ...), so that real clusters are cut exactly as the mocks;
- the **training domain** (log10 M200c, member count, velocity spread and redshift ranges) and
  the **calibrated mass range** over which intervals are claimed, so that predictions outside
  them are flagged;
- the **calibration views** ``(pred, true, host)`` and the belt tabulated from them.

Calibration views are either

- *independent* (``make_bundle(..., calibration_observations=[...])``, recommended): views of
  mock universes the run never saw, each predicted by the fold-ensemble mean, i.e. by exactly
  the estimator applied to a real cluster; or
- *held out*: the run's own views, each predicted by the one fold model that did not see its
  halo (single models scatter a little more than the ensemble: slightly conservative).

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
- ``"knn_pred"``: quantiles of ``true - pred`` among the ``k`` views nearest in *predicted*
  mass, added to ``mu``. Calibrated on average over the calibration views' mass distribution
  at each predicted mass (a posterior under that prior), hence not at each true mass.

Intervals are claimed on the **calibrated range** (:func:`calibrated_range`): at least
:data:`EDGE_MARGIN` dex inside the training mass range and with :data:`MIN_HOSTS` calibration
hosts beyond each end. :func:`coverage` checks them, on independent test universes or by
cross-fitting, in bins of true mass with host-bootstrap errors.

File format (HDF5)::

    /                  attrs: dynmass_kind="bundle", model (name), n_folds,
                              obs_settings (JSON), domain (JSON), interval (JSON: method,
                              k_neighbors, min_hosts, percentiles, calibration files),
                              run_settings (JSON: the run's settings.json), provenance (JSON),
                              dynmass_version, complete
    /folds/fold_00 ...        one model each (dynmass.models.base.write_model_group)
    /calibration/pred, true, fold, halo_id, los, n_gal, source     calibration views
    /interval/grid [log10 Msun/h], /interval/quantiles (n_grid, n_percentiles)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynmass._io import (
    atomic_path,
    atomic_write_json,
    hdf5_read_errors,
    open_hdf5,
    provenance,
    read_json_attr,
    to_json,
)
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.models.base import Estimator, load_model, read_model_group, write_model_group
from dynmass.observations import Observations

log = logging.getLogger(__name__)

#: Percentiles (in per cent) of log10 M200c every prediction reports.
PERCENTILES: tuple[float, ...] = (2.5, 16.0, 50.0, 84.0, 97.5)
#: Columns of a run's predictions.csv that the bundle needs.
#: Interval methods (see :func:`calibrate`).
METHODS: tuple[str, ...] = ("neyman", "knn_pred")
PREDICTION_COLUMNS: tuple[str, ...] = (
    "halo_id", "los", "fold", "log10_m200c_true", "log10_m200c_pred", "n_gal",
)


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
    """Integer label per view, one per distinct ``(source file, halo_id)`` pair."""
    pairs = np.column_stack([np.asarray(source, np.int64), np.asarray(halo_id, np.int64)])
    return np.unique(pairs, axis=0, return_inverse=True)[1].ravel()


def fold_predictions(models: Sequence[Estimator], obs: Observations,
                     path: object = None) -> np.ndarray:
    """``(n_models, n_views)`` log10 M200c [Msun/h] of every model, after checking that ``obs``
    was cut like each model's training views (``path`` is named in the error)."""
    for m in models:
        m.check_obs(obs, path)
    return np.vstack([np.asarray(m.predict(obs), float) for m in models])


_CAL_FIELDS = ("pred", "true", "fold", "halo_id", "los", "n_gal", "source")


def default_k_neighbors(n_calibration: int) -> int:
    """Window size: 1/20 of the calibration views, at least 200, at most all of them."""
    return int(min(n_calibration, max(200, n_calibration // 20)))


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
    """Residual quantiles at predicted masses ``mu`` (linear in between, constant beyond)."""
    mu = np.atleast_1d(np.asarray(mu, float))
    out = np.empty((len(mu), table.shape[1]))
    for j in range(table.shape[1]):
        out[:, j] = np.interp(mu, grid, table[:, j])
    return out


#: Fewest distinct hosts a belt window must hold, and fewest calibration hosts beyond each end
#: of the calibrated mass range (views of one host along different lines of sight are
#: correlated, so hosts, not views, set how well a quantile is known).
MIN_HOSTS: int = 25
#: Widest half-width [dex] a belt window may grow to in search of ``MIN_HOSTS`` hosts.
MAX_HALFWIDTH: float = 0.25
#: Margin [dex] between each edge of the training mass range and the calibrated range, where
#: learners are pulled towards the middle of the range (Ho et al. 2019, ApJ 887, 25).
EDGE_MARGIN: float = 0.2


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
) -> tuple[np.ndarray, np.ndarray]:
    """Interval calibration table from held-out ``(pred, true)`` log10 M200c [Msun/h].

    Parameters
    ----------
    pred, true : numpy.ndarray
        Held-out (or independent) predicted and true log10 M200c.
    method : {"neyman", "knn_pred"}
        ``"neyman"``: the confidence belt of :func:`belt_table`, inverted by
        :func:`apply_intervals`; ``"knn_pred"``: quantiles of ``true - pred`` among views
        nearest in *predicted* mass (:func:`quantile_table`).
    k_neighbors : int, optional
        Views per window.
    percentiles : sequence of float
        Percentiles (per cent); must be symmetric about 50 for ``"neyman"``.
    host : numpy.ndarray, optional
        Host label of every view (``"neyman"`` only; default: each view its own host).
    min_hosts, max_halfwidth
        See :func:`belt_table`.

    Returns
    -------
    grid, table : numpy.ndarray
        Nodes and quantiles (see :func:`belt_table` and :func:`quantile_table`).
    """
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if method == "neyman":
        p = np.asarray(percentiles, float)
        if not np.allclose(np.sort(100 - p), np.sort(p)):
            raise InputError(f"percentiles {list(p)} are not symmetric about 50")
        return belt_table(true, pred, host, k_neighbors, percentiles, min_hosts, max_halfwidth)
    if method == "knn_pred":
        return quantile_table(pred, true - pred, k_neighbors, percentiles)
    raise InputError(f"unknown interval method {method!r}; choose from {list(METHODS)}")


def apply_intervals(
    mu: np.ndarray,
    grid: np.ndarray,
    table: np.ndarray,
    method: str = "neyman",
    percentiles: Sequence[float] = PERCENTILES,
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

    Returns
    -------
    numpy.ndarray
        ``(len(mu), len(percentiles))``.
    """
    mu = np.atleast_1d(np.asarray(mu, float))
    if method == "knn_pred":
        return mu[:, None] + interpolate_quantiles(mu, grid, table)
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


@dataclass
class Bundle:
    """Fold models, training settings, domain and interval calibration of one training run.

    Parameters
    ----------
    models : list of Estimator
        Fitted fold models (same model name); the ensemble mean is the point estimate.
    obs_settings : dict
        Observe settings of the training data (aperture [comoving Mpc/h], vcut [km/s],
        redshift, cosmology, min_members, ...).
    domain : dict
        Training ranges: ``log10_m200c`` [Msun/h], ``n_gal``, ``sigma_v`` [km/s] (each
        ``[min, max]``; ``None`` when unknown) and ``redshift``.
    calibration : Calibration
        Held-out views of the run.
    interval : dict
        ``method``, ``k_neighbors``, ``percentiles``.
    grid, table : numpy.ndarray
        Interval quantile table (see :func:`quantile_table`).
    run_settings : dict
        The run's settings.json.
    path : str, optional
        File the bundle was read from.
    """

    models: list[Estimator]
    obs_settings: dict[str, Any]
    domain: dict[str, Any]
    calibration: Calibration
    interval: dict[str, Any]
    grid: np.ndarray
    table: np.ndarray
    run_settings: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def model_name(self) -> str:
        """Registered name of the fold models (e.g. ``"cnn2d"``)."""
        return self.models[0].name

    @property
    def percentiles(self) -> tuple[float, ...]:
        """Percentiles (per cent) reported by :meth:`predict`."""
        return tuple(float(p) for p in self.interval["percentiles"])

    def predict_folds(self, obs: Observations) -> np.ndarray:
        """``(n_folds, n_views)`` predicted log10 M200c [Msun/h] of every fold model."""
        return fold_predictions(self.models, obs, self.path)

    def intervals(self, mu: np.ndarray) -> np.ndarray:
        """``(n, n_percentiles)`` log10 M200c percentiles for ensemble means ``mu``."""
        mu = np.atleast_1d(np.asarray(mu, float))
        return apply_intervals(mu, self.grid, self.table, self.interval.get("method", "knn_pred"),
                               self.percentiles)

    def predict(self, obs: Observations) -> dict[str, np.ndarray]:
        """Mass estimates with intervals for every view of ``obs``.

        Parameters
        ----------
        obs : Observations
            Views built with this bundle's ``obs_settings`` (same aperture and vcut).

        Returns
        -------
        dict of str to numpy.ndarray
            ``log10_m200c_mean`` (ensemble mean of the fold models), ``log10_m200c_fold_std``
            (spread of the fold models), and ``log10_m200c_<pXX>`` for each percentile, all
            log10 Msun/h, calibrated by the bundle's interval method (:func:`apply_intervals`).
        """
        folds = self.predict_folds(obs)
        mu = folds.mean(axis=0)
        out = {
            "log10_m200c_mean": mu,
            "log10_m200c_fold_std": folds.std(axis=0),
        }
        pct = self.intervals(mu)
        for j, p in enumerate(self.percentiles):
            out[f"log10_m200c_{pct_name(p)}"] = pct[:, j]
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bundle to ``path`` (HDF5) atomically."""
        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
            fh.attrs["dynmass_kind"] = "bundle"
            fh.attrs["model"] = self.model_name
            fh.attrs["n_folds"] = len(self.models)
            fh.attrs["obs_settings"] = to_json(self.obs_settings)
            fh.attrs["domain"] = to_json(self.domain)
            fh.attrs["interval"] = to_json(self.interval)
            fh.attrs["run_settings"] = to_json(self.run_settings)
            prov = provenance()
            fh.attrs["dynmass_version"] = prov["dynmass_version"]
            fh.attrs["provenance"] = to_json(prov)
            fh.attrs["units"] = to_json({"log10_m200c": "log10 Msun/h", "sigma_v": "km/s",
                                         "aperture": "comoving Mpc/h", "vcut": "km/s"})
            folds = fh.create_group("folds")
            for i, m in enumerate(self.models):
                write_model_group(folds.create_group(f"fold_{i:02d}"), m)
            cal = fh.create_group("calibration")
            for name in _CAL_FIELDS:
                cal.create_dataset(name, data=np.asarray(getattr(self.calibration, name)))
            g = fh.create_group("interval")
            g.create_dataset("grid", data=self.grid)
            g.create_dataset("quantiles", data=self.table)
            fh.attrs["complete"] = True
        return path


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle written by :func:`make_bundle`.

    Raises
    ------
    InputError
        If the file is missing, not HDF5, not a dynmass bundle (a single model file gets a
        hint to run ``dynmass bundle``) or incomplete.
    """
    with hdf5_read_errors(path), open_hdf5(path) as fh:
        kind = fh.attrs.get("dynmass_kind")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind != "bundle":
            hint = ""
            if kind == "model":
                hint = (" (this is a single fold model; make a bundle from its training run "
                        "folder with `dynmass bundle RUN_DIR -o model.h5`)")
            raise InputError(f"not a dynmass model bundle: dynmass_kind={kind!r}{hint}", path=path)
        if not fh.attrs.get("complete", False):
            raise InputError("bundle is incomplete (interrupted write?)", path=path)
        for name in ("folds", "calibration", "interval"):
            if name not in fh:
                raise InputError(f"bundle lacks its '{name}' group", path=path)
        models = [read_model_group(fh["folds"][k], path) for k in sorted(fh["folds"])]
        if not models:
            raise InputError("bundle holds no fold models", path=path)
        cal = Calibration(**{k: fh["calibration"][k][...] for k in _CAL_FIELDS
                             if k in fh["calibration"]})
        return Bundle(
            models=models,
            obs_settings=read_json_attr(fh, "obs_settings", path),
            domain=read_json_attr(fh, "domain", path),
            calibration=cal,
            interval=read_json_attr(fh, "interval", path),
            grid=fh["interval"]["grid"][...],
            table=fh["interval"]["quantiles"][...],
            run_settings=read_json_attr(fh, "run_settings", path),
            path=str(path),
        )


def read_predictions(path: str | os.PathLike) -> Calibration:
    """Read a run's ``predictions.csv`` (held-out predictions, one row per view)."""
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise InputError(
            "no predictions.csv: the training run is incomplete (it is written last)", path=path
        )
    try:
        t = Table.read(path, format="ascii.csv")
    except Exception as exc:  # astropy raises many types for malformed text
        raise InputError(f"cannot read as CSV: {exc}", path=path) from exc
    for col in PREDICTION_COLUMNS:
        if col not in t.colnames:
            raise InputError("required column is missing", path=path, column=col)
    if len(t) == 0:
        raise InputError("no rows (the header only)", path=path)
    arrays = {}
    for col in PREDICTION_COLUMNS:
        arr = np.ma.filled(np.ma.asarray(t[col]).astype(float), np.nan)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(
                f"{int(bad.sum())} non-finite values, first at data row {int(np.flatnonzero(bad)[0])}",
                path=path, column=col,
            )
        arrays[col] = arr
    return Calibration(
        pred=arrays["log10_m200c_pred"],
        true=arrays["log10_m200c_true"],
        fold=arrays["fold"].astype(np.int64),
        halo_id=arrays["halo_id"].astype(np.int64),
        los=arrays["los"].astype(np.int64),
        n_gal=arrays["n_gal"].astype(np.int64),
    )


def _read_run_settings(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "settings.json"
    if not path.exists():
        raise InputError("not a training run folder: settings.json is missing", path=path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"settings.json is not valid JSON: {exc}", path=path) from exc


def _training_views_domain(obs_path: str | os.PathLike | None) -> dict[str, Any]:
    """sigma_v [km/s] and n_gal ranges of the training observations file, if readable."""
    if not obs_path:
        return {}
    try:
        with open_hdf5(obs_path, kind="observations") as fh:
            sigma = fh["clusters"]["sigma_v"][...].astype(float)
            n_gal = fh["clusters"]["n_gal"][...].astype(float)
    except (InputError, KeyError, OSError) as exc:
        log.warning("training observations %s unreadable (%s); sigma_v range unknown", obs_path, exc)
        return {}
    sigma = sigma[np.isfinite(sigma)]
    out: dict[str, Any] = {"n_gal_all_views": [float(n_gal.min()), float(n_gal.max())]}
    if len(sigma):
        out["sigma_v"] = [float(sigma.min()), float(sigma.max())]
        out["sigma_v_p1_p99"] = [float(x) for x in np.percentile(sigma, [1, 99])]
    return out


#: Observe settings that must agree between training, calibration and test views.
MATCHED_SETTINGS: tuple[str, ...] = ("aperture", "vcut", "redshift", "min_members", "center",
                                     "sampling_rate")


def check_same_observing(settings: dict[str, Any], expected: dict[str, Any], what: str,
                         path: object) -> None:
    """Raise :class:`SettingsMismatchError` when ``settings`` were observed unlike ``expected``.

    Compares :data:`MATCHED_SETTINGS` (numbers to 1e-6) and the cosmology, where both say.
    """
    for key in MATCHED_SETTINGS:
        a, b = settings.get(key), expected.get(key)
        if a is None or b is None:
            continue
        same = (np.isclose(float(a), float(b), rtol=1e-6) if isinstance(b, (int, float))
                and isinstance(a, (int, float)) else a == b)
        if not same:
            raise SettingsMismatchError(f"observed with {key}={a!r} but {what} used {b!r}",
                                        path=path, column=key)
    ca, cb = settings.get("cosmology"), expected.get("cosmology")
    if isinstance(ca, dict) and isinstance(cb, dict):
        for key in ("H0", "Om0", "sigma8"):
            if key in ca and key in cb and not np.isclose(ca[key], cb[key], rtol=1e-6):
                raise SettingsMismatchError(f"cosmology {key}={ca[key]} but {what} used {cb[key]}",
                                            path=path, column=f"cosmology.{key}")


def _universe_of(settings: dict[str, Any]) -> str | None:
    return settings.get("universe_sha256")


def read_independent_views(path: str | os.PathLike, obs_settings: dict[str, Any], used: set[str],
                           what: str) -> Observations:
    """Read views of a universe not yet ``used``, observed like ``obs_settings``, with truths.

    Adds the file's ``universe_sha256`` to ``used``.

    Raises
    ------
    InputError, SettingsMismatchError
        Unreadable file, views observed otherwise, views of a used universe, or views
        without a true m200c.
    """
    from dynmass.observations import read_observations

    obs = read_observations(path)
    check_same_observing(obs.settings, obs_settings, "the training views", path)
    uni = _universe_of(obs.settings)
    if uni is not None and uni in used:
        raise InputError(f"these views come from a universe already used for training or "
                         f"calibration; {what} needs independent hosts", path=path,
                         column="universe_sha256")
    if uni is not None:
        used.add(uni)
    if not np.all(np.isfinite(obs.log10_m200c())):
        raise InputError(f"{what} needs the true m200c of every view", path=path, column="m200c")
    return obs


def coverage_summary(res: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a :func:`coverage` result."""
    keys = ("scheme", "coverage_68", "coverage_95", "n_views_in_range", "calibrated_range",
            "passed", "passed_pred")
    return {k: res[k] for k in keys}


def pseudo_folds(host: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Seeded fold label (0..k-1) per view, the same for every view of a host."""
    uniq, inv = np.unique(host, return_inverse=True)
    rng = np.random.default_rng(seed)
    return (rng.permutation(len(uniq)) % k)[inv.ravel()].astype(np.int64)


def ensemble_calibration(
    models: Sequence[Estimator],
    paths: Sequence[str | os.PathLike],
    obs_settings: dict[str, Any],
    *,
    exclude_universes: Sequence[str] = (),
    n_folds: int = 10,
    seed: int = 0,
) -> tuple[Calibration, list[dict[str, Any]]]:
    """Calibration views from independent mock observations, predicted by the fold ensemble.

    Each view gets the **mean of all fold models**, the very estimator ``dynmass predict``
    applies to a real cluster, so the belt describes that estimator's errors (not those of a
    single fold model, which are larger).

    Parameters
    ----------
    models : sequence of Estimator
        Fold models.
    paths : sequence of path
        Observations files (``dynmass observe``) of universes the models never saw.
    obs_settings : dict
        Observe settings of the training views; the files must match them.
    exclude_universes : sequence of str
        ``universe_sha256`` values the files must not come from (the training universe).
    n_folds : int
        Pseudo-folds (per host, seeded) for cross-fitted coverage checks.
    seed : int
        Seed of the pseudo-folds.

    Returns
    -------
    Calibration, list of dict
        The views, and one record per file (path, sha256 of its universe, views, hosts).

    Raises
    ------
    InputError, SettingsMismatchError
        Unreadable file, views observed otherwise, or views of an excluded universe.
    """
    parts, records = [], []
    used = set(exclude_universes)
    for i, path in enumerate(paths):
        obs = read_independent_views(path, obs_settings, used, "calibration")
        true = obs.log10_m200c()
        uni = _universe_of(obs.settings)
        pred = fold_predictions(models, obs, path).mean(axis=0)
        parts.append(dict(pred=pred, true=true, halo_id=np.asarray(obs.clusters["halo_id"], np.int64),
                          los=np.asarray(obs.clusters["los"], np.int64),
                          n_gal=np.asarray(obs.n_gal, np.int64),
                          source=np.full(obs.n_views, i, np.int64)))
        records.append({"path": str(path), "universe_sha256": uni, "n_views": int(obs.n_views),
                        "n_hosts": int(np.unique(obs.clusters["halo_id"]).size),
                        "universe_file": obs.settings.get("universe_file"),
                        "observe_seed": obs.settings.get("seed")})
    if not parts:
        raise InputError("no calibration observations given")
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cal = Calibration(fold=np.zeros(len(cols["pred"]), np.int64), **cols)
    cal.fold = pseudo_folds(cal.host, n_folds, seed)
    return cal, records


def make_bundle(
    run_dir: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    observations: str | os.PathLike | None = None,
    calibration_observations: Sequence[str | os.PathLike] | None = None,
    k_neighbors: int | None = None,
    percentiles: Sequence[float] = PERCENTILES,
    method: str = "neyman",
    min_hosts: int = MIN_HOSTS,
    max_halfwidth: float = MAX_HALFWIDTH,
    edge_margin: float = EDGE_MARGIN,
    seed: int = 0,
) -> Bundle:
    """Build a bundle from a training run folder and (optionally) write it.

    Parameters
    ----------
    run_dir : str or os.PathLike
        Folder written by ``dynmass train`` (settings.json, fold_XX.h5, predictions.csv).
    out_path : str or os.PathLike, optional
        Where to write the bundle (HDF5, atomically); ``None`` only returns it.
    observations : str or os.PathLike, optional
        Training observations file, for the velocity-spread range (default: the path recorded
        in settings.json, when it still exists).
    calibration_observations : sequence of path, optional
        Observations of *independent* mock universes (same observe settings). When given, the
        intervals are calibrated on the fold ensemble's predictions of these views
        (:func:`ensemble_calibration`); otherwise on the run's held-out views, each predicted by
        one fold model (slightly conservative for the ensemble).
    k_neighbors : int, optional
        Fewest calibration views per interval window (default :func:`default_k_neighbors`).
    percentiles : sequence of float
        Percentiles (per cent) to report.
    method : {"neyman", "knn_pred"}
        Interval method (see :func:`calibrate`).
    min_hosts, max_halfwidth : int, float
        Host requirement of the belt windows (:func:`belt_table`) and of the calibrated range.
    edge_margin : float
        Calibrated range starts this many dex inside the training range (:func:`calibrated_range`).
    seed : int
        Seed of the pseudo-folds of independent calibration views.

    Returns
    -------
    Bundle
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("training run folder does not exist", path=run_dir)
    settings = _read_run_settings(run_dir)
    held_out = read_predictions(run_dir / "predictions.csv")
    fold_files = sorted(run_dir.glob("fold_*.h5"))
    if not fold_files:
        raise InputError("no fold_XX.h5 models in the training run folder", path=run_dir)
    n_expected = settings.get("folds")
    if isinstance(n_expected, int) and n_expected != len(fold_files):
        raise InputError(f"settings.json says {n_expected} folds but {len(fold_files)} "
                         "fold_XX.h5 files exist", path=run_dir)
    models = [load_model(p) for p in fold_files]
    names = {m.name for m in models}
    if len(names) != 1:
        raise InputError(f"fold models of different types: {sorted(names)}", path=run_dir)
    obs_settings = dict(settings.get("obs_settings") or models[0].obs_settings)
    for key in ("aperture", "vcut"):
        if key not in obs_settings:
            raise InputError(f"obs_settings lack '{key}'", path=run_dir / "settings.json")
    training_range = [float(held_out.true.min()), float(held_out.true.max())]
    domain: dict[str, Any] = {
        "log10_m200c": training_range,
        "log10_m200c_pred": [float(held_out.pred.min()), float(held_out.pred.max())],
        "n_gal": [float(held_out.n_gal.min()), float(held_out.n_gal.max())],
        "sigma_v": None,
        "redshift": obs_settings.get("redshift"),
        "n_views": len(held_out.pred),
        "n_halos": int(np.unique(held_out.halo_id).size),
    }
    domain.update(_training_views_domain(observations or settings.get("observations")))
    if calibration_observations:
        uni = _universe_of(obs_settings)
        cal, files = ensemble_calibration(models, calibration_observations, obs_settings,
                                          exclude_universes=[uni] if uni else [],
                                          n_folds=len(models), seed=seed)
        source = {"residuals": "fold-ensemble mean on views of independent universes",
                  "files": files}
    else:
        cal = held_out
        source = {"residuals": "held-out views of the run (each by the fold model that did "
                               "not see its halo)"}
    host = cal.host
    domain["log10_m200c_calibrated"] = calibrated_range(cal.true, host, training_range,
                                                        min_hosts, edge_margin)
    grid, table = calibrate(cal.pred, cal.true, method, k_neighbors, percentiles, host,
                            min_hosts, max_halfwidth)
    k = default_k_neighbors(len(cal.pred)) if k_neighbors is None else int(k_neighbors)
    bundle = Bundle(
        models=models,
        obs_settings=obs_settings,
        domain=domain,
        calibration=cal,
        interval={"method": method, "k_neighbors": min(k, len(cal.pred)),
                  "percentiles": list(percentiles), "quantile_method": "weibull",
                  "min_hosts": int(min_hosts), "max_halfwidth_dex": float(max_halfwidth),
                  "edge_margin_dex": float(edge_margin),
                  "n_calibration_views": int(len(cal.pred)),
                  "n_calibration_hosts": int(np.unique(host).size), **source},
        grid=grid,
        table=table,
        run_settings=settings,
    )
    if out_path is not None:
        bundle.save(out_path)
        bundle.path = str(out_path)
    return bundle


def _calibration_of(source: Bundle | str | os.PathLike) -> tuple[Calibration, dict[str, Any],
                                                                 Bundle | None]:
    if isinstance(source, Bundle):
        return source.calibration, dict(source.interval), source
    p = Path(source)
    if p.is_dir():
        return read_predictions(p / "predictions.csv"), {}, None
    b = load_bundle(p)
    return b.calibration, dict(b.interval), b


def _test_views(bundle: Bundle, paths: Sequence[str | os.PathLike]
                ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Bundle predictions (ensemble + intervals) of independent test views, with truths."""
    used = {_universe_of(bundle.obs_settings)}
    used |= {f.get("universe_sha256") for f in bundle.interval.get("files", [])}
    used.discard(None)
    cols: dict[str, list[np.ndarray]] = {}
    records = []
    for i, path in enumerate(paths):
        obs = read_independent_views(path, bundle.obs_settings, used, "a coverage test")
        true = obs.log10_m200c()
        uni = _universe_of(obs.settings)
        res = bundle.predict(obs)
        q = np.column_stack([res[f"log10_m200c_{pct_name(p)}"] for p in PERCENTILES])
        for key, arr in (("true", true), ("pred", res["log10_m200c_mean"]), ("q", q),
                         ("halo_id", np.asarray(obs.clusters["halo_id"], np.int64)),
                         ("source", np.full(obs.n_views, i, np.int64))):
            cols.setdefault(key, []).append(arr)
        records.append({"path": str(path), "universe_sha256": uni, "n_views": int(obs.n_views),
                        "universe_file": obs.settings.get("universe_file")})
    if not records:
        raise InputError("no test observations given")
    return {k: np.concatenate(v) for k, v in cols.items()}, records


def _cross_fit(cal: Calibration, host: np.ndarray, interval: dict[str, Any], method: str,
               k_neighbors: int | None, seed: int) -> tuple[np.ndarray, str, list[int]]:
    """Percentiles of every calibration view (hosts ``host``) from a belt calibrated on the
    other folds."""
    groups = np.unique(cal.fold)
    scheme = "cross-fit by fold"
    if len(groups) < 2:
        part = pseudo_folds(host, 2, seed)
        scheme = "two random halves by halo"
    else:
        part = cal.fold
    q = np.empty((len(cal.pred), len(PERCENTILES)))
    ks = []
    for g in np.unique(part):
        val = part == g
        train = ~val
        k = default_k_neighbors(int(train.sum())) if k_neighbors is None else k_neighbors
        ks.append(k)
        grid, table = calibrate(cal.pred[train], cal.true[train], method, k, PERCENTILES,
                                host[train], int(interval.get("min_hosts", MIN_HOSTS)),
                                float(interval.get("max_halfwidth_dex", MAX_HALFWIDTH)))
        q[val] = apply_intervals(cal.pred[val], grid, table, method, PERCENTILES)
    return q, scheme, ks


def _host_bootstrap_se(covered: np.ndarray, host: np.ndarray, n_boot: int,
                       rng: np.random.Generator) -> float:
    """Standard error of a coverage fraction, resampling hosts (their views move together)."""
    uniq, inv = np.unique(host, return_inverse=True)
    n_h = np.bincount(inv.ravel(), minlength=len(uniq)).astype(float)
    c_h = np.bincount(inv.ravel(), weights=covered.astype(float), minlength=len(uniq))
    if len(uniq) < 2:
        return float("nan")
    draw = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    frac = c_h[draw].sum(axis=1) / n_h[draw].sum(axis=1)
    return float(np.std(frac, ddof=1))


def coverage_bins(calibrated: Sequence[float], width: float = 0.2) -> np.ndarray:
    """Bin edges of log10 M200c: ``width`` dex bins across ``calibrated``, a narrower last bin
    merged into the one before when under half a bin."""
    lo, hi = float(calibrated[0]), float(calibrated[1])
    edges = list(np.arange(lo, hi, width))
    if hi - edges[-1] < width / 2 and len(edges) > 1:
        edges.pop()
    return np.round(np.append(edges, hi), 6)


def coverage(
    bundle_or_run: Bundle | str | os.PathLike,
    *,
    observations: Sequence[str | os.PathLike] | None = None,
    k_neighbors: int | None = None,
    mass_bins: Sequence[float] | None = None,
    min_per_bin: int = 30,
    min_hosts_per_bin: int = 10,
    figure: str | os.PathLike | None = None,
    seed: int = 0,
    method: str | None = None,
    n_boot: int = 300,
) -> dict[str, Any]:
    """Coverage of the 68% and 95% intervals on views not used to calibrate them.

    Two schemes:

    - ``observations`` given (a bundle only): **independent test**. Views of universes the
      bundle never saw are predicted exactly as ``dynmass predict`` does (fold-ensemble mean,
      the bundle's belt), and their true masses are checked against the intervals.
    - otherwise **cross-fitting**: the calibration views of fold (or pseudo-fold) f get
      intervals calibrated on the other folds' views only, split by host.

    Judged: overall, and every bin of true mass inside the bundle's calibrated range
    (``domain["log10_m200c_calibrated"]``, else the whole range) with at least ``min_per_bin``
    views of ``min_hosts_per_bin`` hosts: 68% +/- 3% and 95% +/- 2%. Views of one host are
    correlated, so every fraction's standard error is a bootstrap over hosts.

    Parameters
    ----------
    bundle_or_run : Bundle, bundle file or training run folder
        Source of the intervals (and of the views, without ``observations``).
    observations : sequence of path, optional
        Observations files of independent universes to test on.
    k_neighbors : int, optional
        Window size for cross-fitting (default: :func:`default_k_neighbors`).
    mass_bins : sequence of float, optional
        Bin edges in log10 M200c [Msun/h] (default: :func:`coverage_bins` of the calibrated
        range, plus 0.2 dex bins beyond it, reported but not judged).
    min_per_bin, min_hosts_per_bin : int
        Smaller bins are reported but not judged.
    figure : str or os.PathLike, optional
        Write a PNG of coverage against true and predicted mass here (atomically).
    seed : int
        Seed of the bootstrap and of single-fold halves.
    method : {"neyman", "knn_pred"}, optional
        Interval method for cross-fitting (default: the bundle's; ``"neyman"`` for a run).
    n_boot : int
        Host bootstrap draws per standard error.

    Returns
    -------
    dict
        ``coverage_68``, ``coverage_95``, ``n_views``, ``n_hosts``, ``scheme``, ``method``,
        ``calibrated_range``, ``bins_true`` and ``bins_pred`` (per bin: lo, hi, n, n_hosts,
        coverage_68, coverage_95, se_68, se_95 [host bootstrap], median_offset, width_68,
        judged), ``passed`` (overall and every judged bin of true mass), ``passed_pred``
        (the same for bins of predicted mass: not guaranteed by a Neyman belt, reported).
    """
    cal, interval, bundle = _calibration_of(bundle_or_run)
    cal_host = cal.host
    rng = np.random.default_rng(seed)
    if observations:
        if bundle is None:
            raise InputError("an independent coverage test needs a bundle, not a run folder")
        cols, files = _test_views(bundle, observations)
        true, pred, q = cols["true"], cols["pred"], cols["q"]
        host = host_labels(cols["source"], cols["halo_id"])
        method = interval.get("method", "neyman")
        scheme, ks, extra = "independent test views", [], {"test_files": files}
    else:
        method = method or interval.get("method", "neyman")
        q, scheme, ks = _cross_fit(cal, cal_host, interval, method, k_neighbors, seed)
        true, pred, host, extra = cal.true, cal.pred, cal_host, {}
    lo95, lo68, med, hi68, hi95 = q.T
    in68 = (true >= lo68) & (true <= hi68)
    in95 = (true >= lo95) & (true <= hi95)
    calibrated = bundle.domain.get("log10_m200c_calibrated") if bundle is not None else None
    if calibrated is None:  # a run folder or an older bundle: the same rule as make_bundle
        calibrated = calibrated_range(
            cal.true, cal_host, [float(cal.true.min()), float(cal.true.max())],
            int(interval.get("min_hosts", MIN_HOSTS)),
            float(interval.get("edge_margin_dex", EDGE_MARGIN)))
    judged_range = [float(x) for x in calibrated]
    if mass_bins is None:
        inner = coverage_bins(judged_range)
        below = np.arange(inner[0] - 0.2, np.floor(true.min() * 5) / 5 - 0.2, -0.2)[::-1]
        above = np.arange(inner[-1] + 0.2, np.ceil(true.max() * 5) / 5 + 0.2, 0.2)
        mass_bins = np.round(np.concatenate([below, inner, above]), 6)
    edges = np.asarray(mass_bins, float)

    def per_bin(x: np.ndarray) -> list[dict[str, Any]]:
        rows = []
        idx = np.digitize(x, edges) - 1
        for b in range(len(edges) - 1):
            m = idx == b
            n = int(m.sum())
            row: dict[str, Any] = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                                   "n_hosts": int(np.unique(host[m]).size)}
            if n:
                inside = (edges[b] >= judged_range[0] - 1e-6
                          and edges[b + 1] <= judged_range[1] + 1e-6)
                row.update(coverage_68=float(in68[m].mean()), coverage_95=float(in95[m].mean()),
                           se_68=_host_bootstrap_se(in68[m], host[m], n_boot, rng),
                           se_95=_host_bootstrap_se(in95[m], host[m], n_boot, rng),
                           median_offset=float(np.median(med[m] - true[m])),
                           width_68=float(np.median(hi68[m] - lo68[m])),
                           in_calibrated_range=bool(inside),
                           judged=bool(inside and n >= min_per_bin
                                       and row["n_hosts"] >= min_hosts_per_bin))
            rows.append(row)
        return rows

    def ok(c_68: float, c_95: float) -> bool:
        return abs(c_68 - 0.68) <= 0.03 and abs(c_95 - 0.95) <= 0.02

    in_range = (true >= judged_range[0]) & (true <= judged_range[1])
    c68, c95 = float(in68[in_range].mean()), float(in95[in_range].mean())
    bins_true, bins_pred = per_bin(true), per_bin(pred)
    judged = [b for b in bins_true if b.get("judged")]
    judged_pred = [b for b in bins_pred if b.get("judged")]
    result = {
        "coverage_68": c68,
        "coverage_95": c95,
        "coverage_68_all_views": float(in68.mean()),
        "coverage_95_all_views": float(in95.mean()),
        "n_views": int(len(true)),
        "n_views_in_range": int(in_range.sum()),
        "n_hosts": int(np.unique(host).size),
        "scheme": scheme,
        "method": method,
        "calibrated_range": judged_range,
        "k_neighbors": int(np.median(ks)) if ks else int(interval.get("k_neighbors", 0)),
        "passed_overall": ok(c68, c95),
        "passed": ok(c68, c95) and bool(judged) and all(ok(b["coverage_68"], b["coverage_95"])
                                                        for b in judged),
        "passed_pred": all(ok(b["coverage_68"], b["coverage_95"]) for b in judged_pred),
        "bins_true": bins_true,
        "bins_pred": bins_pred,
        "width_68_median_dex": float(np.median((hi68 - lo68)[in_range])),
        "width_95_median_dex": float(np.median((hi95 - lo95)[in_range])),
        **extra,
    }
    if figure is not None:
        plot_coverage(result, figure)
    return result


def plot_coverage(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """PNG of 68% and 95% interval coverage against true and predicted log10 M200c."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in zip(axes, ("bins_true", "bins_pred"),
                              ("true", "predicted (ensemble)"), strict=True):
        rows = [b for b in result[key] if b["n"]]
        x = np.array([(b["lo"] + b["hi"]) / 2 for b in rows])
        shown = np.array([b.get("in_calibrated_range", True) and b["n_hosts"] >= 10
                          for b in rows], bool)
        for level, colour, tol in ((68, "C0", 0.03), (95, "C1", 0.02)):
            y = np.array([b[f"coverage_{level}"] for b in rows])
            se = np.array([b[f"se_{level}"] for b in rows], float)
            ax.axhspan(level / 100 - tol, level / 100 + tol, color=colour, alpha=0.15)
            ax.axhline(level / 100, color=colour, lw=0.8)
            ax.errorbar(x[shown], y[shown], yerr=se[shown], fmt="o-", color=colour, ms=4,
                        label=f"{level}% interval (in range: {result[f'coverage_{level}']:.3f})")
            ax.errorbar(x[~shown], y[~shown], yerr=se[~shown], fmt="o", mfc="none",
                        color=colour, ms=4)
            for xi, yi, b in zip(x[~shown], y[~shown], np.array(rows, object)[~shown],
                                 strict=True):
                if b["n_hosts"] < 10 and yi > 0.4:
                    ax.annotate(f"{b['n_hosts']} hosts", (xi, yi), fontsize=6,
                                textcoords="offset points", xytext=(3, 3))
        lo, hi = result["calibrated_range"]
        ax.axvspan(min(x.min() - 0.1, lo), lo, color="0.85", zorder=0)
        ax.axvspan(hi, max(x.max() + 0.1, hi), color="0.85", zorder=0)
        ax.set_xlim(min(x.min() - 0.1, lo), max(x.max() + 0.1, hi))
        ax.set_xlabel(f"{label} log10 M200c [Msun/h]")
        ax.set_ylim(0.4, 1.02)
    axes[0].set_ylabel("fraction of test views inside the interval")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{result['method']} interval coverage ({result['scheme']}, {result['n_views']} "
                 f"views of {result['n_hosts']} hosts)\nbands: 68% +/- 3%, 95% +/- 2%; grey: "
                 "outside the calibrated range (open symbols: not judged); error bars: host "
                 "bootstrap", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_coverage(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a :func:`coverage` result as JSON (atomically), with its provenance."""
    atomic_write_json(path, {**result, "provenance": provenance()})
    return Path(path)
