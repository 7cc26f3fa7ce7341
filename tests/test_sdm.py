"""SDM baseline: k-NN divergence against a cKDTree reference, learning, determinism, save/load.

Learning the toy Evrard world is a :class:`StochasticCheck` in ``STOCHASTIC``, with bounds set
from its spread over seeds 0-19 (``python tests/calibrate_bounds.py --only test_sdm --seeds 20``).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dynmass.errors import InputError, SettingsMismatchError
from dynmass.models import load_model
from dynmass.models.sdm import SDM, pairwise_divergence, view_samples
from dynmass.observations import from_views
from dynmass.testing import Bound, StochasticCheck
from dynmass.testing.worlds import evrard_views

SETTINGS = {"aperture": 1.6, "vcut": 2200.0}
FAST = {"sigma_factors": [1.0, 4.0], "C_grid": [0.1, 1.0], "nu_grid": [0.5]}


def _toy(n_views: int, seed: int) -> object:
    """One view per host of the toy Evrard world: log10 M200c uniform in [14, 15) Msun/h,
    20-44 Gaussian velocities with the Evrard et al. 2008 sigma(M), cut at 2200 km/s."""
    return evrard_views(n_views, 1, seed, vcut=SETTINGS["vcut"], lo=14.0, hi=15.0,
                        n_gal=(20, 45), aperture=SETTINGS["aperture"])


N_TRAIN, N_TEST = 200, 300


def learns_mass(seed: int, broken: str | None = None) -> dict[str, float]:
    """Fit SDM (1D, the FAST grid) on N_TRAIN = 200 hosts of the toy world (seed ``2 seed``),
    model seed ``seed + 4``, predict N_TEST = 300 new hosts (seed ``2 seed + 1``): scatter of
    ``pred - true`` over that of a constant predictor, and the mean bias (dex). ``broken``: ``"constant"``
    predicts the training mean, ``"shuffled"`` trains on masses shuffled among hosts,
    ``"units"`` halves the test velocities (a unit bug)."""
    train, test = _toy(N_TRAIN, 2 * seed), _toy(N_TEST, 2 * seed + 1)
    truth = test.log10_m200c()
    if broken == "shuffled":
        train.clusters["m200c"] = np.random.default_rng(seed).permutation(train.clusters["m200c"])
    if broken == "units":
        test.v = 0.5 * test.v
    if broken == "constant":
        pred = np.full(test.n_views, train.log10_m200c().mean())
    else:
        pred = SDM(dims=1, **FAST).fit(train, seed=seed + 4).predict(test)
    return {"scatter_over_constant": float(np.std(pred - truth) / np.std(truth)),
            "bias": float(np.mean(pred - truth))}


STOCHASTIC = {
    "learns_mass": StochasticCheck(
        run=learns_mass, seed=0,
        bounds={"scatter_over_constant": Bound(hi=0.81), "bias": Bound(-0.125, 0.125)},
        broken={b: partial(learns_mass, broken=b) for b in ("constant", "shuffled", "units")}),
}


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
    assert D.shape == (12, 12)
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
    """SDM learns the toy Evrard world (check ``learns_mass``); the same seed gives the same
    predictions, and a saved model predicts identically and refuses other settings.

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_sdm.learns_mass --seeds 20``):
    scatter_over_constant: mean 0.6295, sd 0.034, range [0.5628, 0.6872];
      bound (-inf, 0.81), 5.2 sd from the mean.
    bias: mean -0.0006815, sd 0.02, range [-0.03389, 0.05709];
      bound (-0.125, 0.125), 6.2 sd from the mean.
    Broken variants caught (seeds 0-2): constant 3/3, shuffled 3/3, units 3/3.
    """
    STOCHASTIC["learns_mass"].check()
    train, test = _toy(60, 0), _toy(20, 1)
    model = SDM(dims=1, **FAST).fit(train, seed=4)
    pred = model.predict(test)
    assert pred.shape == (20,) and np.isfinite(pred).all()
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
