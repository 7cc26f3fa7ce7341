"""Model bundles: every fold model of a training run plus what is needed to use it honestly.

A *bundle* is the self-describing file ``dynmass predict --model`` takes. It holds

- the k fold models of a cross-validated training run (any registered model name), whose
  **ensemble mean** is the point estimate for a new cluster;
- the observe settings of the training data (aperture [comoving Mpc/h], vcut [km/s],
  redshift, cosmology, min_members, ...), so that real clusters are cut exactly as the mocks;
- the **training domain** (log10 M200c, member count, velocity spread and redshift ranges), so
  that predictions outside it are flagged;
- the **calibration**: held-out residuals of the run (each view predicted by the fold model
  that did not see its halo), from which the interval at a given predicted mass is read.

Interval methods (held-out residuals, quantiles with Weibull plotting positions ``p (k+1)``
so that for exchangeable data an order statistic covers its nominal fraction on average;
Vovk, Gammerman & Shafer 2005, *Algorithmic Learning in a Random World*; Lei et al. 2018,
JASA 113, 1094):

- ``"neyman"`` (default): a Neyman (1937) confidence belt. For every true mass m, the
  quantiles of ``pred - true`` among the ``k`` held-out views nearest in *true* mass give the
  belt curves ``c_q(m) = m + Q_q``; a cluster with ensemble prediction ``mu`` gets the
  percentile p at the m where ``c_{100-p}(m) = mu``. The 68% (95%) interval then contains
  the true mass in 68% (95%) of clusters *at every true mass*, whatever the mass function of
  the clusters one applies it to (the training set's is flat, the sky's is steep), and the
  median is median-unbiased at every mass. This corrects the pull of learners towards the
  middle of the training range (Ho et al. 2019, ApJ 887, 25) at its edges. Where a belt
  curve is not monotonic (a learner that saturates) it is replaced by its running maximum,
  which widens the interval (over-coverage, never under-coverage). Masses are clipped to the
  calibrated range.
- ``"knn_pred"``: quantiles of ``true - pred`` among the ``k`` views nearest in *predicted*
  mass, added to ``mu``. Calibrated on average over the training mass distribution at each
  predicted mass (a posterior under the flat training prior), hence not at each true mass
  near the edges of the range.

The quantiles are tabulated on a grid (at most 200 nodes) and interpolated linearly.

Coverage is checked by cross-fitting over folds (:func:`coverage`): the views of fold f are
given intervals calibrated only on the other folds' residuals, so no view calibrates itself
and folds are split by halo. The held-out predictions come from single fold models while new
clusters get the mean of all folds, whose error is no larger on average; the intervals are
therefore slightly conservative for new clusters.

File format (HDF5)::

    /                  attrs: dynmass_kind="bundle", model (name), n_folds,
                              obs_settings (JSON), domain (JSON), interval (JSON: method,
                              k_neighbors, percentiles), run_settings (JSON: the run's
                              settings.json), provenance (JSON), dynmass_version, complete
    /folds/fold_00 ...        one model each (dynmass.models.base.write_model_group)
    /calibration/pred, true, fold, halo_id, los, n_gal     held-out views of the run
    /interval/grid [log10 Msun/h], /interval/quantiles (n_grid, n_percentiles) of true - pred
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
from dynmass.errors import InputError
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
        Fold of the view's halo, halo id, line-of-sight index, number of galaxies.
    """

    pred: np.ndarray
    true: np.ndarray
    fold: np.ndarray
    halo_id: np.ndarray
    los: np.ndarray
    n_gal: np.ndarray

    @property
    def residual(self) -> np.ndarray:
        """``true - pred`` in dex (minus the paper's eps = log10 M_pred / M_true)."""
        return self.true - self.pred

    def subset(self, mask: np.ndarray) -> Calibration:
        """Rows where ``mask`` is true."""
        return Calibration(**{k: getattr(self, k)[mask] for k in _CAL_FIELDS})


_CAL_FIELDS = ("pred", "true", "fold", "halo_id", "los", "n_gal")


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


