"""The observing setup and survey model: how a cluster's galaxies are observed, in one object.

:class:`ObservingSetup` holds the cylinder (aperture [comoving Mpc/h], velocity cut [km/s]),
how the centre is found (the true halo centre, or :mod:`dynmass.centring` from the galaxies),
the fewest galaxies a view needs, and the spectroscopic survey:

* ``sampling_rate``: each galaxy is targeted with this probability;
* ``completeness_edge``: the completeness falls linearly with projected radius, from 1 at the
  centre to this fraction at the aperture (fibre collisions and slit crowding favour the
  outskirts less; ``1``: flat);
* ``n_targets``: at most this many galaxies of the cylinder get a redshift (a fixed number of
  targets per cluster, chosen at random);
* ``velocity_error``: Gaussian error of each line-of-sight velocity, km/s (added before the
  velocity cut, as a survey measures it);
* ``selection_column`` and ``selection_limit``: only galaxies above a limit in a property
  column (``log10_mstar`` [log10 Msun], or brighter than a magnitude limit) can be targeted;
  none by default (:mod:`dynmass.selection`).

Each survey setting (and the selection limit) is a fixed value or a :class:`Draw` (uniform or
log-uniform between two values) drawn anew for every view from that view's own seeded stream:
training over such *domain randomisation* stops a model from weighing clusters by how many
galaxies one particular survey puts in the cylinder. The mock observations
(:func:`dynmass.observe.observe`), the calibration views of a bundle, the evaluation and
``dynmass predict`` all take the cut, the centring and the compatibility rule from it.

Its dictionary form (:meth:`ObservingSetup.to_settings`) is the flat set of keys that an
observations file records in its settings (``aperture``, ``vcut``, ``center``,
``sampling_rate``, ``min_members``, and the survey keys), so files written before this object
existed read back unchanged (:meth:`ObservingSetup.from_settings`).

Examples
--------
>>> import numpy as np
>>> setup = ObservingSetup.preset("paper")
>>> setup.aperture, setup.vcut
(1.6, 2200.0)
>>> setup.cut(np.array([0.5, 1.7, 1.0]), np.array([100.0, 0.0, -2500.0])).tolist()
[True, False, False]
>>> setup.compatible_with(ObservingSetup.preset("small"))
False
>>> survey = setup.replace(sampling_rate=Draw("loguniform", 0.05, 1.0), velocity_error=50.0)
>>> survey.to_settings()["sampling_rate"]
{'dist': 'loguniform', 'lo': 0.05, 'hi': 1.0}
>>> survey.randomised, ObservingSetup.from_settings(survey.to_settings()) == survey
(True, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynmass.centring import Centre, centre_on_members, sky_centre
from dynmass.draws import Draw, _is_number, inside, value_range  # noqa: F401 (re-exported)
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.selection import check_selection

__all__ = ["PRESETS", "CENTER_MODES", "SURVEY_KEYS", "SELECTION_KEYS", "Draw",
           "ObservingSetup", "check_same_observing"]

#: Named (aperture [comoving Mpc/h], vcut [km/s]) pairs of the authors' public example code
#: (Ho et al. 2019, ApJ 887, 25); "paper" is the revised paper's cylinder.
PRESETS: dict[str, tuple[float, float]] = {
    "paper": (1.6, 2200.0),
    "small": (1.1, 1570.0),
    "large": (2.3, 3785.0),
    "xlarge": (3.5, 6000.0),
}
#: How the cylinder is centred: on the true halo centre and velocity, or on the estimate of
#: :func:`dynmass.centring.centre_on_members` from the galaxies.
CENTER_MODES = ("true", "members")


#: Survey settings that may vary per view (:class:`Draw`).
SURVEY_KEYS = ("sampling_rate", "completeness_edge", "velocity_error")
#: Settings of the galaxy selection (:mod:`dynmass.selection`); absent means none.
SELECTION_KEYS = ("selection_column", "selection_limit")
@dataclass(frozen=True)
class ObservingSetup:
    """How the galaxies of a cluster are observed (cylinder, centring, sampling).

    Parameters
    ----------
    aperture : float
        Cylinder radius, projected comoving Mpc/h (Ho et al. 2019: 1.6).
    vcut : float
        Velocity cut: galaxies with ``|v| <= vcut`` [km/s] relative to the centre (2200).
    center : {"true", "members"}
        Cylinder about the true halo centre and velocity, or about the estimate of
        :func:`dynmass.centring.centre_on_members` from the galaxies (as ``dynmass predict``
        does when no centre is given).
    sampling_rate : float or Draw
        Each galaxy of a view is targeted with this probability, in (0, 1].
    min_members : int
        Views with fewer galaxies (members and interlopers, after sampling) are dropped.
    completeness_edge : float or Draw
        Completeness at ``R = aperture`` relative to the centre, in (0, 1]; it falls linearly
        with projected radius (1: flat). Multiplies ``sampling_rate``.
    n_targets : int, optional
        At most this many galaxies of the cylinder get a redshift (random among them).
    velocity_error : float or Draw
        Gaussian error of each galaxy's line-of-sight velocity, km/s (>= 0).
    selection_column : str, optional
        Galaxy column of the selection, e.g. ``"log10_mstar"`` (log10 Msun, h-free) or a
        magnitude column (``mag*``); ``None``: every galaxy can be targeted.
    selection_limit : float or Draw, optional
        Keep galaxies with ``column >= limit`` (``<=``, brighter, for magnitudes), in the
        column's unit, before the survey; drawn per view when a :class:`Draw`.
    """

    aperture: float = PRESETS["paper"][0]
    vcut: float = PRESETS["paper"][1]
    center: str = "true"
    sampling_rate: float | Draw = 1.0
    min_members: int = 10
    completeness_edge: float | Draw = 1.0
    n_targets: int | None = None
    velocity_error: float | Draw = 0.0
    selection_column: str | None = None
    selection_limit: float | Draw | None = None

    #: Keys of :meth:`to_settings`; settings that must agree for views to be used together.
    KEYS = ("aperture", "vcut", "center", "sampling_rate", "min_members", "completeness_edge",
            "n_targets", "velocity_error", *SELECTION_KEYS)

    def __post_init__(self) -> None:
        for key in (*SURVEY_KEYS, "selection_limit"):
            object.__setattr__(self, key, Draw.parse(getattr(self, key)))
        self.validate()

    @property
    def randomised(self) -> bool:
        """True when a survey setting is drawn per view (:class:`Draw`)."""
        return any(isinstance(getattr(self, k), Draw) for k in SURVEY_KEYS)

    @property
    def survey_active(self) -> bool:
        """True when the survey drops or perturbs galaxies (not every galaxy, exactly)."""
        return (self.randomised or self.sampling_rate < 1 or self.completeness_edge < 1
                or self.n_targets is not None or self.velocity_error > 0)

    # ------------------------------------------------------------------ construction
    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> ObservingSetup:
        """The setup of a named cylinder (:data:`PRESETS`), other settings overridden.

        Parameters
        ----------
        name : str
            Key of :data:`PRESETS`.
        **overrides
            Fields to set (``aperture`` and ``vcut`` given as ``None`` keep the preset's).

        Returns
        -------
        ObservingSetup
        """
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}",
                             column="preset")
        aperture, vcut = PRESETS[name]
        kw = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{"aperture": aperture, "vcut": vcut, **kw})

    @classmethod
    def from_settings(cls, settings: dict[str, Any], path: object = None) -> ObservingSetup:
        """The setup recorded in observe settings (keys missing: the defaults).

        Parameters
        ----------
        settings : dict
            Settings of an observations file, a run or a bundle (other keys are ignored).
        path : optional
            File the settings came from, for messages.

        Returns
        -------
        ObservingSetup
        """
        kw = {k: settings[k] for k in cls.KEYS if settings.get(k) is not None}
        if isinstance(kw.get("n_targets"), float) and float(kw["n_targets"]).is_integer():
            kw["n_targets"] = int(kw["n_targets"])
        try:
            return cls(**kw)
        except InputError as exc:
            if path is None:
                raise
            err = InputError(str(exc), path=path)
            err.column = exc.column
            raise err from None

    def to_settings(self) -> dict[str, Any]:
        """The setup as the flat settings keys of an observations file."""
        out: dict[str, Any] = {"aperture": float(self.aperture), "vcut": float(self.vcut),
                               "center": str(self.center)}
        for key in ("sampling_rate", "min_members", "completeness_edge", "n_targets",
                    "velocity_error", "selection_limit"):
            x = getattr(self, key)
            out[key] = (x.to_json() if isinstance(x, Draw) else None if x is None
                        else int(x) if key in ("min_members", "n_targets") else float(x))
        out["selection_column"] = self.selection_column
        return out

    def survey_settings(self) -> dict[str, Any]:
        """The survey keys only (for the observe kernel)."""
        s = self.to_settings()
        return {k: s[k] for k in (*SURVEY_KEYS, "n_targets")}

    def replace(self, **changes: Any) -> ObservingSetup:
        """A copy with ``changes`` applied (validated).

        Parameters
        ----------
        **changes
            Fields to change.

        Returns
        -------
        ObservingSetup
        """
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise :class:`~dynmass.errors.InputError` naming a setting outside its sense."""
        if not (_is_number(self.aperture) and self.aperture > 0):
            raise InputError(f"aperture={self.aperture} must be a positive number "
                             "(comoving Mpc/h)", column="aperture")
        if not (_is_number(self.vcut) and self.vcut > 0):
            raise InputError(f"vcut={self.vcut} must be a positive number (km/s)",
                             column="vcut")
        if self.center not in CENTER_MODES:
            raise InputError(f"center={self.center!r} must be 'true' or 'members'",
                             column="center")
        for key, lo, hi, lo_open in (("sampling_rate", 0.0, 1.0, True),
                                     ("completeness_edge", 0.0, 1.0, True),
                                     ("velocity_error", 0.0, 3.0e4, False)):
            x = getattr(self, key)
            a, b = value_range(x) if isinstance(x, Draw) or _is_number(x) else (np.nan, np.nan)
            ok = np.isfinite(a) and (a > lo if lo_open else a >= lo) and b <= hi
            if not ok:
                what = f"({lo:g}, {hi:g}]" if lo_open else f"[{lo:g}, {hi:g}]"
                raise InputError(f"{key}={x} is outside {what}", column=key)
        n = self.n_targets
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                              or n < 1):
            raise InputError(f"n_targets={n!r} must be an integer >= 1 or None",
                             column="n_targets")
        m = self.min_members
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise InputError(f"min_members={m!r} must be an integer >= 1", column="min_members")
        check_selection(self.selection_column, self.selection_limit)

    # ------------------------------------------------------------------ use
    def cut(self, R: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The galaxies inside the cylinder: ``R <= aperture`` and ``|v| <= vcut``.

        Parameters
        ----------
        R : numpy.ndarray
            Projected radii from the centre, comoving Mpc/h.
        v : numpy.ndarray
            Line-of-sight velocities relative to the centre, km/s.

        Returns
        -------
        numpy.ndarray of bool
        """
        return (np.asarray(R) <= self.aperture) & (np.abs(np.asarray(v)) <= self.vcut)

    def centre(self, p: np.ndarray, v: np.ndarray) -> Centre:
        """Centre estimated from galaxies about a reference point (the one algorithm).

        Parameters
        ----------
        p : numpy.ndarray
            (m, 2) sky-plane offsets from the reference point, comoving Mpc/h.
        v : numpy.ndarray
            (m,) velocities relative to the reference point, km/s.

        Returns
        -------
        dynmass.centring.Centre
        """
        return centre_on_members(p, v, aperture=self.aperture, vcut=self.vcut)

    def sky_centre(self, ra_deg: np.ndarray, dec_deg: np.ndarray, z: np.ndarray,
                   cosmo: Any) -> tuple[float, float, float]:
        """Centre (RA [deg], Dec [deg], z) of members on the sky (the one algorithm).

        Parameters
        ----------
        ra_deg, dec_deg : numpy.ndarray
            Member coordinates, degrees.
        z : numpy.ndarray
            Member redshifts.
        cosmo : astropy.cosmology.Cosmology
            Cosmology of the comoving transverse distance.

        Returns
        -------
        tuple of float
        """
        return sky_centre(ra_deg, dec_deg, z, aperture=self.aperture, vcut=self.vcut,
                          cosmo=cosmo)

    def differences(self, other: ObservingSetup) -> list[str]:
        """Names of the settings in which ``other`` differs (numbers compared to 1e-6).

        Parameters
        ----------
        other : ObservingSetup
            Setup to compare with.

        Returns
        -------
        list of str
        """
        a, b = self.to_settings(), other.to_settings()
        out = []
        for key in self.KEYS:
            x, y = a[key], b[key]
            same = (bool(np.isclose(x, y, rtol=1e-6)) if isinstance(x, (int, float))
                    and isinstance(y, (int, float)) and not isinstance(x, bool) else x == y)
            if not same:
                out.append(key)
        return out

    def compatible_with(self, other: ObservingSetup) -> bool:
        """True when views observed with ``other`` can be used with views of this setup.

        Parameters
        ----------
        other : ObservingSetup
            Setup to compare with.

        Returns
        -------
        bool
        """
        return not self.differences(other)


def check_same_observing(settings: dict[str, Any], expected: dict[str, Any], what: str,
                         path: object, survey_within: bool = False) -> None:
    """Raise :class:`SettingsMismatchError` when ``settings`` were observed unlike ``expected``.

    Both are settings dictionaries (of an observations file, a run or a bundle). The setups
    must be compatible (:meth:`ObservingSetup.compatible_with`; a key that either side does not
    record is not compared, except the selection: not recorded means none), and the snapshot
    redshift (for ``redshift_frame`` views, :func:`dynmass.redshift.to_training_frame`, the
    frame's ``z_train``) and the cosmology (H0, Om0, sigma8) must agree where both say.

    Parameters
    ----------
    settings : dict
        Settings of the views to check.
    expected : dict
        Settings they must match.
    what : str
        What ``expected`` belongs to, for the message (e.g. "the training views").
    path : optional
        File of ``settings``, for the message.
    survey_within : bool
        Accept survey settings (:data:`SURVEY_KEYS` and the selection limit) that lie inside
        the domain of ``expected``'s (a fixed value or a narrower draw within its draw range,
        e.g. complete surveys among views whose targeting rate was drawn in 0.05-1): views
        of one part of the survey domain a model was trained on.

    Examples
    --------
    >>> drawn = {"sampling_rate": {"dist": "loguniform", "lo": 0.05, "hi": 1.0}}
    >>> check_same_observing({"sampling_rate": 1.0}, drawn, "training", "f.h5",
    ...                      survey_within=True)  # complete: inside the drawn range
    >>> check_same_observing({"sampling_rate": 0.01}, drawn, "training", "f.h5",
    ...                      survey_within=True)
    Traceback (most recent call last):
    ...
    dynmass.errors.SettingsMismatchError: file 'f.h5', column 'sampling_rate': observed with sampling_rate=0.01 outside the range of training {'dist': 'loguniform', 'lo': 0.05, 'hi': 1.0}
    """
    keys = [k for k in ObservingSetup.KEYS if k in SELECTION_KEYS or (
        settings.get(k) is not None and expected.get(k) is not None)]
    a = ObservingSetup.from_settings({k: settings.get(k) for k in keys}, path)
    b = ObservingSetup.from_settings({k: expected.get(k) for k in keys}, path)
    diff = a.differences(b)
    if survey_within:
        diff = [k for k in diff if k not in (*SURVEY_KEYS, "selection_limit")
                or not inside(getattr(a, k), getattr(b, k))]
    # views at another redshift in the self-similar frame match by the frame's z_train
    za = (settings.get("redshift_frame") or {}).get("z_train", settings.get("redshift"))
    zb = expected.get("redshift")
    if za is not None and zb is not None and not np.isclose(float(za), float(zb), rtol=1e-6):
        diff.append("redshift")
    if diff:
        key = diff[0]
        relation = (f"outside the range of {what}" if survey_within and key in
                    (*SURVEY_KEYS, "selection_limit") else f"but {what} used")
        raise SettingsMismatchError(f"observed with {key}={settings.get(key)!r} {relation} "
                                    f"{expected.get(key)!r}", path=path, column=key)
    ca, cb = settings.get("cosmology"), expected.get("cosmology")
    if isinstance(ca, dict) and isinstance(cb, dict):
        for key in ("H0", "Om0", "sigma8"):
            if key in ca and key in cb and not np.isclose(ca[key], cb[key], rtol=1e-6):
                raise SettingsMismatchError(
                    f"cosmology {key}={ca[key]} but {what} used {cb[key]}", path=path,
                    column=f"cosmology.{key}")
