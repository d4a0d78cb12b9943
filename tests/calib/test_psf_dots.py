"""Dots estimator against seeded synthetic truth (known system PSF, known dot centres)."""
from __future__ import annotations

import numpy as np
import pytest

from calib import CalibError
from calib._psf_dots import dot_ellipse_px, estimate_psf_dots

from _psf_synth import FINE, dot_scene, photograph, rel_l2, system_psf


@pytest.fixture
def dots_photo(rng):
    psf_fine, truth = system_psf(4)
    scene, centres = dot_scene(220, 220, rng)
    return photograph(scene, psf_fine, rng), centres, truth


def test_dots_psf_matches_truth_within_5_percent(dots_photo):
    image, centres, truth = dots_photo
    est = estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, oversample=3)
    assert rel_l2(est.psf, truth) < 0.05


def test_dots_psf_is_normalised_odd_and_non_negative(dots_photo):
    image, centres, _ = dots_photo
    est = estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, oversample=2)
    assert est.psf.shape == (9, 9) and est.psf_fine.shape == (17, 17)
    assert est.psf.min() >= 0 and abs(float(est.psf.sum()) - 1) < 1e-5


def test_dots_psf_follows_a_shift_of_the_registered_centres(dots_photo):
    # Centres registered 0.5 px too far right put the PSF's centroid 0.5 px left.
    image, centres, truth = dots_photo
    est = estimate_psf_dots(image, centres + [0.5, 0.0], dot_ellipse=1.0, size=9, oversample=2)
    ax = np.arange(-4, 5)
    shift = float((est.psf.sum(0) * ax).sum() - (truth.sum(0) * ax).sum())
    assert abs(shift + 0.5) < 0.05


def test_saturated_dots_are_skipped_and_counted(dots_photo):
    image, centres, _ = dots_photo
    clipped = np.zeros(image.shape, bool)  # the loader's map of clipped pixels
    clipped[: image.shape[0] // 2] = True
    est = estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, oversample=2, mask=clipped)
    assert est.n_saturated > 0 and est.n_dots + est.n_saturated <= len(centres)


def test_all_saturated_dots_raise_with_the_count_and_a_shorter_exposure(dots_photo):
    image, centres, _ = dots_photo
    with pytest.raises(CalibError, match=r"saturated.*shorter exposure"):
        estimate_psf_dots(np.minimum(image * 50, 1.0), centres, dot_ellipse=1.0, size=9)


def test_one_smoothing_weight_per_channel_equals_separate_solves(dots_photo):
    image, centres, _ = dots_photo
    both = estimate_psf_dots(np.stack([image, image], -1), centres, dot_ellipse=1.0, size=9, reg=[0.01, 0.1])
    for c, reg in enumerate((0.01, 0.1)):
        alone = estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, reg=reg)
        np.testing.assert_allclose(both.psf[c], alone.psf, atol=1e-6)
    assert np.abs(both.psf[0] - both.psf[1]).max() > 1e-3


def test_dots_cut_by_the_crop_edge_still_count_and_keep_the_psf_right(dots_photo):
    # The first column of dots (x ~ 12 px) sits 4 px from a crop 8 px in: half its
    # cut-out is outside, as at the frame's edge.
    image, centres, truth = dots_photo
    est = estimate_psf_dots(image[:, 8:], centres - [8, 0], dot_ellipse=1.0, size=9, oversample=3)
    assert est.n_dots == len(centres)
    assert rel_l2(est.psf, truth) < 0.05


def test_brightness_plane_skips_cut_dots_and_falls_back_to_them_when_alone():
    from calib._psf_dots import _smooth_amplitudes  # noqa: PLC0415

    xy = np.stack(np.meshgrid(np.arange(4.0), np.arange(3.0)), -1).reshape(-1, 2) * 15
    amps = np.full(12, 2.0)
    amps[:3] = 1.0  # three dots half outside the crop
    whole = np.arange(12) >= 3
    np.testing.assert_allclose(_smooth_amplitudes(xy, amps, whole), 2.0)
    np.testing.assert_allclose(_smooth_amplitudes(xy[:3], amps[:3], np.zeros(3, bool)), 1.0)


