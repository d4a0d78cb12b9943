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


def test_session_analysis_shows_each_settings_notes(session, tmp_path, capsys):
    # The chart is framed whole, so the frame's corner nodes lie beyond its dots: a note.
    root, _chart, _model = session
    assert main(["analyze", str(root / "sess"), "--db", str(tmp_path / "lens.psfdb"), "--grid", "6x9",
                 "--oversample", "1"]) == 0
    assert "note: focus" in capsys.readouterr().err


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


def test_another_kinds_layout_names_the_chart_the_photo_shows(session, tmp_path, capsys):
    root, _chart, _model = session
    wrong = tmp_path / "noise.json"
    targets.save_layout(targets.make_layout("noise", paper="300x200mm"), wrong)
    db_path = tmp_path / "lens.psfdb"
    photo = next((root / "sess").glob("dots_*"))
    assert main(["analyze", str(photo), "--chart", str(wrong), "--db", str(db_path), "--focus", "5"]) == 2
    err = capsys.readouterr().err
    assert "shows a lenspsf dots chart, not the noise chart" in err and "Traceback" not in err
    assert not db_path.exists()


def test_a_layout_of_another_paper_size_is_refused(session, tmp_path, capsys):
    root, _chart, _model = session
    wrong = tmp_path / "dots_a4.json"
    targets.save_layout(targets.make_layout("dots", paper="A4"), wrong)
    db_path = tmp_path / "lens.psfdb"
    photo = next((root / "sess").glob("dots_*"))
    assert main(["analyze", str(photo), "--chart", str(wrong), "--db", str(db_path), "--focus", "5"]) == 2
    err = capsys.readouterr().err
    assert "do not sit where" in err and "dots_a4.json" in err
    assert not db_path.exists()


def test_photos_of_two_cameras_in_one_run_are_refused_naming_both(session, tmp_path, capsys):
    import json

    import tifffile

    root, chart, _model = session
    photo = next((root / "sess").glob("dots_*"))
    other = tmp_path / "other.tif"
    with tifffile.TiffFile(photo) as t:
        data, desc = t.pages[0].asarray(), json.loads(t.pages[0].description)
    desc["lenspsf"]["camera"], desc["lenspsf"]["serial"] = "Other Camera", "999"
    tifffile.imwrite(other, data, photometric="rgb", description=json.dumps(desc))
    db_path = tmp_path / "lens.psfdb"
    assert main(["analyze", str(photo), str(other), "--chart", str(chart), "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert "other.tif" in err and "another camera" in err
    assert not db_path.exists()


def test_a_locked_database_exits_2_and_is_left_untouched(session, tmp_path, capsys):
    import sqlite3

    root, chart, _model = session
    db_path = tmp_path / "lens.psfdb"
    calib.PSFDatabase.open(db_path, create=True).close()
    before = _digest(db_path)
    photo = next((root / "sess").glob("dots_*"))
    holder = sqlite3.connect(db_path)
    holder.execute("BEGIN EXCLUSIVE")  # another program in the middle of writing
    try:
        args = ["analyze", str(photo), "--chart", str(chart), "--db", str(db_path), "--grid", "1x2", "--oversample", "1"]
        assert main(args) == 2
    finally:
        holder.rollback()
        holder.close()
    err = capsys.readouterr().err
    assert "locked" in err and "lens.psfdb" in err
    assert _digest(db_path) == before


def test_workers_below_one_is_refused_before_the_database_is_made(session, tmp_path, capsys):
    root, _chart, _model = session
    db_path = tmp_path / "lens.psfdb"
    assert main(["analyze", str(root / "sess"), "--db", str(db_path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not db_path.exists()
