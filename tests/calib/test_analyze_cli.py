"""lenspsf analyze end to end on a tiny simulated capture session (real SQLite files)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import calib
import targets
from calib import SensorModel, SimCamera, SimulatedCamera
from calib._cli.main import main

SENSOR = SensorModel(name="t", width_px=360, height_px=240, pixel_pitch_um=5.0)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One dots chart at one focus setting plus one dark frame."""
    root = tmp_path_factory.mktemp("analyze")
    model = SimulatedCamera("sharp-prime", SENSOR, seed=2)
    probe = targets.make_layout("dots", paper="300x200mm")
    hom = model.chart_homography(probe)
    px_per_mm = float(np.hypot(hom[0, 0], hom[1, 0]) / hom[2, 2])
    dist = model.focal_length_mm / (px_per_mm * SENSOR.pixel_pitch_um * 1e-3) / 1000 + model.focal_length_mm / 1000
    layout = targets.make_layout("dots", paper="300x200mm", pixel_pitch_um=5.0,
                                 focal_mm=model.focal_length_mm, distance_m=dist)
    chart = root / "dots.json"
    targets.save_layout(layout, chart)
    fp = round(model.best_focus_position(dist))
    with SimCamera(model=model, object_distance_m=dist) as cam:
        calib.run_session(cam, root / "sess", charts=calib.load_charts([chart]),
                          focus=calib.parse_focus_spec(str(fp)), darks=1, progress=lambda _l: None)
    return root, chart, model


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_session_gives_one_calibration_per_focus_with_dark_frame_noise(session, tmp_path, capsys):
    root, _chart, model = session
    db_path = tmp_path / "lens.psfdb"
    assert main(["analyze", str(root / "sess"), "--db", str(db_path), "--grid", "2x3", "--oversample", "1"]) == 0
    with calib.PSFDatabase.open(db_path) as db:
        (summary,) = db.summaries()
        cal = db.get(summary.id)
    assert cal.psf_map.psf.shape[:3] == (3, 2, 3)
    truth = model.noise_model(100.0)
    assert np.allclose(cal.noise.read_noise, truth.read_noise, rtol=0.3)


def test_photo_without_the_chart_exits_2_and_leaves_the_database_untouched(session, tmp_path, capsys):
    root, chart, _model = session
    db_path = tmp_path / "lens.psfdb"
    calib.PSFDatabase.open(db_path, create=True).close()
    before = _digest(db_path)
    dark = next((root / "sess").glob("dark_*"))
    assert main(["analyze", str(dark), "--chart", str(chart), "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert "chart not found" in err and "markers" in err
    assert _digest(db_path) == before


@pytest.mark.slow
def test_stored_setting_is_not_replaced_without_replace(session, tmp_path, capsys):
    root, _chart, _model = session
    db_path = tmp_path / "lens.psfdb"
    args = ["analyze", str(root / "sess"), "--db", str(db_path), "--grid", "1x2", "--oversample", "1"]
    assert main(args) == 0
    before = _digest(db_path)
    assert main(args) == 2
    assert "--replace" in capsys.readouterr().err
    assert _digest(db_path) == before
    assert main(args + ["--replace"]) == 0


def test_single_photos_without_chart_option_are_refused(session, tmp_path, capsys):
    root, _chart, _model = session
    photo = next((root / "sess").glob("dots_*"))
    assert main(["analyze", str(photo), "--db", str(tmp_path / "x.psfdb")]) == 2
    assert "--chart" in capsys.readouterr().err


def test_corrupt_photo_exits_2_naming_it_and_leaves_the_database_untouched(session, tmp_path, capsys):
    _root, chart, _model = session
    db_path = tmp_path / "lens.psfdb"
    calib.PSFDatabase.open(db_path, create=True).close()
    before = _digest(db_path)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    assert main(["analyze", str(bad), "--chart", str(chart), "--db", str(db_path)]) == 2
    assert "broken.tif" in capsys.readouterr().err
    assert _digest(db_path) == before
