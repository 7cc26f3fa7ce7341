"""Concurrent runs into different output folders do not interfere.

Two ``dynmass observe`` and two ``dynmass train`` processes run at the same time (each pair
from the same input, into different folders, with different options), and every output is
compared with the same command run alone.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dynmass.cli import main
from dynmass.cosmology import MDPL2
from dynmass.observations import write_observations
from dynmass.testing.worlds import evrard_views


def _start(argv: list[str], tmp: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    log = tmp / f"log_{tag}.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "dynmass.cli", *argv], env=env,
                                stdout=fh, stderr=subprocess.STDOUT, cwd=tmp)
    return proc, log


def run_together(commands: list[list[str]], tmp: Path) -> None:
    procs = [_start(argv, tmp, str(i)) for i, argv in enumerate(commands)]
    for proc, log in procs:
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]


def hdf5_datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset)
                      else None)
        out["@settings"] = np.array(fh.attrs["settings"])
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_two_observe_runs_at_once(tmp_path):
    universe = tmp_path / "u.h5"
    assert main(["universe", "-o", str(universe), "--box", "50", "--min-mass", "1e12",
                 "--seed", "11"]) == 0
    options = [["--min-mass", "1e13", "--min-members", "3", "--n-los", "5", "--seed", "1"],
               ["--min-mass", "1e13", "--min-members", "3", "--preset", "small",
                "--sampling-rate", "0.7", "--seed", "2"]]
    commands = [["observe", str(universe), "-o", str(tmp_path / f"par{i}" / "obs.h5"), *opt]
                for i, opt in enumerate(options)]
    run_together(commands, tmp_path)
    for i, opt in enumerate(options):
        alone = tmp_path / f"alone{i}.h5"
        assert main(["observe", str(universe), "-o", str(alone), *opt]) == 0
        together = hdf5_datasets(tmp_path / f"par{i}" / "obs.h5")
        assert len(together["R"]) > 0
        assert_same(hdf5_datasets(alone), together)


def toy_obs(n_halos: int = 24, seed: int = 0):
    """Toy Evrard et al. 2008 hosts (one view each, 50 members) with full observing settings."""
    obs = evrard_views(n_halos, 1, seed=seed, lo=13.6, hi=15.0, n_gal=(50, 51))
    obs.settings.update({"redshift": 0.117, "cosmology": dict(MDPL2), "min_members": 10})
    return obs


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["msigma"])
def test_two_train_runs_at_once(tmp_path, model):
    obs = write_observations(toy_obs(), tmp_path / "obs.h5")
    options = [["--folds", "3", "--seed", "1"], ["--folds", "4", "--seed", "2"]]
    commands = [["train", str(obs), "--model", model, "-o", str(tmp_path / f"par{i}"),
                 "--no-progress", *opt] for i, opt in enumerate(options)]
    run_together(commands, tmp_path)
    for i, opt in enumerate(options):
        alone = tmp_path / f"alone{i}"
        assert main(["train", str(obs), "--model", model, "-o", str(alone), "--no-progress",
                     *opt]) == 0
        a = read_predictions(alone / "predictions.csv")
        b = read_predictions(tmp_path / f"par{i}" / "predictions.csv")
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        n_folds = int(opt[1])
        assert sorted(p.name for p in (tmp_path / f"par{i}").glob("fold_*.h5")) == \
            [f"fold_{f:02d}.h5" for f in range(n_folds)]
