"""Galaxy selection by a property column (:mod:`dynmass.selection`) and the unit of stellar
masses (:mod:`dynmass.stellar_mass`: log10 Msun, h-free, everywhere).

Tests of random experiments declare a :class:`~dynmass.testing.StochasticCheck` in
``STOCHASTIC``; their bounds come from the spread of each statistic over seeds measured by
``python tests/calibrate_bounds.py --only test_selection``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from functools import partial

import h5py
import numpy as np
import pytest
from halotools.empirical_models import Leauthaud11Sats
from scipy.stats import norm

from dynmass import InputError, read_catalog, read_observations, write_observations
from dynmass.catalog import write_catalog
from dynmass.cli import main
from dynmass.cosmology import MDPL2, little_h
from dynmass.errors import SettingsMismatchError
from dynmass.observe import observe, observe_file
from dynmass.observing import Draw, ObservingSetup, check_same_observing
from dynmass.readers import read_universemachine
from dynmass.readers_um import mvir_to_m200c
from dynmass.selection import parse_selection
from dynmass.stellar_mass import MSTAR_UNIT, StellarMassUnitWarning, h1_from_msun, msun_from_h1
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.catalogs import Z, concat, halo, make_catalog, members_of, random_universe
from dynmass.universe import write_universe
from dynmass.universe.galaxies import populate
from dynmass.universe.massfunction import r200c_comoving

BASE = {"min_mass": 1e13, "n_los": 3}
MSTAR = {"selection_column": "log10_mstar"}


def _universe(seed: int):
    """24 halos x 25 members + 6,000 field galaxies (:func:`random_universe`) with
    ``log10_mstar`` uniform in [9, 11.5] (log10 Msun) and ``mag_r`` uniform in [-23, -18]."""
    cat = random_universe(np.random.default_rng(seed), n_halos=24)
    rng = np.random.default_rng(seed + 1000)
    cat.galaxies["log10_mstar"] = rng.uniform(9.0, 11.5, cat.n_galaxies).astype(np.float32)
    cat.galaxies["mag_r"] = rng.uniform(-23.0, -18.0, cat.n_galaxies)
    return cat


def _views(obs) -> dict[tuple[int, int], np.ndarray]:
    """Catalog rows of the galaxies of each view, keyed by (halo id, line of sight)."""
    return {(int(h), int(los)): obs.galaxy_index[obs.offsets[j]:obs.offsets[j + 1]]
            for j, (h, los) in enumerate(zip(obs.clusters["halo_id"], obs.clusters["los"],
                                              strict=True))}


def _keyed(obs, values: np.ndarray) -> dict[tuple[int, int], float]:
    """``values`` (one per view) keyed by (halo id, line of sight)."""
    keys = [(int(h), int(los)) for h, los in zip(obs.clusters["halo_id"], obs.clusters["los"],
                                                 strict=True)]
    return dict(zip(keys, values, strict=True))


def _assert_views_are_full_views_cut(full, obs, passes) -> None:
    """Every view of ``obs`` holds exactly the galaxies of the same view of ``full`` for which
    ``passes(view key, catalog rows)`` is True; views left empty are absent."""
    got = _views(obs)
    n_kept = 0
    for key, rows in _views(full).items():
        want = rows[passes(key, rows)]
        if want.size == 0:
            assert key not in got
            continue
        np.testing.assert_array_equal(got[key], want, err_msg=str(key))
        n_kept += 1
    assert n_kept == obs.n_views > 0


# --------------------------------------------------------------------------- the selection
@pytest.mark.parametrize(("column", "limit", "sense"), [("log10_mstar", 10.2, ">="),
                                                        ("mag_r", -20.5, "<=")])
def test_cut_keeps_exactly_the_galaxies_passing_the_limit(column, limit, sense):
    """Masses: galaxies at or above the limit; magnitudes: at or brighter than it. The views
    keep every such galaxy of the cylinder (same R and v) and no other; the limit is recorded
    in the settings and per view."""
    cat = _universe(0)
    full = observe(cat, min_members=1, seed=0, **BASE)
    setup = ObservingSetup(min_members=1, selection_column=column, selection_limit=limit)
    obs = observe(cat, setup, seed=0, **BASE)
    values = np.asarray(cat.galaxies[column], dtype=float)
    ok = values >= limit if sense == ">=" else values <= limit
    assert 0.2 < ok.mean() < 0.8
    _assert_views_are_full_views_cut(full, obs, lambda key, rows: ok[rows])
    v_full = dict(zip(zip(full.view_of_galaxy, full.galaxy_index, strict=True), full.v,
                      strict=True))
    keys = {(int(h), int(los)): j for j, (h, los) in enumerate(
        zip(full.clusters["halo_id"], full.clusters["los"], strict=True))}
    view_in_full = np.array([keys[(int(h), int(los))] for h, los in zip(
        obs.clusters["halo_id"], obs.clusters["los"], strict=True)])
    v_ref = [v_full[(view_in_full[j], g)] for j, g in zip(obs.view_of_galaxy,
                                                          obs.galaxy_index, strict=True)]
    np.testing.assert_array_equal(obs.v, v_ref)
    assert np.all(obs.clusters["survey_selection_limit"] == limit)
    s = obs.settings
    assert (s["selection_column"], s["selection_limit"], s["selection_sense"]) == (
        column, limit, sense)


def test_drawn_limits_are_per_view_and_reproducible():
    """A drawn limit: one value per view in the range, the same for the same seed (whatever
    the chunking), another for another seed; each view cut at its own limit; drawn from its
    own stream, so the other survey draws do not move."""
    cat = _universe(1)
    setup = ObservingSetup(min_members=1, **MSTAR, selection_limit=Draw("uniform", 9.5, 10.5))
    a = observe(cat, setup, seed=4, **BASE)
    b = observe(cat, setup, seed=4, chunk_size=7, **BASE)
    c = observe(cat, setup, seed=5, **BASE)
    lim = a.clusters["survey_selection_limit"]
    for name in ("galaxy_index", "v", "offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(lim, b.clusters["survey_selection_limit"])
    assert np.all((lim >= 9.5) & (lim <= 10.5)) and np.unique(lim).size == a.n_views
    assert not np.array_equal(lim[:5], c.clusters["survey_selection_limit"][:5])
    full = observe(cat, min_members=1, seed=4, **BASE)
    limit_of = _keyed(a, lim)
    ms = cat.galaxies["log10_mstar"]
    _assert_views_are_full_views_cut(
        full, a, lambda key, rows: ms[rows] >= limit_of.get(key, np.inf))
    rate = Draw("loguniform", 0.2, 1.0)
    x = observe(cat, setup.replace(sampling_rate=rate), seed=4, **BASE)
    y = observe(cat, ObservingSetup(min_members=1, sampling_rate=rate), seed=4, **BASE)
    rate_y = _keyed(y, y.clusters["survey_sampling_rate"])
    for key, r in _keyed(x, x.clusters["survey_sampling_rate"]).items():
        assert rate_y[key] == r


def test_no_selection_by_default_and_a_selection_keeping_all_changes_nothing(caplog):
    """The default records no selection; a limit below every galaxy keeps the survey's draws
    (sampling, velocity errors) exactly, and says that the catalog was cut there."""
    cat = _universe(5)
    survey = ObservingSetup(min_members=1, sampling_rate=0.5, velocity_error=40.0)
    plain = observe(cat, survey, seed=2, **BASE)
    assert "survey_selection_limit" not in plain.clusters
    assert not any(k.startswith("selection") for k in plain.settings)
    every = observe(cat, survey.replace(**MSTAR, selection_limit=8.0), seed=2, **BASE)
    for name in ("R", "v", "galaxy_index", "offsets"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(every, name))
    assert "no galaxy beyond" in caplog.text


def test_missing_selection_column_names_file_and_column(tmp_path, capsys):
    cat = random_universe(np.random.default_rng(2), n_halos=6)  # no stellar masses
    path = write_catalog(cat, tmp_path / "u.h5")
    setup = ObservingSetup(**MSTAR, selection_limit=10.0)
    with pytest.raises(InputError, match="selection column") as exc:
        observe_file(path, tmp_path / "o.h5", setup=setup, **BASE)
    assert exc.value.path == str(path) and exc.value.column == "galaxies/log10_mstar"
    assert not (tmp_path / "o.h5").exists()
    with pytest.raises(InputError, match="not a galaxy column") as exc:
        observe(cat, setup, **BASE)
    assert exc.value.column == "galaxies/log10_mstar"
    assert main(["observe", str(path), "-o", str(tmp_path / "o.h5"),
                 "--selection", "log10_mstar:10"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "galaxies/log10_mstar" in err


def test_a_limit_that_removes_every_galaxy_errors(tmp_path):
    cat = _universe(3)
    for limit in (12.0, Draw("uniform", 11.6, 12.0)):  # even the loosest draw
        with pytest.raises(InputError, match="removes every galaxy") as exc:
            observe(cat, ObservingSetup(**MSTAR, selection_limit=limit), **BASE)
        assert exc.value.column == "selection_limit"
    path = write_catalog(cat, tmp_path / "u.h5")
    with pytest.raises(InputError, match="removes every galaxy") as exc:
        observe_file(path, tmp_path / "o.h5",
                     setup=ObservingSetup(**MSTAR, selection_limit=12.0), **BASE)
    assert exc.value.path == str(path)
    # galaxies above the limit exist, but in no cylinder
    rng = np.random.default_rng(0)
    h = halo(1, (30.0, 30.0, 30.0))
    far = {"x": np.array([5.0]), "y": np.array([5.0]), "z": np.array([5.0]),
           "vx": np.zeros(1), "vy": np.zeros(1), "vz": np.zeros(1),
           "host_id": np.array([-1])}
    lone = make_catalog([h], concat(members_of(rng, h, 20, box=60.0), far), box=60.0)
    lone.galaxies["log10_mstar"] = np.r_[np.full(20, 9.0), 11.0]
    with pytest.raises(InputError, match="no galaxy in any of the 3 views") as exc:
        observe(lone, ObservingSetup(**MSTAR, selection_limit=10.0, min_members=1), **BASE)
    assert exc.value.column == "selection_limit"


@pytest.mark.parametrize(("kw", "needle"), [
    ({"selection_column": "log10_mstar"}, "selection_limit"),
    ({"selection_limit": 10.0}, "selection_column"),
    ({"selection_column": "log10_mstar", "selection_limit": float("nan")}, "selection_limit"),
    ({"selection_column": " ", "selection_limit": 10.0}, "selection_column"),
    ({"selection_column": "log10_mstar", "selection_limit": "uniform:10:9"}, "dist"),
])
def test_bad_selection_settings_name_the_setting(kw, needle):
    with pytest.raises(InputError, match=needle):
        ObservingSetup(**kw)


def test_compatibility_and_settings_of_the_selection(tmp_path):
    """A different column or limit (fixed or drawn) makes setups incompatible; settings round
    trip through a file; views without a recorded selection were observed without one."""
    base = ObservingSetup(min_members=3)
    sel = base.replace(**MSTAR, selection_limit=10.0)
    assert sel.differences(base) == ["selection_column", "selection_limit"]
    assert sel.differences(sel.replace(selection_limit=10.5)) == ["selection_limit"]
    assert sel.differences(sel.replace(selection_column="mag_r")) == ["selection_column"]
    assert not sel.compatible_with(sel.replace(selection_limit=Draw("uniform", 9.5, 10.5)))
    assert sel.compatible_with(sel.replace(selection_limit=10.0 + 1e-9))
    obs = observe(_universe(4), sel, seed=0, **BASE)
    back = read_observations(write_observations(obs, tmp_path / "o.h5"))
    assert ObservingSetup.from_settings(back.settings) == sel
    np.testing.assert_array_equal(back.clusters["survey_selection_limit"],
                                  obs.clusters["survey_selection_limit"])
    check_same_observing(back.settings, sel.to_settings(), "the training views", None)
    unselected = observe(_universe(4), base, seed=0, **BASE).settings
    with pytest.raises(SettingsMismatchError, match="selection_column") as exc:
        check_same_observing(back.settings, unselected, "the training views", tmp_path / "o.h5")
    assert exc.value.column == "selection_column"
    with pytest.raises(SettingsMismatchError, match="selection_column"):
        check_same_observing(unselected, back.settings, "the training views", None)
    with pytest.raises(SettingsMismatchError, match="selection_limit"):
        check_same_observing(back.settings, sel.replace(selection_limit=10.5).to_settings(),
                             "the training views", None)


def test_cli_selection(tmp_path, capsys):
    assert parse_selection("log10_mstar:uniform:9.5:10.5") == (
        "log10_mstar", Draw("uniform", 9.5, 10.5))
    u = write_catalog(_universe(6), tmp_path / "u.h5")
    rc = main(["observe", str(u), "-o", str(tmp_path / "o.h5"), "--min-mass", "1e13",
               "--min-members", "3", "--selection", "log10_mstar:uniform:9.5:10.5"])
    assert rc == 0
    o = read_observations(tmp_path / "o.h5")
    assert o.settings["selection_column"] == "log10_mstar"
    assert o.settings["selection_limit"] == {"dist": "uniform", "lo": 9.5, "hi": 10.5}
    lim = o.clusters["survey_selection_limit"]
    assert np.all((lim >= 9.5) & (lim <= 10.5))
    capsys.readouterr()
    for bad, needle in (("log10_mstar", "COLUMN:LIMIT"), ("log10_mstar:ten", "'ten'"),
                        ("log10_mstar:uniform:10:9", "uniform:LO:HI")):
        assert main(["observe", str(u), "-o", str(tmp_path / "p.h5"), "--selection", bad]) == 2
        err = capsys.readouterr().err
        assert "selection" in err and needle in err
    assert not (tmp_path / "p.h5").exists()


# ------------------------------------------------------------------- units of stellar masses
def b10_log10_mstar_msun(m_msunh: np.ndarray, redshift: float, h: float) -> np.ndarray:
    """Mean log10 M* [Msun] of central galaxies in halos of ``m_msunh`` [Msun/h], from
    Behroozi et al. 2010 (ApJ 717, 379) eq. 21 with their Table 2 (free mu, kappa = 0)
    parameters, written out here independently of halotools.

    Their masses are in Msun for h = 0.7; with the usual h-scaling (M_h proportional to h^-1,
    M* to h^-2; Croton 2013, PASA 30, e052) a halo of M [Msun/h] is M / 0.7 in their units, and
    their M* [Msun, h = 0.7] is M* (0.7 / h)^2 in Msun for a cosmology with Hubble parameter h.
    """
    a = 1.0 / (1.0 + redshift)
    log_m1, log_ms0 = 12.35 + 0.30 * (a - 1), 10.72 + 0.59 * (a - 1)
    beta, delta, gamma = 0.43 + 0.18 * (a - 1), 0.56 + 0.18 * (a - 1), 1.54 + 2.52 * (a - 1)
    log_ms = np.arange(7.0, 12.8, 0.0005)
    x = 10 ** (log_ms - log_ms0)
    log_mh = log_m1 + beta * np.log10(x) + x**delta / (1 + x**-gamma) - 0.5
    log_ms_07 = np.interp(np.log10(m_msunh) - np.log10(0.7), log_mh, log_ms)
    return log_ms_07 + 2 * np.log10(0.7) - 2 * np.log10(h)


def _halos(m: np.ndarray) -> dict[str, np.ndarray]:
    n = m.size
    return {"id": np.arange(n), "x": np.linspace(1.0, 99.0, n), "y": np.full(n, 50.0),
            "z": np.full(n, 50.0), "vx": np.zeros(n), "vy": np.zeros(n), "vz": np.zeros(n),
            "m200c": m, "r200c": r200c_comoving(m, Z, MDPL2)}


_UM_HEADER = ("#ID DescID UPID Flags Uparent_Dist X Y Z VX VY VZ M V MP VMP R Rank1 Rank2 RA "
              "RARank SM ICL SFR obs_SM obs_SFR SSFR SM/HM obs_UV\n#a = 0.895255\n")


def test_embedded_and_universemachine_stellar_masses_agree_in_msun(tmp_path):
    """The same halos through a UniverseMachine file (SM in Msun, set to the Behroozi et al.
    2010 relation by hand) and through the embedded occupation model (no scatter) get the
    same log10 M* [Msun], within 0.002 dex; halotools' h = 1 numbers (the old values) lie
    2 log10 h = -0.338 dex off."""
    mvir = np.array([10**11.8, 1e12, 1e13, 1e14])
    z = 1 / 0.895255 - 1
    expected = b10_log10_mstar_msun(mvir_to_m200c(mvir, z, MDPL2), z, little_h(MDPL2))
    lines = [_UM_HEADER] + [
        f"{i + 1} -1 -1 0 0 {10.0 + 20 * i} 50.0 50.0 0 0 0 {m:.6e} 200 {m:.6e} 200 100 0 0 0 0 "
        f"{10**e:.8e} 0 1.0 {10**e:.8e} 1.0 1e-10 0.01 -20\n"
        for i, (m, e) in enumerate(zip(mvir, expected, strict=True))]
    path = tmp_path / "sfr_catalog_0.895255.txt"
    path.write_text("".join(lines))
    um = read_universemachine(path, box_size=100.0, stellar_mass="sm")
    np.testing.assert_allclose(um.galaxies["log10_mstar"], expected, atol=1e-5)
    g = populate(um.halos, 100.0, um.redshift, MDPL2, np.random.default_rng(0),
                 mstar_min=8.0, smhm_scatter_dex=0.0)
    cen = g["is_central"]
    row = np.searchsorted(um.halos["id"], g["host_id"][cen])
    np.testing.assert_array_equal(um.halos["id"][row], um.galaxies["host_id"])
    np.testing.assert_allclose(g["log10_mstar"][cen], um.galaxies["log10_mstar"][row],
                               atol=2e-3)
    assert np.all(g["log10_mstar"] >= 8.0)
    old = h1_from_msun(g["log10_mstar"][cen], MDPL2)
    np.testing.assert_allclose(old - expected, 2 * np.log10(0.6777), atol=2e-3)


def counts_above_cut(seed: int, broken: str | None = None) -> dict[str, float]:
    """3,000 halos of 10^11.4 Msun/h and 300 of 10^14 Msun/h populated (seed ``seed``) with
    ``mstar_min`` = 10.0 (log10 Msun). ``cen_z``: z-score of the centrals of the small halos
    against N Phi((mu - 10) / 0.2), mu the Behroozi et al. 2010 mean in Msun
    (:func:`b10_log10_mstar_msun`, MDPL2's h); ``sat_z``: of the satellites of the big halos
    against N <N_sat> of halotools' ``Leauthaud11Sats`` at the threshold 10 + 2 log10 h (its
    h = 1 units), Poisson. ``broken``: ``"h1_units"`` the threshold in halotools' units (the
    old bug: 10^10 Msun/h^2 = 10^10.34 Msun), ``"h_once"`` converted with h, not h^2."""
    h = little_h(MDPL2)
    limit = {"h1_units": msun_from_h1(10.0, MDPL2),
             "h_once": 10.0 - np.log10(h)}.get(broken or "", 10.0)
    m = np.r_[np.full(3000, 10**11.4), np.full(300, 1e14)]
    g = populate(_halos(m), 100.0, Z, MDPL2, np.random.default_rng(seed), mstar_min=limit)
    assert np.all(g["log10_mstar"] >= limit)
    small = g["host_id"] < 3000
    n_cen = np.sum(g["is_central"] & small)
    p = norm.sf((10.0 - b10_log10_mstar_msun(np.array([10**11.4]), Z, h)[0]) / 0.2)
    n_sat = np.sum(~g["is_central"] & ~small)
    mean_sat = 300 * Leauthaud11Sats(threshold=10.0 + 2 * np.log10(h), redshift=Z
                                     ).mean_occupation(prim_haloprop=1e14)[0]
    return {"cen_z": float((n_cen - 3000 * p) / np.sqrt(3000 * p * (1 - p))),
            "sat_z": float((n_sat - mean_sat) / np.sqrt(mean_sat))}


STOCHASTIC = {
    "counts_above_cut": StochasticCheck(
        run=counts_above_cut, seed=0,
        bounds={"cen_z": Bound(-5.5, 5.5), "sat_z": Bound(-5.5, 5.5)},
        broken={b: partial(counts_above_cut, broken=b) for b in ("h1_units", "h_once")}),
}


def test_number_of_galaxies_above_the_cut_is_computed_in_msun():
    """``mstar_min 10`` means 10^10 Msun: the numbers of centrals and satellites above it
    are those the models predict for 10^10 Msun with MDPL2's h.

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_selection.counts_above_cut``):
    cen_z: mean -0.19, sd 1.1, range [-3.26, 1.26]; bound (-5.5, 5.5), 4.9 sd from the mean.
    sat_z: mean -0.15, sd 1.1, range [-2.24, 1.77]; bound (-5.5, 5.5), 4.8 sd from the mean.
    Broken variants caught (seeds 0-2): h1_units 3/3 (the old bug), h_once 3/3.
    """
    STOCHASTIC["counts_above_cut"].check()


@pytest.fixture(scope="module")
def small_universe_file(tmp_path_factory):
    return write_universe(tmp_path_factory.mktemp("universe") / "u.h5", box_size=40.0, seed=1,
                          min_mass=1e13)


@pytest.mark.parametrize(("settings", "shift", "warns"), [
    ({}, -2 * np.log10(0.6777), True),  # the embedded universe's own settings (old file)
    ({"reader": "hlist", "galaxies": "hod", "mstar_min": 9.5}, -2 * np.log10(0.6777), True),
    ({"reader": "universemachine"}, 0.0, False),
    ({"reader": "table"}, 0.0, True),
])
def test_catalog_files_record_the_unit_and_old_files_are_read_safely(
        tmp_path, small_universe_file, settings, shift, warns):
    """Universe files record ``log10_mstar`` in log10 Msun; a file without the record is
    converted (made by dynmass's occupation model: halotools' h = 1 numbers) or read as it
    is, with a warning naming the file and column unless its reader wrote Msun; another
    recorded unit is refused."""
    info = small_universe_file
    with h5py.File(info["path"]) as fh:
        units = json.loads(fh.attrs["units"])
        own = json.loads(fh.attrs["settings"])
    assert units["log10_mstar"] == MSTAR_UNIT == "log10 Msun"
    with warnings.catch_warnings():
        warnings.simplefilter("error", StellarMassUnitWarning)
        new = read_catalog(info["path"])
    assert new.galaxies["log10_mstar"].min() >= 9.5
    old = tmp_path / "old.h5"
    shutil.copy(info["path"], old)
    with h5py.File(old, "r+") as fh:  # as written before the unit was recorded
        fh.attrs["units"] = json.dumps({k: v for k, v in units.items() if k != "log10_mstar"})
        fh.attrs["settings"] = json.dumps(settings or own)
        fh["galaxies/log10_mstar"][...] -= np.float32(shift)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = read_catalog(old)
    msgs = [str(w.message) for w in caught if issubclass(w.category, StellarMassUnitWarning)]
    assert len(msgs) == int(warns)
    if warns:
        assert str(old) in msgs[0] and "galaxies/log10_mstar" in msgs[0]
    if shift:
        assert "+0.338 dex" in msgs[0] and "complete above 10^9.838 Msun" in msgs[0]
    np.testing.assert_allclose(back.galaxies["log10_mstar"], new.galaxies["log10_mstar"],
                               atol=5e-6)
    with h5py.File(old, "r+") as fh:
        fh.attrs["units"] = json.dumps({**units, "log10_mstar": "log10 Msun/h^2"})
    with pytest.raises(InputError, match="log10 Msun/h\\^2") as exc:
        read_catalog(old)
    assert exc.value.path == str(old) and exc.value.column == "galaxies/log10_mstar"
