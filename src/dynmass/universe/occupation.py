"""Occupation models of the mock universe, and the luminosity-threshold model of Zheng et al.
2007.

The mock universe can fill the same halos with galaxies of two halo occupation models
(``occupation`` setting of :class:`~dynmass.universe.build.UniverseSettings`, ``dynmass
universe --occupation``):

* ``"leauthaud11"`` (default): stellar-mass threshold, Leauthaud et al. 2011 (ApJ 738, 45)
  with the Behroozi et al. 2010 (ApJ 717, 379) stellar-to-halo-mass relation
  (:func:`dynmass.universe.galaxies.populate`). Galaxies carry ``log10_mstar`` (log10 Msun,
  h-free; halotools' h = 1 stellar masses converted, :mod:`dynmass.stellar_mass`).
* ``"zheng07"``: r-band luminosity threshold, Zheng et al. 2007 (ApJ 667, 760), through
  halotools' ``Zheng07Cens`` and ``Zheng07Sats`` with the Table 1 parameters halotools
  tabulates for the threshold (:func:`populate_zheng07`):

  - <N_cen | M> = [1 + erf((log10 M - log10 M_min) / sigma_logM)] / 2; each halo hosts a
    central with that probability (Bernoulli draw).
  - <N_sat | M> = ((M - M_0) / M_1)^alpha for M > M_0, else 0, *not* multiplied by <N_cen>
    (halotools' ``modulate_with_cenocc=False``, the default of ``Zheng07Sats`` and of its
    prebuilt ``zheng07`` model); the number of satellites is Poisson with that mean, drawn
    independently of the central, so a halo may (rarely, at low mass) host satellites and no
    central.
  - M is the halo mass in Msun/h (halotools' h = 1 units, those of dynmass), here M200c.
    Zheng et al. fit their HODs with another mass definition (an overdensity relative to the
    mean matter density); as the default model applies Leauthaud et al.'s M_vir fit to M200c,
    this one is applied to M200c unchanged (for reference, M200m is 0.10-0.14 dex above
    M200c from 10^12 to 10^15 Msun/h at z = 0.117 with the Diemer & Joyce 2019
    concentrations).
  - Positions and velocities: the same NFW and Jeans machinery as the default model
    (:func:`dynmass.universe.galaxies.place_galaxies`).
  - These galaxies have no stellar mass (the model knows only that they are brighter than
    the threshold): the galaxy table has **no** ``log10_mstar`` column. A column of NaN would
    be refused by catalog validation (every float column must be finite,
    :meth:`dynmass.catalog.Catalog.validate`), and ``log10_mstar`` is an optional property
    column of the catalog format, so it is left out rather than filled with made-up values.

Both models see the same halos for the same seed: the halos of a mass bin are drawn before
that bin's galaxies, from the bin's own random stream, so the occupation changes only the
galaxies ("the same halos, another occupation").

Examples
--------
Mean occupations of the Zheng et al. 2007 model for galaxies brighter than M_r = -20.5 in
halos of 10^12, 10^13.5 and 10^15 Msun/h:

>>> import numpy as np
>>> from dynmass.universe.occupation import zheng07_mean_occupation, zheng07_parameters
>>> n_cen, n_sat = zheng07_mean_occupation(np.array([1e12, 10**13.5, 1e15]), -20.5)
>>> np.round(n_cen, 3).tolist(), np.round(n_sat, 2).tolist()
([0.022, 1.0, 1.0], [0.0, 0.79, 38.91])
>>> zheng07_parameters(-20.5)["logM1"]
13.58
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from dynmass.errors import InputError

# OCCUPATIONS (names of the occupation models, the first the default) and
# ZHENG07_DEFAULT_THRESHOLD (M_r - 5 log10 h) live in the light dynmass.universe (for the CLI).
from dynmass.universe import OCCUPATIONS, ZHENG07_DEFAULT_THRESHOLD
from dynmass.universe.galaxies import place_galaxies

if TYPE_CHECKING:
    from dynmass.universe.outskirts import OutskirtsModel

__all__ = ["OCCUPATIONS", "ZHENG07_DEFAULT_THRESHOLD", "ZHENG07_THRESHOLDS", "check_occupation",
           "occupation_parameters", "populate_zheng07", "zheng07_mean_occupation",
           "zheng07_parameters"]

#: r-band absolute-magnitude thresholds (M_r - 5 log10 h) of Zheng et al. 2007 Table 1, the
#: only ones halotools tabulates parameters for.
ZHENG07_THRESHOLDS: tuple[float, ...] = (-18.0, -18.5, -19.0, -19.5, -20.0, -20.5, -21.0,
                                         -21.5, -22.0)

_REFERENCES = {
    "leauthaud11": "Leauthaud et al. 2011, ApJ 738, 45 (halotools Leauthaud11Cens, "
                   "Leauthaud11Sats) with the Behroozi et al. 2010, ApJ 717, 379 SMHM "
                   "(halotools Behroozi10SmHm)",
    "zheng07": "Zheng et al. 2007, ApJ 667, 760, Table 1 (halotools Zheng07Cens, Zheng07Sats)",
}


def check_occupation(occupation: str, zheng07_threshold: float) -> tuple[str, float]:
    """Validate the occupation settings of the mock universe.

    Parameters
    ----------
    occupation : str
        One of :data:`OCCUPATIONS`.
    zheng07_threshold : float
        r-band absolute-magnitude threshold of the ``zheng07`` model (M_r - 5 log10 h); one of
        :data:`ZHENG07_THRESHOLDS` (checked whatever ``occupation`` is, so that a mistyped
        value is never silently ignored).

    Returns
    -------
    (str, float)
        The occupation name and the threshold as a float.

    Raises
    ------
    InputError
        Unknown model (column ``occupation``) or a threshold halotools does not tabulate
        (column ``zheng07_threshold``).
    """
    if not isinstance(occupation, str) or occupation not in OCCUPATIONS:
        raise InputError(f"setting occupation={occupation!r} is not one of {list(OCCUPATIONS)}",
                         column="occupation")
    try:
        thr = float(zheng07_threshold)
    except (TypeError, ValueError):
        thr = float("nan")
    if isinstance(zheng07_threshold, bool) or thr not in ZHENG07_THRESHOLDS:
        allowed = ", ".join(f"{t:g}" for t in ZHENG07_THRESHOLDS)
        raise InputError(
            f"setting zheng07_threshold={zheng07_threshold!r} is not a threshold of Zheng et "
            f"al. 2007 Table 1 that halotools tabulates; choose one of {allowed} (r-band "
            "absolute magnitude)",
            column="zheng07_threshold",
        )
    return occupation, thr


@lru_cache(maxsize=16)
def _zheng07_components(threshold: float) -> tuple[Any, Any]:
    """halotools ``Zheng07Cens`` and ``Zheng07Sats`` (``modulate_with_cenocc=False``)."""
    from halotools.empirical_models import Zheng07Cens, Zheng07Sats

    check_occupation("zheng07", threshold)
    return (Zheng07Cens(threshold=threshold),
            Zheng07Sats(threshold=threshold, modulate_with_cenocc=False))


def zheng07_parameters(threshold: float = ZHENG07_DEFAULT_THRESHOLD) -> dict[str, float]:
    """HOD parameters of Zheng et al. 2007 Table 1 for a luminosity threshold (from halotools).

    Parameters
    ----------
    threshold : float
        r-band absolute-magnitude threshold, M_r - 5 log10 h (one of
        :data:`ZHENG07_THRESHOLDS`).

    Returns
    -------
    dict
        ``logMmin``, ``sigma_logM`` (centrals), ``logM0``, ``logM1``, ``alpha`` (satellites);
        masses log10 Msun/h.
    """
    cens, sats = _zheng07_components(float(threshold))
    return {k: float(v) for k, v in {**cens.param_dict, **sats.param_dict}.items()}


def zheng07_mean_occupation(m200c_msunh: np.ndarray,
                            threshold: float = ZHENG07_DEFAULT_THRESHOLD
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Mean numbers of centrals and satellites of Zheng et al. 2007 (halotools).

    Parameters
    ----------
    m200c_msunh : array_like
        Halo masses, Msun/h (used as halotools' ``prim_haloprop``; h = 1 units).
    threshold : float
        r-band absolute-magnitude threshold, M_r - 5 log10 h (one of
        :data:`ZHENG07_THRESHOLDS`).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        <N_cen | M> in [0, 1] and <N_sat | M> (not multiplied by <N_cen>), one per mass.
    """
    m = np.atleast_1d(np.asarray(m200c_msunh, dtype=float))
    cens, sats = _zheng07_components(float(threshold))
    if m.size == 0:
        return np.zeros(0), np.zeros(0)
    n_cen = np.asarray(cens.mean_occupation(prim_haloprop=m), dtype=float)
    n_sat = np.asarray(sats.mean_occupation(prim_haloprop=m), dtype=float)
    return n_cen, n_sat


