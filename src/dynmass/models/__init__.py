"""Mass estimators behind one interface (:class:`dynmass.models.base.Estimator`).

``msigma`` (M-sigma power law), ``sdm`` (support distribution machine-like distribution
regression), ``cnn1d`` and ``cnn2d`` (Ho et al. 2019), ``deepset`` (a Deep Sets network on
the member list, :mod:`~dynmass.models.deepset` with :mod:`~dynmass.models.setnet`), and the
classical estimators
``gapper_virial``, ``gapper_pme``, ``clip_virial``, ``clip_pme``, ``gapper_msigma`` and
``caustic`` (interloper removal, then a virial, projected-mass, M-sigma or caustic mass).
:func:`get_model` builds one by name, :func:`load_model` reads a saved model file.

Modules: :mod:`~dynmass.models.base` (the interface and file format),
:mod:`~dynmass.models.msigma`, :mod:`~dynmass.models.sdm` (the estimator) with
:mod:`~dynmass.models.divergence` (k-NN divergences between views), :mod:`~dynmass.models.cnn`
(the estimators) with :mod:`~dynmass.models.networks` (architectures),
:mod:`~dynmass.models.epochs` (the training loop) and :mod:`~dynmass.models.torch_runtime`
(devices, threads, checkpoints), :mod:`~dynmass.models.classical` and
:mod:`~dynmass.models.caustic` (the classical estimators) with
:mod:`~dynmass.models.interlopers` (shifting gapper, sigma clipping).
"""

from dynmass.models.base import MODEL_NAMES, Estimator, get_model, load_model

__all__ = ["Estimator", "MODEL_NAMES", "get_model", "load_model"]
