"""``lenspsf psf``: the npz it writes and its one-sentence errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from calib._cli.main import main

from test_pattern_register import optics_psf, photograph, random_pattern, rel_l2, system_psf, truth_at, truth_homography


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 16-bit linear TIFF photo of a pattern, the pattern PNG, and the sensor-grid truth."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("psfcli")
    pattern = random_pattern(rng)
    system = system_psf(optics_psf("gauss"))
    photo = photograph(pattern, truth_homography(pattern.shape), system, rng)
    tifffile.imwrite(folder / "photo.tif", np.round(np.clip(photo, 0, 1) * 65535).astype(np.uint16))
    cv2.imwrite(str(folder / "pattern.png"), (pattern * 255).astype(np.uint8))
    return folder, truth_at(system, 4, 1)


def test_psf_writes_the_documented_keys(files, capsys):
    folder, truth = files
    out = folder / "psf.npz"
    rc = main(["psf", str(folder / "photo.tif"), "--pattern", str(folder / "pattern.png"),
               "--oversample", "1", "--size", "9", "-o", str(out)])
    assert rc == 0
    with np.load(out) as z:
        assert {"psf", "oversample", "homography", "fwhm_px"} <= set(z.files)
        assert int(z["oversample"]) == 1 and z["homography"].shape == (3, 3)
        assert abs(float(z["psf"].sum()) - 1) < 1e-5
        assert rel_l2(z["psf"], truth) < 0.05
    printed = capsys.readouterr().out
    assert "FWHM" in printed and str(out) in printed


def test_photo_without_the_pattern_exits_2_without_a_file(tmp_path, files, capsys):
    folder, _ = files
    blank = np.full((200, 200), 30000, np.uint16)
    tifffile.imwrite(tmp_path / "blank.tif", blank)
    out = tmp_path / "psf.npz"
    rc = main(["psf", str(tmp_path / "blank.tif"), "--pattern", str(folder / "pattern.png"), "-o", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "not found" in err and "--roi" in err


def test_unreadable_pattern_exits_2(tmp_path, files, capsys):
    folder, _ = files
    bad = tmp_path / "pattern.png"
    bad.write_bytes(b"not a png")
    rc = main(["psf", str(folder / "photo.tif"), "--pattern", str(bad), "-o", str(tmp_path / "psf.npz")])
    assert rc == 2 and "pattern file" in capsys.readouterr().err


def test_unreadable_photo_exits_2(tmp_path, files, capsys):
    folder, _ = files
    rc = main(["psf", str(tmp_path / "missing.tif"), "--pattern", str(folder / "pattern.png"),
               "-o", str(tmp_path / "psf.npz")])
    assert rc == 2 and "missing.tif" in capsys.readouterr().err


def test_roi_outside_the_photo_exits_2(tmp_path, files, capsys):
    folder, _ = files
    rc = main(["psf", str(folder / "photo.tif"), "--pattern", str(folder / "pattern.png"),
               "--roi", "250,0,200,200", "-o", str(tmp_path / "psf.npz")])
    assert rc == 2 and "ROI" in capsys.readouterr().err
    assert not (tmp_path / "psf.npz").exists()


def test_oversample_below_1_exits_2(tmp_path, files, capsys):
    folder, _ = files
    rc = main(["psf", str(folder / "photo.tif"), "--pattern", str(folder / "pattern.png"),
               "--oversample", "0", "-o", str(tmp_path / "psf.npz")])
    assert rc == 2 and "oversample" in capsys.readouterr().err
