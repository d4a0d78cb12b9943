"""Shared fixtures: seeded randomness and a scratch folder per test."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every synthetic truth is reproducible."""
    return np.random.default_rng(20261123)
