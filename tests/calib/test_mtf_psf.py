import numpy as np
import pytest

from calib import PSFMap
from calib._mtf_psf import field_direction, psf_map_mtf, psf_mtf


def _gaussian(k: int, sx: float, sy: float) -> np.ndarray:
    r = np.arange(k) - k // 2
    g = np.exp(-(r[None, :] ** 2) / (2 * sx**2) - (r[:, None] ** 2) / (2 * sy**2))
    return g / g.sum()


def test_gaussian_psf_mtf_matches_analytic_transform():
    sigma = 1.5
    f, m = psf_mtf(_gaussian(31, sigma, sigma), 0.0)
    np.testing.assert_allclose(m, np.exp(-2 * (np.pi * sigma * f) ** 2), atol=2e-3)


def test_psf_mtf_is_the_exact_transform_of_the_samples_along_an_oblique_direction(rng):
    psf = rng.random((9, 9))
    f, m = psf_mtf(psf, 37.0, sampling=3, freq_cpp=np.linspace(0.0, 1.0, 11))
    c = (np.arange(9) - 4) / 3
    x, y = np.meshgrid(c, c)
    u = x * np.cos(np.radians(37.0)) + y * np.sin(np.radians(37.0))
    direct = np.abs(np.exp(-2j * np.pi * f[:, None] * u.ravel()[None, :]) @ (psf.ravel() / psf.sum()))
    np.testing.assert_allclose(m, direct, atol=1e-12)


def test_defocus_disc_mtf_reaches_its_first_zero():
    # A uniform disc (defocus) of radius 4 px at 3 samples/px: |OTF| has its first zero
    # at 1.22 / (2 R) c/p; interpolating |OTF| between FFT bins would fill it in (~0.04).
    c = (np.arange(37) - 18) / 3
    x, y = np.meshgrid(c, c)
    disc = (np.hypot(x, y) <= 4.0).astype(float)
    f, m = psf_mtf(disc, 30.0, sampling=3, freq_cpp=np.linspace(0.13, 0.17, 41))
    assert m.min() < 0.005 and abs(f[np.argmin(m)] - 1.2197 / 8.0) < 0.005


def test_elongated_psf_has_lower_mtf_along_its_long_axis():
    psf = _gaussian(31, 3.0, 1.0)  # long along x
    _, along_x = psf_mtf(psf, 0.0)
    _, along_y = psf_mtf(psf, 90.0)
    assert along_x[10] < along_y[10]


def test_oversampled_psf_frequency_axis_is_in_sensor_cycles_per_pixel():
    sigma_px = 1.0
    f, m = psf_mtf(_gaussian(41, 2 * sigma_px, 2 * sigma_px), 0.0, sampling=2)
    np.testing.assert_allclose(m, np.exp(-2 * (np.pi * sigma_px * f) ** 2), atol=2e-3)


@pytest.mark.parametrize(
    "x, y, theta, expected",
    [(100, 0, 0, "tangential"), (100, 0, 90, "sagittal"), (0, 100, 90, "tangential"),
     (0, 0, 0, "none"), (100, 0, 45, "none")],
)
def test_field_direction_follows_lens_chart_convention(x, y, theta, expected):
    assert field_direction(x, y, theta, centre_xy=(0.0, 0.0)) == expected


def test_psf_map_mtf_gives_sagittal_and_tangential_per_off_axis_node():
    psf = np.broadcast_to(_gaussian(15, 1.0, 1.0), (1, 1, 2, 15, 15)).copy()
    nodes = np.array([[[50.0, 50.0], [90.0, 50.0]]])
    recs = psf_map_mtf(PSFMap(psf, nodes, ("G",), (101, 101)))
    assert sorted(r.direction for r in recs) == ["none", "none", "sagittal", "tangential"]
