"""The validated redshift range of a model, and the redshift terms of its mass estimates.

A model sees the galaxies of one (or, in future, several) snapshot redshifts. It is
validated at those redshifts +/- :data:`REDSHIFT_TOLERANCE` (= 0.05), clipped at 0: the
bundle records ``domain["redshift_range"] = [lo, hi]`` (``redshift_tolerance`` and
``redshift_range_source`` say how it was made); bundles written before it was recorded get it
derived on load from their training redshift (the file is not rewritten).

Why 0.05: at fixed M200c the velocity dispersion grows as ``(E(z) M200c)^alpha`` with
alpha = 0.3361 ~ 1/3 (Evrard et al. 2008, ApJ 672, 122), E(z) = H(z) / H0. A model trained at
z_train that ignores this maps a cluster of mass M at z to ``M E(z) / E(z_train)``: a bias of
``log10(E(z) / E(z_train))`` dex. With the MDPL2 cosmology (Om0 = 0.307) and z_train = 0.117
that is +0.0113 dex at z = 0.167 and -0.0109 dex at z = 0.067 (Delta z = +/-0.05; see
:func:`validated_redshift_range`), a tenth of the shipped model's scatter (0.12 dex) and
within the +/-0.016 dex median bias its fresh-universe test allows (reached at Delta z = 0.07;
Delta z = 0.1 gives +0.023 dex). Shifting a 68% interval of half-width 0.055 dex (the
narrowest belt of the shipped model) by 0.011 dex lowers its coverage from 68.3% to 67.3%.
The comoving R200c, against the fixed comoving aperture, changes by < 3% over the range. The
E(z) term is only the leading, known part of the redshift dependence (member selection and
galaxy populations evolve too, and are not modelled), so the tolerance keeps a margin below
the 0.07 at which this term alone uses up the bias budget.

:mod:`dynmass.bundle` records the range when it makes a bundle and derives it on load for
older bundles (:func:`validated_redshift_range`). :mod:`dynmass.predict` refuses a mass to a
cluster outside it, or with ``allow_extrapolation`` flags it (:func:`_redshift_check`), and
moves every mass by the self-similar E(z) term from the training redshift to the cluster's
(:func:`redshift_correction_dex`). Both modules re-export :data:`REDSHIFT_TOLERANCE`,
:mod:`dynmass.bundle` also :func:`validated_redshift_range` and :mod:`dynmass.predict` also
:func:`redshift_correction_dex`.

Examples
--------
>>> from dynmass.cosmology import MDPL2, to_astropy
>>> validated_redshift_range(0.117)
[0.067, 0.167]
>>> round(redshift_correction_dex(0.167, 0.117, to_astropy(MDPL2)), 4)  # z_train + 0.05
-0.0113
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dynmass._io import open_hdf5, read_json_attr
from dynmass.errors import InputError
from dynmass.intervals import pct_name

if TYPE_CHECKING:
    from dynmass.bundle import Bundle

# the warnings of making a bundle keep the logger name they had when this lived in bundle.py
log = logging.getLogger("dynmass.bundle")

#: Half-width of the validated redshift range about each snapshot redshift of the training and
#: calibration views (see the module docstring: the E(z)^(1/3) scaling of sigma at fixed mass
#: biases the mass by at most 0.011 dex within it).
REDSHIFT_TOLERANCE = 0.05


def _redshift_values(*sources: Any) -> list[float]:
    """Finite redshifts in ``sources`` (each ``None``, a number or a sequence of numbers)."""
    out: list[float] = []
    for src in sources:
        if src is None:
            continue
        for z in np.atleast_1d(np.asarray(src, dtype=float)).ravel():
            if np.isfinite(z):
                out.append(float(z))
    return out


def validated_redshift_range(
    redshifts: Any, tolerance: float = REDSHIFT_TOLERANCE
) -> list[float] | None:
    """Redshift range over which a model of views at ``redshifts`` is considered validated.

    Parameters
    ----------
    redshifts : float, sequence of float or None
        Snapshot redshifts of the training and calibration views (one for a single-snapshot
        model; several for a model trained or calibrated at several redshifts).
    tolerance : float
        Half-width added on either side (default :data:`REDSHIFT_TOLERANCE`).

    Returns
    -------
    list of float or None
        ``[max(0, min(redshifts) - tolerance), max(redshifts) + tolerance]`` (rounded to 10
        decimals), or ``None`` when no finite redshift is given.

    Examples
    --------
    >>> validated_redshift_range(0.117)
    [0.067, 0.167]
    >>> validated_redshift_range([0.02, 0.3, 0.1])
    [0.0, 0.35]
    >>> validated_redshift_range(None) is None
    True

    The mass bias of ignoring the E(z)^alpha scaling of sigma (Evrard et al. 2008) at the
    ends of the range about z = 0.117, in dex, with the package's cosmology:

    >>> from dynmass.cosmology import MDPL2, to_astropy
    >>> cosmo = to_astropy(MDPL2)
    >>> [round(float(np.log10(cosmo.efunc(z) / cosmo.efunc(0.117))), 4) for z in (0.067, 0.167)]
    [-0.0109, 0.0113]
    """
    zs = _redshift_values(redshifts)
    if not zs:
        return None
    return [round(max(0.0, min(zs) - tolerance), 10), round(max(zs) + tolerance, 10)]


def _with_redshift_range(domain: dict[str, Any], obs_settings: dict[str, Any]) -> dict[str, Any]:
    """``domain`` with ``redshift_range`` derived from the training redshift when it lacks one
    (bundles written before the range was recorded)."""
    if "redshift_range" in domain:
        return domain
    zs = _redshift_values(domain.get("redshift"))
    if not zs:
        zs = _redshift_values(obs_settings.get("redshift"))
    rng = validated_redshift_range(zs)
    if rng is None:
        return domain
    return {**domain, "redshift_range": rng, "redshift_tolerance": REDSHIFT_TOLERANCE,
            "redshift_range_source": "derived on load from the training redshift (bundle "
                                     "written before redshift_range was recorded)"}


def _observations_redshifts(paths: Sequence[str | os.PathLike]) -> list[float]:
    """Snapshot redshifts recorded in the settings of observations files (unreadable: none)."""
    out: list[float] = []
    for path in paths:
        try:
            with open_hdf5(path, kind="observations") as fh:
                out += _redshift_values(read_json_attr(fh, "settings", path).get("redshift"))
        except (InputError, OSError, AttributeError) as exc:
            log.warning("redshift of %s unreadable (%s)", path, exc)
    return out


def redshift_correction_dex(z: float, z_train: float, cosmo: Any) -> float:
    """Self-similar shift of log10 M200c [dex] from the training redshift to the cluster's.

    At fixed M200c the velocity dispersion scales as ``(E(z) M200c)^(1/3)`` (Evrard et al.
    2008, ApJ 672, 122, eq. 1 with ``h(z) = H(z) / 100``), so a model trained at ``z_train``
    reads a cluster at ``z`` as ``M E(z) / E(z_train)``; the correction is
    ``log10(E(z_train) / E(z))``: 0 at the training redshift, -0.011 dex at z_train + 0.05 and
    -0.12 dex at z = 0.6 for z_train = 0.117 (MDPL2 cosmology). It removes the first-order
    evolution only; other redshift effects are why masses outside the validated range are
    refused or flagged.

    Parameters
    ----------
    z : float
        Cluster redshift.
    z_train : float
        Snapshot redshift of the model's training views.
    cosmo : astropy.cosmology.Cosmology
        Cosmology of ``E(z) = H(z) / H0``.

    Returns
    -------
    float
        dex, added to every log10 M200c of the cluster.
    """
    return float(np.log10(cosmo.efunc(z_train) / cosmo.efunc(z)))


#: How ``predict`` maps a cluster at redshift z onto a model trained at z_train:
#: ``"self-similar"`` (:func:`aperture_scale`) or ``"fixed"`` (the training comoving aperture).
REDSHIFT_FRAMES: tuple[str, ...] = ("self-similar", "fixed")


def aperture_scale(z: float, z_train: float, cosmo: Any) -> float:
    """Comoving size, at redshift ``z``, of a cluster that looks at ``z_train`` as it does at z.

    The self-similar frame of ``predict``. A model trained at ``z_train`` reads a cluster from
    its galaxies' velocities (km/s, not rescaled) and radii. A halo of circular velocity
    ``V200`` has physical ``R200c = V200 / (10 H(z))`` (from ``M200c = 100 H^2 R200c^3 / G``),
    so at fixed velocities its comoving radius scales as ``(1 + z) / E(z)``; its mass as
    ``1 / E(z)`` (:func:`redshift_correction_dex`). Observing the cluster at ``z`` through a
    comoving aperture ``aperture x s`` and dividing every projected radius by
    ``s = [(1 + z) / (1 + z_train)] [E(z_train) / E(z)]`` gives it the geometry, relative to
    R200c, that a cluster with the same velocities has in the training views; the mass then
    follows with the E(z) term. With the fixed comoving aperture instead, the R200c of a cluster
    at z = 0.6 is ``s = 1.09`` times larger against it than in training (MDPL2 cosmology,
    z_train = 0.117), so the cylinder holds relatively fewer interlopers and cuts deeper into
    the cluster.

    Parameters
    ----------
    z : float
        Cluster (or snapshot) redshift.
    z_train : float
        Snapshot redshift of the model's training views.
    cosmo : astropy.cosmology.Cosmology
        Cosmology of ``E(z) = H(z) / H0``.

    Returns
    -------
    float
        ``s`` (1 at ``z_train``; 0.972 at z = 0.05, 1.018 at 0.167, 1.086 at 0.6 and 1.068 at
        1.0 for z_train = 0.117, MDPL2 cosmology).

    Examples
    --------
    >>> from dynmass.cosmology import MDPL2, to_astropy
    >>> c = to_astropy(MDPL2)
    >>> round(aperture_scale(0.117, 0.117, c), 6), round(aperture_scale(0.6, 0.117, c), 3)
    (1.0, 1.086)
    """
    return float((1 + z) / (1 + z_train) * cosmo.efunc(z_train) / cosmo.efunc(z))


def frame_scale(z: float, z_train: float | None, cosmo: Any, frame: str = "self-similar") -> float:
    """:func:`aperture_scale` of redshift frame ``frame`` (one of :data:`REDSHIFT_FRAMES`): 1 for
    ``"fixed"``, or when ``z`` or ``z_train`` is unknown.

    Parameters
    ----------
    z, z_train : float or None
        Cluster and training redshifts (NaN or None: unknown).
    cosmo : astropy.cosmology.Cosmology
        Cosmology of ``E(z)``.
    frame : str
        ``"self-similar"`` or ``"fixed"``.

    Raises
    ------
    InputError
        An unknown frame.

    Examples
    --------
    >>> from dynmass.cosmology import MDPL2, to_astropy
    >>> frame_scale(0.6, 0.117, to_astropy(MDPL2), "fixed"), frame_scale(float("nan"), 0.117, None)
    (1.0, 1.0)
    """
    if frame not in REDSHIFT_FRAMES:
        raise InputError(f"redshift_frame must be one of {REDSHIFT_FRAMES}, not {frame!r}",
                         column="redshift_frame")
    if frame == "fixed" or z_train is None or z is None or not np.isfinite(z):
        return 1.0
    return aperture_scale(float(z), float(z_train), cosmo)


def to_training_frame(obs: Any, z_train: float, aperture_train: float, cosmo: Any) -> Any:
    """Mock views at their snapshot redshift, seen as ``predict`` sees a real cluster there.

    ``obs`` must have been observed with the comoving aperture ``aperture_train x s``
    (``s = aperture_scale(z, z_train)``, ``z`` its snapshot redshift); every ``R`` is divided
    by ``s`` and the aperture set to ``aperture_train``, so a model trained at ``z_train``
    accepts the views. ``settings["redshift_frame"]`` records the frame, ``s`` and the
    comoving aperture.

    Parameters
    ----------
    obs : dynmass.observations.Observations
        Views observed at snapshot redshift ``obs.settings["redshift"]``.
    z_train : float
        Training redshift of the model.
    aperture_train : float
        Training aperture, comoving Mpc/h.
    cosmo : astropy.cosmology.Cosmology
        Cosmology of ``E(z)``.

    Raises
    ------
    InputError
        The views' aperture is not ``aperture_train x s``, or they record no redshift.
    """
    from dynmass.observations import Observations

    z = obs.settings.get("redshift")
    if z is None:
        raise InputError("views record no snapshot redshift", column="redshift")
    s = aperture_scale(float(z), float(z_train), cosmo)
    if not np.isclose(obs.aperture, aperture_train * s, rtol=1e-6):
        raise InputError(f"views observed with aperture {obs.aperture:.6g} Mpc/h; the training "
                         f"frame at z={float(z):.4g} needs {aperture_train * s:.6g} "
                         f"(= {aperture_train:g} x {s:.6g})", column="aperture")
    settings = {**obs.settings, "aperture": float(aperture_train),
                "redshift_frame": {"frame": "self-similar", "z_train": float(z_train),
                                   "aperture_scale": s,
                                   "aperture_comoving_mpc_h": float(obs.aperture)}}
    R = np.minimum(obs.R / s, aperture_train)  # rounding at the edge stays inside
    return Observations(clusters=dict(obs.clusters), R=R, v=obs.v, is_member=obs.is_member,
                        galaxy_index=obs.galaxy_index, offsets=obs.offsets, settings=settings)


def views_correction_dex(view_settings: dict[str, Any], train_settings: dict[str, Any]) -> float:
    """The E(z) term (:func:`redshift_correction_dex`) from the training views' snapshot
    redshift to that of other views (0 when either is unknown or they agree).

    Mock views at another redshift are scored as ``predict`` scores a real cluster there: the
    bundle's percentiles plus this term. Calibration therefore pairs each view's ensemble
    prediction with ``true - term`` (the mass a cluster with the same velocities has at the
    training redshift), and coverage checks add the term to the percentiles.

    Parameters
    ----------
    view_settings, train_settings : dict
        Observe settings of the views and of the training views (``redshift``; the cosmology
        of ``train_settings``, MDPL2 when absent).

    Examples
    --------
    >>> round(views_correction_dex({"redshift": 0.6}, {"redshift": 0.117}), 3)
    -0.12
    >>> views_correction_dex({"redshift": 0.117}, {"redshift": 0.117})
    0.0
    """
    from dynmass.cosmology import MDPL2, to_astropy

    z, z_train = view_settings.get("redshift"), train_settings.get("redshift")
    if z is None or z_train is None or np.isclose(float(z), float(z_train), rtol=1e-9, atol=0):
        return 0.0
    cosmo = to_astropy(train_settings.get("cosmology") or MDPL2)
    return redshift_correction_dex(float(z), float(z_train), cosmo)


def _correct_redshift(row: dict[str, Any], bundle: Bundle, z_train: Any, cosmo: Any) -> None:
    """Apply :func:`redshift_correction_dex` to a predicted row (0 when z is unknown)."""
    row["redshift_correction_dex"] = 0.0
    if z_train is None or not np.isfinite(row["z"]) or not np.isfinite(row["log10_m200c_p50"]):
        return
    d = redshift_correction_dex(row["z"], float(z_train), cosmo)
    row["redshift_correction_dex"] = d
    for key in [f"log10_m200c_{pct_name(p)}" for p in bundle.percentiles] + ["log10_m200c_mean"]:
        row[key] += d


def _outside(z: float, z_range: list[float] | None) -> bool:
    """True when redshift ``z`` is known and lies outside ``z_range``."""
    return z_range is not None and bool(np.isfinite(z)) and not z_range[0] <= z <= z_range[1]


def _redshift_check(z: float, z_range: list[float] | None,
                    allow_extrapolation: bool) -> tuple[str, str]:
    """``(error, note)`` of the redshift check of one cluster (empty strings: none)."""
    if z_range is None:
        return "", "the model records no training redshift: redshift not checked"
    span = f"[{z_range[0]:.4g}, {z_range[1]:.4g}]"
    if not np.isfinite(z):
        return "", (f"redshift unknown (R, v given without a centre redshift): not checked "
                    f"against the model's validated range {span}")
    if _outside(z, z_range) and not allow_extrapolation:
        return (f"redshift z={z:.4g} outside the model's validated range {span}; use "
                "--allow-extrapolation (allow_extrapolation=True) to get a mass anyway"), ""
    return "", ""
