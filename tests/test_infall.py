"""Infall of the ``outskirts`` engine (issue 13, item 2): the excess motions measured on the
N-body engine (``dynmass/data/infall_nbody_fit.json``, ``benchmarks/infall_fit.py``), applied
around hosts with one host per halo."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from dynmass.cosmology import MDPL2
from dynmass.universe.galaxies import G_KMS_MPC_MSUN
from dynmass.universe.infall import (
    HOST_MIN_MASS,
    Y_MAX,
    InfallModel,
    infall_fit,
    infall_parameters,
    mean_excess,
    variance_excess,
)
from dynmass.universe.massfunction import r200c_comoving

Z = 0.117


def model() -> InfallModel:
    return InfallModel.build(Z, lambda m: r200c_comoving(m, Z, MDPL2), 15.2)


def v200(m: float) -> float:
    return float(np.sqrt(G_KMS_MPC_MSUN * m * (1 + Z) / r200c_comoving(m, Z, MDPL2)))


def sphere(n: int, y: np.ndarray, r200: float, rng: np.random.Generator) -> np.ndarray:
    u = rng.standard_normal((n, 3))
    return 100.0 + u / np.linalg.norm(u, axis=1)[:, None] * (y * r200)[:, None]


def test_stored_fit_and_its_record():
    """The stored fit says what it was measured on; it pulls inward at 2-5 R200c for every
    host mass, and the universe settings record it."""
    fit = infall_fit()
    on = fit["measured_on"]
    assert len(on["nbody"]) >= 3 and len(on["grid"]) == len(on["nbody"])
    assert on["redshift"] == Z and on["host_min_mass_msunh"] == HOST_MIN_MASS
    assert set(fit["mean"]) == {"a0", "a1", "l0", "l1", "q", "c0", "c1"}
    y, mu = np.meshgrid(np.linspace(2.0, 5.0, 7), np.linspace(-0.5, 1.0, 7))
    dv = mean_excess(y, mu)
    assert np.all(dv < -0.1) and np.all(dv > -1.0)
    assert np.all(variance_excess(np.linspace(-1, 2, 9)) >= 0)
    rec = infall_parameters()
    assert rec["infall_mean_parameters"] == fit["mean"] and "N-body" in rec["infall"]


def test_infall_around_one_host():
    """One 10^15 Msun/h host among 10^12 halos at rest: in shells of r / R200c the mean radial
    velocity and the dispersion are the fit's (within 4 standard errors / 5%); nothing is
    added to the mean within R200c, to halos beyond Y_MAX or to a more massive halo."""
    m15 = 1e15
    r200 = float(r200c_comoving(m15, Z, MDPL2))
    rng = np.random.default_rng(2)
    n = 60_000
    y = np.concatenate([rng.uniform(0.3, 25.0, n - 1), [2.0]])
    pos = sphere(n, y, r200, rng)
    m = np.full(n, 1e12)
    m[-1] = 2e15
    halos = {"id": np.arange(n), **{c: pos[:, k] for k, c in enumerate("xyz")},
             **{c: np.zeros(n) for c in ("vx", "vy", "vz")}, "m200c": m}
    hosts = {**{c: np.array([100.0]) for c in "xyz"}, "m200c": np.array([m15]),
             "r200c": np.array([r200])}
    mod = model()
    mod.apply(halos, hosts, 400.0, np.random.default_rng(3))
    v = np.column_stack([halos[c] for c in ("vx", "vy", "vz")])
    d = pos - 100.0
    rhat = d / np.linalg.norm(d, axis=1)[:, None]
    vr = np.sum(v * rhat, 1)
    assert np.all(v[-1] == 0) and np.all(v[y > Y_MAX] == 0)
    inner = y[:-1] < 0.95
    assert abs(np.mean(vr[:-1][inner])) < 4 * np.std(vr[:-1][inner]) / np.sqrt(inner.sum())
    for lo, hi in ((2.5, 3.5), (4.0, 6.0), (8.0, 12.0)):
        sel = (y >= lo) & (y < hi)
        sel[-1] = False
        dv, var = mod.lookup(np.full(sel.sum(), 15.0), y[sel])
        se = np.sqrt(np.mean(var) / sel.sum())
        assert abs(np.mean(vr[sel]) - np.mean(dv)) < 4 * se + 1.0
        vt = v[sel] - vr[sel, None] * rhat[sel]  # tangential: the random part only
        assert abs(np.sqrt(np.sum(vt**2) / (2 * sel.sum())) / np.sqrt(np.mean(var)) - 1) < 0.05
    # the amplitude is the fit's in V200c units
    dv3, _ = mod.lookup(np.array([15.0]), np.array([3.0]))
    assert np.isclose(dv3[0], mean_excess(3.0, 1.0) * v200(m15), rtol=0.02)


def test_one_host_per_halo():
    """Halos between two hosts get the motion of the host with the larger added motion, not
    the sum of both."""
    mod = model()
    big, small = 10**14.9, 10**14.0
    rb, rs = float(r200c_comoving(big, Z, MDPL2)), float(r200c_comoving(small, Z, MDPL2))
    hb, hs = np.array([100.0, 100.0, 100.0]), np.array([100.0 + 3 * rb + 3 * rs, 100.0, 100.0])
    at = np.array([100.0 + 3 * rb, 100.0, 100.0])  # 3 R200c of each host
    n = 20_000
    halos = {"id": np.arange(n), **{c: np.full(n, at[k]) for k, c in enumerate("xyz")},
             **{c: np.zeros(n) for c in ("vx", "vy", "vz")}, "m200c": np.full(n, 1e12)}
    hosts = {**{c: np.array([hb[k], hs[k]]) for k, c in enumerate("xyz")},
             "m200c": np.array([big, small]), "r200c": np.array([rb, rs])}
    mod.apply(halos, hosts, 400.0, np.random.default_rng(0))
    dvb, varb = mod.lookup(np.log10([big]), np.array([3.0]))
    dvs, vars_ = mod.lookup(np.log10([small]), np.array([3.0]))
    assert dvb[0] ** 2 + 3 * varb[0] > dvs[0] ** 2 + 3 * vars_[0]
    vx = np.asarray(halos["vx"])
    se = np.std(vx) / np.sqrt(n)
    # toward the big host (at smaller x: dvb < 0 along +x) with its speed; the sum of both
    # hosts' pulls would be dvb - dvs (the small host lies at larger x)
    assert abs(np.mean(vx) - dvb[0]) < 4 * se + 1.0
    assert abs(np.mean(vx) - (dvb[0] - dvs[0])) > 10 * se
    assert np.isclose(np.std(vx), np.sqrt(varb[0]), rtol=0.05)


def test_fit_recovers_known_excess():
    """benchmarks/infall_fit.py's fit returns the parameters of synthetic moments made from
    known ones (grid moments zero)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "infall_fit.py"
    spec = importlib.util.spec_from_file_location("infall_fit_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    truth = {"a0": 0.5, "a1": -0.2, "l0": 1.4, "l1": 0.05, "q": 3.5, "c0": 0.01, "c1": -0.1}
    yc = np.sqrt(bench.Y_EDGES[1:] * bench.Y_EDGES[:-1])
    mc = 0.5 * (bench.MASS_EDGES[1:] + bench.MASS_EDGES[:-1]) - 14.0
    y, mu = np.meshgrid(yc, mc)
    n = np.full(y.shape, 1e6)
    nb = {"n": n, "mean": mean_excess(y, mu, truth), "var": 0.05 + 0.02 * mu + 0 * y}
    grid = {"n": n, "mean": np.zeros_like(y), "var": np.zeros_like(y)}
    fit = bench.fit_excess(nb, grid)
    for k, v in truth.items():
        assert abs(fit["mean"][k] - v) < 0.02 * max(1.0, abs(v)), k
    assert abs(fit["variance"]["b0"] - 0.05) < 1e-3 and abs(fit["variance"]["b1"] - 0.02) < 1e-3
