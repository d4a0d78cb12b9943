"""Sensor model: pixel aperture, anti-alias filter, Bayer mosaic, noise, quantisation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._records import NoiseModel
from ._lens import CHANNELS

#: Mean electron count from which a Gaussian replaces the Poisson shot noise (see ``expose``).
POISSON_EXACT_BELOW_E = 200.0


@dataclass(frozen=True)
class SensorModel:
    """A simulated image sensor.

    Attributes
    ----------
    name : str
    width_px, height_px : int
    pixel_pitch_um : float
    fill_factor : float
        Area fraction of the light-sensitive square in each pixel (microlenses: ~1).
        The pixel aperture is a centred square of side ``pitch * sqrt(fill_factor)``.
    aa_shift_px : float
        Anti-alias filter: a 4-dot birefringent splitter with this total separation
        in x and in y (pixels); 0 means no filter.
    wavelengths_nm : (float, float, float)
        Effective wavelength of the R, G, B colour filters.
    full_well_e : float
        Electrons at the white level at base ISO.
    base_iso : float
    read_noise_e : float
        Read noise before the ISO gain (electrons rms).
    read_noise_dn : float
        Noise after the gain (DN rms), independent of ISO.
    bit_depth : int
    black_level_dn : int
    """

    name: str
    width_px: int
    height_px: int
    pixel_pitch_um: float
    fill_factor: float = 1.0
    aa_shift_px: float = 0.0
    wavelengths_nm: tuple[float, float, float] = (610.0, 540.0, 460.0)
    full_well_e: float = 30000.0
    base_iso: float = 100.0
    read_noise_e: float = 3.0
    read_noise_dn: float = 0.8
    bit_depth: int = 14
    black_level_dn: int = 512

    @property
    def white_level_dn(self) -> int:
        """Largest raw value (clipping)."""
        return 2**self.bit_depth - 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width_px, self.height_px

    def gain_dn_per_e(self, iso: float) -> float:
        """Conversion gain at ``iso``: full well maps to the white level at base ISO."""
        return (self.white_level_dn - self.black_level_dn) / self.full_well_e * (iso / self.base_iso)

    def noise_model(self, iso: float) -> NoiseModel:
        """The Poisson-Gaussian noise of developed (0..1) data at ``iso``.

        Variance ``read**2 + gain * mean`` with the read term including the
        quantisation step (1/12 DN^2).
        """
        g = self.gain_dn_per_e(iso)
        span = float(self.white_level_dn - self.black_level_dn)
        read = np.sqrt((self.read_noise_e * g) ** 2 + self.read_noise_dn**2 + 1.0 / 12.0) / span
        gain = g / span
        return NoiseModel(CHANNELS, np.full(3, read), np.full(3, gain))

    def expose(
        self, electrons_mean: np.ndarray, *, iso: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Turn mean electrons (H, W, C) into raw DN (uint16): shot + read noise, black, clip.

        Shot noise is Poisson where the mean is below ``POISSON_EXACT_BELOW_E``
        electrons; above it, a Gaussian of the same mean and variance stands in for it
        (its skewness ``1/sqrt(mean) < 0.07`` is far below what any measurement here
        resolves, and drawing exact Poisson numbers for 72 M samples of a 24 MP frame
        took several seconds). The read noise before and after the gain are independent
        Gaussians, so both draw from one standard-normal sample per pixel.
        """
        g = np.float32(self.gain_dn_per_e(iso))
        mean = np.clip(np.asarray(electrons_mean, np.float32), 0.0, None)
        # read noise of both stages, in electrons
        read2 = np.float32(self.read_noise_e**2 + (self.read_noise_dn / float(g)) ** 2)
        z = rng.standard_normal(mean.shape, dtype=np.float32)
        sigma = mean + read2
        np.sqrt(sigma, out=sigma)
        e = sigma
        e *= z
        e += mean
        dark = np.flatnonzero(mean < POISSON_EXACT_BELOW_E)
        if dark.size:
            low = mean.ravel()[dark]
            e.ravel()[dark] = rng.poisson(low).astype(np.float32) + z.ravel()[dark] * np.sqrt(read2)
        e *= g
        e += np.float32(self.black_level_dn)
        np.rint(e, out=e)
        np.clip(e, 0, self.white_level_dn, out=e)
        return e.astype(np.uint16)

    def develop(self, dn: np.ndarray) -> np.ndarray:
        """DN -> linear float32 0..1 (black subtracted, divided by white - black)."""
        span = np.float32(self.white_level_dn - self.black_level_dn)
        return (dn.astype(np.float32) - np.float32(self.black_level_dn)) / span


def mosaic_rggb(planes: np.ndarray) -> np.ndarray:
    """Pick each pixel's Bayer colour from (H, W, 3) planes: R G / G B."""
    h, w = planes.shape[:2]
    out = np.empty((h, w), planes.dtype)
    for (dy, dx), c in (((0, 0), 0), ((0, 1), 1), ((1, 0), 1), ((1, 1), 2)):
        out[dy::2, dx::2] = planes[dy::2, dx::2, c]
    return out


SENSOR_PRESETS: dict[str, SensorModel] = {
    # Small and quick: tests and the demo (6 x 4 mm, no AA filter).
    "small": SensorModel(name="small", width_px=1200, height_px=800, pixel_pitch_um=5.0),
    # An APS-C 24 MP body with a weak AA filter.
    "24mp": SensorModel(
        name="24mp", width_px=6000, height_px=4000, pixel_pitch_um=3.9, aa_shift_px=0.5,
        full_well_e=25000.0, read_noise_e=2.5,
    ),
}
