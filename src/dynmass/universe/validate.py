"""Validation of a catalog against published relations, with figures.

Three checks, each a function returning a dict of numbers and a ``passed`` flag:

* :func:`check_mass_function`: halo counts in 0.1 dex bins of M200c against the Tinker et al.
  2008 mass function times the box volume; per-bin Poisson pulls and a chi^2 test
  (passes when the chi^2 probability exceeds 1e-3 and no bin is off by more than 5 sigma).
* :func:`check_velocity_dispersion`: the 1D velocity dispersion of satellites (relative to the
  host velocity, all three axes pooled) of halos with enough satellites, fitted as
  sigma = sigma15 (E(z) M200c / 10^15 Msun/h)^alpha and compared with Evrard et al. 2008
  (ApJ 672, 122): sigma15 = 1082.9 km/s, alpha = 0.3361. Passes when sigma15 is within 10 %
  and alpha within 0.03. Only meaningful for isotropic, unbiased satellites; for other
  catalogs it is reported but does not decide ``passed``.
* :func:`check_clustering`: the halo two-point correlation function (pair counts with a
  periodic :class:`scipy.spatial.cKDTree`, analytic randoms) on 10-40 Mpc/h against
  b_eff^2 xi_lin(r), b_eff the mean Tinker et al. 2010 bias of the sample and xi_lin the
  colossus linear correlation function. Passes when the best-fitting amplitude ratio
  (weighted least squares over the radial bins, Poisson errors) is within 20 % of 1 for every
  mass-threshold sample.

Reported, not part of ``passed`` (:mod:`dynmass.universe.validate_outskirts`, issue 13): the
projected-density step of the cylinder galaxies across R200c, the mean radial peculiar velocity
of galaxies around hosts above 10^14.5 Msun/h and its turnaround radius, and the interlopers'
"cold spike" at small |v| (``outskirts_*`` in the summary, figure ``outskirts.png``), for
universes built with or without the ``outskirts`` option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import cKDTree
from scipy.special import digamma

from dynmass._io import atomic_path, atomic_write_json
from dynmass.catalog import Catalog, read_catalog
from dynmass.cosmology import hubble_h_units
from dynmass.universe.field import xi_linear
from dynmass.universe.massfunction import MassFunctionTable, halo_bias
from dynmass.universe.validate_outskirts import check_outskirts, plot_outskirts

#: Evrard et al. 2008 normalisation (km/s) and slope of sigma_DM(h(z) M200c).
EVRARD_SIGMA15_KMS = 1082.9
EVRARD_ALPHA = 0.3361


def check_mass_function(cat: Catalog, bin_dex: float = 0.1, min_expected: float = 5.0) -> dict:
    """Compare halo counts with the Tinker et al. 2008 mass function (Poisson statistics).

    Parameters
    ----------
    cat : Catalog
        Catalog (halo ``m200c`` in Msun/h).
    bin_dex : float
        Bin width in log10 M200c, dex.
    min_expected : float
        Bins expecting fewer halos are left out of the chi^2.

    Returns
    -------
    dict
        ``passed``, ``chi2``, ``dof``, ``p_value``, ``max_abs_pull``, and per-bin arrays
        ``log10_m_edges``, ``observed``, ``expected``, ``pull``.
    """
    m = cat.halos["m200c"]
    # N-body catalogs state the mass above which their halo finder is complete
    m_min = float(cat.settings.get("mass_function_limit", cat.settings.get("min_mass", m.min())))
    lo = np.log10(m_min)
    edges = lo + bin_dex * np.arange(int(np.ceil((np.log10(m.max()) - lo) / bin_dex)) + 2)
    table = MassFunctionTable(cat.redshift, cat.cosmology, 10 ** edges[0], 10 ** edges[-1])
    expected = table.n_between(10 ** edges[:-1], 10 ** edges[1:]) * cat.box_size**3
    observed = np.histogram(np.log10(m), edges)[0].astype(float)
    use = expected >= min_expected
    pull = (observed - expected) / np.sqrt(np.maximum(expected, 1e-300))
    chi2 = float(np.sum(pull[use] ** 2))
    dof = int(use.sum())
    p = float(stats.chi2.sf(chi2, dof)) if dof else float("nan")
    max_pull = float(np.max(np.abs(pull[use]))) if dof else float("nan")
    return {
        "passed": bool(dof > 0 and p > 1e-3 and max_pull < 5.0), "min_mass": m_min,
        "chi2": chi2, "dof": dof, "p_value": p, "max_abs_pull": max_pull,
        "log10_m_edges": edges, "observed": observed, "expected": expected, "pull": pull,
    }


def satellite_dispersions(cat: Catalog, min_satellites: int = 10) -> dict[str, np.ndarray]:
    """Per-halo 1D velocity dispersion of satellites about the host velocity.

    sigma_1D^2 = sum over satellites and axes of (v - v_host)^2 / (3 N_sat); ``log_sigma``
    is corrected for the chi^2 bias of a log of a variance with 3 N_sat degrees of freedom.
    Satellites with ``r_host`` beyond their host's R200c (``outskirts`` universes) are left out
    (Evrard et al. 2008 measure sigma within R200c).

    Parameters
    ----------
    cat : Catalog
        Catalog (velocities in km/s).
    min_satellites : int
        Halos with fewer satellites are left out.

    Returns
    -------
    dict
        ``m200c`` (Msun/h), ``n_sat``, ``sigma_1d`` (km/s), ``log10_sigma`` (bias-corrected).
    """
    g, h = cat.galaxies, cat.halos
    sat = ~g["is_central"] & (g["host_id"] >= 0)
    order = np.argsort(h["id"])
    if "r_host" in g:  # satellites within R200c (``outskirts`` universes have some beyond)
        rows = order[np.searchsorted(h["id"], g["host_id"][sat], sorter=order)]
        inside = np.asarray(g["r_host"], float)[sat] <= h["r200c"][rows] * (1 + 1e-6)
        sat[np.flatnonzero(sat)[~inside]] = False
    idx = order[np.searchsorted(h["id"], g["host_id"][sat], sorter=order)]
    dv2 = sum((g[c][sat] - h[c][idx]) ** 2 for c in ("vx", "vy", "vz"))
    n = np.bincount(idx, minlength=len(h["id"]))
    s2 = np.bincount(idx, weights=dv2, minlength=len(h["id"]))
    keep = n >= min_satellites
    nu = 3.0 * n[keep]
    sigma2 = s2[keep] / nu
    ln_bias = digamma(nu / 2) - np.log(nu / 2)  # E[ln s^2] - ln sigma^2
    log10_sigma = 0.5 * (np.log(sigma2) - ln_bias) / np.log(10)
    return {"m200c": h["m200c"][keep], "n_sat": n[keep], "sigma_1d": np.sqrt(sigma2),
            "log10_sigma": log10_sigma}


def check_velocity_dispersion(cat: Catalog, min_satellites: int = 10) -> dict:
    """Fit sigma_1D(M) of satellites and compare with Evrard et al. 2008.

    Parameters
    ----------
    cat : Catalog
        Catalog (``m200c`` in Msun/h, velocities in km/s); its settings ``beta`` and
        ``velocity_bias`` decide whether the comparison applies.
    min_satellites : int
        Halos with fewer satellites are left out of the fit.

    Returns
    -------
    dict
        ``passed``, ``applicable`` (isotropic, unbiased satellites), ``n_halos``,
        ``sigma15_kms`` and its error, ``alpha`` and its error, ``norm_ratio`` (fit / Evrard),
        ``slope_diff`` (fit - Evrard), and the per-halo data.
    """
    d = satellite_dispersions(cat, min_satellites)
    s = cat.settings
    applicable = float(s.get("beta", 0.0)) == 0.0 and float(s.get("velocity_bias", 1.0)) == 1.0
    out: dict[str, Any] = {"applicable": bool(applicable), "n_halos": int(d["m200c"].size),
                           "min_satellites": min_satellites, **d}
    if d["m200c"].size < 3 or np.ptp(np.log10(d["m200c"])) < 0.3:
        out.update(passed=False, reason="too few halos with enough satellites over 0.3 dex")
        return out
    ez = hubble_h_units(cat.cosmology, cat.redshift) / 100.0
    x = np.log10(ez * d["m200c"] / 1e15)
    w = 2 * 3 * d["n_sat"] * np.log(10) ** 2  # 1 / var(log10 sigma) for Gaussian velocities
    a = np.column_stack([np.ones_like(x), x])
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    coef = cov @ (a.T @ (w * d["log10_sigma"]))
    sigma15 = 10 ** coef[0]
    norm_ratio = sigma15 / EVRARD_SIGMA15_KMS
    slope_diff = coef[1] - EVRARD_ALPHA
    out.update(
        sigma15_kms=float(sigma15), sigma15_err_kms=float(sigma15 * np.log(10) * np.sqrt(cov[0, 0])),
        alpha=float(coef[1]), alpha_err=float(np.sqrt(cov[1, 1])),
        norm_ratio=float(norm_ratio), slope_diff=float(slope_diff),
        passed=bool(abs(norm_ratio - 1) < 0.10 and abs(slope_diff) < 0.03),
    )
    return out


def halo_correlation(
    pos: np.ndarray, box_size: float, r_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two-point correlation of points in a periodic box: DD / RR - 1 with analytic RR.

    Parameters
    ----------
    pos : numpy.ndarray
        (n, 3) positions in [0, box_size), comoving Mpc/h.
    box_size : float
        Box side, comoving Mpc/h.
    r_edges : numpy.ndarray
        Edges of the radial bins, comoving Mpc/h (increasing).

    Returns
    -------
    (xi, err)
        Per radial bin; ``err`` is the Poisson error (1 + xi) / sqrt(DD).
    """
    tree = cKDTree(pos, boxsize=box_size)
    cum = tree.count_neighbors(tree, r_edges).astype(float)  # ordered pairs incl. self at r=0
    dd = np.diff(cum)
    n = len(pos)
    rr = n * (n - 1) * 4.0 / 3.0 * np.pi * np.diff(r_edges**3) / box_size**3
    xi = dd / rr - 1.0
    err = (1.0 + xi) / np.sqrt(np.maximum(dd / 2.0, 1.0))
    return xi, err


