"""Overlapping tiles whose blending windows sum to exactly one.

Along each axis the frame is covered by ``n`` equal *cores* (the part of a tile
that contributes to the result) that overlap their neighbours; a core is widened
by a *guard* margin on each side (context for the deconvolution, discarded
afterwards), and core + guards is exactly a fast FFT length. The 2-D blending
weight of a tile is the product of its two 1-D weights; each 1-D family is
normalised so it sums to one at every pixel, hence the 2-D family does too
(a partition of unity: a constant restored image stays constant across seams).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _fft

#: Guard margin per side, in PSF sizes, for a one-step linear filter (Wiener, Tikhonov): one
#: PSF size keeps a tiled restore within 64 dB of the global one for the soft-zoom lens's
#: widest 41 px PSF (56 dB at 0.75, 79 dB at 1.5), far below the restoration error.
GUARD_PER_KERNEL = 1.0
#: For the splitting (TV) method: one PSF size lost 0.8 dB at a small frame's edges (a 15 px
#: disc PSF), where the guard is the reflected margin. RL tiles at one PSF size stay within
#: 62 dB of the global RL (13 iterations, the widest soft-zoom PSF), as the linear filters do.
GUARD_PER_KERNEL_ITERATIVE = 1.5


@dataclass(frozen=True)
class AxisTiles:
    """The tiles along one axis.

    Attributes
    ----------
    length_px : int
        Frame length along this axis.
    core_px : int
        Core length of every tile.
    guard_lo_px, guard_hi_px : int
        Context margin before and after the core.
    starts_px : tuple of int
        First pixel of each core.
    weights : tuple of ndarray
        Blending weight of each core (float32, length ``core_px``); at every pixel
        the weights of the cores covering it sum to 1.
    """

    length_px: int
    core_px: int
    guard_lo_px: int
    guard_hi_px: int
    starts_px: tuple[int, ...]
    weights: tuple[np.ndarray, ...]

    @property
    def fft_len(self) -> int:
        return self.core_px + self.guard_lo_px + self.guard_hi_px

    @property
    def count(self) -> int:
        return len(self.starts_px)


@dataclass(frozen=True)
class TileLayout:
    """Tiles of a frame: one :class:`AxisTiles` per axis."""

    y: AxisTiles
    x: AxisTiles

    @property
    def fft_shape(self) -> tuple[int, int]:
        return self.y.fft_len, self.x.fft_len

    @property
    def count(self) -> int:
        return self.y.count * self.x.count

    def core_centre_xy(self, i: int, j: int) -> tuple[float, float]:
        """Pixel (x, y) of the centre of tile (row i, column j)'s core."""
        return (
            self.x.starts_px[j] + (self.x.core_px - 1) / 2.0,
            self.y.starts_px[i] + (self.y.core_px - 1) / 2.0,
        )


#: Largest FFT side chosen by default (for PSFs up to ~80 px): bigger transforms leave the
#: CPU caches and cost more per sample, smaller ones waste more on guards and overlaps.
MAX_DEFAULT_FFT = 1024


def default_tile_px(kernel_size: int, *, guard_per_kernel: float = GUARD_PER_KERNEL) -> int:
    """Largest tile FFT side the automatic plan considers for a PSF of ``kernel_size``."""
    return max(MAX_DEFAULT_FFT, _fft.fast_len(8 * guard_px(kernel_size, guard_per_kernel=guard_per_kernel)))


def default_overlap_px(kernel_size: int) -> int:
    """Cross-fade width between neighbouring cores: one PSF size (at least 16 px).

    Only the PSF changes across a seam (every tile sees its full context through
    the guards), so a short fade suffices; a wider one costs transform area.
    """
    return max(int(kernel_size), 16)


def guard_px(kernel_size: int, *, guard_per_kernel: float = GUARD_PER_KERNEL) -> int:
    """Context margin per tile side for a PSF of ``kernel_size`` (at least the PSF support)."""
    return max(int(np.ceil(guard_per_kernel * kernel_size)), kernel_size, 8)


