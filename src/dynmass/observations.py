"""Mock (or real) observations of clusters: galaxies in a cylinder along the line of sight.

One *view* is one cluster seen along one line of sight. For each view we keep every galaxy in
the cylinder (members and interlopers): its projected comoving radius ``R`` (Mpc/h) from the
cluster centre, its rest-frame line-of-sight velocity ``v`` relative to the cluster (km/s),
whether it truly belongs to the cluster's halo, and its row in the source catalog.

File format (HDF5)::

    /                 attrs: dynmass_kind="observations", settings (JSON: aperture [Mpc/h],
                             vcut [km/s], redshift, cosmology, min_members, seed, ...),
                             universe_sha256, seed, dynmass_version, provenance (JSON)
    /clusters/halo_id, los, los_x, los_y, los_z, m200c [Msun/h], r200c [Mpc/h], n_gal,
              n_members_true, sigma_v [km/s]        (one row per view)
    /R [Mpc/h], /v [km/s], /is_member, /galaxy_index   (ragged, all views concatenated)
    /offsets          view k owns rows offsets[k]:offsets[k+1] of the ragged arrays
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.observing import ObservingSetup, check_same_observing  # noqa: F401 (re-export)

CLUSTER_COLUMNS: tuple[str, ...] = (
    "halo_id", "los", "los_x", "los_y", "los_z", "m200c", "r200c", "n_gal", "n_members_true",
    "sigma_v",
)
GALAXY_ARRAYS: tuple[str, ...] = ("R", "v", "is_member", "galaxy_index")

#: Settings that change what a view contains; models refuse data whose values differ.
FEATURE_SETTINGS: tuple[str, ...] = ("aperture", "vcut")


@dataclass
class Observations:
    """Cluster views with their galaxies, as ragged arrays.

    Parameters
    ----------
    clusters : dict of str to numpy.ndarray
        One row per view; at least :data:`CLUSTER_COLUMNS`. ``m200c`` in Msun/h (NaN when
        unknown, e.g. real clusters), ``sigma_v`` in km/s.
    R : numpy.ndarray
        Projected comoving radius of every galaxy from its cluster's centre, Mpc/h.
    v : numpy.ndarray
        Rest-frame line-of-sight velocity relative to the cluster, km/s.
    is_member : numpy.ndarray of bool
        True when the galaxy belongs to the cluster's halo.
    galaxy_index : numpy.ndarray of int
        Row of the galaxy in the source catalog (-1 when unknown).
    offsets : numpy.ndarray of int
        Length ``n_views + 1``; view ``k`` owns ``offsets[k]:offsets[k+1]``.
    settings : dict
        Every setting of the observe stage; at least ``aperture`` (Mpc/h) and ``vcut`` (km/s).
    """

    clusters: dict[str, np.ndarray]
    R: np.ndarray
    v: np.ndarray
    is_member: np.ndarray
    galaxy_index: np.ndarray
    offsets: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_views(self) -> int:
        """Number of cluster views."""
        return len(self.offsets) - 1

    @property
    def n_gal(self) -> np.ndarray:
        """Number of galaxies in each view."""
        return np.diff(self.offsets)

    @property
    def aperture(self) -> float:
        """Aperture radius, comoving Mpc/h."""
        return float(self.settings["aperture"])

    @property
    def vcut(self) -> float:
        """Velocity cut, km/s (galaxies have |v| <= vcut)."""
        return float(self.settings["vcut"])

    @property
    def view_of_galaxy(self) -> np.ndarray:
        """For every galaxy row, the index of its view."""
        return np.repeat(np.arange(self.n_views), self.n_gal)

    def log10_m200c(self) -> np.ndarray:
        """log10 of the true M200c of every view (Msun/h)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(self.clusters["m200c"].astype(float))

    def view(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(R, v)`` of view ``k`` (Mpc/h, km/s)."""
        s = slice(self.offsets[k], self.offsets[k + 1])
        return self.R[s], self.v[s]

    def subset(self, indices: np.ndarray) -> Observations:
        """Observations of the views ``indices`` only (in that order).

        Parameters
        ----------
        indices : array_like of int or bool
            Views to keep.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        counts = self.n_gal[idx]
        starts = self.offsets[:-1][idx]
        rows = _ragged_rows(starts, counts)
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Observations(
            clusters={k: v[idx] for k, v in self.clusters.items()},
            R=self.R[rows],
            v=self.v[rows],
            is_member=self.is_member[rows],
            galaxy_index=self.galaxy_index[rows],
            offsets=offsets,
            settings=dict(self.settings),
        )

    def resample(self, rate: float, seed: int, min_gal: int = 1) -> Observations:
        """Keep each galaxy independently with probability ``rate`` (the sampling-rate test).

        Views left with fewer than ``min_gal`` galaxies keep ``min_gal`` of them chosen at
        random (so every view still has an input). ``n_gal``, ``n_members_true`` and
        ``sigma_v`` are recomputed.

        Parameters
        ----------
        rate : float
            Probability in (0, 1] to keep a galaxy.
        seed : int
            Seed of the random draw.
        min_gal : int
            Fewest galaxies a view keeps.
        """
        if not 0 < rate <= 1:
            raise InputError(f"sampling rate {rate} is outside (0, 1]")
        rng = np.random.default_rng(seed)
        u = rng.random(len(self.R))
        keep = u < rate
        # guarantee min_gal per view: keep the min_gal galaxies with the smallest draws
        view = self.view_of_galaxy
        order = np.lexsort((u, view))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order)) - np.repeat(self.offsets[:-1], self.n_gal)
        keep |= rank < min_gal
        return self.select_galaxies(keep)

    def select_galaxies(self, keep: np.ndarray) -> Observations:
        """Observations with only the galaxies where ``keep`` is true (same views)."""
        keep = np.asarray(keep, dtype=bool)
        view = self.view_of_galaxy
        counts = np.bincount(view[keep], minlength=self.n_views)
        offsets = np.zeros(self.n_views + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        clusters = {k: v.copy() for k, v in self.clusters.items()}
        clusters["n_gal"] = counts.astype(np.int64)
        clusters["n_members_true"] = np.bincount(
            view[keep], weights=self.is_member[keep], minlength=self.n_views
        ).astype(np.int64)
        clusters["sigma_v"] = ragged_std(self.v[keep], offsets)
        return Observations(
            clusters=clusters,
            R=self.R[keep],
            v=self.v[keep],
            is_member=self.is_member[keep],
            galaxy_index=self.galaxy_index[keep],
            offsets=offsets,
            settings=dict(self.settings),
        )

    def check_compatible(self, expected: dict[str, Any], what: str, path: object = None) -> None:
        """Raise :class:`SettingsMismatchError` if feature-defining settings differ.

        Parameters
        ----------
        expected : dict
            Settings the consumer (a model) was made with.
        what : str
            Name of the consumer, for the message.
        path : optional
            File to name in the message.
        """
        for key in FEATURE_SETTINGS:
            if key not in expected:
                continue
            mine = self.settings.get(key)
            if mine is None or not np.isclose(float(mine), float(expected[key]), rtol=1e-6):
                raise SettingsMismatchError(
                    f"setting '{key}' is {mine} here but {what} expects {expected[key]}",
                    path=path,
                    column=key,
                )

    def validate(self, path: object | None = None) -> Observations:
        """Check shapes, offsets, finiteness and cuts; raise :class:`InputError` if bad."""
        for col in CLUSTER_COLUMNS:
            if col not in self.clusters:
                raise InputError("required column is missing", path, f"clusters/{col}")
        n = self.n_views
        for col, arr in self.clusters.items():
            if len(arr) != n:
                raise InputError(f"has {len(arr)} rows, expected {n}", path, f"clusters/{col}")
        off = np.asarray(self.offsets)
        if off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] != len(self.R):
            raise InputError("offsets are not a valid partition of the galaxy arrays", path, "offsets")
        for name in GALAXY_ARRAYS:
            if len(getattr(self, name)) != off[-1]:
                raise InputError(f"length {len(getattr(self, name))} != {off[-1]}", path, name)
        for name in ("R", "v"):
            arr = getattr(self, name)
            bad = ~np.isfinite(arr)
            if bad.any():
                raise InputError(
                    f"{int(bad.sum())} non-finite values, first at row {int(np.flatnonzero(bad)[0])}",
                    path, name,
                )
        for key in FEATURE_SETTINGS:
            if key not in self.settings:
                raise InputError(f"settings lack '{key}'", path, "settings")
        if np.any(self.R < 0) or np.any(self.R > self.aperture * (1 + 1e-9)):
            raise InputError(f"R outside [0, aperture={self.aperture}] Mpc/h", path, "R")
        if np.any(np.abs(self.v) > self.vcut * (1 + 1e-9)):
            raise InputError(f"|v| beyond vcut={self.vcut} km/s", path, "v")
        return self


