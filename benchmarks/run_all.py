"""Run every benchmark in ``benchmarks/`` and write ``benchmarks/results.json`` and a figure.

Each ``benchmarks/bench_<stage>.py`` exposes ``run(quick: bool = False) -> dict`` of measured
numbers. Every benchmark runs in its own Python process so that its peak resident memory is its
own; ratios between methods are computed from numbers measured in this same run.

Usage::

    python benchmarks/run_all.py [--quick] [--only observe,features] [-o benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("universe", "observe", "features", "train", "sdm", "predict")

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {here!r})
import importlib
mod = importlib.import_module({mod!r})
t0 = time.perf_counter()
res = mod.run(quick={quick!r})
res = dict(res)
res["wall_s"] = time.perf_counter() - t0
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("__RESULT__" + json.dumps(res))
"""


def machine() -> dict:
    """Description of the machine the benchmarks ran on."""
    import torch

    info = {
        "node": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def run_one(name: str, quick: bool) -> dict:
    """Run ``bench_<name>.run`` in a child process; return its numbers (or the error)."""
    code = _CHILD.format(here=str(HERE), mod=f"bench_{name}", quick=quick)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    for line in proc.stdout.splitlines():
        if line.startswith("__RESULT__"):
            return json.loads(line[len("__RESULT__"):])
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write results and figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke run)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    ap.add_argument("-o", "--output", type=Path, default=HERE / "results.json")
    args = ap.parse_args(argv)
    names = [n for n in ORDER if (HERE / f"bench_{n}.py").exists()]
    names += sorted(p.stem[6:] for p in HERE.glob("bench_*.py") if p.stem[6:] not in names)
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    results: dict = {"machine": machine(), "quick": args.quick,
                     "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "benchmarks": {}}
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        results["benchmarks"][name] = res = run_one(name, args.quick)
        print(json.dumps(res, indent=1)[:2000], flush=True)
    results["ratios"] = ratios(results["benchmarks"])
    sys.path.insert(0, str(HERE))
    from figures import make_figure

    fig_path = args.output.with_suffix(".png")
    make_figure(results, fig_path)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, args.output)
    print(f"wrote {args.output} and {fig_path}")
    return 0 if not any("error" in r for r in results["benchmarks"].values()) else 1


def ratios(bench: dict) -> dict:
    """Ratios between numbers measured in this same run (e.g. SDM time / CNN time)."""
    out: dict = {}
    sdm = bench.get("sdm", {})
    for key, val in sdm.items():
        if key.startswith("sdm_train_predict_s_") and isinstance(val, (int, float)):
            size = key.rsplit("_", 1)[-1]
            for cnn in ("cnn1d", "cnn2d"):
                other = sdm.get(f"{cnn}_train_predict_s_{size}")
                if isinstance(other, (int, float)) and other > 0:
                    out[f"sdm_over_{cnn}_time_{size}"] = val / other
    obs = bench.get("observe", {})
    ser, dsk = obs.get("observe_views_per_s_serial"), obs.get("observe_views_per_s_dask2")
    if ser and dsk:
        out["observe_dask2_over_serial_throughput"] = dsk / ser
    return out


if __name__ == "__main__":
    sys.exit(main())
