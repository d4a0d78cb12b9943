import csv
import json
import sqlite3

import numpy as np
import pytest

from calib import (
    FLAG_FILLED,
    Calibration,
    CalibError,
    CalibrationKey,
    MTFRecord,
    NearestFocusWarning,
    NoiseModel,
    PSFDatabase,
    PSFMap,
    ShotMetadata,
    export_mtf_csv,
    export_npz,
    import_npz,
)
from calib._db import MTF_CSV_COLUMNS, NPZ_KEYS


def random_map(rng, channels=("R", "G", "B"), ny=3, nx=4, k=7, size=(400, 300)) -> PSFMap:
    psf = rng.random((len(channels), ny, nx, k, k)).astype(np.float32) + 1e-3
    psf /= psf.sum(axis=(-2, -1), keepdims=True)
    xs = np.linspace(20, size[0] - 20, nx)
    ys = np.linspace(15, size[1] - 15, ny)
    nodes = np.stack(np.meshgrid(xs, ys), axis=-1)
    flags = np.zeros((len(channels), ny, nx), np.uint8)
    flags[0, 1, 2] = FLAG_FILLED
    return PSFMap(psf, nodes, channels, size, 1, flags)


def make_cal(rng, *, focus_position=100, focus_distance_m=None, camera="SimCam", lens="Sim50",
             focal=50.0, f_number=4.0, pitch=4.0, mtf=(), noise=True, psf_map=None) -> Calibration:
    pm = psf_map if psf_map is not None else random_map(rng)
    nm = NoiseModel(pm.channels, rng.random(len(pm.channels)) * 0.01,
                    rng.random(len(pm.channels)) * 1e-4) if noise else None
    return Calibration(
        key=CalibrationKey(camera, lens, focal, f_number, focus_position, focus_distance_m),
        psf_map=pm, noise=nm, mtf=mtf, pixel_pitch_um=pitch,
        metadata={"distortion_k1": -0.012, "residual_px": [0.03, 0.05]},
    )


def make_mtf(rng, n=3) -> tuple[MTFRecord, ...]:
    f = np.linspace(0, 0.5, 11)
    return tuple(
        MTFRecord("G", float(rng.uniform(0, 400)), float(rng.uniform(0, 300)), 5.0 * i,
                  ("sagittal", "tangential", "none")[i % 3], ("edge", "stripes", "psf")[i % 3],
                  f, np.exp(-f / rng.uniform(0.1, 0.4)), ("low_contrast",) if i == 1 else ())
        for i in range(n)
    )


def open_new(tmp_path, name="lens.psfdb", **kw) -> PSFDatabase:
    return PSFDatabase.open(tmp_path / name, create=True, **kw)


def table_counts(path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("calibrations", "psf_grids", "noise_models", "mtf", "cameras", "lenses")}
    finally:
        conn.close()


def assert_same_calibration(a: Calibration, b: Calibration) -> None:
    assert a.key == b.key
    assert a.psf_map.psf.dtype == b.psf_map.psf.dtype == np.float32
    assert np.array_equal(a.psf_map.psf, b.psf_map.psf)
    assert np.array_equal(a.psf_map.nodes_xy, b.psf_map.nodes_xy)
    assert np.array_equal(a.psf_map.flags, b.psf_map.flags)
    assert a.psf_map.channels == b.psf_map.channels
    assert a.psf_map.image_size == b.psf_map.image_size
    assert a.psf_map.sampling == b.psf_map.sampling
    assert a.pixel_pitch_um == b.pixel_pitch_um
    assert a.metadata == b.metadata
    assert (a.noise is None) == (b.noise is None)
    if a.noise is not None:
        assert a.noise.channels == b.noise.channels
        assert np.array_equal(a.noise.read_noise, b.noise.read_noise)
        assert np.array_equal(a.noise.gain, b.noise.gain)


# -- storage -----------------------------------------------------------------------------


