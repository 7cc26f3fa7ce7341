"""Test support shipped with dynmass: toy worlds, synthetic run folders, and bounds for tests
of random experiments set from their measured spread over seeds.

Users testing their own models or catalogs against dynmass can use these too, in the manner of
:mod:`numpy.testing`.

* :mod:`dynmass.testing.worlds`: views with a known mass-velocity relation.
* :mod:`dynmass.testing.runs`: run folders as ``dynmass train`` writes them.
* :mod:`dynmass.testing.bounds`: :class:`~dynmass.testing.bounds.StochasticCheck` and
  :class:`~dynmass.testing.bounds.Bound`.
"""

from dynmass.testing.bounds import Bound, StochasticCheck, assert_within
from dynmass.testing.worlds import cylinder_views, evrard_sigma, evrard_views

__all__ = ["Bound", "StochasticCheck", "assert_within", "cylinder_views", "evrard_sigma",
           "evrard_views"]
