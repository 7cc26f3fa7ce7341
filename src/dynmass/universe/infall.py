"""Infall onto massive halos: mean radial peculiar velocities and random motions measured on
the N-body engine (``outskirts`` option of the mock universe, :mod:`dynmass.universe.outskirts`).

In the default universe halos move with the linear-theory velocity field of the FFT grid
(:mod:`dynmass.universe.field`): around a massive halo nothing turns around. With the option
on, every halo less massive than a host (M200c >= :data:`HOST_MIN_MASS`) within
:data:`Y_MAX` R200c of it gets, along the direction to the host, an added mean radial velocity
and added Gaussian random motions; its galaxies move with it.

What is added, and where it comes from
--------------------------------------
The added motion is what the grid lacks: the difference between the mean radial peculiar
velocity of halos around hosts in the N-body engine (:mod:`dynmass.universe.nbody`:
particle-mesh, 256^3 particles in 250 Mpc/h, seeds 1-3, z = 0.117) and in the default analytic
engine (the same cosmology, seeds and redshift), both measured on halos of M200c >= 1.44e12
Msun/h (the N-body catalogs' smallest halo) less massive than the host, in units of the host's
V200c = sqrt(G M200c / R200c) and y = r / R200c (``make infall-fit``,
``benchmarks/infall_fit.py``; the fit is stored in ``dynmass/data/infall_nbody_fit.json``
with the data it was fitted to):

* mean: dv / V200c = -A(mu) / [1 + (y / y1(mu))^q] + c(mu), mu = log10(M200c h / Msun) - 14,
  A, ln y1 and c linear in mu (fitted over 2 <= y <= 20);
* variance: dsigma^2 / V200c^2 = b0 + b1 mu (added to each Cartesian component, isotropic;
  floored at 0), the excess of the N-body pairwise radial velocity variance over the grid's;
* one fixed-point iteration (``--iterate``): universes built with the first fit are measured
  the same way and the fit is refitted as itself plus what they still miss against N-body
  (the one-host-per-halo rule below gives a halo shared by two hosts to one of them, so the
  first fit falls short around the smaller hosts);
* within R200c nothing is added to the mean (the virialised region has no mean radial
  velocity; Cuesta et al. 2008, MNRAS 389, 385); the mean is ramped linearly in y from
  0 at y = 1 to the fit at y = 2.25 (the FoF groups of the N-body run swallow the halos
  within ~2 R200c, so the fit is not measured there), the variance as y^2 within R200c; both
  are tapered to 0 by cos^2 between y = 15 and :data:`Y_MAX` = 20.
* One host per halo: a halo near several hosts gets the motion of the host whose added
  motion (dv^2 + 3 dsigma^2) is the largest. The measured profiles already hold the average
  pull of a host's neighbours, so summing the hosts (as the spherical-infall model of earlier
  versions did) double-counts it: in crowded regions it gave halos up to 7,700 km/s.
* The fit is in V200c and R200c units and is applied at every redshift: self-similar scaling
  from the measurement at z = 0.117 (an approximation: not measured at other redshifts).

The mean radial velocity of the resulting halos and galaxies around hosts is compared with the
N-body engine's by ``make infall-fit`` (figure ``docs/infall_fit/infall_fit.png``) and by
``dynmass check`` (turnaround radius, infall per shell).

Examples
--------
The added mean radial velocity (km/s) of the neighbours of 10^14 and 10^15 Msun/h hosts at
3 R200c, and the added dispersion (km/s; after the fit's iteration only hosts above ~10^14.55
Msun/h add random motions of their own):

>>> import numpy as np
>>> from dynmass.universe.infall import InfallModel
>>> from dynmass.cosmology import MDPL2
>>> from dynmass.universe.massfunction import r200c_comoving
>>> m = InfallModel.build(0.117, lambda m: r200c_comoving(m, 0.117, MDPL2), 15.0)
>>> dv, var = m.lookup(np.array([14.0, 15.0]), np.array([3.0, 3.0]))
>>> [int(round(v, -1)) for v in dv], [int(round(v, -1)) for v in np.sqrt(var)]
([-360, -520], [0, 400])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from dynmass.universe.galaxies import G_KMS_MPC_MSUN

__all__ = ["HOST_MIN_MASS", "Y_MAX", "InfallModel", "infall_fit", "infall_parameters",
           "mean_excess", "variance_excess"]

#: Halos of M200c >= this [Msun/h] make the others fall in.
HOST_MIN_MASS = 10**13.5
#: Motion is added within this many R200c of a host (the range the fit was measured over).
Y_MAX = 20.0
#: The mean is ramped linearly from 0 at y = 1 to the fit at this y.
Y_RAMP = 2.25
#: The mean and the variance are tapered to 0 by cos^2 from this y to :data:`Y_MAX`.
Y_TAPER = 15.0
#: Grid of r / R200c of the infall tables.
_Y = np.geomspace(0.02, Y_MAX, 260)
#: Name of the stored fit in ``dynmass/data``.
FIT_FILE = "infall_nbody_fit.json"


@lru_cache(maxsize=1)
def infall_fit() -> dict[str, Any]:
    """The stored fit of the N-body excess motions (``dynmass/data/infall_nbody_fit.json``).

    Returns
    -------
    dict
        ``mean`` (a0, a1, l0, l1, q, c0, c1), ``variance`` (b0, b1), the measurement it was
        fitted to and its provenance (written by ``benchmarks/infall_fit.py``).
    """
    with resources.files("dynmass.data").joinpath(FIT_FILE).open() as fh:
        return json.load(fh)


def mean_excess(y: np.ndarray, mu: np.ndarray, p: dict[str, float] | None = None) -> np.ndarray:
    """Fitted excess mean radial velocity, in units of the host's V200c (no ramp, no taper).

    dv / V200c = -(a0 + a1 mu) / [1 + (y / exp(l0 + l1 mu))^q] + c0 + c1 mu.

    Parameters
    ----------
    y : numpy.ndarray
        r / R200c of the host.
    mu : numpy.ndarray
        log10(M200c h / Msun) - 14 of the host.
    p : dict, optional
        Parameters; the stored fit's ``mean`` by default.

    Returns
    -------
    numpy.ndarray
        dv / V200c (< 0: inward).
    """
    p = infall_fit()["mean"] if p is None else p
    y, mu = np.asarray(y, float), np.asarray(mu, float)
    y1 = np.exp(p["l0"] + p["l1"] * mu)
    return -(p["a0"] + p["a1"] * mu) / (1.0 + (y / y1) ** p["q"]) + p["c0"] + p["c1"] * mu


def variance_excess(mu: np.ndarray, p: dict[str, float] | None = None) -> np.ndarray:
    """Fitted excess variance of one velocity component, in units of V200c^2 (floored at 0).

    Parameters
    ----------
    mu : numpy.ndarray
        log10(M200c h / Msun) - 14 of the host.
    p : dict, optional
        Parameters; the stored fit's ``variance`` by default.

    Returns
    -------
    numpy.ndarray
        dsigma^2 / V200c^2 = max(b0 + b1 mu, 0).
    """
    p = infall_fit()["variance"] if p is None else p
    return np.maximum(p["b0"] + p["b1"] * np.asarray(mu, float), 0.0)


def _ramps(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the mean and of the variance against y = r / R200c (ramps and taper)."""
    taper = np.where(y <= Y_TAPER, 1.0, np.cos(0.5 * np.pi * np.clip(
        (y - Y_TAPER) / (Y_MAX - Y_TAPER), 0.0, 1.0)) ** 2)
    w_mean = np.clip((y - 1.0) / (Y_RAMP - 1.0), 0.0, 1.0) * taper
    w_var = np.minimum(y, 1.0) ** 2 * taper
    return w_mean, w_var