def _max_core_without_triple_overlap(length: int, n: int) -> int:
    # Cores spaced evenly: each pixel must lie in at most two cores (the blending ramps
    # assume neighbours only), i.e. core <= 2 * stride.
    return length if n == 1 else max(8, (2 * length) // (n + 1) - 2)


def _choose_axis(
    length: int, guard: int, overlap: int, *, max_fft: int, max_core: int | None
) -> tuple[int, int, int]:
    """(count, core, fft length) of least transform cost covering ``length``.

    Cost model: count * fft * log2(fft) (the 1-D share of the tiles' FFT work).
    """
    best: tuple[float, int, int, int] | None = None
    n = 1
    while True:
        need = int(np.ceil((length + (n - 1) * overlap) / n))
        if n > 1 and need < max(2 * overlap + 1, 8):
            break
        fft = _fft.fast_len(need + 2 * guard)
        # One tile may be up to twice the usual size: it wastes nothing on overlaps, and
        # iterative methods pay every wasted sample once per iteration.
        limit = 2 * max_fft if n == 1 else max_fft
        ok = (max_core is None or need <= max_core) and (fft <= limit or n * overlap >= length)
        if ok:
            # Widen the core into the spare FFT samples: longer cross-fades, same cost.
            cap = min(fft - 2 * guard, _max_core_without_triple_overlap(length, n), length)
            if max_core is not None:
                cap = min(cap, max_core)
            core = max(need, cap)
            cost = n * fft * np.log2(max(fft, 2))
            if best is None or cost < best[0]:
                best = (cost, n, core, fft)
        n += 1
        if n > length:
            break
    if best is None:  # every option breaks a cap: fall back to the smallest tiles
        n = max(1, int(np.ceil((length - overlap) / max(1, (max_core or length) - overlap))))
        core = int(np.ceil((length + (n - 1) * overlap) / n))
        return n, core, _fft.fast_len(core + 2 * guard)
    return best[1], best[2], best[3]


def _axis(length: int, n: int, core: int, fft_len: int) -> AxisTiles:
    core = min(core, length)
    g_lo = (fft_len - core) // 2
    g_hi = fft_len - core - g_lo
    if n == 1:
        starts = (0,)
    else:
        starts = tuple(int(round(i * (length - core) / (n - 1))) for i in range(n))
    raw = []
    pos = np.arange(core, dtype=np.float64)
    for i, s in enumerate(starts):
        w = np.ones(core)
        if i > 0:  # ramp up across the overlap with the previous core
            ov = starts[i - 1] + core - s
            if ov > 0:
                t = np.clip((pos + 0.5) / ov, 0.0, 1.0)
                w *= np.sin(0.5 * np.pi * t) ** 2
        if i < n - 1:  # ramp down across the overlap with the next core
            nxt = starts[i + 1] - s
            ov = core - nxt
            if ov > 0:
                t = np.clip((pos - nxt + 0.5) / ov, 0.0, 1.0)
                w *= np.cos(0.5 * np.pi * t) ** 2
        raw.append(np.maximum(w, 1e-6))
    total = np.zeros(length)
    for s, w in zip(starts, raw):
        total[s : s + core] += w
    weights = tuple((w / total[s : s + core]).astype(np.float32) for s, w in zip(starts, raw))
    return AxisTiles(length, core, g_lo, g_hi, starts, weights)


def _fixed_axis(length: int, tile_px: int, guard: int, overlap: int) -> AxisTiles:
    """Tiles of a given FFT side (the user's ``tile``)."""
    core_target = max(tile_px - 2 * guard, 2 * overlap, 8)
    if length <= core_target:
        n, core = 1, length
    else:
        core = core_target
        n = max(2, int(np.ceil((length - overlap) / (core - overlap))))
    return _axis(length, n, core, _fft.fast_len(core + 2 * guard))


def plan_tiles(
    height: int,
    width: int,
    *,
    kernel_size: int,
    tile_px: int | None = None,
    overlap_px: int | None = None,
    max_core_px: int | None = None,
    guard_per_kernel: float = GUARD_PER_KERNEL,
) -> TileLayout:
    """Cut a ``height`` x ``width`` frame into blended tiles for a PSF of ``kernel_size``.

    By default each axis gets the tile count and fast FFT length of least transform
    work (guards + overlaps are the waste), with cores no longer than ``max_core_px``.

    Parameters
    ----------
    height, width : int
        Frame size, pixels.
    kernel_size : int
        PSF side; the guard margin is at least this.
    tile_px : int, optional
        Tile side including guards (the FFT size), instead of the automatic choice.
        A size at least the frame's gives a single tile (a global restore).
    overlap_px : int, optional
        Minimum overlap of neighbouring cores, where their results are cross-faded
        (default :func:`default_overlap_px`).
    max_core_px : int, optional
        Upper bound on the core (e.g. about the PSF map's node spacing, so each tile's
        PSF follows the map). Ignored with ``tile_px``.
    guard_per_kernel : float
        Context margin per tile side in PSF sizes (at least one); the splitting method
        wants :data:`GUARD_PER_KERNEL_ITERATIVE`.

    Returns
    -------
    TileLayout

    Examples
    --------
    >>> lay = plan_tiles(1000, 1500, kernel_size=21, tile_px=256)
    >>> ws = np.zeros(1500); _ = [ws.__setitem__(slice(s, s + lay.x.core_px), ws[s:s + lay.x.core_px] + w) for s, w in zip(lay.x.starts_px, lay.x.weights)]
    >>> bool(np.allclose(ws, 1.0))
    True
    """
    g = guard_px(kernel_size, guard_per_kernel=guard_per_kernel)
    ov = int(overlap_px) if overlap_px is not None else default_overlap_px(kernel_size)
    if tile_px:
        tile = max(int(tile_px), 2 * g + 16)
        ov = int(min(ov, (tile - 2 * g) // 2))
        return TileLayout(_fixed_axis(height, tile, g, ov), _fixed_axis(width, tile, g, ov))
    max_fft = default_tile_px(kernel_size, guard_per_kernel=guard_per_kernel)
    axes = []
    for length in (height, width):
        n, core, fft = _choose_axis(length, g, ov, max_fft=max_fft, max_core=max_core_px)
        axes.append(_axis(length, n, core, fft))
    return TileLayout(*axes)
