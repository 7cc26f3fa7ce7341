"""Infall onto massive halos: mean radial peculiar velocities from the spherical-infall model
and a velocity dispersion that decreases outward (``outskirts`` option of the mock universe,
:mod:`dynmass.universe.outskirts`).

In the default universe halos move with the linear-theory velocity field of the FFT grid
(:mod:`dynmass.universe.field`): around a massive halo nothing turns around. With the option
on, every halo less massive than a host (M200c >= :data:`HOST_MIN_MASS`) within
:data:`CUT_OVER_TURNAROUND` turnaround radii of it gets, along the direction to the host, an
added mean radial velocity, and random motions; its galaxies move with it.

Ingredients and references
--------------------------
* Mean overdensity within comoving r of a host (halo model): the local density contrast is
  the larger of the 1-halo term, the Diemer & Kravtsov 2014 orbiting profile of
  :mod:`~dynmass.universe.outskirts` normalised to M200c within R200c (mean c200c of the mass),
  and the 2-halo term b(M) xi_lin(r), b the Tinker et al. 2010 bias (colossus) and xi_lin the
  linear correlation function (colossus P(k)) (Hayashi & White 2008, MNRAS 388, 2: the
  halo-mass cross-correlation is max(xi_1h, xi_2h), which does not count the halo's mass
  twice); delta(<r) is its volume average.
* Spherical infall (Yahil 1985, in "The Virgo Cluster", ESO, p. 359; used e.g. by Yee &
  Ellingson 2003, ApJ 585, 215, and Lilje & Lahav 1991, ApJ 374, 29):
  v_pec,r = -(1/3) H(z) r f delta (1 + delta)^(-1/4) (physical r; here r comoving times
  a H(z)). Yahil writes Omega_m^0.6 for the linear growth rate; f = dlnD/dlna of colossus is
  used, so that the linear limit is the linear theory of the grid. At high delta the model is
  capped at free fall from the turnaround radius with the enclosed mass (4/3) pi r^3 rho_m
  (1 + delta): v_pec,r >= -(sqrt(2 G M(<r) (1/r - 1/r_ta)) + a H r).
* Turnaround radius r_ta: v_pec,r = -a H r, i.e. f delta (1 + delta)^(-1/4) = 3.
* No double counting: the grid already carries the linear velocities of the modes it resolves
  (k < k_Nyquist), and every host's neighbours above :data:`HOST_MIN_MASS` carry their own
  infall. A host therefore adds only the non-linear excess of its own mass over its 2-halo
  term: v_infall(delta) - v_infall(b xi_bar_lin(<r)), the second term the spherical-infall
  velocity of the 2-halo overdensity alone (whose pull the grid and the neighbours supply).
  Far out the excess counts the host's mass twice (it belongs to the linear overdensity the
  grid moves, on the scale of its Lagrangian radius ~8 R200c), so it is tapered as
  [1 + (r / 2 r_ta)^4]^(-1/2). Within R200c the mean infall is ramped down as (r / R200c)^2
  (the virialised region has no mean radial velocity; Cuesta et al. 2008, MNRAS 389, 385).
  Around hosts above 10^14 Msun/h the stacked mean radial velocity of the central galaxies of
  the other halos crosses -a H r at 5.2 +- 0.3 R200c (power-law fit over 2-9 R200c; 150
  Mpc/h boxes, seeds 0-7), the model's single-host value (5.2 R200c from 10^13.5 to 10^15
  Msun/h at z = 0.117).
* Random motions: Gaussian, isotropic, the radial Jeans dispersion of the (untruncated) NFW
  host at r (Falco et al. 2014, MNRAS 442, 1887: the standard Jeans equation gives the radial
  dispersion of the infall region to ~2 R_vir, 20-40 % high at 2-3 R_vir), tapered as
  [1 + (r / r_ta)^4]^(-1/2); added in quadrature to the halo's own (linear) motion.
* Several hosts: the mean velocities add (vectors), the variances add.

Examples
--------
Spherical infall at the turnaround overdensity is minus the Hubble flow (a H r = 190 km/s at
2 comoving Mpc/h for a H = 95 km/s per comoving Mpc/h):

>>> import numpy as np
>>> from dynmass.universe.infall import yahil_velocity, turnaround_overdensity
>>> d_ta = turnaround_overdensity(0.58)
>>> round(float(d_ta), 2), round(float(yahil_velocity(d_ta, 2.0, 95.0, 0.58)), 1)
(9.26, -190.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.optimize import brentq
from scipy.spatial import cKDTree

from dynmass.universe.field import growth_rate, linear_power, xi_linear
from dynmass.universe.galaxies import G_KMS_MPC_MSUN, jeans_sigma_r_dimensionless
from dynmass.universe.orbiting import cumulative_profile, orbiting_density
from dynmass.universe.outskirts import OutskirtsModel

__all__ = ["CUT_OVER_TURNAROUND", "HOST_MIN_MASS", "InfallModel", "infall_parameters",
           "turnaround_overdensity", "xi_bar_linear", "xi_linear", "yahil_velocity"]

#: Halos of M200c >= this [Msun/h] make the others fall in.
HOST_MIN_MASS = 10**13.5
#: Infall is added within this many turnaround radii of a host.
CUT_OVER_TURNAROUND = 4.0
#: Mean matter density today, (Msun/h) / (Mpc/h)^3 per unit Omega_m (comoving).
_RHO_CRIT0 = 2.775e11
#: Grid of r / R200c of the infall tables.
_Y = np.geomspace(0.02, 40.0, 260)


def yahil_velocity(delta: np.ndarray, r_mpch: np.ndarray, ah: float, f: float) -> np.ndarray:
    """Mean radial peculiar velocity of the spherical-infall model (Yahil 1985), km/s.

    Parameters
    ----------
    delta : numpy.ndarray
        Mean overdensity within r.
    r_mpch : numpy.ndarray
        Radius, comoving Mpc/h.
    ah : float
        a H(z), km/s per comoving Mpc/h.
    f : float
        Linear growth rate dlnD/dlna.

    Returns
    -------
    numpy.ndarray
        -(1/3) a H r f delta (1 + delta)^(-1/4), km/s.
    """
    delta = np.asarray(delta, float)
    return -ah * np.asarray(r_mpch, float) * f * delta / (3.0 * (1.0 + delta) ** 0.25)


def turnaround_overdensity(f: float) -> float:
    """Mean overdensity at turnaround: f delta (1 + delta)^(-1/4) = 3.

    Parameters
    ----------
    f : float
        Linear growth rate dlnD/dlna.

    Returns
    -------
    float
        delta_ta.
    """
    return float(brentq(lambda d: f * d / (1 + d) ** 0.25 - 3.0, 1e-3, 1e4))


def xi_bar_linear(r_mpch: np.ndarray, redshift: float, cosmo: dict[str, Any],
                  k_max: float = np.inf) -> np.ndarray:
    """Volume-averaged linear correlation function within r, from modes k < ``k_max``.

    xi_bar(<r) = 1 / (2 pi^2) int k^2 P(k) W(k r) dk, W(x) = 3 (sin x - x cos x) / x^3.

    Parameters
    ----------
    r_mpch : numpy.ndarray
        Radii, comoving Mpc/h.
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.
    k_max : float
        Highest wavenumber, h/Mpc (the grid's Nyquist wavenumber for the resolved part).

    Returns
    -------
    numpy.ndarray
        xi_bar(<r) per radius.
    """
    k = np.geomspace(1e-4, min(k_max, 200.0), 3000)
    pk = linear_power(k, redshift, cosmo)
    x = k[None, :] * np.asarray(r_mpch, float)[:, None]
    w = 3 * (np.sin(x) - x * np.cos(x)) / x**3
    return np.trapezoid(k**3 * pk * w, np.log(k), axis=1) / (2 * np.pi**2)


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
    y_ta : numpy.ndarray
        Turnaround radius per mass, r / R200c.
    """

    log_m: np.ndarray
    dv: np.ndarray
    sigma: np.ndarray
    y_ta: np.ndarray

    @classmethod
    def build(cls, outskirts: OutskirtsModel, bias: tuple[np.ndarray, np.ndarray],
              redshift: float, cosmo: dict[str, Any], r200c_of: Any) -> InfallModel:
        """Tabulate the infall model for hosts of 10^13.5 Msun/h up to the grid's top mass.

        Parameters
        ----------
        outskirts : OutskirtsModel
            Concentration and r_t tables (orbiting profile).
        bias : (numpy.ndarray, numpy.ndarray)
            log10 M200c grid [Msun/h] and Tinker et al. 2010 bias on it.
        redshift : float
            Redshift.
        cosmo : dict
            Cosmological parameters.
        r200c_of : callable
            ``r200c_of(m200c)`` -> R200c, comoving Mpc/h.

        Returns
        -------
        InfallModel
        """
        from dynmass.cosmology import hubble_h_units

        top = outskirts.log_m[-1]
        log_m = np.arange(np.log10(HOST_MIN_MASS), max(top, np.log10(HOST_MIN_MASS)) + 0.02,
                          0.02)
        f = growth_rate(redshift, cosmo)
        ah = hubble_h_units(cosmo, redshift) / (1.0 + redshift)
        rho_m = _RHO_CRIT0 * float(cosmo["Om0"])
        m = 10**log_m
        r200 = np.asarray(r200c_of(m), float)
        conc = np.interp(log_m, outskirts.log_m, outskirts.conc)
        tau = outskirts.tau_of(m)
        b = np.interp(log_m, bias[0], bias[1])
        r = r200[:, None] * _Y[None, :]
        r_tab = np.geomspace(r.min(), r.max(), 400)
        xib = np.interp(np.log(r), np.log(r_tab), xi_bar_linear(r_tab, redshift, cosmo))
        cum = cumulative_profile(conc, tau, _Y)
        at_1 = np.array([np.interp(1.0, _Y, row) for row in cum])
        # local density contrast: max of the orbiting (1-halo) and 2-halo terms (Hayashi &
        # White 2008); below _Y[0] the orbiting mass alone
        xi_1h = (m / (4 * np.pi * r200**3 * at_1))[:, None] * conc[:, None] ** 3 * \
            orbiting_density(_Y[None, :], conc[:, None], tau[:, None]) / rho_m
        xi_2h = b[:, None] * np.interp(np.log(r), np.log(r_tab), xi_linear(r_tab, redshift, cosmo))
        shell = cumulative_trapezoid(np.maximum(xi_1h, xi_2h) * r**3, np.log(_Y), axis=1,
                                     initial=0.0)
        m0 = (m * cum[:, 0] / at_1)[:, None] / (4.0 / 3.0 * np.pi * rho_m)  # M(< _Y[0])
        delta = (m0 + 3.0 * shell) / r**3
        d_ta = turnaround_overdensity(f)
        y_ta = np.array([_crossing(_Y, row, d_ta) for row in delta])
        v_tot = yahil_velocity(delta, r, ah, f)
        # free-fall cap from turnaround (physical radii; mass in Msun/h, G in km^2/s^2 Mpc/Msun)
        a = 1.0 / (1.0 + redshift)
        r_ta = (y_ta * r200)[:, None]
        m_enc = 4.0 / 3.0 * np.pi * r**3 * rho_m * (1.0 + delta)
        with np.errstate(invalid="ignore", divide="ignore"):
            v_ff = np.sqrt(np.clip(2 * G_KMS_MPC_MSUN * m_enc * (1 / (a * r) - 1 / (a * r_ta)),
                                   0, None))
        v_tot = np.where(r < r_ta, np.maximum(v_tot, -(v_ff + ah * r)), v_tot)
        dv = v_tot - yahil_velocity(b[:, None] * xib, r, ah, f)
        dv *= np.minimum(_Y, 1.0)[None, :] ** 2
        dv /= np.sqrt(1.0 + (_Y[None, :] / (2.0 * y_ta[:, None])) ** 4)
        v200 = np.sqrt(G_KMS_MPC_MSUN * m / (a * r200))
        sig = v200[:, None] * jeans_sigma_r_dimensionless(conc[:, None] * _Y[None, :],
                                                          conc[:, None], 0.0)
        sig /= np.sqrt(1.0 + (_Y[None, :] / y_ta[:, None]) ** 4)
        return cls(log_m, dv, sig, y_ta)

    def y_at(self, m200c: float) -> float:
        """Turnaround radius r_ta / R200c of a host of mass ``m200c`` [Msun/h] (NaN off grid)."""
        lm = np.log10(m200c)
        if lm < self.log_m[0] - 1e-9 or lm > self.log_m[-1] + 1e-9:
            return float("nan")
        return float(np.interp(lm, self.log_m, self.y_ta))

    def apply(self, halos: dict[str, np.ndarray], hosts: dict[str, np.ndarray],
              box_size: float, rng: np.random.Generator) -> None:
        """Add infall velocities to ``halos`` (in place) from the more massive ``hosts``.

        Random draws: three normals per halo of ``halos`` (whether or not it is near a host).

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
        lm = np.clip(np.log10(hm), self.log_m[0], self.log_m[-1])
        reach = CUT_OVER_TURNAROUND * np.interp(lm, self.log_m, self.y_ta) * hr
        lists = cKDTree(pos, boxsize=box_size).query_ball_point(hpos, reach)
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
        dv, var = self._lookup(lm[k], r / hr[k])
        add = np.zeros((n, 3))
        np.add.at(add, j, d / r[:, None] * dv[:, None])
        var_h = np.bincount(j, weights=var, minlength=n)
        add += noise * np.sqrt(var_h)[:, None]
        for c, col in enumerate(("vx", "vy", "vz")):
            halos[col] = np.asarray(halos[col], float) + add[:, c]

    def _lookup(self, lm: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear interpolation (log M, ln y) of the added velocity and variance."""
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
            out.append(lo * (1 - wm) + hi * wm)
        return out[0], out[1]


def infall_parameters() -> dict[str, Any]:
    """What the universe settings record about the infall model.

    Returns
    -------
    dict
        References and parameters (JSON-able).
    """
    return {
        "infall": "Yahil 1985 spherical infall, v = -(1/3) a H r f delta (1+delta)^(-1/4), "
                  "capped at free fall from turnaround; delta(<r) from max(DK14 orbiting "
                  "profile, b(M) xi_lin) (Hayashi & White 2008; Tinker et al. 2010 bias); "
                  "added: v(delta) - "
                  "v(b xi_bar_lin) (the host's non-linear excess), ramped (r/R200c)^2 "
                  "within R200c, "
                  "tapered [1 + (r/2 r_ta)^4]^(-1/2)",
        "infall_dispersion": "NFW Jeans sigma_r x [1 + (r/r_ta)^4]^(-1/2) (Falco et al. 2014)",
        "infall_host_min_mass_msunh": HOST_MIN_MASS,
        "infall_cut_over_turnaround": CUT_OVER_TURNAROUND,
        "infall_applies_to": "halos less massive than the host (their galaxies move with them)",
    }


def _crossing(y: np.ndarray, delta: np.ndarray, level: float) -> float:
    """First y at which the decreasing ``delta(y)`` falls below ``level`` (log interpolation)."""
    below = np.flatnonzero(delta < level)
    if below.size == 0:
        return float(y[-1])
    i = below[0]
    if i == 0:
        return float(y[0])
    t = (np.log(delta[i - 1]) - np.log(level)) / (np.log(delta[i - 1]) - np.log(delta[i]))
    return float(np.exp(np.log(y[i - 1]) + t * (np.log(y[i]) - np.log(y[i - 1]))))
