"""Data-parallel training (PyTorch DDP, gloo backend, 2 CPU processes under torchrun)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dynmass.observations import from_views, write_observations

torch_dist = pytest.importorskip("torch.distributed")


def _toy(n_halos: int = 24, n_los: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    logm = rng.uniform(13.5, 15.5, n_halos)
    views, hid, mass = [], [], []
    for h in range(n_halos):
        sigma = 1082.9 * 10 ** (0.3361 * (logm[h] - 15))  # Evrard et al. 2008
        for _ in range(n_los):
            v = np.clip(rng.normal(0, sigma, 60), -2999, 2999)
            views.append((1.6 * np.sqrt(rng.random(60)), v))
            hid.append(h)
            mass.append(10 ** logm[h])
    return from_views(views, {"aperture": 1.6, "vcut": 3000.0},
                      clusters={"halo_id": np.array(hid), "los": np.arange(len(hid)) % n_los,
                                "m200c": np.array(mass)})


@pytest.mark.skipif(not torch_dist.is_available(), reason="torch.distributed unavailable")
def test_torchrun_two_processes_gloo(tmp_path):
    obs = _toy()
    obs_path = write_observations(obs, tmp_path / "obs.h5")
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "dynmass.cli", "train", str(obs_path), "--model", "cnn1d", "-o",
           str(run), "--folds", "2", "--epochs", "2", "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run written to") == 1, "only rank 0 reports and writes"
    names = sorted(p.name for p in run.iterdir() if p.name != "cache")
    assert names == ["fold_00.h5", "fold_01.h5", "predictions.csv", "settings.json",
                     "timing.json"]
    assert json.loads((run / "settings.json").read_text())["world_size"] == 2
    from dynmass.models import load_model

    assert load_model(run / "fold_00.h5").extra["world_size"] == 2
    with open(run / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == obs.n_views
    pred = np.array([float(r["log10_m200c_pred"]) for r in rows])
    assert np.all(np.isfinite(pred)) and np.all((pred > 12) & (pred < 17))
