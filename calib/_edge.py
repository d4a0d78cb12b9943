"""Slanted-edge e-SFR (ISO 12233 style): the MTF of one edge, per channel.

The steps follow the standard method (edge fit from the row-wise derivative
centroids, an oversampled edge spread function, its derivative, a window and an
FFT), with three choices of our own that keep the result unbiased to about 1 %:

* samples are projected onto the edge *normal*, so frequencies come out in cycles
  per pixel along the normal directly (no separate angle correction);
* the attenuation of the binning is computed from where the samples actually fall
  inside their bins (a sinc for evenly spread phases, nothing at a critical angle
  where every sample lands on the same phase) and divided out, as is the exact
  transfer function of the finite difference (on gamma-encoded data read as they are,
  the reference-comparison mode, the binning is left in as ISO 12233 defines it);
* the analysed span around the edge adapts to the measured edge width, and a Tukey
  window leaves the central part of the LSF untouched;
* on linear data, the LSF beyond its core (1.2 rise distances) is low-passed, since
  a lens's LSF is smooth there and those samples carry mostly noise, and the expected
  noise power (propagated from the measured noise of the flat sides) is subtracted
  from the squared SFR, so the SFR's high-frequency end does not read a noise floor.

For a mosaic (CFA) image the edge is fitted on the mosaic after equalising the four
sites, and each colour's ESF is built from its own photosites only.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from ._errors import CalibError
from ._imageio import LUMA_WEIGHTS, LinearImage
from ._records import MTFRecord, mtf50

__all__ = ["EdgeMTF", "measure_edge", "render_slanted_edge", "true_edge_mtf"]

# Frequencies of the reported SFR table: 0 .. 1 cycle/pixel (twice Nyquist).
_FREQ_STEP_CPP = 0.01
_FREQ_MAX_CPP = 1.0

# Edge slants (degrees from the nearest axis) at which the 4x phase bins fill unevenly.
_CRITICAL_ANGLES_DEG = (0.0, np.degrees(np.arctan(0.25)), np.degrees(np.arctan(0.5)), 45.0)
_CRITICAL_TOL_DEG = 1.0
# Analysed span on each side of the edge, in 10-90 % rise distances (default).
_SPAN_PER_RISE = 4.0
_MIN_HALF_SPAN_PX = 6.0
# Sub-lattice level spread above which a grey image is taken for a Bayer mosaic.
_CFA_SPREAD_LIMIT = 0.03

FLAG_LOW_CONTRAST = "low_contrast"
FLAG_CLIPPED = "clipped"
FLAG_CRITICAL_ANGLE = "critical_angle"
FLAG_SHORT_EDGE = "short_edge"
FLAG_NOISY = "noisy"


def _tukey(n: int, alpha: float = 0.5) -> np.ndarray:
    """Tukey window: flat over the middle (1 - alpha) of the span, cosine tapers outside."""
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    edge = alpha / 2
    lo, hi = x < edge, x > 1 - edge
    w[lo] = 0.5 * (1 + np.cos(np.pi * (x[lo] / edge - 1)))
    w[hi] = 0.5 * (1 + np.cos(np.pi * ((x[hi] - 1) / edge + 1)))
    return w


_WINDOWS: dict[str, Callable[[int], np.ndarray]] = {
    "tukey": _tukey,
    "hamming": np.hamming,
    "none": np.ones,
}


@dataclass(frozen=True, eq=False)
class EdgeMTF:
    """The MTF of one slanted edge, per channel.

    Attributes
    ----------
    channels : tuple of str
        Measured channels (for RGB: ``R``, ``G``, ``B`` and the luminance ``Y``).
    freq_cpp : ndarray, shape (F,)
        Frequencies along the edge normal, cycles/pixel, 0 to 1 in steps of 0.01.
    mtf : ndarray, shape (C, F)
        SFR per channel (1 at zero frequency).
    mtf50_cpp : dict
        Frequency where each channel's SFR first falls to 0.5; NaN if it never does.
    mtf_at_half_nyquist : dict
        SFR at 0.25 cycles/pixel per channel.
    angle_deg : float
        Slant of the edge from the nearest image axis (signed), degrees.
    normal_deg : float
        Direction of the edge normal (the measured frequency direction), degrees,
        0 = along +x, 90 = along +y (down).
    edge_xy_px : tuple of float
        Centre of the fitted edge in image pixels (origin at the top-left pixel centre).
    edge_length_px : float
        Length of the fitted edge inside the ROI.
    contrast : dict
        Step height per channel (bright minus dark level, 0..1 units).
    edge_offset_px : dict
        Shift of each channel's edge along the normal relative to the common fit
        (lateral colour shows here).
    flags : dict
        Problems per channel: ``low_contrast``, ``clipped``, ``critical_angle``,
        ``short_edge``, ``noisy``; empty tuples when clean.
    roi : tuple of int
        (x, y, w, h) analysed.
    linear : bool
        Whether the data were linear (False for gamma-encoded files read as they are).
    """

    channels: tuple[str, ...]
    freq_cpp: np.ndarray
    mtf: np.ndarray
    mtf50_cpp: dict[str, float]
    mtf_at_half_nyquist: dict[str, float]
    angle_deg: float
    normal_deg: float
    edge_xy_px: tuple[float, float]
    edge_length_px: float
    contrast: dict[str, float]
    edge_offset_px: dict[str, float]
    flags: dict[str, tuple[str, ...]]
    roi: tuple[int, int, int, int]
    linear: bool = True
    method: str = field(default="edge")

    def mtf_of(self, channel: str) -> np.ndarray:
        """SFR of one channel on ``freq_cpp``."""
        return self.mtf[self.channels.index(channel)]

    def all_flags(self) -> tuple[str, ...]:
        """Every flag raised on any channel, sorted."""
        return tuple(sorted({f for fl in self.flags.values() for f in fl}))

    def to_records(self, *, direction: str = "none") -> list[MTFRecord]:
        """One :class:`calib.MTFRecord` per channel (method ``"edge"``) for the database."""
        return [
            MTFRecord(
                channel=ch,
                x_px=self.edge_xy_px[0],
                y_px=self.edge_xy_px[1],
                orientation_deg=self.normal_deg,
                direction=direction,
                method="edge",
                freq_cpp=self.freq_cpp.copy(),
                mtf=self.mtf[i].copy(),
                flags=self.flags.get(ch, ()),
            )
            for i, ch in enumerate(self.channels)
        ]


# ---------------------------------------------------------------- synthetic truth
def _box2_gauss_esf(d: np.ndarray, sigma: float, a: float, b: float) -> np.ndarray:
    """Gaussian-blurred step averaged over a pixel whose projection is box(a) * box(b)."""

    def g2(x):  # second antiderivative of the Gaussian CDF, scaled to pixel units
        u = x / sigma
        return sigma**2 * (0.5 * (u * u + 1) * ndtr(u) + 0.5 * u * np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi))

    def g1(x):
        u = x / sigma
        return sigma * (u * ndtr(u) + np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi))

    if b < 1e-3:
        return (g1(d + a / 2) - g1(d - a / 2)) / a
    return (g2(d + (a + b) / 2) - g2(d + (a - b) / 2) - g2(d - (a - b) / 2) + g2(d - (a + b) / 2)) / (a * b)


def render_slanted_edge(
    shape: tuple[int, int],
    angle_deg: float,
    sigma_px: float,
    *,
    dark: float = 0.2,
    bright: float = 0.8,
    centre_xy: tuple[float, float] | None = None,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """An edge image with a known MTF: Gaussian PSF, 100 % fill square pixels, exact.

    The edge is ``angle_deg`` from vertical (dark on the left for small angles);
    pixel values integrate the blurred step over each pixel in closed form, so the
    true MTF is :func:`true_edge_mtf`. ``noise`` is the Gaussian noise sigma at white
    (Poisson-like: it scales with the square root of the signal).
    """
    h, w = shape
    cx, cy = centre_xy if centre_xy is not None else ((w - 1) / 2, (h - 1) / 2)
    t = np.radians(angle_deg)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    d = (x - cx) * np.cos(t) - (y - cy) * np.sin(t)
    img = dark + (bright - dark) * _box2_gauss_esf(d, sigma_px, abs(np.cos(t)), abs(np.sin(t)))
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng()
        img = img + rng.standard_normal(img.shape) * noise * np.sqrt(np.clip(img, 0, None))
    return img.astype(np.float32)


def true_edge_mtf(freq_cpp: np.ndarray, angle_deg: float, sigma_px: float) -> np.ndarray:
    """Exact MTF along the normal of an edge from :func:`render_slanted_edge`."""
    f = np.asarray(freq_cpp, dtype=np.float64)
    t = np.radians(angle_deg)
    return np.exp(-2 * (np.pi * sigma_px * f) ** 2) * np.sinc(f * np.cos(t)) * np.sinc(f * np.sin(t))


# ---------------------------------------------------------------- the measurement
def _row_centroids(img: np.ndarray, centre: np.ndarray | None, half: float) -> np.ndarray:
    """Centroid (x, pixels) of the windowed row derivative of each row of ``img``."""
    h, w = img.shape
    deriv = np.diff(img, axis=1)  # sample j sits at x = j + 0.5
    xs = np.arange(w - 1) + 0.5
    if centre is None:
        centre = np.full(h, (w - 1) / 2)
        half = w / 2
    # Raised-cosine (Hann-like) window around the current estimate suppresses noise far out.
    u = np.clip((xs[None, :] - centre[:, None]) / half, -1, 1)
    win = 0.5 * (1 + np.cos(np.pi * u))
    # Remove each row's derivative offset (illumination gradient) before the centroid.
    dw = deriv * win
    tot = dw.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (dw * xs[None, :]).sum(axis=1) / tot
    # Rows the edge does not cross (it leaves the ROI sideways) carry no step: drop them.
    strong = tot > 0.5 * np.nanpercentile(tot, 90)
    c[~strong] = np.nan
    return c


def _fit_edge(img: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial x_edge(y) of a near-vertical edge; returns (coefficients, row centroids)."""
    h, w = img.shape
    ys = np.arange(h, dtype=np.float64)
    c = _row_centroids(img, None, w / 2)
    ok = np.isfinite(c)
    if ok.sum() < max(order + 2, 5):
        raise CalibError("no edge found in the ROI; give a region around one straight slanted edge")
    coef = np.polyfit(ys[ok], c[ok], 1)
    for half in (max(w / 4, 8.0), max(w / 8, 6.0), max(w / 8, 6.0)):
        pred = np.polyval(coef, ys)
        c = _row_centroids(img, pred, half)
        # A window cut by the ROI border biases the centroid: use rows where it fits.
        margin = min(half, max(3.0, (w - 1) / 2 - 4))
        ok = np.isfinite(c) & (pred > margin) & (pred < w - 1 - margin)
        if ok.sum() < max(order + 2, 5):
            ok = np.isfinite(c) & (c > 0.5) & (c < w - 1.5)
        if ok.sum() < max(order + 2, 5):
            raise CalibError("no edge found in the ROI; give a region around one straight slanted edge")
        coef = np.polyfit(ys[ok], c[ok], order)
        # Drop rows whose centroid is far off the fit (dust, noise) and refit once.
        res = c[ok] - np.polyval(coef, ys[ok])
        mad = np.median(np.abs(res)) * 1.4826 + 1e-6
        keep = np.abs(res) < 4 * mad
        if keep.sum() >= max(order + 2, 5) and not keep.all():
            coef = np.polyfit(ys[ok][keep], c[ok][keep], order)
    return coef, c


