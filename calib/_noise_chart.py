"""The PSF map from a photo of the random noise chart.

Two steps, both against the ideal chart rendered through the registered geometry:

1. *Registration from the pattern.* The markers alone leave the homography a few pixels
   off at the frame's edges and say nothing about the lens's distortion, while the PSF
   solve needs the chart placed to a small fraction of a (2-pixel) noise cell. Patches
   across the frame are matched to the render (integer shift by cross-correlation, then
   a Gauss-Newton fit of shift, gain, offset and a Gaussian blur standing in for the
   unknown PSF), and the homography and radial distortion are refitted to those
   correspondences, twice.
2. *PSF per node.* Around each field node the noise cells are rendered on a grid ``s``
   times finer than the pixels through the exact (distorted) mapping, pixels near
   markers, beyond the pattern or clipped are left out, and the PSF is solved by
   regularised least squares with positivity (:mod:`calib._psf_pattern`), one normal
   matrix shared by the colour channels. At 3 samples per pixel the render is
   integrated over the 1 px pixel box, so the unknowns are the optical PSF, and the
   pixel box is applied to the result, and the fine cell's box the render averaged the
   pattern over is put back (:func:`_system_psf`). Each PSF is solved on a support wider
   than the one returned, so light beyond the returned window does not bias it, then
   cropped.

Geometry and PSF position are not separable: a coma-shifted PSF reads as a shifted
chart. The fitted geometry absorbs the smooth part of that, and every node's PSFs are
re-centred on green's centroid anyway (red and blue keep their offsets from green).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy.ndimage import convolve1d, uniform_filter
from scipy.optimize import least_squares

import targets

from ._analyze import _recentre
from ._errors import CalibError
from ._psfmap import FLAG_NOISY, FLAG_SATURATED, psf_centroids
from ._pattern_register import render_pattern
from ._register import Registration

__all__: list[str] = []


def _progress(msg: str, enabled: bool) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def _apply_h(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    v = np.asarray(xy, np.float64) @ h[:, :2].T + h[:, 2]
    return v[:, :2] / v[:, 2:3]


def image_to_chart_mm(reg: Registration, xy: np.ndarray) -> np.ndarray:
    """Recorded pixels (N, 2) -> chart mm (the radial model inverted, then the homography)."""
    return _apply_h(np.linalg.inv(reg.homography), reg.distortion.undistort(np.asarray(xy, np.float64)))


# ----------------------------------------------------------------------------- registration


def render_frame(layout: targets.Layout, reg: Registration, shape: tuple[int, int]) -> np.ndarray:
    """The ideal chart (H, W) as the registered (distorted) camera records it, one sample per pixel."""
    h, w = shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    ideal = reg.distortion.undistort(np.stack([gx.ravel(), gy.ravel()], -1))
    ix, iy = ideal[:, 0].reshape(h, w), ideal[:, 1].reshape(h, w)
    # Render the undistorted image at 2 samples per pixel (the remap's interpolation then
    # barely blurs a 2-pixel cell), then resample it at the distorted pixel positions.
    s = 2
    x0, y0 = math.floor(ix.min()) - 2, math.floor(iy.min()) - 2
    x1, y1 = math.ceil(ix.max()) + 2, math.ceil(iy.max()) + 2
    to_fine = np.array([[s, 0, -s * x0], [0, s, -s * y0], [0, 0, 1.0]])
    fine = targets.render_layout(layout, ((y1 - y0) * s + 1, (x1 - x0) * s + 1),
                                 homography=to_fine @ reg.homography, supersample=2)
    # area-average the fine samples over a pixel (box of s samples), centred
    fine = cv2.blur(np.asarray(fine, np.float32), (s, s))
    mapx = ((ix - x0) * s + 0.5).astype(np.float32)
    mapy = ((iy - y0) * s + 0.5).astype(np.float32)
    return cv2.remap(fine, mapx, mapy, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _integer_shift(photo: np.ndarray, render: np.ndarray, search: int) -> tuple[int, int, float]:
    """Integer (dx, dy) maximising the correlation of ``photo`` with ``render`` moved by it,
    and the peak's normalised height (1 = perfect match)."""
    a = photo - photo.mean()
    b = render - render.mean()
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa = np.fft.rfft2(a * win)
    fb = np.fft.rfft2(b * win)
    cc = np.fft.irfft2(fa * np.conj(fb), a.shape)
    cc = np.fft.fftshift(cc)
    cy, cx = a.shape[0] // 2, a.shape[1] // 2
    sub = cc[cy - search:cy + search + 1, cx - search:cx + search + 1]
    iy, ix = np.unravel_index(int(np.argmax(sub)), sub.shape)
    norm = float(np.sqrt(((a * win) ** 2).sum() * ((b * win) ** 2).sum())) + 1e-30
    return int(ix - search), int(iy - search), float(sub[iy, ix] / norm)


