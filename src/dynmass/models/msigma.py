"""The M-sigma power law: the classical dynamical mass estimator, as the baseline of Ho et al.

The velocity dispersion ``sigma_v`` of *all* galaxies in the cylinder (members and
interlopers, as an observer would measure it) is related to the mass by a power law,

    log10 sigma_v = alpha (log10 M200c - pivot) + log10 sigma_pivot,

fit by ordinary least squares on the training views and inverted to predict
``log10 M200c = pivot + (log10 sigma_v - log10 sigma_pivot) / alpha`` (Ho et al. 2019, ApJ 887,
25, section 4.1; for dark matter alpha = 0.3361 and sigma_15 = 1082.9 km/s, Evrard et al. 2008,
ApJ 672, 122). ``pivot`` is 15 (M200c in Msun/h).

Estimators of sigma_v [km/s]:

* ``"std"`` (default, as the paper): standard deviation (ddof=0) of the velocities.
* ``"gapper"``: the gapper estimator of Beers, Flynn & Gebhardt 1990 (AJ 100, 32, eq. 8),
  ``sqrt(pi) / (n (n - 1)) sum_i i (n - i) g_i`` with ``g_i`` the gaps of the sorted velocities.
* ``"biweight"``: the biweight midvariance scale (Beers et al. 1990), via
  :func:`astropy.stats.biweight_scale` (tuning constant 9).

Views with fewer than two galaxies (or zero spread) have sigma_v floored at
:data:`SIGMA_FLOOR_KMS` so that predictions stay finite; they are left out of the fit.

Examples
--------
On toy views whose velocities follow the Evrard et al. 2008 relation exactly (no velocity cut
to speak of: vcut = 10^4 km/s), the fitted slope is close to alpha = 0.3361 and the masses
come back:

>>> from dynmass.models.msigma import MSigma
>>> from dynmass.testing.worlds import evrard_views
>>> train = evrard_views(100, 2, seed=0, vcut=1e4)
>>> test = evrard_views(20, 1, seed=1, vcut=1e4)
>>> model = MSigma().fit(train)
>>> round(model.alpha, 2)
0.34
>>> pred = model.predict(test)  # log10 M200c [Msun/h]
>>> pred.shape, bool(abs(pred - test.log10_m200c()).mean() < 0.2)
((20,), True)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dynmass.errors import InputError
from dynmass.models.base import Estimator
from dynmass.observations import Observations, _ragged_rows, ragged_std

__all__ = ["MSigma", "SIGMA_FLOOR_KMS", "velocity_dispersion"]

#: Smallest sigma_v [km/s] used in predictions (views with n < 2 or all-equal velocities).
SIGMA_FLOOR_KMS: float = 10.0

ESTIMATORS = ("std", "gapper", "biweight")


def _gapper(v: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Gapper sigma (Beers et al. 1990) of each ragged segment, vectorised; NaN if n < 2."""
    counts = np.diff(offsets)
    seg = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((v, seg))
    vs = v[order]
    gaps = np.diff(vs)
    # rank i (1-based) of the gap between sorted values i and i+1 within its segment
    rank = np.arange(1, len(vs)) - np.repeat(offsets[:-1], counts)[1:]
    same = seg[1:] == seg[:-1]
    n = counts[seg[1:]]
    w = np.where(same, rank * (n - rank), 0.0)
    tot = np.bincount(seg[1:][same], weights=(w * gaps)[same], minlength=len(counts))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt(np.pi) / (counts * (counts - 1.0)) * tot
    out[counts < 2] = np.nan
    return out


def _biweight(v: np.ndarray, offsets: np.ndarray, chunk_views: int = 4096) -> np.ndarray:
    """Biweight scale of each ragged segment via astropy on NaN-padded chunks; NaN if n < 2."""
    from astropy.stats import biweight_scale

    counts = np.diff(offsets)
    out = np.full(len(counts), np.nan)
    order = np.argsort(counts, kind="stable")  # similar lengths share a padded chunk
    order = order[counts[order] >= 2]
    for start in range(0, len(order), chunk_views):
        idx = order[start:start + chunk_views]
        c = counts[idx]
        pad = np.full((len(idx), int(c.max())), np.nan)
        pad[np.arange(pad.shape[1])[None, :] < c[:, None]] = v[_ragged_rows(offsets[:-1][idx], c)]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[idx] = biweight_scale(pad, c=9.0, axis=1, ignore_nan=True)
    return out


