"""From photos of a chart to a PSF map per colour channel (and into the PSF database).

Pipeline per focus setting: load linear data, check the shots come from one camera and
agree, average them, register the green channel to the chart (markers, dots, radial
distortion), then estimate one PSF per field node and channel from the dots around the
node (:mod:`calib._psf_dots`) or the noise pattern (:mod:`calib._psf_pattern`), centre
every channel of a node on green's centroid, fill nodes without data from their
neighbours (flagged) and measure the sensor noise from flat areas.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import shift as nd_shift

import targets

from ._chart_mtf import measure_chart_mtf
from ._db import describe_key
from ._errors import CalibError
from ._imageio import LinearImage, load_linear
from ._lateral import fit_lateral_colour
from ._mtf_psf import psf_map_mtf
from ._psf_dots import estimate_psf_dots
from ._psfmap import FLAG_FILLED, FLAG_NOISY, FLAG_SATURATED, PSFMap, psf_centroids
from ._records import CalibrationKey, MTFRecord, NoiseModel, ShotMetadata
from ._register import Registration, measure_dot_centroids, register_chart

__all__ = [
    "AnalysisResult", "analyze_images", "analyze_session", "estimate_noise_model", "noise_from_darks",
    "noise_model_complete",
]


@dataclass(frozen=True)
class AnalysisResult:
    """What one analysis of one focus setting produced.

    Attributes
    ----------
    psf_map : PSFMap or None
        Per-channel PSF grid, green centroid on the centre sample, flags per node (None
        for a chart with neither dots nor a noise pattern: MTF only).
    registration : Registration
        Geometry and the distortion report.
    noise : NoiseModel or None
    metadata : ShotMetadata
        Of the (first) photo.
    n_images : int
        Photos averaged.
    method : str
        ``"dots"``, ``"noise"`` or ``"mtf"`` (an edges or stripes chart: no PSF map).
    notes : tuple of str
        Warnings worth showing (filled nodes, saturated dots ...).
    lateral_colour_px : ndarray (C, ny, nx, 2) or None
        Each channel's centroid offset (x, y) from green's at every node, pixels: a radial
        model (scale polynomial in the radius about the optical centre, plus a translation)
        fitted to every dot's centroid per channel; where fewer than 30 dots were measured,
        a plane through the node's nearest dots (NaN where those are too few; None for the
        noise chart). Red minus blue is the lateral colour.
    mtf : tuple of MTFRecord
        The chart's edge and grating MTFs (:func:`calib.measure_chart_mtf`; none for a
        chart without edges or gratings), flagged items included with their flags, then
        the PSF map's sagittal and tangential MTF at every node and channel (method
        ``"psf"``, :func:`calib.psf_map_mtf` about the optical centre), so that the
        database holds all three for the report and ``db export --mtf``.
    """

    psf_map: PSFMap | None
    registration: Registration
    noise: NoiseModel | None
    metadata: ShotMetadata
    n_images: int
    method: str
    notes: tuple[str, ...] = field(default=())
    lateral_colour_px: np.ndarray | None = None
    mtf: tuple[MTFRecord, ...] = ()

    @property
    def key(self) -> CalibrationKey:
        return CalibrationKey.from_metadata(self.metadata)


def _progress(msg: str, enabled: bool) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def _load(images: Sequence[str | os.PathLike | LinearImage]) -> list[LinearImage]:
    out = []
    for im in images:
        out.append(im if isinstance(im, LinearImage) else load_linear(im))
    return out


def _check_same_camera(imgs: list[LinearImage]) -> None:
    first = imgs[0]
    for im in imgs[1:]:
        a, b = first.metadata, im.metadata
        if (a.camera, a.serial) != (b.camera, b.serial) or im.data.shape != first.data.shape:
            raise CalibError(
                f"{im.path or 'a photo'} comes from another camera or format ({b.camera or 'unknown'} "
                f"{im.width}x{im.height}) than {first.path or 'the first photo'} ({a.camera or 'unknown'} "
                f"{first.width}x{first.height}); analyse each camera's photos in a separate run"
            )


def _average(imgs: list[LinearImage]) -> tuple[np.ndarray, np.ndarray]:
    """Mean data and union of saturated masks, after checking the shots agree."""
    if len(imgs) == 1:
        return imgs[0].data.astype(np.float32, copy=False), np.asarray(imgs[0].saturated)
    stack = [im.data.astype(np.float32) for im in imgs]
    ref = stack[0]
    scale = float(np.percentile(np.abs(ref), 99)) + 1e-6
    for im, d in zip(imgs[1:], stack[1:]):
        # Shots of one setting differ only by noise; a moved chart or changed light does not.
        diff = float(np.median(np.abs(d - ref))) / scale
        if diff > 0.05:
            raise CalibError(
                f"{im.path or 'a repeated shot'} does not agree with {imgs[0].path or 'the first shot'} "
                f"(median difference {100 * diff:.0f} % of the signal); the chart or the light moved "
                "between shots: reshoot or analyse them separately"
            )
    data = np.mean(stack, axis=0, dtype=np.float32) if len(stack) > 1 else ref
    sat = np.logical_or.reduce([im.saturated for im in imgs])
    return data, sat


def estimate_noise_model(
    data: np.ndarray, channels: Sequence[str], *, block: int = 8, repeat: np.ndarray | None = None
) -> NoiseModel:
    """Poisson-Gaussian noise from a chart photo: variance = read^2 + gain * mean per channel.

    Without ``repeat``, the noise of each ``block`` x ``block`` block is the variance left
    after a quadratic surface fit (shading and blur gradients removed); per brightness bin,
    a low quantile of those variances (corrected for its chi-square bias) picks the flat
    blocks, and a line through the bins, refitted without bins far above it (blocks on dot
    edges), gives read noise and gain. A dots chart needs only its black background and
    the white quiet zones of its markers (or large dot cores) for this.
    With ``repeat`` (a second shot of the same setting), pixel differences of the two shots
    hold no chart structure at all, so every pixel counts.

    Parameters
    ----------
    data : ndarray, shape (H, W, C)
        One linear shot, 0..1.
    channels : sequence of str
    block : int, keyword-only
        Block size in pixels.
    repeat : ndarray, shape (H, W, C), optional, keyword-only
        Another shot of the same scene and exposure.

    Returns
    -------
    NoiseModel
        ``gain`` is 0 in a channel where no brightness range was found to measure it;
        such a model is incomplete (see :func:`noise_model_complete`).
    """
    reads, gains = [], []
    for c in range(data.shape[2]):
        if repeat is not None:
            a, b = data[..., c].astype(np.float64), repeat[..., c].astype(np.float64)
            mean, var = _block_mean(0.5 * (a + b), block), _block_mean(0.5 * (a - b) ** 2, block)
            q_corr = 1.0  # block means of squared differences: no flat-block selection needed
            q = None
        else:
            mean, var, dof = _block_residual_var(data[..., c], block)
            q = 0.1
            q_corr = float(_chi2_ppf(q, dof) / dof)
        read2, gain = _fit_noise_line(mean, var, q, q_corr)
        reads.append(float(np.sqrt(max(read2, 0.0))))
        gains.append(float(max(gain, 0.0)))
    return NoiseModel(tuple(channels), np.asarray(reads), np.asarray(gains))


def noise_model_complete(noise: NoiseModel | None) -> bool:
    """True when ``noise`` has a measured (positive) gain and read noise in every channel."""
    return noise is not None and bool(np.all(np.asarray(noise.gain) > 0)) and bool(
        np.all(np.isfinite(noise.read_noise)))


def _chi2_ppf(q: float, dof: int) -> float:
    from scipy.stats import chi2  # noqa: PLC0415

    return float(chi2.ppf(q, dof))


def _block_mean(x: np.ndarray, block: int) -> np.ndarray:
    h, w = x.shape
    hb, wb = h // block, w // block
    return x[: hb * block, : wb * block].reshape(hb, block, wb, block).mean(axis=(1, 3)).ravel()


def _block_residual_var(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, int]:
    h, w = x.shape
    hb, wb = h // block, w // block
    b = x[: hb * block, : wb * block].astype(np.float64).reshape(hb, block, wb, block)
    b = b.transpose(0, 2, 1, 3).reshape(hb * wb, block * block)
    yy, xx = (g.ravel().astype(np.float64) for g in np.mgrid[:block, :block])
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], 1)
    # The residual's energy is the block's energy less its projection's onto an
    # orthonormal basis of the surface: (n, 6) coefficients instead of an (n, 64) fit,
    # 5x faster on a 24 MP photo. Mean-centred first so the difference keeps its digits.
    q = np.linalg.qr(basis)[0]
    mean = b.mean(1)
    b -= mean[:, None]
    res2 = np.einsum("ij,ij->i", b, b) - np.square(b @ q).sum(1)
    dof = block * block - basis.shape[1]
    return mean, np.maximum(res2, 0.0) / dof, dof


def _fit_noise_line(mean, var, q, q_corr) -> tuple[float, float]:
    """Read^2 and gain from per-block (mean, variance); (0, 0) when no range was found."""
    # Fixed brightness bins: a dots chart is mostly black, so quantile bins would all sit at 0.
    edges = np.r_[-np.inf, np.linspace(0.02, 0.95, 30)]
    mx, vy = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (mean > lo) & (mean <= hi)
        if sel.sum() >= 10:
            mx.append(float(np.median(mean[sel])))
            v = var[sel]
            vy.append(float(np.quantile(v, q) if q is not None else v.mean()) / q_corr)
    mx_a, vy_a = np.asarray(mx), np.maximum(np.asarray(vy), 1e-20)
    if len(mx_a) < 2 or np.ptp(mx_a) < 0.2:
        return (float(vy_a.min()) if len(vy_a) else 0.0), 0.0
    keep = np.ones(len(mx_a), bool)
    coef = np.zeros(2)
    for _ in range(5):
        if keep.sum() < 2 or np.ptp(mx_a[keep]) < 0.2:
            return float(coef[0]), 0.0
        a = np.stack([np.ones(keep.sum()), mx_a[keep]], 1)
        # relative errors: the variance of each bin is known to a fixed fraction
        coef = np.linalg.lstsq(a / vy_a[keep, None], np.ones(keep.sum()), rcond=None)[0]
        pred = coef[0] + coef[1] * mx_a
        new = vy_a < 1.3 * np.maximum(pred, 1e-20)
        if np.array_equal(new, keep):
            break
        keep = new
    return float(coef[0]), float(coef[1])


def _grid_nodes(w: int, h: int, grid: tuple[int, int] | str | None) -> tuple[np.ndarray, np.ndarray]:
    """Node x and y spanning the frame; ``None`` and ``"auto"`` start from the default 6x9."""
    if isinstance(grid, str) and grid != "auto":
        raise CalibError(f"grid {grid!r} must be (rows, columns) or 'auto'")
    ny, nx = grid if grid not in (None, "auto") else DEFAULT_GRID
    if ny < 1 or nx < 1:
        raise CalibError(f"grid {grid} must have at least one node per axis")
    return np.linspace(0, w - 1, nx), np.linspace(0, h - 1, ny)


def _recentre(fine: np.ndarray, s: int, dx: float, dy: float) -> np.ndarray:
    """Shift a PSF sampled ``s`` times per pixel by (dx, dy) pixels (sum 1)."""
    moved = np.clip(nd_shift(fine.astype(np.float64), (dy * s, dx * s), order=3, mode="constant"), 0, None)
    return moved / moved.sum()


def _place_channels(fine: np.ndarray, gi: int, offsets: np.ndarray, s: int, *, margin_px: int = 0) -> np.ndarray:
    """One node's PSFs (C, n, n) at ``s`` samples/px with green's centroid on the centre
    sample and every other channel's at its offset from green in ``offsets`` (C, 2: the
    dots' lateral colour); a channel whose offset is unknown (NaN) keeps the solve's.
    ``margin_px`` pixels of zeros are added on every side first (the result is
    n + 2 s margin_px wide), so that light moved past the solved kernel's edge is kept.

    The dots' offsets are whole-PSF centroids fitted over the frame (``_lateral``), while
    the solve's are those of a kernel fitted to a few dozen dots: at soft-zoom's frame
    corners, where the PSF spills beyond the kernel and the fit extrapolates along the
    radius, the map's red-to-blue shift against the true PSFs' centroids (worst node,
    1200x800, three noise seeds, in focus and at +15 steps) read 0.034-0.075 px placed by
    the solve (by the dots' only where it strayed 0.05 px from them) and 0.014-0.052 px
    placed by the dots', for the same PSF errors within 0.4 points (R/G/B median and
    worst node); sharp-prime and vintage within 0.4 points too. The dots' own offsets
    miss by at most 0.033 px there; without a margin, the move itself pushed light past
    the kernel's edge (0.048-0.052 px)."""
    pad = s * margin_px
    fine = np.pad(fine, ((0, 0), (pad, pad), (pad, pad)))
    g = psf_centroids(fine[gi], s)
    out = np.empty_like(fine)
    for c in range(len(fine)):
        own = psf_centroids(fine[c], s)
        target = offsets[c] if c != gi and np.isfinite(offsets[c]).all() else own - g
        out[c] = _recentre(fine[c], s, *(target - own))
    return out


