"""MTF of measured PSFs, and the sagittal / tangential convention shared by all MTF methods.

Convention (as on lens makers' MTF charts): a *sagittal* structure is a line pointing at
the optical centre, so its intensity varies across the radius and the measured
frequency vector is perpendicular to the radius; a *tangential* (meridional) structure
is a line along a circle round the centre, so the frequency vector is radial.
``MTFRecord.orientation_deg`` is always the direction of the frequency vector.
"""
from __future__ import annotations

import numpy as np

from ._psfmap import PSFMap
from ._records import MTFRecord

#: Frequency directions within this angle of radial/perpendicular are classified.
_DIRECTION_TOL_DEG = 22.5


def field_direction(x_px: float, y_px: float, orientation_deg: float, *,
                    centre_xy: tuple[float, float]) -> str:
    """Classify a frequency direction at a field point as sagittal, tangential or none.

    Parameters
    ----------
    x_px, y_px : float
        Field position, pixels.
    orientation_deg : float
        Direction of the frequency vector (0 = along +x, 90 = along +y, image y down).
    centre_xy : (float, float)
        Optical centre, pixels.

    Returns
    -------
    str
        ``"tangential"`` (frequency along the radius), ``"sagittal"`` (across it) or
        ``"none"`` (at the centre, or oblique).
    """
    dx, dy = x_px - centre_xy[0], y_px - centre_xy[1]
    if np.hypot(dx, dy) < 1.0:
        return "none"
    radial = np.degrees(np.arctan2(dy, dx))
    diff = abs((orientation_deg - radial + 90.0) % 180.0 - 90.0)  # 0..90
    if diff <= _DIRECTION_TOL_DEG:
        return "tangential"
    if diff >= 90.0 - _DIRECTION_TOL_DEG:
        return "sagittal"
    return "none"


def psf_mtf(psf: np.ndarray, orientation_deg: float, *, sampling: int = 1,
            freq_cpp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MTF of one PSF along one frequency direction.

    Parameters
    ----------
    psf : ndarray (k, k)
        Non-negative PSF (normalised here).
    orientation_deg : float
        Direction of the frequency vector, degrees (0 = +x).
    sampling : int
        PSF samples per sensor pixel.
    freq_cpp : ndarray, optional
        Frequencies in cycles per sensor pixel (default 0 to Nyquist, 0.01 steps).

    Returns
    -------
    freq_cpp, mtf : ndarray
        The MTF is |OTF| along the direction, the PSF's transform evaluated exactly
        at each frequency (samples at 1/sampling px).

    Examples
    --------
    >>> delta = np.zeros((5, 5)); delta[2, 2] = 1
    >>> f, m = psf_mtf(delta, 0.0)
    >>> bool(np.allclose(m, 1.0))
    True
    """
    if freq_cpp is None:
        freq_cpp = np.linspace(0.0, 0.5, 51)
    f = np.asarray(freq_cpp, np.float64)
    p = np.asarray(psf, np.float64)
    p = p / p.sum()
    # The transform evaluated exactly at the requested frequencies (no FFT grid to
    # interpolate: linear interpolation of |OTF| between bins fills in its zeros, by
    # 0.02 near the first zero of a defocused PSF). It is separable along x and y:
    # exp(-2 pi i f (x cos t + y sin t)) = exp(-2 pi i f cos t x) exp(-2 pi i f sin t y).
    ky, kx = p.shape
    xs = (np.arange(kx) - kx // 2) / sampling
    ys = (np.arange(ky) - ky // 2) / sampling
    theta = np.radians(orientation_deg)
    ax = (2 * np.pi) * np.outer(xs, f * np.cos(theta))  # (kx, F) phases
    ay = (2 * np.pi) * np.outer(ys, f * np.sin(theta))  # (ky, F)
    # Real products (numpy's complex-by-real matmul skips BLAS): with c = cos, s = sin,
    # sum p e^{-i(ax+ay)} = sum cy (p cx) - sy (p sx) - i [sy (p cx) + cy (p sx)].
    pc, ps = p @ np.cos(ax), p @ np.sin(ax)
    cy, sy = np.cos(ay), np.sin(ay)
    re = np.sum(cy * pc - sy * ps, axis=0)
    im = np.sum(sy * pc + cy * ps, axis=0)
    return f, np.hypot(re, im)


def psf_map_mtf(psf_map: PSFMap, *, centre_xy: tuple[float, float] | None = None,
                freq_cpp: np.ndarray | None = None) -> list[MTFRecord]:
    """Sagittal and tangential MTF of every node PSF of a map, per channel (method ``"psf"``).

    At the optical centre itself (where the radius is undefined) the records measure
    along x and y with direction ``"none"``.

    Parameters
    ----------
    psf_map : PSFMap
    centre_xy : (float, float), optional
        Optical centre, pixels (default: the frame centre).
    freq_cpp : ndarray, optional
        Frequencies, cycles per pixel.

    Returns
    -------
    list of MTFRecord
    """
    w, h = psf_map.image_size
    centre = centre_xy if centre_xy is not None else ((w - 1) / 2.0, (h - 1) / 2.0)
    records: list[MTFRecord] = []
    ny, nx = psf_map.grid_shape
    for c, name in enumerate(psf_map.channels):
        for i in range(ny):
            for j in range(nx):
                x, y = psf_map.nodes_xy[i, j]
                dx, dy = x - centre[0], y - centre[1]
                if np.hypot(dx, dy) < 1.0:
                    orientations = [0.0, 90.0]
                else:
                    radial = float(np.degrees(np.arctan2(dy, dx)))
                    orientations = [radial + 90.0, radial]  # sagittal, tangential
                for theta in orientations:
                    f, m = psf_mtf(psf_map.psf[c, i, j], theta, sampling=psf_map.sampling,
                                   freq_cpp=freq_cpp)
                    records.append(MTFRecord(
                        channel=name, x_px=float(x), y_px=float(y),
                        orientation_deg=float(theta % 180.0),
                        direction=field_direction(x, y, theta, centre_xy=centre),
                        method="psf", freq_cpp=f, mtf=m,
                    ))
    return records
