"""The result table of :func:`dynmass.predict.predict_members`: columns, rows and flags.

Every cluster of a members table gets one row (:func:`_empty_row`; columns in the order of
:func:`_columns`): its centre, number of galaxies and velocity spread, the percentiles of
log10 M200c, the redshift correction, ``flags``, ``error`` and ``notes``. The clusters that
pass the checks are predicted together (:func:`_predict_views`), one by one only when the
batch fails, so that a model failure is confined to its cluster. :func:`_flags` marks what
lies outside what the model was trained and calibrated on; :data:`FLAG_DOC` says what each
flag means. :mod:`dynmass.predict` re-exports :data:`FLAG_DOC`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dynmass.belts import belt_ends
from dynmass.bundle import Bundle
from dynmass.intervals import pct_name
from dynmass.observations import from_views
from dynmass.redshift import REDSHIFT_TOLERANCE, _outside

# messages keep the logger name they had when these helpers lived in predict.py
log = logging.getLogger("dynmass.predict")

#: What each flag means.
FLAG_DOC: dict[str, str] = {
    "extrapolated_redshift": "cluster redshift outside the model's validated redshift range "
                             "(training/calibration snapshot redshifts +/- "
                             f"{REDSHIFT_TOLERANCE}); the mass was computed only because "
                             "extrapolation was allowed (--allow-extrapolation) and is not "
                             "validated",
    "n_gal": "number of galaxies in the cylinder outside the training range",
    "survey_tension": "survey-aware median outside the dynamics-only 95% interval: the "
                      "richness disagrees with the velocities (an occupation or a declared "
                      "survey unlike the mock's); trust the dynamics-only mass",
    "survey_extrapolated": "declared survey outside the range the survey-aware posterior was "
                           "trained on; its survey-aware mass was computed only because "
                           "extrapolation was allowed",
    "sigma_v": "velocity spread (std of v, km/s) outside the training range",
    "few_members": "fewer galaxies than the training minimum (min_members)",
    "mass": "median mass outside the calibrated mass range (where interval coverage was "
            "checked), or 68% interval reaching the end of the belt (truncated there; the "
            "true mass may lie beyond it)",
    "center_estimated": "centre estimated from members while the model trained on true centres",
}


def _empty_row(cid: str, bundle: Bundle) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cluster_id": cid, "ra": np.nan, "dec": np.nan, "z": np.nan, "center_source": "",
        "n_gal": 0, "sigma_v": np.nan, "log10_m200c_mean": np.nan,
        "log10_m200c_fold_std": np.nan, "aperture_mpc_h": np.nan,
        "redshift_correction_dex": np.nan, "flags": "",
        "error": "", "notes": "",
    }
    for p in bundle.percentiles:
        row[f"log10_m200c_{pct_name(p)}"] = np.nan
    return row


def _columns(bundle: Bundle) -> list[str]:
    pcts = [pct_name(p) for p in bundle.percentiles]
    return (["cluster_id", "ra", "dec", "z", "center_source", "n_gal", "sigma_v"]
            + [f"log10_m200c_{p}" for p in pcts] + [f"log10_m200c_msun_{p}" for p in pcts]
            + ["log10_m200c_mean", "log10_m200c_fold_std", "aperture_mpc_h",
               "redshift_correction_dex", "flags", "error", "notes"])


def _predict_views(bundle, views, view_row, rows, obs_settings) -> None:
    """Predict all good clusters at once; on failure, one at a time to isolate the culprit."""
    if not views:
        return
    obs = from_views(views, dict(obs_settings))
    try:
        results = [bundle.predict(obs)]
        groups = [list(range(len(views)))]
    except Exception as exc:  # a model may fail on one odd cluster; isolate it
        log.warning("batch prediction failed (%s); predicting clusters one by one", exc)
        results, groups = [], []
        for i in range(len(views)):
            try:
                results.append(bundle.predict(obs.subset([i])))
                groups.append([i])
            except Exception as one_exc:
                rows[view_row[i]]["error"] = f"model failed: {type(one_exc).__name__}: {one_exc}"
    for res, group in zip(results, groups, strict=True):
        for j, i in enumerate(group):
            row = rows[view_row[i]]
            for key, arr in res.items():
                row[key] = float(arr[j])


def _flags(row: dict[str, Any], bundle: Bundle, min_members: int,
           z_range: list[float] | None) -> list[str]:
    dom = bundle.domain
    flags = []
    if _outside(row["z"], z_range):
        flags.append("extrapolated_redshift")
    if dom.get("n_gal") and not dom["n_gal"][0] <= row["n_gal"] <= dom["n_gal"][1]:
        flags.append("n_gal")
    sv = dom.get("sigma_v")
    if sv and not sv[0] <= row["sigma_v"] <= sv[1]:
        flags.append("sigma_v")
    if row["n_gal"] < min_members:
        flags.append("few_members")
    if np.isfinite(row["log10_m200c_p50"]) and _mass_flag(row, bundle):
        flags.append("mass")
    if row["center_source"] == "estimated" and bundle.obs_settings.get("center", "true") == "true":
        flags.append("center_estimated")
    return flags


def _mass_flag(row: dict[str, Any], bundle: Bundle) -> bool:
    """True when the median lies outside the calibrated range or the 68% interval is clipped."""
    dom = bundle.domain
    cal = dom.get("log10_m200c_calibrated") or dom.get("log10_m200c")
    if cal and not cal[0] <= row["log10_m200c_p50"] <= cal[1]:
        return True
    if bundle.interval.get("method", "neyman") in ("neyman", "neyman_n") and len(bundle.grid):
        eps = 1e-6  # the Neyman interval is clipped to the ends of the belt
        lo, hi = belt_ends(bundle.grid, bundle.table, bundle.interval["method"], row["n_gal"])
        return bool(row["log10_m200c_p16"] <= lo + eps or row["log10_m200c_p84"] >= hi - eps)
    return False
