"""Model bundles: making, reading, interval calibration and honest coverage checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynmass.bundle import (
    PERCENTILES,
    coverage,
    load_bundle,
    make_bundle,
    quantile_table,
)
from dynmass.cosmology import MDPL2
from dynmass.errors import InputError
from dynmass.models import get_model
from dynmass.observations import from_views, write_observations

SETTINGS = {"aperture": 1.6, "vcut": 2200.0, "redshift": 0.117, "cosmology": dict(MDPL2),
            "min_members": 10, "center": "true"}


def synthetic_views(rng: np.random.Generator, n_halos: int = 300, n_los: int = 3,
                    settings: dict | None = None, richness: float = 12.0,
                    n_interlopers: float = 4.0):
    """Toy cylinders: members with sigma from Evrard et al. 2008 plus uniform interlopers."""
    settings = settings or SETTINGS
    ap, vcut = settings["aperture"], settings["vcut"]
    logm = rng.uniform(13.6, 15.1, n_halos)
    views, hid, los, m = [], [], [], []
    for h, lm in enumerate(logm):
        sigma = 1082.9 * (10 ** (lm - 15)) ** 0.3361  # Evrard et al. 2008, h(z) ~ 1
        for j in range(n_los):
            n_mem = rng.poisson(richness * 10 ** (0.7 * (lm - 14))) + 3
            n_int = rng.poisson(n_interlopers)
            v = np.concatenate([rng.normal(0, sigma, n_mem), rng.uniform(-vcut, vcut, n_int)])
            R = ap * np.sqrt(rng.uniform(0, 1, len(v)))
            keep = np.abs(v) <= vcut
            views.append((R[keep], v[keep]))
            hid.append(h)
            los.append(j)
            m.append(10**lm)
    clusters = {"halo_id": np.array(hid), "los": np.array(los), "m200c": np.array(m)}
    return from_views(views, settings, clusters)


def make_run(run_dir: Path, obs, k: int = 5, model: str = "msigma", seed: int = 0,
             obs_path: Path | None = None) -> Path:
    """A training run folder as `dynmass train` writes it (folds = mass rank mod k)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    halo_ids, first = np.unique(obs.clusters["halo_id"], return_index=True)
    rank = np.empty(len(halo_ids), dtype=int)
    rank[np.argsort(-obs.clusters["m200c"][first], kind="stable")] = np.arange(len(halo_ids))
    fold = (rank % k)[np.searchsorted(halo_ids, obs.clusters["halo_id"])]
    pred = np.empty(obs.n_views)
    for f in range(k):
        est = get_model(model).fit(obs.subset(fold != f), seed=seed)
        est.save(run_dir / f"fold_{f:02d}.h5")
        pred[fold == f] = est.predict(obs.subset(fold == f))
    true = obs.log10_m200c()
    lines = ["halo_id,los,fold,log10_m200c_true,log10_m200c_pred,n_gal"]
    lines += [f"{obs.clusters['halo_id'][i]},{obs.clusters['los'][i]},{fold[i]},{true[i]:.6f},"
              f"{pred[i]:.6f},{obs.n_gal[i]}" for i in range(obs.n_views)]
    (run_dir / "settings.json").write_text(json.dumps({
        "model": model, "model_settings": {}, "observations": str(obs_path or ""),
        "obs_settings": obs.settings, "folds": k, "seed": seed, "fold_scheme": "rank mod k"}))
    (run_dir / "predictions.csv").write_text("\n".join(lines) + "\n")
    return run_dir


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    rng = np.random.default_rng(7)
    obs = synthetic_views(rng, n_halos=1000, richness=60.0, n_interlopers=1.0)
    tmp = tmp_path_factory.mktemp("run")
    obs_path = write_observations(obs, tmp / "obs.h5")
    return make_run(tmp / "run", obs, obs_path=obs_path), obs


def test_bundle_round_trip_and_ensemble(run_folder, tmp_path):
    run, obs = run_folder
    b = make_bundle(run, tmp_path / "b.h5")
    back = load_bundle(tmp_path / "b.h5")
    assert back.model_name == "msigma" and len(back.models) == 5
    assert back.obs_settings["aperture"] == 1.6 and back.obs_settings["vcut"] == 2200.0
    dom = back.domain
    assert 13.6 <= dom["log10_m200c"][0] < dom["log10_m200c"][1] <= 15.1
    assert dom["sigma_v"] is not None and dom["sigma_v"][0] < dom["sigma_v"][1]
    assert dom["redshift"] == pytest.approx(0.117)
    sub = obs.subset(np.arange(20))
    res, res2 = b.predict(sub), back.predict(sub)
    folds = np.vstack([m.predict(sub) for m in back.models])
    np.testing.assert_allclose(res["log10_m200c_mean"], folds.mean(axis=0))
    for p in ("p2_5", "p16", "p50", "p84", "p97_5"):
        np.testing.assert_allclose(res[f"log10_m200c_{p}"], res2[f"log10_m200c_{p}"])
    q = np.column_stack([res[f"log10_m200c_{p}"] for p in ("p2_5", "p16", "p50", "p84", "p97_5")])
    assert np.all(np.diff(q, axis=1) >= 0), "percentiles must be ordered"
    assert np.all(q[:, 3] - q[:, 1] > 0.05), "a 68% interval of M-sigma cannot be that narrow"


