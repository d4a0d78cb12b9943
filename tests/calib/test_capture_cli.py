"""``lenspsf capture`` end to end on libgphoto2's virtual camera."""
from __future__ import annotations

import errno
import json

import pytest
import targets
from _vcam import vcam  # noqa: F401 - fixture

import calib._gphoto2_backend as backend
from calib import load_session
from calib._cli.main import main


@pytest.fixture
def chart(tmp_path):
    p = tmp_path / "edges.json"
    targets.save_layout(targets.make_layout("edges"), p)
    return p


def _capture(*extra):
    return main(["capture", "--camera", "gphoto2", "--no-prompt", *map(str, extra)])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("lenspsf: error: ")
    return err[-1]


def test_capture_shoots_the_session_and_prints_a_line_per_shot(vcam, chart, tmp_path, capsys):
    out = tmp_path / "captures" / "a"
    assert _capture("--chart", chart, "--repeat", 2, "--darks", 1, "--fnumber", "8", "--out", out) == 0
    err = capsys.readouterr().err
    assert [ln[:5] for ln in err.splitlines() if ln.startswith("[")] == ["[1/3]", "[2/3]", "[3/3]"]
    s = load_session(out)
    assert len(s.shots) == 3 and s.complete and s.verify() == []
    assert s.settings["applied"] == {"fnumber": "f/8"}


def test_missing_chart_file_exits_2_naming_it(vcam, tmp_path, capsys):
    assert _capture("--chart", tmp_path / "nope.json", "--out", tmp_path / "o") == 2
    assert "nope.json does not exist" in _error_line(capsys)


def test_file_that_is_not_a_layout_exits_2(vcam, tmp_path, capsys):
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({"hello": "world"}))
    assert _capture("--chart", bogus, "--out", tmp_path / "o") == 2
    assert "bogus.json" in _error_line(capsys)


def test_focus_spec_that_does_not_parse_exits_2(vcam, chart, tmp_path, capsys):
    assert _capture("--chart", chart, "--focus", "0:400", "--out", tmp_path / "o") == 2
    assert "focus spec '0:400' does not parse" in _error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_output_folder_that_is_not_writable_exits_2(vcam, chart, tmp_path, capsys):
    blocker = tmp_path / "plainfile"
    blocker.write_text("x")
    assert _capture("--chart", chart, "--out", blocker / "session") == 2
    assert "output folder" in _error_line(capsys)


def test_off_list_fnumber_exits_2_listing_the_choices(vcam, chart, tmp_path, capsys):
    assert _capture("--chart", chart, "--fnumber", "1.0", "--out", tmp_path / "o") == 2
    line = _error_line(capsys)
    assert "'1.0' is not a valid f-number" in line and "f/2.8" in line


def test_full_disk_exits_2_and_keeps_a_valid_manifest(vcam, chart, tmp_path, capsys, monkeypatch):
    real, calls = backend.atomic_write, []

    def filling_disk(path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)

    monkeypatch.setattr(backend, "atomic_write", filling_disk)
    out = tmp_path / "o"
    assert _capture("--chart", chart, "--repeat", 4, "--out", out) == 2
    assert "the disk is full" in _error_line(capsys)
    s = load_session(out)
    assert len(s.shots) == 2 and not s.complete and s.verify() == []


def test_resume_after_a_failure_finishes_without_duplicates(vcam, chart, tmp_path, monkeypatch, capsys):
    out = tmp_path / "o"
    real, calls = backend.atomic_write, []

    def filling_disk(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)

    monkeypatch.setattr(backend, "atomic_write", filling_disk)
    assert _capture("--chart", chart, "--repeat", 3, "--out", out) == 2
    monkeypatch.setattr(backend, "atomic_write", real)
    assert _capture("--chart", chart, "--repeat", 3, "--out", out) == 2  # no --resume
    assert "--resume" in _error_line(capsys)
    assert _capture("--chart", chart, "--repeat", 3, "--out", out, "--resume") == 0
    keys = [r.key for r in load_session(out).shots]
    assert len(keys) == 3 == len(set(keys))


def test_no_camera_exits_2_with_what_to_do(chart, tmp_path, monkeypatch, capsys):
    from _vcam import use_real_usb_only

    use_real_usb_only(monkeypatch)
    assert _capture("--chart", chart, "--out", tmp_path / "o") == 2
    assert "no camera was found" in _error_line(capsys)
