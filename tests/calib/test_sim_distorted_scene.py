"""The simulator's chart scene through radial distortion: area-sampled, not resampled."""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
import targets

from calib._sim import SENSOR_PRESETS, SimulatedCamera
from calib._sim._camera import _distorted_scene, _element_boxes, _layout_near

S = 3  # scene samples per pixel, as the benches render


@pytest.fixture(scope="module")
def setup():
    tiny = dataclasses.replace(SENSOR_PRESETS["small"], name="tiny", width_px=240, height_px=160)
    cam = SimulatedCamera("soft-zoom", tiny, seed=3, render_oversample=S)  # k1 -0.03, k2 0.008
    probe = targets.make_layout("noise", paper="300x200mm")
    px_per_mm = float(np.hypot(*cam.chart_homography(probe, fill=1.3)[:2, 0]))
    layout = targets.make_layout("noise", paper="300x200mm", cell_mm=2.3 / px_per_mm, seed=2)
    return cam, layout, cam.chart_homography(layout, fill=1.3)


def _fine_reference(cam, layout, hmat, cx, cy, k=8):
    """An independent truth: a canvas k times finer, linearly remapped, then box-averaged k x k."""
    sk = S * k
    fx = (np.arange(len(cx) * k) - (k - 1) / 2) / sk + cx[0]
    fy = (np.arange(len(cy) * k) - (k - 1) / 2) / sk + cy[0]
    gx, gy = np.meshgrid(fx, fy)
    ideal = cam.distortion.undistort(np.stack([gx.ravel(), gy.ravel()], -1))
    ix, iy = ideal[:, 0].reshape(gx.shape), ideal[:, 1].reshape(gx.shape)
    x0, y0 = math.floor(ix.min() - 2), math.floor(iy.min() - 2)
    shape = ((math.ceil(iy.max() + 2) - y0) * sk + 1, (math.ceil(ix.max() + 2) - x0) * sk + 1)
    to_canvas = np.array([[sk, 0, -sk * x0], [0, sk, -sk * y0], [0, 0, 1.0]])
    canvas = targets.render_layout(layout, shape, homography=to_canvas @ hmat, supersample=4)
    out = cv2.remap(canvas, ((ix - x0) * sk).astype(np.float32), ((iy - y0) * sk).astype(np.float32),
                    interpolation=cv2.INTER_LINEAR)
    return out.reshape(len(cy), k, len(cx), k).mean(axis=(1, 3))


def test_distorted_noise_scene_matches_a_fine_area_sampled_reference_in_the_corner(setup):
    cam, layout, hmat = setup
    c = (np.arange(30 * S) - (S - 1) / 2) / S
    cx, cy = c + 2.0, c + 2.0  # a 30-pixel crop at the frame's corner, where distortion bends most
    got = _distorted_scene(targets.render_layout, layout, hmat, cam.distortion, cx, cy, supersample=2)
    ref = _fine_reference(cam, layout, hmat, cx, cy)
    # resampling the undistorted render with cubic interpolation missed by ~0.04 rms here
    assert np.sqrt(np.mean((got - ref) ** 2)) < 0.006


def test_chart_scene_tiles_agree_with_one_render_when_distortion_vanishes(setup):
    cam, layout, hmat = setup
    flat = SimulatedCamera(dataclasses.replace(cam.lens, distortion_k1=1e-12, distortion_k2=0.0), cam.sensor,
                           seed=3, render_oversample=S)
    straight = SimulatedCamera(dataclasses.replace(cam.lens, distortion_k1=0.0, distortion_k2=0.0), cam.sensor,
                               seed=3, render_oversample=S)
    got = flat._chart_scene(layout, hmat, S, 4, supersample=2)
    want = straight._chart_scene(layout, hmat, S, 4, supersample=2)
    assert np.abs(got - want).max() < 1e-3


@pytest.mark.parametrize("kind", ["dots", "combo"])
def test_culling_a_tile_to_its_elements_leaves_its_render_unchanged(setup, kind):
    cam = setup[0]
    layout = targets.make_layout(kind, paper="300x200mm")
    hmat = cam.chart_homography(layout, fill=1.3, tilt_deg=(10.0, 5.0), roll_deg=3.0)
    to_tile = np.array([[S, 0, -S * 37.0], [0, S, -S * 21.0], [0, 0, 1.0]]) @ hmat  # 40x30 px from (37, 21)
    near = _layout_near(layout, _element_boxes(layout), np.linalg.inv(to_tile), 40 * S, 30 * S)
    assert len(near.dots) < len(layout.dots)
    full = targets.render_layout(layout, (30 * S, 40 * S), homography=to_tile, supersample=2)
    culled = targets.render_layout(near, (30 * S, 40 * S), homography=to_tile, supersample=2)
    assert full.min() < full.max()  # the tile shows part of the chart
    np.testing.assert_array_equal(culled, full)
