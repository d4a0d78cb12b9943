"""The one FFT layer of ``restore``: real 2-D transforms, OTFs and their cache.

Every solver goes through these functions so that transform sizes, threading and
precision are decided in one place: ``scipy.fft`` real transforms on float32
(complex64 spectra), sizes from ``next_fast_len`` and ``workers`` threads.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict

import numpy as np
import scipy.fft as sfft

#: Threads per transform; the machine's cores by default (``LENSPSF_FFT_WORKERS`` overrides).
WORKERS: int = int(os.environ.get("LENSPSF_FFT_WORKERS", 0)) or (os.cpu_count() or 1)

_local = threading.local()


def set_thread_workers(n: int) -> None:
    """Transforms called from this thread use ``n`` workers (1 inside a tile thread pool,
    where the tiles themselves already keep every core busy)."""
    _local.workers = int(n)


def _workers(requested: int | None) -> int:
    return requested or getattr(_local, "workers", WORKERS)


def fast_len(n: int) -> int:
    """Smallest length >= ``n`` that real FFTs transform quickly."""
    return int(sfft.next_fast_len(int(n), real=True))


def fast_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """``fast_len`` of each of the last two axes."""
    return fast_len(shape[0]), fast_len(shape[1])


def rfft2(x: np.ndarray, *, workers: int | None = None) -> np.ndarray:
    """Real 2-D FFT over the last two axes, float32 in, complex64 out."""
    return sfft.rfft2(np.asarray(x, np.float32), workers=_workers(workers))


def irfft2(spec: np.ndarray, shape: tuple[int, int], *, workers: int | None = None) -> np.ndarray:
    """Inverse of ``rfft2`` for a spatial ``shape`` (last two axes), float32 out."""
    return sfft.irfft2(spec, s=shape, workers=_workers(workers)).astype(np.float32, copy=False)


def psf2otf(psf: np.ndarray, shape: tuple[int, int], *, workers: int | None = None) -> np.ndarray:
    """The optical transfer function of ``psf`` on an FFT grid of ``shape``.

    The PSF's middle sample is moved to index (0, 0) (circularly), so that
    convolution by the OTF does not shift the image; a lateral-colour offset kept
    in the PSF (its centroid away from the middle) is therefore preserved.

    Parameters
    ----------
    psf : ndarray, shape (k, k)
        Odd-sized kernel, centred at its middle sample.
    shape : tuple of int
        (rows, cols) of the transform; each must be >= k.

    Returns
    -------
    ndarray, shape (rows, cols // 2 + 1), complex64

    Examples
    --------
    >>> otf = psf2otf(np.ones((3, 3), np.float32) / 9, (8, 8))
    >>> round(float(otf[0, 0].real), 6)
    1.0
    """
    psf = np.asarray(psf, np.float32)
    k0, k1 = psf.shape
    rows, cols = shape
    if k0 > rows or k1 > cols:
        raise ValueError(f"PSF of {psf.shape} does not fit an FFT grid of {shape}")
    # Only k0 rows are non-zero: transform those along x first, then place them
    # (wrapped around row 0) and finish along y. About half the cost of a full rfft2.
    rowpad = np.zeros((k0, cols), np.float32)
    rowpad[:, :k1] = psf
    rowpad = np.roll(rowpad, -(k1 // 2), axis=1)
    half = sfft.rfft(rowpad, axis=1, workers=_workers(workers))
    full = np.zeros((rows, cols // 2 + 1), np.complex64)
    idx = (np.arange(k0) - k0 // 2) % rows
    full[idx] = half
    return sfft.fft(full, axis=0, workers=_workers(workers), overwrite_x=True).astype(
        np.complex64, copy=False
    )


def gradient_power(shape: tuple[int, int]) -> np.ndarray:
    """|Dx|^2 + |Dy|^2 of forward differences on an rfft grid of ``shape`` (float32)."""
    wy = 2 * np.pi * sfft.fftfreq(shape[0])[:, None]
    wx = 2 * np.pi * sfft.rfftfreq(shape[1])[None, :]
    return ((2 - 2 * np.cos(wy)) + (2 - 2 * np.cos(wx))).astype(np.float32)


def difference_otfs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """OTFs of the forward differences along x and y (circular), complex64."""
    wy = 2 * np.pi * sfft.fftfreq(shape[0])[:, None]
    wx = 2 * np.pi * sfft.rfftfreq(shape[1])[None, :]
    dx = (np.exp(1j * wx) - 1) * np.ones_like(wy)
    dy = (np.exp(1j * wy) - 1) * np.ones_like(wx)
    return dx.astype(np.complex64), dy.astype(np.complex64)


class OTFCache:
    """Least-recently-used cache of OTFs (and filters derived from them).

    Keys are the PSF's bytes (hashed) plus the FFT shape and any extra key parts,
    so a batch of photos from one calibration computes each tile's OTF once.
    Thread-safe; bounded by ``max_bytes``.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def psf_key(psf: np.ndarray) -> str:
        """A short digest of a PSF's samples."""
        a = np.ascontiguousarray(psf, np.float32)
        return hashlib.blake2b(a.tobytes() + str(a.shape).encode(), digest_size=12).hexdigest()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            val = self._items.get(key)
            if val is not None:
                self._items.move_to_end(key)
            return val

    def put(self, key: tuple, value: np.ndarray) -> None:
        with self._lock:
            if key in self._items or value.nbytes > self.max_bytes:
                return
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def otf(self, psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``psf2otf(psf, shape)``, cached."""
        key = ("otf", self.psf_key(psf), tuple(shape))
        val = self.get(key)
        if val is None:
            val = psf2otf(psf, shape)
            self.put(key, val)
        return val

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


#: The process-wide cache used by default.
OTF_CACHE = OTFCache()