def velocity_dispersion(obs: Observations, estimator: str = "std") -> np.ndarray:
    """Line-of-sight velocity dispersion [km/s] of all galaxies of each view.

    Parameters
    ----------
    obs : Observations
        Views.
    estimator : {"std", "gapper", "biweight"}
        See the module docstring.

    Returns
    -------
    numpy.ndarray
        sigma_v per view, km/s; NaN where a view has fewer than two galaxies.
    """
    v = np.asarray(obs.v, dtype=np.float64)
    off = np.asarray(obs.offsets, dtype=np.int64)
    if estimator == "std":
        out = ragged_std(v, off)
        out[np.diff(off) < 2] = np.nan
        return out
    if estimator == "gapper":
        return _gapper(v, off)
    if estimator == "biweight":
        return _biweight(v, off)
    raise InputError(f"unknown sigma estimator {estimator!r}; choose from {ESTIMATORS}")


class MSigma(Estimator):
    """M-sigma power law fit on training views and inverted (Ho et al. 2019 baseline).

    Parameters
    ----------
    estimator : {"std", "gapper", "biweight"}
        sigma_v estimator (``"std"`` as the paper).
    pivot : float
        Pivot of the fit, log10 M200c [Msun/h] (15).
    """

    name: ClassVar[str] = "msigma"
    defaults: ClassVar[dict[str, Any]] = {"estimator": "std", "pivot": 15.0}

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if self.settings["estimator"] not in ESTIMATORS:
            raise InputError(
                f"unknown sigma estimator {self.settings['estimator']!r}; choose from {ESTIMATORS}"
            )
        self.alpha: float | None = None
        self.log10_sigma_pivot: float | None = None

    def fit(self, obs: Observations, *, seed: int = 0, **kwargs: Any) -> MSigma:
        """Least-squares fit of log10 sigma_v on log10 M200c - pivot over the training views.

        Parameters
        ----------
        obs : Observations
            Training views with ``clusters["m200c"]`` [Msun/h].
        seed : int
            Unused (the fit is deterministic); accepted for the common interface.
        **kwargs
            Ignored (accepted for the common interface).

        Returns
        -------
        MSigma
            ``self``, fitted.
        """
        self.remember_obs_settings(obs)
        sigma = velocity_dispersion(obs, self.settings["estimator"])
        logm = obs.log10_m200c()
        ok = np.isfinite(sigma) & (sigma > 0) & np.isfinite(logm)
        if ok.sum() < 2 or np.ptp(logm[ok]) == 0:
            raise InputError(
                f"msigma needs at least two views with distinct masses and >= 2 galaxies; "
                f"got {int(ok.sum())} usable views"
            )
        x = logm[ok] - self.settings["pivot"]
        y = np.log10(sigma[ok])
        alpha, inter = np.polyfit(x, y, 1)
        if alpha <= 0:
            raise InputError(f"fitted M-sigma slope is {alpha:.3g} <= 0; cannot invert")
        self.alpha, self.log10_sigma_pivot = float(alpha), float(inter)
        resid = y - (alpha * x + inter)
        self.extra = {"n_fit_views": int(ok.sum()), "scatter_log10_sigma_dex": float(resid.std())}
        return self

    def predict_from_sigma(self, sigma_kms: np.ndarray) -> np.ndarray:
        """log10 M200c [Msun/h] from sigma_v [km/s] by inverting the fitted power law."""
        if self.alpha is None:
            raise InputError("model 'msigma' is not fitted")
        s = np.asarray(sigma_kms, dtype=np.float64)
        s = np.where(np.isfinite(s), np.maximum(s, SIGMA_FLOOR_KMS), SIGMA_FLOOR_KMS)
        return self.settings["pivot"] + (np.log10(s) - self.log10_sigma_pivot) / self.alpha

    def predict(self, obs: Observations) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] of every view of ``obs``."""
        self.check_obs(obs)
        return self.predict_from_sigma(velocity_dispersion(obs, self.settings["estimator"]))

    def get_arrays(self) -> dict[str, np.ndarray]:
        """``alpha`` and ``log10_sigma_pivot`` [log10 km/s]."""
        if self.alpha is None:
            raise InputError("model 'msigma' is not fitted")
        return {"alpha": np.array(self.alpha), "log10_sigma_pivot": np.array(self.log10_sigma_pivot)}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the fitted coefficients."""
        self.alpha = float(arrays["alpha"])
        self.log10_sigma_pivot = float(arrays["log10_sigma_pivot"])
