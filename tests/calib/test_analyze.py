"""Accuracy of analyze_images against the simulated camera's truth (PSFs, lateral colour,
distortion) on a small sensor with the chart overfilling the frame (its inner markers
register it), plus the bad-exposure message. Full-size figures: bench/bench_analysis.py."""
from __future__ import annotations

import numpy as np
import pytest

import calib
import targets
from calib import SensorModel, SimulatedCamera

from _simtools import shoot_full_frame_dots

SENSOR = SensorModel(name="t", width_px=720, height_px=480, pixel_pitch_um=5.0)
GRID = (2, 3)
FILL = 1.3  # the dots reach the frame corners; the inner markers stay in view


def _shoot(model: SimulatedCamera, defocus: int, *, gain: float = 1.0):
    probe = targets.make_layout("dots", paper="300x200mm")
    dist = model.chart_distance_m(probe, fill=FILL)
    layout = targets.make_layout("dots", paper="300x200mm", pixel_pitch_um=SENSOR.pixel_pitch_um,
                                 focal_mm=model.focal_length_mm, distance_m=dist)
    fp = round(model.best_focus_position(dist)) + defocus
    shot = model.shoot(layout, focus_position=fp, object_distance_m=dist, fill=FILL)
    rgb = np.clip(shot.rgb_linear * gain, 0, 1).astype(np.float32)
    img = calib.LinearImage(rgb, ("R", "G", "B"), 0, 1, rgb >= 0.999, shot.metadata)
    return img, layout, shot, fp, dist


@pytest.fixture(scope="module")
def defocused():
    # Three scene samples per pixel, as the benches render: at one, a ~1 px dot snaps to
    # the pixel grid and its sub-pixel phase, which the dots solve resolves the PSF
    # from, is lost in the simulation itself (green 10-19 % here against 8-9 % at three).
    model = SimulatedCamera("sharp-prime", SENSOR, seed=3, render_oversample=3)
    img, layout, shot, fp, dist = _shoot(model, 12)
    # A 12-step defocus blurs over ~15 px (rms width > 1 px): a sharp core in a wide halo.
    res = calib.analyze_images([img], layout, grid=GRID)
    truth = model.true_psf_map(focus_position=fp, object_distance_m=dist, grid=GRID,
                               size=res.psf_map.on_sensor_grid().kernel_size)
    return model, layout, shot, fp, dist, res, truth


def _rel_l2(est: np.ndarray, tru: np.ndarray) -> np.ndarray:
    c, ny, nx = est.shape[:3]
    d = (est - tru).reshape(c, ny, nx, -1)
    return np.linalg.norm(d, axis=-1) / np.linalg.norm(tru.reshape(c, ny, nx, -1), axis=-1)


def test_overfilled_chart_measures_every_node_without_extrapolation(defocused):
    res = defocused[5]
    assert not (res.psf_map.flags & calib.FLAG_FILLED).any()


def test_green_psf_map_is_within_18_percent_of_the_truth_at_every_node(defocused):
    # Small sensor, every node at the frame edge: looser than the full-size goal
    # (bench_analysis.py); measured here 8-9 % (24-25 % before the linear field at every node).
    res, truth = defocused[5], defocused[6]
    err = _rel_l2(res.psf_map.on_sensor_grid().psf, truth.psf)[1]
    assert np.median(err) < 0.18 and err.max() < 0.18


def test_lateral_colour_from_dot_centroids_matches_the_true_centroids(defocused):
    model, _layout, _shot, fp, dist, res, _truth = defocused
    lat = res.lateral_colour_px
    for i, row in enumerate(res.psf_map.nodes_xy):
        for j, (x, y) in enumerate(row):
            r = model.true_psf_centroid(x, y, "R", focus_position=fp, object_distance_m=dist)
            b = model.true_psf_centroid(x, y, "B", focus_position=fp, object_distance_m=dist)
            true_rb = np.array([r.x_px - b.x_px, r.y_px - b.y_px])
            # the issue's goal; every node of this grid is at the frame edge (measured <= 0.03)
            assert np.hypot(*(lat[0, i, j] - lat[2, i, j] - true_rb)) < 0.05


