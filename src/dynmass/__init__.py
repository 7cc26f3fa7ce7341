"""dynmass: dynamical masses of galaxy clusters from the kinematics of their member galaxies.

Implements and extends Ho et al. 2019 (ApJ 887, 25; arXiv:1902.05950): convolutional networks
on kernel density estimates of the line-of-sight velocities (CNN1D) and of the joint
projected-radius / velocity distribution (CNN2D) of galaxies in a cylinder around a cluster,
trained on mock observations with interlopers, compared with the M-sigma power law and
distribution regression (SDM).

Pipeline stages (one module each): ``universe`` -> ``observe`` -> ``features`` -> ``train``
-> ``evaluate`` / ``report``; ``predict`` for real clusters.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dynmass")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from dynmass.catalog import Catalog, read_catalog, write_catalog
from dynmass.errors import DynmassError, InputError
from dynmass.observations import Observations, read_observations, write_observations

__all__ = [
    "__version__",
    "Catalog",
    "read_catalog",
    "write_catalog",
    "Observations",
    "read_observations",
    "write_observations",
    "DynmassError",
    "InputError",
]
