"""Classical estimators (dynmass.models.interlopers, .classical, .caustic): interloper removal,
virial / projected-mass / caustic masses with R200c solved self-consistently, units, failures
counted as NaN by the metrics, save/load, and cross-validation through dynmass.train.

The random experiments are declared in ``STOCHASTIC``; their bounds were set from the spread
of each statistic over seeds 0-19 (``python tests/calibrate_bounds.py --only test_classical``),
quoted in each check's docstring.
"""

from __future__ import annotations

import csv
import json
from functools import cache, partial
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad

from dynmass.cli import main
from dynmass.cosmology import MDPL2, validate_cosmology
from dynmass.errors import InputError
from dynmass.evaluate import format_table
from dynmass.metrics import metrics
from dynmass.models import MODEL_NAMES, get_model, load_model
from dynmass.models import classical as C
from dynmass.models.caustic import Caustic
from dynmass.models.interlopers import biweight, gapper_scale, shifting_gapper, sigma_clip
from dynmass.observations import from_views, write_observations
from dynmass.rundir import Run
from dynmass.testing import Bound, StochasticCheck
from dynmass.train import cross_validate
from dynmass.universe.galaxies import concentration_200c, place_galaxies
from dynmass.universe.massfunction import r200c_comoving

Z = 0.117
#: Toy observing settings: wide enough (comoving Mpc/h, km/s) to hold every member.
SETTINGS = {"aperture": 2.5, "vcut": 4000.0, "redshift": Z, "cosmology": dict(MDPL2)}
CLASSICAL = ("gapper_virial", "gapper_pme", "clip_virial", "clip_pme", "gapper_msigma",
             "caustic")


# ----------------------------------------------------------------------------- toy worlds


def isothermal_views(seed: int, n_views: int = 20) -> tuple:
    """Isothermal toy clusters (Gaussian velocities, sigma 300-1000 km/s, 20-150 members
    uniform in projected radius up to 1.4 physical Mpc/h) plus 1-6 interlopers each, at least
    1500 km/s beyond the fastest member (on one side). Returns the observations and the member
    flags."""
    rng = np.random.default_rng(seed)
    views, member = [], []
    for _ in range(n_views):
        n_mem, n_int = int(rng.integers(20, 151)), int(rng.integers(1, 7))
        v = rng.normal(0.0, rng.uniform(300.0, 1000.0), n_mem)
        side = rng.choice([-1.0, 1.0])
        edge = v.max() if side > 0 else -v.min()
        v_int = side * (edge + 1500.0 + rng.uniform(0.0, 1500.0, n_int))
        r = 1.4 * np.sqrt(rng.random(n_mem + n_int)) * (1 + Z)  # comoving Mpc/h
        views.append((r, np.concatenate([v, v_int])))
        member.append(np.r_[np.ones(n_mem, bool), np.zeros(n_int, bool)])
    obs = from_views(views, {**SETTINGS, "vcut": 1e4})
    return obs, np.concatenate(member)


@cache
def _concentrations() -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(13.5, 15.5, 41)
    return grid, concentration_200c(10**grid, Z, MDPL2)


def nfw_views(seed: int, n_halos: int = 30, n_sat: int = 100, n_interlopers: int = 0,
              lo: float = 14.0, hi: float = 15.0):
    """Toy halos of known M200c (log-uniform in [lo, hi) Msun/h), each seen along z with
    ``n_sat`` satellites placed as in the mock universe (NFW truncated at R200c, isotropic
    Jeans velocities; :func:`dynmass.universe.galaxies.place_galaxies`), plus ``n_interlopers``
    galaxies uniform in the cylinder and in velocity."""
    rng = np.random.default_rng(seed)
    m = 10 ** rng.uniform(lo, hi, n_halos)
    zeros = np.zeros(n_halos)
    halos = {"id": np.arange(n_halos), "x": zeros + 50, "y": zeros + 50, "z": zeros + 50,
             "vx": zeros, "vy": zeros, "vz": zeros, "m200c": m,
             "r200c": r200c_comoving(m, Z, MDPL2)}
    g = place_galaxies(halos, np.zeros(n_halos, bool), np.repeat(np.arange(n_halos), n_sat),
                       100.0, Z, MDPL2, rng, concentration_table=_concentrations())
    views = []
    for h in range(n_halos):
        sel = g["host_id"] == h
        r = np.hypot(g["x"][sel] - 50.0, g["y"][sel] - 50.0)  # comoving Mpc/h
        r_int = SETTINGS["aperture"] * np.sqrt(rng.random(n_interlopers))
        v_int = rng.uniform(-SETTINGS["vcut"], SETTINGS["vcut"], n_interlopers)
        r, v = np.r_[r, r_int], np.r_[g["vz"][sel], v_int]
        cut = (r <= SETTINGS["aperture"]) & (np.abs(v) <= SETTINGS["vcut"])
        views.append((r[cut], v[cut]))
    return from_views(views, SETTINGS, clusters={"m200c": m})


