import json

import numpy as np
import pytest
import tifffile
from restore_synth import blur_with_map, constant_map, gaussian_psf, scene

import calib
import restore
from calib._cli.main import main
from restore import RestoreError, restore_files


def _db(tmp_path, *, focus=(100,), camera="SimCam", lens="SoftZoom"):
    path = tmp_path / "lens.psfdb"
    with calib.PSFDatabase.open(path, create=True) as db:
        for f in focus:
            m = constant_map(gaussian_psf(9, 1.2), 96, 64, ("R", "G", "B"))
            db.add(calib.Calibration(key=calib.CalibrationKey(camera, lens, 35.0, 4.0, f), psf_map=m))
    return path


def _photo(tmp_path, name="shot.tif", meta=True, focus=100, size=(64, 96)):
    img = scene("astronaut", size, rgb=True)
    m = constant_map(gaussian_psf(9, 1.2), size[1], size[0], ("R", "G", "B"))
    data = np.clip(blur_with_map(img, m) * 65535, 0, 65535).astype(np.uint16)
    desc = None
    if meta:
        md = calib.ShotMetadata(camera="SimCam", lens="SoftZoom", focal_length_mm=35.0, f_number=4.0, focus_position=focus)
        desc = json.dumps({"lenspsf": {**md.to_dict(), "black_level": 0, "white_level": 65535, "cfa": None}})
    path = tmp_path / name
    tifffile.imwrite(path, data, photometric="rgb", description=desc)
    return path


def test_a_photo_is_restored_to_a_16bit_tiff_with_its_metadata(tmp_path):
    db, photo = _db(tmp_path), _photo(tmp_path)
    (out,) = restore_files([photo], db=db, out_dir=tmp_path / "out", log=lambda s: None)
    data = tifffile.imread(out.output)
    assert data.dtype == np.uint16 and data.shape == (64, 96, 3)
    with tifffile.TiffFile(out.output) as t:
        meta = json.loads(t.pages[0].description)["lenspsf"]
    assert meta["camera"] == "SimCam" and meta["restored"]["method"] == "wiener"
    assert not list((tmp_path / "out").glob(".*"))  # no temporary left behind


def test_a_photo_without_metadata_uses_the_only_camera_in_the_db(tmp_path):
    db, photo = _db(tmp_path), _photo(tmp_path, meta=False)
    (out,) = restore_files([photo], db=db, out_dir=tmp_path, log=lambda s: None)
    assert out.output.exists() and out.output != photo


def test_nearest_focus_is_used_with_a_warning(tmp_path):
    db, photo = _db(tmp_path, focus=(100, 200)), _photo(tmp_path, focus=110)
    with pytest.warns(calib.NearestFocusWarning):
        restore_files([photo], db=db, out_dir=tmp_path, log=lambda s: None)


def test_no_calibration_for_the_camera_lists_what_the_db_holds(tmp_path):
    db = _db(tmp_path, camera="OtherCam")
    photo = _photo(tmp_path)
    with pytest.raises(calib.CalibError, match="OtherCam"):
        restore_files([photo], db=db, out_dir=tmp_path, log=lambda s: None)


def test_an_image_size_not_matching_the_calibration_is_refused(tmp_path):
    db, photo = _db(tmp_path), _photo(tmp_path, size=(60, 90))
    with pytest.raises(RestoreError, match="90x60"):
        restore_files([photo], db=db, out_dir=tmp_path / "o", log=lambda s: None)
    assert not list((tmp_path / "o").iterdir())


def test_restoring_beside_the_photo_leaves_the_photo_untouched(tmp_path):
    db, photo = _db(tmp_path), _photo(tmp_path)
    before = photo.read_bytes()
    (out,) = restore_files([photo], db=db, log=lambda s: None)
    assert out.output.parent == photo.parent and out.output != photo
    assert photo.read_bytes() == before


