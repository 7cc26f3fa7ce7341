"""The survey model of the observing setup: sampling, radial completeness, targets per cluster,
velocity errors, and settings drawn per view (domain randomisation).

Tests of random experiments declare a :class:`~dynmass.testing.StochasticCheck` in
``STOCHASTIC``; their bounds come from the spread of each statistic over seeds measured by
``python tests/calibrate_bounds.py --only test_survey.<name> --seeds 20``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from dynmass import InputError, read_observations, write_observations
from dynmass.errors import SettingsMismatchError
from dynmass.observe import observe
from dynmass.observing import Draw, ObservingSetup, check_same_observing
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.catalogs import halo, make_catalog, members_of, random_universe

BASE = {"min_mass": 1e13, "n_los": 3}


def _universe(seed: int):
    return random_universe(np.random.default_rng(seed), n_halos=24)


def randomised_rates(seed: int, broken: str | None = None) -> dict[str, float]:
    """24 halos x 3 views (world and observe seed ``seed``), sampling rate drawn per view
    log-uniform in [0.1, 1], at least 1 galaxy. Against the same views with every galaxy:
    the z-score of the galaxies kept given each view's recorded rate (binomial), and the
    Kolmogorov-Smirnov distance of the recorded log10 rates from uniform in [-1, 0].
    ``broken``: ``"fixed_half"`` every view sampled at 0.5 but 0.5-1 recorded as drawn,
    ``"uniform"`` rates drawn uniform (not log-uniform) in [0.1, 1]."""
    from scipy.stats import kstest

    cat = _universe(seed)
    full = observe(cat, min_members=1, seed=seed, **BASE)
    dist = Draw("uniform" if broken == "uniform" else "loguniform", 0.1, 1.0)
    setup = ObservingSetup(sampling_rate=0.5 if broken == "fixed_half" else dist, min_members=1)
    obs = observe(cat, setup, seed=seed, **BASE)
    rate = obs.clusters.get("survey_sampling_rate", np.full(obs.n_views, 0.5))
    if broken == "fixed_half":
        rate = np.random.default_rng(seed).uniform(0.5, 1.0, obs.n_views)
    n_full = {(h, los): n for h, los, n in zip(full.clusters["halo_id"], full.clusters["los"],
                                               full.n_gal, strict=True)}
    n0 = np.array([n_full[(h, los)] for h, los in zip(obs.clusters["halo_id"],
                                                      obs.clusters["los"], strict=True)])
    expected, var = np.sum(n0 * rate), np.sum(n0 * rate * (1 - rate))
    ks = kstest(np.log10(rate), "uniform", args=(-1.0, 1.0)).statistic
    return {"kept_z": float((obs.n_gal.sum() - expected) / np.sqrt(var)), "ks": float(ks)}


def radial_completeness(seed: int, broken: str | None = None) -> dict[str, float]:
    """One halo with 4,000 members spread over the aperture (seed ``seed``), completeness 1 at
    the centre and 0.2 at the aperture: the fraction kept in R < 0.4 and 1.2-1.6 Mpc/h (the
    linear profile predicts 0.88 and 0.32 on average over each ring's area), as z-scores.
    ``broken``: ``"flat"`` completeness 1 everywhere, ``"inverted"`` 0.2 at the centre."""
    rng = np.random.default_rng(seed)
    h = halo(1, (30.0, 30.0, 30.0), r=2.0)
    cat = make_catalog([h], members_of(rng, h, 4000, scale=0.8, sigma=300.0))
    full = observe(cat, min_mass=1e13, n_los=1, seed=seed)
    edge = 1.0 if broken == "flat" else 0.2
    obs = observe(cat, ObservingSetup(completeness_edge=edge), min_mass=1e13, n_los=1,
                  seed=seed)
    R0, R1 = full.R, obs.R
    if broken == "inverted":
        R1 = 1.6 - R1
    out = {}
    for name, lo, hi in (("inner", 0.0, 0.4), ("outer", 1.2, 1.6)):
        n0 = np.sum((R0 >= lo) & (R0 < hi))
        r = R0[(R0 >= lo) & (R0 < hi)]
        p = 1 - 0.8 * r / 1.6
        out[f"{name}_z"] = float((np.sum((R1 >= lo) & (R1 < hi)) - p.sum())
                                 / np.sqrt(np.sum(p * (1 - p))))
        assert n0 > 100
    return out


def velocity_errors(seed: int, broken: str | None = None) -> dict[str, float]:
    """24 halos x 3 views (seed ``seed``) with velocity errors of 150 km/s. For each galaxy
    seen in the same view with and without errors: the standard deviation of the difference
    over 150 km/s (``sd_ratio``) and the z-score of its mean (``mean_z``). ``broken``:
    ``"none"`` no errors, ``"double"`` 300 km/s errors."""
    cat = _universe(seed)
    full = observe(cat, min_members=5, seed=seed, **BASE)
    err = {"none": 0.0, "double": 300.0}.get(broken or "", 150.0)
    obs = observe(cat, ObservingSetup(velocity_error=err, min_members=5), seed=seed, **BASE)
    ref = {(int(j), int(g)): v for j, g, v in zip(full.view_of_galaxy, full.galaxy_index,
                                                    full.v, strict=True)}
    dv = np.array([v - ref[(int(j), int(g))] for j, g, v in zip(
        obs.view_of_galaxy, obs.galaxy_index, obs.v, strict=True) if (int(j), int(g)) in ref])
    assert dv.size > 500 and full.n_views == obs.n_views
    return {"sd_ratio": float(np.std(dv) / 150.0),
            "mean_z": float(np.mean(dv) / (150.0 / np.sqrt(dv.size)))}


STOCHASTIC = {
    "randomised_rates": StochasticCheck(
        run=randomised_rates, seed=0,
        bounds={"kept_z": Bound(-6.0, 6.0), "ks": Bound(hi=0.21)},
        broken={b: partial(randomised_rates, broken=b) for b in ("fixed_half", "uniform")}),
    "radial_completeness": StochasticCheck(
        run=radial_completeness, seed=0,
        bounds={"inner_z": Bound(-5.5, 5.5), "outer_z": Bound(-5.5, 5.5)},
        broken={b: partial(radial_completeness, broken=b) for b in ("flat", "inverted")}),
    "velocity_errors": StochasticCheck(
        run=velocity_errors, seed=0,
        bounds={"sd_ratio": Bound(0.85, 1.15), "mean_z": Bound(-5.5, 5.5)},
        broken={b: partial(velocity_errors, broken=b) for b in ("none", "double")}),
}


def test_rates_drawn_per_view():
    """Each view's sampling rate is drawn log-uniform and the view keeps that fraction.

    Measured over seeds 0-19:
    kept_z: mean -0.043, sd 1.1, range [-3.35, 1.62]; bound (-6, 6), 5.3 sd from the mean.
    ks: mean 0.095, sd 0.022, range [0.065, 0.138]; bound (-inf, 0.21), 5.3 sd.
    Broken variants caught (seeds 0-2): fixed_half 3/3, uniform 3/3.
    """
    STOCHASTIC["randomised_rates"].check()


def test_radial_completeness_profile():
    """Completeness falls linearly from the centre to ``completeness_edge`` at the aperture.

    Measured over seeds 0-19:
    inner_z: mean 0.041, sd 0.8, range [-1.47, 1.46]; bound (-5.5, 5.5), 6.8 sd from the mean.
    outer_z: mean -0.009, sd 0.96, range [-1.42, 1.48]; bound (-5.5, 5.5), 5.7 sd.
    Broken variants caught (seeds 0-2): flat 3/3, inverted 3/3.
    """
    STOCHASTIC["radial_completeness"].check()


def test_velocity_errors_are_gaussian_of_declared_size():
    """Each velocity carries a Gaussian error of the declared size, centred on zero.

    Measured over seeds 0-19:
    sd_ratio: mean 0.999, sd 0.015, range [0.964, 1.028]; bound (0.85, 1.15), 9.9 sd.
    mean_z: mean -0.17, sd 1.0, range [-1.94, 1.74]; bound (-5.5, 5.5), 5.3 sd.
    Broken variants caught (seeds 0-2): none 3/3, double 3/3.
    """
    STOCHASTIC["velocity_errors"].check()


def test_n_targets_caps_every_view():
    cat = _universe(1)
    full = observe(cat, min_members=1, seed=1, **BASE)
    obs = observe(cat, ObservingSetup(n_targets=12, min_members=1), seed=1, **BASE)
    assert obs.n_views == full.n_views
    assert np.all(obs.n_gal == np.minimum(full.n_gal, 12))
    assert np.any(full.n_gal > 12)


def test_same_seed_same_views_other_seed_other_views():
    setup = ObservingSetup(sampling_rate=Draw("loguniform", 0.05, 1.0), velocity_error=50.0,
                           completeness_edge=Draw("uniform", 0.5, 1.0), min_members=1)
    cat = _universe(2)
    a, b = (observe(cat, setup, seed=4, **BASE) for _ in range(2))
    c = observe(cat, setup, seed=5, **BASE)
    np.testing.assert_array_equal(a.v, b.v)
    np.testing.assert_array_equal(a.clusters["survey_sampling_rate"],
                                  b.clusters["survey_sampling_rate"])
    assert not np.array_equal(a.clusters["survey_sampling_rate"][:5],
                              c.clusters["survey_sampling_rate"][:5])


def test_default_setup_records_no_survey_columns():
    obs = observe(_universe(3), seed=0, **BASE)
    assert "survey_sampling_rate" not in obs.clusters
    assert obs.settings["velocity_error"] == 0.0 and obs.settings["n_targets"] is None


def test_settings_round_trip_and_mismatch(tmp_path):
    setup = ObservingSetup(sampling_rate=Draw("loguniform", 0.1, 1.0), velocity_error=80.0,
                           n_targets=30, min_members=3)
    obs = observe(_universe(4), setup, seed=0, **BASE)
    back = read_observations(write_observations(obs, tmp_path / "o.h5"))
    assert ObservingSetup.from_settings(back.settings) == setup
    np.testing.assert_array_equal(back.clusters["survey_sampling_rate"],
                                  obs.clusters["survey_sampling_rate"])
    other = setup.replace(velocity_error=0.0).to_settings()
    with pytest.raises(SettingsMismatchError, match="velocity_error"):
        check_same_observing(back.settings, other, "the training views", tmp_path / "o.h5")
    old_file = {k: v for k, v in setup.to_settings().items() if k != "velocity_error"}
    check_same_observing(old_file, setup.to_settings(), "x", None)  # unrecorded: not compared


def test_views_of_part_of_the_survey_domain_are_accepted_within_it():
    """Calibration and test views may come from one part of the survey domain a model was
    trained over (``survey_within``, as ``read_independent_views`` checks them): complete
    surveys, a narrower draw; not a setting outside the drawn range, another selection
    column or another cylinder."""
    drawn = ObservingSetup(sampling_rate=Draw("loguniform", 0.05, 1.0),
                           completeness_edge=Draw("uniform", 0.5, 1.0),
                           velocity_error=Draw("uniform", 0.0, 100.0),
                           selection_column="log10_mstar",
                           selection_limit=Draw("uniform", 9.5, 10.5)).to_settings()
    full = ObservingSetup(selection_column="log10_mstar", selection_limit=9.5).to_settings()
    narrower = {**full, "sampling_rate": {"dist": "uniform", "lo": 0.2, "hi": 0.5},
                "velocity_error": 100.0}
    for ok in (full, narrower):
        check_same_observing(ok, drawn, "the training views", "f.h5", survey_within=True)
    with pytest.raises(SettingsMismatchError, match="sampling_rate"):
        check_same_observing(full, drawn, "the training views", "f.h5")  # exact match wanted
    for key, value, needle in (("velocity_error", 150.0, "outside the range"),
                               ("selection_limit", 9.4, "outside the range"),
                               ("sampling_rate", {"dist": "uniform", "lo": 0.01, "hi": 0.5},
                                "outside the range"),
                               ("selection_column", "absmag_r", "but the training views"),
                               ("aperture", 2.0, "but the training views")):
        bad = {**full, key: value}
        with pytest.raises(SettingsMismatchError, match=f"{key}.*{needle}"):
            check_same_observing(bad, drawn, "the training views", "f.h5",
                                 survey_within=True)


@pytest.mark.parametrize(("kw", "needle"), [
    ({"sampling_rate": {"dist": "loguniform", "lo": 0.0, "hi": 1.0}}, "dist"),
    ({"sampling_rate": "loguniform:0.1"}, "dist"),
    ({"sampling_rate": "uniform:0.2:1.5"}, "sampling_rate"),
    ({"completeness_edge": 0.0}, "completeness_edge"),
    ({"velocity_error": -5.0}, "velocity_error"),
    ({"n_targets": 0}, "n_targets"),
    ({"n_targets": 2.5}, "n_targets"),
])
def test_bad_survey_settings_name_the_setting(kw, needle):
    with pytest.raises(InputError, match=needle):
        ObservingSetup(**kw)


def test_cli_observe_with_a_survey(tmp_path):
    from dynmass.catalog import write_catalog
    from dynmass.cli import main

    u = write_catalog(_universe(5), tmp_path / "u.h5")
    rc = main(["observe", str(u), "-o", str(tmp_path / "o.h5"), "--min-mass", "1e13",
               "--min-members", "3", "--sampling-rate", "loguniform:0.2:1",
               "--velocity-error", "60", "--n-targets", "20"])
    assert rc == 0
    s = read_observations(tmp_path / "o.h5").settings
    assert s["sampling_rate"] == {"dist": "loguniform", "lo": 0.2, "hi": 1.0}
    assert s["velocity_error"] == 60.0 and s["n_targets"] == 20
