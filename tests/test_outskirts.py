"""The ``outskirts`` halo model of the mock universe (issue 13): satellites beyond R200c, infall
onto massive halos, triaxial halos; off by default, the default universe unchanged.

Statistics of random universes are :class:`StochasticCheck` s in ``STOCHASTIC`` with bounds set
from their spread over seeds 0-9 (``python tests/calibrate_bounds.py --only test_outskirts``);
each has the universe without the option as a broken variant it must reject.
"""

from __future__ import annotations

import json
from functools import lru_cache, partial

import numpy as np
import pytest

from dynmass import InputError, read_catalog
from dynmass.catalog import Catalog
from dynmass.cli import main
from dynmass.cosmology import MDPL2
from dynmass.testing import Bound, StochasticCheck
from dynmass.universe import build_universe, check_catalog
from dynmass.universe.galaxies import concentration_200c, nfw_mass, populate
from dynmass.universe.massfunction import r200c_comoving
from dynmass.universe.outskirts import (
    R_MAX_R200C,
    OutskirtsModel,
    outskirt_fraction,
    sample_orbiting_radii,
)
from dynmass.universe.shapes import (
    axis_ratios,
    nonlinear_mass,
    random_rotations,
    velocity_axis_scales,
)
from dynmass.universe.validate_outskirts import (
    projected_density_step,
    radial_velocity_profile,
)

Z = 0.117
#: Shells of r / R200c of the infall statistics.
SHELLS = np.arange(1.0, 10.01, 0.5)


@lru_cache(maxsize=24)
def universe_at(seed: int, outskirts: bool = True) -> Catalog:
    """A 150 Mpc/h box of halos above 10^12.5 Msun/h and galaxies above 10^9 Msun (~50 hosts
    above 10^14 Msun/h). Cached: callers must not modify it."""
    return build_universe(box_size=150.0, seed=seed, min_mass=10**12.5, mstar_min=9.0,
                          outskirts=outskirts)


def turnaround_fit(prof: dict) -> float:
    """r / R200c where a power-law fit of -v_r / (a H r) over 2-9 R200c equals 1 (NaN when
    the fitted infall does not fall outward)."""
    y = 0.5 * (prof["edges"][1:] + prof["edges"][:-1])
    q = prof["mean_vr_kms"] / prof["hubble_kms"]
    sel = (y > 2) & (y < 9) & (q < 0) & (prof["n"] > 0)
    w = np.sqrt(prof["n"][sel])
    a = np.column_stack([np.ones(sel.sum()), np.log(y[sel])])
    coef = np.linalg.lstsq(a * w[:, None], np.log(-q[sel]) * w, rcond=None)[0]
    return float(np.exp(-coef[0] / coef[1])) if coef[1] < 0 else float("nan")


def universe_stats(seed: int, outskirts: bool = True) -> dict[str, float]:
    """Edge, infall and turnaround of :func:`universe_at`.

    ``step``: surface density of the cylinder galaxies (|v| <= 2200 km/s, x, y, z lines of
    sight) in 0.9-1.0 over 1.0-1.1 R200c around hosts above 10^13.5 Msun/h (satellites
    truncated at R200c: ~3). Around hosts above 10^14 Msun/h, the stacked mean radial peculiar
    velocity of the central galaxies of the other halos (one per neighbouring halo) over the
    Hubble flow a H r: ``infall_1.5-3`` (shells 1.5-3 R200c; < -1: inside turnaround) and
    ``infall_6-9`` (> -1: outside), and ``turnaround`` (:func:`turnaround_fit`)."""
    cat = universe_at(seed, outskirts)
    prof = radial_velocity_profile(cat, SHELLS, min_mass=1e14, in_r200=True,
                                   galaxies="centrals")
    y = 0.5 * (SHELLS[1:] + SHELLS[:-1])
    q = prof["mean_vr_kms"] / prof["hubble_kms"]
    out = {"step": projected_density_step(cat, min_mass=10**13.5)["ratio"]}
    for lo, hi in ((1.5, 3.0), (6.0, 9.0)):
        sel = (y > lo) & (y < hi)
        out[f"infall_{lo:g}-{hi:g}"] = float(np.average(q[sel], weights=prof["n"][sel]))
    out["turnaround"] = turnaround_fit(prof)
    return out


