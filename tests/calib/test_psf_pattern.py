"""Pattern (random noise chart) estimator against seeded synthetic truth."""
from __future__ import annotations

import numpy as np
import pytest

from calib import CalibError
from calib._psf_pattern import estimate_psf_pattern, estimate_psf_pattern_channels

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


@pytest.fixture
def field_varying_photo(rng):
    """A noise photo whose PSF widens linearly from left to right (a blend of two photos:
    PSF(x) = (1 - a) P1 + a P2 with a = x / (w - 1)), and the sensor-grid truth at x."""
    f1, t1 = system_psf(4, sigma=(0.6, 0.45))
    f2, t2 = system_psf(4, sigma=(1.3, 0.9))
    scene = noise_scene(96, 96, rng)
    p1, p2 = (photograph(scene, f, rng, read=0.0, gain=0.0) for f in (f1, f2))
    a = np.arange(p1.shape[1])[None, :] / (p1.shape[1] - 1)
    image = (1 - a) * p1 + a * p2
    image += rng.standard_normal(image.shape) * np.sqrt(1.5e-4**2 + 3.3e-5 * np.clip(image, 0, None))

    def truth(x: float) -> np.ndarray:
        t = x / (p1.shape[1] - 1)
        return (1 - t) * t1 + t * t2

    return image, area_render(scene, 2), truth


@pytest.mark.parametrize("x", [2.0, 93.0])
def test_field_fit_reads_the_psf_at_the_crop_edge(field_varying_photo, x):
    image, sharp, truth = field_varying_photo
    kw = dict(size=9, oversample=2, reg=0.003)
    at_edge = estimate_psf_pattern_channels(image, sharp, field_xy=(x, 48.0), **kw)[0]
    average = estimate_psf_pattern_channels(image, sharp, **kw)[0]
    assert rel_l2(at_edge.psf, truth(x)) < 0.2  # the PSF doubles in width across the crop
    assert rel_l2(at_edge.psf, truth(x)) < 0.5 * rel_l2(average.psf, truth(x))
