"""Register a photo to its chart: homography from the ArUco markers, refined on the dots,
plus the lens's radial distortion about the frame centre.

Model (chart mm -> recorded pixel)::

    p = H(mm)                                  (ideal, undistorted image)
    q = c + (p - c) (1 + k1 rho^2 + k2 rho^4)  rho = |p - c| / norm_radius_px

with ``c`` the frame centre and ``norm_radius_px`` the half-diagonal, the convention of
the simulated camera. The dot centroids measured in the green channel drive the fit;
the result places every dot (and so every PSF) to a small fraction of a pixel.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

import targets

from ._distortion import RadialDistortion
from ._errors import CalibError

__all__ = ["Registration", "register_chart", "measure_dot_centroids"]


@dataclass(frozen=True)
class Registration:
    """Chart-to-photo geometry.

    Attributes
    ----------
    homography : ndarray (3, 3)
        Chart mm -> undistorted pixels.
    centre_xy_px : (float, float)
        Distortion centre (the frame centre).
    norm_radius_px : float
        Radius normalising ``rho`` (half the frame diagonal).
    k1, k2 : float
        Radial distortion coefficients (ideal -> recorded).
    residual_rms_px, residual_max_px : float
        Misfit of the measured dot centroids (0 when the chart has no dots).
    n_points : int
        Dot centroids used in the fit.
    n_markers : int
        Markers detected.
    """

    homography: np.ndarray
    centre_xy_px: tuple[float, float]
    norm_radius_px: float
    k1: float
    k2: float
    residual_rms_px: float
    residual_max_px: float
    n_points: int
    n_markers: int

    @property
    def distortion(self) -> RadialDistortion:
        """The fitted radial distortion as a model (the simulator's truth uses the same)."""
        return RadialDistortion(*self.centre_xy_px, self.norm_radius_px, self.k1, self.k2)

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """Ideal (N, 2) pixel positions -> recorded positions."""
        return self.distortion.distort(xy)

    def chart_to_image(self, mm: np.ndarray) -> np.ndarray:
        """Chart positions (N, 2) mm -> recorded (distorted) pixel positions (N, 2)."""
        return self.distort(_apply_h(self.homography, mm))

    def jacobian(self, mm: np.ndarray, *, step_mm: float = 0.05) -> np.ndarray:
        """d(pixel)/d(mm) at chart positions (N, 2) -> (N, 2, 2), by central differences."""
        mm = np.atleast_2d(np.asarray(mm, dtype=np.float64))
        jx = (self.chart_to_image(mm + [step_mm, 0]) - self.chart_to_image(mm - [step_mm, 0])) / (2 * step_mm)
        jy = (self.chart_to_image(mm + [0, step_mm]) - self.chart_to_image(mm - [0, step_mm])) / (2 * step_mm)
        return np.stack([jx, jy], axis=-1)

    def to_dict(self) -> dict:
        """JSON-ready summary (stored with the calibration as the distortion report)."""
        return {
            "homography": np.asarray(self.homography).tolist(),
            "centre_xy_px": list(self.centre_xy_px),
            "norm_radius_px": self.norm_radius_px,
            "k1": self.k1,
            "k2": self.k2,
            "residual_rms_px": self.residual_rms_px,
            "residual_max_px": self.residual_max_px,
            "n_points": self.n_points,
            "n_markers": self.n_markers,
        }


def _apply_h(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    xy = np.atleast_2d(np.asarray(xy, dtype=np.float64))
    v = xy @ h[:, :2].T + h[:, 2]
    return v[:, :2] / v[:, 2:3]


def measure_dot_centroids(
    image: np.ndarray, guesses_xy: np.ndarray, *, half_px: int, saturation_level: float = 0.98
) -> tuple[np.ndarray, np.ndarray]:
    """Background-subtracted intensity centroids of dots near ``guesses_xy``.

    Returns (centroids (N, 2), ok (N,) bool); a dot is not ok when its window leaves
    the frame, holds clipped pixels or shows no signal above the noise.
    """
    cen, ok, _ = _measure_dots(image, guesses_xy, half_px=half_px, saturation_level=saturation_level)
    return cen, ok


def _measure_dots(image: np.ndarray, guesses_xy: np.ndarray, *, half_px: int,
                  saturation_level: float = 0.98) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`measure_dot_centroids`, and each dot's rms radius in its window (px; NaN
    where not ok)."""
    guesses = np.atleast_2d(np.asarray(guesses_xy, dtype=np.float64)).reshape(-1, 2)
    # One contiguous single-precision copy: the windows are gathered from it by flat
    # indices (a channel of an RGB array is strided, and its 2-D gathers took half the time).
    image = np.ascontiguousarray(image, dtype=np.float32)
    out = np.full((len(guesses), 2), np.nan)
    ok = np.zeros(len(guesses), bool)
    rms = np.full(len(guesses), np.nan)
    # Dots in batches: every step is one array operation over a batch's windows, which
    # keeps a 24 MP chart's tens of thousands of dots fast and memory bounded.
    batch = max(1, 2_000_000 // (2 * half_px + 1) ** 2)
    for b0 in range(0, len(guesses), batch):
        sl = slice(b0, b0 + batch)
        out[sl], ok[sl], rms[sl] = _centroids_batch(image, guesses[sl], half_px, saturation_level)
    return out, ok, rms


def _centroids_batch(image, guesses, half_px, saturation_level):
    h, w = image.shape
    n = len(guesses)
    yy, xx = np.mgrid[-half_px:half_px + 1, -half_px:half_px + 1]
    edge = (np.maximum(np.abs(xx), np.abs(yy)) == half_px).ravel()
    offs_x, offs_y = xx.ravel(), yy.ravel()
    offs_flat = offs_y * w + offs_x
    flat = image.reshape(-1)
    moments = np.stack([np.ones(offs_x.size), offs_x, offs_y, offs_x**2 + offs_y**2], axis=1).astype(np.float32)
    # The background under a dot is a plane fitted to the window's border: a constant
    # would leave the tail of a nearby bright area (a marker's quiet zone) as a
    # one-sided slope that drags the centroid towards it.
    ring_design = moments[edge, :3].astype(np.float64)
    ring_fit = (moments[:, :3].astype(np.float64) @ np.linalg.pinv(ring_design)).astype(np.float32)
    cen = guesses.copy()
    rms = np.full(n, np.nan)
    good = np.zeros(n, bool)
    live = np.ones(n, bool)  # still being recentred (a failed check ends a dot)
    last = np.full((n, 2), -1 << 30)
    for _ in range(3):  # recentre the window on the centroid
        ixy = np.rint(cen).astype(int)
        # A window that did not move gives the same centroid again: skip it.
        idx = np.nonzero(live & (ixy != last).any(axis=1))[0]
        if not len(idx):
            break
        last[idx] = ixy[idx]
        ix, iy = ixy[idx, 0], ixy[idx, 1]
        inside = (ix - half_px >= 0) & (iy - half_px >= 0) & (ix + half_px < w) & (iy + half_px < h)
        live[idx[~inside]] = False
        good[idx[~inside]] = False
        idx, ix, iy = idx[inside], ix[inside], iy[inside]
        win = flat[(iy * w + ix)[:, None] + offs_flat[None]]
        ring = win[:, edge]
        bg = np.median(ring, axis=1)
        noise = 1.4826 * np.median(np.abs(ring - bg[:, None]), axis=1) + 1e-9
        hi, lo = win.max(axis=1), win.min(axis=1)
        fail = (hi >= saturation_level) | (np.maximum(hi - bg, bg - lo) < 8 * noise)
        # Dark dots on a bright ground are flipped to bright ones.
        sign = np.where(win.sum(axis=1, dtype=np.float64) < win.shape[1] * bg.astype(np.float64), -1.0, 1.0)
        sig = (win - ring @ ring_fit.T) * sign[:, None].astype(np.float32)
        peak = np.where(sign > 0, hi - bg, bg - lo)
        fail |= sig[:, edge].max(axis=1) > 0.2 * peak  # another element (paper, marker) in the window
        # keep the noise floor out of the moments
        sig = np.where(sig > 3 * noise[:, None], sig, np.float32(0))
        mom = (sig @ moments).astype(np.float64)
        fail |= ~(mom[:, 0] > 0)
        live[idx[fail]] = False
        good[idx[fail]] = False
        k, m = idx[~fail], mom[~fail]
        cen[k, 0] = ix[~fail] + m[:, 1] / m[:, 0]
        cen[k, 1] = iy[~fail] + m[:, 2] / m[:, 0]
        mx, my = m[:, 1] / m[:, 0], m[:, 2] / m[:, 0]
        rms[k] = np.sqrt(np.clip(m[:, 3] / m[:, 0] - mx**2 - my**2, 0, None) / 2)
        good[k] = True
    keep = good & (np.hypot(*(cen - guesses).T) < 0.4 * half_px)
    out = np.full((n, 2), np.nan)
    out[keep] = cen[keep]
    return out, keep, np.where(keep, rms, np.nan)


def _params_to_model(params: np.ndarray):
    h = np.append(params[:8], 1.0).reshape(3, 3)
    return h, params[8], params[9]


def _check_marker_geometry(match: targets.MarkerMatch, h: np.ndarray, source: str, layout_name: str) -> None:
    """Refuse markers that do not sit where the layout puts them (a chart of another size).

    Lens distortion moves marker corners off a single homography by a few pixels at most;
    a quarter of a marker side is far beyond that and far below what a wrong paper size gives.
    """
    q = np.column_stack([match.chart_mm, np.ones(len(match.chart_mm))]) @ h.T
    miss = np.hypot(*(q[:, :2] / q[:, 2:] - match.image_px).T)
    side = float(np.median(np.hypot(*(match.image_px[1::4] - match.image_px[0::4]).T)))
    if float(np.median(miss)) > 0.25 * side:
        raise CalibError(
            f"the markers in {source} do not sit where {layout_name} puts them (off by "
            f"{float(np.median(miss)):.0f} px); is this the chart in {layout_name}, printed at the same paper size?"
        )


def register_chart(
    image: np.ndarray,
    layout: targets.Layout,
    *,
    source: str | os.PathLike = "the photo",
    layout_name: str | os.PathLike = "the layout",
    fit_distortion: bool = True,
    saturated: np.ndarray | None = None,
) -> Registration:
    """Register one photo (its green or only channel) to ``layout``.

    Parameters
    ----------
    image : ndarray (H, W)
        Linear green channel.
    layout : targets.Layout
    source, layout_name : str, keyword-only
        Named in error messages.
    fit_distortion : bool, keyword-only
        Fit k1, k2 (needs dots across the frame); otherwise a pure homography.
    saturated : ndarray (H, W) bool, optional, keyword-only
        Clipped pixels: when the chart is not found, a mostly clipped photo is named as
        the likely cause.

    Returns
    -------
    Registration

    Raises
    ------
    CalibError
        No (or too few) markers of ``layout`` in the photo.
    """
    img = np.asarray(image, dtype=np.float32)
    h_img, w_img = img.shape
    n_expected = len(layout.markers.items)
    try:
        match = targets.find_markers(img, layout)
    except targets.TargetError:
        raise CalibError(_not_found(source, 0, n_expected, layout_name, saturated)) from None
    if match.n_found < 2:
        other = [k for k in map(targets.marker_kind, match.foreign_ids) if k is not None and k != layout.kind]
        if len(other) >= 2:
            kind = max(set(other), key=other.count)
            raise CalibError(
                f"{source} shows a lenspsf {kind} chart, not the {layout.kind} chart in {layout_name}; "
                f"pass the layout JSON of the {kind} chart that was photographed"
            )
        raise CalibError(_not_found(source, match.n_found, n_expected, layout_name, saturated))
    h0 = match.homography()
    h0 = h0 / h0[2, 2]
    _check_marker_geometry(match, h0, source, layout_name)
    centre = ((w_img - 1) / 2.0, (h_img - 1) / 2.0)
    norm = float(np.hypot(w_img / 2.0, h_img / 2.0))
    base = Registration(h0, centre, norm, 0.0, 0.0, 0.0, 0.0, 0, match.n_found)
    if not layout.dots:
        return base
    dots_mm = np.array([(d.x_mm, d.y_mm) for d in layout.dots])
    pitch_mm = float(layout.params.get("dot_pitch_mm", 0.0)) or _nearest_spacing(dots_mm)
    px_per_mm = float(np.sqrt(abs(np.linalg.det(base.jacobian(dots_mm[:1])[0]))))
    # Windows reach half-way to the next dot: a soft lens's comatic corner PSF keeps
    # light 11-14 px out, and a window that cuts it off pulls the centroid towards the
    # core (soft-zoom +15 steps, 28 px pitch: the fitted geometry 0.163 -> 0.099 px from
    # the true dot positions at 0.4 of the pitch -> 0.5; sharp-prime and vintage unchanged).
    half = int(max(3, min(0.5 * pitch_mm * px_per_mm, 14)))
    # Large white areas (a marker's quiet zone, the paper around the dots' field) spread
    # a faint halo (flare, the PSF's wings) over the first dots around them, which
    # shifts their centroids by tenths of a pixel even with the sloped background
    # removed: those dots do not take part.
    clear = _clearance_mm(dots_mm, layout) * px_per_mm >= 2 * half
    if clear.sum() >= 12:
        dots_mm = dots_mm[clear]
    reg = base
    for _ in range(2):
        guess = reg.chart_to_image(dots_mm)
        cent, ok, rms = _measure_dots(img, guess, half_px=half)
        if ok.sum() < 12:
            return reg
        measured = ok.copy()
        src, dst = dots_mm[ok], cent[ok]
        # Marker corners pin the homography where there are no dots.
        src_all = np.vstack([src, match.chart_mm])
        dst_all = np.vstack([dst, match.image_px])
        # A wide dot's window cuts off more of its light, and a comatic PSF's cut-off
        # tail drags the centroid towards the core: such dots count less.
        dot_wts = 1.0 / (1.0 + (rms[ok] / (WIDE_DOT_RMS * half)) ** 4)
        wts = np.concatenate([dot_wts, np.full(len(match.chart_mm), 0.3)])

        def resid(p, src_all=src_all, dst_all=dst_all, wts=wts):
            hm, k1, k2 = _params_to_model(p)
            r = Registration(hm, centre, norm, k1, k2, 0, 0, 0, 0)
            return ((r.chart_to_image(src_all) - dst_all) * wts[:, None]).ravel()

        p0 = np.concatenate([(reg.homography / reg.homography[2, 2]).ravel()[:8], [reg.k1, reg.k2]])
        if not fit_distortion:
            p0 = p0[:8]
            fun = lambda p: resid(np.concatenate([p, [0.0, 0.0]]))  # noqa: E731
        else:
            fun = resid
        sol = least_squares(fun, p0, x_scale="jac", method="lm")
        p = sol.x if fit_distortion else np.concatenate([sol.x, [0.0, 0.0]])
        hm, k1, k2 = _params_to_model(p)
        reg = Registration(hm, centre, norm, float(k1), float(k2), 0, 0, 0, match.n_found)
        res = np.hypot(*(reg.chart_to_image(src) - dst).T)
        # Drop gross outliers (dust, a mis-measured dot) and refit once more.
        keep = res < max(5 * np.median(res), 0.5)
        if keep.all():
            continue
        ok_idx = np.nonzero(ok)[0][~keep]
        ok[ok_idx] = False
    # The residuals against the last centroids: each window is recentred on its dot, so
    # measuring again where the final fit puts the dots gives the same centroids (and
    # took a fifth of a 24 MP photo's registration).
    guess = reg.chart_to_image(dots_mm)
    ok = measured
    res = np.hypot(*(guess[ok] - cent[ok]).T) if ok.any() else np.zeros(1)
    return Registration(
        reg.homography, centre, norm, reg.k1, reg.k2,
        float(np.sqrt(np.mean(res**2))), float(res.max()), int(ok.sum()), match.n_found,
    )


#: A dot whose rms radius in its centroid window is this fraction of the window's half
#: side has half the weight in the geometry fit (the weight falls as the fourth power).
#: soft-zoom 1200x800 +15 steps: the windowed centroids of the outer dots (rms radius
#: 2.8-3.2 px in a 12 px half window) miss their true PSF centroids by 0.07-0.11 px median,
#: the mid-field's (1.2-1.6 px) by 0.02, and the fit followed the outer ones: 0.106 px
#: from the true dot positions at the frame corners with equal weights, 0.097 at 0.15,
#: 0.068 at 0.12, 0.045 at 0.1. Not 0.1: in the demo (+16 steps, 7 px half windows) the
#: fit then leant on the sharp middle so much that the bottom corners' PSFs, estimated
#: at the dot positions it extrapolated, went 71 -> 96 % off (69.7 % at 0.12).
WIDE_DOT_RMS = 0.12


#: Fraction of a photo clipped above which a chart that was not found is blamed on the
#: exposure (the 720x480 test sensor's dots chart eight times overexposed: 17 %; a well
#: exposed chart photo clips at most specular spots).
CLIPPED_NOT_FOUND = 0.1


def _not_found(source, n_found: int, n_expected: int, layout_name, saturated: np.ndarray | None) -> str:
    """The chart-not-found sentence, naming overexposure when most likely the cause."""
    head = f"chart not found in {source}: {n_found} of {n_expected} markers detected; "
    clipped = float(np.mean(saturated)) if saturated is not None and np.size(saturated) else 0.0
    if clipped > CLIPPED_NOT_FOUND:
        return head + (f"{clipped:.0%} of it is clipped white: if it is the chart in {layout_name}, "
                       "use a shorter exposure and shoot again")
    return head + f"is this the chart in {layout_name}?"


def _clearance_mm(pts_mm: np.ndarray, layout: targets.Layout) -> np.ndarray:
    """Distance (mm) from each chart point to the nearest bright area that is not a dot:
    a marker's quiet zone or the paper beyond the dots' dark field (0 inside one)."""
    ms = layout.markers
    out = np.full(len(pts_mm), np.inf)
    x, y = pts_mm[:, 0], pts_mm[:, 1]
    for m in ms.items:
        quiet = ms.quiet_zone_of(m)
        (x0, y0), (x1, y1) = np.min(m.corners_mm, axis=0), np.max(m.corners_mm, axis=0)
        dx = np.maximum(0.0, np.maximum(x0 - quiet - x, x - x1 - quiet))
        dy = np.maximum(0.0, np.maximum(y0 - quiet - y, y - y1 - quiet))
        out = np.minimum(out, np.hypot(dx, dy))
    for r in layout.regions:
        if r.role == "dots_background":
            inside = np.minimum.reduce([x - r.x0_mm, r.x1_mm - x, y - r.y0_mm, r.y1_mm - y])
            out = np.minimum(out, np.maximum(inside, 0.0))
    return out


def _nearest_spacing(pts: np.ndarray) -> float:
    if len(pts) < 2:
        return 10.0
    d = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
    d[d == 0] = np.inf
    return float(np.median(d.min(1)))
