"""Catalog and observations containers: round trips, validation errors, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from dynmass import (
    Catalog,
    InputError,
    Observations,
    read_catalog,
    read_observations,
    write_catalog,
    write_observations,
)
from dynmass.observations import from_views


def _tiny_catalog(rng: np.random.Generator, box: float = 50.0) -> Catalog:
    nh, ng = 5, 40
    halos = {
        "id": np.arange(nh) + 100,
        **{c: rng.uniform(0, box, nh) for c in "xyz"},
        **{f"v{c}": rng.normal(0, 300, nh) for c in "xyz"},
        "m200c": 10 ** rng.uniform(12, 14, nh),
        "r200c": rng.uniform(0.2, 1.0, nh),
    }
    gal = {
        **{c: rng.uniform(0, box, ng) for c in "xyz"},
        **{f"v{c}": rng.normal(0, 300, ng) for c in "xyz"},
        "host_id": rng.choice(halos["id"], ng),
        "is_central": np.zeros(ng, bool),
    }
    return Catalog(halos=halos, galaxies=gal, box_size=box, redshift=0.117, seed=1)


def test_catalog_round_trip(tmp_path, rng):
    cat = _tiny_catalog(rng)
    path = write_catalog(cat, tmp_path / "u.h5")
    back = read_catalog(path)
    assert back.box_size == cat.box_size and back.seed == 1
    np.testing.assert_array_equal(back.halos["id"], cat.halos["id"])
    np.testing.assert_allclose(back.galaxies["vx"], cat.galaxies["vx"])
    assert [p.name for p in tmp_path.iterdir()] == ["u.h5"]


@pytest.mark.parametrize(
    ("group", "col", "value", "needle"),
    [
        ("galaxies", "vx", np.nan, "non-finite"),
        ("halos", "x", 1e4, "outside the box"),
        ("galaxies", "x", -1.0, "outside the box"),
        ("halos", "m200c", np.inf, "non-finite"),
    ],
)
def test_catalog_bad_values_named(tmp_path, rng, group, col, value, needle):
    cat = _tiny_catalog(rng)
    getattr(cat, group)[col][2] = value
    with pytest.raises(InputError, match=needle) as err:
        write_catalog(cat, tmp_path / "u.h5")
    assert f"{group}/{col}" in str(err.value)
    assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


def test_catalog_missing_column_and_foreign_file(tmp_path, rng):
    cat = _tiny_catalog(rng)
    del cat.galaxies["host_id"]
    with pytest.raises(InputError, match="galaxies/host_id"):
        cat.validate()
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(InputError, match="foreign.h5"):
        read_catalog(foreign)
    good = write_catalog(_tiny_catalog(rng), tmp_path / "good.h5")
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="trunc.h5"):
        read_catalog(truncated)


def test_observations_subset_resample_round_trip(tmp_path, rng):
    views = [(rng.uniform(0, 1.6, n), rng.uniform(-2000, 2000, n)) for n in (12, 30, 5)]
    obs = from_views(views, {"aperture": 1.6, "vcut": 2200.0})
    sub = obs.subset([2, 0])
    np.testing.assert_array_equal(sub.n_gal, [5, 12])
    np.testing.assert_allclose(sub.view(1)[1], views[0][1])
    thin = obs.resample(0.5, seed=3, min_gal=3)
    assert np.all(thin.n_gal >= 3) and np.all(thin.n_gal <= obs.n_gal)
    again = obs.resample(0.5, seed=3, min_gal=3)
    np.testing.assert_array_equal(thin.v, again.v)
    np.testing.assert_allclose(thin.clusters["sigma_v"][1], np.std(thin.view(1)[1]))
    path = write_observations(obs, tmp_path / "o.h5")
    back = read_observations(path)
    assert isinstance(back, Observations) and back.n_views == 3
    np.testing.assert_array_equal(back.offsets, obs.offsets)
    with pytest.raises(InputError, match="vcut"):
        back.check_compatible({"aperture": 1.6, "vcut": 2500.0}, "model 'x'")
