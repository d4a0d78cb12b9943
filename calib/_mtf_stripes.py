"""MTF from grating (stripe) patches, measured in the Fourier domain.

Each patch of a stripes chart is a grating of known frequency, orientation, profile and
printed contrast. The registered geometry predicts, for every pixel of the patch, the
grating phase ``phi(x)`` (cycles); the image is then fitted by weighted linear least
squares with the basis

    1, dx, dy,  Re/Im[ e^{i 2 pi n phi(x)} ] x (1, dx, dy)   for the harmonics n

(``dx, dy`` pixel offsets from the patch centre). This is a windowed DFT at the exact,
non-integer, *local* frequency vector — including the chirp a perspective view gives —
and the linear terms absorb the slow illumination gradient (vignetting) and a small
error of the predicted frequency. That error (unmodelled distortion, registration) is
read from the linear terms and the phase model corrected, a few times, so the
modulation is measured where the grating actually is.

The MTF at the local frequency is the fitted modulation ``|Z| / mean`` divided by the
chart's own modulation at that harmonic: ``amplitude / mean`` for a sine, and
``4 / (pi n) * amplitude / mean`` for harmonic ``n`` of a square wave.

Harmonics of a square wave above the Nyquist frequency are aliased by the sampling; the
fit carries them as nuisance terms (evaluated at the pixels they are exactly their
aliases) and flags a measurement an alias falls on (``aliased_harmonic``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import CalibError
from ._mtf_psf import field_direction
from ._records import MTFRecord

#: Analysed part of a patch: this fraction of its side is dropped on every side, so the
#: blur across the patch border (paper next to the grating) stays out of the fit.
_INSET = 0.12
#: Tukey taper of the fit weights (fraction of the analysed window that is tapered).
_TAPER = 0.5
#: Fewer periods than this across the analysed window: the frequency is poorly resolved.
MIN_PERIODS = 2.5
#: Values at or above this (0..1 linear data) count as clipped.
CLIP_LEVEL = 0.98
#: Flag a measurement whose standard error exceeds this.
MAX_STDERR = 0.02
#: Harmonics above this frequency (c/p) are not modelled (the optics pass nothing there).
_MAX_NUISANCE_CPP = 3.0
#: A fundamental with |kx| or |ky| at or above this is aliased: not measured.
_NYQUIST = 0.5
#: Harmonics are reported only below this (|kx|, |ky|): at Nyquist itself a sinusoid's
#: amplitude depends on its phase and cannot be measured.
_MAX_HARMONIC_CPP = 0.45
_REFINE_ITER = 4

FLAG_OUTSIDE = "outside"
FLAG_PARTLY_OUTSIDE = "partly_outside"
FLAG_CLIPPED = "clipped"
FLAG_FEW_PERIODS = "few_periods"
FLAG_ABOVE_NYQUIST = "above_nyquist"
FLAG_ALIASED_HARMONIC = "aliased_harmonic"
FLAG_HARMONIC_DROPPED = "harmonic_dropped"
FLAG_NOISY = "noisy"

_DEFAULT_CHANNELS = {1: ("Y",), 3: ("R", "G", "B")}


@dataclass(frozen=True)
class StripePatchResult:
    """What was measured on one grating patch (all channels).

    Attributes
    ----------
    index : int
        Index of the patch in ``layout.stripes``.
    centre_xy_px : (float, float)
        Patch centre in the photo, pixels.
    frequency_cpmm : float
        The grating's frequency on the chart, cycles per mm.
    profile : str
        ``"sine"`` or ``"square"``.
    freq_cpp : float
        Local fundamental frequency in the photo, cycles per pixel (after refinement).
    orientation_deg : float
        Direction of the local frequency vector in the photo, degrees in [0, 180)
        (0 = +x, 90 = +y, down).
    direction : str
        ``"sagittal"``, ``"tangential"`` or ``"none"`` relative to the optical centre.
    periods : float
        Grating periods across the analysed window.
    flags : tuple of str
        Problems of the patch (union over channels), empty when clean.
    records : tuple of MTFRecord
        One record per channel (``freq_cpp`` = the measured harmonics).
    """

    index: int
    centre_xy_px: tuple[float, float]
    frequency_cpmm: float
    profile: str
    freq_cpp: float
    orientation_deg: float
    direction: str
    periods: float
    flags: tuple[str, ...]
    records: tuple[MTFRecord, ...]


@dataclass(frozen=True)
class StripeResult:
    """All grating patches of one photo.

    Attributes
    ----------
    patches : tuple of StripePatchResult
        Every patch of the layout, measured or not (``outside`` patches carry no records).
    channels : tuple of str
    image_size : (int, int)
        (width, height) of the photo.
    centre_xy_px : (float, float)
        Optical centre used for sagittal/tangential.
    """

    patches: tuple[StripePatchResult, ...]
    channels: tuple[str, ...]
    image_size: tuple[int, int]
    centre_xy_px: tuple[float, float]

    @property
    def records(self) -> tuple[MTFRecord, ...]:
        """Every measured record, flagged ones included (their ``flags`` say why)."""
        return tuple(r for p in self.patches for r in p.records)

    def clean_records(self) -> tuple[MTFRecord, ...]:
        """Only the records without any flag."""
        return tuple(r for r in self.records if not r.flags)

    def flagged(self) -> tuple[StripePatchResult, ...]:
        """Patches with at least one flag (reported, never averaged in)."""
        return tuple(p for p in self.patches if p.flags)


# ---------------------------------------------------------------- geometry

class _Geometry:
    """Chart mm <-> photo px for one photo: a homography, or any forward map."""

    def __init__(self, reg: Any) -> None:
        self.hom: np.ndarray | None = None
        self.fwd: Callable[[np.ndarray], np.ndarray] | None = None
        if isinstance(reg, np.ndarray) or (isinstance(reg, (list, tuple)) and np.ndim(reg) == 2):
            self._set_h(np.asarray(reg, np.float64))
            return
        for name in ("chart_to_image", "chart_to_px", "to_image", "map_chart"):
            fn = getattr(reg, name, None)
            if callable(fn):
                self.fwd = lambda xy, fn=fn: np.asarray(fn(np.asarray(xy, np.float64)), np.float64).reshape(-1, 2)
                break
        else:
            if callable(reg):
                self.fwd = lambda xy: np.asarray(reg(np.asarray(xy, np.float64)), np.float64).reshape(-1, 2)
        h = getattr(reg, "homography", None)
        if callable(h):
            h = h()
        if h is not None and self.fwd is None:
            self._set_h(np.asarray(h, np.float64))
        if self.hom is None and self.fwd is None:
            raise CalibError(
                "the registration must be a 3x3 chart-mm-to-pixel homography or a registration "
                "object mapping chart mm to pixels; pass MarkerMatch.homography() or a calib registration"
            )

    def _set_h(self, h: np.ndarray) -> None:
        if h.shape != (3, 3) or not np.all(np.isfinite(h)):
            raise CalibError("the homography must be a finite 3x3 matrix mapping chart mm to pixels")
        self.hom = h / h[2, 2]

    def to_px(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        if self.fwd is not None:
            return self.fwd(uv)
        p = np.column_stack([uv, np.ones(len(uv))]) @ self.hom.T
        return p[:, :2] / p[:, 2:3]

    def local_affine(self, uv0: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Pixel position of ``uv0`` and the Jacobian d(px)/d(mm) there (central differences)."""
        e = 1e-3
        u, v = uv0
        pts = self.to_px(np.array([[u, v], [u + e, v], [u - e, v], [u, v + e], [u, v - e]]))
        jac = np.column_stack([(pts[1] - pts[2]) / (2 * e), (pts[3] - pts[4]) / (2 * e)])
        return pts[0], jac

    def px_to_uv(self, xy: np.ndarray, centre_uv: tuple[float, float]) -> np.ndarray:
        """Chart mm of pixel positions (exact for a homography; local inverse otherwise)."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if self.fwd is None:
            hinv = np.linalg.inv(self.hom)
            p = np.column_stack([xy, np.ones(len(xy))]) @ hinv.T
            return p[:, :2] / p[:, 2:3]
        # General map: start from the local affine inverse, one Newton step with the
        # Jacobian at the centre (patches are small; the residual is second order).
        x0, jac = self.local_affine(centre_uv)
        jinv = np.linalg.inv(jac)
        uv = np.asarray(centre_uv) + (xy - x0) @ jinv.T
        err = self.to_px(uv) - xy
        return uv - err @ jinv.T


# ---------------------------------------------------------------- fitting

def _tukey01(t: np.ndarray, alpha: float = _TAPER) -> np.ndarray:
    """Tukey window on [0, 1] (0 outside)."""
    t = np.asarray(t, np.float64)
    w = np.ones_like(t)
    a = alpha / 2
    lo = t < a
    hi = t > 1 - a
    w[lo] = 0.5 * (1 - np.cos(np.pi * t[lo] / a))
    w[hi] = 0.5 * (1 - np.cos(np.pi * (1 - t[hi]) / a))
    w[(t < 0) | (t > 1)] = 0.0
    return w


def _folded(k: np.ndarray) -> np.ndarray:
    """A frequency vector folded into the sampled band [-0.5, 0.5)^2 (what the pixels see)."""
    return k - np.round(k)


@dataclass
class _Fit:
    amplitude: dict[int, float]   # harmonic -> |Z| at the centre
    stderr: dict[int, float]
    mean: float
    k_cpp: np.ndarray             # refined fundamental frequency vector at the centre
    aliased: set[int]             # measured harmonics an alias falls on


def _fit_patch(values: np.ndarray, dxy: np.ndarray, phase: np.ndarray, weight: np.ndarray,
               k0: np.ndarray, measured: list[int], nuisance: list[int], resolution_cpp: float) -> _Fit:
    """Weighted LSQ of the grating model; refines the linear part of the phase."""
    scale = max(1.0, float(np.abs(dxy).max()))
    dx, dy = dxy[:, 0] / scale, dxy[:, 1] / scale
    sw = np.sqrt(weight)
    dk = np.zeros(2)
    aliased: set[int] = set()
    # Nuisance harmonics whose alias coincides with a measured frequency are not
    # separable from it: drop them from the model and flag the measurement instead.
    keep_nuis = []
    for n in nuisance:
        kn = _folded(n * k0)
        clash = [m for m in measured
                 if min(np.hypot(*(kn - m * k0)), np.hypot(*(kn + m * k0))) < resolution_cpp]
        if clash:
            aliased.update(clash)
        else:
            keep_nuis.append(n)
    for it in range(_REFINE_ITER):
        ph = phase + dxy @ dk
        cols = [np.ones_like(dx), dx, dy]
        for n in measured:
            e = np.exp(2j * np.pi * n * ph)
            for b in (e.real, e.imag):
                cols += [b, b * dx, b * dy]
        for n in keep_nuis:
            e = np.exp(2j * np.pi * n * ph)
            cols += [e.real, e.imag]
        a = np.column_stack(cols) * sw[:, None]
        ata = a.T @ a
        try:
            # normal equations: a few dozen columns, thousands of rows (lstsq's SVD is slow)
            ata_inv = np.linalg.inv(ata)
            coef = ata_inv @ (a.T @ (values * sw))
        except np.linalg.LinAlgError:
            ata_inv = np.linalg.pinv(ata)
            coef = ata_inv @ (a.T @ (values * sw))
        # complex amplitude Z = c - i s and its linear variation of the fundamental
        c = coef[3:9]
        z0 = c[0] - 1j * c[3]
        zx = c[1] - 1j * c[4]
        zy = c[2] - 1j * c[5]
        if it == _REFINE_ITER - 1 or abs(z0) == 0:
            break
        step = np.array([np.imag(zx / z0), np.imag(zy / z0)]) / (2 * np.pi * scale)
        dk = dk + step
        if np.hypot(*step) < 1e-6:
            # converged: one more pass for the final coefficients is not needed
            break
    resid = values * sw - a @ coef
    dof = max(1, len(values) - a.shape[1])
    sigma2 = float(resid @ resid) / dof
    amp, err = {}, {}
    for i, n in enumerate(measured):
        base = 3 + 6 * i
        cc, ss = coef[base], coef[base + 3]
        amp[n] = float(math.hypot(cc, ss))
        # variance of the amplitude: along the direction of (c, s)
        g = np.zeros(a.shape[1])
        if amp[n] > 0:
            g[base], g[base + 3] = cc / amp[n], ss / amp[n]
        else:
            g[base] = 1.0
        err[n] = float(math.sqrt(max(0.0, sigma2 * g @ ata_inv @ g)))
    return _Fit(amp, err, float(coef[0]), k0 + dk, aliased)


def _periods_across(k: np.ndarray, corners_px: np.ndarray) -> float:
    """Grating periods across the window (extent of its corners along k times |k|)."""
    proj = corners_px @ k
    return float(proj.max() - proj.min())


def _orientation(k: np.ndarray) -> float:
    """Direction of a frequency vector in [0, 180) degrees (a grating has no sign)."""
    o = float(np.degrees(np.arctan2(k[1], k[0])) % 180.0)
    return 0.0 if o >= 180.0 - 1e-9 else o


def _chart_modulation(patch, n: int) -> float:
    base = patch.amplitude / patch.mean
    if patch.profile == "square":
        return base * 4.0 / (math.pi * n)
    return base


# ---------------------------------------------------------------- public

def measure_stripes(
    image: Any,
    layout: Any,
    registration_or_homography: Any,
    *,
    channels: Sequence[str] | None = None,
    centre_xy: tuple[float, float] | None = None,
    clip_level: float = CLIP_LEVEL,
    max_harmonic: int = 9,
) -> StripeResult:
    """Measure the MTF on every grating patch of a stripes (or combo) chart photo.

    Parameters
    ----------
    image : LinearImage or ndarray
        The photo: linear data, (H, W) or (H, W, C), 0..1 (``calib.load_linear``).
    layout : targets.Layout
        The chart the photo shows (its ``stripes`` are measured).
    registration_or_homography : (3, 3) array or registration
        Chart millimetres -> photo pixels: a homography (e.g.
        ``targets.find_markers(img, layout).homography()``) or a registration object
        with a ``chart_to_image``-style method (including distortion).
    channels : sequence of str, optional
        Names of the image channels to measure (default: all; names ``R, G, B`` for
        three channels, ``Y`` for one, or the LinearImage's own names). Give a subset of
        the LinearImage's names to measure only those.
    centre_xy : (float, float), optional
        Optical centre for sagittal/tangential (default: the frame centre).
    clip_level : float
        Values at or above this count as clipped highlights (``LinearImage.saturated``
        counts too).
    max_harmonic : int
        Highest square-wave harmonic measured (odd harmonics only, below Nyquist).

    Returns
    -------
    StripeResult
        Per patch: the local frequency, direction, flags and one MTFRecord per channel
        (method ``"stripes"``; ``freq_cpp`` holds the fundamental and, for square waves,
        its measurable harmonics). Problems are flagged per patch and record:
        ``outside`` (no measurement), ``partly_outside``, ``clipped``, ``few_periods``,
        ``above_nyquist`` (fundamental aliased; no value), ``aliased_harmonic``, ``noisy``.

    Raises
    ------
    CalibError
        The image is not 2-D/3-D, the layout holds no stripe patches, a channel name is
        unknown, or the registration is not usable.

    Examples
    --------
    >>> h = targets.find_markers(img, layout).homography()          # doctest: +SKIP
    >>> res = measure_stripes(img, layout, h)                       # doctest: +SKIP
    >>> [(r.freq_cpp[0], r.mtf[0]) for r in res.clean_records()]    # doctest: +SKIP
    """
    data, names, saturated = _image_planes(image)
    if channels is not None:
        unknown = [c for c in channels if c not in names]
        if unknown:
            raise CalibError(f"channel {unknown[0]!r} is not in the image (it has {', '.join(names)}); "
                             "choose one of those")
        picks = [names.index(c) for c in channels]
    else:
        picks = list(range(len(names)))
    stripes = tuple(getattr(layout, "stripes", ()) or ())
    if not stripes:
        raise CalibError("the chart layout holds no stripe patches; use a 'stripes' or 'combo' chart")
    geo = _Geometry(registration_or_homography)
    h, w = data.shape[:2]
    centre = centre_xy if centre_xy is not None else ((w - 1) / 2.0, (h - 1) / 2.0)
    out = [
        _measure_patch(i, p, data, saturated, names, picks, geo, centre, clip_level, max_harmonic)
        for i, p in enumerate(stripes)
    ]
    return StripeResult(tuple(out), tuple(names[c] for c in picks), (w, h), (float(centre[0]), float(centre[1])))


def _image_planes(image: Any) -> tuple[np.ndarray, tuple[str, ...], np.ndarray | None]:
    data = getattr(image, "data", image)
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] < 1:
        raise CalibError(f"the image has shape {np.shape(data)}; expected (H, W) or (H, W, C) linear data")
    names = tuple(getattr(image, "channels", ()) or ())
    if len(names) != arr.shape[2]:
        names = _DEFAULT_CHANNELS.get(arr.shape[2], tuple(f"C{i}" for i in range(arr.shape[2])))
    if "CFA" in names:
        raise CalibError("the image is an undemosaiced Bayer mosaic; load it demosaiced (load_linear) "
                         "to measure stripes per colour")
    sat = getattr(image, "saturated", None)
    if sat is not None:
        sat = np.asarray(sat, bool)
        if sat.ndim == 2:
            sat = sat[..., None]
        if sat.shape != arr.shape:
            sat = None
    return arr, names, sat


def _measure_patch(index, patch, data, saturated, names, picks, geo: _Geometry, centre,
                   clip_level, max_harmonic) -> StripePatchResult:
    h, w = data.shape[:2]
    cu, cv = patch.centre_mm
    theta = math.radians(patch.orientation_deg)
    kc = patch.frequency_cpmm * np.array([math.cos(theta), math.sin(theta)])  # cycles/mm
    c_px, jac = geo.local_affine((cu, cv))
    # phase = kc . (uv - c_uv); d phase / d px = kc^T J^-1
    k0 = kc @ np.linalg.inv(jac)
    f0 = float(np.hypot(*k0))

    def result(flags, records=(), periods=0.0, k=k0):
        f = float(np.hypot(*k))
        o = _orientation(k)
        return StripePatchResult(index, (float(c_px[0]), float(c_px[1])), float(patch.frequency_cpmm),
                                 patch.profile, f, o, field_direction(float(c_px[0]), float(c_px[1]), o,
                                                                      centre_xy=centre),
                                 float(periods), tuple(sorted(set(flags))), tuple(records))

    # analysed window: the patch inset on every side, in chart mm
    du, dv = patch.x1_mm - patch.x0_mm, patch.y1_mm - patch.y0_mm
    u0, u1 = patch.x0_mm + _INSET * du, patch.x1_mm - _INSET * du
    v0, v1 = patch.y0_mm + _INSET * dv, patch.y1_mm - _INSET * dv
    corners = geo.to_px(np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]))
    full_periods = _periods_across(k0, corners)
    xa, ya = np.floor(corners.min(0)).astype(int)
    xb, yb = np.ceil(corners.max(0)).astype(int)
    flags: list[str] = []
    if xa < 0 or ya < 0 or xb > w - 1 or yb > h - 1:
        flags.append(FLAG_PARTLY_OUTSIDE)
    xa, ya = max(xa, 0), max(ya, 0)
    xb, yb = min(xb, w - 1), min(yb, h - 1)
    if xb - xa < 4 or yb - ya < 4:
        return result([FLAG_OUTSIDE], periods=0.0)
    gx, gy = np.meshgrid(np.arange(xa, xb + 1, dtype=np.float64), np.arange(ya, yb + 1, dtype=np.float64))
    pix = np.column_stack([gx.ravel(), gy.ravel()])
    uv = geo.px_to_uv(pix, (cu, cv))
    weight = _tukey01((uv[:, 0] - u0) / (u1 - u0)) * _tukey01((uv[:, 1] - v0) / (v1 - v0))
    inside = weight > 0
    if inside.sum() < 16:
        return result([FLAG_OUTSIDE], periods=0.0)
    pix, uv, weight = pix[inside], uv[inside], weight[inside]
    phase = (uv - (cu, cv)) @ kc
    dxy = pix - c_px
    in_frame = _periods_across(k0, pix) if FLAG_PARTLY_OUTSIDE in flags else full_periods
    if in_frame < MIN_PERIODS:
        flags.append(FLAG_FEW_PERIODS)
    if np.any(np.abs(k0) >= _NYQUIST):
        flags.append(FLAG_ABOVE_NYQUIST)
        return result(flags, periods=in_frame)

    odd = patch.profile == "square"
    harmonics = list(range(1, max_harmonic + 1, 2)) if odd else [1]
    measured = [1] + [n for n in harmonics[1:] if np.all(np.abs(n * k0) < _MAX_HARMONIC_CPP)]
    nuisance = []
    if odd:
        n = measured[-1] + 2
        while n * f0 <= _MAX_NUISANCE_CPP and n <= 99:
            nuisance.append(n)
            n += 2
    # two frequencies closer than about one period over the window are not separable
    extent = max(1.0, float(np.ptp(pix @ (k0 / max(f0, 1e-12)))))
    resolution = 1.0 / extent

    records = []
    patch_flags = set(flags)
    iy = pix[:, 1].astype(int)
    ix = pix[:, 0].astype(int)
    for c in picks:
        vals = data[iy, ix, c].astype(np.float64)
        rflags = set(flags)
        rflags_patch: set[str] = set()
        if np.any(vals >= clip_level) or (saturated is not None and np.any(saturated[iy, ix, c])):
            rflags.add(FLAG_CLIPPED)
        fit = _fit_patch(vals, dxy, phase, weight, k0, measured, nuisance, resolution)
        if fit.mean <= 0:
            rflags.add(FLAG_NOISY)
            mean = float("nan")
        else:
            mean = fit.mean
        freqs, mtf = [], []
        for n in measured:
            if n > 1 and n in fit.aliased:
                # an alias of a higher harmonic sits on this one: leave it out, say so
                rflags_patch.add(FLAG_HARMONIC_DROPPED)
                continue
            m_chart = _chart_modulation(patch, n)
            freqs.append(n * float(np.hypot(*fit.k_cpp)))
            mtf.append(fit.amplitude[n] / mean / m_chart)
            if fit.stderr[n] / mean / m_chart > MAX_STDERR:
                rflags.add(FLAG_NOISY)
        if 1 in fit.aliased:
            rflags.add(FLAG_ALIASED_HARMONIC)
        kf = fit.k_cpp
        o = _orientation(kf)
        records.append(MTFRecord(
            channel=names[c], x_px=float(c_px[0]), y_px=float(c_px[1]), orientation_deg=o,
            direction=field_direction(float(c_px[0]), float(c_px[1]), o, centre_xy=centre),
            method="stripes", freq_cpp=np.asarray(freqs, np.float64), mtf=np.asarray(mtf, np.float64),
            flags=tuple(sorted(rflags)),
        ))
        patch_flags |= rflags | rflags_patch
        k_last = kf
    return result(patch_flags, records, periods=in_frame, k=k_last)
