"""DeepSet: a set model on member lists (Deep Sets, Zaheer et al. 2017, arXiv:1703.06114).

Reads each view's galaxies one by one, without binning: ``R / aperture`` and ``v / vcut`` of
every galaxy (:class:`~dynmass.features_members.MemberListFeaturizer`: padded, masked lists of
at most ``n_max`` galaxies; larger views keep a seeded random subset), a per-galaxy network
``phi``, the *mean* of ``phi`` over the view's galaxies and a network ``rho`` on that mean
(:class:`~dynmass.models.setnet.DeepSetNet`). The output is ``log10 M200c`` [Msun/h], scaled
to [0, 1] with the training set's range, like the CNNs. For member-list models of cluster
masses see Wang & Thiele 2025 (arXiv:2507.20378).

Design choices:

* **No richness.** The number of galaxies is not an input and the pooling is a masked mean, so
  the summary does not grow with the number of galaxies a survey put in the cylinder and is
  unchanged in expectation when a random fraction of them is observed (the model must not
  weigh a cluster by the survey's sampling). The mean alone is not enough: seen from the true
  centre, the central galaxy sits at ``R = v = 0`` exactly and a sharp ``phi`` there averages
  to ``1 / N``. Trained on complete views (``member_keep=[1, 1]``) the set model may learn
  that cue (``make set-dropout``, ``docs/set_member_dropout/``: one fit of three did; it read
  10^14-10^15 Msun/h clusters to 0.062 dex from the true centre but +0.14 dex high from centres
  estimated from the galaxies, as ``predict`` sees real clusters, and at sampling rate 0.25
  views that kept their central moved -0.44 dex, those that lost it +0.13). **Member
  dropout** (``member_keep``, default a keep probability log-uniform in 0.25-1 per view and
  step) takes the cue away: 0.085-0.092 dex from the true centre and +0.008 to +0.011 dex
  bias with 0.104-0.114 dex scatter from estimated centres, in all three fits. On the N-body
  engine (``make set-dropout-nbody``) every fit without dropout learned the cue and read
  clusters +0.22 dex high from estimated centres; with dropout -0.025 to +0.023.
* **Optional inputs** (hooks, empty by default): extra per-galaxy columns
  (``galaxy_columns``; the observations carry none today) and per-view context columns
  (``context``: columns of ``obs.clusters``, e.g. the per-view draws ``survey_sampling_rate``
  of a domain-randomised survey, or the survey model's inputs by name, ``sampling_rate``,
  ``completeness_edge``, ``selection_limit``, ``velocity_error``, ``redshift``, read as
  :mod:`dynmass.survey_inputs` reads them) given to ``rho`` beside the mean. Both are standardised with the training views' mean and standard
  deviation (stored with the weights); a model that uses them needs the same columns at
  prediction time.
* **Training** is :class:`~dynmass.models.cnn.TorchEstimator`'s: the same halo-split
  validation, early stopping, per-epoch checkpoints with exact resumption, DDP under
  ``torchrun`` and :func:`dynmass.train.cross_validate` folds as the CNNs. The ``v -> -v``
  augmentation flips the sign of the velocity channel.
* **Prediction** sorts the views by their number of galaxies and runs them in batches, each cut
  to its largest view; ``phi`` runs on the galaxies alone, so the cost follows the galaxies,
  not the padding.

Examples
--------
>>> from dynmass.models.deepset import DeepSet
>>> from dynmass.testing.worlds import evrard_views
>>> train, test = evrard_views(12, 2, seed=0), evrard_views(3, 1, seed=1)
>>> model = DeepSet(epochs=1, batch_size=8, val_fraction=0.0, phi_hidden=[16, 16],
...                 rho_hidden=[16]).fit(train, seed=0)
>>> pred = model.predict(test)
>>> pred.shape, len(model.extra["history"]), model.featurizer.key
((3,), 1, 'members:n_max=256:seed=0:galaxy=:context=:v1')
>>> bool(((pred > 13) & (pred < 16)).all())  # log10 M200c [Msun/h]
True
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from torch import nn

from dynmass.errors import InputError
from dynmass.features_members import N_MAX, MemberListFeaturizer, n_over
from dynmass.models.cnn import TorchEstimator
from dynmass.models.setnet import DeepSetNet
from dynmass.observations import Observations

__all__ = ["DeepSet"]

_DEEPSET_DEFAULTS: dict[str, Any] = {
    # epochs, batch_size, patience: tuned on one 300 Mpc/h mock (210 views, 5 folds): batches
    # of 50 (the CNNs') gave too few steps per epoch (scatter 0.27 dex, fits ending at the
    # patience limit while still learning); batches of 16 and patience 15: 0.14-0.17 dex.
    # lr 3e-3 was worse (0.25 dex).
    "epochs": 120,  # most epochs; early stopping ends most fits after 30-70
    "batch_size": 16,  # views per Adam step
    "lr": 1e-3,  # Adam learning rate
    "dropout": 0.0,  # after each hidden layer of rho
    "val_fraction": 0.1,  # fraction of training halos held out for early stopping
    "patience": 15,  # epochs without validation improvement before stopping (0: never stop)
    "n_max": N_MAX,  # most galaxies per view (larger views: seeded random subset)
    "subset_seed": 0,  # seed of those subsets
    # widths 32 rather than 64: on the tuning mock 64 gave 0.152 dex against 0.164 (mean of
    # two seeds each, spread ~0.01) at 2.5x the prediction cost; 32 keeps prediction near
    # 10^4 views/s on one busy CPU core (benchmarks/bench_deepset.py)
    "phi_hidden": [32, 32, 32],  # widths of the per-galaxy network
    "rho_hidden": [32, 32],  # hidden widths of the network on the pooled mean
    "pool_norm": True,  # layer-normalise the pooled mean (avoids stalled fits)
    # member dropout while training: per-view keep probability, log-uniform in this range
    # (DeepSetNet); without it a set model reads richness from the central galaxy at R = v = 0
    "member_keep": [0.25, 1.0],
    "galaxy_columns": [],  # extra per-galaxy inputs (attributes of Observations)
    "context": [],  # per-view inputs (columns of obs.clusters)
    "flip_v": True,  # double the training set by mirroring v -> -v
    "device": "auto",  # auto | cpu | cuda | mps
    "amp": "auto",  # auto | off | bf16 | fp16 (only used on CUDA)
    "num_threads": 1,  # torch CPU threads (see the CNNs' note on busy 2-core machines)
    "predict_batch_size": 1024,  # views per forward pass at prediction time
}


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


class DeepSet(TorchEstimator):
    """Deep Sets on each view's member list (module docs).

    Parameters
    ----------
    epochs : int
        Most training epochs.
    batch_size : int
        Views per optimiser step; under DDP the global batch.
    lr : float
        Adam learning rate.
    dropout : float
        Dropout probability after each hidden layer of rho.
    val_fraction : float
        Fraction of the training halos held out for early stopping (0: train all ``epochs``).
    patience : int
        Stop after this many epochs without a lower validation loss (0: never stop early).
    n_max : int
        Most galaxies read per view; a view with more keeps a seeded random subset.
    subset_seed : int
        Seed of those subsets.
    phi_hidden : list of int
        Widths of the per-galaxy network's layers.
    rho_hidden : list of int
        Hidden widths of the network on the pooled mean (and context).
    pool_norm : bool
        Layer-normalise the pooled mean (:class:`~dynmass.models.setnet.DeepSetNet`).
    member_keep : list of float
        ``[lo, hi]``: while training, each view keeps each galaxy with a probability drawn
        log-uniformly in ``[lo, hi]`` (member dropout, :class:`~dynmass.models.setnet.DeepSetNet`;
        ``[1, 1]``: off).
    galaxy_columns : list of str
        Extra per-galaxy inputs (arrays of the observations; none exist today).
    context : list of str
        Per-view inputs, columns of ``obs.clusters`` (e.g. ``survey_sampling_rate``).
    flip_v : bool
        Double the training set by mirroring ``v -> -v``.
    device : {"auto", "cpu", "cuda", "mps"}
        Where to train and predict.
    amp : {"auto", "off", "bf16", "fp16"}
        Mixed precision on CUDA (ignored elsewhere).
    num_threads : int or None
        torch CPU threads while fitting and predicting.
    predict_batch_size : int
        Views per forward pass when predicting.
    """

    name: ClassVar[str] = "deepset"
    defaults: ClassVar[dict[str, Any]] = dict(_DEEPSET_DEFAULTS)
    # models saved before member dropout existed were trained without it
    settings_before_added: ClassVar[dict[str, Any]] = {"member_keep": [1.0, 1.0]}
    # a padded batch holds views x slots x width activations; 1024 views keep the validation
    # pass near 100 MB at the default sizes
    eval_chunk: ClassVar[int] = 1024

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        n_extra = len(self.settings["galaxy_columns"]) + len(self.settings["context"])
        self._shift = np.zeros(n_extra, dtype=np.float32)
        self._scale = np.ones(n_extra, dtype=np.float32)

    def _check_settings(self) -> None:
        """Raise :class:`InputError` for a setting outside its sense."""
        s = self.settings
        for key, lo in (("epochs", 1), ("batch_size", 1), ("patience", 0), ("n_max", 1),
                        ("predict_batch_size", 1), ("num_threads", 1), ("subset_seed", 0)):
            v = s[key]
            if key == "num_threads" and v is None:
                continue
            if not _is_int(v) or v < lo:
                raise InputError(f"model 'deepset': {key}={v!r} must be an integer >= {lo}",
                                 column=key)
        for key, ok, what in (("lr", lambda x: 0 < x < np.inf, "> 0 and finite"),
                              ("dropout", lambda x: 0 <= x < 1, "in [0, 1)"),
                              ("val_fraction", lambda x: 0 <= x < 1, "in [0, 1)")):
            v = s[key]
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not ok(v):
                raise InputError(f"model 'deepset': {key}={v!r} must be {what}", column=key)
        for key, need in (("phi_hidden", 1), ("rho_hidden", 0)):
            v = s[key]
            if not isinstance(v, (list, tuple)) or len(v) < need or \
                    not all(_is_int(w) and w >= 1 for w in v):
                raise InputError(f"model 'deepset': {key}={v!r} must be a list of at least "
                                 f"{need} positive integers", column=key)
            s[key] = [int(w) for w in v]
        keep = s["member_keep"]
        if not isinstance(keep, (list, tuple)) or len(keep) != 2 or \
                not all(isinstance(k, (int, float, np.number)) and not isinstance(k, bool)
                        for k in keep) or not 0 < keep[0] <= keep[1] <= 1:
            raise InputError(f"model 'deepset': member_keep={keep!r} must be [lo, hi] with "
                             "0 < lo <= hi <= 1", column="member_keep")
        s["member_keep"] = [float(k) for k in keep]
        if not isinstance(s["pool_norm"], bool):
            raise InputError(f"model 'deepset': pool_norm={s['pool_norm']!r} must be true or "
                             "false", column="pool_norm")
        for key in ("galaxy_columns", "context"):
            v = s[key]
            if not isinstance(v, (list, tuple)) or not all(isinstance(c, str) for c in v):
                raise InputError(f"model 'deepset': {key}={v!r} must be a list of column names",
                                 column=key)
            s[key] = list(v)

    # -- inputs --------------------------------------------------------------------------

    @property
    def featurizer(self) -> MemberListFeaturizer:
        """The member lists this network reads (``n_max``, subset seed and extra columns)."""
        s = self.settings
        return MemberListFeaturizer(int(s["n_max"]), int(s["subset_seed"]),
                                    tuple(s["galaxy_columns"]), tuple(s["context"]))

    def _new_network(self) -> nn.Module:
        """A freshly initialised :class:`DeepSetNet` for these settings."""
        s = self.settings
        return DeepSetNet(2 + len(s["galaxy_columns"]), len(s["context"]), s["phi_hidden"],
                          s["rho_hidden"], float(s["dropout"]), bool(s["pool_norm"]),
                          s["member_keep"])

    def _as_input(self, X: np.ndarray) -> np.ndarray:
        """Member lists (float32) with the extra and context channels standardised."""
        X = np.asarray(X, dtype=np.float32)
        n_ch = self.featurizer.n_channels
        if X.ndim != 3 or X.shape[2] != n_ch:
            raise InputError(f"deepset expects member lists of shape (n_views, slots, {n_ch}), "
                             f"got {X.shape}")
        if len(self._shift):
            X = X.copy()
            X[..., 2:-1] = (X[..., 2:-1] - self._shift) / self._scale
        return X

    def _flip_v(self, X: np.ndarray) -> np.ndarray:
        """Member lists of the views mirrored ``v -> -v``: the velocity channel negated."""
        out = X.copy()
        out[..., 1] *= -1
        return out

    # -- fit / predict -------------------------------------------------------------------

    def fit(self, obs: Observations, *, seed: int = 0, features: np.ndarray | None = None,
            **kwargs: Any) -> DeepSet:
        """Train on every view of ``obs`` (log10 M200c labels from ``clusters/m200c``).

        The standardisation of the extra and context channels is taken from all views of
        ``obs`` (inputs only); then :meth:`TorchEstimator.fit` trains as for the CNNs.

        Parameters
        ----------
        obs : Observations
            Training views; ``m200c`` [Msun/h] must be finite and positive.
        seed : int
            Seed of the weight initialisation, validation split and shuffling.
        features : numpy.ndarray, optional
            Precomputed :attr:`featurizer` output for ``obs``.
        **kwargs
            ``progress``, ``checkpoint``, ``epoch_callback`` (see
            :meth:`TorchEstimator.fit`); others raise :class:`InputError`.

        Returns
        -------
        DeepSet
            ``self``, fitted.
        """
        X = self._features(obs, features)
        mask = X[..., -1] > 0.5
        extra = X[..., 2:-1][mask].astype(np.float64)  # (galaxies, channels)
        if extra.shape[1]:
            sd = extra.std(axis=0) if len(extra) else np.ones(extra.shape[1])
            self._shift = (extra.mean(axis=0) if len(extra) else sd * 0).astype(np.float32)
            self._scale = np.where(sd > 0, sd, 1.0).astype(np.float32)
        super().fit(obs, seed=seed, features=X, **kwargs)
        self.extra["n_views_over_n_max"] = n_over(obs, int(self.settings["n_max"]))
        return self

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] from member lists (views sorted by size, batched).

        Parameters
        ----------
        X : numpy.ndarray
            :attr:`featurizer` output, one member list per view.
        """
        X = np.asarray(X)
        if X.ndim != 3 or len(X) == 0:
            return super().predict_features(X)
        order = np.argsort((X[..., -1] > 0.5).sum(axis=1), kind="stable")
        out = np.empty(len(X), dtype=np.float64)
        out[order] = super().predict_features(X[order])
        return out

    # -- persistence ---------------------------------------------------------------------

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Network weights, the target range and the channel standardisation."""
        arrays = super().get_arrays()
        arrays["input_shift"] = self._shift.copy()
        arrays["input_scale"] = self._scale.copy()
        return arrays

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Rebuild the network and the standardisation from :meth:`get_arrays` output."""
        super().set_arrays(arrays)
        n_extra = len(self._shift)
        shift = np.asarray(arrays.get("input_shift", np.zeros(0)), dtype=np.float32)
        scale = np.asarray(arrays.get("input_scale", np.ones(0)), dtype=np.float32)
        if shift.shape != (n_extra,) or scale.shape != (n_extra,):
            raise InputError(f"deepset standardisation has {shift.shape} values, expected "
                             f"{n_extra}")
        self._shift, self._scale = shift, scale
