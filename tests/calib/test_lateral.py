"""The frame's lateral-colour model against seeded synthetic dot shifts."""
from __future__ import annotations

import numpy as np

from calib._lateral import MIN_DOTS, fit_lateral_colour

CENTRE = (599.5, 399.5)
NORM = float(np.hypot(*CENTRE))
# R and B shifts from green: a magnification difference that grows towards the corners
SCALE = np.array([[4e-4, 1e-4, 3e-4], [0.0, 0.0, 0.0], [-3e-4, -2e-4, -1e-4]])


def _dots(rng, n=600):
    return np.c_[rng.uniform(20, 1180, n), rng.uniform(20, 780, n)]


def _shifts(xy, *, translation=np.zeros((3, 2))):
    d = xy - CENTRE
    rho = np.hypot(*d.T) / NORM
    s = SCALE @ rho[None] ** np.arange(3)[:, None]
    return s[..., None] * d[None] + translation[:, None]


def _fit(shift, xy):
    return fit_lateral_colour(shift, xy, centre_xy_px=CENTRE, norm_radius_px=NORM)


def test_radial_shift_is_recovered_at_the_frame_corners_through_centroid_noise(rng):
    xy = _dots(rng)
    noisy = _shifts(xy) + rng.normal(0, 0.03, (3, len(xy), 2))
    noisy[1] = 0
    corners = np.array([[0, 0], [1199, 0], [0, 799], [1199, 799]], float)
    miss = _fit(noisy, xy).at(corners) - _shifts(corners)
    # the frame's 600 dots average their 0.03 px noise down (0.011 px here)
    assert np.abs(miss).max() < 0.02


def test_dots_far_off_the_model_are_left_out(rng):
    xy = _dots(rng)
    shift = _shifts(xy)
    shift[:, :30] += 0.8  # dots beside a marker's quiet zone
    shift[1] = 0
    model = _fit(shift, xy)
    assert np.abs(model.at(xy[30:]) - _shifts(xy[30:])).max() < 1e-6


def test_a_decentred_shift_is_taken_up_by_the_translation(rng):
    xy = _dots(rng)
    t = np.array([[0.12, -0.05], [0, 0], [-0.04, 0.09]])
    model = _fit(_shifts(xy, translation=t), xy)
    np.testing.assert_allclose(model.translation_px, t, atol=1e-9)


def test_green_reference_has_no_shift(rng):
    xy = _dots(rng)
    model = _fit(_shifts(xy), xy)
    assert not model.at(xy)[1].any() and model.residual_rms_px[1] == 0


def test_too_few_dots_give_no_model(rng):
    xy = _dots(rng, MIN_DOTS - 1)
    assert _fit(_shifts(xy), xy) is None


def test_unmeasured_dots_are_ignored(rng):
    xy = _dots(rng)
    shift = _shifts(xy)
    shift[0, :50] = np.nan
    model = _fit(shift, xy)
    assert model.n_dots == len(xy) - 50
    assert np.abs(model.at(xy) - _shifts(xy)).max() < 1e-9