# ----------------------------------------------------------------------------- experiments


def gapper_stats(seed: int, method: str = "gapper", broken: str | None = None
                 ) -> dict[str, float]:
    """Fractions of the members and of the injected interlopers kept by the shifting gapper
    (or 3-sigma clipping) over 20 isothermal toy clusters. ``broken``: ``"no_removal"`` keeps
    everything, ``"tiny_gap"`` uses a 100 km/s gap (clipping: 1 sigma)."""
    obs, member = isothermal_views(seed)
    if broken == "no_removal":
        keep = np.ones(len(member), bool)
    elif method == "gapper":
        keep = shifting_gapper(obs.R / (1 + Z), obs.v, obs.offsets,
                               gap=100.0 if broken == "tiny_gap" else 1000.0)
    else:
        keep = sigma_clip(obs.v, obs.offsets, n_sigma=1.0 if broken == "tiny_gap" else 3.0)
    return {"members_kept": float(keep[member].mean()),
            "interlopers_kept": float(keep[~member].mean())}


def mass_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Median and half 16-84 width of log10(M_est / M200c) (dex, calibrate="none") of the
    virial and projected-mass estimators (shifting gapper, R200c iterated) on 30 NFW toy halos
    of 10^14-10^15 Msun/h with 100 satellites each and no interlopers. ``broken``: the
    estimate as a buggy version would report it: ``"pairs_twice"`` (virial pair sum over
    i != j: M / 2), ``"msun"`` (Msun instead of Msun/h: M / h)."""
    obs = nfw_views(seed)
    out = {}
    for name in ("gapper_virial", "gapper_pme"):
        est = get_model(name, calibrate="none").estimate(obs)
        d = est["log10_m200c"] - obs.log10_m200c()
        if broken == "pairs_twice":
            d = d - np.log10(2.0)
        elif broken == "msun":
            d = d - np.log10(MDPL2["H0"] / 100)
        p16, p50, p84 = np.percentile(d, [16, 50, 84])
        key = name.split("_")[1]
        out[f"{key}_median"], out[f"{key}_width"] = float(p50), float((p84 - p16) / 2)
        out[f"{key}_failed"] = float(np.mean(est["status"] != 0))
    return out


def caustic_stats(seed: int, broken: str | None = None) -> dict[str, float]:
    """Median and half 16-84 width of log10(M_caustic / M200c) (dex, calibrate="none") on 30
    NFW toy halos (100 satellites) with 10 interlopers each, uniform in the cylinder and in
    velocity (+-4000 km/s). ``broken``: ``"f_beta"`` uses F_beta = 0.35 (half the mass),
    ``"no_interloper_removal"`` takes every galaxy as a candidate member (a 10^6 km/s gap)."""
    obs = nfw_views(seed, n_interlopers=10)
    settings = {"calibrate": "none"}
    if broken == "f_beta":
        settings["f_beta"] = 0.35
    elif broken == "no_interloper_removal":
        settings["gap"] = 1e6
    est = Caustic(**settings).estimate(obs)
    d = est["log10_m200c"] - obs.log10_m200c()
    p16, p50, p84 = np.nanpercentile(d, [16, 50, 84])
    return {"median": float(p50), "width": float((p84 - p16) / 2),
            "failed": float(np.mean(est["status"] != 0))}


STOCHASTIC = {
    "gapper": StochasticCheck(
        run=gapper_stats, bounds={"members_kept": Bound(0.95, None),
                                  "interlopers_kept": Bound(None, 1e-9)},
        broken={b: partial(gapper_stats, broken=b) for b in ("no_removal", "tiny_gap")}),
    "clip": StochasticCheck(
        run=partial(gapper_stats, method="clip"),
        bounds={"members_kept": Bound(0.95, None), "interlopers_kept": Bound(None, 0.25)},
        broken={b: partial(gapper_stats, method="clip", broken=b)
                for b in ("no_removal", "tiny_gap")}),
    "nfw_mass": StochasticCheck(
        run=mass_stats,
        bounds={"virial_median": Bound(0.0, 0.2), "virial_width": Bound(None, 0.13),
                "virial_failed": Bound(None, 1e-9), "pme_median": Bound(0.08, 0.28),
                "pme_width": Bound(None, 0.14), "pme_failed": Bound(None, 1e-9)},
        broken={b: partial(mass_stats, broken=b) for b in ("pairs_twice", "msun")}),
    "caustic_mass": StochasticCheck(
        run=caustic_stats,
        bounds={"median": Bound(-0.18, 0.2), "width": Bound(None, 0.25),
                "failed": Bound(None, 0.05)},
        broken={b: partial(caustic_stats, broken=b) for b in ("f_beta",
                                                              "no_interloper_removal")}),
}


def test_gapper_removes_interlopers_keeps_members():
    """Shifting gapper on 20 isothermal toy clusters with interlopers >= 1500 km/s beyond the
    fastest member: every interloper goes, > 95% of members stay.

    Seeds 0-19: members_kept mean 0.9965, sd 0.0016, range [0.9935, 0.9994] (bound > 0.95);
    interlopers_kept 0 for every seed (bound < 1e-9). Broken variants (no removal, a 100 km/s
    gap) are caught."""
    STOCHASTIC["gapper"].check()


def test_clipping_removes_interlopers_keeps_members():
    """3-sigma clipping on the toy of :func:`test_gapper_removes_interlopers_keeps_members`.
    Clipping is weaker than the gapper: a one-sided group of interlopers inflates the biweight
    scale it clips with.

    Seeds 0-19: members_kept mean 0.997, sd 0.0012 (bound > 0.95); interlopers_kept mean
    0.025, sd 0.044, range [0, 0.16] (bound < 0.25, 5 sd)."""
    STOCHASTIC["clip"].check()


def test_virial_and_pme_recover_nfw_masses():
    """Virial and projected-mass M200c of NFW toy halos (no interlopers, no calibration).
    Both overestimate: the virial theorem without its surface-pressure term for halos cut at
    R200c, the PME with the point-mass factor 32/pi for an extended mass.

    Seeds 0-19: virial median mean +0.099, sd 0.020, range [0.071, 0.136] (bound (0, 0.2));
    virial half 16-84 width mean 0.073, sd 0.010 (bound < 0.13); PME median mean +0.181, sd
    0.020, range [0.145, 0.221] (bound (0.08, 0.28)); PME width mean 0.080, sd 0.012 (bound
    < 0.14); no failures. Broken variants (pairs counted twice, Msun for Msun/h) are caught."""
    STOCHASTIC["nfw_mass"].check()


def test_caustic_recovers_nfw_masses():
    """Caustic M200c of NFW toy halos with uniform interlopers (no calibration).

    Seeds 0-19: median mean +0.018, sd 0.039, range [-0.060, 0.128] (bound (-0.18, 0.2));
    half 16-84 width mean 0.135, sd 0.023 (bound < 0.25); no failures. Broken variants
    (F_beta halved, no interloper removal for the candidate members) are caught."""
    STOCHASTIC["caustic_mass"].check()


# ----------------------------------------------------------------------------- exact pieces


def test_biweight_and_gapper_scale_match_references(rng):
    """The vectorised biweight equals astropy's; the gapper scale equals msigma's."""
    from astropy.stats import biweight_location, biweight_scale

    from dynmass.models.msigma import _gapper

    x = rng.normal(0.0, 500.0, (40, 30))
    x[:, 20:] = np.nan
    x[3] = 7.0  # zero MAD: location 7, scale 0
    loc, scale = biweight(x)
    np.testing.assert_allclose(loc, biweight_location(x, c=6.0, axis=1, ignore_nan=True))
    np.testing.assert_allclose(scale, biweight_scale(x, c=9.0, axis=1, ignore_nan=True),
                               atol=1e-9)
    rows = x[~np.isnan(x)]
    offsets = np.r_[0, np.cumsum(np.isfinite(x).sum(axis=1))]
    np.testing.assert_allclose(gapper_scale(x), _gapper(rows, offsets), atol=1e-9)


def test_ring_averaged_inverse_separation():
    """<1/r_ij> over a random relative angle is 2 K(m) / (pi (r_i + r_j)) (quadrature)."""
    ri, rj = np.array([0.3, 1.0, 0.0, 0.7]), np.array([0.5, 1.2, 0.4, 0.7001])
    rk = np.sort(np.c_[ri, rj], axis=1)
    mass = C.virial_profile(rk, np.tile([0.0, 100.0], (4, 1)))[:, 1]
    # two members: M = (3 pi 2 / (2 G)) sum (v - vbar)^2 / <1/r_12>
    inv = 3.0 * np.pi * 2 * 5000.0 / (2 * C.G_KMS2_MPC_MSUN * mass)
    for k, (a, b) in enumerate(zip(ri, rj, strict=True)):
        exact = quad(lambda t, a=a, b=b: 1 / np.sqrt(a * a + b * b - 2 * a * b * np.cos(t)),
                     0, np.pi, limit=200)[0] / np.pi
        assert inv[k] == pytest.approx(exact, rel=1e-5)  # radii are floored at 1 kpc/h


def test_units_rho_crit_r200c_and_nfw_inversion():
    """rho_c(z) and R200c agree with colossus (physical = comoving / (1 + z)); the NFW
    transfer from a mass within any radius back to M200c is exact."""
    m = np.array([1e13, 1e14, 1e15])
    r200 = C.r200c_physical(m, Z, MDPL2)
    np.testing.assert_allclose(r200, r200c_comoving(m, Z, MDPL2) / (1 + Z), rtol=1e-4)
    assert C.rho_crit(0.0, MDPL2) == pytest.approx(2.775e11, rel=1e-3)  # h^2 Msun / Mpc^3
    grid, conc = C._conc_table(Z, json.dumps(validate_cosmology(MDPL2), sort_keys=True))
    c = np.interp(np.log10(m), grid, conc)
    for x in (0.3, 1.0, 1.7):
        r = x * r200
        mu = np.log1p(c * x) - c * x / (1 + c * x)
        m_in = m * mu / (np.log1p(c) - c / (1 + c))
        np.testing.assert_allclose(C.m200c_from_enclosed(r, m_in, Z, MDPL2), m, rtol=1e-6)


def test_r200c_iteration_finds_the_self_consistent_radius():
    """With the exact NFW mass within each member's radius as the 'estimate', the iteration
    converges to the true M200c from an aperture far larger than R200c."""
    m200 = np.array([3e13, 2e14, 8e14])
    r200 = C.r200c_physical(m200, Z, MDPL2)
    grid, conc = C._conc_table(Z, json.dumps(validate_cosmology(MDPL2), sort_keys=True))
    c = np.interp(np.log10(m200), grid, conc)[:, None]
    rk = np.sort(np.random.default_rng(1).uniform(0.01, 3.0, (3, 3000)), axis=1)
    x = c * rk / r200[:, None]
    mk = m200[:, None] * (np.log1p(x) - x / (1 + x)) / (np.log1p(c) - c / (1 + c))
    logm, status, n_used = C.solve_r200c(rk, mk, 3.0, Z, MDPL2)
    assert (status == 0).all()
    np.testing.assert_allclose(logm, np.log10(m200), atol=0.005)
    assert np.all(np.abs(n_used - (rk <= r200[:, None]).sum(axis=1)) <= 5)


def test_estimators_need_the_snapshot_redshift():
    obs = nfw_views(0, n_halos=2)
    obs.settings.pop("redshift")
    with pytest.raises(InputError, match="redshift"):
        get_model("gapper_virial").estimate(obs)


# ----------------------------------------------------------------------------- failures


def _with_poor_views(seed: int = 0):
    """Eight NFW toy halos plus four views of 3 galaxies (too few for any estimator)."""
    good = nfw_views(seed, n_halos=8, n_sat=60)
    rng = np.random.default_rng(seed)
    views = [good.view(k) for k in range(good.n_views)]
    views += [(rng.uniform(0, 1, 3), rng.normal(0, 300, 3)) for _ in range(4)]
    m = np.r_[good.clusters["m200c"], np.full(4, 1e13)]
    return from_views(views, SETTINGS, clusters={"m200c": m})


@pytest.mark.parametrize("name", CLASSICAL)
def test_failures_are_nan_and_named(name):
    """Views with too few members predict NaN (counted by reason); the others do not."""
    obs = _with_poor_views()
    model = get_model(name).fit(obs)
    pred = model.predict(obs)
    assert np.isnan(pred[-4:]).all() and np.isfinite(pred[:-4]).all()
    if name != "gapper_msigma":
        assert model.last_failures == {"too_few_members": 4}
        assert model.extra["n_failed_train"] == 4


def test_metrics_count_failed_views_and_use_the_rest(rng):
    """NaN predictions are counted (overall, per bin, fraction), not dropped silently, and the
    statistics equal those of the run without the failed views; a run without failures gets
    n_failed = 0 and unchanged statistics."""
    n = 600
    true = rng.uniform(13.5, 15.0, n)
    cols = {"halo_id": np.arange(n) // 3, "los": np.arange(n) % 3, "fold": np.arange(n) % 3,
            "log10_m200c_true": true, "log10_m200c_pred": true + rng.normal(0.05, 0.2, n),
            "n_gal": np.full(n, 30)}
    failed = (true < 13.8) & (rng.random(n) < 0.5)
    with_nan = dict(cols, log10_m200c_pred=np.where(failed, np.nan, cols["log10_m200c_pred"]))
    run = Run("r", Path("r"), "gapper_virial", {}, {}, with_nan)
    rest = Run("r", Path("r"), "gapper_virial", {}, {},
               {k: v[~failed] for k, v in cols.items()})
    edges = np.arange(13.4, 15.01, 0.2)
    m_nan, m_rest = metrics(run, edges, n_boot=20), metrics(rest, edges, n_boot=20)
    assert m_nan["n_failed"] == failed.sum() > 0
    assert m_nan["failure_fraction"] == pytest.approx(failed.mean())
    for key in ("bias_median", "std", "half_width_16_84", "n", "std_err"):
        assert m_nan["overall"][key] == m_rest["overall"][key]
    assert m_nan["overall"]["n_failed"] == failed.sum()
    assert sum(b["n_failed"] for b in m_nan["bins"]) == failed.sum()
    assert m_nan["bins"][-1]["n_failed"] == 0 and m_nan["bins"][1]["n_failed"] > 0
    assert m_rest["n_failed"] == 0 and m_rest["failure_fraction"] == 0.0
    table = format_table({"models": {"with": m_nan, "without": m_rest}})
    assert "failed" in table and f"{failed.sum()} (" in table
    assert "failed" not in format_table({"models": {"without": m_rest}})


# ----------------------------------------------------------------------------- interface


@pytest.mark.parametrize("name", CLASSICAL)
def test_save_load_round_trip(tmp_path, name):
    obs = nfw_views(1, n_halos=10, n_sat=60, n_interlopers=10)
    model = get_model(name).fit(obs)
    path = model.save(tmp_path / f"{name}.h5")
    again = load_model(path)
    assert type(again) is type(model) and again.settings == model.settings
    np.testing.assert_array_equal(again.predict(obs), model.predict(obs))


def test_registered_names_and_settings():
    for name in CLASSICAL:
        assert name in MODEL_NAMES
    with pytest.raises(InputError, match="calibrate"):
        get_model("gapper_virial", calibrate="quadratic")
    raw = get_model("clip_pme", calibrate="none").fit(nfw_views(2, n_halos=4))
    assert raw.get_arrays()["calib_b"] == 1.0


def test_cross_validate_and_cli(tmp_path, capsys):
    """``dynmass train --model gapper_virial`` through dynmass.train: a run folder whose
    predictions are the raw estimates through each fold's saved calibration line; failed
    views are NaN in predictions.csv."""
    obs = _with_poor_views(3)
    obs.clusters["halo_id"] = np.arange(obs.n_views)
    run = cross_validate(obs, "gapper_virial", tmp_path / "run", folds=3, progress=False)
    with open(run / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    pred = np.array([float(r["log10_m200c_pred"]) for r in rows])
    assert np.isnan(pred).sum() == 4
    raw = get_model("gapper_virial").estimate(obs)["log10_m200c"]
    for r, p, q in zip(rows, pred, raw, strict=True):
        a, b = load_model(run / f"fold_{int(r['fold']):02d}.h5").coef
        assert (np.isnan(p) and np.isnan(q)) or p == pytest.approx(a + b * q, abs=1e-8)
    path = write_observations(nfw_views(4, n_halos=9, n_sat=40), tmp_path / "obs.h5")
    assert main(["train", str(path), "--model", "caustic", "-o", str(tmp_path / "c"),
                 "--folds", "3", "--no-progress"]) == 0
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "gapper_virial" in capsys.readouterr().out
