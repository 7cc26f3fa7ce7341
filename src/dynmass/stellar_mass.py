"""The unit of galaxy stellar masses: ``log10_mstar`` is log10 M* in Msun, h-free.

One convention throughout dynmass: the galaxy column ``log10_mstar`` holds log10 of the
stellar mass in solar masses (**not** Msun/h^2), for the cosmology of the catalog (its h
applied); every stellar-mass threshold (``mstar_min`` of the universe, of the readers, and the
galaxy selection of :mod:`dynmass.selection`) is in the same unit. Halo masses stay M200c in
Msun/h. Catalog files record it: ``units["log10_mstar"] = "log10 Msun"`` (:data:`MSTAR_UNIT`).

Where stellar masses come from
------------------------------
* The embedded universe (:func:`dynmass.universe.galaxies.populate`) uses halotools'
  ``Behroozi10SmHm`` and ``Leauthaud11Sats``, which work in "h = 1 units": halo masses in
  Msun/h and stellar masses in Msun/h^2 (Behroozi et al. 2010, ApJ 717, 379 and Leauthaud et
  al. 2011, ApJ 738, 45 fit with h = 0.7 and 0.72; halotools converts to h = 1 with
  M*_{h=1} = M*_{h} h^2, the h-scaling of Croton 2013, PASA 30, e052). The stellar mass in
  Msun for a cosmology with Hubble parameter h is then M* = M*_{h=1} / h^2:
  ``log10 M* [Msun] = log10 M*_{h=1} - 2 log10 h`` (:func:`msun_from_h1`), and a threshold
  in Msun is ``mstar_min + 2 log10 h`` in halotools' units (:func:`h1_from_msun`). For
  MDPL2 (h = 0.6777), ``-2 log10 h = +0.338`` dex.
* UniverseMachine catalogs (Behroozi et al. 2019, MNRAS 488, 3143) give SM and obs_SM in Msun
  (:func:`dynmass.readers_um.read_universemachine`): stored as they are.
* Generic tables (:func:`dynmass.readers_table.read_table`): a mapped ``log10_mstar`` column
  must already be log10 Msun.

Before this convention, the embedded universe stored halotools' h = 1 numbers in
``log10_mstar`` and compared ``mstar_min`` with them: ``mstar_min = 9.5`` cut at
10^(9.5 + 0.338) = 10^9.84 Msun in MDPL2, while the UniverseMachine reader read Msun.

Files that record no unit (:func:`check_file_mstar`)
----------------------------------------------------
Catalog files written before the convention have no ``units["log10_mstar"]``. Reading their
``log10_mstar`` (:func:`dynmass.catalog.read_catalog`):

* made by dynmass's own occupation model (settings ``generator`` =
  ``dynmass.universe.build_universe`` with the ``leauthaud11`` occupation, or the ``hlist``
  reader with ``galaxies="hod"``): the values are halotools' h = 1 numbers; they are
  **converted** to log10 Msun with the file's h, with a :class:`StellarMassUnitWarning`
  naming the file, the column, the shift and the completeness limit in Msun;
* made by the UniverseMachine reader: already log10 Msun, read as they are;
* anything else: read as log10 Msun (the readers' documented unit), with a
  :class:`StellarMassUnitWarning` saying so.

A recorded unit other than :data:`MSTAR_UNIT` is refused (:class:`~dynmass.errors.InputError`
naming the file and column).

Examples
--------
>>> from dynmass.cosmology import MDPL2
>>> round(msun_from_h1(9.5, MDPL2), 3), round(h1_from_msun(9.5, MDPL2), 3)
(9.838, 9.162)
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dynmass.cosmology import little_h
from dynmass.errors import InputError

__all__ = ["MSTAR_UNIT", "StellarMassUnitWarning", "check_file_mstar", "h1_from_msun",
           "msun_from_h1"]

#: The unit of the galaxy column ``log10_mstar`` (recorded in catalog files' ``units``).
MSTAR_UNIT = "log10 Msun"
#: halotools' unit of stellar masses (its "h = 1 units"), for messages.
H1_UNIT = "log10 Msun/h^2 (halotools' h = 1 units)"


class StellarMassUnitWarning(UserWarning):
    """A catalog file's stellar masses were converted, or their unit assumed."""


