"""Noise-chart PSF maps of analyze_images against the simulated camera's true PSFs
(relative L2 on the sensor grid, green centred by its centroid, red and blue keeping their
offsets from green), and the registration refined on the pattern against the true geometry.

The fast tests use a 480x320 sensor; the slow ones the 1200x800 ``small`` preset (the
figures of bench/bench_noise_chart.py). The chart overfills the frame as SimCamera frames
a noise chart, its cells image to 2.3 pixels (a non-integer size, so cell edges fall at
every sub-pixel phase), and the lens's distortion is switched off where PSFs are compared
(the registration test keeps it). On the 480x320 sensor every node is an edge or corner
node, read off a crop that cannot be centred on it. The shots are rendered at 5 scene
samples per pixel, not the solve's own 3, so the tests see the discretisation a real
photo has (at 3 the solve sharpened a sharp PSF without it showing).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import calib
import targets
from calib import SensorModel, SimulatedCamera
from calib._noise_chart import image_to_chart_mm, refine_registration
from calib._register import register_chart

FILL = 1.3
CELL_PX = 2.3
SMALL = SensorModel(name="t", width_px=480, height_px=320, pixel_pitch_um=5.0)


def _camera(sensor, *, distortion: bool) -> SimulatedCamera:
    lens = calib.LENS_PROFILES["sharp-prime"]
    if not distortion:
        lens = dataclasses.replace(lens, distortion_k1=0.0, distortion_k2=0.0)
    return SimulatedCamera(lens, sensor, seed=5, render_oversample=5)


def _shoot(cam: SimulatedCamera, defocus: int):
    probe = targets.make_layout("noise", paper="300x200mm")
    hom = cam.chart_homography(probe, fill=FILL)
    px_per_mm = float(np.hypot(hom[0, 0], hom[1, 0]) / hom[2, 2])
    dist = cam.chart_distance_m(probe, fill=FILL)
    layout = targets.make_layout("noise", paper="300x200mm", pixel_pitch_um=cam.sensor.pixel_pitch_um,
                                 focal_mm=cam.focal_length_mm, distance_m=dist, cell_mm=CELL_PX / px_per_mm)
    fp = round(cam.best_focus_position(dist)) + defocus
    shot = cam.shoot(layout, focus_position=fp, object_distance_m=dist, fill=FILL)
    rgb = shot.rgb_linear
    img = calib.LinearImage(rgb, ("R", "G", "B"), 0, 1, rgb >= 0.999, shot.metadata)
    return img, layout, shot, fp, dist


def _errors(cam, res, fp, dist, grid) -> np.ndarray:
    """(C, ny, nx) relative L2 error of the PSF map, on the sensor grid, against the true map."""
    est = res.psf_map.on_sensor_grid().psf
    truth = cam.true_psf_map(focus_position=fp, object_distance_m=dist, grid=grid, size=est.shape[-1]).psf
    c, ny, nx = est.shape[:3]
    d = (est - truth).reshape(c, ny, nx, -1)
    return np.linalg.norm(d, axis=-1) / np.linalg.norm(truth.reshape(c, ny, nx, -1), axis=-1)


@pytest.fixture(scope="module")
def small_shot():
    cam = _camera(SMALL, distortion=False)
    return cam, *_shoot(cam, 0)


@pytest.fixture(scope="module")
def small_in_focus(small_shot):
    cam, img, layout, _shot, fp, dist = small_shot
    res = calib.analyze_images([img], layout, grid=(2, 3))
    return cam, res, _errors(cam, res, fp, dist, (2, 3))


@pytest.fixture(scope="module")
def damaged(small_shot):
    """The 2x3 analysis of the shot with specular hot spots (5 % of the pixels clipped)
    under the left node column and heavy noise under the right one."""
    _cam, img, layout, *_ = small_shot
    rng = np.random.default_rng(7)
    data, sat = img.data.copy(), img.saturated.copy()
    h, w = data.shape[:2]
    hot = np.zeros((h, w), bool)
    hot[:, : w // 3] = rng.random((h, w // 3)) < 0.05
    data[hot], sat[hot] = 1.0, True
    right = np.s_[:, 2 * w // 3:]
    data[right] += rng.normal(0.0, 0.15, data[right].shape).astype(data.dtype)
    bad = dataclasses.replace(img, data=data, saturated=sat)
    return calib.analyze_images([bad], layout, grid=(2, 3)).psf_map.flags


def test_noise_chart_analysis_measures_every_node(small_in_focus):
    res = small_in_focus[1]
    assert res.method == "noise"
    assert not (res.psf_map.flags & calib.FLAG_FILLED).any()


def test_noise_chart_green_psf_is_within_6_percent_of_the_truth_at_the_frame_edges(small_in_focus):
    # A 2x3 grid on 480x320 has only edge and corner nodes, read off crops centred up to
    # 80 px inside the frame. Measured 2.9 % median, 4.5 % worst; 9.2 / 11.7 % before the
    # fine cell's box was put back (the estimate too sharp). The full frame is the slow test's.
    err = small_in_focus[2][1]
    assert np.median(err) < 0.06 and err.max() < 0.08


def test_noise_chart_red_and_blue_psfs_keep_their_offset_from_green(small_in_focus):
    # Red and blue are compared with the truth at their lateral-colour offset from green;
    # blue changes fastest across an edge crop (measured R 2.9 %, B 27.6 % median).
    err = small_in_focus[2]
    assert np.median(err[0]) < 0.08 and np.median(err[2]) < 0.35


def test_noise_chart_map_is_stored_at_three_samples_per_pixel(small_in_focus):
    pm = small_in_focus[1].psf_map
    assert pm.sampling == 3
    assert pm.kernel_size == 3 * (pm.on_sensor_grid().kernel_size - 1) + 1


def test_nodes_whose_crop_had_clipped_pixels_are_flagged_saturated(damaged):
    sat = (damaged & calib.FLAG_SATURATED) > 0
    assert sat[:, :, 0].all() and not sat[:, :, 1:].any()


def test_nodes_whose_fit_is_poor_are_flagged_noisy(damaged):
    noisy = (damaged & calib.FLAG_NOISY) > 0
    assert noisy[:, :, 2].all() and not noisy[:, :, :2].any()


def test_pattern_refines_the_marker_registration_to_a_tenth_of_a_pixel():
    # With distortion: markers alone give a homography pixels off at the frame's edges.
    cam = _camera(SMALL, distortion=True)
    img, layout, shot, _fp, _dist = _shoot(cam, 0)
    green = img.data[..., 1]
    markers_only = register_chart(green, layout)
    refined = refine_registration(green, layout, markers_only)
    w, h = cam.image_size
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 9), np.linspace(0, h - 1, 6))
    pts = np.stack([gx.ravel(), gy.ravel()], -1)
    hinv = np.linalg.inv(shot.homography)
    ideal = cam.distortion.undistort(pts)
    v = np.c_[ideal, np.ones(len(ideal))] @ hinv.T
    mm = v[:, :2] / v[:, 2:]  # the chart point the lens images at each pixel
    before = np.hypot(*(markers_only.chart_to_image(mm) - pts).T)
    after = np.hypot(*(refined.chart_to_image(mm) - pts).T)
    assert after.max() < 0.1 < before.max()
    assert np.allclose(image_to_chart_mm(refined, refined.chart_to_image(mm)), mm, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("defocus, median_max", [(0, 0.05), (15, 0.05)])
def test_full_frame_noise_chart_psf_map_median_error_per_channel(defocus, median_max):
    # The goal is 5 % per channel. Measured with this camera's noise (seed 5,
    # distortion off, rendered at 5 samples/px) R/G/B 3.7/2.9/3.3 % in focus (worst node
    # 7.9/3.6/5.9 %) and 4.8/2.6/3.5 % defocused +15 (rms 1.1 px; worst 7.6/6.8/7.3 %).
    # Without the fine cell's box put back, green in focus read 6.9 % (too sharp).
    cam = _camera("small", distortion=False)
    img, layout, _shot, fp, dist = _shoot(cam, defocus)
    res = calib.analyze_images([img], layout, grid=(6, 9))
    err = _errors(cam, res, fp, dist, (6, 9))
    assert (np.median(err, axis=(1, 2)) < median_max).all() and err[1].max() < 0.1
