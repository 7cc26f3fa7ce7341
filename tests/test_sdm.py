"""SDM baseline: k-NN divergence against a cKDTree reference, learning, determinism, save/load."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dynmass.errors import InputError, SettingsMismatchError
from dynmass.models import load_model
from dynmass.models.sdm import SDM, pairwise_divergence, view_samples
from dynmass.observations import from_views

SETTINGS = {"aperture": 1.6, "vcut": 2200.0}
FAST = {"sigma_factors": [1.0, 4.0], "C_grid": [0.1, 1.0], "nu_grid": [0.5]}


def _toy(n_views: int, seed: int) -> object:
    """Mass sets the width of a Gaussian velocity distribution (Evrard et al. 2008 slope)."""
    rng = np.random.default_rng(seed)
    logm = rng.uniform(14, 15, n_views)
    views = []
    for lm in logm:
        v = rng.normal(0, 1082.9 * 10 ** (0.3361 * (lm - 15)), int(rng.integers(20, 45)))
        v = v[np.abs(v) < 2200]
        views.append((rng.uniform(0, 1.6, len(v)), v))
    return from_views(views, SETTINGS, clusters={"m200c": 10**logm, "halo_id": np.arange(n_views)})


def _kl_reference(x: np.ndarray, y: np.ndarray, k: int = 4) -> float:
    n, d = x.shape
    rho = cKDTree(x).query(x, k + 1)[0][:, k]
    nu = cKDTree(y).query(x, k)[0][:, k - 1]
    return d * np.mean(np.log(nu / rho)) + np.log(len(y) / (n - 1))


@pytest.mark.parametrize("dims", [1, 2])
def test_divergence_matches_kdtree(dims):
    obs = _toy(12, 3)
    pts, off = view_samples(obs, dims)
    D = pairwise_divergence(pts, off, block_points=100)  # small blocks: many block pairs
    np.testing.assert_allclose(D, D.T)
    assert np.all(np.diag(D) == 0)
    for i, j in [(0, 5), (3, 11), (7, 2)]:
        x, y = pts[off[i]:off[i + 1]].astype(float), pts[off[j]:off[j + 1]].astype(float)
        ref = 0.5 * (_kl_reference(x, y) + _kl_reference(y, x))
        assert D[i, j] == pytest.approx(ref, abs=1e-5)
    # the cross version (test vs support) agrees with the square one off the diagonal (a view
    # compared with itself is set to 0 only in the square version)
    cross = pairwise_divergence(pts[: off[5]], off[:6], pts, off)
    off_diag = ~np.eye(5, 12, dtype=bool)
    np.testing.assert_allclose(cross[off_diag], D[:5][off_diag], atol=1e-5)


def test_small_and_duplicate_views_stay_finite():
    views = [(np.array([0.3]), np.array([10.0])), (np.full(3, 0.5), np.full(3, 100.0)),
             (np.linspace(0, 1.5, 30), np.linspace(-2000, 2000, 30))]
    obs = from_views(views, SETTINGS)
    for dims in (1, 2):
        pts, off = view_samples(obs, dims)
        assert np.isfinite(pairwise_divergence(pts, off)).all()


def test_sdm_learns_mass_deterministic_and_round_trips(tmp_path):
    train, test = _toy(90, 0), _toy(50, 1)
    truth = test.log10_m200c()
    model = SDM(dims=1, **FAST).fit(train, seed=4)
    pred = model.predict(test)
    scatter = np.std(pred - truth)
    assert scatter < 0.75 * np.std(truth), (scatter, np.std(truth))
    again = SDM(dims=1, **FAST).fit(train, seed=4).predict(test)
    np.testing.assert_array_equal(pred, again)
    model.save(tmp_path / "sdm.h5")
    back = load_model(tmp_path / "sdm.h5")
    assert isinstance(back, SDM) and back.settings == model.settings
    np.testing.assert_array_equal(back.predict(test), pred)
    bad = _toy(5, 2)
    bad.settings["aperture"] = 2.3
    with pytest.raises(SettingsMismatchError, match="aperture"):
        back.predict(bad)


def test_sdm_2d_subsample_and_settings():
    train = _toy(60, 5)
    model = SDM(dims=2, max_train_views=40, **FAST).fit(train, seed=1)
    assert model.extra["n_train_views"] == 40
    assert np.isfinite(model.predict(_toy(10, 6))).all()
    with pytest.raises(InputError):
        SDM(dims=3)
    with pytest.raises(InputError):
        SDM(bogus=1)
