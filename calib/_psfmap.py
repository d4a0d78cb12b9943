"""The spatially varying PSF of one calibration: a grid of PSFs per colour channel.

This is the contract between the simulated camera (ground truth), the analysis
(estimates), the database (storage) and ``restore`` (use).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from ._errors import CalibError

#: Quality flags per node (bit field, ``PSFMap.flags``).
FLAG_OK = 0
FLAG_FILLED = 1  # no usable measurement; filled from neighbouring nodes
FLAG_NOISY = 2  # measured, but with a low signal-to-noise ratio
FLAG_SATURATED = 4  # some samples were clipped and excluded


@dataclass(frozen=True)
class PSFMap:
    """PSFs on a rectilinear grid of field nodes, per colour channel.

    Attributes
    ----------
    psf : ndarray, shape (C, ny, nx, k, k), float32
        Each PSF is odd-sized, non-negative, sums to 1 and is centred at the middle
        sample. The green (or only) channel's centroid sits on the centre sample;
        other channels keep their lateral-colour offset from green.
    nodes_xy : ndarray, shape (ny, nx, 2), float64
        Pixel coordinates (x, y) of each node, origin at the top-left pixel centre.
        Rows share one y and columns share one x (a rectilinear grid).
    channels : tuple of str
        Channel names, e.g. ``("R", "G", "B")`` or ``("Y",)``.
    image_size : tuple of int
        (width, height) of the frame in sensor pixels.
    sampling : int
        PSF samples per sensor pixel (1 = sensor grid).
    flags : ndarray, shape (C, ny, nx), uint8
        Quality bits per node (``FLAG_*``).
    """

    psf: np.ndarray
    nodes_xy: np.ndarray
    channels: tuple[str, ...]
    image_size: tuple[int, int]
    sampling: int = 1
    flags: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        psf = np.asarray(self.psf, dtype=np.float32)
        if psf.ndim != 5 or psf.shape[-1] != psf.shape[-2] or psf.shape[-1] % 2 == 0:
            raise CalibError(
                f"PSF grid has shape {psf.shape}; expected (channels, ny, nx, k, k) with odd k"
            )
        nodes = np.asarray(self.nodes_xy, dtype=np.float64)
        if nodes.shape != (psf.shape[1], psf.shape[2], 2):
            raise CalibError(
                f"node coordinates have shape {nodes.shape}; expected {(psf.shape[1], psf.shape[2], 2)}"
            )
        if len(self.channels) != psf.shape[0]:
            raise CalibError(
                f"{len(self.channels)} channel names for {psf.shape[0]} PSF channels"
            )
        flags = (
            np.zeros(psf.shape[:3], np.uint8)
            if self.flags is None
            else np.asarray(self.flags, dtype=np.uint8)
        )
        if flags.shape != psf.shape[:3]:
            raise CalibError(f"flags have shape {flags.shape}; expected {psf.shape[:3]}")
        object.__setattr__(self, "psf", psf)
        object.__setattr__(self, "nodes_xy", nodes)
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        object.__setattr__(self, "flags", flags)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(ny, nx) nodes."""
        return self.psf.shape[1], self.psf.shape[2]

    @property
    def kernel_size(self) -> int:
        """k, the side of each PSF in samples."""
        return self.psf.shape[-1]

    @property
    def node_x(self) -> np.ndarray:
        """x of each node column, pixels."""
        return self.nodes_xy[0, :, 0]

    @property
    def node_y(self) -> np.ndarray:
        """y of each node row, pixels."""
        return self.nodes_xy[:, 0, 1]

    def on_sensor_grid(self) -> "PSFMap":
        """This map at one sample per pixel (itself when it already is).

        Examples
        --------
        >>> k = np.zeros((1, 1, 1, 7, 7), np.float32); k[..., 3, 3] = 1
        >>> PSFMap(k, np.array([[[0.0, 0.0]]]), ("Y",), (8, 8), sampling=3).on_sensor_grid().kernel_size
        3
        """
        if self.sampling == 1:
            return self
        return PSFMap(sensor_grid_psf(self.psf, self.sampling), self.nodes_xy, self.channels,
                      self.image_size, 1, self.flags)

    def channel_index(self, channel: int | str) -> int:
        """Index of ``channel`` given by name or index."""
        if isinstance(channel, str):
            try:
                return self.channels.index(channel)
            except ValueError:
                raise CalibError(
                    f"channel {channel!r} is not in this calibration (it has {', '.join(self.channels)})"
                ) from None
        return int(channel)

    def psf_at(self, x: float, y: float, channel: int | str = 0) -> np.ndarray:
        """The PSF at pixel (x, y), interpolated between nodes by a piecewise cubic.

        A lens's PSF changes smoothly but not linearly across the field (astigmatism and
        field curvature grow with the square of the field height), and on a soft lens a
        9x6 grid is coarse for that: between nodes the bilinear blend's MTF missed the
        true one by up to 0.07 where the cubic misses by 0.05 (and by 0.03 or less
        at 95 % of the positions). Along each axis it is :meth:`column_weights` /
        :meth:`row_weights`. Lateral colour moves a channel's PSF across the field, and
        a blend of PSFs whose centroids differ is wider than either: with
        ``sampling`` > 1 each node's PSF is first moved (Fourier shift) to the blend's
        centroid, so the PSF moves rather than spreads (soft-zoom's blue PSF-vs-edge
        misses at 9x6 nodes: 23 -> 25 of 28 nodes within 0.03). Sensor-grid samples of a
        sharp PSF cannot be shifted by a fraction of a pixel, so at ``sampling`` 1 the
        plain blend is kept. Small negative lobes are clipped (a PSF is an intensity)
        and the result renormalised to sum 1. Outside the node grid the nearest edge
        nodes are used.

        Examples
        --------
        >>> k = np.zeros((1, 1, 1, 3, 3), np.float32); k[..., 1, 1] = 1
        >>> m = PSFMap(k, np.array([[[10.0, 10.0]]]), ("Y",), (20, 20))
        >>> float(m.psf_at(3.0, 4.0)[1, 1])
        1.0
        """
        c = self.channel_index(channel)
        wy, wx = self.row_weights([y])[0], self.column_weights([x])[0]
        rows, cols = np.flatnonzero(wy), np.flatnonzero(wx)
        w = np.outer(wy[rows], wx[cols])
        if self.sampling > 1 and w.size > 1:
            cen = self._node_centroids[c][np.ix_(rows, cols)]
            moves = np.einsum("ij,ijk->k", w, cen) - cen  # (rows, cols, 2): to the blend's centroid
            k = self.kernel_size
            fy, fx = np.fft.fftfreq(k), np.fft.rfftfreq(k)
            # the shift's phase ramp is separable: one 1-D ramp per axis and node
            ramp_y = np.exp(-2j * np.pi * moves[..., 1, None] * fy)
            ramp_x = np.exp(-2j * np.pi * moves[..., 0, None] * fx)
            phase = w[..., None, None] * ramp_y[..., :, None] * ramp_x[..., None, :]
            spectrum = (self._node_spectra[c][np.ix_(rows, cols)] * phase).sum(axis=(0, 1))
            out = np.fft.irfft2(spectrum, s=(k, k))
        else:
            out = np.einsum("ij,ijkl->kl", w, self.psf[c][np.ix_(rows, cols)].astype(np.float64))
        out = np.clip(out, 0, None)
        total = float(out.sum())
        return (out / total if total > 0 else out).astype(np.float32)

    @functools.cached_property
    def _node_spectra(self) -> np.ndarray:
        """Real FFT of every node's PSF, (C, ny, nx, k, k // 2 + 1), for :meth:`psf_at`."""
        return np.fft.rfft2(self.psf.astype(np.float64))

    @functools.cached_property
    def _node_centroids(self) -> np.ndarray:
        """Every node PSF's centroid (x, y) in samples from the centre, (C, ny, nx, 2)."""
        return psf_centroids(self.psf, 1)

    def column_weights(self, x: ArrayLike) -> np.ndarray:
        """Weight of each node column in :meth:`psf_at` at each ``x`` (pixels).

        Returns
        -------
        ndarray (len(x), nx)
            Rows sum to 1. A cubic Hermite interpolant whose slope at a node is that of
            the parabola through it and its neighbours (Catmull-Rom on an even grid), so
            a PSF that varies quadratically across the field is reproduced exactly;
            linear with two columns.
        """
        return _cubic_weights(self.node_x, x)

    def row_weights(self, y: ArrayLike) -> np.ndarray:
        """Weight of each node row in :meth:`psf_at` at each ``y`` (pixels); see
        :meth:`column_weights`."""
        return _cubic_weights(self.node_y, y)


