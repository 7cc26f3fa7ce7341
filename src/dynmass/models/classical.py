"""Classical dynamical-mass estimators: interloper removal, then a virial or projected mass
with R200c solved self-consistently, as ``dynmass train --model`` names.

``gapper_virial`` / ``gapper_pme``: shifting gapper (Fadda et al. 1996), then the virial /
projected mass; ``clip_virial`` / ``clip_pme``: 3-sigma clipping instead (both removals, and
``gapper_msigma``, are in :mod:`dynmass.models.interlopers`); ``caustic``:
:mod:`dynmass.models.caustic`.

Units: ``Observations.R`` is comoving Mpc/h; the estimators use the physical radius
``r = R / (1 + z)`` [Mpc/h] at the snapshot redshift ``z = obs.settings["redshift"]``, the
rest-frame velocities ``v`` [km/s], ``G`` [km^2 s^-2 Mpc / Msun] (astropy; ``v^2 r / G`` is in
Msun/h) and ``rho_c(z) = 3 H(z)^2 / (8 pi G)`` [(Msun/h) / (Mpc/h)^3, physical] of the
observations' cosmology (astropy).

Mass estimators (members ``i = 1..N`` with projected radius ``r_i`` from the cluster centre and
velocity ``v_i`` relative to their mean ``vbar``), from Heisler, Tremaine & Bahcall 1985 (ApJ
298, 8; HTB85):

* Virial: ``M_VT = (3 pi N / (2 G)) sum_i (v_i - vbar)^2 / sum_{i<j} 1 / r_ij``, equivalently
  ``(3 pi / G) sigma^2 R_H N / (N - 1)`` with ``sigma^2`` the mean squared velocity and
  ``1 / R_H`` the mean over pairs of ``1 / r_ij``. Observations keep no position angles, so
  each ``1 / r_ij`` is replaced by its average over a uniformly random relative angle (an
  azimuthally symmetric cluster): ``<1 / r_ij> = 2 K(m) / (pi (r_i + r_j))`` with
  ``m = 4 r_i r_j / (r_i + r_j)^2`` and ``K(m) = int_0^{pi/2} (1 - m sin^2 t)^(-1/2) dt`` the
  complete elliptic integral of the first kind (Abramowitz & Stegun 1964, eq. 17.3.1; the
  substitution ``theta = pi - 2 t`` turns the angle average into it).
* Projected mass: ``M_PM = (f_PM / (G (N - alpha))) sum_i (v_i - vbar)^2 r_i`` with
  ``f_PM = 32 / pi`` (isotropic orbits; Bahcall & Tremaine 1981, ApJ 244, 805) and
  ``alpha = 1.5`` (HTB85).

R200c is solved self-consistently (:func:`solve_r200c`): start with ``r`` = the aperture
(physical); repeat: take the members with ``r_i <= r`` (fail if fewer than ``min_members``),
read their mass estimate as the mass within the 3D radius ``r``, convert it to M200c with an
NFW profile and the c200c(M) of Diemer & Joyce 2019 (ApJ 871, 168; :func:`m200c_from_enclosed`),
set ``r = min(R200c(M200c), aperture)``; stop when the new ``r`` is within ``tol`` (1e-3,
relative) of a radius already tried -- the last one (a fixed point) or an earlier one (a cycle:
galaxies at the boundary fall in and out) -- and return the mean log10 M200c over the cycle.
At a fixed point inside the aperture the estimate from the members within R200c *is* M200c:
the NFW profile only steers the iteration and extrapolates when R200c exceeds the aperture.
``max_iter`` (100) iterations without stopping is a failure. No surface-pressure correction
(The & White 1986, AJ 92, 1248) is applied; calibration absorbs such overall biases.

Calibration (setting ``calibrate``): ``"none"``: the raw log10 M200c [Msun/h]; ``"linear"``
(default): a least-squares line ``log10 M_true = a + b log10 M_est`` on the training views of
the fold (failed views left out), as Old et al. 2015 (MNRAS 449, 1897) let methods calibrate on
the simulation; ``"inverse"``: ``log10 M_est = a' + b' log10 M_true`` fit and inverted (as
``msigma``). ``"linear"`` is the default because it is what the learned models (``sdm``, CNNs)
do -- regress the true mass on what they measure -- so like them it pulls noisy estimates
towards the training views' mean mass (``b < 1``); with a steep training mass function (no
``--flat-mass-function``) that biases massive clusters low, and ``"inverse"`` (median-unbiased
at fixed true mass) is the better choice.

Failures (fewer than ``min_members`` (5) members, zero dispersion, no convergence, no caustic)
predict NaN: they stay NaN in ``predictions.csv`` and :mod:`dynmass.metrics` counts them
(``n_failed``); ``last_failures`` holds the reasons of the last :meth:`~Estimator.predict`.

Examples
--------
Members of a toy cluster (uniform in projected radius up to 1.2 Mpc/h, sigma_los 700 km/s):
the virial mass from the radii alone (ring-averaged separations) agrees with the one from full
2D positions at random position angles:

>>> import numpy as np
>>> from dynmass.models.classical import G_KMS2_MPC_MSUN, virial_profile
>>> rng = np.random.default_rng(1)
>>> r = np.sort(1.2 * np.sqrt(rng.random(400)))  # physical Mpc/h
>>> v = rng.normal(0.0, 700.0, 400)  # km/s
>>> m = virial_profile(r[None, :], v[None, :])[0, -1]  # Msun/h, all 400 members
>>> phi = rng.uniform(0.0, 2.0 * np.pi, 400)
>>> xy = np.c_[r * np.cos(phi), r * np.sin(phi)]
>>> sep = np.hypot(*(xy[:, None] - xy[None, :]).T)[np.triu_indices(400, 1)]
>>> m_xy = 3 * np.pi * 400 * np.sum((v - v.mean()) ** 2) / (2 * G_KMS2_MPC_MSUN * np.sum(1 / sep))
>>> f"{m:.2e}", round(float(m / m_xy), 2)
('8.22e+14', 0.99)
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any, ClassVar

import astropy.units as _u
import numpy as np
from astropy.constants import G as _G

from dynmass.cosmology import to_astropy
from dynmass.errors import InputError
from dynmass.models.base import Estimator
from dynmass.models.interlopers import (
    CHUNK_VIEWS,
    CLIP_DEFAULTS,
    GAPPER_DEFAULTS,
    members,
    padded,
    snapshot,
    sorted_members,
)
from dynmass.observations import Observations

__all__ = ["ClassicalEstimator", "ClipPME", "ClipVirial", "G_KMS2_MPC_MSUN", "GapperPME",
           "GapperVirial", "m200c_from_enclosed", "pme_profile", "r200c_physical", "rho_crit",
           "solve_r200c", "virial_profile"]

log = logging.getLogger(__name__)


#: Newton's constant [km^2 s^-2 Mpc / Msun] (astropy; CODATA 2018).
G_KMS2_MPC_MSUN: float = float(_G.to(_u.km**2 * _u.Mpc / (_u.s**2 * _u.Msun)).value)

#: Failure codes of :meth:`ClassicalEstimator.estimate` (0: success).
FAILURES: dict[int, str] = {1: "too_few_members", 2: "zero_dispersion", 3: "not_converged",
                            4: "no_caustic"}
CALIBRATIONS = ("none", "linear", "inverse")


def rho_crit(z: float, cosmo: dict[str, Any]) -> float:
    """Critical density ``3 H(z)^2 / (8 pi G)`` [(Msun/h) / (Mpc/h)^3, physical] (astropy).

    Parameters
    ----------
    z : float
        Redshift.
    cosmo : dict
        Cosmological parameters (``H0`` in km/s/Mpc, ``Om0``, ...).
    """
    return _rho_crit(float(z), json.dumps(cosmo, sort_keys=True))


@lru_cache(maxsize=64)
def _rho_crit(z: float, cosmo_json: str) -> float:
    c = to_astropy(json.loads(cosmo_json))
    return float(c.critical_density(z).to(_u.Msun / _u.Mpc**3).value) / c.h**2


def r200c_physical(m200c: np.ndarray, z: float, cosmo: dict[str, Any]) -> np.ndarray:
    """R200c [physical Mpc/h]: ``M200c = (4 pi / 3) 200 rho_c(z) R200c^3``.

    Parameters
    ----------
    m200c : numpy.ndarray
        Masses M200c, Msun/h.
    z : float
        Redshift.
    cosmo : dict
        Cosmological parameters.
    """
    return np.cbrt(3.0 * np.asarray(m200c, float) / (800.0 * np.pi * rho_crit(z, cosmo)))


@lru_cache(maxsize=16)
def _conc_table(z: float, cosmo_json: str) -> tuple[np.ndarray, np.ndarray]:
    from dynmass.universe.galaxies import concentration_200c

    grid = np.linspace(9.0, 16.5, 151)
    return grid, concentration_200c(10**grid, z, json.loads(cosmo_json))


def m200c_from_enclosed(r_phys: np.ndarray, m_enc: np.ndarray, z: float,
                        cosmo: dict[str, Any]) -> np.ndarray:
    """M200c [Msun/h] of the NFW halo holding ``m_enc`` within the 3D radius ``r_phys``.

    NFW profile (Navarro, Frenk & White 1997, ApJ 490, 493):
    ``M(<r) = M200c mu(c r / R200c) / mu(c)``, ``mu(x) = ln(1 + x) - x / (1 + x)``, with
    ``c = c200c(M200c, z)`` of Diemer & Joyce 2019 (colossus ``diemer19``, held constant
    outside 10^9-10^16.5 Msun/h), solved by bisection in log10 M200c over [8, 17].

    Parameters
    ----------
    r_phys : numpy.ndarray
        Radii, physical Mpc/h (> 0).
    m_enc : numpy.ndarray
        Masses within them, Msun/h (> 0).
    z : float
        Redshift.
    cosmo : dict
        Cosmological parameters.
    """
    grid, conc = _conc_table(float(z), json.dumps(cosmo, sort_keys=True))
    r = np.asarray(r_phys, dtype=float)
    target = np.log10(np.asarray(m_enc, dtype=float))
    lo, hi = np.full(r.shape, 8.0), np.full(r.shape, 17.0)
    rho200 = 800.0 * np.pi / 3.0 * rho_crit(z, cosmo)  # M200c / R200c^3
    for _ in range(45):
        mid = 0.5 * (lo + hi)
        c = np.interp(mid, grid, conc)
        x = c * r / np.cbrt(10**mid / rho200)
        m_in = mid + np.log10((np.log1p(x) - x / (1 + x)) / (np.log1p(c) - c / (1 + c)))
        above = m_in > target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return 10 ** (0.5 * (lo + hi))


def virial_profile(rk: np.ndarray, vk: np.ndarray, chunk: int = 2_000_000) -> np.ndarray:
    """HTB85 virial mass [Msun/h] of the ``k`` innermost members, for every ``k``.

    Parameters
    ----------
    rk : numpy.ndarray
        ``(n_views, width)`` member radii, physical Mpc/h, ascending per row, ``inf`` padded.
    vk : numpy.ndarray
        Their velocities [km/s] (padding ignored).
    chunk : int
        Most pair-matrix elements computed at once (memory bound).

    Returns
    -------
    numpy.ndarray
        ``(n_views, width)``: entry ``k - 1`` is the mass of the first ``k`` members (NaN for
        ``k < 2`` and for padding); ring-averaged ``1 / r_ij`` (module docs).
    """
    from scipy.special import ellipk

    k = np.arange(1, rk.shape[1] + 1, dtype=float)[None, :]
    v = np.where(np.isfinite(rk), vk, 0.0)
    s1, s2 = np.cumsum(v, axis=1), np.cumsum(v * v, axis=1)
    ssq = np.maximum(s2 - s1 * s1 / k, 0.0)  # sum_{i<=k} (v_i - vbar_k)^2, km^2/s^2
    counts, pair, s = np.isfinite(rk).sum(axis=1), np.zeros(rk.shape), 0
    order = np.argsort(counts, kind="stable")  # similar sizes share a chunk
    size = np.maximum(counts[order], 1).astype(np.int64) ** 2
    while s < len(order):
        # rows s..e-1 with (e - s) * (largest count)^2 <= chunk (at least one row)
        e = s + max(1, int(np.searchsorted(np.arange(1, len(order) - s + 1) * size[s:], chunk,
                                           side="right")))
        rows, width = order[s:e], max(1, int(counts[order[e - 1]]))
        r = np.maximum(np.where(np.isfinite(rk[rows, :width]), rk[rows, :width], np.nan), 1e-3)
        i, j = np.triu_indices(width, 1)  # pairs i < j only
        rsum = r[:, i] + r[:, j]
        m = np.minimum(4.0 * r[:, i] * r[:, j] / rsum**2, 1.0 - 1e-12)
        w = np.zeros((len(rows), width, width))
        w[:, i, j] = np.nan_to_num(2.0 * ellipk(m) / (np.pi * rsum))
        pair[rows, :width] = np.cumsum(w.sum(axis=1), axis=1)
        s += len(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 3.0 * np.pi * k * ssq / (2.0 * G_KMS2_MPC_MSUN * pair)
    out[(k < 2) | ~np.isfinite(rk)] = np.nan
    return out


def pme_profile(rk: np.ndarray, vk: np.ndarray) -> np.ndarray:
    """HTB85 projected mass [Msun/h] of the ``k`` innermost members, for every ``k``.

    Parameters
    ----------
    rk : numpy.ndarray
        ``(n_views, width)`` member radii, physical Mpc/h, ascending per row, ``inf`` padded.
    vk : numpy.ndarray
        Their velocities [km/s] (padding ignored).

    Returns
    -------
    numpy.ndarray
        ``(n_views, width)``: entry ``k - 1`` is ``(32 / pi) / (G (k - 1.5))
        sum_{i<=k} (v_i - vbar_k)^2 r_i`` (NaN for ``k < 2`` and padding).
    """
    k = np.arange(1, rk.shape[1] + 1, dtype=float)[None, :]
    fin = np.isfinite(rk)
    r, v = np.where(fin, rk, 0.0), np.where(fin, vk, 0.0)
    s1, sr, svr, sv2r = (np.cumsum(a, axis=1) for a in (v, r, v * r, v * v * r))
    vbar = s1 / k
    total = np.maximum(sv2r - 2.0 * vbar * svr + vbar**2 * sr, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (32.0 / np.pi) * total / (G_KMS2_MPC_MSUN * (k - 1.5))
    out[(k < 2) | ~fin] = np.nan
    return out


def solve_r200c(rk: np.ndarray, mk: np.ndarray, r_ap: float, z: float, cosmo: dict[str, Any],
                min_members: int = 5, tol: float = 1e-3, max_iter: int = 100
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Self-consistent M200c of every view (the iteration of the module docs).

    Parameters
    ----------
    rk : numpy.ndarray
        ``(n_views, width)`` member radii, physical Mpc/h, ascending, ``inf`` padded.
    mk : numpy.ndarray
        Mass estimate [Msun/h] of the first ``k`` members at column ``k - 1``.
    r_ap, z : float
        Aperture [physical Mpc/h] and redshift.
    cosmo : dict
        Cosmological parameters.
    min_members, tol, max_iter
        Fewest members of an estimate, relative radius tolerance, most iterations.

    Returns
    -------
    log10_m200c, status, n_used : numpy.ndarray
        log10 M200c [Msun/h] (NaN on failure), failure code (0 ok; :data:`FAILURES`) and the
        number of members of the final estimate.
    """
    n = len(rk)
    r, logm = np.full(n, float(r_ap)), np.full(n, np.nan)
    status, n_used = np.full(n, 3), np.zeros(n, dtype=np.int64)
    hist_r, hist_m = np.full((max_iter, n), np.nan), np.zeros((max_iter, n))
    active = np.ones(n, dtype=bool)
    for t in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        k = (rk[a] <= r[a, None] * (1 + 1e-12)).sum(axis=1)
        few = k < min_members
        status[a[few]], active[a[few]] = 1, False
        a, k = a[~few], k[~few]
        m = mk[a, k - 1]
        zero = ~(np.isfinite(m) & (m > 0))
        status[a[zero]], active[a[zero]] = 2, False
        a, k, m = a[~zero], k[~zero], m[~zero]
        m200 = m200c_from_enclosed(r[a], m, z, cosmo)
        r_new = np.minimum(r200c_physical(m200, z, cosmo), r_ap)
        hist_r[t, a], hist_m[t, a], n_used[a] = r[a], np.log10(m200), k
        # back at a radius already tried (the last one: a fixed point): a cycle of t - s + 1
        seen = np.abs(hist_r[:t + 1, a] - r_new) <= tol * r_new
        hit = seen.any(axis=0)
        s0 = t - np.argmax(seen[::-1], axis=0)
        cum = np.cumsum(hist_m[:t + 1, a], axis=0)
        cols = np.arange(a.size)
        before = np.where(s0 > 0, cum[np.maximum(s0 - 1, 0), cols], 0.0)
        mean = (cum[t, cols] - before) / (t - s0 + 1)
        logm[a[hit]], status[a[hit]], active[a[hit]] = mean[hit], 0, False
        r[a] = r_new
    logm[status != 0] = np.nan
    return logm, status, n_used


