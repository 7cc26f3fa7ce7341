"""Model bundles: every fold model of a training run plus what is needed to use it honestly.

A *bundle* is the self-describing file ``dynmass predict --model`` takes. It holds

- the k fold models of a cross-validated training run (any registered model name), whose
  **ensemble mean** is the point estimate for a new cluster;
- the observe settings of the training data (aperture [comoving Mpc/h], vcut [km/s],
  redshift, cosmology, min_members, ...), so that real clusters are cut exactly as the mocks;
- the **training domain** (log10 M200c, member count, velocity spread and redshift ranges) and
  the **calibrated mass range** over which intervals are claimed, so that predictions outside
  them are flagged;
- the **validated redshift range** ``domain["redshift_range"]`` (see :mod:`dynmass.redshift`,
  which also says why its tolerance is 0.05): ``dynmass predict`` gives no mass outside it
  unless asked to extrapolate;
- the **calibration views** ``(pred, true, host)`` and the belt tabulated from them.

Calibration views are either

- *independent* (``make_bundle(..., calibration_observations=[...])``, recommended): views of
  mock universes the run never saw, each predicted by the fold-ensemble mean, i.e. by exactly
  the estimator applied to a real cluster; or
- *held out*: the run's own views, each predicted by the one fold model that did not see its
  halo (single models scatter a little more than the ensemble: slightly conservative).

Calibration views are made in :mod:`dynmass.calibration_views`, interval calibration lives
in :mod:`dynmass.intervals` (the belts in :mod:`dynmass.belts`), the validated redshift range
in :mod:`dynmass.redshift`, coverage checks in :mod:`dynmass.coverage`.

File format (HDF5)::

    /                  attrs: dynmass_kind="bundle", model (name), n_folds,
                              obs_settings (JSON), domain (JSON), interval (JSON: method,
                              k_neighbors, min_hosts, percentiles, calibration files),
                              run_settings (JSON: the run's settings.json), provenance (JSON),
                              dynmass_version, complete
    /folds/fold_00 ...        one model each (dynmass.models.base.write_model_group)
    /calibration/pred, true, fold, halo_id, los, n_gal, source     calibration views
    /interval/grid [log10 Msun/h], /interval/quantiles (n_grid, n_percentiles; for
        "neyman_n" one more column, the richness band of each node's belt)

Examples
--------
A 5-fold M-sigma run on 300 toy hosts (3 views each), bundled with intervals calibrated on
its held-out views, read back and applied to the three views of one host:

>>> import shutil
>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from dynmass.bundle import load_bundle, make_bundle
>>> from dynmass.observations import write_observations
>>> from dynmass.testing.runs import write_fold_run
>>> from dynmass.testing.worlds import cylinder_views
>>> tmp = Path(tempfile.mkdtemp())
>>> obs = cylinder_views(np.random.default_rng(1), n_halos=300, richness=60.0,
...                      n_interlopers=1.0)
>>> run = write_fold_run(tmp / "run", obs, obs_path=write_observations(obs, tmp / "obs.h5"))
>>> bundle = make_bundle(run, tmp / "model.h5")
>>> bundle.model_name, len(bundle.models), bundle.interval["method"]
('msigma', 5, 'neyman')
>>> [round(x, 1) for x in bundle.domain["log10_m200c_calibrated"]]  # intervals claimed here
[13.8, 14.9]
>>> host = obs.subset(obs.clusters["halo_id"] == 0)
>>> res = load_bundle(tmp / "model.h5").predict(host)
>>> np.round(res["log10_m200c_p50"], 2).tolist(), round(float(host.log10_m200c()[0]), 2)
([14.16, 14.53, 14.34], 14.37)
>>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynmass import intervals
from dynmass._io import (
    atomic_path,
    hdf5_read_errors,
    open_hdf5,
    provenance,
    read_json_attr,
    to_json,
)
from dynmass.calibration_views import ensemble_calibration, held_out_calibration
from dynmass.errors import InputError
from dynmass.intervals import (
    _CAL_FIELDS,
    EDGE_MARGIN,
    MAX_HALFWIDTH,
    MIN_HOSTS,
    PERCENTILES,
    Calibration,
    apply_intervals,
    calibrated_range,
    default_k_neighbors,
    pct_name,
)
from dynmass.models.base import (
    Estimator,
    ensemble_predictions,
    read_model_group,
    write_model_group,
)
from dynmass.observations import Observations, universes_of
from dynmass.observing import ObservingSetup
from dynmass.redshift import (  # noqa: F401 (re-exported: the bundle API)
    REDSHIFT_TOLERANCE,
    _observations_redshifts,
    _redshift_values,
    _with_redshift_range,
    validated_redshift_range,
)
from dynmass.rundir import RunDir

log = logging.getLogger(__name__)


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
        ``[min, max]``; ``None`` when unknown), ``redshift`` (snapshot redshift of the
        training views) and ``redshift_range`` (validated redshift range ``[lo, hi]``, see
        :func:`validated_redshift_range`).
    calibration : Calibration
        Calibration views: the run's held-out views, or views of independent universes
        predicted by the fold ensemble (:func:`ensemble_calibration`).
    interval : dict
        ``method``, ``k_neighbors``, ``percentiles``.
    grid, table : numpy.ndarray
        Interval table of :func:`dynmass.intervals.calibrate` with ``interval["method"]``: nodes
        [log10 Msun/h] and quantiles [dex].
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
    def redshift_range(self) -> list[float] | None:
        """Validated redshift range ``[lo, hi]`` of the model (``None``: no redshift known).

        ``domain["redshift_range"]``, else derived from the training redshift +/-
        :data:`REDSHIFT_TOLERANCE`.
        """
        return _with_redshift_range(self.domain, self.obs_settings).get("redshift_range")

    @property
    def percentiles(self) -> tuple[float, ...]:
        """Percentiles (per cent) reported by :meth:`predict`."""
        return tuple(float(p) for p in self.interval["percentiles"])

    def predict_folds(self, obs: Observations) -> np.ndarray:
        """``(n_folds, n_views)`` predicted log10 M200c [Msun/h] of every fold model."""
        return ensemble_predictions(self.models, obs, self.path)

    def intervals(self, mu: np.ndarray, n_gal: np.ndarray | None = None) -> np.ndarray:
        """``(n, n_percentiles)`` log10 M200c percentiles for ensemble means ``mu``.

        Parameters
        ----------
        mu : numpy.ndarray
            Ensemble-mean predicted log10 M200c [Msun/h].
        n_gal : numpy.ndarray, optional
            Galaxies in each cluster's cylinder (needed by the ``"neyman_n"`` method).

        Returns
        -------
        numpy.ndarray
        """
        mu = np.atleast_1d(np.asarray(mu, float))
        return apply_intervals(mu, self.grid, self.table, self.interval.get("method", "knn_pred"),
                               self.percentiles, n_gal=n_gal)

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
        pct = self.intervals(mu, obs.n_gal)
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

    A bundle written before ``domain["redshift_range"]`` was recorded gets it derived from its
    training redshift (:func:`validated_redshift_range`); the file is not changed.

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
        obs_settings = read_json_attr(fh, "obs_settings", path)
        return Bundle(
            models=models,
            obs_settings=obs_settings,
            domain=_with_redshift_range(read_json_attr(fh, "domain", path), obs_settings),
            calibration=cal,
            interval=read_json_attr(fh, "interval", path),
            grid=fh["interval"]["grid"][...],
            table=fh["interval"]["quantiles"][...],
            run_settings=read_json_attr(fh, "run_settings", path),
            path=str(path),
        )


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
    method : {"neyman", "neyman_n", "knn_pred"}
        Interval method (see :func:`dynmass.intervals.calibrate`; ``"neyman_n"``: one belt
        per richness band, for models trained over randomised surveys).
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
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise InputError("training run folder does not exist", path=run.path)
    settings = run.read_settings()
    held_out = held_out_calibration(run.predictions_path)
    models = run.load_models()
    names = {m.name for m in models}
    if len(names) != 1:
        raise InputError(f"fold models of different types: {sorted(names)}", path=run.path)
    obs_settings = dict(settings.get("obs_settings") or models[0].obs_settings)
    for key in ("aperture", "vcut"):
        if key not in obs_settings:
            raise InputError(f"obs_settings lack '{key}'", path=run.settings_path)
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
        cal, files = ensemble_calibration(models, calibration_observations, obs_settings,
                                          exclude_universes=sorted(universes_of(obs_settings)),
                                          n_folds=len(models), seed=seed)
        source = {"residuals": "fold-ensemble mean on views of independent universes",
                  "files": files}
    else:
        cal = held_out
        source = {"residuals": "held-out views of the run (each by the fold model that did "
                               "not see its halo)"}
    host = cal.host
    # a model of views at several redshifts (now or in future) records the range they span
    redshifts = _redshift_values(obs_settings.get("redshift"))
    redshifts += _observations_redshifts(calibration_observations or ())
    domain["redshift_range"] = validated_redshift_range(redshifts)
    domain["redshift_tolerance"] = REDSHIFT_TOLERANCE
    domain["redshift_range_source"] = ("snapshot redshifts of the training and calibration "
                                       "views +/- redshift_tolerance")
    domain["log10_m200c_calibrated"] = calibrated_range(cal.true, host, training_range,
                                                        min_hosts, edge_margin)
    # the survey the training views were seen through (fixed values or per-view draws)
    domain["survey"] = ObservingSetup.from_settings(obs_settings).survey_settings()
    domain["center"] = obs_settings.get("center", "true")
    grid, table = intervals.calibrate(cal.pred, cal.true, method, k_neighbors, percentiles, host,
                                      min_hosts, max_halfwidth, n_gal=cal.n_gal)
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
