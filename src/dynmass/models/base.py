"""The estimator interface shared by every mass model, and its file format.

Every model predicts ``log10 M200c`` [Msun/h] of cluster views from :class:`Observations`.
A saved model is a self-describing HDF5 file (no pickles)::

    /   attrs: dynmass_kind="model", model (name), settings (JSON: the model's
               hyper-parameters), obs_settings (JSON: the observe settings of the training
               data, e.g. aperture [Mpc/h], vcut [km/s], redshift, cosmology),
               extra (JSON: anything else, e.g. training history), dynmass_version
    /params/<name>   arrays (weights, coefficients, training distributions ...)
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np

from dynmass._io import (
    atomic_path,
    hdf5_read_errors,
    open_hdf5,
    provenance,
    read_json_attr,
    to_json,
)
from dynmass.errors import InputError
from dynmass.observations import Observations

#: Registered model names and the module:class that implements each.
MODEL_NAMES: dict[str, str] = {
    "msigma": "dynmass.models.msigma:MSigma",
    "sdm": "dynmass.models.sdm:SDM",
    "cnn1d": "dynmass.models.cnn:CNN1D",
    "cnn2d": "dynmass.models.cnn:CNN2D",
    "deepset": "dynmass.models.deepset:DeepSet",
    "gapper_virial": "dynmass.models.classical:GapperVirial",
    "gapper_pme": "dynmass.models.classical:GapperPME",
    "clip_virial": "dynmass.models.classical:ClipVirial",
    "clip_pme": "dynmass.models.classical:ClipPME",
    "gapper_msigma": "dynmass.models.interlopers:GapperMSigma",
    "caustic": "dynmass.models.caustic:Caustic",
}


#: Model settings that only choose hardware (device, CPU threads, prediction batch size): they
#: may differ between a fit and its resumption, and do not change what a model computes.
RUNTIME_SETTINGS: tuple[str, ...] = ("device", "num_threads", "predict_batch_size")


class Estimator(ABC):
    """A mass model: ``fit`` on observations, ``predict`` log10 M200c, ``save`` and ``load``.

    Subclasses set :attr:`name`, implement :meth:`fit`, :meth:`predict`, :meth:`get_arrays`
    and :meth:`set_arrays`, and keep every hyper-parameter in ``self.settings`` (JSON-able).

    Parameters
    ----------
    **settings
        Hyper-parameters; unknown keys raise :class:`InputError`.
    """

    name: ClassVar[str] = "base"
    #: Default hyper-parameters of the model.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Settings added after model files were first written, with the value that reproduces
    #: the fit of a file that lacks them (:func:`read_model_group` fills them in).
    settings_before_added: ClassVar[dict[str, Any]] = {}
    #: True when :meth:`fit` takes ``features``, ``progress``, ``checkpoint`` and
    #: ``epoch_callback`` (resumable training; :mod:`dynmass.train` passes them).
    supports_checkpoint: ClassVar[bool] = False

    def __init__(self, **settings: Any) -> None:
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise InputError(f"unknown settings for model '{self.name}': {sorted(unknown)}")
        self.settings: dict[str, Any] = {**self.defaults, **settings}
        self.obs_settings: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}

    @abstractmethod
    def fit(self, obs: Observations, *, seed: int = 0, **kwargs: Any) -> Estimator:
        """Fit on all views of ``obs``; returns ``self``.

        Parameters
        ----------
        obs : Observations
            Training views with ``clusters["m200c"]`` [Msun/h].
        seed : int
            Seed of every random choice of the fit.
        **kwargs
            Model-specific options (see :attr:`supports_checkpoint`).
        """

    @abstractmethod
    def predict(self, obs: Observations) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] of every view of ``obs``."""

    @abstractmethod
    def get_arrays(self) -> dict[str, np.ndarray]:
        """Fitted parameters as named arrays (for :meth:`save`)."""

    @abstractmethod
    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore fitted parameters from :meth:`get_arrays`' output."""

    @property
    def featurizer(self) -> Any:
        """What the model reads from a view (a :class:`~dynmass.featurizers.KDEFeaturizer`),
        or None for models that read the galaxies themselves (M-sigma, SDM)."""
        return None

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] from :attr:`featurizer` output ``X``.

        Parameters
        ----------
        X : numpy.ndarray
            One feature row per view.
        """
        raise InputError(f"model '{self.name}' reads views, not precomputed features")

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters (scikit-learn style; a copy of ``settings``)."""
        return dict(self.settings)

    def set_params(self, **params: Any) -> Estimator:
        """Change hyper-parameters (unknown names raise :class:`InputError`); returns ``self``.

        Parameters
        ----------
        **params
            Settings to change.
        """
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise InputError(f"unknown settings for model '{self.name}': {sorted(unknown)}")
        self.settings.update(params)
        return self

    def remember_obs_settings(self, obs: Observations) -> None:
        """Record the observe settings of the training data (checked at predict time)."""
        self.obs_settings = dict(obs.settings)

    def check_obs(self, obs: Observations, path: object = None) -> None:
        """Raise a clear error if ``obs`` was made with other settings than the training data.

        Parameters
        ----------
        obs : Observations
            Views to predict; their aperture [comoving Mpc/h], vcut [km/s] and other observe
            settings must match the training data's.
        path : object, optional
            The file ``obs`` came from, named in the error.
        """
        if self.obs_settings:
            obs.check_compatible(self.obs_settings, f"model '{self.name}'", path)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (HDF5) atomically."""
        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
            write_model_group(fh, self)
            fh.attrs["dynmass_kind"] = "model"
            fh.attrs["complete"] = True
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Estimator:
        """Read a model written by :meth:`save`."""
        return load_model(path)


def write_model_group(group: h5py.Group, model: Estimator) -> None:
    """Write ``model`` into an open HDF5 group (used for single files and bundles).

    Parameters
    ----------
    group : h5py.Group
        Open, writable group; gets the attributes and a ``params`` subgroup (module docs).
    model : Estimator
        Fitted model.
    """
    group.attrs["model"] = model.name
    group.attrs["settings"] = to_json(model.settings)
    group.attrs["obs_settings"] = to_json(model.obs_settings)
    group.attrs["extra"] = to_json(model.extra)
    prov = provenance()
    group.attrs["dynmass_version"] = prov["dynmass_version"]
    group.attrs["provenance"] = to_json(prov)
    params = group.create_group("params")
    for key, arr in model.get_arrays().items():
        params.create_dataset(key, data=np.asarray(arr))


def read_model_group(group: h5py.Group, path: object = None) -> Estimator:
    """Rebuild a model from an HDF5 group written by :func:`write_model_group`.

    Parameters
    ----------
    group : h5py.Group
        Open group.
    path : object, optional
        The file, named in errors.
    """
    name = group.attrs.get("model")
    name = name.decode() if isinstance(name, bytes) else name
    if name not in MODEL_NAMES:
        raise InputError(f"unknown model type {name!r}", path=path)
    settings = read_json_attr(group, "settings", path)
    # settings added after a file was written take the value that reproduces its fit
    settings = {**get_model_class(name).settings_before_added, **settings}
    model = get_model(name, **settings)
    model.obs_settings = read_json_attr(group, "obs_settings", path)
    model.extra = read_json_attr(group, "extra", path)
    if "params" not in group:
        raise InputError("model file lacks its 'params' group", path=path)
    model.set_arrays({k: group["params"][k][...] for k in group["params"]})
    return model


def get_model_class(name: str) -> type[Estimator]:
    """The class registered under ``name`` (see :data:`MODEL_NAMES`)."""
    if name not in MODEL_NAMES:
        raise InputError(f"unknown model '{name}'; choose from {sorted(MODEL_NAMES)}")
    module, cls = MODEL_NAMES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_model(name: str, **settings: Any) -> Estimator:
    """A new, unfitted model ``name`` with ``settings``.

    Parameters
    ----------
    name : str
        A registered model (:data:`MODEL_NAMES`: msigma, sdm, cnn1d, cnn2d).
    **settings
        Hyper-parameters (see each model's class); the others keep their defaults.
    """
    return get_model_class(name)(**settings)


def load_model(path: str | os.PathLike) -> Estimator:
    """Read a single-model file written by :meth:`Estimator.save`.

    Raises
    ------
    InputError
        If the file is missing, not HDF5, not a dynmass model, or incomplete.
    """
    with hdf5_read_errors(path), open_hdf5(path, kind="model") as fh:
        if not fh.attrs.get("complete", False):
            raise InputError("model file is incomplete (interrupted write?)", path=path)
        return read_model_group(fh, path)


def ensemble_predictions(models: Sequence[Estimator], obs: Observations,
                         path: object = None) -> np.ndarray:
    """``(n_models, n_views)`` log10 M200c [Msun/h] of every model, after checking that ``obs``
    was cut like each model's training views (``path`` is named in the error).

    Models that share a featurizer (:attr:`Estimator.featurizer`, same key) get its features
    computed once: the fold models of a run or a bundle all read the same KDE images.

    Parameters
    ----------
    models : sequence of Estimator
        Fitted models (e.g. the fold models of a run).
    obs : Observations
        Views to predict.
    path : object, optional
        The file ``obs`` came from, named in errors.
    """
    for m in models:
        m.check_obs(obs, path)
    features: dict[str, np.ndarray] = {}
    rows = []
    for m in models:
        fz = m.featurizer
        if fz is None:
            rows.append(np.asarray(m.predict(obs), float))
            continue
        if fz.key not in features:
            features[fz.key] = fz.transform(obs)
        rows.append(np.asarray(m.predict_features(features[fz.key]), float))
    return np.vstack(rows)
