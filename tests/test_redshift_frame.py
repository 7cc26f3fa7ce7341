"""The self-similar redshift frame of ``predict`` (``dynmass.redshift.aperture_scale``)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table

from dynmass.bundle import make_bundle
from dynmass.cosmology import MDPL2, to_astropy
from dynmass.errors import InputError
from dynmass.members import sky_to_rv
from dynmass.observations import from_views
from dynmass.predict import predict_members
from dynmass.redshift import aperture_scale, redshift_correction_dex, to_training_frame
from dynmass.testing.runs import scratch_folder, write_fold_run
from dynmass.testing.sky import cluster_box, place_on_sky
from dynmass.testing.worlds import CYLINDER_SETTINGS, cylinder_views

COSMO = to_astropy(MDPL2)
Z_TRAIN = 0.117


def _r200c_comoving(v200_kms: float, z: float) -> float:
    """Comoving R200c [Mpc/h] of a halo of circular velocity V200, from M200c = 100 H^2 R^3/G
    solved by astropy's critical density (no E(z) algebra)."""
    from astropy.constants import G

    rho_c = COSMO.critical_density(z)
    # V^2 = G M / R and M = (4 pi / 3) 200 rho_c R^3  ->  R = V / sqrt((4 pi / 3) 200 G rho_c)
    r = (v200_kms * u.km / u.s) / np.sqrt(4 * np.pi / 3 * 200 * G * rho_c)
    return float(r.to(u.Mpc).value * COSMO.h * (1 + z))


@pytest.mark.parametrize("z", [0.02, 0.05, 0.3, 0.6, 0.9, 1.0])
def test_scale_is_the_comoving_size_of_a_halo_with_the_same_velocities(z):
    for v200 in (400.0, 1200.0):
        ratio = _r200c_comoving(v200, z) / _r200c_comoving(v200, Z_TRAIN)
        assert aperture_scale(z, Z_TRAIN, COSMO) == pytest.approx(ratio, rel=1e-9)
    # and the mass of that halo moves by the E(z) term predict adds
    m_ratio = (_r200c_comoving(800.0, z) / (1 + z)) / (_r200c_comoving(800.0, Z_TRAIN) / 1.117)
    assert np.log10(m_ratio) == pytest.approx(redshift_correction_dex(z, Z_TRAIN, COSMO),
                                              abs=1e-9)


@functools.cache
def _bundle():
    tmp = scratch_folder("frame_")
    views = cylinder_views(np.random.default_rng(1), n_halos=300, richness=60.0)
    return make_bundle(write_fold_run(tmp / "run", views), tmp / "model.h5")


def test_predict_uses_the_scaled_aperture_and_training_frame_radii():
    bundle = _bundle()
    rng = np.random.default_rng(5)
    z_c = 0.6
    s = aperture_scale(z_c, Z_TRAIN, COSMO)
    dx, dy, dz, vp = cluster_box(rng, 800.0, 120, 200)
    ra, dec, z = place_on_sky(dx, dy, dz, vp, 150.0, 2.0, z_c, COSMO)
    centre = (150.0, 2.0, z_c)
    R, v = sky_to_rv(ra, dec, z, centre, COSMO)  # what predict computes before the frame
    table = Table({"ra": ra, "dec": dec, "z": z})
    ss = predict_members(table, bundle, centers=centre, allow_extrapolation=True)
    fx = predict_members(table, bundle, centers=centre, allow_extrapolation=True,
                         redshift_frame="fixed")
    assert ss["aperture_mpc_h"][0] == pytest.approx(1.6 * s)
    assert fx["aperture_mpc_h"][0] == pytest.approx(1.6)
    vcut = CYLINDER_SETTINGS["vcut"]
    for out, ap in ((ss, 1.6 * s), (fx, 1.6)):
        assert out["n_gal"][0] == int(np.sum((R <= ap) & (np.abs(v) <= vcut)))
        assert "extrapolated_redshift" in out["flags"][0]
    assert ss["n_gal"][0] > fx["n_gal"][0]  # s = 1.086 at z = 0.6: a wider cylinder
    # the model saw R / s: the same prediction as for that view at the training redshift
    keep = (R <= 1.6 * s) & (np.abs(v) <= vcut)
    direct = bundle.predict(from_views([(R[keep] / s, v[keep])], dict(bundle.obs_settings)))
    assert ss["log10_m200c_p50"][0] == pytest.approx(
        direct["log10_m200c_p50"][0] + redshift_correction_dex(z_c, Z_TRAIN, COSMO), abs=1e-9)
    assert ss.meta["redshift_frame"] == "self-similar" and ss.meta["z_train"] == Z_TRAIN
    with pytest.raises(InputError, match="redshift_frame"):
        predict_members(table, bundle, centers=centre, redshift_frame="comoving")


