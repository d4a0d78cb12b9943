"""The linear image loader on files written here (TIFF, PNG, JPEG, a crafted DNG)."""
from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

import calib
from calib import CalibError, GammaEncodedWarning, LinearImage, ShotMetadata, load_linear

META = ShotMetadata(
    camera="SimCam 1", serial="SN42", lens="Sim 50/2", focal_length_mm=50.0, f_number=4.0,
    exposure_s=0.01, iso=200.0, focus_position=120, focus_distance_m=1.5, pixel_pitch_um=4.0,
)


def _write_sim_tiff(path, arr, *, black=256, white=16000, cfa=None, meta=META):
    block = {**meta.to_dict(), "black_level": black, "white_level": white, "cfa": cfa}
    tifffile.imwrite(
        path, arr, photometric="rgb" if arr.ndim == 3 else "minisblack",
        description=json.dumps({"lenspsf": block}),
        extratags=[(271, "s", 0, "Sim", True), (272, "s", 0, "SimCam 1", True)],
    )


def _write_dng(path, mosaic, *, black=512, white=15000):
    """A minimal DNG: one CFA IFD with the tags LibRaw needs (RGGB, identity matrix)."""
    tags = [
        (33421, "H", 2, (2, 2), True),                 # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),           # CFAPattern: R G / G B
        (50706, "B", 4, (1, 4, 0, 0), True),           # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),           # DNGBackwardVersion
        (50708, "s", 0, "Lenspsf TestCam", True),      # UniqueCameraModel
        (50714, "H", 1, (black,), True),               # BlackLevel
        (50717, "H", 1, (white,), True),               # WhiteLevel
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, (21,), True),                  # CalibrationIlluminant1: D65
        (33437, "2I", 1, (56, 10), True),              # FNumber
        (37386, "2I", 1, (50, 1), True),               # FocalLength
        (33434, "2I", 1, (1, 125), True),              # ExposureTime
        (271, "s", 0, "Lenspsf", True),
        (272, "s", 0, "TestCam", True),
    ]
    tifffile.imwrite(path, mosaic.astype(np.uint16), photometric=32803, extratags=tags, subfiletype=0)


def _bayer(h, w, r, g, b):
    m = np.full((h, w), g, np.uint16)
    m[0::2, 0::2] = r
    m[1::2, 1::2] = b
    return m


def test_sim_tiff_rgb_is_scaled_by_its_black_and_white_levels(tmp_path, rng):
    raw = rng.integers(256, 16000, size=(20, 30, 3), dtype=np.uint16)
    _write_sim_tiff(tmp_path / "a.tif", raw)
    img = load_linear(tmp_path / "a.tif")
    assert isinstance(img, LinearImage)
    assert img.data.dtype == np.float32 and img.data.shape == (20, 30, 3)
    assert img.channels == ("R", "G", "B") and img.linear and img.cfa is None
    np.testing.assert_allclose(img.data, (raw - 256.0) / (16000 - 256), rtol=1e-6, atol=1e-7)
    assert (img.black_level, img.white_level) == (256, 16000)


def test_sim_tiff_metadata_comes_from_its_json_description(tmp_path):
    _write_sim_tiff(tmp_path / "a.tif", np.zeros((8, 8, 3), np.uint16))
    assert load_linear(tmp_path / "a.tif").metadata == META


def test_saturated_mask_marks_pixels_at_the_white_level(tmp_path):
    raw = np.full((10, 10, 3), 1000, np.uint16)
    raw[3, 4, 1] = 16000
    _write_sim_tiff(tmp_path / "a.tif", raw)
    sat = load_linear(tmp_path / "a.tif").saturated
    assert sat.shape == (10, 10, 3) and sat.sum() == 1 and sat[3, 4, 1]


def test_mosaic_tiff_demosaics_rggb_into_the_right_channels(tmp_path):
    _write_sim_tiff(tmp_path / "m.tif", _bayer(16, 16, 2256, 4256, 8256), black=256, white=16256, cfa="RGGB")
    img = load_linear(tmp_path / "m.tif")
    assert img.channels == ("R", "G", "B") and img.cfa is None
    np.testing.assert_allclose(img.data[4:-4, 4:-4].reshape(-1, 3).mean(0), [0.125, 0.25, 0.5], atol=1e-4)


def test_mosaic_tiff_kept_undemosaiced_on_request(tmp_path):
    mosaic = _bayer(8, 8, 2256, 4256, 8256)
    _write_sim_tiff(tmp_path / "m.tif", mosaic, black=256, white=16256, cfa="RGGB")
    img = load_linear(tmp_path / "m.tif", demosaic="none")
    assert img.channels == ("CFA",) and img.cfa == "RGGB" and img.data.shape == (8, 8, 1)
    np.testing.assert_allclose(img.data[:2, :2, 0], [[0.125, 0.25], [0.25, 0.5]], atol=1e-6)


