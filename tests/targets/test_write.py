import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from pypdf import PdfReader
from pypdf.generic import ContentStream

import targets
from targets import TargetError, make_layout, write_chart

PT_PER_MM = 72.0 / 25.4


def _filled_rects_mm(pdf_path):
    """Every 're' in the page content, in page mm, under the CTM in force."""
    reader = PdfReader(pdf_path)
    page = reader.pages[0]
    ops = ContentStream(page.get_contents(), reader).operations
    ctm = np.eye(3)
    stack, rects = [], []
    for operands, op in ops:
        if op == b"q":
            stack.append(ctm.copy())
        elif op == b"Q":
            ctm = stack.pop()
        elif op == b"cm":
            a, b, c, d, e, f = (float(v) for v in operands)
            ctm = np.array([[a, b, 0], [c, d, 0], [e, f, 1]]) @ ctm
        elif op == b"re":
            x, y, w, h = (float(v) for v in operands)
            p0 = np.array([x, y, 1]) @ ctm
            p1 = np.array([x + w, y + h, 1]) @ ctm
            rects.append(np.abs(p1[:2] - p0[:2]) / PT_PER_MM)
    return rects


@pytest.mark.parametrize(("paper", "landscape"), [("A4", False), ("letter", True), ("320x240mm", False)])
def test_pdf_page_is_the_requested_paper_size(tmp_path, paper, landscape):
    layout = make_layout("edges", paper=paper, landscape=landscape)
    files = write_chart(layout, tmp_path / "chart.pdf")
    box = PdfReader(files.chart).pages[0].mediabox
    w_mm, h_mm = float(box.width) / PT_PER_MM, float(box.height) / PT_PER_MM
    assert (w_mm, h_mm) == pytest.approx(targets.parse_paper(paper, landscape=landscape), abs=0.01)


def test_pdf_scale_bar_measures_100_mm(tmp_path):
    layout = make_layout("dots", dot_mm=0.5)
    assert layout.scale_bar.length_mm == 100.0
    files = write_chart(layout, tmp_path / "chart.pdf")
    bars = [r for r in _filled_rects_mm(files.chart) if abs(r[1] - layout.scale_bar.height_mm) < 0.01]
    assert len(bars) == 1
    assert bars[0][0] == pytest.approx(100.0, abs=0.01)


def test_pdf_embeds_gratings_losslessly_at_the_dpi(tmp_path):
    layout = make_layout("stripes", dpi=300)
    files = write_chart(layout, tmp_path / "chart.pdf", dpi=300)
    reader = PdfReader(files.chart)
    page = reader.pages[0]
    drawn = [op for _, op in ContentStream(page.get_contents(), reader).operations if op == b"Do"]
    assert len(drawn) == len(layout.stripes)
    xobjects = page["/Resources"]["/XObject"]
    patch = layout.stripes[0]
    for obj in xobjects.values():
        obj = obj.get_object()
        filters = obj["/Filter"] if isinstance(obj["/Filter"], list) else [obj["/Filter"]]
        assert "/DCTDecode" not in filters and "/FlateDecode" in filters
        assert obj["/Width"] == round((patch.x1_mm - patch.x0_mm) * 300 / 25.4)


def test_png_is_the_exact_raster_at_the_dpi(tmp_path):
    from PIL import Image

    layout = make_layout("edges")
    files = write_chart(layout, tmp_path / "chart.png", dpi=100)
    with Image.open(files.chart) as im:
        assert im.size == (round(210 * 100 / 25.4), round(297 * 100 / 25.4))
        assert im.info["dpi"] == pytest.approx((100, 100), abs=0.01)
    img = targets.read_chart_png(files.chart)
    s = 100 / 25.4
    ideal = targets.render_layout(layout, img.shape, homography=np.array([[s, 0, -0.5], [0, s, -0.5], [0, 0, 1]]))
    assert np.abs(img - ideal).max() < 0.01  # 8-bit sRGB quantisation only


def test_svg_has_the_physical_size_and_every_marker(tmp_path):
    layout = make_layout("combo", dpi=150, dot_mm=0.6)
    files = write_chart(layout, tmp_path / "chart.svg", dpi=150)
    root = ET.parse(files.chart).getroot()
    assert root.get("width") == "210mm" and root.get("height") == "297mm"
    ids = {e.get("id") for e in root.iter() if (e.get("id") or "").startswith("marker")}
    assert ids == {f"marker{m.id}" for m in layout.markers.items}


def test_json_is_written_beside_the_chart(tmp_path):
    layout = make_layout("noise", cell_mm=1.0)
    files = write_chart(layout, tmp_path / "n.pdf", dpi=150)
    assert files.layout == tmp_path / "n.json"
    assert targets.load_layout(files.layout) == layout


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("c.pdf", {"dpi": 0}, "--dpi"),
    ("c.pdf", {"dpi": -5}, "--dpi"),
    ("c.tif", {}, ".pdf, .png or .svg"),
    ("c.png", {"dpi": 50}, "dot diameter"),
])
def test_bad_output_settings_leave_no_file(tmp_path, name, kwargs, message):
    layout = make_layout("dots", dot_mm=0.4)
    with pytest.raises(TargetError, match=message):
        write_chart(layout, tmp_path / name, **kwargs)
    assert os.listdir(tmp_path) == []


def test_missing_output_folder_is_named(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        write_chart(make_layout("edges"), tmp_path / "no" / "c.pdf")


def test_an_error_while_writing_leaves_no_partial_file(tmp_path):
    layout = make_layout("edges")
    broken = layout.__class__(**{**layout.__dict__, "inks": {}})  # every ink lookup fails mid-write
    with pytest.raises(KeyError):
        write_chart(broken, tmp_path / "c.pdf")
    assert os.listdir(tmp_path) == []