def _subpixel_shift(photo: np.ndarray, render: np.ndarray, pad: int, d0: tuple[float, float],
                    *, iterations: int = 8) -> tuple[float, float, float, float] | None:
    """Gauss-Newton fit of photo = a * (G_sigma * render)(x - d) + b on the central part.

    ``render`` is ``pad`` pixels larger than ``photo`` on each side. Returns (dx, dy,
    sigma, correlation) or None when the fit does not settle.
    """
    hr, wr = render.shape
    fy = np.fft.fftfreq(hr)[:, None]
    fx = np.fft.rfftfreq(wr)[None, :]
    spec = np.fft.rfft2(render - render.mean())
    w2 = (2 * np.pi) ** 2 * (fx**2 + fy**2)
    obs = photo.ravel()
    dx, dy = d0
    sigma, a, b = 1.0, None, None
    sl = (slice(pad, hr - pad), slice(pad, wr - pad))
    for _ in range(iterations):
        g = np.exp(-0.5 * sigma**2 * w2 - 2j * np.pi * (fx * dx + fy * dy))
        m = np.fft.irfft2(spec * g, (hr, wr))[sl].ravel()
        mx = np.fft.irfft2(spec * g * (2j * np.pi * fx), (hr, wr))[sl].ravel()  # d m / d x
        my = np.fft.irfft2(spec * g * (2j * np.pi * fy), (hr, wr))[sl].ravel()
        ms = np.fft.irfft2(spec * g * (-sigma * w2), (hr, wr))[sl].ravel()
        if a is None:
            a, b = np.polyfit(m, obs, 1)
        jac = np.stack([-a * mx, -a * my, a * ms, m, np.ones_like(m)], 1)
        res = obs - (a * m + b)
        step, *_ = np.linalg.lstsq(jac, res, rcond=None)
        step[:2] = np.clip(step[:2], -1.0, 1.0)
        dx, dy = dx + step[0], dy + step[1]
        sigma = float(np.clip(sigma + step[2], 0.3, 12.0))
        a, b = a + step[3], b + step[4]
        if abs(step[0]) + abs(step[1]) < 1e-4:
            break
    if abs(dx - d0[0]) > 2 or abs(dy - d0[1]) > 2:
        return None
    corr = float(np.corrcoef(m, obs)[0, 1])
    return float(dx), float(dy), sigma, corr


def _fit_geometry(reg: Registration, mm: np.ndarray, xy: np.ndarray, wts: np.ndarray) -> Registration:
    """Homography and k1, k2 (about the frame centre) fitted to correspondences mm -> xy."""
    centre, norm = reg.centre_xy_px, reg.norm_radius_px

    def model(p):
        hm = np.append(p[:8], 1.0).reshape(3, 3)
        return Registration(hm, centre, norm, float(p[8]), float(p[9]), 0, 0, 0, 0)

    def resid(p):
        return ((model(p).chart_to_image(mm) - xy) * wts[:, None]).ravel()

    p0 = np.concatenate([(reg.homography / reg.homography[2, 2]).ravel()[:8], [reg.k1, reg.k2]])
    sol = least_squares(resid, p0, x_scale="jac", method="trf", loss="soft_l1", f_scale=0.2)
    out = model(sol.x)
    err = np.hypot(*(out.chart_to_image(mm) - xy).T)
    return replace(out, residual_rms_px=float(np.sqrt(np.mean(err**2))), residual_max_px=float(err.max()),
                   n_points=int(len(mm)), n_markers=reg.n_markers)