def check_clustering(
    cat: Catalog,
    thresholds_log10_msunh: tuple[float, ...] = (12.0, 13.0),
    r_range: tuple[float, float] = (10.0, 40.0),
    n_bins: int = 6,
    max_points: int = 200_000,
    seed: int = 0,
    tolerance: float = 0.20,
) -> dict:
    """Halo correlation function on ``r_range`` against b_eff^2 xi_lin for mass thresholds.

    Parameters
    ----------
    cat : Catalog
        Catalog.
    thresholds_log10_msunh : tuple of float
        Samples M200c >= 10^t Msun/h (samples with < 500 halos are skipped).
    r_range : (float, float)
        Separation range, comoving Mpc/h.
    n_bins : int
        Logarithmic radial bins.
    max_points : int
        Larger samples are randomly subsampled (seeded) to this size.
    seed : int
        Seed of the subsampling.
    tolerance : float
        Allowed relative deviation of the fitted amplitude ratio.

    Returns
    -------
    dict
        ``passed``, ``r_mpch``, and per sample ``samples[t]`` with ``n``, ``b_eff``, ``xi``,
        ``xi_err``, ``xi_model``, ``ratio`` (per bin), ``amplitude`` (fit) and its error;
        ``reference``: ``"linear theory"`` (xi_lin) or ``"simulation matter"`` (an N-body
        catalog's ``settings["xi_matter"]``, the particles' xi on the same ``r_range`` bins).
    """
    r_edges = np.logspace(np.log10(r_range[0]), np.log10(r_range[1]), n_bins + 1)
    r_mid = np.sqrt(r_edges[1:] * r_edges[:-1])
    # shell-averaged xi_lin (volume weighted)
    r_fine = np.linspace(r_range[0], r_range[1], 200)
    xi_fine = xi_linear(r_fine, cat.redshift, cat.cosmology)
    xi_lin = np.array([
        np.average(xi_fine[(r_fine >= a) & (r_fine <= b)], weights=r_fine[(r_fine >= a) & (r_fine <= b)] ** 2)
        for a, b in zip(r_edges[:-1], r_edges[1:], strict=True)
    ])
    # an N-body catalog carries its own matter correlation function (measured on the particles
    # at these separations): the halo bias is judged against it, free of the box's missing
    # long-wavelength modes, which lower xi at 10-40 Mpc/h in a 250 Mpc/h box by ~20%
    own = cat.settings.get("xi_matter")
    reference = "linear theory"
    if own is not None and np.allclose(own["r_edges"], r_edges, rtol=1e-6):
        xi_lin, reference = np.asarray(own["xi"], float), "simulation matter"
    rng = np.random.default_rng(seed)
    m = cat.halos["m200c"]
    samples: dict[str, Any] = {}
    passed = True
    for t in thresholds_log10_msunh:
        sel = np.flatnonzero(m >= 10**t)
        if sel.size < 500:
            continue
        if sel.size > max_points:
            sel = np.sort(rng.choice(sel, max_points, replace=False))
        pos = cat.halo_positions()[sel]
        xi, err = halo_correlation(pos, cat.box_size, r_edges)
        b_eff = float(np.mean(halo_bias(m[sel], cat.redshift, cat.cosmology)))
        model = b_eff**2 * xi_lin
        w = 1.0 / err**2
        amp = float(np.sum(w * xi * model) / np.sum(w * model**2))
        amp_err = float(1.0 / np.sqrt(np.sum(w * model**2)))
        ok = abs(amp - 1.0) < tolerance
        passed &= ok
        samples[f"{t:g}"] = {"n": int(sel.size), "b_eff": b_eff, "xi": xi, "xi_err": err,
                             "xi_model": model, "ratio": xi / model, "amplitude": amp,
                             "amplitude_err": amp_err, "passed": bool(ok)}
    return {"passed": bool(passed and samples), "r_mpch": r_mid, "r_edges": r_edges,
            "samples": samples, "tolerance": tolerance, "reference": reference}


