"""The declared survey of a cluster: inputs of a survey-aware posterior (one place).

A *dynamics-only* mass (the shipped bundle's belts) must not depend on how many galaxies a
survey happened to put in the cylinder. A *survey-aware* mass may use that number, the
richness, once the survey that produced it is declared: how the galaxies were selected (a
stellar-mass limit), which fraction of them was targeted, how completeness falls to the edge
of the aperture, how large the velocity errors are, and the redshift. This module names those
inputs (:data:`SURVEY_INPUTS`), reads them off mock observations (:func:`survey_of_views`: the
per-view draws of a domain-randomised ``dynmass observe``), parses what a user declares
(:func:`parse_survey`) and checks it against the range a posterior was trained on
(:func:`check_survey_domain`). :mod:`dynmass.posterior` conditions its flow on them.

The survey settings mean what :class:`dynmass.observing.ObservingSetup` makes of them: a
galaxy above the selection limit is targeted with probability ``sampling_rate`` times the
radial completeness, which falls linearly from 1 at the centre to ``completeness_edge`` at the
aperture; each targeted galaxy's velocity gets a Gaussian error of ``velocity_error`` km/s.
A survey that placed a fixed number of fibres or slits on each cluster declares the rate it
achieved: targets with a redshift over photometric candidates above the selection limit within
the aperture. A sample selected otherwise (by magnitude or colour) has no stellar-mass limit to
declare: the survey-aware mass does not apply to it (README, "Two ways to weigh a cluster").

Examples
--------
>>> survey = parse_survey(["sampling_rate=0.3", "selection_limit=10", "completeness_edge=1",
...                        "velocity_error=50"])
>>> survey["sampling_rate"], survey["selection_limit"]
(0.3, 10.0)
>>> check_survey_domain(survey, {"sampling_rate": (0.05, 1.0)})
[]
>>> check_survey_domain({"sampling_rate": 0.01}, {"sampling_rate": (0.05, 1.0)})
['sampling_rate 0.01 outside the trained range 0.05-1']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dynmass.errors import InputError

__all__ = ["SURVEY_INPUTS", "check_survey_domain", "parse_survey", "survey_columns",
           "survey_of_views", "survey_ranges"]

#: Survey settings a survey-aware posterior may take as inputs, in this order:
#: name -> (per-view column of ``dynmass observe`` holding the drawn value, meaning and unit,
#: whether the flow sees its log10). ``redshift`` is the cluster's (the views': their
#: snapshot's).
SURVEY_INPUTS: dict[str, tuple[str, str, bool]] = {
    "sampling_rate": ("survey_sampling_rate",
                      "fraction of the selected galaxies targeted, 0-1", True),
    "completeness_edge": ("survey_completeness_edge",
                          "completeness at the aperture relative to the centre's, 0-1", False),
    "selection_limit": ("survey_selection_limit",
                        "stellar-mass limit, log10 M* [Msun] (h-free)", False),
    "velocity_error": ("survey_velocity_error", "velocity error [km/s]", False),
    "redshift": ("redshift", "the cluster's redshift", False),
}


def _known(name: str) -> None:
    if name not in SURVEY_INPUTS:
        raise InputError(f"unknown survey input {name!r}; known: {', '.join(SURVEY_INPUTS)}",
                         column=name)


def survey_columns(names: Sequence[str], survey: Mapping[str, Any] | None,
                   shape: tuple[int, ...]) -> list[np.ndarray]:
    """The flow's context columns for ``names`` (log10 where :data:`SURVEY_INPUTS` says so).

    Parameters
    ----------
    names : sequence of str
        Survey inputs of the posterior.
    survey : mapping, optional
        ``{name: value or array}``, broadcast to ``shape``.
    shape : tuple of int
        Number of views.

    Raises
    ------
    InputError
        A name missing from ``survey`` (naming it and its meaning), a non-finite value, or a
        non-positive one where the log is taken.
    """
    cols = []
    for name in names:
        _known(name)
        if survey is None or name not in survey:
            raise InputError(f"this posterior is survey-aware: declare the survey's {name} "
                             f"({SURVEY_INPUTS[name][1]}); it needs {', '.join(names)}",
                             column=name)
        v = np.broadcast_to(np.asarray(survey[name], float), shape)
        log = SURVEY_INPUTS[name][2]
        if not np.all(np.isfinite(v)) or (log and np.any(v <= 0)):
            raise InputError(f"survey {name} must be finite" + (" and > 0" if log else ""),
                             column=name)
        cols.append(np.log10(v) if log else v.astype(float))
    return cols


def survey_of_views(obs: Any, names: Iterable[str] = tuple(SURVEY_INPUTS),
                    defaults: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per-view survey values of mock observations, as a user of that survey declares them.

    Each input comes from the view's own column (``survey_*``: the per-view draws of
    ``dynmass observe``), else from the observe settings (a fixed value; ``redshift`` from
    the snapshot), else from ``defaults``.

    Parameters
    ----------
    obs : dynmass.observations.Observations
    names : iterable of str
        Inputs wanted (default: all of :data:`SURVEY_INPUTS`).
    defaults : mapping, optional
        Values for inputs the file does not record (e.g. the selection limit of views observed
        without one: the universe's own galaxy threshold).

    Returns
    -------
    dict of numpy.ndarray

    Raises
    ------
    InputError
        An input the file does not record and ``defaults`` does not give.
    """
    out = {}
    defaults = dict(defaults or {})
    for name in names:
        _known(name)
        col = SURVEY_INPUTS[name][0]
        setting = obs.settings.get(name)
        if col in obs.clusters:
            out[name] = np.asarray(obs.clusters[col], float)
        elif isinstance(setting, (int, float)) and not isinstance(setting, bool):
            out[name] = np.full(obs.n_views, float(setting))
        elif name in defaults:
            out[name] = np.full(obs.n_views, float(defaults[name]))
        else:
            raise InputError(f"the observations record no {name} ({SURVEY_INPUTS[name][1]}); "
                             "give it as a default", column=name)
    return out