def test_quantile_table_follows_local_scatter():
    rng = np.random.default_rng(3)
    pred = rng.uniform(14, 15, 4000)
    scale = np.where(pred < 14.5, 0.1, 0.3)  # heteroscedastic residuals
    res = rng.normal(0.05, scale)
    grid, table = quantile_table(pred, res, k_neighbors=300, percentiles=PERCENTILES)
    lo = table[grid < 14.3]
    hi = table[grid > 14.7]
    assert np.median(lo[:, 3] - lo[:, 1]) == pytest.approx(0.2, abs=0.04)
    assert np.median(hi[:, 3] - hi[:, 1]) == pytest.approx(0.6, abs=0.1)
    assert np.median(table[:, 2]) == pytest.approx(0.05, abs=0.03)


def test_coverage_cross_fit_is_honest(run_folder, tmp_path):
    run, _ = run_folder
    res = coverage(run, figure=tmp_path / "cov.png")
    assert res["scheme"] == "cross-fit by fold" and res["method"] == "neyman"
    assert res["n_views"] == 3000
    assert res["coverage_68"] == pytest.approx(0.68, abs=0.03)
    assert res["coverage_95"] == pytest.approx(0.95, abs=0.02)
    assert (tmp_path / "cov.png").stat().st_size > 1000
    judged = [b for b in res["bins_true"] if b.get("judged")]
    assert len(judged) >= 4
    for b in judged:  # every true-mass bin, edges included (2.5 standard errors)
        assert abs(b["coverage_68"] - 0.68) < 2.5 * b["se_68"] + 0.01, b
        assert abs(b["coverage_95"] - 0.95) < 2.5 * b["se_95"] + 0.01, b


def test_knn_pred_method_is_calibrated_in_predicted_mass(run_folder):
    run, _ = run_folder
    res = coverage(run, method="knn_pred")
    assert res["coverage_68"] == pytest.approx(0.68, abs=0.03)
    for b in (b for b in res["bins_pred"] if b.get("judged")):
        assert abs(b["coverage_68"] - 0.68) < 2.5 * b["se_68"] + 0.02, b


def test_neyman_belt_inversion_recovers_truth():
    """With pred = true + N(0, 0.1) the belt gives mu -/+ 0.1 in the middle of the range."""
    from dynmass.bundle import apply_intervals, calibrate

    rng = np.random.default_rng(5)
    true = rng.uniform(13.5, 15.5, 20000)
    pred = true + rng.normal(0, 0.1, true.size)
    grid, table = calibrate(pred, true, "neyman", 1000)
    q = apply_intervals(np.array([14.5]), grid, table, "neyman")[0]
    np.testing.assert_allclose(q, 14.5 + 0.1 * np.array([-1.96, -1, 0, 1, 1.96]), atol=0.02)
    # beyond the calibrated range the masses are clipped to it
    assert apply_intervals(np.array([17.0]), grid, table, "neyman")[0, 2] <= 15.5


def test_overconfident_calibration_shows_under_coverage(run_folder):
    """Intervals calibrated on shrunken residuals must miss the truth far too often."""
    from dynmass.bundle import interpolate_quantiles, read_predictions

    run, _ = run_folder
    cal = read_predictions(run / "predictions.csv")
    grid, table = quantile_table(cal.pred, 0.3 * cal.residual)
    q = cal.pred[:, None] + interpolate_quantiles(cal.pred, grid, table)
    inside = (cal.true >= q[:, 1]) & (cal.true <= q[:, 3])
    assert inside.mean() < 0.45
    grid, table = quantile_table(cal.pred, cal.residual)
    q = cal.pred[:, None] + interpolate_quantiles(cal.pred, grid, table)
    inside = (cal.true >= q[:, 1]) & (cal.true <= q[:, 3])
    assert inside.mean() == pytest.approx(0.68, abs=0.04)  # in-sample: nominal