def _plot(out_dir: Path, hmf: dict, vel: dict, clu: dict, cat: Catalog,
          outskirts: dict | None = None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []

    def save(fig, name):
        fig.tight_layout()
        with atomic_path(out_dir / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        files.append(name)

    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6, 6), sharex=True, height_ratios=[3, 1])
    e = hmf["log10_m_edges"]
    mid = 0.5 * (e[1:] + e[:-1])
    vol = cat.box_size**3
    dlog = np.diff(e)
    ax.errorbar(mid, hmf["observed"] / vol / dlog, np.sqrt(hmf["observed"]) / vol / dlog,
                fmt="o", ms=3, label="catalog")
    ax.plot(mid, hmf["expected"] / vol / dlog, "k-", label="Tinker et al. 2008")
    ax.set_yscale("log")
    ax.set_ylabel(r"dn/dlog$_{10}$M  [(Mpc/h)$^{-3}$]")
    ax.legend()
    ax.set_title(f"mass function: chi2/dof = {hmf['chi2']:.1f}/{hmf['dof']}")
    bx.axhline(0, color="k")
    bx.plot(mid, hmf["pull"], "o", ms=3)
    bx.set_ylabel("pull")
    bx.set_xlabel(r"log$_{10}$ M200c [Msun/h]")
    save(fig, "mass_function.png")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    if vel["n_halos"]:
        ez = hubble_h_units(cat.cosmology, cat.redshift) / 100.0
        xm = ez * vel["m200c"]
        ax.scatter(xm, vel["sigma_1d"], s=4, alpha=0.4, label="satellites, per halo")
        xx = np.logspace(np.log10(xm.min()), np.log10(xm.max()), 50)
        ax.plot(xx, EVRARD_SIGMA15_KMS * (xx / 1e15) ** EVRARD_ALPHA, "k-", label="Evrard et al. 2008")
        if "sigma15_kms" in vel:
            ax.plot(xx, vel["sigma15_kms"] * (xx / 1e15) ** vel["alpha"], "r--",
                    label=f"fit: {vel['sigma15_kms']:.0f} km/s, slope {vel['alpha']:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(r"E(z) M200c [Msun/h]")
    ax.set_ylabel(r"$\sigma_{1D}$ [km/s]")
    ax.legend()
    save(fig, "velocity_dispersion.png")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    r = clu["r_mpch"]
    for t, smp in clu["samples"].items():
        line = ax.errorbar(r, smp["xi"], smp["xi_err"], fmt="o", ms=3,
                           label=f"M > 10^{t}: b_eff={smp['b_eff']:.2f}, A={smp['amplitude']:.2f}")
        ax.plot(r, smp["xi_model"], "-", color=line[0].get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("r [Mpc/h]")
    ax.set_ylabel(r"$\xi_{hh}(r)$  (lines: $b^2\xi_{lin}$)" if clu.get("reference") !=
                  "simulation matter" else r"$\xi_{hh}(r)$  (lines: $b^2\xi_{mm}$ of the run)")
    ax.legend(fontsize=8)
    save(fig, "halo_clustering.png")
    if outskirts is not None:
        label = ("nbody engine" if cat.settings.get("engine") == "nbody" else
                 "outskirts on" if cat.settings.get("outskirts", False) else "outskirts off")
        save(plot_outskirts(outskirts, label), "outskirts.png")
    return files


def _summary(hmf: dict, vel: dict, clu: dict, cat: Catalog) -> dict[str, Any]:
    s: dict[str, Any] = {
        "n_halos": cat.n_halos,
        "n_galaxies": cat.n_galaxies,
        "n_halos_above_1e13.5": int(np.sum(cat.halos["m200c"] >= 10**13.5)),
        "galaxy_density_per_mpch3": cat.n_galaxies / cat.box_size**3,
        "satellite_fraction": float(np.mean(~cat.galaxies["is_central"])) if cat.n_galaxies else 0.0,
        "hmf_chi2": hmf["chi2"], "hmf_dof": hmf["dof"], "hmf_p_value": hmf["p_value"],
        "hmf_max_abs_pull": hmf["max_abs_pull"], "hmf_passed": hmf["passed"],
        "hmf_min_mass": hmf["min_mass"], "xi_reference": clu["reference"],
        "evrard_applicable": vel["applicable"], "evrard_n_halos": vel["n_halos"],
        "evrard_passed": vel["passed"],
    }
    for k in ("sigma15_kms", "sigma15_err_kms", "alpha", "alpha_err", "norm_ratio", "slope_diff"):
        if k in vel:
            s[f"evrard_{k}"] = vel[k]
    for t, smp in clu["samples"].items():
        s[f"xi_amplitude_m>{t}"] = smp["amplitude"]
        s[f"xi_amplitude_err_m>{t}"] = smp["amplitude_err"]
        s[f"xi_b_eff_m>{t}"] = smp["b_eff"]
        s[f"xi_max_bin_deviation_m>{t}"] = float(np.max(np.abs(smp["ratio"] - 1)))
    s["clustering_passed"] = clu["passed"]
    return s


def check_catalog(cat: Catalog, out_dir: str | os.PathLike | None = None, **kw: Any) -> dict:
    """Run the three checks on an in-memory catalog; write figures and summary if ``out_dir``.

    Parameters
    ----------
    cat : Catalog
        Catalog (comoving Mpc/h, km/s, M200c in Msun/h).
    out_dir : str or os.PathLike, optional
        Folder for ``summary.json`` and the PNG figures; ``None`` writes nothing.
    **kw
        ``min_satellites`` for :func:`check_velocity_dispersion`; any other keyword goes to
        :func:`check_clustering` (``thresholds_log10_msunh``, ``r_range`` in comoving Mpc/h,
        ``n_bins``, ``max_points``, ``seed``, ``tolerance``).

    Returns
    -------
    dict
        ``passed``, ``summary`` (flat numbers), ``figures`` (file names), ``details``.
    """
    hmf = check_mass_function(cat)
    vel = check_velocity_dispersion(cat, kw.get("min_satellites", 10))
    clu = check_clustering(cat, **{k: v for k, v in kw.items() if k != "min_satellites"})
    summary = _summary(hmf, vel, clu, cat)
    outskirts = check_outskirts(cat)
    summary.update(outskirts["summary"])
    passed = hmf["passed"] and clu["passed"] and (vel["passed"] or not vel["applicable"])
    summary["passed"] = bool(passed)
    figures: list[str] = []
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        figures = _plot(out, hmf, vel, clu, cat, outskirts)
        atomic_write_json(out / "summary.json", summary)
    return {"passed": bool(passed), "summary": summary, "figures": figures,
            "details": {"mass_function": hmf, "velocity_dispersion": vel, "clustering": clu,
                        "outskirts": outskirts}}


def check_catalog_file(path: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Validate a catalog file (``dynmass check universe.h5``): numbers, pass flag, figures.

    Parameters
    ----------
    path : str or os.PathLike
        Catalog HDF5 file.
    out_dir : str or os.PathLike
        Folder for ``summary.json`` and the PNG figures ``mass_function.png``,
        ``velocity_dispersion.png``, ``halo_clustering.png``, ``outskirts.png``.

    Returns
    -------
    dict
        ``passed`` (bool), ``summary`` (dict of numbers), ``figures`` (list of file names).
    """
    cat = read_catalog(path)
    res = check_catalog(cat, out_dir)
    return {"passed": res["passed"], "summary": res["summary"], "figures": res["figures"]}
