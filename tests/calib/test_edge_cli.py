"""`lenspsf edge` end to end on rendered edges written as 16-bit TIFFs."""
from __future__ import annotations

import csv

import numpy as np
import tifffile

from calib._cli.main import main
from calib._edge import render_slanted_edge


def _edge_tif(path):
    img = render_slanted_edge((90, 100), 6.0, 0.9)
    tifffile.imwrite(path, (img * 65535).astype(np.uint16))


def test_edge_prints_mtf50_and_writes_the_csv(tmp_path, capsys):
    _edge_tif(tmp_path / "e.tif")
    rc = main(["edge", str(tmp_path / "e.tif"), "--csv", str(tmp_path / "out.csv")])
    assert rc == 0
    assert "MTF50" in capsys.readouterr().out
    rows = list(csv.reader((tmp_path / "out.csv").read_text().splitlines()))
    assert rows[0] == ["freq_cpp", "mtf_Y"] and float(rows[1][1]) == 1.0 and len(rows) == 102


def test_edge_with_roi_and_pixel_pitch_prints_lp_per_mm(tmp_path, capsys):
    _edge_tif(tmp_path / "e.tif")
    rc = main(["edge", str(tmp_path / "e.tif"), "--roi", "10,10,80,70", "--pixel-pitch-um", "4"])
    assert rc == 0 and "lp/mm" in capsys.readouterr().out


def test_edge_on_a_missing_file_exits_2_naming_it(tmp_path, capsys):
    rc = main(["edge", str(tmp_path / "nope.tif")])
    assert rc == 2 and "nope.tif" in capsys.readouterr().err
