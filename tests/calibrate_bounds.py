"""Measure the spread over seeds of every stochastic test statistic (not part of the suite).

Every test module may define ``STOCHASTIC = {name: StochasticCheck(...)}`` (see
:mod:`dynmass.testing.bounds`). This script runs each check over seeds ``0 .. N-1`` (N = the
check's ``n_seeds``, at least 10) and each of its broken variants over a few seeds (a variant
that raises counts as caught), then writes, per check,
``tests/bounds/<module>.<name>.json`` (values per seed, mean, sd, range, the declared bound, how
many standard deviations it sits from the mean, and the broken variants' values), the table
``tests/bounds/summary.md`` and the figure ``tests/bounds/bounds.png``.

A bound is flagged ``TIGHT`` when a seed falls outside it or when it sits closer than
``MIN_SIGMAS`` (4) standard deviations to the mean; a broken variant is flagged ``PASSES`` when it
violates no bound (the test could not catch it). The exit status is 1 when anything is flagged.

Usage::

    python tests/calibrate_bounds.py                  # every check, its n_seeds, 2 processes
    python tests/calibrate_bounds.py --only cnn --seeds 12
    python tests/calibrate_bounds.py --figure-only    # redraw from the JSON files
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "bounds"
_MODULES: dict[str, object] = {}


def load_module(path: Path):
    """Import a test file by path (cached per process)."""
    key = str(path)
    if key not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"_dynmass_calib_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _MODULES[key] = mod
    return _MODULES[key]


def discover(pattern: str | None) -> list[tuple[Path, str]]:
    """(test file, check name) of every declared check whose id matches ``pattern``."""
    found = []
    for path in sorted(HERE.glob("test_*.py")):
        if "STOCHASTIC" not in path.read_text():
            continue
        for name in getattr(load_module(path), "STOCHASTIC", {}):
            cid = f"{path.stem}.{name}"
            if pattern is None or any(fnmatch.fnmatch(cid, f"*{p}*") for p in pattern.split(",")):
                found.append((path, name))
    return found


def _run_one(path: str, name: str, variant: str | None, seed: int) -> tuple[dict, float]:
    import torch

    torch.set_num_threads(1)
    check = load_module(Path(path)).STOCHASTIC[name]
    fn = check.run if variant is None else check.broken[variant]
    t0 = time.perf_counter()
    if variant is None:
        stats = fn(seed)
    else:  # a broken variant that raises is caught by the test as well
        try:
            stats = fn(seed)
        except Exception as err:  # noqa: BLE001 - recorded, not hidden
            return {"raised": f"{type(err).__name__}: {err}"[:300]}, time.perf_counter() - t0
    return {k: float(v) for k, v in stats.items()}, time.perf_counter() - t0


def summarise(check, values: list[dict], seeds: list[int], broken: dict[str, list[dict]],
              min_sigmas: float) -> dict:
    """Spread of each bounded statistic, its bound's margin and the broken variants' verdicts."""
    from dynmass.testing.bounds import violations

    stats = {}
    flags = []
    for key, bound in check.bounds.items():
        x = np.array([v[key] for v in values], dtype=float)
        mean, sd = float(np.mean(x)), float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
        margin = bound.margin_sigmas(mean, sd)
        outside = [s for s, xi in zip(seeds, x, strict=True) if not bound.contains(xi)]
        ok = not outside and margin >= min_sigmas
        if not ok:
            flags.append(f"TIGHT {key}: margin {margin:.1f} sd, seeds outside {outside}")
        stats[key] = {"values": x.tolist(), "mean": mean, "sd": sd, "min": float(x.min()),
                      "max": float(x.max()), "bound": [bound.lo, bound.hi],
                      "margin_sd": None if math.isinf(margin) else margin,
                      "seeds_outside": outside, "ok": ok}
    broken_out = {}
    for variant, runs in broken.items():
        caught = ["raised" in r or bool(violations(r, check.bounds)) for r in runs]
        broken_out[variant] = {"values": runs, "caught": caught}
        if not all(caught):
            flags.append(f"PASSES broken variant '{variant}' (caught {sum(caught)}/{len(caught)})")
    return {"statistics": stats, "broken": broken_out, "flags": flags}


def docline(key: str, s: dict) -> str:
    """One line for a test's docstring."""
    lo, hi = s["bound"]
    margin = "inf" if s["margin_sd"] is None else f"{s['margin_sd']:.1f}"
    return (f"{key}: mean {s['mean']:.4g}, sd {s['sd']:.2g}, range [{s['min']:.4g}, "
            f"{s['max']:.4g}]; bound ({'-inf' if lo is None else f'{lo:g}'}, "
            f"{'inf' if hi is None else f'{hi:g}'}) = {margin} sd from the mean")


