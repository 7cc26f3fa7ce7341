"""The model shipped in the package works right after install and behaves physically."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from dynmass.bundle import load_bundle
from dynmass.predict import default_model_path, predict_members


def _members(rng: np.random.Generator, spec: dict[str, tuple[float, int, int]]) -> Table:
    """R [Mpc/h] and v [km/s] of toy clusters: ``{id: (sigma_v, members, interlopers)}``.

    Members are Gaussian in v and concentrated in R; interlopers are uniform in the cylinder.
    """
    rows: dict[str, list] = {"cluster_id": [], "R": [], "v": []}
    for cid, (sig, n_mem, n_int) in spec.items():
        v = np.concatenate([rng.normal(0, sig, n_mem), rng.uniform(-2200, 2200, n_int)])
        R = 1.6 * np.concatenate([rng.uniform(0, 1, n_mem) ** 0.75,
                                  np.sqrt(rng.uniform(0, 1, n_int))])
        keep = np.abs(v) < 2200
        rows["cluster_id"] += [cid] * int(keep.sum())
        rows["R"] += list(R[keep])
        rows["v"] += list(v[keep])
    return Table(rows)


#: Richer clusters are hotter (N grows roughly as sigma^3), as in the mocks.
TOYS = {"cold": (350.0, 15, 5), "warm": (650.0, 60, 10), "hot": (1000.0, 200, 20)}


def test_shipped_bundle_is_complete():
    bundle = load_bundle(default_model_path())
    assert bundle.model_name == "cnn2d"
    assert bundle.obs_settings["aperture"] == pytest.approx(1.6)
    assert bundle.obs_settings["vcut"] == pytest.approx(2200.0)
    assert len(bundle.models) >= 5


def test_predict_without_model_argument_orders_masses_by_dispersion():
    rng = np.random.default_rng(7)
    table = _members(rng, TOYS)
    out = predict_members(table)  # no model: the shipped default
    by_id = {str(r["cluster_id"]): r for r in out}
    p50 = [float(by_id[c]["log10_m200c_p50"]) for c in ("cold", "warm", "hot")]
    assert np.all(np.isfinite(p50))
    assert p50[0] < p50[1] < p50[2], p50
    for c in by_id.values():
        assert c["log10_m200c_p16"] <= c["log10_m200c_p50"] <= c["log10_m200c_p84"]
        assert c["log10_m200c_p2_5"] <= c["log10_m200c_p16"]
        assert not c["error"]


def test_shipped_bundle_is_calibrated_on_independent_universes():
    """Its belt comes from the fold ensemble on universes it was not trained on."""
    bundle = load_bundle(default_model_path())
    iv = bundle.interval
    assert iv["method"] == "neyman" and iv["residuals"].startswith("fold-ensemble")
    train_universe = bundle.obs_settings["universe_sha256"]
    shas = [f["universe_sha256"] for f in iv["files"]]
    assert len(shas) >= 2 and len(set(shas)) == len(shas) and train_universe not in shas
    lo, hi = bundle.domain["log10_m200c_calibrated"]
    t_lo, t_hi = bundle.domain["log10_m200c"]
    assert t_lo + 0.2 <= lo < 14.0 < 15.0 < hi <= t_hi - 0.2


def test_shipped_bundle_intervals_cover_by_cross_fitting():
    """Recomputed here: the belt of each pseudo-fold, calibrated on the other pseudo-folds'
    views, covers 68% / 95% of its views overall and in every judged bin of true mass."""
    from dynmass.bundle import coverage

    res = coverage(load_bundle(default_model_path()))
    assert res["scheme"] == "cross-fit by fold"
    assert res["passed"], [(b["lo"], b["coverage_68"], b["coverage_95"])
                           for b in res["bins_true"] if b.get("judged")]
    assert sum(b.get("judged", False) for b in res["bins_true"]) >= 7


def test_masses_outside_the_calibrated_range_are_flagged():
    rng = np.random.default_rng(3)
    table = _members(rng, {"poor": (250.0, 8, 4), "normal": TOYS["warm"]})
    out = {str(r["cluster_id"]): r for r in predict_members(table)}
    assert "mass" not in str(out["normal"]["flags"]).split(";")
    assert "mass" in str(out["poor"]["flags"]).split(";")


def test_shipped_model_on_a_fresh_mock_universe():
    """End to end on a universe it never saw (seed 777, 250 Mpc/h): masses track the truth
    and the intervals cover about as often as they claim."""
    from scipy.stats import spearmanr

    from dynmass.observe import observe
    from dynmass.universe.build import build_universe

    obs = observe(build_universe(box_size=250.0, seed=777), min_mass=10**13.6, n_los=3, seed=777)
    bundle = load_bundle(default_model_path())
    res = bundle.predict(obs)
    true = obs.log10_m200c()
    lo, hi = bundle.domain["log10_m200c_calibrated"]
    m = (true >= lo) & (true <= hi)
    n_hosts = np.unique(obs.clusters["halo_id"][m]).size
    assert n_hosts > 300
    assert spearmanr(res["log10_m200c_mean"][m], true[m])[0] > 0.75
    eps = res["log10_m200c_p50"][m] - true[m]
    assert abs(np.median(eps)) < 0.05 and np.std(eps) < 0.2
    in68 = (true >= res["log10_m200c_p16"]) & (true <= res["log10_m200c_p84"])
    in95 = (true >= res["log10_m200c_p2_5"]) & (true <= res["log10_m200c_p97_5"])
    # views of one host move together: a binomial error on hosts, three of them
    assert abs(in68[m].mean() - 0.68) < 3 * np.sqrt(0.68 * 0.32 / n_hosts)
    assert abs(in95[m].mean() - 0.95) < 3 * np.sqrt(0.95 * 0.05 / n_hosts)
