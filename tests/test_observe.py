"""Mock observations: physics, periodic box, exactness against brute force, options, files.

Statistics of random draws (background counts in redshift-space cylinders, the sampled
fraction, the member-based centre, interloper fractions) are :class:`StochasticCheck` s in
``STOCHASTIC``, with bounds set from their spread over seeds 0-19
(``python tests/calibrate_bounds.py --only test_observe --seeds 20``). The toy catalogs come from
:mod:`dynmass.testing.catalogs`.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from functools import lru_cache, partial
from pathlib import Path

import h5py
import numpy as np
import pytest

from dynmass import Catalog, InputError, read_observations, write_catalog, write_observations
from dynmass.cli import main
from dynmass.cosmology import C_KMS, MDPL2, hubble_h_units, little_h, to_astropy
from dynmass.observe import (
    PRESETS,
    check_observations_file,
    flat_los_counts,
    observe,
    observe_file,
)
from dynmass.observing import ObservingSetup
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.catalogs import Z, concat, halo, make_catalog, members_of, random_universe

RNG_SEED = 12345  # the seed of the ``rng`` fixture (tests/conftest.py)


def in_mpc(cat: Catalog) -> Catalog:
    """Unit bug: positions and box in Mpc (numerically larger by 1/h), read as Mpc/h."""
    h = little_h(cat.cosmology)
    return replace(cat, halos={**cat.halos, **{c: cat.halos[c] / h for c in "xyz"}},
                   galaxies={**cat.galaxies, **{c: cat.galaxies[c] / h for c in "xyz"}},
                   box_size=cat.box_size / h)


# ---------------------------------------------------------------------------------- checks
BG = {"box": 100.0, "aperture": 2.0, "vcut": 1500.0, "density": 0.05}


@lru_cache(maxsize=4)
def background_views(seed: int, broken: str | None = None) -> tuple:
    """Views of 30 halos x 4 lines of sight in a uniform background of 0.05 (Mpc/h)^-3 at
    rest (generator seed ``seed``), and the expected number of galaxies: the views' total
    redshift-space volume (depth between z_c -/+ vcut (1 + z_c) / c, astropy distances) times
    the density. Returns ``(catalog, obs, expected, depth)``."""
    rng = np.random.default_rng(seed)
    box, ap, vcut, dens = BG["box"], BG["aperture"], BG["vcut"], BG["density"]
    n_bg = rng.poisson(dens * box**3)
    bg = {c: rng.uniform(0, box, n_bg) for c in "xyz"}
    bg.update({f"v{c}": np.zeros(n_bg) for c in "xyz"})
    hs = [halo(i, rng.uniform(0, box, 3), m=1e14) for i in range(30)]
    cat = make_catalog(hs, bg, box=box)
    if broken == "mpc":
        cat = in_mpc(cat)
    if broken == "aperture_mpc":
        ap = ap / little_h(MDPL2)
    obs = observe(cat, aperture=ap, vcut=vcut, min_mass=1e13, min_members=1, n_los=4,
                  seed=seed)
    astro, h = to_astropy(MDPL2), little_h(MDPL2)
    dz = vcut * (1 + Z) / C_KMS
    depth = (astro.comoving_distance(Z + dz) - astro.comoving_distance(Z - dz)).value * h
    expected = obs.n_views * dens * np.pi * BG["aperture"] ** 2 * depth
    return cat, obs, float(expected), float(depth)


def background_counts(seed: int, broken: str | None = None) -> dict[str, float]:
    """Galaxies found in the background views against the expected number, as a Poisson
    z-score ``(found - expected) / sqrt(expected)``; ``mean R^2 / (aperture^2 / 2)`` and
    ``mean |v| / (vcut / 2)`` (uniform in area and in velocity). ``broken``: ``"mpc"``
    positions and box in Mpc, ``"aperture_mpc"`` the aperture given in Mpc."""
    _, obs, expected, _ = background_views(seed, broken)
    return {"count_z": (len(obs.R) - expected) / np.sqrt(expected),
            "R2_ratio": float(np.mean(obs.R**2) / (BG["aperture"] ** 2 / 2)),
            "absv_ratio": float(np.mean(np.abs(obs.v)) / (BG["vcut"] / 2))}


@lru_cache(maxsize=4)
def sampled_views(seed: int, rate: float = 0.5) -> tuple:
    """``random_universe`` with 3000 field galaxies (generator seed ``seed``) observed in full
    and with ``sampling_rate`` ``rate`` (observe seed ``seed``). Returns ``(full, sampled)``."""
    cat = random_universe(np.random.default_rng(seed), n_field=3000)
    full = observe(cat, min_mass=1e13, min_members=1, n_los=3)
    part = full if rate == 1.0 else observe(cat, min_mass=1e13, min_members=1, n_los=3,
                                            sampling_rate=rate, seed=seed)
    return full, part


def sampled_fraction(seed: int, broken: str | None = None) -> dict[str, float]:
    """Fraction of the galaxies of all views kept with sampling_rate 0.5, as a binomial
    z-score ``(frac - 0.5) / sqrt(0.25 / n)``. ``broken``: ``"not_thinned"`` the rate is
    ignored, ``"thinned_twice"`` the rate is applied twice (0.25)."""
    rate = {"not_thinned": 1.0, "thinned_twice": 0.25}.get(broken, 0.5)
    full, half = sampled_views(seed, rate)
    n = len(full.R)
    return {"frac_z": (len(half.R) / n - 0.5) / np.sqrt(0.25 / n)}


CENTRE = {"dR": 0.3, "dv": 250.0}  # Mpc/h and km/s


def member_centre(seed: int, broken: str | None = None) -> dict[str, float]:
    """One halo at rest whose 300 members (generator seed ``seed``) are centred 0.3 Mpc/h
    away along x and move at +250 km/s along z. Viewed along z with ``center="members"``:
    the estimated centre's offsets minus the truth (``dR_err`` Mpc/h, ``dv_err`` km/s), and
    how much closer to 0 the median velocity of the view is than with the true centre
    (``median_gain`` km/s). ``broken``: ``"true_centre"`` the estimate is the halo centre,
    ``"velocity_not_shifted"`` the view's velocities are not moved to the estimated centre."""
    rng = np.random.default_rng(seed)
    h = halo(3, (30.0, 30.0, 30.0), (0.0, 0.0, 0.0))
    g = members_of(rng, {**h, "x": 30.0 + CENTRE["dR"], "vx": 0.0}, 300, scale=0.25,
                   sigma=300.0)
    g["vz"] = g["vz"] + CENTRE["dv"]
    cat = make_catalog([h], g)
    true = observe(cat, min_mass=1e13, n_los=3)
    est = observe(cat, min_mass=1e13, n_los=3,
                  center="true" if broken == "true_centre" else "members")
    z = 2
    v_est = (true if broken == "velocity_not_shifted" else est).view(z)[1]
    return {"dR_err": est.clusters["center_dR"][z] - CENTRE["dR"],
            "dv_err": est.clusters["center_dv"][z] - CENTRE["dv"],
            "median_gain": abs(np.median(true.view(z)[1])) - abs(np.median(v_est))}