def write_summary(out: Path) -> None:
    """summary.md and bounds.png from every JSON in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    lines = ["# Measured spread of stochastic test statistics", "",
             "Made by `python tests/calibrate_bounds.py`; values over seeds 0..N-1.", "",
             "| check | statistic | seeds | mean | sd | min | max | bound | margin (sd) | "
             "broken variants caught |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for r in records:
        caught = ", ".join(f"{k} {sum(v['caught'])}/{len(v['caught'])}"
                           for k, v in r["broken"].items()) or "-"
        for key, s in r["statistics"].items():
            lo, hi = s["bound"]
            margin = "inf" if s["margin_sd"] is None else f"{s['margin_sd']:.1f}"
            lines.append(f"| {r['check']} | {key} | {len(s['values'])} | {s['mean']:.4g} | "
                         f"{s['sd']:.2g} | {s['min']:.4g} | {s['max']:.4g} | "
                         f"({'-inf' if lo is None else f'{lo:g}'}, "
                         f"{'inf' if hi is None else f'{hi:g}'}) | {margin} | {caught} |")
            rows.append((f"{r['check']}: {key}", s, r["broken"], key))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.2))
    for i, (_label, s, broken, key) in enumerate(rows):
        sd = s["sd"] if s["sd"] > 0 else 1.0
        z = (np.array(s["values"]) - s["mean"]) / sd
        ax.plot(z, np.full(len(z), i), "o", ms=3, color="C0", alpha=0.7)
        for j, b in enumerate(s["bound"]):
            if b is not None:
                ax.plot([np.clip((b - s["mean"]) / sd, -12, 12)], [i], "|", ms=12,
                        color="k", mew=2, label="bound" if i == j == 0 else None)
        for v in broken.values():
            for run in v["values"]:
                if isinstance(run.get(key), float) and np.isfinite(run[key]):
                    ax.plot([np.clip((run[key] - s["mean"]) / sd, -12, 12)], [i], "x",
                            color="C3", ms=5)
    ax.axvspan(-4, 4, color="0.92", zorder=0)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=6)
    ax.set_xlim(-12.5, 12.5)
    ax.set_xlabel("(value - mean over seeds) / sd over seeds   (grey: within 4 sd; "
                  "x: broken variants, clipped at 12)")
    ax.set_title("Stochastic test statistics: seeds (o), bounds (|), broken variants (x)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "bounds.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE.parent / "src"))
    from dynmass.testing.bounds import MIN_SIGMAS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=None,
                    help="seeds 0..N-1 per check (>= 10; default: the check's n_seeds)")
    ap.add_argument("--broken-seeds", type=int, default=3, help="seeds per broken variant")
    ap.add_argument("--only", help="comma-separated substrings of '<module>.<check>' ids")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--figure-only", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.figure_only:
        write_summary(args.out)
        return 0
    if args.seeds is not None and args.seeds < 10:
        ap.error("--seeds must be at least 10")
    todo = discover(args.only)
    if not todo:
        print("no check matches", args.only)
        return 1
    n_flags = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for path, name in todo:
            cid = f"{path.stem}.{name}"
            check = load_module(path).STOCHASTIC[name]
            seeds = list(range(args.seeds or check.n_seeds))
            t0 = time.perf_counter()
            runs = list(pool.map(_run_one, [str(path)] * len(seeds), [name] * len(seeds),
                                 [None] * len(seeds), seeds))
            broken = {}
            for variant in check.broken:
                bs = list(range(args.broken_seeds))
                broken[variant] = [r for r, _ in pool.map(
                    _run_one, [str(path)] * len(bs), [name] * len(bs), [variant] * len(bs), bs)]
            res = summarise(check, [r for r, _ in runs], seeds, broken, MIN_SIGMAS)
            record = {"check": cid, "seeds": seeds, "test_seed": check.seed,
                      "seconds_per_seed": [t for _, t in runs],
                      "wall_seconds": time.perf_counter() - t0,
                      "all_statistics": [r for r, _ in runs], **res}
            tmp = args.out / f".{cid}.json.tmp"
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, args.out / f"{cid}.json")
            print(f"== {cid} ({record['wall_seconds']:.0f} s)")
            for key, s in res["statistics"].items():
                print("   " + docline(key, s))
            for variant, v in res["broken"].items():
                print(f"   broken '{variant}': caught {sum(v['caught'])}/{len(v['caught'])}")
            for flag in res["flags"]:
                print("   !! " + flag)
            n_flags += len(res["flags"])
    write_summary(args.out)
    print(f"{len(todo)} checks, {n_flags} flags; see {args.out / 'summary.md'}")
    return 1 if n_flags else 0


if __name__ == "__main__":
    raise SystemExit(main())
