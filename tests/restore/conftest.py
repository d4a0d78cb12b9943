"""Fixtures for restore tests (helpers live in restore_synth.py)."""
from __future__ import annotations

import numpy as np
import pytest
from restore_synth import NOISE


@pytest.fixture
def noisy(rng):
    """Add 0.5 % Gaussian noise to an image (seeded)."""

    def add(img: np.ndarray) -> np.ndarray:
        return (img + NOISE * rng.standard_normal(img.shape)).astype(np.float32)

    return add
