"""``lenspsf report`` as a user runs it."""
from __future__ import annotations

from calib._cli.main import main

from _report_db import one_focus_db


def test_report_command_writes_the_file_and_exits_0(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--db", str(one_focus_db()), "-o", str(out)]) == 0
    assert out.is_file() and out.read_text(encoding="utf-8").rstrip().endswith("</html>")
    cap = capsys.readouterr()
    assert str(out) in cap.out
    assert "report: analysing calibration" in cap.err  # progress, one line per step


def test_missing_database_exits_2_with_one_sentence(tmp_path, capsys):
    missing = tmp_path / "none.psfdb"
    assert main(["report", "--db", str(missing), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lenspsf: error:")
    assert str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_missing_output_folder_exits_2_and_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "report.html"
    assert main(["report", "--db", str(one_focus_db()), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out.parent) in err
    assert list(tmp_path.iterdir()) == []


def test_report_is_listed_in_lenspsf_help(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "report" in capsys.readouterr().out
