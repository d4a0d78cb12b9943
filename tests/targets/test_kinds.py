import math

import numpy as np
import pytest

import targets
from targets import critical_angle_distance_deg, make_layout, render_layout


@pytest.mark.parametrize("kind", ["edges", "combo"])
def test_no_edge_lies_within_two_degrees_of_a_critical_angle(kind):
    layout = make_layout(kind)
    assert layout.edges
    for sq in layout.edges:
        c = np.asarray(sq.corners_mm)
        for a, b in zip(c, np.roll(c, -1, axis=0)):
            angle = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
            assert critical_angle_distance_deg(angle) >= 2.0


def test_critical_angle_distance_sees_every_critical_angle():
    for a in (0.0, 14.04, 26.57, 45.0, 63.43, 75.96, 90.0, -14.04, 180.0):
        assert critical_angle_distance_deg(a) < 0.01


def test_edges_print_at_four_to_one_contrast():
    layout = make_layout("edges")
    light = layout.reflectance(layout.regions[0].ink)
    dark = layout.reflectance(layout.edges[0].ink)
    assert light / dark == pytest.approx(4.0)


def test_dot_spacing_keeps_the_largest_psf_apart():
    layout = make_layout("dots", pixel_pitch_um=4.0, focal_mm=50.0, distance_m=2.0, max_psf_px=21)
    foot = targets.pixel_footprint_mm(4.0, 50.0, 2.0)
    xy = np.array([(d.x_mm, d.y_mm) for d in layout.dots])
    gaps = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() >= 21 * foot + layout.dots[0].diameter_mm
    assert layout.dots[0].diameter_mm == pytest.approx(foot)


def test_dot_phases_are_known_and_cover_the_subpixel_lattice():
    layout = make_layout("dots", dot_mm=0.5, phases=4)
    foot = layout.params["phase_unit_mm"]
    pitch = layout.params["dot_pitch_mm"]
    pairs = {(d.phase_x_px, d.phase_y_px) for d in layout.dots}
    assert len(pairs) == 16
    x0 = layout.dots[0].x_mm - layout.dots[0].phase_x_px * foot
    for d in layout.dots:
        nominal = x0 + d.col * pitch
        assert d.x_mm - nominal == pytest.approx(d.phase_x_px * foot, abs=1e-5)


def test_dots_layout_describes_the_pinhole_plate():
    layout = make_layout("dots", dot_mm=0.5)
    plate = layout.params["pinhole_plate"]
    assert plate["hole_diameter_mm"] == 0.5 and plate["holes"] == "dots"


def test_stripes_hold_six_frequencies_four_orientations_at_nine_field_positions():
    layout = make_layout("stripes")
    combos = {(p.field_ix, p.field_iy, p.frequency_cpmm, p.orientation_deg) for p in layout.stripes}
    assert len(combos) == 9 * 6 * 4
    assert {p.orientation_deg for p in layout.stripes} == {0.0, 45.0, 90.0, 135.0}
    assert all(p.contrast == pytest.approx(0.8) for p in layout.stripes)


def test_noise_bits_come_back_from_the_recorded_seed():
    a = make_layout("noise", seed=7, cell_mm=1.0).noise[0]
    b = make_layout("noise", seed=7, cell_mm=1.0).noise[0]
    assert np.array_equal(a.bits(), b.bits())
    assert 0.45 < a.bits().mean() < 0.55


def test_rendered_noise_matches_its_bits():
    layout = make_layout("noise", seed=3, cell_mm=2.0)
    n = layout.noise[0]
    s = 4.0  # px per mm: 8 px per cell
    img = render_layout(layout, (int(layout.page_mm[1] * s), int(layout.page_mm[0] * s)),
                        homography=np.array([[s, 0, -0.5], [0, s, -0.5], [0, 0, 1]]))
    cx = ((n.x0_mm + (np.arange(n.nx) + 0.5) * n.cell_mm) * s - 0.5).astype(int)
    cy = ((n.y0_mm + (np.arange(n.ny) + 0.5) * n.cell_mm) * s - 0.5).astype(int)
    sampled = img[np.ix_(cy, cx)]
    expected = np.where(n.bits() > 0, layout.reflectance(n.ink_on), layout.reflectance(n.ink_off))
    # Cells under an interior marker and its quiet zone are covered by the marker.
    gx, gy = np.meshgrid(n.x0_mm + (np.arange(n.nx) + 0.5) * n.cell_mm, n.y0_mm + (np.arange(n.ny) + 0.5) * n.cell_mm)
    free = np.ones(expected.shape, bool)
    q = layout.markers.size_mm / layout.markers.modules * layout.markers.quiet_modules + n.cell_mm
    for m in layout.markers.items:
        (x0, y0), (x1, y1) = m.corners_mm[0], m.corners_mm[2]
        free &= ~((gx > x0 - q) & (gx < x1 + q) & (gy > y0 - q) & (gy < y1 + q))
    assert free.mean() > 0.8
    assert np.allclose(sampled[free], expected[free], atol=1e-6)


def test_no_dot_lies_under_a_marker_or_its_quiet_zone():
    layout = make_layout("dots", dot_mm=0.5)
    q = layout.markers.size_mm / layout.markers.modules * layout.markers.quiet_modules
    xy = layout.dot_centres_mm()
    inner = [m for m in layout.markers.items if layout.regions[0].x0_mm < m.corners_mm[0][0] < layout.regions[0].x1_mm]
    assert inner  # markers inside the dot field, not only around the sheet
    for m in layout.markers.items:
        (x0, y0), (x1, y1) = m.corners_mm[0], m.corners_mm[2]
        r = layout.dots[0].diameter_mm
        hit = (xy[:, 0] > x0 - q - r) & (xy[:, 0] < x1 + q + r) & (xy[:, 1] > y0 - q - r) & (xy[:, 1] < y1 + q + r)
        assert not hit.any()
