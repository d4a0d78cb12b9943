"""PSF from a photo of a known random pattern: registration and PSF against seeded truth.

The photo is made independently of the code under test: the pattern is point-sampled
(2 x 2 per fine sample) on a grid ``FINE`` times finer than the pixels, convolved with the
system PSF (optics x 1-pixel box) on that grid and sampled at the pixel centres.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from calib import CalibError, estimate_psf_from_pattern
from calib._pattern_register import register_pattern, render_pattern

FINE = 4
PHOTO_SHAPE = (300, 320)


def random_pattern(rng, n: int = 64, border: int = 3) -> np.ndarray:
    """Random binary cells (0 / 1) inside a black frame ``border`` cells wide."""
    pat = np.zeros((n + 2 * border, n + 2 * border))
    pat[border:-border, border:-border] = rng.random((n, n)) > 0.5
    return pat


def truth_homography(pattern_shape, *, cell=3.6, centre=(160.0, 150.0), angle=0.35, tilt=(4e-4, -3e-4)):
    """A perspective map of the pattern onto the photo, about ``cell`` px per cell."""
    ph, pw = pattern_shape
    c, s = np.cos(angle), np.sin(angle)
    to_centre = np.array([[1, 0, -(pw - 1) / 2], [0, 1, -(ph - 1) / 2], [0, 0, 1.0]])
    rot = np.array([[cell * c, -cell * s, 0], [cell * s, cell * c, 0], [tilt[0], tilt[1], 1.0]])
    shift = np.array([[1, 0, centre[0]], [0, 1, centre[1]], [0, 0, 1.0]])
    return shift @ rot @ to_centre


def optics_psf(kind: str, radius_px: float = 6.0) -> np.ndarray:
    """Optics PSF on the fine grid (integrates to FINE**2 so it sums to 1 per pixel area)."""
    t = np.arange(-int(radius_px * FINE), int(radius_px * FINE) + 1) / FINE
    x, y = np.meshgrid(t, t)
    if kind == "gauss":
        p = np.exp(-0.5 * (x**2 + y**2) / 0.9**2)
    elif kind == "astig":
        a = np.deg2rad(30)
        xr, yr = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
        p = np.exp(-0.5 * ((xr / 1.3) ** 2 + (yr / 0.7) ** 2))
    elif kind == "disc":
        # Anti-aliased disc of radius 1.8 px.
        p = np.clip((1.8 - np.hypot(x, y)) * FINE + 0.5, 0, 1)
    else:
        raise ValueError(kind)
    return p / p.sum()


def system_psf(optics: np.ndarray) -> np.ndarray:
    """Optics convolved with the 1-pixel box, on the fine grid (sums to 1)."""
    box = np.ones(FINE + 1)
    box[[0, -1]] = 0.5
    box /= box.sum()
    p = fftconvolve(optics, np.outer(box, box), mode="full")
    return p / p.sum()


def truth_at(system: np.ndarray, radius: int, oversample: int) -> np.ndarray:
    c = system.shape[0] // 2
    step = FINE // oversample
    sl = slice(c - radius * FINE, c + radius * FINE + 1, step)
    t = system[sl, sl]
    return t / t.sum()


def photograph(pattern, hom, system, rng, *, shape=PHOTO_SHAPE, dark=0.05, bright=0.85, paper=0.9, noise=0.005):
    """The photo of the printed pattern through ``hom``, blurred by ``system``, with noise."""
    h, w = shape
    hinv = np.linalg.inv(hom)
    ph, pw = pattern.shape
    scene = np.zeros((h * FINE, w * FINE))
    for oy in (-0.25, 0.25):  # 2 x 2 point samples per fine sample
        for ox in (-0.25, 0.25):
            yy, xx = np.mgrid[0:h * FINE, 0:w * FINE].astype(np.float64)
            xx = (xx + ox) / FINE
            yy = (yy + oy) / FINE
            d = hinv[2, 0] * xx + hinv[2, 1] * yy + hinv[2, 2]
            u = np.floor((hinv[0, 0] * xx + hinv[0, 1] * yy + hinv[0, 2]) / d + 0.5).astype(int)
            v = np.floor((hinv[1, 0] * xx + hinv[1, 1] * yy + hinv[1, 2]) / d + 0.5).astype(int)
            inside = (u >= 0) & (u < pw) & (v >= 0) & (v < ph)
            val = np.full(u.shape, paper)
            val[inside] = dark + (bright - dark) * pattern[v[inside], u[inside]]
            scene += val / 4
    bg = paper
    g = fftconvolve(scene - bg, system, mode="same")[::FINE, ::FINE] + bg
    return (g + noise * rng.standard_normal(g.shape)).astype(np.float32)


def corner_error(hom_est, hom_true, pattern_shape) -> float:
    ph, pw = pattern_shape
    pts = np.array([[-0.5, -0.5, 1], [pw - 0.5, -0.5, 1], [pw - 0.5, ph - 0.5, 1], [-0.5, ph - 0.5, 1]]).T
    a, b = hom_est @ pts, hom_true @ pts
    return float(np.max(np.hypot(*(a[:2] / a[2] - b[:2] / b[2]))))


def rel_l2(est, truth) -> float:
    return float(np.linalg.norm(est - truth) / np.linalg.norm(truth))


@pytest.fixture(scope="module")
def scenes():
    """Three seeded photos (Gaussian, astigmatic, defocus disc) of one pattern, and truths."""
    rng = np.random.default_rng(20261123)
    pattern = random_pattern(rng)
    hom = truth_homography(pattern.shape)
    out = {}
    for kind in ("gauss", "astig", "disc"):
        system = system_psf(optics_psf(kind))
        out[kind] = (photograph(pattern, hom, system, rng), system)
    return pattern, hom, out


@pytest.fixture(scope="module")
def estimates(scenes):
    """One estimate per photo at oversample 1 and one at oversample 2 (astigmatic)."""
    pattern, _, photos = scenes
    out = {kind: estimate_psf_from_pattern(photo, pattern, oversample=1, size=11)
           for kind, (photo, _) in photos.items()}
    out["astig2"] = estimate_psf_from_pattern(photos["astig"][0], pattern, oversample=2, size=11)
    return out


def test_outline_and_texture_registration_is_within_005_px_at_the_corners(scenes):
    pattern, hom, photos = scenes
    reg = register_pattern(photos["disc"][0], pattern)
    assert corner_error(reg.homography, hom, pattern.shape) < 0.05


@pytest.mark.parametrize("kind", ["gauss", "astig", "disc"])
def test_returned_homography_is_within_005_px_at_the_corners(scenes, estimates, kind):
    pattern, hom, _ = scenes
    assert corner_error(estimates[kind].homography, hom, pattern.shape) < 0.05


@pytest.mark.parametrize("kind", ["gauss", "astig", "disc"])
def test_psf_at_oversample_1_is_within_5_percent(scenes, estimates, kind):
    _, _, photos = scenes
    res = estimates[kind]
    assert res.psf.shape == (11, 11)
    assert rel_l2(res.psf, truth_at(photos[kind][1], 5, 1)) <= 0.05


def test_psf_at_oversample_2_is_within_8_percent(scenes, estimates):
    _, _, photos = scenes
    res, system = estimates["astig2"], photos["astig"][1]
    assert res.psf.shape == (21, 21)
    assert rel_l2(res.psf, truth_at(system, 5, 2)) <= 0.08


def test_psf_is_normalised_non_negative_and_centred(estimates):
    res = estimates["astig2"]
    k = res.psf.shape[0]
    yy, xx = np.mgrid[0:k, 0:k] - (k - 1) / 2
    assert res.psf.min() >= 0 and abs(float(res.psf.sum()) - 1) < 1e-5
    assert abs(float((res.psf * xx).sum())) / 2 < 0.03 and abs(float((res.psf * yy).sum())) / 2 < 0.03


def test_width_measures_match_the_truth(scenes, estimates):
    _, _, photos = scenes
    system, res = photos["astig"][1], estimates["astig2"]
    c = system.shape[0] // 2
    yy, xx = (np.mgrid[0:system.shape[0], 0:system.shape[1]] - c) / FINE
    cov = np.array([[(system * xx * xx).sum(), (system * xx * yy).sum()],
                    [(system * xx * yy).sum(), (system * yy * yy).sum()]])
    major, minor = np.sqrt(np.linalg.eigvalsh(cov))[::-1]
    assert abs(res.sigma_px[0] - major) < 0.05 * major
    assert abs(res.sigma_px[1] - minor) < 0.05 * minor
    assert abs(((res.angle_deg - 30) + 90) % 180 - 90) < 5


def test_rotated_pattern_is_found_in_its_orientation(scenes, rng):
    pattern, hom, photos = scenes
    photo, _ = photos["gauss"]
    # The same photo, described by the pattern file turned by 90 degrees.
    turned = np.rot90(pattern)
    ph, pw = pattern.shape
    # turned[r, c] = pattern[c, pw - 1 - r]: turned coords (c, r) -> pattern (pw - 1 - r, c).
    to_orig = np.array([[0, -1, pw - 1], [1, 0, 0], [0, 0, 1.0]])
    reg = register_pattern(photo, turned)
    assert corner_error(reg.homography, hom @ to_orig, turned.shape) < 0.05


def test_render_pattern_area_average_matches_fine_point_sampling(rng):
    pattern = random_pattern(rng, n=16, border=1)
    hom = truth_homography(pattern.shape, cell=3.3, centre=(30.0, 30.0))
    got = render_pattern(pattern, hom, (60, 60), oversample=2)
    ref = render_pattern(pattern, hom, (60, 60), oversample=2, supersample=32)
    assert np.max(np.abs(got - ref)) < 0.02
    assert abs(float(got.mean()) - float(ref.mean())) < 1e-3


def test_photo_without_the_pattern_is_a_calib_error(rng):
    flat = (0.5 + 0.005 * rng.standard_normal(PHOTO_SHAPE)).astype(np.float32)
    with pytest.raises(CalibError, match="not found"):
        estimate_psf_from_pattern(flat, random_pattern(rng))


def test_wrong_pattern_is_a_calib_error(scenes):
    _, _, photos = scenes
    other = random_pattern(np.random.default_rng(5))  # not the photographed one
    with pytest.raises(CalibError, match="not found"):
        estimate_psf_from_pattern(photos["gauss"][0], other)


def test_roi_outside_the_photo_is_a_calib_error(scenes):
    pattern, _, photos = scenes
    with pytest.raises(CalibError, match="ROI"):
        estimate_psf_from_pattern(photos["gauss"][0], pattern, roi=(300, 0, 100, 100))


def test_oversample_below_1_is_a_calib_error(scenes):
    pattern, _, photos = scenes
    with pytest.raises(CalibError, match="oversample"):
        estimate_psf_from_pattern(photos["gauss"][0], pattern, oversample=0)
