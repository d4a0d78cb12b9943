"""Spatially varying deconvolution of an in-memory image, tile row by tile row.

The work unit is one *tile row*: a strip of the frame (reflected beyond the frame
edges) in, the blended contribution of its tiles out. The local loop and the Dask
cluster run the same unit, so memory stays bounded by a few strips for any size.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calib import NoiseModel, PSFMap, sensor_grid_psf

from . import _fft
from ._borders import extract_reflected, taper_edges
from ._errors import RestoreError
from ._noise import NoiseEstimate, noise_for
from ._solvers import CLOSED_FORM, METHODS, ClosedForm, TileProblem
from ._tiling import GUARD_PER_KERNEL, GUARD_PER_KERNEL_ITERATIVE, TileLayout, plan_tiles

#: Pixels at or above this level (0..1, white = 1) count as clipped unless told otherwise.
DEFAULT_CLIP_LEVEL = 0.995
# Values below this cannot be noise around a black level: the image is not 0..1 linear.
_MIN_VALID = -0.1

Progress = Callable[[int, int], None]

#: Longest tile core, in PSF-map node spacings (longer tiles follow a fast-varying lens
#: less well: 1.25 lost 0.8 dB on the soft-corner test lens, for 15 % less transform work).
_CORE_PER_NODE_SPACING = 1.0
#: Guard margins (PSF sizes) of methods that need more than :data:`GUARD_PER_KERNEL`.
_GUARD_PER_KERNEL = {"tv": GUARD_PER_KERNEL_ITERATIVE}
#: Shortest core the PSF's variation may ask for, in node spacings (bounds the tile count).
_MIN_CORE_PER_NODE_SPACING = 0.5
#: Share of a PSF's light that may move between the tile's PSF (at the core centre) and the
#: map's PSF at the core's edge: it sets the core length from how fast the PSF changes.
#: 0.23 gives cores of 0.70 node spacings on the soft-zoom lens of the small sensor (+3.4 dB
#: over the best single PSF, +2.9 at 1.0) and 0.89 on the 24 MP sensor's map.
_MAX_EDGE_PSF_CHANGE = 0.23
#: The PSF's rate of change is this quantile over the neighbouring node pairs: a few badly
#: measured nodes (an estimated map) must not shrink every tile (the maximum would).
_CHANGE_QUANTILE = 0.75
# Measured and rejected: an "interpolated inverse" (tiles = node cells + fades, each
# restored with the inverse of each of its 4 corner nodes, blended with the map's bilinear
# weights). Soft-zoom +0.45 dB, but the soft-corner test lens lost 4.7 dB (at any strength:
# a strong corner inverse applied to the half of the blend that a sharp centre node blurred
# little over-sharpens it; the inverse of a blend is not the blend of inverses), and 24 MP
# wiener took 2.8x as long (1 forward + 4 inverse transforms per tile).


@dataclass(frozen=True)
class RestoreResult:
    """A restored image and how it was restored.

    Attributes
    ----------
    image : ndarray, float32, shape of the input
        Restored linear image (not clipped: values slightly outside 0..1 are kept).
    method : str
    strength : float
        Multiplier of the noise-matched regularisation weight that was used.
    noise_sigma : tuple of float
        Noise standard deviation per channel (0..1 units) the weights followed from.
    tile_count : int
    tile_fft_px : tuple of int
        (rows, cols) of each tile's FFT grid.
    clipped_fraction : float
        Share of pixels excluded from the data term as clipped.
    seconds : float
        Wall time of the restore.
    """

    image: np.ndarray
    method: str
    strength: float
    noise_sigma: tuple[float, ...]
    tile_count: int
    tile_fft_px: tuple[int, int]
    clipped_fraction: float
    seconds: float


@dataclass
class _Job:
    """Everything a worker needs to restore tile rows (picklable)."""

    layout: TileLayout
    psfs: list[list[list[np.ndarray]]]  # [row][col][channel] -> PSF
    noise: NoiseEstimate
    method: str
    strength: float
    clip_level: float | None
    mask: np.ndarray | None  # full-frame clipped mask (rare: user-given)
    options: dict[str, Any] = field(default_factory=dict)
    grad_energy: tuple[float, ...] | None = None
    grad_abs: tuple[float, ...] | None = None
    psf_keys: list[list[list[str]]] | None = None  # digests of ``psfs`` (filter cache keys)
    group: str = ""  # cache group: the PSF map this job comes from
    psf_map: PSFMap | None = None  # for the PSF's variation across each tile (linear filters)
    channels: list[int] = field(default_factory=list)  # map channel of each image channel


def image_gradient_stats(image: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per channel: E|grad|^2 (both axes summed) and mean |grad| (axes averaged).

    Computed on row blocks (every few blocks on a large frame) without full-frame temporaries.
    """
    img = _as_3d(image)
    h = img.shape[0]
    rows_per = max(2, 500_000 // max(1, img[0].size))
    n_blocks = int(np.ceil(h / rows_per))
    stride = max(1, n_blocks // 4)
    e2 = np.zeros(img.shape[2])
    ea = np.zeros(img.shape[2])
    n = 0
    for b in range(0, n_blocks, stride):
        blk = np.asarray(img[b * rows_per : (b + 1) * rows_per + 1], np.float32)
        if blk.shape[0] < 2:
            continue
        gx = np.diff(blk[:-1], axis=1)
        gy = np.diff(blk, axis=0)
        e2 += (gx * gx).mean(axis=(0, 1)) + (gy * gy).mean(axis=(0, 1))
        ea += 0.5 * (np.abs(gx).mean(axis=(0, 1)) + np.abs(gy).mean(axis=(0, 1)))
        n += 1
    n = max(n, 1)
    return tuple(float(v) for v in e2 / n), tuple(float(v) for v in ea / n)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise RestoreError(
            f"unknown restore method {method!r}; choose one of {', '.join(sorted(METHODS))}"
        )


def _as_3d(image: np.ndarray) -> np.ndarray:
    return image[..., None] if image.ndim == 2 else image


def check_image(image: np.ndarray, *, name: str = "the image", clip_level: float | None = None) -> int:
    """Raise :class:`RestoreError` if ``image`` holds NaN/inf or clearly negative values.

    Checked in row blocks so that no full-frame temporary is made. Returns the
    number of samples at or above ``clip_level`` (counted in the same pass; 0 without it).
    """
    if image.ndim not in (2, 3):
        raise RestoreError(f"{name} has shape {image.shape}; expected (H, W) or (H, W, C)")
    if not np.issubdtype(image.dtype, np.floating):
        raise RestoreError(f"{name} is {image.dtype}; pass a linear float image scaled 0..1")
    step = max(1, 4_000_000 // max(1, image[0].size))
    clipped = 0
    for y0 in range(0, image.shape[0], step):
        block = image[y0 : y0 + step]
        lo, hi = float(np.min(block)), float(np.max(block))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise RestoreError(
                f"{name} contains NaN or infinite values (from row {y0}); repair or re-export it before restoring"
            )
        if lo < _MIN_VALID:
            raise RestoreError(
                f"{name} has values down to {lo:.3g}, far below black; pass a linear image scaled 0..1 "
                "after black-level subtraction"
            )
        if clip_level is not None and hi >= clip_level:
            clipped += int(np.count_nonzero(block >= clip_level))
    return clipped


def _channel_map(psf_map: PSFMap, n_channels: int) -> list[int]:
    m = psf_map.psf.shape[0]
    if m == n_channels:
        return list(range(n_channels))
    if m == 1:
        return [0] * n_channels
    raise RestoreError(
        f"the calibration has {m} colour channels ({', '.join(psf_map.channels)}) but the image has "
        f"{n_channels}; restore an image developed like the calibration shots"
    )


def plan_job(
    image_shape: tuple[int, ...],
    psf_map: PSFMap,
    *,
    method: str,
    strength: float,
    noise: NoiseEstimate,
    tile: int | None,
    clip_level: float | None,
    mask: np.ndarray | None,
    options: Mapping[str, Any] | None,
) -> _Job:
    """Tile layout and per-tile PSFs for an image of ``image_shape``."""
    h, w = image_shape[:2]
    c = 1 if len(image_shape) == 2 else image_shape[2]
    if tuple(psf_map.image_size) != (w, h):
        raise RestoreError(
            f"the image is {w}x{h} pixels but the calibration is for {psf_map.image_size[0]}x"
            f"{psf_map.image_size[1]}; restore full-size frames from the calibrated camera (no crop or resize)"
        )
    chans = _channel_map(psf_map, c)
    k = psf_map.kernel_size
    if psf_map.sampling != 1:
        k = sensor_grid_psf(psf_map.psf[0, 0, 0], psf_map.sampling).shape[0]
    max_core = _max_core_px(psf_map)
    guard = _GUARD_PER_KERNEL.get(method, GUARD_PER_KERNEL)
    layout = plan_tiles(
        h, w, kernel_size=k, tile_px=tile, max_core_px=max_core if not tile else None, guard_per_kernel=guard
    )
    psfs = []
    for i in range(layout.y.count):
        row = []
        for j in range(layout.x.count):
            xc, yc = layout.core_centre_xy(i, j)
            row.append(
                [sensor_grid_psf(psf_map.psf_at(xc, yc, ch), psf_map.sampling) for ch in chans]
            )
        psfs.append(row)
    keys = [[[_fft.OTFCache.psf_key(p) for p in chans_] for chans_ in row] for row in psfs]
    group = _fft.OTFCache.psf_key(psf_map.psf.reshape(-1, psf_map.psf.shape[-1]))
    return _Job(
        layout, psfs, noise, method, strength, clip_level, mask, dict(options or {}),
        psf_keys=keys, group=group, psf_map=psf_map, channels=chans,
    )


def _rms_offset(weights: np.ndarray) -> float:
    """Root-mean-square distance from the core centre, weighted by the blending weight."""
    u = np.arange(len(weights)) - (len(weights) - 1) / 2.0
    return float(np.sqrt((weights * u * u).sum() / weights.sum()))


def _tile_spread_key(job: _Job, i: int, j: int) -> tuple:
    """What the PSF's spread across tile (i, j) depends on (empty: the map does not vary)."""
    m = job.psf_map
    if m is None or m.psf.shape[1] * m.psf.shape[2] == 1:
        return ()
    lay = job.layout
    xc, yc = lay.core_centre_xy(i, j)
    sx, sy = _rms_offset(lay.x.weights[j]), _rms_offset(lay.y.weights[i])
    return (job.group, round(xc, 2), round(yc, 2), round(sx, 2), round(sy, 2))


def _tile_spread(job: _Job, i: int, j: int) -> np.ndarray | None:
    """The PSF's change across tile (i, j): the (C, 2, k, k) differences h(c + s) - h(c - s)
    along x and y (s = rms offset in the core), None when the map does not vary there."""
    key = _tile_spread_key(job, i, j)
    if not key:
        return None
    m = job.psf_map
    _, xc, yc, sx, sy = key
    deltas = []
    for ch in job.channels:
        pair = []
        for dx, dy in ((sx, 0.0), (0.0, sy)):
            a = sensor_grid_psf(m.psf_at(xc + dx, yc + dy, ch), m.sampling)
            b = sensor_grid_psf(m.psf_at(xc - dx, yc - dy, ch), m.sampling)
            pair.append(a - b)
        deltas.append(pair)
    d = np.asarray(deltas, np.float32)
    return d if np.any(d) else None


def _max_core_px(psf_map: PSFMap) -> int | None:
    """Longest tile core that keeps one PSF per tile close to the map across the core.

    The PSF changes between neighbouring nodes by an L1 distance (light moved) of ``r``
    per pixel of distance (a high quantile over the map's node pairs, axes and channels);
    a core of length L then differs at its edge by about r L / 2 from its centre PSF,
    which :data:`_MAX_EDGE_PSF_CHANGE` bounds. Between 0.5 and 1 node spacing.
    """
    psf = psf_map.psf.astype(np.float32)
    spacing, rates = [], []
    for axis, nodes in ((2, psf_map.node_x), (1, psf_map.node_y)):
        if len(nodes) < 2:
            continue
        gaps = np.diff(nodes)
        spacing.append(float(np.min(gaps)))
        l1 = np.abs(np.diff(psf, axis=axis)).sum(axis=(-2, -1))  # (C, ny', nx')
        shape = [1, 1, 1]
        shape[axis] = len(gaps)
        rates.append((l1 / gaps.reshape(shape)).ravel())
    if not spacing:
        return None
    rate = float(np.quantile(np.concatenate(rates), _CHANGE_QUANTILE))
    core = min(spacing) * _CORE_PER_NODE_SPACING
    if rate > 0:
        core = min(core, max(2 * _MAX_EDGE_PSF_CHANGE / rate, _MIN_CORE_PER_NODE_SPACING * min(spacing)))
    return int(core)


def strip_bounds(job: _Job, i: int, width: int) -> tuple[int, int, int, int]:
    """Rows and columns (y0, y1, x0, x1) of tile row ``i``'s input strip (may exceed the frame)."""
    ly, lx = job.layout.y, job.layout.x
    y0 = ly.starts_px[i] - ly.guard_lo_px
    return y0, y0 + ly.fft_len, -lx.guard_lo_px, width + lx.guard_hi_px


def _tile_window(
    src: np.ndarray, origin: tuple[int, int], y0: int, y1: int, x0: int, x1: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Frame window [y0:y1, x0:x1] of ``src`` (which starts at frame ``origin``) as a
    contiguous (h, w, C) float32 copy (into ``out`` when given); samples beyond ``src``
    are mirrored in (``src`` is then the whole frame)."""
    oy, ox = origin
    return _as_3d(extract_reflected(_as_3d(src), y0 - oy, y1 - oy, x0 - ox, x1 - ox, out=out))


_scratch = threading.local()


def _scratch_array(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A per-thread work array, reused from tile to tile (no fresh pages to fault in)."""
    arr = getattr(_scratch, name, None)
    if arr is None or arr.shape != shape or arr.dtype != dtype:
        arr = np.empty(shape, dtype)
        setattr(_scratch, name, arr)
    return arr


def _tile_mask(
    job: _Job, mask_src: np.ndarray | None, origin: tuple[int, int], tile: np.ndarray, bounds: tuple[int, ...]
) -> np.ndarray | None:
    """(h, w, C) float32 validity mask of a tile (0 = clipped), or None when nothing is clipped."""
    if mask_src is not None:
        clipped = _tile_window(mask_src, origin, *bounds) > 0.5
        if tile.shape[2] > 1 and clipped.shape[2] == 1:
            clipped = np.broadcast_to(clipped, tile.shape)
    elif job.clip_level is not None:
        # max() first: most tiles have no clipped pixel, and one reduction is cheap.
        if float(tile.max()) < job.clip_level:
            return None
        clipped = tile >= job.clip_level
    else:
        return None
    if not clipped.any():
        return None
    return (~clipped).astype(np.float32)


def solve_tile(
    src: np.ndarray,
    job: _Job,
    i: int,
    j: int,
    mask_src: np.ndarray | None = None,
    origin: tuple[int, int] = (0, 0),
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Tile (i, j), all channels: its restored core, multiplied by the blending weights.

    ``src`` holds the frame (or a strip of it starting at frame ``origin``).
    Returns (core rows, core cols, C) float32: a view into ``out`` (a reused
    (core rows, FFT cols, C) float32 buffer) when given, else a new array.
    """
    ly, lx = job.layout.y, job.layout.x
    n_ch = 1 if src.ndim == 2 else src.shape[2]
    ty0 = ly.starts_px[i] - ly.guard_lo_px
    tx0 = lx.starts_px[j] - lx.guard_lo_px
    bounds = (ty0, ty0 + ly.fft_len, tx0, tx0 + lx.fft_len)
    tile = _tile_window(src, origin, *bounds, out=_scratch_array("tile", (*job.layout.fft_shape, n_ch), np.float32))
    valid = _tile_mask(job, mask_src, origin, tile, bounds)
    cy0, cy1 = ly.guard_lo_px, ly.guard_lo_px + ly.core_px
    cx0, cx1 = lx.guard_lo_px, lx.guard_lo_px + lx.core_px
    # Every 8th row and column: the level of the core, at a small share of a full pass.
    means = tile[cy0:cy1:8, cx0:cx1:8].mean(axis=(0, 1), dtype=np.float64)
    sigmas = [job.noise.sigma_for(ch, float(means[ch])) for ch in range(n_ch)]
    taper_edges(tile, max(4, min(ly.guard_lo_px, lx.guard_lo_px) // 2), channels_last=True, mean=means)
    if out is None:
        out = np.empty((ly.core_px, lx.fft_len, n_ch), np.float32)
    closed = CLOSED_FORM.get(job.method)
    if closed is not None and valid is None:
        _solve_closed_form(tile, job, closed, i, j, sigmas, out)
    else:
        x = tile
        for ch in range(n_ch):
            y = np.ascontiguousarray(tile[..., ch])
            m = None if valid is None else np.ascontiguousarray(valid[..., ch])
            x[..., ch] = METHODS[job.method](_problem(job, i, j, ch, y, sigmas[ch], m))
        out[...] = x[cy0:cy1]
    res = out[:, cx0:cx1]
    _apply_weights(res, ly.weights[i], lx.weights[j])
    return res


def _problem(job: _Job, i: int, j: int, ch: int, y: np.ndarray, sigma: float, mask: np.ndarray | None) -> TileProblem:
    psf = job.psfs[i][j][ch]
    otf = _fft.OTF_CACHE.otf(psf, job.layout.fft_shape, group=job.group) if y is not None else None
    return TileProblem(
        y,
        otf,
        sigma,
        job.strength,
        mask,
        job.options,
        grad_energy=job.grad_energy[ch] if job.grad_energy else None,
        grad_abs=job.grad_abs[ch] if job.grad_abs else None,
        mean_h2=float(np.square(psf, dtype=np.float64).sum()),
    )


def _solve_closed_form(
    tile: np.ndarray, job: _Job, closed: ClosedForm, i: int, j: int, sigmas: list[float], out: np.ndarray
) -> None:
    """All channels of an interleaved tile through one forward and one inverse
    transform, with one multiply by the tile's (cached) filter in between; the core
    rows of the result go to ``out``."""
    shape = job.layout.fft_shape
    spec = _fft.rfft2_planar(tile, out=_scratch_array("spec", (tile.shape[2], shape[0], shape[1] // 2 + 1), np.complex64))
    spec *= _closed_form_filter(job, closed, i, j, sigmas)
    ly = job.layout.y
    # The filter carries the 1 / N of the inverse transform (one pass less per tile).
    _fft.irfft2_interleaved(spec, shape, rows=slice(ly.guard_lo_px, ly.guard_lo_px + ly.core_px), out=out, scaled=False)


def _closed_form_filter(job: _Job, closed: ClosedForm, i: int, j: int, sigmas: list[float]) -> np.ndarray:
    """The (C, fy, fx // 2 + 1) complex64 filter of tile (i, j) (normalised for an
    unscaled inverse transform), from the cache when possible."""
    shape = job.layout.fft_shape
    # The weights need no OTF (Parseval), so a cached filter costs no transform at all.
    weights = tuple(
        float(np.float32(closed.weight(_problem(job, i, j, ch, None, sigmas[ch], None))))  # type: ignore[arg-type]
        for ch in range(len(sigmas))
    )
    psf_keys = tuple(job.psf_keys[i][j]) if job.psf_keys else tuple(
        _fft.OTFCache.psf_key(p) for p in job.psfs[i][j]
    )
    key = ("filter/N", job.method, psf_keys, shape, weights, _tile_spread_key(job, i, j))
    filt = _fft.OTF_CACHE.get(key)
    if filt is None:
        deltas = _tile_spread(job, i, j)
        # The PSF varies across the tile: the filter that is MSE-optimal for that spread
        # of PSFs (not only the centre one) adds the OTF's variance to |H|^2, which damps
        # the frequencies where the tile's PSF is uncertain (soft-zoom lens: +0.3 dB).
        spread = None if deltas is None else _fft.otf_variance(deltas, shape)
        # All channels in one planar stack: batched transforms, contiguous passes.
        filt = _fft.inverse_filter_from_psfs(
            np.stack(job.psfs[i][j]), shape, closed.prior(shape), np.array(weights, np.float32),
            normalised=True, spread=spread,
        )
        _fft.OTF_CACHE.put(key, filt, job.group)
    return filt


def _weight_bands(w: np.ndarray) -> tuple[int, int]:
    """Numbers of leading and trailing samples of a blending weight that are not 1."""
    inner = np.flatnonzero(w == 1.0)
    if inner.size == 0:
        return len(w), 0
    return int(inner[0]), int(len(w) - 1 - inner[-1])


def _apply_weights(res: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> None:
    """(h, w, C) ``res *= wy[:, None] * wx[None, :]``, touching only the cross-fade bands
    (the weights are exactly 1 inside)."""
    lo, hi = _weight_bands(wy)
    if lo:
        res[:lo] *= wy[:lo, None, None]
    if hi and lo < len(wy):
        res[len(wy) - hi :] *= wy[len(wy) - hi :, None, None]
    lo, hi = _weight_bands(wx)
    n_ch = res.shape[2]
    for cols in ((slice(0, lo) if lo else None), (slice(len(wx) - hi, None) if hi and lo < len(wx) else None)):
        if cols is None:
            continue
        band = res[:, cols]
        # Rows of (columns x channels) samples are contiguous: scale them as flat rows with
        # the weights repeated per channel (an inner loop over C = 3 samples is slow).
        flat = np.lib.stride_tricks.as_strided(
            band, shape=(band.shape[0], band.shape[1] * n_ch), strides=(band.strides[0], band.strides[2])
        ) if band.strides[1] == n_ch * band.strides[2] else None
        if flat is None:
            band *= wx[cols, None]
        else:
            flat *= np.repeat(wx[cols], n_ch)


def restore_row(
    strip: np.ndarray,
    job: _Job,
    i: int,
    mask_strip: np.ndarray | None = None,
    pool: ThreadPoolExecutor | None = None,
    origin: tuple[int, int] | None = None,
) -> np.ndarray:
    """Restore tile row ``i`` from its input ``strip`` (see :func:`strip_bounds`).

    Returns the row's blended contribution, shape (core rows, W, C), float32: the
    rows ``starts_px[i] .. + core_px`` of the result, already multiplied by the
    blending weights (contributions of all rows add up to the restored frame).
    With a thread ``pool`` the tiles of the row are solved concurrently.
    """
    ly, lx = job.layout.y, job.layout.x
    if origin is None:
        origin = (ly.starts_px[i] - ly.guard_lo_px, -lx.guard_lo_px)
    n_ch = _as_3d(strip).shape[2]
    out = np.zeros((ly.core_px, lx.length_px, n_ch), np.float32)
    run = lambda j: solve_tile(strip, job, i, j, mask_strip, origin)  # noqa: E731
    results = pool.map(run, range(lx.count)) if pool is not None else map(run, range(lx.count))
    for j, res in enumerate(results):
        xs = lx.starts_px[j]
        out[:, xs : xs + lx.core_px] += res
    return out


class _DirectWriter:
    """Writes weighted tile cores straight into a float ``out`` in raster order of
    tiles: a region no earlier tile touched is assigned, an overlap is added to
    (no zeroed full-frame buffer, no second pass)."""

    def __init__(self, out: np.ndarray, layout: TileLayout) -> None:
        self.out = _as_3d(out)
        self.layout = layout

    def add(self, i: int, j: int, res: np.ndarray) -> None:
        ly, lx = self.layout.y, self.layout.x
        y0, x0 = ly.starts_px[i], lx.starts_px[j]
        y1, x1 = y0 + ly.core_px, x0 + lx.core_px
        yf = ly.starts_px[i - 1] + ly.core_px if i > 0 else y0  # rows above yf: written by row i-1
        xf = lx.starts_px[j - 1] + lx.core_px if j > 0 else x0  # cols left of xf: by tile j-1
        r = res
        o = self.out
        if yf > y0:
            o[y0:yf, x0:x1] += r[: yf - y0]
        if xf > x0:
            o[yf:y1, x0:xf] += r[yf - y0 :, : xf - x0]
        o[yf:y1, xf:x1] = r[yf - y0 :, xf - x0 :]


class _RowAccumulator:
    """Adds tile-row contributions and hands finished rows to ``out`` (bounded buffer)."""

    def __init__(self, out: np.ndarray, layout: TileLayout) -> None:
        self.out = _as_3d(out)
        self.layout = layout
        h, w, c = self.out.shape
        self.buf = np.zeros((layout.y.core_px, w, c), np.float32)
        self.y0 = 0

    def add(self, i: int, contribution: np.ndarray) -> None:
        ly = self.layout.y
        s = ly.starts_px[i]
        assert s == self.y0, "tile rows must be added in order"
        self.buf += contribution
        nxt = ly.starts_px[i + 1] if i + 1 < ly.count else ly.length_px
        n = nxt - self.y0
        self._flush(self.y0, self.buf[:n])
        keep = ly.core_px - n
        self.buf[:keep] = self.buf[n:].copy()
        self.buf[keep:] = 0
        self.y0 = nxt

    def _flush(self, y0: int, rows: np.ndarray) -> None:
        dst = self.out[y0 : y0 + rows.shape[0]]
        if np.issubdtype(dst.dtype, np.integer):
            top = np.iinfo(dst.dtype).max
            dst[...] = np.clip(rows * top + 0.5, 0, top).astype(dst.dtype)
        else:
            dst[...] = rows


def restore_image(
    image: np.ndarray,
    psf_map: PSFMap,
    *,
    method: str = "wiener",
    strength: float | None = None,
    noise: float | np.ndarray | NoiseModel | NoiseEstimate | None = None,
    tile: int | None = None,
    saturated: float | bool | np.ndarray | None = None,
    progress: Progress | None = None,
    options: Mapping[str, Any] | None = None,
    out: np.ndarray | None = None,
    scheduler: Any = None,
    threads: int | None = None,
) -> RestoreResult:
    """Deconvolve ``image`` with the spatially varying ``psf_map``, tile by tile.

    Parameters
    ----------
    image : ndarray, float32, shape (H, W) or (H, W, C)
        Linear image scaled 0..1 (after black level), the same size as the calibration.
    psf_map : calib.PSFMap
        PSF grid per channel (one channel is used for every image channel).
    method : str
        ``"wiener"``, ``"tikhonov"``, ``"rl"`` or ``"tv"`` (see ``restore.METHODS``).
    strength : float, optional
        Multiplier of the noise-matched regularisation weight (default 1).
    noise : float, array, calib.NoiseModel or NoiseEstimate, optional
        Noise standard deviation (per channel) or model; measured from the image
        (wavelet MAD) when omitted.
    tile : int, optional
        Tile side including guard margins, pixels; default from the PSF size. A value
        at least the frame size restores the frame as one tile.
    saturated : float, bool or ndarray, optional
        Clipping level (default 0.995), ``False`` for none, or a boolean mask of
        clipped pixels; clipped pixels are left out of the data term.
    progress : callable(done, total), optional
        Called after each tile row.
    options : mapping, optional
        Method settings (``iterations``, ``tol``, ``damping`` for ``rl``, ...).
    out : ndarray, optional
        Where to write the result (same shape; float, or unsigned integer scaled
        to its full range and clipped). Lets a huge frame go straight into a
        uint16 buffer or a memory map.
    scheduler : str or distributed.Client, optional
        Run the tile rows on a Dask cluster.
    threads : int, optional
        Tiles solved at once in this process (default: the number of cores).

    Returns
    -------
    RestoreResult

    Examples
    --------
    >>> import calib
    >>> k = np.zeros((1, 1, 1, 3, 3), np.float32); k[..., 1, 1] = 1
    >>> m = calib.PSFMap(k, np.array([[[32.0, 32.0]]]), ("Y",), (64, 64))
    >>> r = restore_image(np.full((64, 64), 0.5, np.float32), m, noise=0.01)
    >>> bool(np.allclose(r.image, 0.5, atol=1e-4))
    True
    """
    t0 = time.perf_counter()
    _check_method(method)
    strength = 1.0 if strength is None else float(strength)
    if not strength > 0:
        raise RestoreError(f"strength must be positive (got {strength}); use e.g. 0.5 for sharper, 2 for smoother")
    mask = None
    clip_level: float | None = DEFAULT_CLIP_LEVEL
    if isinstance(saturated, np.ndarray):
        if saturated.shape != image.shape:
            raise RestoreError(f"the clipped-pixel mask has shape {saturated.shape}; expected {image.shape}")
        mask, clip_level = saturated.astype(bool), None
    elif saturated is False:
        clip_level = None
    elif saturated is not None and saturated is not True:
        clip_level = float(saturated)
    n_clipped = check_image(image, clip_level=clip_level)
    est = noise_for(image, noise, saturated=clip_level)
    job = plan_job(
        image.shape,
        psf_map,
        method=method,
        strength=strength,
        noise=est,
        tile=tile,
        # No clipped sample anywhere (counted in the validity pass): tiles skip their own check.
        clip_level=clip_level if n_clipped else None,
        mask=mask,
        options=options,
    )
    job.grad_energy, job.grad_abs = image_gradient_stats(image)
    if out is None:
        out = np.empty(image.shape, np.float32)
    elif out.shape != image.shape:
        raise RestoreError(f"the output buffer has shape {out.shape}; expected {image.shape}")
    if scheduler is not None:
        from ._cluster import run_rows_on_cluster

        run_rows_on_cluster(image, job, out, scheduler=scheduler, progress=progress, mask=mask)
    else:
        run_rows_locally(image, job, out, mask=mask, progress=progress, threads=threads)
    if mask is not None:
        clipped_fraction = float(mask.mean())
    elif clip_level is not None:
        clipped_fraction = n_clipped / image.size
    else:
        clipped_fraction = 0.0
    return RestoreResult(
        image=out,
        method=method,
        strength=strength,
        noise_sigma=tuple(float(s) for s in est.sigma),
        tile_count=job.layout.count,
        tile_fft_px=job.layout.fft_shape,
        clipped_fraction=clipped_fraction,
        seconds=time.perf_counter() - t0,
    )


def run_rows_locally(
    image: np.ndarray,
    job: _Job,
    out: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
) -> None:
    """Restore every tile of ``image`` into ``out`` in this process.

    Tiles are solved by a thread pool (one FFT thread each, so cores are not
    oversubscribed) in a bounded window of in-flight tiles, and written in raster
    order by this thread.
    """
    lay = job.layout
    n_rows, n_cols = lay.y.count, lay.x.count
    threads = max(1, threads or _fft.WORKERS)
    direct = np.issubdtype(out.dtype, np.floating)
    writer = _DirectWriter(out, lay) if direct else None
    acc = None if direct else _RowAccumulator(out, lay)
    row_buf = None
    order = [(i, j) for i in range(n_rows) for j in range(n_cols)]

    def emit(i: int, j: int, res: np.ndarray) -> None:
        nonlocal row_buf
        if writer is not None:
            writer.add(i, j, res)
        else:
            if row_buf is None:
                row_buf = np.zeros((lay.y.core_px, lay.x.length_px, res.shape[2]), np.float32)
            xs = lay.x.starts_px[j]
            row_buf[:, xs : xs + lay.x.core_px] += res
            if j == n_cols - 1:
                acc.add(i, row_buf)
                row_buf = None
        if j == n_cols - 1 and progress is not None:
            progress(i + 1, n_rows)

    n_ch = _as_3d(image).shape[2]
    buf_shape = (lay.y.core_px, lay.x.fft_len, n_ch)
    if threads == 1 or len(order) == 1:
        buf = np.empty(buf_shape, np.float32)
        for i, j in order:
            emit(i, j, solve_tile(image, job, i, j, mask, out=buf))
        return
    window = 2 * threads
    # Result buffers circulate: a tile takes a free one, the writer returns it. One per
    # tile in flight (plus the one being written) bounds memory and never blocks a tile
    # that the writer waits for.
    free: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(window + 1):
        free.put(np.empty(buf_shape, np.float32))

    def run(i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        buf = free.get()
        return solve_tile(image, job, i, j, mask, out=buf), buf

    with ThreadPoolExecutor(threads, initializer=_fft.set_thread_workers, initargs=(1,)) as pool:
        pending: deque = deque()
        for i, j in order:
            pending.append(((i, j), pool.submit(run, i, j)))
            if len(pending) >= window:
                (pi, pj), fut = pending.popleft()
                res, buf = fut.result()
                emit(pi, pj, res)
                free.put(buf)
        while pending:
            (pi, pj), fut = pending.popleft()
            res, buf = fut.result()
            emit(pi, pj, res)
            free.put(buf)
