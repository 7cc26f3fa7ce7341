"""Support-distribution-machine-like distribution regression (the SDM baseline of Ho et al. 2019).

Each view is treated as a *sample from a distribution*: of ``|v| / vcut`` (``dims=1``) or of
``(|v| / vcut, R / aperture)`` (``dims=2``), both scaled to unit ranges (Ntampaka et al. 2015,
ApJ 803, 50; 2016, ApJ 831, 135). Between two views the symmetrised Kullback-Leibler
divergence ``D_s = (D(X||Y) + D(Y||X)) / 2`` is estimated from k-th nearest neighbour distances
(k = 4 as Ntampaka et al.; the maths and its fast implementation are in
:mod:`dynmass.models.divergence`). This module holds the estimator: ``D_s`` is clipped at 0 and
turned into a kernel ``K = exp(-D_s / (2 sigma^2))`` (``kernel="exp"``; ``"rbf"`` uses
``D_s**2``). The training kernel matrix is made positive semi-definite by clipping its
negative eigenvalues, and test kernels are mapped with the same projection (Chen et al. 2009,
JMLR 10, 747, "clip"). A nu-support vector regression (:class:`sklearn.svm.NuSVR`,
``kernel="precomputed"``; Ntampaka et al. and Ho et al. use nu-SVR) predicts ``log10 M200c``
scaled to [0, 1]. The kernel width ``sigma`` (as a multiple of ``sqrt(median D_s)``), ``C`` and
``nu`` are chosen on a grid by an inner 3-fold cross-validation over the training views, split
by halo (halos ranked by mass, fold = rank mod 3, as the paper's outer folds).

Practical choices (documented, not from the papers)
---------------------------------------------------
* The divergence matrix costs O(N_views^2 x n_gal^2). ``max_train_views`` (default 2000)
  subsamples the training views, stratified in mass and seeded, to keep fitting tractable.
* ``k`` is reduced per pair to ``min(k, n - 1, m)`` (at least 1) for views with few galaxies; a
  view with a single galaxy has ``rho`` set to the unit range (1). Distances are floored at
  ``distance_floor`` (1e-3 of the unit range: 2.2 km/s for vcut = 2200) so duplicate points
  cannot give ``log 0``.
* Prediction needs divergences only to the views with non-zero coefficients, which the model
  file stores (points, offsets and coefficients), so a loaded model predicts identically.

Examples
--------
A small fit on toy views (Gaussian velocities with the Evrard et al. 2008 dispersion) with a
one-point hyper-parameter grid:

>>> from dynmass.models.sdm import SDM
>>> from dynmass.testing.worlds import evrard_views
>>> train, test = evrard_views(30, 1, seed=0), evrard_views(5, 1, seed=1)
>>> model = SDM(sigma_factors=[1.0], C_grid=[1.0], nu_grid=[0.5]).fit(train, seed=0)
>>> pred = model.predict(test)
>>> pred.shape, model.extra["n_train_views"]
((5,), 30)
>>> bool(abs(pred - test.log10_m200c()).mean() < 0.5)  # mean error, dex
True
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dynmass.errors import InputError
from dynmass.folds import rank_folds
from dynmass.models.base import Estimator
from dynmass.models.divergence import pairwise_divergence, view_samples
from dynmass.observations import Observations, _ragged_rows

__all__ = ["SDM", "pairwise_divergence", "view_samples"]


def _psd_clip(K: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """PSD version of symmetric ``K`` and the projection for test rows (None when K is PSD)."""
    K = 0.5 * (K + K.T)
    try:
        np.linalg.cholesky(K + 1e-10 * np.trace(K) / len(K) * np.eye(len(K)))
        return K, None
    except np.linalg.LinAlgError:
        pass
    lam, vec = np.linalg.eigh(K)
    pos = lam > 0
    Kp = (vec[:, pos] * lam[pos]) @ vec[:, pos].T
    P = vec[:, pos] @ vec[:, pos].T
    return Kp, P


def _kernel(D: np.ndarray, sigma: float, form: str) -> np.ndarray:
    D = np.maximum(D, 0.0)
    return np.exp(-(D if form == "exp" else D * D) / (2.0 * sigma * sigma))


def _stratified_subsample(logm: np.ndarray, n_keep: int, seed: int) -> np.ndarray:
    """``n_keep`` view indices, one drawn at random from each of ``n_keep`` equal-count mass strata."""
    rng = np.random.default_rng(seed)
    order = np.argsort(logm, kind="stable")
    picks = [rng.choice(s) for s in np.array_split(order, n_keep)]
    return np.sort(np.asarray(picks, dtype=np.int64))


class SDM(Estimator):
    """nu-SVR on a k-NN KL divergence kernel between view distributions (Ntampaka et al. 2015).

    Parameters
    ----------
    dims : {1, 2}
        1: samples of ``|v| / vcut``; 2: samples of ``(|v| / vcut, R / aperture)`` (v in km/s,
        R in comoving Mpc/h).
    k : int
        Neighbour order of the divergence estimator (4).
    kernel : {"exp", "rbf"}
        ``exp(-D / 2 sigma^2)`` or ``exp(-D^2 / 2 sigma^2)``.
    sigma_factors, C_grid, nu_grid : list of float
        Hyper-parameter grid: kernel width sigma in units of ``sqrt(median D)`` (``"exp"``) or
        ``median D`` (``"rbf"``), the nu-SVR's ``C`` and ``nu``.
    inner_folds : int
        Folds of the inner cross-validation (3).
    max_train_views : int
        Training views kept (mass-stratified, seeded subsample) to bound the O(N^2) cost.
    distance_floor : float
        Smallest neighbour distance, unit-range coordinates (1e-3: 2.2 km/s for vcut = 2200).
    block_points : int
        Padded points per block of the divergence computation (memory/speed trade-off).
    """

    name: ClassVar[str] = "sdm"
    defaults: ClassVar[dict[str, Any]] = {
        "dims": 1,
        "k": 4,
        "kernel": "exp",
        "sigma_factors": [0.5, 1.0, 2.0, 4.0, 8.0],
        "C_grid": [0.1, 1.0, 10.0],
        "nu_grid": [0.3, 0.6],
        "inner_folds": 3,
        "max_train_views": 2000,
        "distance_floor": 1e-3,
        "block_points": 2048,
    }

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        s = self.settings
        if s["dims"] not in (1, 2):
            raise InputError(f"sdm setting 'dims' must be 1 or 2, got {s['dims']}")
        if s["kernel"] not in ("exp", "rbf"):
            raise InputError(f"sdm setting 'kernel' must be 'exp' or 'rbf', got {s['kernel']!r}")
        if int(s["k"]) < 1 or int(s["max_train_views"]) < 10 or int(s["inner_folds"]) < 2:
            raise InputError("sdm settings need k >= 1, max_train_views >= 10, inner_folds >= 2")
        self._arrays: dict[str, np.ndarray] | None = None

    # -- divergences -------------------------------------------------------------------------
    def _div(self, pa: np.ndarray, oa: np.ndarray, pb: np.ndarray | None = None,
             ob: np.ndarray | None = None) -> np.ndarray:
        s = self.settings
        return pairwise_divergence(pa, oa, pb, ob, k=int(s["k"]), distance_floor=s["distance_floor"],
                                   block_points=int(s["block_points"]))

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, obs: Observations, *, seed: int = 0, **kwargs: Any) -> SDM:
        """Fit on the views of ``obs`` (subsampled to ``max_train_views``), grid-search by inner CV.

        Parameters
        ----------
        obs : Observations
            Training views with ``clusters["m200c"]`` [Msun/h].
        seed : int
            Seed of the mass-stratified subsample.
        **kwargs
            Ignored (accepted for the common interface).

        Returns
        -------
        SDM
            ``self``, fitted.
        """
        self.remember_obs_settings(obs)
        s = self.settings
        logm = obs.log10_m200c()
        keep = np.flatnonzero(np.isfinite(logm))
        if len(keep) < max(10, 2 * s["inner_folds"]):
            raise InputError(f"sdm needs at least 10 training views with known mass, got {len(keep)}")
        if len(keep) > s["max_train_views"]:
            keep = keep[_stratified_subsample(logm[keep], int(s["max_train_views"]), seed)]
        tr = obs.subset(keep)
        y_all = logm[keep]
        y_lo, y_hi = float(y_all.min()), float(y_all.max())
        if y_hi <= y_lo:
            raise InputError("sdm needs training views with different masses")
        y = (y_all - y_lo) / (y_hi - y_lo)
        pts, off = view_samples(tr, int(s["dims"]))
        D = self._div(pts, off)
        # single-threaded BLAS: OpenBLAS threads fighting torch's spinning OpenMP workers made
        # eigh ~20x slower on a 2-core machine (measured); the matrices here are small.
        with threadpool_limits(1, user_api="blas"):
            return self._fit_kernel(tr, D, y, (y_lo, y_hi), pts, off, len(keep))

    def _fit_kernel(self, tr: Observations, D: np.ndarray, y: np.ndarray,
                    y_range: tuple[float, float], pts: np.ndarray, off: np.ndarray,
                    n_train: int) -> SDM:
        """Inner-CV grid search on the divergence matrix ``D`` and the final nu-SVR fit."""
        from sklearn.svm import NuSVR

        s = self.settings
        off_diag = D[~np.eye(len(D), dtype=bool)]
        scale = float(np.median(np.maximum(off_diag, 0.0)))
        scale = scale if scale > 0 else 1.0
        unit = np.sqrt(scale) if s["kernel"] == "exp" else scale
        if np.unique(tr.clusters["halo_id"]).size < 2:
            raise InputError("sdm inner cross-validation needs views of at least two halos")
        n_hosts = np.unique(tr.clusters["halo_id"]).size
        folds = rank_folds(tr.clusters["halo_id"], tr.clusters["m200c"],
                           min(int(s["inner_folds"]), n_hosts))
        grid = [(f, C, nu) for f in s["sigma_factors"] for C in s["C_grid"] for nu in s["nu_grid"]]
        mse = np.zeros(len(grid))
        # libsvm releases the GIL while it trains: the (C, nu) fits of one kernel run on
        # torch's thread count; each fit is independent and sums keep their order, so the
        # numbers are those of the serial loop.
        n_workers = max(1, torch.get_num_threads())
        for fac in s["sigma_factors"]:
            K = _kernel(D, fac * unit, s["kernel"])
            for fold in np.unique(folds):
                te, trn = folds == fold, folds != fold
                Ktr, P = _psd_clip(K[np.ix_(trn, trn)])
                Kte = K[np.ix_(te, trn)]
                if P is not None:
                    Kte = Kte @ P
                jobs = [(g_i, C, nu) for g_i, (f, C, nu) in enumerate(grid) if f == fac]

                def cv_error(job: tuple[int, float, float], Ktr=Ktr, Kte=Kte, te=te,
                             trn=trn) -> float:
                    _, C, nu = job
                    svr = NuSVR(kernel="precomputed", C=C, nu=nu).fit(Ktr, y[trn])
                    return float(np.sum((svr.predict(Kte) - y[te]) ** 2) / len(y))

                if n_workers == 1 or len(jobs) == 1:
                    errors = [cv_error(job) for job in jobs]
                else:
                    with ThreadPoolExecutor(max_workers=min(n_workers, len(jobs))) as pool:
                        errors = list(pool.map(cv_error, jobs))
                for (g_i, _, _), err in zip(jobs, errors, strict=True):
                    mse[g_i] += err
            del K
        best = int(np.argmin(mse))
        fac, C, nu = grid[best]
        sigma = fac * unit
        Kfull, P = _psd_clip(_kernel(D, sigma, s["kernel"]))
        svr = NuSVR(kernel="precomputed", C=C, nu=nu).fit(Kfull, y)
        coef = np.zeros(len(y))
        coef[svr.support_] = svr.dual_coef_.ravel()
        if P is not None:
            coef = P @ coef
        sup = np.flatnonzero(coef != 0.0)
        rows = _ragged_rows(off[:-1][sup], np.diff(off)[sup])
        sup_off = np.zeros(len(sup) + 1, dtype=np.int64)
        np.cumsum(np.diff(off)[sup], out=sup_off[1:])
        self._arrays = {
            "support_points": pts[rows],
            "support_offsets": sup_off,
            "coef": coef[sup],
            "intercept": np.array(float(svr.intercept_[0])),
            "sigma": np.array(sigma),
            "y_range": np.array(y_range),
        }
        self.extra = {
            "n_train_views": int(n_train), "n_support_views": int(len(sup)),
            "n_sv": int(len(svr.support_)), "psd_clipped": P is not None,
            "best": {"sigma_factor": fac, "C": C, "nu": nu, "sigma": sigma},
            "cv_mse_scaled": {f"{g[0]}|{g[1]}|{g[2]}": float(m) for g, m in zip(grid, mse, strict=True)},
        }
        return self

    # -- prediction --------------------------------------------------------------------------
    def predict(self, obs: Observations) -> np.ndarray:
        """Predicted log10 M200c [Msun/h] of every view of ``obs``."""
        if self._arrays is None:
            raise InputError("model 'sdm' is not fitted")
        self.check_obs(obs)
        a = self._arrays
        pts, off = view_samples(obs, int(self.settings["dims"]))
        if obs.n_views == 0:
            return np.zeros(0)
        D = self._div(pts, off, a["support_points"], a["support_offsets"])
        K = _kernel(D, float(a["sigma"]), self.settings["kernel"])
        y = K @ a["coef"] + float(a["intercept"])
        lo, hi = a["y_range"]
        return lo + y * (hi - lo)

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Support samples (ragged points + offsets), coefficients, intercept, kernel width."""
        if self._arrays is None:
            raise InputError("model 'sdm' is not fitted")
        return dict(self._arrays)

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore a fitted model."""
        need = {"support_points", "support_offsets", "coef", "intercept", "sigma", "y_range"}
        missing = need - set(arrays)
        if missing:
            raise InputError(f"sdm model file lacks arrays {sorted(missing)}")
        self._arrays = {k: np.asarray(arrays[k]) for k in need}
