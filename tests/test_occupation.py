"""The occupation setting of the mock universe: the same halos with galaxies of another halo
occupation model (Zheng et al. 2007, luminosity threshold) than the default (Leauthaud et al.
2011, stellar-mass threshold).

The satellite and central numbers of ``zheng07`` universes are a :class:`StochasticCheck` in
``STOCHASTIC``, with bounds set from their spread over seeds 0-19
(``python tests/calibrate_bounds.py --only test_occupation --seeds 20``).
"""

from __future__ import annotations

import json
from functools import lru_cache, partial

import numpy as np
import pytest
from halotools.empirical_models import Zheng07Cens, Zheng07Sats

from dynmass import InputError, read_catalog
from dynmass.catalog import Catalog
from dynmass.cli import main
from dynmass.cosmology import MDPL2
from dynmass.observe import observe
from dynmass.observing import ObservingSetup
from dynmass.stellar_mass import msun_from_h1
from dynmass.testing import Bound, StochasticCheck
from dynmass.universe import build_universe, check_catalog, write_universe
from dynmass.universe.galaxies import populate
from dynmass.universe.massfunction import r200c_comoving
from dynmass.universe.occupation import (
    ZHENG07_THRESHOLDS,
    populate_zheng07,
    zheng07_mean_occupation,
    zheng07_parameters,
)

OCC_BOX, OCC_MIN_MASS, OCC_THRESHOLD = 80.0, 1e12, -20.0
#: log10 M200c [Msun/h] bins of the satellite counts (the last one open) and of the centrals.
SAT_BINS = (12.0, 12.5, 13.0, 13.5, 17.0)
CEN_BINS = (12.0, 12.25, 12.5)


@lru_cache(maxsize=24)
def occupation_universe_at(seed: int, occupation: str = "zheng07",
                           threshold: float = OCC_THRESHOLD) -> Catalog:
    """An 80 Mpc/h box of halos above 1e12 Msun/h (cached; callers must not modify it)."""
    return build_universe(box_size=OCC_BOX, seed=seed, min_mass=OCC_MIN_MASS,
                          occupation=occupation, zheng07_threshold=threshold)


def host_rows(cat: Catalog) -> np.ndarray:
    """Row in ``cat.halos`` of each galaxy's host."""
    order = np.argsort(cat.halos["id"])
    return order[np.searchsorted(cat.halos["id"], cat.galaxies["host_id"], sorter=order)]


# ---------------------------------------------------------------------------------- checks
def zheng07_counts(seed: int, broken: str | None = None) -> dict[str, float]:
    """Satellite and central numbers of the ``zheng07`` (M_r < -20) 80 Mpc/h box of seed
    ``seed`` against halotools' ``Zheng07Sats`` / ``Zheng07Cens`` mean occupations at each
    halo's M200c: per bin of log10 M200c, ``z_sat_<lo>`` = (N_sat - sum <N_sat>) /
    sqrt(sum <N_sat>) (Poisson) over SAT_BINS, and ``z_cen_<lo>`` = (N_cen - sum <N_cen>) /
    sqrt(sum <N_cen>(1 - <N_cen>)) (Bernoulli) over CEN_BINS, where <N_cen> is neither 0 nor
    1. ``broken``: ``"threshold_ignored"`` the universe built with the default threshold
    -20.5, ``"leauthaud11"`` with the default occupation, ``"no_satellites"`` satellites
    dropped, ``"all_centrals"`` every halo given a central."""
    if broken == "threshold_ignored":
        cat = occupation_universe_at(seed, "zheng07", -20.5)
    elif broken == "leauthaud11":
        cat = occupation_universe_at(seed, "leauthaud11")
    else:
        cat = occupation_universe_at(seed)
    m = cat.halos["m200c"]
    rows = host_rows(cat)
    cen = cat.galaxies["is_central"]
    n_sat = np.bincount(rows[~cen], minlength=m.size)
    n_cen = np.bincount(rows[cen], minlength=m.size)
    if broken == "no_satellites":
        n_sat = np.zeros_like(n_sat)
    elif broken == "all_centrals":
        n_cen = np.ones_like(n_cen)
    mean_sat = Zheng07Sats(threshold=OCC_THRESHOLD).mean_occupation(prim_haloprop=m)
    mean_cen = Zheng07Cens(threshold=OCC_THRESHOLD).mean_occupation(prim_haloprop=m)
    log_m = np.log10(m)
    out: dict[str, float] = {}
    for lo, hi in zip(SAT_BINS[:-1], SAT_BINS[1:], strict=True):
        sel = (log_m >= lo) & (log_m < hi)
        expected = mean_sat[sel].sum()
        out[f"z_sat_{lo:g}"] = float((n_sat[sel].sum() - expected) / np.sqrt(expected))
    for lo, hi in zip(CEN_BINS[:-1], CEN_BINS[1:], strict=True):
        sel = (log_m >= lo) & (log_m < hi)
        p = mean_cen[sel]
        out[f"z_cen_{lo:g}"] = float((n_cen[sel].sum() - p.sum()) / np.sqrt(np.sum(p * (1 - p))))
    return out


