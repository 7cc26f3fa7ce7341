"""Large-scale structure: a Gaussian random field of the linear power spectrum on an FFT grid,
biased log-normal halo densities drawn from it, and linear-theory bulk velocities.

Conventions: periodic box of side ``box_size`` (comoving Mpc/h) sampled by ``n_grid``^3 nodes at
positions ``i * box_size / n_grid``; wavenumbers in h/Mpc; P(k) in (Mpc/h)^3; numpy/scipy FFT
conventions (forward transform unnormalised), so that a field with power spectrum P has
<|delta_k|^2> = P(k) N^6 / V.

Ingredients and references
--------------------------
* Linear matter power spectrum at the snapshot redshift from colossus (Eisenstein & Hu 1998
  transfer function, normalised to sigma8; Diemer 2018, ApJS 239, 35).
* Biased log-normal tracers (Coles & Jones 1991, MNRAS 248, 1; Agrawal et al. 2017, JCAP 10,
  003): for a tracer of linear bias b the Gaussian field has correlation
  xi_G = ln(1 + b^2 xi_lin), so that the log-normal field exp(delta_G - sigma_G^2/2) has
  correlation b^2 xi_lin exactly; all tracers share the phases of one linear field, so that
  halos of different mass trace the same structures and move with the same flows.
* Linear-theory velocities (Peebles 1980, LSS of the Universe, sec. 14):
  v_k = i a H(z) f(z) delta_k k / k^2, f = dlnD/dlna from the colossus growth factor.
* Small-scale halo velocities not resolved by the grid: the linear velocity dispersion of modes
  above the grid's Nyquist wavenumber, smoothed on the halo's Lagrangian radius (Sheth &
  Diaferio 2001, MNRAS 322, 901), added as Gaussian noise per halo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft

from dynmass.cosmology import colossus_cosmology, hubble_h_units
from dynmass.errors import InputError

_WORKERS = max(1, min(2, os.cpu_count() or 1))


def linear_power(k_hmpc: np.ndarray, redshift: float, cosmo: dict[str, Any]) -> np.ndarray:
    """Linear matter power spectrum P(k, z) (colossus, Eisenstein & Hu 1998 transfer function).

    Parameters
    ----------
    k_hmpc : array_like
        Wavenumbers, h/Mpc (> 0).
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    numpy.ndarray
        P(k) in (Mpc/h)^3.
    """
    k = np.asarray(k_hmpc, dtype=float)
    with colossus_cosmology(cosmo) as c:
        return np.asarray(c.matterPowerSpectrum(k, redshift), dtype=float)


def xi_linear(r_mpch: np.ndarray, redshift: float, cosmo: dict[str, Any]) -> np.ndarray:
    """Linear matter correlation function xi_lin(r) at ``redshift`` (colossus), the Fourier
    transform of :func:`linear_power`; used by the clustering check and the infall model.

    Parameters
    ----------
    r_mpch : array_like
        Separations, comoving Mpc/h.
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    numpy.ndarray
        xi_lin(r) (dimensionless).
    """
    with colossus_cosmology(cosmo) as c:
        return np.asarray(c.correlationFunction(np.asarray(r_mpch, float), redshift), float)


def growth_rate(redshift: float, cosmo: dict[str, Any]) -> float:
    """Linear growth rate f = dlnD/dlna (finite difference of the colossus growth factor).

    Parameters
    ----------
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.

    Returns
    -------
    float
        f(z) (dimensionless).
    """
    with colossus_cosmology(cosmo) as c:
        eps = 1e-3
        a0 = 1.0 / (1.0 + redshift)
        a1, a2 = a0 * (1 - eps), a0 * (1 + eps)
        d1, d2 = c.growthFactor(1 / a1 - 1), c.growthFactor(1 / a2 - 1)
    return float(np.log(d2 / d1) / np.log(a2 / a1))


def _kgrid(n_grid: int, box_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k1 = (2 * np.pi * np.fft.fftfreq(n_grid, d=box_size / n_grid)).astype(np.float32)
    kz = (2 * np.pi * np.fft.rfftfreq(n_grid, d=box_size / n_grid)).astype(np.float32)
    return k1[:, None, None], k1[None, :, None], kz[None, None, :]


@dataclass(eq=False)
class LinearField:
    """One realisation of the linear density field on a periodic FFT grid.

    Parameters
    ----------
    delta_k : numpy.ndarray
        rfft of the linear overdensity (complex64, shape (n, n, n//2+1)).
    power_grid : numpy.ndarray
        P(k) at every grid mode (float32, same shape), (Mpc/h)^3; 0 at k = 0.
    n_grid : int
        Nodes per side.
    box_size : float
        Box side, comoving Mpc/h.
    redshift : float
        Redshift the field is evolved to.
    cosmo : dict
        Cosmological parameters.
    """

    delta_k: np.ndarray
    power_grid: np.ndarray
    n_grid: int
    box_size: float
    redshift: float
    cosmo: dict[str, Any]

    @property
    def cell_size(self) -> float:
        """Grid spacing, comoving Mpc/h."""
        return self.box_size / self.n_grid

    @property
    def k_nyquist(self) -> float:
        """Nyquist wavenumber of the grid, h/Mpc."""
        return np.pi / self.cell_size

    def grid_correlation(self) -> np.ndarray:
        """Correlation function of the field between grid nodes (float32 real grid)."""
        n3 = float(self.n_grid) ** 3
        return scipy.fft.irfftn(
            self.power_grid * np.float32(n3 / self.box_size**3),
            s=(self.n_grid,) * 3, workers=_WORKERS,
        ).astype(np.float32, copy=False)

    def _inverse_power(self) -> np.ndarray:
        if getattr(self, "_inv_p", None) is None:
            p_lin = self.power_grid * np.float32(float(self.n_grid) ** 3 / self.box_size**3)
            with np.errstate(divide="ignore"):
                self._inv_p = np.where(p_lin > 0, 1.0 / p_lin, 0.0).astype(np.float32)
        return self._inv_p

    def biased_density(self, bias: float, xi_grid: np.ndarray | None = None) -> np.ndarray:
        """Log-normal relative density of a tracer with linear bias ``bias``.

        The Gaussian field shares the phases of :attr:`delta_k`; its spectrum is that of
        xi_G = ln(1 + b^2 xi_grid) (negative modes set to 0), so the returned field
        exp(delta_G - sigma_G^2 / 2) has mean 1 and correlation ~ b^2 xi_lin.

        Parameters
        ----------
        bias : float
            Linear bias b (> 0).
        xi_grid : numpy.ndarray, optional
            Output of :meth:`grid_correlation` (pass it to avoid recomputing).

        Returns
        -------
        numpy.ndarray
            float32 real grid (n, n, n), mean about 1, positive.
        """
        if not (np.isfinite(bias) and bias > 0):
            raise InputError(f"bias {bias} must be positive", column="bias")
        if xi_grid is None:
            xi_grid = self.grid_correlation()
        arg = xi_grid * np.float32(bias**2)
        arg += np.float32(1.0)
        np.maximum(arg, np.float32(1e-6), out=arg)
        np.log(arg, out=arg)
        p_gauss = scipy.fft.rfftn(arg, workers=_WORKERS)
        del arg
        ratio = np.clip(p_gauss.real, 0, None).astype(np.float32)
        del p_gauss
        ratio *= self._inverse_power()
        np.sqrt(ratio, out=ratio)
        delta_g = scipy.fft.irfftn(self.delta_k * ratio, s=(self.n_grid,) * 3,
                                   workers=_WORKERS).astype(np.float32, copy=False)
        del ratio
        var = float(np.mean(np.square(delta_g, dtype=np.float64)))
        delta_g -= np.float32(0.5 * var)
        np.exp(delta_g, out=delta_g)
        return delta_g

    def velocity_grids(self) -> list[np.ndarray]:
        """Linear-theory peculiar velocity field v_k = i a H f delta_k k / k^2.

        Returns
        -------
        list of numpy.ndarray
            Three float32 real grids (vx, vy, vz), km/s.
        """
        a = 1.0 / (1.0 + self.redshift)
        # H(z) in km/s per comoving... per (Mpc/h): 100 E(z); times a for comoving displacements
        ahf = a * hubble_h_units(self.cosmo, self.redshift) * growth_rate(self.redshift, self.cosmo)
        kx, ky, kz = _kgrid(self.n_grid, self.box_size)
        k2 = kx**2 + ky**2 + kz**2
        k2[0, 0, 0] = 1.0
        out = []
        for kc in (kx, ky, kz):
            vk = (1j * ahf) * self.delta_k * (kc / k2)
            vk[0, 0, 0] = 0
            out.append(scipy.fft.irfftn(vk, s=(self.n_grid,) * 3, workers=_WORKERS).astype(np.float32))
            del vk
        return out


def make_linear_field(
    n_grid: int,
    box_size: float,
    redshift: float,
    cosmo: dict[str, Any],
    rng: np.random.Generator,
    fixed_amplitude: bool = False,
) -> LinearField:
    """Draw a Gaussian random field with the linear power spectrum on a periodic grid.

    White noise in real space is transformed and scaled by sqrt(P(k) N^3 / V), which gives the
    right Hermitian symmetry and <|delta_k|^2> = P N^6 / V.

    Parameters
    ----------
    n_grid : int
        Nodes per side (>= 8).
    box_size : float
        Box side, comoving Mpc/h.
    redshift : float
        Redshift.
    cosmo : dict
        Cosmological parameters.
    rng : numpy.random.Generator
        Random generator (consumed).
    fixed_amplitude : bool
        Set every mode's amplitude to its expectation, keeping random phases ("fixed" fields
        of Angulo & Pontzen 2016, MNRAS 462, L1): two-point statistics then lack most of the
        cosmic variance of a small box.

    Returns
    -------
    LinearField
    """
    if n_grid < 8:
        raise InputError(f"grid of {n_grid} nodes per side is too coarse (need >= 8)", column="grid")
    kx, ky, kz = _kgrid(n_grid, box_size)
    kmag = np.sqrt(kx**2 + ky**2 + kz**2)
    k_tab = np.logspace(np.log10(2 * np.pi / box_size) - 0.1, np.log10(kmag.max()) + 0.1, 600)
    p_tab = linear_power(k_tab, redshift, cosmo)
    power = np.exp(np.interp(np.log(np.maximum(kmag, k_tab[0])), np.log(k_tab), np.log(p_tab)))
    power = power.astype(np.float32)
    power[0, 0, 0] = 0.0
    del kmag
    white = rng.standard_normal((n_grid,) * 3, dtype=np.float32)
    delta_k = scipy.fft.rfftn(white, workers=_WORKERS).astype(np.complex64)
    del white
    if fixed_amplitude:
        amp = np.abs(delta_k)
        amp[amp == 0] = 1.0
        delta_k *= np.float32(n_grid**1.5) / amp
        del amp
    delta_k *= np.sqrt(power * np.float32(n_grid**3 / box_size**3))
    return LinearField(delta_k, power, n_grid, float(box_size), float(redshift), cosmo)


def sample_cells(
    density: np.ndarray, n: int, box_size: float, rng: np.random.Generator
) -> np.ndarray:
    """Place ``n`` points in grid cells with probability proportional to ``density``,
    uniformly within each cell (cell ``i`` spans node ``i`` +- half a cell, periodic).

    Parameters
    ----------
    density : numpy.ndarray
        (n_grid, n_grid, n_grid) non-negative weights of the cells (need not be normalised).
    n : int
        Number of points.
    box_size : float
        Box side, comoving Mpc/h.
    rng : numpy.random.Generator
        Random generator (consumed).

    Returns
    -------
    numpy.ndarray
        (n, 3) positions in [0, box_size), comoving Mpc/h.
    """
    n_grid = density.shape[0]
    cdf = np.cumsum(density.ravel(), dtype=np.float64)
    idx = np.searchsorted(cdf, rng.uniform(0, cdf[-1], size=n), side="right")
    idx = np.minimum(idx, cdf.size - 1)
    ijk = np.stack(np.unravel_index(idx, density.shape), axis=1).astype(np.float64)
    cell = box_size / n_grid
    pos = (ijk + rng.uniform(-0.5, 0.5, size=(n, 3))) * cell
    return np.mod(pos, box_size)


def cic_interpolate(grid: np.ndarray, pos: np.ndarray, box_size: float) -> np.ndarray:
    """Cloud-in-cell (trilinear) interpolation of a periodic grid at positions ``pos``.

    Parameters
    ----------
    grid : numpy.ndarray
        (n, n, n) values at nodes ``i * box_size / n``.
    pos : numpy.ndarray
        (m, 3) positions, comoving Mpc/h.
    box_size : float
        Box side, comoving Mpc/h.

    Returns
    -------
    numpy.ndarray
        (m,) interpolated values (float64).
    """
    n = grid.shape[0]
    u = np.mod(pos, box_size) * (n / box_size)
    i0 = np.floor(u).astype(np.int64)
    f = u - i0
    i0 %= n
    i1 = (i0 + 1) % n
    out = np.zeros(len(pos))
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        ix = i1[:, 0] if dx else i0[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            iy = i1[:, 1] if dy else i0[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                iz = i1[:, 2] if dz else i0[:, 2]
                out += wx * wy * wz * grid[ix, iy, iz]
    return out


def unresolved_velocity_dispersion(m200c_msunh: np.ndarray, field: LinearField) -> np.ndarray:
    """1D linear velocity dispersion of modes above the grid Nyquist wavenumber, smoothed with a
    top-hat on the Lagrangian radius of a halo of mass M (Sheth & Diaferio 2001).

    sigma^2 = (a H f)^2 / 3 * 1/(2 pi^2) * int_{k_Nyq}^inf P(k) W_TH^2(k R_L) dk
    (a spherical cut at the Nyquist wavenumber approximates the cubic grid's Fourier cell).

    Parameters
    ----------
    m200c_msunh : array_like
        Halo masses, Msun/h (Lagrangian radius from the mean matter density).
    field : LinearField
        The grid whose resolution sets the lower limit of the integral.

    Returns
    -------
    numpy.ndarray
        km/s per component, one per mass.
    """
    cosmo, z = field.cosmo, field.redshift
    m = np.atleast_1d(np.asarray(m200c_msunh, dtype=float))
    rho_m0 = 2.775e11 * float(cosmo["Om0"])  # comoving (Msun/h) / (Mpc/h)^3
    r_l = (3 * m / (4 * np.pi * rho_m0)) ** (1 / 3)
    k = np.logspace(np.log10(field.k_nyquist), np.log10(field.k_nyquist) + 4, 800)
    pk = linear_power(k, z, cosmo)
    x = k[None, :] * r_l[:, None]
    w = 3 * (np.sin(x) - x * np.cos(x)) / x**3
    integral = np.trapezoid(pk[None, :] * w**2, k, axis=1) / (2 * np.pi**2)
    a = 1.0 / (1.0 + z)
    ahf = a * hubble_h_units(cosmo, z) * growth_rate(z, cosmo)
    return ahf * np.sqrt(integral / 3.0)
