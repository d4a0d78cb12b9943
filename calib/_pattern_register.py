"""The PSF from a photo of any known random pattern (no markers of ours needed).

A printed random pattern (binary or Bernoulli noise, as in the non-parametric sub-pixel
PSF work of Delbracio, Muse, Almansa and Morel, 2012) is found in the photo from its own
appearance, in two steps:

1. *Outline*: the pattern, seen through a blur wider than its cells, is a dark block on
   lighter paper (a black frame around it only makes that clearer). The largest dark
   region's contour gives a quadrilateral; its sides are refitted as straight lines and
   intersected. The pattern may be rotated or mirrored: the eight ways of matching the
   pattern's corners to the quadrilateral's are scored by normalised correlation.
2. *Texture*: intensity-based homography refinement (ECC, Evangelidis and Psarakis 2008)
   of the pattern, rendered sharp at about the photo's scale, against the photo, from a
   wide smoothing to a narrow one.

The pattern is then rendered through the homography at the oversampled grid, every fine
sample area-averaged over its footprint, and the PSF solved by
:func:`calib._psf_pattern.estimate_psf_pattern` (gain, offset and a light plane are fitted
there). Geometry and PSF position are not separable (a shifted PSF is a shifted
homography), so, like everywhere in ``calib``, the PSF's centroid defines the centre: the
homography takes up any residual centroid offset.

Pattern coordinates: pixel ``(c, r)`` of the pattern image is one cell whose centre is at
``(c, r)``; the cell spans ``[c - 1/2, c + 1/2] x [r - 1/2, r + 1/2]``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

import targets

from ._errors import CalibError
from ._psf_pattern import estimate_psf_pattern

__all__ = ["PatternPSFResult", "estimate_psf_from_pattern", "load_pattern", "register_pattern",
           "render_pattern", "PatternRegistration", "psf_width"]


@dataclass(frozen=True)
class PatternRegistration:
    """Where a known pattern lies in a photo.

    Attributes
    ----------
    homography : ndarray (3, 3)
        Pattern pixels (cell centres at integers) to photo pixels (origin at the top-left
        pixel centre).
    corners_xy_px : ndarray (4, 2)
        The pattern's outer corners in the photo (top-left, top-right, bottom-right,
        bottom-left of the pattern image).
    cell_px : float
        Mean side of one pattern cell in photo pixels.
    correlation : float
        Final ECC correlation coefficient (1 = identical up to gain and offset).
    orientation : int
        Which of the 8 corner assignments matched (0 = as found; diagnostics).
    """

    homography: np.ndarray
    corners_xy_px: np.ndarray
    cell_px: float
    correlation: float
    orientation: int


@dataclass(frozen=True)
class PatternPSFResult:
    """The PSF measured from a photo of a known pattern.

    Attributes
    ----------
    psf : ndarray (k_s, k_s), float32
        System PSF (optics x pixel aperture) at ``oversample`` samples per pixel, sum 1,
        centred (its centroid at the middle sample).
    psf_sensor : ndarray (k, k), float32
        The same PSF on the sensor grid (integer pixel offsets), sum 1.
    oversample : int
        Samples per sensor pixel of ``psf``.
    homography : ndarray (3, 3)
        Pattern pixels to photo pixels, after centring the PSF.
    fwhm_px : float
        Diameter of the disc with the area of the PSF's above-half-maximum region, in
        sensor pixels (the FWHM for a round PSF).
    sigma_px : tuple of float
        Second-moment standard deviations along the PSF's major and minor axes, sensor
        pixels.
    angle_deg : float
        Direction of the major axis (degrees, x towards y).
    region_xywh_px : tuple of int
        The photo region the PSF was estimated in.
    contrast : float
        Fitted gain (image units per unit pattern value).
    residual_rms : float
        Model misfit, image units (compare with the photo's noise).
    correlation : float
        ECC correlation of the registration.
    """

    psf: np.ndarray
    psf_sensor: np.ndarray
    oversample: int
    homography: np.ndarray
    fwhm_px: float
    sigma_px: tuple[float, float]
    angle_deg: float
    region_xywh_px: tuple[int, int, int, int]
    contrast: float
    residual_rms: float
    correlation: float


# ----------------------------------------------------------------------------- input


def load_pattern(path: str | Path) -> np.ndarray:
    """Read a pattern image as float (H, W) values 0..1, one value per cell.

    8-bit files are taken as sRGB-encoded (what a printer reproduces) and decoded to
    reflectance; 16-bit files are taken as linear. Colour images are averaged to grey.

    Raises
    ------
    CalibError
        The file is missing or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibError(f"pattern file {path} does not exist; give the pattern image (PNG) that was printed")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise CalibError(f"pattern file {path} is not a readable image; give the pattern as a PNG")
    a = raw.astype(np.float64)
    if a.ndim == 3:
        a = a[:, :, :3].mean(axis=2) if a.shape[2] >= 3 else a[:, :, 0]
    if raw.dtype == np.uint8:
        a = targets.srgb_decode(a / 255.0)
    elif raw.dtype == np.uint16:
        a = a / 65535.0
    if min(a.shape) < 8:
        raise CalibError(f"pattern file {path} is only {a.shape[1]}x{a.shape[0]} cells; a random pattern needs at least 8x8")
    if float(np.ptp(a)) <= 0:
        raise CalibError(f"pattern file {path} is uniform; give the random pattern that was printed")
    return np.asarray(a, dtype=np.float64)


# ----------------------------------------------------------------------------- rendering


def _apply(hom: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = hom[2, 0] * x + hom[2, 1] * y + hom[2, 2]
    return (hom[0, 0] * x + hom[0, 1] * y + hom[0, 2]) / w, (hom[1, 0] * x + hom[1, 1] * y + hom[1, 2]) / w


def _box_weights(q: np.ndarray, half: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """First cell index and its share of the interval [q - half, q + half] (half <= 1/2)."""
    lo = q - half
    i0 = np.floor(lo + 0.5)
    frac = np.clip((i0 + 0.5 - lo) / np.maximum(2 * half, 1e-12), 0.0, 1.0)
    beyond = (i0 < -1) | (i0 > n - 1)  # wholly in the padding: no weight may leak inside
    return np.clip(i0, -1, n).astype(np.int64), np.where(beyond, 1.0, frac)


def _box_taps(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-square centres (pixels) and weights of the mean over a 1/s square."""
    return (np.arange(n) + 0.5) / (s * n) - 0.5 / s, np.full(n, 1.0 / n)


def _tent_taps(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-squares over [-1/s, 1/s] weighted by the triangle's integral over each."""
    edges = np.linspace(-1.0, 1.0, 2 * n + 1)
    cdf = np.where(edges < 0, 0.5 * (1 + edges) ** 2, 1 - 0.5 * (1 - edges) ** 2)
    return 0.5 * (edges[:-1] + edges[1:]) / s, np.diff(cdf)


_KERNELS = {"box": _box_taps, "tent": _tent_taps}
_SENSOR_GRID_SOLVE = 3


def render_pattern(
    pattern: np.ndarray,
    homography: np.ndarray,
    shape: tuple[int, int],
    *,
    origin_xy_px: tuple[float, float] = (0.0, 0.0),
    oversample: int = 1,
    supersample: int = 4,
    outside: float | None = None,
    kernel: str = "box",
    to_pattern: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Render a cell pattern through a homography, area-averaged over each output sample.

    Output sample ``(i, j)`` is centred at photo ``(x0 + j / s, y0 + i / s)`` and averages
    the pattern over the ``1/s x 1/s`` pixel square around it: each square is split into
    ``supersample**2`` sub-squares, and each of those is box-filtered exactly over the
    (at most 2 x 2) cells its footprint covers.

    Parameters
    ----------
    pattern : ndarray (H, W)
        Cell values.
    homography : ndarray (3, 3)
        Pattern pixels to photo pixels.
    shape : (int, int)
        Output (rows, cols).
    origin_xy_px : (float, float), keyword-only
        Photo coordinates of output sample (0, 0).
    oversample : int, keyword-only
        ``s``, output samples per photo pixel.
    supersample : int, keyword-only
        Sub-squares per axis of each output sample.
    outside : float, optional, keyword-only
        Value beyond the pattern (default: the pattern's maximum, i.e. paper).
    kernel : str, keyword-only
        ``"box"``: the plain mean over the sample's ``1/s`` square. ``"tent"``: the
        separable triangle of half-width ``1/s`` (box convolved with box), the weights
        that make a PSF sampled every ``1/s`` pixel exact for a piecewise-linear PSF
        instead of a piecewise-constant one (much less discretisation error at small
        ``s``).
    to_pattern : callable, optional, keyword-only
        ``(x, y) -> (u, v)``: photo pixel coordinates (arrays) to pattern coordinates, used
        instead of the inverse of ``homography`` (which may then be None) for mappings
        that are no homography (lens distortion). It must be smooth over the output: the
        sub-sample footprint is taken from its Jacobian at the output's centre.

    Returns
    -------
    ndarray (rows, cols), float64
    """
    pat = np.asarray(pattern, dtype=np.float64)
    ph, pw = pat.shape
    fill = float(pat.max()) if outside is None else float(outside)
    padded = np.pad(pat, 1, constant_values=fill)  # index -1 and n land on the fill
    if to_pattern is None:
        hinv = np.linalg.inv(np.asarray(homography, dtype=np.float64))

        def to_pattern(x, y):
            return _apply(hinv, x, y)
    s, n = int(oversample), int(supersample)
    if kernel not in _KERNELS:
        raise CalibError(f"unknown render kernel {kernel!r}; choose one of {', '.join(_KERNELS)}")
    rows, cols = int(shape[0]), int(shape[1])
    out = np.zeros((rows, cols))
    step = 1.0 / (s * n)
    offs, wts = _KERNELS[kernel](n, s)
    # Sub-square footprint in pattern units from the local Jacobian (area-preserving widths).
    yc, xc = origin_xy_px[1] + (rows - 1) / (2 * s), origin_xy_px[0] + (cols - 1) / (2 * s)
    eps = 0.5
    u0, v0 = to_pattern(np.array([xc - eps, xc + eps, xc, xc]), np.array([yc, yc, yc - eps, yc + eps]))
    jac = np.array([[u0[1] - u0[0], u0[3] - u0[2]], [v0[1] - v0[0], v0[3] - v0[2]]]) / (2 * eps)
    hu = 0.5 * step * math.hypot(jac[0, 0], jac[0, 1])
    hv = 0.5 * step * math.hypot(jac[1, 0], jac[1, 1])
    if hu > 0.5 or hv > 0.5:
        n_more = int(math.ceil(max(hu, hv) / 0.5))
        return render_pattern(pattern, homography, shape, origin_xy_px=origin_xy_px, oversample=s,
                              supersample=n * n_more, outside=outside, kernel=kernel, to_pattern=to_pattern)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    xx = origin_xy_px[0] + xx / s
    yy = origin_xy_px[1] + yy / s
    flat = padded.ravel()
    stride = pw + 2
    for dy, wy in zip(offs, wts):
        for dx, wx in zip(offs, wts):
            u, v = to_pattern(xx + dx, yy + dy)
            iu, fu = _box_weights(u, hu, pw)
            iv, fv = _box_weights(v, hv, ph)
            k = (iv + 1) * stride + (iu + 1)
            k1 = np.minimum(iu + 2, pw + 1) - (iu + 1)
            kv = np.where(iv + 2 <= ph + 1, stride, 0)
            top = flat.take(k) * fu + flat.take(k + k1) * (1 - fu)
            bot = flat.take(k + kv) * fu + flat.take(k + kv + k1) * (1 - fu)
            out += (wx * wy) * (top * fv + bot * (1 - fv))
    return out


# ----------------------------------------------------------------------------- outline


def _order_corners(pts: np.ndarray) -> np.ndarray:
    """Four points ordered clockwise on screen (y down), starting nearest the top-left."""
    c = pts.mean(axis=0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    pts = pts[np.argsort(ang)]  # increasing angle = clockwise with y down
    start = int(np.argmin(pts[:, 0] + pts[:, 1]))
    return np.roll(pts, -start, axis=0)


def _refit_sides(contour: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Fit a line to the contour points along each side and intersect neighbouring lines."""
    pts = contour.reshape(-1, 2).astype(np.float64)
    lines = []
    for k in range(4):
        a, b = quad[k], quad[(k + 1) % 4]
        d = b - a
        length = float(np.hypot(*d))
        if length < 4:
            return quad
        t = ((pts - a) @ d) / length**2
        dist = np.abs((pts[:, 0] - a[0]) * d[1] - (pts[:, 1] - a[1]) * d[0]) / length
        near = (t > 0.1) & (t < 0.9) & (dist < max(2.0, 0.03 * length))
        if near.sum() < 5:
            return quad
        vx, vy, x0, y0 = cv2.fitLine(pts[near].astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lines.append(np.cross([x0, y0, 1.0], [x0 + vx, y0 + vy, 1.0]))
    out = []
    for k in range(4):
        p = np.cross(lines[k - 1], lines[k])
        if abs(p[2]) < 1e-12:
            return quad
        out.append(p[:2] / p[2])
    out = np.array(out)
    return out if np.all(np.hypot(*(out - quad).T) < 0.1 * np.ptp(quad, axis=0).max() + 3) else quad


def _find_dark_quad(grey: np.ndarray, min_area: float) -> tuple[np.ndarray, float] | None:
    """The largest dark blob's quadrilateral (4, 2) in ``grey`` coordinates, and its area."""
    h, w = grey.shape
    g = grey - np.percentile(grey, 1)
    top = np.percentile(g, 99)
    if top <= 0:
        return None
    g8 = np.clip(g / top * 255, 0, 255).astype(np.uint8)
    # Blur past the cells: the pattern's mean is darker than the paper around it.
    sigma = max(2.0, min(h, w) / 150)
    blur = cv2.GaussianBlur(g8, (0, 0), sigma)
    _, dark = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    k = max(3, int(2 * sigma) | 1)
    dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    contours, _ = cv2.findContours(dark, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    best = max(contours, key=cv2.contourArea)
    area = float(cv2.contourArea(best))
    if area < min_area:
        return None
    hull = cv2.convexHull(best)
    peri = cv2.arcLength(hull, True)
    quad = None
    for frac in (0.01, 0.02, 0.03, 0.05, 0.08, 0.12):
        approx = cv2.approxPolyDP(hull, frac * peri, True)
        if len(approx) == 4:
            quad = approx.reshape(4, 2).astype(np.float64)
            break
    if quad is None:
        return None
    quad = _order_corners(quad)
    return _refit_sides(best, quad), area


def _content_box(pattern: np.ndarray) -> tuple[int, int, int, int]:
    """Rows/cols of the pattern image without uniform paper-white margins (r0, r1, c0, c1)."""
    white = pattern >= pattern.max() - 1e-6
    rows = np.where(~white.all(axis=1))[0]
    cols = np.where(~white.all(axis=0))[0]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


_DIHEDRAL = [(r, m) for m in (False, True) for r in range(4)]


def _coarse(photo: np.ndarray, pattern: np.ndarray, where: str) -> tuple[np.ndarray, float, int]:
    """Coarse homography (pattern px -> photo px), cell size in px, orientation index."""
    h, w = photo.shape
    ph, pw = pattern.shape
    found = _find_dark_quad(photo, min_area=max(64.0, 1e-3 * h * w))
    if found is None:
        raise CalibError(
            f"the pattern was not found in {where}: no dark pattern-sized region stands out from "
            f"the paper around it; give --roi X,Y,W,H around the whole pattern with some paper margin"
        )
    quad, area = found
    r0, r1, c0, c1 = _content_box(pattern)
    src = np.array([[c0 - 0.5, r0 - 0.5], [c1 - 0.5, r0 - 0.5], [c1 - 0.5, r1 - 0.5], [c0 - 0.5, r1 - 0.5]])
    cell = math.sqrt(area / ((r1 - r0) * (c1 - c0)))
    # Score every corner assignment by correlating blurred pattern and photo inside the quad.
    sig = max(1.0, 0.6 * cell)
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
    crop = cv2.GaussianBlur(photo[y0:y1, x0:x1].astype(np.float32), (0, 0), sig)
    inner = np.zeros(crop.shape, np.uint8)
    shrink = quad.mean(axis=0) + 0.85 * (quad - quad.mean(axis=0))
    cv2.fillConvexPoly(inner, np.round(shrink - [x0, y0]).astype(np.int32), 1)
    inner = inner.astype(bool)
    if inner.sum() < 16:
        raise CalibError(f"the pattern outline found in {where} is too small; give --roi X,Y,W,H around the pattern")
    scores = []
    for idx, (rot, mirror) in enumerate(_DIHEDRAL):
        dst = quad[::-1] if mirror else quad
        dst = np.roll(dst, -rot, axis=0)
        hom = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
        warped = cv2.warpPerspective(pattern.astype(np.float32), shift @ hom,
                                     (x1 - x0, y1 - y0), flags=cv2.INTER_NEAREST,
                                     borderMode=cv2.BORDER_REPLICATE)
        warped = cv2.GaussianBlur(warped, (0, 0), sig)
        scores.append((_ncc(crop[inner], warped[inner]), idx, hom))
    scores.sort(key=lambda t: -t[0])
    best, idx, hom = scores[0]
    if best < 0.2 or best - scores[1][0] < 0.05:
        raise CalibError(
            f"the pattern was not found in {where}: the dark region there does not correlate with the "
            f"pattern image (best {best:.2f}); check the pattern file, or give --roi X,Y,W,H around the pattern"
        )
    return hom, cell, idx


# ----------------------------------------------------------------------------- refinement


def _ecc_refine(photo: np.ndarray, pattern: np.ndarray, hom: np.ndarray, cell: float) -> tuple[np.ndarray, float]:
    """ECC homography refinement of a sharp pattern render against the photo, wide to narrow."""
    ph, pw = pattern.shape
    k = int(max(1, min(round(cell), 1600 // max(ph, pw))))
    template = np.kron(pattern, np.ones((k, k))).astype(np.float32)
    # Template pixel t and pattern coordinate p: t = k p + (k - 1) / 2.
    scale = np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2], [0, 0, 1.0]])
    warp = (hom @ np.linalg.inv(scale)).astype(np.float32)
    warp /= warp[2, 2]
    img = photo.astype(np.float32)
    rho = float("nan")
    sizes = [s for s in (4 * k + 1, 2 * k + 1, 5, 3) if s >= 3]
    sizes = sorted(set(s | 1 for s in sizes), reverse=True)
    for size in sizes:
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-7)
        try:
            rho, warp = cv2.findTransformECC(template, img, warp, cv2.MOTION_HOMOGRAPHY, crit, None, size)
        except cv2.error:
            continue
    if not np.isfinite(rho):
        raise CalibError("the pattern's texture could not be matched to the photo; check that the pattern file is the one photographed")
    out = warp.astype(np.float64) @ scale
    return out / out[2, 2], float(rho)


def _gauss_newton(photo: np.ndarray, pattern: np.ndarray, hom: np.ndarray, cell: float,
                  *, iterations: int = 12, tol_px: float = 2e-3) -> np.ndarray:
    """Refine the homography on the photo minus a blurred, area-averaged render of the pattern.

    Model: ``photo(x) = a * (G_sigma * R_H)(x) + b``, with ``R_H`` the pattern rendered
    through ``H`` and ``G_sigma`` a Gaussian standing in for the (unknown) PSF; ``a``, ``b``
    and ``sigma`` are fitted alongside the 8 homography parameters. Only pixels well inside
    the pattern are used (the paper's value around it is unknown).
    """
    from scipy.ndimage import gaussian_filter

    h, w = photo.shape
    ph, pw = pattern.shape
    inset = 2.0 + 3.0 / max(cell, 0.5)  # cells kept clear of the pattern's edge
    sigma, a, b = 1.0, None, None
    for _ in range(iterations):
        hinv = np.linalg.inv(hom)
        pts = _apply(hom, np.array([-0.5, pw - 0.5, pw - 0.5, -0.5]), np.array([-0.5, -0.5, ph - 0.5, ph - 0.5]))
        pad = int(math.ceil(4 * sigma + 3))
        x0 = max(int(math.floor(pts[0].min())) - pad, 0)
        y0 = max(int(math.floor(pts[1].min())) - pad, 0)
        x1 = min(int(math.ceil(pts[0].max())) + pad, w - 1)
        y1 = min(int(math.ceil(pts[1].max())) + pad, h - 1)
        rows, cols = y1 - y0 + 1, x1 - x0 + 1
        render = render_pattern(pattern, hom, (rows, cols), origin_xy_px=(x0, y0), supersample=2)
        yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        u, v = _apply(hinv, xx, yy)
        use = (u > inset - 0.5) & (u < pw - 0.5 - inset) & (v > inset - 0.5) & (v < ph - 0.5 - inset)
        if use.sum() < 200:
            break
        m0 = gaussian_filter(render, sigma, mode="nearest")
        ds = 0.05 * sigma
        m_s = (gaussian_filter(render, sigma + ds, mode="nearest") - m0) / ds
        gy, gx = np.gradient(m0)
        obs = photo[y0:y1 + 1, x0:x1 + 1][use]
        base = m0[use]
        if a is None:
            a, b = np.polyfit(base, obs, 1)
        cx, cy = float(xx[use].mean()), float(yy[use].mean())
        scale = float(max(np.ptp(xx[use]), np.ptp(yy[use]), 1.0)) / 2
        xn, yn = (xx[use] - cx) / scale, (yy[use] - cy) / scale
        gxs, gys = gx[use] * scale, gy[use] * scale
        persp = xn * gxs + yn * gys
        jac = np.stack([
            -gxs * xn, -gxs * yn, -gxs, -gys * xn, -gys * yn, -gys,
            persp * xn, persp * yn,
        ], axis=1) * a
        jac = np.concatenate([jac, base[:, None], np.ones((base.size, 1)), a * m_s[use][:, None]], axis=1)
        resid = obs - (a * base + b)
        step, *_ = np.linalg.lstsq(jac, resid, rcond=None)
        d = step[:8]
        a, b = a + step[8], b + step[9]
        sigma = float(np.clip(sigma + step[10], 0.3, 10.0))
        norm = np.array([[1 / scale, 0, -cx / scale], [0, 1 / scale, -cy / scale], [0, 0, 1.0]])
        upd = np.array([[1 + d[0], d[1], d[2]], [d[3], 1 + d[4], d[5]], [d[6], d[7], 1.0]])
        hom = np.linalg.inv(norm) @ upd @ norm @ hom
        hom /= hom[2, 2]
        corner_move = scale * (np.abs(d[[0, 1, 3, 4]]).sum() + np.abs(d[[2, 5]]).sum() + np.abs(d[6:]).sum())
        if corner_move < tol_px:
            break
    return hom


def register_pattern(photo: np.ndarray, pattern: np.ndarray, *, roi: tuple[int, int, int, int] | None = None,
                     where: str = "the photo") -> PatternRegistration:
    """Find a known pattern in a photo: outline, orientation, then ECC refinement.

    Parameters
    ----------
    photo : ndarray (H, W)
        Linear grey photo.
    pattern : ndarray (h, w)
        Cell values (see :func:`load_pattern`).
    roi : (x, y, w, h), optional, keyword-only
        Search only here (the whole pattern and some paper around it).
    where : str, keyword-only
        How to name the photo in error messages.

    Returns
    -------
    PatternRegistration

    Raises
    ------
    CalibError
        The pattern is not found (no outline, or no correlation with the pattern).
    """
    photo = np.asarray(photo, dtype=np.float64)
    h, w = photo.shape
    x0, y0, rw, rh = _check_roi(roi, (h, w), where)
    crop = photo[y0:y0 + rh, x0:x0 + rw]
    hom, cell, idx = _coarse(crop, pattern, where if roi is None else f"{where} (ROI {x0},{y0},{rw},{rh})")
    hom, rho = _ecc_refine(crop, pattern, hom, cell)
    if rho < 0.5:
        raise CalibError(
            f"the pattern was not found in {where}: the best texture match correlates only {rho:.2f}; "
            f"check the pattern file, or give --roi X,Y,W,H around the pattern"
        )
    hom = _gauss_newton(crop, pattern, hom, cell)
    hom = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]]) @ hom
    hom /= hom[2, 2]
    ph, pw = pattern.shape
    cx, cy = _apply(hom, np.array([-0.5, pw - 0.5, pw - 0.5, -0.5]), np.array([-0.5, -0.5, ph - 0.5, ph - 0.5]))
    corners = np.stack([cx, cy], axis=1)
    area = 0.5 * abs(float(np.dot(cx, np.roll(cy, -1)) - np.dot(cy, np.roll(cx, -1))))
    return PatternRegistration(hom, corners, math.sqrt(area / (ph * pw)), rho, idx)


def _check_roi(roi, shape, where) -> tuple[int, int, int, int]:
    h, w = shape
    if roi is None:
        return 0, 0, w, h
    x, y, rw, rh = (int(v) for v in roi)
    if rw < 16 or rh < 16 or x < 0 or y < 0 or x + rw > w or y + rh > h:
        raise CalibError(
            f"ROI {x},{y},{rw},{rh} is not inside {where} ({w}x{h} pixels, at least 16x16); "
            f"give X,Y,W,H within the photo"
        )
    return x, y, rw, rh


# ----------------------------------------------------------------------------- PSF


def psf_width(psf: np.ndarray, oversample: int = 1) -> tuple[float, tuple[float, float], float, tuple[float, float]]:
    """(area FWHM px, (sigma major, sigma minor) px, major-axis angle deg, centroid offset (x, y) px)."""
    p = np.clip(np.asarray(psf, dtype=np.float64), 0, None)
    p = p / p.sum()
    k = p.shape[0]
    c = (k - 1) / 2
    yy, xx = (np.mgrid[0:k, 0:k] - c) / oversample
    mx, my = float((p * xx).sum()), float((p * yy).sum())
    cxx = float((p * (xx - mx) ** 2).sum())
    cyy = float((p * (yy - my) ** 2).sum())
    cxy = float((p * (xx - mx) * (yy - my)).sum())
    ev, vec = np.linalg.eigh(np.array([[cxx, cxy], [cxy, cyy]]))
    angle = math.degrees(math.atan2(vec[1, 1], vec[0, 1])) % 180
    area = float((p >= 0.5 * p.max()).sum()) / oversample**2
    fwhm = 2 * math.sqrt(area / math.pi)
    return fwhm, (math.sqrt(max(ev[1], 0)), math.sqrt(max(ev[0], 0))), angle, (mx, my)


def _region(reg: PatternRegistration, shape: tuple[int, int], pattern_shape: tuple[int, int], margin: float,
            max_side: int, roi) -> tuple[int, int, int, int]:
    """The largest square box (side <= max_side) about the pattern's centre whose pixels,
    grown by ``margin``, all lie on the pattern, within the ROI and the photo."""
    h, w = shape
    ph, pw = pattern_shape
    hinv = np.linalg.inv(reg.homography)
    cx, cy = _apply(reg.homography, np.array([(pw - 1) / 2]), np.array([(ph - 1) / 2]))
    cx, cy = float(cx[0]), float(cy[0])
    lim = (0, 0, w - 1, h - 1) if roi is None else (roi[0], roi[1], roi[0] + roi[2] - 1, roi[1] + roi[3] - 1)

    def fits(half: float) -> bool:
        e = half + margin
        t = np.linspace(-e, e, 9)
        xs = np.concatenate([cx + t, cx + t, np.full(9, cx - e), np.full(9, cx + e)])
        ys = np.concatenate([np.full(9, cy - e), np.full(9, cy + e), cy + t, cy + t])
        u, v = _apply(hinv, xs, ys)
        on_pattern = np.all((u > 0) & (u < pw - 1) & (v > 0) & (v < ph - 1))
        inside = cx - half >= lim[0] and cy - half >= lim[1] and cx + half <= lim[2] and cy + half <= lim[3]
        return bool(on_pattern and inside)

    lo, hi = 0.0, max_side / 2
    if not fits(lo):
        return 0, 0, 0, 0
    if fits(hi):
        lo = hi
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    side = int(2 * lo)
    return int(math.ceil(cx - lo)), int(math.ceil(cy - lo)), side, side


def estimate_psf_from_pattern(
    image: np.ndarray,
    pattern: np.ndarray,
    *,
    roi: tuple[int, int, int, int] | None = None,
    oversample: int = 2,
    size: int | None = None,
    saturated: np.ndarray | None = None,
    max_region_px: int = 160,
    where: str = "the photo",
) -> PatternPSFResult:
    """Estimate the local PSF from a photo of a known random pattern (no markers needed).

    Parameters
    ----------
    image : ndarray (H, W)
        Linear grey photo (one channel, 0..1).
    pattern : ndarray (h, w)
        The sharp pattern, one value per cell (:func:`load_pattern`).
    roi : (x, y, w, h), optional, keyword-only
        Photo region holding the whole pattern (searched for it) and bounding the region
        the PSF is estimated in.
    oversample : int, keyword-only
        Samples per pixel of the returned ``psf`` (1 = sensor grid).
    size : int, optional, keyword-only
        Odd side of the sensor-grid PSF; default: chosen from a first estimate's width.
    saturated : ndarray (H, W) bool, optional, keyword-only
        Pixels to leave out.
    max_region_px : int, keyword-only
        Side limit of the square estimation region (the solve's memory grows with it).
    where : str, keyword-only
        How to name the photo in error messages.

    Returns
    -------
    PatternPSFResult

    Raises
    ------
    CalibError
        Pattern not found, ROI outside the photo, oversample < 1, region too small.

    Examples
    --------
    >>> res = estimate_psf_from_pattern(photo, load_pattern("noise.png"))  # doctest: +SKIP
    >>> res.fwhm_px, res.psf.sum()                                          # doctest: +SKIP
    (2.1, 1.0)
    """
    s = int(oversample)
    if s < 1 or s != oversample:
        raise CalibError(f"oversample {oversample} must be an integer of at least 1")
    if size is not None and (int(size) < 3 or int(size) % 2 == 0):
        raise CalibError(f"PSF size {size} must be odd and at least 3")
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise CalibError(f"{where} must be one channel (H, W); got shape {image.shape}")
    pattern = np.asarray(pattern, dtype=np.float64)
    roi_box = _check_roi(roi, image.shape, where) if roi is not None else None
    reg = register_pattern(image, pattern, roi=roi_box, where=where)
    hom = reg.homography
    weights = None if saturated is None else (~np.asarray(saturated, bool)).astype(np.float64)

    def solve(k: int, samp: int, hom: np.ndarray, side: int):
        margin = k / 2 + 2
        x, y, bw, bh = _region(reg, image.shape, pattern.shape, margin, side, roi_box)
        if bw < 3 * k or bh < 3 * k:
            raise CalibError(
                f"the pattern in {where} covers too few pixels ({bw}x{bh} usable) for a {k}x{k} PSF; "
                f"photograph it larger or give a smaller --size"
            )
        sharp = render_pattern(pattern, hom, (bh * samp, bw * samp), origin_xy_px=(x, y), oversample=samp,
                               supersample=3, kernel="tent")
        wts = None if weights is None else weights[y:y + bh, x:x + bw]
        est = estimate_psf_pattern(image[y:y + bh, x:x + bw], sharp, size=k, oversample=samp, weights=wts)
        return est, (x, y, bw, bh)

    if size is None:
        # A quick sensor-grid estimate sets the support: about 3.5 sigma each side.
        pilot, _ = solve(21, 1, hom, min(max_region_px, 120))
        _, (smaj, _), _, _ = psf_width(pilot.psf)
        size = int(min(31, max(7, 2 * math.ceil(3.5 * smaj + 1.5) + 1)))
    k = int(size)
    # A sensor-grid solve is aliased (a PSF about a pixel wide is not piecewise constant
    # per pixel): the sensor-grid PSF is sampled from a solve at 3 samples per pixel.
    s_solve = _SENSOR_GRID_SOLVE if s == 1 else s
    est, box = solve(k, s_solve, hom, max_region_px)
    # The PSF's centroid defines the centre: move any offset into the homography, once.
    _, _, _, (mx, my) = psf_width(est.psf_fine, s_solve)
    if math.hypot(mx, my) > 0.02:
        hom = np.array([[1, 0, mx], [0, 1, my], [0, 0, 1.0]]) @ hom
        est, box = solve(k, s_solve, hom, max_region_px)
    fwhm, sig, ang, _ = psf_width(est.psf_fine, s_solve)
    return PatternPSFResult(
        psf=est.psf if s == 1 else est.psf_fine,
        psf_sensor=est.psf,
        oversample=s,
        homography=hom / hom[2, 2],
        fwhm_px=fwhm,
        sigma_px=sig,
        angle_deg=ang,
        region_xywh_px=box,
        contrast=est.contrast,
        residual_rms=est.residual_rms,
        correlation=reg.correlation,
    )