def test_single_fold_run_splits_by_halo(run_folder):
    from dynmass.bundle import Calibration, read_predictions

    run, _ = run_folder
    cal = read_predictions(run / "predictions.csv")
    one = make_bundle(run)
    one.calibration = Calibration(pred=cal.pred, true=cal.true, fold=np.zeros_like(cal.fold),
                                  halo_id=cal.halo_id, los=cal.los, n_gal=cal.n_gal)
    res = coverage(one, seed=1)
    assert res["scheme"] == "two random halves by halo"
    assert 0.6 < res["coverage_68"] < 0.76


def test_bad_runs_and_files(run_folder, tmp_path):
    run, _ = run_folder
    with pytest.raises(InputError, match="settings.json"):
        make_bundle(tmp_path)
    incomplete = tmp_path / "inc"
    incomplete.mkdir()
    (incomplete / "settings.json").write_text((run / "settings.json").read_text())
    with pytest.raises(InputError, match="predictions.csv"):
        make_bundle(incomplete)
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"certainly not HDF5")
    with pytest.raises(InputError, match="foreign.h5"):
        load_bundle(foreign)
    with pytest.raises(InputError, match="dynmass bundle"):
        load_bundle(run / "fold_00.h5")


def test_cli_bundle_with_coverage(run_folder, tmp_path, capsys):
    from dynmass.cli import main

    run, _ = run_folder
    out = tmp_path / "model.h5"
    rc = main(["bundle", str(run), "-o", str(out), "--coverage"])
    assert rc in (0, 1)
    assert out.exists() and (tmp_path / "model_coverage.png").exists()
    res = json.loads((tmp_path / "model_coverage.json").read_text())
    assert rc == (0 if res["passed"] else 1)
    assert "coverage_68" in capsys.readouterr().out


def pulled_views(rng: np.random.Generator, n_hosts: int, n_los: int = 4):
    """Toy learner output: pulled towards the middle of 13.5-15.0, hardest at the edges.

    Every host has its own offset (shared by its lines of sight) plus a per-view error, as a
    real learner has; the pull ``-0.25 x^3`` (x = true - 14.25) is 0.1 dex at the edges.
    """
    true_h = rng.uniform(13.5, 15.0, n_hosts)
    host_off = rng.normal(0, 0.06, n_hosts)
    true = np.repeat(true_h, n_los)
    host = np.repeat(np.arange(n_hosts), n_los)
    x = true - 14.25
    pred = true - 0.25 * x**3 + host_off[host] + rng.normal(0, 0.08, true.size)
    return true, pred, host


def test_belt_is_honest_at_the_edges_of_the_range():
    """Calibrated on one toy sample, tested on another: every 0.15-dex bin of true mass,
    the two biased edge bins included, covers 68% / 95% within 3 standard errors."""
    from dynmass.bundle import apply_intervals, belt_table

    rng = np.random.default_rng(11)
    t_cal, p_cal, h_cal = pulled_views(rng, 3000)
    t_test, p_test, h_test = pulled_views(rng, 3000)
    grid, table = belt_table(t_cal, p_cal, h_cal)
    q = apply_intervals(p_test, grid, table, "neyman")
    in68 = (t_test >= q[:, 1]) & (t_test <= q[:, 3])
    in95 = (t_test >= q[:, 0]) & (t_test <= q[:, 4])
    edges = np.linspace(13.5, 15.0, 11)
    idx = np.digitize(t_test, edges) - 1
    for b in range(10):
        m = idx == b
        n_h = np.unique(h_test[m]).size  # hosts, not views, are independent
        se68, se95 = np.sqrt(0.68 * 0.32 / n_h), np.sqrt(0.95 * 0.05 / n_h)
        assert abs(in68[m].mean() - 0.68) < 3 * se68, (edges[b], in68[m].mean())
        assert abs(in95[m].mean() - 0.95) < 3 * se95 + 0.005, (edges[b], in95[m].mean())


def test_belt_needs_enough_hosts():
    from dynmass.bundle import belt_table, calibrated_range

    rng = np.random.default_rng(2)
    true = np.repeat(rng.uniform(14, 15, 30), 40)  # 1,200 views of only 30 hosts
    host = np.repeat(np.arange(30), 40)
    pred = true + rng.normal(0, 0.1, true.size)
    with pytest.raises(InputError, match="hosts"):
        belt_table(true, pred, host, min_hosts=25, max_halfwidth=0.25)
    with pytest.raises(InputError, match="calibration hosts"):
        calibrated_range(true, host, [14, 15], min_hosts=25)
    lo, hi = calibrated_range(true, host, [14.0, 15.0], min_hosts=5, edge_margin=0.2)
    hosts_mass = np.sort(true[::40])
    assert lo == pytest.approx(max(14.2, hosts_mass[4])) and hi == pytest.approx(min(14.8, hosts_mass[-5]))