_Z = Bound(-5.5, 5.5)

STOCHASTIC = {
    "zheng07_counts": StochasticCheck(
        n_seeds=20, run=zheng07_counts, seed=0,
        bounds={**{f"z_sat_{lo:g}": _Z for lo in SAT_BINS[:-1]},
                **{f"z_cen_{lo:g}": _Z for lo in CEN_BINS[:-1]}},
        broken={b: partial(zheng07_counts, broken=b)
                for b in ("threshold_ignored", "leauthaud11", "no_satellites", "all_centrals")}),
}


# ----------------------------------------------------------------------------------- tests
def test_same_halos_another_occupation():
    """One seed, both occupations: identical halos (every column, bit for bit), different
    galaxies; the zheng07 galaxies are well formed, carry no stellar mass, and the model and
    its parameters are recorded in the settings."""
    z07 = occupation_universe_at(3)
    l11 = occupation_universe_at(3, "leauthaud11")
    assert sorted(z07.halos) == sorted(l11.halos)
    for col in l11.halos:
        assert z07.halos[col].dtype == l11.halos[col].dtype
        np.testing.assert_array_equal(z07.halos[col], l11.halos[col], err_msg=col)
    assert z07.n_galaxies != l11.n_galaxies
    assert "log10_mstar" not in z07.galaxies and "log10_mstar" in l11.galaxies
    assert z07.settings["occupation"] == "zheng07" and l11.settings["occupation"] == "leauthaud11"
    par = z07.settings["occupation_parameters"]
    cen_ht, sat_ht = Zheng07Cens(threshold=-20.0), Zheng07Sats(threshold=-20.0)
    assert par["model"] == "zheng07" and par["threshold_mag_r"] == -20.0
    assert par["modulate_with_cenocc"] is False
    for k, v in {**cen_ht.param_dict, **sat_ht.param_dict}.items():
        assert par[k] == v
    assert l11.settings["occupation_parameters"]["mstar_min"] == 9.5
    # centrals: at most one per halo, at the centre with the halo velocity
    h, g = z07.halos, z07.galaxies
    rows = host_rows(z07)
    cen = g["is_central"]
    assert cen.any() and (~cen).any()
    assert np.unique(g["host_id"][cen]).size == cen.sum()
    for c in ("x", "y", "z", "vx", "vy", "vz"):
        np.testing.assert_array_equal(g[c][cen], h[c][rows[cen]])
    # satellites inside R200c of their host (periodic distance), r_host that distance
    d = np.abs(z07.galaxy_positions() - z07.halo_positions()[rows])
    d = np.minimum(d, z07.box_size - d)
    r = np.sqrt((d**2).sum(1))
    assert np.all(r <= h["r200c"][rows] * (1 + 1e-6))
    np.testing.assert_allclose(r, g["r_host"], rtol=1e-5, atol=1e-5)


