"""Capture sessions on libgphoto2's virtual camera: manifest, resume, failures."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import targets
from _vcam import vcam  # noqa: F401 - fixture

import calib._gphoto2_backend as backend
import calib._session as session_mod
from calib import (
    CalibError,
    GPhoto2Camera,
    load_charts,
    load_session,
    parse_focus_spec,
    run_session,
)
from calib._session import sha256_of

FAST = {"quiet_s": 0.1, "settle_s": 0.0}


@pytest.fixture
def charts(tmp_path):
    paths = []
    for kind in ("edges", "noise"):
        p = tmp_path / f"{kind}.json"
        targets.save_layout(targets.make_layout(kind), p)
        paths.append(p)
    return load_charts(paths)


def _quiet(_line: str) -> None:
    pass


def _disk_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != "session.json"}


def _manifest_files(folder: Path) -> set[str]:
    return {f.name for s in load_session(folder).shots for f in s.files}


# ----------------------------------------------------------------------- focus spec


@pytest.mark.parametrize(
    ("spec", "positions"),
    [("0:400:50", (0, 50, 100, 150, 200, 250, 300, 350, 400)), ("0:100:40", (0, 40, 80)),
     ("0,120,240", (0, 120, 240)), ("75", (75,)), ("current", None), (" Current ", None)],
)
def test_focus_spec_parses_ranges_lists_and_current(spec, positions):
    assert parse_focus_spec(spec).positions == positions


@pytest.mark.parametrize("spec", ["0:400", "a,b", "0:400:x", "1;2", "", "0::50", "1.5"])
def test_focus_spec_that_does_not_parse_says_how_to_write_one(spec):
    with pytest.raises(CalibError, match=r"does not parse; use a range START:STOP:STEP"):
        parse_focus_spec(spec)


@pytest.mark.parametrize("spec", ["400:0:50", "0:100:0", "-50,0", "10,10"])
def test_focus_spec_with_impossible_positions_is_refused(spec):
    with pytest.raises(CalibError, match=r"focus spec"):
        parse_focus_spec(spec)


# ------------------------------------------------------------------------- sessions


def test_session_downloads_every_file_and_the_manifest_matches(vcam, charts, tmp_path):
    out = tmp_path / "captures" / "s1"
    with GPhoto2Camera(**FAST) as cam:
        s = run_session(cam, out, charts=charts, focus=parse_focus_spec("current"),
                        repeat=2, darks=1, settings={"fnumber": "8"}, progress=_quiet)
    assert s.complete and len(s.shots) == 2 * 2 + 1
    assert [r.kind for r in s.shots].count("dark") == 1
    assert {r.chart_id for r in s.shots if r.kind == "chart"} == {c.id for c in charts}
    assert _disk_files(out) == _manifest_files(out)
    for shot in s.shots:
        for f in shot.files:
            assert sha256_of(out / f.name) == f.sha256
            assert (out / f.name).stat().st_size == f.bytes
    assert s.verify() == []


def test_manifest_records_camera_settings_and_exposure(vcam, charts, tmp_path):
    with GPhoto2Camera(**FAST) as cam:
        s = run_session(cam, tmp_path / "s", charts=charts[:1], focus=parse_focus_spec("current"),
                        settings={"fnumber": "8", "shutter": "1/10"}, lens="50mm f/1.8",
                        progress=_quiet)
    assert (s.camera["model"], s.camera["serial"], s.camera["lens"]) == ("Nikon DSC D750", "0.1", "50mm f/1.8")
    assert s.settings["applied"] == {"fnumber": "f/8", "shutter": "0.1000s"}
    assert s.shots[0].exposure["fnumber"] == "f/8"
    doc = json.loads((tmp_path / "s" / "session.json").read_text())
    assert doc["format"] == "lenspsf-session" and doc["shots"][0]["files"][0]["sha256"]


def test_progress_shows_one_line_per_shot(vcam, charts, tmp_path):
    lines = []
    with GPhoto2Camera(**FAST) as cam:
        run_session(cam, tmp_path / "s", charts=charts, focus=parse_focus_spec("current"),
                    repeat=1, progress=lines.append)
    assert [ln.split("]")[0] for ln in lines] == ["[1/2", "[2/2"]


def test_interrupted_session_keeps_finished_shots_and_resumes_without_duplicates(vcam, charts, tmp_path):
    out = tmp_path / "s"
    seen = []

    def ctrl_c_after_three(line):
        seen.append(line)
        if len(seen) == 3:
            raise KeyboardInterrupt

    kwargs = {"charts": charts, "focus": parse_focus_spec("current"), "repeat": 3}
    with GPhoto2Camera(**FAST) as cam, pytest.raises(KeyboardInterrupt):
        run_session(cam, out, progress=ctrl_c_after_three, **kwargs)
    first = load_session(out)
    assert len(first.shots) == 3 and not first.complete
    with GPhoto2Camera(**FAST) as cam:
        s = run_session(cam, out, resume=True, progress=_quiet, **kwargs)
    keys = [r.key for r in s.shots]
    assert len(keys) == 6 and len(set(keys)) == 6 and s.complete
    assert s.shots[:3] == first.shots
    assert _disk_files(out) == _manifest_files(out)


def test_resume_replaces_files_of_a_shot_that_was_cut_short(vcam, charts, tmp_path):
    out = tmp_path / "s"
    kwargs = {"charts": charts[:1], "focus": parse_focus_spec("current"), "repeat": 2}
    with GPhoto2Camera(**FAST) as cam:
        run_session(cam, out, progress=_quiet, **kwargs)
    doc = json.loads((out / "session.json").read_text())
    lost = doc["shots"].pop()  # as if the manifest write after this shot never happened
    doc["complete"] = False
    (out / "session.json").write_text(json.dumps(doc))
    (out / lost["files"][0]["name"]).rename(out / (lost["files"][0]["name"].split("__")[0] + "__OLD.JPG"))
    with GPhoto2Camera(**FAST) as cam:
        s = run_session(cam, out, resume=True, progress=_quiet, **kwargs)
    assert len(s.shots) == 2
    assert _disk_files(out) == _manifest_files(out)


def test_existing_session_is_not_overwritten_without_resume(vcam, charts, tmp_path):
    with GPhoto2Camera(**FAST) as cam:
        run_session(cam, tmp_path / "s", charts=charts[:1], focus=parse_focus_spec("current"), progress=_quiet)
        with pytest.raises(CalibError, match=r"already holds a capture session; continue it with --resume"):
            run_session(cam, tmp_path / "s", charts=charts[:1], focus=parse_focus_spec("current"), progress=_quiet)


def test_resume_with_another_camera_is_refused(vcam, charts, tmp_path):
    out = tmp_path / "s"
    kwargs = {"charts": charts[:1], "focus": parse_focus_spec("current"), "progress": _quiet}
    with GPhoto2Camera(**FAST) as cam:
        run_session(cam, out, **kwargs)
    doc = json.loads((out / "session.json").read_text())
    doc["camera"]["serial"] = "9999"
    (out / "session.json").write_text(json.dumps(doc))
    with GPhoto2Camera(**FAST) as cam, pytest.raises(CalibError, match=r"serial 9999"):
        run_session(cam, out, resume=True, **kwargs)


def test_focus_positions_without_a_drive_and_no_prompt_fail_before_shooting(vcam, charts, tmp_path):
    with GPhoto2Camera(**FAST) as cam, pytest.raises(CalibError, match=r"no focus drive.*--focus current"):
        run_session(cam, tmp_path / "s", charts=charts, focus=parse_focus_spec("0,100"), progress=_quiet)
    assert not (tmp_path / "s").exists()


def test_focus_positions_without_a_drive_prompt_for_focusing_by_hand(vcam, charts, tmp_path):
    asked = []
    with GPhoto2Camera(**FAST) as cam:
        s = run_session(cam, tmp_path / "s", charts=charts[:1], focus=parse_focus_spec("0,100"),
                        prompt=asked.append, progress=_quiet)
    assert [m for m in asked if "by hand" in m] == [
        "set the focus by hand to setting 0, then press Enter",
        "set the focus by hand to setting 100, then press Enter"]
    assert [(r.focus_position, r.focus_by_hand) for r in s.shots] == [(0, True), (100, True)]


def test_several_charts_prompt_a_swap_and_darks_a_lens_cap(vcam, charts, tmp_path):
    asked = []
    with GPhoto2Camera(**FAST) as cam:
        run_session(cam, tmp_path / "s", charts=charts, focus=parse_focus_spec("current"),
                    darks=1, prompt=asked.append, progress=_quiet)
    assert [m.split(" ")[0:3] for m in asked] == [
        ["put", "chart", "edges"], ["put", "chart", "noise"], ["put", "the", "lens"]]


def _fail_on_call(n, real):
    calls = []

    def writer(path):
        calls.append(path)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)

    return writer


def test_disk_full_during_a_download_leaves_a_valid_manifest_of_finished_shots(vcam, charts, tmp_path, monkeypatch):
    out = tmp_path / "s"
    monkeypatch.setattr(backend, "atomic_write", _fail_on_call(3, backend.atomic_write))
    with GPhoto2Camera(**FAST) as cam, pytest.raises(OSError) as err:
        run_session(cam, out, charts=charts, focus=parse_focus_spec("current"), repeat=2, progress=_quiet)
    assert err.value.errno == errno.ENOSPC
    s = load_session(out)
    assert len(s.shots) == 2 and s.verify() == []
    assert _disk_files(out) == _manifest_files(out)  # no half-written file left behind


def test_disk_full_while_writing_the_manifest_keeps_the_previous_one(vcam, charts, tmp_path, monkeypatch):
    out = tmp_path / "s"
    # Manifest writes: 1 at the start, then one per shot; the 4th is after shot 3.
    monkeypatch.setattr(session_mod, "atomic_write", _fail_on_call(4, session_mod.atomic_write))
    with GPhoto2Camera(**FAST) as cam, pytest.raises(OSError):
        run_session(cam, out, charts=charts, focus=parse_focus_spec("current"), repeat=2, progress=_quiet)
    s = load_session(out)
    assert len(s.shots) == 2 and s.verify() == []
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_output_folder_that_cannot_be_created_is_named(vcam, charts, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with GPhoto2Camera(**FAST) as cam, pytest.raises(CalibError, match=r"output folder .*file/s cannot be created"):
        run_session(cam, blocker / "s", charts=charts, focus=parse_focus_spec("current"), progress=_quiet)


def test_chart_given_twice_is_refused(tmp_path):
    p = tmp_path / "edges.json"
    targets.save_layout(targets.make_layout("edges"), p)
    with pytest.raises(CalibError, match="given twice"):
        load_charts([p, p])


def test_missing_chart_file_is_a_target_error(tmp_path):
    with pytest.raises(targets.TargetError, match="nope.json"):
        load_charts([tmp_path / "nope.json"])
