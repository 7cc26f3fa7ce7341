"""Toy (and deliberately broken) estimators and cross-validated toy runs, for tests.

Two minimal :class:`~dynmass.models.base.Estimator` subclasses stand in for real models:

* :class:`ToySigma`: ``log10 M200c = a + b log10 sigma_v``, a least-squares line on the
  velocity dispersion of every view (members and interlopers), so that its predictions move
  when galaxies are dropped, like M-sigma.
* :class:`ToyConst`: the mean training mass, whatever the galaxies (a model that ignores its
  input; its sampling-rate shifts are exactly zero).

Files written by them are read back by :func:`dynmass.models.load_model` only while they are
registered in :data:`dynmass.models.base.MODEL_NAMES`: use :func:`toy_models_registered`.

:func:`broken_calibration` breaks the interval calibration of :mod:`dynmass.intervals` on purpose
(over-confident belts, belts on shuffled masses), so that a test can show its coverage bounds
reject such intervals.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from dynmass.testing.estimators import ToySigma, cv_run, make_observations
>>> from dynmass.testing.estimators import toy_models_registered
>>> tmp = Path(tempfile.mkdtemp())
>>> obs_path = make_observations(tmp / "obs.h5", np.random.default_rng(0), n_halos=12)
>>> with toy_models_registered():
...     run = cv_run(tmp / "run", obs_path, ToySigma)
>>> sorted(p.name for p in run.glob("fold_*.h5"))
['fold_00.h5', 'fold_01.h5', 'fold_02.h5']
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import numpy as np

from dynmass._io import file_sha256
from dynmass.models import base as model_base
from dynmass.models.base import Estimator
from dynmass.observations import Observations, from_views, ragged_std, write_observations
from dynmass.testing.runs import TOY_OBS_SETTINGS, write_predictions_run
from dynmass.testing.worlds import evrard_sigma

__all__ = ["BROKEN_CALIBRATIONS", "TOY_MODELS", "ToyConst", "ToySigma", "broken_calibration",
           "cv_run", "make_observations", "toy_models_registered"]


class ToySigma(Estimator):
    """``log10 M200c = a + b log10 sigma_v``: depends on the galaxies, like M-sigma.

    ``sigma_v`` (km/s) is the standard deviation (ddof=0) of each view's line-of-sight
    velocities; ``(b, a)`` are the least-squares coefficients on the training views, masses as
    log10 M200c in Msun/h.
    """

    name: ClassVar[str] = "toy_sigma"
    defaults: ClassVar[dict[str, Any]] = {}

    def fit(self, obs: Observations, *, seed: int = 0, **kw: Any) -> ToySigma:
        """Least-squares line of log10 M200c on log10 sigma_v (``seed`` unused: exact).

        Parameters
        ----------
        obs : Observations
            Training views (velocities in km/s, masses M200c in Msun/h).
        seed : int
            Unused (the fit is deterministic).
        **kw
            Ignored (the keywords other estimators' ``fit`` takes).

        Returns
        -------
        ToySigma
            ``self``.
        """
        self.remember_obs_settings(obs)
        x = np.log10(ragged_std(obs.v, obs.offsets))
        self.coef = np.polyfit(x, obs.log10_m200c(), 1)
        return self

    def predict(self, obs: Observations) -> np.ndarray:
        """log10 M200c [Msun/h] of every view."""
        self.check_obs(obs)
        return np.polyval(self.coef, np.log10(ragged_std(obs.v, obs.offsets)))

    def get_arrays(self) -> dict[str, np.ndarray]:
        """``{"coef": (slope, intercept)}``."""
        return {"coef": self.coef}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`get_arrays`' output."""
        self.coef = arrays["coef"]


class ToyConst(ToySigma):
    """Predicts the mean training log10 M200c [Msun/h]: ignores the galaxies entirely."""

    name: ClassVar[str] = "toy_const"

    def fit(self, obs: Observations, *, seed: int = 0, **kw: Any) -> ToyConst:
        """Remember the mean training mass.

        Parameters
        ----------
        obs : Observations
            Training views (masses M200c in Msun/h).
        seed : int
            Unused (the fit is deterministic).
        **kw
            Ignored (the keywords other estimators' ``fit`` takes).

        Returns
        -------
        ToyConst
            ``self``.
        """
        self.remember_obs_settings(obs)
        self.coef = np.array([float(np.mean(obs.log10_m200c()))])
        return self

    def predict(self, obs: Observations) -> np.ndarray:
        """The training mean for every view."""
        self.check_obs(obs)
        return np.full(obs.n_views, self.coef[0])


#: Names and ``module:class`` of the toy estimators, as :data:`MODEL_NAMES` wants them.
TOY_MODELS: dict[str, str] = {
    "toy_sigma": f"{__name__}:ToySigma",
    "toy_const": f"{__name__}:ToyConst",
}


@contextmanager
def toy_models_registered() -> Iterator[dict[str, type[Estimator]]]:
    """Register the toy estimators in :data:`MODEL_NAMES` for the duration of the block.

    Inside it :func:`dynmass.models.load_model` rebuilds their files; on exit the registry is
    restored exactly (an entry of the same name that existed before is put back).

    Yields
    ------
    dict of str to type
        ``{"toy_sigma": ToySigma, "toy_const": ToyConst}``.
    """
    names = model_base.MODEL_NAMES
    before = {k: names[k] for k in TOY_MODELS if k in names}
    names.update(TOY_MODELS)
    try:
        yield {"toy_sigma": ToySigma, "toy_const": ToyConst}
    finally:
        for k in TOY_MODELS:
            if k in before:
                names[k] = before[k]
            else:
                names.pop(k, None)


def make_observations(path: Path, rng: np.random.Generator, n_halos: int = 60,
                      n_los: int = 2, settings: dict[str, Any] | None = None) -> Path:
    """Write views with Evrard-sigma members plus 5 uniform interlopers each.

    Host masses are log10 M200c uniform in [13.8, 15.0) (Msun/h); a view holds
    ``int(15 + 40 (log10 M - 13.8))`` members with Gaussian velocities of dispersion
    :func:`~dynmass.testing.worlds.evrard_sigma` (clipped to +/-2499 km/s) and 5 interlopers
    uniform in +/-2500 km/s; projected radii are uniform in [0, 1.6) Mpc/h. Halo ids start at
    1000.

    Parameters
    ----------
    path : pathlib.Path
        Observations file (HDF5) to write.
    rng : numpy.random.Generator
        Source of every draw.
    n_halos, n_los : int
        Hosts and views per host.
    settings : dict, optional
        Observing settings (default :data:`~dynmass.testing.runs.TOY_OBS_SETTINGS`).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    lm = rng.uniform(13.8, 15.0, n_halos)
    views, hid, los, m = [], [], [], []
    for h in range(n_halos):
        sigma = float(evrard_sigma(lm[h]))
        for j in range(n_los):
            n_mem = int(15 + 40 * (lm[h] - 13.8))
            v = np.clip(rng.normal(0, sigma, n_mem), -2499, 2499)
            v = np.concatenate([v, rng.uniform(-2500, 2500, 5)])
            views.append((rng.uniform(0, 1.6, len(v)), v))
            hid.append(1000 + h)
            los.append(j)
            m.append(10 ** lm[h])
    obs = from_views(views, dict(settings or TOY_OBS_SETTINGS), clusters={
        "halo_id": np.array(hid), "los": np.array(los), "m200c": np.array(m)})
    return write_observations(obs, path)


def cv_run(folder: Path, obs_path: Path, model_cls: type[Estimator], k: int = 3,
           seed: int = 0) -> Path:
    """A cross-validated run folder: folds by host mass rank mod ``k``, one model per fold.

    Writes ``fold_XX.h5`` (the model fitted on the other folds), ``predictions.csv`` (each
    view predicted by the model of its fold), ``settings.json`` (recording ``obs_path`` and
    its sha256) and ``timing.json``, as ``dynmass train`` does.

    Parameters
    ----------
    folder : pathlib.Path
        Run folder (created).
    obs_path : pathlib.Path
        Observations file with ``halo_id`` and ``m200c`` (Msun/h).
    model_cls : type
        Estimator class, fitted with its default settings.
    k : int
        Number of folds.
    seed : int
        Seed passed to every fit.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    from dynmass.observations import read_observations

    obs = read_observations(obs_path)
    hosts, first = np.unique(obs.clusters["halo_id"], return_index=True)
    rank = np.argsort(np.argsort(-obs.clusters["m200c"][first]))
    fold_of_host = dict(zip(hosts.tolist(), (rank % k).tolist(), strict=True))
    fold = np.array([fold_of_host[int(h)] for h in obs.clusters["halo_id"]])
    pred = np.empty(obs.n_views)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(k):
        model = model_cls().fit(obs.subset(fold != f), seed=seed)
        model.save(folder / f"fold_{f:02d}.h5")
        pred[fold == f] = model.predict(obs.subset(fold == f))
    return write_predictions_run(
        folder, obs.clusters["halo_id"], obs.log10_m200c(), pred, los=obs.clusters["los"],
        fold=fold, n_gal=obs.n_gal, model=model_cls.name,
        settings={"observations": str(Path(obs_path).resolve()),
                  "observations_sha256": file_sha256(obs_path), "folds": k,
                  "obs_settings": obs.settings})


#: What :func:`broken_calibration` can do to the calibration views before the belt is built.
BROKEN_CALIBRATIONS: dict[str, str] = {
    "shrunk": "residuals pred - true multiplied by 0.6 (over-confident intervals)",
    "shuffled": "true masses permuted among the calibration views (a belt of nothing)",
}


@contextmanager
def broken_calibration(kind: str | None, seed: int = 0) -> Iterator[None]:
    """Break :func:`dynmass.intervals.calibrate` for the duration of the block.

    Every interval table (:func:`~dynmass.bundle.make_bundle`, the cross-fitting of
    :func:`~dynmass.coverage.coverage`, and so the report's interval coverage) is built by
    that function, called through its module; inside the block it first damages its calibration views as
    :data:`BROKEN_CALIBRATIONS` says.

    Parameters
    ----------
    kind : {None, "shrunk", "shuffled"}
        ``None`` leaves the calibration alone (a convenience for checks that run both ways).
    seed : int
        Seed of the permutation of ``"shuffled"``.
    """
    if kind is None:
        yield
        return
    if kind not in BROKEN_CALIBRATIONS:
        raise ValueError(f"unknown broken calibration {kind!r}; choose from "
                         f"{sorted(BROKEN_CALIBRATIONS)}")
    import dynmass.intervals as intervals_module

    original = intervals_module.calibrate
    rng = np.random.default_rng(seed)

    def calibrate(pred: np.ndarray, true: np.ndarray, *args: Any, **kwargs: Any):
        pred, true = np.asarray(pred, float), np.asarray(true, float)
        if kind == "shrunk":
            pred = true + 0.6 * (pred - true)
        else:
            true = rng.permutation(true)
        return original(pred, true, *args, **kwargs)

    with mock.patch.object(intervals_module, "calibrate", calibrate):
        yield