def test_satellite_and_central_numbers_follow_halotools():
    """Satellite numbers per halo in mass bins follow halotools' Zheng07Sats <N_sat> (Poisson)
    and central numbers its Zheng07Cens <N_cen> (Bernoulli), check ``zheng07_counts``.

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_occupation.zheng07_counts --seeds 20``):
    z_sat_12: mean -0.1371, sd 1, range [-2.074, 1.391]; bound (-5.5, 5.5), 5.3 sd from the
      mean.
    z_sat_12.5: mean -0.3101, sd 0.55, range [-1.409, 0.593]; bound (-5.5, 5.5), 9.4 sd from
      the mean.
    z_sat_13: mean -0.338, sd 0.73, range [-1.571, 1.267]; bound (-5.5, 5.5), 7.0 sd from the
      mean.
    z_sat_13.5: mean -0.08192, sd 0.8, range [-1.06, 1.585]; bound (-5.5, 5.5), 6.8 sd from
      the mean.
    z_cen_12: mean -0.07664, sd 1.1, range [-2.554, 1.757]; bound (-5.5, 5.5), 4.7 sd from
      the mean.
    z_cen_12.25: mean 0.07987, sd 1, range [-2.026, 1.878]; bound (-5.5, 5.5), 5.3 sd from
      the mean.
    Broken variants caught (seeds 0-2): threshold_ignored 3/3, leauthaud11 3/3,
    no_satellites 3/3, all_centrals 3/3.
    Every statistic is a z-score, unit variance for a correct model (seeds 20-79: sd 0.88-1.09),
    so the bound is 5.5 sd of a unit normal.
    """
    STOCHASTIC["zheng07_counts"].check()


def test_zheng07_wrapper_is_halotools():
    """The occupation functions are halotools' (h = 1 units: M in Msun/h), for every
    tabulated threshold."""
    m = np.logspace(11.0, 15.5, 40)
    for t in ZHENG07_THRESHOLDS:
        n_cen, n_sat = zheng07_mean_occupation(m, t)
        np.testing.assert_array_equal(n_cen, Zheng07Cens(threshold=t).mean_occupation(
            prim_haloprop=m))
        np.testing.assert_array_equal(n_sat, Zheng07Sats(threshold=t).mean_occupation(
            prim_haloprop=m))
        assert set(zheng07_parameters(t)) == {"logMmin", "sigma_logM", "logM0", "logM1", "alpha"}
    # Zheng et al. 2007 eqs. 2-3 with Table 1 (M_r < -20.5), M in Msun/h without any h factor
    p = zheng07_parameters(-20.5)
    assert (p["logMmin"], p["sigma_logM"], p["logM0"], p["logM1"], p["alpha"]) == (
        12.3, 0.21, 11.84, 13.58, 1.12)
    n_cen, n_sat = zheng07_mean_occupation(np.array([10**12.3, 1e15]), -20.5)
    np.testing.assert_allclose(n_cen, [0.5, 1.0])
    np.testing.assert_allclose(n_sat[1], ((1e15 - 10**11.84) / 10**13.58) ** 1.12, rtol=1e-12)


def test_default_occupation_unchanged(tmp_path):
    """The default occupation draws exactly what it drew before the occupation setting was
    added: numbers pinned from the earlier code (30 halos of 10^11.5-10^15 Msun/h, generator
    seed 2024), and ``occupation="leauthaud11"`` is the default, in memory and on file.

    The earlier code took ``mstar_min`` and stored ``log10_mstar`` in halotools' h = 1 units
    (Msun/h^2); now both are in Msun (:mod:`dynmass.stellar_mass`). Its ``mstar_min=9.0`` is
    ``9.0 - 2 log10 h`` = 9.338 Msun: the same draws, every stellar mass 0.338 dex higher."""
    m = np.logspace(11.5, 15.0, 30)
    halos = {"id": np.arange(100, 130), "x": np.linspace(0.0, 99.9, 30),
             "y": np.full(30, 99.95), "z": np.full(30, 0.02), "vx": np.linspace(-300, 300, 30),
             "vy": np.zeros(30), "vz": np.full(30, 50.0), "m200c": m,
             "r200c": r200c_comoving(m, 0.117, MDPL2)}
    g = populate(halos, 100.0, 0.117, MDPL2, np.random.default_rng(2024),
                 mstar_min=msun_from_h1(9.0, MDPL2), beta=0.2, velocity_bias=1.1)
    assert list(g) == ["x", "y", "z", "vx", "vy", "vz", "host_id", "is_central",
                       "log10_mstar", "r_host"]
    assert (len(g["x"]), int(g["is_central"].sum()), int(g["host_id"].sum())) == (2408, 30,
                                                                                   303143)
    shift = -2 * np.log10(MDPL2["H0"] / 100.0)  # +0.338 dex
    pinned = {"vx": 585624.8584496572, "vy": -26262.434124814503, "vz": 127435.29649132905,
              "log10_mstar": 23517.542801856995 + 2408 * shift, "r_host": 1544.9779845336452}
    for k, v in pinned.items():
        np.testing.assert_allclose(np.sum(g[k], dtype=np.float64), v, rtol=1e-7, err_msg=k)
    default = build_universe(box_size=40.0, seed=5, min_mass=1e12)
    explicit = build_universe(box_size=40.0, seed=5, min_mass=1e12, occupation="leauthaud11")
    assert default.settings["occupation"] == "leauthaud11"
    for name in ("halos", "galaxies"):
        a, b = getattr(default, name), getattr(explicit, name)
        assert list(a) == list(b)
        for col in a:
            assert a[col].tobytes() == b[col].tobytes()
    info = write_universe(tmp_path / "u.h5", box_size=40.0, seed=5, min_mass=1e12)
    back = read_catalog(info["path"])
    for col in default.galaxies:
        assert back.galaxies[col].tobytes() == default.galaxies[col].tobytes()