def test_add_then_get_preserves_every_array_bit_exactly(tmp_path, rng):
    cal = make_cal(rng, mtf=make_mtf(rng))
    with open_new(tmp_path) as db:
        cid = db.add(cal)
    with PSFDatabase.open(tmp_path / "lens.psfdb") as db:
        back = db.get(cid)
    assert back.id == cid and back.created is not None
    assert_same_calibration(cal, back)
    assert len(back.mtf) == len(cal.mtf)
    for r, s in zip(cal.mtf, back.mtf):
        assert (r.channel, r.x_px, r.y_px, r.orientation_deg, r.direction, r.method, r.flags) == (
            s.channel, s.x_px, s.y_px, s.orientation_deg, s.direction, s.method, s.flags)
        assert np.array_equal(r.freq_cpp, s.freq_cpp) and np.array_equal(r.mtf, s.mtf)


def test_psf_at_works_on_a_stored_map(tmp_path, rng):
    cal = make_cal(rng)
    with open_new(tmp_path) as db:
        back = db.get(db.add(cal))
    x, y = back.psf_map.nodes_xy[1, 2]
    assert np.array_equal(back.psf_map.psf_at(x, y, "G"), cal.psf_map.psf_at(x, y, "G"))


def test_summaries_list_grid_kernel_channels_and_counts_without_loading(tmp_path, rng):
    with open_new(tmp_path) as db:
        cid = db.add(make_cal(rng, mtf=make_mtf(rng, 4)))
        (s,) = db.summaries()
    assert (s.id, s.channels, s.grid_shape, s.kernel_size) == (cid, ("R", "G", "B"), (3, 4), 7)
    assert (s.n_mtf_records, s.n_flagged_nodes, s.has_noise, s.image_size) == (4, 1, True, (400, 300))


def test_existing_key_without_replace_is_refused_and_suggests_replace(tmp_path, rng):
    with open_new(tmp_path) as db:
        db.add(make_cal(rng))
        with pytest.raises(CalibError, match="--replace"):
            db.add(make_cal(rng))
        assert len(db.summaries()) == 1


def test_replace_overwrites_and_keeps_the_id(tmp_path, rng):
    with open_new(tmp_path) as db:
        cid = db.add(make_cal(rng, mtf=make_mtf(rng)))
        new = make_cal(rng, mtf=())
        assert db.add(new, replace=True) == cid
        back = db.get(cid)
    assert_same_calibration(new, back)
    assert back.mtf == ()
    assert table_counts(tmp_path / "lens.psfdb")["mtf"] == 0


def test_unknown_focal_length_is_one_key_value(tmp_path, rng):
    with open_new(tmp_path) as db:
        db.add(make_cal(rng, focal=None, f_number=None, focus_position=None))
        with pytest.raises(CalibError, match="already holds"):
            db.add(make_cal(rng, focal=None, f_number=None, focus_position=None))


def test_add_failing_mid_transaction_leaves_database_unchanged(tmp_path, rng):
    with open_new(tmp_path) as db:
        db.add(make_cal(rng, focus_position=100))
        before = table_counts(db.path)
        pm = random_map(rng)
        pm.psf[2, 0, 0, 3, 3] = np.nan  # the last channel: rows for R and G are written first
        with pytest.raises(CalibError, match="channel B"):
            db.add(make_cal(rng, focus_position=200, psf_map=pm))
        assert table_counts(db.path) == before
        assert [s.key.focus_position for s in db.summaries()] == [100]


def test_failed_replace_keeps_the_old_calibration(tmp_path, rng):
    with open_new(tmp_path) as db:
        old = make_cal(rng)
        cid = db.add(old)
        pm = random_map(rng)
        pm.psf[1, 2, 3] *= 2.0  # sums to 2: rejected after the old rows were deleted
        with pytest.raises(CalibError, match="sums to"):
            db.add(make_cal(rng, psf_map=pm), replace=True)
        assert_same_calibration(old, db.get(cid))


def test_add_mtf_with_a_bad_record_adds_none(tmp_path, rng):
    with open_new(tmp_path) as db:
        cid = db.add(make_cal(rng))
        good = make_mtf(rng, 2)
        bad = MTFRecord("G", 1, 2, 0, "diagonal", "edge", np.zeros(3), np.zeros(3))
        with pytest.raises(CalibError, match="direction"):
            db.add_mtf(cid, [*good, bad])
        assert db.get(cid).mtf == ()
        assert db.add_mtf(cid, good) == 2
        assert len(db.get(cid).mtf) == 2


