"""The ``outskirts`` halo model of the mock universe: satellites beyond R200c with a
splashback-steepened profile, triaxial halos with aligned velocity ellipsoids, and infall
around massive halos (:mod:`dynmass.universe.infall`).

Off by default (``UniverseSettings(outskirts=False)``, ``dynmass universe`` without
``--outskirts``): the default universe is unchanged, its satellites follow an NFW profile
truncated at R200c in spherical halos. With the option on:

Ingredients and references
--------------------------
* Satellite number density: the orbiting ("1-halo") term of Diemer & Kravtsov 2014 (ApJ 789,
  1, eqs. 3-4), rho(r) ~ rho_NFW(r) f_trans(r), f_trans = [1 + (r / r_t)^beta]^(-gamma/beta),
  with the inner NFW profile of the default model (Diemer & Joyce 2019 concentration with its
  scatter) and the mass-selected calibration of DK14 (their eq. 6; colossus
  ``DK14Profile.deriveParameters(selected_by="M")``): beta = 4, gamma = 8,
  r_t = (1.9 - 0.18 nu200m) R200m, nu200m the peak height of M200m. R200m and M200m follow
  from M200c and the mean c200c by colossus ``mass_defs.changeMassDefinition`` (NFW). The
  profile continues past R200c and steepens around the splashback radius (~ r_t); it is
  sampled out to :data:`R_MAX_R200C` = 4 R200c, where its density is < 1e-3 of that at R200c.
* Normalisation: the expected number of satellites within the R200c sphere is that of the
  occupation model (the mass-richness relation within R200c is unchanged). The occupation's
  Poisson satellites are drawn within R200c before the stretch; as the stretched halo loses
  some of them beyond the sphere along its long axis (and gains outskirt satellites along its
  short axes), Poisson(<N_sat> (k - 1)) more are drawn within R200c, with k ~ 1.06 for
  cluster shapes (:func:`sphere_correction`, with the profile of the mean concentration). Satellites between R200c and 4 R200c are added,
  Poisson with mean k <N_sat> F_out(c, r_t), F_out = N(R200c < r < 4 R200c) / N(<R200c)
  of the profile (0.54 for 10^14 and 0.41 for 10^15 Msun/h at z = 0.117 with the mean
  concentration, r_t = 2.3 and 1.9 R200c; :func:`outskirt_fraction`). Counted in the R200c
  sphere of the stretched halos, the satellites beyond R200c number 0.64 (10^14 Msun/h) and
  0.54 (10^15 Msun/h) per satellite within R200c, those beyond 2 R200c 0.17 and 0.12 (400
  halos each, z = 0.117). As the orbiting mass of N-body halos, M_orb ~ 1.4-1.5 M200c
  (Diemer 2022, MNRAS 513, 573), this is the splashback population. They are members: ``host_id`` is the host, ``r_host`` > R200c.
  With the stellar-mass occupation their stellar masses follow the same satellite stellar-mass
  function as those within R200c.
* Radii are drawn by numerical inverse transform of the profile's cumulative count on a grid of
  r / R200c (vectorised over hosts).
* The outer (infall, "2-halo") term of DK14 is not drawn as satellites: the galaxies of the
  neighbouring halos already supply it (log-normal halo clustering; around hosts above
  10^14.5 Msun/h their density is 17, 6.6 and 5.9 times the mean at 1.5-2, 2-3 and 3-4
  comoving Mpc/h in a 250 Mpc/h box), and those halos get the infall velocities
  (:mod:`dynmass.universe.infall`).
* Velocities of satellites: the spherical Jeans dispersion of the (untruncated) NFW halo at
  their radius, as within R200c (continuous across R200c; the standard Jeans equation holds
  to ~2 R_vir, Falco et al. 2014, MNRAS 442, 1887), with zero mean radial velocity: they are
  the orbiting population (the mean infall beyond R200c is carried by the infalling halos).
* Triaxiality (:mod:`dynmass.universe.shapes`): per halo, Allgood et al. 2006 axis ratios, a
  uniform random orientation, positions stretched volume-preservingly along the axes and a
  velocity ellipsoid aligned with them (tensor virial theorem, 3D dispersion unchanged).

Random draws of :func:`place_outskirts`, in order: one concentration scatter per halo, the
axis ratios (one normal and three uniforms per halo), the orientations (three uniforms per
halo), the numbers of added satellites within and beyond R200c, then per satellite (the
occupation's, the added ones within R200c, those beyond) the radius, cos(theta), phi and
three velocity components.

Examples
--------
Two clusters of 10^15 Msun/h: some 35-40 % of their satellites lie beyond R200c (r_t = 1.9
R200c; the radial profile is in :mod:`dynmass.universe.orbiting`):

>>> import numpy as np
>>> from dynmass.cosmology import MDPL2
>>> from dynmass.universe.galaxies import concentration_200c, populate
>>> from dynmass.universe.massfunction import r200c_comoving
>>> from dynmass.universe.outskirts import OutskirtsModel
>>> log_m = np.arange(14.9, 15.11, 0.01)
>>> model = OutskirtsModel.build(log_m, concentration_200c(10**log_m, 0.117, MDPL2), 0.117,
...                              MDPL2)
>>> round(float(model.tau_of(np.array([1e15]))[0]), 2)
1.92
>>> m = np.full(2, 1e15)
>>> halos = {"id": np.array([0, 1]), "x": np.array([20.0, 70.0]), "y": np.full(2, 50.0),
...          "z": np.full(2, 50.0), "vx": np.zeros(2), "vy": np.zeros(2), "vz": np.zeros(2),
...          "m200c": m, "r200c": r200c_comoving(m, 0.117, MDPL2)}
>>> g = populate(halos, 100.0, 0.117, MDPL2, np.random.default_rng(0), outskirts=model)
>>> sat = ~g["is_central"]
>>> round(float(np.mean(g["r_host"][sat] > halos["r200c"][0])), 1)
0.4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from dynmass.universe.galaxies import G_KMS_MPC_MSUN, jeans_sigma_r_dimensionless
from dynmass.universe.orbiting import (
    DK14_BETA,
    DK14_GAMMA,
    R_MAX_R200C,
    Y_GRID,
    cumulative_profile,
    interp_rows,
    orbiting_density,
    outskirt_fraction,
    sample_orbiting_radii,
    truncation_radius_r200c,
)
from dynmass.universe.shapes import (
    ALLGOOD06,
    axis_lengths,
    axis_ratios,
    nonlinear_mass,
    random_rotations,
    velocity_axis_scales,
)

__all__ = ["DK14_BETA", "DK14_GAMMA", "R_MAX_R200C", "OutskirtsModel", "orbiting_density",
           "outskirt_fraction", "outskirts_parameters", "place_outskirts",
           "sample_orbiting_radii", "sphere_correction", "truncation_radius_r200c"]

@dataclass(eq=False)
class OutskirtsModel:
    """Tables of the ``outskirts`` halo model for one universe (mass grid of the build).

    Parameters
    ----------
    log_m : numpy.ndarray
        log10 M200c grid, Msun/h.
    conc : numpy.ndarray
        Mean c200c on the grid.
    tau : numpy.ndarray
        r_t / R200c on the grid (:func:`truncation_radius_r200c`).
    m_star : float
        Non-linear mass of the Allgood et al. 2006 shape relation, Msun/h.
    """

    log_m: np.ndarray
    conc: np.ndarray
    tau: np.ndarray
    m_star: float

    @classmethod
    def build(cls, log_m: np.ndarray, conc: np.ndarray, redshift: float, cosmo: dict[str, Any]
              ) -> OutskirtsModel:
        """Tabulate the model on a mass grid (colossus calls on a coarse 0.1 dex grid).

        Parameters
        ----------
        log_m : numpy.ndarray
            log10 M200c grid, Msun/h (increasing).
        conc : numpy.ndarray
            Mean c200c on the grid.
        redshift : float
            Redshift.
        cosmo : dict
            Cosmological parameters.

        Returns
        -------
        OutskirtsModel
        """
        coarse = np.linspace(log_m[0], log_m[-1], max(2, int((log_m[-1] - log_m[0]) / 0.1) + 2))
        c_coarse = np.interp(coarse, log_m, conc)
        tau = np.interp(log_m, coarse, truncation_radius_r200c(10**coarse, c_coarse, redshift,
                                                               cosmo))
        return cls(np.asarray(log_m, float), np.asarray(conc, float), tau,
                   nonlinear_mass(redshift, cosmo))

    def tau_of(self, m200c: np.ndarray) -> np.ndarray:
        """r_t / R200c of halos of mass ``m200c`` [Msun/h] (interpolated)."""
        return np.interp(np.log10(m200c), self.log_m, self.tau)

    def cumulative_table(self, m200c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative orbiting profiles on the mass grid (mean c200c, built once) and the row
        of each mass ``m200c`` [Msun/h] (nearest grid mass)."""
        if getattr(self, "_cum", None) is None:
            self._cum = cumulative_profile(self.conc, self.tau)
        rows = np.rint((np.log10(m200c) - self.log_m[0]) / (self.log_m[1] - self.log_m[0]))
        return self._cum, np.clip(rows.astype(np.int64), 0, self.log_m.size - 1)

    def fraction_out(self, conc: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """:func:`outskirt_fraction`, interpolated on a (ln c, tau) table built once.

        Parameters
        ----------
        conc : numpy.ndarray
            Concentrations c200c (clipped to 0.5-60).
        tau : numpy.ndarray
            Truncation radii r_t / R200c (clipped to 0.3-6).

        Returns
        -------
        numpy.ndarray
            Satellites between R200c and 4 R200c per satellite within R200c.
        """
        if getattr(self, "_frac", None) is None:
            ln_c = np.linspace(np.log(0.5), np.log(60.0), 48)
            taus = np.linspace(0.3, 6.0, 40)
            cc, tt = np.meshgrid(np.exp(ln_c), taus, indexing="ij")
            table = outskirt_fraction(cc.ravel(), tt.ravel()).reshape(cc.shape)
            self._frac = RegularGridInterpolator((ln_c, taus), table)
        pts = np.stack([np.clip(np.log(conc), np.log(0.5), np.log(60.0)),
                        np.clip(tau, 0.3, 6.0)], axis=-1)
        return self._frac(pts)


def outskirts_parameters() -> dict[str, Any]:
    """What the universe settings record about the outskirts and shapes of the halos.

    Returns
    -------
    dict
        References and parameters (JSON-able).
    """
    return {
        "profile": "Diemer & Kravtsov 2014 (ApJ 789, 1) orbiting term: NFW x "
                   "[1 + (r/r_t)^beta]^(-gamma/beta), mass-selected calibration",
        "dk14_beta": DK14_BETA, "dk14_gamma": DK14_GAMMA,
        "r_t": "(1.9 - 0.18 nu200m) R200m (DK14 eq. 6, colossus)",
        "r_max_r200c": R_MAX_R200C,
        "satellites_within_r200c": "occupation model; Poisson(<N_sat> (k - 1)) added so that "
                                   "the R200c sphere of the stretched halo keeps <N_sat>",
        "satellites_beyond_r200c": "added, Poisson(k <N_sat> F_out(c, r_t)), members",
        "satellite_velocities": "NFW Jeans dispersion, zero mean radial velocity",
        "shapes": "Allgood et al. 2006 (MNRAS 367, 1781): s = s0 (M/M*)^slope, Gaussian "
                  "scatter; P(s/q | s); uniform random orientation; volume-preserving stretch",
        **{f"allgood06_{k}": v for k, v in ALLGOOD06.items()},
        "velocity_ellipsoid": "aligned with the shape; sigma_i^2 ~ A_i a_i^2 (tensor virial "
                              "theorem), 3D dispersion of the spherical Jeans solution",
    }


#: Directions (principal frame) of :func:`sphere_correction`: a Fibonacci sphere.
_N_DIR = 96
_DIRS = np.stack([np.sqrt(1 - ((2 * np.arange(_N_DIR) + 1) / _N_DIR - 1) ** 2)
                  * np.cos(np.pi * (3 - np.sqrt(5)) * np.arange(_N_DIR)),
                  np.sqrt(1 - ((2 * np.arange(_N_DIR) + 1) / _N_DIR - 1) ** 2)
                  * np.sin(np.pi * (3 - np.sqrt(5)) * np.arange(_N_DIR)),
                  (2 * np.arange(_N_DIR) + 1) / _N_DIR - 1], axis=1)


def sphere_correction(cum: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Factor on the satellite numbers that keeps the occupation's count within the R200c
    sphere once the halo is stretched.

    Satellites drawn within y = r / R200c along the direction n (principal frame) land at
    y |L n| after the stretch L = diag(lengths): the R200c sphere keeps those with
    y < 1 / |L n|. Its expected share of the profile is G = <F(min(4, 1 / |L n|))>_n / F(1)
    (F the cumulative orbiting profile; 96 directions of a Fibonacci sphere); k = 1 / G.

    Parameters
    ----------
    cum : numpy.ndarray
        (n_profiles, len(Y_GRID)) cumulative orbiting profiles (any normalisation), e.g.
        :meth:`OutskirtsModel.cumulative_table` (mean concentration per mass).
    rows : numpy.ndarray of int
        Profile row of each halo.
    lengths : numpy.ndarray
        (n, 3) stretch factors of the principal axes of each halo
        (:func:`~dynmass.universe.shapes.axis_lengths`).

    Returns
    -------
    numpy.ndarray
        k per halo (1 for a sphere; ~1.06 on average for cluster shapes).
    """
    k = np.ones(len(rows))
    at_1 = interp_rows(cum, np.arange(cum.shape[0]), np.ones(cum.shape[0]))
    for lo in range(0, len(rows), 8192):
        r = np.asarray(rows[lo:lo + 8192])
        edge = np.minimum(R_MAX_R200C, 1.0 / np.linalg.norm(
            lengths[lo:lo + 8192][:, None, :] * _DIRS[None, :, :], axis=2))
        i = np.clip(np.searchsorted(Y_GRID, edge, side="right") - 1, 0, Y_GRID.size - 2)
        w = (edge - Y_GRID[i]) / (Y_GRID[i + 1] - Y_GRID[i])
        f_edge = cum[r[:, None], i] * (1 - w) + cum[r[:, None], i + 1] * w
        k[lo:lo + 8192] = at_1[r] / f_edge.mean(axis=1)
    return k


def place_outskirts(
    halos: dict[str, np.ndarray],
    has_central: np.ndarray,
    host_idx: np.ndarray,
    n_sat_mean: np.ndarray,
    box_size: float,
    redshift: float,
    rng: np.random.Generator,
    model: OutskirtsModel,
    *,
    beta: float = 0.0,
    velocity_bias: float = 1.0,
    conc_scatter_dex: float = 0.16,
) -> dict[str, np.ndarray]:
    """Phase-space coordinates of centrals and satellites in triaxial halos with outskirts.

    Counterpart of :func:`dynmass.universe.galaxies.place_galaxies` for the ``outskirts``
    model (module docstring): the satellites of ``host_idx`` are placed within R200c, the
    added ones within R200c (:func:`sphere_correction`) and between R200c and
    :data:`R_MAX_R200C`.

    Parameters
    ----------
    halos : dict
        Halo table with ``id``, ``x``, ``y``, ``z`` (comoving Mpc/h), ``vx``, ``vy``, ``vz``
        (km/s), ``m200c`` (Msun/h), ``r200c`` (comoving Mpc/h).
    has_central : numpy.ndarray of bool
        One entry per halo: whether it hosts a central galaxy.
    host_idx : numpy.ndarray of int
        Row in ``halos`` of each satellite within R200c.
    n_sat_mean : numpy.ndarray
        Mean number of satellites within R200c per halo (of the occupation model).
    box_size : float
        Periodic box side, comoving Mpc/h.
    redshift : float
        Redshift (physical R200c for V200c).
    rng : numpy.random.Generator
        Random generator.
    model : OutskirtsModel
        Tables of the model.
    beta : float
        Constant velocity anisotropy of satellites.
    velocity_bias : float
        Ratio of satellite to dark-matter velocity dispersion.
    conc_scatter_dex : float
        Log-normal scatter of concentration at fixed mass, dex.

    Returns
    -------
    dict of numpy.ndarray
        ``x, y, z`` (comoving Mpc/h), ``vx, vy, vz`` (km/s), ``host_id``, ``is_central``,
        ``r_host`` (comoving Mpc/h) for the centrals, the occupation's satellites and the
        added ones, in that order, and ``extra_rows`` (host row of each added satellite).
    """
    m = np.asarray(halos["m200c"], dtype=float)
    n_h = m.size
    host_idx = np.asarray(host_idx, dtype=np.int64)
    c_mean = np.interp(np.log10(m), model.log_m, model.conc)
    conc_h = c_mean * 10 ** (conc_scatter_dex * rng.standard_normal(n_h))
    tau_h = model.tau_of(m)
    q, s = axis_ratios(m, model.m_star, rng)
    rot = random_rotations(n_h, rng)
    n_mean = np.asarray(n_sat_mean, float)
    k = sphere_correction(*model.cumulative_table(m), axis_lengths(q, s))
    extra_in = np.repeat(np.arange(n_h), rng.poisson(n_mean * (k - 1.0)))
    extra_out = np.repeat(np.arange(n_h), rng.poisson(n_mean * k
                                                      * model.fraction_out(conc_h, tau_h)))
    extra = np.concatenate([extra_in, extra_out])
    rows = np.concatenate([host_idx, extra])
    n_in = host_idx.size + extra_in.size
    y_lo = np.concatenate([np.zeros(n_in), np.ones(extra_out.size)])
    y_hi = np.concatenate([np.ones(n_in), np.full(extra_out.size, R_MAX_R200C)])
    y = sample_orbiting_radii(conc_h, tau_h, rows, y_lo, y_hi, rng.uniform(size=rows.size))
    r200 = np.asarray(halos["r200c"], dtype=float)
    c_s = conc_h[rows]
    cos_t = rng.uniform(-1, 1, rows.size)
    sin_t = np.sqrt(1 - cos_t**2)
    phi = rng.uniform(0, 2 * np.pi, rows.size)
    e_r = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    e_t = np.stack([cos_t * np.cos(phi), cos_t * np.sin(phi), -sin_t], axis=1)
    e_p = np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)], axis=1)
    v200 = np.sqrt(G_KMS_MPC_MSUN * m[rows] / (r200[rows] / (1.0 + redshift)))
    sig_r = velocity_bias * v200 * jeans_sigma_r_dimensionless(y * c_s, c_s, beta)
    sig_t = sig_r * np.sqrt(1.0 - beta)
    v_rel = (e_r * (sig_r * rng.standard_normal(rows.size))[:, None]
             + e_t * (sig_t * rng.standard_normal(rows.size))[:, None]
             + e_p * (sig_t * rng.standard_normal(rows.size))[:, None])
    # principal frame -> box: stretch along the axes, then rotate (columns of rot = axes)
    d = np.einsum("nij,nj->ni", rot[rows], (y * r200[rows])[:, None] * e_r * axis_lengths(q, s)[rows])
    v_rel = np.einsum("nij,nj->ni", rot[rows], v_rel * velocity_axis_scales(q, s)[rows])
    cen = np.flatnonzero(has_central)
    out: dict[str, np.ndarray] = {}
    for k, col in enumerate("xyz"):
        hc = np.asarray(halos[col], dtype=float)
        sat = np.mod(hc[rows] + d[:, k], box_size)
        sat[sat >= box_size] = 0.0
        out[col] = np.concatenate([hc[cen], sat])
    for k, col in enumerate(("vx", "vy", "vz")):
        hv = np.asarray(halos[col], dtype=float)
        out[col] = np.concatenate([hv[cen], hv[rows] + v_rel[:, k]])
    ids = np.asarray(halos["id"], dtype=np.int64)
    out["host_id"] = np.concatenate([ids[cen], ids[rows]])
    out["is_central"] = np.concatenate([np.ones(cen.size, bool), np.zeros(rows.size, bool)])
    out["r_host"] = np.concatenate([np.zeros(cen.size),
                                    np.sqrt(np.sum(d**2, axis=1))]).astype(np.float32)
    out["extra_rows"] = extra
    return out
