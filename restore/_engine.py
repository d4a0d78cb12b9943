"""Spatially varying deconvolution of an in-memory image, tile row by tile row.

The work unit is one *tile row*: a strip of the frame (reflected beyond the frame
edges) in, the blended contribution of its tiles out. The local loop and the Dask
cluster run the same unit, so memory stays bounded by a few strips for any size.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calib import NoiseModel, PSFMap

from . import _fft
from ._borders import extract_reflected, taper_edges
from ._errors import RestoreError
from ._noise import NoiseEstimate, noise_for
from ._solvers import METHODS, TileProblem
from ._tiling import TileLayout, plan_tiles

#: Pixels at or above this level (0..1, white = 1) count as clipped unless told otherwise.
DEFAULT_CLIP_LEVEL = 0.995
# Values below this cannot be noise around a black level: the image is not 0..1 linear.
_MIN_VALID = -0.1

Progress = Callable[[int, int], None]


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


def check_image(image: np.ndarray, *, name: str = "the image") -> None:
    """Raise :class:`RestoreError` if ``image`` holds NaN/inf or clearly negative values.

    Checked in row blocks so that no full-frame temporary is made.
    """
    if image.ndim not in (2, 3):
        raise RestoreError(f"{name} has shape {image.shape}; expected (H, W) or (H, W, C)")
    if not np.issubdtype(image.dtype, np.floating):
        raise RestoreError(f"{name} is {image.dtype}; pass a linear float image scaled 0..1")
    step = max(1, 4_000_000 // max(1, image[0].size))
    for y0 in range(0, image.shape[0], step):
        block = image[y0 : y0 + step]
        lo = float(np.min(block))
        if not np.isfinite(lo) or not np.isfinite(float(np.max(block))):
            raise RestoreError(
                f"{name} contains NaN or infinite values (from row {y0}); repair or re-export it before restoring"
            )
        if lo < _MIN_VALID:
            raise RestoreError(
                f"{name} has values down to {lo:.3g}, far below black; pass a linear image scaled 0..1 "
                "after black-level subtraction"
            )


def _psf_for_sensor(psf: np.ndarray, sampling: int) -> np.ndarray:
    """A PSF sampled ``sampling`` times per pixel, resampled to sensor pixels (odd, sum 1)."""
    if sampling == 1:
        return psf
    from scipy.ndimage import zoom

    small = np.clip(zoom(psf.astype(np.float64), 1.0 / sampling, order=1), 0, None)
    if small.shape[0] % 2 == 0:
        small = np.pad(small, ((0, 1), (0, 1)))
    return (small / small.sum()).astype(np.float32)


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
        k = _psf_for_sensor(psf_map.psf[0, 0, 0], psf_map.sampling).shape[0]
    spacing = []
    for nodes in (psf_map.node_x, psf_map.node_y):
        if len(nodes) > 1:
            spacing.append(float(np.min(np.diff(nodes))))
    max_core = int(min(spacing)) if spacing else None
    layout = plan_tiles(h, w, kernel_size=k, tile_px=tile, max_core_px=max_core if not tile else None)
    psfs = []
    for i in range(layout.y.count):
        row = []
        for j in range(layout.x.count):
            xc, yc = layout.core_centre_xy(i, j)
            row.append(
                [_psf_for_sensor(psf_map.psf_at(xc, yc, ch), psf_map.sampling) for ch in chans]
            )
        psfs.append(row)
    return _Job(layout, psfs, noise, method, strength, clip_level, mask, dict(options or {}))


def strip_bounds(job: _Job, i: int, width: int) -> tuple[int, int, int, int]:
    """Rows and columns (y0, y1, x0, x1) of tile row ``i``'s input strip (may exceed the frame)."""
    ly, lx = job.layout.y, job.layout.x
    y0 = ly.starts_px[i] - ly.guard_lo_px
    return y0, y0 + ly.fft_len, -lx.guard_lo_px, width + lx.guard_hi_px


