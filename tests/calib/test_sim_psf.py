"""Ground-truth PSFs of the simulated camera: focus, field aberrations, colour, diffraction."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from calib import LENS_PROFILES, SensorModel, SimulatedCamera, psf_centroid_px
from calib._sim._pupil import airy_otf

from _simtools import TINY, moments, mtf50, mtf_x

DIST = 2.0


def _perfect(lens: str = "sharp-prime"):
    return dataclasses.replace(
        LENS_PROFILES[lens], spherical_um=0.0, coma_um=0.0, astigmatism_um=0.0,
        field_curvature_um=0.0, axial_colour_um=(0.0, 0.0, 0.0), lateral_colour=(0.0, 0.0, 0.0),
    )


def test_psf_is_sharpest_at_best_focus_and_widens_on_both_sides():
    cam = SimulatedCamera("sharp-prime", TINY)
    best = cam.best_focus_position(DIST)
    x, y = cam.centre.x_px, cam.centre.y_px
    m = {d: mtf50(cam.true_psf(x, y, "G", focus_position=best + d, object_distance_m=DIST, oversample=3))
         for d in (-30, -15, 0, 15, 30)}
    assert m[0] > m[15] > m[30]
    assert m[0] > m[-15] > m[-30]


def test_object_distance_moves_the_best_focus_position_by_the_thin_lens_law():
    cam = SimulatedCamera(_perfect(), TINY)
    f = cam.focal_length_mm
    for d in (1.0, 3.0):
        v = 1 / (1 / f - 1 / (d * 1000))
        assert cam.best_focus_position(d) == pytest.approx((v - f) / (cam.lens.focus_step_um * 1e-3), rel=1e-6)
        assert cam.focus_distance_m(cam.best_focus_position(d)) == pytest.approx(d, rel=1e-6)


def test_off_axis_psf_is_elongated_along_or_across_the_field_direction():
    cam = SimulatedCamera("soft-zoom", TINY)
    x, y = cam.centre.x_px + 90.0, cam.centre.y_px - 60.0  # field direction not along an axis
    best = cam.best_focus_position(DIST, field_xy=(x, y))
    psf = cam.true_psf(x, y, "G", focus_position=best + 8, object_distance_m=DIST, model="pupil", oversample=3)
    centroid, cov = moments(psf)
    radial = np.array([x - cam.centre.x_px, y - cam.centre.y_px])
    radial /= np.linalg.norm(radial)
    tangential = np.array([-radial[1], radial[0]])
    var_r, var_t = radial @ cov @ radial, tangential @ cov @ tangential
    cross = radial @ cov @ tangential
    assert abs(var_r - var_t) > 0.15 * (var_r + var_t) / 2  # clearly anisotropic
    assert abs(cross) < 0.1 * abs(var_r - var_t)  # principal axes along / across the field
    # coma displaces the centroid along the field direction, not across it
    assert abs(centroid @ radial) > 5 * abs(centroid @ tangential)


def test_corners_of_the_soft_zoom_are_much_softer_than_its_centre():
    cam = SimulatedCamera("soft-zoom", TINY)
    best = cam.best_focus_position(DIST)
    kw = dict(focus_position=best, object_distance_m=DIST)
    centre = mtf50(cam.true_psf(cam.centre.x_px, cam.centre.y_px, "G", oversample=3, **kw))
    corner = mtf50(cam.true_psf(0.0, 0.0, "G", oversample=3, **kw))
    assert corner < 0.5 * centre


def test_red_and_blue_shift_radially_with_opposite_signs_growing_with_field():
    cam = SimulatedCamera("soft-zoom", "small")
    best = cam.best_focus_position(DIST)
    kw = dict(focus_position=best, object_distance_m=DIST)
    direction = np.array([0.8, 0.6])
    shifts = []
    for frac in (0.3, 0.6, 0.9):
        x, y = np.array([cam.centre.x_px, cam.centre.y_px]) + direction * frac * cam.norm_radius_px
        g = cam.true_psf_centroid(x, y, "G", **kw)
        rows = []
        for ch in ("R", "B"):
            c = cam.true_psf_centroid(x, y, ch, **kw)
            d = np.array([c.x_px - g.x_px, c.y_px - g.y_px])
            rows.append((d @ direction, d @ np.array([-0.6, 0.8])))
        shifts.append(rows)
    s = np.array(shifts)  # (field, channel, radial/tangential)
    assert np.all(s[:, 0, 0] > 0) and np.all(s[:, 1, 0] < 0)
    assert np.all(np.diff(s[:, 0, 0]) > 0) and np.all(np.diff(s[:, 1, 0]) < 0)
    assert np.all(np.abs(s[:, :, 1]) < 0.03)


def test_true_psf_is_centred_on_greens_chief_ray():
    cam = SimulatedCamera("soft-zoom", TINY)
    kw = dict(focus_position=cam.best_focus_position(DIST), object_distance_m=DIST)
    x, y = 20.0, 150.0
    g = psf_centroid_px(cam.true_psf(x, y, "G", model="pupil", **kw))
    r = psf_centroid_px(cam.true_psf(x, y, "R", model="pupil", **kw))
    lca = cam.lateral_colour_px(x, y, "R")
    # R differs from G by the lateral-colour offset plus its own (small) coma difference
    assert r.x_px - g.x_px == pytest.approx(lca.x_px, abs=0.15)
    assert r.y_px - g.y_px == pytest.approx(lca.y_px, abs=0.15)


def test_in_focus_centre_psf_matches_the_analytic_airy_mtf():
    cam = SimulatedCamera(_perfect(), TINY)
    best = cam.best_focus_position(DIST)
    psf = cam.true_psf(cam.centre.x_px, cam.centre.y_px, "G", focus_position=best,
                       object_distance_m=DIST, oversample=5, size=201, model="pupil")
    f, m = mtf_x(psf, n=psf.shape[0])
    nu = f * 5  # cycles per pixel
    n_w = cam.f_number * cam.lens.image_distance_mm(best) / cam.focal_length_mm
    cutoff = TINY.pixel_pitch_um / (0.540 * n_w)
    ref = airy_otf(nu, cutoff) * np.abs(np.sinc(nu))  # optics x pixel aperture
    assert np.max(np.abs(m - ref)) < 0.01


def test_psf_width_is_the_airy_width_for_the_f_number_on_a_fine_pitch_sensor():
    fine = SensorModel(name="fine", width_px=64, height_px=64, pixel_pitch_um=0.25)
    for f_number in (2.8, 8.0):
        cam = SimulatedCamera(_perfect(), fine, f_number=f_number)
        best = cam.best_focus_position(DIST)
        psf = cam.true_psf(31.5, 31.5, "G", focus_position=best, object_distance_m=DIST, size=81, model="pupil")
        row = psf[40].astype(float)
        half = row.max() / 2
        above = np.nonzero(row >= half)[0]
        lo, hi = above[0], above[-1]
        left = lo - (row[lo] - half) / (row[lo] - row[lo - 1])
        right = hi + (row[hi] - half) / (row[hi] - row[hi + 1])
        n_w = f_number * cam.lens.image_distance_mm(best) / cam.focal_length_mm
        assert (right - left) * 0.25 == pytest.approx(1.029 * 0.540 * n_w, rel=0.05)


def test_strong_defocus_gives_the_geometric_blur_disc():
    cam = SimulatedCamera(_perfect(), TINY)
    best = cam.best_focus_position(DIST)
    steps = 200
    psf = cam.true_psf(cam.centre.x_px, cam.centre.y_px, "G", focus_position=best + steps,
                       object_distance_m=DIST, oversample=3, model="pupil")
    _, cov = moments(psf)
    n_w = cam.f_number * cam.lens.image_distance_mm(best + steps) / cam.focal_length_mm
    radius_px = steps * cam.lens.focus_step_um / (2 * n_w) / TINY.pixel_pitch_um
    # uniform disc: <x^2> = R^2 / 4; the pixel box adds 1/12 px^2
    expected = (radius_px**2 / 4 + 1 / 12) * 9
    assert cov[0, 0] == pytest.approx(expected, rel=0.1)


def test_psf_map_nodes_span_the_frame_and_centre_green_on_its_centroid():
    cam = SimulatedCamera("vintage", TINY)
    pmap = cam.true_psf_map(focus_position=cam.best_focus_position(DIST), object_distance_m=DIST, grid=(2, 3),
                            oversample=5)
    assert pmap.channels == ("R", "G", "B") and pmap.image_size == (240, 160)
    assert pmap.nodes_xy[0, 0].tolist() == [0.0, 0.0] and pmap.nodes_xy[-1, -1].tolist() == [239.0, 159.0]
    assert pmap.psf.shape[:3] == (3, 2, 3)
    for i in range(2):
        for j in range(3):
            c = psf_centroid_px(pmap.psf[1, i, j], oversample=5)
            assert math.hypot(c.x_px, c.y_px) < 0.02
    assert np.allclose(pmap.psf.sum(axis=(-1, -2)), 1.0, atol=1e-5)


def test_psfs_computed_in_a_parallel_batch_equal_those_computed_one_by_one():
    batch = SimulatedCamera("soft-zoom", TINY)
    single = SimulatedCamera("soft-zoom", TINY)
    focus = batch.best_focus_position(DIST) + 6
    points = [(x, y, c) for x, y in ((0.0, 0.0), (120.0, 80.0), (239.0, 40.0), (60.0, 159.0)) for c in "RGB"]
    batch._psf_many([(x, y, "RGB".index(c), focus, DIST, 3, None) for x, y, c in points])
    for x, y, c in points:
        kw = dict(focus_position=focus, object_distance_m=DIST, model="pupil", oversample=3)
        assert np.array_equal(batch.true_psf(x, y, c, **kw), single.true_psf(x, y, c, **kw))
