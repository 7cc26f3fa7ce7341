"""Statistics and the judged claim of the sampling-rate test (:mod:`dynmass.sampling`).

The median shift of predictions when galaxies are dropped, in bins of true log10 M200c
[Msun/h] with host-bootstrap errors (views of one halo move together), the claim that the median
at fixed true mass does not move (:func:`median_shift_claim`), and the "Poisson floor"
(:func:`poisson_floor_dex`): the scatter in log10 M expected from a velocity dispersion
estimated from N galaxies, ``sd(log10 sigma_hat) = 1 / (ln 10 sqrt(2 (N - 1)))`` for Gaussian
velocities, times the slope of M ∝ sigma^3 (Evrard et al. 2008, ApJ 672, 122).

Examples
--------
The Poisson floor at N = 30 and N = 15 galaxies (dex of M200c):

>>> round(float(poisson_floor_dex(30)), 3), round(float(poisson_floor_dex(15)), 3)
(0.171, 0.246)

The median-shift claim of a sampling block (as :func:`dynmass.sampling.sampling_rate_test`
returns it) whose worst judged bin moves by -0.09 dex at r = 0.5:

>>> block = {"rates": [1.0, 0.5], "bins_true": [
...     {"lo": 14.0, "hi": 14.2, "in_claim_range": True, "n": [40, 38],
...      "median": [0.0, -0.09], "median_err": [0.0, 0.01], "judged": [True, True]},
...     {"lo": 14.2, "hi": 14.4, "in_claim_range": True, "n": [40, 12],
...      "median": [0.0, -0.5], "median_err": [0.0, 0.2], "judged": [True, False]}]}
>>> c = median_shift_claim("cnn2d", block)
>>> c["holds"], c["value"]
(False, 'worst judged bin 14.0-14.2 at r = 0.5: -0.090 +/- 0.010 dex (38 views)')
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BIN_MIN_GAL", "BIN_MIN_VIEWS", "BIN_WIDTH_DEX", "CLAIM_RANGE", "MASS_SIGMA_SLOPE",
           "MEDIAN_SHIFT_TOL_DEX", "claim_verdict", "host_bootstrap_median_err",
           "median_shift_claim", "poisson_floor_dex"]

#: Width (dex) of the bins of true log10 M200c [Msun/h] of the median-shift test (edges at
#: multiples of it).
BIN_WIDTH_DEX: float = 0.2
#: A view enters the binned median shift at rate r only if it keeps at least this many galaxies.
BIN_MIN_GAL: int = 10
#: A bin (at one rate) with fewer views than this is reported but not judged.
BIN_MIN_VIEWS: int = 20
#: The claim's tolerance on |median shift| per judged bin, dex.
MEDIAN_SHIFT_TOL_DEX: float = 0.03
#: log10 M200c [Msun/h] range whose bins the claim judges (10^14 - 10^15 Msun/h).
CLAIM_RANGE: tuple[float, float] = (14.0, 15.0)
#: Slope of M ∝ sigma^slope used by the Poisson floor (Evrard et al. 2008, ApJ 672, 122:
#: M ∝ sigma^(1/0.336) ≈ sigma^2.98).
MASS_SIGMA_SLOPE: float = 3.0


def poisson_floor_dex(n_gal: np.ndarray | float, slope: float = MASS_SIGMA_SLOPE) -> np.ndarray:
    """Scatter in log10 M (dex) from estimating a velocity dispersion from ``n_gal`` galaxies.

    For Gaussian velocities the sample standard deviation of N galaxies scatters by
    ``sd(log10 sigma_hat) ≈ 1 / (ln 10 sqrt(2 (N - 1)))`` dex; through ``M ∝ sigma^slope``
    (slope 3: Evrard et al. 2008, ApJ 672, 122, M ∝ sigma^(1/0.336) ≈ sigma^2.98) that is
    ``slope / (ln 10 sqrt(2 (N - 1)))`` dex of mass: the scatter a dispersion-based estimate
    cannot beat with N galaxies, whatever else it does right.

    Parameters
    ----------
    n_gal : float or numpy.ndarray
        Number of galaxies N (a median over views is fine; need not be an integer).
    slope : float
        Exponent of M ∝ sigma^slope.

    Returns
    -------
    numpy.ndarray
        The floor in dex of M200c (NaN where N <= 1); a 0-d array for a scalar ``n_gal``.
    """
    n = np.asarray(n_gal, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 1, slope / (np.log(10) * np.sqrt(2 * (n - 1))), np.nan)


def _host_weights(hosts: np.ndarray, n_boot: int, seed: int) -> np.ndarray | None:
    """How often each view's host is drawn in each host-bootstrap replicate, (n_boot, n_views).

    Hosts (``halo_id``) are drawn with replacement and keep all their views, since views of the
    same halo share its mass and galaxies and are not independent. A stream of its own
    (``[seed, 1]``) leaves the view subset and the galaxy draws of ``seed`` untouched.
    """
    if n_boot <= 0 or len(hosts) == 0:
        return None
    uniq, inverse = np.unique(hosts, return_inverse=True)
    rng = np.random.default_rng([seed, 1])
    counts = np.empty((n_boot, len(uniq)), dtype=np.int32)
    for b in range(n_boot):
        counts[b] = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))
    return counts[:, inverse]


def _boot_median_err(x: np.ndarray, weights: np.ndarray | None) -> float:
    """Bootstrap standard deviation of ``median(x)``; ``weights[b, i]``: copies of ``x[i]`` in
    replicate ``b`` (the median of the repeated sample, as :func:`numpy.median` takes it)."""
    finite = np.isfinite(x)
    if weights is None or finite.sum() < 2:
        return float("nan")
    x, w = x[finite], weights[:, finite]
    order = np.argsort(x, kind="stable")
    xs = x[order]
    cw = np.cumsum(w[:, order], axis=1, dtype=np.int64 if len(x) > 2**30 else np.int32)
    tot = cw[:, -1]
    ok = tot > 0
    if ok.sum() < 2:
        return float("nan")
    cw, tot = cw[ok], tot[ok]
    i_lo = np.argmax(cw > ((tot - 1) // 2)[:, None], axis=1)
    i_hi = np.argmax(cw > (tot // 2)[:, None], axis=1)
    return float(np.std(0.5 * (xs[i_lo] + xs[i_hi]), ddof=1))


def host_bootstrap_median_err(x: np.ndarray, hosts: np.ndarray | None = None,
                              n_boot: int = 200, seed: int = 0) -> float:
    """Bootstrap standard error of ``median(x)``, resampling hosts with all their views.

    Parameters
    ----------
    x : numpy.ndarray
        Values, one per view (e.g. prediction shifts, dex); non-finite ones are left out.
    hosts : numpy.ndarray, optional
        Host (``halo_id``) of every value; views of a host are drawn together, since they
        share its mass and galaxies. Default: every value its own host.
    n_boot : int
        Bootstrap replicates (0: NaN).
    seed : int
        Seed of the host draws (the stream :func:`sampling_rate_test` uses for ``seed``).

    Returns
    -------
    float
        Standard deviation of the median over the replicates, in the units of ``x``.

    Examples
    --------
    Ten views per host sharing the host's value: the error reflects 200 hosts, not 2000 views
    (about ``sqrt(pi / 2) 0.1 / sqrt(200) = 0.0089``):

    >>> import numpy as np
    >>> x = np.repeat(np.random.default_rng(0).normal(0.0, 0.1, 200), 10)
    >>> round(host_bootstrap_median_err(x, np.repeat(np.arange(200), 10)), 3)
    0.009
    """
    x = np.asarray(x, dtype=float)
    hosts = np.arange(len(x)) if hosts is None else np.asarray(hosts)
    return _boot_median_err(x, _host_weights(hosts, n_boot, seed))


def _claim_bin_edges(log_m_true: np.ndarray) -> np.ndarray:
    """Edges on the fixed :data:`BIN_WIDTH_DEX` grid covering the data and the claim's range."""
    from dynmass.metrics import mass_bin_edges

    lm = np.asarray(log_m_true, dtype=float)
    lo = min(float(np.min(lm)) if len(lm) else CLAIM_RANGE[0], CLAIM_RANGE[0])
    hi = max(float(np.max(lm)) if len(lm) else CLAIM_RANGE[1], CLAIM_RANGE[1])
    return mass_bin_edges(np.array([lo, hi]), BIN_WIDTH_DEX)


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")