def calibrate(
    pred: np.ndarray,
    true: np.ndarray,
    method: str = "neyman",
    k_neighbors: int | None = None,
    percentiles: Sequence[float] = PERCENTILES,
) -> tuple[np.ndarray, np.ndarray]:
    """Interval calibration table from held-out ``(pred, true)`` log10 M200c [Msun/h].

    Parameters
    ----------
    pred, true : numpy.ndarray
        Held-out predicted and true log10 M200c.
    method : {"neyman", "knn_pred"}
        ``"neyman"``: quantiles of ``pred - true`` among views nearest in *true* mass (the
        confidence belt, inverted by :func:`apply_intervals`); ``"knn_pred"``: quantiles of
        ``true - pred`` among views nearest in *predicted* mass.
    k_neighbors : int, optional
        Views per window.
    percentiles : sequence of float
        Percentiles (per cent); must be symmetric about 50 for ``"neyman"``.

    Returns
    -------
    grid, table : numpy.ndarray
        See :func:`quantile_table`.
    """
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if method == "neyman":
        p = np.asarray(percentiles, float)
        if not np.allclose(np.sort(100 - p), np.sort(p)):
            raise InputError(f"percentiles {list(p)} are not symmetric about 50")
        return quantile_table(true, pred - true, k_neighbors, percentiles)
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
        for m in self.models:
            m.check_obs(obs, self.path)
        return np.vstack([np.asarray(m.predict(obs), float) for m in self.models])

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
        cal = Calibration(**{k: fh["calibration"][k][...] for k in _CAL_FIELDS})
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