class ClassicalEstimator(Estimator):
    """A physical mass estimate per view, optionally calibrated on the training views.

    Subclasses implement :meth:`estimate`. Settings: ``calibrate`` (``"linear"``,
    ``"inverse"`` or ``"none"``; module docs) and ``min_members`` (fewest members, 5).
    """

    name: ClassVar[str] = "classical"
    defaults: ClassVar[dict[str, Any]] = {"calibrate": "linear", "min_members": 5}

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if self.settings["calibrate"] not in CALIBRATIONS:
            raise InputError(f"unknown calibrate={self.settings['calibrate']!r}; choose from "
                             f"{CALIBRATIONS}")
        if int(self.settings["min_members"]) < 2:
            raise InputError(f"min_members must be >= 2, got {self.settings['min_members']}")
        self.coef: tuple[float, float] | None = None  # (a, b): log M = a + b log M_est
        self.last_failures: dict[str, int] = {}

    def estimate(self, obs: Observations) -> dict[str, np.ndarray]:
        """Raw estimate of every view: ``log10_m200c`` [Msun/h, NaN on failure],
        ``status`` (0 or a :data:`FAILURES` code), ``n_members``."""
        raise NotImplementedError

    def _raw(self, obs: Observations) -> np.ndarray:
        est = self.estimate(obs)
        codes, counts = np.unique(est["status"][est["status"] != 0], return_counts=True)
        self.last_failures = {FAILURES[int(c)]: int(n) for c, n in zip(codes, counts,
                                                                      strict=True)}
        if self.last_failures:
            log.info("model '%s': %d of %d views failed (%s); their predictions are NaN",
                     self.name, sum(self.last_failures.values()), obs.n_views,
                     self.last_failures)
        return est["log10_m200c"]

    def fit(self, obs: Observations, *, seed: int = 0, **kwargs: Any) -> ClassicalEstimator:
        """Calibrate on the training views (``calibrate="linear"``) or only record settings.

        Parameters
        ----------
        obs : Observations
            Training views with ``clusters["m200c"]`` [Msun/h].
        seed : int
            Unused (deterministic); accepted for the common interface.
        **kwargs
            Ignored (accepted for the common interface).

        Returns
        -------
        ClassicalEstimator
            ``self``.
        """
        self.remember_obs_settings(obs)
        self.coef = (0.0, 1.0)
        if self.settings["calibrate"] == "none":
            self.extra = {"calibrate": "none"}
            return self
        raw, true = self._raw(obs), obs.log10_m200c()
        ok = np.isfinite(raw) & np.isfinite(true)
        if ok.sum() < 3 or np.ptp(raw[ok]) == 0:
            raise InputError(f"model '{self.name}': linear calibration needs >= 3 training "
                             f"views with an estimate; got {int(ok.sum())} of {obs.n_views}")
        if self.settings["calibrate"] == "linear":
            b, a = np.polyfit(raw[ok], true[ok], 1)
        else:  # inverse: log M_est = a' + b' log M_true, inverted
            b_inv, a_inv = np.polyfit(true[ok], raw[ok], 1)
            if not b_inv > 0:
                raise InputError(f"model '{self.name}': fitted slope of the estimate on the "
                                 f"true mass is {b_inv:.3g} <= 0; cannot invert")
            b, a = 1.0 / b_inv, -a_inv / b_inv
        self.coef = (float(a), float(b))
        self.extra = {"calibrate": self.settings["calibrate"], "n_fit_views": int(ok.sum()),
                      "n_failed_train": int((~ok).sum()), "failures_train": self.last_failures,
                      "raw_bias_median_dex": float(np.median(raw[ok] - true[ok])),
                      "raw_std_dex": float(np.std(raw[ok] - true[ok]))}
        return self

    def predict(self, obs: Observations) -> np.ndarray:
        """log10 M200c [Msun/h] of every view; NaN where the estimate failed."""
        if self.coef is None:
            raise InputError(f"model '{self.name}' is not fitted")
        self.check_obs(obs)
        a, b = self.coef
        return a + b * self._raw(obs)

    def get_arrays(self) -> dict[str, np.ndarray]:
        """``calib_a`` [dex] and ``calib_b`` of ``log M = a + b log M_est`` (0 and 1: none)."""
        if self.coef is None:
            raise InputError(f"model '{self.name}' is not fitted")
        return {"calib_a": np.array(self.coef[0]), "calib_b": np.array(self.coef[1])}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the calibration coefficients."""
        self.coef = (float(arrays["calib_a"]), float(arrays["calib_b"]))


class _ProfileEstimator(ClassicalEstimator):
    """Interloper removal, a mass estimator and the R200c iteration (module docs)."""

    interlopers: ClassVar[str] = "gapper"
    mass: ClassVar[str] = "virial"
    _common: ClassVar[dict[str, Any]] = {**ClassicalEstimator.defaults, "tol": 1e-3,
                                         "max_iter": 100}

    def estimate(self, obs: Observations) -> dict[str, np.ndarray]:
        """Raw estimates (:meth:`ClassicalEstimator.estimate`); ``n_members``: those used."""
        z, cosmo = snapshot(obs)
        keep = members(obs, self.interlopers, self.settings)
        r_phys = np.asarray(obs.R, float) / (1 + z)
        rs, vs, off = sorted_members(r_phys, np.asarray(obs.v, float), obs.offsets, keep)
        profile = virial_profile if self.mass == "virial" else pme_profile
        logm, status = np.full(obs.n_views, np.nan), np.zeros(obs.n_views, dtype=np.int64)
        n_used = np.zeros(obs.n_views, dtype=np.int64)
        order = np.argsort(np.diff(off), kind="stable")  # similar sizes share a chunk
        for start in range(0, obs.n_views, CHUNK_VIEWS):
            views = order[start:start + CHUNK_VIEWS]
            rk, vk = padded(rs, off, views, fill=np.inf), padded(vs, off, views, fill=0.0)
            logm[views], status[views], n_used[views] = solve_r200c(
                rk, profile(rk, vk), obs.aperture / (1 + z), z, cosmo,
                int(self.settings["min_members"]), float(self.settings["tol"]),
                int(self.settings["max_iter"]))
        return {"log10_m200c": logm, "status": status, "n_members": n_used}


class GapperVirial(_ProfileEstimator):
    """Shifting gapper + HTB85 virial mass + R200c iteration (module docs).

    Parameters
    ----------
    calibrate : {"linear", "inverse", "none"}
        Least-squares calibration on the training views (module docs), or the raw estimate.
    min_members : int
        Fewest members for an estimate (5).
    gap : float
        Gapper velocity gap, km/s (1000).
    bin_size : int
        Fewest galaxies per radial bin of the gapper (15).
    bin_width : float
        Narrowest radial bin of the gapper, physical Mpc/h (0.4).
    tol : float
        Relative radius change that ends the R200c iteration (1e-3).
    max_iter : int
        Iterations before a view fails as not converged (100).
    """

    name: ClassVar[str] = "gapper_virial"
    defaults: ClassVar[dict[str, Any]] = {**_ProfileEstimator._common, **GAPPER_DEFAULTS}


class GapperPME(GapperVirial):
    """Shifting gapper + HTB85 projected mass + R200c iteration (:class:`GapperVirial`)."""

    name: ClassVar[str] = "gapper_pme"
    mass: ClassVar[str] = "pme"


class ClipVirial(_ProfileEstimator):
    """3-sigma clipping + HTB85 virial mass + R200c iteration (module docs): the settings of
    :class:`GapperVirial`, with ``n_sigma`` (clipping threshold in biweight or gapper scales, 3)
    instead of the gapper's ``gap``, ``bin_size`` and ``bin_width``."""

    name: ClassVar[str] = "clip_virial"
    interlopers: ClassVar[str] = "clip"
    defaults: ClassVar[dict[str, Any]] = {**_ProfileEstimator._common, **CLIP_DEFAULTS}


class ClipPME(ClipVirial):
    """3-sigma clipping + HTB85 projected mass + R200c iteration (:class:`ClipVirial`)."""

    name: ClassVar[str] = "clip_pme"
    mass: ClassVar[str] = "pme"