def _fill_missing(psf: np.ndarray, have: np.ndarray, flags: np.ndarray) -> None:
    """Nodes without a measurement take the mean of their measured neighbours (growing)."""
    ny, nx = have.shape
    while not have.all():
        if not have.any():
            raise CalibError("no field node could be measured; check the chart, focus and exposure")
        new = have.copy()
        for i, j in zip(*np.nonzero(~have)):
            nb = [(a, b) for a in (i - 1, i, i + 1) for b in (j - 1, j, j + 1)
                  if 0 <= a < ny and 0 <= b < nx and have[a, b]]
            if nb:
                k = np.mean([psf[:, a, b] for a, b in nb], axis=0)
                psf[:, i, j] = k / k.sum(axis=(-1, -2), keepdims=True)
                flags[:, i, j] |= FLAG_FILLED
                new[i, j] = True
        have[:] = new


def _dot_windows(image: np.ndarray, centres: np.ndarray, half: int, *,
                 max_dots: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, 2 half + 1, 2 half + 1[, C]) around the dots wholly inside ``image``
    ((H, W) or (H, W, C); at most about ``max_dots``, evenly picked), each less the
    median of its rim, and each dot centre's offset (n, 2) from its window's centre pixel."""
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    h, w = image.shape[:2]
    ix = np.rint(centres[:, 0]).astype(int)
    iy = np.rint(centres[:, 1]).astype(int)
    keep = np.flatnonzero((ix >= half) & (ix < w - half) & (iy >= half) & (iy < h - half))
    if max_dots is not None:
        keep = keep[:: max(1, len(keep) // max_dots)]
    ix, iy = ix[keep], iy[keep]
    wins = image[iy[:, None, None] + yy, ix[:, None, None] + xx].astype(np.float64)
    rim = np.hypot(xx, yy) >= half - 0.5
    return wins - np.median(wins[:, rim], axis=1)[:, None, None], centres[keep] - np.c_[ix, iy]


def _psf_extent_from_dots(image: np.ndarray, centres: np.ndarray, half: int, dot_r_px: float) -> tuple[int, float]:
    """Odd PSF side holding 99.5 % of the median dot's light in one channel ``image`` (at
    least 9), and the PSF's rms width per axis (px, the dot's own spread and the pixel
    box taken out).

    Only the radii where the median dot's ring profile stands above its noise count: the
    noise beyond (clipped positive) would otherwise dominate the r^2 moment and the
    light budget, making faint, sharp dots look several pixels wide.
    """
    sig, _ = _dot_windows(image, centres, half, max_dots=2000)
    if not len(sig):
        return 9, 1.0
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    r = np.hypot(xx, yy)
    ring = r >= half - 0.5
    tot = sig.sum(axis=(1, 2))
    stack = sig[tot > 0] / tot[tot > 0, None, None]
    if not len(stack):
        return 9, 1.0
    med = np.median(stack, axis=0)
    med -= np.median(med[ring])
    noise = 1.4826 * float(np.median(np.abs(med[ring]))) + 1e-12
    # Ring profile (1 px annuli) against the noise of a ring's mean.
    band = np.rint(r).astype(int)
    n_band = np.bincount(band.ravel())
    prof = np.bincount(band.ravel(), med.ravel()) / np.maximum(n_band, 1)
    quiet = prof < 2 * noise / np.sqrt(np.maximum(n_band, 1))
    # The signal ends at the first two quiet rings in a row (one may dip by chance).
    end = len(prof)
    for k in range(1, len(prof) - 1):
        if quiet[k] and quiet[k + 1]:
            end = k
            break
    # Signed values inside: clipping would turn the noise there into light too.
    pos = np.where(band < end, med, 0.0)
    if pos.sum() <= 0:
        return 9, 1.0
    order = np.argsort(r.ravel())
    cum = np.maximum.accumulate(np.cumsum(pos.ravel()[order]))
    cum /= cum[-1]
    radius = float(r.ravel()[order][np.searchsorted(cum, 0.995)])
    var = float((pos * r**2).sum() / pos.sum()) / 2
    # A uniform disc of radius R has variance R^2/4 per axis, a pixel box 1/12.
    sigma = float(np.sqrt(max(var - dot_r_px**2 / 4 - 1 / 12, 0.0)))
    return int(max(9, 2 * int(np.ceil(radius)) + 3)), sigma


@dataclass(frozen=True)
class _WidthField:
    """Each channel's PSF rms width at the field nodes and how fast it changes."""

    rms_px: np.ndarray  # (ny, nx, C) px
    #: (ny, nx): the largest over channels of |grad log width|, per pixel of the frame
    log_gradient_per_px: np.ndarray


def _width_field(data: np.ndarray, pos: np.ndarray, xs: np.ndarray, ys: np.ndarray, *, half: int,
                 dot_r_px: float, orders: list[np.ndarray] | None = None) -> _WidthField:
    """Each channel's PSF rms width (px) at the field nodes, and how fast it changes:
    measured on the dots nearest each node (:func:`_core_width`) and smoothed across the
    field by a quadratic surface in the width's logarithm.

    A lens's channels differ in sharpness and each changes across the field (a sharp red
    beside a wide blue; a soft corner), and the dots solve needs smoothing to match.
    A node's own dots give a noisy width; the surface keeps its trend, and its slope says
    how far a node may gather dots before the PSF changes under them. The logarithm
    follows a PSF that stays sharp over the middle and widens fast towards the corners
    (soft-zoom: 0.68 -> 2.46 px; a surface in the width itself read 0.97 px in the middle
    and 1.92 in the corners, and over-smoothed the sharp middle).
    """
    nodes = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)
    if orders is None:  # each node's dots by distance, row by row
        orders = [np.argsort(np.hypot(*(pos - p).T)) for p in nodes]
    nc = data.shape[2]
    scale = np.array([max(xs[-1] - xs[0], 1.0), max(ys[-1] - ys[0], 1.0)])
    u = (nodes - [xs[0], ys[0]]) / scale * 2 - 1
    design = np.c_[np.ones(len(u)), u, u**2, u[:, :1] * u[:, 1:]]
    # d(design)/du and d(design)/dv, for the surface's slope at the nodes
    d_u = np.c_[np.zeros(len(u)), np.ones(len(u)), np.zeros(len(u)), 2 * u[:, :1], np.zeros(len(u)), u[:, 1:]]
    d_v = np.c_[np.zeros(len(u)), np.zeros(len(u)), np.ones(len(u)), np.zeros(len(u)), 2 * u[:, 1:], u[:, :1]]
    if len(u) < 2 * design.shape[1]:
        design, d_u, d_v = design[:, :1], d_u[:, :1], d_v[:, :1]

    def surface(n_dots: int) -> tuple[np.ndarray, np.ndarray]:
        """log width (nodes, C) on the surface, and its slope's largest length over channels."""
        raw = np.log(np.maximum([_core_width(data, pos[o[:n_dots]], half=half, dot_r_px=dot_r_px)
                                 for o in orders], 0.05))
        out = np.empty_like(raw)
        grad = np.zeros(len(u))
        for c in range(nc):
            keep = np.ones(len(u), bool)
            # Twice: a node whose dots sit in a marker's shadow or a corner may be off the trend.
            for _ in range(2):
                coef, *_ = np.linalg.lstsq(design[keep], raw[keep, c], rcond=None)
                resid = raw[:, c] - design @ coef
                mad = 1.4826 * float(np.median(np.abs(resid[keep]))) + 1e-6
                keep = np.abs(resid) <= 3 * mad
            out[:, c] = np.clip(design @ coef, raw[:, c].min(), raw[:, c].max())
            grad = np.maximum(grad, np.hypot(d_u @ coef * 2 / scale[0], d_v @ coef * 2 / scale[1]))
        return out, grad

    log_w, _ = surface(WIDTH_DOTS)
    _, grad = surface(SLOPE_DOTS)
    return _WidthField(np.exp(log_w).reshape(len(ys), len(xs), nc), grad.reshape(len(ys), len(xs)))


