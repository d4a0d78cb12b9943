import errno

import pytest

from calib._cli.main import build_parser, explain


def test_help_lists_every_registered_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    assert "lenspsf" in capsys.readouterr().out


def test_disk_full_is_one_sentence():
    exc = OSError(errno.ENOSPC, "No space left on device", "out/x.tif")
    assert explain(exc).startswith("the disk is full writing out/x.tif")
