import os

import pytest

from calib._cli.main import main
from targets import load_layout


def test_make_writes_the_chart_and_its_layout(tmp_path, capsys):
    out = tmp_path / "dots.pdf"
    assert main(["targets", "make", "dots", "--dot-mm", "0.5", "--paper", "letter", "--landscape",
                 "-o", str(out)]) == 0
    layout = load_layout(tmp_path / "dots.json")
    assert layout.kind == "dots" and layout.page_mm == pytest.approx((279.4, 215.9))
    assert out.stat().st_size > 0
    assert "dots.json" in capsys.readouterr().out


def test_make_png_for_a_monitor(tmp_path):
    from PIL import Image

    out = tmp_path / "screen.png"
    assert main(["targets", "make", "edges", "--screen", "800x600px", "--pixel-pitch-mm", "0.3",
                 "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (800, 600)


@pytest.mark.parametrize(("args", "message"), [
    (["targets", "make", "circles"], "unknown chart kind"),
    (["targets", "make", "dots", "--paper", "B7"], "unknown paper size"),
    (["targets", "make", "dots", "--dpi", "0"], "--dpi"),
    (["targets", "make", "dots", "--dpi", "-300"], "--dpi"),
    (["targets", "make", "dots", "--dot-mm", "0.05"], "dot diameter"),
    (["targets", "make", "edges", "--cell-mm", "1"], "does not apply"),
])
def test_bad_input_is_one_sentence_and_leaves_no_file(tmp_path, capsys, args, message):
    code = main([*args, "-o", str(tmp_path / "chart.pdf")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert message in err[-1] and err[-1].startswith("lenspsf: error:")
    assert os.listdir(tmp_path) == []


def test_missing_output_folder_is_one_sentence(tmp_path, capsys):
    code = main(["targets", "make", "edges", "-o", str(tmp_path / "nope" / "chart.pdf")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_output_folder_is_one_sentence(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main(["targets", "make", "edges", "-o", str(ro / "chart.pdf")])
        assert code == 2
        assert "not writable" in capsys.readouterr().err
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


def test_targets_make_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["targets", "make", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "100 %" in text and "--max-psf-px" in text and "--screen" in text