@dataclass(frozen=True)
class _Geometry:
    coef: np.ndarray          # x_edge(y) polynomial in the working (vertical) frame
    transposed: bool
    sign: float               # +1 if the step rises with x in the working frame
    dist: np.ndarray          # signed distance of every working-frame pixel to the edge (px)
    n_rows: int
    slope: float


def _geometry(work: np.ndarray, order: int, transposed: bool) -> _Geometry:
    h, w = work.shape
    left = np.median(work[:, : max(2, w // 8)])
    right = np.median(work[:, -max(2, w // 8):])
    sign = 1.0 if right >= left else -1.0
    coef, _ = _fit_edge(work * sign, order)
    ys = np.arange(h, dtype=np.float64)
    xe = np.polyval(coef, ys)
    slope_local = np.polyval(np.polyder(coef), ys) if order >= 1 else np.zeros(h)
    cosang = 1.0 / np.sqrt(1.0 + slope_local**2)
    xs = np.arange(w, dtype=np.float64)
    dist = (xs[None, :] - xe[:, None]) * cosang[:, None]
    mid = np.polyval(np.polyder(coef), (h - 1) / 2) if order >= 1 else 0.0
    return _Geometry(coef, transposed, sign, dist * sign, h, float(mid))


def _esf(values: np.ndarray, dist: np.ndarray, half_px: float, oversample: int):
    """ESF on a regular grid of 1/oversample px over [-half, half).

    Samples are averaged per bin; each bin's mean then sits at the mean position of its
    samples, not at the bin centre, and the ESF is resampled from those true positions
    onto the regular grid. This removes the first-order error of uneven phase filling
    (the samples of a bin crowding to one side), which otherwise shows as ripple in the
    SFR at some angles. Returns (esf, offsets of samples from their bin's mean position
    in px, counts, empty-bin mask).
    """
    step = 1.0 / oversample
    nb = int(round(2 * half_px * oversample))
    sel = np.abs(dist) < half_px
    d, v = dist[sel], values[sel]
    idx = np.clip(np.floor((d + half_px) / step).astype(np.int64), 0, nb - 1)
    counts = np.bincount(idx, minlength=nb).astype(np.float64)
    sums = np.bincount(idx, weights=v, minlength=nb)
    dsum = np.bincount(idx, weights=d, minlength=nb)
    empty = counts == 0
    centres = (np.arange(nb) + 0.5) * step - half_px
    if (~empty).sum() < 2:
        return np.zeros(nb), np.zeros(0), counts, empty
    mean_v = sums[~empty] / counts[~empty]
    mean_d = dsum[~empty] / counts[~empty]
    esf = np.interp(centres, mean_d, mean_v)
    dbar = np.zeros(nb)
    dbar[~empty] = mean_d
    return esf, d - dbar[idx], counts, empty


# Phase histogram bins for the binning transfer: a bin 1/256 of the phase range wide
# changes the transfer by less than 1e-5 up to 1 cycle/pixel.
_PHASE_BINS = 256


def _binning_transfer(phase: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """|mean exp(-2 pi i f phase)|: the attenuation of averaging samples at these offsets.

    The offsets are first gathered into a fine histogram (each bin represented by the
    mean offset of its samples), which turns a (frequencies x samples) exponential into
    a (frequencies x 256) one without a measurable change.
    """
    ph = phase[np.isfinite(phase)]
    if ph.size == 0:
        return np.ones_like(freq)
    lo, hi = float(ph.min()), float(ph.max())
    if hi - lo < 1e-12:
        return np.ones_like(freq)
    idx = np.minimum(((ph - lo) * (_PHASE_BINS / (hi - lo))).astype(np.int64), _PHASE_BINS - 1)
    cnt = np.bincount(idx, minlength=_PHASE_BINS)
    psum = np.bincount(idx, weights=ph, minlength=_PHASE_BINS)
    nz = cnt > 0
    at = psum[nz] / cnt[nz]
    wts = cnt[nz] / ph.size
    arg = (2 * np.pi) * np.outer(freq, at)
    return np.hypot(np.cos(arg) @ wts, np.sin(arg) @ wts)


# LSF tails: Gaussian smoothing sigma (px) applied beyond the core, and the width (px)
# of the cosine transition from the core to the smoothed tails.
_TAIL_SMOOTH_PX = 1.0
_TAIL_TRANSITION_PX = 1.0
# Half-width of the LSF core in 10-90 % rise distances of the ESF (a Gaussian LSF is
# below 1e-5 of its peak there).
_CORE_PER_RISE = 1.2
# Frequencies at which the noise power is computed exactly (0 to the table's end).
_NOISE_FREQS = 26


def _smooth_tails(lsf: np.ndarray, pos: np.ndarray, core_px: float, step: float) -> np.ndarray:
    """Keep the LSF core as measured and low-pass its tails.

    Far from the edge the LSF of a lens is small and smooth (flare, a slow roll-off),
    so its content there lies at low frequencies, while the noise of those samples
    spreads evenly over all frequencies and dominates the SFR's high-frequency end.
    A Gaussian of _TAIL_SMOOTH_PX (transfer 0.82 at 0.1 c/p, 0.29 at 0.25 c/p) keeps
    the tails' low-frequency part and removes most of their noise above. Works on
    1-D vectors and, along axis 0, on matrices (the noise propagation uses that).
    """
    from scipy.ndimage import gaussian_filter1d

    t = np.clip((np.abs(pos) - core_px) / _TAIL_TRANSITION_PX, 0.0, 1.0)
    w_tail = 0.5 * (1 - np.cos(np.pi * t))
    if lsf.ndim == 2:
        w_tail = w_tail[:, None]
    tail = lsf * w_tail
    return lsf * (1 - w_tail) + gaussian_filter1d(tail, _TAIL_SMOOTH_PX / step, axis=0, mode="constant")


def _noise_power(
    values: np.ndarray,
    dist: np.ndarray,
    esf: np.ndarray,
    counts: np.ndarray,
    half_px: float,
    core_px: float,
    step: float,
    operator: Callable[[np.ndarray], np.ndarray],
    freq_out: np.ndarray,
) -> np.ndarray:
    """Expected |DFT|^2 of the noise in the processed LSF at ``freq_out`` (not normalised).

    The noise variance per sample is taken as linear in the signal level (read noise
    plus shot noise), fitted to the residuals about the ESF on the two flat sides
    beyond the LSF core, where the ESF model is exact; each bin's mean then has that
    variance over its count. The processing after binning (difference, window, tail
    smoothing) is linear, so the variance propagates exactly through its matrix.
    Returns zeros when either side has too few samples to tell.
    """
    nb = len(esf)
    centres = (np.arange(nb) + 0.5) * step - half_px
    model = np.interp(dist, centres, esf)
    resid = values - model
    var_lv = []
    for side in (dist < -core_px, dist > core_px):
        side &= np.abs(dist) < half_px
        if side.sum() < 20:
            return np.zeros(len(freq_out))
        var_lv.append((float(np.mean(model[side])), float(np.var(resid[side]))))
    (l0, v0), (l1, v1) = var_lv
    slope = (v1 - v0) / (l1 - l0) if abs(l1 - l0) > 1e-9 else 0.0
    var_sample = np.clip(v0 + slope * (esf - l0), min(v0, v1), max(v0, v1))
    var_bin = var_sample / np.maximum(counts, 1.0)
    # Response of the processed LSF to a unit change of each ESF bin, at a coarse set of
    # frequencies (the noise power is smooth in f: it follows the difference filter and
    # the window's energy) and interpolated onto freq_out.
    resp = operator(np.eye(nb))  # (n_lsf, nb)
    x = (np.arange(resp.shape[0]) + 1.0) * step
    coarse = np.linspace(0.0, float(freq_out.max()), _NOISE_FREQS)
    arg = (2 * np.pi) * np.outer(coarse, x)
    # Real products: numpy's complex-by-real matmul skips BLAS and is ~40x slower.
    power = (np.cos(arg) @ resp) ** 2 + (np.sin(arg) @ resp) ** 2  # (F, nb)
    return np.interp(freq_out, coarse, power @ var_bin)


def _sfr_one(
    values: np.ndarray,
    dist: np.ndarray,
    half_px: float,
    oversample: int,
    window: str,
    freq_out: np.ndarray,
    core_px: float | None = None,
    bin_correction: bool = True,
) -> tuple[np.ndarray, float, float, float, int]:
    """SFR on ``freq_out`` from samples ``values`` at normal distances ``dist``.

    ``core_px``: half-width of the LSF core kept as measured; beyond it the LSF is
    low-passed (see :func:`_smooth_tails`). None keeps the whole LSF as measured.
    ``bin_correction``: divide out the attenuation of the phase binning (False: leave
    it in, as ISO 12233 does).

    Returns (sfr, step height, LSF centroid offset px, residual noise estimate, empty bins).
    """
    step = 1.0 / oversample
    esf, phase, counts, empty = _esf(values, dist, half_px, oversample)
    nb = len(esf)
    lsf = np.diff(esf)  # forward difference: transfer |sinc(f * step)|
    centres = (np.arange(nb - 1) + 1.0) * step - half_px
    # Centre the window on the LSF's centroid (the edge fit may sit a little off for
    # a channel with lateral colour).
    core = np.abs(centres) < max(3.0, half_px / 3)
    wsum = lsf[core].sum()
    offset = float((lsf[core] * centres[core]).sum() / wsum) if abs(wsum) > 0 else 0.0
    win_fn = _WINDOWS[window]
    # Symmetric window around the centroid: shift the window, not the data.
    pos = centres - offset
    wfull = np.interp(pos, np.linspace(-half_px, half_px, 4 * nb + 1), win_fn(4 * nb + 1), left=0.0, right=0.0)
    smooth = core_px is not None and core_px < half_px

    def operator(esf_like: np.ndarray) -> np.ndarray:
        """ESF bins -> processed LSF (difference, window, tail smoothing); linear."""
        lw = np.diff(esf_like, axis=0) * (wfull if esf_like.ndim == 1 else wfull[:, None])
        return _smooth_tails(lw, pos, core_px, step) if smooth else lw

    lsf_w = operator(esf)
    n_fft = max(4096, 1 << int(np.ceil(np.log2(len(lsf_w) * 4))))
    spec = np.abs(np.fft.rfft(lsf_w, n_fft))
    f = np.fft.rfftfreq(n_fft, d=step)
    if spec[0] <= 0:
        return np.full(len(freq_out), np.nan), 0.0, offset, np.inf, int(empty.sum())
    # The finite difference and the binning are filters we applied: divide them out,
    # on the output grid only (both transfers are smooth on its 0.01 c/p scale).
    corr = np.abs(np.sinc(freq_out * step))
    if bin_correction:
        corr = corr * _binning_transfer(phase, freq_out)
    out = np.interp(freq_out, f, spec / spec[0]) / np.clip(corr, 0.1, None)
    if smooth:
        # |signal + noise| is biased up by the noise where the signal is small (the
        # SFR's high-frequency end would read a noise floor, not the MTF): subtract the
        # expected noise power, computed from the measured noise, in the power domain.
        npow = _noise_power(values, dist, esf, counts, half_px, core_px, step, operator, freq_out)
        npow = npow / spec[0] ** 2 / np.clip(corr, 0.1, None) ** 2
        out = np.sqrt(np.clip(out**2 - npow, 0.0, None))
    contrast = float(np.mean(esf[-oversample * 2:]) - np.mean(esf[: oversample * 2]))
    # Noise: the spread of samples about the binned ESF far from the edge.
    far = np.abs(dist) > half_px * 0.6
    if far.sum() > 10:
        idx = np.clip(np.floor((dist[far] + half_px) / step).astype(int), 0, nb - 1)
        ok = np.abs(dist[far]) < half_px
        resid = values[far][ok] - esf[idx[ok]]
        noise = float(np.std(resid)) if resid.size > 4 else 0.0
    else:
        noise = 0.0
    return out.astype(np.float64), contrast, offset, noise, int(empty.sum())


def _parse_roi(roi, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    if roi is None:
        return 0, 0, w, h
    x, y, rw, rh = (int(round(v)) for v in roi)
    if rw < 8 or rh < 8 or x < 0 or y < 0 or x + rw > w or y + rh > h:
        raise CalibError(
            f"ROI {x},{y},{rw},{rh} does not fit in the {w}x{h} image (or is smaller than 8x8); "
            "give X,Y,W,H inside the image"
        )
    return x, y, rw, rh


def _cfa_sites(cfa: str, shape: tuple[int, int]) -> np.ndarray:
    """Per-pixel colour letter index (0=R, 1=G, 2=B) of a 2x2 CFA pattern."""
    letters = np.array(["RGB".index(ch) for ch in cfa]).reshape(2, 2)
    h, w = shape
    return np.tile(letters, ((h + 1) // 2, (w + 1) // 2))[:h, :w]


def cfa_suspected(gray: np.ndarray) -> float:
    """Relative spread of the 2x2 sub-lattice levels in the bright part of a grey image.

    A demosaiced or truly grey image gives about 0; an undemosaiced Bayer mosaic of a
    neutral target gives the ratio between its colour channels' sensitivities.
    """
    h, w = gray.shape
    g = gray[: h - h % 2, : w - w % 2]
    subs = [g[i::2, j::2] for i in (0, 1) for j in (0, 1)]
    # Each sub-lattice's own bright level (its 90th percentile): a mosaic's colours
    # differ in gain, so a common threshold would miss the dimmer sites.
    levels = np.asarray([np.percentile(sub, 90) for sub in subs])
    return float((levels.max() - levels.min()) / max(levels.max(), 1e-9))


def measure_edge(
    image: LinearImage | np.ndarray,
    *,
    roi: Sequence[int] | None = None,
    channel: str | Sequence[str] | None = None,
    oversample: int = 4,
    fit_order: int = 1,
    window: str = "tukey",
    half_width_px: float | None = None,
    cfa: str | None = None,
    bin_correction: bool | None = None,
) -> EdgeMTF:
    """Measure the SFR (MTF) of one slanted edge, per channel.

    Parameters
    ----------
    image : LinearImage or ndarray
        From :func:`calib.load_linear`, or an (H, W) / (H, W, C) float array (a 3-channel
        array is taken as RGB).
    roi : (x, y, w, h), optional
        Region holding exactly one straight edge, in pixels; the whole image by default.
        The edge is found inside it automatically.
    channel : str or sequence of str, optional
        Measure only this channel (``"R"``, ``"G"``, ``"B"``, ``"Y"`` = luminance), or
        these channels (the edge is fitted once for all of them).
        Default: every channel, plus luminance for RGB.
    oversample : int
        ESF bins per pixel (4 as in ISO 12233; 8 for very sharp edges).
    fit_order : int
        Order of the polynomial edge fit (1 = straight; up to 5 for distorted edges).
    window : str
        LSF window: ``"tukey"`` (default), ``"hamming"`` (as sfrmat3) or ``"none"``.
    half_width_px : float, optional
        Span analysed on each side of the edge. By default it adapts to the edge width
        (4 10-90 % rise distances, at least 6 px: least noise) for linear data, and is the
        whole ROI for gamma-encoded data kept as they are (``linear=False``), which is
        how the reference tools (sfrmat, MTF Mapper) work on such files.
    cfa : str, optional
        The image is an undemosaiced mosaic with this 2x2 pattern (``"RGGB"`` ...):
        measure each colour from its own photosites. Taken from the LinearImage when it
        says so. A grey image that looks like a mosaic without ``cfa`` is refused.
    bin_correction : bool, optional
        Divide out the attenuation of averaging the samples in 1/oversample px bins
        (0.8 % at 0.28 c/p for 4x bins). ISO 12233's e-SFR leaves it in. Default: on for
        linear data (a truer MTF), off for gamma-encoded data kept as they are, which
        is the reference-comparison mode: there the result follows the standard's
        definition, like the reference tools (sfrmat, MTF Mapper).

    Returns
    -------
    EdgeMTF

    Raises
    ------
    CalibError
        ROI outside the image, no edge found, unknown channel or window, or a grey
        image that looks like an undemosaiced Bayer mosaic.

    Examples
    --------
    >>> res = measure_edge(load_linear("edge.tif"), roi=(100, 200, 120, 160))  # doctest: +SKIP
    >>> res.mtf50_cpp["Y"]                                                      # doctest: +SKIP
    0.31
    """
    if window not in _WINDOWS:
        raise CalibError(f"unknown window {window!r}; choose one of {', '.join(_WINDOWS)}")
    if not 1 <= fit_order <= 5:
        raise CalibError(f"fit order {fit_order} is outside 1..5; use 1 for straight edges")
    if oversample < 2:
        raise CalibError(f"oversample {oversample} is too low; use 4 (ISO 12233) or more")
    linear, name, saturated = True, "the image", None
    wanted = None if channel is None else (channel,) if isinstance(channel, str) else tuple(dict.fromkeys(channel))
    if wanted is not None and not wanted:
        raise CalibError("no channel asked for; name at least one (R, G, B or Y) or none for all")
    if isinstance(image, LinearImage):
        data, chans = image.data, image.channels
        linear, saturated = image.linear, image.saturated
        name = str(image.path) if image.path else name
        cfa = cfa or image.cfa
    else:
        data = np.asarray(image, dtype=np.float32)
        if data.ndim == 2:
            data = data[:, :, None]
        chans = ("R", "G", "B") if data.shape[2] == 3 else ("Y",) if data.shape[2] == 1 else tuple(
            f"C{i}" for i in range(data.shape[2])
        )
    x0, y0, rw, rh = _parse_roi(roi, data.shape)
    crop = data[y0 : y0 + rh, x0 : x0 + rw].astype(np.float64)
    sat = saturated[y0 : y0 + rh, x0 : x0 + rw] if saturated is not None else None

    # Which planes to measure, each as (name, values (h, w), sample mask or None).
    planes: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    if cfa is not None:
        cfa = cfa.upper()
        if cfa not in ("RGGB", "BGGR", "GRBG", "GBRG") or crop.shape[2] != 1:
            raise CalibError(f"CFA pattern {cfa!r} needs a one-channel mosaic and one of RGGB, BGGR, GRBG, GBRG")
        mosaic = crop[:, :, 0]
        # CFA sites relative to the full image origin, so an odd ROI offset stays right.
        sites = _cfa_sites(cfa, (y0 + rh, x0 + rw))[y0:, x0:]
        geo_img = np.empty_like(mosaic)
        for k in range(3):
            m = sites == k
            lo, hi = np.percentile(mosaic[m], [2, 98])
            geo_img[m] = (mosaic[m] - lo) / max(hi - lo, 1e-9)
        bad = [c for c in wanted or () if c not in "RGB" or len(c) != 1]
        if bad:
            raise CalibError(f"{name} is a {cfa} mosaic: choose channel R, G or B, not {bad[0]!r}")
        for k, ch in enumerate("RGB"):
            if wanted is None or ch in wanted:
                planes.append((ch, mosaic, sites == k))
    else:
        names = list(chans)
        if chans == ("R", "G", "B"):
            names.append("Y")
        bad = [c for c in wanted or () if c not in names]
        if bad:
            raise CalibError(f"{name} has no channel {bad[0]!r}; choose one of {', '.join(names)}")
        for ch in names if wanted is None else wanted:
            if ch == "Y" and "Y" not in chans:
                vals = np.tensordot(crop, np.asarray(LUMA_WEIGHTS), axes=([2], [0]))
            else:
                vals = crop[:, :, chans.index(ch)]
            planes.append((ch, vals, None))
        geo_img = (
            np.tensordot(crop, np.asarray(LUMA_WEIGHTS), axes=([2], [0])) if chans == ("R", "G", "B") else crop[:, :, 0]
        )
        if len(chans) == 1 and chans[0] in ("Y", "CFA"):
            spread = cfa_suspected(geo_img)
            if chans[0] == "CFA" or spread > _CFA_SPREAD_LIMIT:
                raise CalibError(
                    f"{name} looks like an undemosaiced Bayer mosaic (its 2x2 sub-lattices differ by "
                    f"{100 * spread:.0f}% in the bright area), so one SFR would mix colours; measure it "
                    "per CFA channel by giving the pattern (--cfa RGGB, BGGR, GRBG or GBRG)"
                )

    # Work on a near-vertical edge: transpose when the edge runs across the rows.
    gy, gx = np.gradient(geo_img)
    transposed = bool(np.abs(gy).sum() > np.abs(gx).sum())
    T = (lambda a: a.T) if transposed else (lambda a: a)
    work = T(geo_img)
    geo = _geometry(work, fit_order, transposed)
    h, w = work.shape
    angle = float(np.degrees(np.arctan(geo.slope)))
    length = h * np.sqrt(1 + geo.slope**2)

    # The span analysed on each side: several 10-90 % rise distances of the luminance
    # ESF, never less than _MIN_HALF_SPAN_PX (which keeps moderate flare tails in).
    avail = float(min(np.percentile(np.abs(geo.dist), 99.5), max(w, 8) / 2 + 2))
    core = None
    if half_width_px is None and not linear:
        # Gamma-encoded data read as they are: the reference-comparison mode, where the
        # reference tools analyse the whole ROI; do the same.
        half = avail
    else:
        esf0, *_ = _esf(T(geo_img).ravel(), geo.dist.ravel(), min(avail, 24.0), oversample)
        lo, hi = np.percentile(esf0, [2, 98])
        c = (esf0 - lo) / max(hi - lo, 1e-12)
        rise = max((np.argmax(c > 0.9) - np.argmax(c > 0.1)) / oversample, 0.5)
        if half_width_px is None:
            half = float(np.clip(_SPAN_PER_RISE * rise, min(_MIN_HALF_SPAN_PX, avail), avail))
        else:
            half = float(half_width_px)
        core = _CORE_PER_RISE * rise + _TAIL_TRANSITION_PX
    # Stay clear of where the line leaves the working region in every row.
    freq = np.round(np.arange(0.0, _FREQ_MAX_CPP + 1e-9, _FREQ_STEP_CPP), 10)

    rows_needed = oversample / max(abs(geo.slope), 1e-6)
    base_flags: list[str] = []
    if min(abs(abs(angle) - a) for a in _CRITICAL_ANGLES_DEG) < _CRITICAL_TOL_DEG:
        base_flags.append(FLAG_CRITICAL_ANGLE)
    if h < 20 or h < 2 * (1 / max(abs(geo.slope), 1e-6)):
        base_flags.append(FLAG_SHORT_EDGE)
    del rows_needed

    names_out, curves, m50, mhalf, contrast, offsets, flags = [], [], {}, {}, {}, {}, {}
    dist_all = geo.dist
    for ch, vals, mask in planes:
        v = T(vals)
        m = None if mask is None else T(mask)
        d = dist_all if m is None else dist_all[m]
        vv = v.ravel() if m is None else v[m]
        dd = d.ravel()
        sfr, step_h, off, noise, n_empty = _sfr_one(vv, dd, half, oversample, window, freq, core,
                                                    linear if bin_correction is None else bin_correction)
        fl = list(base_flags)
        if abs(step_h) < 0.05 or (noise > 0 and abs(step_h) / noise < 10):
            fl.append(FLAG_LOW_CONTRAST)
        near = np.abs(dd) < half
        vnear = vv[near]
        plane_sat = False
        if sat is not None and ch in chans:
            plane_sat = bool(T(sat[:, :, chans.index(ch)]).ravel()[near.reshape(-1)].mean() > 0.002) if m is None else False
        top = vnear.max() if vnear.size else 0.0
        clipped_frac = float(np.mean(vnear >= top - 1e-6)) if top >= 0.999 else 0.0
        bottom_frac = float(np.mean(vnear <= 1e-6))
        if plane_sat or clipped_frac > 0.002 or bottom_frac > 0.02:
            fl.append(FLAG_CLIPPED)
        if n_empty > 0.1 * len(np.arange(0, 2 * half, 1 / oversample)):
            fl.append(FLAG_SHORT_EDGE) if FLAG_SHORT_EDGE not in fl else None
        names_out.append(ch)
        curves.append(sfr)
        m50[ch] = mtf50(freq, sfr)
        mhalf[ch] = float(np.interp(0.25, freq, sfr))
        contrast[ch] = abs(step_h)
        offsets[ch] = off
        flags[ch] = tuple(fl)

    # Centre of the edge in image coordinates.
    yc = (h - 1) / 2
    xc = float(np.polyval(geo.coef, yc))
    ex, ey = (yc, xc) if transposed else (xc, yc)
    # Normal direction in image coordinates (towards the bright side).
    nx, ny = geo.sign, -geo.sign * geo.slope
    if transposed:
        nx, ny = ny, nx
    normal = float(np.degrees(np.arctan2(ny, nx)))
    return EdgeMTF(
        channels=tuple(names_out),
        freq_cpp=freq,
        mtf=np.vstack(curves),
        mtf50_cpp=m50,
        mtf_at_half_nyquist=mhalf,
        angle_deg=angle,
        normal_deg=normal,
        edge_xy_px=(float(ex + x0), float(ey + y0)),
        edge_length_px=float(length),
        contrast=contrast,
        edge_offset_px=offsets,
        flags=flags,
        roi=(x0, y0, rw, rh),
        linear=linear,
    )
