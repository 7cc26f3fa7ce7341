"""One-command reproduction of Ho et al. 2019's comparison on the embedded mock universe.

``reproduce`` runs universe -> observe -> cross-validated training of msigma, sdm, cnn1d and
cnn2d on the same folds -> evaluate (metrics, figures, sampling-rate test) and ends with the
comparison table next to the paper's numbers. Every stage writes its file atomically and is
skipped when its output already exists and is complete, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynmass._io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

#: Ho et al. 2019 (ApJ 887, 25), results on MDPL2 mocks for 10^14 <= M200c < 10^15 Msun/h:
#: median eps, 16-84 width, standard deviation (dex), and the 16-84 width of the prediction
#: shift when galaxies are dropped (sampling rates 0.6-0.8): the paper's table and its section 5.3.
PAPER: dict[str, dict[str, float]] = {
    "msigma": {"median": -0.085, "width_16_84": 0.691, "std": 0.372, "sampling_width": 0.269},
    "sdm": {"median": -0.060, "width_16_84": 0.273, "std": 0.151, "sampling_width": 0.174},
    "cnn1d": {"median": 0.011, "width_16_84": 0.332, "std": 0.172, "sampling_width": 0.113},
    "cnn2d": {"median": -0.024, "width_16_84": 0.243, "std": 0.131, "sampling_width": 0.082},
}


@dataclass
class ReproduceSettings:
    """Settings of a reproduction run.

    Parameters
    ----------
    quick : bool
        Smaller universe, fewer folds and lines of sight: the ``make demo`` form.
    seed : int
        Master seed; every stage derives its seed from it.
    box_size : float or None
        Box side, comoving Mpc/h (None: the universe stage's default).
    folds : int
        Number of cross-validation folds (split by halo).
    models : tuple of str
        Models to train, in order.
    device : str
        Torch device for the CNNs ('auto', 'cpu', 'cuda', 'mps').
    observe : dict
        Extra settings of the observe stage.
    model_settings : dict
        Extra settings per model name.
    sampling_rates : tuple of float
        Rates of the sampling-rate test.
    sampling_max_views : int
        Test views used in the sampling-rate test (seeded subset).
    """

    quick: bool = False
    seed: int = 0
    box_size: float | None = None
    folds: int = 10
    models: tuple[str, ...] = ("msigma", "sdm", "cnn1d", "cnn2d")
    device: str = "auto"
    observe: dict[str, Any] = field(default_factory=dict)
    model_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampling_rates: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    sampling_max_views: int = 3000

    @classmethod
    def preset(cls, quick: bool, **overrides: Any) -> ReproduceSettings:
        """The quick (demo) or full preset, with ``overrides`` applied.

        Parameters
        ----------
        quick : bool
            True: the demo preset (5 folds, flattened mass function with 40 views per mass
            bin, SDM on 400 training views, 500 sampling-test views); False: the full preset
            (10 folds, 700 comoving Mpc/h box, 126 views per mass bin, 2000 sampling-test
            views).
        **overrides
            Any field of :class:`ReproduceSettings`; None values are ignored (keep the
            preset's).

        Returns
        -------
        ReproduceSettings
            The settings.
        """
        if quick:
            base = cls(quick=True, folds=5, sampling_max_views=500,
                       observe={"flat_mass_function": True, "flat_target": 40},
                       model_settings={"sdm": {"max_train_views": 400}})
        else:
            base = cls(quick=False, folds=10, box_size=700.0, sampling_max_views=2000,
                       observe={"flat_mass_function": True, "flat_target": 126})
        for key, val in overrides.items():
            if val is not None:
                setattr(base, key, val)
        return base


def reproduce(out_dir: str | Path, settings: ReproduceSettings) -> dict[str, Any]:
    """Run the whole method end to end into ``out_dir``; return the comparison.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Folder for ``universe.h5``, ``observations.h5``, ``runs/<model>/``, ``report/``.
    settings : ReproduceSettings
        What to run.

    Returns
    -------
    dict
        ``{"metrics": ..., "comparison": ..., "timing": ...}``.
    """
    from dynmass.evaluate import evaluate_runs
    from dynmass.observe import observe_file
    from dynmass.train import cross_validate
    from dynmass.universe import write_universe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "reproduce_settings.json", asdict(settings))
    timing: dict[str, float] = {}

    universe = out / "universe.h5"
    t0 = time.perf_counter()
    if not universe.exists():
        kw = {} if settings.box_size is None else {"box_size": settings.box_size}
        write_universe(universe, seed=settings.seed, **kw)
    timing["universe_s"] = time.perf_counter() - t0

    observations = out / "observations.h5"
    t0 = time.perf_counter()
    if not observations.exists():
        observe_file(universe, observations, seed=settings.seed + 1, **settings.observe)
    timing["observe_s"] = time.perf_counter() - t0

    run_dirs = []
    for name in settings.models:
        t0 = time.perf_counter()
        run_dir = out / "runs" / name
        cross_validate(observations, name, run_dir, folds=settings.folds, seed=settings.seed + 2,
                       model_settings=settings.model_settings.get(name), device=settings.device,
                       resume=True, progress=True)
        timing[f"train_{name}_s"] = time.perf_counter() - t0
        run_dirs.append(run_dir)

    t0 = time.perf_counter()
    metrics = evaluate_runs(run_dirs, out / "report", observations=observations,
                            sampling_rates=settings.sampling_rates,
                            max_views=settings.sampling_max_views, seed=settings.seed + 3)
    timing["evaluate_s"] = time.perf_counter() - t0
    comparison = compare_with_paper(metrics)
    table = format_comparison(comparison) + "\n\n" + format_claims(check_claims(comparison))
    atomic_write_text(out / "report" / "comparison.md", table + "\n")
    atomic_write_json(out / "report" / "comparison.json",
                      {"comparison": comparison, "claims": check_claims(comparison),
                       "timing": timing, "settings": asdict(settings)})
    print(table)
    return {"metrics": metrics, "comparison": comparison, "timing": timing}


def compare_with_paper(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pair our numbers with the paper's for every model (10^14-10^15 Msun/h range)."""
    rows: dict[str, dict[str, Any]] = {}
    for name, m in metrics.get("models", metrics).items():
        if not isinstance(m, dict):
            continue
        ours = m.get("paper_range_axes", m.get("paper_range", {}))
        shift = m.get("sampling", {})
        rows[name] = {
            "ours": {
                "median": ours.get("bias_median"),
                "width_16_84": ours.get("width_16_84"),
                "std": ours.get("std"),
                "sampling_width": shift.get("width_16_84_rate_0.6_0.8"),
                "sampling_median_claim": shift.get("median_shift_claim"),
                "train_s": m.get("train_seconds"),
                "predict_s": m.get("predict_seconds"),
            },
            "paper": PAPER.get(m.get("model", name), {}),
        }
    return rows


def format_comparison(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown table: our numbers next to the paper's."""

    def f(x: Any, signed: bool = False) -> str:
        if x is None:
            return "—"
        if isinstance(x, float):
            return f"{x:+.3f}" if signed else f"{x:.3f}"
        return str(x)

    lines = [
        "| model | median eps (ours / paper) | 16-84 width (ours / paper) | std dex (ours / paper)"
        " | sampling shift width r=0.6-0.8 (ours / paper) | train s | predict s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        o, p = r["ours"], r["paper"]
        lines.append(
            f"| {name} | {f(o['median'], True)} / {f(p.get('median'), True)} | {f(o['width_16_84'])} / "
            f"{f(p.get('width_16_84'))} | {f(o['std'])} / {f(p.get('std'))} | "
            f"{f(o['sampling_width'])} / {f(p.get('sampling_width'))} | "
            f"{f(o['train_s'])} | {f(o['predict_s'])} |"
        )
    return "\n".join(lines)


def summary_json(result: dict[str, Any]) -> str:
    """Compact JSON of a reproduction's comparison and timing."""
    return json.dumps({"comparison": result["comparison"], "timing": result["timing"]}, indent=2,
                      default=str)


def _total_time(row: dict[str, Any]) -> float | None:
    o = row["ours"]
    if o.get("train_s") is None or o.get("predict_s") is None:
        return None
    return float(o["train_s"]) + float(o["predict_s"])


def check_claims(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's four claims, and ours on the median shift, checked on our numbers.

    1. CNN2D scatter (std of eps, 10^14-10^15 Msun/h, orthogonal views) is at most half of
       M-sigma's; 2. CNN2D's scatter is below SDM's; 3. each CNN trains and predicts at least
       10x faster than SDM on the same data; 4. CNN2D's predictions move less than M-sigma's
       when galaxies are dropped (16-84 width of the shift, rates 0.6-0.8); 5. for every model
       whose sampling-rate test ran: its median prediction at fixed true mass does not move
       with sampling (|median shift| <= 0.03 dex in every judged 0.2-dex bin of true mass in
       10^14-10^15 Msun/h at every tested rate; :func:`dynmass.sampling.median_shift_claim`,
       read from ``ours["sampling_median_claim"]``).

    Returns
    -------
    list of dict
        ``{"claim", "value", "holds"}`` for every claim whose models were run; ``holds`` is
        None for a median-shift claim with no judged bin.
    """
    out: list[dict[str, Any]] = []

    def std(name: str) -> float | None:
        return rows.get(name, {}).get("ours", {}).get("std")

    if std("cnn2d") is not None and std("msigma") is not None:
        r = std("cnn2d") / std("msigma")
        out.append({"claim": "cnn2d scatter <= 0.5 x msigma scatter",
                    "value": f"ratio {r:.3f}", "holds": bool(r <= 0.5)})
    if std("cnn2d") is not None and std("sdm") is not None:
        out.append({"claim": "cnn2d scatter < sdm scatter",
                    "value": f"{std('cnn2d'):.3f} vs {std('sdm'):.3f} dex",
                    "holds": bool(std("cnn2d") < std("sdm"))})
    t_sdm = _total_time(rows["sdm"]) if "sdm" in rows else None
    for cnn in ("cnn1d", "cnn2d"):
        t = _total_time(rows[cnn]) if cnn in rows else None
        if t_sdm is not None and t:
            out.append({"claim": f"{cnn} train+predict >= 10x faster than sdm",
                        "value": f"sdm / {cnn} time = {t_sdm / t:.1f}",
                        "holds": bool(t_sdm / t >= 10)})
    w = {n: rows.get(n, {}).get("ours", {}).get("sampling_width") for n in ("cnn2d", "msigma")}
    if w["cnn2d"] is not None and w["msigma"] is not None:
        out.append({"claim": "cnn2d moves less than msigma when galaxies are dropped",
                    "value": f"{w['cnn2d']:.3f} vs {w['msigma']:.3f} dex",
                    "holds": bool(w["cnn2d"] < w["msigma"])})
    for row in rows.values():
        c = row.get("ours", {}).get("sampling_median_claim")
        if c:
            out.append({"claim": c["claim"], "value": c["value"], "holds": c["holds"]})
    return out


def format_claims(claims: list[dict[str, Any]]) -> str:
    """Markdown list of :func:`check_claims` (HOLDS, FAILS, or NOT JUDGED)."""
    from dynmass.sampling import claim_verdict

    return "\n".join(f"- {claim_verdict(c['holds'])}: {c['claim']} ({c['value']})"
                     for c in claims)
