"""Views of several universes in one file (``dynmass combine``): ids, records, independence."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from dynmass.bundle import make_bundle
from dynmass.cli import main
from dynmass.combine import HALO_ID_STRIDE, combine_files, combine_observations
from dynmass.coverage import coverage
from dynmass.errors import InputError, SettingsMismatchError
from dynmass.folds import rank_folds
from dynmass.observations import read_observations, universes_of, write_observations
from dynmass.testing.runs import write_fold_run
from dynmass.testing.worlds import CYLINDER_SETTINGS, cylinder_views


def _views(seed: int, sha: str, n_halos: int = 120, **settings):
    obs = cylinder_views(np.random.default_rng(seed), n_halos=n_halos, richness=60.0,
                         n_interlopers=1.0, settings={**CYLINDER_SETTINGS, **settings})
    obs.settings = {**obs.settings, "universe_sha256": sha}
    return obs


def test_combined_views_keep_every_galaxy_and_separate_the_hosts():
    a, b = _views(1, "A"), _views(2, "B", n_halos=80)
    mix = combine_observations([a, b], ["a.h5", "b.h5"])
    assert mix.n_views == a.n_views + b.n_views
    np.testing.assert_array_equal(mix.R, np.concatenate([a.R, b.R]))
    np.testing.assert_array_equal(mix.v, np.concatenate([a.v, b.v]))
    for k, part in enumerate((a, b)):
        sel = mix.clusters["part"] == k
        assert sel.sum() == part.n_views
        np.testing.assert_array_equal(mix.n_gal[sel], part.n_gal)
        np.testing.assert_array_equal(mix.clusters["halo_id"][sel],
                                      k * HALO_ID_STRIDE + part.clusters["halo_id"])
        np.testing.assert_array_equal(mix.clusters["m200c"][sel], part.clusters["m200c"])
    # the toy universes reuse halo ids 0..n-1: combined, no host spans two universes
    ids = mix.clusters["halo_id"]
    assert np.unique(ids).size == np.unique(a.clusters["halo_id"]).size + np.unique(
        b.clusters["halo_id"]).size
    folds = rank_folds(ids, mix.clusters["m200c"], 5)
    for h in np.unique(ids):
        assert np.unique(folds[ids == h]).size == 1
    assert universes_of(mix.settings) == {"A", "B"} and "universe_sha256" not in mix.settings
    assert [r["path"] for r in mix.settings["combined_from"]] == ["a.h5", "b.h5"]
    assert [r["n_views"] for r in mix.settings["combined_from"]] == [a.n_views, b.n_views]


def test_views_observed_otherwise_or_twice_are_refused():
    a = _views(1, "A")
    with pytest.raises(SettingsMismatchError, match="redshift") as err:
        combine_observations([a, _views(2, "B", redshift=0.3)], ["a.h5", "z03.h5"])
    assert "z03.h5" in str(err.value)
    with pytest.raises(InputError, match="already in an earlier file"):
        combine_observations([a, _views(3, "A")], ["a.h5", "again.h5"])
    with pytest.raises(InputError, match="at least two"):
        combine_observations([a])
    big = _views(4, "C")
    big.clusters["halo_id"] = big.clusters["halo_id"] + HALO_ID_STRIDE
    with pytest.raises(InputError, match="halo ids") as err:
        combine_observations([a, big], ["a.h5", "big.h5"])
    assert "big.h5" in str(err.value) and "halo_id" in str(err.value)
    other = _views(5, "D")
    other.clusters["extra"] = np.zeros(other.n_views)
    with pytest.raises(InputError, match="cluster columns differ"):
        combine_observations([a, other])


def test_a_model_trained_on_combined_views_refuses_their_universes(tmp_path, capsys):
    paths = [write_observations(_views(s, n), tmp_path / f"{n}.h5")
             for s, n in ((1, "A"), (2, "B"), (3, "C"), (4, "D"))]
    mix_path = tmp_path / "mix.h5"
    assert main(["combine", str(paths[0]), str(paths[1]), "-o", str(mix_path)]) == 0
    assert "views" in capsys.readouterr().out
    with h5py.File(mix_path, "r") as fh:
        assert fh.attrs["universes_sha256"] == "A,B"
        assert json.loads(fh.attrs["provenance"])["command"].startswith("dynmass combine ")
    mix = read_observations(mix_path)
    run = write_fold_run(tmp_path / "run", mix, obs_path=mix_path, seed=0)
    for used in paths[:2]:  # calibration on either training universe is refused
        with pytest.raises(InputError, match="universe already used"):
            make_bundle(run, calibration_observations=[used])
    b = make_bundle(run, calibration_observations=[paths[2]])
    with pytest.raises(InputError, match="independent hosts"):
        coverage(b, observations=[paths[0]])
    with pytest.raises(InputError, match="independent hosts"):
        coverage(b, observations=[paths[2]])
    res = coverage(b, observations=[paths[3]], seed=0)
    assert res["n_views"] == read_observations(paths[3]).n_views
    # a combined calibration file is excluded as a whole from the coverage test
    cal_mix = combine_files([paths[2], paths[3]], tmp_path / "cal_mix.h5")
    b2 = make_bundle(run, calibration_observations=[tmp_path / "cal_mix.h5"])
    assert cal_mix.n_views == b2.calibration.pred.size
    with pytest.raises(InputError, match="independent hosts"):
        coverage(b2, observations=[paths[3]])


def test_the_universe_engine_is_recorded_even_when_its_file_is_gone(tmp_path):
    """``observe`` keeps the universe's engine settings with the views, so a mixture records
    which engine each part came from after the universe files are deleted."""
    from dynmass.catalog import write_catalog
    from dynmass.observe import observe_file
    from dynmass.universe.build import build_universe

    paths = []
    for seed, outskirts in ((1, False), (2, True)):
        u = tmp_path / f"u{seed}.h5"
        write_catalog(build_universe(box_size=60.0, seed=seed, min_mass=1e13,
                                     outskirts=outskirts), u)
        o = tmp_path / f"o{seed}.h5"
        observe_file(u, o, min_mass=3e13, seed=seed)
        assert read_observations(o).settings["universe"]["outskirts"] is outskirts
        u.unlink()
        paths.append(o)
    mix = combine_files(paths, tmp_path / "mix.h5")
    rec = [r["universe"] for r in mix.settings["combined_from"]]
    assert [r["outskirts"] for r in rec] == [False, True]
    assert [r["seed"] for r in rec] == [1, 2] and rec[0]["box_size"] == 60.0
