"""Survey-aware masses: the declared survey (``dynmass.survey_inputs``), a flow conditioned on
it (``dynmass.posterior`` with ``survey_inputs``) and its columns in ``dynmass predict``.

Toy survey world: true log10 M uniform in [13.5, 15.0]; intrinsic richness
``lambda = 80 (M / 10^14.25)^0.9``; a survey targets a fraction ``r`` (log-uniform 0.05-1) of
the galaxies, ``N ~ Poisson(r lambda)`` (views with N >= 10 kept); the dynamics summary is
``mu = true + N(0, 0.8 / sqrt(N))``. Knowing ``r``, ``N / r`` is a mass proxy (Poisson scatter
``0.43 / (0.9 sqrt(N))`` dex), so a flow told the survey is narrower than one that is not.

Measured over seeds 0-3 (fit on 4000 views, 30 epochs; checked on 2000;
a loop over ``_fitted(seed)``): survey-aware coverage_68 0.649-0.685,
coverage_95 0.942-0.966; scatter of the median 0.079-0.081 dex (aware) against 0.137-0.139
(blind), ratio 0.573-0.584; the median at a declared rate 10x too high (capped at 1) moves by
-0.77 to -0.83 dex for views with r < 0.1. Bounds: coverage_68 in (0.62, 0.73), coverage_95
in (0.925, 0.975), ratio < 0.8, mis-declared shift < -0.3.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table

from dynmass._io import file_sha256
from dynmass.errors import InputError
from dynmass.posterior import fit_posterior, load_posterior
from dynmass.posterior_check import evaluate_posterior
from dynmass.survey_inputs import check_survey_domain, parse_survey, survey_of_views


def _world(rng: np.random.Generator, n: int, occupation: float = 1.0):
    true, rate, n_gal = [], [], []
    while len(true) < n:
        t = rng.uniform(13.5, 15.0, 2 * n)
        r = 10 ** rng.uniform(np.log10(0.05), 0, 2 * n)
        k = rng.poisson(r * occupation * 80 * 10 ** (0.9 * (t - 14.25)))
        ok = k >= 10
        true += t[ok].tolist()
        rate += r[ok].tolist()
        n_gal += k[ok].tolist()
    true, rate, n_gal = (np.asarray(a[:n], float) for a in (true, rate, n_gal))
    mu = true + rng.normal(0, 0.8 / np.sqrt(n_gal))
    return mu, n_gal, true, rate


@functools.cache
def _fitted(seed: int = 0):
    rng = np.random.default_rng(seed)
    mu, n_gal, true, rate = _world(rng, 4000)
    aware = fit_posterior(mu, n_gal, true, survey={"sampling_rate": rate}, seed=seed, epochs=30)
    blind = fit_posterior(mu, n_gal, true, seed=seed, epochs=30)
    return aware, blind, _world(rng, 2000)


def test_survey_aware_flow_is_calibrated_and_uses_richness():
    aware, blind, (mu, n_gal, true, rate) = _fitted()
    assert aware.settings.survey_inputs == ("sampling_rate",)
    lo, hi = aware.survey_domain["sampling_rate"]
    assert 0.05 <= lo < 0.06 and 0.95 < hi <= 1.0
    r = evaluate_posterior(aware, mu, n_gal, true, seed=0, survey={"sampling_rate": rate})
    assert 0.62 < r["coverage_68"] < 0.73 and 0.925 < r["coverage_95"] < 0.975
    q_aware = aware.quantiles(mu, n_gal, (50,), survey={"sampling_rate": rate})[:, 0]
    q_blind = blind.quantiles(mu, n_gal, (50,))[:, 0]
    assert np.std(q_aware - true) < 0.8 * np.std(q_blind - true)
    # the richness is read against the declared rate: a rate 10x too high reads far lighter
    wrong = aware.quantiles(mu, n_gal, (50,), survey={"sampling_rate": np.minimum(rate * 10, 1)})
    low = rate < 0.1
    assert np.median(wrong[low, 0] - q_aware[low]) < -0.3


def test_occupation_uncertainty_keeps_a_sky_with_3x_fewer_galaxies_honest():
    # the toy sky's clusters hold a third of the mock's galaxies at fixed mass (0.48 dex,
    # 1.6 sigma of occupation_dex = 0.3). Measured over seeds 0-3: median p50 - true on
    # that sky -0.402..-0.374 (occupation trusted), -0.072..-0.043 (occupation_dex 0.3); 68%
    # coverage there 0.004-0.009 / 0.468-0.497; on the mock's own occupation the 0.3-dex flow
    # covers 0.699-0.710 with a scatter 1.43-1.46x the trusting flow's (richness counts less).
    aware, _, (mu, n_gal, true, rate) = _fitted()
    rng = np.random.default_rng(0)
    fit = _world(rng, 4000)
    loose = fit_posterior(*fit[:3], survey={"sampling_rate": fit[3]}, seed=0, epochs=30,
                          occupation_dex=0.3)
    assert loose.settings.occupation_dex == 0.3 and aware.settings.occupation_dex == 0.0
    s_mu, s_n, s_true, s_rate = _world(np.random.default_rng(100), 2000, occupation=1 / 3)

    def p16_50_84(post, m, n, r):
        return post.quantiles(m, n, (16, 50, 84), survey={"sampling_rate": r})

    q_trust, q_loose = (p16_50_84(p, s_mu, s_n, s_rate) for p in (aware, loose))
    assert np.median(q_trust[:, 1] - s_true) < -0.3
    assert abs(np.median(q_loose[:, 1] - s_true)) < 0.15
    assert np.mean((q_loose[:, 0] <= s_true) & (s_true <= q_loose[:, 2])) > 0.35
    q_own = p16_50_84(loose, mu, n_gal, rate)
    assert 0.64 < np.mean((q_own[:, 0] <= true) & (true <= q_own[:, 2])) < 0.76
    q_own_trust = p16_50_84(aware, mu, n_gal, rate)
    assert np.std(q_own[:, 1] - true) > 1.2 * np.std(q_own_trust[:, 1] - true)
    with pytest.raises(InputError, match="occupation_dex must be >= 0"):
        fit_posterior(*fit[:3], occupation_dex=-0.1)


def test_survey_aware_flow_needs_its_survey_and_survives_save(tmp_path):
    aware, _, (mu, n_gal, _, rate) = _fitted()
    with pytest.raises(InputError, match="declare the survey's sampling_rate"):
        aware.quantiles(mu[:5], n_gal[:5])
    with pytest.raises(InputError, match="sampling_rate must be finite and > 0"):
        aware.quantiles(mu[:5], n_gal[:5], survey={"sampling_rate": 0.0})
    aware.meta = {"bundle_sha256": "abc"}
    aware.save(tmp_path / "a.h5")
    back = load_posterior(tmp_path / "a.h5")
    assert back.settings.survey_inputs == ("sampling_rate",) and back.meta == aware.meta
    assert back.survey_domain == aware.survey_domain
    sv = {"sampling_rate": rate[:20]}
    np.testing.assert_allclose(back.quantiles(mu[:20], n_gal[:20], survey=sv),
                               aware.quantiles(mu[:20], n_gal[:20], survey=sv), atol=1e-6)


def test_fit_refuses_unknown_or_constant_survey_inputs():
    mu, n_gal, true, rate = _world(np.random.default_rng(3), 200)
    with pytest.raises(InputError, match="unknown survey input"):
        fit_posterior(mu, n_gal, true, survey={"colour_cut": rate})
    with pytest.raises(InputError, match="velocity_error is the same for every"):
        fit_posterior(mu, n_gal, true, survey={"velocity_error": np.zeros_like(rate)})


def test_parse_and_check_a_declared_survey():
    assert parse_survey(None) == {}
    assert parse_survey({"velocity_error": "30"}) == {"velocity_error": 30.0}
    assert parse_survey(["redshift=0.3", " sampling_rate = 0.5"]) == {"redshift": 0.3,
                                                                       "sampling_rate": 0.5}
    for bad, needle in ((["sampling_rate"], "not NAME=VALUE"), (["rate=0.5"], "unknown survey"),
                        (["sampling_rate=abc"], "not a number"),
                        (["sampling_rate=nan"], "finite"),
                        (["sampling_rate=0.5", "sampling_rate=0.4"], "twice")):
        with pytest.raises(InputError, match=needle):
            parse_survey(bad)
    dom = {"sampling_rate": (0.05, 1.0), "selection_limit": (9.5, 10.5)}
    assert check_survey_domain({"sampling_rate": 1.0, "selection_limit": 9.5}, dom) == []
    assert check_survey_domain({"selection_limit": np.array([10.0, 11.0])}, dom) == [
        "selection_limit 11 outside the trained range 9.5-10.5"]


def test_survey_of_views_reads_columns_settings_and_defaults():
    obs = SimpleNamespace(  # what survey_of_views reads of an Observations
        n_views=2,
        clusters={"m200c": np.array([1e14, 2e14]), "survey_sampling_rate": np.array([0.2, 0.7])},
        settings={"redshift": 0.3, "velocity_error": 25.0, "completeness_edge": 1.0,
                  "selection_limit": {"dist": "uniform", "lo": 9.5, "hi": 10.5}},
    )
    got = survey_of_views(obs, defaults={"selection_limit": 9.5})
    np.testing.assert_array_equal(got["sampling_rate"], [0.2, 0.7])
    np.testing.assert_array_equal(got["velocity_error"], [25.0, 25.0])
    np.testing.assert_array_equal(got["redshift"], [0.3, 0.3])
    np.testing.assert_array_equal(got["selection_limit"], [9.5, 9.5])  # a Draw, no column
    with pytest.raises(InputError, match="record no selection_limit"):
        survey_of_views(obs, ["selection_limit"])


def _bundle_and_members(tmp_path):
    from dynmass.bundle import make_bundle
    from dynmass.cosmology import MDPL2, to_astropy
    from dynmass.testing.runs import write_fold_run
    from dynmass.testing.sky import cluster_box, place_on_sky
    from dynmass.testing.worlds import cylinder_views

    views = cylinder_views(np.random.default_rng(1), n_halos=300, richness=60.0)
    bundle = make_bundle(write_fold_run(tmp_path / "run", views), tmp_path / "model.h5")
    dx, dy, dz, vp = cluster_box(np.random.default_rng(2), 500.0, 60, 100)
    ra, dec, z = place_on_sky(dx, dy, dz, vp, 150.0, 2.2, 0.117, to_astropy(MDPL2))
    return bundle, Table({"ra": ra, "dec": dec, "z": z})


def test_predict_adds_survey_aware_columns(tmp_path):
    """A survey-aware posterior of a toy bundle in ``predict_members``: columns, refusals
    (missing input, out-of-range survey, another bundle's posterior), flag when allowed."""
    from dynmass.predict import predict_members

    bundle, members = _bundle_and_members(tmp_path)
    aware, _, _ = _fitted()
    aware.meta = {"bundle_sha256": file_sha256(bundle.path)}
    out = predict_members(members, bundle, survey=["sampling_rate=0.5"], posterior=aware)
    q = [out[f"log10_m200c_survey_{p}"][0] for p in ("p2_5", "p16", "p50", "p84", "p97_5")]
    assert np.all(np.isfinite(q)) and np.all(np.diff(q) > 0)
    assert out["log10_m200c_msun_survey_p50"][0] == pytest.approx(
        q[2] - np.log10(out.meta["h"]))
    assert out.meta["survey"]["declared"] == {"sampling_rate": 0.5}
    assert out.meta["survey"]["occupation_dex"] == 0.0
    assert "survey_extrapolated" not in out["flags"][0]
    assert out["survey_minus_dynamics_dex"][0] == pytest.approx(q[2] - out["log10_m200c_p50"][0])
    tension = not (out["log10_m200c_p2_5"][0] <= q[2] <= out["log10_m200c_p97_5"][0])
    assert ("survey_tension" in out["flags"][0]) == tension
    assert out.meta["survey"]["n_survey_tension"] == int(tension)
    # the same cluster declared as seen at a lower rate is read as a richer, heavier one
    low = predict_members(members, bundle, survey=["sampling_rate=0.1"], posterior=aware)
    assert low["log10_m200c_survey_p50"][0] > q[2] + 0.2
    with pytest.raises(InputError, match="declare the survey's sampling_rate"):
        predict_members(members, bundle, survey=["velocity_error=10"], posterior=aware)
    with pytest.raises(InputError, match="sampling_rate 0.01 outside the trained range"):
        predict_members(members, bundle, survey=["sampling_rate=0.01"], posterior=aware)
    flagged = predict_members(members, bundle, survey=["sampling_rate=0.01"], posterior=aware,
                              allow_extrapolation=True)
    assert "survey_extrapolated" in flagged["flags"][0]
    aware.meta = {"bundle_sha256": "0" * 64}
    with pytest.raises(InputError, match="trained on another model"):
        predict_members(members, bundle, survey=["sampling_rate=0.5"], posterior=aware)
    with pytest.raises(InputError, match="no survey"):
        predict_members(members, bundle, posterior=aware)


def test_cli_posterior_with_survey_inputs_and_predict_with_survey(tmp_path, capsys):
    """``dynmass posterior --survey-inputs sampling_rate --occupation-dex 0.2`` on a toy
    bundle whose views carry a drawn targeting rate (every galaxy of a view kept with that
    rate): the flow records its inputs, occupation uncertainty and bundle, the report scores
    per bin of rate and over the occupation uncertainty; ``dynmass predict --survey`` with that
    flow writes the survey-aware columns and records the declared survey."""
    import json

    from dynmass.cli import main
    from dynmass.testing.runs import toy_universe_files
    from dynmass.testing.worlds import cylinder_views

    rng = np.random.default_rng(5)

    def surveyed(n: int):  # every galaxy of a view kept with the view's drawn rate
        full = cylinder_views(rng, n_halos=n, richness=80.0, n_interlopers=1.0)
        rate = 10 ** rng.uniform(np.log10(0.1), 0, full.n_views)
        obs = full.select_galaxies(rng.random(len(full.R)) < rate[full.view_of_galaxy])
        obs.clusters["survey_sampling_rate"] = rate
        return obs.subset(np.flatnonzero(obs.n_gal >= 5))

    paths, _ = toy_universe_files(tmp_path, {name: surveyed(n) for name, n in
                                             (("T", 300), ("A", 700), ("B", 500))})
    out = tmp_path / "post"
    code = main(["posterior", str(tmp_path / "b.h5"), "--calibrate-on", str(paths["A"]),
                 "--test-on", str(paths["B"]), "-o", str(out), "--epochs", "5",
                 "--survey-inputs", "sampling_rate", "--occupation-dex", "0.2"])
    assert code in (0, 1)
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["results"]["survey_inputs"] == ["sampling_rate"]
    # judged over the declared occupation uncertainty, reported on the views as they are too
    assert rep["summary"]["occupation_dex"] == 0.2
    assert {"flow", "flow_over_occupation"} <= set(rep["summary"])
    post = load_posterior(out.with_suffix(".h5"))
    assert post.settings.survey_inputs == ("sampling_rate",)
    assert post.settings.occupation_dex == 0.2
    assert post.meta["bundle_sha256"] == file_sha256(tmp_path / "b.h5")
    # a cluster given as R, v (no redshift needed: this flow does not read one)
    cl = np.random.default_rng(6)
    members = Table({"R": cl.uniform(0, 1.5, 40), "v": cl.normal(0, 600, 40)})
    members.write(tmp_path / "m.csv")
    capsys.readouterr()
    code = main(["predict", str(tmp_path / "m.csv"), "--model", str(tmp_path / "b.h5"),
                 "--posterior", str(out.with_suffix(".h5")), "--survey", "sampling_rate=0.5",
                 "-o", str(tmp_path / "masses.csv")])
    assert code == 0
    res = Table.read(tmp_path / "masses.csv")
    assert np.isfinite(res["log10_m200c_survey_p50"][0])
    settings = json.loads((tmp_path / "masses.settings.json").read_text())
    assert settings["survey"]["declared"] == {"sampling_rate": 0.5}
    assert settings["survey"]["occupation_dex"] == 0.2
    code = main(["predict", str(tmp_path / "m.csv"), "--model", str(tmp_path / "b.h5"),
                 "--posterior", str(out.with_suffix(".h5")), "--survey", "rate=0.5",
                 "-o", str(tmp_path / "bad.csv")])
    assert code != 0 and "unknown survey input" in capsys.readouterr().err
    assert not (tmp_path / "bad.csv").exists()


def test_shipped_survey_posterior_belongs_to_the_shipped_model():
    """The shipped survey-aware posterior reads the shipped model's ensemble (sha256 match:
    rerun ``make survey-posterior`` after ``make default-model``), all five survey inputs, and
    gives a cluster declared as seen at a tenth of its galaxies a heavier mass than the same
    members declared complete; a cluster without a redshift needs one declared."""
    from dynmass.predict import default_model_path, predict_members
    from dynmass.predict_survey import default_posterior_path

    post = load_posterior(default_posterior_path())
    assert post.meta["bundle_sha256"] == file_sha256(default_model_path())
    assert post.settings.survey_inputs == ("sampling_rate", "completeness_edge",
                                           "selection_limit", "velocity_error", "redshift")
    assert post.settings.occupation_dex == 0.3  # README, Makefile SURVEY_OCCUPATION_DEX
    rng = np.random.default_rng(8)
    members = Table({"R": 1.6 * np.sqrt(rng.random(40)), "v": rng.normal(0, 700, 40)})
    base = ["completeness_edge=1", "selection_limit=9.5", "velocity_error=0"]
    with pytest.raises(InputError, match="declare it"):
        predict_members(members, survey=[*base, "sampling_rate=1"])
    full = predict_members(members, survey=[*base, "sampling_rate=1", "redshift=0.117"])
    tenth = predict_members(members, survey=[*base, "sampling_rate=0.1", "redshift=0.117"])
    # +0.19 dex with the occupation trusted to 0.3 dex (over +0.2 when trusted fully)
    assert tenth["log10_m200c_survey_p50"][0] > full["log10_m200c_survey_p50"][0] + 0.1
    # the dynamics-only mass does not depend on the declared survey
    assert tenth["log10_m200c_p50"][0] == full["log10_m200c_p50"][0]
