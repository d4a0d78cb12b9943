"""The spatially varying PSF of one calibration: a grid of PSFs per colour channel.

This is the contract between the simulated camera (ground truth), the analysis
(estimates), the database (storage) and ``restore`` (use).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
        """The PSF at pixel (x, y), bilinearly interpolated between nodes.

        Outside the node grid the nearest edge nodes are used. The result is
        renormalised to sum 1.

        Examples
        --------
        >>> k = np.zeros((1, 1, 1, 3, 3), np.float32); k[..., 1, 1] = 1
        >>> m = PSFMap(k, np.array([[[10.0, 10.0]]]), ("Y",), (20, 20))
        >>> float(m.psf_at(3.0, 4.0)[1, 1])
        1.0
        """
        c = self.channel_index(channel)
        (i0, i1, wy), (j0, j1, wx) = _bracket(self.node_y, y), _bracket(self.node_x, x)
        g = self.psf[c]
        out = (
            (1 - wy) * ((1 - wx) * g[i0, j0] + wx * g[i0, j1])
            + wy * ((1 - wx) * g[i1, j0] + wx * g[i1, j1])
        )
        total = float(out.sum())
        return (out / total if total > 0 else out).astype(np.float32)


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


def _bracket(nodes: np.ndarray, v: float) -> tuple[int, int, float]:
    """Neighbouring node indices around ``v`` and the weight of the upper one."""
    n = len(nodes)
    if n == 1 or v <= nodes[0]:
        return 0, 0, 0.0
    if v >= nodes[-1]:
        return n - 1, n - 1, 0.0
    j1 = int(np.searchsorted(nodes, v, side="right"))
    j0 = j1 - 1
    return j0, j1, float((v - nodes[j0]) / (nodes[j1] - nodes[j0]))


def check_estimate_request(size: int, oversample: int) -> int:
    """Check a PSF estimate's requested ``size`` (odd) and ``oversample`` (>= 1); return it as int."""
    if size % 2 == 0 or size < 1:
        raise CalibError(f"PSF size {size} must be odd and positive")
    if int(oversample) < 1:
        raise CalibError(f"oversample {oversample} must be a positive integer")
    return int(oversample)
