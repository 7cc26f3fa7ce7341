"""Featurizers: what a model reads from a view, as one object with one cache key.

A featurizer turns :class:`~dynmass.observations.Observations` into a feature array, one row
per view, and names its output by :attr:`KDEFeaturizer.key`: two models with the same key read
the same features, so an ensemble (the fold models of a bundle) computes them once.

Examples
--------
>>> from dynmass.featurizers import KDEFeaturizer
>>> from dynmass.testing.worlds import evrard_views
>>> fz = KDEFeaturizer("2d")
>>> fz.key
'kde2d:n_bins=48:bandwidth=0.25:v2'
>>> fz.transform(evrard_views(3, 1, seed=0)).shape  # views, R bins, v bins
(3, 48, 48)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from dynmass.errors import InputError
from dynmass.features_cache import cached_features
from dynmass.features_grid import BANDWIDTH, FEATURE_VERSION, N_BINS
from dynmass.observations import Observations

__all__ = ["KDEFeaturizer"]


@dataclass(frozen=True)
class KDEFeaturizer:
    """Gaussian KDE images of each view (Ho et al. 2019, ApJ 887, 25).

    Parameters
    ----------
    kind : {"1d", "2d"}
        ``"1d"``: density of the line-of-sight velocity v [km/s] on ``n_bins`` bins over
        [-vcut, vcut] (:func:`dynmass.features_kde1d.kde1d`); ``"2d"``: joint density of projected
        radius R [comoving Mpc/h] over [0, aperture] and v (:func:`dynmass.features.kde2d`).
    n_bins : int
        Bins per axis.
    bandwidth : float
        Bandwidth factor of scipy's ``gaussian_kde`` (times the sample covariance).
    """

    kind: Literal["1d", "2d"]
    n_bins: int = N_BINS
    bandwidth: float = BANDWIDTH

    def __post_init__(self) -> None:
        if self.kind not in ("1d", "2d"):
            raise InputError(f"feature kind must be '1d' or '2d', got {self.kind!r}")

    @property
    def key(self) -> str:
        """Identity of the features this featurizer makes (kind, bins, bandwidth, version)."""
        return (f"kde{self.kind}:n_bins={int(self.n_bins)}:bandwidth={float(self.bandwidth):g}"
                f":v{FEATURE_VERSION}")

    def get_params(self) -> dict[str, Any]:
        """The settings, as a dict (scikit-learn style)."""
        return asdict(self)

    def transform(self, obs: Observations, cache_dir: str | os.PathLike | None = None,
                  key: str = "") -> np.ndarray:
        """Feature images of every view of ``obs`` (float32, one per view).

        Parameters
        ----------
        obs : Observations
            Views.
        cache_dir : str or os.PathLike, optional
            Disk cache folder (:func:`dynmass.features_cache.cached_features`); None: no cache.
        key : str
            Identity of the data for the cache (e.g. the observations file's sha256).
        """
        return cached_features(obs, self.kind, n_bins=int(self.n_bins),
                               bandwidth=float(self.bandwidth), cache_dir=cache_dir, key=key)