def _shift_bins(lm_true: np.ndarray, shifts: list[np.ndarray], n_gal: list[np.ndarray],
                weights: np.ndarray | None) -> list[dict[str, Any]]:
    """Median shift per bin of true mass and rate (views keeping >= BIN_MIN_GAL galaxies)."""
    edges = _claim_bin_edges(lm_true)
    k_of = np.digitize(lm_true, edges) - 1
    lo_c, hi_c = CLAIM_RANGE
    out = []
    for k in range(len(edges) - 1):
        lo, hi = float(edges[k]), float(edges[k + 1])
        in_range = bool(lo >= lo_c - 1e-9 and hi <= hi_c + 1e-9)
        b: dict[str, Any] = {"lo": lo, "hi": hi, "in_claim_range": in_range, "n": [],
                             "median": [], "median_err": [], "judged": []}
        for d, ng in zip(shifts, n_gal, strict=True):
            sel = (k_of == k) & (ng >= BIN_MIN_GAL) & np.isfinite(d)
            n = int(sel.sum())
            b["n"].append(n)
            b["median"].append(_median(d[sel]))
            b["median_err"].append(_boot_median_err(
                d[sel], None if weights is None else weights[:, sel]))
            b["judged"].append(bool(in_range and n >= BIN_MIN_VIEWS))
        out.append(b)
    return out


