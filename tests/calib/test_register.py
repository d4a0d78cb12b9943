"""Registration on rendered charts (real targets.render_layout, real ArUco detection)."""
from __future__ import annotations

import numpy as np
import pytest

import targets
from calib import CalibError
from calib._register import register_chart

from _simtools import shoot_full_frame_dots


@pytest.fixture(scope="module")
def dots_chart():
    layout = targets.make_layout("dots", paper="A4", landscape=True, pixel_pitch_um=5.0,
                                 focal_mm=50.0, distance_m=3.14)
    hom = np.array([[3.2, 0.01, 110.0], [-0.01, 3.2, 55.0], [0.0, 0.0, 1.0]])
    image = targets.render_layout(layout, (800, 1200), homography=hom, supersample=4)
    return layout, hom, image.astype(np.float32)


def test_registration_of_an_ideal_rendering_places_dots_within_0_1_px(dots_chart):
    layout, hom, image = dots_chart
    reg = register_chart(image, layout)
    mm = np.array([(d.x_mm, d.y_mm) for d in layout.dots])
    v = np.c_[mm, np.ones(len(mm))] @ hom.T
    truth = v[:, :2] / v[:, 2:]
    err = np.hypot(*(reg.chart_to_image(mm) - truth).T)
    assert np.median(err) < 0.1


def test_photo_without_the_chart_names_the_marker_count(dots_chart):
    layout, _, image = dots_chart
    blank = np.full_like(image, 0.5)
    with pytest.raises(CalibError, match=r"chart not found in blank.tif: 0 of \d+ markers detected"):
        register_chart(blank, layout, source="blank.tif", layout_name="dots.json")


def test_dot_centroids_find_known_centres_and_reject_windows_leaving_the_frame(rng):
    from calib._register import measure_dot_centroids  # noqa: PLC0415

    yy, xx = np.mgrid[:120, :200]
    centres = np.array([(20 + 20 * i + rng.uniform(-0.5, 0.5), 30 + 30 * j + rng.uniform(-0.5, 0.5))
                        for i in range(9) for j in range(3)])
    image = sum(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.9**2)) for cx, cy in centres)
    image = 0.05 + 0.5 * image + rng.standard_normal(image.shape) * 0.002
    guesses = np.vstack([centres + rng.uniform(-0.7, 0.7, centres.shape), [[3.0, 60.0]]])
    found, ok = measure_dot_centroids(image.astype(np.float32), guesses, half_px=6)
    assert ok[:-1].all() and not ok[-1]
    # (a thresholded moment of a point-sampled 0.9 px blob is biased by up to ~0.03 px)
    assert np.abs(found[:-1] - centres).max() < 0.05


def test_dot_windows_report_each_dots_rms_radius(rng):
    # the geometry fit weighs wide dots less: their windows cut off more light
    from calib._register import _measure_dots  # noqa: PLC0415

    yy, xx = np.mgrid[:80, :160]
    centres = np.array([(20.0 + 40 * i + rng.uniform(-0.5, 0.5), 40.0 + rng.uniform(-0.5, 0.5)) for i in range(4)])
    sigmas = [0.8, 1.2, 1.6, 2.0]
    image = 0.05 + sum(0.5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sg**2))
                       for (cx, cy), sg in zip(centres, sigmas))
    _, ok, rms = _measure_dots(image.astype(np.float32), centres, half_px=12)
    assert ok.all()
    assert np.allclose(rms, sigmas, rtol=0.1)


def test_halo_of_the_markers_quiet_zones_does_not_bend_the_fit(dots_chart):
    # A lens with a faint wide halo spreads the white quiet zones (and the paper around
    # the field) over their nearest dots; those once pulled centroids by up to 3 px and
    # the fit by 0.22 px here (measured now: 0.035 px, residual 0.06 px rms).
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    layout, hom, image = dots_chart
    halo = 0.97 * gaussian_filter(image, 0.7) + 0.03 * gaussian_filter(image, 6.0)
    reg = register_chart(halo.astype(np.float32), layout)
    mm = np.array([(d.x_mm, d.y_mm) for d in layout.dots])
    v = np.c_[mm, np.ones(len(mm))] @ hom.T
    err = np.hypot(*(reg.chart_to_image(mm) - v[:, :2] / v[:, 2:]).T)
    assert err.max() < 0.05 and reg.residual_rms_px < 0.08


@pytest.mark.slow
def test_geometry_of_a_soft_defocused_lens_predicts_its_dot_positions_within_0_1_px():
    # Soft-zoom 15 steps past best focus: comatic corner PSFs keep light 11-14 px out.
    # A dot is recorded where its green PSF's centroid lies; windows of 0.4 of the pitch
    # cut that light off (0.163 px at the worst dot), half the pitch keeps it (0.099).
    from calib import SimulatedCamera  # noqa: PLC0415

    cam = SimulatedCamera("soft-zoom", "small", seed=1, render_oversample=3)
    layout, _fp, _dist, shot = shoot_full_frame_dots(cam, 15)
    reg = register_chart(shot.rgb_linear[..., 1], layout)
    dots = cam.true_dot_positions(layout, shot)
    err = np.hypot(*(reg.chart_to_image(dots.chart_mm) - dots.recorded_px).T)
    assert err.max() < 0.1