def test_node_solves_on_two_threads_give_the_same_map_as_one(defocused):
    _model, layout, shot, _fp, _dist, res, _truth = defocused
    img = calib.LinearImage(np.clip(shot.rgb_linear, 0, 1).astype(np.float32), ("R", "G", "B"), 0, 1,
                            shot.rgb_linear >= 0.999, shot.metadata)
    single = calib.analyze_images([img], layout, grid=GRID, workers=1)
    np.testing.assert_array_equal(single.psf_map.psf, res.psf_map.psf)


def test_psf_extent_of_faint_sharp_dots_is_not_inflated_by_noise(rng):
    # Dots of 1 px, PSF rms ~0.85 px, peak SNR ~20, 196 dots: the noise around them once
    # made the median dot look 4 px wide (a 35 px PSF here, 39 px for a 24 MP chart);
    # measured 9-17 px over seeds (the 99.5 % light radius is noise-limited with few dots).
    from _psf_synth import dot_scene, photograph, system_psf  # noqa: PLC0415

    from calib._analyze import _psf_extent_from_dots  # noqa: PLC0415

    psf_fine, _ = system_psf(5, sigma=(0.8, 0.8), coma=0.0)
    scene, centres = dot_scene(400, 400, rng, pitch=27.0, level=0.3, bg=0.0)
    photo = photograph(scene, psf_fine, rng, read=0.003, gain=0.0)
    size, sigma = _psf_extent_from_dots(photo, centres, 12, 0.5)
    assert size <= 17 and 0.6 < sigma < 1.2


def test_width_field_tells_a_sharp_channel_from_one_that_widens_across_the_field(rng):
    # Each channel's smoothing follows its own width: a flat channel (true rms 0.80 px with
    # the pixel box and its coma lobe) beside one widening from 0.95 to 2.35 px left to
    # right (true rms at the node columns below). The dots' 6 px windows on this small
    # frame cut the widest PSFs' tails, so the right end reads low (1.83 measured).
    from _psf_synth import varying_dot_photo  # noqa: PLC0415

    from calib._analyze import _width_field  # noqa: PLC0415

    sharp, centres = varying_dot_photo(140, 240, np.random.default_rng(3), lambda x: (0.45, 0.45))
    wide, _ = varying_dot_photo(140, 240, np.random.default_rng(3), lambda x: (0.5 + 0.006 * x,) * 2)
    field = _width_field(np.stack([sharp, wide], -1), centres, np.linspace(20, 220, 5), np.linspace(20, 120, 3),
                         half=6, dot_r_px=0.5)
    widths = field.rms_px
    true_wide = np.array([0.95, 1.30, 1.66, 2.02, 2.35])
    assert np.all(np.abs(widths[..., 0] - 0.80) < 0.1)
    assert np.all(np.diff(widths[..., 1], axis=1) > 0)
    assert np.all(np.abs(widths[..., 1] / true_wide - 1) < 0.25)
    # Its slope comes from 120 dots a node, most of this small frame: damped to about
    # 1e-3 per px (the true log width grows 4.5e-3 per px), but there.
    assert np.all((field.log_gradient_per_px > 5e-4) & (field.log_gradient_per_px < 2e-3))


def test_a_psf_width_changing_fast_between_nodes_suggests_a_denser_grid():
    from calib._analyze import _denser_grid_note  # noqa: PLC0415

    # 2e-3 per px over 150 px nodes: 30 % between neighbours; 0.12 / 2e-3 = 60 px nodes.
    note = _denser_grid_note(np.full((6, 9), 2e-3), 150.0, (1200, 800), (6, 9))
    assert "30 %" in note and "--grid 15x21" in note
    assert _denser_grid_note(np.full((6, 9), 5e-4), 150.0, (1200, 800), (6, 9)) is None


def test_auto_grid_spaces_nodes_for_the_width_change_but_not_closer_than_asked():
    from calib._analyze import _denser_grid  # noqa: PLC0415

    # 0.12 / 2e-3 = 60 px between nodes on 1200x800; never fewer nodes than the start.
    assert _denser_grid(np.full((6, 9), 2e-3), (1200, 800), (6, 9)) == (15, 21)
    assert _denser_grid(np.full((6, 9), 2e-3), (1200, 800), (6, 9), min_spacing_px=100.0) == (9, 13)
    assert _denser_grid(np.full((6, 9), 5e-4), (1200, 800), (6, 9)) == (6, 9)


