"""Stripe (grating) MTF: exact recovery on analytic gratings, flags, and the simulated camera's truth."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import targets
from calib import LENS_PROFILES, SENSOR_PRESETS, CalibError, LinearImage, Registration, SimulatedCamera
from calib._mtf_psf import psf_mtf
from calib._mtf_stripes import measure_stripes

W, H = 480, 320


def _layout(**kw) -> targets.Layout:
    opts = dict(paper="A4", landscape=True, field=(2, 1), frequencies_cpmm=[0.12, 0.3, 0.55],
                orientations_deg=(0.0, 90.0, 30.0))
    opts.update(kw)
    return targets.make_layout("stripes", **opts)


def _perspective(layout: targets.Layout, *, scale: float = 1.4, tilt: float = 2e-4) -> np.ndarray:
    """Chart mm -> px with some perspective, the page centred in a W x H frame."""
    pw, ph = layout.page_mm
    t = np.array([[1, 0, -pw / 2], [0, 1, -ph / 2], [0, 0, 1.0]])
    a = np.array([[scale, 0.08 * scale, 0], [-0.05 * scale, scale * 0.97, 0], [tilt, -0.6 * tilt, 1.0]])
    c = np.array([[1, 0, (W - 1) / 2], [0, 1, (H - 1) / 2], [0, 0, 1.0]])
    h = c @ a @ t
    return h / h[2, 2]


def _chart_coords(hom: np.ndarray, shape=(H, W)) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    q = np.stack([xx, yy, np.ones_like(xx)], -1) @ np.linalg.inv(hom).T
    return q[..., 0] / q[..., 2], q[..., 1] / q[..., 2]


def _analytic(layout, hom, modulation, *, shape=(H, W), harmonics=None) -> np.ndarray:
    """Each patch as mean + amplitude * sum_n c_n * modulation(n f_px) cos(2 pi n phase):
    the photo of the grating through a lens of MTF ``modulation`` (pixel frequency)."""
    u, v = _chart_coords(hom, shape)
    img = np.full(shape, 0.9)
    for p in layout.stripes:
        inside = np.nonzero((u >= p.x0_mm) & (u < p.x1_mm) & (v >= p.y0_mm) & (v < p.y1_mm))
        if len(inside[0]) == 0:
            continue
        cx, cy = p.centre_mm
        th = math.radians(p.orientation_deg)
        ph = p.frequency_cpmm * ((u[inside] - cx) * math.cos(th) + (v[inside] - cy) * math.sin(th))
        k = _local_k(hom, p)
        f = float(np.hypot(*k))
        if p.profile == "sine":
            wave = modulation(f) * np.cos(2 * np.pi * ph)
        else:
            wave = np.zeros_like(ph)
            for n in range(1, harmonics + 1, 2):
                wave += 4 / (np.pi * n) * (-1) ** ((n - 1) // 2) * modulation(n * f) * np.cos(2 * np.pi * n * ph)
        img[inside] = p.mean + p.amplitude * wave
    return img.astype(np.float32)


def _local_k(hom, p) -> np.ndarray:
    cx, cy = p.centre_mm
    e = 1e-4

    def fwd(u, v):
        q = hom @ [u, v, 1.0]
        return q[:2] / q[2]

    jac = np.column_stack([(fwd(cx + e, cy) - fwd(cx - e, cy)) / (2 * e), (fwd(cx, cy + e) - fwd(cx, cy - e)) / (2 * e)])
    th = math.radians(p.orientation_deg)
    return p.frequency_cpmm * np.array([math.cos(th), math.sin(th)]) @ np.linalg.inv(jac)


def _gauss_mtf(f):
    return float(np.exp(-((f / 0.35) ** 2)))


# ---------------------------------------------------------------- exact recovery

def test_sine_modulation_is_recovered_at_the_local_frequency_under_perspective():
    lay = _layout()
    hom = _perspective(lay)
    img = _analytic(lay, hom, _gauss_mtf)
    res = measure_stripes(img, lay, hom)
    assert len(res.records) == len(lay.stripes)
    for p, r in zip(lay.stripes, res.records):
        f = float(np.hypot(*_local_k(hom, p)))
        assert r.freq_cpp[0] == pytest.approx(f, rel=1e-3)
        assert r.mtf[0] == pytest.approx(_gauss_mtf(f), abs=2e-3)
        assert r.method == "stripes" and r.channel == "Y" and not r.flags


def test_square_wave_harmonics_use_the_fourier_series_of_the_chart():
    lay = _layout(profile="square", frequencies_cpmm=[0.12, 0.25])
    hom = _perspective(lay)
    img = _analytic(lay, hom, _gauss_mtf, harmonics=61)
    res = measure_stripes(img, lay, hom)
    n_harm = 0
    for r in res.records:
        assert not r.flags
        for f, m in zip(r.freq_cpp, r.mtf):
            assert m == pytest.approx(_gauss_mtf(f), abs=3e-3)
        n_harm += len(r.freq_cpp) - 1
    assert n_harm >= 4  # the 0.14 c/mm gratings have 3rd harmonics below Nyquist


def test_wrong_registration_scale_is_corrected_by_the_phase_refinement():
    lay = _layout()
    hom = _perspective(lay)
    img = _analytic(lay, hom, _gauss_mtf)
    off = np.diag([1.015, 1.015, 1.0]) @ hom  # 1.5 % too large, shifted centres
    off[:2, 2] += (W - 1) / 2 * -0.015, (H - 1) / 2 * -0.015
    res = measure_stripes(img, lay, off)
    for p, r in zip(lay.stripes, res.records):
        assert r.mtf[0] == pytest.approx(_gauss_mtf(r.freq_cpp[0]), abs=5e-3)


def test_vignetting_gradient_does_not_change_the_modulation():
    lay = _layout()
    hom = _perspective(lay)
    yy, xx = np.mgrid[0:H, 0:W]
    vig = 1.0 - 0.5 * (((xx - W / 2) / W) ** 2 + ((yy - H / 2) / H) ** 2)
    img = (_analytic(lay, hom, _gauss_mtf) * vig).astype(np.float32)
    res = measure_stripes(img, lay, hom)
    for r in res.records:
        assert r.mtf[0] == pytest.approx(_gauss_mtf(r.freq_cpp[0]), abs=4e-3)


def test_registration_object_with_distortion_is_followed():
    lay = _layout()
    hom = _perspective(lay)
    reg = Registration(hom, ((W - 1) / 2, (H - 1) / 2), math.hypot(W / 2, H / 2), -0.06, 0.0, 0, 0, 0, 0)
    # the photo of the distorted chart: sample the undistorted analytic photo at the ideal positions
    u, v = _chart_coords(hom)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    ideal = _undistort(reg, np.column_stack([xx.ravel(), yy.ravel()]))
    q = np.column_stack([ideal, np.ones(len(ideal))]) @ np.linalg.inv(hom).T
    uu, vv = (q[:, 0] / q[:, 2]).reshape(H, W), (q[:, 1] / q[:, 2]).reshape(H, W)
    img = np.full((H, W), 0.9)
    truth = {}
    for i, p in enumerate(lay.stripes):
        inside = (uu >= p.x0_mm) & (uu < p.x1_mm) & (vv >= p.y0_mm) & (vv < p.y1_mm)
        cx, cy = p.centre_mm
        th = math.radians(p.orientation_deg)
        ph = p.frequency_cpmm * ((uu - cx) * math.cos(th) + (vv - cy) * math.sin(th))
        truth[i] = 0.6
        img[inside] = (p.mean + p.amplitude * 0.6 * np.cos(2 * np.pi * ph))[inside]
    res = measure_stripes(img.astype(np.float32), lay, reg)
    for pr in res.patches:
        assert pr.records[0].mtf[0] == pytest.approx(truth[pr.index], abs=3e-3)


def _undistort(reg: Registration, q: np.ndarray) -> np.ndarray:
    c = np.asarray(reg.centre_xy_px)
    d = q - c
    rq = np.hypot(d[:, 0], d[:, 1]) / reg.norm_radius_px
    r = rq.copy()
    for _ in range(10):
        r = r - (r * (1 + reg.k1 * r**2) - rq) / (1 + 3 * reg.k1 * r**2)
    scale = np.where(rq > 0, r / np.where(rq > 0, rq, 1), 1.0)
    return c + d * scale[:, None]


# ---------------------------------------------------------------- classification and channels

def test_directions_are_sagittal_and_tangential_about_the_frame_centre():
    lay = _layout()
    hom = _perspective(lay, tilt=0.0)
    res = measure_stripes(_analytic(lay, hom, _gauss_mtf), lay, hom)
    for pr in res.patches:
        x, y = pr.centre_xy_px
        radial = math.degrees(math.atan2(y - (H - 1) / 2, x - (W - 1) / 2)) % 180
        diff = abs((pr.orientation_deg - radial + 90) % 180 - 90)
        expected = "tangential" if diff <= 22.5 else "sagittal" if diff >= 67.5 else "none"
        assert pr.direction == expected == pr.records[0].direction


def test_every_channel_of_a_linear_image_is_measured_by_name():
    lay = _layout()
    hom = _perspective(lay)
    grey = _analytic(lay, hom, _gauss_mtf)
    data = np.stack([grey, grey, grey], -1)
    img = LinearImage(data=data, channels=("R", "G", "B"), black_level=0.0, white_level=1.0,
                      saturated=np.zeros(data.shape, bool))
    res = measure_stripes(img, lay, hom, channels=("G", "B"))
    assert res.channels == ("G", "B")
    assert {r.channel for r in res.records} == {"G", "B"}


def test_unknown_channel_is_refused():
    lay = _layout()
    hom = _perspective(lay)
    with pytest.raises(CalibError, match="channel 'Q'"):
        measure_stripes(_analytic(lay, hom, _gauss_mtf), lay, hom, channels=("Q",))


def test_a_layout_without_stripes_is_refused():
    lay = targets.make_layout("edges", paper="A4")
    with pytest.raises(CalibError, match="no stripe patches"):
        measure_stripes(np.zeros((H, W), np.float32), lay, np.eye(3))


def test_a_non_homography_registration_is_refused():
    lay = _layout()
    with pytest.raises(CalibError, match="homography"):
        measure_stripes(np.zeros((H, W), np.float32), lay, np.eye(2))


# ---------------------------------------------------------------- bad input: flags

def test_patch_half_outside_the_frame_is_flagged_and_fully_outside_has_no_record():
    lay = _layout()
    hom = _perspective(lay)
    img = _analytic(lay, hom, _gauss_mtf)
    shift = np.array([[1, 0, 150.0], [0, 1, 0], [0, 0, 1]]) @ hom  # chart moved right by 150 px
    img = _analytic(lay, shift, _gauss_mtf)
    res = measure_stripes(img, lay, shift)
    flags = [set(p.flags) for p in res.patches]
    assert any("partly_outside" in f for f in flags)
    outside = [p for p in res.patches if "outside" in p.flags]
    assert outside and all(not p.records for p in outside)
    for p in res.patches:
        for r in p.records:
            if not r.flags:
                assert r.mtf[0] == pytest.approx(_gauss_mtf(r.freq_cpp[0]), abs=3e-3)
    assert len(res.clean_records()) < len(res.records) or outside


def test_clipped_highlights_are_flagged_per_channel():
    lay = _layout()
    hom = _perspective(lay)
    grey = _analytic(lay, hom, _gauss_mtf)
    data = np.stack([grey, np.minimum(grey * 2.0, 1.0), grey], -1)  # green hard-clipped
    res = measure_stripes(data, lay, hom)
    for pr in res.patches:
        by = {r.channel: r for r in pr.records}
        assert "clipped" in by["G"].flags
        assert "clipped" not in by["R"].flags
    assert res.flagged() == res.patches


def test_too_few_periods_are_flagged():
    lay = _layout(frequencies_cpmm=[0.04, 0.3])
    hom = _perspective(lay)
    res = measure_stripes(_analytic(lay, hom, _gauss_mtf), lay, hom)
    by_f = {}
    for pr in res.patches:
        by_f.setdefault(pr.frequency_cpmm, []).append(pr)
    assert all("few_periods" in p.flags and p.periods < 2.5 for p in by_f[0.04])
    assert all("few_periods" not in p.flags for p in by_f[0.3])


def test_a_grating_above_nyquist_is_flagged_not_measured():
    lay = _layout(frequencies_cpmm=[0.2, 0.5])
    hom = _perspective(lay, scale=0.9)  # 0.5 c/mm at 0.9 px/mm: beyond Nyquist
    res = measure_stripes(_analytic(lay, hom, lambda f: 0.5), lay, hom)
    high = [p for p in res.patches if p.frequency_cpmm == 0.5 and lay.stripes[p.index].orientation_deg % 90 == 0]
    assert high and all("above_nyquist" in p.flags and not p.records for p in high)


def test_heavy_noise_is_flagged_noisy(rng):
    lay = _layout(frequencies_cpmm=[0.3])
    hom = _perspective(lay)
    img = _analytic(lay, hom, _gauss_mtf) + rng.normal(0, 0.3, (H, W)).astype(np.float32)
    res = measure_stripes(img, lay, hom, clip_level=np.inf)
    assert all("noisy" in r.flags for r in res.records)


# ---------------------------------------------------------------- the simulated camera's truth

def _sim_camera(lens: str, *, distortion: bool) -> SimulatedCamera:
    prof = LENS_PROFILES[lens]
    if not distortion:
        prof = dataclasses.replace(prof, distortion_k1=0.0, distortion_k2=0.0)
    sensor = dataclasses.replace(SENSOR_PRESETS["small"], name="stripes-test", width_px=400, height_px=280)
    # 5 chart samples per pixel: the simulator's own box filter on the chart (in the
    # truth below) costs < 0.01 of MTF at 0.42 c/p
    return SimulatedCamera(prof, sensor, seed=3, render_oversample=5, render_grid=(3, 4))


def _sim_check(cam: SimulatedCamera, *, profile: str, channels: tuple[str, ...], averaged: bool = False) -> list[float]:
    """|measured - true| MTF; ``averaged``: truth from the true PSF averaged over the analysed
    window (where the PSF changes across a patch, a patch measures that average)."""
    w, h = cam.image_size
    px_per_mm = 0.85 * min(w / 297.0, h / 210.0)
    lay = targets.make_layout("stripes", paper="A4", landscape=True, field=(2, 1), profile=profile,
                              frequencies_cpmm=[round(f * px_per_mm, 4) for f in (0.1, 0.25, 0.42)],
                              orientations_deg=(0.0, 90.0, 30.0))
    focus = round(cam.best_focus_position(2.0))
    shot = cam.shoot(lay, focus_position=focus, object_distance_m=2.0)
    res = measure_stripes(shot.rgb_linear, lay, shot.homography, channels=channels)
    errors = []
    s = cam.render_oversample
    for r in res.clean_records():
        # The renderer's own operator: its PSF at render_oversample times the box over
        # which it averages the chart (part of the grating's modulation in the photo).
        kw = dict(focus_position=focus, object_distance_m=2.0, oversample=s)
        psf = cam.true_psf(r.x_px, r.y_px, r.channel, **kw)
        if averaged:
            half = 0.3 * 0.85 * min(w / 297.0, h / 210.0) * (lay.stripes[0].x1_mm - lay.stripes[0].x0_mm)
            offs = np.linspace(-half, half, 3)
            psf = np.mean([cam.true_psf(r.x_px + dx, r.y_px + dy, r.channel, size=psf.shape[0], **kw)
                           for dx in offs for dy in offs], axis=0)
        _, truth = psf_mtf(psf, r.orientation_deg, sampling=s, freq_cpp=r.freq_cpp)
        t = np.radians(r.orientation_deg)
        truth = truth * np.abs(np.sinc(r.freq_cpp * np.cos(t) / s) * np.sinc(r.freq_cpp * np.sin(t) / s))
        errors.extend(np.abs(r.mtf - truth))
    assert len(errors) >= len(lay.stripes) * len(channels) // 2
    return errors


def test_stripe_mtf_matches_the_simulated_lens_within_0_02():
    errors = _sim_check(_sim_camera("sharp-prime", distortion=False), profile="sine", channels=("G",))
    assert max(errors) < 0.02


@pytest.mark.slow
@pytest.mark.parametrize("lens", ["sharp-prime", "soft-zoom", "vintage"])
@pytest.mark.parametrize("profile", ["sine", "square"])
def test_stripe_mtf_matches_every_lens_and_channel_within_0_02(lens, profile):
    errors = _sim_check(_sim_camera(lens, distortion=True), profile=profile, channels=("R", "G", "B"), averaged=True)
    assert max(errors) < 0.02
