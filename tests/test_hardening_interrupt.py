"""Interrupted runs: ``dynmass universe``, ``observe`` and ``train`` killed with SIGKILL part-way.

Each case runs the real command (``python -m dynmass.cli ...``) in a subprocess, kills it
mid-way and checks that

* no file that looks complete is left at the output path (a leftover ``.<name>.*.tmp`` beside
  it is allowed: it is never read, and is refused as incomplete if someone renames it);
* every file that *is* at a final path is whole (readable, marked complete);
* running the same command again completes and gives exactly the numbers of an uninterrupted
  run (``train`` resumes: finished folds are reused, a CNN fold continues from its epoch
  checkpoint).

To kill *inside* a write deterministically, the killed process gets a ``sitecustomize``
(through ``PYTHONPATH``) that sleeps after every HDF5 dataset it creates (after flushing the
partial file to disk) and before every rename of a ``.tmp`` file onto its destination; the
test polls for the moment to strike. The re-runs use the unmodified command.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from dynmass import InputError, read_catalog, read_observations
from dynmass.cli import main
from dynmass.cosmology import MDPL2
from dynmass.models import load_model
from dynmass.observations import write_observations
from dynmass.testing.worlds import evrard_views

SLOW_HOOK = '''
import os, time
_delay = float(os.environ.get("DYNMASS_TEST_SLOW_WRITES", "0"))
if _delay > 0:
    import h5py
    _create = h5py.Group.create_dataset
    def _slow_create(self, *args, **kwargs):
        ds = _create(self, *args, **kwargs)
        self.file.flush()
        time.sleep(_delay)
        return ds
    h5py.Group.create_dataset = _slow_create
    _replace = os.replace
    def _slow_replace(src, dst, *args, **kwargs):
        if str(src).endswith(".tmp"):
            time.sleep(_delay)
        return _replace(src, dst, *args, **kwargs)
    os.replace = _slow_replace
'''


def _env(tmp: Path, slow: float = 0.0) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    if slow > 0:
        hook = tmp / "_hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(SLOW_HOOK)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
        env["DYNMASS_TEST_SLOW_WRITES"] = str(slow)
    return env


def _cli(argv: list[str], tmp: Path, slow: float = 0.0) -> tuple[subprocess.Popen, Path]:
    """Start ``python -m dynmass.cli ARGV``; output goes to a log file (returned)."""
    log = tmp / f"log_{time.monotonic_ns()}.txt"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "dynmass.cli", *argv],
                                env=_env(tmp, slow), stdout=fh, stderr=subprocess.STDOUT,
                                cwd=tmp)
    return proc, log


def run_cli(argv: list[str], tmp: Path) -> None:
    proc, log = _cli(argv, tmp)
    rc = proc.wait(timeout=300)
    assert rc == 0, log.read_text()[-3000:]


def kill_when(argv: list[str], tmp: Path, ready, slow: float = 0.25,
              timeout_s: float = 120.0) -> None:
    """Start the command with slow writes, SIGKILL it as soon as ``ready()`` is true."""
    proc, log = _cli(argv, tmp, slow)
    t0 = time.monotonic()
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail("the command ended before it could be killed:\n"
                            + log.read_text()[-3000:])
            if time.monotonic() - t0 > timeout_s:
                pytest.fail("the moment to kill never came")
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def tmp_files(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


def started_writing(folder: Path, name: str):
    return lambda: any(p.stat().st_size > 0 for p in tmp_files(folder, name)
                       if p.exists())


def assert_leftover_refused(leftovers: list[Path], reader, tmp: Path) -> None:
    """A leftover temporary file, renamed to look final, is still refused."""
    for i, p in enumerate(leftovers):
        fake = tmp / f"renamed_leftover_{i}.h5"
        fake.write_bytes(p.read_bytes())
        with pytest.raises(InputError):
            reader(fake)


def same_hdf5_data(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = []
        fa.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        other = []
        fb.visititems(lambda n, o: other.append(n) if isinstance(o, h5py.Dataset) else None)
        assert sorted(names) == sorted(other)
        for n in names:
            np.testing.assert_array_equal(fa[n][...], fb[n][...], err_msg=n)
        for k in ("settings", "box_size", "redshift", "seed", "universe_sha256"):
            if k in fa.attrs:
                assert fa.attrs[k] == fb.attrs[k], k


# --------------------------------------------------------------------------- universe
UNIVERSE_ARGS = ["--box", "50", "--min-mass", "1e12", "--seed", "3"]


@pytest.mark.slow
def test_universe_killed_mid_write_then_rerun(tmp_path):
    ref = tmp_path / "ref" / "u.h5"
    assert main(["universe", "-o", str(ref), *UNIVERSE_ARGS]) == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "u.h5"
    argv = ["universe", "-o", str(out), *UNIVERSE_ARGS]
    kill_when(argv, tmp_path, started_writing(out_dir, "u.h5"))
    assert not out.exists()
    leftovers = tmp_files(out_dir, "u.h5")
    assert leftovers, "the kill should have hit the write"
    assert_leftover_refused(leftovers, read_catalog, tmp_path)
    run_cli(argv, tmp_path)
    read_catalog(out)
    same_hdf5_data(ref, out)
    assert set(out_dir.iterdir()) <= {out, *leftovers}  # nothing else, nothing half


# --------------------------------------------------------------------------- observe
OBSERVE_ARGS = ["--min-mass", "1e13", "--min-members", "3", "--n-los", "4",
                "--aperture", "1.2", "--vcut", "2000", "--chunk-size", "7"]


@pytest.fixture(scope="module")
def universe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("universe") / "u.h5"
    assert main(["universe", "-o", str(path), *UNIVERSE_ARGS]) == 0
    return path


@pytest.mark.slow
def test_observe_killed_mid_write_then_rerun(tmp_path, universe_file):
    ref = tmp_path / "ref.h5"
    assert main(["observe", str(universe_file), "-o", str(ref), *OBSERVE_ARGS]) == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "obs.h5"
    argv = ["observe", str(universe_file), "-o", str(out), *OBSERVE_ARGS]
    kill_when(argv, tmp_path, started_writing(out_dir, "obs.h5"))
    assert not out.exists()
    leftovers = tmp_files(out_dir, "obs.h5")
    assert leftovers
    assert_leftover_refused(leftovers, read_observations, tmp_path)
    run_cli(argv, tmp_path)
    assert read_observations(out).n_views == read_observations(ref).n_views > 0
    same_hdf5_data(ref, out)


# --------------------------------------------------------------------------- train
def toy_obs(n_halos: int = 24, n_los: int = 2, seed: int = 0):
    """The Evrard et al. 2008 toy world of tests/test_cnn.py (halo ids from 100), with the
    redshift, cosmology and member minimum of real observe settings."""
    obs = evrard_views(n_halos, n_los, seed, lo=13.6, hi=15.0, halo_id_offset=100)
    obs.settings.update(redshift=0.117, cosmology=dict(MDPL2), min_members=10)
    return obs


@pytest.fixture(scope="module")
def obs_file(tmp_path_factory):
    return write_observations(toy_obs(), tmp_path_factory.mktemp("obs") / "obs.h5")


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def check_run_folder_after_kill(run: Path, folds: int) -> None:
    """Nothing claims completeness; what is at a final path is whole."""
    assert not (run / "predictions.csv").exists()
    assert not (run / "timing.json").exists()
    json.loads((run / "settings.json").read_text())
    for f in range(folds):
        p = run / f"fold_{f:02d}.h5"
        if p.exists():
            load_model(p)


@pytest.mark.parametrize("model, extra, folds, ready_file", [
    ("msigma", [], 3, "fold_00.h5"),
    ("cnn1d", ["--epochs", "3", "--batch-size", "16", "--device", "cpu",
               "--set", "num_threads=1"], 2, "fold_00.ckpt.pt"),
])
@pytest.mark.slow
def test_train_killed_then_resumed(tmp_path, obs_file, model, extra, folds, ready_file):
    common = [str(obs_file), "--model", model, "--folds", str(folds), "--seed", "5",
              "--no-progress", *extra]
    ref = tmp_path / "ref"
    assert main(["train", *common, "-o", str(ref)]) == 0
    run = tmp_path / "run"
    argv = ["train", *common, "-o", str(run)]
    kill_when(argv, tmp_path, lambda: (run / ready_file).exists())
    check_run_folder_after_kill(run, folds)
    run_cli(argv, tmp_path)
    a, b = read_predictions(ref / "predictions.csv"), read_predictions(run / "predictions.csv")
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    timing = json.loads((run / "timing.json").read_text())
    if model == "msigma":  # the finished fold was reused, not retrained
        assert timing["per_fold"][0]["reused_saved_fold"]
    else:  # the CNN fold continued from its epoch checkpoint
        assert load_model(run / "fold_00.h5").extra["resumed"]
    assert not list(run.glob("*.ckpt.pt"))
    for f in range(folds):
        assert load_model(run / f"fold_{f:02d}.h5").name == model
