"""The one FFT layer of ``restore``: real 2-D transforms, OTFs and their cache.

Every solver goes through these functions so that transform sizes, threading and
precision are decided in one place: real transforms on float32 (complex64 spectra),
sizes from ``next_fast_len`` and ``workers`` threads. The transforms run on ``ducc0``
(the successor of scipy's pocketfft, about twice as fast on multi-axis real
transforms, especially the inverse) when it is installed, else on ``scipy.fft``.
"""
from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections import OrderedDict

import numpy as np
import scipy.fft as sfft

#: Threads per transform; the machine's cores by default (``LENSPSF_FFT_WORKERS`` overrides).
WORKERS: int = int(os.environ.get("LENSPSF_FFT_WORKERS", 0)) or (os.cpu_count() or 1)

_local = threading.local()

try:  # optional accelerator (the `fast` extra)
    import ducc0.fft as _ducc
except ImportError:  # pragma: no cover - depends on the environment
    _ducc = None

#: Name of the library doing the transforms.
BACKEND: str = "ducc0" if _ducc is not None else "scipy"


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


def rfft2(
    x: np.ndarray, *, axes: tuple[int, int] = (-2, -1), out: np.ndarray | None = None, workers: int | None = None
) -> np.ndarray:
    """Real 2-D FFT over ``axes`` (default the last two), float32 in, complex64 out.

    ``axes=(0, 1)`` transforms an interleaved (h, w, C) tile as it lies in memory,
    as fast as planar data and without a transposing copy. ``out`` (complex64) is
    written when given: iterative solvers reuse one spectrum buffer (fresh pages
    would have to be faulted in at every transform).
    """
    x = np.asarray(x, np.float32)
    if _ducc is not None:
        return _ducc.r2c(x, axes=axes, nthreads=_workers(workers), out=out)
    spec = sfft.rfft2(x, axes=axes, workers=_workers(workers))
    if out is None:
        return spec
    out[...] = spec
    return out


