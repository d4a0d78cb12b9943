"""Restoring with the map that the analysis estimates from simulated dots-chart captures,
against restoring with the simulated lens's true map (slow: renders a chart, analyses it)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import zoom

import calib
import restore
import targets

FILL = 1.3  # the dots reach the frame corners; the chart's inner markers stay in view
DEFOCUS = 16  # focus steps behind best focus: corners much softer than the centre


def _psnr(a: np.ndarray, b: np.ndarray, border: int = 16) -> float:
    inner = (slice(border, -border), slice(border, -border))
    return float(10 * np.log10(1.0 / np.mean((a[inner].astype(np.float64) - b[inner]) ** 2)))


@pytest.mark.slow
def test_restore_with_the_analysed_map_is_within_0_7_db_of_the_true_map():
    from skimage import data

    cam = calib.SimulatedCamera("soft-zoom", "small", seed=1, render_oversample=3)
    probe = targets.make_layout("dots", paper="300x200mm")
    dist = cam.chart_distance_m(probe, fill=FILL)
    layout = targets.make_layout("dots", paper="300x200mm", pixel_pitch_um=cam.sensor.pixel_pitch_um,
                                 focal_mm=cam.focal_length_mm, distance_m=dist)
    focus = round(cam.best_focus_position(dist)) + DEFOCUS
    chart = cam.shoot(layout, focus_position=focus, object_distance_m=dist, fill=FILL)
    capture = calib.LinearImage(chart.rgb_linear, ("R", "G", "B"), 0, 1, chart.rgb_linear >= 0.999, chart.metadata)
    estimated = calib.analyze_images([capture], layout, grid=(6, 9)).psf_map
    true = cam.true_psf_map(focus_position=focus, object_distance_m=dist, grid=(6, 9),
                            size=estimated.kernel_size)

    w, h = cam.image_size
    rgb = data.astronaut().astype(np.float32) / 255.0
    scene = (0.05 + 0.85 * np.clip(zoom(rgb, (h / 512, w / 512, 1), order=1), 0, 1)).astype(np.float32)
    photo = cam.shoot(scene, focus_position=focus, object_distance_m=dist)
    # The sharp scene as this sensor records it: vignetting and exposure, no blur, no noise.
    sharp = scene * cam.relative_illumination(np.arange(w)[None, :], np.arange(h)[:, None])[..., None]
    inner = (slice(40, -40), slice(40, -40))
    sharp *= float(photo.rgb_ideal[inner].sum() / sharp[inner].sum())
    obs = photo.rgb_linear.astype(np.float32)

    with_true = _psnr(restore.restore_image(obs, true).image, sharp)
    with_estimate = _psnr(restore.restore_image(obs, estimated).image, sharp)
    assert with_true > _psnr(obs, sharp) + 1.0  # the restore does restore
    assert with_estimate >= with_true - 0.7