def test_delete_removes_calibration_and_its_rows(tmp_path, rng):
    with open_new(tmp_path) as db:
        cid = db.add(make_cal(rng, mtf=make_mtf(rng)))
        db.delete(cid)
        with pytest.raises(CalibError, match=f"no calibration with id {cid}"):
            db.get(cid)
    assert set(table_counts(tmp_path / "lens.psfdb").values()) == {0}


def test_unknown_id_names_the_file_and_the_list_command(tmp_path):
    with open_new(tmp_path) as db, pytest.raises(CalibError, match="db list"):
        db.delete(7)


# -- opening -----------------------------------------------------------------------------


def test_missing_file_without_create_is_a_clear_error_and_creates_nothing(tmp_path):
    with pytest.raises(CalibError, match="does not exist"):
        PSFDatabase.open(tmp_path / "none.psfdb")
    assert not (tmp_path / "none.psfdb").exists()


def test_newer_schema_version_asks_to_upgrade(tmp_path):
    open_new(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "lens.psfdb")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(CalibError, match=r"lens\.psfdb was written by a newer lenspsf \(schema 99.*upgrade lenspsf"):
        PSFDatabase.open(tmp_path / "lens.psfdb")


def test_non_sqlite_file_is_named_as_not_a_database(tmp_path):
    path = tmp_path / "photo.psfdb"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    with pytest.raises(CalibError, match=r"photo\.psfdb is not a lenspsf PSF database"):
        PSFDatabase.open(path)


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(CalibError, match=r"other\.db is an SQLite file but not a lenspsf"):
        PSFDatabase.open(path, create=True)


