"""Masses of clusters from members on the sky: geometry, centres, many clusters, bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table

from dynmass.bundle import make_bundle
from dynmass.cosmology import C_KMS, MDPL2, hubble_h_units, to_astropy
from dynmass.errors import InputError
from dynmass.observations import from_views, read_observations, write_observations
from dynmass.predict import (
    estimate_center,
    parse_cosmology,
    predict_file,
    predict_members,
    read_table,
    sky_to_rv,
)

_spec = importlib.util.spec_from_file_location("_dynmass_test_bundle",
                                               Path(__file__).with_name("test_bundle.py"))
tb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb)

Z_C = 0.117
COSMO = to_astropy(MDPL2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    obs = tb.synthetic_views(np.random.default_rng(3), n_halos=300, richness=30.0,
                             n_interlopers=2.0)
    run = tb.make_run(tmp / "run", obs, k=3)
    b = make_bundle(run, tmp / "bundle.h5")
    return b


def mock_cluster_box(rng, log_m: float = 14.6, n_members: int = 60, n_field: int = 150):
    """Galaxies around a cluster at the origin: offsets [comoving Mpc/h], LOS peculiar v [km/s]."""
    sigma = 1082.9 * (10 ** (log_m - 15)) ** 0.3361  # Evrard et al. 2008
    mem = rng.normal(0, 0.5, (n_members, 3))
    v_mem = rng.normal(0, sigma, n_members)
    field = np.column_stack([rng.uniform(-2.5, 2.5, n_field), rng.uniform(-2.5, 2.5, n_field),
                             rng.uniform(-30, 30, n_field)])
    v_field = rng.normal(0, 300, n_field)
    pos = np.vstack([mem, field])
    return pos[:, 0], pos[:, 1], pos[:, 2], np.concatenate([v_mem, v_field])


def box_direct_rv(dx, dy, dz, vpec, z_c=Z_C):
    """R and v as the observe stage sees them in the box: Hubble flow a H dz + v_pec (LOS = z)."""
    R = np.hypot(dx, dy)
    v = hubble_h_units(MDPL2, z_c) * dz / (1 + z_c) + vpec
    return R, v


def place_on_sky(dx, dy, dz, vpec, ra_c, dec_c, z_c=Z_C):
    """RA, Dec, z of box galaxies for a cluster at (ra_c, dec_c, z_c), LOS = z axis.

    Comoving distance chi_c + dz -> cosmological z (interpolated D_C), combined relativistically
    with the peculiar velocity: 1 + z_obs = (1 + z_cos)(1 + v_pec / c). Transverse offsets are
    angles theta = r_perp / chi_c in the cluster's plane.
    """
    h = COSMO.h
    chi_c = COSMO.comoving_distance(z_c).to_value(u.Mpc) * h
    zgrid = np.linspace(0.0, 0.6, 6001)
    chigrid = COSMO.comoving_distance(zgrid).to_value(u.Mpc) * h
    z_cos = np.interp(chi_c + dz, chigrid, zgrid)
    z_obs = (1 + z_cos) * (1 + vpec / C_KMS) - 1
    theta = np.hypot(dx, dy) / chi_c
    pa = np.arctan2(dx, dy)
    pos = SkyCoord(ra_c * u.deg, dec_c * u.deg).directional_offset_by(pa * u.rad, theta * u.rad)
    return pos.ra.wrap_at(360 * u.deg).deg, pos.dec.deg, z_obs


def cut(R, v, settings):
    keep = (R <= settings["aperture"]) & (np.abs(v) <= settings["vcut"])
    return R[keep], v[keep]


def test_sky_path_matches_box_path(bundle, tmp_path):
    rng = np.random.default_rng(1)
    dx, dy, dz, vp = mock_cluster_box(rng)
    ra, dec, z = place_on_sky(dx, dy, dz, vp, 150.0, 2.2)
    R_box, v_box = box_direct_rv(dx, dy, dz, vp)
    R_sky, v_sky = sky_to_rv(ra, dec, z, (150.0, 2.2, Z_C), COSMO)
    np.testing.assert_allclose(R_sky, R_box, rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(v_sky - v_box)) < 25.0  # second-order Hubble and v_pec terms only
    direct = from_views([cut(R_box, v_box, bundle.obs_settings)], bundle.obs_settings)
    obs = read_observations(write_observations(direct, tmp_path / "obs.h5"))
    ref = bundle.predict(obs)
    table = Table({"ra": ra, "dec": dec, "z": z})
    out = predict_members(table, bundle, centers=(150.0, 2.2, Z_C))
    assert out["error"][0] == "" and out["center_source"][0] == "given"
    assert abs(out["n_gal"][0] - obs.n_gal[0]) <= 1
    assert out["n_gal"][0] > 40
    for p in ("p2_5", "p16", "p50", "p84", "p97_5"):
        assert out[f"log10_m200c_{p}"][0] == pytest.approx(ref[f"log10_m200c_{p}"][0], abs=0.01)
    assert out["log10_m200c_msun_p50"][0] == pytest.approx(
        out["log10_m200c_p50"][0] - np.log10(0.6777), abs=1e-9)
    assert out["flags"][0] in ("", "mass")


def test_estimated_centre_near_ra_zero(bundle):
    rng = np.random.default_rng(2)
    dx, dy, dz, vp = mock_cluster_box(rng, n_members=80, n_field=100)
    ra, dec, z = place_on_sky(dx, dy, dz, vp, 0.02, -30.0)
    assert ra.max() > 359 and ra.min() < 1, "members must straddle RA = 0"
    ra_c, dec_c, z_c = estimate_center(ra, dec, z, aperture=1.6, vcut=2200.0, cosmo=COSMO)
    sep = SkyCoord(ra_c * u.deg, dec_c * u.deg).separation(SkyCoord(0.02 * u.deg, -30 * u.deg))
    assert sep.deg < 0.03  # ~0.15 Mpc/h at z = 0.117
    assert abs(z_c - Z_C) * C_KMS / (1 + Z_C) < 150  # km/s
    given = predict_members(Table({"ra": ra, "dec": dec, "z": z}), bundle,
                            centers=(0.02, -30.0, Z_C))
    est = predict_members(Table({"ra": ra, "dec": dec, "z": z}), bundle)
    assert est["center_source"][0] == "estimated" and "center_estimated" in est["flags"][0]
    assert est["log10_m200c_p50"][0] == pytest.approx(given["log10_m200c_p50"][0], abs=0.05)


def _three_clusters(rng):
    rows = []
    centres = {"A": (150.0, 2.2, 0.117), "B": (210.5, 45.0, 0.12), "C": (30.0, -10.0, 0.11)}
    for (cid, (ra_c, dec_c, z_c)), lm in zip(centres.items(), (14.2, 14.6, 15.0), strict=True):
        dx, dy, dz, vp = mock_cluster_box(rng, log_m=lm)
        ra, dec, z = place_on_sky(dx, dy, dz, vp, ra_c, dec_c, z_c)
        rows.append(Table({"cluster_id": [cid] * len(ra), "ra": ra, "dec": dec, "z": z}))
    from astropy.table import vstack

    return vstack(rows), centres


@pytest.mark.parametrize("fmt", ["csv", "ecsv", "fits", "parquet"])
def test_many_clusters_one_file(bundle, tmp_path, fmt):
    rng = np.random.default_rng(4)
    members, centres = _three_clusters(rng)
    path = tmp_path / f"members.{fmt}"
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: np.asarray(members[c]) for c in members.colnames}), path)
    else:
        members.write(path, format="ascii.csv" if fmt == "csv" else None)
    ctab = Table({"cluster_id": list(centres), "ra": [c[0] for c in centres.values()],
                  "dec": [c[1] for c in centres.values()], "z": [c[2] for c in centres.values()]})
    ctab.write(tmp_path / "centers.csv", format="ascii.csv")
    out = predict_file(path, tmp_path / "masses.csv", model=bundle.path,
                       centers=tmp_path / "centers.csv")
    assert list(out["cluster_id"]) == ["A", "B", "C"]
    assert all(e == "" for e in out["error"])
    back = Table.read(tmp_path / "masses.csv", format="ascii.csv")
    np.testing.assert_allclose(back["log10_m200c_p50"], out["log10_m200c_p50"], rtol=1e-6)
    assert json.loads((tmp_path / "masses.settings.json").read_text())["model_name"] == "msigma"
    p50 = np.asarray(out["log10_m200c_p50"])
    assert p50[0] < p50[2], "a 10^15 cluster must come out heavier than a 10^14.2 one"
    for i, cid in enumerate("ABC"):  # each equals the cluster alone
        alone = predict_members(members[members["cluster_id"] == cid], bundle,
                                centers=centres[cid])
        assert alone["log10_m200c_p50"][0] == pytest.approx(p50[i], abs=1e-9)


def test_rv_columns_directly(bundle):
    rng = np.random.default_rng(5)
    dx, dy, dz, vp = mock_cluster_box(rng)
    R, v = box_direct_rv(dx, dy, dz, vp)
    out = predict_members(Table({"R": R, "v": v}), bundle)
    ref = bundle.predict(from_views([cut(R, v, bundle.obs_settings)], bundle.obs_settings))
    assert out["log10_m200c_p50"][0] == pytest.approx(ref["log10_m200c_p50"][0], abs=1e-12)
    assert out["center_source"][0] == "given R, v"


def test_bad_rows_named_and_other_clusters_estimated(bundle):
    rng = np.random.default_rng(6)
    members, centres = _three_clusters(rng)
    members["z"][[3, 7]] = np.nan  # cluster A
    iC = np.flatnonzero(members["cluster_id"] == "C")
    members["dec"][iC[5]] = 95.0
    out = predict_members(members, bundle, centers=centres)
    err = dict(zip(out["cluster_id"], out["error"], strict=True))
    assert "data rows 3, 7" in err["A"] and "redshift" in err["A"]
    assert err["B"] == "" and np.isfinite(out["log10_m200c_p50"][1])
    assert f"data row {iC[5]}" in err["C"] and "Dec outside" in err["C"]
    skip = predict_members(members, bundle, centers=centres, skip_bad_rows=True)
    assert all(e == "" for e in skip["error"])
    assert "skipped data rows 3, 7" in skip["notes"][0]


@pytest.mark.parametrize(("col", "value", "needle"), [
    ("ra", 360.0, "RA outside"), ("ra", -1.0, "RA outside"), ("z", -0.01, "redshift < 0"),
    ("dec", -90.5, "Dec outside"),
])
def test_coordinates_out_of_range(bundle, col, value, needle):
    rng = np.random.default_rng(7)
    members, centres = _three_clusters(rng)
    members[col][0] = value
    out = predict_members(members, bundle, centers=centres)
    assert needle in out["error"][0] and "data row 0" in out["error"][0]
    assert out["error"][1] == "" and out["error"][2] == ""
    with pytest.raises(InputError, match="Dec outside"):
        predict_members(members[members["cluster_id"] == "B"], bundle, centers=(1.0, 91.0, 0.1))


def test_too_few_and_few_members(bundle):
    rng = np.random.default_rng(8)
    members, centres = _three_clusters(rng)
    keep = np.ones(len(members), bool)
    keep[np.flatnonzero(members["cluster_id"] == "A")[2:]] = False  # A: 2 galaxies
    members = members[keep]
    out = predict_members(members, bundle, centers=centres, min_members=1000)
    assert "only" in out["error"][0] and "need at least 3" in out["error"][0]
    assert not np.isfinite(out["log10_m200c_p50"][0])
    assert out["error"][1] == "" and "few_members" in out["flags"][1]
    assert "n_gal" not in out["flags"][1]


def test_redshift_and_domain_flags(bundle):
    rng = np.random.default_rng(9)
    dx, dy, dz, vp = mock_cluster_box(rng)
    ra, dec, z = place_on_sky(dx, dy, dz, vp, 100.0, 10.0, z_c=0.3)
    out = predict_members(Table({"ra": ra, "dec": dec, "z": z}), bundle, centers=(100, 10, 0.3))
    assert "redshift" in out["flags"][0].split(";")


def test_missing_columns_and_bad_files(bundle, tmp_path):
    Table({"ra": [1.0], "dec": [2.0], "redshift_spec": [0.1]}).write(tmp_path / "m.csv",
                                                                       format="ascii.csv")
    with pytest.raises(InputError, match=r"m\.csv.*missing: z"):
        predict_members(tmp_path / "m.csv", bundle)
    out = predict_members(tmp_path / "m.csv", bundle, z_col="redshift_spec", centers=(1, 2, 0.1))
    assert "only 1 galaxies" in out["error"][0]
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="junk.h5"):
        predict_members(tmp_path / "m.csv", junk)
    run_fold = Path(bundle.path).parent / "run" / "fold_00.h5"
    with pytest.raises(InputError, match="dynmass bundle"):
        predict_members(tmp_path / "m.csv", run_fold)
    with pytest.raises(InputError, match="no such file"):
        read_table(tmp_path / "absent.csv")


def test_default_model_missing_says_how_to_make_it(tmp_path, monkeypatch):
    import dynmass.predict as dp

    monkeypatch.setattr(dp, "DEFAULT_MODEL_RESOURCE", "data/__absent__.h5")
    with pytest.raises(InputError, match="dynmass reproduce.*dynmass bundle"):
        dp.default_model_path()


def test_parse_cosmology():
    assert parse_cosmology(None, MDPL2).h == pytest.approx(0.6777)
    c = parse_cosmology("70,0.3")
    assert c.H0.value == 70 and c.Om0 == 0.3
    assert parse_cosmology("Planck18").h == pytest.approx(0.6766)
    with pytest.raises(InputError, match="unknown cosmology"):
        parse_cosmology("Nonsense99")
    with pytest.raises(InputError, match="H0"):
        parse_cosmology("700,0.3")


def test_cli_predict(bundle, tmp_path, capsys):
    from dynmass.cli import main

    rng = np.random.default_rng(10)
    members, centres = _three_clusters(rng)
    members.rename_column("ra", "RAJ2000")
    members["z"][members["cluster_id"] == "C"] = np.nan
    members.write(tmp_path / "m.csv", format="ascii.csv")
    out = tmp_path / "masses.csv"
    rc = main(["predict", str(tmp_path / "m.csv"), "--model", bundle.path, "--ra-col",
               "RAJ2000", "--cosmology", "Planck18", "-o", str(out)])
    assert rc == 1  # cluster C failed, A and B estimated
    t = Table.read(out, format="ascii.csv")
    assert len(t) == 3 and np.isfinite(t["log10_m200c_p50"][0])
    assert t["log10_m200c_msun_p50"][1] == pytest.approx(
        t["log10_m200c_p50"][1] - np.log10(0.6766), abs=1e-6)
    assert "cluster C" in capsys.readouterr().out
    rc = main(["predict", str(tmp_path / "m.csv"), "--model", str(tmp_path / "m.csv"),
               "-o", str(tmp_path / "x.csv")])
    assert rc == 2 and not (tmp_path / "x.csv").exists()
