"""Rendering through the spatially varying PSF describes the same operator as true_psf."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import targets

from calib import LENS_PROFILES, CalibError, SimulatedCamera

from _simtools import TINY

DIST = 2.0


def _point_scene(x: int, y: int, s: int = 1, sub: tuple[int, int] = (0, 0)) -> np.ndarray:
    scene = np.zeros((TINY.height_px * s, TINY.width_px * s, 3), np.float32)
    scene[y * s + (s - 1) // 2 + sub[1], x * s + (s - 1) // 2 + sub[0]] = 1.0
    return scene


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("lens", ["soft-zoom", "vintage"])
def test_rendered_point_source_equals_the_true_psf_between_nodes(lens):
    cam = SimulatedCamera(lens, TINY, render_grid=(5, 7))
    focus = round(cam.best_focus_position(DIST)) + 5
    x, y = 187, 41  # between render nodes, off axis
    irr, _ = cam.render_linear(_point_scene(x, y), focus_position=focus, object_distance_m=DIST)
    vig = float(cam.relative_illumination(x, y))
    for c, ch in enumerate("RGB"):
        truth = cam.true_psf(x, y, ch, focus_position=focus, object_distance_m=DIST)
        k = truth.shape[0] // 2
        seen = irr[y - k : y + k + 1, x - k : x + k + 1, c] / vig
        assert _rel_l2(seen, truth) < 0.01


def test_rendered_sub_pixel_point_equals_the_oversampled_true_psf():
    cam = SimulatedCamera("soft-zoom", TINY, render_grid=(5, 7))
    focus = round(cam.best_focus_position(DIST))
    x, y, s = 60, 120, 3
    # one fine sample right of the pixel centre: the point is at x + 1/3
    irr, _ = cam.render_linear(_point_scene(x, y, s, sub=(1, 0)), focus_position=focus, object_distance_m=DIST)
    truth = cam.true_psf(x + 1 / 3, y, "G", focus_position=focus, object_distance_m=DIST, oversample=s)
    k = truth.shape[0] // 2
    # pixel x + j sits at offset j - 1/3 from the point: oversampled index k + 3 j - 1
    picked = truth[k % s :: s, (k - 1) % s :: s]
    centre_row, centre_col = k // s, (k - 1) // s
    seen = irr[y - centre_row : y - centre_row + picked.shape[0], x - centre_col : x - centre_col + picked.shape[1], 1]
    seen = seen / float(cam.relative_illumination(x, y))
    assert _rel_l2(seen, picked) < 0.01  # both: flux per pixel of a unit point


def test_default_render_grid_stays_close_to_the_pupil_model_between_nodes():
    cam = SimulatedCamera("sharp-prime", TINY)
    kw = dict(focus_position=cam.best_focus_position(DIST), object_distance_m=DIST)
    for x, y in ((187.0, 41.0), (31.0, 133.0)):
        a = cam.true_psf(x, y, "G", model="rendered", size=15, **kw)
        b = cam.true_psf(x, y, "G", model="pupil", size=15, **kw)
        assert _rel_l2(a, b) < 0.03


def test_soft_lens_renders_on_a_denser_grid_that_stays_close_to_the_pupil_model():
    cam = SimulatedCamera("soft-zoom", "small")
    kw = dict(focus_position=round(cam.best_focus_position(DIST)), object_distance_m=DIST)
    ny, nx = cam.render_grid_for(**kw)
    assert (ny, nx) > (9, 13)  # at 9x13 the blend between nodes was 16 % off the lens
    w, h = cam.image_size
    dx, dy = (w - 1) / (nx - 1), (h - 1) / (ny - 1)
    for x, y in ((dx / 2, dy / 2), (w / 2 + dx / 2, dy / 2), (w - 1 - dx / 2, h / 2 + dy / 2)):
        for ch in "RGB":
            a = cam.true_psf(x, y, ch, model="rendered", oversample=3, size=45, **kw)
            b = cam.true_psf(x, y, ch, model="pupil", oversample=3, size=45, **kw)
            assert _rel_l2(a, b) < 0.07


def test_sharp_lens_keeps_the_coarse_render_grid():
    cam = SimulatedCamera("sharp-prime", "small")
    assert cam.render_grid_for(focus_position=round(cam.best_focus_position(DIST)), object_distance_m=DIST) == (9, 13)


def test_render_grid_given_to_the_camera_is_used_at_every_setting():
    cam = SimulatedCamera("soft-zoom", "small", render_grid=(5, 7))
    assert cam.render_grid_for(focus_position=100, object_distance_m=DIST) == (5, 7)


def test_flat_scene_renders_to_the_relative_illumination():
    cam = SimulatedCamera("vintage", TINY, render_grid=(3, 4))
    flat = np.ones((TINY.height_px, TINY.width_px, 3), np.float32)
    irr, _ = cam.render_linear(flat, focus_position=round(cam.best_focus_position(DIST)), object_distance_m=DIST)
    ys, xs = np.mgrid[0 : TINY.height_px, 0 : TINY.width_px]
    vig = cam.relative_illumination(xs, ys)
    assert vig.min() < 0.8  # the test lens does vignette
    # vignetting varies slowly, so the blur leaves it (almost) unchanged
    assert np.max(np.abs(irr[..., 1] / vig - 1)) < 0.01


def test_image_scene_of_the_wrong_size_is_refused_with_a_clear_message():
    from calib import CalibError

    cam = SimulatedCamera("sharp-prime", TINY)
    with pytest.raises(CalibError, match="expected \\(160, 240, 3\\)"):
        cam.render_linear(np.zeros((100, 100, 3), np.float32), focus_position=0, object_distance_m=DIST)


def test_distortion_helpers_invert_each_other_and_push_corners_as_k1_says():
    cam = SimulatedCamera("soft-zoom", TINY, render_grid=(5, 7))
    rng = np.random.default_rng(3)
    pts = rng.uniform([0, 0], [239, 159], size=(50, 2))
    d = cam.distortion
    assert np.allclose(d.undistort(d.distort(pts)), pts, atol=1e-6)
    corner = d.distort(np.array([[0.0, 0.0]]))[0]
    # barrel (k1 < 0): the corner image moves toward the centre
    assert corner[0] > 0 and corner[1] > 0
    assert LENS_PROFILES["soft-zoom"].distortion_k1 < 0


def test_lens_without_lateral_colour_renders_grey_points_grey():
    lens = dataclasses.replace(LENS_PROFILES["sharp-prime"], lateral_colour=(0.0, 0.0, 0.0),
                               axial_colour_um=(0.0, 0.0, 0.0))
    cam = SimulatedCamera(lens, TINY, render_grid=(5, 7))
    irr, _ = cam.render_linear(_point_scene(200, 30), focus_position=round(cam.best_focus_position(DIST)),
                               object_distance_m=DIST)
    win = irr[20:41, 190:211]
    cents = [(win[..., c] * np.arange(21)[None, :]).sum() / win[..., c].sum() for c in range(3)]
    assert max(cents) - min(cents) < 0.05


def test_a_plane_shared_by_the_channels_renders_like_three_equal_planes(rng):
    from calib._sim._render import render_varying

    plane = rng.uniform(0, 1, (1, 90, 130)).astype(np.float32)
    kernels = {c: rng.uniform(0, 1, (2, 3, 2 * c + 5, 2 * c + 5)).astype(np.float32) for c in range(3)}
    args = (np.arange(130.0), np.arange(90.0), np.linspace(0, 129, 3), np.linspace(0, 89, 2),
            lambda c, i, j: kernels[c][i, j], 3)
    shared = render_varying(plane, *args)
    separate = render_varying(np.repeat(plane, 3, axis=0), *args)
    assert np.allclose(shared, separate, rtol=0, atol=1e-5)
    # a kernel of one centred sample leaves the scene as it is
    delta = np.zeros((1, 1), np.float32) + 1
    same = render_varying(plane, *args[:4], lambda c, i, j: delta, 1)
    assert np.allclose(same[0], plane[0], atol=1e-5)


def test_dots_field_fill_makes_the_dots_field_overfill_the_frame_by_the_factor():
    cam = SimulatedCamera("sharp-prime", "small")
    layout = targets.make_layout("dots", paper="300x200mm")
    hom = cam.chart_homography(layout, fill=cam.dots_field_fill(layout, overfill=1.1))
    mm = np.array([(d.x_mm, d.y_mm, 1.0) for d in layout.dots]) @ hom.T
    px = mm[:, :2] / mm[:, 2:]
    w, h = cam.image_size
    span = min(np.ptp(px[:, 0]) / w, np.ptp(px[:, 1]) / h)  # the tighter axis
    assert span == pytest.approx(1.1, rel=1e-3)


def test_chart_distance_gives_the_thin_lens_magnification_of_the_fill():
    cam = SimulatedCamera("sharp-prime", "small")
    layout = targets.make_layout("dots", paper="300x200mm")
    hom = cam.chart_homography(layout, fill=0.9)
    d_mm = cam.chart_distance_m(layout, fill=0.9) * 1000
    f = cam.focal_length_mm
    px_per_mm = f / (d_mm - f) * 1000 / cam.sensor.pixel_pitch_um
    assert px_per_mm == pytest.approx(float(np.hypot(hom[0, 0], hom[1, 0])), rel=1e-9)


def test_true_dot_positions_keep_the_framed_dots_with_their_recorded_centroids():
    cam = SimulatedCamera("soft-zoom", TINY, seed=2, render_oversample=3)
    layout = targets.make_layout("dots", paper="300x200mm")
    shot = cam.shoot(layout, focus_position=round(cam.best_focus_position(DIST)), object_distance_m=DIST,
                     fill=cam.dots_field_fill(layout))
    dots = cam.true_dot_positions(layout, shot)
    w, h = cam.image_size
    assert 0 < len(dots.chart_mm) < len(layout.dots)  # the field overfills the frame
    assert dots.chief_ray_px.min() >= 0 and dots.chief_ray_px[:, 0].max() <= w - 1
    assert dots.chief_ray_px[:, 1].max() <= h - 1
    # each recorded position is its green PSF's centroid, off the chief ray by the coma
    k = int(np.argmax(np.hypot(*(dots.chief_ray_px - [(w - 1) / 2, (h - 1) / 2]).T)))
    g = cam.true_psf_centroid(*dots.chief_ray_px[k], "G", focus_position=shot.focus_position,
                              object_distance_m=DIST)
    np.testing.assert_allclose(dots.recorded_px[k], [g.x_px, g.y_px])


def test_true_dot_positions_of_a_shot_without_a_chart_are_refused():
    cam = SimulatedCamera("sharp-prime", TINY)
    shot = cam.shoot(_point_scene(10, 10), focus_position=300, object_distance_m=DIST)
    with pytest.raises(CalibError, match="not of a chart"):
        cam.true_dot_positions(targets.make_layout("dots", paper="300x200mm"), shot)