def _with_universe(obs, sha: str):
    obs.settings = {**obs.settings, "universe_sha256": sha}
    return obs


@pytest.fixture(scope="module")
def independent_files(tmp_path_factory):
    """A training run on universe 'A' and views of universes 'B' (calibration), 'C' (test)."""
    tmp = tmp_path_factory.mktemp("indep")
    rng = np.random.default_rng(21)
    train = _with_universe(synthetic_views(rng, n_halos=600, richness=60.0, n_interlopers=1.0), "A")
    run = make_run(tmp / "run", train, obs_path=write_observations(train, tmp / "train.h5"))
    files = {}
    for name, n in (("B", 1500), ("C", 800)):
        obs = _with_universe(synthetic_views(rng, n_halos=n, richness=60.0, n_interlopers=1.0), name)
        files[name] = write_observations(obs, tmp / f"obs_{name}.h5")
    return run, files, train


def test_independent_calibration_and_test(independent_files, tmp_path):
    run, files, _ = independent_files
    b = make_bundle(run, tmp_path / "b.h5", calibration_observations=[files["B"]])
    back = load_bundle(tmp_path / "b.h5")
    assert back.interval["residuals"].startswith("fold-ensemble")
    assert back.interval["files"][0]["universe_sha256"] == "B"
    assert back.interval["n_calibration_hosts"] == 1500
    assert len(back.calibration.pred) == 4500
    lo, hi = back.domain["log10_m200c_calibrated"]
    t_lo, t_hi = back.domain["log10_m200c"]
    assert t_lo + 0.2 <= lo < hi <= t_hi - 0.2
    # calibration views carry the ensemble mean, not single-fold predictions
    from dynmass.observations import read_observations

    obs_b = read_observations(files["B"])
    ens = np.mean([m.predict(obs_b) for m in b.models], axis=0)
    np.testing.assert_allclose(back.calibration.pred, ens)
    res = coverage(back, observations=[files["C"]], figure=tmp_path / "c.png")
    assert res["scheme"] == "independent test views" and res["n_views"] == 2400
    assert res["coverage_68"] == pytest.approx(0.68, abs=0.03)
    assert res["coverage_95"] == pytest.approx(0.95, abs=0.02)
    judged = [x for x in res["bins_true"] if x.get("judged")]
    assert len(judged) >= 3
    for x in judged:
        assert abs(x["coverage_68"] - 0.68) < 3 * x["se_68"] + 0.01, x
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_calibration_and_test_views_must_be_independent(independent_files, tmp_path):
    run, files, train = independent_files
    with pytest.raises(InputError, match="universe"):
        make_bundle(run, calibration_observations=[write_observations(train, tmp_path / "a.h5")])
    b = make_bundle(run, calibration_observations=[files["B"]])
    with pytest.raises(InputError, match="coverage test needs independent hosts"):
        coverage(b, observations=[files["B"]])
    with pytest.raises(InputError, match="needs a bundle"):
        coverage(run, observations=[files["C"]])


def test_calibration_views_observed_otherwise_are_refused(independent_files, tmp_path):
    from dynmass.errors import SettingsMismatchError

    run, _, _ = independent_files
    rng = np.random.default_rng(4)
    other = {**SETTINGS, "redshift": 0.3}
    obs = _with_universe(synthetic_views(rng, n_halos=200, settings=other), "D")
    path = write_observations(obs, tmp_path / "z03.h5")
    with pytest.raises(SettingsMismatchError, match="redshift") as err:
        make_bundle(run, calibration_observations=[path])
    assert "z03.h5" in str(err.value)


def test_cli_bundle_calibrate_and_test_on(independent_files, tmp_path, capsys):
    from dynmass.cli import main

    run, files, _ = independent_files
    out = tmp_path / "m.h5"
    rc = main(["bundle", str(run), "-o", str(out), "--calibrate-on", str(files["B"]),
               "--test-on", str(files["C"]), "--coverage"])
    res = json.loads((tmp_path / "m_coverage.json").read_text())
    cross = json.loads((tmp_path / "m_coverage_crossfit.json").read_text())
    assert res["scheme"] == "independent test views"
    assert cross["scheme"] == "cross-fit by fold"
    assert rc == (0 if res["passed"] and cross["passed"] else 1)
    rc2 = main(["coverage", str(out), str(files["C"]), "-o", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["coverage_68"] == res["coverage_68"] and rc2 == (0 if res["passed"] else 1)
    assert "independent test views" in capsys.readouterr().out
