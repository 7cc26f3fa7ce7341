"""The embedded mock universe: halos, large-scale structure and galaxies in a periodic box.

* :mod:`~dynmass.universe.massfunction`: Tinker et al. 2008 M200c mass function, Tinker et al.
  2010 bias, R200c.
* :mod:`~dynmass.universe.field`: Gaussian random field of the linear P(k), biased log-normal
  halo densities, linear-theory velocities.
* :mod:`~dynmass.universe.galaxies`: stellar-mass-threshold occupation (Leauthaud et al. 2011),
  NFW satellites, Jeans velocities with constant anisotropy and velocity bias.
* :mod:`~dynmass.universe.build`: :func:`build_universe` and the streaming
  :func:`write_universe` (bounded memory).
* :mod:`~dynmass.universe.validate`: checks against Tinker et al. 2008, Evrard et al. 2008 and
  b^2 xi_lin, with figures (:func:`check_catalog_file`, used by ``dynmass check``).
"""

from dynmass.universe.build import (
    DEFAULT_BOX,
    DEFAULT_REDSHIFT,
    UniverseSettings,
    build_universe,
    iter_universe_chunks,
    write_universe,
)
from dynmass.universe.galaxies import jeans_sigma_r_dimensionless, populate
from dynmass.universe.massfunction import MassFunctionTable, dndlnm, halo_bias, r200c_comoving
from dynmass.universe.validate import check_catalog, check_catalog_file

__all__ = [
    "DEFAULT_BOX",
    "DEFAULT_REDSHIFT",
    "UniverseSettings",
    "build_universe",
    "iter_universe_chunks",
    "write_universe",
    "populate",
    "jeans_sigma_r_dimensionless",
    "MassFunctionTable",
    "dndlnm",
    "halo_bias",
    "r200c_comoving",
    "check_catalog",
    "check_catalog_file",
]