def make_bundle(
    run_dir: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    observations: str | os.PathLike | None = None,
    k_neighbors: int | None = None,
    percentiles: Sequence[float] = PERCENTILES,
    method: str = "neyman",
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
    k_neighbors : int, optional
        Calibration views per interval window (default :func:`default_k_neighbors`).
    percentiles : sequence of float
        Percentiles (per cent) to report.
    method : {"neyman", "knn_pred"}
        Interval method (see :func:`calibrate`).

    Returns
    -------
    Bundle
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("training run folder does not exist", path=run_dir)
    settings = _read_run_settings(run_dir)
    cal = read_predictions(run_dir / "predictions.csv")
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
    domain: dict[str, Any] = {
        "log10_m200c": [float(cal.true.min()), float(cal.true.max())],
        "log10_m200c_pred": [float(cal.pred.min()), float(cal.pred.max())],
        "n_gal": [float(cal.n_gal.min()), float(cal.n_gal.max())],
        "sigma_v": None,
        "redshift": obs_settings.get("redshift"),
        "n_views": len(cal.pred),
        "n_halos": int(np.unique(cal.halo_id).size),
    }
    domain.update(_training_views_domain(observations or settings.get("observations")))
    grid, table = calibrate(cal.pred, cal.true, method, k_neighbors, percentiles)
    k = default_k_neighbors(len(cal.pred)) if k_neighbors is None else int(k_neighbors)
    bundle = Bundle(
        models=models,
        obs_settings=obs_settings,
        domain=domain,
        calibration=cal,
        interval={"method": method, "k_neighbors": min(k, len(cal.pred)),
                  "percentiles": list(percentiles), "quantile_method": "weibull",
                  "residuals": "held-out views of the run (each by the fold model that did "
                               "not see its halo)"},
        grid=grid,
        table=table,
        run_settings=settings,
    )
    if out_path is not None:
        bundle.save(out_path)
        bundle.path = str(out_path)
    return bundle


def _calibration_of(source: Bundle | str | os.PathLike) -> tuple[Calibration, dict[str, Any]]:
    if isinstance(source, Bundle):
        return source.calibration, dict(source.interval)
    p = Path(source)
    if p.is_dir():
        return read_predictions(p / "predictions.csv"), {}
    b = load_bundle(p)
    return b.calibration, dict(b.interval)


def coverage(
    bundle_or_run: Bundle | str | os.PathLike,
    *,
    k_neighbors: int | None = None,
    mass_bins: Sequence[float] | None = None,
    min_per_bin: int = 30,
    figure: str | os.PathLike | None = None,
    seed: int = 0,
    method: str | None = None,
) -> dict[str, Any]:
    """Coverage of the 68% and 95% intervals on held-out views not used to calibrate them.

    Cross-fitting by fold: the views of fold f get intervals calibrated on the residuals of
    all other folds only (folds are split by halo). A run with one fold is split by halo into
    two random halves (seeded) instead.

    Parameters
    ----------
    bundle_or_run : Bundle, bundle file or training run folder
        Source of held-out predictions.
    k_neighbors : int, optional
        Window size (default: the bundle's, else :func:`default_k_neighbors`).
    mass_bins : sequence of float, optional
        Bin edges in log10 M200c [Msun/h] (default: 0.2 dex bins over the true-mass range).
    min_per_bin : int
        Bins with fewer views are reported but not judged.
    figure : str or os.PathLike, optional
        Write a PNG of coverage against true and predicted mass here (atomically).
    seed : int
        Seed of the halo split for single-fold runs.
    method : {"neyman", "knn_pred"}, optional
        Interval method (default: the bundle's; ``"neyman"`` for a run folder).

    Returns
    -------
    dict
        ``coverage_68``, ``coverage_95`` (fractions), ``n_views``, ``bins_true`` and
        ``bins_pred`` (lists of per-bin dicts: lo, hi, n, coverage_68, coverage_95,
        se_68, se_95, median_offset, width_68), ``passed`` (overall and every judged bin of
        true mass within 68% +/- 3% and 95% +/- 2%), ``k_neighbors``, ``scheme``.
    """
    cal, interval = _calibration_of(bundle_or_run)
    method = method or interval.get("method", "neyman")
    groups = np.unique(cal.fold)
    scheme = "cross-fit by fold"
    if len(groups) < 2:
        rng = np.random.default_rng(seed)
        halos = np.unique(cal.halo_id)
        half = set(rng.permutation(halos)[: len(halos) // 2].tolist())
        part = np.array([h in half for h in cal.halo_id], dtype=np.int64)
        scheme = "two random halves by halo"
    else:
        part = cal.fold
    lo68 = np.empty(len(cal.pred))
    hi68, lo95, hi95, med = (np.empty_like(lo68) for _ in range(4))
    probs = (2.5, 16.0, 50.0, 84.0, 97.5)
    ks = []
    for g in np.unique(part):
        val = part == g
        train = ~val
        k = default_k_neighbors(int(train.sum())) if k_neighbors is None else k_neighbors
        ks.append(k)
        grid, table = calibrate(cal.pred[train], cal.true[train], method, k, probs)
        q = apply_intervals(cal.pred[val], grid, table, method, probs)
        lo95[val], lo68[val], med[val], hi68[val], hi95[val] = q.T
    in68 = (cal.true >= lo68) & (cal.true <= hi68)
    in95 = (cal.true >= lo95) & (cal.true <= hi95)
    if mass_bins is None:
        lo, hi = np.floor(cal.true.min() * 5) / 5, np.ceil(cal.true.max() * 5) / 5
        mass_bins = np.round(np.arange(lo, hi + 0.1, 0.2), 6)
    edges = np.asarray(mass_bins, float)

    def per_bin(x: np.ndarray) -> list[dict[str, Any]]:
        rows = []
        idx = np.digitize(x, edges) - 1
        for b in range(len(edges) - 1):
            m = idx == b
            n = int(m.sum())
            row: dict[str, Any] = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n}
            if n:
                c68, c95 = float(in68[m].mean()), float(in95[m].mean())
                row.update(coverage_68=c68, coverage_95=c95,
                           se_68=float(np.sqrt(0.68 * 0.32 / n)),
                           se_95=float(np.sqrt(0.95 * 0.05 / n)),
                           median_offset=float(np.median(med[m] - cal.true[m])),
                           width_68=float(np.median(hi68[m] - lo68[m])),
                           judged=n >= min_per_bin)
            rows.append(row)
        return rows

    c68, c95 = float(in68.mean()), float(in95.mean())
    bins_true, bins_pred = per_bin(cal.true), per_bin(cal.pred)

    def ok(c_68: float, c_95: float) -> bool:
        return abs(c_68 - 0.68) <= 0.03 and abs(c_95 - 0.95) <= 0.02

    judged = [b for b in bins_true if b.get("judged")]
    result = {
        "coverage_68": c68,
        "coverage_95": c95,
        "n_views": int(len(cal.pred)),
        "n_halos": int(np.unique(cal.halo_id).size),
        "scheme": scheme,
        "method": method,
        "k_neighbors": int(np.median(ks)),
        "passed_overall": ok(c68, c95),
        "passed": ok(c68, c95) and all(ok(b["coverage_68"], b["coverage_95"]) for b in judged),
        "bins_true": bins_true,
        "bins_pred": bins_pred,
        "width_68_median_dex": float(np.median(hi68 - lo68)),
        "width_95_median_dex": float(np.median(hi95 - lo95)),
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
        for level, colour, tol in ((68, "C0", 0.03), (95, "C1", 0.02)):
            y = np.array([b[f"coverage_{level}"] for b in rows])
            se = np.array([b[f"se_{level}"] for b in rows])
            ax.axhspan(level / 100 - tol, level / 100 + tol, color=colour, alpha=0.15)
            ax.axhline(level / 100, color=colour, lw=0.8)
            ax.errorbar(x, y, yerr=se, fmt="o-", color=colour, ms=4,
                        label=f"{level}% interval (overall {result[f'coverage_{level}']:.3f})")
        ax.set_xlabel(f"{label} log10 M200c [Msun/h]")
        ax.set_ylim(0.4, 1.02)
    axes[0].set_ylabel("fraction of held-out views inside the interval")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{result['method']} interval coverage ({result['scheme']}, {result['n_views']} views, "
                 f"k={result['k_neighbors']}); bands: 68% +/- 3%, 95% +/- 2%", fontsize=9)
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
