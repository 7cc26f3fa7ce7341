"""The model shipped in the package works right after install and behaves physically."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from dynmass.bundle import load_bundle
from dynmass.predict import default_model_path, predict_members


def _members(rng: np.random.Generator, sigma_kms: dict[str, float], n: int = 60) -> Table:
    """R [Mpc/h] and v [km/s] of Gaussian clusters (no interlopers), one per cluster id."""
    rows = {"cluster_id": [], "R": [], "v": []}
    for cid, sig in sigma_kms.items():
        rows["cluster_id"] += [cid] * n
        rows["R"] += list(1.6 * np.sqrt(rng.uniform(0, 1, n)) * rng.uniform(0.3, 1.0, n))
        rows["v"] += list(np.clip(rng.normal(0, sig, n), -2199, 2199))
    return Table(rows)


def test_shipped_bundle_is_complete():
    bundle = load_bundle(default_model_path())
    assert bundle.model_name == "cnn2d"
    assert bundle.obs_settings["aperture"] == pytest.approx(1.6)
    assert bundle.obs_settings["vcut"] == pytest.approx(2200.0)
    assert len(bundle.models) >= 5


def test_predict_without_model_argument_orders_masses_by_dispersion():
    rng = np.random.default_rng(7)
    table = _members(rng, {"cold": 350.0, "warm": 650.0, "hot": 1000.0})
    out = predict_members(table)  # no model: the shipped default
    by_id = {str(r["cluster_id"]): r for r in out}
    p50 = [float(by_id[c]["log10_m200c_p50"]) for c in ("cold", "warm", "hot")]
    assert np.all(np.isfinite(p50))
    assert p50[0] < p50[1] < p50[2], p50
    for c in by_id.values():
        assert c["log10_m200c_p16"] <= c["log10_m200c_p50"] <= c["log10_m200c_p84"]
        assert c["log10_m200c_p2_5"] <= c["log10_m200c_p16"]
        assert not c["error"]
