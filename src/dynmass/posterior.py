"""Posteriors of log10 M200c: a conditional normalizing flow on a bundle's summary of a view.

A bundle's fold ensemble reduces a view to a summary ``s = (mu, log10 N)``: the ensemble-mean
prediction ``mu`` [log10 Msun/h] and the number of galaxies in the cylinder. The Neyman belts
of :mod:`dynmass.belts` turn ``s`` into intervals; this module learns the whole conditional
density ``p(log10 M200c | s)`` instead, with a neural spline flow (Durkan et al. 2019,
"Neural Spline Flows", NeurIPS; ``zuko.flows.NSF``) trained by maximum likelihood on the
bundle's independent calibration views (the same views, with the same E(z) handling, as the
belts: :func:`dynmass.calibration_views.ensemble_calibration`).

**Prior.** Trained on views drawn flat in log M (``observe --flat-mass-function``), the flow
is the posterior under the calibration set's mass distribution, as the belts are. Re-weighting
it to the sky's mass function (Tinker et al. 2008) on the grid was tried and is not offered:
the steep mass function multiplies the flow's poorly constrained low-mass tail (a cluster with
mu = 10^14.5 and 120 galaxies got a median of 10^14.1). A flow trained on views drawn *from*
the mass function (``observe`` without ``--flat-mass-function``) is the posterior under that
prior: on the N-body engine (``make nbody-posterior``: calibrated on three universes, tested
on a fourth) it covers 66.0% / 94.9% and 64.2-67.3% / 93.9-95.4% per 0.2-dex bin of
predicted mass from 10^13.5 to 10^14.3 Msun/h (the belts: 59.9-80.5% / 83.7-97.3%).

**Survey-aware.** With ``survey_inputs`` (``dynmass posterior --survey-inputs``) the flow is
conditioned on the declared survey too (:mod:`dynmass.survey_inputs`: targeting rate, radial
completeness, stellar-mass limit, velocity errors, redshift), so the number of galaxies is
read against the survey that produced it: richness then carries mass information
legitimately, at the price of trusting the mock's occupation (galaxies per cylinder at fixed
mass and selection). Trained on views whose survey is drawn per view (domain randomisation),
it is the posterior given that survey. How far the mock's occupation is trusted is a setting
(``occupation_dex``: a Gaussian offset of ``log10 N`` drawn afresh for every training batch,
so the flow marginalises over it). Measured on the shipped model's calibration and test
universes: README, "Two ways to weigh a cluster".

**Ensembles.** ``n_flows > 1`` (``dynmass posterior --n-flows``) trains a deep ensemble
(Lakshminarayanan et al. 2017): flows with seeds ``seed .. seed + n_flows - 1``, each with its
own held-out hosts, whose densities are averaged; in the runs measured it narrowed the spread
of the coverage over training seeds, not its per-bin shortfalls (README, "Posteriors").

**Checks** (:func:`dynmass.posterior_check.evaluate_posterior`): coverage of the central 68% and 95% intervals overall
and per 0.2-dex bin of true and of predicted (median) mass; simulation-based calibration (SBC;
Talts et al. 2018, arXiv:1804.06788): the rank of the true mass in the posterior, uniform for a
calibrated posterior (chi-square over 20 bins); TARP (Lemos et al. 2023, ICML,
arXiv:2302.03026): expected coverage of balls around random reference points against the
credibility level, on the diagonal for a calibrated posterior.

Examples
--------
A toy summary (mu = log M + noise whose size falls with N):

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(13.5, 15.0, 3000)
>>> n_gal = rng.integers(10, 200, 3000)
>>> mu = true + rng.normal(0, 0.6 / np.sqrt(n_gal))
>>> post = fit_posterior(mu, n_gal, true, seed=0, epochs=8)
>>> q = post.quantiles(np.array([14.2]), np.array([100]), (16, 50, 84))
>>> bool(14.0 < q[0, 1] < 14.4 and q[0, 0] < q[0, 1] < q[0, 2])
True
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dynmass._io import atomic_path, provenance, to_json
from dynmass.errors import InputError
from dynmass.survey_inputs import SURVEY_INPUTS, survey_columns

__all__ = ["GRID_STEP_DEX", "Posterior", "PosteriorSettings", "fit_posterior", "load_posterior"]

#: Spacing of the log10 M200c grid on which densities, CDFs and quantiles are evaluated, dex.
GRID_STEP_DEX = 0.005


@dataclass
class PosteriorSettings:
    """Settings of the flow and its training (every field recorded in the file).

    Parameters
    ----------
    transforms : int
        Spline transforms of the NSF.
    hidden : tuple of int
        Hidden layer widths of each transform's conditioner.
    epochs, batch_size, lr, patience : int, int, float, int
        Adam training; early stopping on the held-out hosts' log-likelihood.
    val_fraction : float
        Hosts held out for early stopping.
    seed : int
        Seed of the split, the initial weights and the batches.
    grid : tuple of float
        log10 M200c range [Msun/h] of the evaluation grid.
    n_flows : int
        Flows of a deep ensemble (Lakshminarayanan et al. 2017, NeurIPS): flow k is trained
        with seed ``seed + k`` (its own initial weights, batches and held-out hosts) and the
        posterior density is the average of theirs (default 1: one flow).
    survey_inputs : tuple of str
        Survey settings (keys of :data:`dynmass.survey_inputs.SURVEY_INPUTS`) the flow is
        conditioned on besides ``mu`` and ``log10 N`` (default none: a posterior that knows
        nothing of the survey). With them, ``N`` is read against the declared survey: the
        *survey-aware* posterior.
    occupation_dex : float
        Standard deviation [dex] of a Gaussian offset added to ``log10 N`` of every training
        view, redrawn every epoch (and once, seeded, for the held-out views): how well the
        number of galaxies a cluster of given mass puts in the cylinder is known, relative to
        the mocks' occupation. The flow then marginalises over it, so richness informs the
        mass only as far as the occupation is trusted (default 0: the mocks' occupation is
        the sky's).
    """

    transforms: int = 3
    hidden: tuple[int, ...] = (64, 64)
    epochs: int = 60
    batch_size: int = 512
    lr: float = 1e-3
    patience: int = 8
    val_fraction: float = 0.2
    seed: int = 0
    grid: tuple[float, float] = (12.5, 16.0)
    n_flows: int = 1
    survey_inputs: tuple[str, ...] = ()
    occupation_dex: float = 0.0


def _flow(s: PosteriorSettings) -> Any:
    import torch
    import zuko

    torch.manual_seed(s.seed)
    return zuko.flows.NSF(features=1, context=2 + len(s.survey_inputs), transforms=s.transforms,
                          hidden_features=tuple(s.hidden))


@dataclass
class Posterior:
    """``p(log10 M200c | mu, N)``: a trained flow with its standardisation and prior tables.

    Attributes
    ----------
    flow : zuko.flows.NSF
        Density of ``(log10 M - m0) / m_scale`` given the standardised context.
    standard : dict
        ``m0, m_scale`` (target) and ``c0, c_scale`` (context means and scales).
    p_cal : numpy.ndarray
        Density of true log10 M200c of the training views on :attr:`grid` (the implicit
        prior).
    settings : PosteriorSettings
    history : dict
        Training and validation loss per epoch, best epoch (of the first flow; ``members``:
        best epoch and validation loss of every flow of an ensemble).
    meta : dict
        What the flow summarises: ``bundle_sha256`` (the bundle whose ensemble mean ``mu``
        it reads; :func:`dynmass.predict.predict_members` refuses any other bundle) and the
        calibration files.
    members : list
        The other flows of an ensemble (``settings.n_flows - 1``): the density is the average
        over :attr:`flow` and these.
    """

    flow: Any
    standard: dict[str, Any]
    p_cal: np.ndarray
    settings: PosteriorSettings = field(default_factory=PosteriorSettings)
    history: dict[str, Any] = field(default_factory=dict)
    members: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> np.ndarray:
        """log10 M200c grid [Msun/h]."""
        lo, hi = self.settings.grid
        return np.arange(lo, hi + GRID_STEP_DEX / 2, GRID_STEP_DEX)

    @property
    def survey_domain(self) -> dict[str, tuple[float, float]]:
        """Range each survey input was drawn from for the training views (the ``survey_range``
        given to :func:`fit_posterior`, else the drawn values' range; raw units of
        :data:`dynmass.survey_inputs.SURVEY_INPUTS`); empty without survey inputs."""
        return {k: (float(lo), float(hi))
                for k, (lo, hi) in self.standard.get("survey_range", {}).items()}

    def _context(self, mu: np.ndarray, n_gal: np.ndarray,
                 survey: dict[str, Any] | None = None) -> np.ndarray:
        mu = np.atleast_1d(np.asarray(mu, float))
        cols = [mu, np.log10(np.broadcast_to(np.asarray(n_gal, float), mu.shape))]
        cols += survey_columns(self.settings.survey_inputs, survey, mu.shape)
        c = np.column_stack(cols)
        return (c - np.asarray(self.standard["c0"])) / np.asarray(self.standard["c_scale"])

    def density_grid(self, mu: np.ndarray, n_gal: np.ndarray,
                     survey: dict[str, Any] | None = None, chunk: int = 2048) -> np.ndarray:
        """``(n, len(grid))`` posterior density in log10 M200c, normalised on the grid.

        Parameters
        ----------
        mu, n_gal : numpy.ndarray
            Ensemble-mean predictions [log10 Msun/h] and galaxies per cylinder.
        survey : dict, optional
            The survey of each view, ``{name: value or array}`` for every name in
            ``settings.survey_inputs`` (required for a survey-aware posterior; units of
            :data:`dynmass.survey_inputs.SURVEY_INPUTS`).
        chunk : int
            Views evaluated at once.
        """
        import torch

        mu = np.atleast_1d(np.asarray(mu, float))
        n_gal = np.atleast_1d(np.asarray(n_gal, float))
        if np.any(n_gal < 1):
            raise InputError("every view needs at least one galaxy", column="n_gal")
        g = self.grid
        x = torch.as_tensor((g - self.standard["m0"]) / self.standard["m_scale"],
                            dtype=torch.float32)[:, None, None]
        ctx = torch.as_tensor(self._context(mu, n_gal, survey), dtype=torch.float32)
        total = np.zeros((len(mu), len(g)))
        for flow in (self.flow, *self.members):
            out = np.empty((len(mu), len(g)))
            with torch.no_grad():
                for a in range(0, len(mu), chunk):
                    dist = flow(ctx[a:a + chunk])
                    out[a:a + chunk] = dist.log_prob(
                        x.expand(-1, len(ctx[a:a + chunk]), 1)).T.numpy()
            out = np.exp(out - out.max(axis=1, keepdims=True))
            total += out / (out.sum(axis=1, keepdims=True) * GRID_STEP_DEX)
        return total / (1 + len(self.members))

    def cdf(self, mu: np.ndarray, n_gal: np.ndarray,
            survey: dict[str, Any] | None = None) -> np.ndarray:
        """``(n, len(grid))`` posterior CDF on the grid (cumulative sum of the density).

        Parameters
        ----------
        mu, n_gal : numpy.ndarray
            Ensemble-mean predictions [log10 Msun/h] and galaxies per cylinder.
        survey : dict, optional
            Survey inputs (see :meth:`density_grid`).
        """
        c = np.cumsum(self.density_grid(mu, n_gal, survey), axis=1) * GRID_STEP_DEX
        return c / c[:, -1:]

    def quantiles(self, mu: np.ndarray, n_gal: np.ndarray,
                  percentiles: tuple[float, ...] = (2.5, 16, 50, 84, 97.5),
                  survey: dict[str, Any] | None = None) -> np.ndarray:
        """``(n, len(percentiles))`` log10 M200c [Msun/h] at the given posterior percentiles.

        Parameters
        ----------
        mu, n_gal : numpy.ndarray
            Ensemble-mean predictions [log10 Msun/h] and galaxies per cylinder.
        percentiles : tuple of float
            Percentiles (0-100).
        survey : dict, optional
            Survey inputs (see :meth:`density_grid`).
        """
        c = self.cdf(mu, n_gal, survey)
        g = self.grid
        return np.column_stack([[np.interp(p / 100.0, row, g) for row in c]
                                for p in percentiles])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the flow and its tables to ``path`` (HDF5) atomically."""
        import h5py

        path = Path(path)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
            fh.attrs["dynmass_kind"] = "posterior"
            fh.attrs["settings"] = to_json(asdict(self.settings))
            fh.attrs["standard"] = to_json(self.standard)
            fh.attrs["history"] = to_json(self.history)
            fh.attrs["meta"] = to_json(self.meta)
            fh.attrs["provenance"] = to_json(provenance())
            fh.create_dataset("p_cal", data=self.p_cal)
            for k, v in self.flow.state_dict().items():
                fh.create_dataset(f"params/{k}", data=v.detach().cpu().numpy())
            for i, member in enumerate(self.members):
                for k, v in member.state_dict().items():
                    fh.create_dataset(f"members/{i}/{k}", data=v.detach().cpu().numpy())
        return path


def load_posterior(path: str | os.PathLike) -> Posterior:
    """Read a :meth:`Posterior.save` file."""
    import torch

    from dynmass._io import hdf5_read_errors, open_hdf5

    with hdf5_read_errors(path), open_hdf5(path, kind="posterior") as fh:
        raw = json.loads(fh.attrs["settings"])
        s = PosteriorSettings(**{**raw, "hidden": tuple(raw["hidden"]),
                                 "grid": tuple(raw["grid"]),
                                 "survey_inputs": tuple(raw.get("survey_inputs", ()))})
        flows = []
        groups = [fh["params"]] + ([fh["members"][i] for i in sorted(fh["members"], key=int)]
                                   if "members" in fh else [])
        for grp in groups:
            flow = _flow(s)
            flow.load_state_dict({k: torch.as_tensor(grp[k][...]) for k in grp})
            flows.append(flow.eval())
        return Posterior(flow=flows[0], standard=json.loads(fh.attrs["standard"]),
                         p_cal=fh["p_cal"][...], settings=s,
                         history=json.loads(fh.attrs["history"]), members=flows[1:],
                         meta=json.loads(fh.attrs.get("meta", "{}")))


def fit_posterior(mu: np.ndarray, n_gal: np.ndarray, true: np.ndarray,
                  host: np.ndarray | None = None, survey: dict[str, Any] | None = None,
                  survey_range: dict[str, tuple[float, float]] | None = None,
                  **settings: Any) -> Posterior:
    """Train the flow on calibration views (maximum likelihood, early stopping by host).

    Parameters
    ----------
    mu, n_gal, true : numpy.ndarray
        Ensemble-mean predictions and true log10 M200c [Msun/h], galaxies per cylinder.
    host : numpy.ndarray, optional
        Host of each view (held-out hosts for early stopping; default: every view its own).
    survey : dict, optional
        Per-view survey values ``{name: array}`` (keys of
        :data:`dynmass.survey_inputs.SURVEY_INPUTS`, e.g. the
        ``survey_*`` columns of domain-randomised observations): the flow is conditioned on
        them too (``settings.survey_inputs``, in the order of :data:`SURVEY_INPUTS`), and
        their training range is kept as the posterior's :attr:`Posterior.survey_domain`.
    survey_range : dict, optional
        ``{name: (lo, hi)}``: the range each survey input was drawn from (e.g. the bounds of
        observe's :class:`~dynmass.observing.Draw`), kept as the survey domain instead of the
        smallest and largest drawn value.
    **settings
        Fields of :class:`PosteriorSettings` (``survey_inputs`` is set from ``survey``).
    """
    import torch

    survey = dict(survey or {})
    unknown = sorted(set(survey) - set(SURVEY_INPUTS))
    if unknown:
        raise InputError(f"unknown survey input(s) {unknown}; known: {list(SURVEY_INPUTS)}",
                         column=unknown[0])
    names = tuple(k for k in SURVEY_INPUTS if k in survey)
    s = PosteriorSettings(**{**settings, "survey_inputs": names})
    if int(s.n_flows) < 1:
        raise InputError(f"n_flows must be >= 1 (got {s.n_flows})", column="n_flows")
    mu, n_gal, true = (np.asarray(a, float) for a in (mu, n_gal, true))
    if not (len(mu) == len(n_gal) == len(true)) or len(mu) < 50:
        raise InputError("need at least 50 views with mu, n_gal and true of equal length")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(true)) and np.all(n_gal >= 1)):
        raise InputError("mu and true must be finite and n_gal >= 1", column="mu")
    host = np.arange(len(mu)) if host is None else np.asarray(host)
    rng = np.random.default_rng(s.seed)
    hosts = np.unique(host)
    val_hosts = rng.choice(hosts, max(1, int(round(s.val_fraction * hosts.size))), replace=False)
    is_val = np.isin(host, val_hosts)
    ctx = np.column_stack([mu, np.log10(n_gal), *survey_columns(names, survey, mu.shape)])
    c_scale = ctx[~is_val].std(axis=0)
    if np.any(c_scale <= 0):
        bad = ["mu", "n_gal", *names][int(np.flatnonzero(c_scale <= 0)[0])]
        raise InputError(f"{bad} is the same for every training view: the flow cannot learn "
                         "how the mass depends on it", column=bad)
    standard = {"m0": float(true.mean()), "m_scale": float(true.std()),
                "c0": ctx[~is_val].mean(axis=0).tolist(), "c_scale": c_scale.tolist(),
                "survey_range": {k: [float(v) for v in (survey_range or {}).get(
                    k, (np.min(survey[k]), np.max(survey[k])))] for k in names}}
    x = torch.as_tensor(((true - standard["m0"]) / standard["m_scale"])[:, None],
                        dtype=torch.float32)
    c = torch.as_tensor((ctx - standard["c0"]) / np.asarray(standard["c_scale"]),
                        dtype=torch.float32)
    if not (np.isfinite(s.occupation_dex) and s.occupation_dex >= 0):
        raise InputError(f"occupation_dex must be >= 0 dex, got {s.occupation_dex}")
    c_jitter = s.occupation_dex / c_scale[1]  # log10 N offset in standardised units
    flow, hist = _train_flow(s, x, c, np.flatnonzero(~is_val), np.flatnonzero(is_val),
                             c_jitter)
    members = []
    if s.n_flows > 1:
        hist["members"] = [{"best_epoch": hist["best_epoch"], "val": min(hist["val"])}]
    for k in range(1, s.n_flows):  # deep ensemble: own seed, weights, batches, held-out hosts
        sk = replace(s, seed=s.seed + k)
        rk = np.random.default_rng(sk.seed)
        val_k = np.isin(host, rk.choice(hosts, val_hosts.size, replace=False))
        member, hk = _train_flow(sk, x, c, np.flatnonzero(~val_k), np.flatnonzero(val_k),
                                 c_jitter)
        members.append(member)
        hist["members"].append({"best_epoch": hk["best_epoch"], "val": min(hk["val"])})
    grid = np.arange(s.grid[0], s.grid[1] + GRID_STEP_DEX / 2, GRID_STEP_DEX)
    from scipy.stats import gaussian_kde

    p_cal = gaussian_kde(true, bw_method=0.05)(grid)
    return Posterior(flow=flow, standard=standard, p_cal=p_cal / p_cal.sum() /
                     GRID_STEP_DEX, settings=s, history=hist, members=members)