def test_at_the_training_redshift_both_frames_agree():
    bundle = _bundle()
    dx, dy, dz, vp = cluster_box(np.random.default_rng(6), 700.0, 80, 150)
    ra, dec, z = place_on_sky(dx, dy, dz, vp, 30.0, -5.0, Z_TRAIN, COSMO)
    t = Table({"ra": ra, "dec": dec, "z": z})
    a, b = predict_members(t, bundle), predict_members(t, bundle, redshift_frame="fixed")
    assert a["n_gal"][0] == b["n_gal"][0]
    assert a["log10_m200c_p50"][0] == pytest.approx(b["log10_m200c_p50"][0], abs=1e-6)


def test_mock_views_at_another_redshift_in_the_training_frame():
    z = 0.6
    s = aperture_scale(z, Z_TRAIN, COSMO)
    rng = np.random.default_rng(2)
    R = 1.6 * s * np.sqrt(rng.random(50))
    obs = from_views([(R, rng.normal(0, 500, 50))],
                     {"aperture": 1.6 * s, "vcut": 2200.0, "redshift": z})
    out = to_training_frame(obs, Z_TRAIN, 1.6, COSMO)
    np.testing.assert_allclose(out.R, R / s)
    assert out.aperture == 1.6 and out.settings["redshift_frame"]["aperture_scale"] == s
    out.validate()
    with pytest.raises(InputError, match="aperture"):
        to_training_frame(from_views([(R / s, obs.v)], {"aperture": 1.6, "vcut": 2200.0,
                                                        "redshift": z}), Z_TRAIN, 1.6, COSMO)


def test_observe_in_the_frame_of_the_training_redshift(tmp_path):
    from dynmass.cli import main
    from dynmass.errors import SettingsMismatchError
    from dynmass.observations import read_observations
    from dynmass.observing import check_same_observing

    u = tmp_path / "u.h5"
    assert main(["universe", "-o", str(u), "--box", "60", "--min-mass", "1e12", "--seed", "3",
                 "--redshift", "0.5"]) == 0
    common = ["--min-mass", "1e13", "--min-members", "3", "--seed", "1"]
    assert main(["observe", str(u), "-o", str(tmp_path / "plain.h5"), *common]) == 0
    assert main(["observe", str(u), "-o", str(tmp_path / "frame.h5"), *common,
                 "--training-redshift", str(Z_TRAIN)]) == 0
    plain, frame = read_observations(tmp_path / "plain.h5"), read_observations(tmp_path / "frame.h5")
    s = aperture_scale(0.5, Z_TRAIN, COSMO)
    rec = frame.settings["redshift_frame"]
    assert frame.aperture == plain.aperture == 1.6 and rec["aperture_scale"] == pytest.approx(s)
    assert rec["aperture_comoving_mpc_h"] == pytest.approx(1.6 * s)
    assert frame.R.max() <= 1.6 and frame.settings["redshift"] == pytest.approx(0.5)
    # same hosts and lines of sight; the wider cylinder holds every galaxy of the plain one
    np.testing.assert_array_equal(frame.clusters["halo_id"], plain.clusters["halo_id"])
    assert np.all(frame.n_gal >= plain.n_gal) and frame.n_gal.sum() > plain.n_gal.sum()
    for k in range(plain.n_views):  # each plain galaxy is in the framed view at R x s
        a, b = slice(*plain.offsets[k:k + 2]), slice(*frame.offsets[k:k + 2])
        framed = dict(zip(frame.galaxy_index[b].tolist(), frame.R[b] * s, strict=True))
        for g, r in zip(plain.galaxy_index[a].tolist(), plain.R[a], strict=True):
            assert framed[g] == pytest.approx(r, abs=1e-9)
    train = {"aperture": 1.6, "vcut": 2200.0, "redshift": Z_TRAIN}
    check_same_observing(frame.settings, train, "the training views", "frame.h5")
    with pytest.raises(SettingsMismatchError, match="redshift"):
        check_same_observing(plain.settings, train, "the training views", "plain.h5")