def refine_registration(green: np.ndarray, layout: targets.Layout, reg: Registration, *,
                        patch_px: int = 64, step_px: int = 48, passes: int = 3,
                        progress: bool = False) -> Registration:
    """Refit the homography and radial distortion on the chart's own texture.

    Parameters
    ----------
    green : ndarray (H, W)
        Linear green channel.
    layout : targets.Layout
    reg : Registration
        Starting geometry (from the markers), within a few pixels.
    patch_px, step_px : int, keyword-only
        Side of the matched patches and their spacing.
    passes : int, keyword-only
        Render-match-fit rounds.

    Returns
    -------
    Registration
        ``residual_*`` and ``n_points`` describe the patch correspondences of the last fit.
    """
    img = np.asarray(green, np.float32)
    h, w = img.shape
    half = patch_px // 2
    xs = np.arange(half + 8, w - half - 8, step_px)
    ys = np.arange(half + 8, h - half - 8, step_px)
    for k in range(passes):
        search = 12 if k == 0 else 3
        pad = search + 8
        ren = render_frame(layout, reg, (h, w))
        ren_p = np.pad(ren, pad, mode="reflect")
        mm, dst, wts = [], [], []
        for y in ys:
            for x in xs:
                ph = img[y - half:y + half, x - half:x + half].astype(np.float64)
                rp = ren_p[y - half:y + half + 2 * pad, x - half:x + half + 2 * pad].astype(np.float64)
                if rp[pad:-pad, pad:-pad].std() < 0.05 or ph.std() < 1e-4:
                    continue  # flat (marker quiet zone, paper): nothing to match
                ix, iy, peak = _integer_shift(ph, rp[pad:-pad, pad:-pad], search)
                if peak < 0.1:
                    continue
                fit = _subpixel_shift(ph, rp, pad, (ix, iy))
                if fit is None or fit[3] < 0.3:
                    continue
                # photo(x) = render(x - d): the chart point the render puts at x lies at x + d
                c = np.array([[x - 0.5, y - 0.5]])
                mm.append(image_to_chart_mm(reg, c)[0])
                dst.append(c[0] + fit[:2])
                wts.append(fit[3])
        if len(mm) < 12:
            _progress(f"analyze: only {len(mm)} pattern patches matched; markers-only registration kept", progress)
            return reg
        reg = _fit_geometry(reg, np.asarray(mm), np.asarray(dst), np.asarray(wts))
        _progress(f"analyze: pattern registration pass {k + 1}: {len(mm)} patches, k1={reg.k1:+.5f} "
                  f"k2={reg.k2:+.5f}, residual {reg.residual_rms_px:.3f} px rms", progress)
    return reg


# ----------------------------------------------------------------------------- PSF per node

