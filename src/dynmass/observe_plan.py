"""Which views to observe: hosts above a mass cut, their lines of sight, a flat mass function.

For each host halo the x, y, z axes come first, then directions of a Fibonacci hemisphere
turned by a random rotation per host (:func:`dynmass._observe_kernels.host_directions`). With
a flat mass function (Ho et al. 2019, ApJ 887, 25, sec. 2.2) massive hosts get more lines of
sight and crowded mass bins are thinned, so views are near flat in log10 M200c.

Examples
--------
>>> import numpy as np
>>> flat_los_counts(np.array([13.50, 13.51, 13.52, 14.5, 15.0]), target=12, bin_dex=0.1,
...                 n_min=3, max_los=8).tolist()
[4, 4, 4, 8, 8]
"""

from __future__ import annotations

import numpy as np

from dynmass import _observe_kernels as K
from dynmass.catalog import Catalog
from dynmass.observations import _ragged_rows

__all__ = ["FLAT_BIN_DEX", "FLAT_DENSITY", "MAX_LOS", "flat_los_counts", "plan_views"]

#: Flat mass function defaults (Ho et al. 2019): 0.02 dex bins, at most ~80 views per host,
#: views per bin = 10^-5.2 (Mpc/h)^-3 dex^-1 times box volume times bin width (126 for MDPL2).
FLAT_BIN_DEX = 0.02
FLAT_DENSITY = 10**-5.2
MAX_LOS = 80


def flat_los_counts(log10_m: np.ndarray, *, target: int, bin_dex: float, n_min: int,
                    max_los: int) -> np.ndarray:
    """Number of views per host for a near-flat distribution of views in log10 M.

    Rule (after Ho et al. 2019, sec. 2.2): hosts are binned in ``log10 M200c`` with width
    ``bin_dex``. In a bin of ``N`` hosts every host gets ``clip(floor(target / N), n_min,
    max_los)`` views, so a bin holds about ``target`` views until its hosts run out of allowed
    views (rare massive hosts: ``max_los`` each). Crowded bins (``n_min * N > target``) are
    handled by :func:`plan_views`, which keeps ``target`` of their ``n_min * N`` views.

    Parameters
    ----------
    log10_m : numpy.ndarray
        log10 M200c of the hosts [Msun/h].
    target : int
        Views wanted per bin.
    bin_dex : float
        Bin width, dex.
    n_min, max_los : int
        Fewest and most views per host.

    Returns
    -------
    numpy.ndarray of int
        Views per host.
    """
    b = np.floor(np.asarray(log10_m) / bin_dex + 1e-9).astype(np.int64)
    _, inv, cnt = np.unique(b, return_inverse=True, return_counts=True)
    per = np.floor(target / cnt[inv]).astype(np.int64)
    return np.clip(per, n_min, max_los)


def plan_views(catalog: Catalog, *, min_mass: float, n_los: int, flat_mass_function: bool,
               flat_target: int | None, flat_bin_dex: float, flat_density: float, max_los: int,
               seed: int) -> dict[str, np.ndarray]:
    """Every (host, line of sight) pair to observe, in canonical order (halo row, los index).

    Parameters
    ----------
    catalog : Catalog
        The universe.
    min_mass : float
        Hosts need ``m200c >= min_mass`` [Msun/h].
    n_los : int
        Views per host (with ``flat_mass_function``, the fewest per host).
    flat_mass_function : bool
        Use :func:`flat_los_counts`; crowded bins keep a seeded random ``flat_target`` of their
        views.
    flat_target : int or None
        Views per bin; ``None``: ``flat_density * box_size**3 * flat_bin_dex`` (at least 1).
    flat_bin_dex, flat_density, max_los, seed
        See :func:`observe`.

    Returns
    -------
    dict
        ``halo_row``, ``los_index``, ``los`` (k, 3), ``axis`` (0/1/2 or -1) and
        ``flat_target`` (0-d, views per bin; -1 without flattening).
    """
    m = np.asarray(catalog.halos["m200c"], dtype=float)
    rows = np.flatnonzero(m >= min_mass)
    target = -1
    if flat_mass_function and rows.size:
        if flat_target is None:
            target = max(1, int(round(flat_density * catalog.box_size**3 * flat_bin_dex)))
        else:
            target = int(flat_target)
        logm = np.log10(m[rows])
        counts = flat_los_counts(logm, target=target, bin_dex=flat_bin_dex, n_min=n_los,
                                 max_los=max_los)
    else:
        counts = np.full(rows.size, n_los, dtype=np.int64)
    halo_row = np.repeat(rows, counts)
    los_index = _ragged_rows(np.zeros(rows.size, np.int64), counts)
    if flat_mass_function and rows.size:
        keep = np.ones(halo_row.size, dtype=bool)
        b = np.floor(np.log10(m[halo_row]) / flat_bin_dex + 1e-9).astype(np.int64)
        for bin_id in np.unique(b):
            in_bin = np.flatnonzero(b == bin_id)
            if in_bin.size > target:
                rng = K.view_rng(seed, int(bin_id) & 0x7FFFFFFF, 0, K.SEED_FLAT)
                chosen = np.sort(rng.choice(in_bin.size, size=target, replace=False))
                keep[in_bin] = False
                keep[in_bin[chosen]] = True
        halo_row, los_index = halo_row[keep], los_index[keep]
    los = np.zeros((halo_row.size, 3))
    axis = np.where(los_index < 3, los_index, -1)
    los[axis >= 0] = np.eye(3)[axis[axis >= 0]]
    extra = np.flatnonzero(axis < 0)
    if extra.size:
        # halo_row is sorted, so each host's extra views are contiguous in ``extra``
        hosts, first, cnt = np.unique(halo_row[extra], return_index=True, return_counts=True)
        for h, f, c in zip(hosts, first, cnt, strict=True):
            sel = extra[f:f + c]
            n_h = int(counts[np.searchsorted(rows, h)])
            los[sel] = K.host_directions(n_h, seed, int(h))[los_index[sel]]
    return {"halo_row": halo_row.astype(np.int64), "los_index": los_index.astype(np.int64),
            "los": los, "axis": axis.astype(np.int64), "flat_target": np.asarray(target)}
