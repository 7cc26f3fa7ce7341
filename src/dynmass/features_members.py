"""Member lists: each view's galaxies as a padded, masked array (the input of set models).

No binning: every galaxy of a view keeps its own projected radius ``R`` [comoving Mpc/h] and
line-of-sight velocity ``v`` [km/s], scaled to ``R / aperture`` in [0, 1] and ``v / vcut`` in
[-1, 1]. :class:`MemberListFeaturizer` writes them into one float32 array of shape
``(n_views, width, n_channels)``; the channels of a slot are, in order:

1. ``R / aperture`` and ``v / vcut``;
2. the optional extra per-galaxy columns (``galaxy_columns``, raw values). Observations carry
   no per-galaxy property besides ``R`` and ``v`` today (``is_member`` and ``galaxy_index`` are
   truth and bookkeeping, refused); a per-galaxy array added to
   :class:`~dynmass.observations.Observations` as an attribute (e.g. a stellar mass) can be
   named here without other changes;
3. the optional per-view context columns (``context``: columns of ``obs.clusters``, e.g. the
   per-view survey draws ``survey_sampling_rate``, or the names of the survey model's inputs,
   :data:`dynmass.survey_inputs.SURVEY_INPUTS`: ``sampling_rate`` (as log10),
   ``completeness_edge``, ``selection_limit``, ``velocity_error`` and ``redshift`` (the
   snapshot's), read as the survey-aware posterior reads them), repeated in *every* slot,
   padding included, so a set model reads them from slot 0 even for an empty view. Truth columns
   (``m200c``, ``r200c``, ``n_members_true``, the centring errors ``center_dR`` /
   ``center_dv``, ids, lines of sight) are refused. ``n_gal`` is not
   refused but defeats the purpose of a set model that must not weigh a cluster by how many
   galaxies its survey observed;
4. a mask, 1 for a galaxy and 0 for padding.

A view's galaxies fill its first slots (in their file order); ``width`` is
``min(n_max, largest view)``. **Views with more than** ``n_max`` **galaxies keep a random
subset of** ``n_max`` **of them**: this loses information for the richest views (count them
with :func:`n_over`; 18% of the views of a 300 Mpc/h mock with ``--flat-mass-function`` have
more than 256, up to ~700). The subset is seeded by ``seed`` and the galaxies themselves (each
galaxy's key is a hash of ``seed``, ``R`` and ``|v|``; the ``n_max`` smallest keys are kept),
so it does not depend on the order of the galaxies or of the views, the same view always gives
the same subset, and the mirrored view ``v -> -v`` the mirrored subset.

Set models on such lists: Zaheer et al. 2017 (Deep Sets, NeurIPS, arXiv:1703.06114); for
cluster masses from member lists, Wang & Thiele 2025 (arXiv:2507.20378).

Examples
--------
>>> from dynmass.features_members import MemberListFeaturizer, n_over
>>> from dynmass.testing.worlds import evrard_views
>>> obs = evrard_views(3, 1, seed=0)
>>> fz = MemberListFeaturizer(n_max=64)
>>> fz.key
'members:n_max=64:seed=0:galaxy=:context=:v1'
>>> X = fz.transform(obs)
>>> X.shape  # views, slots (the largest view's 63 galaxies), (R/aperture, v/vcut, mask)
(3, 63, 3)
>>> X[..., -1].sum(axis=1).tolist() == [min(int(n), 64) for n in obs.n_gal]
True
>>> int(n_over(obs, 64)) == int((obs.n_gal > 64).sum())
True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_path, atomic_write_json
from dynmass.errors import InputError
from dynmass.observations import Observations
from dynmass.survey_inputs import SURVEY_INPUTS, survey_columns, survey_of_views

__all__ = ["MEMBER_FEATURE_VERSION", "N_MAX", "MemberListFeaturizer", "member_arrays", "n_over"]

#: Version of the member-list layout; part of every key and cache file name.
MEMBER_FEATURE_VERSION = 1
#: Default most galaxies kept per view.
N_MAX = 256
#: Per-galaxy arrays of Observations that are truth or bookkeeping, never model inputs.
TRUTH_GALAXY_COLUMNS = frozenset({"is_member", "galaxy_index", "R", "v", "offsets"})
#: Per-view columns that are truth or identifiers, never model inputs.
TRUTH_CLUSTER_COLUMNS = frozenset({"halo_id", "halo_index", "los", "los_x", "los_y", "los_z",
                                   "m200c", "r200c", "n_members_true", "center_dR",
                                   "center_dv"})


def n_over(obs: Observations, n_max: int) -> int:
    """Number of views of ``obs`` with more than ``n_max`` galaxies (they keep a subset).

    Parameters
    ----------
    obs : Observations
        Views.
    n_max : int
        Most galaxies kept per view.
    """
    return int((obs.n_gal > int(n_max)).sum())


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014) of unsigned 64-bit integers, elementwise."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _subset_rows(R: np.ndarray, v: np.ndarray, offsets: np.ndarray, n_max: int,
                 seed: int) -> np.ndarray:
    """Boolean mask of the galaxy rows kept: all of a view with <= ``n_max`` galaxies, a
    seeded random ``n_max`` of a larger one.

    Each galaxy gets a pseudo-random key, a hash of ``seed`` and its own ``R`` [Mpc/h] and
    ``|v|`` [km/s]; a large view keeps its ``n_max`` galaxies of smallest key. So the subset
    does not depend on the order of the galaxies or of the views, and the mirrored view
    (``v -> -v``) keeps the mirrored subset; no Python loop runs per view.
    """
    counts = np.diff(offsets)
    keep = np.ones(len(R), dtype=bool)
    big = counts > n_max
    if not big.any():
        return keep
    view = np.repeat(np.arange(len(counts)), counts)
    rows = np.flatnonzero(big[view])
    with np.errstate(over="ignore"):
        salt = _mix64(np.array([int(seed) % 2**64], dtype=np.uint64)
                      + np.uint64(0x9E3779B97F4A7C15))
        r_bits = np.ascontiguousarray(R[rows], dtype=np.float64).view(np.uint64)
        v_bits = np.ascontiguousarray(np.abs(v[rows]), dtype=np.float64).view(np.uint64)
        key = _mix64(_mix64(r_bits ^ salt) ^ v_bits)
    # large views' rows by view, then key: one sort of (view number << 40 | top 40 bits of
    # the key), ~3x faster than a lexsort; lexsort past 2^24 large views
    vnum = np.cumsum(big) - 1  # number of each large view among the large views
    if vnum[-1] < 2**24:
        combined = (vnum[view[rows]].astype(np.uint64) << np.uint64(40)) \
            | (key >> np.uint64(24))
        order = rows[np.argsort(combined, kind="stable")]
    else:
        order = rows[np.lexsort((key, view[rows]))]
    n_big = np.where(big, counts, 0)
    first = np.cumsum(n_big) - n_big  # where each large view starts in ``order``
    rank = np.arange(len(order)) - first[view[order]]
    keep[order[rank >= n_max]] = False
    return keep


def member_arrays(obs: Observations, n_max: int = N_MAX, seed: int = 0,
                  galaxy_columns: Sequence[str] = (), context: Sequence[str] = ()
                  ) -> np.ndarray:
    """Padded member lists of every view (the engine of :class:`MemberListFeaturizer`).

    Parameters
    ----------
    obs : Observations
        Views; ``R`` [comoving Mpc/h] is divided by ``obs.aperture`` and ``v`` [km/s] by
        ``obs.vcut``.
    n_max : int
        Most galaxies kept per view (a seeded random subset of a larger view).
    seed : int
        Seed of those subsets.
    galaxy_columns : sequence of str
        Extra per-galaxy arrays, attributes of ``obs`` (raw values, their own units).
    context : sequence of str
        Per-view columns of ``obs.clusters`` (raw values, their own units) or survey inputs
        (:func:`dynmass.survey_inputs.survey_of_views`, transformed as
        :func:`dynmass.survey_inputs.survey_columns` does), repeated in every slot.

    Returns
    -------
    numpy.ndarray
        float32, shape ``(n_views, min(n_max, largest view), 2 + len(galaxy_columns) +
        len(context) + 1)``; see the module docs for the channels.
    """
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise InputError(f"n_max={n_max!r} must be an integer >= 1", column="n_max")
    offsets = np.asarray(obs.offsets, dtype=np.int64)
    counts = np.diff(offsets)
    cols = [np.asarray(obs.R, np.float64) / obs.aperture, np.asarray(obs.v, np.float64) / obs.vcut]
    for name in galaxy_columns:
        if name in TRUTH_GALAXY_COLUMNS or not hasattr(obs, name):
            raise InputError(f"galaxy column {name!r} is not a per-galaxy model input of these "
                             "observations", column=name)
        arr = np.asarray(getattr(obs, name), dtype=np.float64)
        if arr.shape != (int(offsets[-1]),) or not np.isfinite(arr).all():
            raise InputError(f"galaxy column {name!r} must be finite, one value per galaxy",
                             column=name)
        cols.append(arr)
    ctx = []
    for name in context:
        if name in SURVEY_INPUTS:  # the survey model's input, as the posterior reads it
            ctx.append(survey_columns([name], survey_of_views(obs, [name]), (obs.n_views,))[0])
            continue
        if name in TRUTH_CLUSTER_COLUMNS or name not in obs.clusters:
            raise InputError(f"context column {name!r} is not a per-view model input of these "
                             f"observations (have: {sorted(obs.clusters)})",
                             column=f"clusters/{name}")
        arr = np.asarray(obs.clusters[name], dtype=np.float64)
        if arr.shape != (obs.n_views,) or not np.isfinite(arr).all():
            raise InputError(f"context column {name!r} must be finite, one value per view",
                             column=f"clusters/{name}")
        ctx.append(arr)
    keep = _subset_rows(np.asarray(obs.R), np.asarray(obs.v), offsets, int(n_max), int(seed))
    kept = np.minimum(counts, n_max)
    width = int(max(1, kept.max(initial=0)))
    n_ch = len(cols) + len(ctx) + 1
    out = np.zeros((obs.n_views, width, n_ch), dtype=np.float32)
    view = np.repeat(np.arange(obs.n_views), counts)[keep]
    starts = np.zeros(obs.n_views, dtype=np.int64)
    np.cumsum(kept[:-1], out=starts[1:])
    slot = np.arange(len(view)) - starts[view]
    for j, arr in enumerate(cols):
        out[view, slot, j] = arr[keep]
    for j, arr in enumerate(ctx):
        out[:, :, len(cols) + j] = arr[:, None]
    out[view, slot, -1] = 1.0
    return out


@dataclass(frozen=True)
class MemberListFeaturizer:
    """Each view's galaxies as a padded, masked list (module docs); no binning.

    Parameters
    ----------
    n_max : int
        Most galaxies kept per view; larger views keep a seeded random subset.
    seed : int
        Seed of those subsets.
    galaxy_columns : tuple of str
        Extra per-galaxy arrays of the observations (none exist today; the hook).
    context : tuple of str
        Per-view columns of ``obs.clusters`` given to the model (e.g. survey draws).
    """

    n_max: int = N_MAX
    seed: int = 0
    galaxy_columns: tuple[str, ...] = field(default=())
    context: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "galaxy_columns", tuple(self.galaxy_columns))
        object.__setattr__(self, "context", tuple(self.context))
        if isinstance(self.n_max, bool) or not isinstance(self.n_max, (int, np.integer)) \
                or self.n_max < 1:
            raise InputError(f"n_max={self.n_max!r} must be an integer >= 1", column="n_max")

    @property
    def key(self) -> str:
        """Identity of the arrays this featurizer makes (settings and layout version)."""
        return (f"members:n_max={int(self.n_max)}:seed={int(self.seed)}"
                f":galaxy={','.join(self.galaxy_columns)}:context={','.join(self.context)}"
                f":v{MEMBER_FEATURE_VERSION}")

    @property
    def n_channels(self) -> int:
        """Channels per slot: R, v, the extra galaxy columns, the context columns, the mask."""
        return 2 + len(self.galaxy_columns) + len(self.context) + 1

    def get_params(self) -> dict[str, Any]:
        """The settings, as a dict (scikit-learn style)."""
        return {"n_max": self.n_max, "seed": self.seed,
                "galaxy_columns": self.galaxy_columns, "context": self.context}

    def transform(self, obs: Observations, cache_dir: str | os.PathLike | None = None,
                  key: str = "") -> np.ndarray:
        """Member lists of every view of ``obs`` (:func:`member_arrays`), cached on disk.

        Parameters
        ----------
        obs : Observations
            Views.
        cache_dir : str or os.PathLike, optional
            Cache folder: ``members_<hash16>.npy`` (hash of :attr:`key`, the data identity,
            aperture [Mpc/h], vcut [km/s] and the view and galaxy counts) with a JSON sidecar;
            None: no cache.
        key : str
            Identity of the data (e.g. the observations file's sha256); empty: a hash of the
            galaxy arrays and context columns.
        """
        def compute() -> np.ndarray:
            return member_arrays(obs, self.n_max, self.seed, self.galaxy_columns, self.context)

        if cache_dir is None:
            return compute()
        if not key:
            h = hashlib.sha256()
            arrays = [obs.R, obs.v, obs.offsets]
            arrays += [getattr(obs, c) for c in self.galaxy_columns]
            arrays += [obs.clusters[c] for c in self.context if c in obs.clusters]
            arrays += [survey_of_views(obs, [c])[c] for c in self.context if c in SURVEY_INPUTS]
            for arr in arrays:
                h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
            key = "data:" + h.hexdigest()
        record = {"key": str(key), "featurizer": self.key, "aperture": obs.aperture,
                  "vcut": obs.vcut, "n_views": obs.n_views, "n_rows": int(obs.offsets[-1])}
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        path = Path(cache_dir) / f"members_{digest[:16]}.npy"
        if path.exists():
            try:
                arr = np.load(path, allow_pickle=False)
                if (arr.ndim == 3 and arr.shape[0] == obs.n_views
                        and arr.shape[2] == self.n_channels and arr.dtype == np.float32):
                    return arr
            except (OSError, ValueError):
                pass
        arr = compute()
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        atomic_write_json(path.with_suffix(".json"), {**record, "sha256": digest})
        return arr
