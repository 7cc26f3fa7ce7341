"""The embedded mock universe: halos, large-scale structure and galaxies in a periodic box.

* :mod:`~dynmass.universe.massfunction`: Tinker et al. 2008 M200c mass function, Tinker et al.
  2010 bias, R200c.
* :mod:`~dynmass.universe.field`: Gaussian random field of the linear P(k), biased log-normal
  halo densities, linear-theory velocities.
* :mod:`~dynmass.universe.galaxies`: stellar-mass-threshold occupation (Leauthaud et al. 2011),
  NFW satellites, Jeans velocities with constant anisotropy and velocity bias.
* :mod:`~dynmass.universe.occupation`: the choice of occupation model (``occupation``
  setting) and the luminosity-threshold occupation of Zheng et al. 2007 (``"zheng07"``): the
  same halos, another occupation.
* :mod:`~dynmass.universe.build`: :func:`build_universe` and the streaming
  :func:`write_universe` (bounded memory).
* :mod:`~dynmass.universe.validate`: checks against Tinker et al. 2008, Evrard et al. 2008 and
  b^2 xi_lin, with figures (:func:`check_catalog_file`, used by ``dynmass check``).
* The ``outskirts`` option (off by default; issue 13): :mod:`~dynmass.universe.outskirts`
  (satellites beyond R200c on the Diemer & Kravtsov 2014 orbiting profile of
  :mod:`~dynmass.universe.orbiting`),
  :mod:`~dynmass.universe.shapes` (triaxial halos, aligned velocity ellipsoids),
  :mod:`~dynmass.universe.infall` (infall around massive halos, measured on the N-body engine) and
  :mod:`~dynmass.universe.validate_outskirts` (step at R200c, infall, turnaround, interloper
  velocities, sigma_los viewing-angle spread).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Default box side, comoving Mpc/h, and redshift (kept here so the CLI imports nothing heavy).
DEFAULT_BOX = 400.0
DEFAULT_REDSHIFT = 0.117

#: Occupation models of the mock universe (the first is the default) and the default r-band
#: threshold (M_r - 5 log10 h) of ``"zheng07"``; see :mod:`dynmass.universe.occupation`.
OCCUPATIONS: tuple[str, ...] = ("leauthaud11", "zheng07")
ZHENG07_DEFAULT_THRESHOLD = -20.5

_EXPORTS = {
    "UniverseSettings": "dynmass.universe.build",
    "build_universe": "dynmass.universe.build",
    "iter_universe_chunks": "dynmass.universe.build",
    "write_universe": "dynmass.universe.build",
    "populate": "dynmass.universe.galaxies",
    "jeans_sigma_r_dimensionless": "dynmass.universe.galaxies",
    "place_galaxies": "dynmass.universe.galaxies",
    "populate_zheng07": "dynmass.universe.occupation",
    "zheng07_mean_occupation": "dynmass.universe.occupation",
    "zheng07_parameters": "dynmass.universe.occupation",
    "MassFunctionTable": "dynmass.universe.massfunction",
    "dndlnm": "dynmass.universe.massfunction",
    "halo_bias": "dynmass.universe.massfunction",
    "r200c_comoving": "dynmass.universe.massfunction",
    "check_catalog": "dynmass.universe.validate",
    "check_catalog_file": "dynmass.universe.validate",
    "check_outskirts": "dynmass.universe.validate_outskirts",
}

__all__ = ["DEFAULT_BOX", "DEFAULT_REDSHIFT", "OCCUPATIONS", "ZHENG07_DEFAULT_THRESHOLD",
           *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import the public API lazily (keeps ``dynmass --help`` fast)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dynmass.universe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
