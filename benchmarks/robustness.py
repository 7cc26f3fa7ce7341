"""How masses hold on other skies: bias, scatter and interval coverage of bundled models on
independent universes seen through other surveys.

Conditions (each an ``observe`` of an independent universe, views flat in log M, hosts from
M200c = 1e13 Msun/h, views with >= 10 galaxies):

* ``r=<rate>``: every galaxy targeted with a fixed probability (1, 0.5, 0.25, 0.1, 0.05);
* ``centre=members r=<rate>``: the cylinder centred on the galaxies (the algorithm of
  ``dynmass predict``) instead of the true halo;
* ``occupation=<model> r=<rate>``: the same halos populated by another occupation model
  (``dynmass universe --occupation``), when such a universe is given;
* ``z=<z> r=<rate>`` (rates 1 and 0.25): an independent universe built at another snapshot
  redshift (``dynmass universe --redshift``), given with ``--z-universe Z=PATH``, seen in the
  self-similar frame of ``dynmass predict`` (comoving aperture x ``aperture_scale(z, z_train)``,
  radii divided by it), and ``z=<z> r=1 fixed`` through the training comoving aperture. Each
  view is predicted as ``dynmass predict --allow-extrapolation`` predicts a real cluster at z: the
  bundle's percentiles (``Bundle.predict`` does not check the redshift of the views) plus the
  self-similar term ``redshift_correction_dex(z, z_train, cosmo)`` of :mod:`dynmass.redshift`
  added to every percentile (0 at the training redshift, so the other conditions are
  unchanged); the scores without the term are kept as ``uncorrected``
  (``benchmarks/robustness_z.py``).

For every model and condition, over views with true log10 M200c in [14, 15] [Msun/h]: the
median of ``p50 - true`` (dex) overall and in the worst 0.2-dex bin of true mass (bins with
>= 30 views), the scatter (std and 16-84 half width, dex), and the fraction of views whose
68% and 95% intervals contain the true mass, overall and the worst bin's distance from
nominal. Writes ``robustness.json``, ``robustness.md`` and ``robustness.png`` into ``-o``; with
redshift conditions also ``robustness_z.md`` and ``robustness_z.png`` (bias and coverage against
redshift), and the JSON gains per-condition ``physics`` (richness, interlopers, R200c, sigma_v at
fixed mass) and per-universe ``universe_physics``.

A survey-aware posterior (``--posterior NAME=POSTERIOR.h5``, made by ``dynmass posterior
--survey-inputs``, e.g. ``make survey-posterior``) is scored as model ``NAME`` on every
condition: the flow's percentiles given the ensemble mean of the bundle it was trained on
(matched by sha256), the number of galaxies and the survey a user of that condition declares
(:func:`declared_survey`: the targeting rate, completeness and velocity error of the
condition, the universe's stellar-mass limit and the snapshot redshift). On the universe of
another occupation model the declared limit is its universe's nominal ``mstar_min`` (10^9.5
Msun), which does not describe its magnitude-selected galaxies: that row shows what a wrong
occupation does to a mass that reads richness.

Usage::

    python benchmarks/robustness.py --model new=build/new_default_model.h5 \\
        --model old=src/dynmass/data/default_model.h5 \\
        --universe build/default-model/universe_103.h5 \\
        [--alt-universe zheng07=build/robustness/universe_103_zheng07.h5] \\
        [--z-universe 0.3=build/robustness_z/universe_z0.3_s202.h5 ...] -o docs/robustness
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import robustness_z as rz  # noqa: E402

RATES = (1.0, 0.5, 0.25, 0.1, 0.05)
EDGES = np.round(np.arange(14.0, 15.001, 0.2), 3)
MIN_BIN_VIEWS = 30


def conditions(universe: Path | None, alt: dict[str, Path],
               z_universes: dict[str, Path] | None = None) -> list[dict]:
    """Every (label, universe, setup fields) to observe."""
    out = []
    if universe is not None:
        out += [{"label": f"r={r:g}", "universe": universe, "sampling_rate": r,
                 "center": "true"} for r in RATES]
        out += [{"label": f"centre=members r={r:g}", "universe": universe, "sampling_rate": r,
                 "center": "members"} for r in (1.0, 0.25)]
    for name, path in alt.items():
        out += [{"label": f"occupation={name} r={r:g}", "universe": path, "sampling_rate": r,
                 "center": "true"} for r in (1.0, 0.25)]
    return out + rz.z_conditions(z_universes or {})


def observed(cond: dict, work: Path, seed: int, z_train: float = 0.117,
             aperture: float = 1.6):
    """Observations of one condition (cached in ``work``), in the frame a model trained at
    ``z_train`` with ``aperture`` (comoving Mpc/h) sees them (:mod:`robustness_z`)."""
    from dynmass.observations import read_observations
    from dynmass.observe import observe_file
    from dynmass.observing import ObservingSetup

    name = cond.get("cache", cond["label"]).replace(" ", "_").replace("=", "-")
    path = work / f"{Path(cond['universe']).stem}_{name}.h5"
    if not path.exists():
        setup = ObservingSetup(sampling_rate=cond["sampling_rate"], center=cond["center"],
                               aperture=rz.frame_aperture(cond, z_train, aperture))
        observe_file(cond["universe"], path, setup=setup, flat_mass_function=True,
                     min_mass=1e13, seed=seed)
    return rz.in_frame(read_observations(path), cond, z_train, aperture)


def declared_survey(obs, universe: Path, names) -> dict:
    """The survey a user of this condition declares: each view's own survey (fixed rate,
    completeness, velocity error, redshift) and the universe's stellar-mass limit."""
    import h5py

    from dynmass.survey_inputs import survey_of_views

    with h5py.File(universe, "r") as fh:
        mstar_min = float(json.loads(fh.attrs["settings"])["mstar_min"])
    return survey_of_views(obs, names, defaults={"selection_limit": mstar_min,
                                                 "completeness_edge": 1.0,
                                                 "velocity_error": 0.0})


