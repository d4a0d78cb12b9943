"""``lenspsf demo`` end to end, as a newcomer runs it (about a minute on 2 cores)."""
from __future__ import annotations

import json
import re

import pytest

import calib
from calib._cli.main import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, main(["demo", "--out", str(out)])


def test_demo_exits_0_and_makes_every_product(demo):
    out, code = demo
    assert code == 0
    for rel in ("charts/dots.pdf", "charts/dots.json", "captures/demo/session.json", "lens.psfdb", "report.html"):
        assert (out / rel).is_file(), rel
    assert len(list((out / "restored").glob("*_restored.tif"))) == 1


def test_demo_database_holds_one_calibration_per_focus_setting(demo):
    out, _ = demo
    with calib.PSFDatabase.open(out / "lens.psfdb") as db:
        assert len({s.key.focus_position for s in db.summaries()}) == 3


def test_demo_restore_improves_the_photo_by_more_than_2_db(demo):
    out, _ = demo
    summary = json.loads(re.search(
        r'<script type="application/json" id="lenspsf-summary">(.*?)</script>',
        (out / "report.html").read_text(), re.S).group(1))
    restored = summary["restored"]
    assert restored["psnr_after_db"] > restored["psnr_before_db"] + 2.0
