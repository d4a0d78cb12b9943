import numpy as np
import pytest

from calib import MTFRecord, NoiseModel, ShotMetadata


def test_metadata_round_trips_through_dict_and_ignores_unknown_keys():
    meta = ShotMetadata(camera="Sim", f_number=4.0, focus_position=120)
    assert ShotMetadata.from_dict({**meta.to_dict(), "future_field": 1}) == meta


def test_noise_sigma_follows_poisson_gaussian_model():
    model = NoiseModel(("G",), np.array([0.01]), np.array([0.0004]))
    assert float(model.sigma(0.25)) == pytest.approx(np.sqrt(1e-4 + 1e-4))


def test_mtf50_interpolates_between_samples():
    rec = MTFRecord("G", 0, 0, 0, "none", "edge", np.array([0.0, 0.2, 0.4]), np.array([1.0, 0.6, 0.4]))
    assert rec.mtf50_cpp() == pytest.approx(0.3)


def test_freq_lpmm_uses_pixel_pitch():
    rec = MTFRecord("G", 0, 0, 0, "none", "edge", np.array([0.5]), np.array([0.1]))
    assert rec.freq_lpmm(5.0)[0] == pytest.approx(100.0)
