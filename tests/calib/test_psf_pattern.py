"""Pattern (random noise chart) estimator against seeded synthetic truth."""
from __future__ import annotations

import numpy as np
import pytest

from calib import CalibError
from calib._psf_pattern import estimate_psf_pattern

from _psf_synth import area_render, noise_scene, photograph, rel_l2, system_psf


@pytest.fixture
def noise_photo(rng):
    psf_fine, truth = system_psf(4)
    scene = noise_scene(72, 72, rng)
    return photograph(scene, psf_fine, rng), scene, truth


def test_oversampled_pattern_psf_is_within_5_percent(noise_photo):
    image, scene, truth = noise_photo
    est = estimate_psf_pattern(image, area_render(scene, 2), size=9, oversample=2)
    assert rel_l2(est.psf, truth) < 0.05


def test_oversampling_beats_the_sensor_grid_estimate(noise_photo):
    image, scene, truth = noise_photo
    coarse = estimate_psf_pattern(image, area_render(scene, 1), size=9, oversample=1)
    fine = estimate_psf_pattern(image, area_render(scene, 2), size=9, oversample=2)
    assert rel_l2(fine.psf, truth) < rel_l2(coarse.psf, truth)


def test_pattern_psf_is_normalised_and_non_negative(noise_photo):
    image, scene, _ = noise_photo
    est = estimate_psf_pattern(image, area_render(scene, 2), size=9, oversample=2)
    assert est.psf_fine.shape == (17, 17)
    assert est.psf.min() >= 0 and abs(float(est.psf.sum()) - 1) < 1e-5
    assert abs(float(est.psf_fine.sum()) - 1) < 1e-5


def test_residual_is_at_the_noise_level(noise_photo):
    image, scene, _ = noise_photo
    est = estimate_psf_pattern(image, area_render(scene, 2), size=9, oversample=2)
    assert est.residual_rms < 3 * np.sqrt(1.5e-4**2 + 3.3e-5 * 0.5)


def test_wrong_sharp_shape_is_a_calib_error(noise_photo):
    image, scene, _ = noise_photo
    with pytest.raises(CalibError, match="expected"):
        estimate_psf_pattern(image, area_render(scene, 1), size=9, oversample=2)


def test_flat_pattern_is_a_calib_error(noise_photo):
    image, _, _ = noise_photo
    with pytest.raises(CalibError, match="no contrast"):
        estimate_psf_pattern(image, np.ones((144, 144)), size=9, oversample=2)