#: Samples per pixel of the solve. Sensor-grid samples cannot describe a sharp core
#: inside a wide halo (the defocused red PSF).
NOISE_OVERSAMPLE = 3
#: Extra support (pixels each side) of the solve beyond the returned PSF.
SOLVE_MARGIN_PX = 2
#: Nodes farther than this (pixels) from their crop's centre (the crop is clamped into the
#: frame, so frame-edge nodes sit 80 px off it) are read off a linear-field fit across the
#: crop. The true blue PSF changes by 14 % (relative L2) over those 80 px at mid-height and
#: 20 % towards a corner, which the crop's average carries into the node's estimate.
FIELD_FIT_PX = 20.0
#: Gradient penalty on the field slopes (``field_reg`` of the pattern solve). Measured at
#: corner (0, 0), edge (2, 0), edge (0, 2), corner (5, 8) of the 1200x800 simulator in focus,
#: R/G/B error: no field fit .049/.091/.196, .034/.060/.123, .029/.056/.075, .049/.105/.195;
#: 1: .19/.15/.11 ...; 5: .093/.049/.035, .050/.022/.035, .069/.030/.047, .068/.029/.035;
#: 10: .060/.043/.051, .041/.034/.050, .047/.023/.033, .049/.064/.058; 20: .047/.073/.093,
#: .035/.051/.066, .036/.044/.040, .054/.106/.102; 100: worse than no fit for G and B.
#: Without a penalty the slopes fit noise and the corner errors reach 27 %.
FIELD_SLOPE_REG = 10.0
#: Render kernel per oversampling: at 3 samples per pixel the PSF is taken as constant
#: over each sample's cell ("box"; a sensor-grid "tent", piecewise linear, measured 18.6 % green
#: error at +15 defocus against 13.5 % for "box").
RENDER_KERNEL = {1: "box", 2: "box", 3: "box"}
#: Gradient-penalty weight (relative to the data energy per unknown) at one sample per pixel.
NOISE_REG_SENSOR_GRID = 0.003
#: Penalty weight at sub-pixel sampling for a sharp PSF (rms width NOISE_REG_SHARP_PX, the
#: sensor-grid system PSF's), growing as the width to NOISE_REG_POWER up to
#: NOISE_REG_MAX_RATIO times that width. With the optical unknowns (session 9;
#: 1200x800 at +15, the weight at 0.55 px -> median R/G/B): 0.00001 -> 4.7/2.9/3.6 %,
#: 0.00003 -> 6.0/3.8/3.6 %, 0.0001 -> 7.9/6.1/4.5 %, 0.0003 -> 8.9/8.2/5.2 %. Before,
#: solving for the system PSF: in focus (rms 0.6 px) 0.0001 -> 3.1/4.8/4.8 %, 0.0004 ->
#: 5.9/3.7/6.7 %; defocused +15 (rms 1.1 px) 0 -> 16/17/25 %, 0.0003 -> 7.4/6.4/9.0 %,
#: 0.003 -> 9.9/11.8/10.2 %. Per-channel weights from each channel's width measured no better.
NOISE_REG_SHARP = 0.00001
NOISE_REG_SHARP_PX = 0.55
NOISE_REG_MAX_RATIO = 4.0
NOISE_REG_POWER = 1.5
#: Penalise the gradient of the fine core as well as of the tails (penalising the tails
#: only: 14.2 -> 17.6 % median G at +15 for weight 0.003).
NOISE_SMOOTH_CORE = True
#: Penalty of the pilot solves that size the PSF: almost none, but the optical unknowns
#: have a null space (the pixel box hides 1 cycle/px), so not zero.
PILOT_PENALTY = 1e-5


def _noise_reg(s: int, sigma_px: float) -> float:
    """Gradient-penalty weight of the noise-chart solve at ``s`` samples per pixel for a
    PSF of rms width ``sigma_px``: a wider PSF spreads each cell edge's light over more
    fine samples, so each is less determined and needs more smoothing."""
    if s == 1:
        return NOISE_REG_SENSOR_GRID
    ratio = float(np.clip(sigma_px / NOISE_REG_SHARP_PX, 1.0, NOISE_REG_MAX_RATIO))
    return NOISE_REG_SHARP * ratio**NOISE_REG_POWER


def _chart_to_pattern(patch, reg: Registration, box: tuple[float, float, float, float]):
    """Photo (x, y) arrays -> pattern cell coordinates of ``patch`` (cell centres at
    integers) over ``box`` (x0, y0, x1, y1): the exact mapping (distortion inverted, then
    the homography) fitted by cubic polynomials on a grid, far cheaper to evaluate at
    millions of sub-samples and exact to ~1e-4 px over a crop of a few hundred pixels."""
    x0, y0, x1, y1 = box
    gx, gy = np.meshgrid(np.linspace(x0, x1, 9), np.linspace(y0, y1, 9))
    mm = image_to_chart_mm(reg, np.stack([gx.ravel(), gy.ravel()], -1))
    uv = (mm - [patch.x0_mm, patch.y0_mm]) / patch.cell_mm - 0.5
    cx, cy, sc = 0.5 * (x0 + x1), 0.5 * (y0 + y1), max(x1 - x0, y1 - y0, 1.0) / 2

    def powers(x, y):
        xn, yn = (x - cx) / sc, (y - cy) / sc
        return [xn**i * yn**j for i in range(4) for j in range(4 - i)]

    basis = np.stack(powers(gx.ravel(), gy.ravel()), 1)
    coef = np.linalg.lstsq(basis, uv, rcond=None)[0]

    def fn(x, y):
        terms = powers(np.asarray(x, np.float64), np.asarray(y, np.float64))
        u = sum(c * t for c, t in zip(coef[:, 0], terms))
        v = sum(c * t for c, t in zip(coef[:, 1], terms))
        return u, v

    return fn


