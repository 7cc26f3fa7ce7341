"""KDE features: agreement with scipy.stats.gaussian_kde, normalisation, flips, floors, cache."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import gaussian_kde

import dynmass.features as F
from dynmass.errors import InputError
from dynmass.observations import from_views

SETTINGS = {"aperture": 1.6, "vcut": 2200.0}


def _views(rng: np.random.Generator, n_views: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(n_views):
        n = int(rng.integers(11, 80))
        R = 1.6 * rng.random(n) ** 0.7
        v = rng.normal(rng.uniform(-200, 200), rng.uniform(250, 900), n) + 300 * (R - 0.8)
        out.append((R, np.clip(v, -2200, 2200)))
    return out


def _scipy_1d(v: np.ndarray, n_bins: int = 48) -> np.ndarray:
    r = gaussian_kde(v, bw_method=0.25)(F.bin_centres(-2200, 2200, n_bins))
    return r / r.sum()


def _scipy_2d(R: np.ndarray, v: np.ndarray, n_bins: int = 48) -> np.ndarray:
    gr, gv = np.meshgrid(F.bin_centres(0, 1.6, n_bins), F.bin_centres(-2200, 2200, n_bins), indexing="ij")
    r = gaussian_kde(np.vstack([R, v]), bw_method=0.25)(np.vstack([gr.ravel(), gv.ravel()]))
    return (r / r.sum()).reshape(n_bins, n_bins)


def test_kde_matches_scipy(rng):
    views = _views(rng)
    obs = from_views(views, SETTINGS)
    k1, k2 = F.kde1d(obs), F.kde2d(obs)
    assert k1.dtype == np.float32 and k1.shape == (len(views), 48)
    assert k2.dtype == np.float32 and k2.shape == (len(views), 48, 48)
    for i, (R, v) in enumerate(views):
        np.testing.assert_allclose(k1[i], _scipy_1d(v), atol=2e-7, rtol=0)
        np.testing.assert_allclose(k2[i], _scipy_2d(R, v), atol=2e-8, rtol=0)
    # other grid sizes follow the argument
    np.testing.assert_allclose(F.kde1d(obs, n_bins=20)[3], _scipy_1d(views[3][1], 20), atol=2e-7)


def test_rows_sum_to_one_and_flip_symmetry(rng):
    views = _views(rng, 8)
    obs = from_views(views, SETTINGS)
    mirrored = from_views([(R, -v) for R, v in views], SETTINGS)
    k1, k2 = F.kde1d(obs), F.kde2d(obs)
    np.testing.assert_allclose(k1.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(k2.sum((1, 2)), 1, atol=1e-5)
    np.testing.assert_allclose(F.flip_v(k1), F.kde1d(mirrored), atol=1e-7)
    np.testing.assert_allclose(F.flip_v(k2), F.kde2d(mirrored), atol=1e-8)
    assert not np.allclose(k1, F.kde1d(mirrored), atol=1e-4)  # the views are not symmetric
    x, y, h = F.augment_flip(k2, np.arange(8.0), np.arange(8))
    assert x.shape == (16, 48, 48) and np.array_equal(y, np.r_[np.arange(8.0), np.arange(8.0)])
    np.testing.assert_array_equal(x[8:], k2[:, :, ::-1])
    assert np.array_equal(h[:8], h[8:])


def test_degenerate_views_are_finite_and_peaked():
    views = [
        (np.array([0.5]), np.array([300.0])),  # one galaxy
        (np.array([0.2, 0.9, 1.4]), np.full(3, -500.0)),  # all equal velocities
        (np.linspace(0.1, 1.5, 6), np.linspace(-1000, 1000, 6)),  # collinear in (R, v)
        (np.zeros(0), np.zeros(0)),  # empty
    ]
    obs = from_views(views, SETTINGS)
    k1, k2 = F.kde1d(obs), F.kde2d(obs)
    assert np.isfinite(k1).all() and np.isfinite(k2).all()
    np.testing.assert_allclose(k1.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(k2.sum((1, 2)), 1, atol=1e-5)
    centres = F.bin_centres(-2200, 2200, 48)
    assert abs(centres[np.argmax(k1[0])] - 300) < 2200 / 48 + 1
    assert abs(centres[np.argmax(k1[1])] + 500) < 2200 / 48 + 1
    np.testing.assert_allclose(k1[3], 1 / 48)  # empty view: uniform
    # the collinear view keeps its correlation: mass sits near the line, not spread round it
    rr, vv = np.meshgrid(F.bin_centres(0, 1.6, 48), centres, indexing="ij")
    line_v = -1000 + (rr - 0.1) / 1.4 * 2000
    near = np.abs(vv - line_v) < 300
    assert k2[2][near].sum() > 0.9


def test_bad_arguments():
    obs = from_views([(np.array([0.1, 0.2]), np.array([1.0, 2.0]))], SETTINGS)
    with pytest.raises(InputError):
        F.kde1d(obs, n_bins=1)
    with pytest.raises(InputError):
        F.kde2d(obs, bandwidth=0.0)
    with pytest.raises(InputError):
        F.cached_features(obs, "3d", cache_dir=None)


def test_cache_hit_and_miss(tmp_path, rng, monkeypatch):
    obs = from_views(_views(rng, 5), SETTINGS)
    a = F.cached_features(obs, "2d", 48, 0.25, tmp_path, key="abc")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len([f for f in files if f.endswith(".npy")]) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite a cache hit")

    monkeypatch.setattr(F, "kde2d", boom)
    b = F.cached_features(obs, "2d", 48, 0.25, tmp_path, key="abc")
    np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    c = F.cached_features(obs, "2d", 48, 0.3, tmp_path, key="abc")  # changed bandwidth misses
    d = F.cached_features(obs, "2d", 48, 0.25, tmp_path, key="other")  # changed key misses
    np.testing.assert_array_equal(a, d)
    assert not np.allclose(a, c)
    assert len(list(tmp_path.glob("*.npy"))) == 3
    obs.settings["vcut"] = 2500.0  # changed observe setting misses
    F.cached_features(obs, "1d", 48, 0.25, tmp_path, key="abc")
    F.cached_features(obs, "1d", 48, 0.25, tmp_path, key="abc")
    assert len(list(tmp_path.glob("*.npy"))) == 4
    assert not list(tmp_path.glob("*.tmp"))


def _direct_float64(R: np.ndarray, v: np.ndarray, n_bins: int = 48) -> np.ndarray:
    """Reference: direct float64 evaluation with the covariance floor (grid units)."""
    x, y = R / (1.6 / n_bins), (v + 2200.0) / (4400.0 / n_bins)
    cov = np.cov(np.vstack([x, y])) if len(x) > 1 else np.zeros((2, 2))
    lam, vec = np.linalg.eigh(cov)
    inv = (vec / (np.maximum(lam, F.SIGMA_FLOOR_BINS**2) * 0.25**2)) @ vec.T
    g = np.arange(n_bins) + 0.5
    u, w = g[None, :, None] - x[:, None, None], g[None, None, :] - y[:, None, None]
    dens = np.exp(-0.5 * (inv[0, 0] * u * u + 2 * inv[0, 1] * u * w + inv[1, 1] * w * w)).sum(0)
    return dens / dens.sum()


def test_factored_and_direct_paths_match_float64(rng, monkeypatch):
    """The fast (matrix-product) path and the direct fallback agree with float64 evaluation,
    for ordinary, large, strongly correlated and degenerate views in one call."""
    views = _views(rng, 6)
    R = 1.6 * rng.random(400)
    views.append((R, rng.normal(0, 600, 400)))  # a large view
    for rho in (0.99, 0.999):  # nearly collinear: outer factor too large -> direct path
        R = 1.6 * rng.random(30)
        views.append((R, 2000 * rho * (R / 1.6 - 0.5) + (1 - rho) * rng.normal(0, 500, 30)))
    views += [(np.array([0.7]), np.array([-40.0])), (np.zeros(0), np.zeros(0))]
    calls = []
    direct = F._direct_2d
    monkeypatch.setattr(F, "_direct_2d", lambda *a: (calls.append(len(a[2]) - 1), direct(*a))[1])
    for threads in (1, 2):
        k2 = F.kde2d_arrays(*[np.concatenate(c) for c in zip(*views, strict=True)],
                            np.r_[0, np.cumsum([len(r) for r, _ in views])], 1.6, 2200.0,
                            threads=threads)
        for i, (R, v) in enumerate(views[:-1]):
            ref = _direct_float64(R, v)
            tol = 2e-6 if i in (7, 8) else 1.5e-7  # direct float32 path: float32 exponents
            np.testing.assert_allclose(k2[i], ref, atol=tol * ref.max(), rtol=0)
        np.testing.assert_allclose(k2[-1], 1 / 48**2)
    assert calls and all(0 < n < len(views) for n in calls)  # both paths were used
