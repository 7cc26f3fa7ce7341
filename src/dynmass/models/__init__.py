"""Mass estimators behind one interface (:class:`dynmass.models.base.Estimator`).

``msigma`` (M-sigma power law), ``sdm`` (support distribution machine-like distribution
regression), ``cnn1d`` and ``cnn2d`` (Ho et al. 2019). :func:`get_model` builds one by name,
:func:`load_model` reads a saved model file.
"""

from dynmass.models.base import MODEL_NAMES, Estimator, get_model, load_model

__all__ = ["Estimator", "MODEL_NAMES", "get_model", "load_model"]