#: Dots per node behind its width, and behind the width's slope (the width field, not
#: the PSF solve). From 30, soft-zoom's surface stays within 6 % of the true width (from
#: 120, the wider ring around its sharp middle drags it to 0.80 px for 0.68). The slope
#: sets how many dots a node gathers, and from 30 dots it is noisy: vintage's dim corners
#: then gathered 26 instead of 53 dots and their red error rose from 10 to 27 %.
WIDTH_DOTS = 30
SLOPE_DOTS = 120
#: Radius of the moments in :func:`_core_width`, in rms widths (beyond the dot itself).
CORE_RADII = 3.5


def _core_width(data: np.ndarray, centres: np.ndarray, *, half: int, dot_r_px: float) -> np.ndarray:
    """rms width per axis (px) of the PSF's core in each channel of ``data`` (H, W, C),
    from the dots' pooled second moment about their registered centres.

    The moment is taken within ``CORE_RADII`` widths (plus the dot's radius) of each
    centre, iterated as the width settles: a wider disc lets the noise and the background's
    error, weighted by r^2, swamp a sharp PSF's moment. Exact sub-pixel centres need no
    correction for the sampling phase; the dot's own variance (a disc: r^2/4 per axis) is
    taken out. Each dot's background is the median of its window's rim (``half`` px).
    """
    wins, off = _dot_windows(data, centres, half)  # the channels' windows in one gather
    out = np.ones(data.shape[2])
    if not len(wins):
        return out
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    r2 = (xx - off[:, 0, None, None]) ** 2 + (yy - off[:, 1, None, None]) ** 2
    for c in range(data.shape[2]):
        sig, sigma = wins[..., c], 1.0
        for _ in range(4):
            rad = float(np.clip(CORE_RADII * sigma + dot_r_px + 1.0, 2.5, half - 1.0))
            inner = r2 <= rad * rad
            m0 = float(sig[inner].sum())
            if m0 <= 0:
                break
            sigma = float(np.sqrt(max(float((sig * r2)[inner].sum()) / m0 / 2 - dot_r_px**2 / 4, 0.01)))
        out[c] = sigma
    return out


def _denser_grid_note(log_gradient_per_px: np.ndarray, spacing_px: float, size: tuple[int, int],
                      grid: tuple[int, int]) -> str | None:
    """Advice when the PSF's width changes by more than GRID_CHANGE_NOTE between adjacent
    nodes: the map interpolates between nodes, so such a lens needs more of them (the
    soft-zoom simulator: 46 % between 6x9 nodes, 42 % on its true widths; 15 steps behind
    focus its true 6x9 map misses the slanted-edge MTF by up to 0.032, and the dots map
    at 11x17 is within 0.03 at 80 of 81 nodes in red and at all in green and blue)."""
    change = float(log_gradient_per_px.max()) * spacing_px
    if change <= GRID_CHANGE_NOTE:
        return None
    ny, nx = _denser_grid(log_gradient_per_px, size, grid)
    return (f"the PSF's width changes by up to {100 * change:.0f} % between adjacent field nodes of the "
            f"{grid[0]}x{grid[1]} grid; analyse with a denser grid (--grid {ny}x{nx}) to describe this lens")


def _denser_grid(log_gradient_per_px: np.ndarray, size: tuple[int, int], grid: tuple[int, int], *,
                 min_spacing_px: float = 0.0) -> tuple[int, int]:
    """The grid (ny, nx), at least ``grid``, on which the PSF's width changes by about
    GRID_CHANGE_TARGET between adjacent nodes (nodes at least ``min_spacing_px`` apart)."""
    w, h = size
    step = max(GRID_CHANGE_TARGET / max(float(log_gradient_per_px.max()), 1e-12), min_spacing_px, 1.0)
    return max(grid[0], int(np.ceil((h - 1) / step)) + 1), max(grid[1], int(np.ceil((w - 1) / step)) + 1)


DEFAULT_GRID = (6, 9)
#: With ``grid="auto"`` nodes stay this many dot pitches apart: each gathers at least
#: GATHER_MIN dots, and closer nodes would share nearly all of theirs.
AUTO_GRID_MIN_PITCHES = 3.0
#: Width change between adjacent nodes above which analysis suggests a denser grid, and
#: the change the suggested grid aims for.
GRID_CHANGE_NOTE = 0.2
GRID_CHANGE_TARGET = 0.12


