"""The flow posterior (``dynmass.posterior``): calibrated on a toy world, caught when broken.

Toy world: true log10 M uniform in [13.5, 15.0], N uniform in [10, 300), and a summary
``mu = true + 0.1 (true - 14.25) + N(0, 0.8 / sqrt(N))`` (a learner pulled outward, with
richness-dependent noise). Fit on 4000 views (30 epochs), checked on 2000 independent views.

Measured over seeds 0-3 (``/tmp``-style script in the closing note of this change):
coverage_68 0.658-0.668, coverage_95 0.949-0.963, TARP max deviation 0.016-0.040, median
bias -0.007..+0.005 dex; the binomial sd of a coverage from 2000 views is 0.010 (68%) and
0.005 (95%). Bounds: coverage_68 in (0.62, 0.72), coverage_95 in (0.925, 0.975), TARP < 0.08.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from dynmass.errors import InputError
from dynmass.posterior import fit_posterior, load_posterior
from dynmass.posterior_check import evaluate_posterior


def _world(rng: np.random.Generator, n: int):
    true = rng.uniform(13.5, 15.0, n)
    n_gal = rng.integers(10, 300, n)
    mu = true + rng.normal(0, 0.8 / np.sqrt(n_gal)) + 0.1 * (true - 14.25)
    return mu, n_gal, true


@functools.cache
def _fitted(seed: int = 0):
    rng = np.random.default_rng(seed)
    post = fit_posterior(*_world(rng, 4000), seed=seed, epochs=30)
    return post, _world(rng, 2000)


def test_posterior_is_calibrated_on_a_toy_world():
    post, (mu, n_gal, true) = _fitted()
    r = evaluate_posterior(post, mu, n_gal, true, seed=0)
    assert 0.62 < r["coverage_68"] < 0.72 and 0.925 < r["coverage_95"] < 0.975
    assert r["tarp_max_dev"] < 0.08 and abs(r["median_bias"]) < 0.03
    assert sum(r["sbc_hist"]) == len(true) == r["n_views"]
    # intervals narrow with richness, as the noise does
    q = post.quantiles(np.array([14.25, 14.25]), np.array([20, 250]), (16, 84))
    w = q[:, 1] - q[:, 0]
    assert w[1] < 0.6 * w[0]


def test_a_wrong_posterior_is_caught():
    """Truths shifted by 0.15 dex (a units slip) or posteriors read with the wrong richness."""
    post, (mu, n_gal, true) = _fitted()
    shifted = evaluate_posterior(post, mu, n_gal, true + 0.15, seed=0)
    assert shifted["coverage_68"] < 0.5 and shifted["tarp_max_dev"] > 0.15
    assert shifted["sbc_p_value"] < 1e-6
    swapped = evaluate_posterior(post, mu, np.full_like(n_gal, 300), true, seed=0)
    assert swapped["coverage_68"] < 0.6


def test_shift_moves_the_posterior(tmp_path):
    """A constant shift (the E(z) term of views at another redshift) moves every quantile;
    saved and loaded, the flow gives the same numbers."""
    post, (mu, n_gal, true) = _fitted()
    a = evaluate_posterior(post, mu[:300], n_gal[:300], true[:300] - 0.12, shift=-0.12, seed=1)
    b = evaluate_posterior(post, mu[:300], n_gal[:300], true[:300], seed=1)
    assert a["coverage_68"] == b["coverage_68"] and a["sbc_hist"] == b["sbc_hist"]
    post.save(tmp_path / "p.h5")
    back = load_posterior(tmp_path / "p.h5")
    np.testing.assert_allclose(back.quantiles(mu[:20], n_gal[:20]),
                               post.quantiles(mu[:20], n_gal[:20]), atol=1e-6)
    assert back.history["best_epoch"] == post.history["best_epoch"]


def test_bad_input():
    rng = np.random.default_rng(1)
    mu, n_gal, true = _world(rng, 100)
    with pytest.raises(InputError, match="at least 50"):
        fit_posterior(mu[:10], n_gal[:10], true[:10])
    with pytest.raises(InputError, match="finite"):
        fit_posterior(np.where(np.arange(100) == 3, np.nan, mu), n_gal, true)
    post, _ = _fitted()
    with pytest.raises(InputError, match="n_gal"):
        post.density_grid(np.array([14.0]), np.array([0]))


def test_an_ensemble_of_flows_averages_its_members(tmp_path):
    """``n_flows=3``: three flows with seeds 0, 1, 2 (the first is the single flow of seed 0),
    the density is the mean of the members' normalised densities, it stays calibrated on the
    toy world, and it survives a save / load; ``n_flows < 1`` is refused."""
    rng = np.random.default_rng(0)
    cal = _world(rng, 4000)
    ens = fit_posterior(*cal, seed=0, epochs=30, n_flows=3)
    single, (mu, n_gal, true) = _fitted()
    assert len(ens.members) == 2 and len(ens.history["members"]) == 3
    np.testing.assert_allclose(ens.__class__(flow=ens.flow, standard=ens.standard,
                                             p_cal=ens.p_cal, settings=single.settings)
                               .density_grid(mu[:50], n_gal[:50]),
                               single.density_grid(mu[:50], n_gal[:50]), rtol=1e-6, atol=1e-9)
    parts = [ens.__class__(flow=f, standard=ens.standard, p_cal=ens.p_cal,
                           settings=ens.settings).density_grid(mu[:50], n_gal[:50])
             for f in (ens.flow, *ens.members)]
    d = ens.density_grid(mu[:50], n_gal[:50])
    np.testing.assert_allclose(d, np.mean(parts, axis=0), rtol=1e-9)
    np.testing.assert_allclose(d.sum(axis=1) * (ens.grid[1] - ens.grid[0]), 1.0, rtol=1e-9)
    assert np.max(np.abs(parts[1] - parts[0])) > 1e-3  # the members differ
    r = evaluate_posterior(ens, mu, n_gal, true, seed=0)
    assert 0.62 < r["coverage_68"] < 0.72 and 0.925 < r["coverage_95"] < 0.975
    ens.save(tmp_path / "e.h5")
    back = load_posterior(tmp_path / "e.h5")
    assert len(back.members) == 2
    np.testing.assert_allclose(back.density_grid(mu[:20], n_gal[:20]),
                               ens.density_grid(mu[:20], n_gal[:20]), rtol=1e-5, atol=1e-8)
    with pytest.raises(InputError, match="n_flows"):
        fit_posterior(*cal, n_flows=0)


def test_cli_posterior_check_writes_the_flow_and_its_report(tmp_path, capsys):
    """``dynmass posterior`` on a toy bundle: flow file, JSON report (flow next to the belts)
    and figure; training and calibration universes are refused as test views."""
    import json

    from dynmass.cli import main
    from dynmass.testing.runs import toy_universe_files
    from dynmass.testing.worlds import cylinder_views

    rng = np.random.default_rng(2)
    paths, _ = toy_universe_files(tmp_path, {
        name: cylinder_views(rng, n_halos=n, richness=60.0, n_interlopers=1.0)
        for name, n in (("T", 300), ("A", 600), ("B", 400))})
    out = tmp_path / "post"
    code = main(["posterior", str(tmp_path / "b.h5"), "--calibrate-on", str(paths["A"]),
                 "--test-on", str(paths["B"]), "-o", str(out), "--epochs", "5"])
    assert code in (0, 1)
    rep = json.loads(out.with_suffix(".json").read_text())
    assert set(rep["summary"]) >= {"flow", "belts", "passed", "n_test_views"}
    assert rep["summary"]["passed"] == (code == 0)
    assert out.with_suffix(".h5").exists() and out.with_suffix(".png").stat().st_size > 1000
    assert '"flow"' in capsys.readouterr().out
    code = main(["posterior", str(tmp_path / "b.h5"), "--calibrate-on", str(paths["A"]),
                 "--test-on", str(paths["A"]), "-o", str(tmp_path / "again"), "--epochs", "2"])
    assert code not in (0, 1) and "independent" in capsys.readouterr().err
    assert not (tmp_path / "again.json").exists()
