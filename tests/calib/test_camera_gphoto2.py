"""GPhoto2Camera against libgphoto2's own virtual camera (a 'Nikon DSC D750')."""
from __future__ import annotations

import pytest
from _vcam import use_real_usb_only, vcam  # noqa: F401 - fixture

from calib import CalibError, GPhoto2Camera, check_image_file, detect_cameras
from calib._gphoto2_backend import (
    _CanonDrive,
    _explain,
    call_with_retry,
    match_choice,
)

gp = pytest.importorskip("gphoto2")

FAST = {"quiet_s": 0.1, "settle_s": 0.0}


def test_detect_finds_the_virtual_camera(vcam):
    found = detect_cameras()
    assert [(c.model, c.port) for c in found] == [("Nikon DSC D750", "usb:001,001")]


def test_open_by_model_reports_model_serial_and_port(vcam):
    with GPhoto2Camera(model="d750", **FAST) as cam:
        info = cam.info()
    assert (info.backend, info.model, info.port, info.serial) == (
        "gphoto2", "Nikon DSC D750", "usb:001,001", "0.1")


def test_open_by_port_works(vcam):
    with GPhoto2Camera(port="usb:001,001", **FAST) as cam:
        assert cam.info().port == "usb:001,001"


def test_unknown_model_is_refused_listing_what_was_found(vcam):
    with pytest.raises(CalibError, match=r"no camera matches model 'EOS R5'.*Nikon DSC D750 at usb:001,001"):
        GPhoto2Camera(model="EOS R5", **FAST)


def test_no_camera_connected_is_one_clear_sentence(monkeypatch):
    use_real_usb_only(monkeypatch)
    with pytest.raises(CalibError, match=r"no camera was found.*connect it by USB"):
        GPhoto2Camera(**FAST)


def test_settings_list_the_cameras_own_choices(vcam):
    with GPhoto2Camera(**FAST) as cam:
        fnum = cam.settings()["f-number"]
    assert fnum.kind == "choice" and "f/8" in fnum.choices and "f/2.8" in fnum.choices


def test_exposure_settings_are_set_and_read_back(vcam):
    with GPhoto2Camera(**FAST) as cam:
        assert cam.set("fnumber", "8") == "f/8"
        assert cam.set("shutter", "1/10") == "0.1000s"
        fresh = cam.settings()  # read again from the body
        assert fresh["f-number"].value == "f/8"
        assert fresh["shutterspeed"].value == "0.1000s"
        assert cam.exposure()["fnumber"] == "f/8"


def test_off_list_value_is_refused_before_it_reaches_libgphoto2(vcam):
    # Sending 'f/99' to the virtual camera crashes the process (segfault), so
    # reaching the assertions below proves the value was never sent.
    with GPhoto2Camera(**FAST) as cam:
        before = cam.settings()["f-number"].value
        with pytest.raises(CalibError, match=r"'f/99' is not a valid f-number; .*f/2\.8, f/3\.5"):
            cam.set("fnumber", "f/99")
        assert cam.settings()["f-number"].value == before


def test_setting_the_body_lacks_is_named(vcam):
    with GPhoto2Camera(**FAST) as cam:
        with pytest.raises(CalibError, match=r"has no iso setting"):
            cam.set("iso", "100")


def test_missing_focus_drive_is_reported_clearly(vcam):
    with GPhoto2Camera(**FAST) as cam:
        assert not cam.info().has_focus_drive
        with pytest.raises(CalibError, match=r"has no focus drive.*--focus current"):
            cam.focus(100)


def test_trigger_and_events_download_the_file_the_camera_adds(vcam, tmp_path):
    with GPhoto2Camera(**FAST) as cam:
        files = cam.capture(tmp_path, prefix="s1__")
    assert len(files) == 1
    assert files[0].name.startswith("s1__") and files[0].suffix.upper() == ".JPG"
    # The virtual camera's shot is a copy of the JPEG in VCAMERADIR.
    assert files[0].read_bytes() == vcam.read_bytes()


def test_each_shot_delivers_its_own_file(vcam, tmp_path):
    with GPhoto2Camera(**FAST) as cam:
        names = [p.name for i in range(3) for p in cam.capture(tmp_path, prefix=f"s{i}__")]
    assert len(set(names)) == 3
    for n in names:
        check_image_file(tmp_path / n)


def test_closed_camera_refuses_use_instead_of_crashing(vcam):
    cam = GPhoto2Camera(**FAST)
    cam.close()
    cam.close()
    with pytest.raises(CalibError, match="closed"):
        cam.settings()


def test_busy_camera_is_retried_with_growing_delays():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise gp.GPhoto2Error(gp.GP_ERROR_CAMERA_BUSY)
        return "ok"

    assert call_with_retry("trigger", flaky, retries=5, delay_s=0.01, sleep=waits.append) == "ok"
    assert waits == [0.01, 0.02]


def test_camera_busy_after_every_retry_is_one_sentence():
    def busy():
        raise gp.GPhoto2Error(gp.GP_ERROR_CAMERA_BUSY)

    with pytest.raises(CalibError, match=r"could not trigger: the camera stayed busy.*--resume"):
        call_with_retry("trigger", busy, retries=2, delay_s=0.0, sleep=lambda s: None)


def test_claimed_camera_names_the_volume_monitor_and_the_fix():
    msg = str(_explain(gp.GPhoto2Error(gp.GP_ERROR_IO_USB_CLAIM), "open the camera"))
    assert "gvfs-gphoto2-volume-monitor" in msg and "gio mount -s gphoto2" in msg


@pytest.mark.parametrize(
    ("choices", "want_raw", "want_both"),
    [
        (("Large Fine JPEG", "Large Normal JPEG", "Small Fine JPEG", "RAW + Large Fine JPEG",
          "RAW", "mRAW", "sRAW", "cRAW"), "RAW", "RAW + Large Fine JPEG"),
        (("JPEG Basic", "JPEG Normal", "JPEG Fine", "NEF (Raw)", "NEF+Basic", "NEF+Normal",
          "NEF+Fine"), "NEF (Raw)", "NEF+Fine"),
        (("Standard", "Fine", "Extra Fine", "RAW", "RAW+JPEG"), "RAW", "RAW+JPEG"),
    ],
)
def test_format_is_found_by_pattern_in_each_bodys_labels(choices, want_raw, want_both):
    assert match_choice("format", "raw", choices) == want_raw
    assert match_choice("format", "raw+jpeg", choices) == want_both


def test_canon_drive_counts_single_steps_and_releases_between_them():
    sent = []
    drive = _CanonDrive(lambda n, v: sent.append(v), settle_s=0.0, rack_moves=2, sleep=lambda s: None)
    drive.step(2)
    drive.step(-1)
    assert sent == ["Far 1", "None", "Far 1", "None", "Near 1", "None"]


def test_truncated_download_is_detected(tmp_path, vcam):
    broken = tmp_path / "x.jpg"
    broken.write_bytes(vcam.read_bytes()[: len(vcam.read_bytes()) // 2])
    with pytest.raises(CalibError, match="not a readable image"):
        check_image_file(broken)


def test_empty_download_is_detected(tmp_path):
    empty = tmp_path / "x.jpg"
    empty.write_bytes(b"")
    with pytest.raises(CalibError, match="is empty"):
        check_image_file(empty)