def test_cli_restores_and_reports_bad_input_in_one_sentence(tmp_path, capsys):
    db, photo = _db(tmp_path), _photo(tmp_path)
    assert main(["restore", str(photo), "--db", str(db), "-o", str(tmp_path / "cli"), "--method", "tikhonov"]) == 0
    assert (tmp_path / "cli" / "shot_restored.tif").exists()
    assert main(["restore", str(tmp_path / "missing.tif"), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "missing.tif" in err and "Traceback" not in err


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB tmpfs (a disk too small for any restored photo); skipped where mounting is not permitted."""
    import shutil
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip("mounting a small tmpfs is not permitted here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_is_one_sentence_and_leaves_nothing_half_written(tmp_path, tiny_disk):
    db, photo = _db(tmp_path), _photo(tmp_path)  # a 64x96 RGB restore needs 36 KiB: fill the disk first
    (tiny_disk / "filler").write_bytes(b"\0" * 40 * 1024)
    with pytest.raises(RestoreError, match=r"no space left to write .*shot_restored\.tif") as exc:
        restore_files([photo], db=db, out_dir=tiny_disk, log=lambda s: None)
    assert str(exc.value).count(". ") == 0  # one sentence
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_cli_exits_2_on_a_full_disk(tmp_path, tiny_disk, capsys):
    db, photo = _db(tmp_path), _photo(tmp_path)
    (tiny_disk / "filler").write_bytes(b"\0" * 40 * 1024)
    assert main(["restore", str(photo), "--db", str(db), "-o", str(tiny_disk)]) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and "Traceback" not in err


def test_a_batch_whose_output_would_overwrite_one_of_its_inputs_is_refused(tmp_path):
    db = _db(tmp_path)
    first = _photo(tmp_path, "a.tif")
    second = _photo(tmp_path, "a_restored.tif")  # the output of a.tif
    before = second.read_bytes()
    with pytest.raises(RestoreError, match="overwrite the input"):
        restore_files([first, second], db=db, log=lambda s: None)
    assert second.read_bytes() == before
    assert not (tmp_path / "a_restored_restored.tif").exists()


def test_two_photos_restored_to_the_same_output_are_refused(tmp_path):
    db = _db(tmp_path)
    a, b = _photo(tmp_path, "a.tif"), _photo(tmp_path, "a.tiff")
    with pytest.raises(RestoreError, match="both be restored"):
        restore_files([a, b], db=db, out_dir=tmp_path / "o", log=lambda s: None)


def test_photos_restore_as_tasks_on_a_local_cluster_like_locally(tmp_path):
    distributed = pytest.importorskip("distributed")
    db = _db(tmp_path)
    photos = [_photo(tmp_path, f"p{i}.tif") for i in range(2)]
    local = restore_files(photos, db=db, out_dir=tmp_path / "local", log=lambda s: None)
    lines = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as lc:
        with distributed.Client(lc) as client:
            remote = restore_files(photos, db=db, out_dir=tmp_path / "remote", scheduler=client, log=lines.append)
    assert [r.source for r in remote] == photos and len(lines) == 2
    for a, b in zip(local, remote):
        assert np.array_equal(tifffile.imread(a.output), tifffile.imread(b.output))


def _float_photo(tmp_path, name, fill):
    img = scene("astronaut", (64, 96), rgb=True).astype(np.float32)
    fill(img)
    path = tmp_path / name
    tifffile.imwrite(path, img, photometric="rgb")
    return path


def test_a_photo_holding_nan_is_refused_naming_the_file(tmp_path):
    db = _db(tmp_path)
    photo = _float_photo(tmp_path, "nan.tif", lambda a: a.__setitem__((5, 7, 1), np.nan))
    with pytest.raises(RestoreError, match=r"nan\.tif.*NaN"):
        restore_files([photo], db=db, out_dir=tmp_path / "o", log=lambda s: None)
    assert not list((tmp_path / "o").glob("*"))


def test_a_photo_with_strongly_negative_values_is_refused_naming_the_file(tmp_path, capsys):
    db = _db(tmp_path)
    photo = _float_photo(tmp_path, "neg.tif", lambda a: a.__setitem__((slice(0, 8), slice(None)), -0.5))
    assert main(["restore", str(photo), "--db", str(db), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "neg.tif" in err and "below black" in err and "Traceback" not in err
    assert not list((tmp_path / "o").glob("*"))


def test_a_gamma_encoded_jpeg_restores_with_a_not_linear_warning(tmp_path):
    from PIL import Image

    db = _db(tmp_path)
    img = (scene("astronaut", (64, 96), rgb=True) * 255).astype(np.uint8)
    photo = tmp_path / "shot.jpg"
    Image.fromarray(img).save(photo, quality=95)
    with pytest.warns(calib.GammaEncodedWarning, match="shot.jpg"):
        (out,) = restore_files([photo], db=db, out_dir=tmp_path / "o", log=lambda s: None)
    assert out.output.exists()