def _usable(layout, reg: Registration, patch, x0: int, y0: int, side: int, reach_px: float) -> np.ndarray:
    """(side, side) bool: pixels whose neighbourhood of ``reach_px`` lies on the noise cells,
    clear of the markers (and their quiet zones) drawn over the pattern."""
    gx, gy = np.meshgrid(np.arange(x0, x0 + side, dtype=np.float64), np.arange(y0, y0 + side, dtype=np.float64))
    mm = image_to_chart_mm(reg, np.stack([gx.ravel(), gy.ravel()], -1))
    jac = reg.jacobian(mm[len(mm) // 2:len(mm) // 2 + 1])[0]
    reach_mm = reach_px / float(np.sqrt(abs(np.linalg.det(jac))))
    ok = ((mm[:, 0] > patch.x0_mm + reach_mm) & (mm[:, 0] < patch.x1_mm - reach_mm)
          & (mm[:, 1] > patch.y0_mm + reach_mm) & (mm[:, 1] < patch.y1_mm - reach_mm))
    ms = layout.markers
    for m in ms.items:
        quiet = ms.quiet_zone_of(m) + reach_mm
        c = np.asarray(m.corners_mm, float)
        lo, hi = c.min(axis=0) - quiet, c.max(axis=0) + quiet
        ok &= ~((mm[:, 0] > lo[0]) & (mm[:, 0] < hi[0]) & (mm[:, 1] > lo[1]) & (mm[:, 1] < hi[1]))
    return ok.reshape(side, side)


def _optical_unknowns(s: int) -> bool:
    """Whether the solve at ``s`` samples per pixel is for the optical PSF (the pixel box
    applied to the rendered pattern), not the system PSF: at odd ``s`` the 1 px box is
    exactly ``s`` fine cells. The system PSF's sharp pixel edges are what the smoothing
    penalty blurs; the optical PSF has none (1200x800 at +15, R/G/B median: 5.8/4.7/4.9
    -> 4.7/2.9/3.6 % with the weight below)."""
    return s > 1 and s % 2 == 1


def _system_psf(fine: np.ndarray, s: int) -> np.ndarray:
    """A solved fine PSF -> samples of the system PSF at ``s`` per pixel.

    Where the solve was for the optical PSF the pixel box is applied. Then the fine cell's
    box is put back: the pattern is rendered as its average over each fine cell, so the
    solved samples come out sharpened by that box (their spectrum is the PSF's divided by
    sinc(f / s)). That holds for a PSF smooth on the fine grid, the kind a sub-pixel solve
    is for (a delta-like optical PSF it would blur slightly). Measured, 1200x800
    sharp-prime rendered at 5 samples/px, in focus, median R/G/B: 4.1/6.9/4.4 % ->
    3.7/3.0/3.1 %; centre green peak 0.903 -> 0.873 against the true 0.852.
    """
    out = np.asarray(fine, np.float64)
    if _optical_unknowns(s):
        out = uniform_filter(out, size=s, mode="constant")
    if s > 1:
        out = _cell_box(out)
    return out


#: Weight of each neighbour in the fine cell's box put back (:func:`_system_psf`): the
#: three-tap kernel with the box's variance, 1/12 of a sample squared, positive, unlike
#: the band-limited box (sinc(f / s) exactly; measured 4.1/3.5/3.3 % against 3.7/3.0/3.1 %).
CELL_BOX_TAP = 1.0 / 24.0


def _cell_box(fine: np.ndarray) -> np.ndarray:
    taps = np.array([CELL_BOX_TAP, 1.0 - 2.0 * CELL_BOX_TAP, CELL_BOX_TAP])
    out = convolve1d(fine, taps, axis=0, mode="constant")
    return convolve1d(out, taps, axis=1, mode="constant")


def _crop_psf(fine: np.ndarray, s: int, k_out: int) -> np.ndarray:
    """Centre-crop a fine PSF to the fine window of a ``k_out`` sensor-grid PSF, sum 1."""
    kf = (k_out - 1) * s + 1
    a = (fine.shape[0] - kf) // 2
    out = np.clip(fine[a:a + kf, a:a + kf].astype(np.float64), 0, None)
    return out / out.sum()


def _render_crop(values: np.ndarray, patch, reg: Registration, origin: tuple[float, float], side: int,
                 s: int, outside: float) -> np.ndarray:
    x0, y0 = origin
    fn = _chart_to_pattern(patch, reg, (x0 - 2, y0 - 2, x0 + side + 2, y0 + side + 2))
    # The cells are boxes along the pattern's axes and rendered separably, which is exact
    # while the chart is seen square-on; a rotated or sheared view needs sub-samples.
    eps = 0.5 * side
    u, v = fn(np.array([x0, x0 + eps, x0]), np.array([y0, y0, y0 + eps]))
    shear = max(abs(v[1] - v[0]) / max(abs(u[1] - u[0]), 1e-9), abs(u[2] - u[0]) / max(abs(v[2] - v[0]), 1e-9))
    return render_pattern(values, None, (side * s, side * s), origin_xy_px=(x0, y0), oversample=s,
                          supersample=1 if shear < 0.03 and RENDER_KERNEL[s] == "box" else 4,
                          kernel=RENDER_KERNEL[s], to_pattern=fn,
                          outside=outside)


def estimate_node(data: np.ndarray, bad: np.ndarray, layout, reg: Registration, bits: np.ndarray,
                  centre_xy: tuple[float, float], *, green: int, side: int, size: int, oversample: int,
                  core_px: float | None, penalty: float, margin_px: int = SOLVE_MARGIN_PX):
    """Fine PSFs of one crop of ``side`` pixels around ``centre_xy`` (clamped into the frame).

    Solved with ``margin_px`` more support each side than ``size``, then cropped; solved
    twice: the second time the pattern is rendered moved by the first solve's green
    centroid, so green's centroid falls on the centre sample and the sensor-grid PSFs
    are every ``s``-th fine sample, with no interpolation of a sharp PSF. ``penalty``: the
    gradient-penalty weight of the solve (:func:`_noise_reg`).

    Returns
    -------
    NodeSolve
    """
    from ._psf_pattern import estimate_psf_pattern_channels  # noqa: PLC0415

    h, w = data.shape[:2]
    s = int(oversample)
    x0 = int(np.clip(round(centre_xy[0] - side / 2), 0, w - side))
    y0 = int(np.clip(round(centre_xy[1] - side / 2), 0, h - side))
    patch = layout.noise[0]
    k_solve = size + 2 * margin_px
    use = _usable(layout, reg, patch, x0, y0, side, k_solve / 2 + 1.5)
    clipped = use & bad[y0:y0 + side, x0:x0 + side]
    use &= ~clipped
    ink_on, ink_off = layout.reflectance(patch.ink_on), layout.reflectance(patch.ink_off)
    values = np.where(bits > 0, ink_on, ink_off)
    crop = np.moveaxis(data[y0:y0 + side, x0:x0 + side], -1, 0)
    # A node the crop cannot be centred on (frame edges) is read off a linear field fit.
    node_xy = (centre_xy[0] - x0, centre_xy[1] - y0)
    field = node_xy if np.hypot(node_xy[0] - (side - 1) / 2, node_xy[1] - (side - 1) / 2) > FIELD_FIT_PX else None
    dx = dy = 0.0
    for _ in range(2):
        sharp = _render_crop(values, patch, reg, (x0 - dx, y0 - dy), side, s, 0.5 * (ink_on + ink_off))
        if _optical_unknowns(s):  # the pattern as each pixel integrates it
            sharp = uniform_filter(sharp, size=s, mode="nearest")
        ests = estimate_psf_pattern_channels(crop, sharp, size=k_solve, oversample=s, reg=penalty,
                                             weights=use.astype(np.float64), core_px=core_px, shading=True,
                                             field_xy=field, field_reg=FIELD_SLOPE_REG,
                                             smooth_core=NOISE_SMOOTH_CORE)
        fines = [_crop_psf(_system_psf(e.psf_fine, s), s, size) for e in ests]
        cx, cy = psf_centroids(fines[green], s)
        dx, dy = dx + cx, dy + cy
    # The pattern's signal in the photo (its std, less the misfit's share) over the misfit,
    # times the root of the pixels per PSF sample the solve pooled.
    resid = ests[green].residual_rms
    signal = math.sqrt(max(float(np.var(crop[green][use])) - resid**2, 0.0))
    snr = signal / max(resid, 1e-12) * math.sqrt(ests[green].n_pixels / k_solve**2)
    return NodeSolve(fines, ests, int(use.sum()), int(clipped.sum()), float(snr))


@dataclass(frozen=True)
class NodeSolve:
    """One node's solve (:func:`estimate_node`).

    Attributes
    ----------
    fines : list of ndarray (n, n)
        PSF per channel at the solve's sampling, sum 1.
    fits : list of PatternPSF
        The last solve per channel.
    n_used : int
        Pixels the solve used.
    n_clipped : int
        Pixels on the pattern left out because they were clipped.
    snr : float
        Green's pattern signal (its std in the photo, the misfit's share taken out) over
        its fit's residual rms, times the square root of the pixels per sensor-grid PSF
        sample: the PSF's error from noise falls as its inverse.
    """

    fines: list
    fits: list
    n_used: int
    n_clipped: int
    snr: float


@dataclass(frozen=True)
class NoiseChartPSFs:
    """PSFs per node from the noise chart (before filling the nodes without data).

    Attributes
    ----------
    psf : ndarray (C, ny, nx, n, n), float32
        PSFs at ``oversample`` samples per pixel (``n = oversample * (k - 1) + 1`` for a
        ``k`` pixel support), green's centroid on the centre sample, red and blue at their
        offsets from green; zeros where ``measured`` is False.
    measured : ndarray (ny, nx) bool
    flags : ndarray (C, ny, nx) uint8
    registration : Registration
        The geometry refined on the pattern (homography and radial distortion).
    oversample : int
        Samples per pixel of the solve and of ``psf``.
    notes : tuple of str
    """

    psf: np.ndarray
    measured: np.ndarray
    flags: np.ndarray
    registration: Registration
    oversample: int
    notes: tuple[str, ...]


#: A node whose crop had more than this fraction of its pattern pixels clipped is flagged
#: saturated (those pixels are left out of its solve).
CLIPPED_FRACTION = 0.0
#: A node whose :attr:`NodeSolve.snr` is below this is flagged noisy (measured 420-540
#: in focus on the 480x320 test sensor, 13 with noise of rms 0.15 added).
MIN_SNR = 50.0
#: Side (pixels) of the square crop each node's PSF is solved on.
CROP_PX = 160
#: Sensor-grid half-width of the fine core (pixels) when solving at 3 samples per pixel
#: (1200x800 median R/G/B: 2 px -> 3.0/4.6/4.7 % in focus, 7.4/6.5/8.9 % defocused +15,
#: 73 + 119 CPU-s; 3 px -> 3.3/3.8/5.2 % and 6.8/5.7/5.7 %, 101 + 204 CPU-s).
CORE_PX = 3.0


def _width_and_extent(psf: np.ndarray) -> tuple[float, float]:
    """(rms width per axis, radius holding 99.5 % of the light) of a sensor-grid PSF, px."""
    k = psf.shape[0]
    ax = np.arange(k) - k // 2
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    p = np.clip(psf, 0, None) / np.clip(psf, 0, None).sum()
    mx, my = (p * xx).sum(), (p * yy).sum()
    r = np.hypot(xx - mx, yy - my)
    sigma = float(np.sqrt((p * r**2).sum() / 2))
    order = np.argsort(r.ravel())
    cum = np.cumsum(p.ravel()[order])
    return sigma, float(r.ravel()[order][min(np.searchsorted(cum, 0.995), len(cum) - 1)])


def noise_psf_map(data: np.ndarray, sat: np.ndarray, gi: int, layout: targets.Layout, reg: Registration, *,
                  grid: tuple[int, int] | None, oversample: int | None, psf_size: int | None,
                  progress: bool = False) -> NoiseChartPSFs:
    """PSFs at the field nodes from a photo of the noise chart (see the module notes).

    Parameters
    ----------
    data : ndarray (H, W, C)
        Linear photo.
    sat : ndarray (H, W) or (H, W, C) bool
        Clipped pixels.
    gi : int
        Index of the green (reference) channel.
    layout : targets.Layout
        A chart with a noise patch.
    reg : Registration
        Marker registration (refined here on the pattern).
    grid : (ny, nx), optional
        Nodes spanning the frame corner to corner; default (6, 9).
    oversample : int, optional
        Samples per pixel of the solve and of the PSFs returned (1, 2 or 3); default
        ``NOISE_OVERSAMPLE``.
    psf_size : int, optional
        Odd PSF side (pixels); default from pilot solves at the centre and a corner (99.5 %
        of the light).
    progress : bool
        One line per node on stderr.

    Returns
    -------
    NoiseChartPSFs
    """
    from ._sim._threads import parallel_map  # noqa: PLC0415

    h, w, nc = data.shape
    bad = sat.any(axis=-1) if sat.ndim == 3 else np.asarray(sat, bool)
    reg = refine_registration(data[..., gi], layout, reg, progress=progress)
    ny, nx = grid if grid is not None else (6, 9)
    if ny < 1 or nx < 1:
        raise CalibError(f"grid {grid} must have at least one node per axis")
    xs, ys = np.linspace(0, w - 1, nx), np.linspace(0, h - 1, ny)
    side = int(min(CROP_PX, h, w))
    bits = layout.noise[0].bits()
    # A pilot at the centre and a corner sets the support and the penalty (and checks the
    # pattern is there at all).
    widths, extents = [], []
    for cx, cy in ((w / 2, h / 2), (side / 2, side / 2)):
        try:
            # fine core, sensor-grid tails: resolves a sharp PSF and a wide one alike
            fines = estimate_node(data, bad, layout, reg, bits, (cx, cy), green=gi, side=side,
                                  size=17, oversample=3, core_px=CORE_PX, penalty=PILOT_PENALTY,
                                  margin_px=1).fines
        except CalibError:
            continue
        sg, ex = _width_and_extent(fines[gi][::3, ::3])
        widths.append(sg)
        extents.append(ex)
    if not widths:
        raise CalibError("the noise pattern could not be matched anywhere in the photo; check the "
                         "layout is the chart photographed and that the photo is exposed")
    if psf_size is None:
        psf_size = int(min(31, max(9, 2 * int(np.ceil(max(extents))) + 3)))
    s = int(oversample) if oversample is not None else NOISE_OVERSAMPLE
    if s not in RENDER_KERNEL:
        raise CalibError(f"oversample {s} is not supported for the noise chart; use one of {sorted(RENDER_KERNEL)}")
    sigma = float(np.median(widths))
    penalty = _noise_reg(s, sigma)
    _progress(f"analyze: noise chart PSF {psf_size} px, rms width {min(widths):.2f}-{max(widths):.2f} px, "
              f"oversample {s}, penalty {penalty:.3g}", progress)
    core = CORE_PX if s > 1 else None

    def node(ij):
        i, j = ij
        try:
            sol = estimate_node(data, bad, layout, reg, bits, (xs[j], ys[i]), green=gi, side=side,
                                size=psf_size, oversample=s, core_px=core, penalty=penalty)
        except CalibError as err:
            _progress(f"analyze: node ({j},{i}) at ({xs[j]:.0f},{ys[i]:.0f}): {err}; filled", progress)
            return None
        # The fine PSFs are kept: decimating a sharp PSF to the sensor grid aliases it.
        cx, cy = psf_centroids(sol.fines[gi], s)
        out = np.stack([_recentre(f, s, -cx, -cy) for f in sol.fines])
        flag = (FLAG_SATURATED if sol.n_clipped > CLIPPED_FRACTION * (sol.n_used + sol.n_clipped) else 0) | (
            FLAG_NOISY if sol.snr < MIN_SNR else 0)
        _progress(f"analyze: node ({j},{i}) at ({xs[j]:.0f},{ys[i]:.0f}): noise pattern, {sol.n_used} px"
                  f"{f', {sol.n_clipped} clipped' if sol.n_clipped else ''}, SNR {sol.snr:.0f}", progress)
        return out, flag

    results = parallel_map(node, [(i, j) for i in range(ny) for j in range(nx)])
    kf = s * (psf_size - 1) + 1
    psf = np.zeros((nc, ny, nx, kf, kf), np.float32)
    flags = np.zeros((nc, ny, nx), np.uint8)
    measured = np.zeros((ny, nx), bool)
    for (i, j), res in zip([(i, j) for i in range(ny) for j in range(nx)], results):
        if res is not None:
            psf[:, i, j], flags[:, i, j] = res
            measured[i, j] = True
    notes = []
    if not measured.all():
        notes.append(f"{int((~measured).sum())} of {measured.size} field nodes were off the noise pattern "
                     "and were filled")
    return NoiseChartPSFs(psf, measured, flags, reg, s, tuple(notes))
