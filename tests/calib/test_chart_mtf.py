"""Chart MTF: every edge of every square (and every grating) of a chart photo."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import ndtr

import targets
from calib import (
    LENS_PROFILES, SENSOR_PRESETS, CalibError, PSFMap, SimulatedCamera, measure_chart_mtf, psf_edge_agreement,
    register_chart,
)
from calib._mtf_psf import field_direction, psf_mtf

TILTS = (5.0, -12.0, 20.0, -33.0, 8.0, 38.0)
DIST_M = 2.0
RENDER_OVERSAMPLE = 3


def _edges_layout(**kw) -> targets.Layout:
    opts = dict(grid=(3, 2), square_fraction=0.6, tilts_deg=TILTS)
    opts.update(kw)
    return targets.make_layout("edges", paper="A4", landscape=True, **opts)


def _synthetic(layout, shape, sigma_px, rng, *, noise=0.002, gain=0.8, hom=None):
    """The chart box-filtered per pixel (render_layout), a Gaussian blur, noise: RGB float32."""
    h = hom if hom is not None else targets.page_homography(layout, shape)
    img = targets.render_layout(layout, shape, homography=h, supersample=4).astype(np.float64)
    img = 0.02 + gain * ndimage.gaussian_filter(img, sigma_px, mode="nearest")
    img = img + rng.standard_normal(img.shape) * noise
    return np.repeat(img[..., None], 3, axis=2).astype(np.float32), h


def _gauss_box_map(w, h, sigma_px, sampling=3, k=15) -> PSFMap:
    """Gaussian blur of a 100 %-fill pixel, point-sampled: the PSF of ``_synthetic``."""
    x = (np.arange(k * sampling) - (k * sampling) // 2) / sampling
    line = ndtr((x + 0.5) / sigma_px) - ndtr((x - 0.5) / sigma_px)
    psf = np.outer(line, line)
    psf /= psf.sum()
    n = k * sampling
    if n % 2 == 0:
        psf = np.pad(psf, ((0, 1), (0, 1)))
    nodes = np.stack(np.meshgrid([0.0, w - 1.0], [0.0, h - 1.0], indexing="xy"), axis=-1)
    grid = np.broadcast_to(psf, (3, 2, 2) + psf.shape).astype(np.float32)
    return PSFMap(np.ascontiguousarray(grid), nodes, ("R", "G", "B"), (w, h), sampling=sampling)


# ---------------------------------------------------------------- simulated camera truth

@pytest.fixture(scope="module")
def sim():
    """A 600x400 sensor, a distortion-free copy of the sharp lens, the chart at best focus.

    Without distortion the chart scene is not resampled (no interpolation blur), so the
    photo's true MTF is the rendered PSF's times the scene sampling box
    (1 / render_oversample px, which the renderer averages the chart over).
    """
    sensor = dataclasses.replace(SENSOR_PRESETS["small"], name="t600", width_px=600, height_px=400)
    lens = dataclasses.replace(LENS_PROFILES["sharp-prime"], name="sharp-nodist", distortion_k1=0.0,
                               distortion_k2=0.0)
    cam = SimulatedCamera(lens, sensor, seed=11, render_oversample=RENDER_OVERSAMPLE, render_grid=(5, 7))
    layout = _edges_layout()
    focus = round(cam.best_focus_position(DIST_M))
    shot = cam.shoot(layout, focus_position=focus, object_distance_m=DIST_M)
    res = measure_chart_mtf(shot.rgb_linear, layout, shot.homography)
    return cam, layout, focus, shot, res


def _true_mtf(cam, focus, rec, freq):
    # The kernel the renderer applied (its window, hence its normalisation, depends on
    # the oversampling; another one differs by up to 0.8 % in MTF50).
    psf = cam.true_psf(rec.x_px, rec.y_px, rec.channel, focus_position=focus, object_distance_m=DIST_M,
                       oversample=RENDER_OVERSAMPLE)
    _, m = psf_mtf(psf, rec.orientation_deg, sampling=RENDER_OVERSAMPLE, freq_cpp=freq)
    t = np.radians(rec.orientation_deg)
    box = np.abs(np.sinc(freq * np.cos(t) / RENDER_OVERSAMPLE) * np.sinc(freq * np.sin(t) / RENDER_OVERSAMPLE))
    return m * box


def _mtf50(freq, m):
    i = int(np.nonzero(m < 0.5)[0][0])
    return float(freq[i - 1] + (m[i - 1] - 0.5) * (freq[i] - freq[i - 1]) / (m[i - 1] - m[i]))


def test_edge_mtf50_median_error_within_one_percent_of_simulator_truth(sim):
    cam, _, focus, _, res = sim
    freq = np.linspace(0.0, 1.0, 2001)
    errs = [abs(r.mtf50_cpp() / _mtf50(freq, _true_mtf(cam, focus, r, freq)) - 1) for r in res.clean_records()]
    assert len(errs) >= 48
    assert np.median(errs) < 0.01


def test_true_psf_map_mtf_agrees_with_edges_within_003_at_each_node(sim):
    cam, _, focus, _, res = sim
    # The render grid's own nodes: the map then interpolates exactly as the renderer blends.
    pm = cam.true_psf_map(focus_position=focus, object_distance_m=DIST_M, grid=(5, 7), oversample=3,
                          centre_on="chief_ray")
    agreement = psf_edge_agreement(pm, res.records)
    assert len({a.node for a in agreement}) >= 4
    assert sum(a.n_edges for a in agreement) == len(res.clean_records())
    assert max(a.max_abs_diff for a in agreement) < 0.03


def test_every_side_of_every_square_is_measured_along_its_normal(sim):
    _, layout, _, _, res = sim
    assert len(res.edges) == 4 * len(layout.edges)
    for e in res.edges:
        assert not e.flags, (e.square_index, e.side, e.flags)
        tilt = layout.edges[e.square_index].tilt_deg
        # side k of a square tilted by t runs along t + 90 k degrees; its normal is 90 off
        expect = (tilt + 90.0 * e.side + 90.0) % 180.0
        assert abs((e.orientation_deg - expect + 90.0) % 180.0 - 90.0) < 0.5
        assert np.hypot(*np.subtract(e.centre_xy_px, e.predicted_xy_px)) < 2.0
        assert e.direction == field_direction(*e.centre_xy_px, e.orientation_deg, centre_xy=res.centre_xy_px)
        assert {r.channel for r in e.records} == {"R", "G", "B"}
        assert all(r.method == "edge" and (r.x_px, r.y_px) == e.centre_xy_px for r in e.records)


# ---------------------------------------------------------------- synthetic charts

def test_registration_and_homography_give_the_same_edges(rng):
    layout = _edges_layout()
    img, hom = _synthetic(layout, (424, 600), 0.8, rng)
    reg = register_chart(img[..., 1], layout)
    a = measure_chart_mtf(img, layout, hom, channels=["G"])
    b = measure_chart_mtf(img, layout, reg, channels=["G"])
    m_a = [e.mtf50_cpp["G"] for e in a.edges]
    m_b = [e.mtf50_cpp["G"] for e in b.edges]
    assert np.allclose(m_a, m_b, rtol=0.02)


def test_gaussian_psf_map_agrees_with_edges_of_a_gaussian_blurred_chart(rng):
    layout = _edges_layout()
    img, hom = _synthetic(layout, (424, 600), 0.9, rng)
    res = measure_chart_mtf(img, layout, hom, channels=["G"])
    right = psf_edge_agreement(_gauss_box_map(600, 424, 0.9), res.records)
    wrong = psf_edge_agreement(_gauss_box_map(600, 424, 1.3), res.records)
    assert max(a.max_abs_diff for a in right) < 0.03
    assert min(a.max_abs_diff for a in wrong) > 0.05


def _discrete_gauss_otf(f, sigma_px):
    """Transfer of ndimage.gaussian_filter's sampled kernel (truncate 4)."""
    r = int(4.0 * sigma_px + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    k /= k.sum()
    return (k[:, None] * np.cos(2 * np.pi * np.outer(np.arange(-r, r + 1), f))).sum(axis=0)


def test_vignetting_is_flat_fielded_from_the_chart_background(rng):
    layout = _edges_layout()
    shape, sigma = (424, 600), 0.9
    hom = targets.page_homography(layout, shape)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    r2 = ((x - 299.5) ** 2 + (y - 211.5) ** 2) / (299.5**2 + 211.5**2)
    scene = targets.render_layout(layout, shape, homography=hom, supersample=4) * (1.0 - 0.5 * r2)  # 0.5 at corners
    img = 0.02 + 0.8 * ndimage.gaussian_filter(scene, sigma, mode="nearest")
    img = np.repeat(img[..., None], 3, axis=2).astype(np.float32)
    freq = np.linspace(0.0, 1.0, 2001)

    def errors(flat_field):
        res = measure_chart_mtf(img, layout, hom, channels=["G"], flat_field=flat_field)
        out = []
        for rec in res.clean_records():
            t = np.radians(rec.orientation_deg)
            truth = np.abs(_discrete_gauss_otf(freq * np.cos(t), sigma) * _discrete_gauss_otf(freq * np.sin(t), sigma)
                           * np.sinc(freq * np.cos(t)) * np.sinc(freq * np.sin(t)))
            out.append(abs(rec.mtf50_cpp() / _mtf50(freq, truth) - 1))
        return np.asarray(out)

    flat, raw = errors(True), errors(False)
    assert len(flat) >= 20
    assert np.percentile(flat, 95) < 0.01 < np.percentile(raw, 95)


def test_clipped_edges_are_flagged_and_kept_out_of_clean_records(rng):
    layout = _edges_layout()
    img, hom = _synthetic(layout, (424, 600), 0.8, rng, gain=2.5, noise=0.0)
    res = measure_chart_mtf(np.clip(img, 0, 1), layout, hom, channels=["G"])
    assert all("clipped" in e.flags for e in res.edges if e.records)
    assert res.clean_records() == ()
    assert all("clipped" in s.flags for s in res.summary())


def test_low_contrast_edges_are_flagged(rng):
    layout = _edges_layout()
    img, hom = _synthetic(layout, (424, 600), 0.8, rng, gain=0.01, noise=0.004)
    res = measure_chart_mtf(img, layout, hom, channels=["G"])
    measured = [e for e in res.edges if e.records]
    assert measured and all("low_contrast" in e.flags for e in measured)


def test_square_cut_by_the_frame_is_flagged_partly_outside(rng):
    layout = _edges_layout()
    shape = (424, 600)
    page = targets.page_homography(layout, shape)
    centres = np.array([(q.x_mm, q.y_mm, 1.0) for q in layout.edges]) @ page.T
    side_px = layout.edges[0].side_mm * page[0, 0]
    # push the chart right until the last column of squares straddles the frame's border
    dx = shape[1] - 1 - (centres[:, 0] / centres[:, 2]).max() + 0.2 * side_px
    hom = np.array([[1.0, 0, dx], [0, 1.0, 0], [0, 0, 1.0]]) @ page
    img, _ = _synthetic(layout, shape, 0.8, rng, hom=hom)
    res = measure_chart_mtf(img, layout, hom, channels=["G"])
    flags = {f for e in res.edges for f in e.flags}
    assert {"partly_outside", "outside"} <= flags
    out = [e for e in res.edges if "outside" in e.flags]
    assert all(not e.records for e in out)
    clean = [e for e in res.edges if not e.flags]
    assert clean and all(e.predicted_xy_px[0] < shape[1] - 10 for e in clean)


def test_squares_too_small_in_the_photo_are_flagged_short(rng):
    layout = targets.make_layout("edges", paper="A4", landscape=True)  # 15 squares of 22 mm
    img, hom = _synthetic(layout, (106, 150), 0.6, rng)  # ~11 px squares
    res = measure_chart_mtf(img, layout, hom)
    assert res.records == ()
    assert all(e.flags == ("short_edge",) for e in res.edges)


def test_edge_too_close_to_another_element_is_flagged_crowded(rng):
    layout = _edges_layout(square_fraction=0.85)  # squares close to the background's border
    img, hom = _synthetic(layout, (424, 600), 0.8, rng)
    res = measure_chart_mtf(img, layout, hom, channels=["G"])
    crowded = [e for e in res.edges if "crowded" in e.flags]
    assert crowded and all(not e.records for e in crowded)


def test_stripes_chart_gives_stripe_records_only(rng):
    layout = targets.make_layout("stripes", paper="A4", landscape=True, field=(2, 1),
                                 frequencies_cpmm=[0.1, 0.2], orientations_deg=(0.0, 90.0))
    img, hom = _synthetic(layout, (424, 600), 0.8, rng)
    res = measure_chart_mtf(img, layout, hom)
    assert res.edges == ()
    assert res.stripes is not None and {r.method for r in res.records} == {"stripes"}
    assert len(res.records) == 3 * len(layout.stripes)


def test_combo_chart_gives_edge_and_stripe_records(rng):
    layout = targets.make_layout("combo", paper="A4", landscape=True, field=(2, 1))
    img, hom = _synthetic(layout, (848, 1200), 0.8, rng)
    res = measure_chart_mtf(img, layout, hom, channels=["G"])
    assert {r.method for r in res.records} == {"edge", "stripes"}
    assert len(res.edges) == 4 * len(layout.edges)
    assert sum(1 for e in res.edges if not e.flags) >= 4


def test_luminance_is_measured_on_request(rng):
    layout = _edges_layout()
    img, hom = _synthetic(layout, (424, 600), 0.8, rng)
    res = measure_chart_mtf(img, layout, hom, channels=["Y"])
    assert res.channels == ("Y",) and {r.channel for r in res.records} == {"Y"}


def test_summary_has_one_line_per_edge_and_channel_with_its_mtf50(rng):
    layout = _edges_layout()
    img, hom = _synthetic(layout, (424, 600), 0.8, rng)
    res = measure_chart_mtf(img, layout, hom, channels=["R", "G"])
    rows = res.summary()
    assert len(rows) == 2 * sum(1 for e in res.edges if e.records)
    for row in rows:
        e = next(e for e in res.edges if (e.square_index, e.side) == (row.index, row.side))
        assert row.mtf50_cpp == e.mtf50_cpp[row.channel]
    assert len(res.format_summary().splitlines()) == len(rows) + 1


def test_chart_without_edges_or_gratings_is_refused(rng):
    layout = targets.make_layout("dots", paper="A4", landscape=True)
    img = np.zeros((100, 150, 3), np.float32)
    with pytest.raises(CalibError, match="neither edge squares nor gratings"):
        measure_chart_mtf(img, layout, np.eye(3))


def test_unknown_channel_is_refused(rng):
    layout = _edges_layout()
    img, hom = _synthetic(layout, (212, 300), 0.8, rng)
    with pytest.raises(CalibError, match="channel 'Q'"):
        measure_chart_mtf(img, layout, hom, channels=["Q"])


def test_unusable_geometry_is_refused(rng):
    layout = _edges_layout()
    img, _ = _synthetic(layout, (212, 300), 0.8, rng)
    with pytest.raises(CalibError, match="homography"):
        measure_chart_mtf(img, layout, np.ones((2, 2)))