def rfft2_planar(tile: np.ndarray, *, out: np.ndarray | None = None, workers: int | None = None) -> np.ndarray:
    """Spectrum of an interleaved (h, w, C) tile, returned planar: (C, h, w // 2 + 1).

    Planar spectra multiply with planar filters over contiguous memory; the
    transform writes them through a strided view at no extra cost. ``out`` (complex64,
    that shape) is reused when given: no fresh pages to fault in per tile.
    """
    h, w, c = tile.shape
    spec = np.empty((c, h, w // 2 + 1), np.complex64) if out is None else out
    if _ducc is not None:
        _ducc.r2c(np.asarray(tile, np.float32), axes=(0, 1), nthreads=_workers(workers), out=spec.transpose(1, 2, 0))
    else:
        spec[...] = sfft.rfft2(np.asarray(tile, np.float32), axes=(0, 1), workers=_workers(workers)).transpose(2, 0, 1)
    return spec


def irfft2_interleaved(
    spec: np.ndarray,
    shape: tuple[int, int],
    *,
    rows: slice | None = None,
    out: np.ndarray | None = None,
    scaled: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """Inverse of :func:`rfft2_planar`: an interleaved (h, w, C) float32 tile (``spec`` is overwritten).

    ``rows`` returns only those rows of the result: the transform along y runs on every
    column, the one along x only on the wanted rows (a tile's guard rows are discarded
    anyway). ``scaled=False`` leaves out the 1 / (h w) normalisation (for a caller
    whose filter already carries it). ``out`` receives the result when given.
    """
    rows = slice(0, shape[0]) if rows is None else rows
    n_rows = len(range(*rows.indices(shape[0])))
    c = spec.shape[0]
    res = np.empty((n_rows, shape[1], c), np.float32) if out is None else out
    inorm = 2 if scaled else 0
    if _ducc is not None:
        nt = _workers(workers)
        _ducc.c2c(spec, axes=(1,), forward=False, inorm=inorm, nthreads=nt, out=spec)
        _ducc.c2r(spec[:, rows].transpose(1, 2, 0), axes=(1,), lastsize=int(shape[1]), forward=False,
                  inorm=inorm, nthreads=nt, out=res, allow_overwriting_input=True)
        return res
    full = sfft.irfft2(spec, s=shape, axes=(1, 2), workers=_workers(workers), norm="forward" if not scaled else "backward")
    res[...] = full[:, rows].transpose(1, 2, 0)
    return res


def irfft2(
    spec: np.ndarray,
    shape: tuple[int, int],
    *,
    axes: tuple[int, int] = (-2, -1),
    workers: int | None = None,
    overwrite: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Inverse of ``rfft2`` for a spatial ``shape`` (over ``axes``), float32 out.

    ``overwrite=True`` lets the transform reuse ``spec`` as its work space: about half
    the time of a transform that must keep it. ``out`` (float32) is written when given.
    """
    if _ducc is not None and spec.dtype == np.complex64:
        return _ducc.c2r(
            spec, axes=axes, lastsize=int(shape[-1]), forward=False, inorm=2,
            nthreads=_workers(workers), allow_overwriting_input=overwrite, out=out,
        )
    res = sfft.irfft2(spec, s=shape, axes=axes, workers=_workers(workers), overwrite_x=overwrite)
    if out is None:
        return res.astype(np.float32, copy=False)
    out[...] = res
    return out


def _zeros(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A zeroed array written by this process rather than by the kernel (``np.zeros``
    maps zero pages that fault in one by one; ``np.empty`` lets numpy ask for huge
    pages, ~3x fewer faults for an OTF that the filter cache then keeps)."""
    out = np.empty(shape, dtype)
    out.fill(0)
    return out


def psf2otf(psf: np.ndarray, shape: tuple[int, int], *, workers: int | None = None) -> np.ndarray:
    """The optical transfer function of ``psf`` on an FFT grid of ``shape``.

    The PSF's middle sample is moved to index (0, 0) (circularly), so that
    convolution by the OTF does not shift the image; a lateral-colour offset kept
    in the PSF (its centroid away from the middle) is therefore preserved.

    Parameters
    ----------
    psf : ndarray, shape (k, k), or (C, k, k) for several at once
        Odd-sized kernel(s), centred at the middle sample.
    shape : tuple of int
        (rows, cols) of the transform; each must be >= k.

    Returns
    -------
    ndarray, shape (rows, cols // 2 + 1) or (C, rows, cols // 2 + 1), complex64

    Examples
    --------
    >>> otf = psf2otf(np.ones((3, 3), np.float32) / 9, (8, 8))
    >>> round(float(otf[0, 0].real), 6)
    1.0
    """
    psf = np.asarray(psf, np.float32)
    psfs = psf if psf.ndim == 3 else psf[None]
    k0, k1 = psfs.shape[-2:]
    rows, cols = shape
    if k0 > rows or k1 > cols:
        raise ValueError(f"PSF of {psf.shape} does not fit an FFT grid of {shape}")
    # Only k0 rows are non-zero: transform those along x first, then place them
    # (wrapped around row 0) and finish along y. About half the cost of a full rfft2.
    rowpad = np.zeros((len(psfs), k0, cols), np.float32)
    rowpad[..., :k1] = psfs
    rowpad = np.roll(rowpad, -(k1 // 2), axis=-1)
    full = _zeros((len(psfs), rows, cols // 2 + 1), np.complex64)
    idx = (np.arange(k0) - k0 // 2) % rows
    if _ducc is not None:
        full[:, idx] = _ducc.r2c(rowpad, axes=(2,), nthreads=_workers(workers))
        _ducc.c2c(full, axes=(1,), forward=True, nthreads=_workers(workers), out=full)
    else:
        full[:, idx] = sfft.rfft(rowpad, axis=2, workers=_workers(workers))
        full = sfft.fft(full, axis=1, workers=_workers(workers), overwrite_x=True).astype(np.complex64, copy=False)
    return full if psf.ndim == 3 else full[0]


@functools.lru_cache(maxsize=16)
def gradient_power(shape: tuple[int, int]) -> np.ndarray:
    """|Dx|^2 + |Dy|^2 of forward differences on an rfft grid of ``shape`` (float32, read-only, cached)."""
    wy = 2 * np.pi * sfft.fftfreq(shape[0])[:, None]
    wx = 2 * np.pi * sfft.rfftfreq(shape[1])[None, :]
    g2 = ((2 - 2 * np.cos(wy)) + (2 - 2 * np.cos(wx))).astype(np.float32)
    g2.flags.writeable = False
    return g2


def _denominator(h: np.ndarray, prior: np.ndarray, weight: np.float32, spread: np.ndarray | None, *,
                 out: np.ndarray, scratch: np.ndarray) -> None:
    """``out`` = |h|^2 (+ ``spread``) + ``weight`` * ``prior``, float32, through one scratch plane."""
    np.multiply(prior, weight, out=out)
    np.square(h.real, out=scratch)
    out += scratch
    np.square(h.imag, out=scratch)
    out += scratch
    if spread is not None:
        out += spread


def inverse_filter(
    otf: np.ndarray,
    prior: np.ndarray,
    weight: float | np.ndarray = 1.0,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """conj(H) / (|H|^2 + weight * prior): a regularised inverse filter, complex64.

    ``otf`` may be a (C, rows, cols) stack with one ``weight`` per channel and
    ``prior`` (rows, cols) shared; ``channels_last`` returns it as (rows, cols, C),
    the layout of an interleaved tile's spectrum. Built with contiguous float32
    passes (no complex division, no float64 temporaries); applying it is then one
    multiply per tile.
    """
    stack = otf.ndim == 3
    planes = otf if stack else otf[None]
    wts = np.broadcast_to(np.asarray(weight, np.float32).reshape(-1), (len(planes),))
    prior = np.broadcast_to(np.asarray(prior, np.float32), planes.shape[1:])
    if stack and channels_last:
        out = np.empty((*otf.shape[1:], otf.shape[0]), np.complex64)
        view = out.transpose(2, 0, 1)
    else:
        out = np.empty(otf.shape, np.complex64)
        view = out if stack else out[None]
    # One plane at a time through two reused buffers: no stack-sized temporaries
    # (the build is memory-bound; it is the cold-start cost of every tile).
    d = np.empty(planes.shape[1:], np.float32)
    t = np.empty_like(d)
    for c, h in enumerate(planes):
        _denominator(h, prior, wts[c], None, out=d, scratch=t)
        np.reciprocal(d, out=d)
        np.multiply(h.real, d, out=view[c].real)
        np.multiply(h.imag, d, out=t)
        np.negative(t, out=view[c].imag)
    return out


def inverse_filter_from_psfs(
    psfs: np.ndarray,
    shape: tuple[int, int],
    prior: np.ndarray,
    weights: np.ndarray,
    *,
    normalised: bool = False,
    spread: np.ndarray | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """The (C, rows, cols // 2 + 1) filter conj(H) / (|H|^2 + spread + weight * prior) of a
    (C, k, k) PSF stack, built in place in one complex64 array.

    conj(H) is the OTF of the PSF mirrored through its middle sample (a real kernel),
    so no conjugation pass is needed. ``normalised`` folds the inverse transform's
    1 / (rows * cols) into the filter (apply it with an unscaled inverse transform).
    ``spread`` (one (rows, cols // 2 + 1) float32 array per channel) is the variance of
    the OTF over the area the filter serves (see :func:`otf_variance`); None for a PSF
    known exactly.
    """
    psfs = np.asarray(psfs, np.float32)
    g = psf2otf(psfs[:, ::-1, ::-1], shape, workers=workers)  # = conj(H)
    scale = np.float32(shape[0] * shape[1] if normalised else 1.0)
    wts = np.broadcast_to(np.asarray(weights, np.float32).reshape(-1), (len(g),))
    d = np.empty(g.shape[1:], np.float32)
    t = np.empty_like(d)
    for c, plane in enumerate(g):
        _denominator(plane, prior, wts[c], None if spread is None else spread[c], out=d, scratch=t)
        np.divide(1.0 / scale, d, out=d)
        plane *= d
    return g


def otf_variance(deltas: np.ndarray, shape: tuple[int, int], *, workers: int | None = None) -> list[np.ndarray]:
    """Variance of the OTF over a tile from the PSF's change across it, on an rfft grid.

    ``deltas`` (C, A, k, k) holds, per channel and axis, the difference of the PSFs one
    rms offset either side of the tile centre, h(c + s) - h(c - s); for a PSF varying
    linearly across the tile, Var H = sum over axes of |OTF(delta)|^2 / 4. That is the
    transform of the deltas' summed autocorrelation, a (2k-1)^2 kernel that is real and
    even, so its transform is real: two channels share one complex transform (one in
    the real part, one in the imaginary part).

    Returns
    -------
    list of C ndarrays, shape (rows, cols // 2 + 1), float32 (views into the packed
    transforms; tiny negative values from rounding are possible)
    """
    deltas = np.asarray(deltas, np.float64)
    c, k = deltas.shape[0], deltas.shape[-1]
    n = fast_len(2 * k - 1)
    power = np.square(np.abs(np.fft.rfft2(deltas, s=(n, n)))).sum(axis=1) / 4.0
    acorr = np.fft.irfft2(power, s=(n, n))
    idx = np.arange(-(k - 1), k) % n
    kernels = acorr[:, idx][:, :, idx]
    packed = _even_kernels_otf(kernels, shape, workers=workers)
    return [packed[ch // 2].real if ch % 2 == 0 else packed[ch // 2].imag for ch in range(c)]


def _even_kernels_otf(kernels: np.ndarray, shape: tuple[int, int], *, workers: int | None = None) -> np.ndarray:
    """Transforms of real, even (C, m, m) kernels (centred), packed in pairs: plane p holds
    kernel 2p's (real) transform in its real part and kernel 2p + 1's in its imaginary part."""
    c, m = kernels.shape[0], kernels.shape[-1]
    rows, cols = shape
    if m > rows or m > cols:
        raise ValueError(f"kernel of {m}x{m} does not fit an FFT grid of {shape}")
    z = np.zeros(((c + 1) // 2, m, cols), np.complex64)
    z.real[:, :, :m] = kernels[0::2]
    z.imag[: c // 2, :, :m] = kernels[1::2]
    z = np.roll(z, -(m // 2), axis=-1)
    full = _zeros((len(z), rows, cols // 2 + 1), np.complex64)
    idx = (np.arange(m) - m // 2) % rows
    if _ducc is not None:
        full[:, idx] = _ducc.c2c(z, axes=(2,), nthreads=_workers(workers))[..., : cols // 2 + 1]
        _ducc.c2c(full, axes=(1,), forward=True, nthreads=_workers(workers), out=full)
    else:
        full[:, idx] = sfft.fft(z, axis=2, workers=_workers(workers))[..., : cols // 2 + 1]
        full = sfft.fft(full, axis=1, workers=_workers(workers), overwrite_x=True).astype(np.complex64, copy=False)
    return full


def difference_otfs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """OTFs of the forward differences along x and y (circular), complex64."""
    wy = 2 * np.pi * sfft.fftfreq(shape[0])[:, None]
    wx = 2 * np.pi * sfft.rfftfreq(shape[1])[None, :]
    dx = (np.exp(1j * wx) - 1) * np.ones_like(wy)
    dy = (np.exp(1j * wy) - 1) * np.ones_like(wx)
    return dx.astype(np.complex64), dy.astype(np.complex64)



class OTFCache:
    """Byte-bounded cache of OTFs and of the filters derived from them.

    Keys are the PSF's bytes (hashed) plus the FFT shape and any extra key parts,
    so a batch of photos from one calibration computes each tile's filter once.
    Entries carry a *group* (e.g. the PSF map they belong to). When full, entries of
    other groups are evicted first (least recently used); a group that alone
    exceeds the budget keeps its first entries instead of cycling through them (a
    repeated pass over the same tiles would never hit a least-recently-used cache
    smaller than the pass). Thread-safe.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, tuple[np.ndarray, object]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def psf_key(psf: np.ndarray) -> str:
        """A short digest of a PSF's samples."""
        a = np.ascontiguousarray(psf, np.float32)
        return hashlib.blake2b(a.tobytes() + str(a.shape).encode(), digest_size=12).hexdigest()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple, value: np.ndarray, group: object = None) -> None:
        with self._lock:
            if key in self._items or value.nbytes > self.max_bytes:
                return
            while self._bytes + value.nbytes > self.max_bytes:
                victim = next((k for k, (_, g) in self._items.items() if g != group), None)
                if victim is None:
                    return  # this group fills the cache: keep what it already has
                self._bytes -= self._items.pop(victim)[0].nbytes
            value.flags.writeable = False
            self._items[key] = (value, group)
            self._bytes += value.nbytes

    def otf(self, psf: np.ndarray, shape: tuple[int, int], *, group: object = None) -> np.ndarray:
        """``psf2otf(psf, shape)``, cached."""
        key = ("otf", self.psf_key(psf), tuple(shape))
        val = self.get(key)
        if val is None:
            val = psf2otf(psf, shape)
            self.put(key, val, group)
        return val

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


#: The process-wide cache used by default: 512 MB holds every filter of a 24 MP photo
#: with a 9x6 map (``LENSPSF_FILTER_CACHE_MB`` overrides; 0 disables it).
OTF_CACHE = OTFCache(int(float(os.environ.get("LENSPSF_FILTER_CACHE_MB", 512)) * 2**20))
