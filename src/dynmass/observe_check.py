"""Validation report of an observations file: interloper fraction against R/R200c and mass."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_path, atomic_write_json
from dynmass.observations import ragged_std

__all__ = ["R_OVER_R200_EDGES", "check_observations_file"]

#: Bin edges of R / R200c for the interloper-fraction profile (last bin open).
R_OVER_R200_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, np.inf)


def _binned_fraction(x: np.ndarray, interloper: np.ndarray,
                     edges: np.ndarray) -> list[dict[str, Any]]:
    idx = np.digitize(x, edges) - 1
    rows = []
    for b in range(len(edges) - 1):
        sel = idx == b
        n = int(sel.sum())
        f = float(interloper[sel].mean()) if n else float("nan")
        err = float(np.sqrt(f * (1 - f) / n)) if n else float("nan")
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n_gal": n,
                     "interloper_fraction": f, "error": err})
    return rows


def check_observations_file(path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Validation report of an observations file: interloper fraction vs R/R200c and mass.

    Writes ``interlopers.png`` (interloper fraction against R/R200c and against log10 M200c)
    and ``observations_check.json`` into ``out_dir``.

    Checks (all must hold for ``passed``): the file reads and validates (R within the
    aperture, ``|v| <= vcut``); ``n_gal``, ``n_members_true`` and ``sigma_v`` agree with the
    galaxy arrays; every view has at least ``min_members`` galaxies; interlopers are not more
    common inside 0.5 R200c than beyond R200c (members concentrate to the centre).

    Parameters
    ----------
    path : str or os.PathLike
        Observations file.
    out_dir : str or os.PathLike
        Folder for the figure and the JSON summary.

    Returns
    -------
    dict
        ``passed`` (bool), ``checks`` (name -> bool), ``summary`` (numbers), ``figure`` (path).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dynmass.observations import read_observations

    obs = read_observations(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    interloper = ~obs.is_member
    view = obs.view_of_galaxy
    r200 = obs.clusters["r200c"].astype(float)
    x_r = obs.R / r200[view] if obs.n_views else np.zeros(0)
    logm = obs.log10_m200c()
    edges_r = np.asarray(R_OVER_R200_EDGES)
    prof_r = _binned_fraction(x_r, interloper, edges_r)
    if obs.n_views and np.all(np.isfinite(logm)):
        lo, hi = np.floor(logm.min() * 5) / 5, np.ceil(logm.max() * 5 + 1e-9) / 5
        edges_m = np.arange(lo, hi + 0.1, 0.2)
    else:
        edges_m = np.array([0.0, 20.0])
    prof_m = _binned_fraction(logm[view] if obs.n_views else np.zeros(0), interloper, edges_m)
    n_mem = np.bincount(view, weights=obs.is_member, minlength=obs.n_views)
    min_members = int(obs.settings.get("min_members", 1))
    inner = [b for b in prof_r if b["hi"] <= 0.5 and b["n_gal"]]
    outer = [b for b in prof_r if b["lo"] >= 1.0 and b["n_gal"]]

    def frac(bins: list[dict[str, Any]]) -> float:
        n = sum(b["n_gal"] for b in bins)
        return sum(b["interloper_fraction"] * b["n_gal"] for b in bins) / n if n else float("nan")

    f_in, f_out = frac(inner), frac(outer)
    checks = {
        "n_gal_matches_offsets": bool(np.array_equal(obs.clusters["n_gal"], obs.n_gal)),
        "n_members_true_matches": bool(np.array_equal(obs.clusters["n_members_true"], n_mem)),
        "sigma_v_matches": bool(np.allclose(obs.clusters["sigma_v"],
                                            ragged_std(obs.v, obs.offsets), equal_nan=True)),
        "min_members_respected": bool(np.all(obs.n_gal >= min_members)),
        "interlopers_rise_with_radius": bool(not (f_in > f_out)),
    }
    summary = {
        "file": str(path), "n_views": obs.n_views, "n_galaxies": int(len(obs.R)),
        "aperture": obs.aperture, "vcut": obs.vcut,
        "interloper_fraction": float(interloper.mean()) if len(obs.R) else float("nan"),
        "interloper_fraction_inside_0.5R200c": f_in,
        "interloper_fraction_beyond_R200c": f_out,
        "median_n_gal": float(np.median(obs.n_gal)) if obs.n_views else float("nan"),
        "n_views_dropped": obs.settings.get("n_views_dropped"),
        "vs_R_over_R200c": prof_r, "vs_log10_m200c": prof_m,
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, prof, label in ((axes[0], prof_r, r"$R / R_{200c}$"),
                            (axes[1], prof_m, r"$\log_{10} M_{200c}$ [$M_\odot/h$]")):
        lo = np.array([b["lo"] for b in prof])
        hi = np.array([b["hi"] for b in prof])
        hi = np.where(np.isfinite(hi), hi, lo + (lo[-1] - lo[-2] if len(lo) > 1 else 1.0))
        f = np.array([b["interloper_fraction"] for b in prof])
        e = np.array([b["error"] for b in prof])
        ax.errorbar(0.5 * (lo + hi), f, yerr=e, xerr=0.5 * (hi - lo), fmt="o", ms=4)
        ax.set_xlabel(label)
        ax.set_ylabel("interloper fraction")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].axvline(1.0, color="0.5", ls=":")
    fig.suptitle(f"{Path(path).name}: aperture {obs.aperture} Mpc/h, vcut {obs.vcut} km/s, "
                 f"{obs.n_views} views; overall {summary['interloper_fraction']:.3f}")
    fig.tight_layout()
    fig_path = out_dir / "interlopers.png"
    with atomic_path(fig_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    result = {"passed": all(checks.values()), "checks": checks, "summary": summary,
              "figure": str(fig_path)}
    atomic_write_json(out_dir / "observations_check.json", result)
    return result
