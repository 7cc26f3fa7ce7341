"""Particle-mesh (PM) N-body mechanics of the ``nbody`` engine, with jaxpm (JAX, float32, CPU).

The run itself, with its checkpoint, is :func:`dynmass.universe.nbody.run_pm`; this module
holds its settings (:class:`PMSettings`), result (:class:`PMResult`) and steps
(:func:`simulate`).

Steps of :func:`simulate`
-------------------------
1. **Initial conditions.** Gaussian white noise on the particle grid (``n_side``^3 nodes,
   numpy ``default_rng`` seeded with ``seed``, so the same seed gives the same field on every
   machine and JAX version), coloured with the linear matter power spectrum at z = 0 of
   :func:`dynmass.universe.field.linear_power` (colossus, Eisenstein & Hu 1998, normalised to
   sigma8) -- the same P(k) as the analytic engine.
2. **2LPT at a_start** (jaxpm's ``lpt``, Jenkins 2010 eqs. 2-3): displacements and momenta of
   the particles from their grid points, scaled with jax_cosmo's growth factors D1, D2 (which
   equal 1 at a = 1; D1(1) / D1(0.1) differs from colossus' by 0.1%). jaxpm displaces with a
   finite-difference gradient whose divergence falls short at high k; each mode is boosted
   by the inverse of that shortfall first, so that the initial density has the linear power
   up to the particle Nyquist wavenumber. Default ``a_start = 0.1`` (z = 9, FastPM's choice
   with 2LPT): the 1D rms linear displacement is then 0.76 Mpc/h (MDPL2), below the particle
   spacing of 128^3 - 256^3 particles in 250 Mpc/h (before shell crossing), and the 2LPT
   transients (Crocce, Pueblas & Scoccimarro 2006) have decayed by the snapshot.
3. **Kick-drift-kick leapfrog** in the scale factor a, ``n_steps`` steps evenly spaced in a
   from ``a_start`` to ``1 / (1 + redshift)``, with the FastPM kick and drift factors (Feng
   et al. 2016, MNRAS 463, 2273): built from the growth functions D(a) and
   Gf(a) = a^2 E(a) f(a) D(a), so the linear growth of the large scales is exact whatever
   the number of steps (10 and 30 steps agree to 1e-4). Forces: cloud-in-cell (CIC) density
   on a mesh of ``mesh_factor * n_side`` cells per side, real FFTs, jaxpm's
   inverse-Laplacian and 4-point finite-difference gradient kernels, CIC read-back (the same
   forces as ``jaxpm.pm.pm_forces``, to 1e-6, which only accepts one particle per cell).

Units and conventions
---------------------
Internally (as in jaxpm) positions are in mesh cells and the momentum is
``p = a^2 (dx/dt) / H0`` in mesh cells, time in units of 1/H0. The peculiar velocity is then
``v = a dx/dt = H0 p / a`` = ``100 * cell * p / a`` km/s with the cell size in Mpc/h (tested in
``tests/test_nbody_pm.py`` against the linear-theory relation of velocity divergence and
density). Outputs: positions comoving Mpc/h in [0, box_size), peculiar velocities km/s,
particle mass Msun/h (rho_crit,0 Omega_m (box / n_side)^3).

Resolution
----------
The force resolution is the mesh cell, ``box_size / (mesh_factor * n_side)`` comoving Mpc/h:
forces are softened on about 1-2 cells, so halo cores and profiles are not resolved below a
few cells (for 256^3 particles, mesh factor 2 in 250 Mpc/h: cell 0.49 Mpc/h, more than the
R200c of a 10^13 Msun/h halo, 0.39 comoving Mpc/h), and halo velocity dispersions are low
inside that radius. Halos with fewer than about 20-30 particles are unusable (mass and
position noise, spurious groups): the halo finder's ``min_particles`` defaults to 20, and
masses below ~100 particles are rough. Discreteness of the particle lattice changes linear
growth at high k: in a linear run (sigma8 = 0.01, 32^3 in 200 Mpc/h), displacements grow
1.004, 1.014, 1.045, 1.13 times the linear rate at k < 0.1, 0.1-0.2, 0.2-0.4, 0.4-0.6 of the
particle Nyquist wavenumber with mesh factor 2, and 0.995, 0.97, 0.91, 0.75 with mesh factor
1 (CIC smoothing). Nonlinear power at z = 0.117 (128^3 in 250 Mpc/h, 30 steps; shot noise
subtracted): P / P_lin = 1.06, 1.46, 4.9 at k = 0.1, 0.3, 1 h/Mpc with mesh factor 2 (1.06,
1.42, 3.9 with mesh factor 1: the coarser forces lose power at k ~ 1 h/Mpc).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dynmass.cosmology import MDPL2, validate_cosmology
from dynmass.errors import InputError

log = logging.getLogger(__name__)

#: Critical density today, h^2 Msun / Mpc^3, i.e. Msun/h per (Mpc/h)^3.
RHO_CRIT0 = 2.77536627e11
#: Version tag of the PM scheme (part of the checkpoint hash: a change of scheme invalidates).
PM_SCHEME = "dynmass-pm-1: numpy white noise, colossus P(k), jaxpm 2LPT, FastPM KDK linear in a"


@dataclass
class PMSettings:
    """Settings of one particle-mesh run (all recorded; they define the checkpoint).

    Parameters
    ----------
    box_size : float
        Side of the periodic box, comoving Mpc/h.
    n_side : int
        Particles per side (n_side^3 particles), 8 to 1024.
    mesh_factor : int
        PM mesh cells per particle spacing along a side: 1 or 2 (mesh of
        ``mesh_factor * n_side`` cells per side).
    redshift : float
        Snapshot redshift, in [0, 1 / a_start - 1).
    cosmology : dict
        Cosmological parameters (flat; default MDPL2).
    seed : int
        Seed of the initial conditions (>= 0).
    a_start : float
        Scale factor of the 2LPT initial conditions, in [0.01, 0.5].
    n_steps : int
        Number of kick-drift-kick steps, evenly spaced in a, 1 to 1000.
    """

    box_size: float
    n_side: int
    mesh_factor: int = 2
    redshift: float = 0.117
    cosmology: dict[str, Any] = field(default_factory=lambda: dict(MDPL2))
    seed: int = 0
    a_start: float = 0.1
    n_steps: int = 30

    def __post_init__(self) -> None:
        self.cosmology = validate_cosmology(dict(self.cosmology))
        if not bool(self.cosmology.get("flat", True)):
            raise InputError("the nbody engine needs a flat cosmology", column="cosmology")
        for name, kind in (("n_side", int), ("mesh_factor", int), ("seed", int),
                           ("n_steps", int), ("box_size", float), ("redshift", float),
                           ("a_start", float)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or (
                    kind is int and float(value) != int(value)) or not np.isfinite(value):
                raise InputError(f"setting {name}={value!r} must be a finite {kind.__name__}",
                                 column=name)
            setattr(self, name, kind(value))
        checks = [
            ("box_size", self.box_size > 0, "must be > 0 Mpc/h"),
            ("n_side", 8 <= self.n_side <= 1024, "must lie in [8, 1024] particles per side"),
            ("mesh_factor", self.mesh_factor in (1, 2), "must be 1 or 2"),
            ("seed", self.seed >= 0, "must be >= 0"),
            ("n_steps", 1 <= self.n_steps <= 1000, "must lie in [1, 1000]"),
            ("a_start", 0.01 <= self.a_start <= 0.5, "must lie in [0.01, 0.5]"),
            ("redshift", 0 <= self.redshift < 1 / self.a_start - 1,
             f"must lie in [0, {1 / self.a_start - 1:g}) (after a_start={self.a_start:g})"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise InputError(f"setting {name}={getattr(self, name)!r} {why}", column=name)

    @property
    def n_mesh(self) -> int:
        """PM mesh cells per side."""
        return self.mesh_factor * self.n_side

    @property
    def cell_size(self) -> float:
        """PM mesh cell (the force resolution), comoving Mpc/h."""
        return self.box_size / self.n_mesh

    @property
    def particle_mass(self) -> float:
        """Mass of one particle, Msun/h: rho_crit,0 Omega_m (box_size / n_side)^3."""
        return RHO_CRIT0 * float(self.cosmology["Om0"]) * (self.box_size / self.n_side) ** 3

    def key(self) -> dict[str, Any]:
        """The settings that define the run (hashed into the checkpoint)."""
        return {**asdict(self), "scheme": PM_SCHEME}

    def digest(self) -> str:
        """SHA-256 of :meth:`key` as sorted JSON."""
        return hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """Every setting plus derived numbers (particle mass, force resolution), JSON-able."""
        return {**self.key(), "n_mesh": self.n_mesh, "particle_mass": self.particle_mass,
                "force_resolution": self.cell_size,
                "particle_spacing": self.box_size / self.n_side,
                "integrator": "kick-drift-kick, FastPM factors (Feng et al. 2016), "
                              "steps evenly spaced in a",
                "initial_conditions": "2LPT (jaxpm.pm.lpt) of a Gaussian field of "
                                      "dynmass.universe.field.linear_power at z=0",
                "settings_sha256": self.digest(), "versions": _versions()}


@dataclass(eq=False)
class PMResult:
    """Particles at the snapshot of a particle-mesh run.

    Parameters
    ----------
    pos : numpy.ndarray
        (N, 3) float32 positions, comoving Mpc/h in [0, box_size).
    vel : numpy.ndarray
        (N, 3) float32 peculiar velocities, km/s.
    particle_mass : float
        Mass of each particle, Msun/h.
    settings : dict
        :meth:`PMSettings.to_dict` of the run (box, particles, mesh, a_start, n_steps,
        seed, cosmology, redshift, particle mass, force resolution, versions).
    """

    pos: np.ndarray
    vel: np.ndarray
    particle_mass: float
    settings: dict[str, Any]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("jax", "jaxlib", "jaxpm", "jax-cosmo"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _import_jax() -> types.SimpleNamespace:
    """jax, jax_cosmo and jaxpm, imported on first use with a clear error when missing.

    jax_cosmo 0.1.0 imports ``pkg_resources`` (removed from recent setuptools) only to read its
    own version; when it is missing, a two-name stand-in backed by :mod:`importlib.metadata`
    is registered while jax_cosmo is imported, and removed afterwards.
    """
    shim = None
    if "jax_cosmo" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            from importlib.metadata import PackageNotFoundError, version

            shim = types.ModuleType("pkg_resources")
            shim.DistributionNotFound = PackageNotFoundError  # type: ignore[attr-defined]
            shim.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
                version=version(name))
            sys.modules["pkg_resources"] = shim
    try:
        import jax
        import jax.numpy as jnp
        import jax_cosmo
        from jaxpm import growth, kernels, pm
    except ImportError as exc:
        raise InputError(f"the nbody engine needs jaxpm (pip install 'jaxpm==0.1.6'): {exc}",
                         column="engine") from exc
    finally:
        if shim is not None and sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]
    return types.SimpleNamespace(jax=jax, jnp=jnp, jc=jax_cosmo, growth=growth,
                                 kernels=kernels, pm=pm)


def _jc_cosmology(j: types.SimpleNamespace, cosmo: dict[str, Any]) -> Any:
    """A fresh jax_cosmo cosmology (jax_cosmo caches growth tables in the object; jaxpm's
    ``lpt`` fails on one whose cache another function filled first)."""
    om, ob = float(cosmo["Om0"]), float(cosmo["Ob0"])
    return j.jc.Cosmology(Omega_c=om - ob, Omega_b=ob, h=float(cosmo["H0"]) / 100.0,
                          n_s=float(cosmo["ns"]), sigma8=float(cosmo["sigma8"]),
                          Omega_k=0.0, w0=-1.0, wa=0.0)


def initial_density(s: PMSettings) -> np.ndarray:
    """Linear overdensity at z = 0 on the particle grid (the field the 2LPT displaces from).

    Parameters
    ----------
    s : PMSettings
        Run settings (``n_side``, ``box_size``, ``cosmology``, ``seed``).

    Returns
    -------
    numpy.ndarray
        (n_side, n_side, n_side) float32 overdensity at node ``i * box_size / n_side``
        (comoving Mpc/h), power spectrum ``linear_power(k, 0)``; mean mode zero.

    Examples
    --------
    >>> from dynmass.universe.nbody_pm import PMSettings, initial_density
    >>> d = initial_density(PMSettings(box_size=100.0, n_side=8, seed=3))
    >>> d.shape, d.dtype.name, bool(abs(d.mean()) < 1e-6)
    ((8, 8, 8), 'float32', True)
    """
    from dynmass.universe.field import linear_power

    n, box = s.n_side, s.box_size
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, 0x6E626F64]))  # tag "nbod"
    white = np.fft.rfftn(rng.standard_normal((n, n, n), dtype=np.float32))
    k1 = 2 * np.pi * np.fft.fftfreq(n, d=box / n)
    kz = 2 * np.pi * np.fft.rfftfreq(n, d=box / n)
    kk = np.sqrt(k1[:, None, None] ** 2 + k1[None, :, None] ** 2 + kz[None, None, :] ** 2)
    k_tab = np.geomspace(0.5 * k1[1], 1.01 * kk.max(), 512)
    ln_p = np.log(linear_power(k_tab, 0.0, s.cosmology))
    amp = np.zeros_like(kk)
    nz = kk > 0
    amp[nz] = np.sqrt(np.exp(np.interp(np.log(kk[nz]), np.log(k_tab), ln_p)) * n**3 / box**3)
    return np.fft.irfftn(white * amp, s=(n, n, n)).astype(np.float32)


def _make_force(j: types.SimpleNamespace, n_mesh: int, n_part: int) -> Any:
    """Jitted PM acceleration ``pos (N, 3) mesh cells -> (N, 3)`` (jaxpm's ``pm_forces``
    convention: -grad of inverse-Laplacian of the overdensity, in mesh cells), for any N
    (jaxpm's own painter needs N = n_mesh^3): CIC paint, real FFT, jaxpm kernels, CIC read."""
    jnp = j.jnp
    k1 = 2 * np.pi * np.fft.fftfreq(n_mesh)
    kz = 2 * np.pi * np.fft.rfftfreq(n_mesh)
    kvec = [jnp.asarray(k1.reshape(-1, 1, 1), jnp.float32),
            jnp.asarray(k1.reshape(1, -1, 1), jnp.float32),
            jnp.asarray(kz.reshape(1, 1, -1), jnp.float32)]
    weight = np.float32(n_mesh**3 / n_part)  # painted field = 1 + delta
    corners = [(i, jj, k) for i in (0, 1) for jj in (0, 1) for k in (0, 1)]

    def cic(pos: Any) -> tuple[Any, Any]:
        base = jnp.floor(pos)
        frac = pos - base
        base = base.astype(jnp.int32)
        return base, frac

    def force(pos: Any) -> Any:
        base, frac = cic(pos)
        mesh = jnp.zeros((n_mesh,) * 3, jnp.float32)
        for c in corners:
            w = weight * jnp.prod(jnp.where(jnp.array(c, bool), frac, 1 - frac), axis=1)
            idx = (base + jnp.array(c, jnp.int32)) % n_mesh
            mesh = mesh.at[idx[:, 0], idx[:, 1], idx[:, 2]].add(w)
        pot_k = jnp.fft.rfftn(mesh) * j.kernels.invlaplace_kernel(kvec)
        out = []
        for axis in range(3):
            grid = jnp.fft.irfftn(-j.kernels.gradient_kernel(kvec, axis) * pot_k,
                                  s=(n_mesh,) * 3).astype(jnp.float32)
            acc = jnp.zeros(pos.shape[0], jnp.float32)
            for c in corners:
                w = jnp.prod(jnp.where(jnp.array(c, bool), frac, 1 - frac), axis=1)
                idx = (base + jnp.array(c, jnp.int32)) % n_mesh
                acc = acc + w * grid[idx[:, 0], idx[:, 1], idx[:, 2]]
            out.append(acc)
        return jnp.stack(out, axis=1)

    return j.jax.jit(force)


def _step_factors(j: types.SimpleNamespace, s: PMSettings) -> np.ndarray:
    """(n_steps, 3) FastPM factors per step: first half-kick, drift, second half-kick.

    With D the growth factor and Gf = a^2 E f D (jaxpm.growth.Gf): drift
    dx = p (D(a1) - D(a0)) / Gf(a_half); kick dp = acc (Gf(a') - Gf(a)) / D(a_acc), acc the
    PM acceleration at a_acc. Exact for linear growth (p = Gf x1, acc = D x1 in the ZA).
    """
    a = np.linspace(s.a_start, 1.0 / (1.0 + s.redshift), s.n_steps + 1)
    ah = 0.5 * (a[:-1] + a[1:])
    cosmo = _jc_cosmology(j, s.cosmology)
    grid = np.concatenate([a, ah])
    d = np.asarray(j.growth.growth_factor(cosmo, j.jnp.asarray(grid)), float)
    gf = np.asarray(j.growth.Gf(cosmo, j.jnp.asarray(grid)), float)
    n = a.size
    d_a, gf_a, gf_h = d[:n], gf[:n], gf[n:]
    kick1 = (gf_h - gf_a[:-1]) / d_a[:-1]
    drift = (d_a[1:] - d_a[:-1]) / gf_h
    kick2 = (gf_a[1:] - gf_h) / d_a[1:]
    return np.column_stack([kick1, drift, kick2]).astype(np.float32)


def _fd_compensate(j: types.SimpleNamespace, delta: np.ndarray) -> np.ndarray:
    """Boost ``delta`` so that jaxpm's 2LPT displacements have the right linear density.

    jaxpm's ``lpt`` displaces by the 4-point finite-difference gradient g_i(w) of the inverse
    Laplacian (w = k times the grid spacing), whose divergence sum_i w_i g_i / w^2 falls below
    1 at high k (on an axis: 0.85 at half the particle Nyquist wavenumber), so the initial
    density would lack power there. Multiplying each mode by w^2 / sum_i w_i g_i(w_i) makes
    the divergence of the displacement exactly the linear density (modes where the kernel
    vanishes, e.g. the Nyquist planes on an axis, are left unchanged).
    """
    n = delta.shape[0]
    w1 = 2 * np.pi * np.fft.fftfreq(n)
    wz = 2 * np.pi * np.fft.rfftfreq(n)
    ws = (w1[:, None, None], w1[None, :, None], wz[None, None, :])
    g = [np.asarray(j.kernels.gradient_kernel([j.jnp.asarray(w) for w in ws], i)).imag
         for i in range(3)]
    num = ws[0] ** 2 + ws[1] ** 2 + ws[2] ** 2
    den = ws[0] * g[0] + ws[1] * g[1] + ws[2] * g[2]
    ratio = np.where(den > 1e-6 * np.maximum(num, 1e-30), num / np.where(den > 0, den, 1), 1.0)
    return np.fft.irfftn(np.fft.rfftn(delta) * ratio, s=delta.shape).astype(np.float32)


def _lpt_state(j: types.SimpleNamespace, s: PMSettings) -> tuple[Any, Any]:
    """2LPT positions and momenta at a_start, in mesh cells (jaxpm's ``lpt`` on the particle
    grid, scaled by ``mesh_factor``)."""
    jnp = j.jnp
    n = s.n_side
    delta0 = jnp.asarray(_fd_compensate(j, initial_density(s)))
    dx, p, _ = j.pm.lpt(_jc_cosmology(j, s.cosmology), delta0, a=s.a_start, order=2)
    q = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32)] * 3, indexing="ij"), axis=-1)
    mf = np.float32(s.mesh_factor)
    pos = ((jnp.asarray(q) + dx) * mf).reshape(-1, 3) % s.n_mesh
    return pos.astype(jnp.float32), (p * mf).reshape(-1, 3).astype(jnp.float32)