def test_locked_database_names_file_and_other_program_and_stays_unchanged(tmp_path, rng):
    with open_new(tmp_path) as db:
        db.add(make_cal(rng, focus_position=100))
    before = table_counts(tmp_path / "lens.psfdb")
    holder = sqlite3.connect(tmp_path / "lens.psfdb", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(CalibError, match=r"lens\.psfdb is locked by another program.*close"):
            with PSFDatabase.open(tmp_path / "lens.psfdb", timeout_s=0.05) as db:
                db.add(make_cal(rng, focus_position=200))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert table_counts(tmp_path / "lens.psfdb") == before


def test_write_lock_taken_after_open_fails_the_add_cleanly(tmp_path, rng):
    db = open_new(tmp_path, timeout_s=0.05)
    db.add(make_cal(rng, focus_position=100))
    holder = sqlite3.connect(tmp_path / "lens.psfdb", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(CalibError, match="locked"):
            db.add(make_cal(rng, focus_position=200))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [s.key.focus_position for s in db.summaries()] == [100]
    db.close()


# -- finding -----------------------------------------------------------------------------


@pytest.fixture
def focus_db(tmp_path, rng):
    with open_new(tmp_path) as db:
        for pos, dist in ((100, 1.0), (120, 2.0), (140, 4.0)):
            db.add(make_cal(rng, focus_position=pos, focus_distance_m=dist))
    db = PSFDatabase.open(tmp_path / "lens.psfdb")
    yield db
    db.close()


def test_find_exact_focus_position_without_warning(focus_db):
    cal = focus_db.find(camera="SimCam", lens="Sim50", focus_position=120)
    assert cal.key.focus_position == 120


def test_find_exact_focus_distance_without_warning(focus_db):
    assert focus_db.find(focus_distance_m=4.0).key.focus_position == 140


def test_find_nearest_focus_warns(focus_db):
    with pytest.warns(NearestFocusWarning, match="nearest, position 140"):
        cal = focus_db.find(focus_position=147)
    assert cal.key.focus_position == 140


def test_find_nearest_focus_distance_compares_in_diopters(focus_db):
    # 3 m is 0.33 D: nearer to 4 m (0.25 D) than to 2 m (0.5 D).
    with pytest.warns(NearestFocusWarning):
        assert focus_db.find(focus_distance_m=3.0).key.focus_distance_m == 4.0


def test_find_far_focus_position_is_an_error(focus_db):
    # calibrated spacing is 20 steps: 41 steps beyond the last one is far
    with pytest.raises(CalibError, match=r"focus position 181 is far.*--focus 140"):
        focus_db.find(focus_position=181)


def test_find_far_focus_distance_is_an_error(focus_db):
    with pytest.raises(CalibError, match="is far from every calibrated focus"):
        focus_db.find(focus_distance_m=0.3)


def test_single_focus_uses_depth_of_field_for_far(tmp_path, rng):
    # 50 mm f/4, 4 um pixels: a 4-pixel blur is reached 0.0256 D away from 2 m (0.5 D)
    with open_new(tmp_path) as db:
        db.add(make_cal(rng, focus_position=None, focus_distance_m=2.0))
        with pytest.warns(NearestFocusWarning):
            db.find(focus_distance_m=2.08)  # 0.019 D
        with pytest.raises(CalibError, match="far"):
            db.find(focus_distance_m=2.2)  # 0.045 D


def test_find_unknown_camera_lists_what_the_database_holds(focus_db):
    with pytest.raises(CalibError, match=r"no calibration for camera Other.*holds SimCam \+ Sim50 at 50 mm f/4 \(focus position 100 / 1 m, position 120 / 2 m"):
        focus_db.find(camera="Other")


def test_find_other_f_number_is_no_match(focus_db):
    with pytest.raises(CalibError, match="f-number 8"):
        focus_db.find(f_number=8.0, focus_position=120)


def test_find_in_empty_database_says_how_to_fill_it(tmp_path):
    with open_new(tmp_path) as db, pytest.raises(CalibError, match="holds no calibrations"):
        db.find(focus_position=3)


def test_find_without_focus_among_several_asks_for_focus(focus_db):
    with pytest.raises(CalibError, match="--focus"):
        focus_db.find()


def test_find_without_camera_with_two_cameras_asks_for_camera(focus_db, rng):
    focus_db.add(make_cal(rng, camera="OtherCam", focus_position=120))
    with pytest.raises(CalibError, match=r"several camera values \(OtherCam, SimCam\).*--camera"):
        focus_db.find(focus_position=120)
    assert focus_db.find(camera="othercam", focus_position=120).key.camera == "OtherCam"


def test_find_for_uses_photo_metadata_and_overrides(focus_db):
    meta = ShotMetadata(camera="SimCam", lens="Sim50", focal_length_mm=50.0, f_number=4.0,
                        focus_position=100, focus_distance_m=1.0)
    assert focus_db.find_for(meta).key.focus_position == 100
    # a focus override replaces the photo's position and distance both
    assert focus_db.find_for(meta, focus_distance_m=4.0).key.focus_position == 140
    assert focus_db.find_for(ShotMetadata(), focus_position=120).key.focus_position == 120


def test_match_is_exact(focus_db):
    assert [s.key.focus_position for s in focus_db.match(focus_position=120)] == [120]
    assert focus_db.match(focus_position=121) == []


# -- exchange files ------------------------------------------------------------------------


def test_export_npz_has_exactly_the_documented_keys_dtypes_and_shapes(tmp_path, rng):
    cal = make_cal(rng, focus_position=120, focus_distance_m=2.0)
    export_npz(cal, tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(NPZ_KEYS)
        assert z["psf"].dtype == np.float32 and z["psf"].shape == (3, 3, 4, 7, 7)
        assert z["nodes_xy"].shape == (3, 4, 2)
        assert z["channels"].tolist() == ["R", "G", "B"]
        assert z["image_size"].tolist() == [400, 300]
        assert int(z["sampling"]) == 1
        assert z["flags"].dtype == np.uint8 and z["flags"].shape == (3, 3, 4)
        meta = json.loads(str(z["metadata"]))
    assert {k: meta[k] for k in ("camera", "lens", "focal_length_mm", "f_number",
                                 "focus_position", "focus_distance_m", "pixel_pitch_um")} == {
        "camera": "SimCam", "lens": "Sim50", "focal_length_mm": 50.0, "f_number": 4.0,
        "focus_position": 120, "focus_distance_m": 2.0, "pixel_pitch_um": 4.0}
    assert meta["noise"]["channels"] == ["R", "G", "B"]


def test_export_then_import_round_trips(tmp_path, rng):
    cal = make_cal(rng)
    export_npz(cal, tmp_path / "out.npz")
    assert_same_calibration(cal, import_npz(tmp_path / "out.npz"))


def test_export_keeps_a_non_npz_suffix(tmp_path, rng):
    export_npz(make_cal(rng), tmp_path / "grid.bin")
    assert (tmp_path / "grid.bin").is_file() and not (tmp_path / "grid.bin.npz").exists()
    assert import_npz(tmp_path / "grid.bin").key.camera == "SimCam"


def test_import_flags_override_metadata(tmp_path, rng):
    export_npz(make_cal(rng), tmp_path / "out.npz")
    cal = import_npz(tmp_path / "out.npz", lens="Other", focus_position=7, focus_distance_m=3.0)
    assert (cal.key.camera, cal.key.lens, cal.key.focus_position, cal.key.focus_distance_m) == (
        "SimCam", "Other", 7, 3.0)


def test_import_foreign_npz_with_required_keys_only_renormalises_peak_scaled_psfs(tmp_path, rng):
    pm = random_map(rng, channels=("Y",))
    peak_scaled = pm.psf / pm.psf.max(axis=(-2, -1), keepdims=True)
    np.savez(tmp_path / "zemax.npz", psf=peak_scaled.astype(np.float64), nodes_xy=pm.nodes_xy,
             channels=np.array(["Y"]), image_size=np.array([400, 300]))
    cal = import_npz(tmp_path / "zemax.npz", camera="Sensor", lens="Design")
    np.testing.assert_allclose(cal.psf_map.psf, pm.psf, rtol=1e-5)
    assert cal.psf_map.sampling == 1 and not cal.psf_map.flags.any()


@pytest.mark.parametrize("drop", ["psf", "nodes_xy", "channels", "image_size"])
def test_import_missing_key_names_file_and_key(tmp_path, rng, drop):
    pm = random_map(rng)
    arrays = dict(psf=pm.psf, nodes_xy=pm.nodes_xy, channels=np.array(pm.channels),
                  image_size=np.array(pm.image_size))
    del arrays[drop]
    np.savez(tmp_path / "part.npz", **arrays)
    with pytest.raises(CalibError, match=rf"part\.npz: key '{drop}' is missing"):
        import_npz(tmp_path / "part.npz", camera="c", lens="l")


def test_import_wrong_shape_names_the_key(tmp_path, rng):
    export_npz(make_cal(rng), tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz") as z:
        arrays = dict(z)
    arrays["nodes_xy"] = arrays["nodes_xy"][:, :2]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CalibError, match=r"bad\.npz: key 'nodes_xy' has shape"):
        import_npz(tmp_path / "bad.npz")


def test_import_without_camera_asks_for_it(tmp_path, rng):
    pm = random_map(rng)
    np.savez(tmp_path / "x.npz", psf=pm.psf, nodes_xy=pm.nodes_xy,
             channels=np.array(pm.channels), image_size=np.array(pm.image_size))
    with pytest.raises(CalibError, match="names no camera.*--camera"):
        import_npz(tmp_path / "x.npz", lens="l")


def test_import_of_a_non_npz_file_is_a_clear_error(tmp_path):
    (tmp_path / "notes.npz").write_text("hello")
    with pytest.raises(CalibError, match=r"notes\.npz is not a readable \.npz file"):
        import_npz(tmp_path / "notes.npz")


def test_mtf_csv_has_documented_columns_and_one_row_per_frequency(tmp_path, rng):
    cal = make_cal(rng, mtf=make_mtf(rng, 3), pitch=5.0)
    export_mtf_csv(cal, tmp_path / "mtf.csv")
    with open(tmp_path / "mtf.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames) == MTF_CSV_COLUMNS == (
        "channel", "x_px", "y_px", "orientation_deg", "direction", "method",
        "freq_cpp", "freq_lpmm", "mtf")
    assert len(rows) == sum(len(r.freq_cpp) for r in cal.mtf)
    first = cal.mtf[0]
    assert [float(r["mtf"]) for r in rows[: len(first.freq_cpp)]] == first.mtf.tolist()
    assert float(rows[3]["freq_lpmm"]) == pytest.approx(first.freq_cpp[3] * 200.0)
    assert {r["method"] for r in rows} == {"edge", "stripes", "psf"}


def test_ctrl_c_during_add_rolls_back_and_leaves_the_connection_usable(tmp_path, rng):
    with open_new(tmp_path) as db:
        db.add(make_cal(rng, focus_position=100))
        before = table_counts(db.path)
        # the interrupt arrives while the MTF rows are written, after the PSF grids
        bad = MTFRecord("G", 0, 0, 0, "none", "edge", _Interrupting(), np.zeros(3))
        with pytest.raises(KeyboardInterrupt):
            db.add(make_cal(rng, focus_position=200, mtf=(*make_mtf(rng, 2), bad)))
        assert table_counts(db.path) == before
        db.add(make_cal(rng, focus_position=300))
        assert [s.key.focus_position for s in db.summaries()] == [100, 300]


class _Interrupting:
    """An array-like whose conversion raises KeyboardInterrupt, as Ctrl-C would."""

    def __array__(self, dtype=None, copy=None):
        raise KeyboardInterrupt


_DIE_MID_WRITE = """
import os, sys
import numpy as np
from calib import Calibration, CalibrationKey, PSFDatabase, PSFMap
rng = np.random.default_rng(1)
psf = rng.random((3, 4, 5, 31, 31)).astype(np.float32)
psf /= psf.sum(axis=(-2, -1), keepdims=True)
nodes = np.stack(np.meshgrid(np.arange(5.0) * 50, np.arange(4.0) * 50), axis=-1)
cal = Calibration(key=CalibrationKey("SimCam", "Sim50", 50.0, 4.0, 999, None),
                  psf_map=PSFMap(psf, nodes, ("R", "G", "B"), (300, 200)))
db = PSFDatabase.open(sys.argv[1])
db._conn.execute("PRAGMA cache_size = 2")  # spill pages to the file before COMMIT
db._conn.set_trace_callback(lambda sql: os._exit(3) if sql.startswith("COMMIT") else None)
db.add(cal)
"""


def test_process_killed_before_commit_leaves_database_unchanged(tmp_path, rng):
    import subprocess
    import sys
    from pathlib import Path

    with open_new(tmp_path) as db:
        db.add(make_cal(rng, focus_position=100))
    path = tmp_path / "lens.psfdb"
    before = table_counts(path)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", _DIE_MID_WRITE, str(path)], cwd=root,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    # the dead writer left a hot journal: its pages reached the file, so recovery matters
    assert (tmp_path / "lens.psfdb-journal").exists()
    with PSFDatabase.open(path) as db:
        assert [s.key.focus_position for s in db.summaries()] == [100]
    assert table_counts(path) == before


def test_focus_at_infinity_round_trips_through_npz_as_strict_json(tmp_path, rng):
    cal = make_cal(rng, focus_position=None, focus_distance_m=float("inf"))
    export_npz(cal, tmp_path / "inf.npz")
    with np.load(tmp_path / "inf.npz") as z:
        text = str(z["metadata"])
    assert "Infinity" not in text and json.loads(text)["focus_distance_m"] == "inf"
    assert import_npz(tmp_path / "inf.npz").key.focus_distance_m == float("inf")
    with open_new(tmp_path) as db:
        db.add(cal)
        assert db.find(focus_distance_m=float("inf")).key.focus_distance_m == float("inf")


def test_empty_file_opens_only_with_create(tmp_path):
    (tmp_path / "new.psfdb").touch()
    with pytest.raises(CalibError, match=r"new\.psfdb is empty"):
        PSFDatabase.open(tmp_path / "new.psfdb")
    with PSFDatabase.open(tmp_path / "new.psfdb", create=True) as db:
        assert db.summaries() == []
    PSFDatabase.open(tmp_path / "new.psfdb").close()
