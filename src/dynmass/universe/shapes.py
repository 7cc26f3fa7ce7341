"""Triaxial halos: axis ratios, random orientations and velocity ellipsoids aligned with the
shape (``outskirts`` option of the mock universe, :mod:`dynmass.universe.outskirts`).

Ingredients and references
--------------------------
* Axis ratios (Allgood et al. 2006, MNRAS 367, 1781, eqs. 6-7 and sec. 3.3): the minor-to-major
  axis ratio s = c/a is Gaussian with mean 0.54 (M / M_*)^(-0.050) and standard deviation 0.1
  (measured at 0.3 R_vir; M_* the non-linear mass, peak height nu = 1, from colossus
  ``peaks.nonLinearMass``); given s, the minor-to-intermediate ratio q' = s / q (q = b/a)
  follows P(q'|s) = 3 / (2 (1 - r)) [1 - ((2 q' - 1 - r) / (1 - r))^2] on r <= q' <= 1 with
  r = max(s, 0.5) (Allgood et al. 2006, sec. 3.3): mostly prolate halos (q' ~ 0.75). Allgood et al. fit M_vir up to 2 x 10^14 Msun/h; the relation is applied to
  M200c and extrapolated to 10^15.5 Msun/h. s is kept within [0.2, 0.98].
* Orientation: a uniformly random rotation per halo (random unit quaternions, Shoemake 1992,
  Graphics Gems III, 124).
* Positions: the spherical satellite positions are stretched along the principal axes by
  (1, q, s) / (q s)^(1/3) (volume preserving), then rotated.
* Velocities: the velocity ellipsoid is aligned with the shape (Kasun & Evrard 2005, ApJ 629,
  781; Wojtak, Gottloeber & Klypin 2013, MNRAS 434, 1576). Its axes follow from the tensor
  virial theorem (Chandrasekhar 1969, Ellipsoidal Figures of Equilibrium; Binney & Tremaine
  2008, eq. 4.250) for a body whose isodensity surfaces are similar ellipsoids: the potential
  energy tensor is diagonal with W_ii proportional to A_i a_i^2 (Binney & Tremaine 2008,
  eq. 2.140 and Table 2.1; A_i the index symbols), so sigma_i^2 = 3 sigma^2 A_i a_i^2 /
  sum_j A_j a_j^2 keeps the 3D dispersion (the spherical Jeans value) and makes the velocity
  ellipsoid rounder than the shape. A_i = (2/3) a_1 a_2 a_3 R_D(a_j^2, a_k^2, a_i^2) (Carlson's
  symmetric integral, scipy ``elliprd``); sum_i A_i = 2.

Then sigma_los of one halo depends on the line of sight: :func:`los_sigma_spread` gives the
model's spread in dex of mass (3 x the dex of sigma_los, sigma^3 ~ M).

Examples
--------
A sphere has equal index symbols and an isotropic velocity ellipsoid; a prolate halo with
q = s = 0.5 moves fastest along its long axis, with a velocity ellipsoid rounder than its shape:

>>> import numpy as np
>>> from dynmass.universe.shapes import axis_lengths, velocity_axis_scales
>>> np.round(velocity_axis_scales(np.array([1.0]), np.array([1.0])), 3).tolist()
[[1.0, 1.0, 1.0]]
>>> lengths = axis_lengths(np.array([0.5]), np.array([0.5]))
>>> np.round(lengths, 3).tolist()
[[1.587, 0.794, 0.794]]
>>> f = velocity_axis_scales(np.array([0.5]), np.array([0.5]))
>>> np.round(f, 3).tolist(), round(float(np.sum(f**2)), 6)
([[1.17, 0.903, 0.903]], 3.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import elliprd

from dynmass.cosmology import colossus_cosmology

__all__ = ["ALLGOOD06", "axis_lengths", "axis_ratios", "los_sigma_spread", "nonlinear_mass",
           "random_rotations", "velocity_axis_scales"]

#: Allgood et al. 2006 (MNRAS 367, 1781): <s> = s0 (M / M_*)^slope, Gaussian scatter sigma_s.
ALLGOOD06 = {"s0": 0.54, "slope": -0.050, "sigma_s": 0.10, "s_min": 0.2, "s_max": 0.98}


def nonlinear_mass(redshift: float, cosmo: dict[str, Any]) -> float:
    """Non-linear mass M_* (peak height 1) at ``redshift``, Msun/h (colossus).

    Parameters
    ----------
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    float
        M_*, Msun/h.
    """
    from colossus.lss import peaks

    with colossus_cosmology(cosmo):
        return float(peaks.nonLinearMass(redshift))


def axis_ratios(m200c: np.ndarray, m_star: float, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Draw the axis ratios q = b/a and s = c/a of halos (Allgood et al. 2006).

    Random draws, in order: one normal per halo (s), then three uniforms per halo (q').

    Parameters
    ----------
    m200c : numpy.ndarray
        Halo masses M200c, Msun/h.
    m_star : float
        Non-linear mass, Msun/h (:func:`nonlinear_mass`).
    rng : numpy.random.Generator
        Random generator (consumed).

    Returns
    -------
    (q, s) : tuple of numpy.ndarray
        Intermediate-to-major and minor-to-major axis ratios, s <= q <= 1.
    """
    p = ALLGOOD06
    m = np.asarray(m200c, dtype=float)
    mean_s = p["s0"] * (m / m_star) ** p["slope"]
    s = np.clip(mean_s + p["sigma_s"] * rng.standard_normal(m.size), p["s_min"], p["s_max"])
    r = np.maximum(s, 0.5)
    # Epanechnikov variate on [-1, 1] (density 3/4 (1 - e^2)): of three uniforms, the second
    # when the third has the largest modulus, else the third (Devroye 1986, p. 236)
    u = rng.uniform(-1.0, 1.0, size=(3, m.size))
    take_second = (np.abs(u[2]) >= np.abs(u[1])) & (np.abs(u[2]) >= np.abs(u[0]))
    e = np.where(take_second, u[1], u[2])
    q_prime = 0.5 * (1.0 + r) + 0.5 * (1.0 - r) * e
    return s / q_prime, s


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random rotation matrices (Shoemake 1992 unit quaternions).

    Parameters
    ----------
    n : int
        Number of rotations.
    rng : numpy.random.Generator
        Random generator (three uniforms per rotation).

    Returns
    -------
    numpy.ndarray
        (n, 3, 3) rotation matrices; column k is the k-th principal axis (major, intermediate,
        minor) in box coordinates.
    """
    u1, u2, u3 = rng.uniform(size=(3, n))
    a, b = np.sqrt(1 - u1), np.sqrt(u1)
    w, x = a * np.sin(2 * np.pi * u2), a * np.cos(2 * np.pi * u2)
    y, z = b * np.sin(2 * np.pi * u3), b * np.cos(2 * np.pi * u3)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=1)


def axis_lengths(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Volume-preserving stretch factors (1, q, s) / (q s)^(1/3) of the principal axes.

    Parameters
    ----------
    q, s : numpy.ndarray
        Axis ratios b/a and c/a.

    Returns
    -------
    numpy.ndarray
        (n, 3) factors, product 1.
    """
    q, s = np.atleast_1d(q).astype(float), np.atleast_1d(s).astype(float)
    return np.stack([np.ones_like(q), q, s], axis=1) / np.cbrt(q * s)[:, None]


