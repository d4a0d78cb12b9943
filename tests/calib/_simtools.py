"""Shared helpers for the simulated-camera tests: a tiny sensor and PSF measures."""
from __future__ import annotations

import numpy as np

from calib import SensorModel

TINY = SensorModel(name="tiny", width_px=240, height_px=160, pixel_pitch_um=5.0)


def mtf_x(psf: np.ndarray, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """MTF along x (cycles/sample) of a PSF: |FFT| of its line spread function."""
    lsf = psf.sum(axis=0)
    m = np.abs(np.fft.rfft(lsf, n))
    return np.fft.rfftfreq(n), m / m[0]


def mtf50(psf: np.ndarray) -> float:
    f, m = mtf_x(psf)
    i = int(np.nonzero(m < 0.5)[0][0])
    return float(f[i - 1] + (m[i - 1] - 0.5) * (f[i] - f[i - 1]) / (m[i - 1] - m[i]))


def moments(psf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (x, y) relative to the centre sample and 2x2 covariance, in samples."""
    k = psf.shape[0]
    c = np.arange(k) - k // 2
    gy, gx = np.meshgrid(c, c, indexing="ij")
    p = psf / psf.sum()
    mx, my = (p * gx).sum(), (p * gy).sum()
    dx, dy = gx - mx, gy - my
    cov = np.array([[(p * dx * dx).sum(), (p * dx * dy).sum()], [(p * dx * dy).sum(), (p * dy * dy).sum()]])
    return np.array([mx, my]), cov


def shoot_full_frame_dots(model, defocus: int):
    """The analysis bench's dots shot: the chart made for ``model``'s framing and
    overfilling the frame (its inner markers in view), ``defocus`` steps past best focus.

    Returns (layout, focus position, distance in m, the shot)."""
    import targets  # noqa: PLC0415

    probe = targets.make_layout("dots", paper="300x200mm")
    fill = model.dots_field_fill(probe)
    dist = model.chart_distance_m(probe, fill=fill)
    layout = targets.make_layout("dots", paper="300x200mm", pixel_pitch_um=model.sensor.pixel_pitch_um,
                                 focal_mm=model.focal_length_mm, distance_m=dist)
    fp = round(model.best_focus_position(dist)) + defocus
    return layout, fp, dist, model.shoot(layout, focus_position=fp, object_distance_m=dist, fill=fill)