def _train_flow(s: PosteriorSettings, x: Any, c: Any, tr: np.ndarray, va: np.ndarray,
                c_jitter: float = 0.0) -> tuple[Any, dict[str, Any]]:
    """One flow by maximum likelihood on views ``tr``, early stopping on views ``va``;
    ``c_jitter``: standard deviation of the Gaussian offset of the ``log10 N`` context column
    (standardised units; see ``PosteriorSettings.occupation_dex``)."""
    import torch

    flow = _flow(s)
    opt = torch.optim.Adam(flow.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(s.seed)

    def jitter(cb: Any) -> Any:
        if not c_jitter:
            return cb
        cb = cb.clone()
        cb[:, 1] += c_jitter * torch.randn(len(cb), generator=gen)
        return cb

    c_va = jitter(c[va])
    best, best_state, hist, wait = np.inf, None, {"train": [], "val": []}, 0
    for _ in range(s.epochs):
        flow.train()
        perm = tr[torch.randperm(len(tr), generator=gen).numpy()]
        tot = 0.0
        for a in range(0, len(perm), s.batch_size):
            b = perm[a:a + s.batch_size]
            loss = -flow(jitter(c[b])).log_prob(x[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        flow.eval()
        with torch.no_grad():
            v = float(-flow(c_va).log_prob(x[va]).mean())
        hist["train"].append(tot / len(tr))
        hist["val"].append(v)
        if v < best - 1e-4:
            best, wait = v, 0
            best_state = {k: t.clone() for k, t in flow.state_dict().items()}
        else:
            wait += 1
            if wait >= s.patience:
                break
    flow.load_state_dict(best_state)
    hist["best_epoch"] = int(np.argmin(hist["val"]))
    return flow.eval(), hist
