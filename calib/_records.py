"""Small records passed between capture, analysis, the database and restore.

Each carries its units in its field names (``_mm``, ``_m``, ``_s``, ``_px``, ``_cpp``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

import numpy as np


@dataclass(frozen=True)
class ShotMetadata:
    """What a camera records about one photo (any field may be unknown: None).

    Written by the simulated camera into its TIFFs (``ImageDescription`` JSON under
    the key ``"lenspsf"``) and by capture sessions into ``session.json``; read back
    by the linear image loader from those, or from EXIF.
    """

    camera: str | None = None
    serial: str | None = None
    lens: str | None = None
    focal_length_mm: float | None = None
    f_number: float | None = None
    exposure_s: float | None = None
    iso: float | None = None
    focus_position: int | None = None
    focus_distance_m: float | None = None
    pixel_pitch_um: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class CalibrationKey:
    """What identifies one calibration: camera, lens, focal length, f-number, focus."""

    camera: str
    lens: str
    focal_length_mm: float | None
    f_number: float | None
    focus_position: int | None
    focus_distance_m: float | None = None

    @classmethod
    def from_metadata(cls, meta: ShotMetadata) -> Self:
        """The key a photo with ``meta`` belongs to (unknown camera/lens become "unknown")."""
        return cls(
            camera=meta.camera or "unknown",
            lens=meta.lens or "unknown",
            focal_length_mm=meta.focal_length_mm,
            f_number=meta.f_number,
            focus_position=meta.focus_position,
            focus_distance_m=meta.focus_distance_m,
        )


@dataclass(frozen=True)
class NoiseModel:
    """Poisson-Gaussian sensor noise per channel, in linear 0..1 units.

    The variance of a pixel with mean signal ``m`` (0..1, after black level) is
    ``read_noise**2 + gain * m``.

    Attributes
    ----------
    channels : tuple of str
    read_noise : ndarray, shape (C,)
        Standard deviation of the signal-independent part, 0..1 units.
    gain : ndarray, shape (C,)
        Variance per unit of mean signal (shot noise), 0..1 units.
    """

    channels: tuple[str, ...]
    read_noise: np.ndarray
    gain: np.ndarray

    def sigma(self, mean: np.ndarray | float, channel: int = 0) -> np.ndarray:
        """Noise standard deviation at mean signal ``mean`` in ``channel``."""
        m = np.clip(np.asarray(mean, dtype=np.float64), 0.0, None)
        return np.sqrt(self.read_noise[channel] ** 2 + self.gain[channel] * m)


@dataclass(frozen=True)
class MTFRecord:
    """One MTF measurement at one field position, orientation and channel.

    Attributes
    ----------
    channel : str
    x_px, y_px : float
        Field position on the sensor, pixels.
    orientation_deg : float
        Orientation of the measured frequency direction (0 = along x), degrees.
    direction : str
        ``"sagittal"``, ``"tangential"`` or ``"none"`` relative to the optical centre.
    method : str
        ``"edge"``, ``"stripes"`` or ``"psf"``.
    freq_cpp : ndarray
        Spatial frequencies, cycles per pixel.
    mtf : ndarray
        Modulation transfer at ``freq_cpp`` (1 at zero frequency).
    flags : tuple of str
        Problems found (``"low_contrast"``, ``"clipped"``, ...); empty when clean.
    """

    channel: str
    x_px: float
    y_px: float
    orientation_deg: float
    direction: str
    method: str
    freq_cpp: np.ndarray
    mtf: np.ndarray
    flags: tuple[str, ...] = ()

    def freq_lpmm(self, pixel_pitch_um: float) -> np.ndarray:
        """``freq_cpp`` in line pairs per millimetre for a sensor of this pixel pitch."""
        return np.asarray(self.freq_cpp) * 1000.0 / pixel_pitch_um

    def mtf50_cpp(self) -> float:
        """Frequency where the MTF first falls to 0.5, c/p; NaN if never (see :func:`mtf50`)."""
        return mtf50(self.freq_cpp, self.mtf)


def mtf50(freq_cpp: np.ndarray, mtf: np.ndarray) -> float:
    """Frequency where an MTF curve first falls below 0.5, by linear interpolation.

    Parameters
    ----------
    freq_cpp, mtf : ndarray
        Increasing frequencies (cycles/pixel) and the modulation at each.

    Returns
    -------
    float
        MTF50 in the units of ``freq_cpp``; NaN when the curve never falls below 0.5
        (or starts below it).

    Examples
    --------
    >>> mtf50(np.array([0.0, 0.2, 0.4]), np.array([1.0, 0.6, 0.4]))
    0.3
    """
    f, m = np.asarray(freq_cpp, float), np.asarray(mtf, float)
    below = np.nonzero(m < 0.5)[0]
    if len(below) == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    return float(f[i - 1] + (m[i - 1] - 0.5) * (f[i] - f[i - 1]) / (m[i - 1] - m[i]))
