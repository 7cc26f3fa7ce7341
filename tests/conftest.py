"""Shared fixtures: tiny catalogs and observations made inside the tests."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator."""
    return np.random.default_rng(12345)


@pytest.fixture
def toy_models():
    """The toy estimators of :mod:`dynmass.testing.estimators`, registered for the test so
    that :func:`dynmass.models.load_model` can rebuild their files."""
    from dynmass.testing.estimators import toy_models_registered

    with toy_models_registered() as models:
        yield models