#: Compiled (force, kick-drift-kick) functions by (mesh cells per side, particles).
_COMPILED: dict[tuple[int, int], tuple[Any, Any]] = {}


def _compiled(j: types.SimpleNamespace, n_mesh: int, n_part: int) -> tuple[Any, Any]:
    """The jitted PM force and one KDK step ``(x, p, acc, factors) -> (x, p, acc)``."""
    if (n_mesh, n_part) not in _COMPILED:
        force = _make_force(j, n_mesh, n_part)

        @j.jax.jit
        def kdk(x: Any, p: Any, acc: Any, f: Any) -> tuple[Any, Any, Any]:
            p = p + f[0] * acc
            x = (x + f[1] * p) % float(n_mesh)
            acc = force(x)
            return x, p + f[2] * acc, acc

        _COMPILED.clear()  # one size at a time: compiled code holds no large buffers
        _COMPILED[(n_mesh, n_part)] = (force, kdk)
    return _COMPILED[(n_mesh, n_part)]


def simulate(s: PMSettings) -> tuple[np.ndarray, np.ndarray]:
    """Run the 2LPT initial conditions and the kick-drift-kick steps of ``s``.

    Parameters
    ----------
    s : PMSettings
        Settings of the run.

    Returns
    -------
    (pos, vel) : tuple of numpy.ndarray
        (N, 3) float32 positions, comoving Mpc/h in [0, box_size), and peculiar
        velocities, km/s, at the snapshot redshift (particle order: the initial grid,
        x slowest).
    """
    j = _import_jax()
    x, p = _lpt_state(j, s)
    force, kdk = _compiled(j, s.n_mesh, s.n_side**3)
    factors = _step_factors(j, s)
    acc = force(x)
    t0 = time.perf_counter()
    for i, f in enumerate(factors):
        x, p, acc = kdk(x, p, acc, j.jnp.asarray(f))
        if log.isEnabledFor(logging.INFO):
            x.block_until_ready()
            log.info("PM step %d/%d done (%.0f s)", i + 1, len(factors),
                     time.perf_counter() - t0)
    a_end = 1.0 / (1.0 + s.redshift)
    pos = np.asarray(x, np.float64) * s.cell_size
    pos = np.mod(pos, s.box_size)
    pos[pos >= s.box_size] = 0.0
    pos = pos.astype(np.float32)
    pos[pos >= np.float32(s.box_size)] = 0.0  # float32 rounding up to the box edge
    vel = (np.asarray(p, np.float64) * (100.0 * s.cell_size / a_end)).astype(np.float32)
    return pos, vel
