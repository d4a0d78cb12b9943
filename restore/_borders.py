"""Clean borders: reflection padding of the frame and tapering of tile edges.

Deconvolution in the Fourier domain treats every tile as periodic. Two things keep
the wrap-around from ringing into the result: beyond the frame the image is
continued by mirror reflection (no step at the frame edge), and the outermost band
of every tile's guard margin is faded to the tile mean (no step where the tile
wraps). Both act only in the guard margin, which is discarded after solving.
"""
from __future__ import annotations

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
    image: np.ndarray, y0: int, y1: int, x0: int, x1: int
) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with out-of-frame samples mirrored in from inside.

    A plain (copied) slice when the window lies inside the frame.
    """
    h, w = image.shape[:2]
    if y0 >= 0 and x0 >= 0 and y1 <= h and x1 <= w:
        return np.array(image[y0:y1, x0:x1], dtype=np.float32)
    iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if iy0 < iy1 and ix0 < ix1 and y1 - y0 <= 2 * h and x1 - x0 <= 2 * w:
        # Mirror only the in-frame part of the window (a fancy index would copy whole rows).
        inner = np.asarray(image[iy0:iy1, ix0:ix1], dtype=np.float32)
        pads = [(iy0 - y0, y1 - iy1), (ix0 - x0, x1 - ix1)] + [(0, 0)] * (image.ndim - 2)
        if all(a <= n and b <= n for (a, b), n in zip(pads, inner.shape)):
            return np.pad(inner, pads, mode="symmetric")
    rows = reflect_indices(y0, y1, h)
    cols = reflect_indices(x0, x1, w)
    return np.asarray(image[rows][:, cols], dtype=np.float32)


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
        h, w = tile.shape[:2]
        view = tile if tile.ndim == 3 else tile[..., None]
        m = view.mean(axis=(0, 1)) if mean is None else np.asarray(mean, np.float32)
        py = taper_profile(h, width)[:, None, None]
        px = taper_profile(w, width)[None, :, None]
    else:
        h, w = tile.shape[-2:]
        view = tile
        m = tile.mean(axis=(-2, -1), keepdims=True) if mean is None else np.asarray(mean, np.float32)[..., None, None]
        py = taper_profile(h, width)[:, None]
        px = taper_profile(w, width)[None, :]
    alpha = py * px
    width = int(min(width, h // 2, w // 2))
    # tile = mean + alpha * (tile - mean), written so only the bands are touched.
    rows = (slice(None, width), slice(h - width, None), slice(width, h - width), slice(width, h - width))
    cols = (slice(None), slice(None), slice(None, width), slice(w - width, None))
    for ry, cx in zip(rows, cols):
        if channels_last:
            band, a = view[ry, cx], alpha[ry, cx]
        else:
            band, a = view[..., ry, cx], alpha[ry, cx]
        band -= m
        band *= a
        band += m
    return tile