def test_auto_grid_keeps_the_default_grid_where_the_psf_changes_slowly(defocused):
    _model, layout, shot, *_ = defocused
    img = calib.LinearImage(shot.rgb_linear, ("R", "G", "B"), 0, 1, shot.rgb_linear >= 0.999, shot.metadata)
    assert calib.analyze_images([img], layout, grid="auto").psf_map.grid_shape == (6, 9)


@pytest.fixture(scope="module")
def soft_frame():
    """bench_analysis's soft-zoom frame in focus: (model, layout, focus, distance, image)."""
    model = SimulatedCamera("soft-zoom", "small", seed=1, render_oversample=5)
    layout, fp, dist, shot = shoot_full_frame_dots(model, 0)
    img = calib.LinearImage(shot.rgb_linear, ("R", "G", "B"), 0, 1, shot.rgb_linear >= 0.999, shot.metadata)
    return model, layout, fp, dist, img


def _map_error(model, fp, dist, psf_map) -> np.ndarray:
    est = psf_map.on_sensor_grid()
    truth = model.true_psf_map(focus_position=fp, object_distance_m=dist, grid=psf_map.grid_shape,
                               size=est.kernel_size)
    return _rel_l2(est.psf, truth.psf)


@pytest.mark.slow
def test_auto_grid_follows_a_soft_lens_with_more_nodes_that_match_the_truth(soft_frame):
    # At 6x9 the width changes by up to 46 % between nodes; the automatic grid (11x16,
    # three dot pitches apart) read 4.8 % median in green.
    model, layout, fp, dist, img = soft_frame
    res = calib.analyze_images([img], layout, grid="auto")
    grid = res.psf_map.grid_shape
    assert grid[0] > 6 and grid[1] > 9 and not any("denser grid" in n for n in res.notes)
    assert np.median(_map_error(model, fp, dist, res.psf_map)[1]) < 0.07


@pytest.mark.slow
def test_soft_lens_map_keeps_the_whole_psfs_red_to_blue_shift_at_every_node(soft_frame):
    # Its corner PSFs fill their kernel: moved to the lateral colour without a margin,
    # they lost light past the edge (worst node 0.048 px; with the margin 0.033 px).
    model, layout, fp, dist, img = soft_frame
    pm = calib.analyze_images([img], layout).psf_map
    stored = _centroids(pm.psf, pm.sampling)
    worst = 0.0
    for i, j in np.ndindex(pm.grid_shape):
        x, y = pm.nodes_xy[i, j]
        r, b = (model.true_psf_centroid(x, y, c, focus_position=fp, object_distance_m=dist) for c in "RB")
        miss = stored[0, i, j] - stored[2, i, j] - (r.x_px - b.x_px, r.y_px - b.y_px)
        worst = max(worst, float(np.hypot(*miss)))
    assert worst < 0.05


@pytest.mark.slow
def test_soft_lens_in_front_of_focus_keeps_its_edge_comets_within_15_percent():
    # 16 steps in front of focus the edge nodes next to the corners see comets whose sharp
    # head sits 2-3 px off the centroid: with the 2 px fine core of the other nodes their
    # blue read 15.5 % (worst node over all channels, 13.8 % with TURNED_CORE_PX).
    model = SimulatedCamera("soft-zoom", "small", seed=1, render_oversample=5)
    layout, fp, dist, shot = shoot_full_frame_dots(model, -16)
    img = calib.LinearImage(shot.rgb_linear, ("R", "G", "B"), 0, 1, shot.rgb_linear >= 0.999, shot.metadata)
    assert _map_error(model, fp, dist, calib.analyze_images([img], layout).psf_map).max() < 0.15


