"""Seeded synthetic truth for the PSF estimators: a continuous scene, a known system PSF.

The world is rendered ``FINE`` times finer than the pixels; fine index ``I`` sits at
pixel coordinate ``I / FINE``. The system PSF is an anisotropic, asymmetric optics
blur convolved with the 1-pixel aperture; its sensor-grid samples are the truth.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import fftconvolve

FINE = 8


def system_psf(radius: int, *, sigma=(0.9, 0.55), theta=0.5, coma=0.3):
    """(fine PSF integrating to 1 in pixel units, sensor-grid truth (2r+1)^2 summing to 1)."""
    big = (radius + 2) * FINE
    t = np.arange(-big, big + 1) / FINE
    x, y = np.meshgrid(t, t)
    c, s = np.cos(theta), np.sin(theta)
    xr, yr = c * x + s * y, -s * x + c * y
    optics = np.exp(-0.5 * ((xr / sigma[0]) ** 2 + (yr / sigma[1]) ** 2))
    optics += coma * np.exp(-0.5 * (((xr - 1.2) / (1.6 * sigma[0])) ** 2 + (yr / (1.6 * sigma[1])) ** 2))
    box = np.ones(FINE + 1)
    box[[0, -1]] = 0.5
    box /= box.sum()
    p = fftconvolve(optics, np.outer(box, box), mode="same")
    p /= p.sum() / FINE**2
    sl = slice(big - radius * FINE, big + radius * FINE + 1, FINE)
    truth = p[sl, sl]
    return p, truth / truth.sum()


def photograph(scene_fine: np.ndarray, psf_fine: np.ndarray, rng, *, read=1.5e-4, gain=3.3e-5):
    """Blur the fine scene, sample at pixel centres, add Poisson-Gaussian noise."""
    bg = float(np.median(scene_fine))
    g = fftconvolve(scene_fine - bg, psf_fine / FINE**2, mode="same")[::FINE, ::FINE] + bg
    return g + rng.standard_normal(g.shape) * np.sqrt(read**2 + gain * np.clip(g, 0, None))


def noise_scene(h: int, w: int, rng, *, cell=1.37, angle=0.2):
    """Random binary cells (reflectance 0.05 / 0.9), rotated, on the fine grid."""
    yy, xx = np.mgrid[0:h * FINE, 0:w * FINE] / FINE
    c, s = np.cos(angle), np.sin(angle)
    a = np.floor((c * xx + s * yy) / cell).astype(int)
    b = np.floor((-s * xx + c * yy) / cell).astype(int)
    a -= a.min()
    b -= b.min()
    bits = rng.random((b.max() + 1, a.max() + 1)) > 0.5
    return np.where(bits[b, a], 0.9, 0.05)


def area_render(scene_fine: np.ndarray, oversample: int) -> np.ndarray:
    """The ideal pattern at ``oversample`` per pixel, area-averaged per cell."""
    f = FINE // oversample
    sm = uniform_filter(scene_fine, size=f + (1 - f % 2), mode="nearest") if f > 1 else scene_fine
    return sm[::f, ::f]


def dot_scene(h: int, w: int, rng, *, diameter=1.0, pitch=17.3, margin=12, level=0.9, bg=0.05):
    """Bright discs on a dark ground at jittered sub-pixel centres; returns (scene, centres)."""
    yy, xx = np.mgrid[0:h * FINE, 0:w * FINE] / FINE
    scene = np.full(yy.shape, bg)
    centres = []
    for cy in np.arange(margin, h - margin, pitch):
        for cx in np.arange(margin, w - margin, pitch):
            x0, y0 = cx + rng.uniform(-0.5, 0.5), cy + rng.uniform(-0.5, 0.5)
            centres.append((x0, y0))
            sl = (slice(int((y0 - diameter) * FINE), int((y0 + diameter) * FINE) + 2),
                  slice(int((x0 - diameter) * FINE), int((x0 + diameter) * FINE) + 2))
            inside = (xx[sl] - x0) ** 2 + (yy[sl] - y0) ** 2 <= (diameter / 2) ** 2
            scene[sl][inside] = level
    return scene, np.array(centres)


def rel_l2(est: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(est - truth) / np.linalg.norm(truth))


def varying_dot_photo(h: int, w: int, rng, sigma_at_x, *, theta_at=None, shift_at=None, pitch=13.3, margin=10,
                      level=0.9, bg=0.05):
    """Dots whose system PSF changes across the field: ``sigma_at_x(x)`` gives the optics'
    (sigma_x, sigma_y) at a dot's x, ``theta_at(x, y)`` (optional) the angle of its long
    axis and coma (radians, as ``atan2(y, x)`` counts), ``shift_at(x, y)`` (optional) how
    far (x, y pixels) its PSF sits from the dot's centre (lateral colour). Each dot is
    rendered with its own PSF; returns (photo, centres)."""
    img = np.full((h, w), bg)
    r = 6
    t = np.arange(-r * FINE, r * FINE + 1) / FINE
    gx, gy = np.meshgrid(t, t)
    centres = []
    for cy in np.arange(margin, h - margin, pitch):
        for cx in np.arange(margin, w - margin, pitch):
            x0, y0 = cx + rng.uniform(-0.5, 0.5), cy + rng.uniform(-0.5, 0.5)
            centres.append((x0, y0))
            ix, iy = int(round(x0)), int(round(y0))
            # The disc on the fine grid around pixel (ix, iy), at its sub-pixel phase.
            sx, sy = (0.0, 0.0) if shift_at is None else shift_at(x0, y0)
            disc = ((gx - (x0 + sx - ix)) ** 2 + (gy - (y0 + sy - iy)) ** 2 <= 0.25).astype(float)
            theta = 0.5 if theta_at is None else theta_at(x0, y0)
            psf_fine, _ = system_psf(4, sigma=sigma_at_x(x0), theta=theta)
            blurred = fftconvolve(disc * (level - bg), psf_fine / FINE**2, mode="same")
            img[iy - r:iy + r + 1, ix - r:ix + r + 1] += blurred[::FINE, ::FINE]
    return img + rng.standard_normal(img.shape) * np.sqrt(1.5e-4**2 + 3.3e-5 * img), np.array(centres)
