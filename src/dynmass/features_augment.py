"""Augmentation of KDE features by mirroring the velocity axis (``v -> -v``).

The KDE grid is symmetric about ``v = 0``, so the features of a mirrored view are the features
of the view reversed along the velocity axis; Ho et al. 2019 double their training set this way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["augment_flip", "flip_v"]


def flip_v(features: np.ndarray) -> np.ndarray:
    """Mirror KDE features along the velocity axis (``v -> -v``; the last axis, 1D or 2D).

    The grid is symmetric about ``v = 0``, so the KDE of the mirrored view equals the reversed
    KDE exactly (Ho et al. 2019 double their training set this way).
    """
    return np.ascontiguousarray(np.asarray(features)[..., ::-1])


def augment_flip(features: np.ndarray, *targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Training set doubled by v-flipping: ``(concat(X, flip(X)), concat(t, t), ...)``.

    Parameters
    ----------
    features : numpy.ndarray
        KDEs, shape ``(n, ...)`` with v on the last axis.
    *targets : numpy.ndarray
        Per-view arrays (labels, weights, halo ids) repeated for the mirrored copies.
    """
    out = [np.concatenate([features, flip_v(features)], axis=0)]
    out += [np.concatenate([t, t], axis=0) for t in targets]
    return tuple(out)