@lru_cache(maxsize=4)
def cluster_model() -> OutskirtsModel:
    """Outskirts tables for halos of 10^14.8-10^15.2 Msun/h at z = 0.117."""
    log_m = np.arange(14.8, 15.21, 0.01)
    return OutskirtsModel.build(log_m, concentration_200c(10**log_m, Z, MDPL2), Z, MDPL2)


def cluster_velocities(seed: int, outskirts: bool = True) -> dict[str, float]:
    """Populate 20 halos of 10^15 Msun/h (galaxies above 10^9 Msun, ~850 satellites within
    R200c each); per halo, the members' velocity dispersion tensor about the host within
    R200c. ``sigma_axis_ratio``: median over halos of sqrt(largest / smallest eigenvalue)
    (sigma_los along the extreme lines of sight; ~1.1 from sampling noise alone);
    ``alignment``: median |cos| of the angle between the major axes of the velocity and
    position tensors (0.5 for random directions); ``sigma3d_ratio``: 3D dispersion over
    that of the spherical model (same halos, same seed)."""
    n = 20
    m = np.full(n, 1e15)
    halos = {"id": np.arange(n), **{c: np.full(n, 50.0) for c in "xyz"},
             **{c: np.zeros(n) for c in ("vx", "vy", "vz")}, "m200c": m,
             "r200c": r200c_comoving(m, Z, MDPL2)}
    model = cluster_model() if outskirts else None
    g = populate(halos, 100.0, Z, MDPL2, np.random.default_rng(seed), mstar_min=9.0,
                 outskirts=model)
    ref = populate(halos, 100.0, Z, MDPL2, np.random.default_rng(seed), mstar_min=9.0)
    ratios, cosines, s3 = [], [], []
    for h in range(n):
        sel = (g["host_id"] == h) & ~g["is_central"] & (g["r_host"] <= halos["r200c"][h])
        d = np.column_stack([g[c][sel] - 50.0 for c in "xyz"])
        v = np.column_stack([g[c][sel] for c in ("vx", "vy", "vz")])
        ev, evec = np.linalg.eigh(v.T @ v / len(v))
        pv, pvec = np.linalg.eigh(d.T @ d / len(d))
        ratios.append(np.sqrt(ev[-1] / ev[0]))
        cosines.append(abs(evec[:, -1] @ pvec[:, -1]))
        rsel = (ref["host_id"] == h) & ~ref["is_central"]
        s3.append(np.sqrt(np.mean(v**2) / np.mean(np.column_stack(
            [ref[c][rsel] for c in ("vx", "vy", "vz")]) ** 2)))
    return {"sigma_axis_ratio": float(np.median(ratios)), "alignment": float(np.median(cosines)),
            "sigma3d_ratio": float(np.median(s3))}


STOCHASTIC = {
    "universe": StochasticCheck(
        run=universe_stats, seed=0, n_seeds=10,
        bounds={"step": Bound(0.9, 1.5), "infall_1.5-3": Bound(None, -1.4),
                "infall_6-9": Bound(-1.0, None), "turnaround": Bound(3.4, 5.4)},
        broken={"outskirts_off": partial(universe_stats, outskirts=False)}),
    "cluster_velocities": StochasticCheck(
        run=cluster_velocities, seed=0, n_seeds=10,
        bounds={"sigma_axis_ratio": Bound(1.2, None), "alignment": Bound(0.8, None),
                "sigma3d_ratio": Bound(0.95, 1.05)},
        broken={"outskirts_off": partial(cluster_velocities, outskirts=False)}),
}


def test_no_step_at_r200c_and_infall_turns_around():
    """With the option on, the cylinder galaxies show no step across R200c, the galaxies
    around hosts above 10^14 fall in faster than the Hubble flow at 1.5-3 R200c and turn
    around between 2.5 and 7 R200c (without it: a step of ~3 and nothing turns around).

    Measured over seeds 0-9
    (``python tests/calibrate_bounds.py --only test_outskirts.universe``):
    step: mean 1.184, sd 0.025, range [1.152, 1.217]; bound (0.9, 1.5), 11.1 sd from the mean.
    infall_1.5-3: mean -4.088, sd 0.6, range [-5.14, -3.293]; bound (-inf, -1.5), 4.3 sd.
    infall_6-9: mean -0.587, sd 0.099, range [-0.7565, -0.4766]; bound (-1, inf), 4.2 sd.
    turnaround: mean 5.298, sd 0.35, range [4.765, 5.81]; bound (2.5, 7), 4.8 sd.
    Broken variant caught (seeds 0-2): outskirts_off 3/3 (step 2.8-4.4, infall_1.5-3 -0.59
    to -0.85, turnaround 1.0-1.9).
    """
    STOCHASTIC["universe"].check()