def _two_log_h(cosmo: dict[str, Any]) -> float:
    return 2.0 * float(np.log10(little_h(cosmo)))


def msun_from_h1(log10_mstar_h1: Any, cosmo: dict[str, Any]) -> Any:
    """log10 M* [Msun] from halotools' h = 1 value: ``log10 M*_{h=1} - 2 log10 h``.

    Parameters
    ----------
    log10_mstar_h1 : float or numpy.ndarray
        log10 stellar mass in Msun/h^2 (halotools' h = 1 units).
    cosmo : dict
        Cosmology (``H0`` in km/s/Mpc gives h).

    Returns
    -------
    float or numpy.ndarray
        log10 stellar mass in Msun.
    """
    return log10_mstar_h1 - _two_log_h(cosmo)


def h1_from_msun(log10_mstar_msun: Any, cosmo: dict[str, Any]) -> Any:
    """halotools' h = 1 value of log10 M* [Msun]: ``log10 M* + 2 log10 h``.

    Parameters
    ----------
    log10_mstar_msun : float or numpy.ndarray
        log10 stellar mass in Msun.
    cosmo : dict
        Cosmology (``H0`` in km/s/Mpc gives h).

    Returns
    -------
    float or numpy.ndarray
        log10 stellar mass in Msun/h^2 (halotools' h = 1 units).
    """
    return log10_mstar_msun + _two_log_h(cosmo)


def _made_by_halotools_occupation(settings: dict[str, Any]) -> bool:
    """True when dynmass's own (halotools) occupation model made the stellar masses."""
    if settings.get("generator") == "dynmass.universe.build_universe":
        return settings.get("occupation", "leauthaud11") == "leauthaud11"
    return settings.get("reader") == "hlist" and settings.get("galaxies") == "hod"


def check_file_mstar(values: np.ndarray, units: dict[str, Any] | None,
                     settings: dict[str, Any], cosmo: dict[str, Any],
                     path: object) -> np.ndarray:
    """The ``log10_mstar`` column of a catalog file in log10 Msun (module docstring's rules).

    Parameters
    ----------
    values : numpy.ndarray
        The column as stored.
    units : dict or None
        The file's ``units`` attribute (None when it has none).
    settings : dict
        The file's ``settings`` attribute (the generator's or reader's settings).
    cosmo : dict
        The file's cosmology (its h converts old h = 1 values).
    path : object
        The file, for messages.

    Returns
    -------
    numpy.ndarray
        log10 stellar masses in Msun (a converted copy, or ``values``).

    Raises
    ------
    InputError
        The file records a unit other than :data:`MSTAR_UNIT`.
    """
    recorded = (units or {}).get("log10_mstar")
    if recorded is not None:
        if recorded != MSTAR_UNIT:
            raise InputError(f"stellar masses recorded in {recorded!r}; dynmass reads "
                             f"{MSTAR_UNIT!r} only", path=path, column="galaxies/log10_mstar")
        return values
    if settings.get("reader") == "universemachine":
        return values  # the reader stored UniverseMachine's Msun
    if _made_by_halotools_occupation(settings):
        shift = -_two_log_h(cosmo)
        msg = (f"file '{path}', column 'galaxies/log10_mstar': no unit recorded; written by "
               f"dynmass's occupation model before stellar masses were h-free, it holds "
               f"{H1_UNIT}; converted to {MSTAR_UNIT} with h = {little_h(cosmo):g} "
               f"({shift:+.3f} dex)")
        if settings.get("mstar_min") is not None:
            msg += (f"; its threshold mstar_min = {settings['mstar_min']:g} was in the same "
                    f"units, so the galaxies are complete above "
                    f"10^{float(settings['mstar_min']) + shift:.3f} Msun")
        warnings.warn(msg, StellarMassUnitWarning, stacklevel=3)
        return (np.asarray(values, dtype=np.float64) + shift).astype(np.asarray(values).dtype)
    warnings.warn(f"file '{path}', column 'galaxies/log10_mstar': no unit recorded; read as "
                  f"{MSTAR_UNIT} (the unit of dynmass's readers)", StellarMassUnitWarning,
                  stacklevel=3)
    return values
