"""The CNN1D and CNN2D estimators of Ho et al. 2019 (ApJ 887, 25; arXiv:1902.05950), in PyTorch.

Both networks read a kernel density estimate (KDE) of a cluster view's galaxies
(:func:`dynmass.features.kde1d`, :func:`dynmass.features.kde2d`) and regress
``log10 M200c`` [Msun/h], scaled to [0, 1] with the training set's minimum and maximum. This
module holds the estimators (settings, inputs, ``fit``, ``predict``, saving); the architectures
are in :mod:`dynmass.models.networks` and the epoch loop in :mod:`dynmass.models.epochs`.

- **CNN1D**: KDE of ``v`` on ``n_bins`` bins over [-vcut, vcut] km/s, two convolutions along
  ``v`` and three dense layers.
- **CNN2D**: KDE of ``(R, v)`` on ``n_bins x n_bins`` bins; the R bins (over [0, aperture]
  comoving Mpc/h) are the input channels and the convolutions run along ``v``.

Training follows the paper: mean squared error, Adam (learning rate 1e-3), batches of 50, up
to 20 epochs, the training set doubled by mirroring ``v -> -v``. In addition (the paper trained
a fixed 20 epochs) a validation split of the training *halos* (all views of a halo on the same
side) stops training early when the validation loss has not improved for ``patience`` epochs,
and the weights of the best validation epoch are kept.

Extras for scale: ``device`` (``auto``/``cpu``/``cuda``/``mps``), mixed precision on CUDA
(``amp``: ``auto`` = bf16 where supported, else fp16 with a gradient scaler), PyTorch
DistributedDataParallel when a process group is initialised (``torchrun``; see
:mod:`dynmass.train`), and per-epoch checkpoints so an interrupted fit resumes exactly.

Examples
--------
A CNN1D trained for one epoch on a few toy views (Gaussian velocities with the Evrard et al.
2008 dispersion), small KDE images:

>>> from dynmass.models.cnn import CNN1D
>>> from dynmass.testing.worlds import evrard_views
>>> train, test = evrard_views(12, 2, seed=0), evrard_views(3, 1, seed=1)
>>> model = CNN1D(epochs=1, n_bins=16, batch_size=8, val_fraction=0.0).fit(train, seed=0)
>>> pred = model.predict(test)
>>> pred.shape, len(model.extra["history"]), model.extra["n_train_views"]
((3,), 1, 24)
>>> bool(((pred > 13) & (pred < 16)).all())  # log10 M200c [Msun/h]
True
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from dynmass.errors import InputError
from dynmass.features import BANDWIDTH, N_BINS
from dynmass.featurizers import KDEFeaturizer
from dynmass.folds import split_by_halo
from dynmass.models.base import Estimator
from dynmass.models.epochs import train_epochs
from dynmass.models.networks import build_network
from dynmass.models.torch_runtime import (
    _amp_dtype,
    _best_epoch,
    _dist,
    _fingerprint,
    _torch_runtime,
    resolve_device,
)
from dynmass.observations import Observations

log = logging.getLogger(__name__)

__all__ = ["CNN1D", "CNN2D", "TorchEstimator", "resolve_device", "build_network"]


_CNN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,  # Ho et al. 2019
    "batch_size": 50,  # Ho et al. 2019
    "lr": 1e-3,  # Adam learning rate, Ho et al. 2019
    "dropout": 0.25,  # Ho et al. 2019
    "val_fraction": 0.1,  # fraction of training halos held out for early stopping
    "patience": 8,  # epochs without validation improvement before stopping (0: never stop)
    "n_bins": N_BINS,  # KDE bins per axis, Ho et al. 2019
    "bandwidth": BANDWIDTH,  # scipy gaussian_kde bandwidth factor, Ho et al. 2019
    "flip_v": True,  # double the training set by mirroring v -> -v, Ho et al. 2019
    "device": "auto",  # auto | cpu | cuda | mps
    "amp": "auto",  # auto | off | bf16 | fp16 (only used on CUDA)
    # torch CPU threads during fit/predict (None: torch's choice). 1 by default: these networks
    # are small (batch 50), and on a busy 2-core machine 2 OpenMP threads made a CNN1D fit up to
    # 50x slower (benchmarks/bench_sdm.py notes); raise it on a quiet many-core machine.
    "num_threads": 1,
    "predict_batch_size": 8192,  # views per forward pass at prediction time
    # "nbins": the sum-1 KDE images are multiplied by n_bins (48), so a 1D image has mean pixel
    # 1 and each R row of a 2D image sums to 1 on average; "sum1": the paper's sum-1 images as
    # they are. A departure: with sum-1 48x48 images (pixels ~4e-4) CNN2D training sometimes
    # stalled at a constant prediction (seen on the toy world of tests/test_cnn.py).
    "input_scale": "nbins",
}


def _check_settings(name: str, s: dict[str, Any]) -> None:
    """Raise :class:`InputError` for a hyper-parameter outside its sense (instead of training
    zero epochs silently or failing deep inside torch)."""
    for key, lo in (("epochs", 1), ("batch_size", 1), ("patience", 0),
                    ("predict_batch_size", 1), ("num_threads", 1)):
        v = s[key]
        if key == "num_threads" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"model '{name}': {key}={v!r} must be an integer >= {lo}",
                             column=key)
    for key, ok, what in (("lr", lambda x: 0 < x < np.inf, "> 0 and finite"),
                          ("dropout", lambda x: 0 <= x < 1, "in [0, 1)"),
                          ("bandwidth", lambda x: 0 < x < np.inf, "> 0 and finite")):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not ok(v):
            raise InputError(f"model '{name}': {key}={v!r} must be {what}", column=key)
    if s["input_scale"] not in ("nbins", "sum1"):
        raise InputError(f"model '{name}': input_scale={s['input_scale']!r} must be 'nbins' or "
                         "'sum1'", column="input_scale")


# ----------------------------------------------------------------------------- estimators


class TorchEstimator(Estimator):
    """Shared training and prediction machinery of the KDE-input CNNs.

    Subclasses set :attr:`name` (the network kind) and :attr:`feature_kind` (the KDE images).
    Another input (e.g. the member lists of :class:`dynmass.models.deepset.DeepSet`) overrides
    :attr:`featurizer`, :meth:`_as_input`, :meth:`_check_settings`, :meth:`_new_network` and
    :meth:`_flip_v`; the fit (folds, early stopping, checkpoints, DDP) stays this one.

    Parameters
    ----------
    epochs : int
        Most training epochs (20 in the paper).
    batch_size : int
        Views per optimiser step (50 in the paper); under DDP the global batch, split over
        the processes.
    lr : float
        Adam learning rate (1e-3 in the paper).
    dropout : float
        Dropout probability (0.25 in the paper).
    val_fraction : float
        Fraction of the training halos (all their views) held out for early stopping; 0 trains
        the full ``epochs`` on everything and keeps the last weights.
    patience : int
        Stop after this many epochs without a lower validation loss (0: never stop early).
    n_bins : int
        KDE bins per axis (48 in the paper): ``v`` over [-vcut, vcut] km/s, ``R`` over
        [0, aperture] comoving Mpc/h.
    bandwidth : float
        KDE bandwidth factor (scipy ``gaussian_kde``'s ``bw_method``; 0.25 in the paper).
    flip_v : bool
        Double the training set by mirroring ``v`` (paper: yes).
    device : {"auto", "cpu", "cuda", "mps"}
        Where to train and predict.
    amp : {"auto", "off", "bf16", "fp16"}
        Mixed precision on CUDA (ignored elsewhere).
    num_threads : int or None
        torch CPU threads while fitting and predicting.
    predict_batch_size : int
        Views per forward pass when predicting.
    input_scale : {"nbins", "sum1"}
        ``"nbins"``: the sum-1 KDE images multiplied by ``n_bins`` (the default, a departure
        from the paper that keeps CNN2D from stalling); ``"sum1"``: the paper's images as they
        are.
    """

    defaults: ClassVar[dict[str, Any]] = dict(_CNN_DEFAULTS)
    #: Hooks understood by :meth:`fit` (``checkpoint``, ``progress``, ``epoch_callback``,
    #: ``features``); :mod:`dynmass.train` uses them when this is true.
    supports_checkpoint: ClassVar[bool] = True

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._check_settings()
        self._net: nn.Module | None = None
        self._y_range: np.ndarray | None = None  # (min, max) of training log10 M200c

    #: Views per forward pass of the validation loss during training.
    eval_chunk: ClassVar[int] = 8192

    def _check_settings(self) -> None:
        """Raise :class:`InputError` for a setting outside its sense."""
        _check_settings(self.name, self.settings)

    def _new_network(self) -> nn.Module:
        """A freshly initialised network for these settings (uses torch's global RNG)."""
        return build_network(self.name, int(self.settings["n_bins"]),
                             float(self.settings["dropout"]))

    def _flip_v(self, X: np.ndarray) -> np.ndarray:
        """Network inputs of the views mirrored ``v -> -v``: KDE images reversed along v."""
        return X[..., ::-1]

    # -- inputs --------------------------------------------------------------------------

    #: Feature kind of :func:`dynmass.features.cached_features` ("1d" or "2d").
    feature_kind: ClassVar[str] = ""

    def compute_features(self, obs: Observations, cache_dir: str | os.PathLike | None = None,
                         key: str = "") -> np.ndarray:
        """KDE input images of every view of ``obs`` (float32).

        Parameters
        ----------
        obs : Observations
            Views.
        cache_dir : path, optional
            Disk cache folder (see :func:`dynmass.features.cached_features`); None: no cache.
        key : str
            Identity of the data for the cache (e.g. the observations file's sha256).

        Returns
        -------
        numpy.ndarray
            CNN1D: :func:`dynmass.features.kde1d` ``(n_views, n_bins)``; CNN2D:
            :func:`dynmass.features.kde2d` ``(n_views, n_bins [R], n_bins [v])``.
        """
        return self.featurizer.transform(obs, cache_dir=cache_dir, key=key)

    @property
    def featurizer(self) -> KDEFeaturizer:
        """The KDE images this network reads (kind, bins and bandwidth from its settings)."""
        return KDEFeaturizer(self.feature_kind, int(self.settings["n_bins"]),
                             float(self.settings["bandwidth"]))

    def _as_input(self, X: np.ndarray) -> np.ndarray:
        """``(n, channels, length)`` float32 array the network reads."""
        X = np.asarray(X, dtype=np.float32)
        n_bins = int(self.settings["n_bins"])
        if self.name == "cnn1d":
            if X.ndim != 2 or X.shape[1] != n_bins:
                raise InputError(f"cnn1d expects features of shape (n_views, {n_bins}), "
                                 f"got {X.shape}")
            return X[:, None, :] * self._input_factor()
        if X.ndim != 3 or X.shape[1:] != (n_bins, n_bins):
            raise InputError(f"cnn2d expects features of shape (n_views, {n_bins}, {n_bins}), "
                             f"got {X.shape}")
        return X * self._input_factor()

    def _input_factor(self) -> np.float32:
        """Factor applied to the sum-1 KDE images (see the ``input_scale`` setting)."""
        if self.settings["input_scale"] == "sum1":
            return np.float32(1.0)
        return np.float32(self.settings["n_bins"])

    def _features(self, obs: Observations, features: np.ndarray | None) -> np.ndarray:
        X = self.compute_features(obs) if features is None else np.asarray(features)
        if len(X) != obs.n_views:
            raise InputError(f"{len(X)} feature rows for {obs.n_views} views")
        return X

    # -- fit -----------------------------------------------------------------------------

    def fit(
        self,
        obs: Observations,
        *,
        seed: int = 0,
        features: np.ndarray | None = None,
        progress: bool = False,
        checkpoint: str | os.PathLike | None = None,
        epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
        **kwargs: Any,
    ) -> TorchEstimator:
        """Train on every view of ``obs`` (log10 M200c labels from ``clusters/m200c``).

        Parameters
        ----------
        obs : Observations
            Training views; ``m200c`` [Msun/h] must be finite and positive.
        seed : int
            Seed of the weight initialisation, validation split, shuffling and dropout.
        features : numpy.ndarray, optional
            Precomputed :meth:`compute_features` output for ``obs`` (saves recomputing).
        progress : bool
            Show a tqdm bar with the loss per epoch (rank 0 only).
        checkpoint : path, optional
            File for a per-epoch checkpoint (written atomically with ``torch.save``). If it
            exists and matches this fit, training resumes from it exactly; the caller deletes
            it when the fit is saved.
        epoch_callback : callable, optional
            ``f(epoch, record)`` after every epoch (``record``: epoch, train_loss, val_loss,
            seconds).
        **kwargs
            Not accepted: any other option raises :class:`InputError`.

        Returns
        -------
        TorchEstimator
            ``self``, fitted.
        """
        if kwargs:
            raise InputError(f"unknown fit options for model '{self.name}': {sorted(kwargs)}")
        self.remember_obs_settings(obs)
        y = obs.log10_m200c()
        bad = ~np.isfinite(y)
        if bad.any():
            raise InputError(f"{int(bad.sum())} views without a finite positive mass; "
                             "cannot train on them", column="clusters/m200c")
        X = self._as_input(self._features(obs, features))
        s = self.settings
        device = resolve_device(s["device"], strict=True)
        amp = _amp_dtype(s["amp"], device)
        train_idx, val_idx = split_by_halo(obs.clusters["halo_id"], float(s["val_fraction"]), seed)
        y_min, y_max = float(y.min()), float(y.max())
        if not y_max > y_min:
            y_max = y_min + 1.0
        self._y_range = np.array([y_min, y_max])
        t = ((y - y_min) / (y_max - y_min)).astype(np.float32)
        Xtr, ttr = X[train_idx], t[train_idx]
        if s["flip_v"]:
            Xtr = np.concatenate([Xtr, self._flip_v(Xtr)])
            ttr = np.concatenate([ttr, ttr])
        fingerprint = _fingerprint(self.name, s, seed, y, obs.clusters["halo_id"], X.shape)
        t0 = time.perf_counter()
        with _torch_runtime(s["num_threads"]):
            cuda_devices = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda_devices):
                net, history, resumed_seconds = train_epochs(
                    self.name, s, Xtr, ttr, X[val_idx], t[val_idx], device, amp, seed,
                    progress, None if checkpoint is None else Path(checkpoint), fingerprint,
                    epoch_callback, build=self._new_network, eval_chunk=self.eval_chunk,
                )
                self._net = net
                self.extra["resumed_seconds"] = resumed_seconds
        self.extra.update({
            "history": history,
            "best_epoch": _best_epoch(history),
            "n_train_views": int(len(train_idx)),
            "n_val_views": int(len(val_idx)),
            "n_train_halos": int(len(np.unique(obs.clusters["halo_id"][train_idx]))),
            "fit_seconds_this_session": time.perf_counter() - t0,
            "resumed": bool(self.extra.get("resumed_seconds", 0.0) > 0),
            "device": str(device),
            "amp": None if amp is None else str(amp).replace("torch.", ""),
            "world_size": _dist()[2],
        })
        return self

    # -- predict -------------------------------------------------------------------------

    def predict(self, obs: Observations, *, features: np.ndarray | None = None) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] of every view of ``obs``.

        Parameters
        ----------
        obs : Observations
            Views to predict; must have the training data's aperture and vcut.
        features : numpy.ndarray, optional
            Precomputed :meth:`compute_features` output for ``obs``.
        """
        self.check_obs(obs)
        return self.predict_features(self._features(obs, features))

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] from KDE images (batched, inference mode).

        Parameters
        ----------
        X : numpy.ndarray
            :meth:`compute_features` output, one row (image) per view.
        """
        if self._net is None or self._y_range is None:
            raise InputError(f"model '{self.name}' is not fitted")
        X = self._as_input(X)
        s = self.settings
        device = resolve_device(s["device"], strict=False)
        amp = _amp_dtype(s["amp"], device)
        net = self._net.to(device).eval()
        chunk = max(1, int(s["predict_batch_size"]))
        out = np.empty(len(X), dtype=np.float64)
        with _torch_runtime(s["num_threads"], deterministic=False), torch.inference_mode():
            for start in range(0, len(X), chunk):
                xb = torch.from_numpy(np.ascontiguousarray(X[start:start + chunk])).to(device)
                with torch.autocast(device_type=device.type, dtype=amp or torch.float32,
                                    enabled=amp is not None):
                    pred = net(xb).squeeze(1)
                out[start:start + len(xb)] = pred.float().cpu().numpy()
        y_min, y_max = self._y_range
        return y_min + out * (y_max - y_min)

    # -- persistence ---------------------------------------------------------------------

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Network weights (``net.<state_dict key>``, float32) and the target range."""
        if self._net is None or self._y_range is None:
            raise InputError(f"model '{self.name}' is not fitted; nothing to save")
        arrays = {f"net.{k}": v.detach().cpu().numpy()
                  for k, v in self._net.state_dict().items()}
        arrays["y_range"] = np.asarray(self._y_range, dtype=np.float64)
        return arrays

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the network from :meth:`get_arrays` output."""
        net = self._new_network()
        state = {k[4:]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()
                 if k.startswith("net.")}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"weights do not fit the {self.name} network: {exc}") from exc
        net.eval()
        self._net = net
        self._y_range = np.asarray(arrays["y_range"], dtype=np.float64)


class CNN1D(TorchEstimator):
    """1D CNN on the KDE of line-of-sight velocities (Ho et al. 2019); see module docs."""

    name: ClassVar[str] = "cnn1d"
    feature_kind: ClassVar[str] = "1d"


class CNN2D(TorchEstimator):
    """CNN on the KDE of projected radius [Mpc/h] and velocity [km/s] (Ho et al. 2019), R bins
    as channels and convolutions along v; see module docs."""

    name: ClassVar[str] = "cnn2d"
    feature_kind: ClassVar[str] = "2d"
