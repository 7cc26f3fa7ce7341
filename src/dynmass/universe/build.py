"""Build the embedded mock universe: halos from the mass function on a biased log-normal field
with linear-theory flows, populated with galaxies.

The galaxies come from one of two halo occupation models (setting ``occupation``, see
:mod:`dynmass.universe.occupation`): ``"leauthaud11"`` (default; stellar-mass threshold,
:func:`dynmass.universe.galaxies.populate`) or ``"zheng07"`` (r-band luminosity threshold,
:func:`dynmass.universe.occupation.populate_zheng07`). For one seed both give the same halos.

The work is done per halo-mass bin (default 0.1 dex): the halos of a bin are drawn, placed,
given velocities and populated before the next bin starts, so the memory in use is the FFT grid
plus one bin's halos and galaxies. :func:`build_universe` collects the bins into a
:class:`~dynmass.catalog.Catalog`; :func:`write_universe` streams them into the catalog file
(same format as :func:`dynmass.catalog.write_catalog`), which keeps 1 Gpc/h boxes within bounded
memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dynmass._io import atomic_path, provenance, to_json
from dynmass.catalog import GALAXY_COLUMNS, HALO_COLUMNS, Catalog, catalog_units
from dynmass.cosmology import MDPL2, validate_cosmology
from dynmass.errors import InputError

# Default box 400 Mpc/h (~5,900 halos above 10^13.5 Msun/h, ~1.1 million galaxies) and redshift
# 0.117 (that of Ho et al. 2019) are defined in dynmass.universe (light for the CLI).
from dynmass.universe import DEFAULT_BOX, DEFAULT_REDSHIFT
from dynmass.universe.field import (
    cic_interpolate,
    make_linear_field,
    sample_cells,
    unresolved_velocity_dispersion,
)
from dynmass.universe.galaxies import concentration_200c, populate
from dynmass.universe.massfunction import MassFunctionTable, halo_bias, r200c_comoving
from dynmass.universe.occupation import (
    ZHENG07_DEFAULT_THRESHOLD,
    check_occupation,
    occupation_parameters,
    populate_zheng07,
)

log = logging.getLogger(__name__)

#: Halos populated at once (bounds the memory of the galaxy arrays).
_POPULATE_CHUNK = 20_000
#: The ``outskirts`` model tables of the last universe built (keyed by redshift, cosmology
#: and mass grid).
_OUTSKIRTS_TABLES: dict[tuple, tuple[Any, Any]] = {}


@dataclass
class UniverseSettings:
    """Every setting of the mock universe (recorded in the catalog file).

    Parameters
    ----------
    box_size : float
        Side of the periodic box, comoving Mpc/h.
    redshift : float
        Snapshot redshift.
    cosmology : dict
        Cosmological parameters (default MDPL2).
    seed : int
        Seed of every random step.
    min_mass, max_mass : float
        Halo M200c range, Msun/h.
    grid : int or None
        FFT grid nodes per side; ``None``: the power of two nearest above box_size / 4 Mpc/h.
    mass_bin_dex : float
        Width of the mass bins in which halos are placed with one bias value, dex.
    mstar_min : float
        Galaxy stellar-mass threshold, log10 Msun, h-free (``occupation="leauthaud11"``;
        :mod:`dynmass.stellar_mass`).
    beta : float
        Satellite velocity anisotropy (constant).
    velocity_bias : float
        Satellite velocity bias (ratio of galaxy to dark-matter dispersion).
    conc_scatter_dex : float
        Log-normal scatter of halo concentration at fixed mass, dex.
    smhm_scatter_dex : float
        Scatter in central stellar mass at fixed halo mass, dex (``occupation="leauthaud11"``).
    unresolved_velocities : bool
        Add the linear velocity dispersion of modes finer than the grid to halo velocities.
    fixed_amplitude : bool
        Linear field with fixed mode amplitudes and random phases (Angulo & Pontzen 2016):
        less cosmic variance in two-point statistics of small boxes.
    occupation : str
        Halo occupation model of the galaxies: ``"leauthaud11"`` (default; Leauthaud et al.
        2011 stellar-mass threshold ``mstar_min``, galaxies with ``log10_mstar``) or
        ``"zheng07"`` (Zheng et al. 2007 r-band luminosity threshold ``zheng07_threshold``,
        galaxies without ``log10_mstar``); see :mod:`dynmass.universe.occupation`. The halos
        do not depend on it.
    zheng07_threshold : float
        r-band absolute-magnitude threshold, M_r - 5 log10 h, of ``occupation="zheng07"``:
        one of the Zheng et al. 2007 Table 1 values halotools tabulates, -18 to -22 in steps
        of 0.5 (default -20.5).
    outskirts : bool
        The halo model of issue 13 (:mod:`dynmass.universe.outskirts`): satellites beyond
        R200c following the Diemer & Kravtsov 2014 orbiting profile to 4 R200c (added to the
        occupation's satellites within R200c), triaxial halos (Allgood et al. 2006) with
        aligned velocity ellipsoids, and infall velocities measured on the N-body engine for the halos
        around hosts above 10^13.5 Msun/h (:mod:`dynmass.universe.infall`). Default False:
        NFW satellites truncated at R200c in spherical halos, linear flows only (the default
        universe is unchanged). The same seed gives the same halo masses and positions either
        way.
    """

    box_size: float = DEFAULT_BOX
    redshift: float = DEFAULT_REDSHIFT
    cosmology: dict[str, Any] = field(default_factory=lambda: dict(MDPL2))
    seed: int = 0
    min_mass: float = 10**11.5
    max_mass: float = 10**16.0
    grid: int | None = None
    mass_bin_dex: float = 0.1
    mstar_min: float = 9.5
    beta: float = 0.0
    velocity_bias: float = 1.0
    conc_scatter_dex: float = 0.16
    smhm_scatter_dex: float = 0.2
    unresolved_velocities: bool = True
    fixed_amplitude: bool = False
    occupation: str = "leauthaud11"
    zheng07_threshold: float = ZHENG07_DEFAULT_THRESHOLD
    outskirts: bool = False

    def __post_init__(self) -> None:
        self.cosmology = validate_cosmology(dict(self.cosmology))
        self.occupation, self.zheng07_threshold = check_occupation(self.occupation,
                                                                   self.zheng07_threshold)
        checks = [
            ("box_size", self.box_size > 0),
            ("redshift", 0 <= self.redshift < 5),
            ("min_mass", 0 < self.min_mass < self.max_mass),
            ("max_mass", True),  # finite
            ("mstar_min", True),  # finite (NaN/inf broke the occupation table)
            ("seed", self.seed >= 0),  # numpy seeds are non-negative
            ("mass_bin_dex", 0 < self.mass_bin_dex <= 1),
            ("beta", -5 <= self.beta < 1),
            ("velocity_bias", self.velocity_bias > 0),
            ("conc_scatter_dex", self.conc_scatter_dex >= 0),
            ("smhm_scatter_dex", self.smhm_scatter_dex >= 0),
        ]
        for name, ok in checks:
            value = getattr(self, name)
            if not (ok and np.all(np.isfinite(value))):
                raise InputError(f"setting {name}={value!r} is out of range", column=name)
        if self.grid is None:
            self.grid = int(min(512, max(16, 2 ** int(np.ceil(np.log2(self.box_size / 4.0))))))
        if not (8 <= int(self.grid) <= 2048):
            raise InputError(f"grid={self.grid} must lie in [8, 2048]", column="grid")
        self.grid = int(self.grid)
        self.seed = int(self.seed)
        if not isinstance(self.outskirts, (bool, np.bool_)):
            raise InputError(f"setting outskirts={self.outskirts!r} must be true or false",
                             column="outskirts")
        self.outskirts = bool(self.outskirts)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (JSON-able) of the settings, with ``occupation_parameters`` (the
        occupation model, its reference and parameters, see
        :func:`~dynmass.universe.occupation.occupation_parameters`)."""
        d = asdict(self)
        d["generator"] = "dynmass.universe.build_universe"
        d["occupation_parameters"] = occupation_parameters(
            self.occupation, mstar_min=self.mstar_min, smhm_scatter_dex=self.smhm_scatter_dex,
            zheng07_threshold=self.zheng07_threshold)
        if self.outskirts:
            from dynmass.universe.infall import infall_parameters
            from dynmass.universe.outskirts import outskirts_parameters

            d["outskirts_parameters"] = {**outskirts_parameters(), **infall_parameters()}
        return d

    def galaxy_columns(self) -> tuple[str, ...]:
        """Galaxy columns of a universe with these settings (``log10_mstar`` only for the
        stellar-mass-threshold occupation)."""
        props = ("log10_mstar", "r_host") if self.occupation == "leauthaud11" else ("r_host",)
        return GALAXY_COLUMNS + props


def iter_universe_chunks(
    settings: UniverseSettings,
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Generate the universe one halo-mass bin at a time.

    Parameters
    ----------
    settings : UniverseSettings
        Settings of the universe.

    Yields
    ------
    (halos, galaxies) : tuple of dict
        Column tables of one mass bin (halo ids unique across bins, galaxies hosted by the
        bin's halos).
    """
    s = settings
    cosmo, z, box = s.cosmology, s.redshift, s.box_size
    root = np.random.SeedSequence(s.seed)
    field_seq, halo_seq = root.spawn(2)
    field = make_linear_field(s.grid, box, z, cosmo, np.random.default_rng(field_seq),
                              fixed_amplitude=s.fixed_amplitude)
    xi_grid = field.grid_correlation()
    vel = field.velocity_grids()
    table = MassFunctionTable(z, cosmo, s.min_mass, s.max_mass)
    edges = 10 ** np.arange(np.log10(s.min_mass), np.log10(s.max_mass) + 1e-9, s.mass_bin_dex)
    if edges[-1] < s.max_mass * (1 - 1e-9):
        edges = np.append(edges, s.max_mass)
    volume = box**3
    expected = table.n_between(edges[:-1], edges[1:]) * volume
    bin_seqs = halo_seq.spawn(len(edges) - 1)
    # colossus quantities tabulated once (a fresh colossus cosmology per call is slow)
    log_m_tab = np.arange(np.log10(s.min_mass) - 0.02, np.log10(s.max_mass) + 0.03, 0.01)
    bias_tab = halo_bias(10**log_m_tab, z, cosmo)
    conc_tab = (log_m_tab, concentration_200c(10**log_m_tab, z, cosmo))
    centres = np.sqrt(edges[:-1] * edges[1:])
    sig_extra = (unresolved_velocity_dispersion(centres, field) if s.unresolved_velocities
                 else np.zeros(centres.size))

    def draw(b: int) -> tuple[dict[str, np.ndarray], np.random.Generator] | None:
        """The halos of mass bin ``b`` (without ids) and the bin's random generator."""
        rng = np.random.default_rng(bin_seqs[b])
        n = int(rng.poisson(expected[b]))
        if n == 0:
            return None
        masses = np.sort(table.sample(n, edges[b], edges[b + 1], rng))[::-1]
        bias = _mean_bias(edges[b], edges[b + 1], table, log_m_tab, bias_tab)
        density = field.biased_density(bias, xi_grid)
        pos = sample_cells(density, n, box, rng)
        del density
        halos = {"id": np.zeros(0, np.int64), "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2]}
        for k, col in enumerate(("vx", "vy", "vz")):
            halos[col] = cic_interpolate(vel[k], pos, box) + sig_extra[b] * rng.standard_normal(n)
        halos["m200c"] = masses
        halos["r200c"] = r200c_comoving(masses, z, cosmo)
        halos["bias"] = np.full(n, bias, dtype=np.float32)
        return halos, rng

    om = infall = hosts = None
    drawn: dict[int, tuple[dict[str, np.ndarray], np.random.Generator] | None] = {}
    if s.outskirts:
        om, infall, hosts, drawn = _outskirts_setup(s, log_m_tab, bias_tab, conc_tab, edges,
                                                    draw)
    next_id = 0
    for b in range(len(edges) - 1):
        got = drawn.pop(b) if b in drawn else draw(b)
        if got is None:
            continue
        halos, rng = got
        n = halos["m200c"].size
        halos["id"] = np.arange(next_id, next_id + n, dtype=np.int64)
        next_id += n
        if infall is not None:
            infall.apply(halos, hosts, box, rng)
        # populate in pieces of <= _POPULATE_CHUNK halos to bound the galaxy arrays in memory
        for lo in range(0, n, _POPULATE_CHUNK):
            part = {k: v[lo:lo + _POPULATE_CHUNK] for k, v in halos.items()}
            # the halos of this bin are complete: the occupation only changes what follows
            if s.occupation == "zheng07":
                galaxies = populate_zheng07(
                    part, box, z, cosmo, rng,
                    threshold=s.zheng07_threshold, beta=s.beta, velocity_bias=s.velocity_bias,
                    conc_scatter_dex=s.conc_scatter_dex, concentration_table=conc_tab,
                    outskirts=om,
                )
            else:
                galaxies = populate(
                    part, box, z, cosmo, rng,
                    mstar_min=s.mstar_min, beta=s.beta, velocity_bias=s.velocity_bias,
                    conc_scatter_dex=s.conc_scatter_dex, smhm_scatter_dex=s.smhm_scatter_dex,
                    concentration_table=conc_tab, outskirts=om,
                )
            log.debug("mass bin %d: %d halos, %d galaxies", b, len(part["id"]),
                      len(galaxies["x"]))
            yield part, galaxies


def _outskirts_setup(s: UniverseSettings, log_m_tab: np.ndarray, bias_tab: np.ndarray,
                     conc_tab: tuple[np.ndarray, np.ndarray], edges: np.ndarray, draw: Any) -> tuple[Any, Any, dict[str, np.ndarray], dict[int, Any]]:
    """Tables of the ``outskirts`` model and the hosts of the infall.

    The mass bins at or above :data:`~dynmass.universe.infall.HOST_MIN_MASS` are drawn first
    (each from its own random stream, so the halos are those of the default universe); their
    halos are the hosts that make the lower-mass halos fall in.

    Returns
    -------
    (OutskirtsModel, InfallModel, hosts, drawn)
        ``hosts``: ``x, y, z`` (comoving Mpc/h), ``m200c`` (Msun/h), ``r200c`` (comoving
        Mpc/h); ``drawn``: bin -> (halos, random generator) of the bins drawn already.
    """
    from dynmass.universe.infall import HOST_MIN_MASS, InfallModel
    from dynmass.universe.outskirts import OutskirtsModel

    z, cosmo = s.redshift, s.cosmology
    key = (z, to_json(cosmo), log_m_tab[0], log_m_tab[-1], log_m_tab.size)
    if key not in _OUTSKIRTS_TABLES:  # colossus tables: seconds, the same for every seed
        om = OutskirtsModel.build(log_m_tab, conc_tab[1], z, cosmo)
        _OUTSKIRTS_TABLES.clear()
        _OUTSKIRTS_TABLES[key] = (om, InfallModel.build(z, lambda m: r200c_comoving(m, z, cosmo),
                                                        float(log_m_tab[-1])))
    om, infall = _OUTSKIRTS_TABLES[key]
    drawn = {b: draw(b) for b in range(len(edges) - 1) if edges[b] >= HOST_MIN_MASS * (1 - 1e-9)}
    parts = [h for h, _ in (v for v in drawn.values() if v is not None)]
    hosts = {c: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0)
             for c in ("x", "y", "z", "m200c", "r200c")}
    return om, infall, hosts, drawn


def _mean_bias(
    m_lo: float, m_hi: float, table: MassFunctionTable, log_m_tab: np.ndarray, bias_tab: np.ndarray
) -> float:
    """Number-weighted mean Tinker et al. 2010 bias of halos with m_lo <= M200c < m_hi."""
    ln_m = np.linspace(np.log(m_lo), np.log(m_hi), 16)
    w = np.interp(ln_m, table.ln_m, table.dndlnm)
    b = np.interp(ln_m / np.log(10), log_m_tab, bias_tab)
    return float(np.sum(w * b) / np.sum(w))


def build_universe(
    box_size: float = DEFAULT_BOX,
    redshift: float = DEFAULT_REDSHIFT,
    cosmology: dict[str, Any] | None = None,
    seed: int = 0,
    **settings: Any,
) -> Catalog:
    """Build the embedded mock universe in memory.

    Parameters
    ----------
    box_size : float
        Side of the periodic box, comoving Mpc/h (default 400).
    redshift : float
        Snapshot redshift (default 0.117, Ho et al. 2019).
    cosmology : dict, optional
        Cosmological parameters (default MDPL2).
    seed : int
        Seed; the same seed and settings give the same catalog.
    **settings
        Other fields of :class:`UniverseSettings` (``min_mass``, ``grid``, ``mstar_min``,
        ``beta``, ``velocity_bias``, ``occupation``, ``zheng07_threshold``, ``outskirts``,
        ...).

    Returns
    -------
    Catalog
        Halos (``id, x, y, z, vx, vy, vz, m200c, r200c, bias``) and galaxies (``x, y, z, vx,
        vy, vz, host_id, is_central, log10_mstar, r_host``; no ``log10_mstar`` for
        ``occupation="zheng07"``) with settings recorded (``settings["occupation"]``,
        ``settings["occupation_parameters"]``).

    Examples
    --------
    A tiny universe: a 40 Mpc/h box with halos of M200c >= 1e13 Msun/h (the same seed and
    settings give the same numbers):

    >>> from dynmass.universe import build_universe
    >>> cat = build_universe(box_size=40.0, seed=1, min_mass=1e13)
    >>> cat.n_halos, cat.n_galaxies
    (20, 221)
    >>> bool(cat.halos["m200c"].min() >= 1e13), int(cat.galaxies["is_central"].sum())
    (True, 20)
    >>> sorted(cat.galaxies)
    ['host_id', 'is_central', 'log10_mstar', 'r_host', 'vx', 'vy', 'vz', 'x', 'y', 'z']

    The same halos with galaxies of the Zheng et al. 2007 occupation (brighter than
    M_r - 5 log10 h = -20.5; no stellar masses):

    >>> import numpy as np
    >>> other = build_universe(box_size=40.0, seed=1, min_mass=1e13, occupation="zheng07")
    >>> bool(np.array_equal(other.halos["m200c"], cat.halos["m200c"]))
    True
    >>> "log10_mstar" in other.galaxies, other.settings["occupation_parameters"]["logM1"]
    (False, 13.58)
    """
    s = _settings(box_size, redshift, cosmology, seed, settings)
    halo_parts, gal_parts = [], []
    for h, g in iter_universe_chunks(s):
        halo_parts.append(h)
        gal_parts.append(g)
    halos = _concat(halo_parts, HALO_COLUMNS + ("bias",))
    galaxies = _concat(gal_parts, s.galaxy_columns())
    cat = Catalog(halos=halos, galaxies=galaxies, box_size=s.box_size, redshift=s.redshift,
                  cosmology=s.cosmology, seed=s.seed, settings=s.to_dict())
    return cat.validate()


def _settings(box_size, redshift, cosmology, seed, settings) -> UniverseSettings:
    known = set(UniverseSettings.__dataclass_fields__)
    unknown = set(settings) - known
    if unknown:
        raise InputError(f"unknown universe settings: {sorted(unknown)}")
    return UniverseSettings(box_size=float(box_size), redshift=float(redshift),
                            cosmology=dict(cosmology or MDPL2), seed=int(seed), **settings)


def _concat(parts: list[dict[str, np.ndarray]], columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not parts:
        empty = {c: np.zeros(0) for c in columns}
        for c in ("id", "host_id"):
            if c in empty:
                empty[c] = np.zeros(0, np.int64)
        if "is_central" in empty:
            empty["is_central"] = np.zeros(0, bool)
        return empty
    return {c: np.concatenate([p[c] for p in parts]) for c in columns}


def write_universe(
    path: str | os.PathLike,
    box_size: float = DEFAULT_BOX,
    redshift: float = DEFAULT_REDSHIFT,
    cosmology: dict[str, Any] | None = None,
    seed: int = 0,
    **settings: Any,
) -> dict[str, Any]:
    """Build the mock universe and stream it into a catalog file, one mass bin at a time.

    Same file format as :func:`dynmass.catalog.write_catalog` (readable by
    :func:`dynmass.catalog.read_catalog`); written atomically. Memory: the FFT grid plus one
    mass bin's halos and galaxies.

    Parameters
    ----------
    path : str or os.PathLike
        Destination HDF5 file.
    box_size, redshift, cosmology, seed, **settings
        As for :func:`build_universe`.

    Returns
    -------
    dict
        ``{"path", "n_halos", "n_galaxies", "settings"}``.
    """
    s = _settings(box_size, redshift, cosmology, seed, settings)
    path = Path(path)
    halo_cols = HALO_COLUMNS + ("bias",)
    gal_cols = s.galaxy_columns()
    n_h = n_g = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.attrs["dynmass_kind"] = "catalog"
        fh.attrs["box_size"] = float(s.box_size)
        fh.attrs["redshift"] = float(s.redshift)
        fh.attrs["cosmology"] = to_json(s.cosmology)
        fh.attrs["seed"] = int(s.seed)
        fh.attrs["settings"] = to_json(s.to_dict())
        prov = provenance()
        fh.attrs["dynmass_version"] = prov["dynmass_version"]
        fh.attrs["provenance"] = to_json(prov)
        fh.attrs["units"] = to_json(catalog_units(gal_cols))
        groups = {"halos": fh.create_group("halos"), "galaxies": fh.create_group("galaxies")}
        for h, g in iter_universe_chunks(s):
            chunk = Catalog(halos=h, galaxies=g, box_size=s.box_size, redshift=s.redshift,
                            cosmology=s.cosmology).validate(path)
            _append(groups["halos"], chunk.halos, halo_cols)
            _append(groups["galaxies"], chunk.galaxies, gal_cols)
            n_h += len(h["id"])
            n_g += len(g["x"])
        for name, cols in (("halos", halo_cols), ("galaxies", gal_cols)):
            for c in cols:
                if c not in groups[name]:
                    dt = np.int64 if c in ("id", "host_id") else bool if c == "is_central" else float
                    groups[name].create_dataset(c, data=np.zeros(0, dt))
        fh.attrs["complete"] = True
    return {"path": str(path), "n_halos": n_h, "n_galaxies": n_g, "settings": s.to_dict()}


def _append(group: h5py.Group, table: dict[str, np.ndarray], cols: tuple[str, ...]) -> None:
    for c in cols:
        arr = np.asarray(table[c])
        if c not in group:
            group.create_dataset(c, data=arr, maxshape=(None,), chunks=(1 << 16,))
        else:
            ds = group[c]
            old = ds.shape[0]
            ds.resize((old + arr.size,))
            ds[old:] = arr