def scores(q: np.ndarray, true: np.ndarray) -> dict:
    """Bias, scatter and coverage of percentiles ``q`` (n, 5) against ``true``."""
    d = q[:, 2] - true
    c68 = (q[:, 1] <= true) & (true <= q[:, 3])
    c95 = (q[:, 0] <= true) & (true <= q[:, 4])
    b = np.digitize(true, EDGES) - 1
    bins = []
    for i in range(len(EDGES) - 1):
        s = b == i
        if s.sum() >= MIN_BIN_VIEWS:
            bins.append({"lo": float(EDGES[i]), "n": int(s.sum()),
                         "median": float(np.median(d[s])), "cov68": float(c68[s].mean()),
                         "cov95": float(c95[s].mean())})
    worst = max(bins, key=lambda x: abs(x["median"])) if bins else None
    return {
        "n": int(len(true)), "median": float(np.median(d)) if len(d) else float("nan"),
        "std": float(np.std(d)) if len(d) else float("nan"),
        "half_width_16_84": float(np.diff(np.percentile(d, [16, 84]))[0] / 2) if len(d)
        else float("nan"),
        "cov68": float(c68.mean()) if len(d) else float("nan"),
        "cov95": float(c95.mean()) if len(d) else float("nan"),
        "worst_bin_median": worst["median"] if worst else None,
        "worst_bin_lo": worst["lo"] if worst else None,
        "worst_cov68_dev": max((abs(x["cov68"] - 0.68) for x in bins), default=None),
        "worst_cov95_dev": max((abs(x["cov95"] - 0.95) for x in bins), default=None),
        "bins": bins,
    }


def _posteriors(paths: dict[str, Path], models: dict[str, Path]) -> dict[str, tuple]:
    """``{name: (posterior, bundle name)}``, each posterior matched to its bundle by sha256."""
    from dynmass._io import file_sha256
    from dynmass.posterior import load_posterior

    sha = {k: file_sha256(v) for k, v in models.items()}
    out = {}
    for name, path in paths.items():
        post = load_posterior(path)
        owner = [k for k, v in sha.items() if v == post.meta.get("bundle_sha256")]
        if not owner:
            raise SystemExit(f"{path}: trained on none of the --model bundles")
        out[name] = (post, owner[0])
    return out


