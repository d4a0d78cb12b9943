import math

import numpy as np
import pytest

from targets import make_layout, page_homography, render_layout


def _zoom_on(x_mm, y_mm, s, at_px):
    return np.array([[s, 0, at_px[0] - s * x_mm], [0, s, at_px[1] - s * y_mm], [0, 0, 1.0]])


@pytest.mark.parametrize("at_px", [(20.0, 20.0), (20.37, 19.81), (20.5, 20.5)])
def test_a_small_dot_matches_brute_force_pixel_integration(at_px):
    layout = make_layout("dots", dot_mm=0.5)
    dot = layout.dots[len(layout.dots) // 2]
    s = 2.6 / dot.diameter_mm  # a 2.6 px dot on black
    img = render_layout(layout, (41, 41), homography=_zoom_on(dot.x_mm, dot.y_mm, s, at_px)).astype(np.float64)
    # Independent truth: 200 x 200 point samples per pixel around the dot.
    k = 200
    r0, c0 = int(at_px[1]) - 3, int(at_px[0]) - 3
    off = (np.arange(k) + 0.5) / k - 0.5
    ys = (np.arange(r0, r0 + 8)[:, None] + off[None, :]).ravel()
    xs = (np.arange(c0, c0 + 8)[:, None] + off[None, :]).ravel()
    inside = ((xs[None, :] - at_px[0]) ** 2 + (ys[:, None] - at_px[1]) ** 2) <= 1.3 ** 2
    truth = inside.reshape(8, k, 8, k).mean(axis=(1, 3))
    assert np.abs(img[r0:r0 + 8, c0:c0 + 8] - truth).max() < 4e-3
    assert img.sum() == pytest.approx(math.pi * 1.3 ** 2, rel=1e-3)


def test_an_axis_aligned_edge_gives_the_exact_area_coverage():
    layout = make_layout("dots", dot_mm=0.5)
    region = layout.regions[0]
    # The black region's left edge at x = 10.3 px: pixel 10 is 20 % black, 80 % white.
    img = render_layout(layout, (5, 20), homography=_zoom_on(region.x0_mm, region.y0_mm + 5, 1.0, (10.3, 0.0)))
    assert img[2, 10] == pytest.approx(0.8, abs=1e-6)
    assert img[2, 9] == pytest.approx(1.0) and img[2, 11] == pytest.approx(0.0)


def test_sine_patch_keeps_its_mean_and_amplitude():
    layout = make_layout("stripes", dpi=300)
    p = min(layout.stripes, key=lambda q: q.frequency_cpmm + q.orientation_deg)  # vertical lines, lowest f
    s = 40.0 * p.frequency_cpmm  # 40 px per period
    cx, cy = p.centre_mm
    img = render_layout(layout, (9, 81), homography=_zoom_on(cx, cy, s, (40.0, 4.0)))[4].astype(np.float64)
    assert img.mean() == pytest.approx(p.mean, abs=0.01)
    expected_amp = p.amplitude * np.sinc(1 / 40)  # a pixel averages 1/40 of a period
    assert img.max() == pytest.approx(p.mean + expected_amp, abs=1e-3)


def test_default_homography_fills_the_shape_with_the_page():
    layout = make_layout("edges")
    h = page_homography(layout, (297, 210))
    corner = h @ np.array([layout.page_mm[0], layout.page_mm[1], 1.0])
    assert corner[:2] / corner[2] == pytest.approx((209.5, 296.5))
    assert np.array_equal(render_layout(layout, (297, 210)), render_layout(layout, (297, 210), homography=h))


def test_render_is_float32_reflectance():
    img = render_layout(make_layout("combo"), (200, 140))
    assert img.dtype == np.float32 and img.shape == (200, 140)
    assert img.min() >= -1e-6 and img.max() <= 1 + 1e-6
