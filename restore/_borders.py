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
    rows = reflect_indices(y0, y1, h)
    cols = reflect_indices(x0, x1, w)
    if y0 >= 0 and y1 <= h:
        return np.asarray(image[y0:y1][:, cols], dtype=np.float32)
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


def taper_edges(tile: np.ndarray, width: int) -> np.ndarray:
    """Fade the outer ``width`` samples of a (..., h, w) tile towards its mean, in place.

    Returns the tile (for chaining).
    """
    if width <= 0:
        return tile
    h, w = tile.shape[-2:]
    py = taper_profile(h, width)[:, None]
    px = taper_profile(w, width)[None, :]
    alpha = py * px
    mean = tile.mean(axis=(-2, -1), keepdims=True)
    # tile = mean + alpha * (tile - mean), written so only the bands are touched.
    for sl in (
        (slice(None, width), slice(None)),
        (slice(h - width, None), slice(None)),
        (slice(width, h - width), slice(None, width)),
        (slice(width, h - width), slice(w - width, None)),
    ):
        band = tile[(..., *sl)]
        band -= mean
        band *= alpha[sl]
        band += mean
    return tile
