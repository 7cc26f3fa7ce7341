"""A toy estimator that weighs clusters partly by how many galaxies it sees, for tests.

:class:`ToyRichness` fits ``log10 M200c = a + b log10 sigma_v + c log10 n_gal`` by least
squares. In the toy worlds of :func:`dynmass.testing.estimators.make_observations` the number
of members grows with mass, so the richness term carries real information, but dropping
galaxies (the sampling-rate test, :mod:`dynmass.sampling`) lowers ``n_gal`` and with it the
predicted mass: the median prediction at fixed true mass moves, as CNN2D's does on the mock
(it sees the number of galaxies in the cylinder). Its counterpart, whose median prediction
does not depend on N, is :class:`~dynmass.testing.estimators.ToySigma`.

Files written by it are read back by :func:`dynmass.models.load_model` only while it is
registered: use :func:`richness_model_registered` (together with
:func:`~dynmass.testing.estimators.toy_models_registered` for the other toys).

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from dynmass.observations import read_observations
>>> from dynmass.testing.estimators import make_observations
>>> from dynmass.testing.richness import ToyRichness
>>> obs = read_observations(make_observations(Path(tempfile.mkdtemp()) / "obs.h5",
...                                           np.random.default_rng(0), n_halos=200))
>>> model = ToyRichness().fit(obs)
>>> full = model.predict(obs)
>>> half = model.predict(obs.resample(0.5, seed=0, min_gal=3))
>>> bool(np.median(half - full) < -0.1)  # dex: fewer galaxies, lower masses
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dynmass.models import base as model_base
from dynmass.observations import Observations, from_views, ragged_std, write_observations
from dynmass.testing.estimators import ToySigma
from dynmass.testing.runs import TOY_OBS_SETTINGS
from dynmass.testing.worlds import evrard_sigma

__all__ = ["RICHNESS_MODELS", "ToyRichness", "make_rich_observations",
           "richness_model_registered"]


def make_rich_observations(path: Path, rng: np.random.Generator, n_halos: int = 1000,
                           n_los: int = 2, n_at_1e14: int = 100) -> Path:
    """Write views of pure members whose number grows with mass, many galaxies each.

    Host masses are log10 M200c uniform in [14.0, 15.0) (Msun/h), so that every 0.2-dex bin
    of the sampling-rate claim (:func:`dynmass.sampling.median_shift_claim`) is filled; a view
    holds ``N ~ Poisson(n_at_1e14 10^(0.5 (log10 M - 14)))`` members (drawn once per host;
    100 to 316 on average by default: the richness carries information on the mass, with
    scatter) with Gaussian velocities of dispersion
    :func:`~dynmass.testing.worlds.evrard_sigma` (clipped to +/-2499 km/s), no interlopers,
    projected radii uniform in [0, 1.6) Mpc/h. With that many galaxies the median of a
    dispersion-based prediction barely moves when half of them are dropped (the ddof=0 bias of
    :class:`~dynmass.testing.estimators.ToySigma` is below 0.003 dex), and the median shift
    in each bin is measured to about 0.005 dex. Halo ids start at 1000.

    Parameters
    ----------
    path : pathlib.Path
        Observations file (HDF5) to write.
    rng : numpy.random.Generator
        Source of every draw.
    n_halos, n_los : int
        Hosts and views per host.
    n_at_1e14 : int
        Members of a 10^14 Msun/h host.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    lm = rng.uniform(14.0, 15.0, n_halos)
    views, hid, los, m = [], [], [], []
    for h in range(n_halos):
        sigma = float(evrard_sigma(lm[h]))
        n_mem = int(rng.poisson(n_at_1e14 * 10 ** (0.5 * (lm[h] - 14.0))))
        for j in range(n_los):
            v = np.clip(rng.normal(0, sigma, n_mem), -2499, 2499)
            views.append((rng.uniform(0, 1.6, n_mem), v))
            hid.append(1000 + h)
            los.append(j)
            m.append(10 ** lm[h])
    obs = from_views(views, dict(TOY_OBS_SETTINGS), clusters={
        "halo_id": np.array(hid), "los": np.array(los), "m200c": np.array(m)})
    return write_observations(obs, path)


def _design(obs: Observations) -> np.ndarray:
    """Columns log10 sigma_v [km/s], log10 n_gal and 1 of every view."""
    return np.column_stack([np.log10(ragged_std(obs.v, obs.offsets)),
                            np.log10(np.maximum(obs.n_gal, 1)), np.ones(obs.n_views)])


class ToyRichness(ToySigma):
    """``log10 M200c = a + b log10 sigma_v + c log10 n_gal``: its mass depends on N.

    ``sigma_v`` (km/s) is the standard deviation (ddof=0) of each view's line-of-sight
    velocities and ``n_gal`` its number of galaxies; ``(b, c, a)`` are the least-squares
    coefficients on the training views, masses as log10 M200c in Msun/h.
    """

    name: ClassVar[str] = "toy_richness"

    def fit(self, obs: Observations, *, seed: int = 0, **kw: Any) -> ToyRichness:
        """Least-squares fit of log10 M200c on log10 sigma_v and log10 n_gal (exact).

        Parameters
        ----------
        obs : Observations
            Training views (velocities in km/s, masses M200c in Msun/h).
        seed : int
            Unused (the fit is deterministic).
        **kw
            Ignored (the keywords other estimators' ``fit`` takes).

        Returns
        -------
        ToyRichness
            ``self``.
        """
        self.remember_obs_settings(obs)
        self.coef = np.linalg.lstsq(_design(obs), obs.log10_m200c(), rcond=None)[0]
        return self

    def predict(self, obs: Observations) -> np.ndarray:
        """log10 M200c [Msun/h] of every view."""
        self.check_obs(obs)
        return _design(obs) @ self.coef


#: Name and ``module:class`` of the richness toy, as :data:`MODEL_NAMES` wants them.
RICHNESS_MODELS: dict[str, str] = {"toy_richness": f"{__name__}:ToyRichness"}


@contextmanager
def richness_model_registered() -> Iterator[type[ToyRichness]]:
    """Register :class:`ToyRichness` in :data:`MODEL_NAMES` for the duration of the block.

    On exit the registry is restored exactly (an entry of the same name that existed before is
    put back).

    Yields
    ------
    type
        :class:`ToyRichness`.
    """
    names = model_base.MODEL_NAMES
    before = {k: names[k] for k in RICHNESS_MODELS if k in names}
    names.update(RICHNESS_MODELS)
    try:
        yield ToyRichness
    finally:
        for k in RICHNESS_MODELS:
            if k in before:
                names[k] = before[k]
            else:
                names.pop(k, None)