def run(models: dict[str, Path], universe: Path | None, alt: dict[str, Path], out: Path,
        seed: int = 7, work: Path | None = None,
        z_universes: dict[str, Path] | None = None,
        posteriors: dict[str, Path] | None = None) -> dict:
    """Score every model (and survey-aware posterior) on every condition; write the JSON,
    tables and figures (views are cached in ``work``, default ``out/views``)."""
    from dynmass.bundle import load_bundle
    from dynmass.sampling_claims import poisson_floor_dex

    out.mkdir(parents=True, exist_ok=True)
    work = out / "views" if work is None else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    bundles = {k: load_bundle(v) for k, v in models.items()}
    posts = _posteriors(dict(posteriors or {}), models)
    z_universes = dict(z_universes or {})
    result: dict = {"models": {k: str(v) for k, v in models.items()},
                    "universe": None if universe is None else str(universe),
                    "alt_universes": {k: str(v) for k, v in alt.items()},
                    "z_universes": {k: str(v) for k, v in z_universes.items()},
                    "posteriors": {k: str(v) for k, v in (posteriors or {}).items()},
                    "z_train": next(iter(bundles.values())).obs_settings.get("redshift"),
                    "conditions": {}}
    for cond in conditions(universe, alt, z_universes):
        t0 = time.perf_counter()
        obs = observed(cond, work, seed, z_train=float(result["z_train"]),
                       aperture=float(next(iter(bundles.values())).obs_settings["aperture"]))
        t_obs = time.perf_counter() - t0
        true = obs.log10_m200c()
        keep = (obs.n_gal >= 10) & (true >= 14.0) & (true < 15.0)
        row = {"n_views": int(obs.n_views), "median_n_gal": float(np.median(obs.n_gal[keep])),
               "poisson_floor_dex": float(poisson_floor_dex(np.median(obs.n_gal[keep]))),
               "redshift": obs.settings.get("redshift"), "physics": rz.view_physics(obs, keep)}
        mus = {}
        for name, bundle in bundles.items():
            q, raw, info = rz.predict_as_user(bundle, obs)
            mus[name] = {**info, "q": q}
            row[name] = scores(q[keep], true[keep])
            row[name]["uncorrected"] = rz.uncorrected_scores(scores(raw[keep], true[keep]))
            row["correction_dex"], row["extrapolated"] = info["correction_dex"], info["extrapolated"]
        for name, (post, owner) in posts.items():
            sv = declared_survey(obs, Path(cond["universe"]), post.settings.survey_inputs)
            info = mus[owner]
            q = post.quantiles(info["mu"][keep], obs.n_gal[keep], rz.PCTS_VALUES,
                               survey={k: v[keep] for k, v in sv.items()})
            row[name] = scores(q + info["correction_dex"], true[keep])
            row[name]["declared"] = {k: float(np.median(v[keep])) for k, v in sv.items()}
            # survey_tension of dynamics predict: survey-aware p50 outside the bundle's 95%
            qb = info["q"][keep]
            p50 = q[:, 2] + info["correction_dex"]
            row[name]["tension_fraction"] = float(np.mean((p50 < qb[:, 0]) | (p50 > qb[:, 4])))
            row[name]["median_minus_dynamics"] = float(np.median(p50 - qb[:, 2]))
        row["seconds_observe"], row["seconds"] = t_obs, time.perf_counter() - t0
        result["conditions"][cond["label"]] = row
        print(cond["label"], {k: round(row[k]["median"], 3) for k in [*bundles, *posts]},
              f"{row['seconds']:.0f} s", file=sys.stderr)
    names = list(bundles) + list(posts)
    if z_universes:
        paths = ([universe] if universe is not None else []) + list(z_universes.values())
        result["universe_physics"] = {str(p): rz.universe_physics(p) for p in paths}
        (out / "robustness_z.md").write_text(rz.z_table(result, names))
        rz.z_figure(result, names, out / "robustness_z.png")
    (out / "robustness.json").write_text(json.dumps(result, indent=1))
    (out / "robustness.md").write_text(table(result, names))
    figure(result, names, out / "robustness.png")
    return result


