"""Benchmark of ``dynmass.observe``: views per second, serial and on a 2-worker local Dask cluster.

The catalog is synthetic and made here (no dependence on the mock-universe stage): hosts with
log10 M200c uniform in [13.5, 15.2] Msun/h, members on a Gaussian blob of scale R200c/2 with the
dark-matter velocity dispersion of Evrard et al. 2008 (ApJ 672, 122), and a uniform field of
galaxies with 300 km/s random velocities making up the rest.

Run ``python benchmarks/bench_observe.py [--quick]``; prints a JSON dict.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from dynmass.catalog import Catalog


def synthetic_catalog(n_gal: int, n_hosts: int, box: float, seed: int = 0) -> Catalog:
    """Hosts, their members and a uniform field in a periodic box (comoving Mpc/h, km/s)."""
    rng = np.random.default_rng(seed)
    logm = rng.uniform(13.5, 15.2, n_hosts)
    m = 10**logm
    r200 = 1.0 * (m / 1e14) ** (1 / 3)  # comoving Mpc/h, about right at z ~ 0.1
    sigma = 1082.9 * (0.7 * m / 1e15) ** 0.3361  # km/s, Evrard et al. 2008
    halos = {
        "id": np.arange(n_hosts, dtype=np.int64),
        **{c: rng.uniform(0, box, n_hosts) for c in "xyz"},
        **{f"v{c}": rng.normal(0, 300, n_hosts) for c in "xyz"},
        "m200c": m,
        "r200c": r200,
    }
    n_mem = np.maximum(3, rng.poisson(30 * (m / 1e14) ** 0.8)).astype(np.int64)
    host = np.repeat(np.arange(n_hosts), n_mem)
    pos = np.column_stack([halos[c] for c in "xyz"])[host] + rng.normal(
        0, 1, (host.size, 3)) * (0.5 * r200[host])[:, None]
    vel = np.column_stack([halos[f"v{c}"] for c in "xyz"])[host] + rng.normal(
        0, 1, (host.size, 3)) * sigma[host][:, None]
    n_field = max(0, n_gal - host.size)
    pos = np.mod(np.vstack([pos, rng.uniform(0, box, (n_field, 3))]), box)
    pos[pos >= box] = 0.0
    vel = np.vstack([vel, rng.normal(0, 300, (n_field, 3))])
    gal = {
        "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2],
        "vx": vel[:, 0], "vy": vel[:, 1], "vz": vel[:, 2],
        "host_id": np.concatenate([host, -np.ones(n_field, np.int64)]),
        "is_central": np.zeros(len(pos), bool),
    }
    return Catalog(halos=halos, galaxies=gal, box_size=box, redshift=0.117, seed=seed)


def run(quick: bool = False) -> dict:
    """Measure observe throughput; returns a flat dict of numbers (units in the keys)."""
    from distributed import Client, LocalCluster

    from dynmass.observe import observe

    if quick:
        n_gal, n_hosts, box = 100_000, 334, 200.0
    else:
        n_gal, n_hosts, box = 1_000_000, 3334, 400.0
    cat = synthetic_catalog(n_gal, n_hosts, box)
    cat.validate()
    kw = {"n_los": 3, "min_mass": 0.0, "min_members": 1}
    observe(cat, **{**kw, "min_mass": 1e15})  # warm imports
    t0 = time.perf_counter()
    serial = observe(cat, **kw)
    t_serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    rot = observe(cat, **{**kw, "n_los": 6})
    t_rot = time.perf_counter() - t0
    n_rot = rot.n_views - serial.n_views
    t0 = time.perf_counter()
    members = observe(cat, **kw, center="members")
    t_members = time.perf_counter() - t0
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    t_start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        par = observe(cat, **kw, dask_scheduler=client)
        t_dask = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    same = all(np.array_equal(getattr(serial, k), getattr(par, k))
               for k in ("R", "v", "is_member", "galaxy_index", "offsets"))
    n_views = serial.n_views
    return {
        "observe_n_galaxies": int(n_gal),
        "observe_n_views": int(n_views),
        "observe_box_mpch": float(box),
        "observe_galaxies_per_view_mean": float(np.mean(serial.n_gal)),
        "observe_interloper_fraction": float(1 - serial.is_member.mean()),
        "observe_seconds_serial": t_serial,
        "observe_views_per_s_serial": n_views / t_serial,
        "observe_seconds_6los_axes_plus_rotated": t_rot,
        "observe_rotated_views_per_s_serial": n_rot / max(t_rot - t_serial, 1e-9),
        "observe_seconds_center_members": t_members,
        "observe_views_per_s_center_members": members.n_views / t_members,
        "observe_seconds_dask_2workers": t_dask,
        "observe_views_per_s_dask_2workers": n_views / t_dask,
        "observe_seconds_dask_cluster_start": t_start,
        "observe_dask_identical_to_serial": float(same),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
