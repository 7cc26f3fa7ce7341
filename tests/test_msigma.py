"""M-sigma baseline: slope recovery, estimators, save/load, settings mismatch.

The fit to noisy draws is a :class:`StochasticCheck` in ``STOCHASTIC``, with bounds set from
its spread over seeds 0-19 (``python tests/calibrate_bounds.py --only test_msigma --seeds 20``).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from astropy.stats import biweight_scale
from scipy.stats import norm

from dynmass.errors import InputError, SettingsMismatchError
from dynmass.models import get_model, load_model
from dynmass.models.msigma import MSigma, velocity_dispersion
from dynmass.observations import from_views
from dynmass.testing import Bound, StochasticCheck

SETTINGS = {"aperture": 1.6, "vcut": 5000.0}
ALPHA, SIGMA15 = 0.3361, 1082.9  # Evrard et al. 2008
RNG_SEED = 12345  # the seed of the ``rng`` fixture (tests/conftest.py)


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


def noisy_toy(seed: int) -> tuple[np.ndarray, object]:
    """400 views of 200 galaxies, log10 M200c uniform in [14, 15) (generator seed ``seed``)."""
    rng = np.random.default_rng(seed)
    logm = rng.uniform(14, 15, 400)
    return logm, _toy(logm, 200, rng)


def noisy_fit(seed: int, broken: str | None = None) -> dict[str, float]:
    """Fit the M-sigma relation on :func:`noisy_toy` and predict the same views: slope error
    ``alpha - 0.3361``, ``sigma_pivot / 1082.9 km/s`` and the scatter of the predicted
    log10 M200c about the truth (dex). ``broken``: ``"constant"`` predicts the mean mass
    (an infinite slope), ``"shuffled"`` fits on masses shuffled among the views (a fit with a
    slope <= 0 fails: NaN), ``"msun"`` trains on masses in Msun instead of Msun/h."""
    logm, obs = noisy_toy(seed)
    if broken == "constant":
        return {"alpha_err": np.inf, "sigma_pivot_ratio": np.nan,
                "scatter_dex": float(np.std(logm))}
    train = obs.subset(np.arange(obs.n_views))
    if broken == "shuffled":
        train.clusters["m200c"] = np.random.default_rng(seed).permutation(10**logm)
    elif broken == "msun":
        train.clusters["m200c"] = 10**logm / 0.6777  # h of MDPL2
    try:
        m = get_model("msigma").fit(train)
    except InputError:
        return {"alpha_err": np.nan, "sigma_pivot_ratio": np.nan, "scatter_dex": np.nan}
    pred = m.predict(obs)
    return {"alpha_err": m.alpha - ALPHA, "sigma_pivot_ratio": 10**m.log10_sigma_pivot / SIGMA15,
            "scatter_dex": float(np.std(pred - logm))}


STOCHASTIC = {
    "noisy_fit": StochasticCheck(
        run=noisy_fit, seed=RNG_SEED,
        bounds={"alpha_err": Bound(-0.02, 0.02), "sigma_pivot_ratio": Bound(0.97, 1.03),
                "scatter_dex": Bound(0.055, 0.075)},
        broken={b: partial(noisy_fit, broken=b) for b in ("constant", "shuffled", "msun")}),
}


def test_noisy_slope_recovery_and_save_load(tmp_path):
    """From 400 views of 200 Gaussian velocities the fit recovers the Evrard slope and
    normalisation; predictions scatter by ~0.065 dex (0.434 / sqrt(2 x 200) dex in sigma,
    divided by the slope) (check ``noisy_fit``). The fitted model round-trips through a file.

    Measured over seeds 0-19
    (``python tests/calibrate_bounds.py --only test_msigma.noisy_fit --seeds 20``):
    alpha_err: mean 0.0002567, sd 0.0038, range [-0.005522, 0.008001];
      bound (-0.02, 0.02), 5.3 sd from the mean.
    sigma_pivot_ratio: mean 0.9951, sd 0.005, range [0.9872, 1.007];
      bound (0.97, 1.03), 5.0 sd from the mean.
    scatter_dex: mean 0.0649, sd 0.0019, range [0.06168, 0.06928];
      bound (0.055, 0.075), 5.2 sd from the mean.
    Broken variants caught (seeds 0-2): constant 3/3, shuffled 3/3, msun 3/3.
    """
    STOCHASTIC["noisy_fit"].check()
    logm, obs = noisy_toy(RNG_SEED)
    m = get_model("msigma").fit(obs)
    pred = m.predict(obs)
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
    assert velocity_dispersion(obs, "biweight")[0] == pytest.approx(biweight_scale(v, c=9.0),
                                                                    rel=1e-12)
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