@pytest.mark.slow
def test_frame_edge_nodes_of_a_soft_lens_read_dots_turned_about_the_optical_centre(soft_frame, monkeypatch):
    # The edge nodes' own dots all lie inward; gathered along the circle through the node
    # and turned to its azimuth, they surround it in the field (measured over the 26 edge
    # nodes and three channels: worst 10.6 %, mean 6.8 %; each node's nearest dots: worst
    # 15.9 %, mean 9.5 %).
    import calib._analyze as analyze  # noqa: PLC0415

    model, layout, fp, dist, img = soft_frame

    def edge_errors():
        err = _map_error(model, fp, dist, calib.analyze_images([img], layout).psf_map)
        border = np.zeros(err.shape[1:], bool)
        border[[0, -1], :] = border[:, [0, -1]] = True
        border[[0, 0, -1, -1], [0, -1, 0, -1]] = False  # the corners stay an extrapolation
        return err[:, border]

    turned = edge_errors()
    monkeypatch.setattr(analyze, "ROTATE_LOPSIDED", None)
    plain = edge_errors()
    assert turned.max() < 0.12
    assert turned.mean() < 0.8 * plain.mean()


def test_grid_given_as_an_unknown_word_is_refused_with_a_clear_message(defocused):
    _model, layout, shot, *_ = defocused
    img = calib.LinearImage(shot.rgb_linear, ("R", "G", "B"), 0, 1, shot.rgb_linear >= 0.999, shot.metadata)
    with pytest.raises(calib.CalibError, match="'dense' must be"):
        calib.analyze_images([img], layout, grid="dense")


def test_fitted_distortion_predicts_the_dot_positions_within_a_tenth_of_a_pixel(defocused):
    # A dot is recorded where its green PSF's centroid lies (off axis not the chief ray);
    # measured 0.027 px max.
    model, layout, shot, _fp, _dist, res, _truth = defocused
    dots = model.true_dot_positions(layout, shot)
    err = np.hypot(*(res.registration.chart_to_image(dots.chart_mm) - dots.recorded_px).T)
    assert err.max() < 0.1


def test_mostly_saturated_dots_name_the_count_and_ask_for_a_shorter_exposure():
    model = SimulatedCamera("sharp-prime", SENSOR, seed=4)
    img, layout, *_ = _shoot(model, 12, gain=8.0)
    with pytest.raises(calib.CalibError, match=r"\d+ of \d+ dots are saturated.*shorter exposure"):
        calib.analyze_images([img], layout, grid=GRID)


def test_a_chart_lost_in_a_clipped_photo_is_blamed_on_the_exposure():
    # 40x overexposed, the markers' black modules clip too: none can be found
    model = SimulatedCamera("sharp-prime", SENSOR, seed=4)
    img, layout, *_ = _shoot(model, 12, gain=40.0)
    with pytest.raises(calib.CalibError, match=r"0 of \d+ markers detected; \d+% of it is clipped white: "
                                               r"if it is the chart in .*, use a shorter exposure"):
        calib.analyze_images([img], layout, grid=GRID)


def test_map_is_stored_at_three_samples_per_pixel(defocused):
    res, truth = defocused[5], defocused[6]
    assert res.psf_map.sampling == 3
    assert res.psf_map.kernel_size == 3 * (truth.kernel_size - 1) + 1