def test_triaxial_velocity_ellipsoid():
    """sigma_los of one cluster depends on the line of sight, the velocity ellipsoid is aligned
    with the shape, and the 3D (Jeans) dispersion is that of the spherical model.

    Measured over seeds 0-9
    (``python tests/calibrate_bounds.py --only test_outskirts.cluster_velocities``):
    sigma_axis_ratio: mean 1.433, sd 0.05, range [1.365, 1.517]; bound (1.2, inf), 4.7 sd.
    alignment: mean 0.9957, sd 0.0014, range [0.9933, 0.9971]; bound (0.8, inf), 137 sd.
    sigma3d_ratio: mean 1.003, sd 0.0062, range [0.9901, 1.012]; bound (0.95, 1.05), 7.5 sd.
    Broken variant caught (seeds 0-2): outskirts_off 3/3 (sigma_axis_ratio 1.07-1.09,
    alignment 0.29-0.57).
    """
    STOCHASTIC["cluster_velocities"].check()


def test_default_unchanged_and_same_halos():
    """``outskirts=False`` is the default (same numbers); with the option the same halos
    (masses, positions) get satellites beyond R200c, and the settings record the model."""
    kw = {"box_size": 60.0, "seed": 2, "min_mass": 1e13}
    default = build_universe(**kw)
    off = build_universe(**kw, outskirts=False)
    on = build_universe(**kw, outskirts=True)
    for table in ("halos", "galaxies"):
        a, b = getattr(default, table), getattr(off, table)
        assert set(a) == set(b) and all(np.array_equal(a[c], b[c]) for c in a)
    for c in ("m200c", "x", "y", "z", "r200c", "id"):
        assert np.array_equal(on.halos[c], default.halos[c])
    r200 = dict(zip(default.halos["id"], default.halos["r200c"], strict=True))
    inside = np.array([r <= r200[h] * (1 + 1e-6)
                       for r, h in zip(default.galaxies["r_host"], default.galaxies["host_id"],
                                       strict=True)])
    assert inside.all()
    beyond = on.galaxies["r_host"] > np.array([r200[h] for h in on.galaxies["host_id"]])
    assert beyond.sum() > 0 and on.galaxies["r_host"].max() <= R_MAX_R200C * 2.2 * max(
        r200.values())
    assert default.settings["outskirts"] is False and "outskirts_parameters" not in default.settings
    assert on.settings["outskirts"] is True
    assert on.settings["outskirts_parameters"]["dk14_gamma"] == 8.0
    with pytest.raises(InputError, match="outskirts"):
        build_universe(box_size=40.0, outskirts="yes")


def test_seeds_reproduce():
    """The same seed gives the same universe with the option on; another seed another one."""
    kw = {"box_size": 50.0, "min_mass": 1e13, "outskirts": True}
    a, b, c = (build_universe(seed=s, **kw) for s in (4, 4, 5))
    for table in ("halos", "galaxies"):
        ta, tb = getattr(a, table), getattr(b, table)
        assert all(np.array_equal(ta[k], tb[k]) for k in ta)
    assert not np.array_equal(a.galaxies["vx"][:50], c.galaxies["vx"][:50])


def test_orbiting_radii_inverse_transform():
    """The numerical inverse transform reproduces the NFW quantiles (no truncation) within
    R200c and keeps the requested ranges; outskirt fractions are those documented."""
    rng = np.random.default_rng(0)
    n = 100_000
    rows = np.zeros(n, np.int64)
    y = sample_orbiting_radii(np.array([5.0]), np.array([1e6]), rows, np.zeros(n), np.ones(n),
                              rng.uniform(size=n))
    for q in (0.2, 0.5, 0.8):
        p = nfw_mass(5.0 * q) / nfw_mass(5.0)
        assert abs(np.mean(y < q) - p) < 6 * np.sqrt(p * (1 - p) / n)
    rows = rng.integers(0, 3, n)
    y = sample_orbiting_radii(np.array([3.0, 5.0, 8.0]), np.array([1.5, 2.0, 2.5]), rows,
                              np.ones(n), np.full(n, R_MAX_R200C), rng.uniform(size=n))
    assert y.min() >= 1.0 and y.max() <= R_MAX_R200C
    assert np.median(y[rows == 0]) < np.median(y[rows == 2])  # r_t further out: further out
    frac = outskirt_fraction(np.array([4.3, 3.75]), np.array([2.34, 1.92]))
    assert np.allclose(frac, [0.54, 0.41], atol=0.01)


