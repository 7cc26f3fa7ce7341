"""Interloper removal for the classical mass estimators: shifting gapper and sigma clipping,
and ``gapper_msigma`` (:class:`GapperMSigma`: the M-sigma power law on the gapper's members).

Both removals work on every view of an :class:`~dynmass.observations.Observations` at once
(ragged arrays, vectorised over views) and return a boolean ``keep`` per galaxy: True for the
galaxies kept as cluster members (:func:`members` picks one by name). Velocities ``v`` are
rest-frame line-of-sight velocities relative to the cluster (km/s, as in
:class:`~dynmass.observations.Observations`), so the cluster's own velocity is ``v = 0``.
Radii are physical: ``R / (1 + z)`` [Mpc/h] with the redshift of :func:`snapshot`.

Shifting gapper (Fadda et al. 1996, ApJ 473, 670, section 3; the fixed gap of Beers et al.
1990, AJ 100, 32, applied in bins of projected radius):

1. The galaxies still kept are sorted by projected *physical* radius (``R / (1 + z)``, Mpc/h)
   and cut into consecutive radial bins from the centre outwards. A bin starts at radius
   ``e`` (0 for the first bin, else the radius of its first galaxy) and takes the next
   ``bin_size`` (15) galaxies, or more until it spans at least ``bin_width`` (0.4 Mpc/h
   physical; Fadda et al.'s 0.4 h^-1 Mpc): it ends before the first galaxy with
   ``R >= e + bin_width`` if that comes later. When fewer than ``bin_size`` galaxies would be
   left for the next bin they join this one (a view with fewer than ``bin_size`` galaxies is
   one bin).
2. In each bin the velocities are sorted and split wherever two neighbours are more than
   ``gap`` (1000 km/s) apart. The *main body* is the group holding the galaxy closest to the
   cluster velocity ``v = 0``; every galaxy of the other groups is removed.
3. Steps 1-2 are repeated on the galaxies left until an iteration removes none. Galaxies are
   only ever removed, so this ends after at most as many iterations as there are galaxies.

Sigma clipping (iterative 3-sigma clipping about the biweight location; Beers et al. 1990):
the location is the biweight location ``C_BI`` (tuning constant 6) and the scale the biweight
midvariance ``S_BI`` (tuning constant 9) of the galaxies still kept, or the gapper scale
(Beers et al. 1990, eq. 8) when fewer than ``small_n`` (15) are kept, as Beers et al.
recommend for small samples. Galaxies with ``|v - C_BI| > n_sigma S`` are removed, and the
location and scale are recomputed from the galaxies left, until an iteration removes none
(removed galaxies never come back, so it ends). Views with fewer than two galaxies, or zero
scale, keep what they have.

Examples
--------
A cluster of 60 members (sigma 600 km/s) and 4 interlopers 1500-2000 km/s beyond its edge:
the gapper and the clipping both drop the interlopers and keep the members.

>>> import numpy as np
>>> from dynmass.models.interlopers import shifting_gapper, sigma_clip
>>> rng = np.random.default_rng(0)
>>> v_mem = np.clip(rng.normal(0, 600, 60), -1800, 1800)
>>> v = np.concatenate([v_mem, [3400.0, 3600.0, -3500.0, -3800.0]])  # km/s
>>> R = rng.uniform(0, 1.4, v.size)  # physical Mpc/h
>>> offsets = np.array([0, v.size])
>>> keep = shifting_gapper(R, v, offsets)
>>> int(keep[:60].sum()), int(keep[60:].sum())
(60, 0)
>>> keep = sigma_clip(v, offsets)
>>> int(keep[:60].sum()), int(keep[60:].sum())
(60, 0)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dynmass.cosmology import MDPL2, validate_cosmology
from dynmass.errors import InputError
from dynmass.models.msigma import MSigma
from dynmass.observations import Observations

__all__ = ["GapperMSigma", "biweight", "gapper_scale", "members", "padded", "shifting_gapper",
           "sigma_clip", "snapshot", "sorted_members"]

#: Views per chunk of the padded (views x galaxies) arrays of :func:`sigma_clip`.
CHUNK_VIEWS = 2048
#: Default settings of the shifting gapper (km/s, galaxies, physical Mpc/h) and the clipping.
GAPPER_DEFAULTS: dict[str, Any] = {"gap": 1000.0, "bin_size": 15, "bin_width": 0.4}
CLIP_DEFAULTS: dict[str, Any] = {"n_sigma": 3.0}


def padded(values: np.ndarray, offsets: np.ndarray, views: np.ndarray | None = None,
           fill: float = np.nan) -> np.ndarray:
    """Ragged values as a ``(n_views, max_n)`` array, each row padded with ``fill``.

    Parameters
    ----------
    values : numpy.ndarray
        Concatenated values of all views (any units, e.g. km/s).
    offsets : numpy.ndarray
        View ``k`` owns ``values[offsets[k]:offsets[k + 1]]``.
    views : numpy.ndarray, optional
        Indices of the views to take (default: all), in that order.
    fill : float
        Value of the padding.

    Returns
    -------
    numpy.ndarray
        Float array, row ``i`` holding view ``views[i]``'s values first.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    views = np.arange(len(offsets) - 1) if views is None else np.asarray(views, dtype=np.int64)
    counts = offsets[views + 1] - offsets[views]
    width = int(counts.max()) if len(counts) else 0
    out = np.full((len(views), width), fill, dtype=np.float64)
    col = np.arange(width)[None, :]
    mask = col < counts[:, None]
    rows = (offsets[views][:, None] + col)[mask]
    out[mask] = np.asarray(values, dtype=np.float64)[rows]
    return out