@dataclass(eq=False)
class InfallModel:
    """Infall tables on a grid of host mass and r / R200c for one universe.

    Parameters
    ----------
    log_m : numpy.ndarray
        log10 M200c of the hosts' grid, Msun/h.
    dv : numpy.ndarray
        (n_m, n_y) added mean radial velocity at r / R200c = :data:`_Y`, km/s (< 0: inward).
    sigma : numpy.ndarray
        (n_m, n_y) added 1D velocity dispersion, km/s.
    fit : dict
        The parameters used (:func:`infall_fit`'s ``mean`` and ``variance``).
    """

    log_m: np.ndarray
    dv: np.ndarray
    sigma: np.ndarray
    fit: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, redshift: float, r200c_of: Any, log_m_max: float) -> InfallModel:
        """Tabulate the fit for hosts from :data:`HOST_MIN_MASS` up to ``10**log_m_max``.

        Parameters
        ----------
        redshift : float
            Redshift (sets V200c through R200c).
        r200c_of : callable
            ``r200c_of(m200c)`` -> R200c, comoving Mpc/h.
        log_m_max : float
            log10 of the most massive host, Msun/h.

        Returns
        -------
        InfallModel
        """
        lo = np.log10(HOST_MIN_MASS)
        log_m = np.arange(lo, max(log_m_max, lo) + 0.02, 0.02)
        m = 10**log_m
        a = 1.0 / (1.0 + redshift)
        v200 = np.sqrt(G_KMS_MPC_MSUN * m / (a * np.asarray(r200c_of(m), float)))
        mu = (log_m - 14.0)[:, None]
        w_mean, w_var = _ramps(_Y)
        dv = v200[:, None] * mean_excess(_Y[None, :], mu) * w_mean[None, :]
        sigma = v200[:, None] * np.sqrt(variance_excess(mu) * w_var[None, :])
        fit = infall_fit()
        return cls(log_m, dv, sigma, {"mean": fit["mean"], "variance": fit["variance"]})

    def lookup(self, log_m: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Added mean radial velocity and variance (bilinear in log M and ln y; 0 beyond
        :data:`Y_MAX`).

        Parameters
        ----------
        log_m : numpy.ndarray
            log10 M200c of the hosts, Msun/h (clipped to the table's range).
        y : numpy.ndarray
            r / R200c of the host.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            Added mean radial velocity (km/s, < 0: inward) and variance of each velocity
            component (km^2/s^2).
        """
        lm = np.clip(np.asarray(log_m, float), self.log_m[0], self.log_m[-1])
        y = np.asarray(y, float)
        fm = (lm - self.log_m[0]) / (self.log_m[1] - self.log_m[0]) if self.log_m.size > 1 \
            else np.zeros_like(lm)
        i = np.clip(np.floor(fm).astype(np.int64), 0, max(self.log_m.size - 2, 0))
        wm = np.clip(fm - i, 0.0, 1.0)
        i1 = np.minimum(i + 1, self.log_m.size - 1)
        ly = np.log(np.clip(y, _Y[0], _Y[-1]))
        fy = (ly - np.log(_Y[0])) / (np.log(_Y[1]) - np.log(_Y[0]))
        iy = np.clip(np.floor(fy).astype(np.int64), 0, _Y.size - 2)
        wy = np.clip(fy - iy, 0.0, 1.0)
        out = []
        for tab in (self.dv, self.sigma**2):
            lo = tab[i, iy] * (1 - wy) + tab[i, iy + 1] * wy
            hi = tab[i1, iy] * (1 - wy) + tab[i1, iy + 1] * wy
            out.append(np.where(y <= Y_MAX, lo * (1 - wm) + hi * wm, 0.0))
        return out[0], out[1]

    def apply(self, halos: dict[str, np.ndarray], hosts: dict[str, np.ndarray],
              box_size: float, rng: np.random.Generator) -> None:
        """Add infall velocities to ``halos`` (in place) from the more massive ``hosts``.

        Each halo within :data:`Y_MAX` R200c of a more massive host gets the mean and the
        random motion of one host: the one whose added motion (dv^2 + 3 dsigma^2) is the
        largest. Random draws: three normals per halo of ``halos`` (whether or not it is near
        a host).

        Parameters
        ----------
        halos : dict
            Halo table (``id``, ``x, y, z`` comoving Mpc/h, ``vx, vy, vz`` km/s, ``m200c``
            Msun/h); its velocities are updated.
        hosts : dict
            Host table: ``x, y, z`` (comoving Mpc/h), ``m200c`` (Msun/h, >=
            :data:`HOST_MIN_MASS`), ``r200c`` (comoving Mpc/h).
        box_size : float
            Periodic box side, comoving Mpc/h.
        rng : numpy.random.Generator
            Random generator.
        """
        n = len(halos["id"])
        noise = rng.standard_normal((n, 3))
        if n == 0 or len(hosts["m200c"]) == 0:
            return
        pos = np.mod(np.stack([halos[c] for c in "xyz"], 1), box_size)
        hpos = np.mod(np.stack([hosts[c] for c in "xyz"], 1), box_size)
        hm, hr = np.asarray(hosts["m200c"], float), np.asarray(hosts["r200c"], float)
        lists = cKDTree(pos, boxsize=box_size).query_ball_point(hpos, Y_MAX * hr)
        k = np.repeat(np.arange(hm.size), [len(x) for x in lists])
        if k.size == 0:
            return
        j = np.concatenate([np.asarray(x, np.int64) for x in lists])
        keep = hm[k] > np.asarray(halos["m200c"], float)[j]  # only less massive halos fall
        k, j = k[keep], j[keep]
        d = pos[j] - hpos[k]
        d -= box_size * np.round(d / box_size)
        r = np.sqrt(np.sum(d**2, axis=1))
        ok = r > 0
        k, j, d, r = k[ok], j[ok], d[ok], r[ok]
        if j.size == 0:
            return
        dv, var = self.lookup(np.log10(hm[k]), r / hr[k])
        order = np.lexsort((-(dv**2 + 3.0 * var), j))  # per halo, the strongest host first
        first = order[np.r_[True, j[order][1:] != j[order][:-1]]]
        j, d, r, dv, var = j[first], d[first], r[first], dv[first], var[first]
        add = noise[j] * np.sqrt(var)[:, None] + d / r[:, None] * dv[:, None]
        for c, col in enumerate(("vx", "vy", "vz")):
            v = np.asarray(halos[col], float).copy()
            v[j] += add[:, c]
            halos[col] = v


def infall_parameters() -> dict[str, Any]:
    """What the universe settings record about the infall model.

    Returns
    -------
    dict
        References and parameters (JSON-able).
    """
    fit = infall_fit()
    return {
        "infall": "excess of the N-body engine's mean radial velocity of halos around hosts over "
                  "the analytic grid's, in V200c and R200c units (dynmass/data/" + FIT_FILE +
                  ", benchmarks/infall_fit.py): dv/V200c = -(a0 + a1 mu)/[1 + (y/exp(l0 + l1 "
                  "mu))^q] + c0 + c1 mu, mu = log10 M200c - 14; 0 within R200c, ramped to "
                  f"y = {Y_RAMP}, tapered cos^2 from y = {Y_TAPER} to {Y_MAX}",
        "infall_mean_parameters": fit["mean"],
        "infall_dispersion": "excess N-body variance dsigma^2/V200c^2 = b0 + b1 mu (isotropic), "
                             "ramped y^2 within R200c",
        "infall_variance_parameters": fit["variance"],
        "infall_measured_on": fit.get("measured_on", {}),
        "infall_host_min_mass_msunh": HOST_MIN_MASS,
        "infall_max_r_over_r200c": Y_MAX,
        "infall_applies_to": "halos less massive than the host (their galaxies move with them); "
                             "one host per halo (the largest added motion)",
    }