def test_16bit_png_is_linear_and_rgb_ordered(tmp_path):
    rgb = np.zeros((6, 7, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1000, 30000, 60000
    cv2.imwrite(str(tmp_path / "a.png"), rgb[:, :, ::-1])
    img = load_linear(tmp_path / "a.png")
    assert img.linear and img.channels == ("R", "G", "B")
    np.testing.assert_allclose(img.data[0, 0], np.array([1000, 30000, 60000]) / 65535, rtol=1e-6)


def test_float_tiff_is_taken_as_linear_0_to_1(tmp_path, rng):
    arr = rng.random((5, 6)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    img = load_linear(tmp_path / "f.tif")
    assert img.channels == ("Y",)
    np.testing.assert_array_equal(img.data[:, :, 0], arr)


def _write_jpeg_with_exif(path):
    im = Image.fromarray(np.full((16, 16, 3), 128, np.uint8))
    exif = Image.Exif()
    exif[271], exif[272] = "Acme", "Acme Shooter"
    ifd = exif.get_ifd(0x8769)
    ifd[33437] = 2.8          # FNumber
    ifd[37386] = 35.0         # FocalLength
    ifd[42036] = "Acme 35mm"  # LensModel
    ifd[42033] = "XYZ123"     # BodySerialNumber
    ifd[34855] = 400          # ISO
    im.save(path, quality=100, exif=exif)


def test_8bit_jpeg_warns_and_is_linearised_with_the_srgb_curve(tmp_path):
    _write_jpeg_with_exif(tmp_path / "a.jpg")
    with pytest.warns(GammaEncodedWarning, match="not linear"):
        img = load_linear(tmp_path / "a.jpg")
    assert img.linear
    expected = ((128 / 255 + 0.055) / 1.055) ** 2.4
    assert abs(float(img.data.mean()) - expected) < 2e-3


def test_8bit_kept_gamma_encoded_when_asked(tmp_path):
    _write_jpeg_with_exif(tmp_path / "a.jpg")
    with pytest.warns(GammaEncodedWarning):
        img = load_linear(tmp_path / "a.jpg", linearize=False)
    assert not img.linear
    assert abs(float(img.data.mean()) - 128 / 255) < 2e-3


def test_jpeg_metadata_comes_from_exif(tmp_path):
    _write_jpeg_with_exif(tmp_path / "a.jpg")
    with pytest.warns(GammaEncodedWarning):
        meta = load_linear(tmp_path / "a.jpg").metadata
    assert (meta.camera, meta.lens, meta.serial) == ("Acme Shooter", "Acme 35mm", "XYZ123")
    assert (meta.f_number, meta.focal_length_mm, meta.iso) == (2.8, 35.0, 400.0)


def test_given_metadata_overrides_the_file(tmp_path):
    _write_sim_tiff(tmp_path / "a.tif", np.zeros((4, 4, 3), np.uint16))
    other = ShotMetadata(camera="Other")
    assert load_linear(tmp_path / "a.tif", metadata=other).metadata == other


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(CalibError, match="nope.tif"):
        load_linear(tmp_path / "nope.tif")


def test_truncated_tiff_is_a_calib_error_naming_the_file(tmp_path, rng):
    _write_sim_tiff(tmp_path / "a.tif", rng.integers(0, 9000, (64, 64, 3), dtype=np.uint16))
    blob = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(CalibError, match="cut.tif"):
        load_linear(tmp_path / "cut.tif")


def test_dng_is_developed_by_rawpy_with_its_own_levels(tmp_path):
    _write_dng(tmp_path / "a.dng", _bayer(64, 96, 2000, 4000, 6000))
    img = load_linear(tmp_path / "a.dng")
    assert img.channels == ("R", "G", "B") and img.linear
    assert (img.black_level, img.white_level) == (512, 15000)
    centre = img.data[8:-8, 8:-8].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(centre, (np.array([2000, 4000, 6000]) - 512) / (15000 - 512), atol=1e-4)


def test_dng_metadata_comes_from_its_tiff_tags(tmp_path):
    _write_dng(tmp_path / "a.dng", _bayer(32, 32, 2000, 4000, 6000))
    meta = load_linear(tmp_path / "a.dng").metadata
    assert meta.camera == "Lenspsf TestCam"
    assert (meta.f_number, meta.focal_length_mm, meta.exposure_s) == (5.6, 50.0, 0.008)


def test_dng_saturation_is_spread_by_the_demosaic(tmp_path):
    mosaic = _bayer(32, 32, 2000, 4000, 6000)
    mosaic[16, 16] = 15000
    _write_dng(tmp_path / "a.dng", mosaic)
    sat = load_linear(tmp_path / "a.dng").saturated
    assert sat[15:18, 15:18].all() and not sat[:10].any()


def test_dng_mosaic_kept_on_request(tmp_path):
    _write_dng(tmp_path / "a.dng", _bayer(32, 32, 2000, 4000, 6000))
    img = load_linear(tmp_path / "a.dng", demosaic="none")
    assert img.cfa == "RGGB" and img.channels == ("CFA",)
    np.testing.assert_allclose(img.data[0, 0, 0], (2000 - 512) / (15000 - 512), rtol=1e-5)


def test_truncated_dng_is_a_calib_error_naming_the_file(tmp_path, rng):
    _write_dng(tmp_path / "a.dng", rng.integers(600, 9000, (256, 256)).astype(np.uint16))
    blob = (tmp_path / "a.dng").read_bytes()
    (tmp_path / "cut.dng").write_bytes(blob[:4000])
    with pytest.raises(CalibError, match="cut.dng"):
        load_linear(tmp_path / "cut.dng")


def test_raw_without_rawpy_names_the_raw_extra(tmp_path, monkeypatch):
    _write_dng(tmp_path / "a.dng", _bayer(16, 16, 2000, 4000, 6000))
    monkeypatch.setitem(sys.modules, "rawpy", None)  # makes ``import rawpy`` fail
    with pytest.raises(CalibError, match=r"'raw' extra"):
        load_linear(tmp_path / "a.dng")


def test_unknown_demosaic_is_refused():
    with pytest.raises(CalibError, match="demosaic"):
        load_linear("x.dng", demosaic="magic")


def test_luminance_channel_of_rgb(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 1] = 65535
    cv2.imwrite(str(tmp_path / "g.png"), rgb)
    img = load_linear(tmp_path / "g.png")
    np.testing.assert_allclose(img.channel("Y"), 0.7152, rtol=1e-5)
    assert calib.load_linear is load_linear
