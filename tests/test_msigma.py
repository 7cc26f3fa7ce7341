"""M-sigma baseline: slope recovery, estimators, save/load, settings mismatch."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import biweight_scale
from scipy.stats import norm

from dynmass.errors import SettingsMismatchError
from dynmass.models import get_model, load_model
from dynmass.models.msigma import MSigma, velocity_dispersion
from dynmass.observations import from_views

SETTINGS = {"aperture": 1.6, "vcut": 5000.0}
ALPHA, SIGMA15 = 0.3361, 1082.9  # Evrard et al. 2008


def _toy(logm: np.ndarray, n_gal: int, rng: np.random.Generator | None) -> object:
    """sigma = SIGMA15 (M / 1e15)^ALPHA; exact Gaussian quantiles (rng None) or random draws."""
    views = []
    q = norm.ppf((np.arange(n_gal) + 0.5) / n_gal)
    for lm in logm:
        s = SIGMA15 * 10 ** (ALPHA * (lm - 15))
        v = s * (q if rng is None else rng.standard_normal(n_gal))
        views.append((np.full(n_gal, 0.5), v))
    return from_views(views, SETTINGS, clusters={"m200c": 10**logm})


@pytest.mark.parametrize("estimator", ["std", "gapper", "biweight"])
def test_exact_slope_recovery(estimator):
    logm = np.linspace(13.8, 15.2, 30)
    obs = _toy(logm, 60, None)
    m = MSigma(estimator=estimator).fit(obs)
    assert m.alpha == pytest.approx(ALPHA, abs=1e-9)
    np.testing.assert_allclose(m.predict(obs), logm, atol=1e-8)


def test_noisy_slope_recovery_and_save_load(tmp_path, rng):
    logm = rng.uniform(14, 15, 400)
    obs = _toy(logm, 200, rng)
    m = get_model("msigma").fit(obs)
    assert m.alpha == pytest.approx(ALPHA, abs=0.02)
    assert 10**m.log10_sigma_pivot == pytest.approx(SIGMA15, rel=0.03)
    pred = m.predict(obs)
    assert np.std(pred - logm) < 0.1  # 200 galaxies: ~0.05 dex in sigma -> ~0.15/3 in mass
    m.save(tmp_path / "m.h5")
    back = load_model(tmp_path / "m.h5")
    assert isinstance(back, MSigma) and back.settings == m.settings
    np.testing.assert_array_equal(back.predict(obs), pred)


def test_estimators_match_references(rng):
    v = rng.normal(0, 600, 40)
    obs = from_views([(np.full(40, 0.1), v), (np.array([0.1]), np.array([3.0]))], SETTINGS)
    vs = np.sort(v)
    i = np.arange(1, 40)
    gap = np.sqrt(np.pi) / (40 * 39) * np.sum(i * (40 - i) * np.diff(vs))
    assert velocity_dispersion(obs, "gapper")[0] == pytest.approx(gap, rel=1e-12)
    assert velocity_dispersion(obs, "biweight")[0] == pytest.approx(biweight_scale(v, c=9.0), rel=1e-12)
    assert velocity_dispersion(obs, "std")[0] == pytest.approx(np.std(v), rel=1e-12)
    assert np.isnan(velocity_dispersion(obs, "gapper")[1])


def test_mismatch_and_degenerate_views():
    logm = np.linspace(14, 15, 10)
    m = MSigma().fit(_toy(logm, 30, None))
    other = _toy(logm, 30, None)
    other.settings["vcut"] = 2200.0
    with pytest.raises(SettingsMismatchError, match="vcut"):
        m.predict(other)
    tiny = from_views([(np.array([0.1]), np.array([5.0])), (np.zeros(0), np.zeros(0))], SETTINGS)
    assert np.isfinite(m.predict(tiny)).all()