def test_map_keeps_the_true_red_to_blue_centroid_shift(defocused):
    # The continuous centroids: the map's fine PSFs against the truth at the same sampling.
    model, _layout, _shot, fp, dist, res, _truth = defocused
    pm = res.psf_map
    truth = model.true_psf_map(focus_position=fp, object_distance_m=dist, grid=GRID,
                               size=pm.kernel_size, oversample=pm.sampling)

    def centroids(p):
        ax = (np.arange(p.shape[-1]) - p.shape[-1] // 2) / pm.sampling
        return np.stack([(p.sum(-2) * ax).sum(-1), (p.sum(-1) * ax).sum(-1)], -1) / p.sum((-1, -2))[..., None]

    est = centroids(pm.psf[0]) - centroids(pm.psf[2])
    tru = centroids(truth.psf[0]) - centroids(truth.psf[2])
    assert np.hypot(*np.moveaxis(est - tru, -1, 0)).max() < 0.05


def _blurred_chart(kind: str, rng, **opts):
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    layout = targets.make_layout(kind, paper="A4", landscape=True, **opts)
    shape = (600, 900)
    hom = targets.page_homography(layout, shape)
    img = targets.render_layout(layout, shape, homography=hom, supersample=2).astype(np.float64)
    img = 0.02 + 0.8 * gaussian_filter(img, 1.2) + rng.standard_normal(img.shape) * 0.002
    rgb = np.repeat(img[..., None], 3, axis=2).astype(np.float32)
    return calib.LinearImage(rgb, ("R", "G", "B"), 0, 1, rgb >= 0.999, calib.ShotMetadata(camera="synthetic")), layout


def test_combo_chart_gives_a_psf_map_and_chart_mtf_in_one_analysis(rng):
    img, layout = _blurred_chart("combo", rng)
    res = calib.analyze_images([img], layout, grid=GRID)
    assert res.psf_map is not None and res.method == "dots"
    methods = {m.method for m in res.mtf}
    assert {"edge", "psf"} <= methods <= {"edge", "stripes", "psf"}


def test_edges_chart_gives_mtf_without_a_psf_map(rng):
    img, layout = _blurred_chart("edges", rng, grid=(3, 2), square_fraction=0.6)
    res = calib.analyze_images([img], layout, grid=GRID)
    assert res.psf_map is None and res.method == "mtf"
    assert any(m.method == "edge" for m in res.mtf)


def test_dots_analysis_carries_the_psf_maps_mtf_at_every_node_and_channel(defocused):
    res = defocused[5]
    psf = [m for m in res.mtf if m.method == "psf"]
    ny, nx = res.psf_map.grid_shape
    assert len(psf) == 2 * ny * nx * len(res.psf_map.channels)
    assert {m.direction for m in psf} <= {"sagittal", "tangential", "none"}
    assert all(m.mtf[0] == pytest.approx(1.0, abs=1e-3) and m.mtf[-1] < m.mtf[0] for m in psf)


def test_noise_model_from_a_dots_chart_matches_the_sensor_truth(defocused):
    # Black background and white marker quiet zones are the flat levels (no mid-grey patch).
    model, shot, res = defocused[0], defocused[2], defocused[5]
    truth = model.noise_model(shot.metadata.iso)
    assert calib.noise_model_complete(res.noise)
    np.testing.assert_allclose(res.noise.gain, truth.gain, rtol=0.1)
    # (read noise is not compared: _shoot clips the black background at 0, halving its spread)


def _poisson_gaussian_shot(scene, rng, *, read, gain):
    return (scene + rng.standard_normal(scene.shape) * np.sqrt(read**2 + gain * scene)).astype(np.float32)


def test_noise_model_from_two_repeated_shots_needs_no_flat_areas(rng):
    # A smooth ramp with fine texture everywhere: no flat block, but the shots' difference is pure noise.
    yy, xx = np.mgrid[:240, :360]
    scene = np.clip(0.05 + 0.85 * xx / 360 + 0.05 * np.sin(xx * 0.9) * np.cos(yy * 1.3), 0, 1)[..., None]
    a, b = (_poisson_gaussian_shot(scene, rng, read=0.001, gain=4e-5) for _ in range(2))
    est = calib.estimate_noise_model(a, ("G",), repeat=b)
    np.testing.assert_allclose(est.gain, [4e-5], rtol=0.1)
    np.testing.assert_allclose(est.read_noise, [0.001], rtol=0.15)


def test_noise_model_without_a_bright_level_is_incomplete(rng):
    scene = np.full((240, 360, 1), 0.01)
    est = calib.estimate_noise_model(_poisson_gaussian_shot(scene, rng, read=0.001, gain=4e-5), ("G",))
    assert not calib.noise_model_complete(est)


def test_measured_psf_map_mtf_agrees_with_an_edges_chart_within_003_at_each_node(defocused):
    # Issue 5's cross-check with a measured map: an edges chart shot at the same focus and
    # distance, registered from its own markers, against the MTF of the PSFs of a 4x6 dots
    # map (measured 0.021 at worst; the 2x3 map's interpolation over 360 px reads 0.084).
    model, _layout, _shot, fp, dist, _res, _truth = defocused
    img, layout, *_ = _shoot(model, fp - round(model.best_focus_position(dist)))
    psf_map = calib.analyze_images([img], layout, grid=(4, 6)).psf_map
    edges = targets.make_layout("edges", paper="300x200mm", grid=(5, 3), square_fraction=0.55,
                                tilts_deg=(5.0, -12.0, 20.0, -33.0, 8.0, 38.0))
    shot = model.shoot(edges, focus_position=fp, object_distance_m=dist, fill=0.97)
    mtf = calib.measure_chart_mtf(shot.rgb_linear, edges, calib.register_chart(shot.rgb_linear[..., 1], edges))
    agreement = calib.psf_edge_agreement(psf_map, mtf.records)
    assert len({a.node for a in agreement}) >= 8  # the inner nodes: the chart stops short of the frame
    assert max(a.max_abs_diff for a in agreement) < 0.03


def test_dots_beside_the_paper_and_the_markers_are_masked_out_of_the_psf_cutouts():
    # A chart framed whole: the paper around the dark field and the markers' quiet zones
    # are not dots, and the first dots' cut-outs would see them as PSF light.
    from calib._analyze import _not_dots_mask  # noqa: PLC0415
    from calib._register import Registration  # noqa: PLC0415

    layout = targets.make_layout("dots", paper="A4", landscape=True, pixel_pitch_um=5.0, focal_mm=50.0,
                                 distance_m=3.14)
    hom = np.array([[3.2, 0.0, 110.0], [0.0, 3.2, 55.0], [0.0, 0.0, 1.0]])
    reg = Registration(hom, (599.5, 399.5), 721.1, 0.0, 0.0, 0.0, 0.0, 0, 0)
    mask = _not_dots_mask(layout, reg, (800, 1200), grow_px=0)
    dots = np.rint(reg.chart_to_image([(d.x_mm, d.y_mm) for d in layout.dots])).astype(int)
    field = layout.regions[0]
    x0, y0 = np.rint(reg.chart_to_image([(field.x0_mm, field.y0_mm)])[0]).astype(int)
    m = layout.markers.items[-1]  # an inner marker
    mx, my = np.rint(reg.chart_to_image([np.mean(m.corners_mm, axis=0)])[0]).astype(int)
    assert not mask[dots[:, 1], dots[:, 0]].any()
    assert mask[y0 - 3, x0 - 3] and mask[10, 10] and mask[my, mx]
    assert not mask[y0 + 3, x0 + 3]


def _gaussian_stack(centres_xy, *, s: int = 3, k: int = 31, sigma: float = 0.8) -> np.ndarray:
    ax = (np.arange(k) - k // 2) / s
    xx, yy = np.meshgrid(ax, ax)
    out = np.stack([np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / sigma**2) for cx, cy in centres_xy])
    return out / out.sum(axis=(1, 2), keepdims=True)


def _centroids(stack: np.ndarray, s: int = 3) -> np.ndarray:
    from calib._psfmap import psf_centroids  # noqa: PLC0415

    return psf_centroids(stack, s)


def test_red_and_blue_sit_at_their_dots_offsets_from_green():
    from calib._analyze import _place_channels  # noqa: PLC0415

    fine = _gaussian_stack([(0.5, 0.2), (0.2, 0.1), (-0.1, 0.0)])
    dots = np.array([[0.32, 0.08], [0.0, 0.0], [-0.28, -0.12]])  # the solve's are (0.3, 0.1), (-0.3, -0.1)
    placed = _centroids(_place_channels(fine, 1, dots, 3))
    np.testing.assert_allclose(placed, [[0.32, 0.08], [0.0, 0.0], [-0.28, -0.12]], atol=0.005)


def test_a_channel_without_dots_offset_keeps_the_solved_offset_from_green():
    from calib._analyze import _place_channels  # noqa: PLC0415

    fine = _gaussian_stack([(0.5, 0.2), (0.2, 0.1), (-0.1, 0.0)])
    dots = np.array([[0.1, 0.1], [0.0, 0.0], [np.nan, np.nan]])  # blue unknown
    placed = _centroids(_place_channels(fine, 1, dots, 3))
    np.testing.assert_allclose(placed, [[0.1, 0.1], [0.0, 0.0], [-0.3, -0.1]], atol=0.005)


def test_a_margin_keeps_the_light_a_wide_psf_moves_past_its_kernel_edge():
    from calib._analyze import _place_channels  # noqa: PLC0415

    # sigma 2.5 px in a 11 px kernel: moved by 0.8 px, a wide PSF's centroid falls short
    # when its light is cut at the edge (here 0.72 px)
    fine = _gaussian_stack([(0.0, 0.0)] * 3, k=31, sigma=2.5)
    dots = np.array([[0.8, 0.0], [0.0, 0.0], [-0.8, 0.0]])
    cut = _centroids(_place_channels(fine, 1, dots, 3))
    kept = _place_channels(fine, 1, dots, 3, margin_px=1)
    assert kept.shape[-1] == 31 + 2 * 3
    np.testing.assert_allclose(_centroids(kept), dots, atol=0.005)
    assert abs(cut[0, 0] - 0.8) > 0.02


@pytest.mark.slow
def test_vintage_in_front_of_focus_is_within_the_accuracy_goals_in_every_channel():
    # 16 steps in front of focus vintage's blue is sharper than a pixel, and its lateral
    # colour moves it 0.12 px across an edge node's dots. Its worst node read 23.6 % with
    # the linear field alone, 17.4 % with each dot's blue moved back by the drift
    # (channel_shifts), 16.1 % with the edge-preserving penalty (sharp_core) and 13.1 %
    # with the frame edges' dots gathered along the edge (TANGENT_STRETCH).
    model = SimulatedCamera("vintage", "small", seed=1, render_oversample=5)
    layout, fp, dist, shot = shoot_full_frame_dots(model, -16)
    img = calib.LinearImage(shot.rgb_linear, ("R", "G", "B"), 0, 1, shot.rgb_linear >= 0.999, shot.metadata)
    err = _map_error(model, fp, dist, calib.analyze_images([img], layout).psf_map)
    assert err.max() < 0.15
    assert np.median(err.reshape(len(err), -1), axis=1).max() < 0.08


@pytest.fixture(scope="module")
def vintage_full_frame():
    # The bench's framing: 1200x800, the chart overfilling the frame, 5 scene samples
    # per pixel, a realistic noise level.
    model = SimulatedCamera("vintage", "small", seed=1, render_oversample=5)
    layout, fp, dist, shot = shoot_full_frame_dots(model, 0)
    img = calib.LinearImage(shot.rgb_linear, ("R", "G", "B"), 0, 1, shot.rgb_linear >= 0.999, shot.metadata)
    res = calib.analyze_images([img], layout, grid=(6, 9))
    pm = res.psf_map
    truth = model.true_psf_map(focus_position=fp, object_distance_m=dist, grid=pm.grid_shape,
                               size=pm.kernel_size, oversample=pm.sampling)
    return model, fp, dist, res, truth


@pytest.mark.slow
def test_nodes_in_the_inner_markers_holes_keep_the_true_mtf(vintage_full_frame):
    # Columns 2 and 6, rows 1-4 sit among the inner markers, their dots 1.5x further
    # out than elsewhere: with a linear field only their MTF came out 0.02-0.027 low.
    _model, _fp, _dist, res, truth = vintage_full_frame
    pm = res.psf_map
    freq = np.linspace(0, 0.25, 11)
    worst = 0.0
    for c in range(3):
        for i in range(1, 5):
            for j in (2, 6):
                for angle in (0.0, 45.0, 90.0, 135.0):
                    _, est = calib.psf_mtf(pm.psf[c, i, j], angle, sampling=pm.sampling, freq_cpp=freq)
                    _, tru = calib.psf_mtf(truth.psf[c, i, j], angle, sampling=truth.sampling, freq_cpp=freq)
                    worst = max(worst, float(np.abs(est - tru).max()))
    assert worst < 0.016


@pytest.mark.slow
def test_lateral_colour_of_the_full_frame_is_within_0_02_px_of_the_truth(vintage_full_frame):
    # The issue's goal is 0.05 px; the frame's radial model measured 0.016 at the worst node
    # (a plane through each node's 80 dots: 0.018 here, 0.056 at +15 steps).
    model, fp, dist, res, _truth = vintage_full_frame
    lat = res.lateral_colour_px
    for i, row in enumerate(res.psf_map.nodes_xy):
        for j, (x, y) in enumerate(row):
            r = model.true_psf_centroid(x, y, "R", focus_position=fp, object_distance_m=dist)
            b = model.true_psf_centroid(x, y, "B", focus_position=fp, object_distance_m=dist)
            assert np.hypot(lat[0, i, j, 0] - lat[2, i, j, 0] - (r.x_px - b.x_px),
                            lat[0, i, j, 1] - lat[2, i, j, 1] - (r.y_px - b.y_px)) < 0.02
