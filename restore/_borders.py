"""Clean borders: reflection padding of the frame and tapering of tile edges.

Deconvolution in the Fourier domain treats every tile as periodic. Two things keep
the wrap-around from ringing into the result: beyond the frame the image is
continued by mirror reflection (no step at the frame edge), and the outermost band
of every tile's guard margin is faded to the tile mean (no step where the tile
wraps). Both act only in the guard margin, which is discarded after solving.
"""
from __future__ import annotations

import functools

import numpy as np


def reflect_indices(start: int, stop: int, n: int) -> np.ndarray:
    """Indices ``start..stop-1`` folded into ``0..n-1`` by symmetric (half-sample) reflection.

    Examples
    --------
    >>> reflect_indices(-2, 6, 4).tolist()
    [1, 0, 0, 1, 2, 3, 3, 2]
    """
    idx = np.arange(start, stop)
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)


def extract_reflected(
    image: np.ndarray, y0: int, y1: int, x0: int, x1: int, *, out: np.ndarray | None = None
) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with out-of-frame samples mirrored in from inside.

    A plain (copied) slice when the window lies inside the frame. ``out`` (float32,
    the window's shape) receives the window when given: a reused buffer costs no
    fresh pages per tile.
    """
    h, w = image.shape[:2]
    shape = (y1 - y0, x1 - x0) + image.shape[2:]
    if out is None:
        out = np.empty(shape, np.float32)
    if y0 >= 0 and x0 >= 0 and y1 <= h and x1 <= w:
        out[...] = image[y0:y1, x0:x1]
        return out
    iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    top, bottom, left, right = iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1
    if iy0 < iy1 and ix0 < ix1 and max(top, bottom) <= iy1 - iy0 and max(left, right) <= ix1 - ix0:
        # Copy the in-frame part once, then mirror the bands from it (rows first, then
        # whole columns, which fills the corners too); no fancy index over whole rows.
        ny, nx = shape[0], shape[1]
        out[top : ny - bottom, left : nx - right] = image[iy0:iy1, ix0:ix1]
        if top:
            out[:top, left : nx - right] = out[top : 2 * top, left : nx - right][::-1]
        if bottom:
            out[ny - bottom :, left : nx - right] = out[ny - 2 * bottom : ny - bottom, left : nx - right][::-1]
        if left:
            out[:, :left] = out[:, left : 2 * left][:, ::-1]
        if right:
            out[:, nx - right :] = out[:, nx - 2 * right : nx - right][:, ::-1]
        return out
    rows = reflect_indices(y0, y1, h)
    cols = reflect_indices(x0, x1, w)
    out[...] = image[rows][:, cols]
    return out


def taper_profile(n: int, width: int) -> np.ndarray:
    """1-D weights: 0 -> 1 by a raised cosine over ``width`` samples at both ends, 1 inside."""
    prof = np.ones(n, np.float32)
    width = int(min(width, n // 2))
    if width > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
        prof[:width] = ramp
        prof[n - width :] = ramp[::-1]
    return prof


def taper_edges(
    tile: np.ndarray, width: int, *, channels_last: bool = False, mean: np.ndarray | None = None
) -> np.ndarray:
    """Fade the outer ``width`` samples of a (..., h, w) tile towards its mean, in place.

    With ``channels_last`` the tile is (h, w, C) and each channel fades to its own
    mean. ``mean`` (one value per channel) may be given to save a pass over the
    tile; any level near the tile's typical value serves equally well.
    Returns the tile (for chaining).
    """
    if width <= 0:
        return tile
    if channels_last:
        return _taper_interleaved(tile, width, mean)
    h, w = tile.shape[-2:]
    width = int(min(width, h // 2, w // 2))
    m = tile.mean(axis=(-2, -1), keepdims=True) if mean is None else np.asarray(mean, np.float32)[..., None, None]
    alpha = taper_profile(h, width)[:, None] * taper_profile(w, width)[None, :]
    # tile = mean + alpha * (tile - mean), written so only the bands are touched.
    for ry, cx in _bands(h, w, width):
        band, a = tile[..., ry, cx], alpha[ry, cx]
        band -= m
        band *= a
        band += m
    return tile


def _bands(h: int, w: int, width: int) -> tuple[tuple[slice, slice], ...]:
    """Top, bottom, left and right bands of an (h, w) tile, not overlapping."""
    inner = slice(width, h - width)
    return (
        (slice(None, width), slice(None)),
        (slice(h - width, None), slice(None)),
        (inner, slice(None, width)),
        (inner, slice(w - width, None)),
    )


@functools.lru_cache(maxsize=8)
def _interleaved_alphas(h: int, w: int, c: int, width: int) -> tuple[np.ndarray, ...]:
    """Per band of an (h, w * c) interleaved view: the fade weights, channel samples repeated."""
    alpha = taper_profile(h, width)[:, None] * np.repeat(taper_profile(w, width), c)[None, :]
    out = tuple(np.ascontiguousarray(alpha[ry, slice(cx.start and cx.start * c, cx.stop and cx.stop * c)])
                for ry, cx in _bands(h, w, width))
    for a in out:
        a.flags.writeable = False
    return out


def _taper_interleaved(tile: np.ndarray, width: int, mean: np.ndarray | None) -> np.ndarray:
    # Work on the (h, w * C) view with the channel means tiled along a row: every
    # operation then runs over long contiguous rows (an inner axis of C = 3 would not).
    t3 = tile if tile.ndim == 3 else tile[..., None]
    h, w, c = t3.shape
    width = int(min(width, h // 2, w // 2))
    m = t3.mean(axis=(0, 1)) if mean is None else np.asarray(mean, np.float32)
    flat = t3.reshape(h, w * c)
    mrow = np.tile(np.asarray(m, np.float32), w)
    for (ry, cx), a in zip(_bands(h, w, width), _interleaved_alphas(h, w, c, width)):
        cols = slice(cx.start and cx.start * c, cx.stop and cx.stop * c)
        band, mb = flat[ry, cols], mrow[cols]
        band -= mb
        band *= a
        band += mb
    return tile
