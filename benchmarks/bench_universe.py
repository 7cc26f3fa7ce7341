"""Benchmark of the mock universe: build time and peak memory against box size (200, 300,
400 = default, 600 Mpc/h at the default mass cut) and of a 1 Gpc/h box (streamed to file, bounded memory), and the time of the validation report.

Each point runs in a fresh Python process so that its peak resident memory is its own.
``python benchmarks/bench_universe.py [--quick]`` prints the numbers as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _point(spec: dict) -> dict:
    """Run one benchmark point in this process; returns seconds and peak RSS."""
    from dynmass.universe import check_catalog_file, write_universe

    out = Path(spec["dir"]) / f"universe_{spec['name']}.h5"
    t0 = time.perf_counter()
    info = write_universe(out, **spec["settings"])
    build_s = time.perf_counter() - t0
    res = {"build_s": build_s, "n_halos": info["n_halos"], "n_galaxies": info["n_galaxies"],
           "file_mb": out.stat().st_size / 2**20, "grid": info["settings"]["grid"]}
    if spec.get("check"):
        t0 = time.perf_counter()
        rep = check_catalog_file(out, Path(spec["dir"]) / f"check_{spec['name']}")
        res["check_s"] = time.perf_counter() - t0
        res["check_passed"] = float(rep["passed"])
        s = rep["summary"]
        res.update({k: s[k] for k in ("n_halos_above_1e13.5", "hmf_p_value",
                                       "evrard_norm_ratio", "evrard_slope_diff",
                                       "xi_amplitude_m>12", "xi_amplitude_m>13") if k in s})
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out.unlink()
    return res


def _run_point(spec: dict) -> dict:
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, __file__, "--point", json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    """Measure build time, peak memory and counts.

    Parameters
    ----------
    quick : bool
        Smaller 1 Gpc/h point (halos above 10^14 Msun/h on a 128^3 grid) and no validation.

    Returns
    -------
    dict
        Flat ``{"metric_unit": value}``.
    """
    out: dict[str, float] = {"cpu_count": float(os.cpu_count() or 1)}
    with tempfile.TemporaryDirectory() as tmp:
        default = _run_point({"name": "default", "dir": tmp, "settings": {"seed": 0},
                              "check": not quick})
        for k, v in default.items():
            out[f"default_{k}"] = float(v)
        for box in ((200.0,) if quick else (200.0, 300.0, 600.0)):
            point = _run_point({"name": f"box{int(box)}", "dir": tmp,
                                "settings": {"box_size": box, "seed": 0}})
            for k in ("build_s", "peak_rss_mb", "n_halos", "n_galaxies"):
                out[f"box{int(box)}_{k}"] = float(point[k])
        big_settings = ({"box_size": 1000.0, "min_mass": 1e14, "grid": 128, "seed": 0} if quick
                        else {"box_size": 1000.0, "min_mass": 1e13, "grid": 256, "seed": 0})
        big = _run_point({"name": "gpc", "dir": tmp, "settings": big_settings})
        for k, v in big.items():
            out[f"gpc_{k}"] = float(v)
        out["gpc_min_mass_msunh"] = big_settings["min_mass"]
    rename = {"build_s": "build_seconds", "check_s": "check_seconds", "peak_rss_mb": "peak_rss_MiB",
              "file_mb": "file_MiB"}
    return {_rename(k, rename): v for k, v in out.items()}


def _rename(key: str, table: dict[str, str]) -> str:
    for a, b in table.items():
        if key.endswith(a):
            return key[: -len(a)] + b
    return key


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--point":
        print(json.dumps(_point(json.loads(sys.argv[2]))))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