def test_dot_ellipse_scales_the_jacobian_by_the_radius():
    e = dot_ellipse_px(0.5, np.array([[4.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_allclose(e, [[1.0, 0.0], [0.0, 0.5]])


def _sigma_at_x(x):
    return (0.6 + 0.006 * x, 0.45 + 0.003 * x)


def _left_edge_node(rng, sigma_at_x):
    """Dots whose PSF follows ``sigma_at_x``, a node at the frame's left edge: (photo, the
    node's 40 nearest dots, the node, the true PSF there)."""
    from _psf_synth import varying_dot_photo

    image, centres = varying_dot_photo(120, 200, rng, sigma_at_x)
    node = (8.0, 60.0)
    near = centres[np.argsort(np.hypot(*(centres - node).T))[:40]]
    return image, near, node, system_psf(4, sigma=sigma_at_x(node[0]))[1]


def test_linear_field_fit_describes_a_node_at_the_edge_of_its_dots(rng):
    # PSF widening across the field, node at the left edge: every dot lies to its right.
    image, near, node, truth = _left_edge_node(rng, _sigma_at_x)
    plain = estimate_psf_dots(image, near, dot_ellipse=1.0, size=9, oversample=3)
    linear = estimate_psf_dots(image, near, dot_ellipse=1.0, size=9, oversample=3, node_xy=node)
    assert rel_l2(linear.psf, truth) < 0.5 * rel_l2(plain.psf, truth)


def test_fine_core_resolves_a_sharp_core_in_a_wide_halo_better_than_sensor_grid_samples(rng):
    # Half the light in a 0.35 px core, half in a 1.8 px halo (a defocused channel near its
    # own focus). Sensor-grid samples cannot interpolate the core: measured 4.2-4.9 % vs
    # 2.1-2.5 % over three seeds (the fine solve's unknowns are the optical PSF, so it
    # needs a tenth of the smoothing the system PSF's did: 0.1 now gives 6.6-6.9 %).
    p1, _ = system_psf(7, sigma=(0.35, 0.35), coma=0.0)
    p2, _ = system_psf(7, sigma=(1.8, 1.8), coma=0.0)
    p = 0.5 * p1 + 0.5 * p2
    big = 9 * FINE
    sl = slice(big - 7 * FINE, big + 7 * FINE + 1, FINE)
    truth = p[sl, sl] / p[sl, sl].sum()
    scene, centres = dot_scene(260, 260, rng, pitch=19.3)
    photo = photograph(scene, p, rng)
    grid = estimate_psf_dots(photo, centres, dot_ellipse=1.0, size=15, oversample=1, reg=0.003)
    core = estimate_psf_dots(photo, centres, dot_ellipse=1.0, size=15, oversample=3, core_px=2.0, reg=0.01)
    assert rel_l2(core.psf, truth) < 0.035
    assert rel_l2(core.psf, truth) < 0.8 * rel_l2(grid.psf, truth)


def test_sharp_core_penalty_keeps_the_flanks_of_a_sub_pixel_core(rng):
    # A diffraction-limited core (0.12 px rms, 80 % of the light) 0.375 px off the dot
    # centre, so the pixel boundary runs through its flank: the sensor-grid samples follow
    # the flank's steepness. Measured over nine seeds: 3.7-7.5 % edge-preserving against
    # 7.4-8.3 % quadratic (ratio 0.46-0.90).
    p1, _ = system_psf(7, sigma=(0.12, 0.12), coma=0.0)
    p2, _ = system_psf(7, sigma=(1.2, 1.2), coma=0.0)
    p = np.roll(0.8 * p1 + 0.2 * p2, 3, axis=1)
    big = 9 * FINE
    sl = slice(big - 7 * FINE, big + 7 * FINE + 1, FINE)
    truth = p[sl, sl] / p[sl, sl].sum()
    scene, centres = dot_scene(260, 260, rng, pitch=19.3)
    photo = photograph(scene, p, rng)
    kw = dict(dot_ellipse=1.0, size=15, oversample=3, core_px=2.0, reg=0.00015)
    quadratic = estimate_psf_dots(photo, centres, **kw)
    huber = estimate_psf_dots(photo, centres, **kw, sharp_core=True)
    assert rel_l2(huber.psf, truth) < 0.065
    assert rel_l2(huber.psf, truth) < 0.93 * rel_l2(quadratic.psf, truth)


def test_sharp_core_flags_of_the_wrong_count_are_refused(dots_photo):
    image, centres, _ = dots_photo
    with pytest.raises(CalibError, match="sharp_core"):
        estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, sharp_core=[True, False])


def test_channel_shifts_undo_a_lateral_colour_that_grows_across_the_neighbourhood(rng):
    # One PSF everywhere, moved 0.005 px per pixel away from the node (lateral colour
    # growing with the field): 0.3 px at the far dots. Moved back by that known drift,
    # the dots all show the node's PSF (measured over four seeds: 3.3-3.8 %, against
    # 13.0-14.3 % smeared by the drift).
    from _psf_synth import varying_dot_photo

    node = (8.0, 60.0)

    def drift(x, y):
        return (0.005 * (x - node[0]), 0.0)

    image, centres = varying_dot_photo(120, 200, rng, lambda x: (0.6, 0.5), shift_at=drift)
    near = centres[np.argsort(np.hypot(*(centres - node).T))[:40]]
    truth = system_psf(4, sigma=(0.6, 0.5))[1]
    kw = dict(dot_ellipse=1.0, size=9, oversample=3)
    smeared = estimate_psf_dots(image, near, **kw)
    shifted = estimate_psf_dots(image, near, **kw, channel_shifts=np.array([[drift(*c) for c in near]]))
    assert rel_l2(shifted.psf, truth) < 0.05
    assert rel_l2(shifted.psf, truth) < 0.35 * rel_l2(smeared.psf, truth)


def test_channels_shifted_alike_share_one_solve(dots_photo):
    image, centres, _ = dots_photo
    kw = dict(dot_ellipse=1.0, size=9, reg=[0.01, 0.1])
    both = estimate_psf_dots(np.stack([image, image], -1), centres, **kw)
    none = estimate_psf_dots(np.stack([image, image], -1), centres, **kw, channel_shifts=np.zeros((2, len(centres), 2)))
    np.testing.assert_allclose(none.psf, both.psf, atol=1e-6)


def test_channel_shifts_of_the_wrong_shape_are_refused(dots_photo):
    image, centres, _ = dots_photo
    with pytest.raises(CalibError, match=r"channel_shifts must be \(channels, dots, 2\) = \(1, "):
        estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, channel_shifts=np.zeros((len(centres), 2)))


def _sigma_curving_in_x(x):
    u = (x - 100.0) / 100.0
    return (0.6 + 1.2 * u * u, 0.5 + 0.8 * u * u)


def test_quadratic_field_fit_describes_a_width_that_curves_across_the_neighbourhood(rng):
    # Narrowest at the node, widening to both sides: a linear field averages the two
    # sides (measured 13-15 % against 8-10 % for the quadratic fit, three seeds).
    from _psf_synth import varying_dot_photo

    image, centres = varying_dot_photo(120, 200, rng, _sigma_curving_in_x)
    node = (100.0, 60.0)
    truth = system_psf(4, sigma=_sigma_curving_in_x(node[0]))[1]
    near = centres[np.argsort(np.hypot(*(centres - node).T))[:60]]
    kw = dict(dot_ellipse=1.0, size=9, oversample=3, node_xy=node)
    linear = estimate_psf_dots(image, near, **kw)
    quadratic = estimate_psf_dots(image, near, **kw, field_order=2)
    assert rel_l2(quadratic.psf, truth) < 0.75 * rel_l2(linear.psf, truth)


def test_unfitted_dots_in_the_crop_are_kept_out_of_the_background(rng):
    # A frame-corner node: its nearest dots fill a quarter disc, and the crop around
    # them holds further dots whose wide halos read as background unless they are named
    # (measured 16-19 % -> 11-15 %, four seeds).
    psf_fine, truth = system_psf(7, sigma=(1.6, 1.2), coma=0.4)
    scene, centres = dot_scene(160, 160, rng, pitch=17.0)
    photo = photograph(scene, psf_fine, rng)
    order = np.argsort(np.hypot(*centres.T))
    fit, rest = centres[order[:25]], centres[order[25:]]
    x1, y1 = int(fit[:, 0].max()) + 12, int(fit[:, 1].max()) + 12
    kw = dict(dot_ellipse=1.0, size=15, oversample=3, core_px=2.0, reg=0.03, node_xy=(0.0, 0.0))
    alone = estimate_psf_dots(photo[:y1, :x1], fit, **kw)
    named = estimate_psf_dots(photo[:y1, :x1], fit, **kw, other_xy=rest)
    assert rel_l2(named.psf, truth) < 0.85 * rel_l2(alone.psf, truth)


def test_dots_turned_to_the_node_azimuth_describe_its_psf_from_all_around_the_axis(rng):
    # A rotationally symmetric lens: each dot's PSF is the same elongated comet pointing
    # away from the centre. Turned by their azimuth difference, dots all around the centre
    # describe the node's PSF; unturned, they average all orientations (measured over
    # four seeds: 1.3-1.8 % turned, 30-31 % turned the wrong way, 34-35 % unturned).
    from _psf_synth import varying_dot_photo

    centre = np.array([80.0, 80.0])
    image, centres = varying_dot_photo(160, 160, rng, lambda x: (1.1, 0.55),
                                       theta_at=lambda x, y: np.arctan2(y - centre[1], x - centre[0]))
    rel = centres - centre
    dots = centres[np.hypot(*rel.T) > 20]
    azimuth = np.arctan2(dots[:, 1] - centre[1], dots[:, 0] - centre[0])
    node_azimuth = 0.7
    truth = system_psf(4, sigma=(1.1, 0.55), theta=node_azimuth)[1]
    kw = dict(dot_ellipse=1.0, size=9, oversample=3)
    turned = estimate_psf_dots(image, dots, **kw, rotations=node_azimuth - azimuth)
    plain = estimate_psf_dots(image, dots, **kw)
    assert rel_l2(turned.psf, truth) < 0.03
    assert rel_l2(turned.psf, truth) < 0.15 * rel_l2(plain.psf, truth)


def _sigma_growing_in_x(x):
    return (0.5 + 0.012 * x, 0.4 + 0.008 * x)


def test_field_along_one_axis_describes_a_psf_that_changes_along_it_with_less_noise(rng):
    # The PSF changes only with x and every dot lies to the node's right: the field
    # fitted along x alone has fewer unknowns to extrapolate (measured over four seeds:
    # 12.4-13.1 % against 14.6-15.8 % with both axes).
    image, near, node, truth = _left_edge_node(rng, _sigma_growing_in_x)
    kw = dict(dot_ellipse=1.0, size=9, oversample=3, node_xy=node, field_order=2)
    both = estimate_psf_dots(image, near, **kw)
    along_x = estimate_psf_dots(image, near, **kw, field_axes=1)
    assert rel_l2(along_x.psf, truth) < 0.9 * rel_l2(both.psf, truth)


def test_dots_stretched_by_their_field_height_describe_a_psf_growing_away_from_the_axis(rng):
    # The PSF's width grows in proportion to the distance from an axis left of the
    # frame, and every dot lies to the node's right. Each dot stretched by the node's
    # distance over its own leaves the linear field less to extrapolate (measured over
    # four seeds: 3.5-4.7 % stretched, 6.6-7.1 % not).
    from _psf_synth import varying_dot_photo

    axis_x = -40.0

    def sigma(x):
        return (0.02 * (x - axis_x), 0.6)

    image, centres = varying_dot_photo(120, 200, rng, sigma, theta_at=lambda x, y: 0.0)
    node = (8.0, 60.0)
    near = centres[np.argsort(np.hypot(*(centres - node).T))[:40]]
    truth = system_psf(6, sigma=sigma(node[0]), theta=0.0)[1]
    kw = dict(dot_ellipse=1.0, size=13, oversample=3, node_xy=node, field_axes=1)
    linear = estimate_psf_dots(image, near, **kw)
    stretched = estimate_psf_dots(image, near, **kw, stretch=(node[0] - axis_x) / (near[:, 0] - axis_x),
                                  stretch_axis=(1.0, 0.0))
    assert rel_l2(stretched.psf, truth) < 0.8 * rel_l2(linear.psf, truth)


def test_stretch_without_one_positive_factor_per_dot_is_refused(dots_photo):
    image, centres, _ = dots_photo
    with pytest.raises(CalibError, match=r"stretch must hold one positive factor per dot"):
        estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, stretch=np.zeros(len(centres)))


def test_stretch_along_no_direction_is_refused(dots_photo):
    image, centres, _ = dots_photo
    with pytest.raises(CalibError, match=r"stretch_axis \(0.0, 0.0\) must be a non-zero \(x, y\) direction"):
        estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, stretch=np.ones(len(centres)),
                          stretch_axis=(0.0, 0.0))


def test_field_order_other_than_linear_or_quadratic_is_refused(dots_photo):
    image, centres, _ = dots_photo
    with pytest.raises(CalibError, match=r"field_order 3 must be 1 \(linear\) or 2 \(quadratic\)"):
        estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, node_xy=(100.0, 100.0), field_order=3)


def test_field_axes_other_than_one_or_two_are_refused(dots_photo):
    image, centres, _ = dots_photo
    with pytest.raises(CalibError, match=r"field_axes 3 must be 1 \(the first coordinate\) or 2 \(both\)"):
        estimate_psf_dots(image, centres, dot_ellipse=1.0, size=9, node_xy=(100.0, 100.0), field_axes=3)
