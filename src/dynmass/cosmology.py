"""Cosmologies: plain parameter dictionaries at rest, astropy and colossus objects at the edges.

The default is that of the MultiDark Planck 2 simulation used by Ho et al. 2019 (Klypin et al.
2016, MNRAS 457, 4340): h = 0.6777, Omega_m = 0.307115, Omega_b = 0.048206, sigma8 = 0.8228,
n_s = 0.96, flat LambdaCDM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dynmass.errors import InputError

#: MDPL2 cosmology (Klypin et al. 2016). H0 in km/s/Mpc.
MDPL2: dict[str, Any] = {
    "name": "MDPL2",
    "H0": 67.77,
    "Om0": 0.307115,
    "Ob0": 0.048206,
    "sigma8": 0.8228,
    "ns": 0.96,
    "Tcmb0": 2.7255,
    "flat": True,
}

#: Speed of light in km/s.
C_KMS = 299792.458


def validate_cosmology(cosmo: dict[str, Any], path: object | None = None) -> dict[str, Any]:
    """Check that a cosmology dictionary has at least ``H0`` and ``Om0`` with sane values.

    Missing ``Ob0``, ``sigma8``, ``ns``, ``Tcmb0`` are filled from :data:`MDPL2` (they matter
    only for power spectra and mass functions, not for distances).

    Parameters
    ----------
    cosmo : dict
        Cosmological parameters: ``H0`` (km/s/Mpc, in (10, 200)), ``Om0`` (in (0, 1]) and
        optionally ``Ob0``, ``sigma8``, ``ns``, ``Tcmb0`` (K), ``flat``, ``name``.
    path : str or os.PathLike, optional
        File to name in error messages.

    Returns
    -------
    dict
        A new dictionary: ``cosmo``'s entries over MDPL2's other parameters, ``name``
        ``"custom"`` unless ``cosmo`` names itself.

    Raises
    ------
    InputError
        ``H0`` or ``Om0`` missing or out of range.
    """
    for key in ("H0", "Om0"):
        if key not in cosmo:
            raise InputError(f"cosmology lacks '{key}'", path=path, column="cosmology")
    out = {**{k: v for k, v in MDPL2.items() if k != "name"}, "name": "custom", **cosmo}
    if not (10.0 < float(out["H0"]) < 200.0):
        raise InputError(f"H0={out['H0']} km/s/Mpc is outside (10, 200)", path=path)
    if not (0.0 < float(out["Om0"]) <= 1.0):
        raise InputError(f"Om0={out['Om0']} is outside (0, 1]", path=path)
    return out


def little_h(cosmo: dict[str, Any]) -> float:
    """Dimensionless Hubble parameter h = H0 / (100 km/s/Mpc)."""
    return float(cosmo["H0"]) / 100.0


def to_astropy(cosmo: dict[str, Any]):
    """Return an :class:`astropy.cosmology.FlatLambdaCDM` (or LambdaCDM) for ``cosmo``."""
    from astropy.cosmology import FlatLambdaCDM, LambdaCDM

    c = validate_cosmology(cosmo)
    if c.get("flat", True):
        return FlatLambdaCDM(H0=c["H0"], Om0=c["Om0"], Ob0=c["Ob0"], Tcmb0=c["Tcmb0"], name=c["name"])
    return LambdaCDM(
        H0=c["H0"], Om0=c["Om0"], Ode0=c.get("Ode0", 1 - c["Om0"]), Ob0=c["Ob0"], Tcmb0=c["Tcmb0"]
    )


def from_astropy(cosmo) -> dict[str, Any]:
    """Parameter dictionary for an astropy cosmology (sigma8 and ns from MDPL2 if unknown)."""
    d = dict(MDPL2)
    d.update(
        name=str(cosmo.name or "astropy"),
        H0=float(cosmo.H0.value),
        Om0=float(cosmo.Om0),
        Ob0=float(cosmo.Ob0) if cosmo.Ob0 is not None else MDPL2["Ob0"],
        Tcmb0=float(cosmo.Tcmb0.value),
        flat=bool(abs(cosmo.Ok0) < 1e-8),
    )
    return d


def hubble_parameter(cosmo: dict[str, Any], z: float) -> float:
    """H(z) in km/s/Mpc.

    Parameters
    ----------
    cosmo : dict
        Cosmological parameters (``H0`` in km/s/Mpc, ``Om0``, ...).
    z : float
        Redshift.

    Returns
    -------
    float
        Hubble parameter at ``z``, km/s/Mpc.
    """
    return float(to_astropy(cosmo).H(z).value)


def hubble_h_units(cosmo: dict[str, Any], z: float) -> float:
    """H(z) in km/s per (Mpc/h) physical: H(z) / h. Equals 100 E(z).

    Parameters
    ----------
    cosmo : dict
        Cosmological parameters (``H0`` in km/s/Mpc, ``Om0``, ...).
    z : float
        Redshift.

    Returns
    -------
    float
        H(z) / h, km/s per physical Mpc/h.
    """
    return hubble_parameter(cosmo, z) / little_h(cosmo)


@contextlib.contextmanager
def colossus_cosmology(cosmo: dict[str, Any]) -> Iterator[Any]:
    """Make ``cosmo`` colossus' current cosmology inside the block and restore it afterwards.

    colossus keeps a global "current" cosmology; this keeps that state local to a call.
    """
    from colossus.cosmology import cosmology as ccosmo

    c = validate_cosmology(cosmo)
    params = {
        "flat": bool(c.get("flat", True)),
        "H0": float(c["H0"]),
        "Om0": float(c["Om0"]),
        "Ob0": float(c["Ob0"]),
        "sigma8": float(c["sigma8"]),
        "ns": float(c["ns"]),
        "Tcmb0": float(c["Tcmb0"]),
    }
    try:
        previous = ccosmo.getCurrent()
    except Exception:
        previous = None
    obj = ccosmo.Cosmology(name="dynmass_" + str(c["name"]), persistence="", **params)
    ccosmo.setCurrent(obj)
    try:
        yield obj
    finally:
        if previous is not None:
            ccosmo.setCurrent(previous)