def _slope_radius(sigma_px: float, psf_size: int) -> float:
    """Fraction of the PSF's half side over which a node's field slopes are fitted: at
    least SLOPE_RADIUS, and SLOPE_WIDTHS rms widths of the node's widest channel."""
    return float(np.clip(SLOPE_WIDTHS * sigma_px / max(psf_size // 2, 1), SLOPE_RADIUS, 1.0))


def _dots_reg(sigma_px: float) -> float:
    """Gradient-penalty weight of the dots solve (3 samples/px) for a PSF of rms width
    ``sigma_px``: a wider PSF spreads each dot's light over more samples, so each fine
    sample is noisier and needs more smoothing, while a sharp one loses its core to it.

    Applied per node and channel with the width field of :func:`_width_field`. The
    curve (then 0.0003 up to 0.7 px, since halved: DOTS_REG_SHARP; growing as the width
    to the power 6.5, which met the earlier curve's weight at its 2.8 px cap) was picked
    when the solve began to apply the pixel box exactly (:mod:`calib._psf_dots`): the
    unknowns are then the optical PSF, which a gradient penalty rounds less. Against the earlier curve (0.01, fourth
    power) on the system PSF, 1200x800 median/worst R G B %: sharp-prime in focus
    3.2/8.0, 2.9/5.0, 4.7/10.0 -> 2.8/5.7, 1.7/2.9, 4.2/6.8; at +15 steps 4.4/7.0,
    4.8/6.2, 5.7/7.0 -> 3.8/5.2, 2.5/4.5, 2.8/4.3; vintage in focus 4.9/15.6, 4.7/11.0,
    4.5/8.7 -> 4.5/14.6, 4.2/10.1, 3.8/6.3; soft-zoom at +15 10.5/24.4, 10.7/28.8,
    11.5/29.9 -> 10.1/25.1, 10.3/28.4, 10.9/29.8. The fourth power from 0.0003 left
    soft-zoom's wide corners under-smoothed (worst R 31.5 %, B 38 % at +15).
    """
    return DOTS_REG_SHARP * float(np.clip(sigma_px / DOTS_REG_WIDTH, 1.0, DOTS_REG_MAX_RATIO)) ** DOTS_REG_POWER


#: Samples per pixel of the dots solve. Sensor-grid samples (1) cannot describe a sharp
#: core with a wide halo (defocused red, 1200x800 +15: 11.1 % median at 1, 5.3 % at 3).
DOTS_OVERSAMPLE = 3
#: The dots solve keeps its fine sampling within this many pixels of the centre and
#: describes the PSF beyond by sensor-grid tents (fewer unknowns: 1200x800 in focus
#: 46 -> 18 CPU-s and B 7.6/15.2 -> 4.9/14.9 %).
DOTS_CORE_PX = 2.0
#: ... and within this many at the nodes read off dots turned about the optical centre
#: (the frame's edges and corners of a lens whose PSF changes fast across the field): a
#: comet's sharp head sits 2-3 px off its centroid there, and tents round it. soft-zoom
#: 1200x800, worst node R/G/B %, noise seed 1: 16 steps in front of focus 14.4/13.7/15.5
#: -> 12.0/11.2/13.8 (the edge nodes next to the corners: blue 15.4 -> 7.9 %; seeds 2 and
#: 3: 16.3/14.4/15.4 -> 12.8/13.2/13.6, 13.4/15.2/15.8 -> 10.6/12.0/13.4); in focus and
#: at +15 steps within 0.8 points either way (seeds 1-3: worst 14.8 %, was 14.7), for
#: 1.1-1.3x the analysis time. 3 px at every node: -16 steps 12.0/11.2/12.2 for 3x.
TURNED_CORE_PX = 3.0
#: Halved from 0.0003 when the simulator began rendering soft-zoom on a grid dense enough
#: to follow its PSF between nodes (``SimulatedCamera.render_grid_for``): the true PSF at a
#: map node had been a blend of the render nodes around it, softer than the lens, and the
#: smoothing had been chosen against that. Against the faithful render, 1200x800 R/G/B
#: median/worst %: soft-zoom in focus 4.3/16.7, 6.6/14.1, 8.2/16.0 -> 4.1/15.3, 5.8/13.8,
#: 7.9/16.3; +15 steps 6.0/14.5, 7.4/13.0, 8.5/15.5 -> 5.3/15.2, 6.7/14.2, 7.9/17.4
#: (0.0001: no lower medians, worse corners); sharp-prime in focus 2.8/6.2, 5.1/6.2,
#: 3.1/6.2 -> 2.4/5.9, 3.9/5.1, 2.5/6.6; vintage in focus 3.7/10.8, 5.6/9.4, 3.0/5.2 ->
#: 3.9/10.6, 4.5/9.6, 3.2/5.9; +15 steps within 0.6 either way. More smoothing at the
#: nodes whose dots lie to one side (their estimate is an extrapolation, so noisier) traded
#: the frame edges' medians for the corners and was left out.
DOTS_REG_SHARP = 0.00015
#: The weight stops growing at this multiple of DOTS_REG_WIDTH (2.1 px). It was 4 while
#: soft-zoom's corners were fitted with core-only field slopes (from 2.83: worst node
#: R/G/B 24.7/26.6/37.0 -> 23.6/24.1/37.0 %); since the slopes span the PSF's width
#: (SLOPE_WIDTHS) the smoothing is what blurred its wide defocused cores: +15 steps,
#: 6.1/8.2/9.4 % median, worst 20/18/18 % at 4 -> 6.1/7.6/8.2 %, worst 15/14/14 % at 3
#: (2.5: 17/15/16 %; in focus unchanged). Back up to 3.5 (2.45 px) once the frame edges
#: were read off dots turned about the optical centre (ROTATE_LOPSIDED): only the corners
#: reach it, where the estimate extrapolates along the radius and more smoothing steadies
#: it (soft-zoom blue worst node in focus 16.4 -> 13.9 %, +15 steps 16.4 -> 13.4 %, with
#: dots gathered within 0.5 rad; 4: red +15 13.6 -> 16.1 %; at 2.5 and 2, noise-free, the
#: corners read worse, 17 and 20 % in blue). vintage and sharp-prime never reach it.
DOTS_REG_MAX_RATIO = 3.5
# Up to this rms width (px) a channel takes the floor weight DOTS_REG_SHARP; its optical
# core is then narrower than a pixel, and its penalty is made edge-preserving
# (``estimate_psf_dots(sharp_core=)``, HUBER_KNEE).
DOTS_REG_WIDTH = 0.7
DOTS_REG_POWER = 6.5
#: Penalty weight at one sample per pixel (``oversample=1``).
DOTS_REG_SENSOR_GRID = 0.003
# Dots gathered per field node: those within the distance over which the width field
# changes by GATHER_CHANGE (relative), at least GATHER_MIN and at most GATHER_MAX. Then
# the Gaussian weight's width (fraction of the node spacing; at least the distance to the
# GATHER_CORE-th nearest dot and one dot pitch). Against a fixed 40 (1200x800 in focus,
# R G B median/worst %): sharp-prime 4.1/8.9, 2.8/6.4, 4.6/11.5 -> 3.4/7.7, 3.0/5.4,
# 4.6/10.3; vintage 6.1/15.9, 5.4/11.3, 5.1/9.3 -> 5.4/15.5, 4.9/10.3, 4.5/10.2; soft-zoom
# 11.7/40.0, 13.8/42.7, 14.0/50.2 -> 11.7/29.3, 12.9/32.8, 14.5/46.1 (a fixed 80 there:
# 14.1/53.4, 16.2/57.5, 17.7/63.9; a change of 0.1 starved vintage's edges, 0.3 soft-zoom's).
GATHER_MIN = 25
GATHER_MAX = 80
GATHER_CHANGE = 0.2
OFFSET_DOTS = 80
GATHER_SIGMA = 0.5
GATHER_CORE = 12
# Fit each node's PSF as varying linearly across its dots and read it at the node.
LINEAR_FIELD = True
# ... at nodes whose weighted dot centroid is off the node by this fraction of the spread
# (0: every node; 1200x800 in focus, B 9.2/20.1 % at 0.25 -> 7.8/16.0 % at 0, the slopes
# on the PSF core cost ~25 % more time than the plain fit).
LOPSIDED = 0.0
# Slopes of the linear field over this fraction of the PSF's half side: 1200x800 in focus,
# 0.5 -> 0.75 gave B 7.8/16.0 -> 7.9/15.3 % (R, G unchanged) for 2.2x the time.
SLOPE_RADIUS = 0.5
# ... or over this many rms widths, where that is more: a wide PSF changes across the
# field in its tails too, which a core-only slope leaves at the neighbourhood's mean (too
# compact at a frame corner, the dots all inward). soft-zoom 1200x800, worst corner R/G/B
# in focus 23/19/22 -> 17/15/17 %, at +15 steps 24/25/26 -> 20/18/18 % (4 widths: 16/14/17
# % in focus, 1.9x the solve time). sharp-prime's PSFs are too narrow to reach past
# SLOPE_RADIUS; vintage's corners do (green worst 10.7 -> 9.8 %).
SLOPE_WIDTHS = 2.5
# Nodes whose dots lie to one side by at least this fraction of their spread (frame
# edges >= 0.55, corners 0.8; None: never) gather their dots about the optical centre
# instead: within ROTATE_MAX_RAD of the node's azimuth, by a distance whose tangential
# part counts 1/ROTATE_STRETCH, each dot turned to the node's azimuth (a lens is nearly
# rotationally symmetric), at least ROTATE_GATHER_MIN of them, and the PSF fitted as
# varying along the radius only. An edge node then sits among dots at its own distance
# from the centre rather than at the end of an extrapolation. soft-zoom 1200x800 (R/G/B
# median/worst %; with DOTS_REG_MAX_RATIO 3.5), in focus 4.1/15.3, 5.8/13.8, 7.9/16.3 ->
# 3.5/14.5, 4.8/11.7, 7.0/14.4; +15 steps 5.3/15.2, 6.7/14.2, 7.9/17.4 -> 4.7/12.5,
# 5.8/11.0, 7.2/13.6 (two more noise seeds: worst 14.8-15.0, 11.3-12.3, 13.4-15.8): the
# edges went from 8-16 % to 3-10 %; the corners, still an extrapolation along the
# radius, read 10-16 %. With both field axes (radial and tangential) the edges kept
# 7-13 %; 25 dots left the corners noisier (red 17.5 %); 50 within 0.5 rad read about
# the same but moved a corner's red-to-blue offset 0.05 px further from the truth.
# Only for a lens whose PSF changes fast across the field (the one fitted with a quadratic
# field): sharp-prime's and vintage's nearest dots describe their edge nodes as well
# (turned, sharp-prime within 0.8 points at the worst node, vintage green 9.6 -> 10.4 %),
# and the turned neighbourhoods' longer crops cost time (24 MP sharp-prime 10.3 -> 13.8 s).
# Nodes within ROTATE_MIN_RADIUS dot pitches of the centre keep their own dots.
ROTATE_LOPSIDED: float | None = 0.4
ROTATE_MAX_RAD = 0.3
ROTATE_STRETCH = 3.0
ROTATE_MIN_RADIUS = 3.0
ROTATE_GATHER_MIN = 40
# The frame edges of the lenses fitted with the linear field (dots to one side by
# ROTATE_LOPSIDED up to TANGENT_MAX_LOPSIDED of their spread: not the corners, 0.8) keep
# their dots unturned but gather them along the edge, by a distance whose part along the
# circle about the optical centre through the node counts 1/TANGENT_STRETCH. A
# rotationally symmetric lens's PSF changes with the field height, far less along that
# circle (there it only turns), so the dots' centre then lies nearer the node's field
# height and the linear field extrapolates less. vintage 1200x800, worst node R/G/B %
# (with the edge-preserving penalty, HUBER_KNEE): 16 steps in front of focus, noise
# seeds 1/2/3, blue 16.1/15.7/13.6 -> 13.1/13.5/12.2 (seeds 4 and 5: 13.1, 14.0), its
# medians 7.1/6.9/6.3 -> 6.5/6.6/6.3, red 9.2/8.1/9.9 -> 9.2/9.7/9.9, green unchanged
# (its worst, a corner, 12.7/14.9/10.2; seeds 4, 5: 14.9, 13.6); in focus, seed 1,
# green 9.4 -> 9.7, blue 6.1 -> 7.7 (seed 2: 5.6 -> 7.1), red unchanged (12.3, seed 2
# 13.6); at +15 steps red 5.5 -> 8.0; sharp-prime within 1 point (red in focus 4.0 ->
# 5.0). A stretch of 1.5: blue at -16 14.5/13.6/12.5, in focus unchanged; along the
# tangent line instead of the circle (stretch 2): 13.4/14.5/13.1; a stretch of 3 (tangent
# line): green in focus 9.4 -> 14.8; the corners too (tangent line): vintage's red corner
# in focus 13.6 -> 14.0 (seed 2). 24 MP: 8.8-10.2 s (without: 9.9-10.5 s, same minutes).
TANGENT_STRETCH = 2.0
TANGENT_MAX_LOPSIDED = 0.7
# Each turned dot is also stretched along the radius by (r_node / r_dot) to this power
# before it enters the fit: off axis the PSF grows with the field height, and at a frame
# edge its growth is dominated by the aberrations that go with its square (astigmatism,
# field curvature), so the field terms along the radius are left with the rest.
# soft-zoom 1200x800, noise seed 1, worst node R/G/B % in focus / +15 steps / -16 steps
# (with red and blue placed at the dots' lateral colour, ``_place_channels``): power 0
# (not stretched; in focus and at +15 as session 15 placed red and blue) 14.7/12.0/14.3,
# 12.0/12.1/13.4, 22.3/24.3/22.6; power 1 (coma's growth) 14.5/11.4/12.0, 12.8/12.7/12.4,
# 17.8/18.9/16.2; 1.5: 14.1/11.0/11.9, 13.1/13.0/12.8, 16.2/16.8/15.8; 2: 14.0/11.9/12.7,
# 13.5/12.7/13.2, 14.4/13.7/15.5; 2.5 at -16: 11.9/12.2/15.5. Medians within 0.3 points of each other from power 1 on
# (blue in focus 6.9 -> 5.3-5.5 %). Neither the data misfit (it preferred power 1 at -16)
# nor the width field's growth (rms widths, halo included: about power 2 in focus, 1.4
# at -16; worst -16 node 16.1 %) picked the power better than this constant.
RADIAL_SCALE_POWER = 2.0
# A node is in a hole of the dots field when its dots' weighted rms distance exceeds
# HOLE_SPREAD times the median node's and their weighted centre lies within HOLE_CENTRED
# of that distance from it (1200x800: holes 1.4-1.7 and 0.25-0.37; frame edges >= 0.55,
# corners 0.8).
HOLE_SPREAD = 1.25
HOLE_CENTRED = 0.5
# Weakest dot kept (integrated SNR). The weighted joint fit averages dozens of dots, so
# faint ones still help; at 10 the blurred, vignetted frame corners kept none (demo,
# focus best+16: corner nodes went unestimated, filled at 83-87 % error; at 4: 38-47 %).
DOTS_MIN_SNR = 4.0
# Red and blue samples are moved back by the lateral colour's change across a node's
# dots (``estimate_psf_dots(channel_shifts=)``) where that change reaches this many of
# the channel's rms widths somewhere among them; each such channel then has its own
# system matrix. A smaller move is nearly linear in the samples, which the linear field
# takes: moving every channel back at every node read vintage's blue in focus 6.1 ->
# 5.0 % but its red at +15 steps 5.5 -> 7.2 % (the rest within 0.6 points), for 1.6x the
# time of a 24 MP capture with lateral colour (15.7 s against 10.0).
# (max move / width at the nodes, 1200x800: vintage's blue 16 steps in front of focus
# 0.16-0.30, its red in focus 0.11-0.22; sharp-prime 0.07-0.17.)
LATERAL_DRIFT_WIDTHS = 0.15
# Projected-gradient iterations (non-negativity) of the dots solves, by the lens's field
# order. The linear field's solves are small and 100 had not converged: 300 read, worst
# node R/G/B % (1200x800, seed 1), vintage in focus 13.1/9.5/6.1 -> 12.7/8.4/6.1, 16
# steps in front of focus 10.2/14.2/17.4 -> 9.2/12.7/16.8, sharp-prime in focus red
# 5.9 -> 4.8, for 1.0-1.2x the time. The quadratic field's solves (soft-zoom, 3-5x the
# unknowns) moved by at most 0.2 points for 1.25-1.5x the time.
DOTS_ITERATIONS = {1: 300, 2: 100}


def analyze_images(
    images: Sequence[str | os.PathLike | LinearImage],
    layout: targets.Layout | str | os.PathLike,
    *,
    focus_position: int | None = None,
    grid: tuple[int, int] | str | None = None,
    oversample: int | None = None,
    psf_size: int | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> AnalysisResult:
    """Measure the PSF map of one focus setting from photos of one chart.

    Parameters
    ----------
    images : sequence of paths or LinearImage
        Repeated shots of the same chart at the same setting (averaged).
    layout : targets.Layout or path to its JSON
    focus_position : int, optional, keyword-only
        Overrides the focus position in the photos' metadata.
    grid : (ny, nx) or "auto", optional, keyword-only
        Field nodes spanning the frame corner to corner; default (6, 9). ``"auto"``: from
        (6, 9), as many more as the dots chart shows the PSF's width to need (about 12 %
        change between adjacent nodes, nodes at least three dot pitches apart); a soft
        lens then takes 3.5-4x the analysis time. Other charts use (6, 9).
    oversample : int, optional, keyword-only
        Sub-pixel sampling of the estimators; default 3 for sharp PSFs (at most 15 px
        wide), 1 for blurred ones.
    psf_size : int, optional, keyword-only
        Odd side of the solved PSFs (px); default from the measured dot extent. A dots
        map stores them with a margin as wide as the lateral colour (rounded up to
        whole pixels) on every side, into which red and blue are moved.
    progress : bool, keyword-only
        One line per step on stderr.
    workers : int, optional, keyword-only
        Threads for the per-node PSF solves; default all the cores this process may use.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    CalibError
        No chart in a photo, photos of different cameras, mostly saturated dots, ...
    """
    _grid_nodes(1, 1, grid)  # a malformed grid is refused before any work
    layout_name = str(layout) if not isinstance(layout, targets.Layout) else "the layout"
    if not isinstance(layout, targets.Layout):
        layout = targets.load_layout(layout)
    if not images:
        raise CalibError("no photos given; name at least one photo of the chart")
    imgs = _load(images)
    _check_same_camera(imgs)
    first = imgs[0]
    name = str(first.path) if first.path else "the photo"
    if progress:  # the layout id hashes every element: seconds for a 24 MP chart's dots
        _progress(f"analyze: {len(imgs)} photo(s) of {layout.layout_id}, {first.width}x{first.height}", progress)
    data, sat = _average(imgs)
    channels = first.channels
    if "G" in channels:
        gi = channels.index("G")
    elif len(channels) == 1 and channels[0] != "CFA":
        gi = 0
    else:
        raise CalibError(f"{name} has channels {channels}; load it demosaiced (RGB) or as one grey channel")
    meta = first.metadata
    if focus_position is not None:
        meta = ShotMetadata.from_dict({**meta.to_dict(), "focus_position": int(focus_position)})
    # The noise model needs only the photos: it is measured beside the registration and
    # the PSF solves (a second core's worth of a 24 MP photo's analysis time).
    with ThreadPoolExecutor(max_workers=1) as pool:
        noise_job = pool.submit(estimate_noise_model, first.data, channels,
                                repeat=imgs[1].data if len(imgs) > 1 else None)
        reg, method, pm, notes, lateral, mtf = _measure(
            data, sat, channels, gi, meta, layout, grid=grid, oversample=oversample, psf_size=psf_size,
            name=name, layout_name=layout_name, progress=progress, workers=workers)
        noise = noise_job.result()
    if pm is not None:
        mtf = (*mtf, *psf_map_mtf(pm, centre_xy=reg.centre_xy_px))
    if not noise_model_complete(noise):
        # A gain of 0 would tell restore there is no shot noise; better no model at all.
        notes = [*notes, "the sensor gain could not be measured on this chart (no flat bright areas); "
                     "no noise model stored"]
        noise = None
    return AnalysisResult(pm, reg, noise, meta, len(imgs), method, tuple(notes), lateral, mtf)


def _measure(data, sat, channels, gi, meta, layout: targets.Layout, *, grid, oversample, psf_size, name,
             layout_name, progress, workers):
    """Registration, then the chart's MTF records and its PSF map (dots or noise pattern):
    (registration, method, PSF map or None, notes, lateral colour or None, MTF records)."""
    reg = register_chart(data[..., gi], layout, source=name, layout_name=layout_name,
                         saturated=sat.any(axis=-1) if sat.ndim == 3 else sat)
    _progress(
        f"analyze: registered ({reg.n_markers} markers, {reg.n_points} dots, k1={reg.k1:+.5f} "
        f"k2={reg.k2:+.5f}, residual {reg.residual_rms_px:.3f} px rms)", progress,
    )
    has_mtf = bool(layout.edges or layout.stripes)
    if not (layout.dots or layout.noise or has_mtf):
        raise CalibError(
            f"{layout_name} has no dots, noise pattern, edges or gratings; analyse a dots, noise, "
            "edges, stripes or combo chart"
        )
    mtf: tuple[MTFRecord, ...] = ()
    if has_mtf:
        _progress(f"analyze: chart MTF ({len(layout.edges)} edge squares, {len(layout.stripes)} gratings)", progress)
        averaged = LinearImage(data, channels, 0.0, 1.0, sat if sat.ndim == 3 else sat[..., None], meta)
        mtf = tuple(measure_chart_mtf(averaged, layout, reg, centre_xy=reg.centre_xy_px, progress=progress).records)
    if layout.dots:
        pm, notes, lateral = _dots_map(data, sat, channels, gi, layout, reg, grid=grid, oversample=oversample,
                                       psf_size=psf_size, name=name, progress=progress, workers=workers)
        return reg, "dots", pm, notes, lateral, mtf
    if layout.noise:
        pm, notes = _noise_map(data, sat, channels, gi, layout, reg, grid=grid,
                               oversample=oversample, psf_size=psf_size, progress=progress)
        return reg, "noise", pm, notes, None, mtf
    return reg, "mtf", None, [], None, mtf


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _map_threads(fn: Callable[[Any], Any], items: Sequence[Any], workers: int | None):
    """``map(fn, items)`` in order, on ``workers`` threads (all cores when None), with
    BLAS single-threaded inside so the threads do not oversubscribe the cores."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    n = _default_workers() if workers is None else max(1, int(workers))
    # Single-threaded BLAS even for one worker: the factorisations are small, and
    # BLAS threads spinning on a busy machine measured 10-25x slower.
    with threadpool_limits(limits=1):
        if n == 1 or len(items) < 2:
            yield from map(fn, items)
            return
        with ThreadPoolExecutor(min(n, len(items))) as pool:
            yield from pool.map(fn, items)


def _in_box(xy: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The points of ``xy`` (n, 2) inside the box [x0, x1) x [y0, y1)."""
    keep = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
    return xy[keep]


def _offsets_at_node(offsets: np.ndarray, rel_xy: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """Each channel's dot-centroid offset (C, 2) at a node, from its dots' offsets
    (C, n, 2) at ``rel_xy`` (n, 2) from the node: a weighted plane read at the node.

    Lateral colour grows across the field, so a weighted mean would describe the dots'
    centre rather than the node wherever the dots lie to one side (frame edges: the
    R-B error there was 0.05-0.12 px, 0.002-0.03 px inside).
    """
    ww = wts / wts.sum()
    if len(ww) < 6:
        return np.einsum("n,cnk->ck", ww, offsets)
    spread = float(np.sqrt(ww @ (rel_xy**2).sum(1))) + 1e-9
    design = np.c_[np.ones(len(ww)), rel_xy / spread] * np.sqrt(ww)[:, None]
    ys = (offsets.transpose(1, 0, 2).reshape(len(ww), -1)) * np.sqrt(ww)[:, None]
    coef, *_ = np.linalg.lstsq(design, ys, rcond=None)
    return coef[0].reshape(offsets.shape[0], 2)


def _dots_map(data, sat, channels, gi, layout, reg: Registration, *, grid, oversample, psf_size, name, progress,
              workers=None):
    h, w = data.shape[:2]
    dots_mm = np.array([(d.x_mm, d.y_mm) for d in layout.dots])
    pos = reg.chart_to_image(dots_mm)
    inside = (pos[:, 0] > 2) & (pos[:, 1] > 2) & (pos[:, 0] < w - 3) & (pos[:, 1] < h - 3)
    pos, dots_mm = pos[inside], dots_mm[inside]
    if len(pos) == 0:
        raise CalibError(f"no dot of the chart is inside {name}; frame the whole chart")
    green = data[..., gi]
    # Saturation: count dots with clipped pixels near their centre before doing any work.
    # (The 5x5 pixels around each centre are looked at directly: a maximum filter over a
    # 24 MP frame took most of a second.)
    ix, iy = np.rint(pos[:, 0]).astype(int), np.rint(pos[:, 1]).astype(int)
    o = np.arange(-2, 3)
    near_y = np.clip(iy[:, None, None] + o[None, :, None], 0, h - 1)
    near_x = np.clip(ix[:, None, None] + o[None, None, :], 0, w - 1)
    n_sat = int(sat[near_y, near_x].reshape(len(pos), -1).any(axis=1).sum())
    sat_msg = (f"{n_sat} of {len(pos)} dots are saturated in {name}; use a shorter exposure "
               "(about half) and shoot again")
    if n_sat > 0.5 * len(pos):
        raise CalibError(sat_msg)
    pitch_px = float(np.median(np.hypot(*np.diff(pos, axis=0).T)))
    jac = reg.jacobian(dots_mm)
    dot_mm = float(layout.dots[0].diameter_mm)
    dot_r_px = float(np.median(np.linalg.norm(jac, 2, axis=(1, 2)))) * 0.5 * dot_mm
    # Windows around each dot for the extent and width measures: half a dot pitch.
    win_half = int(max(4, min(pitch_px / 2 - 1, 20)))
    auto_size, sigma_px = _psf_extent_from_dots(green, pos, win_half, dot_r_px)
    if psf_size is None:
        psf_size = auto_size
    s = int(oversample) if oversample is not None else DOTS_OVERSAMPLE
    core_px = None if s == 1 else DOTS_CORE_PX
    _progress(f"analyze: PSF {psf_size} px, rms width {sigma_px:.2f} px, oversample {s}", progress)
    reach = psf_size // 2 + int(np.ceil(dot_r_px)) + 2
    # Markers inside the dots field and the paper around it: a dot whose cut-out reaches
    # one would see its black and white areas as PSF light, so such dots are left out.
    not_dots = _not_dots_mask(layout, reg, (h, w), grow_px=2)
    unused = pos[:0]  # dots left out: not fitted, but their light is in the photo
    if not_dots.any():
        import cv2  # noqa: PLC0415

        dist = cv2.distanceTransform((~not_dots).astype(np.uint8), cv2.DIST_L2, 5)
        ixc = np.clip(np.rint(pos[:, 0]).astype(int), 0, w - 1)
        iyc = np.clip(np.rint(pos[:, 1]).astype(int), 0, h - 1)
        clear = dist[iyc, ixc] > reach * np.sqrt(2)
        unused = pos[~clear]
        pos, dots_mm, jac = pos[clear], dots_mm[clear], jac[clear]
    bad = (sat if sat.ndim == 3 else sat[..., None]) | not_dots[..., None]
    # Each channel's dot centroids, measured directly: their offsets from the registered
    # dot centres give green's centring and the lateral colour at sub-pixel precision,
    # even where the PSF is narrower than a pixel.
    offsets = np.full((len(channels), len(pos), 2), np.nan)
    per_channel = _map_threads(lambda c: measure_dot_centroids(data[..., c], pos, half_px=reach),
                               range(len(channels)), workers)
    for c, (cen_c, ok_c) in enumerate(per_channel):
        offsets[c, ok_c] = cen_c[ok_c] - pos[ok_c]
    offsets_ok = np.isfinite(offsets).all(axis=(0, 2))
    lateral_model = fit_lateral_colour(offsets - offsets[gi], pos, centre_xy_px=reg.centre_xy_px,
                                       norm_radius_px=reg.norm_radius_px)
    if lateral_model is not None:
        corner = lateral_model.at([(0.0, 0.0)])[:, 0]
        _progress("analyze: lateral colour at the top-left corner " + ", ".join(
            f"{ch}-{channels[gi]} ({corner[c, 0]:+.2f}, {corner[c, 1]:+.2f}) px" for c, ch in enumerate(channels)
            if c != gi) + f"; dots' rms misfit {lateral_model.residual_rms_px.max():.3f} px", progress)
    xs, ys = _grid_nodes(w, h, grid)
    nc = len(channels)

    def neighbourhoods(xs, ys):
        """Each node's distances to the dots and the dots by distance (row by row), shared
        by the width field and the solves."""
        dists = [np.hypot(pos[:, 0] - x, pos[:, 1] - y) for y in ys for x in xs]
        return dists, [np.argsort(d) for d in dists]

    dists, orders = neighbourhoods(xs, ys)
    if s == 1:
        node_reg = np.full((len(ys), len(xs), nc), DOTS_REG_SENSOR_GRID)
    else:
        width_field = _width_field(data, pos, xs, ys, half=win_half, dot_r_px=dot_r_px, orders=orders)
        if grid == "auto":
            # As dense as the width field asks for (the denser-grid note, acted on).
            dense = _denser_grid(width_field.log_gradient_per_px, (w, h), (len(ys), len(xs)),
                                 min_spacing_px=AUTO_GRID_MIN_PITCHES * pitch_px)
            if dense != (len(ys), len(xs)):
                _progress(f"analyze: the PSF changes fast across the field; {dense[0]}x{dense[1]} nodes",
                          progress)
                xs, ys = _grid_nodes(w, h, dense)
                dists, orders = neighbourhoods(xs, ys)
                width_field = _width_field(data, pos, xs, ys, half=win_half, dot_r_px=dot_r_px, orders=orders)
        widths = width_field.rms_px
        node_reg = np.vectorize(_dots_reg)(widths)
        _progress("analyze: PSF rms width per channel " + ", ".join(
            f"{ch} {widths[..., c].min():.2f}-{widths[..., c].max():.2f} px" for c, ch in enumerate(channels)), progress)
    ny, nx = len(ys), len(xs)
    lateral = np.full((nc, ny, nx, 2), np.nan)
    if lateral_model is not None:
        node_xy = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1).reshape(-1, 2)
        lateral[:] = lateral_model.at(node_xy).reshape(nc, ny, nx, 2)
    have = np.zeros((ny, nx), bool)
    notes: list[str] = []
    n_extrap = n_gap = 0
    # Each node gathers its nearest dots (many sub-pixel phases), weighted by distance so
    # the estimate describes the node even where the PSF changes across the field; nodes
    # beyond the dotted area (frame corners) take the nearest dots, flagged as extrapolated.
    spacing = max(np.diff(xs).max() if nx > 1 else w, np.diff(ys).max() if ny > 1 else h)
    # A lens whose PSF changes fast across the field (the case the denser-grid note is
    # about) changes in shape and orientation too, not only in width: all its nodes fit
    # the field as quadratic across their dots (soft-zoom, 1200x800, R/G/B median in
    # focus 9.7/11.0/12.0 -> 8.0/9.3/9.5 %, worst B 39 -> 22 %; +15 steps 10.1/10.3/10.9
    # -> 8.3/9.2/10.1 %; 3.5x its solve time). Turned on only at the nodes where the
    # width itself changes fast, it gained less (+15, green: 10.0 against 9.0 % at 5
    # samples per pixel). Other lenses keep the linear field: vintage's
    # width changes by at most 14 % between nodes, and its green went 5.5/9.2 ->
    # 6.2/13.3 % (rendered at 5 samples per pixel) with the extra unknowns.
    field_order = 2 if s > 1 and float(width_field.log_gradient_per_px.max()) * spacing > GRID_CHANGE_NOTE else 1
    optic = np.asarray(reg.centre_xy_px, dtype=np.float64)
    radius = np.hypot(pos[:, 0] - optic[0], pos[:, 1] - optic[1])
    azimuth = np.arctan2(pos[:, 1] - optic[1], pos[:, 0] - optic[0])

    def gather(dist: np.ndarray, order: np.ndarray, i: int, j: int, least: int = GATHER_MIN):
        """A node's dots (indices), their distances and fit weights: as many as lie where
        the PSF's width is within GATHER_CHANGE of the node's (GATHER_MIN to GATHER_MAX),
        more sub-pixel phases where it changes slowly, a tighter neighbourhood where it
        changes fast (soft corners); weighted by distance so the estimate describes the
        node even where the PSF changes across the field."""
        n_gather = GATHER_MAX if s == 1 else int(np.clip(
            np.searchsorted(dist[order], GATHER_CHANGE / max(float(width_field.log_gradient_per_px[i, j]), 1e-9)),
            least, GATHER_MAX))
        near = order[:n_gather]
        dn = dist[near]
        sigma = max(GATHER_SIGMA * spacing, float(dn[min(len(dn) - 1, GATHER_CORE)]), pitch_px)
        return near, dn, sigma, np.exp(-0.5 * ((dn - dn[0]) / sigma) ** 2)

    # First every node's neighbourhood (cheap), then the PSF solves, which are
    # independent, on a thread pool: their heavy parts (sparse products, LAPACK) release
    # the GIL, and one BLAS thread per solve keeps the cores from being oversubscribed.
    jobs = []
    ring_shape: list[tuple[float, float]] = []  # each node's dots: weighted off-centre distance, spread
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            dist, order = dists[i * nx + j], orders[i * nx + j]
            near, dn, sigma, wts = gather(dist, order, i, j)
            # Green's centring varies smoothly and is read off a plane through the dots'
            # centroid offsets: these take OFFSET_DOTS dots whatever the PSF does
            # (soft-zoom +15, worst node R-B error: 25 dots 0.17 px, 40 0.11, 80 0.07,
            # when lateral colour was read the same way). Lateral colour comes from the
            # frame's radial model where there is one.
            near_off = order[:OFFSET_DOTS]
            w_off = np.exp(-0.5 * ((dist[near_off] - dn[0]) / sigma) ** 2)
            okn = offsets_ok[near_off]
            if okn.sum() >= 3:
                node_off = _offsets_at_node(offsets[:, near_off[okn]], pos[near_off[okn]] - [x, y], w_off[okn])
                if lateral_model is None:
                    lateral[:, i, j] = node_off - node_off[gi]
                shift = node_off[gi]
            else:
                shift = np.zeros(2)
            # The linear-field fit where the dots lie on one side of the node by more than
            # LOPSIDED (frame edges, markers); elsewhere the weighted mean describes it.
            rel = pos[near] - [x, y]
            off_centre = float(np.hypot(*(wts @ rel) / wts.sum()))
            spread = float(np.sqrt((wts @ (rel**2).sum(1)) / wts.sum()))
            lopsided = LINEAR_FIELD and off_centre >= LOPSIDED * spread
            ring_shape.append((off_centre, spread))
            nearest = float(dn[0])
            r_node = float(np.hypot(x - optic[0], y - optic[1]))
            turn = field_at = stretch = None
            radial_dir = (1.0, 0.0)
            at_edge = (ROTATE_LOPSIDED is not None and off_centre >= ROTATE_LOPSIDED * spread
                       and r_node > ROTATE_MIN_RADIUS * pitch_px)
            turned = at_edge and field_order == 2
            along_edge = at_edge and not turned and off_centre < TANGENT_MAX_LOPSIDED * spread
            if turned or along_edge:
                phi_n = float(np.arctan2(y - optic[1], x - optic[0]))
                dphi = np.angle(np.exp(1j * (azimuth - phi_n)))
                dr, dt = radius - r_node, r_node * dphi
            if turned:
                # The dots lie to one side (a frame edge or corner): gather them along the
                # circle about the optical centre through the node instead, each turned
                # to the node's azimuth (a lens is nearly rotationally symmetric), and
                # fit the field along the radius (ROTATE_LOPSIDED).
                metric = np.hypot(dr, dt / ROTATE_STRETCH)
                metric[np.abs(dphi) > ROTATE_MAX_RAD] = np.inf
                r_order = np.argsort(metric)
                r_order = r_order[np.isfinite(metric[r_order])]
                near, dn, sigma, wts = gather(metric, r_order, i, j, ROTATE_GATHER_MIN)
                turn = phi_n - azimuth[near]
                field_at = np.c_[dr[near], dt[near]]
                stretch = (r_node / np.maximum(radius[near], 1.0)) ** RADIAL_SCALE_POWER
                radial_dir = (float(np.cos(phi_n)), float(np.sin(phi_n)))
            elif along_edge:
                # A frame edge (not a corner) of a lens fitted with the linear field: its
                # dots, gathered along the edge (TANGENT_STRETCH), lie nearer the node's
                # field height, so the fit extrapolates over less of the radius.
                metric = np.hypot(dr, dt / TANGENT_STRETCH)
                near, dn, sigma, wts = gather(metric, np.argsort(metric), i, j)
            cen = pos[near]
            e = np.mean(jac[near], axis=0) * (0.5 * dot_mm)
            pad = psf_size // 2 + int(np.ceil(np.linalg.norm(e, 2))) + 4
            x0 = max(0, int(np.floor(cen[:, 0].min())) - pad)
            y0 = max(0, int(np.floor(cen[:, 1].min())) - pad)
            x1 = min(w, int(np.ceil(cen[:, 0].max())) + pad + 1)
            y1 = min(h, int(np.ceil(cen[:, 1].max())) + pad + 1)
            # Every channel is solved with the dot centres moved by green's centroid, so
            # the sensor-grid samples land on integer offsets from it (no interpolation
            # of a sharp PSF) and red and blue keep their offsets (turned dots: by
            # green's centroid turned back to their own azimuth).
            moved = cen - [x0, y0] + (shift if turn is None else np.c_[
                np.cos(turn) * shift[0] + np.sin(turn) * shift[1], -np.sin(turn) * shift[0] + np.cos(turn) * shift[1]])
            unfitted = np.ones(len(pos), bool)
            unfitted[near] = False
            kwargs = dict(
                dot_ellipse=e, size=psf_size, oversample=s, mask=bad[y0:y1, x0:x1], weights=wts,
                reg=node_reg[i, j], iterations=DOTS_ITERATIONS[field_order], min_snr=DOTS_MIN_SNR,
                sharp_core=widths[i, j] <= DOTS_REG_WIDTH if s > 1 else False,
                core_px=TURNED_CORE_PX if turn is not None and core_px is not None else core_px,
                slope_radius=_slope_radius(float(widths[i, j].max()) if s > 1 else 0.0, psf_size),
                node_xy=(x - x0 + shift[0], y - y0 + shift[1]) if lopsided or turn is not None else None,
                field_order=field_order, rotations=turn, field_axes=2 if turn is None else 1,
                stretch=stretch, stretch_axis=radial_dir,
                field_xy=None if field_at is None else field_at + [x - x0 + shift[0], y - y0 + shift[1]],
                other_xy=_in_box(np.vstack([pos[unfitted], unused]), x0 - pad, y0 - pad, x1 + pad, y1 + pad)
                - [x0, y0] + shift,
            )
            if turn is None and lateral_model is not None:
                # Lateral colour grows with the field, so red and blue move against green
                # across a node's dots, and the move of a PSF sharper than a pixel is not
                # linear in its samples: the linear field leaves it smeared. Each dot's
                # red and blue samples are moved back by the frame model's change from the
                # node to the dot, where that change is not small against the channel's
                # width (LATERAL_DRIFT_WIDTHS). 1200x800, noise seed 1, worst node %:
                # vintage 16 steps in front of focus, blue 23.6 -> 17.4 (median 8.2 ->
                # 7.9), soft-zoom there 13.8 -> 11.2; vintage in focus, red's corners
                # 10.6 -> 13.1 (seeds 2 and 3: 12.2 -> 14.5, 11.0 -> 13.0; the frame
                # model's local slope in its place read the same); the rest within 0.5
                # points. Turned dots (soft-zoom's edges) keep the drift in their radial
                # field terms.
                drift = lateral_model.at(cen) - lateral[:, i, j][:, None, :]
                if s > 1:
                    drift[np.abs(drift).max(axis=(1, 2)) < LATERAL_DRIFT_WIDTHS * widths[i, j]] = 0.0
                if np.abs(drift).max() > 0.0:
                    kwargs["channel_shifts"] = drift
            jobs.append((i, j, x, y, nearest, data[y0:y1, x0:x1], moved, kwargs))
    # A node whose dots ring it from afar (a marker's hole in the dots field) averages the
    # field's curvature over them, which a linear field cannot take out: the estimate comes
    # out blurred. Those nodes fit the quadratic field too. (vintage 1200x800 in focus,
    # noise-free, at the inner markers' nodes: max |MTF - true| up to Nyquist/2 0.027 ->
    # 0.010; PSF-vs-edge with noise, worst node 0.033 -> 0.023.) Not where the dots lie
    # to one side (frame edges and corners): the quadratic extrapolates badly there
    # (vintage's corner green 9 -> 13 %).
    typical_spread = float(np.median([sp for _, sp in ring_shape])) if ring_shape else 0.0
    for job, (off_centre, spread) in zip(jobs, ring_shape):
        if s > 1 and spread > HOLE_SPREAD * typical_spread and off_centre < HOLE_CENTRED * spread:
            job[7]["field_order"] = 2

    # The map keeps the estimation's sampling: a sharp PSF decimated to the sensor grid
    # aliases (its MTF and centroid depend on the sampling phase); restore and the
    # sensor-grid comparisons decimate it themselves (``PSFMap.on_sensor_grid``).
    # The stored kernels are wider than the solved ones by the lateral colour's reach (the
    # frame's model, or each node's own offsets where there is none): moving red and blue
    # to their offsets then keeps the light the move carries past the solved kernel's
    # edge. (soft-zoom, whose corner PSFs fill their 21 px kernel, +15 steps: the map's R-B
    # against the true PSFs' centroids, worst node, 0.052 -> 0.033 px, which is the
    # lateral-colour fit's own miss; a second pixel of margin: 0.033 too. PSF errors
    # within 0.1 points on all three lenses.)
    lat_px = np.abs(lateral[np.isfinite(lateral)])
    margin_px = int(np.ceil(lat_px.max())) if lat_px.size else 0
    kf = s * (psf_size - 1 + 2 * margin_px) + 1
    if margin_px:
        _progress(f"analyze: PSFs stored {psf_size + 2 * margin_px} px wide ({margin_px} px margin for the lateral "
                  "colour)", progress)
    psf = np.zeros((nc, ny, nx, kf, kf), np.float32)
    flags = np.zeros((nc, ny, nx), np.uint8)

    def solve(job):
        try:
            return estimate_psf_dots(job[5], job[6], **job[7])
        except CalibError as err:
            return err

    for (i, j, x, y, nearest, *_), est in zip(jobs, _map_threads(solve, jobs, workers)):
        if isinstance(est, CalibError):
            _progress(f"analyze: node ({j},{i}) at ({x:.0f},{y:.0f}): {est}; filled", progress)
            continue
        fine = est.psf_fine if est.psf_fine.ndim == 3 else est.psf_fine[None]
        psf[:, i, j] = _place_channels(fine, gi, lateral[:, i, j], s, margin_px=margin_px)
        node_flag = 0
        if est.n_saturated:
            node_flag |= FLAG_SATURATED
        if est.n_dots < 4 or est.snr < 20:
            node_flag |= FLAG_NOISY
        if nearest > 0.75 * spacing:
            node_flag |= FLAG_FILLED  # no dot near: extrapolated from the nearest ones
            if 0 < i < ny - 1 and 0 < j < nx - 1:
                n_gap += 1  # inside the frame: a gap in the dots (around an inner marker)
            else:
                n_extrap += 1
        flags[:, i, j] |= node_flag
        have[i, j] = True
        _progress(f"analyze: node ({j},{i}) at ({x:.0f},{y:.0f}): {est.n_dots} dots, nearest {nearest:.0f} px",
                  progress)
    if s > 1 and grid != "auto":  # an automatic grid is as dense as its dots allow
        note = _denser_grid_note(width_field.log_gradient_per_px, spacing, (w, h), (ny, nx))
        if note:
            notes.append(note)
    if n_extrap:
        notes.append(f"{n_extrap} of {have.size} field nodes lie beyond the dots and were extrapolated "
                     "from the nearest dots (flagged filled); frame the chart so that it overfills the "
                     "photo (its inner markers keep it registrable)")
    if n_gap:
        notes.append(f"{n_gap} of {have.size} field nodes lie in gaps of the dots (around the chart's inner "
                     "markers) and were estimated from the dots around them (flagged filled); a coarser "
                     "grid keeps its nodes off the gaps")
    if not have.any() and n_sat:
        raise CalibError(sat_msg)
    if not have.all():
        notes.append(f"{int((~have).sum())} of {have.size} field nodes had no usable dots and were filled")
    _fill_missing(psf, have, flags)
    nodes = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)
    return PSFMap(psf, nodes, tuple(channels), (w, h), s, flags), notes, lateral


def _not_dots_mask(layout: targets.Layout, reg: Registration, shape: tuple[int, int], *, grow_px: int) -> np.ndarray:
    """Pixels of the photo that are not the dots' dark field: the chart's markers with
    their white quiet zones and the paper beyond the field (grown by ``grow_px``)."""
    import cv2  # noqa: PLC0415

    h, w = shape

    def outline(corners_mm) -> np.ndarray:
        # chart -> photo along the sides too: distortion bends them
        sq = np.asarray(corners_mm, float)
        t = np.linspace(0.0, 1.0, 16, endpoint=False)[:, None]
        ring = np.vstack([a + t * (b - a) for a, b in zip(sq, np.roll(sq, -1, axis=0))])
        return np.rint(reg.chart_to_image(ring)).astype(np.int32)

    out = np.zeros((h, w), np.uint8)
    fields = [r for r in layout.regions if r.role == "dots_background"]
    if fields:
        out[:] = 1
        for r in fields:
            poly = outline([(r.x0_mm, r.y0_mm), (r.x1_mm, r.y0_mm), (r.x1_mm, r.y1_mm), (r.x0_mm, r.y1_mm)])
            cv2.fillPoly(out, [poly], 0)
    ms = layout.markers
    for m in ms.items:
        sq = np.asarray(m.corners_mm, float)
        mid = sq.mean(axis=0)
        half = 0.5 * m.side_mm
        corners = outline(mid + (sq - mid) * ((half + ms.quiet_zone_of(m)) / half))
        if (corners[:, 0].max() < -grow_px or corners[:, 1].max() < -grow_px
                or corners[:, 0].min() > w + grow_px or corners[:, 1].min() > h + grow_px):
            continue
        cv2.fillPoly(out, [corners], 1)
    if grow_px > 0 and out.any():
        out = cv2.dilate(out, np.ones((2 * grow_px + 1, 2 * grow_px + 1), np.uint8))
    return out.astype(bool)


def _noise_map(data, sat, channels, gi, layout, reg: Registration, *, grid, oversample, psf_size, progress):
    """PSFs from the random noise pattern rendered through the registered geometry
    (refined on the pattern itself; see :mod:`calib._noise_chart`)."""
    from ._noise_chart import noise_psf_map  # noqa: PLC0415

    h, w = data.shape[:2]
    xs, ys = _grid_nodes(w, h, grid)
    res = noise_psf_map(data, sat, gi, layout, reg, grid=(len(ys), len(xs)), oversample=oversample,
                        psf_size=psf_size, progress=progress)
    psf, have, flags = res.psf.copy(), res.measured.copy(), res.flags.copy()
    _fill_missing(psf, have, flags)
    nodes = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)
    return PSFMap(psf, nodes, tuple(channels), (w, h), res.oversample, flags), list(res.notes)


def noise_from_darks(
    darks: Sequence[str | os.PathLike | LinearImage], *, chart_noise: NoiseModel | None = None
) -> NoiseModel:
    """Sensor noise model from dark frames (read noise) and a chart's flat areas (gain).

    Parameters
    ----------
    darks : sequence of paths or LinearImage
        Lens-capped frames at the session's exposure.
    chart_noise : NoiseModel, optional, keyword-only
        From :func:`estimate_noise_model` on a chart photo; supplies the gain (the
        signal-dependent part), which dark frames cannot show.

    Returns
    -------
    NoiseModel
        ``read_noise`` per channel from the darks, ``gain`` from ``chart_noise`` (0 without).
    """
    imgs = _load(darks)
    _check_same_camera(imgs)
    reads = []
    channels = imgs[0].channels
    for c in range(len(channels)):
        # Differences of neighbouring pixels: fixed-pattern offsets and hot-pixel
        # clusters cancel, and the robust spread of the rest is the temporal noise.
        vals = []
        for im in imgs:
            d = np.diff(im.data[..., c].astype(np.float64), axis=1).ravel()
            vals.append(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))
        reads.append(float(np.mean(vals)))
    gains = np.asarray(chart_noise.gain) if chart_noise is not None else np.zeros(len(channels))
    return NoiseModel(tuple(channels), np.asarray(reads), gains)


def analyze_session(
    session_dir: str | os.PathLike,
    *,
    db,
    replace: bool = False,
    grid: tuple[int, int] | str | None = None,
    oversample: int | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> list[int]:
    """Analyse every focus setting of a capture session into ``db`` (one transaction each).

    Every setting is analysed before anything is written, so a photo that cannot be
    analysed (or a setting already stored without ``replace``) leaves ``db`` unchanged.

    Parameters
    ----------
    session_dir : path
        A folder with ``session.json``.
    db : calib.PSFDatabase
        Open database.
    replace : bool, keyword-only
        Replace stored calibrations of the same setting.
    grid, oversample, progress, workers : keyword-only
        As in :func:`analyze_images`.

    Returns
    -------
    list of int
        The calibration ids written, one per focus setting.

    Raises
    ------
    CalibError
        No chart shots, a photo that does not show its chart, a setting already stored.
    """
    from ._db import Calibration  # noqa: PLC0415
    from ._session import load_session  # noqa: PLC0415

    session = load_session(session_dir)
    bad = session.verify()
    if bad:
        raise CalibError(
            f"{len(bad)} file(s) of session {session_dir} are missing or changed ({bad[0]}, ...); "
            "restore them or capture again"
        )
    groups: dict[tuple[Any, Any], list] = {}
    darks = []
    for shot in session.shots:
        if shot.kind == "dark":
            darks += [session.path(f) for f in shot.files]
        elif shot.chart_path is not None:
            groups.setdefault((shot.focus_position, shot.chart_path), []).append(shot)
    if not groups:
        raise CalibError(f"{session_dir} holds no chart shots; capture a chart first")
    results = []
    for (focus, chart_path), shots in sorted(groups.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0)):
        layout_path = Path(chart_path)
        if not layout_path.is_absolute() and not layout_path.exists():
            layout_path = Path(session_dir) / layout_path
        paths = [session.path(f) for s in shots for f in s.files]
        _progress(f"analyze: focus {focus}: {len(paths)} photo(s)", progress)
        res = analyze_images(paths, layout_path, focus_position=focus, grid=grid,
                             oversample=oversample, progress=progress, workers=workers)
        for note in res.notes:
            _progress(f"analyze: note: focus {focus}: {note}", progress)
        results.append(res)
    dark_noise = None
    if darks:
        _progress(f"analyze: {len(darks)} dark frame(s) -> read noise", progress)
        dark_noise = noise_from_darks(darks, chart_noise=results[0].noise)
    # Charts of one setting combine: the PSF map from the dots/noise/combo chart, the MTF
    # from every chart of that setting (edges and stripes charts carry no PSF map).
    by_key: dict[str, list[AnalysisResult]] = {}
    for res in results:
        by_key.setdefault(describe_key(res.key), []).append(res)
    merged = []
    for label, group in by_key.items():
        with_psf = [r for r in group if r.psf_map is not None]
        if not with_psf:
            raise CalibError(
                f"session {session_dir} has only edges/stripes charts for {label}; the database stores "
                "MTF with a PSF map, so shoot a dots, noise or combo chart at that setting in the same session"
            )
        if len(with_psf) > 1:
            raise CalibError(
                f"session {session_dir} holds two PSF chart runs of {label}; analyse them separately"
            )
        mtf = tuple(m for r in group for m in r.mtf)
        merged.append((with_psf[0], mtf, [r.method for r in group]))
    stored = {describe_key(s.key): s.id for s in db.summaries()}
    if not replace:
        clash = [label for label in by_key if label in stored]
        if clash:
            raise CalibError(
                f"{db.path} already holds {clash[0]}; pass --replace to replace it"
            )
    ids = []
    for res, mtf, methods in merged:
        cal = Calibration(
            key=res.key, psf_map=res.psf_map,
            noise=dark_noise if noise_model_complete(dark_noise) else res.noise, mtf=mtf,
            pixel_pitch_um=res.metadata.pixel_pitch_um,
            metadata={"distortion": res.registration.to_dict(), "method": res.method, "charts": methods,
                      "n_images": res.n_images, "session": str(session_dir), "notes": list(res.notes)},
        )
        ids.append(db.add(cal, replace=replace))
        _progress(f"analyze: stored {describe_key(res.key)} as calibration {ids[-1]} "
                  f"({len(mtf)} MTF records)", progress)
    return ids


ProgressFn = Callable[[str], None]
