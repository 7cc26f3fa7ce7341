"""Predicting the views of another observations file with a trained model or run folder.

The ``dynmass predict-mock`` stage: a model file (:func:`dynmass.train.fit_all` output or any
``fold_XX.h5``) or a whole cross-validation run folder, whose fold models' predictions are
averaged, predicts every view of an observations file made with the same aperture and vcut.
The output is a predictions table (:func:`dynmass.rundir.write_predictions_csv`) with a
settings record next to it.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from dynmass.predict_mock import predict_mock
>>> from dynmass.testing.worlds import evrard_views
>>> from dynmass.train import fit_all
>>> tmp = Path(tempfile.mkdtemp())
>>> model = fit_all(evrard_views(40, 2, seed=0), "msigma", tmp / "msigma.h5", progress=False)
>>> out = predict_mock(model, evrard_views(10, 1, seed=1), tmp / "pred.csv")
>>> out.read_text().splitlines()[0]
'halo_id,los,log10_m200c_true,log10_m200c_pred,n_gal'
>>> sorted(p.name for p in tmp.iterdir())
['msigma.h5', 'pred.csv', 'pred.settings.json']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dynmass._io import atomic_write_json, provenance
from dynmass.models.base import Estimator, ensemble_predictions, load_model
from dynmass.observations import Observations
from dynmass.redshift import views_correction_dex
from dynmass.resume import load_obs
from dynmass.rundir import RunDir, write_predictions_csv

__all__ = ["load_run_models", "predict_mock"]


def load_run_models(model_path: str | os.PathLike) -> list[Estimator]:
    """The model(s) of a single model file or of a run folder (:meth:`RunDir.load_models`)."""
    p = Path(model_path)
    if p.is_dir():
        return RunDir(p).load_models()
    return [load_model(p)]


def predict_mock(
    model_path: str | os.PathLike,
    obs_path: Observations | str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    device: str | None = None,
) -> Path:
    """Predict the views of another observations file with a trained model or run folder.

    Parameters
    ----------
    model_path : path
        A model file (``fit_all`` output or any ``fold_XX.h5``) or a run folder, whose fold
        models' predictions are averaged (mean of log10 M).
    obs_path : Observations or path
        Views to predict; must share the training data's aperture and vcut.
    out_csv : path
        Output table: ``halo_id,los,log10_m200c_true,log10_m200c_pred,n_gal`` (and
        ``log10_m200c_pred_std``, the spread over fold models, for run folders); true masses
        are NaN when unknown. Views at another snapshot redshift than the model's training
        views (observed in the self-similar frame, ``observe --training-redshift``) get the
        E(z) term added, as ``dynmass predict`` adds it to a real cluster
        (:func:`dynmass.redshift.views_correction_dex`). Its settings record (version,
        command, model, observations, ``redshift_correction_dex``) goes to
        ``<out_csv stem>.settings.json``.
    device : str, optional
        Override the device of torch models.

    Returns
    -------
    pathlib.Path
        ``out_csv``.

    Raises
    ------
    SettingsMismatchError
        If the observations were made with another aperture or vcut than the model's data.
    """
    models = load_run_models(model_path)
    obs, path, _sha = load_obs(obs_path)
    for model in models:
        if device is not None and "device" in model.settings:
            model.settings["device"] = device
    P = ensemble_predictions(models, obs, path)
    d_z = views_correction_dex(obs.settings, models[0].obs_settings)
    P = P + d_z
    columns = {
        "halo_id": np.asarray(obs.clusters["halo_id"]).astype(np.int64),
        "los": np.asarray(obs.clusters["los"]).astype(np.int64),
        "log10_m200c_true": obs.log10_m200c(),
        "log10_m200c_pred": P.mean(axis=0),
        "n_gal": obs.n_gal.astype(np.int64),
    }
    if len(models) > 1:
        columns["log10_m200c_pred_std"] = P.std(axis=0)
    out = write_predictions_csv(out_csv, columns)
    atomic_write_json(out.with_name(out.stem + ".settings.json"), {  # settings record
        **provenance(), "model": str(Path(model_path).resolve()), "n_models": len(models),
        "observations": None if path is None else str(path), "observations_sha256": _sha,
        "redshift_correction_dex": d_z, "columns": {"log10_m200c_*": "log10 Msun/h"},
    })
    return out