def test_bad_occupation_settings():
    """A threshold halotools does not tabulate (or an unknown model) is an InputError naming
    the setting, from the Python API and from populate_zheng07."""
    for bad in (-20.3, -17.5, float("nan"), "bright"):
        with pytest.raises(InputError, match="zheng07_threshold") as exc:
            build_universe(box_size=20.0, seed=0, occupation="zheng07", zheng07_threshold=bad)
        assert exc.value.column == "zheng07_threshold"
    with pytest.raises(InputError, match="zheng07_threshold"):  # never silently ignored
        build_universe(box_size=20.0, seed=0, zheng07_threshold=-20.25)
    with pytest.raises(InputError, match="occupation") as exc:
        build_universe(box_size=20.0, seed=0, occupation="Zheng07")
    assert exc.value.column == "occupation"
    halos = {"id": np.arange(2), **{c: np.full(2, 5.0) for c in "xyz"},
             **{c: np.zeros(2) for c in ("vx", "vy", "vz")}, "m200c": np.full(2, 1e14),
             "r200c": np.full(2, 0.7)}
    with pytest.raises(InputError, match="zheng07_threshold"):
        populate_zheng07(halos, 10.0, 0.1, MDPL2, np.random.default_rng(0), threshold=-19.2)
    empty = populate_zheng07({k: v[:0] for k, v in halos.items()}, 10.0, 0.1, MDPL2,
                             np.random.default_rng(0))
    assert all(v.size == 0 for v in empty.values()) and "log10_mstar" not in empty


def test_zheng07_catalog_downstream(tmp_path):
    """A zheng07 universe (no log10_mstar) passes catalog validation, the check and observe."""
    cat = occupation_universe_at(3)
    res = check_catalog(cat, thresholds_log10_msunh=(12.0,))
    assert res["summary"]["n_galaxies"] == cat.n_galaxies
    setup = ObservingSetup.preset("small", min_members=3)
    obs = observe(cat, setup, min_mass=1e13, n_los=3, seed=1)
    assert obs.n_views > 0


def test_cli_occupation(tmp_path, capsys):
    """``dynmass universe --occupation zheng07 --zheng07-threshold``: written, recorded, same
    halos as the default; a bad threshold writes nothing and names the setting."""
    out = tmp_path / "z.h5"
    rc = main(["universe", "-o", str(out), "--box", "40", "--min-mass", "1e13", "--seed", "1",
               "--occupation", "zheng07", "--zheng07-threshold", "-21"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cat = read_catalog(out)
    assert printed["n_galaxies"] == cat.n_galaxies > 0
    assert cat.settings["occupation"] == "zheng07" and cat.settings["zheng07_threshold"] == -21.0
    assert cat.settings["occupation_parameters"]["logMmin"] == Zheng07Cens(
        threshold=-21).param_dict["logMmin"]
    assert "log10_mstar" not in cat.galaxies
    ref = build_universe(box_size=40.0, seed=1, min_mass=1e13)
    np.testing.assert_array_equal(cat.halos["m200c"], ref.halos["m200c"])
    np.testing.assert_array_equal(cat.halos["x"], ref.halos["x"])
    bad = tmp_path / "bad.h5"
    assert main(["universe", "-o", str(bad), "--box", "40", "--occupation", "zheng07",
                 "--zheng07-threshold", "-20.3"]) == 2
    assert "zheng07_threshold" in capsys.readouterr().err
    assert not bad.exists()
    assert main(["universe", "-o", str(bad), "--from", str(out), "--format", "table",
                 "--occupation", "zheng07"]) == 2
    assert "occupation" in capsys.readouterr().err
    assert not bad.exists()
