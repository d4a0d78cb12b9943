import numpy as np
from scipy.ndimage import gaussian_filter

import calib
from restore import estimate_sigma
from restore._noise import noise_for

from restore_synth import scene


def test_wavelet_mad_recovers_the_noise_of_a_natural_scene(rng):
    # Smoothed first: the sample photo carries its own sensor and JPEG noise.
    img = gaussian_filter(scene("coffee", (256, 320), rgb=True), (1.5, 1.5, 0))
    noisy = img + 0.01 * rng.standard_normal(img.shape).astype(np.float32)
    sig = estimate_sigma(noisy)
    assert sig.shape == (3,)
    assert np.all(np.abs(sig - 0.01) < 0.0015)


def test_clipped_pixels_do_not_lower_the_estimate(rng):
    img = (0.5 + 0.01 * rng.standard_normal((200, 200))).astype(np.float32)
    img[:, :120] = 1.0  # clipped sky: no noise
    assert abs(estimate_sigma(img, saturated=0.995)[0] - 0.01) < 0.0015


def test_noise_model_gives_signal_dependent_sigma():
    model = calib.NoiseModel(("Y",), np.array([0.002]), np.array([1e-4]))
    est = noise_for(np.full((16, 16), 0.25, np.float32), model)
    assert est.sigma_for(0, 0.0) < est.sigma_for(0, 0.9)
    assert np.isclose(est.sigma_for(0, 0.25), np.sqrt(0.002**2 + 1e-4 * 0.25))


def test_a_number_is_taken_as_sigma_for_every_channel():
    est = noise_for(np.zeros((8, 8, 3), np.float32), 0.003)
    assert np.allclose(est.sigma, 0.003)


def test_model_without_shot_noise_falls_back_to_the_photo_estimate(rng):
    img = (scene(shape=(128, 128)) + rng.normal(0, 0.01, (128, 128))).astype(np.float32)
    no_gain = calib.NoiseModel(("Y",), np.array([1e-4]), np.array([0.0]))
    est = noise_for(img, no_gain)
    assert est.model is None
    np.testing.assert_array_equal(est.sigma, estimate_sigma(img))
