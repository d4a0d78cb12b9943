"""SimCamera: the simulated lens + sensor behind the camera interface."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import targets
import tifffile

from calib import CalibError, Camera, load_charts, parse_focus_spec, run_session
from calib._sim import SENSOR_PRESETS, SimulatedCamera
from calib._simcamera import SimCamera


@pytest.fixture(scope="module")
def model():
    # A small frame and a coarse PSF grid keep each render to a few seconds; the
    # module-wide model shares its PSF cache between tests.
    tiny = dataclasses.replace(SENSOR_PRESETS["small"], name="tiny", width_px=240, height_px=160)
    return SimulatedCamera("sharp-prime", tiny, render_grid=(3, 3), seed=3)


def _tiff_meta(path):
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        return page.dtype, page.shape, json.loads(page.description)["lenspsf"], page.asarray()


def test_simcamera_implements_the_camera_interface(model):
    with SimCamera(model=model) as cam:
        assert isinstance(cam, Camera)
        info = cam.info()
    assert (info.backend, info.focus_drive, info.needs_operator) == ("sim", "sim", False)


def test_fnumber_is_set_from_the_choices_and_moves_the_model(model):
    with SimCamera(model=SimulatedCamera("sharp-prime", model.sensor, seed=3)) as cam:
        assert cam.set("fnumber", "8") == "f/8"
        assert cam.model.f_number == 8.0
        with pytest.raises(CalibError, match=r"'f/1.0' is not a valid fnumber.*f/2, "):
            cam.set("fnumber", "f/1.0")


def test_capture_writes_a_16bit_tiff_recording_the_focus_position(model, tmp_path):
    with SimCamera(model=model) as cam:
        cam.present_chart(targets.make_layout("edges"), name="edges")
        cam.focus(250)
        (path,) = cam.capture(tmp_path, prefix="a__")
    dtype, shape, meta, _ = _tiff_meta(path)
    assert path.name.startswith("a__") and dtype == np.uint16 and shape[:2] == (160, 240)
    assert meta["focus_position"] == 250


def test_dark_frame_holds_no_signal_above_the_black_level(model, tmp_path):
    with SimCamera(model=model) as cam:
        cam.present_chart(None, name="dark")
        (path,) = cam.capture(tmp_path)
    _, _, meta, data = _tiff_meta(path)
    signal = (data.astype(float) - meta["black_level"]) / (meta["white_level"] - meta["black_level"])
    assert abs(signal.mean()) < 1e-3


def test_capture_without_a_chart_in_front_is_refused(model, tmp_path):
    with SimCamera(model=model) as cam, pytest.raises(CalibError, match="no chart"):
        cam.capture(tmp_path)


def test_sim_session_shoots_each_focus_setting_without_prompting(model, tmp_path):
    chart = tmp_path / "edges.json"
    targets.save_layout(targets.make_layout("edges"), chart)
    asked = []
    with SimCamera(model=model) as cam:
        s = run_session(cam, tmp_path / "s", charts=load_charts([chart]), focus=parse_focus_spec("250,300"),
                        darks=1, prompt=asked.append, progress=lambda line: None)
    assert asked == []
    recorded = [_tiff_meta(tmp_path / "s" / r.files[0].name)[2]["focus_position"]
                for r in s.shots if r.kind == "chart"]
    assert recorded == [250, 300]
    assert s.verify() == []


def test_framing_overfills_dots_charts_and_frames_edge_charts_whole(model):
    cam = SimCamera(model=model)
    assert cam.fill_for(targets.make_layout("dots")) > 1.0 > cam.fill_for(targets.make_layout("edges"))


def test_framing_can_be_set_per_kind_or_for_every_chart(model):
    assert SimCamera(model=model, fill={"edges": 0.7}).fill_for(targets.make_layout("edges")) == 0.7
    assert SimCamera(model=model, fill=0.9).fill_for(targets.make_layout("dots")) == 0.9
