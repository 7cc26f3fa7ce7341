"""The observing setup: how a cluster's galaxies are selected, in one object.

:class:`ObservingSetup` holds the cylinder (aperture [comoving Mpc/h], velocity cut [km/s]),
how the centre is found (the true halo centre, or :mod:`dynmass.centring` from the galaxies),
the spectroscopic sampling rate and the fewest galaxies a view needs. The mock observations
(:func:`dynmass.observe.observe`), the calibration views of a bundle, the evaluation and
``dynmass predict`` all take the cut, the centring and the compatibility rule from it.

Its dictionary form (:meth:`ObservingSetup.to_settings`) is the flat set of keys that an
observations file records in its settings (``aperture``, ``vcut``, ``center``,
``sampling_rate``, ``min_members``), so files written before this object existed read back
unchanged (:meth:`ObservingSetup.from_settings`).

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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynmass.centring import Centre, centre_on_members, sky_centre
from dynmass.errors import InputError, SettingsMismatchError

__all__ = ["PRESETS", "CENTER_MODES", "ObservingSetup", "check_same_observing"]

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
    sampling_rate : float
        Each galaxy of a view is kept with this probability, in (0, 1].
    min_members : int
        Views with fewer galaxies (members and interlopers, after sampling) are dropped.
    """

    aperture: float = PRESETS["paper"][0]
    vcut: float = PRESETS["paper"][1]
    center: str = "true"
    sampling_rate: float = 1.0
    min_members: int = 10

    #: Keys of :meth:`to_settings`; settings that must agree for views to be used together.
    KEYS = ("aperture", "vcut", "center", "sampling_rate", "min_members")

    def __post_init__(self) -> None:
        self.validate()

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
        return {"aperture": float(self.aperture), "vcut": float(self.vcut),
                "center": str(self.center), "sampling_rate": float(self.sampling_rate),
                "min_members": int(self.min_members)}

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
        if not (_is_number(self.sampling_rate) and 0 < self.sampling_rate <= 1):
            raise InputError(f"sampling_rate={self.sampling_rate} is outside (0, 1]",
                             column="sampling_rate")
        m = self.min_members
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise InputError(f"min_members={m!r} must be an integer >= 1", column="min_members")

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
                    and not isinstance(x, bool) else x == y)
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


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
        and bool(np.isfinite(x))


def check_same_observing(settings: dict[str, Any], expected: dict[str, Any], what: str,
                         path: object) -> None:
    """Raise :class:`SettingsMismatchError` when ``settings`` were observed unlike ``expected``.

    Both are settings dictionaries (of an observations file, a run or a bundle). The setups
    must be compatible (:meth:`ObservingSetup.compatible_with`; a key that either side does not
    record is not compared), and the snapshot redshift and the cosmology (H0, Om0, sigma8)
    must agree where both say.

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
    """
    keys = [k for k in ObservingSetup.KEYS if settings.get(k) is not None
            and expected.get(k) is not None]
    a = ObservingSetup.from_settings({k: settings[k] for k in keys}, path)
    b = ObservingSetup.from_settings({k: expected[k] for k in keys}, path)
    diff = a.differences(b)
    za, zb = settings.get("redshift"), expected.get("redshift")
    if za is not None and zb is not None and not np.isclose(float(za), float(zb), rtol=1e-6):
        diff.append("redshift")
    if diff:
        key = diff[0]
        raise SettingsMismatchError(
            f"observed with {key}={settings.get(key)!r} but {what} used {expected.get(key)!r}",
            path=path, column=key)
    ca, cb = settings.get("cosmology"), expected.get("cosmology")
    if isinstance(ca, dict) and isinstance(cb, dict):
        for key in ("H0", "Om0", "sigma8"):
            if key in ca and key in cb and not np.isclose(ca[key], cb[key], rtol=1e-6):
                raise SettingsMismatchError(
                    f"cosmology {key}={ca[key]} but {what} used {cb[key]}", path=path,
                    column=f"cosmology.{key}")