def gapper_scale(rows: np.ndarray) -> np.ndarray:
    """Gapper scale [units of ``rows``] of each row of a NaN-padded array (NaNs ignored).

    ``sigma_G = sqrt(pi) / (n (n - 1)) sum_{i=1}^{n-1} i (n - i) g_i`` with ``g_i`` the gaps
    of the sorted values (Beers, Flynn & Gebhardt 1990, AJ 100, 32, eq. 8); NaN if n < 2.

    Parameters
    ----------
    rows : numpy.ndarray
        ``(n_rows, width)`` values, NaN where a row has no value.

    Returns
    -------
    numpy.ndarray
        One scale per row.
    """
    s = np.sort(rows, axis=1)  # NaN last
    n = np.sum(np.isfinite(s), axis=1).astype(np.float64)
    i = np.arange(1, s.shape[1], dtype=np.float64)[None, :]
    w = np.where(i < n[:, None], i * (n[:, None] - i), 0.0)
    gaps = np.nan_to_num(np.diff(s, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt(np.pi) / (n * (n - 1.0)) * np.sum(w * gaps, axis=1)
    out[n < 2] = np.nan
    return out


def _bin_starts(R: np.ndarray, view: np.ndarray, n_views: int, bin_size: int,
                bin_width: float) -> np.ndarray:
    """Flags marking the first galaxy of every radial bin (step 1 of the module docs).

    ``R`` [physical Mpc/h] must be sorted within each view and ``view`` non-decreasing.
    """
    counts = np.bincount(view, minlength=n_views)
    ends = np.cumsum(counts)
    cur = ends - counts
    flags = np.zeros(len(R), dtype=bool)
    scale = float(R.max()) * 1.001 + 1e-9 if len(R) else 1.0
    key = view + R / scale  # monotonic over the whole sorted array
    edge = np.zeros(n_views)
    active = counts > 0
    while active.any():
        a = np.flatnonzero(active)
        flags[cur[a]] = True
        j_width = np.searchsorted(key, a + np.minimum(edge[a] + bin_width, scale) / scale)
        j = np.maximum(cur[a] + bin_size, j_width)
        j = np.where(ends[a] - j < bin_size, ends[a], np.minimum(j, ends[a]))
        cur[a] = j
        more = j < ends[a]
        edge[a[more]] = R[j[more]]
        active[a[~more]] = False
    return flags


def _sort_key(group: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Float key ordering by ``group`` (integers), then by ``x`` (one argsort, not lexsort)."""
    lo = float(x.min()) if len(x) else 0.0
    span = (float(x.max()) - lo) * 1.001 + 1e-9 if len(x) else 1.0
    return group + (x - lo) / span


def shifting_gapper(R_phys: np.ndarray, v: np.ndarray, offsets: np.ndarray,
                    gap: float = 1000.0, bin_size: int = 15, bin_width: float = 0.4,
                    keep: np.ndarray | None = None) -> np.ndarray:
    """Members by the shifting gapper of Fadda et al. 1996 (rule in the module docs).

    Parameters
    ----------
    R_phys : numpy.ndarray
        Projected physical radius of every galaxy from its cluster's centre, Mpc/h
        (``Observations.R / (1 + z)``).
    v : numpy.ndarray
        Rest-frame line-of-sight velocity relative to the cluster, km/s.
    offsets : numpy.ndarray
        View ``k`` owns rows ``offsets[k]:offsets[k + 1]``.
    gap : float
        Velocity gap [km/s] that separates the main body from interlopers (1000).
    bin_size : int
        Fewest galaxies of a radial bin (15).
    bin_width : float
        Narrowest radial bin, physical Mpc/h (0.4).
    keep : numpy.ndarray of bool, optional
        Galaxies to start from (default: all).

    Returns
    -------
    numpy.ndarray of bool
        True for the galaxies kept as members.
    """
    if gap <= 0 or bin_size < 1 or bin_width < 0:
        raise InputError(f"shifting gapper needs gap > 0 km/s, bin_size >= 1 and bin_width >= 0;"
                         f" got {gap}, {bin_size}, {bin_width}")
    R_phys = np.asarray(R_phys, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n_views = len(offsets) - 1
    view_all = np.repeat(np.arange(n_views), np.diff(offsets))
    keep = np.ones(len(v), dtype=bool) if keep is None else np.array(keep, dtype=bool)
    todo = np.ones(n_views, dtype=bool)  # views that lost galaxies in the last iteration
    while True:
        idx = np.flatnonzero(keep & todo[view_all])
        if len(idx) == 0:
            return keep
        idx = idx[np.argsort(_sort_key(view_all[idx], R_phys[idx]), kind="stable")]
        starts = _bin_starts(R_phys[idx], view_all[idx], n_views, int(bin_size), bin_width)
        bins = np.cumsum(starts) - 1
        o2 = np.argsort(_sort_key(bins, v[idx]), kind="stable")
        g, b, vs = idx[o2], bins[o2], v[idx][o2]
        new_seg = np.ones(len(g), dtype=bool)
        new_seg[1:] = (b[1:] != b[:-1]) | (np.diff(vs) > gap)
        seg = np.cumsum(new_seg) - 1
        # the galaxy nearest v = 0 in each bin names the main body's group
        first = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
        nearest = np.abs(vs) == np.minimum.reduceat(np.abs(vs), first)[b]
        main = np.empty(int(b.max()) + 1, dtype=np.int64)
        main[b[nearest]] = seg[nearest]
        out = seg != main[b]
        if not out.any():
            return keep
        keep[g[out]] = False
        todo[:] = False
        todo[view_all[g[out]]] = True


def biweight(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Biweight location and midvariance scale of each row of a NaN-padded array.

    Beers, Flynn & Gebhardt 1990 (AJ 100, 32, eqs. 5 and 9), about the median ``M`` with the
    median absolute deviation ``MAD``: ``u = (x - M) / (c MAD)``, sums over ``|u| < 1``;
    location ``M + sum (x - M)(1 - u^2)^2 / sum (1 - u^2)^2`` with ``c = 6``, scale
    ``sqrt(n sum (x - M)^2 (1 - u^2)^4) / |sum (1 - u^2)(1 - 5 u^2)|`` with ``c = 9`` (as
    :func:`astropy.stats.biweight_location` / ``biweight_scale``); ``MAD = 0`` gives ``M``
    and 0.

    Parameters
    ----------
    rows : numpy.ndarray
        ``(n_rows, width)`` values (e.g. km/s), NaN where a row has no value.

    Returns
    -------
    location, scale : numpy.ndarray
        One per row, in the units of ``rows``; NaN for empty rows.
    """
    n = np.sum(np.isfinite(rows), axis=1)
    out_loc, out_scale = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    ok = n > 0
    x = rows[ok]
    with np.errstate(invalid="ignore", divide="ignore"):
        med = np.nanmedian(x, axis=1)[:, None]
        d = x - med
        mad = np.nanmedian(np.abs(d), axis=1)[:, None]
        u = np.nan_to_num(d / (6.0 * mad), nan=2.0)
        w = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
        loc = med[:, 0] + np.sum(w * np.nan_to_num(d), axis=1) / np.sum(w, axis=1)
        u = np.nan_to_num(d / (9.0 * mad), nan=2.0)
        inside = np.abs(u) < 1
        num = np.sum(np.where(inside, np.nan_to_num(d) ** 2 * (1 - u * u) ** 4, 0.0), axis=1)
        den = np.sum(np.where(inside, (1 - u * u) * (1 - 5 * u * u), 0.0), axis=1)
        scale = np.sqrt(n[ok] * num) / np.abs(den)
    zero = mad[:, 0] == 0
    loc[zero], scale[zero] = med[zero, 0], 0.0
    out_loc[ok], out_scale[ok] = loc, scale
    return out_loc, out_scale


def sigma_clip(v: np.ndarray, offsets: np.ndarray, n_sigma: float = 3.0, small_n: int = 15,
               max_iter: int = 1000) -> np.ndarray:
    """Members by iterative clipping about the biweight location (rule in the module docs).

    Parameters
    ----------
    v : numpy.ndarray
        Rest-frame line-of-sight velocity relative to the cluster, km/s.
    offsets : numpy.ndarray
        View ``k`` owns rows ``offsets[k]:offsets[k + 1]``.
    n_sigma : float
        Clipping threshold in units of the scale (3).
    small_n : int
        Below this many galaxies the gapper scale replaces the biweight scale (15).
    max_iter : int
        Safety limit on the iterations (the clipping stops on its own long before).

    Returns
    -------
    numpy.ndarray of bool
        True for the galaxies kept as members.
    """
    if n_sigma <= 0:
        raise InputError(f"sigma clipping needs n_sigma > 0, got {n_sigma}")
    v = np.asarray(v, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    keep = np.ones(len(v), dtype=bool)
    order = np.argsort(counts, kind="stable")  # similar lengths share a padded chunk
    for start in range(0, len(order), CHUNK_VIEWS):
        views = order[start:start + CHUNK_VIEWS]
        rows = padded(v, offsets, views)
        valid = np.isfinite(rows)
        kept = valid.copy()
        todo = np.arange(len(views))  # rows that changed in the last iteration
        for _ in range(max_iter):
            cur = np.where(kept[todo], rows[todo], np.nan)
            n = kept[todo].sum(axis=1)
            loc, scale = biweight(cur)
            small = n < small_n
            if small.any():
                scale[small] = gapper_scale(cur[small])
            ok = np.isfinite(loc) & np.isfinite(scale) & (scale > 0) & (n >= 2)
            bound = (n_sigma * scale)[:, None]
            out = kept[todo] & ok[:, None] & ~(np.abs(rows[todo] - loc[:, None]) <= bound)
            changed = out.any(axis=1)
            if not changed.any():
                break
            kept[todo] &= ~out
            todo = todo[changed]
        rows_idx = (offsets[views][:, None] + np.arange(rows.shape[1])[None, :])[valid]
        keep[rows_idx] = kept[valid]
    return keep


def snapshot(obs: Observations) -> tuple[float, dict[str, Any]]:
    """Redshift and cosmology of the views (``obs.settings``; MDPL2 if no cosmology is given).

    Raises
    ------
    InputError
        If the settings lack a single redshift (physical radii need it).
    """
    z = obs.settings.get("redshift")
    zs = np.atleast_1d(np.asarray(z, dtype=float)) if z is not None else np.zeros(0)
    if zs.size != 1 or not np.isfinite(zs[0]) or zs[0] <= -1:
        raise InputError(f"classical estimators need one snapshot redshift in the observe "
                         f"settings (physical radii R / (1 + z)); got redshift={z!r}")
    return float(zs[0]), validate_cosmology(obs.settings.get("cosmology") or dict(MDPL2))


def members(obs: Observations, method: str, settings: dict[str, Any]) -> np.ndarray:
    """Boolean member flag of every galaxy of ``obs`` after interloper removal.

    Parameters
    ----------
    obs : Observations
        Views (``R`` comoving Mpc/h, ``v`` km/s).
    method : {"gapper", "clip"}
        :func:`~dynmass.models.interlopers.shifting_gapper` (settings ``gap`` [km/s],
        ``bin_size``, ``bin_width`` [physical Mpc/h]) or
        :func:`~dynmass.models.interlopers.sigma_clip` (setting ``n_sigma``).
    settings : dict
        The estimator's settings.
    """
    if method == "gapper":
        z, _ = snapshot(obs)
        return shifting_gapper(obs.R / (1 + z), obs.v, obs.offsets, float(settings["gap"]),
                               int(settings["bin_size"]), float(settings["bin_width"]))
    if method == "clip":
        return sigma_clip(obs.v, obs.offsets, float(settings["n_sigma"]))
    raise InputError(f"unknown interloper removal {method!r}; choose 'gapper' or 'clip'")


def sorted_members(r_phys: np.ndarray, v: np.ndarray, offsets: np.ndarray,
                    keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members only, sorted by radius within each view: ``(r, v, offsets)``.

    Parameters
    ----------
    r_phys : numpy.ndarray
        Projected physical radius of every galaxy, Mpc/h.
    v : numpy.ndarray
        Line-of-sight velocity of every galaxy, km/s.
    offsets : numpy.ndarray
        View ``k`` owns rows ``offsets[k]:offsets[k + 1]``.
    keep : numpy.ndarray of bool
        Member flags (e.g. from :func:`members`).
    """
    view = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((r_phys[idx], view[idx]))]
    off = np.zeros(len(offsets), dtype=np.int64)
    np.cumsum(np.bincount(view[idx], minlength=len(offsets) - 1), out=off[1:])
    return r_phys[idx], v[idx], off


class GapperMSigma(MSigma):
    """M-sigma power law (as ``msigma``) on the members left by the shifting gapper.

    ``sigma_v`` is that of the gapper members of each view; the fit (and its inversion) are
    those of :class:`~dynmass.models.msigma.MSigma`, on the training views with at least
    ``min_members`` members. Views with fewer members predict NaN (counted as failures). The
    power law is itself fit on the training views, so there is no ``calibrate`` setting.

    Parameters
    ----------
    estimator : {"std", "gapper", "biweight"}
        sigma_v estimator of the members (``"std"``, as ``msigma``).
    pivot : float
        Pivot of the fit, log10 M200c [Msun/h] (15).
    min_members : int
        Fewest members for an estimate (5).
    gap : float
        Gapper velocity gap, km/s (1000).
    bin_size : int
        Fewest galaxies per radial bin of the gapper (15).
    bin_width : float
        Narrowest radial bin of the gapper, physical Mpc/h (0.4).
    """

    name: ClassVar[str] = "gapper_msigma"
    defaults: ClassVar[dict[str, Any]] = {**MSigma.defaults, "min_members": 5, **GAPPER_DEFAULTS}

    def _clean(self, obs: Observations) -> tuple[Observations, np.ndarray]:
        clean = obs.select_galaxies(members(obs, "gapper", self.settings))
        return clean, clean.n_gal >= int(self.settings["min_members"])

    def fit(self, obs: Observations, *, seed: int = 0, **kwargs: Any) -> GapperMSigma:
        """Fit the M-sigma power law on the members of the training views.

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
        GapperMSigma
            ``self``, fitted.
        """
        clean, ok = self._clean(obs)
        super().fit(clean.subset(ok), seed=seed)
        self.extra["n_failed_train"] = int((~ok).sum())
        return self

    def predict(self, obs: Observations) -> np.ndarray:
        """log10 M200c [Msun/h] of every view; NaN for views with too few members."""
        clean, ok = self._clean(obs)
        out = super().predict(clean)
        out[~ok] = np.nan
        return out
