"""Disk cache of KDE features: one ``.npy`` file per feature array, keyed by what defines it.

:func:`cached_features` computes the KDEs of :mod:`dynmass.features` once and stores them as
``<cache_dir>/kde<kind>_<hash16>.npy`` with a JSON sidecar of the settings;
:func:`feature_cache_key` is the SHA-256 of everything the array depends on (data identity,
kind, bins, bandwidth, aperture, vcut, view and galaxy counts, :data:`FEATURE_VERSION`, the
covariance floor), so a changed setting or a newer feature definition never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from dynmass._io import atomic_path, atomic_write_json
from dynmass.errors import InputError
from dynmass.features_grid import BANDWIDTH, FEATURE_VERSION, N_BINS, SIGMA_FLOOR_BINS
from dynmass.observations import Observations

__all__ = ["cached_features", "feature_cache_key"]


def feature_cache_key(
    obs: Observations, kind: str, n_bins: int, bandwidth: float, key: str
) -> str:
    """SHA-256 of everything that defines a feature array (see :func:`cached_features`).

    Parameters
    ----------
    obs : Observations
        Views; their aperture (comoving Mpc/h), vcut (km/s), number of views and number of
        galaxies enter the key.
    kind : {"1d", "2d"}
        Feature kind.
    n_bins : int
        Bins per axis.
    bandwidth : float
        Bandwidth factor.
    key : str
        Identity of the data (e.g. the observations file's sha256).

    Returns
    -------
    str
        64 hexadecimal digits; also covers :data:`FEATURE_VERSION` and
        :data:`SIGMA_FLOOR_BINS`.
    """
    record = {
        "key": str(key),
        "kind": kind,
        "n_bins": int(n_bins),
        "bandwidth": float(bandwidth),
        "aperture": obs.aperture,
        "vcut": obs.vcut,
        "n_views": obs.n_views,
        "n_rows": int(obs.offsets[-1]),
        "feature_version": FEATURE_VERSION,
        "sigma_floor_bins": SIGMA_FLOOR_BINS,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cached_features(
    obs: Observations,
    kind: Literal["1d", "2d"],
    n_bins: int = N_BINS,
    bandwidth: float = BANDWIDTH,
    cache_dir: str | os.PathLike | None = None,
    key: str = "",
) -> np.ndarray:
    """KDE features of ``obs``, read from a disk cache when present, computed and stored if not.

    The cache file ``<cache_dir>/kde<kind>_<hash16>.npy`` is keyed by a SHA-256 of ``key``
    (e.g. the observations file's sha256), ``kind``, ``n_bins``, ``bandwidth``, aperture,
    vcut, the number of views and galaxies and :data:`FEATURE_VERSION`; a JSON sidecar records
    those settings. Files are written atomically; an unreadable or mis-shaped cache file is
    recomputed and replaced.

    Parameters
    ----------
    obs : Observations
        Views.
    kind : {"1d", "2d"}
        :func:`~dynmass.features.kde1d` or :func:`~dynmass.features.kde2d`.
    n_bins : int
        Bins per axis.
    bandwidth : float
        Bandwidth factor.
    cache_dir : path, optional
        Cache folder; ``None`` disables caching.
    key : str
        Identity of the data (e.g. the observations file's sha256). An empty key hashes the
        galaxy arrays themselves.

    Returns
    -------
    numpy.ndarray
        As :func:`~dynmass.features.kde1d` or :func:`~dynmass.features.kde2d`.
    """
    if kind not in ("1d", "2d"):
        raise InputError(f"feature kind must be '1d' or '2d', got {kind!r}")
    # The KDEs are looked up on dynmass.features at call time: that module imports this one
    # (a top-level import would be circular), and its kde1d / kde2d are the stage's public ones.
    from dynmass import features

    func = features.kde1d if kind == "1d" else features.kde2d
    if cache_dir is None:
        return func(obs, n_bins, bandwidth)
    if not key:
        h = hashlib.sha256()
        for arr in (obs.R, obs.v, obs.offsets):
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        key = "data:" + h.hexdigest()
    digest = feature_cache_key(obs, kind, n_bins, bandwidth, key)
    path = Path(cache_dir) / f"kde{kind}_{digest[:16]}.npy"
    shape = (obs.n_views, n_bins) if kind == "1d" else (obs.n_views, n_bins, n_bins)
    if path.exists():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == shape and arr.dtype == np.float32:
                return arr
        except (OSError, ValueError):
            pass
    arr = func(obs, n_bins, bandwidth)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    atomic_write_json(
        path.with_suffix(".json"),
        {"key": key, "kind": kind, "n_bins": n_bins, "bandwidth": bandwidth,
         "aperture": obs.aperture, "vcut": obs.vcut, "n_views": obs.n_views,
         "feature_version": FEATURE_VERSION, "sha256": digest},
    )
    return arr