def interloper_fractions(seed: int, broken: str | None = None) -> dict[str, float]:
    """``random_universe`` with 24 halos (generator seed ``seed``; twice the default, which
    halves the spread of the rise) observed with the "small" preset, 4 lines of sight, at
    least 3 galaxies, observe seed ``seed``; from
    :func:`~dynmass.observe.check_observations_file`: the interloper fraction and its rise
    from inside 0.5 R200c to beyond R200c. ``broken``: ``"shuffled_hosts"`` galaxies' host ids
    shuffled, ``"hosts_ignored"`` every galaxy without a host."""
    cat = random_universe(np.random.default_rng(seed), n_halos=24)
    host = cat.galaxies["host_id"]
    if broken == "shuffled_hosts":
        host = np.random.default_rng(seed).permutation(host)
    elif broken == "hosts_ignored":
        host = np.full_like(host, -1)
    cat = replace(cat, galaxies={**cat.galaxies, "host_id": host})
    ap, vcut = PRESETS["small"]
    obs = observe(cat, aperture=ap, vcut=vcut, min_mass=1e13, min_members=3, n_los=4,
                  seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_observations(obs, Path(tmp) / "obs.h5")
        s = check_observations_file(path, Path(tmp) / "chk")["summary"]
    return {"interloper_fraction": s["interloper_fraction"],
            "rise": s["interloper_fraction_beyond_R200c"]
            - s["interloper_fraction_inside_0.5R200c"]}


STOCHASTIC = {
    "background": StochasticCheck(
        run=background_counts, seed=RNG_SEED,
        bounds={"count_z": Bound(-7.0, 7.0), "R2_ratio": Bound(0.945, 1.06),
                "absv_ratio": Bound(0.905, 1.09)},
        broken={b: partial(background_counts, broken=b) for b in ("mpc", "aperture_mpc")}),
    "sampling": StochasticCheck(
        run=sampled_fraction, seed=RNG_SEED,
        bounds={"frac_z": Bound(-5.5, 5.5)},
        broken={b: partial(sampled_fraction, broken=b)
                for b in ("not_thinned", "thinned_twice")}),
    "member_centre": StochasticCheck(
        run=member_centre, seed=RNG_SEED,
        bounds={"dR_err": Bound(-0.11, 0.11), "dv_err": Bound(-110, 110),
                "median_gain": Bound(lo=120)},
        broken={b: partial(member_centre, broken=b)
                for b in ("true_centre", "velocity_not_shifted")}),
    "interlopers": StochasticCheck(
        run=interloper_fractions, seed=RNG_SEED,
        bounds={"interloper_fraction": Bound(0.085, 0.18), "rise": Bound(lo=0)},
        broken={b: partial(interloper_fractions, broken=b)
                for b in ("shuffled_hosts", "hosts_ignored")}),
}


def brute_force(cat: Catalog, obs, aperture: float, vcut: float) -> None:
    """Check every view against a plain loop over all galaxies (no trees, no chunks)."""
    pos, vel = cat.galaxy_positions(), cat.galaxy_velocities()
    box, z = cat.box_size, cat.redshift
    astro = to_astropy(cat.cosmology)
    zz = np.linspace(z - 0.1, z + 0.1, 40001)
    chi = astro.comoving_distance(zz).value * little_h(cat.cosmology)
    table = (chi - np.interp(z, zz, chi), zz)
    row = {int(i): k for k, i in enumerate(cat.halos["id"])}
    assert obs.n_views > 0
    for k in range(obs.n_views):
        h = row[int(obs.clusters["halo_id"][k])]
        n = np.array([obs.clusters[c][k] for c in ("los_x", "los_y", "los_z")])
        d = pos - cat.halo_positions()[h]
        d -= box * np.round(d / box)
        dp = d @ n
        R = np.linalg.norm(d - dp[:, None] * n, axis=1)
        u_c = np.array([cat.halos[c][h] for c in ("vx", "vy", "vz")]) @ n
        z_cos = np.interp(dp, *table)
        v = C_KMS * ((1 + z_cos) * (1 + (vel @ n) / C_KMS) / ((1 + z) * (1 + u_c / C_KMS)) - 1)
        inside = np.flatnonzero((R <= aperture) & (np.abs(v) <= vcut))
        gi = obs.galaxy_index[obs.offsets[k]:obs.offsets[k + 1]]
        np.testing.assert_array_equal(gi, inside)
        np.testing.assert_allclose(obs.view(k)[0], R[inside], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(obs.view(k)[1], v[inside], rtol=1e-7, atol=1e-6)


# ----------------------------------------------------------------------------------------------
def test_lone_halo_has_no_interlopers(rng):
    h = halo(7, (50.0, 50.0, 50.0), (200.0, -100.0, 50.0))
    cat = make_catalog([h], members_of(rng, h, 40, scale=0.3, sigma=300.0))
    obs = observe(cat, min_mass=1e13, n_los=6)
    assert obs.n_views == 6
    assert obs.is_member.all()
    # all within 1.6 Mpc/h and 2200 km/s: R > 1.6 is a 5.3-sigma tail of the 2D Rayleigh
    # distribution of scale 0.3 (P = 7e-7 per galaxy), |v| > 2200 a 7-sigma one
    np.testing.assert_array_equal(obs.n_gal, 40)
    np.testing.assert_array_equal(obs.clusters["n_members_true"], 40)
    assert np.all(obs.clusters["halo_id"] == 7)
    los = np.column_stack([obs.clusters[c] for c in ("los_x", "los_y", "los_z")])
    np.testing.assert_allclose(los[:3], np.eye(3))
    np.testing.assert_allclose(np.linalg.norm(los, axis=1), 1.0)
    assert np.all(np.abs(los[3:]).max(axis=1) < 1 - 1e-6)  # extra views are not the axes
    # view along z: v = peculiar z velocity difference + Hubble flow of the z offset
    Hh = hubble_h_units(MDPL2, Z)
    gi = obs.galaxy_index[obs.offsets[2]:obs.offsets[3]]
    dz = cat.galaxies["z"][gi] - 50.0
    v_lin = cat.galaxies["vz"][gi] - 50.0 + Hh * dz / (1 + Z)
    np.testing.assert_allclose(obs.view(2)[1], v_lin, atol=2.0)  # 2nd-order terms < 2 km/s
    assert obs.settings["n_views_dropped"] == 0 and obs.settings["aperture"] == 1.6


def test_uniform_background_matches_redshift_space_volume():
    """A uniform background at rest fills the views as the redshift-space volume of the
    cylinders says (check ``background``: Poisson z-score of the count, mean R^2 and mean |v|
    of uniform draws).

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_observe.background --seeds 20``):
    count_z: mean 0.1199, sd 1.3, range [-1.728, 2.08]; bound (-7, 7), 5.5 sd from the mean.
    R2_ratio: mean 1.001, sd 0.011, range [0.9783, 1.02];
      bound (0.945, 1.06), 5.1 sd from the mean.
    absv_ratio: mean 0.9983, sd 0.018, range [0.9673, 1.032];
      bound (0.905, 1.09), 5.2 sd from the mean.
    Broken variants caught (seeds 0-2): mpc 3/3, aperture_mpc 3/3.
    """
    STOCHASTIC["background"].check()
    _, obs, _, depth = background_views(RNG_SEED)
    assert obs.n_views == 120 and obs.settings["n_views_dropped"] == 0
    # independent expectation of the depth: astropy distances against 2 vcut (1 + z) / H(z)
    vcut = BG["vcut"]
    assert depth == pytest.approx(2 * vcut * (1 + Z) / hubble_h_units(MDPL2, Z), rel=1e-3)
    assert len(obs.R) > 0 and not obs.is_member.any()


def test_periodic_wrapping_in_all_directions():
    box = 50.0
    h = halo(1, (0.2, 49.9, 25.0), m=1e14)
    # galaxies across the x and y boundaries, and across the z boundary seen along z
    g = {"x": np.array([49.7, 0.9, 0.2, 0.2]), "y": np.array([49.9, 0.4, 49.9, 49.9]),
         "z": np.array([25.0, 25.3, 49.8, 0.3]),
         **{f"v{c}": np.zeros(4) for c in "xyz"}, "host_id": np.array([1, 1, -1, -1])}
    h2 = halo(2, (0.1, 49.95, 0.05), m=1e14)
    cat = make_catalog([h, h2], g, box=box)
    obs = observe(cat, min_mass=1e13, min_members=1, n_los=3)
    z_view = np.flatnonzero((obs.clusters["halo_id"] == 1) & (obs.clusters["los"] == 2))[0]
    R, v = obs.view(z_view)
    gi = obs.galaxy_index[obs.offsets[z_view]:obs.offsets[z_view + 1]]
    np.testing.assert_array_equal(gi[:2], [0, 1])
    np.testing.assert_allclose(R[:2], [0.5, np.hypot(0.7, 0.5)], atol=1e-9)
    # along z from halo 2 at z = 0.05: galaxy 2 sits 0.25 Mpc/h in front (z = 49.8), 3 behind
    z2 = np.flatnonzero((obs.clusters["halo_id"] == 2) & (obs.clusters["los"] == 2))[0]
    gi2 = obs.galaxy_index[obs.offsets[z2]:obs.offsets[z2 + 1]]
    v2 = obs.view(z2)[1]
    assert {2, 3} <= set(gi2.tolist())
    Hh = hubble_h_units(MDPL2, Z) / (1 + Z)
    np.testing.assert_allclose(v2[gi2 == 2], -0.25 * Hh, rtol=1e-3)
    np.testing.assert_allclose(v2[gi2 == 3], 0.25 * Hh, rtol=1e-3)


def test_axis_and_rotated_views_agree_with_brute_force(rng):
    cat = random_universe(rng)
    obs = observe(cat, min_mass=1e13, min_members=1, n_los=5, chunk_size=7)
    assert np.any(obs.clusters["los"] >= 3)
    brute_force(cat, obs, 1.6, 2200.0)
    # the rotated-view machinery on axis-aligned lines of sight gives the axis results
    from dynmass import _observe_kernels as K

    pos, vel = cat.galaxy_positions(), cat.galaxy_velocities()
    u_max = float(np.linalg.norm(vel, axis=1).max())
    z_lo, z_hi = K.los_redshift_bounds(2200.0, u_max, 0.0, Z)
    table = K.redshift_table(MDPL2, Z, Z - 0.05, Z + 0.05)
    depth = K.los_half_depth(z_lo, z_hi, table)
    task = {"gal_pos": pos, "gal_vel": vel, "gal_host": cat.galaxies["host_id"],
            "gal_index": np.arange(len(pos)), "view_id": np.arange(3),
            "cen_pos": np.repeat(cat.halo_positions()[:1], 3, 0),
            "cen_vel": np.zeros((3, 3)), "los": np.eye(3), "halo_id": np.full(3, 1),
            "halo_row": np.zeros(3, int), "los_index": np.arange(3), "batch": 2,
            "box": cat.box_size, "aperture": 1.6, "vcut": 2200.0, "redshift": Z,
            "half_depth": depth, "u_gal_max": u_max, "table": table,
            "survey": ObservingSetup().survey_settings(), "seed": 0, "center": "true"}
    outs = []
    for kind in (0, 1, 2):
        outs.append(K.observe_chunk({**task, "kind": kind, "view_id": np.array([kind]),
                                     **{k: task[k][kind:kind + 1] for k in
                                        ("cen_pos", "cen_vel", "los", "halo_id", "halo_row",
                                         "los_index")}}))
    rot = K.observe_chunk({**task, "kind": -1})
    np.testing.assert_array_equal(rot["counts"], [o["counts"][0] for o in outs])
    np.testing.assert_array_equal(rot["galaxy_index"],
                                  np.concatenate([o["galaxy_index"] for o in outs]))
    np.testing.assert_array_equal(rot["v"], np.concatenate([o["v"] for o in outs]))


def test_deterministic_and_chunking_independent(rng):
    cat = random_universe(rng, n_field=3000)
    kw = {"min_mass": 1e13, "min_members": 5, "n_los": 6, "sampling_rate": 0.7, "seed": 3}
    a = observe(cat, **kw)
    b = observe(cat, **kw, chunk_size=3)
    c = observe(cat, **{**kw, "seed": 4})
    for name in ("R", "v", "is_member", "galaxy_index", "offsets"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    for col in a.clusters:
        assert a.clusters[col].tobytes() == b.clusters[col].tobytes(), col
    assert not np.array_equal(a.galaxy_index, c.galaxy_index)


def test_sampling_rate_thins_each_view():
    """sampling_rate 0.5 keeps half of each view's galaxies (check ``sampling``: binomial
    z-score of the kept fraction), always a subset of the full view.

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_observe.sampling --seeds 20``):
    frac_z: mean -0.4462, sd 1, range [-1.944, 1.547]; bound (-5.5, 5.5), 5.1 sd from the mean.
    Broken variants caught (seeds 0-2): not_thinned 3/3, thinned_twice 3/3.
    """
    STOCHASTIC["sampling"].check()
    full, half = sampled_views(RNG_SEED)
    # every view keeps > 1 galaxy: each has >= 25 members (P(all dropped) = 2^-25 per view)
    assert full.n_views > 0 and half.n_views == full.n_views
    for k in range(full.n_views):
        sub = half.galaxy_index[half.offsets[k]:half.offsets[k + 1]]
        allg = full.galaxy_index[full.offsets[k]:full.offsets[k + 1]]
        assert np.all(np.isin(sub, allg))
    np.testing.assert_allclose(half.clusters["sigma_v"][0], np.std(half.view(0)[1]))


def test_min_members_drops_and_counts(rng, caplog):
    cat = random_universe(rng, n_field=500)
    few = observe(cat, min_mass=1e13, min_members=1)
    thr = int(np.median(few.n_gal)) + 1
    with caplog.at_level("WARNING", logger="dynmass.observe"):
        many = observe(cat, min_mass=1e13, min_members=thr)
    dropped = int(np.sum(few.n_gal < thr))
    assert dropped > 0
    assert many.settings["n_views_dropped"] == dropped
    assert many.n_views == few.n_views - dropped
    assert np.all(many.n_gal >= thr)
    assert "dropped" in caplog.text


def test_center_on_members_recovers_the_galaxy_centre():
    """``center="members"`` finds the galaxies' centre in position and velocity and moves the
    view's velocities to it (check ``member_centre``).

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_observe.member_centre --seeds 20``):
    dR_err: mean -0.005595, sd 0.02, range [-0.04641, 0.02845];
      bound (-0.11, 0.11), 5.2 sd from the mean.
    dv_err: mean -0.2394, sd 21, range [-28.33, 42.24]; bound (-110, 110), 5.3 sd from the mean.
    median_gain: mean 242.4, sd 24, range [192.3, 285.6];
      bound (120, inf), 5.0 sd from the mean.
    Broken variants caught (seeds 0-2): true_centre 3/3, velocity_not_shifted 3/3.
    """
    STOCHASTIC["member_centre"].check()
    h = halo(3, (30.0, 30.0, 30.0))
    cat = make_catalog([h], members_of(np.random.default_rng(0), h, 50))
    true = observe(cat, min_mass=1e13, n_los=3)
    assert true.n_views == 3 and np.all(true.clusters["center_dR"] == 0)
    assert np.all(true.clusters["center_dv"] == 0)


def test_flat_mass_function_rule(rng):
    counts = flat_los_counts(np.array([13.50, 13.51, 13.52, 14.5, 15.0]), target=12,
                             bin_dex=0.1, n_min=3, max_los=8)
    np.testing.assert_array_equal(counts, [4, 4, 4, 8, 8])
    box = 60.0
    logm = np.concatenate([np.full(30, 13.55), np.full(3, 14.25), [14.95]])
    hs = [halo(i + 1, rng.uniform(0, box, 3), m=10**lm) for i, lm in enumerate(logm)]
    cat = make_catalog(hs, concat(*[members_of(rng, h, 12, box=box) for h in hs]), box=box)
    obs = observe(cat, min_mass=1e13, min_members=1, flat_mass_function=True, flat_target=24,
                  flat_bin_dex=0.1, max_los=20)
    lm = np.log10(obs.clusters["m200c"])
    assert np.sum(np.isclose(lm, 13.55)) == 24  # crowded bin thinned to the target
    assert np.sum(np.isclose(lm, 14.25)) == 24  # 3 hosts x 8 views
    assert np.sum(np.isclose(lm, 14.95)) == 20  # one host, capped at max_los
    assert obs.settings["flat_target"] == 24


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"aperture": -1.0}, "aperture"), ({"vcut": 0.0}, "vcut"), ({"min_members": 0}, "min_members"),
     ({"sampling_rate": 0.0}, "sampling_rate"), ({"sampling_rate": 1.5}, "sampling_rate"),
     ({"center": "bcg"}, "center"), ({"n_los": 0}, "n_los"), ({"aperture": 30.0}, "aperture")],
)
def test_bad_options_write_nothing(tmp_path, rng, kw, needle):
    u = write_catalog(random_universe(rng, n_field=100), tmp_path / "u.h5")
    with pytest.raises(InputError, match=needle):
        observe_file(u, tmp_path / "o.h5", min_mass=1e13, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.h5"]


def test_universe_without_needed_column(tmp_path, rng):
    u = write_catalog(random_universe(rng, n_field=100), tmp_path / "u.h5")
    with h5py.File(u, "a") as fh:
        del fh["galaxies/vz"]
    with pytest.raises(InputError, match="galaxies/vz"):
        observe_file(u, tmp_path / "o.h5")
    assert main(["observe", str(u), "-o", str(tmp_path / "o.h5")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.h5"]


def test_cli_observe_and_check(tmp_path, rng, capsys):
    """CLI observe and check on a toy universe; the interloper fractions of the report
    (check ``interlopers``: members concentrate to the centre, so interlopers are more common
    beyond R200c than inside 0.5 R200c).

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_observe.interlopers --seeds 20``):
    interloper_fraction: mean 0.1313, sd 0.0089, range [0.1174, 0.1545];
      bound (0.085, 0.18), 5.2 sd from the mean.
    rise: mean 0.2491, sd 0.039, range [0.18, 0.335]; bound (0, inf), 6.4 sd from the mean.
    Broken variants caught (seeds 0-2): shuffled_hosts 3/3, hosts_ignored 3/3.
    """
    u = write_catalog(random_universe(rng), tmp_path / "u.h5")
    out = tmp_path / "obs.h5"
    assert main(["observe", str(u), "-o", str(out), "--preset", "small", "--min-mass", "1e13",
                 "--min-members", "3", "--n-los", "4", "--seed", "5"]) == 0
    obs = read_observations(out)
    assert (obs.aperture, obs.vcut) == PRESETS["small"]
    assert obs.settings["n_los"] == 4 and obs.settings["seed"] == 5
    with h5py.File(out) as fh:
        assert len(fh.attrs["universe_sha256"]) == 64 and fh.attrs["seed"] == 5
    assert obs.settings["universe_sha256"] == h5py.File(out).attrs["universe_sha256"]
    assert main(["check", str(out), "-o", str(tmp_path / "chk")]) == 0
    assert (tmp_path / "chk" / "interlopers.png").stat().st_size > 1000
    res = check_observations_file(out, tmp_path / "chk2")
    assert res["passed"]
    s = res["summary"]
    assert len(obs.R) > 0
    assert sum(b["n_gal"] for b in s["vs_R_over_R200c"]) == len(obs.R)
    assert sum(b["n_gal"] for b in s["vs_log10_m200c"]) == len(obs.R)
    STOCHASTIC["interlopers"].check()


def test_check_detects_inconsistent_file(tmp_path, rng):
    from dynmass import write_observations

    obs = observe(random_universe(rng), min_mass=1e13, min_members=3)
    obs.clusters["n_members_true"] = obs.clusters["n_members_true"] + 1
    path = write_observations(obs, tmp_path / "bad.h5")
    res = check_observations_file(path, tmp_path / "chk")
    assert not res["passed"] and not res["checks"]["n_members_true_matches"]