def test_calibration_and_coverage_views_at_another_redshift(tmp_path):
    """Views at z = 0.6 in the frame of z_train = 0.117 calibrate the belt with true - d (d the
    E(z) term predict adds), and the coverage check adds d to their percentiles."""
    from dynmass.coverage import coverage
    from dynmass.observations import read_observations, write_observations
    from dynmass.redshift import views_correction_dex

    rng = np.random.default_rng(3)
    train = cylinder_views(rng, n_halos=300, richness=60.0)
    train.settings = {**train.settings, "universe_sha256": "T"}
    run = write_fold_run(tmp_path / "run", train, obs_path=write_observations(train,
                                                                          tmp_path / "t.h5"))
    frame = {"frame": "self-similar", "z_train": Z_TRAIN, "aperture_scale": 1.0857,
             "aperture_comoving_mpc_h": 1.737}
    paths = []
    for name in ("A", "B"):
        obs = cylinder_views(rng, n_halos=400, richness=60.0)
        obs.settings = {**obs.settings, "universe_sha256": name, "redshift": 0.6,
                        "redshift_frame": frame}
        paths.append(write_observations(obs, tmp_path / f"{name}.h5"))
    d = views_correction_dex({"redshift": 0.6}, train.settings)
    assert d == pytest.approx(redshift_correction_dex(0.6, Z_TRAIN, COSMO))
    b = make_bundle(run, tmp_path / "b.h5", calibration_observations=[paths[0]])
    cal_obs = read_observations(paths[0])
    np.testing.assert_allclose(b.calibration.true, cal_obs.log10_m200c() - d)
    assert b.interval["files"][0]["redshift_correction_dex"] == pytest.approx(d)
    assert b.redshift_range == pytest.approx([0.067, 0.65])
    res = coverage(b, observations=[paths[1]], seed=0)
    test_obs = read_observations(paths[1])
    raw = b.predict(test_obs)
    q16, q84 = raw["log10_m200c_p16"] + d, raw["log10_m200c_p84"] + d
    t = test_obs.log10_m200c()
    lo, hi = b.domain["log10_m200c_calibrated"]
    inr = (t >= lo) & (t <= hi)
    assert res["coverage_68"] == pytest.approx(np.mean(((q16 <= t) & (t <= q84))[inr]))


def test_predict_mock_adds_the_redshift_term_to_views_at_another_redshift(tmp_path):
    import csv
    import json

    from dynmass.observations import write_observations
    from dynmass.predict_mock import predict_mock
    from dynmass.redshift import views_correction_dex

    rng = np.random.default_rng(8)
    train = cylinder_views(rng, n_halos=200, richness=60.0)
    run = write_fold_run(tmp_path / "run", train)
    same = write_observations(cylinder_views(rng, n_halos=50, richness=60.0), tmp_path / "a.h5")
    far = cylinder_views(np.random.default_rng(9), n_halos=50, richness=60.0)
    near = write_observations(far, tmp_path / "near.h5")
    far.settings = {**far.settings, "redshift": 0.6,
                    "redshift_frame": {"frame": "self-similar", "z_train": Z_TRAIN}}
    far_path = write_observations(far, tmp_path / "far.h5")
    d = views_correction_dex({"redshift": 0.6}, train.settings)

    def preds(path, name):
        out = predict_mock(run, path, tmp_path / f"{name}.csv")
        with open(out) as fh:
            p = np.array([float(r["log10_m200c_pred"]) for r in csv.DictReader(fh)])
        return p, json.loads((tmp_path / f"{name}.settings.json").read_text())

    p_same, s_same = preds(same, "same")
    p_near, _ = preds(near, "near")
    p_far, s_far = preds(far_path, "far")
    assert s_same["redshift_correction_dex"] == 0.0
    assert s_far["redshift_correction_dex"] == pytest.approx(d) and d < -0.1
    np.testing.assert_allclose(p_far, p_near + d)
