"""Views of several universes in one observations file (training on a mixture of skies).

A model trained on one mock universe can learn that universe's quirks (the embedded engine's
sharp satellite edge at R200c is one, ``dynmass universe --outskirts`` removes it). Training on
views of *several* universes (engines, occupation models, seeds) observed through the same
survey is the plain remedy: :func:`combine_observations` concatenates observations files that
were observed alike (:func:`dynmass.observing.check_same_observing`) into one, which every
later stage (train, bundle, predict-mock, evaluate) reads like any other.

What changes in the combined file:

- ``halo_id`` of part ``k`` becomes ``k * HALO_ID_STRIDE + halo_id``, so hosts of different
  universes never share an id (folds split by halo stay independent); the part of every view is
  the cluster column ``part``.
- settings: those of the first part, with ``universe_sha256`` replaced by the list
  ``universes_sha256`` (so calibration and coverage refuse views of any of them; see
  :func:`universes_of`) and a ``combined_from`` record per part (path, universe, views, seed,
  universe engine settings).

Examples
--------
>>> import numpy as np
>>> from dynmass.observations import from_views
>>> s = {"aperture": 1.6, "vcut": 2200.0, "redshift": 0.117}
>>> a = from_views([(np.array([0.1, 0.5]), np.array([10.0, -300.0]))], dict(s, universe_sha256="a"))
>>> b = from_views([(np.array([0.2]), np.array([50.0]))], dict(s, universe_sha256="b"))
>>> mix = combine_observations([a, b])
>>> mix.n_views, mix.clusters["halo_id"].tolist(), mix.clusters["part"].tolist()
(2, [0, 1000000000000], [0, 1])
>>> sorted(universes_of(mix.settings))
['a', 'b']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from dynmass.errors import InputError
from dynmass.observations import (
    Observations,
    check_same_observing,
    read_observations,
    universes_of,
    write_observations,
)

__all__ = ["HALO_ID_STRIDE", "combine_files", "combine_observations", "universe_record",
           "universes_of"]

#: Offset between the halo ids of successive parts (universe halo ids are row numbers or
#: simulation ids well below 10^12).
HALO_ID_STRIDE = 10**12

#: Universe settings copied into each part's record (``settings["combined_from"]``).
_UNIVERSE_KEYS = ("box_size", "seed", "redshift", "occupation", "outskirts", "mstar_min",
                  "engine")


def universe_record(settings: dict[str, Any]) -> dict[str, Any]:
    """The engine settings of a universe kept in the record of views observed from it.

    Parameters
    ----------
    settings : dict
        A universe catalog's settings.

    Returns
    -------
    dict
        ``box_size`` (comoving Mpc/h), ``seed``, ``redshift``, ``occupation``, ``outskirts``,
        ``mstar_min`` and ``engine`` where the settings have them.
    """
    return {key: settings.get(key) for key in _UNIVERSE_KEYS if key in settings}


def _universe_record(obs_settings: dict[str, Any]) -> dict[str, Any] | None:
    """Engine settings of a part's universe, for the record: those ``observe`` stored with the
    views, else those of the universe file (when it is still there)."""
    if isinstance(obs_settings.get("universe"), dict):
        return dict(obs_settings["universe"])
    path = obs_settings.get("universe_file")
    if not path or not os.path.exists(path):
        return None
    try:
        import h5py

        from dynmass._io import read_json_attr

        with h5py.File(path, "r") as fh:
            s = read_json_attr(fh, "settings", path)
    except Exception:  # noqa: BLE001 - the record is informative only
        return None
    return universe_record(s)


def combine_observations(parts: Sequence[Observations],
                         names: Sequence[str] | None = None) -> Observations:
    """Concatenate views of several universes observed alike into one :class:`Observations`.

    Parameters
    ----------
    parts : sequence of Observations
        Two or more sets of views, observed with the same survey settings, snapshot redshift
        and cosmology, with the same cluster columns.
    names : sequence of str, optional
        Where each part came from (file paths), for messages and the ``combined_from`` record.

    Returns
    -------
    Observations
        All views, part by part; see the module docstring for ids and settings.

    Raises
    ------
    InputError, SettingsMismatchError
        Fewer than two parts, a universe used twice, halo ids beyond the stride, different
        cluster columns, or views observed otherwise than the first part.
    """
    parts = list(parts)
    names = [f"part {k}" for k in range(len(parts))] if names is None else list(names)
    if len(parts) < 2:
        raise InputError("combining needs at least two observations files")
    first = parts[0]
    cols = set(first.clusters)
    seen: set[str] = set()
    records = []
    for obs, name in zip(parts, names, strict=True):
        check_same_observing(obs.settings, first.settings, f"the first file ({names[0]})", name)
        if not np.isclose(obs.aperture, first.aperture) or not np.isclose(obs.vcut, first.vcut):
            raise InputError(f"aperture/vcut {obs.aperture}/{obs.vcut} differ from the first "
                             f"file's {first.aperture}/{first.vcut}", name, "settings")
        if set(obs.clusters) != cols:
            diff = sorted(cols.symmetric_difference(obs.clusters))
            raise InputError(f"cluster columns differ from the first file's: {diff}", name,
                             f"clusters/{diff[0]}")
        ids = np.asarray(obs.clusters["halo_id"], np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= HALO_ID_STRIDE):
            raise InputError(f"halo ids must lie in [0, {HALO_ID_STRIDE}) to be combined", name,
                             "clusters/halo_id")
        unis = universes_of(obs.settings)
        if unis & seen:
            raise InputError("views of this universe are already in an earlier file; "
                             "combined views must come from distinct universes", name,
                             "universe_sha256")
        seen |= unis
        rec = {"path": str(name), "universes_sha256": sorted(unis), "n_views": int(obs.n_views),
               "n_hosts": int(np.unique(ids).size)}
        rec["observe_seed"] = obs.settings.get("seed")
        rec["universe_file"] = obs.settings.get("universe_file")
        rec["universe"] = _universe_record(obs.settings)
        records.append(rec)
    clusters = {}
    for col in first.clusters:
        arrs = [np.asarray(p.clusters[col]) for p in parts]
        if col == "halo_id":
            arrs = [k * HALO_ID_STRIDE + a.astype(np.int64) for k, a in enumerate(arrs)]
        clusters[col] = np.concatenate(arrs)
    clusters["part"] = np.concatenate([np.full(p.n_views, k, np.int64)
                                       for k, p in enumerate(parts)])
    counts = np.concatenate([p.n_gal for p in parts])
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    settings = dict(first.settings)
    settings.pop("universe_sha256", None)
    settings["universes_sha256"] = sorted(seen)
    settings["combined_from"] = records
    return Observations(
        clusters=clusters,
        R=np.concatenate([p.R for p in parts]),
        v=np.concatenate([p.v for p in parts]),
        is_member=np.concatenate([p.is_member for p in parts]),
        galaxy_index=np.concatenate([p.galaxy_index for p in parts]),
        offsets=offsets,
        settings=settings,
    ).validate()


def combine_files(paths: Sequence[str | os.PathLike], output: str | os.PathLike) -> Observations:
    """Read observations files, combine them (:func:`combine_observations`) and write ``output``.

    The output is written atomically; it records ``universes_sha256`` as a root attribute too.

    Parameters
    ----------
    paths : sequence of path-like
        Observations files (``dynmass observe``).
    output : path-like
        Combined observations file to write.
    """
    parts = [read_observations(p) for p in paths]
    obs = combine_observations(parts, [str(p) for p in paths])
    write_observations(obs, output,
                       extra_attrs={"universes_sha256": ",".join(obs.settings["universes_sha256"])})
    return obs
