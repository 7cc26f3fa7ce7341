"""Calibration views of a bundle: the run's held-out views, or independent universes' views.

The intervals of a bundle are calibrated on views whose predictions were made without their
hosts: either the run's own held-out views (:func:`held_out_calibration`), each predicted by
the one fold model that did not see its halo, or views of independent mock universes
(:func:`ensemble_calibration`), each predicted by the mean of all fold models, the estimator
``dynmass predict`` applies to a real cluster. Both give a
:class:`dynmass.intervals.Calibration`; :func:`dynmass.bundle.make_bundle` calibrates the
intervals on it, :func:`dynmass.coverage.coverage` checks them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from dynmass.errors import InputError
from dynmass.folds import random_host_folds
from dynmass.intervals import Calibration
from dynmass.models.base import Estimator, ensemble_predictions
from dynmass.observations import read_independent_views, universe_of, universes_of
from dynmass.redshift import views_correction_dex
from dynmass.rundir import read_predictions

log = logging.getLogger(__name__)


def held_out_calibration(path: str | os.PathLike) -> Calibration:
    """Calibration views of a run: its ``predictions.csv`` (held-out predictions, one row per
    view), read and checked by :func:`dynmass.rundir.read_predictions`. Views the model
    failed on (NaN prediction) cannot calibrate a belt: they are left out with a warning that
    counts them (the belt then describes the views the model can weigh)."""
    cols = read_predictions(path)
    ok = np.isfinite(cols["log10_m200c_pred"])
    if not ok.all():
        log.warning("%s: %d of %d views have no prediction (the model failed on them); the "
                    "belt is calibrated on the other %d", path, int((~ok).sum()), len(ok),
                    int(ok.sum()))
        cols = {k: v[ok] for k, v in cols.items()}
    return Calibration(
        pred=cols["log10_m200c_pred"],
        true=cols["log10_m200c_true"],
        fold=cols["fold"],
        halo_id=cols["halo_id"],
        los=cols["los"],
        n_gal=cols["n_gal"],
    )



def ensemble_calibration(
    models: Sequence[Estimator],
    paths: Sequence[str | os.PathLike],
    obs_settings: dict[str, Any],
    *,
    exclude_universes: Sequence[str] = (),
    n_folds: int = 10,
    seed: int = 0,
) -> tuple[Calibration, list[dict[str, Any]]]:
    """Calibration views from independent mock observations, predicted by the fold ensemble.

    Each view gets the **mean of all fold models**, the very estimator ``dynmass predict``
    applies to a real cluster, so the belt describes that estimator's errors (not those of a
    single fold model, which are larger).

    Parameters
    ----------
    models : sequence of Estimator
        Fold models.
    paths : sequence of path
        Observations files (``dynmass observe``) of universes the models never saw.
    obs_settings : dict
        Observe settings of the training views; the files must match them.
    exclude_universes : sequence of str
        ``universe_sha256`` values the files must not come from (the training universe).
    n_folds : int
        Pseudo-folds (per host, seeded) for cross-fitted coverage checks.
    seed : int
        Seed of the pseudo-folds.

    Returns
    -------
    Calibration, list of dict
        The views, and one record per file (path, sha256 of its universe, views, hosts,
        redshift). Views at another snapshot redshift than the training views (observed in the
        self-similar frame, ``observe --training-redshift``) enter with ``true - d``, ``d`` the
        E(z) term :func:`dynmass.redshift.views_correction_dex` that predict adds to a cluster
        at that redshift.

    Raises
    ------
    InputError, SettingsMismatchError
        Unreadable file, views observed otherwise, or views of an excluded universe.
    """
    parts, records = [], []
    used = set(exclude_universes)
    for i, path in enumerate(paths):
        obs = read_independent_views(path, obs_settings, used, "calibration")
        # views at another redshift (self-similar frame): the mass a cluster with the same
        # velocities has at the training redshift, as predict adds the E(z) term back
        d_z = views_correction_dex(obs.settings, obs_settings)
        true = obs.log10_m200c() - d_z
        uni = universe_of(obs.settings)
        pred = ensemble_predictions(models, obs, path).mean(axis=0)
        parts.append(dict(pred=pred, true=true, halo_id=np.asarray(obs.clusters["halo_id"], np.int64),
                          los=np.asarray(obs.clusters["los"], np.int64),
                          n_gal=np.asarray(obs.n_gal, np.int64),
                          source=np.full(obs.n_views, i, np.int64)))
        records.append({"path": str(path), "universe_sha256": uni,
                        "universes_sha256": sorted(universes_of(obs.settings)),
                        "n_views": int(obs.n_views),
                        "n_hosts": int(np.unique(obs.clusters["halo_id"]).size),
                        "universe_file": obs.settings.get("universe_file"),
                        "observe_seed": obs.settings.get("seed"),
                        "redshift": obs.settings.get("redshift"),
                        "redshift_frame": obs.settings.get("redshift_frame"),
                        "redshift_correction_dex": d_z})
    if not parts:
        raise InputError("no calibration observations given")
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cal = Calibration(fold=np.zeros(len(cols["pred"]), np.int64), **cols)
    cal.fold = random_host_folds(cal.host, n_folds, seed)
    return cal, records
