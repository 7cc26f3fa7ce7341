"""Prediction throughput of DeepSet (member lists, Deep Sets), inputs included (views per second).

Views: :func:`bench_predict.cluster_views` (10-150 galaxies per view, log-uniform, mean ~52;
Evrard et al. 2008 velocities), 10^4 of them (``--quick``: 2000), and the same views with 4x
as many galaxies (``rich``: 40-600, mean ~210, so about a third above ``n_max`` = 256). The
model is fitted for one epoch on 300 views (weights do not change the cost of a forward pass),
with the default sizes (phi 32-32-32, rho 32-32) and with a wider phi (64-64-64, rho 64-64).

Reported, best of several repeats (the machine is shared; check its load): the member lists
alone (``features``), the network alone at 1 and 2 torch threads (``net_1thr``,
``net_2thr``), and both (``total_1thr``, ``total_2thr``), all in views per second.

Run: ``python benchmarks/bench_deepset.py [--quick]`` (prints JSON).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_predict import best_seconds, cluster_views  # noqa: E402

#: Network sizes measured: name -> (phi_hidden, rho_hidden).
SIZES: dict[str, tuple[list[int], list[int]]] = {
    "phi64": ([64, 64, 64], [64, 64]),
    "phi32": ([32, 32, 32], [32, 32]),
}


def rich_views(n_views: int, seed: int = 0):
    """:func:`cluster_views` with every view's galaxies drawn four times (40-600 galaxies)."""
    from dynmass.observations import Observations

    base = cluster_views(n_views, seed)
    rng = np.random.default_rng(seed + 1)
    counts = base.n_gal * 4
    offsets = np.concatenate([[0], np.cumsum(counts)])
    sigma = np.repeat(base.clusters["sigma_v"], counts)
    v = np.clip(rng.normal(0, 1, offsets[-1]) * sigma, -2200.0, 2200.0)
    R = 1.6 * rng.random(offsets[-1]) ** 0.6
    return Observations(clusters=base.clusters, R=R, v=v, is_member=np.ones(len(R), bool),
                        galaxy_index=np.full(len(R), -1), offsets=offsets,
                        settings=dict(base.settings))


def run(quick: bool = False) -> dict[str, float]:
    """Measure prediction throughput; returns a flat dict (views/s unless the key says)."""
    from dynmass.models.deepset import DeepSet

    n = 2000 if quick else 10_000
    repeats = 2 if quick else 3
    train = cluster_views(300, seed=1)
    out: dict[str, float] = {"n_views": n, "load_average_1min": os.getloadavg()[0]}
    for data_name, obs in (("typical", cluster_views(n, seed=2)), ("rich", rich_views(n, 3))):
        out[f"{data_name}_mean_galaxies"] = float(obs.n_gal.mean())
        for size, (phi, rho) in SIZES.items():
            model = DeepSet(epochs=1, val_fraction=0.0, device="cpu", phi_hidden=phi,
                            rho_hidden=rho, num_threads=1).fit(train, seed=0)
            t_feat = best_seconds(lambda m=model, o=obs: m.featurizer.transform(o), repeats)
            X = model.featurizer.transform(obs)
            key = f"{data_name}_{size}"
            out[f"{data_name}_features"] = round(n / t_feat)
            for threads in (1, 2):
                model.settings["num_threads"] = threads
                t_net = best_seconds(lambda m=model, x=X: m.predict_features(x), repeats)
                out[f"{key}_net_{threads}thr"] = round(n / t_net)
                out[f"{key}_total_{threads}thr"] = round(n / (t_feat + t_net))
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
