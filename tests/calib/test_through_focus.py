"""Through focus: MTF50 against focus, best focus per zone/node/channel against the simulated lens."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from calib import Calibration, CalibError, CalibrationKey, MTFRecord, PSFDatabase, SimulatedCamera
from calib._through_focus import mean_mtf, measured_curves, mtf50_cpp, peak_position, through_focus

from _simtools import TINY

DIST_M = 2.0


@pytest.fixture(scope="module")
def sweep():
    """True PSF maps (3x oversampled) of the sharp prime on a tiny sensor, 5 focus positions 3 steps apart."""
    cam = SimulatedCamera("sharp-prime", TINY, seed=1, render_grid=(3, 5))
    centre = round(cam.best_focus_position(DIST_M))
    cals = []
    for p in range(centre - 8, centre + 5, 3):  # blue and the corners focus shorter
        pm = cam.true_psf_map(focus_position=p, object_distance_m=DIST_M, grid=(3, 3), oversample=3)
        cals.append(Calibration(key=CalibrationKey("sim", "sharp-prime", 50.0, 4.0, p), psf_map=pm,
                                pixel_pitch_um=5.0))
    return cam, cals


def _zone_truth(cam, tf, zone, channel):
    """Mean true best focus over the nodes of the zone."""
    return float(np.mean([cam.best_focus_position(DIST_M, field_xy=tuple(tf.nodes_xy[n]), channel=channel)
                          for n in tf.zone_nodes[zone]]))


@pytest.mark.parametrize("metric", ["mean_mtf", "mtf50"])
def test_best_focus_per_zone_is_within_one_step_of_the_truth(sweep, metric):
    cam, cals = sweep
    tf = through_focus(cals, method="psf", metric=metric)
    checked = 0
    for zone in tf.zones:
        for ch in tf.channels:
            if "peak_at_end" in tf.flags.get((zone, ch), ()):  # outside the sweep: not a number
                assert np.isnan(tf.best_focus_of(zone, ch))
                continue
            assert abs(tf.best_focus_of(zone, ch) - _zone_truth(cam, tf, zone, ch)) < 1.0
            checked += 1
    assert checked >= 8


def test_best_focus_map_follows_the_field_curvature(sweep):
    cam, cals = sweep
    tf = through_focus(cals, method="psf", channels=("G",))
    assert tf.best_focus_map.shape == (1, 3, 3)
    for i in range(3):
        for j in range(3):
            truth = cam.best_focus_position(DIST_M, field_xy=tuple(tf.nodes_xy[i, j]), channel="G")
            assert abs(tf.best_focus_map[0, i, j] - truth) < 1.0


def test_longitudinal_colour_is_the_per_channel_best_focus(sweep):
    cam, cals = sweep
    tf = through_focus(cals, method="psf")
    lc = tf.longitudinal_colour_steps(zone="centre")
    g = cam.best_focus_position(DIST_M, channel="G")
    assert lc["G"] == 0.0
    assert lc["R"] == pytest.approx(cam.best_focus_position(DIST_M, channel="R") - g, abs=1.0)
    assert lc["B"] == pytest.approx(cam.best_focus_position(DIST_M, channel="B") - g, abs=1.0)


def test_a_database_of_one_lens_is_read_whole(sweep, tmp_path):
    _, cals = sweep
    with PSFDatabase.open(tmp_path / "lens.psfdb", create=True) as db:
        for cal in cals[:4]:
            db.add(cal)
        tf = through_focus(db)
    assert list(tf.positions) == [c.key.focus_position for c in cals[:4]]
    assert tf.mtf50_cpp.shape == (3, 3, 4)


def test_calibrations_of_different_lenses_are_refused(sweep):
    _, cals = sweep
    other = Calibration(key=CalibrationKey("sim", "another lens", 50.0, 4.0, 1), psf_map=cals[0].psf_map)
    with pytest.raises(CalibError, match="one lens setting"):
        through_focus(list(cals) + [other])


def test_unknown_method_is_refused(sweep):
    with pytest.raises(CalibError, match="method 'mtf80'"):
        through_focus(sweep[1], method="mtf80")


def test_unknown_metric_is_refused(sweep):
    with pytest.raises(CalibError, match="metric 'mtf30'"):
        through_focus(sweep[1], metric="mtf30")


def test_zones_are_the_centre_node_the_corner_nodes_and_the_nodes_nearest_half_height(sweep):
    _, cals = sweep
    tf = through_focus(cals)
    w, h = tf.image_size
    height = np.hypot(tf.nodes_xy[..., 0] - (w - 1) / 2, tf.nodes_xy[..., 1] - (h - 1) / 2) / (math.hypot(w - 1, h - 1) / 2)
    assert tf.zone_nodes["centre"] == ((1, 1),)
    assert tf.zone_nodes["corner"] == ((0, 0), (0, 2), (2, 0), (2, 2))
    sides = [(0, 1), (1, 0), (1, 2), (2, 1)]
    nearest = min(abs(height[n] - 0.5) for n in sides)
    assert set(tf.zone_nodes["mid"]) == {n for n in sides if abs(height[n] - 0.5) <= nearest + 0.02}


def test_mean_mtf_keeps_rising_where_mtf50_is_past_nyquist():
    f = np.linspace(0, 0.5, 101)
    sharp, sharper = 1 - 0.6 * f, 1 - 0.2 * f  # both above 0.5 up to Nyquist
    assert mtf50_cpp(f, sharp)[1] and mtf50_cpp(f, sharper)[1]
    assert mean_mtf(f, sharper)[0] > mean_mtf(f, sharp)[0]
    assert mean_mtf(f, sharp) == (pytest.approx(1 - 0.6 * 0.25), False)
    assert mean_mtf(f[:60], sharp[:60])[1]  # ends below Nyquist: said so


def test_calibrations_without_positions_use_the_focus_distance_in_diopters(sweep):
    _, cals = sweep
    moved = [dataclasses.replace(c, key=dataclasses.replace(c.key, focus_position=None, focus_distance_m=d))
             for c, d in zip(cals, (math.inf, 4.0, 2.0, 1.0, 0.5))]
    tf = through_focus(moved, channels=("G",))
    assert tf.focus_axis == "diopters" and "diopters" in tf.focus_axis_label
    assert list(tf.positions) == [0.0, 0.25, 0.5, 1.0, 2.0]


def test_stripe_patches_of_one_cell_and_orientation_are_joined_into_one_curve():
    recs = [MTFRecord("G", 100.0 + 5 * k, 100.0, o, "none", "stripes", np.array([f]), np.array([1 - f]))
            for k, f in enumerate((0.3, 0.1, 0.2)) for o in (0.0, 90.0)]
    recs.append(MTFRecord("G", 100.0, 100.0, 0.0, "none", "stripes", np.array([0.4]), np.array([0.2]), ("noisy",)))
    curves = measured_curves(recs, "stripes", image_size=(1200, 800))
    assert len(curves) == 2 and all(c.n_records == 3 for c in curves)
    for c in curves:
        assert list(c.freq_cpp) == [0.0, 0.1, 0.2, 0.3]
        assert list(c.mtf) == pytest.approx([1.0, 0.9, 0.8, 0.7])


def _gauss_records(pos, *, method, peak, freqs, width=0.3):
    """Gaussian MTFs whose width peaks at focus ``peak`` (per zone): centre and corner points."""
    out = []
    for (x, y), p0 in peak.items():
        s = width * math.exp(-((pos - p0) / 8.0) ** 2)
        for o in (0.0, 90.0):
            if method == "edge":
                f = np.asarray(freqs)
                out.append(MTFRecord("G", x, y, o, "none", "edge", f, np.exp(-((f / s) ** 2))))
            else:
                for k, f in enumerate(freqs):
                    out.append(MTFRecord("G", x + 30 * k, y, o, "none", "stripes", np.array([f]),
                                         np.exp(-((np.array([f]) / s) ** 2))))
    return out


@pytest.mark.parametrize("metric", ["mean_mtf", "mtf50"])
@pytest.mark.parametrize("method", ["edge", "stripes"])
def test_records_per_focus_setting_give_the_best_focus_per_zone(method, metric):
    peak = {(600.0, 400.0): 101.3, (60.0, 40.0): 97.6}
    freqs = np.linspace(0.0, 0.5, 51) if method == "edge" else [0.05, 0.1, 0.2, 0.3, 0.4, 0.45]
    records = {p: _gauss_records(p, method=method, peak=peak, freqs=freqs) for p in range(90, 112, 3)}
    tf = through_focus(records, method=method, metric=metric, image_size=(1200, 800))
    assert tf.best_focus_of("centre", "G") == pytest.approx(101.3, abs=0.5)
    assert tf.best_focus_of("corner", "G") == pytest.approx(97.6, abs=0.5)
    assert np.all(np.isnan(tf.mtf50_of("mid", "G")))


def test_flagged_records_are_left_out():
    peak = {(600.0, 400.0): 101.3}
    records = {}
    for p in range(90, 112, 3):
        good = _gauss_records(p, method="edge", peak=peak, freqs=np.linspace(0, 0.5, 51))
        bad = [MTFRecord("G", 600.0, 400.0, 0.0, "none", "edge", np.linspace(0, 0.5, 51), np.ones(51),
                         ("clipped",))]
        records[p] = good + bad
    tf = through_focus(records, method="edge", image_size=(1200, 800))
    assert tf.best_focus_of("centre", "G") == pytest.approx(101.3, abs=0.5)


def test_records_without_image_size_are_refused():
    with pytest.raises(CalibError, match="image_size"):
        through_focus({1: [], 2: [], 3: []}, method="edge")


def test_peak_at_the_end_of_the_sweep_is_not_a_number():
    pos, flags = peak_position(np.arange(5.0), np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert math.isnan(pos) and flags == ("peak_at_end",)


def test_gaussian_peak_fit_is_exact_for_a_gaussian():
    p = np.arange(0.0, 20.0, 3.0)
    pos, flags = peak_position(p, 0.4 * np.exp(-((p - 8.7) / 5.0) ** 2))
    assert pos == pytest.approx(8.7, abs=1e-9) and flags == ()


def test_mtf50_beyond_the_measured_range_is_extrapolated_and_said_so():
    f = np.linspace(0, 0.5, 51)
    value, extrapolated = mtf50_cpp(f, 1 - 0.8 * f)
    assert extrapolated and value == pytest.approx(0.625, rel=1e-6)
    value, extrapolated = mtf50_cpp(f, 1 - 2 * f)
    assert not extrapolated and value == pytest.approx(0.25, rel=1e-6)
