"""The HTML report: sections, embedded images, and summary numbers recomputed from the DB."""
from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calib import CalibError, PSFDatabase, RestoredExample, through_focus, write_report
from calib._mtf_psf import psf_mtf
from calib._report import SECTIONS

from _report_db import OBJECT_DISTANCE_M, STEP, TRUTH, camera, full_report, one_focus_db, three_focus_db

FREQ = np.arange(0, 101) * 0.005  # the report's documented grid: 0 .. Nyquist, 0.005 c/p


class _Page(HTMLParser):
    """Collects section ids, image sources and the summary JSON of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.summary_json = ""
        self._section: str | None = None
        self._in_summary = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a["id"]
            self.sections[self._section] = ""
        if tag == "img":
            self.images.append(a["src"])
        if tag in ("link", "script", "a") and (a.get("src") or a.get("href")):
            self.links.append(a.get("src") or a.get("href"))
        if tag == "script" and a.get("id") == "lenspsf-summary":
            self._in_summary = True
        if tag == "p" and "missing" in (a.get("class") or "") and self._section:
            self.sections[self._section] += "[missing]"

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        if tag == "script":
            self._in_summary = False

    def handle_data(self, data):
        if self._in_summary:
            self.summary_json += data
        elif self._section:
            self.sections[self._section] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def report():
    out, result = full_report()
    return out, result, _parse(out)


# -- the page --------------------------------------------------------------------------------


def test_report_of_three_focus_settings_has_every_section_with_data(report):
    _, result, page = report
    assert list(page.sections) == list(SECTIONS)
    assert all(result.summary["sections"][s] for s in SECTIONS)
    assert not any("[missing]" in text for text in page.sections.values())


def test_every_embedded_image_decodes_and_is_not_blank(report):
    _, _, page = report
    # 3 montages + 3 curve sets + 3 maps + through focus (2) + lateral + distortion + edges
    # + 3 spots x 3 crops
    assert len(page.images) >= 23
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert np.asarray(img.convert("RGB"), float).std() > 0


def test_report_uses_no_external_resources(report):
    out, _, page = report
    text = out.read_text(encoding="utf-8")
    assert all(link.startswith(("data:", "#")) for link in page.links)
    assert "<link" not in text and "url(" not in text and "@import" not in text


def test_embedded_json_equals_the_returned_summary(report):
    _, result, page = report
    embedded = json.loads(page.summary_json)
    assert embedded == json.loads(json.dumps(result.summary))
    assert embedded["calibrations"] == [json.loads(json.dumps(r)) for r in result.rows]


def test_ground_truth_and_psnr_are_shown(report):
    _, result, page = report
    assert "PSF error vs truth (relative L2), median" in page.sections["truth"]
    assert "0.0310" in page.sections["truth"]
    assert result.summary["truth"] == TRUTH
    r = result.summary["restored"]
    assert f"{r['psnr_before_db']:.2f} dB" in page.sections["restored"]
    assert f"{r['psnr_after_db']:.2f} dB" in page.sections["restored"]


# -- numbers, recomputed independently from the database -------------------------------------


def _first_crossing(f: np.ndarray, m: np.ndarray) -> float:
    idx = np.flatnonzero(m < 0.5)
    if idx.size == 0 or idx[0] == 0:
        return math.inf
    i = idx[0]
    t = (m[i - 1] - 0.5) / (m[i - 1] - m[i])
    return float(f[i - 1] + t * (f[i] - f[i - 1]))


def _zone_nodes(nodes_xy: np.ndarray, size: tuple[int, int]) -> dict[str, list[tuple[int, int]]]:
    w, h = size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    hgt = np.hypot(nodes_xy[..., 0] - cx, nodes_xy[..., 1] - cy) / (math.hypot(w - 1, h - 1) / 2)
    ny, nx = hgt.shape
    every = [(i, j) for i in range(ny) for j in range(nx)]
    centre = [n for n in every if np.isclose(hgt[n], hgt.min())]
    corner = list({(0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 1)})
    others = [n for n in every if n not in centre and n not in corner]
    d = {n: abs(hgt[n] - 0.5) for n in others}
    mid = [n for n in others if d[n] <= min(d.values()) + 0.02]
    return {"centre": centre, "mid": mid, "corner": corner}


def _node_mtf50(pm, c: int, i: int, j: int) -> tuple[float, float]:
    w, h = pm.image_size
    x, y = pm.nodes_xy[i, j]
    dx, dy = x - (w - 1) / 2, y - (h - 1) / 2
    radial = 0.0 if math.hypot(dx, dy) < 1 else math.degrees(math.atan2(dy, dx))
    sag = _first_crossing(FREQ, psf_mtf(pm.psf[c, i, j], radial + 90, sampling=pm.sampling, freq_cpp=FREQ)[1])
    tan = _first_crossing(FREQ, psf_mtf(pm.psf[c, i, j], radial, sampling=pm.sampling, freq_cpp=FREQ)[1])
    return sag, tan


@pytest.fixture(scope="module")
def stored():
    with PSFDatabase.open(three_focus_db()) as db:
        return {s.id: (s, db.get(s.id)) for s in db.summaries()}


def test_summary_mtf50_per_zone_matches_the_psf_maps(report, stored):
    _, result, _ = report
    assert len(result.rows) == len(stored) == 3
    for row in result.rows:
        pm = stored[row["id"]][1].psf_map
        g = pm.channels.index("G")
        for zone, nodes in _zone_nodes(pm.nodes_xy, pm.image_size).items():
            values = np.array([_node_mtf50(pm, g, i, j) for i, j in nodes])
            for d, name in enumerate(("sagittal", "tangential")):
                expected = float(np.median(values[:, d]))
                got = row["mtf50_psf_cpp"][zone][name]
                if math.isinf(expected):
                    assert got is None
                else:
                    assert got == pytest.approx(expected, abs=1e-9), (row["id"], zone, name)


def test_summary_key_grid_flags_and_noise_match_the_database(report, stored):
    _, result, _ = report
    for row in result.rows:
        s, cal = stored[row["id"]]
        assert row["focus_position"] == s.key.focus_position
        assert row["focus_distance_m"] == s.key.focus_distance_m
        assert tuple(row["grid"]) == s.grid_shape and row["kernel_size"] == s.kernel_size
        assert row["flagged_nodes"] == s.n_flagged_nodes
        assert row["noise"]["read_noise"] == pytest.approx(list(cal.noise.read_noise))
        assert row["noise"]["gain"] == pytest.approx(list(cal.noise.gain))
        assert row["pixel_pitch_um"] == s.pixel_pitch_um


def test_summary_lateral_colour_is_the_largest_r_b_centroid_gap(report, stored):
    from scipy import ndimage

    _, result, _ = report
    for row in result.rows:
        pm = stored[row["id"]][1].psf_map
        r, b = pm.channels.index("R"), pm.channels.index("B")
        ny, nx = pm.grid_shape
        gaps = [np.hypot(*np.subtract(ndimage.center_of_mass(pm.psf[r, i, j].astype(float)),
                                      ndimage.center_of_mass(pm.psf[b, i, j].astype(float))))
                for i in range(ny) for j in range(nx)]
        assert row["lateral_colour_max_rb_px"] == pytest.approx(max(gaps) / pm.sampling, rel=1e-6)
        assert max(gaps) > 0.5  # the soft zoom has strong lateral colour


def _edge_mtf50s(cal) -> tuple[list[float], int]:
    vals = [r.mtf50_cpp() for r in cal.mtf if r.method == "edge" and r.channel == "G" and not r.flags]
    vals = [v for v in vals if math.isfinite(v)]
    return vals, len(vals)


def _stripe_mtf50s(cal) -> tuple[list[float], int]:
    """MTF50 of the G stripe patches joined per nearest node and orientation, and the records used."""
    nodes = cal.psf_map.nodes_xy.reshape(-1, 2)
    groups: dict[tuple, list] = {}
    for r in cal.mtf:
        if r.method == "stripes" and r.channel == "G" and not r.flags:
            node = int(np.argmin(np.hypot(*(nodes - (r.x_px, r.y_px)).T)))
            groups.setdefault((node, round(r.orientation_deg / 90) % 2), []).append(r)
    vals, n = [], 0
    for recs in groups.values():
        f = np.concatenate([[0.0]] + [r.freq_cpp for r in recs])
        m = np.concatenate([[1.0]] + [r.mtf for r in recs])
        v = _first_crossing(f[np.argsort(f)], m[np.argsort(f)])
        if math.isfinite(v):
            vals.append(v)
            n += len(recs)
    return vals, n


@pytest.mark.parametrize("method, measured", [("edge", _edge_mtf50s), ("stripes", _stripe_mtf50s)])
def test_summary_edge_and_stripe_medians_match_the_green_records(report, stored, method, measured):
    """Edges: one curve per record; stripes: patches of one node and orientation joined."""
    _, result, _ = report
    with_data = 0
    for row in result.rows:
        vals, n = measured(stored[row["id"]][1])
        assert row[f"n_{method}_records"] == n
        if vals:
            with_data += 1
            assert row[f"mtf50_{method}_median_cpp"] == pytest.approx(float(np.median(vals)), abs=1e-12)
        else:
            assert row[f"mtf50_{method}_median_cpp"] is None
    assert with_data == 1


def test_mtf_curves_say_which_stripe_and_edge_records_they_overlay(report, stored):
    _, result, page = report
    text = page.sections["mtf-curves"]
    for row in result.rows:
        if stored[row["id"]][1].mtf:
            assert re.search(rf"#{row['id']}, [^(]*\(overlaid: \d+ slanted-edge records and \d+ stripe records\)",
                             text)


def test_psf_and_edge_mtf_agree_within_goal_on_edges_rendered_through_the_psfs(report):
    _, result, _ = report
    agreement = [r["psf_vs_edge"] for r in result.rows if r["psf_vs_edge"]]
    assert agreement and all(a["max"] < 0.03 for a in agreement)


def test_through_focus_section_is_calib_through_focus_of_the_database(report, stored):
    _, result, _ = report
    (series,) = result.summary["through_focus"]
    tf = through_focus([cal for _, cal in stored.values()], method="psf", metric="mean_mtf")
    assert series["focus"] == list(tf.positions)
    for zone in tf.zones:
        b = tf.best_focus_of(zone, "G")
        if math.isfinite(b):
            assert series["best_focus"][zone] == pytest.approx(b, abs=1e-12)
            assert not series["best_focus_is_bound"][zone]
        else:  # outside the sweep: the sharpest end setting, marked as a bound
            assert series["best_focus_is_bound"][zone]
            assert series["best_focus"][zone] in (tf.positions[0], tf.positions[-1])
    for ch in tf.channels:
        b = tf.best_focus_of("centre", ch)
        assert math.isfinite(b) and series["best_focus_centre_by_channel"][ch] == pytest.approx(b, abs=1e-12)
    assert np.allclose(np.asarray(series["best_focus_map"], float)[1, 1], tf.best_focus_map[1, 1, 1])


def test_best_focus_at_centre_is_within_one_focus_step_of_the_truth_per_channel(report):
    _, result, _ = report
    (series,) = result.summary["through_focus"]
    best = series["best_focus_centre_by_channel"]
    for ch in "RGB":
        truth = camera().best_focus_position(OBJECT_DISTANCE_M, channel=ch)
        assert abs(best[ch] - truth) <= STEP, ch


# -- missing data, errors, optional dependency ------------------------------------------------


def test_sections_without_data_say_what_is_missing(tmp_path):
    out = tmp_path / "r.html"
    result = write_report(one_focus_db(), out)
    page = _parse(out)
    empty = {"through-focus", "distortion", "psf-vs-edge", "restored", "truth"}
    assert {s for s, has in result.summary["sections"].items() if not has} == empty
    for sid in empty:
        assert "[missing]" in page.sections[sid]
    assert "not measured" in page.sections["summary"]  # no noise model


def test_missing_output_folder_is_a_calib_error_and_writes_nothing(tmp_path):
    with pytest.raises(CalibError, match="does not exist"):
        write_report(one_focus_db(), tmp_path / "nope" / "r.html")
    assert not (tmp_path / "nope").exists()


def test_restored_example_rejects_images_of_different_sizes():
    with pytest.raises(CalibError, match="one size"):
        RestoredExample(before=np.zeros((8, 8, 3)), after=np.zeros((8, 9, 3)))


def test_import_calib_does_not_import_matplotlib():
    code = "import sys, calib; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0


def test_report_without_matplotlib_raises_calib_error_naming_the_plot_extra():
    # matplotlib made unimportable in a child interpreter, as on a machine without it.
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import calib\n"
        "try:\n    import calib._report_plots\n"
        "except calib.CalibError as e:\n    print(e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert re.search(r"lenspsf\[plot\]", res.stdout)