def _worst_bin(block: dict[str, Any]) -> dict[str, Any] | None:
    """The judged (bin, rate) with the largest |median shift|, or None when none is judged."""
    worst = None
    for b in block.get("bins_true") or []:
        for j, r in enumerate(block["rates"]):
            med = b["median"][j]
            if not b["judged"][j] or med is None or not np.isfinite(med):
                continue
            if worst is None or (abs(med), -float(r)) > (abs(worst["median"]), -worst["rate"]):
                err = b["median_err"][j]
                worst = {"rate": float(r), "lo": b["lo"], "hi": b["hi"], "median": float(med),
                         "median_err": float("nan") if err is None else float(err),
                         "n": int(b["n"][j])}
    return worst


def median_shift_claim(name: str, block: dict[str, Any],
                       tol: float = MEDIAN_SHIFT_TOL_DEX) -> dict[str, Any]:
    """Judge "<name>'s median prediction at fixed true mass does not move with sampling".

    The claim holds when ``|median shift| <= tol`` in every judged bin of true mass (inside
    :data:`CLAIM_RANGE`, at least :data:`BIN_MIN_VIEWS` views keeping :data:`BIN_MIN_GAL` or
    more galaxies) at every tested rate. The point estimate is judged, as the claim says; its
    host-bootstrap error is quoted beside it (with 20 views per bin it can approach ``tol``).

    Parameters
    ----------
    name : str
        The model (run) the claim is about, as the claim names it.
    block : dict
        A model's sampling-rate test result (:func:`sampling_rate_test`), or its JSON form
        (NaN as None): needs ``rates`` and ``bins_true``.
    tol : float
        Largest allowed |median shift| per judged bin, dex.

    Returns
    -------
    dict
        ``claim`` (text), ``value`` (the worst judged bin, or why nothing was judged),
        ``holds`` (True / False, or None when no bin was judged), ``worst`` (``rate``, ``lo``,
        ``hi`` [log10 M200c, Msun/h], ``median``, ``median_err`` [dex], ``n``; None when no bin
        was judged) and ``tolerance_dex``.
    """
    lo, hi = CLAIM_RANGE
    claim = (f"{name}'s median prediction at fixed true mass does not move with sampling: "
             f"|median shift| <= {tol:g} dex in every judged {BIN_WIDTH_DEX:g}-dex bin of true "
             f"mass from 10^{lo:g} to 10^{hi:g} at every tested rate")
    worst = _worst_bin(block)
    if worst is None:
        return {"claim": claim, "holds": None, "worst": None, "tolerance_dex": tol,
                "value": f"no bin with >= {BIN_MIN_VIEWS} views keeping >= {BIN_MIN_GAL} "
                         "galaxies: not judged"}
    value = (f"worst judged bin {worst['lo']:.1f}-{worst['hi']:.1f} at r = {worst['rate']:g}: "
             f"{worst['median']:+.3f} +/- {worst['median_err']:.3f} dex ({worst['n']} views)")
    return {"claim": claim, "holds": bool(abs(worst["median"]) <= tol), "worst": worst,
            "tolerance_dex": tol, "value": value}


