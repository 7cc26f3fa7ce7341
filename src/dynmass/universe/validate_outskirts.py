"""Checks of the regions around clusters that make interlopers hard: the edge of the members at
R200c, infall and turnaround, interloper velocities and the viewing-angle dependence of sigma_los.

These statistics compare a catalog with what N-body universes show (issue 13; the
``outskirts`` option of :class:`~dynmass.universe.build.UniverseSettings`, see
:mod:`dynmass.universe.outskirts`):

* :func:`projected_density_step`: the surface density of the galaxies in the cylinder
  (``R`` in units of R200c, ``|v| <= vcut``) in 0.9-1.0 R200c over that in 1.0-1.1 R200c,
  stacked over hosts and the x, y, z lines of sight. Satellites truncated at R200c give a step
  of ~1.7; a profile that continues smoothly (N-body halos; Diemer & Kravtsov 2014, ApJ 789, 1)
  gives ~1.1-1.2 (the ratio of the projected NFW density across 1 R200c).
* :func:`radial_velocity_profile`: the mean radial peculiar velocity (v_gal - v_host).r_hat,
  km/s, of galaxies in 3D shells around hosts, and the Hubble flow a H(z) r, km/s (r comoving
  Mpc/h). :func:`turnaround_radius`: where the mean velocity first rises above -a H r going
  outward (N-body: ~3-5 R200c; Cuesta et al. 2008, MNRAS 389, 385; Falco et al. 2014, MNRAS
  442, 1887).
* :func:`interloper_speed_spike`: the density of interlopers (galaxies of other hosts in the
  cylinder) at ``|v| < v_cold`` relative to a uniform distribution over ``|v| <= vcut``.
* :func:`los_dispersion_spread`: the spread over lines of sight of the members' sigma_los
  around the true host velocity, in dex of mass (3 x dex of sigma, sigma^3 ~ M; Evrard et al.
  2008, ApJ 672, 122), corrected for the sampling noise of the members. N-body halos:
  ~0.1 dex in mass (White, Cohn & Smit 2010, MNRAS 408, 1818).

Periodic box: every separation is the nearest periodic image. Velocities along a line of sight
are ``v = dv_los + a H(z) d`` (first order in d, as in :mod:`dynmass.observe`).

Examples
--------
The radial velocity of a galaxy falling straight onto a host, and the Hubble flow at its
distance (2 comoving Mpc/h at z = 0.117):

>>> import numpy as np
>>> from dynmass.catalog import Catalog
>>> from dynmass.cosmology import MDPL2
>>> from dynmass.universe.validate_outskirts import radial_velocity_profile
>>> halos = {"id": np.array([0]), "x": np.array([50.0]), "y": np.array([50.0]),
...          "z": np.array([50.0]), "vx": np.zeros(1), "vy": np.zeros(1), "vz": np.zeros(1),
...          "m200c": np.array([1e15]), "r200c": np.array([1.6])}
>>> gals = {"x": np.array([52.0]), "y": np.array([50.0]), "z": np.array([50.0]),
...         "vx": np.array([-500.0]), "vy": np.zeros(1), "vz": np.zeros(1),
...         "host_id": np.array([-1]), "is_central": np.array([True])}
>>> cat = Catalog(halos=halos, galaxies=gals, box_size=100.0, redshift=0.117, cosmology=MDPL2)
>>> prof = radial_velocity_profile(cat, np.array([1.5, 2.5]), min_mass=1e14)
>>> float(prof["mean_vr_kms"][0]), round(float(prof["hubble_kms"][0]), 1)
(-500.0, 189.6)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from dynmass.catalog import Catalog
from dynmass.cosmology import hubble_h_units

__all__ = ["check_outskirts", "interloper_speed_spike", "los_dispersion_spread", "plot_outskirts",
           "projected_density_profile", "projected_density_step", "radial_velocity_profile",
           "turnaround_radius"]

#: Shells of r / R200c for the radial velocity profile and the turnaround radius.
R_OVER_R200_SHELLS = np.round(np.arange(1.0, 10.01, 0.5), 2)
#: Shells in comoving Mpc/h quoted in issue 13 (1.5-2, 2-3, 3-4 Mpc/h).
R_MPCH_SHELLS = np.array([1.5, 2.0, 3.0, 4.0])


def _ah(cat: Catalog) -> float:
    """a H(z) in km/s per comoving Mpc/h."""
    return hubble_h_units(cat.cosmology, cat.redshift) / (1.0 + cat.redshift)


def _nearest_image(d: np.ndarray, box: float) -> np.ndarray:
    return d - box * np.round(d / box)


def _hosts(cat: Catalog, min_mass: float, max_mass: float = np.inf) -> np.ndarray:
    m = np.asarray(cat.halos["m200c"])
    return np.flatnonzero((m >= min_mass) & (m < max_mass))


def radial_velocity_profile(
    cat: Catalog,
    edges: np.ndarray,
    *,
    min_mass: float = 10**14.5,
    in_r200: bool = False,
    galaxies: str = "non_members",
) -> dict[str, Any]:
    """Mean radial peculiar velocity of galaxies in 3D shells around hosts, stacked.

    Parameters
    ----------
    cat : Catalog
        Catalog (comoving Mpc/h, km/s, M200c in Msun/h).
    edges : numpy.ndarray
        Shell edges: comoving Mpc/h, or r / R200c when ``in_r200``.
    min_mass : float
        Hosts with M200c >= this, Msun/h.
    in_r200 : bool
        Shells in units of each host's R200c.
    galaxies : str
        ``"non_members"`` (host_id differs from the host's id), ``"all"``,
        ``"outside_r200"`` (every galaxy beyond the host's R200c, members included), or
        ``"centrals"`` (the central galaxies of other halos: one galaxy per neighbouring halo,
        so that the members of a neighbouring cluster do not dominate a shell).

    Returns
    -------
    dict
        ``edges``, ``n`` (galaxy-host pairs per shell), ``mean_vr_kms`` and ``sem_kms`` (km/s;
        NaN for an empty shell), ``hubble_kms`` (a H r at the shell's mean pair distance, km/s)
        and ``n_hosts``.
    """
    edges = np.asarray(edges, dtype=float)
    hosts = _hosts(cat, min_mass)
    h, g = cat.halos, cat.galaxies
    nb = edges.size - 1
    out = {"edges": edges, "n": np.zeros(nb, np.int64), "mean_vr_kms": np.full(nb, np.nan),
           "sem_kms": np.full(nb, np.nan), "hubble_kms": np.full(nb, np.nan),
           "n_hosts": int(hosts.size)}
    if hosts.size == 0 or cat.n_galaxies == 0:
        return out
    box = cat.box_size
    gpos = np.mod(cat.galaxy_positions(), box)
    tree = cKDTree(gpos, boxsize=box)
    r200 = np.asarray(h["r200c"], float)[hosts]
    reach = edges[-1] * (r200 if in_r200 else np.ones_like(r200))
    hpos = np.mod(cat.halo_positions()[hosts], box)
    lists = tree.query_ball_point(hpos, reach)
    rows = np.repeat(np.arange(hosts.size), [len(x) for x in lists])
    idx = np.concatenate([np.asarray(x, np.int64) for x in lists]) if rows.size else rows
    d = _nearest_image(gpos[idx] - hpos[rows], box)
    r = np.sqrt(np.sum(d**2, axis=1))
    keep = r > 0
    if galaxies == "non_members":
        keep &= np.asarray(g["host_id"])[idx] != np.asarray(h["id"])[hosts][rows]
    elif galaxies == "outside_r200":
        keep &= r > r200[rows]
    elif galaxies == "centrals":
        keep &= np.asarray(g["is_central"], bool)[idx] & (
            np.asarray(g["host_id"])[idx] != np.asarray(h["id"])[hosts][rows])
    elif galaxies != "all":
        raise ValueError(f"galaxies={galaxies!r}")
    rows, idx, d, r = rows[keep], idx[keep], d[keep], r[keep]
    dv = np.stack([np.asarray(g[c])[idx] - np.asarray(h[c])[hosts][rows]
                   for c in ("vx", "vy", "vz")], axis=1)
    vr = np.sum(dv * d, axis=1) / r
    x = r / r200[rows] if in_r200 else r
    b = np.digitize(x, edges) - 1
    ok = (b >= 0) & (b < nb)
    n = np.bincount(b[ok], minlength=nb)
    s1 = np.bincount(b[ok], weights=vr[ok], minlength=nb)
    s2 = np.bincount(b[ok], weights=vr[ok] ** 2, minlength=nb)
    sr = np.bincount(b[ok], weights=r[ok], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 / n - mean**2, 0.0)
        out.update(n=n, mean_vr_kms=mean, sem_kms=np.sqrt(var / np.maximum(n - 1, 1)),
                   hubble_kms=_ah(cat) * sr / n)
    return out


def turnaround_radius(profile: dict[str, Any], min_pairs: int = 20) -> float:
    """First radius, going outward, where the mean radial velocity rises above -a H r.

    Linear interpolation of v_r / (a H r) + 1 between shell centres (shells with fewer than
    ``min_pairs`` galaxy-host pairs are skipped).

    Parameters
    ----------
    profile : dict
        Output of :func:`radial_velocity_profile`.
    min_pairs : int
        Minimum galaxy-host pairs of a shell used.

    Returns
    -------
    float
        Turnaround radius in the profile's units (comoving Mpc/h or R200c); NaN when the mean
        radial velocity never falls below -a H r, or never rises back above it.
    """
    e = profile["edges"]
    mid = 0.5 * (e[1:] + e[:-1])
    use = profile["n"] >= min_pairs
    f = (profile["mean_vr_kms"] / profile["hubble_kms"] + 1.0)[use]
    x = mid[use]
    below = np.flatnonzero(f < 0)
    if below.size == 0:
        return float("nan")
    up = np.flatnonzero((f[:-1] < 0) & (f[1:] >= 0) & (np.arange(f.size - 1) >= below[0]))
    if up.size == 0:
        return float("nan")
    i = up[0]
    return float(x[i] - f[i] * (x[i + 1] - x[i]) / (f[i + 1] - f[i]))


def _cylinder_pairs(cat: Catalog, hosts: np.ndarray, radius: np.ndarray, vcut: float
                    ) -> dict[str, np.ndarray]:
    """Galaxy-host pairs within projected ``radius`` and ``|v| <= vcut`` along x, y and z."""
    box, ah = cat.box_size, _ah(cat)
    h, g = cat.halos, cat.galaxies
    gpos = np.mod(cat.galaxy_positions(), box)
    hpos = np.mod(cat.halo_positions()[hosts], box)
    gvel, hvel = cat.galaxy_velocities(), np.stack([h[c] for c in ("vx", "vy", "vz")], 1)[hosts]
    parts: dict[str, list[np.ndarray]] = {"row": [], "R": [], "v": [], "member": []}
    for los in range(3):
        perp = [k for k in range(3) if k != los]
        tree = cKDTree(gpos[:, perp], boxsize=box)
        lists = tree.query_ball_point(hpos[:, perp], radius)
        rows = np.repeat(np.arange(hosts.size), [len(x) for x in lists])
        if rows.size == 0:
            continue
        idx = np.concatenate([np.asarray(x, np.int64) for x in lists])
        dp = _nearest_image(gpos[idx][:, perp] - hpos[rows][:, perp], box)
        dl = _nearest_image(gpos[idx, los] - hpos[rows, los], box)
        v = gvel[idx, los] - hvel[rows, los] + ah * dl
        R = np.sqrt(np.sum(dp**2, axis=1))
        keep = (np.abs(v) <= vcut) & ~((R == 0) & (dl == 0))
        parts["row"].append(rows[keep])
        parts["R"].append(R[keep])
        parts["v"].append(v[keep])
        parts["member"].append(np.asarray(g["host_id"])[idx[keep]]
                               == np.asarray(h["id"])[hosts][rows[keep]])
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}


def projected_density_step(cat: Catalog, min_mass: float = 1e14, vcut: float = 2200.0,
                           width: float = 0.1) -> dict[str, float]:
    """Surface density of cylinder galaxies just inside over just outside R200c.

    Parameters
    ----------
    cat : Catalog
        Catalog (comoving Mpc/h, km/s, M200c in Msun/h).
    min_mass : float
        Hosts with M200c >= this, Msun/h.
    vcut : float
        Velocity cut of the cylinder, km/s.
    width : float
        Width of the two annuli in R / R200c: (1 - width, 1) and (1, 1 + width).

    Returns
    -------
    dict
        ``ratio`` (inner over outer surface density), its Poisson ``ratio_err``, the counts
        ``n_in`` and ``n_out`` and ``n_hosts`` (each seen along x, y and z).
    """
    hosts = _hosts(cat, min_mass)
    r200 = np.asarray(cat.halos["r200c"], float)[hosts]
    p = _cylinder_pairs(cat, hosts, (1 + width) * r200, vcut)
    x = p["R"] / r200[p["row"].astype(np.int64)] if p["R"].size else p["R"]
    n_in = float(np.sum((x > 1 - width) & (x <= 1)))
    n_out = float(np.sum((x > 1) & (x <= 1 + width)))
    area_in, area_out = 1 - (1 - width) ** 2, (1 + width) ** 2 - 1
    ratio = (n_in / area_in) / (n_out / area_out) if n_out > 0 else float("nan")
    err = ratio * np.sqrt(1 / max(n_in, 1) + 1 / max(n_out, 1))
    return {"ratio": float(ratio), "ratio_err": float(err), "n_in": n_in, "n_out": n_out,
            "n_hosts": int(hosts.size)}


def interloper_speed_spike(cat: Catalog, min_mass: float = 1e14, aperture: float = 1.6,
                           vcut: float = 2200.0, v_cold: float = 250.0) -> dict[str, float]:
    """Density of interlopers at ``|v| < v_cold`` relative to uniform in ``|v| <= vcut``.

    Parameters
    ----------
    cat : Catalog
        Catalog (comoving Mpc/h, km/s, M200c in Msun/h).
    min_mass : float
        Hosts with M200c >= this, Msun/h.
    aperture : float
        Projected radius of the cylinder, comoving Mpc/h (Ho et al. 2019 "paper": 1.6).
    vcut : float
        Velocity cut of the cylinder, km/s (2200).
    v_cold : float
        Edge of the "cold" velocity range, km/s.

    Returns
    -------
    dict
        ``spike`` (1 for a uniform |v| distribution), ``n_interlopers``, ``interloper_fraction``
        (of all cylinder galaxies), ``median_abs_v_kms`` of the interlopers.
    """
    hosts = _hosts(cat, min_mass)
    p = _cylinder_pairs(cat, hosts, np.full(hosts.size, aperture), vcut)
    inter = ~p["member"].astype(bool)
    v = np.abs(p["v"][inter])
    n = v.size
    spike = (np.sum(v < v_cold) / n) / (v_cold / vcut) if n else float("nan")
    return {"spike": float(spike), "n_interlopers": int(n),
            "interloper_fraction": float(n / max(p["v"].size, 1)),
            "median_abs_v_kms": float(np.median(v)) if n else float("nan")}


def los_dispersion_spread(cat: Catalog, min_mass: float = 1e14, max_mass: float = 1e15, *,
                          n_los: int = 24, min_members: int = 20, seed: int = 0
                          ) -> dict[str, float]:
    """Spread over lines of sight of the members' sigma_los, in dex of mass.

    For each host, sigma_los^2(n) = n^T S n with S the members' velocity dispersion tensor
    about the host velocity (members within R200c); the spread is the standard deviation over
    ``n_los`` random directions of 3 log10 sigma_los. The sampling noise of a tensor from N
    members is removed by subtracting, per host, the spread of the same statistic for an
    isotropic tensor measured from N Gaussian velocities (a seeded Monte Carlo).

    Parameters
    ----------
    cat : Catalog
        Catalog (comoving Mpc/h, km/s, M200c in Msun/h).
    min_mass, max_mass : float
        Host M200c range, Msun/h.
    n_los : int
        Random lines of sight per host.
    min_members : int
        Hosts with fewer members within R200c are skipped.
    seed : int
        Seed of the directions and of the noise Monte Carlo.

    Returns
    -------
    dict
        ``spread_dex_mass`` (rms over hosts of the noise-corrected spread, dex of mass),
        ``raw_dex_mass`` (uncorrected), ``noise_dex_mass`` and ``n_hosts``.
    """
    rng = np.random.default_rng(seed)
    h, g = cat.halos, cat.galaxies
    hosts = _hosts(cat, min_mass, max_mass)
    gid = np.asarray(g["host_id"])
    sel = np.isin(gid, np.asarray(h["id"])[hosts]) & ~np.asarray(g["is_central"], bool)
    order = np.argsort(h["id"])
    if "r_host" in g:
        rows_all = order[np.searchsorted(np.asarray(h["id"]), gid[sel], sorter=order)]
        sel[np.flatnonzero(sel)] = np.asarray(g["r_host"])[sel] <= np.asarray(h["r200c"])[rows_all]
    rows = order[np.searchsorted(np.asarray(h["id"]), gid[sel], sorter=order)]
    dv = np.stack([np.asarray(g[c])[sel] - np.asarray(h[c])[rows] for c in ("vx", "vy", "vz")], 1)
    raw, noise = [], []
    for row in np.unique(rows):
        v = dv[rows == row]
        if len(v) < min_members:
            continue
        n = rng.standard_normal((n_los, 3))
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        tensor = v.T @ v / len(v)
        raw.append(np.std(1.5 * np.log10(np.einsum("ki,ij,kj->k", n, tensor, n))))
        iso = rng.standard_normal(v.shape)
        t_iso = iso.T @ iso / len(v)
        noise.append(np.std(1.5 * np.log10(np.einsum("ki,ij,kj->k", n, t_iso, n))))
    if not raw:
        return {"spread_dex_mass": float("nan"), "raw_dex_mass": float("nan"),
                "noise_dex_mass": float("nan"), "n_hosts": 0}
    raw_rms, noise_rms = np.sqrt(np.mean(np.square(raw))), np.sqrt(np.mean(np.square(noise)))
    return {"spread_dex_mass": float(np.sqrt(max(raw_rms**2 - noise_rms**2, 0.0))),
            "raw_dex_mass": float(raw_rms), "noise_dex_mass": float(noise_rms),
            "n_hosts": len(raw)}


def projected_density_profile(cat: Catalog, edges: np.ndarray, min_mass: float = 1e14,
                               vcut: float = 2200.0) -> dict[str, np.ndarray]:
    """Surface density of the cylinder galaxies in annuli of R / R200c, stacked.

    Parameters
    ----------
    cat : Catalog
        Catalog (comoving Mpc/h, km/s, M200c in Msun/h).
    edges : numpy.ndarray
        Annulus edges in R / R200c.
    min_mass : float
        Hosts with M200c >= this, Msun/h.
    vcut : float
        Velocity cut of the cylinder, km/s.

    Returns
    -------
    dict
        ``edges``, ``n`` (galaxies per annulus, x, y and z lines of sight pooled) and
        ``sigma`` (galaxies per unit (R/R200c)^2 per host and line of sight).
    """
    edges = np.asarray(edges, float)
    hosts = _hosts(cat, min_mass)
    r200 = np.asarray(cat.halos["r200c"], float)[hosts]
    p = _cylinder_pairs(cat, hosts, edges[-1] * r200, vcut)
    x = p["R"] / r200[p["row"].astype(np.int64)] if p["R"].size else p["R"]
    n = np.histogram(x, edges)[0]
    area = np.pi * np.diff(edges**2) * max(3 * hosts.size, 1)
    return {"edges": edges, "n": n, "sigma": n / area}


def check_outskirts(cat: Catalog, min_mass: float = 10**14.5) -> dict[str, Any]:
    """The outskirts statistics of a catalog: flat numbers and the profiles behind them.

    Parameters
    ----------
    cat : Catalog
        Catalog (comoving Mpc/h, km/s, M200c in Msun/h).
    min_mass : float
        Hosts of the radial velocity profile, M200c >= this, Msun/h.

    Returns
    -------
    dict
        ``summary``: ``outskirts_step_ratio`` (and error; hosts >= 10^14 Msun/h),
        ``outskirts_vr_non_members_<a>-<b>mpch`` (mean radial peculiar velocity of
        non-members, km/s, shells of comoving Mpc/h), ``outskirts_hubble_<a>-<b>mpch`` (km/s),
        ``outskirts_turnaround_r200`` (galaxies beyond R200c; NaN when nothing turns
        around), ``outskirts_interloper_spike``, ``outskirts_n_hosts``;
        ``radial_profile`` and ``radial_profile_non_members`` (:func:`radial_velocity_profile`
        in R200c), ``projected_profile`` (:func:`projected_density_profile`).
    """
    out: dict[str, Any] = {}
    step = projected_density_step(cat)
    out["outskirts_step_ratio"] = step["ratio"]
    out["outskirts_step_ratio_err"] = step["ratio_err"]
    prof = radial_velocity_profile(cat, R_MPCH_SHELLS, min_mass=min_mass)
    for i in range(R_MPCH_SHELLS.size - 1):
        key = f"{R_MPCH_SHELLS[i]:g}-{R_MPCH_SHELLS[i + 1]:g}mpch"
        out[f"outskirts_vr_non_members_{key}"] = float(prof["mean_vr_kms"][i])
        out[f"outskirts_hubble_{key}"] = float(prof["hubble_kms"][i])
    prof_r = radial_velocity_profile(cat, R_OVER_R200_SHELLS, min_mass=min_mass, in_r200=True,
                                     galaxies="outside_r200")
    prof_nm = radial_velocity_profile(cat, R_OVER_R200_SHELLS, min_mass=min_mass, in_r200=True)
    out["outskirts_turnaround_r200"] = turnaround_radius(prof_r)
    out["outskirts_interloper_spike"] = interloper_speed_spike(cat)["spike"]
    out["outskirts_n_hosts"] = float(prof["n_hosts"])
    proj = projected_density_profile(cat, np.round(np.arange(0.5, 2.01, 0.1), 2))
    return {"summary": out, "radial_profile": prof_r, "radial_profile_non_members": prof_nm,
            "projected_profile": proj}


def plot_outskirts(res: dict[str, Any], title: str = "") -> Any:
    """Figure of :func:`check_outskirts`: radial velocity profile and projected density.

    Parameters
    ----------
    res : dict
        Output of :func:`check_outskirts`.
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2))
    for key, label in (("radial_profile", "galaxies beyond R200c"),
                       ("radial_profile_non_members", "non-members")):
        p = res[key]
        mid = 0.5 * (p["edges"][1:] + p["edges"][:-1])
        ax.errorbar(mid, p["mean_vr_kms"], p["sem_kms"], fmt="o-", ms=3, label=label)
    p = res["radial_profile"]
    mid = 0.5 * (p["edges"][1:] + p["edges"][:-1])
    ax.plot(mid, -p["hubble_kms"], "k--", label="-a H r (turnaround)")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("r / R200c")
    ax.set_ylabel("mean radial peculiar velocity [km/s]")
    ta = res["summary"]["outskirts_turnaround_r200"]
    ax.set_title(f"hosts > 10^14.5: turnaround {ta:.2f} R200c" if np.isfinite(ta)
                 else "hosts > 10^14.5: no turnaround")
    ax.legend(fontsize=8)
    q = res["projected_profile"]
    mid = 0.5 * (q["edges"][1:] + q["edges"][:-1])
    bx.errorbar(mid, q["sigma"], q["sigma"] / np.sqrt(np.maximum(q["n"], 1)), fmt="o-", ms=3)
    bx.axvline(1.0, color="0.6", lw=0.8)
    bx.set_yscale("log")
    bx.set_xlabel("R / R200c")
    bx.set_ylabel("cylinder galaxies per (R/R200c)^2, per view")
    bx.set_title(f"step 0.9-1.0 / 1.0-1.1 R200c: {res['summary']['outskirts_step_ratio']:.2f}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
