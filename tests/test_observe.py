"""Mock observations: physics, periodic box, exactness against brute force, options, files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dynmass import Catalog, InputError, read_observations, write_catalog
from dynmass.cli import main
from dynmass.cosmology import C_KMS, MDPL2, hubble_h_units, little_h, to_astropy
from dynmass.observe import (
    PRESETS,
    check_observations_file,
    flat_los_counts,
    observe,
    observe_file,
)

Z = 0.117


def make_catalog(halos: list[dict], galaxies: dict[str, np.ndarray] | None = None,
                 box: float = 100.0) -> Catalog:
    """Catalog from a list of halo dicts and galaxy columns (host_id -1 if absent)."""
    h = {k: np.array([d[k] for d in halos], dtype=float) for k in
         ("x", "y", "z", "vx", "vy", "vz", "m200c", "r200c")}
    h["id"] = np.array([d["id"] for d in halos], dtype=np.int64)
    g = dict(galaxies or {c: np.zeros(0) for c in ("x", "y", "z", "vx", "vy", "vz")})
    n = len(g["x"])
    g.setdefault("host_id", np.full(n, -1, np.int64))
    g.setdefault("is_central", np.zeros(n, bool))
    return Catalog(halos=h, galaxies=g, box_size=box, redshift=Z, cosmology=dict(MDPL2))


def halo(i: int, pos, vel=(0, 0, 0), m=1e14, r=1.0) -> dict:
    return {"id": i, "x": pos[0], "y": pos[1], "z": pos[2], "vx": vel[0], "vy": vel[1],
            "vz": vel[2], "m200c": m, "r200c": r}


def members_of(rng, h: dict, n: int, scale=0.4, sigma=400.0, box=100.0) -> dict:
    pos = np.mod(np.array([h["x"], h["y"], h["z"]]) + rng.normal(0, scale, (n, 3)), box)
    vel = np.array([h["vx"], h["vy"], h["vz"]]) + rng.normal(0, sigma, (n, 3))
    return {"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "vx": vel[:, 0], "vy": vel[:, 1],
            "vz": vel[:, 2], "host_id": np.full(n, h["id"], np.int64)}


def concat(*tables: dict) -> dict:
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def random_universe(rng, box=60.0, n_halos=12, n_field=6000) -> Catalog:
    hs = [halo(i + 1, rng.uniform(0, box, 3), rng.normal(0, 300, 3),
               m=10 ** rng.uniform(13.6, 15), r=rng.uniform(0.5, 1.5)) for i in range(n_halos)]
    mem = [members_of(rng, h, 25, box=box) for h in hs]
    field = {c: rng.uniform(0, box, n_field) for c in "xyz"}
    field.update({f"v{c}": rng.normal(0, 300, n_field) for c in "xyz"})
    field["host_id"] = np.full(n_field, -1, np.int64)
    return make_catalog(hs, concat(*mem, field), box=box)


def brute_force(cat: Catalog, obs, aperture: float, vcut: float) -> None:
    """Check every view against a plain loop over all galaxies (no trees, no chunks)."""
    pos, vel = cat.galaxy_positions(), cat.galaxy_velocities()
    box, z = cat.box_size, cat.redshift
    astro = to_astropy(cat.cosmology)
    zz = np.linspace(z - 0.1, z + 0.1, 40001)
    chi = astro.comoving_distance(zz).value * little_h(cat.cosmology)
    table = (chi - np.interp(z, zz, chi), zz)
    row = {int(i): k for k, i in enumerate(cat.halos["id"])}
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
    np.testing.assert_array_equal(obs.n_gal, 40)  # all within 1.6 Mpc/h and 2200 km/s
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


def test_uniform_background_matches_redshift_space_volume(rng):
    box, ap, vcut, dens = 100.0, 2.0, 1500.0, 0.05
    n_bg = rng.poisson(dens * box**3)
    bg = {c: rng.uniform(0, box, n_bg) for c in "xyz"}
    bg.update({f"v{c}": np.zeros(n_bg) for c in "xyz"})
    hs = [halo(i, rng.uniform(0, box, 3), m=1e14) for i in range(30)]
    cat = make_catalog(hs, bg, box=box)
    obs = observe(cat, aperture=ap, vcut=vcut, min_mass=1e13, min_members=1, n_los=4)
    assert obs.settings["n_views_dropped"] == 0
    # independent expectation: depth between z_c -/+ vcut (1+z_c)/c with astropy distances
    astro, h = to_astropy(MDPL2), little_h(MDPL2)
    dz = vcut * (1 + Z) / C_KMS
    depth = (astro.comoving_distance(Z + dz) - astro.comoving_distance(Z - dz)).value * h
    assert depth == pytest.approx(2 * vcut * (1 + Z) / hubble_h_units(MDPL2, Z), rel=1e-3)
    expected = obs.n_views * dens * np.pi * ap**2 * depth
    found = len(obs.R)
    assert abs(found - expected) < 4 * np.sqrt(expected), (found, expected)
    assert not obs.is_member.any()
    # uniform in area: mean R^2 = ap^2 / 2; uniform in v
    assert np.mean(obs.R**2) == pytest.approx(ap**2 / 2, rel=0.05)
    assert np.mean(np.abs(obs.v)) == pytest.approx(vcut / 2, rel=0.05)


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
            "half_depth": depth, "u_gal_max": u_max, "table": table, "sampling_rate": 1.0,
            "seed": 0, "center": "true"}
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


def test_sampling_rate_thins_each_view(rng):
    cat = random_universe(rng, n_field=3000)
    full = observe(cat, min_mass=1e13, min_members=1, n_los=3)
    half = observe(cat, min_mass=1e13, min_members=1, n_los=3, sampling_rate=0.5, seed=9)
    assert half.n_views == full.n_views  # (every view keeps > 1 galaxy here)
    frac = len(half.R) / len(full.R)
    n = len(full.R)
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / n)
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


def test_center_on_members_recovers_the_galaxy_centre(rng):
    h = halo(3, (30.0, 30.0, 30.0), (0.0, 0.0, 0.0))
    g = members_of(rng, {**h, "x": 30.3, "vx": 0.0}, 300, scale=0.25, sigma=300.0)
    g["vz"] = g["vz"] + 250.0  # the galaxies move at +250 km/s relative to the halo along z
    cat = make_catalog([h], g)
    true = observe(cat, min_mass=1e13, n_los=3)
    est = observe(cat, min_mass=1e13, n_los=3, center="members")
    z = 2
    assert est.clusters["center_dR"][z] == pytest.approx(0.3, abs=0.06)
    assert est.clusters["center_dv"][z] == pytest.approx(250, abs=60)
    assert abs(np.median(est.view(z)[1])) < abs(np.median(true.view(z)[1]))
    assert np.all(true.clusters["center_dR"] == 0)


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
    assert 0 < s["interloper_fraction"] < 1
    assert s["interloper_fraction_beyond_R200c"] > s["interloper_fraction_inside_0.5R200c"]
    assert sum(b["n_gal"] for b in s["vs_R_over_R200c"]) == len(obs.R)
    assert sum(b["n_gal"] for b in s["vs_log10_m200c"]) == len(obs.R)


def test_check_detects_inconsistent_file(tmp_path, rng):
    from dynmass import write_observations

    obs = observe(random_universe(rng), min_mass=1e13, min_members=3)
    obs.clusters["n_members_true"] = obs.clusters["n_members_true"] + 1
    path = write_observations(obs, tmp_path / "bad.h5")
    res = check_observations_file(path, tmp_path / "chk")
    assert not res["passed"] and not res["checks"]["n_members_true_matches"]