def _ragged_rows(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + c)`` for every (s, c), vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    out_offsets = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=out_offsets[1:])
    return np.repeat(np.asarray(starts, dtype=np.int64) - out_offsets, counts) + np.arange(total)


def ragged_std(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Standard deviation (ddof=0) of each ragged segment; NaN for empty segments.

    Parameters
    ----------
    values : numpy.ndarray
        Concatenated values of all segments (e.g. velocities, km/s).
    offsets : numpy.ndarray
        Segment ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

    Returns
    -------
    numpy.ndarray
        One standard deviation per segment, in the unit of ``values``.
    """
    counts = np.diff(offsets)
    seg = np.repeat(np.arange(len(counts)), counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(seg, weights=values, minlength=len(counts)) / counts
        var = np.bincount(seg, weights=(values - mean[seg]) ** 2, minlength=len(counts)) / counts
    return np.sqrt(var)


def from_views(
    views: list[tuple[np.ndarray, np.ndarray]],
    settings: dict[str, Any],
    clusters: dict[str, np.ndarray] | None = None,
) -> Observations:
    """Build :class:`Observations` from a list of ``(R, v)`` pairs (e.g. real clusters).

    Parameters
    ----------
    views : list of (numpy.ndarray, numpy.ndarray)
        ``R`` (Mpc/h) and ``v`` (km/s) of each view's galaxies, already cut.
    settings : dict
        At least ``aperture`` (Mpc/h) and ``vcut`` (km/s).
    clusters : dict, optional
        Extra or overriding cluster columns (e.g. ``halo_id``, ``m200c``).
    """
    counts = np.array([len(r) for r, _ in views], dtype=np.int64)
    offsets = np.zeros(len(views) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    R = np.concatenate([np.asarray(r, float) for r, _ in views]) if views else np.zeros(0)
    v = np.concatenate([np.asarray(x, float) for _, x in views]) if views else np.zeros(0)
    n = len(views)
    table: dict[str, np.ndarray] = {
        "halo_id": np.arange(n, dtype=np.int64),
        "los": np.zeros(n, dtype=np.int64),
        "los_x": np.zeros(n), "los_y": np.zeros(n), "los_z": np.ones(n),
        "m200c": np.full(n, np.nan), "r200c": np.full(n, np.nan),
        "n_gal": counts, "n_members_true": np.full(n, -1, dtype=np.int64),
        "sigma_v": ragged_std(v, offsets),
    }
    if clusters:
        table.update({k: np.asarray(val) for k, val in clusters.items()})
    return Observations(
        clusters=table, R=R, v=v, is_member=np.zeros(len(R), dtype=bool),
        galaxy_index=np.full(len(R), -1, dtype=np.int64), offsets=offsets, settings=dict(settings),
    )


def write_observations(obs: Observations, path: str | os.PathLike, extra_attrs: dict[str, Any] | None = None) -> Path:
    """Validate ``obs`` and write it to ``path`` (HDF5) atomically.

    Parameters
    ----------
    obs : Observations
        Views to write.
    path : str or os.PathLike
        Destination.
    extra_attrs : dict, optional
        More root attributes (e.g. ``universe_sha256``, ``seed``).
    """
    obs.validate()
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["dynmass_kind"] = "observations"
        fh.attrs["settings"] = to_json(obs.settings)
        prov = provenance()
        fh.attrs["dynmass_version"] = prov["dynmass_version"]
        fh.attrs["provenance"] = to_json(prov)
        fh.attrs["units"] = to_json({"R": "comoving Mpc/h", "v": "km/s", "m200c": "Msun/h",
                                     "r200c": "comoving Mpc/h", "sigma_v": "km/s"})
        for key, val in (extra_attrs or {}).items():
            fh.attrs[key] = val
        g = fh.create_group("clusters")
        for col, arr in obs.clusters.items():
            g.create_dataset(col, data=arr)
        for name in GALAXY_ARRAYS:
            fh.create_dataset(name, data=getattr(obs, name), chunks=True if len(obs.R) else None)
        fh.create_dataset("offsets", data=np.asarray(obs.offsets, dtype=np.int64))
        fh.attrs["complete"] = True
    return path


def read_observations(path: str | os.PathLike) -> Observations:
    """Read an observations file written by :func:`write_observations`.

    Raises
    ------
    InputError
        Missing, truncated or foreign file; missing datasets; inconsistent offsets.
    """
    with hdf5_read_errors(path), open_hdf5(path, kind="observations") as fh:
        if not fh.attrs.get("complete", False):
            raise InputError("file is incomplete (interrupted write?)", path)
        if "clusters" not in fh:
            raise InputError("missing group 'clusters'", path)
        clusters = {k: fh["clusters"][k][...] for k in fh["clusters"]}
        arrays = {}
        for name in (*GALAXY_ARRAYS, "offsets"):
            if name not in fh:
                raise InputError("missing dataset", path, name)
            arrays[name] = fh[name][...]
        settings = read_json_attr(fh, "settings", path)
    obs = Observations(clusters=clusters, settings=settings, **arrays)
    return obs.validate(path)


def observation_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """Root attributes of an observations file (settings decoded), without reading data."""
    import json

    with hdf5_read_errors(path), open_hdf5(path, kind="observations") as fh:
        out = {}
        for k, v in fh.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if k in ("settings", "provenance") and isinstance(v, str):
                v = json.loads(v)
            out[k] = v.item() if isinstance(v, np.generic) else v
    return out


#: Observe settings that must agree between training, calibration and test views: those of
#: :class:`dynmass.observing.ObservingSetup` and the snapshot redshift.
MATCHED_SETTINGS: tuple[str, ...] = (*ObservingSetup.KEYS, "redshift")


def universe_of(settings: dict[str, Any]) -> str | None:
    """``universe_sha256`` recorded in observe settings (None when the views are not mocks, or
    come from several universes: see :func:`universes_of`)."""
    return settings.get("universe_sha256")


def universes_of(settings: dict[str, Any]) -> set[str]:
    """Every ``universe_sha256`` a set of views comes from (empty when not mocks).

    Parameters
    ----------
    settings : dict
        Observe settings of a file, run or bundle: ``universes_sha256`` (views combined from
        several universes, :mod:`dynmass.combine`) or ``universe_sha256`` (one universe).

    Examples
    --------
    >>> sorted(universes_of({"universes_sha256": ["b", "a"]})), universes_of({"universe_sha256": None})
    (['a', 'b'], set())
    """
    many = settings.get("universes_sha256")
    if many:
        return {str(u) for u in many if u}
    one = settings.get("universe_sha256")
    return {str(one)} if one else set()


def read_independent_views(path: str | os.PathLike, obs_settings: dict[str, Any], used: set[str],
                           what: str) -> Observations:
    """Read views of a universe not yet ``used``, observed like ``obs_settings``, with truths.

    Adds the file's universes (:func:`universes_of`) to ``used``.

    Parameters
    ----------
    path : str or os.PathLike
        Observations file.
    obs_settings : dict
        Observe settings of the training views; the file must be observed alike
        (:func:`dynmass.observing.check_same_observing`), its survey anywhere in their
        survey's domain (e.g. complete surveys of a model trained over drawn ones).
    used : set of str
        ``universe_sha256`` of the universes already used; updated.
    what : str
        What the views are for, for messages (e.g. "calibration").

    Returns
    -------
    Observations

    Raises
    ------
    InputError, SettingsMismatchError
        Unreadable file, views observed otherwise, views of a used universe, or views
        without a true m200c.
    """
    obs = read_observations(path)
    check_same_observing(obs.settings, obs_settings, "the training views", path,
                         survey_within=True)
    unis = universes_of(obs.settings)
    if unis & used:
        raise InputError(f"these views come from a universe already used for training or "
                         f"calibration; {what} needs independent hosts", path=path,
                         column="universe_sha256")
    used |= unis
    if not np.all(np.isfinite(obs.log10_m200c())):
        raise InputError(f"{what} needs the true m200c of every view", path=path, column="m200c")
    return obs