def table(result: dict, names: list[str]) -> str:
    """Markdown table: rows models, columns conditions; cells bias / scatter / coverage."""
    conds = list(result["conditions"])
    lines = ["| model | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
    for name in names:
        cells = []
        for c in conds:
            s = result["conditions"][c][name]
            tension = (f"; tension {100 * s['tension_fraction']:.0f}%"
                       if "tension_fraction" in s else "")
            cells.append(f"{s['median']:+.3f} (worst bin {rz._f(s['worst_bin_median'])}); "
                         f"std {s['std']:.3f}; 68/95% {100 * s['cov68']:.0f}/"
                         f"{100 * s['cov95']:.0f}{tension}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    n = [f"{result['conditions'][c]['median_n_gal']:.0f}" for c in conds]
    lines.append("| median galaxies per view | " + " | ".join(n) + " |")
    f = [f"{result['conditions'][c].get('poisson_floor_dex', float('nan')):.3f}" for c in conds]
    lines.append("| Poisson floor (dex) at that N | " + " | ".join(f) + " |")
    head = ("Median of p50 - true log10 M200c (dex) over views with 10^14-10^15 Msun/h and >= 10 "
            "galaxies (worst 0.2-dex bin of true mass in brackets), scatter (std, dex) and "
            "68%/95% interval coverage (%), by observing condition. Poisson floor: the "
            "scatter of a mass from a velocity dispersion of N galaxies, 3 / (ln 10 sqrt(2 (N - "
            "1))) dex at the median N (a dynamics-only estimate cannot beat it; one that reads "
            "richness can). Survey-aware rows (a flow posterior given the declared survey): "
            "tension = fraction of views whose survey-aware median lies outside the "
            "dynamics-only 95% interval (`dynmass predict` flags them survey_tension).\n\n")
    return head + "\n".join(lines) + "\n"


def figure(result: dict, names: list[str], path: Path) -> None:
    """Median shift, coverage and scatter against sampling rate (one line per model, the
    Poisson floor beside the scatter), and the median under other centres and occupations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    rates = [r for r in RATES if f"r={r:g}" in result["conditions"]]
    for name in names:
        s = [result["conditions"][f"r={r:g}"][name] for r in rates]
        axes[0].plot(rates, [x["median"] for x in s], "o-", label=name)
        axes[0].plot(rates, [x["worst_bin_median"] for x in s], "o:", mfc="none",
                     color=axes[0].lines[-1].get_color())
        axes[1].plot(rates, [x["cov68"] for x in s], "o-", label=f"{name} 68%")
        axes[1].plot(rates, [x["cov95"] for x in s], "s--", label=f"{name} 95%",
                     color=axes[1].lines[-1].get_color())
        axes[3].plot(rates, [x["std"] for x in s], "o-", label=name)
    if rates:
        axes[3].plot(rates, [result["conditions"][f"r={r:g}"].get("poisson_floor_dex", np.nan)
                             for r in rates], "k--", label="Poisson floor at the median N")
    axes[0].axhspan(-0.03, 0.03, color="0.85", zorder=0)
    axes[0].set(xscale="log" if rates else "linear", xlabel="sampling rate", ylabel="median p50 - true [dex]",
                title="bias at fixed true mass (dotted: worst 0.2-dex bin)")
    axes[1].axhline(0.68, color="0.5", ls=":")
    axes[1].axhline(0.95, color="0.5", ls=":")
    axes[1].set(xscale="log" if rates else "linear", xlabel="sampling rate", ylabel="coverage", title="intervals")
    other = [c for c in result["conditions"] if not c.startswith(("r=", "z="))]
    x = np.arange(len(other))
    for k, name in enumerate(names):
        axes[2].bar(x + 0.8 * k / len(names), [result["conditions"][c][name]["median"]
                                               for c in other], 0.8 / len(names), label=name)
    axes[2].axhspan(-0.03, 0.03, color="0.85", zorder=0)
    axes[2].set_xticks(x + 0.4 - 0.4 / len(names), other, rotation=20, ha="right", fontsize=8)
    axes[2].set(ylabel="median p50 - true [dex]", title="other centres and occupations")
    axes[3].set(xscale="log" if rates else "linear", xlabel="sampling rate",
                ylabel="std of p50 - true [dex]", title="scatter vs the Poisson floor")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pairs(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, _, path = item.partition("=")
        if not path:
            name, path = Path(item).stem, item
        out[name] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="NAME=BUNDLE.h5")
    p.add_argument("--universe", type=Path, default=None,
                   help="independent universe file (at the training redshift)")
    p.add_argument("--alt-universe", action="append", default=[],
                   help="NAME=UNIVERSE.h5: the same halos, another occupation model")
    p.add_argument("--z-universe", action="append", default=[],
                   help="Z=UNIVERSE.h5: an independent universe at snapshot redshift Z")
    p.add_argument("--posterior", action="append", default=[],
                   help="NAME=POSTERIOR.h5: a survey-aware posterior of one of the --model "
                        "bundles, scored with the survey each condition declares")
    p.add_argument("--seed", type=int, default=7, help="observe seed (default 7)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the observed views (default OUTPUT/views)")
    a = p.parse_args(argv)
    if a.universe is None and not a.z_universe:
        p.error("give --universe, --z-universe or both")
    run(_pairs(a.model), a.universe, _pairs(a.alt_universe), a.output, a.seed, a.work,
        _pairs(a.z_universe), _pairs(a.posterior))
    return 0


if __name__ == "__main__":
    sys.exit(main())