def claim_verdict(holds: bool | None) -> str:
    """``"HOLDS"``, ``"FAILS"``, or ``"NOT JUDGED"`` (``holds`` is None: nothing to judge on)."""
    return "NOT JUDGED" if holds is None else ("HOLDS" if holds else "FAILS")


def _eps_stats(eps: np.ndarray) -> tuple[float, float, float]:
    x = eps[np.isfinite(eps)]
    if len(x) < 2:
        return float("nan"), float("nan"), float("nan")
    p16, p50, p84 = np.percentile(x, [16, 50, 84])
    return float(p50), float((p84 - p16) / 2), float(x.std(ddof=1))


def _median_shift_block(rates: list[float], ref: np.ndarray, pred: dict[float, np.ndarray],
                        lm_true: np.ndarray, hosts: np.ndarray, n_gal: dict[float, np.ndarray],
                        n_boot: int, seed: int) -> dict[str, Any]:
    """The new keys of a model's result: median-shift errors, bins, floor, scatter per rate."""
    weights = _host_weights(hosts, n_boot, seed)
    shifts = [pred[r] - ref for r in rates]
    ngal = [n_gal[r] for r in rates]
    out: dict[str, Any] = {
        "median_err": [_boot_median_err(d, weights) for d in shifts],
        "n_boot": int(n_boot),
        "n_gal_median": [float(np.median(n)) if len(n) else float("nan") for n in ngal],
    }
    out["poisson_floor_dex"] = [float(poisson_floor_dex(n)) for n in out["n_gal_median"]]
    eps = [_eps_stats(pred[r] - lm_true) for r in rates]
    out["eps_median"] = [e[0] for e in eps]
    out["eps_half_width_16_84"] = [e[1] for e in eps]
    out["eps_std"] = [e[2] for e in eps]
    out["bin_settings"] = {"width_dex": BIN_WIDTH_DEX, "min_gal": BIN_MIN_GAL,
                           "min_views": BIN_MIN_VIEWS, "claim_range": list(CLAIM_RANGE),
                           "tolerance_dex": MEDIAN_SHIFT_TOL_DEX}
    out["bins_true"] = _shift_bins(lm_true, shifts, ngal, weights)
    per_rate = []
    for j in range(len(rates)):
        cands = [b for b in out["bins_true"] if b["judged"][j] and np.isfinite(b["median"][j])]
        per_rate.append(max(cands, key=lambda b: abs(b["median"][j])) if cands else None)
    nan = float("nan")
    out["worst_bin_median"] = [nan if b is None else b["median"][j]
                               for j, b in enumerate(per_rate)]
    out["worst_bin_median_err"] = [nan if b is None else b["median_err"][j]
                                   for j, b in enumerate(per_rate)]
    out["worst_bin_lo"] = [nan if b is None else b["lo"] for b in per_rate]
    return out
