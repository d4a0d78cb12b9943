"""Spatially varying blur: Nagy-O'Leary interpolation of a grid of PSFs.

``out = sum_n PSF_n * (w_n . scene)`` with bilinear (tent) weights ``w_n`` that sum to
one everywhere. A point source at ``p`` therefore images to ``sum_n w_n(p) PSF_n``: the
PSF bilinearly interpolated at the *source* position. Each node is convolved only on
the support of its weight (two node spacings across), so the total work is about four
full-frame FFT convolutions per channel whatever the grid density.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import scipy.fft as sfft

WORKERS = max(1, min(2, os.cpu_count() or 1))


def tent_weights(coords: np.ndarray, nodes: np.ndarray, j: int) -> np.ndarray:
    """Bilinear weight of node ``j`` at ``coords`` (1 beyond the first/last node)."""
    w = np.zeros(coords.shape, np.float32)
    n = len(nodes)
    if n == 1:
        w[:] = 1.0
        return w
    x = coords
    if j > 0:
        a, b = nodes[j - 1], nodes[j]
        m = (x > a) & (x <= b)
        w[m] = (x[m] - a) / (b - a)
    else:
        w[x <= nodes[0]] = 1.0
    if j < n - 1:
        a, b = nodes[j], nodes[j + 1]
        m = (x > a) & (x < b)
        w[m] = (b - x[m]) / (b - a)
    else:
        w[x > nodes[-1]] = 1.0
    return w


def _fft_convolve_full(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    shape = (a.shape[0] + k.shape[0] - 1, a.shape[1] + k.shape[1] - 1)
    fshape = (sfft.next_fast_len(shape[0], real=True), sfft.next_fast_len(shape[1], real=True))
    fa = sfft.rfft2(a, fshape, workers=WORKERS)
    fa *= sfft.rfft2(k, fshape, workers=WORKERS)
    return sfft.irfft2(fa, fshape, workers=WORKERS)[: shape[0], : shape[1]]


def render_varying(
    scene: np.ndarray,
    coords_x: np.ndarray,
    coords_y: np.ndarray,
    node_x: np.ndarray,
    node_y: np.ndarray,
    kernel: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    """Blur ``scene`` (Hf, Wf) with the PSF grid; ``kernel(i, j)`` gives node (i, j)'s PSF.

    ``coords_x``/``coords_y`` are the sensor-pixel coordinates of the scene's columns
    and rows; kernels are sampled on the scene's grid, odd-sized and centred.
    Light spread beyond the scene's border is lost (callers pad the scene).
    """
    hf, wf = scene.shape
    out = np.zeros((hf, wf), np.float32)
    for i in range(len(node_y)):
        wy = tent_weights(coords_y, node_y, i)
        rows = np.nonzero(wy)[0]
        if len(rows) == 0:
            continue
        r0, r1 = rows[0], rows[-1] + 1
        for j in range(len(node_x)):
            wx = tent_weights(coords_x, node_x, j)
            cols = np.nonzero(wx)[0]
            if len(cols) == 0:
                continue
            c0, c1 = cols[0], cols[-1] + 1
            piece = scene[r0:r1, c0:c1] * wy[r0:r1, None] * wx[None, c0:c1]
            if not piece.any():
                continue
            k = kernel(i, j)
            h = k.shape[0] // 2
            conv = _fft_convolve_full(piece, k)
            # place the full convolution, clipped to the canvas
            y0, x0 = r0 - h, c0 - h
            ya, xa = max(0, -y0), max(0, -x0)
            yb = min(conv.shape[0], hf - y0)
            xb = min(conv.shape[1], wf - x0)
            out[y0 + ya : y0 + yb, x0 + xa : x0 + xb] += conv[ya:yb, xa:xb]
    return out
