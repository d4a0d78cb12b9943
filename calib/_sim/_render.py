"""Spatially varying blur: Nagy-O'Leary interpolation of a grid of PSFs.

``out = sum_n PSF_n * (w_n . scene)`` with bilinear (tent) weights ``w_n`` that sum to
one everywhere. A point source at ``p`` therefore images to ``sum_n w_n(p) PSF_n``: the
PSF bilinearly interpolated at the *source* position. Each node is convolved only on
the support of its weight (two node spacings across), so the total work is about four
full-frame FFT convolutions per channel whatever the grid density.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft as sfft

from ._threads import WORKERS


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


def _node_convolutions(
    pieces: list[np.ndarray | None], kernels: list[np.ndarray]
) -> list[np.ndarray | None]:
    """Full linear convolutions of each channel's piece with its kernel (FFT, float32).

    ``pieces`` has one entry per channel, or a single one shared by all channels (a
    grey scene): its transform is then taken once. ``None`` pieces are all zero.
    """
    ph, pw = next(p for p in pieces if p is not None).shape
    kmax = max(k.shape[0] for k in kernels)
    fshape = (sfft.next_fast_len(ph + kmax - 1, real=True), sfft.next_fast_len(pw + kmax - 1, real=True))
    spectra = [None if p is None else sfft.rfft2(p, fshape, workers=1) for p in pieces]
    out = []
    for c, k in enumerate(kernels):
        fa = spectra[0] if len(spectra) == 1 else spectra[c]
        if fa is None:
            out.append(None)
            continue
        # a kernel has few rows: transform them along x, then the padded columns
        fk = sfft.rfft(k, fshape[1], axis=1, workers=1)
        fk = sfft.fft(fk, fshape[0], axis=0, workers=1, overwrite_x=True)
        fk *= fa
        n = k.shape[0] - 1
        out.append(sfft.irfft2(fk, fshape, workers=1, overwrite_x=True)[: ph + n, : pw + n])
    return out


def render_varying(
    planes: np.ndarray,
    coords_x: np.ndarray,
    coords_y: np.ndarray,
    node_x: np.ndarray,
    node_y: np.ndarray,
    kernel: Callable[[int, int, int], np.ndarray],
    n_channels: int,
) -> np.ndarray:
    """Blur ``planes`` (C, Hf, Wf) with the PSF grid; ``kernel(c, i, j)`` gives node (i, j)'s PSF.

    ``planes`` holds one plane per channel, or one plane (C = 1) that all ``n_channels``
    channels share. ``coords_x``/``coords_y`` are the sensor-pixel coordinates of the
    planes' columns and rows; kernels are sampled on the planes' grid, odd-sized and
    centred. Light spread beyond the border is lost (callers pad the scene).
    Returns (n_channels, Hf, Wf) float32.

    Nodes are convolved on ``WORKERS`` threads; their results are added in node order
    on the calling thread, so the output does not depend on thread timing.
    """
    _, hf, wf = planes.shape
    out = np.zeros((n_channels, hf, wf), np.float32)
    jobs = []
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
            kernels = [kernel(c, i, j) for c in range(n_channels)]
            jobs.append((r0, r1, c0, c1, wy[r0:r1, None] * wx[None, c0:c1], kernels))

    def run(job):
        r0, r1, c0, c1, wgt, kernels = job
        pieces = []
        for plane in planes:
            piece = plane[r0:r1, c0:c1] * wgt
            pieces.append(piece if piece.any() else None)
        if all(p is None for p in pieces):
            return None
        return _node_convolutions(pieces, kernels)

    def place(job, convs):
        r0, _, c0, _, _, kernels = job
        for c, (conv, k) in enumerate(zip(convs, kernels)):
            if conv is None:
                continue
            h = k.shape[0] // 2
            # place the full convolution, clipped to the canvas
            y0, x0 = r0 - h, c0 - h
            ya, xa = max(0, -y0), max(0, -x0)
            yb = min(conv.shape[0], hf - y0)
            xb = min(conv.shape[1], wf - x0)
            out[c, y0 + ya : y0 + yb, x0 + xa : x0 + xb] += conv[ya:yb, xa:xb]

    if WORKERS == 1:
        for job in jobs:
            convs = run(job)
            if convs is not None:
                place(job, convs)
        return out
    ahead = WORKERS + 1  # bounded: finished convolutions wait in memory until placed
    with ThreadPoolExecutor(WORKERS) as pool:
        pending: deque = deque()
        it = iter(jobs)
        for job in itertools.islice(it, ahead):
            pending.append((job, pool.submit(run, job)))
        while pending:
            job, fut = pending.popleft()
            convs = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(run, nxt)))
            if convs is not None:
                place(job, convs)
    return out