def restore_row(
    strip: np.ndarray,
    job: _Job,
    i: int,
    mask_strip: np.ndarray | None = None,
    pool: ThreadPoolExecutor | None = None,
) -> np.ndarray:
    """Restore tile row ``i`` from its input ``strip`` (see :func:`strip_bounds`).

    Returns the row's blended contribution, shape (core rows, W, C), float32: the
    rows ``starts_px[i] .. + core_px`` of the result, already multiplied by the
    blending weights (contributions of all rows add up to the restored frame).
    With a thread ``pool`` the tiles of the row are solved concurrently.
    """
    ly, lx = job.layout.y, job.layout.x
    strip = _as_3d(strip)
    n_ch = strip.shape[2]
    out = np.zeros((ly.core_px, lx.length_px, n_ch), np.float32)
    mask3 = _as_3d(mask_strip) if mask_strip is not None else None
    tasks = [(j, ch) for j in range(lx.count) for ch in range(n_ch)]
    run = lambda t: _solve_tile(strip, mask3, job, i, *t)  # noqa: E731
    results = pool.map(run, tasks) if pool is not None else map(run, tasks)
    for (j, ch), res in zip(tasks, results):
        xs = lx.starts_px[j]
        out[:, xs : xs + lx.core_px, ch] += res
    return out


def _solve_tile(
    strip: np.ndarray, mask3: np.ndarray | None, job: _Job, i: int, j: int, ch: int
) -> np.ndarray:
    """One tile, one channel: its weighted core."""
    ly, lx = job.layout.y, job.layout.x
    xs = lx.starts_px[j]
    y = np.array(strip[:, xs : xs + lx.fft_len, ch], dtype=np.float32)
    mask = None
    if mask3 is not None:
        mask = (~mask3[:, xs : xs + lx.fft_len, ch]).astype(np.float32)
    elif job.clip_level is not None:
        clipped = y >= job.clip_level
        if clipped.any():
            mask = (~clipped).astype(np.float32)
    cy0, cy1 = ly.guard_lo_px, ly.guard_lo_px + ly.core_px
    cx0, cx1 = lx.guard_lo_px, lx.guard_lo_px + lx.core_px
    sigma = job.noise.sigma_for(ch, float(y[cy0:cy1:4, cx0:cx1:4].mean()))
    taper_edges(y, max(4, min(ly.guard_lo_px, lx.guard_lo_px) // 2))
    psf = job.psfs[i][j][ch]
    otf = _fft.OTF_CACHE.otf(psf, job.layout.fft_shape)
    prob = TileProblem(
        y,
        otf,
        sigma,
        job.strength,
        mask,
        job.options,
        grad_energy=job.grad_energy[ch] if job.grad_energy else None,
        grad_abs=job.grad_abs[ch] if job.grad_abs else None,
    )
    x = METHODS[job.method](prob)
    res = x[cy0:cy1, cx0:cx1]
    res *= ly.weights[i][:, None]
    res *= lx.weights[j][None, :]
    return res


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
    check_image(image)
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
    est = noise_for(image, noise, saturated=clip_level)
    job = plan_job(
        image.shape,
        psf_map,
        method=method,
        strength=strength,
        noise=est,
        tile=tile,
        clip_level=clip_level,
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
        clipped_fraction = _clipped_fraction(image, clip_level)
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
    """Restore every tile row of ``image`` into ``out`` in this process."""
    acc = _RowAccumulator(out, job.layout)
    n = job.layout.y.count
    w = image.shape[1]
    threads = threads or _fft.WORKERS
    pool = (
        ThreadPoolExecutor(threads, initializer=_fft.set_thread_workers, initargs=(1,))
        if threads > 1
        else None
    )
    try:
        for i in range(n):
            y0, y1, x0, x1 = strip_bounds(job, i, w)
            strip = extract_reflected(image, y0, y1, x0, x1)
            mstrip = extract_reflected(mask, y0, y1, x0, x1).astype(bool) if mask is not None else None
            acc.add(i, restore_row(strip, job, i, mstrip, pool))
            if progress is not None:
                progress(i + 1, n)
    finally:
        if pool is not None:
            pool.shutdown()


def _clipped_fraction(image: np.ndarray, level: float) -> float:
    step = max(1, 4_000_000 // max(1, image[0].size))
    n = sum(int(np.count_nonzero(image[y : y + step] >= level)) for y in range(0, image.shape[0], step))
    return n / image.size