def populate_zheng07(
    halos: dict[str, np.ndarray],
    box_size: float,
    redshift: float,
    cosmo: dict[str, Any],
    rng: np.random.Generator,
    *,
    threshold: float = ZHENG07_DEFAULT_THRESHOLD,
    beta: float = 0.0,
    velocity_bias: float = 1.0,
    conc_scatter_dex: float = 0.16,
    concentration_table: tuple[np.ndarray, np.ndarray] | None = None,
    outskirts: OutskirtsModel | None = None,
) -> dict[str, np.ndarray]:
    """Put galaxies brighter than an r-band threshold in halos (Zheng et al. 2007 HOD).

    Centrals: Bernoulli draws with <N_cen | M200c>; satellites: Poisson numbers with
    <N_sat | M200c> (halotools ``Zheng07Sats``, ``modulate_with_cenocc=False``), independent of
    the central; both from :func:`zheng07_mean_occupation`. Positions and velocities from
    :func:`dynmass.universe.galaxies.place_galaxies` (NFW satellites, Jeans velocities).

    Random draws, in order: one uniform per halo (central), the satellite numbers, then those
    of :func:`~dynmass.universe.galaxies.place_galaxies`.

    Parameters
    ----------
    halos : dict
        Halo table with ``id``, ``x``, ``y``, ``z`` (comoving Mpc/h), ``vx``, ``vy``, ``vz``
        (km/s), ``m200c`` (Msun/h), ``r200c`` (comoving Mpc/h).
    box_size : float
        Periodic box side, comoving Mpc/h (satellite positions wrap).
    redshift : float
        Redshift (concentrations, physical R200c for V200c; the occupation itself does not
        depend on it: Zheng et al. fit SDSS galaxies at z ~ 0.1).
    cosmo : dict
        Cosmological parameters.
    rng : numpy.random.Generator
        Random generator.
    threshold : float
        r-band absolute-magnitude threshold, M_r - 5 log10 h (one of
        :data:`ZHENG07_THRESHOLDS`).
    beta : float
        Constant velocity anisotropy of satellites (0 isotropic, > 0 radial).
    velocity_bias : float
        Ratio of satellite to dark-matter velocity dispersion.
    conc_scatter_dex : float
        Log-normal scatter of concentration at fixed mass, dex.
    concentration_table : (log10 M grid, c200c grid), optional
        Precomputed :func:`~dynmass.universe.galaxies.concentration_200c` table to interpolate.
    outskirts : OutskirtsModel, optional
        The ``outskirts`` halo model: galaxies placed by
        :func:`~dynmass.universe.outskirts.place_outskirts` (triaxial halos, satellites added
        beyond R200c); ``None`` (default): NFW within R200c, spherical.

    Returns
    -------
    dict of numpy.ndarray
        Galaxy columns ``x, y, z, vx, vy, vz, host_id, is_central, r_host`` (no
        ``log10_mstar``: this model assigns no stellar masses).

    Examples
    --------
    >>> import numpy as np
    >>> from dynmass.cosmology import MDPL2
    >>> from dynmass.universe.massfunction import r200c_comoving
    >>> m = np.full(3, 1e15)
    >>> halos = {"id": np.arange(3), "x": np.full(3, 50.0), "y": np.full(3, 50.0),
    ...          "z": np.full(3, 50.0), "vx": np.zeros(3), "vy": np.zeros(3),
    ...          "vz": np.zeros(3), "m200c": m, "r200c": r200c_comoving(m, 0.117, MDPL2)}
    >>> g = populate_zheng07(halos, 100.0, 0.117, MDPL2, np.random.default_rng(0))
    >>> int(g["is_central"].sum()), "log10_mstar" in g
    (3, False)
    """
    if not (np.isfinite(velocity_bias) and velocity_bias > 0):
        raise InputError(f"velocity bias {velocity_bias} must be positive", column="velocity_bias")
    m = np.asarray(halos["m200c"], dtype=float)
    if m.size and not (np.all(np.isfinite(m)) and m.min() > 0):
        raise InputError("halo masses must be finite and positive to be populated",
                         column="m200c")
    n_cen_mean, n_sat_mean = zheng07_mean_occupation(m, threshold)
    has_cen = rng.uniform(size=m.size) < n_cen_mean
    n_sat = rng.poisson(n_sat_mean)
    host_idx = np.repeat(np.arange(m.size), n_sat)
    if outskirts is not None:
        from dynmass.universe.outskirts import place_outskirts

        placed = place_outskirts(halos, has_cen, host_idx, n_sat_mean, box_size, redshift, rng,
                                 outskirts, beta=beta, velocity_bias=velocity_bias,
                                 conc_scatter_dex=conc_scatter_dex)
        placed.pop("extra_rows")
        return placed
    return place_galaxies(
        halos, has_cen, host_idx, box_size, redshift, cosmo, rng, beta=beta,
        velocity_bias=velocity_bias, conc_scatter_dex=conc_scatter_dex,
        concentration_table=concentration_table,
    )