def psf_centroids(psf: np.ndarray, sampling: int) -> np.ndarray:
    """Centroids (x, y) of PSFs ``(..., k, k)`` sampled ``sampling`` times per pixel, in
    pixels from the centre sample, shape ``(..., 2)`` (0 for an all-zero PSF)."""
    k = psf.shape[-1]
    r = (np.arange(k) - k // 2) / sampling
    p = np.asarray(psf, np.float64)
    total = p.sum(axis=(-1, -2))
    total = np.where(total > 0, total, 1.0)
    return np.stack([(p.sum(axis=-2) * r).sum(-1) / total, (p.sum(axis=-1) * r).sum(-1) / total], axis=-1)


def sensor_grid_psf(psf: np.ndarray, sampling: int) -> np.ndarray:
    """A PSF stored at ``sampling`` samples per pixel, on the sensor grid (sum 1).

    The stored PSFs are system PSFs (the pixel aperture included), so the sensor-grid
    PSF is every ``sampling``-th sample through the centre: no further averaging, and
    the centre (green's centroid) stays on the centre sample.

    Parameters
    ----------
    psf : ndarray (..., n, n)
        Odd side ``n``.
    sampling : int
        Samples per pixel of ``psf``.

    Returns
    -------
    ndarray (..., k, k), float32
        ``k`` odd, ``k // 2 = (n // 2) // sampling``.
    """
    if sampling == 1:
        return np.asarray(psf, np.float32)
    n = psf.shape[-1]
    start = (n // 2) % sampling
    out = np.clip(np.asarray(psf, np.float64)[..., start::sampling, start::sampling], 0, None)
    half = (n // 2) // sampling
    k = 2 * half + 1
    out = out[..., :k, :k]
    total = out.sum(axis=(-2, -1), keepdims=True)
    return (out / np.where(total > 0, total, 1.0)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _slope_matrix(nodes: tuple[float, ...]) -> np.ndarray:
    """(n, n) matrix taking node values to slopes: each node's is the derivative of the
    parabola through it and its two neighbours (at an end, through the three end nodes)."""
    n = len(nodes)
    d = np.zeros((n, n))
    for i in range(n):
        c = min(max(i, 1), n - 2)  # centre of the three nodes used
        x0, x1, x2 = nodes[c - 1:c + 2]
        u = nodes[i]
        # derivative at u of the Lagrange basis through x0, x1, x2
        d[i, c - 1] = (2 * u - x1 - x2) / ((x0 - x1) * (x0 - x2))
        d[i, c] = (2 * u - x0 - x2) / ((x1 - x0) * (x1 - x2))
        d[i, c + 1] = (2 * u - x0 - x1) / ((x2 - x0) * (x2 - x1))
    return d


def _cubic_weights(nodes: np.ndarray, v: ArrayLike) -> np.ndarray:
    """Weights (len(v), n) of the n nodes in the piecewise cubic Hermite interpolant at v
    (clamped to the end nodes outside them); linear for two nodes, constant for one."""
    nodes = np.asarray(nodes, np.float64)
    v = np.atleast_1d(np.asarray(v, np.float64))
    n = len(nodes)
    if n == 1:
        return np.ones((len(v), 1))
    j = np.clip(np.searchsorted(nodes, v, side="right") - 1, 0, n - 2)
    h = nodes[j + 1] - nodes[j]
    t = np.clip((v - nodes[j]) / h, 0.0, 1.0)[:, None]
    eye = np.eye(n)
    w = (1 - t) * eye[j] + t * eye[j + 1]
    if n == 2:
        return w
    slopes = _slope_matrix(tuple(nodes.tolist()))
    # the Hermite basis written as the linear blend plus its cubic corrections
    w += t * (1 - t) * (1 - 2 * t) * (eye[j] - eye[j + 1])
    return w + h[:, None] * (t * (1 - t) ** 2 * slopes[j] - t**2 * (1 - t) * slopes[j + 1])


def check_estimate_request(size: int, oversample: int) -> int:
    """Check a PSF estimate's requested ``size`` (odd) and ``oversample`` (>= 1); return it as int."""
    if size % 2 == 0 or size < 1:
        raise CalibError(f"PSF size {size} must be odd and positive")
    if int(oversample) < 1:
        raise CalibError(f"oversample {oversample} must be a positive integer")
    return int(oversample)