def survey_ranges(settings: Sequence[Mapping[str, Any]], names: Iterable[str]
                  ) -> dict[str, tuple[float, float]]:
    """The range each survey input was drawn from, over several observe settings.

    A :class:`~dynmass.observing.Draw` (``{"dist", "lo", "hi"}``) contributes its bounds, a
    fixed value itself (``redshift``: the snapshot's). Inputs no settings record are left out
    (the caller falls back to the drawn values' range).

    Parameters
    ----------
    settings : sequence of mapping
        Observe settings of the files (``Observations.settings``).
    names : iterable of str
        Survey inputs wanted.

    Examples
    --------
    >>> survey_ranges([{"sampling_rate": {"dist": "loguniform", "lo": 0.05, "hi": 1.0},
    ...                 "redshift": 0.117}, {"sampling_rate": 0.5, "redshift": 0.4}],
    ...               ["sampling_rate", "redshift"])
    {'sampling_rate': (0.05, 1.0), 'redshift': (0.117, 0.4)}
    """
    out: dict[str, tuple[float, float]] = {}
    for name in names:
        _known(name)
        vals = []
        for s in settings:
            v = s.get(name)
            if isinstance(v, Mapping) and "lo" in v and "hi" in v:
                vals += [float(v["lo"]), float(v["hi"])]
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                vals.append(float(v))
        if vals:
            out[name] = (min(vals), max(vals))
    return out


def parse_survey(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, float]:
    """``["NAME=VALUE", ...]`` (``dynmass predict --survey``) or a mapping -> ``{name: float}``.

    Raises
    ------
    InputError
        An unknown name, a value that is not a number, or a name given twice.
    """
    if items is None:
        return {}
    pairs: list[tuple[str, Any]] = list(items.items()) if isinstance(items, Mapping) else []
    for item in [] if isinstance(items, Mapping) else items:
        name, sep, value = str(item).partition("=")
        if not sep:
            raise InputError(f"survey setting {item!r} is not NAME=VALUE "
                             f"(names: {', '.join(SURVEY_INPUTS)})", column=name)
        pairs.append((name.strip(), value.strip()))
    out: dict[str, float] = {}
    for name, value in pairs:
        _known(name)
        if name in out:
            raise InputError(f"survey {name} given twice", column=name)
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise InputError(f"survey {name}={value!r} is not a number", column=name) from None
        if not np.isfinite(out[name]):
            raise InputError(f"survey {name} must be finite", column=name)
    return out


def check_survey_domain(survey: Mapping[str, Any], domain: Mapping[str, Sequence[float]],
                        tol: float = 1e-9) -> list[str]:
    """Problems of a declared survey against a posterior's trained ranges (empty: inside).

    Parameters
    ----------
    survey : mapping
        ``{name: value}`` (scalars or arrays: every value is checked).
    domain : mapping
        ``{name: (lo, hi)}`` (:attr:`dynmass.posterior.Posterior.survey_domain`).
    tol : float
        Slack at the edges.
    """
    problems = []
    for name, (lo, hi) in domain.items():
        if name not in survey:
            continue
        v = np.atleast_1d(np.asarray(survey[name], float))
        bad = v[(v < lo - tol) | (v > hi + tol)]
        if bad.size:
            problems.append(f"{name} {bad[0]:g} outside the trained range {lo:g}-{hi:g}")
    return problems
