import csv
import json
import sqlite3

import numpy as np
import pytest

from calib import Calibration, CalibrationKey, MTFRecord, NoiseModel, PSFDatabase, PSFMap
from calib._cli.main import main


def make_cal(rng, focus_position, *, mtf=()) -> Calibration:
    psf = rng.random((3, 2, 3, 5, 5)).astype(np.float32) + 1e-3
    psf /= psf.sum(axis=(-2, -1), keepdims=True)
    nodes = np.stack(np.meshgrid([10.0, 100.0, 190.0], [10.0, 90.0]), axis=-1)
    pm = PSFMap(psf, nodes, ("R", "G", "B"), (200, 100))
    return Calibration(
        key=CalibrationKey("SimCam", "Sim50", 50.0, 4.0, focus_position, None),
        psf_map=pm, mtf=mtf, pixel_pitch_um=4.0,
        noise=NoiseModel(("R", "G", "B"), np.full(3, 0.002), np.full(3, 3e-5)),
    )


def edge_mtf(mtf50: float) -> MTFRecord:
    f = np.linspace(0, 0.5, 26)
    return MTFRecord("G", 100.0, 50.0, 5.0, "tangential", "edge", f, np.exp(-np.log(2) * f / mtf50))


@pytest.fixture
def db_path(tmp_path, rng):
    path = tmp_path / "lens.psfdb"
    with PSFDatabase.open(path, create=True) as db:
        db.add(make_cal(rng, 100, mtf=(edge_mtf(0.2), edge_mtf(0.3))))
        db.add(make_cal(rng, 120))
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_sentence_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lenspsf: error: ")
    assert "Traceback" not in err


def test_list_shows_one_row_per_calibration(capsys, db_path):
    code, out, _ = run(capsys, "db", "list", "--db", db_path)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].split()[:3] == ["id", "camera", "lens"]
    assert lines[1].split() == ["1", "SimCam", "Sim50", "50", "mm", "f/4", "100", "-", "RGB",
                                "3x2", "5x5", "2"]


def test_show_prints_grid_noise_and_mtf50_per_method_and_channel(capsys, db_path):
    code, out, _ = run(capsys, "db", "show", "--db", db_path, "1")
    assert code == 0
    assert "3 x 2 nodes" in out and "kernel 5 x 5" in out
    assert "G: read 0.002" in out
    edge_row = next(line for line in out.splitlines() if line.strip().startswith("edge"))
    assert edge_row.split()[:6] == ["edge", "G", "2", "0.2500", "0.2000", "0.3000"]


def test_show_prints_the_analysis_notes_in_full(capsys, tmp_path, rng):
    path = tmp_path / "noted.psfdb"
    note = "the PSF's width changes by up to 28 % between adjacent field nodes of the 6x9 grid; " * 3
    cal = make_cal(rng, 100)
    with PSFDatabase.open(path, create=True) as db:
        db.add(Calibration(key=cal.key, psf_map=cal.psf_map, pixel_pitch_um=4.0, metadata={"notes": [note]}))
    code, out, _ = run(capsys, "db", "show", "--db", path, "1")
    assert code == 0 and f"note           {note}" in out


def test_export_by_focus_writes_npz_and_mtf_csv(capsys, db_path, tmp_path):
    code, _, _ = run(capsys, "db", "export", "--db", db_path, "--focus", 100,
                     "-o", tmp_path / "out.npz", "--mtf", tmp_path / "mtf.csv")
    assert code == 0
    with np.load(tmp_path / "out.npz") as z:
        assert json.loads(str(z["metadata"]))["focus_position"] == 100
    with open(tmp_path / "mtf.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2 * 26


def test_export_ambiguous_lists_candidates(capsys, db_path, tmp_path):
    code, _, err = run(capsys, "db", "export", "--db", db_path, "-o", tmp_path / "out.npz")
    assert_one_sentence_error(code, err)
    assert "2 calibrations" in err and "id 1:" in err and "id 2:" in err and "--id" in err
    assert not (tmp_path / "out.npz").exists()


def test_export_only_calibration_needs_no_selection(capsys, tmp_path, rng):
    path = tmp_path / "one.psfdb"
    with PSFDatabase.open(path, create=True) as db:
        db.add(make_cal(rng, 7))
    code, _, _ = run(capsys, "db", "export", "--db", path, "-o", tmp_path / "out.npz")
    assert code == 0 and (tmp_path / "out.npz").is_file()


def test_export_then_import_into_new_database_round_trips(capsys, db_path, tmp_path):
    run(capsys, "db", "export", "--db", db_path, "--id", 2, "-o", tmp_path / "out.npz")
    code, out, _ = run(capsys, "db", "import", "--db", tmp_path / "new.psfdb", tmp_path / "out.npz",
                       "--lens", "Renamed", "--focus-distance-m", 2.5)
    assert code == 0 and "calibration 1" in out
    with PSFDatabase.open(db_path) as a, PSFDatabase.open(tmp_path / "new.psfdb") as b:
        old, new = a.get(2), b.get(1)
    assert np.array_equal(old.psf_map.psf, new.psf_map.psf)
    assert (new.key.lens, new.key.focus_position, new.key.focus_distance_m) == ("Renamed", 120, 2.5)


def test_import_existing_key_needs_replace(capsys, db_path, tmp_path):
    run(capsys, "db", "export", "--db", db_path, "--id", 1, "-o", tmp_path / "out.npz")
    code, _, err = run(capsys, "db", "import", "--db", db_path, tmp_path / "out.npz")
    assert_one_sentence_error(code, err)
    assert "--replace" in err
    code, _, _ = run(capsys, "db", "import", "--db", db_path, tmp_path / "out.npz", "--replace")
    assert code == 0


def test_delete_removes_it_from_the_list(capsys, db_path):
    assert run(capsys, "db", "delete", "--db", db_path, 1)[0] == 0
    _, out, _ = run(capsys, "db", "list", "--db", db_path)
    assert len(out.strip().splitlines()) == 2


def test_delete_unknown_id_is_one_sentence(capsys, db_path):
    code, _, err = run(capsys, "db", "delete", "--db", db_path, 42)
    assert_one_sentence_error(code, err)
    assert "no calibration with id 42" in err


def test_missing_database_is_one_sentence(capsys, tmp_path):
    code, _, err = run(capsys, "db", "list", "--db", tmp_path / "nope.psfdb")
    assert_one_sentence_error(code, err)
    assert "nope.psfdb does not exist" in err


def test_newer_schema_is_one_sentence(capsys, db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    code, _, err = run(capsys, "db", "list", "--db", db_path)
    assert_one_sentence_error(code, err)
    assert "upgrade lenspsf" in err


def test_import_bad_npz_names_the_key(capsys, tmp_path):
    np.savez(tmp_path / "bad.npz", psf=np.ones((1, 1, 1, 3, 3)) / 9)
    code, _, err = run(capsys, "db", "import", "--db", tmp_path / "x.psfdb", tmp_path / "bad.npz",
                       "--camera", "c", "--lens", "l")
    assert_one_sentence_error(code, err)
    assert "key 'nodes_xy' is missing" in err
    assert not (tmp_path / "x.psfdb").exists()


def test_db_without_db_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["db", "list"])
    assert exit_.value.code == 2
    assert "--db" in capsys.readouterr().err
