"""Noise level per colour channel: measured from the photo, or from a noise model.

The regularisation weight of every solver follows from the noise standard deviation,
so a cleaner photo is sharpened more and a noisier one less, without tuning.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calib import NoiseModel

# MAD of a zero-mean Gaussian is 0.6745 sigma.
_MAD_TO_SIGMA = 1.0 / 0.6744897501960817
# Enough detail coefficients for a stable median (its relative standard error is about
# 1.1 / sqrt(n): 0.16 % here); more only costs time (24 MP: 240 -> 70 ms).
_MAX_SAMPLES = 500_000


@dataclass(frozen=True)
class NoiseEstimate:
    """Noise of one photo, per channel, in linear 0..1 units.

    Attributes
    ----------
    sigma : ndarray, shape (C,)
        Standard deviation at the photo's typical level (used when no model is given).
    model : NoiseModel or None
        Signal-dependent model; when set, each tile uses ``model.sigma(tile mean)``.
    """

    sigma: np.ndarray
    model: NoiseModel | None = None

    def sigma_for(self, channel: int, mean_level: float) -> float:
        """Noise standard deviation for ``channel`` at mean signal ``mean_level``."""
        if self.model is not None:
            return float(self.model.sigma(mean_level, channel))
        return float(self.sigma[channel])


def estimate_sigma(image: np.ndarray, *, saturated: float | None = None) -> np.ndarray:
    """Robust noise standard deviation per channel from the finest diagonal wavelet band.

    Uses the median absolute value of the Haar HH1 coefficients (Donoho's MAD
    estimator): image structure barely reaches that band, noise fills it evenly.
    Blocks touching a pixel at or above ``saturated`` (clipped: no noise) are left out.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    saturated : float, optional
        Clipping level, 0..1 units.

    Returns
    -------
    ndarray, shape (C,), float64

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = estimate_sigma(0.5 + 0.01 * rng.standard_normal((256, 256)))
    >>> bool(abs(s[0] - 0.01) < 0.001)
    True
    """
    img = image[..., None] if image.ndim == 2 else image
    h, w, c = img.shape
    h2, w2 = h // 2 * 2, w // 2 * 2
    # Subsample block rows on large frames: a median of 2 M coefficients is exact enough.
    step = max(1, int(np.ceil((h2 // 2) * (w2 // 2) / _MAX_SAMPLES)))
    rows = np.arange(0, h2, 2 * step)
    out = np.empty(c)
    for ch in range(c):
        a = img[rows, 0:w2:2, ch].astype(np.float32)
        b = img[rows, 1:w2:2, ch]
        cc = img[rows + 1, 0:w2:2, ch]
        d = img[rows + 1, 1:w2:2, ch]
        hh = np.abs(a - b - cc + d) * 0.5
        if saturated is not None:
            top = np.maximum(np.maximum(a, b), np.maximum(cc, d))
            hh = hh[top < saturated]
        out[ch] = float(np.median(hh)) * _MAD_TO_SIGMA if hh.size else 0.0
    return out


def noise_for(
    image: np.ndarray,
    noise: float | np.ndarray | NoiseModel | NoiseEstimate | None,
    *,
    saturated: float | None = None,
) -> NoiseEstimate:
    """Turn the user's ``noise`` argument into a :class:`NoiseEstimate`.

    ``None`` measures it from ``image``; a number or one number per channel is
    taken as the standard deviation; a :class:`calib.NoiseModel` makes it
    signal-dependent. A model without shot noise in some channel (``gain <= 0``:
    a calibration whose charts had no flat mid-grey to measure it) is incomplete:
    every real sensor has shot noise, and trusting such a model would
    under-regularise bright areas, so the photo's own estimate is used instead.
    """
    c = 1 if image.ndim == 2 else image.shape[2]
    if isinstance(noise, NoiseEstimate):
        return noise
    if isinstance(noise, NoiseModel):
        if len(noise.read_noise) != c:
            from ._errors import RestoreError

            raise RestoreError(
                f"the noise model has {len(noise.read_noise)} channels but the image has {c}; "
                "pass a model for this image's channels"
            )
        if np.any(np.asarray(noise.gain) <= 0):
            return NoiseEstimate(estimate_sigma(image, saturated=saturated))
        mean = np.array([float(np.mean(image[..., i] if image.ndim == 3 else image)) for i in range(c)])
        sig = np.array([float(noise.sigma(mean[i], i)) for i in range(c)])
        return NoiseEstimate(sig, noise)
    if noise is None:
        return NoiseEstimate(estimate_sigma(image, saturated=saturated))
    arr = np.broadcast_to(np.asarray(noise, np.float64), (c,)).copy()
    return NoiseEstimate(arr)