def occupation_parameters(occupation: str, *, mstar_min: float = 9.5,
                          smhm_scatter_dex: float = 0.2,
                          zheng07_threshold: float = ZHENG07_DEFAULT_THRESHOLD) -> dict[str, Any]:
    """The occupation model and its parameters, as recorded in a catalog's settings.

    Parameters
    ----------
    occupation : str
        One of :data:`OCCUPATIONS`.
    mstar_min : float
        Stellar-mass threshold of ``leauthaud11``, log10 Msun (h-free).
    smhm_scatter_dex : float
        Central stellar-mass scatter of ``leauthaud11``, dex.
    zheng07_threshold : float
        r-band absolute-magnitude threshold of ``zheng07``, M_r - 5 log10 h.

    Returns
    -------
    dict
        ``model``, ``reference``, ``halotools_version`` and the parameters: for
        ``leauthaud11`` ``mstar_min``, its unit ``mstar_unit`` and ``smhm_scatter_dex``; for ``zheng07`` the threshold,
        the Table 1 values (``logMmin, sigma_logM, logM0, logM1, alpha``, masses log10
        Msun/h), ``modulate_with_cenocc`` (False), the halo mass used and the galaxy
        properties left out.
    """
    import halotools

    occupation, thr = check_occupation(occupation, zheng07_threshold)
    out: dict[str, Any] = {"model": occupation, "reference": _REFERENCES[occupation],
                           "halotools_version": halotools.__version__}
    if occupation == "leauthaud11":
        out.update(mstar_min=float(mstar_min), mstar_unit="log10 Msun (h-free)",
                   smhm_scatter_dex=float(smhm_scatter_dex))
    else:
        out.update(threshold_mag_r=thr, **zheng07_parameters(thr), modulate_with_cenocc=False,
                   central_draw="Bernoulli(<N_cen>)", satellite_draw="Poisson(<N_sat>)",
                   halo_mass="M200c [Msun/h]",
                   omitted_columns=["log10_mstar"])
    return out
