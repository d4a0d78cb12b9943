import json

import pytest

import targets
from targets import TargetError, load_layout, make_layout, save_layout


@pytest.mark.parametrize("kind", targets.KINDS)
def test_layout_survives_a_json_round_trip(tmp_path, kind):
    layout = make_layout(kind, paper="A4", dpi=300)
    path = save_layout(layout, tmp_path / f"{kind}.json")
    assert load_layout(path) == layout
    assert load_layout(path).layout_id == layout.layout_id


def test_layout_json_carries_the_contract_fields():
    d = json.loads(make_layout("combo", dpi=300).to_json())
    for key in ("format", "format_version", "kind", "page_mm", "inks", "dots", "stripes", "edges",
                "noise", "markers", "scale_bar", "text", "layout_id"):
        assert key in d
    assert d["markers"]["dictionary"].startswith("DICT_")
    assert len(d["markers"]["items"][0]["corners_mm"]) == 4
    assert set(d["inks"].values()) <= {v for v in targets.INKS.values()}


@pytest.mark.parametrize(("paper", "landscape", "size"), [
    ("A4", False, (210.0, 297.0)), ("a3", True, (420.0, 297.0)), ("letter", False, (215.9, 279.4)),
    ("tabloid", False, (279.4, 431.8)), ("A2", False, (420.0, 594.0)), ("300x200mm", False, (300.0, 200.0)),
])
def test_page_size_follows_the_paper(paper, landscape, size):
    assert make_layout("edges", paper=paper, landscape=landscape).page_mm == pytest.approx(size)


def test_missing_layout_file_is_named(tmp_path):
    with pytest.raises(TargetError, match="nothere.json"):
        load_layout(tmp_path / "nothere.json")


def test_a_json_that_is_not_a_layout_is_refused(tmp_path):
    p = tmp_path / "other.json"
    p.write_text('{"hello": 1}')
    with pytest.raises(TargetError, match="other.json is not a lenspsf chart layout"):
        load_layout(p)


def test_a_newer_layout_format_is_refused(tmp_path):
    d = json.loads(make_layout("edges").to_json())
    d["format_version"] = targets.FORMAT_VERSION + 1
    p = tmp_path / "future.json"
    p.write_text(json.dumps(d))
    with pytest.raises(TargetError, match="future.json.*newer"):
        load_layout(p)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "circles"}, "unknown chart kind"),
    ({"kind": "dots", "paper": "B5"}, "unknown paper size"),
    ({"kind": "dots", "dpi": 0}, "--dpi"),
    ({"kind": "dots", "dot_mm": -1.0}, "--dot-mm"),
    ({"kind": "edges", "tilts_deg": (14.5,)}, "critical angle"),
    ({"kind": "stripes", "profile": "triangle"}, "profile"),
])
def test_bad_chart_options_raise_one_sentence(kwargs, message):
    with pytest.raises(TargetError, match=message) as err:
        make_layout(**kwargs)
    assert "\n" not in str(err.value)


def test_markers_are_spread_around_the_whole_sheet():
    layout = make_layout("dots")
    xs = [x for m in layout.markers.items for x, _ in m.corners_mm]
    ys = [y for m in layout.markers.items for _, y in m.corners_mm]
    w, h = layout.page_mm
    assert min(xs) < 0.1 * w and max(xs) > 0.9 * w and min(ys) < 0.1 * h and max(ys) > 0.9 * h
    assert len(set(layout.markers.ids)) == len(layout.markers.items) >= 8


def test_screen_layout_has_the_screen_size():
    layout = make_layout("stripes", screen_px="1920x1080px", pixel_pitch_mm=0.25)
    assert layout.page_mm == pytest.approx((480.0, 270.0))
    assert layout.screen.width_px == 1920


@pytest.mark.parametrize("paper", ["A4", "300x200mm", "2000x1500mm"])
def test_each_kind_prints_marker_ids_only_from_its_own_block(paper):
    for kind in targets.KINDS:
        ids = [m.id for m in make_layout(kind, paper=paper).markers.items]
        assert len(set(ids)) == len(ids)
        assert {targets.marker_kind(i) for i in ids} == {kind}


@pytest.mark.parametrize("kind", ["dots", "noise"])
def test_markers_inside_a_uniform_field_are_smaller_with_their_own_quiet_zone(kind):
    layout = targets.make_layout(kind, paper="300x200mm")
    ms = layout.markers
    sides = sorted({round(m.side_mm, 6) for m in ms.items})
    assert sides == [round(0.6 * ms.size_mm, 6), round(ms.size_mm, 6)]
    small = min(ms.items, key=lambda m: m.side_mm)
    assert ms.quiet_zone_of(small) == pytest.approx(0.6 * ms.quiet_zone_mm)
