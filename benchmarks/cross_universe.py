"""The cross-universe matrix: models trained on one universe engine, tested on every engine.

``make cross-universe`` trains CNN2D, CNN1D and M-sigma on two 250 Mpc/h universes of each
engine -- ``default`` (analytic, NFW satellites cut at R200c), ``outskirts`` (analytic with
splashback, infall and triaxial halos) and ``nbody`` (particle-mesh N-body run, FoF halos with
M200c by matched abundance) -- and hands every bundle and one independent test universe per
engine to this script. For every (model, training engine, test engine), over views with
>= 10 galaxies and true log10 M200c in [13.5, 15] [Msun/h]:

* the median of ``p50 - true`` (dex) in every 0.25-dex bin of true mass (bins with >= 20
  views) and the worst of them;
* the scatter: standard deviation and 16-84 half width of ``p50 - true`` over [14, 15] and
  over [13.5, 15], and the catastrophic fraction (``|p50 - true| > 0.5`` dex);
* the fraction of views whose 68% and 95% intervals (the bundle's Neyman belts, calibrated on
  its own engine's cross-fitted predictions) contain the true mass;
* the Spearman correlation of ``p50 - true`` with the number of galaxies in the view at fixed
  true mass (within each 0.25-dex bin, then averaged with the bins' view counts as weights).

With ``--universe ENGINE=CATALOG.h5`` also the infall of each engine: the mean radial peculiar
velocity of galaxies beyond R200c around hosts above 10^14 Msun/h against r / R200c, and the
turnaround radius (:func:`dynmass.universe.validate_outskirts.radial_velocity_profile`).

Writes ``cross_universe.json``, ``cross_universe.md`` and ``cross_universe.png`` into ``-o``.

Usage::

    python benchmarks/cross_universe.py --model default:cnn2d=build/cross-universe/default_cnn2d.h5 \\
        ... --test default=build/cross-universe/test_default.h5 ... -o docs/cross_universe
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import robustness_z as rz  # noqa: E402
from robustness import _pairs  # noqa: E402  (NAME=PATH options)

EDGES = np.round(np.arange(13.5, 15.001, 0.25), 3)
MIN_BIN_VIEWS = 20
MIN_GAL = 10


def scores(q: np.ndarray, true: np.ndarray, n_gal: np.ndarray) -> dict:
    """Bias per bin, scatter, coverage and richness correlation of percentiles ``q`` (n, 5)."""
    d = q[:, 2] - true
    c68 = (q[:, 1] <= true) & (true <= q[:, 3])
    c95 = (q[:, 0] <= true) & (true <= q[:, 4])
    b = np.digitize(true, EDGES) - 1
    bins, rho, w = [], [], []
    for i in range(len(EDGES) - 1):
        s = b == i
        if s.sum() < MIN_BIN_VIEWS:
            continue
        r = spearmanr(d[s], n_gal[s]).statistic if np.ptp(n_gal[s]) > 0 else np.nan
        bins.append({"lo": float(EDGES[i]), "n": int(s.sum()), "median": float(np.median(d[s])),
                     "std": float(np.std(d[s])), "cov68": float(c68[s].mean()),
                     "cov95": float(c95[s].mean()), "rho_n_gal": float(r)})
        if np.isfinite(r):
            rho.append(r)
            w.append(s.sum())
    hi = true >= 14.0
    worst = max(bins, key=lambda x: abs(x["median"])) if bins else None

    def spread(x: np.ndarray) -> tuple[float, float]:
        if not len(x):
            return float("nan"), float("nan")
        return float(np.std(x)), float(np.diff(np.percentile(x, [16, 84]))[0] / 2)

    std_all, hw_all = spread(d)
    std_hi, hw_hi = spread(d[hi])
    return {
        "n": int(len(d)), "n_14_15": int(hi.sum()),
        "median": float(np.median(d)) if len(d) else float("nan"),
        "median_14_15": float(np.median(d[hi])) if hi.any() else float("nan"),
        "std": std_all, "half_width_16_84": hw_all, "std_14_15": std_hi,
        "half_width_16_84_14_15": hw_hi,
        "catastrophic_frac": float(np.mean(np.abs(d) > 0.5)) if len(d) else float("nan"),
        "cov68": float(c68.mean()) if len(d) else float("nan"),
        "cov95": float(c95.mean()) if len(d) else float("nan"),
        "worst_bin_median": worst["median"] if worst else None,
        "worst_bin_lo": worst["lo"] if worst else None,
        "rho_n_gal": float(np.average(rho, weights=w)) if rho else float("nan"),
        "bins": bins,
    }


def infall(universes: dict[str, Path], min_mass: float = 1e14) -> dict:
    """Mean radial velocity of galaxies beyond R200c around hosts >= ``min_mass`` per engine."""
    from dynmass.catalog import read_catalog
    from dynmass.universe.validate_outskirts import (
        R_OVER_R200_SHELLS,
        radial_velocity_profile,
        turnaround_radius,
    )

    out = {}
    for name, path in universes.items():
        cat = read_catalog(path)
        p = radial_velocity_profile(cat, R_OVER_R200_SHELLS, min_mass=min_mass, in_r200=True,
                                    galaxies="outside_r200")
        out[name] = {"universe": str(path), "n_hosts": int(p["n_hosts"]),
                     "r_over_r200c": [float(x) for x in 0.5 * (R_OVER_R200_SHELLS[1:]
                                                               + R_OVER_R200_SHELLS[:-1])],
                     "mean_vr_kms": [float(x) for x in p["mean_vr_kms"]],
                     "turnaround_r200c": float(turnaround_radius(p))}
    return out


def run(models: dict[str, Path], tests: dict[str, Path], out: Path,
        universes: dict[str, Path] | None = None) -> dict:
    """Score every model on every test universe; write the JSON, table and figure."""
    from dynmass.bundle import load_bundle
    from dynmass.observations import read_observations

    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"models": {k: str(v) for k, v in models.items()},
                    "tests": {k: str(v) for k, v in tests.items()}, "edges": EDGES.tolist(),
                    "min_galaxies": MIN_GAL, "scores": {},
                    "infall": infall(universes) if universes else {}}
    views = {}
    for name, path in tests.items():
        obs = read_observations(path)
        true = obs.log10_m200c()
        keep = (obs.n_gal >= MIN_GAL) & (true >= EDGES[0]) & (true < EDGES[-1])
        views[name] = (obs, true, keep)
        result.setdefault("test_views", {})[name] = {
            "n_views": int(obs.n_views), "n_scored": int(keep.sum()),
            "median_n_gal_14_15": float(np.median(obs.n_gal[keep & (true >= 14)]))}
    for key, path in models.items():
        bundle = load_bundle(path)
        for name, (obs, true, keep) in views.items():
            t0 = time.perf_counter()
            q, _, _ = rz.predict_as_user(bundle, obs)
            s = scores(q[keep], true[keep], obs.n_gal[keep].astype(float))
            s["seconds"] = time.perf_counter() - t0
            result["scores"][f"{key}->{name}"] = s
            print(f"{key} -> {name}: bias {s['median']:+.3f} worst {rz._f(s['worst_bin_median'])}"
                  f" std {s['std']:.3f} 68/95 {s['cov68']:.2f}/{s['cov95']:.2f}",
                  file=sys.stderr)
    (out / "cross_universe.json").write_text(json.dumps(result, indent=1))
    (out / "cross_universe.md").write_text(table(result))
    figure(result, out / "cross_universe.png")
    return result


def _split(key: str) -> tuple[str, str]:
    engine, _, model = key.partition(":")
    return engine, model


def table(result: dict) -> str:
    """Markdown: one matrix per model (rows: training engine, columns: test engine)."""
    tests = list(result["tests"])
    kinds = list(dict.fromkeys(_split(k)[1] for k in result["models"]))
    lines = ["Median p50 - true over 10^13.5-10^15 Msun/h (worst 0.25-dex bin; over 10^14-10^15)"
             " / scatter (std over 10^14-10^15; over 10^13.5-10^15 in brackets) / 68% and 95% "
             "coverage (%) / rho: residual vs galaxies per view at fixed true mass. Views with "
             ">= 10 galaxies.\n"]
    for kind in kinds:
        lines += [f"\n**{kind}** (rows: trained on; columns: tested on)\n",
                  "| trained on | " + " | ".join(tests) + " |", "|---|" + "---|" * len(tests)]
        for key in result["models"]:
            engine, k = _split(key)
            if k != kind:
                continue
            cells = []
            for t in tests:
                s = result["scores"][f"{key}->{t}"]
                cells.append(f"{s['median']:+.3f} ({rz._f(s['worst_bin_median'])}; "
                             f"{s['median_14_15']:+.3f}) / {s['std_14_15']:.3f} ({s['std']:.3f})"
                             f" / {100 * s['cov68']:.0f}/{100 * s['cov95']:.0f} / rho "
                             f"{s['rho_n_gal']:+.2f}")
            lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    if result.get("infall"):
        inf = result["infall"]
        x = next(iter(inf.values()))["r_over_r200c"]
        cols = [i for i, xx in enumerate(x) if xx in (1.25, 1.75, 2.25, 3.25, 4.25, 6.25)]
        lines += ["\n**Infall** around hosts above 10^14 Msun/h: mean radial peculiar velocity "
                  "(km/s) of galaxies beyond R200c at r / R200c\n",
                  "| engine | hosts | " + " | ".join(f"{x[i]:g}" for i in cols)
                  + " | turnaround (R200c) |", "|---|---|" + "---|" * (len(cols) + 1)]
        for name, p in inf.items():
            lines.append(f"| {name} | {p['n_hosts']} | " + " | ".join(
                f"{p['mean_vr_kms'][i]:.0f}" for i in cols) + f" | {p['turnaround_r200c']:.2f} |")
    v = result["test_views"]
    lines.append("\nTest views scored (median galaxies per view at 10^14-10^15): " + ", ".join(
        f"{t} {v[t]['n_scored']} ({v[t]['median_n_gal_14_15']:.0f})" for t in tests) + ".\n")
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    """Top: scatter matrices per model; bottom: bias against true mass, every train -> test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = list(result["tests"])
    kinds = list(dict.fromkeys(_split(k)[1] for k in result["models"]))
    engines = list(dict.fromkeys(_split(k)[0] for k in result["models"]))
    ncol = len(kinds) + bool(result.get("infall"))
    fig, axes = plt.subplots(2, ncol, figsize=(4.6 * ncol, 8.4), squeeze=False)
    colours = {t: f"C{i}" for i, t in enumerate(tests)}
    styles = ["-", "--", ":", "-."]
    for j, kind in enumerate(kinds):
        ax = axes[0, j]
        mat = np.full((len(engines), len(tests)), np.nan)
        for i, e in enumerate(engines):
            for k, t in enumerate(tests):
                s = result["scores"].get(f"{e}:{kind}->{t}")
                if s is not None:
                    mat[i, k] = s["std_14_15"]
                    ax.text(k, i, f"{s['std_14_15']:.3f}\n{s['median_14_15']:+.3f}\n"
                            f"{100 * s['cov68']:.0f}/{100 * s['cov95']:.0f}%", ha="center",
                            va="center", fontsize=8,
                            color="w" if s["std_14_15"] > 0.22 else "k")
        im = ax.imshow(mat, cmap="viridis_r", vmin=0.05, vmax=0.5)
        ax.set_xticks(range(len(tests)), tests)
        ax.set_yticks(range(len(engines)), engines)
        ax.set(xlabel="tested on", ylabel="trained on",
               title=f"{kind}: std, bias 10^14-15 / coverage")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        bx = axes[1, j]
        for i, e in enumerate(engines):
            for t in tests:
                s = result["scores"].get(f"{e}:{kind}->{t}")
                if s is None or not s["bins"]:
                    continue
                x = [b["lo"] + 0.125 for b in s["bins"]]
                bx.plot(x, [b["median"] for b in s["bins"]], styles[i % 4], marker="o", ms=3,
                        color=colours[t], label=f"{e} -> {t}")
        bx.axhspan(-0.03, 0.03, color="0.85", zorder=0)
        bx.axhline(0, color="k", lw=0.5)
        bx.set(xlabel="true log10 M200c [Msun/h]", ylabel="median p50 - true [dex]",
               title=f"{kind}: bias (colour: tested on; line: trained on)")
        bx.grid(alpha=0.3)
        bx.legend(fontsize=6, ncol=2)
    if result.get("infall"):
        ax = axes[0, -1]
        for name, p in result["infall"].items():
            ax.plot(p["r_over_r200c"], p["mean_vr_kms"], "o-", ms=3,
                    label=f"{name} ({p['n_hosts']} hosts; turnaround "
                    f"{p['turnaround_r200c']:.1f} R200c)")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="r / R200c", ylabel="mean radial peculiar velocity [km/s]",
               title="infall: hosts > 10^14, galaxies beyond R200c")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        axes[1, -1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="ENGINE:MODEL=BUNDLE.h5 (trained on ENGINE)")
    p.add_argument("--test", action="append", required=True,
                   help="ENGINE=OBSERVATIONS.h5 (an independent universe of ENGINE)")
    p.add_argument("--universe", action="append", default=[],
                   help="ENGINE=CATALOG.h5: infall profile of the engine (optional)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    a = p.parse_args(argv)
    models = _pairs(a.model)
    bad = [k for k in models if ":" not in k]
    if bad:
        p.error(f"--model needs ENGINE:MODEL=BUNDLE.h5, got {bad}")
    run(models, _pairs(a.test), a.output, _pairs(a.universe))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
