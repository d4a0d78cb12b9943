"""Pupil-function optics: PSF = |F{A exp(i 2 pi W / lambda)}|^2, then pixel + AA filter.

The Fourier transform is a matrix DFT (two small complex matrix products), so the
PSF is sampled exactly on the grid we ask for (any spacing, any sub-pixel offset)
instead of on the grid an FFT would impose; no resampling step blurs it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Wavefront:
    """Seidel wavefront at one field point and wavelength (OPD, micrometres).

    ``W = defocus rho^2 + spherical rho^4 + coma rho^2 rho_t + astigmatism rho_t^2``
    with ``rho_t`` the pupil coordinate along the field direction ``azimuth_rad``
    (angle of the field point seen from the optical centre, image x towards y).
    """

    defocus_um: float = 0.0
    spherical_um: float = 0.0
    coma_um: float = 0.0
    astigmatism_um: float = 0.0
    azimuth_rad: float = 0.0

    def max_slope_waves(self, wavelength_um: float) -> float:
        """Upper bound of |dW/drho| over the pupil, waves per unit pupil radius."""
        return (
            2 * abs(self.defocus_um)
            + 4 * abs(self.spherical_um)
            + 3 * abs(self.coma_um)
            + 2 * abs(self.astigmatism_um)
        ) / wavelength_um


@lru_cache(maxsize=16)
def _aperture(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Circular pupil on n x n samples with area-weighted edge; and the sample coordinates."""
    rho = (np.arange(n) + 0.5 - n / 2) * (2.0 / n)
    sub = 4  # edge cells: fraction of the cell inside the unit circle
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    xs = (rho[None, :, None, None] + offs[None, None, None, :] * (2.0 / n))
    ys = (rho[:, None, None, None] + offs[None, None, :, None] * (2.0 / n))
    inside = (xs**2 + ys**2 <= 1.0).mean(axis=(2, 3))
    inside.setflags(write=False)
    rho.setflags(write=False)
    return inside, rho


def _sampling_matrix(
    centres_um: np.ndarray, fine_um: np.ndarray, dx_um: float, aperture_um: float, aa_um: float
) -> np.ndarray:
    """Rows: integrate fine samples over the pixel aperture (and the AA split) around each centre.

    Each fine sample stands for a cell of width ``dx_um``; its weight is the length of
    the cell inside the aperture, averaged over the two AA-filter images at +-aa/2.
    """
    t = fine_um[None, :] - centres_um[:, None]
    w = np.zeros_like(t)
    shifts = (-aa_um / 2, aa_um / 2) if aa_um > 0 else (0.0,)
    for s in shifts:
        lo = np.maximum(t - s - dx_um / 2, -aperture_um / 2)
        hi = np.minimum(t - s + dx_um / 2, aperture_um / 2)
        w += np.clip(hi - lo, 0.0, None)
    return w / len(shifts)


def fine_step(pitch_um: float, oversample: int, wavelength_um: float, n_w: float) -> tuple[float, int]:
    """Fine-grid spacing (<= lambda*N/3, 1.5x the intensity Nyquist rate) and its odd ratio q."""
    dx_out = pitch_um / oversample
    q = max(1, math.ceil(dx_out / (wavelength_um * n_w / 3.0)))
    q += 1 - q % 2
    return dx_out / q, q


def system_psf(
    wf: Wavefront,
    *,
    wavelength_um: float,
    n_w: float,
    pitch_um: float,
    fill_factor: float,
    aa_shift_px: float,
    oversample: int,
    size: int,
    offset_px: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The system PSF (optics x pixel aperture x AA filter) sampled at pitch/oversample.

    Parameters
    ----------
    wf : Wavefront
    wavelength_um, n_w : float
        Wavelength and working f-number (image space).
    pitch_um, fill_factor, aa_shift_px : float
        Pixel pitch, pixel-aperture area fraction, AA-filter separation (pixels).
    oversample : int
        Samples per pixel of the result.
    size : int
        Odd side of the result in samples.
    offset_px : (float, float)
        Where the chief ray lands relative to the centre sample (pixels).

    Returns
    -------
    ndarray, (size, size) float32, non-negative, sums to 1.
    """
    dx, q = fine_step(pitch_um, oversample, wavelength_um, n_w)
    aperture_um = pitch_um * math.sqrt(fill_factor)
    aa_um = aa_shift_px * pitch_um
    margin = math.ceil((aperture_um / 2 + aa_um / 2) / dx) + 1
    m = size * q + 2 * margin
    fine = (np.arange(m) - (m - 1) / 2) * dx
    extent = m * dx
    # the pupil sampling sets the period of the image-plane replicas (lambda N n) and
    # must resolve the wavefront phase (< 1/4 wave per sample)
    n = max(64, math.ceil(1.3 * extent / (wavelength_um * n_w)), math.ceil(8 * wf.max_slope_waves(wavelength_um)))
    n += n % 2
    amp, rho = _aperture(n)
    ry, rx = np.meshgrid(rho, rho, indexing="ij")
    ct, st = math.cos(wf.azimuth_rad), math.sin(wf.azimuth_rad)
    rt = rx * ct + ry * st
    r2 = rx**2 + ry**2
    w_um = (
        wf.defocus_um * r2
        + wf.spherical_um * r2**2
        + wf.coma_um * r2 * rt
        + wf.astigmatism_um * rt**2
    )
    pupil = (amp * np.exp(2j * np.pi * w_um / wavelength_um)).astype(np.complex64)
    alpha = 1.0 / (2.0 * wavelength_um * n_w)  # cycles per um per unit pupil radius
    ox, oy = offset_px[0] * pitch_um, offset_px[1] * pitch_um
    ax = np.exp(-2j * np.pi * alpha * np.outer(fine - ox, rho)).astype(np.complex64)
    ay = np.exp(-2j * np.pi * alpha * np.outer(fine - oy, rho)).astype(np.complex64)
    field = ay @ pupil @ ax.T
    intensity = (field.real**2 + field.imag**2).astype(np.float64)
    centres = (np.arange(size) - size // 2) * (pitch_um / oversample)
    s = _sampling_matrix(centres, fine, dx, aperture_um, aa_um)
    psf = s @ intensity @ s.T
    psf = np.clip(psf, 0.0, None)
    return (psf / psf.sum()).astype(np.float32)


def airy_otf(nu_cpp: np.ndarray, cutoff_cpp: float) -> np.ndarray:
    """Diffraction OTF of a circular aperture (the analytic reference)."""
    v = np.clip(np.abs(np.asarray(nu_cpp, float)) / cutoff_cpp, 0.0, 1.0)
    return (2 / np.pi) * (np.arccos(v) - v * np.sqrt(1 - v**2))
