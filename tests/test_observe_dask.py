"""Dask runs of ``observe`` give byte-identical results to the serial run."""

from __future__ import annotations

import numpy as np
import pytest

from dynmass.observe import observe
from dynmass.testing.catalogs import random_universe

pytest.importorskip("distributed")

FIELDS = ("R", "v", "is_member", "galaxy_index", "offsets")


def _same(a, b) -> None:
    assert a.n_views > 0
    for name in FIELDS:
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.clusters.keys() == b.clusters.keys()
    for col in a.clusters:
        assert a.clusters[col].tobytes() == b.clusters[col].tobytes(), col


@pytest.fixture(scope="module")
def universe():
    return random_universe(np.random.default_rng(7), n_field=4000)


@pytest.mark.slow
def test_local_dask_worker_processes_match_serial(universe):
    kw = {"min_mass": 1e13, "min_members": 3, "n_los": 5, "sampling_rate": 0.8, "seed": 11}
    serial = observe(universe, **kw)
    par = observe(universe, **kw, workers=2, chunk_size=4)
    _same(serial, par)
    assert serial.n_views > 20


def test_dask_client_threads_members_centre_match_serial(universe):
    from distributed import Client, LocalCluster

    kw = {"min_mass": 1e13, "min_members": 3, "n_los": 4, "center": "members"}
    serial = observe(universe, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        par = observe(universe, **kw, dask_scheduler=client, chunk_size=5)
    _same(serial, par)