def velocity_axis_scales(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Velocity dispersion along the principal axes over the isotropic value (tensor virial).

    f_i^2 = 3 A_i a_i^2 / sum_j A_j a_j^2 with the index symbols A_i of the ellipsoid
    (module docstring); sum_i f_i^2 = 3.

    Parameters
    ----------
    q, s : numpy.ndarray
        Axis ratios b/a and c/a.

    Returns
    -------
    numpy.ndarray
        (n, 3) factors f_i multiplying the velocity components along the principal axes.
    """
    a = axis_lengths(q, s)
    a2 = a**2
    prod = np.prod(a, axis=1)
    idx = np.zeros_like(a2)
    for i in range(3):
        j, k = [m for m in range(3) if m != i]
        idx[:, i] = 2.0 / 3.0 * prod * elliprd(a2[:, j], a2[:, k], a2[:, i])
    w = idx * a2
    return np.sqrt(3.0 * w / np.sum(w, axis=1, keepdims=True))


def los_sigma_spread(q: np.ndarray, s: np.ndarray, n_los: int, rng: np.random.Generator
                     ) -> np.ndarray:
    """Spread over random lines of sight of the model's sigma_los, in dex of mass, per halo.

    sigma_los^2(n) = sum_i (n . e_i)^2 f_i^2 sigma^2 (:func:`velocity_axis_scales`); the
    spread is the standard deviation over ``n_los`` isotropic directions of 1.5 log10
    sigma_los^2 (3 x dex of sigma_los).

    Parameters
    ----------
    q, s : numpy.ndarray
        Axis ratios b/a and c/a.
    n_los : int
        Random lines of sight per halo.
    rng : numpy.random.Generator
        Random generator (directions).

    Returns
    -------
    numpy.ndarray
        One spread per halo, dex of mass.
    """
    f2 = velocity_axis_scales(q, s) ** 2
    n = rng.standard_normal((f2.shape[0], n_los, 3))
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    sig2 = np.einsum("hki,hi->hk", n**2, f2)
    return np.std(1.5 * np.log10(sig2), axis=1)
