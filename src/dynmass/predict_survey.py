"""Survey-aware masses in ``dynmass predict``: the declared survey read with a flow posterior.

``dynmass predict`` always gives the *dynamics-only* mass: the bundle's ensemble with its
Neyman belts, which do not let the number of galaxies stand in for the mass. When the user
declares the survey that produced the members (``--survey sampling_rate=0.3
selection_limit=10 completeness_edge=1 velocity_error=50``; :mod:`dynmass.survey_inputs`), the
table gains the *survey-aware* mass: the percentiles of a flow posterior
(:mod:`dynmass.posterior`) conditioned on the bundle's ensemble mean, the number of galaxies in
the cylinder and that survey (the redshift is the cluster's). Richness then carries mass
information legitimately, as far as the mock's occupation (galaxies per cylinder at fixed mass
above the stellar-mass limit) describes the real galaxies. The shipped posterior is trained
with that occupation known only to 0.3 dex (``PosteriorSettings.occupation_dex``, recorded in
``table.meta["survey"]``): it marginalises over a Gaussian offset of log10 N, so an occupation
a factor 2 off moves it little; one much further off (a magnitude-selected sample with 3x
fewer galaxies) still biases it while the dynamics-only mass holds (README, "Two ways to weigh
a cluster").

**Tension.** Each row also gets ``survey_minus_dynamics_dex`` (survey-aware minus
dynamics-only median) and the flag ``survey_tension`` when the survey-aware median lies outside
the dynamics-only 95% interval: the richness says something the velocities do not, the sign
of an occupation (or a declared survey) unlike the mock's. Over a sample, the median of
``survey_minus_dynamics_dex`` is the test to look at (``table.meta["survey"]``).

The posterior must have been trained on this very bundle (its ``bundle_sha256``); with the
shipped model, the shipped survey-aware posterior
(:data:`DEFAULT_POSTERIOR`, ``make survey-posterior``) is used unless another is given. A
declared survey outside the range the posterior was trained on is refused (naming the
setting) unless extrapolation is allowed, and then the row is flagged ``survey_extrapolated``.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import file_sha256
from dynmass.bundle import Bundle
from dynmass.errors import InputError
from dynmass.intervals import pct_name
from dynmass.posterior import Posterior, load_posterior
from dynmass.survey_inputs import check_survey_domain, parse_survey

__all__ = ["DEFAULT_POSTERIOR", "add_survey_aware", "default_posterior_path",
           "resolve_posterior"]

#: File name of the shipped survey-aware posterior of the shipped model (package data).
DEFAULT_POSTERIOR = "default_survey_posterior.h5"

#: Percentiles of the survey-aware columns ``log10_m200c_survey_<p>`` [Msun/h].
SURVEY_PERCENTILES = (2.5, 16.0, 50.0, 84.0, 97.5)


def default_posterior_path() -> Path:
    """Path of the shipped survey-aware posterior (of the shipped default model)."""
    return Path(str(importlib.resources.files("dynmass") / "data" / DEFAULT_POSTERIOR))


def resolve_posterior(posterior: Posterior | str | os.PathLike | None, bundle: Bundle
                      ) -> Posterior:
    """The survey-aware posterior to use with ``bundle`` (default: the shipped one).

    Parameters
    ----------
    posterior : Posterior, path or None
        A loaded posterior, its file, or ``None`` for the shipped one.
    bundle : Bundle
        The model whose ensemble mean the posterior must read (checked by sha256).

    Raises
    ------
    InputError
        No posterior given for a bundle other than the shipped one, a posterior without survey
        inputs, or one trained on another bundle.
    """
    if posterior is None:
        path = default_posterior_path()
        if not path.exists():
            raise InputError(f"no shipped survey-aware posterior ({path}); give one with "
                             "--posterior (dynmass posterior --survey-inputs ...)")
        posterior = path
    post = posterior if isinstance(posterior, Posterior) else load_posterior(posterior)
    where = posterior if not isinstance(posterior, Posterior) else None
    if not post.settings.survey_inputs:
        raise InputError("this posterior has no survey inputs: it cannot read a declared "
                         "survey (train one with dynmass posterior --survey-inputs ...)",
                         path=where)
    want = post.meta.get("bundle_sha256")
    have = file_sha256(bundle.path) if bundle.path else None
    if not want or want != have:
        raise InputError(f"the survey-aware posterior was trained on another model "
                         f"(bundle sha256 {str(want)[:12]}, this model {str(have)[:12]}); "
                         "give the posterior made for this model (--posterior)", path=where)
    return post


def add_survey_aware(table: Any, bundle: Bundle, survey: Any,
                     posterior: Posterior | str | os.PathLike | None = None, *,
                     allow_extrapolation: bool = False) -> None:
    """Add the survey-aware columns to a :func:`dynmass.predict.predict_members` table.

    Adds ``log10_m200c_survey_<p>`` [Msun/h] and ``log10_m200c_msun_survey_<p>`` [Msun] for p
    in 2.5, 16, 50, 84, 97.5 and ``survey_minus_dynamics_dex``, in place; rows without a
    dynamics-only mass get NaN. Flags: ``survey_tension`` (module docs),
    ``survey_extrapolated``. The redshift of each cluster is its own (``z``); a declared
    ``redshift`` is used only for clusters without one (given as R, v).

    Parameters
    ----------
    table : astropy.table.Table
        Output of :func:`dynmass.predict.predict_members` for ``bundle``.
    bundle : Bundle
    survey : sequence of "NAME=VALUE" or mapping
        The declared survey (:func:`dynmass.survey_inputs.parse_survey`).
    posterior : Posterior, path or None
        Survey-aware posterior of ``bundle`` (default: the shipped one, for the shipped model).
    allow_extrapolation : bool
        Compute with a survey outside the posterior's trained range (rows flagged
        ``survey_extrapolated``) instead of refusing.

    Raises
    ------
    InputError
        A survey input the posterior needs and the user did not declare, one outside the
        trained range (without ``allow_extrapolation``), or a mismatched posterior.
    """
    post = resolve_posterior(posterior, bundle)
    declared = parse_survey(survey)
    names = post.settings.survey_inputs
    missing = [n for n in names if n not in declared and n != "redshift"]
    if missing:
        raise InputError(f"declare the survey's {', '.join(missing)} (--survey NAME=VALUE); "
                         f"this survey-aware posterior reads {', '.join(names)}",
                         column=missing[0])
    extra = sorted(set(declared) - set(names))
    if extra:
        raise InputError(f"this posterior does not read {', '.join(extra)}; it reads "
                         f"{', '.join(names)}", column=extra[0])
    domain = {k: v for k, v in post.survey_domain.items() if k != "redshift"}
    problems = check_survey_domain(declared, domain)
    if problems and not allow_extrapolation:
        raise InputError("declared survey outside the survey-aware posterior's trained range: "
                         + "; ".join(problems) + " (--allow-extrapolation computes it, "
                         "flagged survey_extrapolated)", column=problems[0].split()[0])
    ok = np.isfinite(np.asarray(table["log10_m200c_mean"], float))
    d = np.nan_to_num(np.asarray(table["redshift_correction_dex"], float))
    z = np.asarray(table["z"], float)
    if "redshift" in names:
        if "redshift" in declared:  # only for clusters without their own redshift
            z = np.where(np.isfinite(z), z, declared["redshift"])
        no_z = ok & ~np.isfinite(z)
        if no_z.any():
            raise InputError("clusters without a redshift (R, v given without a centre "
                             "redshift): declare it (--survey redshift=Z)", column="redshift")
    q = np.full((len(table), len(SURVEY_PERCENTILES)), np.nan)
    if ok.any():
        sv = {k: (z[ok] if k == "redshift" else declared[k]) for k in names}
        mu = np.asarray(table["log10_m200c_mean"], float)[ok] - d[ok]
        q[ok] = post.quantiles(mu, np.asarray(table["n_gal"], float)[ok], SURVEY_PERCENTILES,
                               survey=sv) + d[ok, None]
    h = float(table.meta.get("h", 1.0))
    for j, p in enumerate(SURVEY_PERCENTILES):
        table[f"log10_m200c_survey_{pct_name(p)}"] = q[:, j]
    for j, p in enumerate(SURVEY_PERCENTILES):
        table[f"log10_m200c_msun_survey_{pct_name(p)}"] = q[:, j] - np.log10(h)
    diff = q[:, 2] - np.asarray(table["log10_m200c_p50"], float)
    table["survey_minus_dynamics_dex"] = diff
    # the dynamics-only outermost interval (2.5-97.5 percentiles for the shipped bundles)
    lo_col, hi_col = (f"log10_m200c_{pct_name(f(bundle.percentiles))}" for f in (min, max))
    tension = ok & ((q[:, 2] < np.asarray(table[lo_col], float)) |
                    (q[:, 2] > np.asarray(table[hi_col], float)))
    new_flags = []
    for fl, k, t in zip(table["flags"], ok, tension, strict=True):
        add = (["survey_tension"] if t else []) + (["survey_extrapolated"] if k and problems
                                                   else [])
        new_flags.append(";".join([f for f in str(fl).split(";") if f] + add))
    table["flags"] = new_flags
    table.meta["survey"] = {"declared": declared, "inputs": list(names),
                            "median_survey_minus_dynamics_dex":
                                float(np.median(diff[ok])) if ok.any() else None,
                            "n_survey_tension": int(tension.sum()),
                            "posterior_trained_range": post.survey_domain,
                            "posterior_meta": post.meta,
                            "occupation_dex": float(post.settings.occupation_dex),
                            "columns": "log10_m200c_survey_* (survey-aware, Msun/h); "
                                       "log10_m200c_* (dynamics-only belts)"}