def test_shapes():
    """Rotations are rotations, axis ratios are ordered and follow Allgood et al. 2006 on
    average, velocity scales keep the 3D dispersion and are 1 for a sphere."""
    rng = np.random.default_rng(1)
    rot = random_rotations(100, rng)
    assert np.allclose(np.einsum("nij,nkj->nik", rot, rot), np.eye(3)[None], atol=1e-12)
    assert np.allclose(np.linalg.det(rot), 1.0)
    m_star = nonlinear_mass(Z, MDPL2)
    q, s = axis_ratios(np.full(20_000, 1e14), m_star, rng)
    assert np.all((s <= q + 1e-12) & (q <= 1.0))
    assert abs(np.mean(s) - 0.54 * (1e14 / m_star) ** -0.05) < 0.01
    f = velocity_axis_scales(q, s)
    assert np.allclose(np.sum(f**2, axis=1), 3.0) and np.all(f[:, 0] >= f[:, 2])
    assert np.allclose(velocity_axis_scales(np.ones(1), np.ones(1)), 1.0)


def test_cli_and_validation(tmp_path, capsys):
    """``dynmass universe --outskirts`` records the option; with ``--from`` it is refused; the
    catalog check reports the outskirts statistics."""
    out = tmp_path / "u.h5"
    assert main(["universe", "-o", str(out), "--box", "40", "--min-mass", "1e13", "--seed", "1",
                 "--outskirts"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cat = read_catalog(out)
    assert printed["n_galaxies"] == cat.n_galaxies and cat.settings["outskirts"] is True
    assert main(["universe", "-o", str(tmp_path / "x.h5"), "--from", str(out), "--format",
                 "table", "--outskirts"]) == 2
    assert "--outskirts" in capsys.readouterr().err
    res = check_catalog(cat, thresholds_log10_msunh=(13.0,))
    assert {"outskirts_step_ratio", "outskirts_turnaround_r200",
            "outskirts_vr_non_members_1.5-2mpch"} <= set(res["summary"])
    assert {"radial_profile", "projected_profile"} <= set(res["details"]["outskirts"])


def test_truncation_radius_for_rare_peaks_at_high_redshift():
    """At z = 1 a 10^16 Msun/h halo has nu200m = 10.2, where colossus' DK14 parameters fail
    (and r_t = (1.9 - 0.18 nu) R200m would fall below R200m): peaks above DK14_NU_MAX take
    its value, so universes up to z = 1 build; common halos are unchanged."""
    from dynmass.universe.orbiting import DK14_NU_MAX, truncation_radius_r200c

    m = np.array([1e14, 1e16])
    c = np.array([5.0, 3.0])
    rt = truncation_radius_r200c(m, c, 1.0, MDPL2)
    assert np.all(np.isfinite(rt)) and np.all(rt > 1.0)
    assert DK14_NU_MAX == 5.0
    # 10^14 at z = 0.117 has nu ~ 1.6: untouched by the cap (DK14 eq. 6 by hand)
    from colossus.halo import mass_defs
    from colossus.lss import peaks

    from dynmass.cosmology import colossus_cosmology

    with colossus_cosmology(MDPL2):
        m200m, r200m, _ = mass_defs.changeMassDefinition(1e14, 5.0, 0.117, "200c", "200m")
        nu = float(peaks.peakHeight(m200m, 0.117))
        from colossus.halo import mass_so
        expect = (1.9 - 0.18 * nu) * r200m / mass_so.M_to_R(1e14, 0.117, "200c")
    assert truncation_radius_r200c(m[:1], c[:1], 0.117, MDPL2)[0] == pytest.approx(expect, rel=1e-6)
