"""Measure the infall the analytic grid lacks on the N-body engine, fit it, and check the result.

The ``outskirts`` engine (:mod:`dynmass.universe.infall`) adds to the halos around every host
the excess of the N-body engine's mean radial peculiar velocity (and variance) of halos over
the analytic grid's, in units of the host's V200c and R200c. This script measures both on
universes of the same cosmology, redshift and seeds, fits the excess and writes the fit to
``src/dynmass/data/infall_nbody_fit.json`` (``--write-fit``); with ``--check`` it also
measures universes built with the fit (halos and galaxies around hosts, turnaround radius) and
draws them beside the N-body profiles.

Pairs: hosts of M200c >= 10^13.5 Msun/h in five mass bins; tracers: halos less massive than
the host and at least as massive as the N-body catalogs' smallest halo (the FoF completeness),
so both engines are measured on the same kind of tracer. Velocities are relative to the host.

Examples
--------
``make infall-fit`` (universes of ``make cross-universe``)::

    python benchmarks/infall_fit.py --nbody build/cross-universe/universe_nbody_s{1,2,3}.h5 \\
        --grid build/cross-universe/universe_default_s{1,2,3}.h5 --write-fit \\
        --check build/infall-fit/universe_outskirts_s1.h5 --out docs/infall_fit
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial import cKDTree

from dynmass.catalog import Catalog, read_catalog
from dynmass.universe.galaxies import G_KMS_MPC_MSUN
from dynmass.universe.infall import HOST_MIN_MASS, Y_MAX, mean_excess, variance_excess

#: Host mass bin edges, log10 M200c [Msun/h].
MASS_EDGES = np.array([13.5, 13.75, 14.0, 14.25, 14.5, 15.0])
#: Shell edges in r / R200c.
Y_EDGES = np.geomspace(1.0, Y_MAX, 27)
#: Shells used by the fit: y >= this (the FoF groups swallow the halos within ~2 R200c).
Y_FIT_MIN = 2.0
#: Shells with fewer N-body pairs are not fitted.
MIN_PAIRS = 30
FIT_PATH = Path(__file__).resolve().parents[1] / "src" / "dynmass" / "data" / \
    "infall_nbody_fit.json"


def _v200(m: np.ndarray, r200: np.ndarray, z: float) -> np.ndarray:
    """V200c = sqrt(G M200c / R200c), km/s (R200c comoving Mpc/h -> physical)."""
    return np.sqrt(G_KMS_MPC_MSUN * m / (r200 / (1.0 + z)))


def pair_moments(cat: Catalog, tracer_min_mass: float, tracers: str = "halos") -> np.ndarray:
    """Sums of 1, v_r/V200c and (v_r/V200c)^2 of host-tracer pairs per mass bin and shell.

    Parameters
    ----------
    cat : Catalog
        Universe.
    tracer_min_mass : float
        Smallest tracer halo, M200c in Msun/h (``tracers="halos"``).
    tracers : str
        ``"halos"`` (less massive halos' centres) or ``"galaxies"`` (every galaxy beyond the
        host's R200c).

    Returns
    -------
    numpy.ndarray
        (3, n_mass_bins, n_shells).
    """
    h, box, z = cat.halos, cat.box_size, cat.redshift
    pos = np.mod(cat.halo_positions(), box)
    vel = np.stack([np.asarray(h[c], float) for c in ("vx", "vy", "vz")], 1)
    m, r200 = np.asarray(h["m200c"], float), np.asarray(h["r200c"], float)
    if tracers == "halos":
        tpos, tvel, tm = pos, vel, m
    else:
        g = cat.galaxies
        tpos = np.mod(cat.galaxy_positions(), box)
        tvel = np.stack([np.asarray(g[c], float) for c in ("vx", "vy", "vz")], 1)
        tm = np.zeros(len(tpos))
    tree = cKDTree(tpos, boxsize=box)
    out = np.zeros((3, MASS_EDGES.size - 1, Y_EDGES.size - 1))
    lm = np.log10(m)
    for b in range(MASS_EDGES.size - 1):
        hs = np.flatnonzero((lm >= MASS_EDGES[b]) & (lm < MASS_EDGES[b + 1]))
        if hs.size == 0:
            continue
        lists = tree.query_ball_point(pos[hs], Y_EDGES[-1] * r200[hs])
        rows = np.repeat(hs, [len(x) for x in lists])
        j = np.concatenate([np.asarray(x, np.int64) for x in lists])
        d = tpos[j] - pos[rows]
        d -= box * np.round(d / box)
        r = np.sqrt(np.sum(d**2, 1))
        y = r / r200[rows]
        keep = (tm[j] < m[rows]) & (tm[j] >= tracer_min_mass) if tracers == "halos" else y > 1
        keep &= r > 0
        rows, j, d, r, y = rows[keep], j[keep], d[keep], r[keep], y[keep]
        vr = np.sum((tvel[j] - vel[rows]) * d, 1) / r / _v200(m[rows], r200[rows], z)
        s = np.digitize(y, Y_EDGES) - 1
        ok = (s >= 0) & (s < Y_EDGES.size - 1)
        for i, w in enumerate((None, vr[ok], vr[ok] ** 2)):
            out[i, b] += np.bincount(s[ok], w, minlength=Y_EDGES.size - 1)
    return out


def moments(cats: list[Catalog], tracer_min_mass: float, tracers: str = "halos"
            ) -> dict[str, np.ndarray]:
    """Pooled pair moments of several universes: ``n``, ``mean``, ``var`` (V200c units)."""
    s = sum(pair_moments(c, tracer_min_mass, tracers) for c in cats)
    n = s[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s[1] / n
        var = s[2] / n - mean**2
    return {"n": n, "mean": mean, "var": var}


def fit_excess(nb: dict[str, np.ndarray], ref: dict[str, np.ndarray],
               previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Least-squares fit of the N-body excess mean and variance (see the module docstring).

    Parameters
    ----------
    nb, ref : dict
        Pooled moments (:func:`moments`) of the N-body universes and of the reference: the
        default grid (first fit) or, with ``previous``, universes built with ``previous``.
    previous : dict, optional
        A fit the reference universes were built with: the new fit is ``previous`` plus what
        the engine still misses, nb - ref (one fixed-point iteration; it corrects for the
        hosts that share their neighbours, which the one-host-per-halo rule gives to one).
    """
    yc = np.sqrt(Y_EDGES[1:] * Y_EDGES[:-1])
    mc = 0.5 * (MASS_EDGES[1:] + MASS_EDGES[:-1]) - 14.0
    y, mu = np.meshgrid(yc, mc)
    dmu = nb["mean"] - ref["mean"]
    dvar = nb["var"] - ref["var"]
    if previous is not None:
        dmu = dmu + mean_excess(y, mu, previous["mean"])
        dvar = dvar + variance_excess(mu, previous["variance"])
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = np.sqrt(nb["var"] / nb["n"] + ref["var"] / ref["n"])
        sev = np.sqrt(2.0 / nb["n"]) * nb["var"] + np.sqrt(2.0 / ref["n"]) * ref["var"]
    use = (y >= Y_FIT_MIN) & (nb["n"] >= MIN_PAIRS) & (ref["n"] >= MIN_PAIRS)
    names = ["a0", "a1", "l0", "l1", "q", "c0", "c1"]

    def resid(p: np.ndarray) -> np.ndarray:
        return (dmu[use] - mean_excess(y[use], mu[use], dict(zip(names, p, strict=True)))) / sem[use]

    r1 = least_squares(resid, [0.45, 0.0, np.log(4.0), 0.3, 3.0, 0.0, 0.0])
    r2 = least_squares(lambda p: (dvar[use] - (p[0] + p[1] * mu[use])) / sev[use], [0.1, 0.0])
    out: dict[str, Any] = {}
    for key, res, nm in (("mean", r1, names), ("variance", r2, ["b0", "b1"])):
        dof = res.fun.size - res.x.size
        cov = np.linalg.inv(res.jac.T @ res.jac) * np.sum(res.fun**2) / dof
        out[key] = {k: float(v) for k, v in zip(nm, res.x, strict=True)}
        out[key + "_errors"] = {k: float(v) for k, v in zip(nm, np.sqrt(np.diag(cov)), strict=True)}
        out[key + "_chi2_dof"] = [float(np.sum(res.fun**2)), int(dof)]
    out["data"] = {"y": yc.tolist(), "log_m_edges": MASS_EDGES.tolist(),
                   "fitted": use.tolist(),
                   "dmean_over_v200": np.round(np.nan_to_num(dmu, nan=0.0), 5).tolist(),
                   "dmean_sem": np.round(np.nan_to_num(sem, nan=0.0), 5).tolist(),
                   "dvar_over_v200sq": np.round(np.nan_to_num(dvar, nan=0.0), 5).tolist(),
                   "n_pairs_nbody": nb["n"].astype(int).tolist()}
    return out


def turnaround(mean: np.ndarray) -> np.ndarray:
    """First y, going outward from 2 R200c, where v_r / V200c rises above -y/10 (the Hubble
    flow: a H r = y V200c / 10 for 200c), per mass bin (linear interpolation; NaN if none)."""
    yc = np.sqrt(Y_EDGES[1:] * Y_EDGES[:-1])
    out = []
    for row in mean:
        f = row + yc / 10.0
        ok = np.isfinite(f) & (yc >= Y_FIT_MIN)
        x, f = yc[ok], f[ok]
        up = np.flatnonzero((f[:-1] < 0) & (f[1:] >= 0))
        out.append(np.nan if up.size == 0 else
                   float(x[up[0]] - f[up[0]] * (x[up[0] + 1] - x[up[0]]) / (f[up[0] + 1] - f[up[0]])))
    return np.array(out)


def _write_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _figure(profiles: dict[str, dict[str, dict[str, np.ndarray]]], fit: dict[str, Any],
            path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yc = np.sqrt(Y_EDGES[1:] * Y_EDGES[:-1])
    nb = MASS_EDGES.size - 1
    fig, ax = plt.subplots(3, nb, figsize=(3.2 * nb, 8.4), sharex=True, sharey="row")
    style = {"nbody": ("k", "-"), "default": ("C0", "--"), "outskirts": ("C3", "-")}
    for b in range(nb):
        mu = 0.5 * (MASS_EDGES[b] + MASS_EDGES[b + 1]) - 14.0
        for name, prof in profiles.items():
            c, ls = style.get(name, ("C2", ":"))
            for row, (kind, q) in enumerate((("halos", "mean"), ("halos", "var"),
                                             ("galaxies", "mean"))):
                if kind in prof:
                    v = prof[kind][q][b]
                    ax[row, b].plot(yc, np.sqrt(np.clip(v, 0, None)) if q == "var" else v,
                                    color=c, ls=ls, label=name)
        if "default" in profiles and "outskirts" not in profiles:  # the fit before iterating
            g = profiles["default"]["halos"]
            ax[0, b].plot(yc, g["mean"][b] + mean_excess(yc, mu, fit["mean"]), color="C1",
                          ls=":", label="default + fit")
            ax[1, b].plot(yc, np.sqrt(g["var"][b] + variance_excess(mu, fit["variance"])),
                          color="C1", ls=":", label="default + fit")
        for row in (0, 2):
            ax[row, b].plot(yc, -yc / 10.0, color="0.6", lw=0.8, label="-Hubble flow")
        ax[0, b].set_title(f"hosts 10^{MASS_EDGES[b]:.2f}-10^{MASS_EDGES[b + 1]:.2f}")
        ax[2, b].set_xlabel("r / R200c")
    ax[0, 0].set_ylabel("halos: <v_r> / V200c")
    ax[1, 0].set_ylabel("halos: sd(v_r) / V200c")
    ax[2, 0].set_ylabel("galaxies > R200c: <v_r> / V200c")
    ax[0, 0].set_xscale("log")
    ax[0, 0].set_ylim(-1.0, 0.6)
    ax[2, 0].set_ylim(-1.0, 0.3)
    ax[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nbody", nargs="+", required=True, help="N-body engine universes (.h5)")
    ap.add_argument("--grid", nargs="+", required=True,
                    help="default analytic engine universes, same cosmology/redshift (.h5)")
    ap.add_argument("--check", nargs="*", default=[],
                    help="universes built with the fit (--outskirts) to compare")
    ap.add_argument("--write-fit", action="store_true", help=f"write {FIT_PATH.name}")
    ap.add_argument("--iterate", action="store_true",
                    help="refit as the stored fit plus what the --check universes (built with "
                         "it) still miss against the N-body ones")
    ap.add_argument("--out", default="docs/infall_fit", help="folder for the figure and table")
    a = ap.parse_args(argv)
    cats = {p: read_catalog(p) for p in dict.fromkeys(a.nbody + a.grid + a.check)}
    z = {float(c.redshift) for c in cats.values()}
    if len(z) != 1:
        print(f"error: the universes are at different redshifts {sorted(z)}", file=sys.stderr)
        return 2
    nb_min = max(float(np.min(cats[p].halos["m200c"])) for p in a.nbody)
    prof: dict[str, dict[str, dict[str, np.ndarray]]] = {
        "nbody": {"halos": moments([cats[p] for p in a.nbody], nb_min), "galaxies": moments([cats[p] for p in a.nbody], 0, "galaxies")},
        "default": {"halos": moments([cats[p] for p in a.grid], nb_min), "galaxies": moments([cats[p] for p in a.grid], 0, "galaxies")},
    }
    if a.iterate and not a.check:
        print("error: --iterate needs --check universes built with the stored fit",
              file=sys.stderr)
        return 2
    if a.check:
        prof["outskirts"] = {"halos": moments([cats[p] for p in a.check], nb_min),
                             "galaxies": moments([cats[p] for p in a.check], 0, "galaxies")}
    if a.iterate:
        previous = json.loads(FIT_PATH.read_text())
        fit = fit_excess(prof["nbody"]["halos"], prof["outskirts"]["halos"], previous)
        fit["iteration"] = int(previous.get("iteration", 0)) + 1
        fit["previous"] = {k: previous[k] for k in ("mean", "variance")}
    else:
        fit = fit_excess(prof["nbody"]["halos"], prof["default"]["halos"])
        fit["iteration"] = 0
    fit["measured_on"] = {"nbody": [Path(p).name for p in a.nbody],
                          "grid": [Path(p).name for p in a.grid],
                          "iterated_on": [Path(p).name for p in a.check] if a.iterate else [], "redshift": z.pop(),
                          "tracer_min_mass_msunh": nb_min, "host_min_mass_msunh": HOST_MIN_MASS,
                          "commit": _commit(), "script": "benchmarks/infall_fit.py"}
    if a.write_fit:
        _write_json(fit, FIT_PATH)
    out = Path(a.out)
    _figure(prof, fit, out / "infall_fit.png")
    yc = np.sqrt(Y_EDGES[1:] * Y_EDGES[:-1])
    pick = [int(np.argmin(np.abs(yc - v))) for v in (1.5, 2.5, 3.5, 5.0, 8.0, 12.0)]
    lines = ["# Infall: N-body engine, default grid and the outskirts engine built with the fit",
             "", f"Fit (V200c units): mean {fit['mean']}, chi2/dof {fit['mean_chi2_dof']}; "
             f"variance {fit['variance']}, chi2/dof {fit['variance_chi2_dof']}.", "",
             "Mean radial velocity / V200c at r/R200c = "
             + ", ".join(f"{yc[i]:.2f}" for i in pick) + "; turnaround (v_r = -a H r) in R200c.",
             "", "| tracers | engine | hosts | " + " | ".join(f"{yc[i]:.1f}" for i in pick)
             + " | turnaround |", "|" + "---|" * (len(pick) + 4)]
    summary: dict[str, Any] = {"fit": {k: fit[k] for k in fit if k != "data"}}
    for kind in ("halos", "galaxies"):
        for name, p in prof.items():
            ta = turnaround(p[kind]["mean"])
            summary[f"{kind}_{name}_turnaround"] = ta.tolist()
            summary[f"{kind}_{name}_mean"] = np.round(p[kind]["mean"], 4).tolist()
            for b in range(MASS_EDGES.size - 1):
                row = p[kind]["mean"][b]
                lines.append(f"| {kind} | {name} | {MASS_EDGES[b]:.2f}-{MASS_EDGES[b + 1]:.2f} | "
                             + " | ".join(f"{row[i]:+.2f}" for i in pick) + f" | {ta[b]:.1f} |")
    summary["y"] = yc.tolist()
    (out / "infall_fit.md").write_text("\n".join(lines) + "\n")
    _write_json(summary, out / "infall_fit.json")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
