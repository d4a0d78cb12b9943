"""The simulated sensor: noise statistics, mosaic, levels, output files."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tifffile

from calib import LENS_PROFILES, SimulatedCamera, load_linear

from _simtools import TINY

FLAT_LENS = dataclasses.replace(LENS_PROFILES["sharp-prime"], half_field_deg=0.0, mechanical_vignetting=0.0)


@pytest.mark.parametrize("iso", [100.0, 800.0])
def test_noise_variance_grows_with_the_mean_as_the_noise_model_says(rng, iso):
    cam = SimulatedCamera(FLAT_LENS, TINY, render_grid=(2, 3))
    model = cam.noise_model(iso)
    for level in (0.02, 0.2, 0.6):
        flat = np.full((TINY.height_px, TINY.width_px, 3), level, np.float32)
        shot = cam.shoot(flat, focus_position=0, object_distance_m=1e9, iso=iso, rng=rng)
        for c in range(3):
            data = shot.rgb_linear[10:-10, 10:-10, c].astype(np.float64)
            expected = model.read_noise[c] ** 2 + model.gain[c] * data.mean()
            assert data.var() == pytest.approx(expected, rel=0.05)


def test_exposure_scales_the_mean_and_clips_at_the_white_level(rng):
    cam = SimulatedCamera(FLAT_LENS, TINY, render_grid=(2, 3))
    flat = np.full((TINY.height_px, TINY.width_px, 3), 0.5, np.float32)
    auto = cam.shoot(flat, focus_position=0, object_distance_m=1e9, rng=rng)
    assert auto.rgb_linear.mean() == pytest.approx(0.5 * 0.85, rel=0.01)
    over = cam.shoot(flat, focus_position=0, object_distance_m=1e9, rng=rng,
                     exposure_s=4 * auto.metadata.exposure_s)
    assert over.raw.max() == TINY.white_level_dn and np.all(over.rgb_linear <= 1.0)


def test_dark_frame_sits_at_the_black_level(rng):
    cam = SimulatedCamera(FLAT_LENS, TINY, render_grid=(2, 3))
    shot = cam.shoot(np.zeros((160, 240, 3), np.float32), focus_position=0, object_distance_m=1e9, rng=rng)
    assert shot.raw.mean() == pytest.approx(TINY.black_level_dn, abs=0.05)


def test_raw_is_the_rggb_mosaic_of_the_per_channel_raw_numbers(rng):
    cam = SimulatedCamera("sharp-prime", TINY, render_grid=(2, 3))
    scene = rng.uniform(0, 1, (160, 240, 3)).astype(np.float32)
    shot = cam.shoot(scene, focus_position=256, object_distance_m=2.0, rng=rng)
    assert np.array_equal(shot.raw[0::2, 0::2], shot.rgb_dn[0::2, 0::2, 0])
    assert np.array_equal(shot.raw[0::2, 1::2], shot.rgb_dn[0::2, 1::2, 1])
    assert np.array_equal(shot.raw[1::2, 0::2], shot.rgb_dn[1::2, 0::2, 1])
    assert np.array_equal(shot.raw[1::2, 1::2], shot.rgb_dn[1::2, 1::2, 2])


def test_seeded_cameras_shoot_identical_frames():
    scene = np.full((160, 240, 3), 0.3, np.float32)
    a = SimulatedCamera("sharp-prime", TINY, seed=5, render_grid=(2, 3)).shoot(scene, focus_position=256, object_distance_m=2.0)
    b = SimulatedCamera("sharp-prime", TINY, seed=5, render_grid=(2, 3)).shoot(scene, focus_position=256, object_distance_m=2.0)
    assert np.array_equal(a.raw, b.raw)


@pytest.mark.parametrize("raw", [False, True])
def test_tiff_reads_back_through_load_linear_with_its_metadata(tmp_path, rng, raw):
    cam = SimulatedCamera("vintage", TINY, seed=1, render_grid=(2, 3))
    scene = rng.uniform(0.1, 0.9, (160, 240, 3)).astype(np.float32)
    shot = cam.shoot(scene, focus_position=500, object_distance_m=1.5, iso=200, rng=rng)
    path = cam.write_tiff(shot, tmp_path / "shot.tif", raw=raw)
    with tifffile.TiffFile(path) as tif:
        block = json.loads(tif.pages[0].description)["lenspsf"]
        assert tif.pages[0].tags["Make"].value == "lenspsf"
    assert block["cfa"] == ("RGGB" if raw else None)
    assert block["black_level"] == TINY.black_level_dn and block["focus_position"] == 500
    if not raw:
        img = load_linear(path)
        assert np.allclose(img.data, shot.rgb_linear, atol=1e-6)
        assert img.metadata == shot.metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shot.tif"]


def test_tiff_tags_are_unique_and_in_ascending_order(tmp_path):
    # TIFF 6.0 asks for the directory's tags in ascending order; libtiff warns otherwise.
    cam = SimulatedCamera("vintage", TINY, seed=1, render_grid=(2, 3))
    shot = cam.shoot(np.full((160, 240, 3), 0.3, np.float32), focus_position=500, object_distance_m=1.5)
    with tifffile.TiffFile(cam.write_tiff(shot, tmp_path / "shot.tif")) as tif:
        codes = [tag.code for tag in tif.pages[0].tags.values()]
    assert codes == sorted(set(codes))
