"""Synthetic truth for restore tests: natural scenes and analytic spatially varying lenses."""
from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

import calib


def scene(name: str = "astronaut", shape: tuple[int, int] = (192, 256), rgb: bool = False) -> np.ndarray:
    """A crop of a scikit-image sample photo (shipped with the package), linear 0.05..0.95."""
    from skimage import data

    img = getattr(data, name)().astype(np.float32) / 255.0
    if not rgb and img.ndim == 3:
        img = img @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    h, w = shape
    y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return np.ascontiguousarray(0.05 + 0.9 * img[y0 : y0 + h, x0 : x0 + w])


def gaussian_psf(k: int, sx: float, sy: float | None = None, angle: float = 0.0) -> np.ndarray:
    """Odd k x k (possibly astigmatic, rotated) Gaussian, sum 1."""
    sy = sx if sy is None else sy
    r = np.arange(k) - k // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    p = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return (p / p.sum()).astype(np.float32)


def disc_psf(k: int, radius: float) -> np.ndarray:
    """Odd k x k uniform disc (a defocused lens), sum 1."""
    r = np.arange(k) - k // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    p = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    return p / p.sum()


def soft_corner_map(width: int, height: int, *, k: int = 25, grid=(3, 5), channels=("Y",)) -> calib.PSFMap:
    """A lens sharp in the centre and much softer in the corners (astigmatic, growing with radius)."""
    ny, nx = grid
    xs = np.linspace(0, width - 1, nx)
    ys = np.linspace(0, height - 1, ny)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    rmax = np.hypot(cx, cy)
    psf = np.zeros((len(channels), ny, nx, k, k), np.float32)
    nodes = np.zeros((ny, nx, 2))
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            rho = np.hypot(x - cx, y - cy) / rmax
            # Tangential blur grows faster than sagittal: astigmatism towards the corners.
            st, ss = 0.5 + 4.5 * rho**2, 0.5 + 2.0 * rho**2
            ang = np.arctan2(y - cy, x - cx)
            for c in range(len(channels)):
                psf[c, i, j] = gaussian_psf(k, ss, st, ang)
            nodes[i, j] = (x, y)
    return calib.PSFMap(psf, nodes, tuple(channels), (width, height))


def blur_with_map(img: np.ndarray, m: calib.PSFMap) -> np.ndarray:
    """Exact spatially varying blur whose PSF at each pixel is the map's interpolation
    (``psf_at`` of a map at one sample per pixel, before it clips its small negative
    lobes)."""
    img3 = img[..., None] if img.ndim == 2 else img
    h, w, nc = img3.shape
    ny, nx = m.grid_shape
    wy_all = m.row_weights(np.arange(h, dtype=float))
    wx_all = m.column_weights(np.arange(w, dtype=float))
    out = np.zeros_like(img3, dtype=np.float64)
    for c in range(nc):
        mc = c if m.psf.shape[0] > 1 else 0
        for i in range(ny):
            wy = wy_all[:, i]
            for j in range(nx):
                wx = wx_all[:, j]
                if not (wy.any() and wx.any()):
                    continue
                k = m.psf[mc, i, j]
                r = k.shape[0] // 2
                pad = np.pad(img3[..., c].astype(np.float64), r, mode="symmetric")
                out[..., c] += wy[:, None] * wx[None, :] * fftconvolve(pad, k, mode="valid")
    out = out.astype(np.float32)
    return out[..., 0] if img.ndim == 2 else out


def constant_map(psf: np.ndarray, width: int, height: int, channels=("Y",)) -> calib.PSFMap:
    """A map with one PSF everywhere."""
    grid = np.broadcast_to(psf, (len(channels), 1, 1, *psf.shape)).copy()
    return calib.PSFMap(grid, np.array([[[(width - 1) / 2, (height - 1) / 2]]]), tuple(channels), (width, height))


def psnr(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    """PSNR (white = 1) of a against b, ignoring ``border`` pixels at each edge."""
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))



NOISE = 0.005  # 0.5 % of white
