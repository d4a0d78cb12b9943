"""Lens profiles: thin-lens focusing, Seidel aberrations, colour, vignetting, distortion.

A profile describes the lens *scaled to the sensor it is simulated on*: field heights
are normalised to the sensor's half-diagonal (``h = 1`` in the image corner), so the
same profile gives the same look (sharp centre, soft corners) on any simulated sensor.
Aberration coefficients are optical path differences (OPD) in micrometres at full
field and full aperture (the widest f-number); they scale with the f-number as Seidel
terms do (``W040 ~ N^-4``, ``W131 ~ N^-3``, ``W222``/``W220 ~ N^-2``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHANNELS = ("R", "G", "B")


@dataclass(frozen=True)
class LensProfile:
    """A named lens model.

    Attributes
    ----------
    name : str
    focal_length_mm : float
    f_number_min : float
        Widest aperture; the aberration coefficients below are given there.
    f_number_default : float
        Aperture used when the camera is not told otherwise.
    spherical_um, coma_um, astigmatism_um, field_curvature_um : float
        Seidel OPD coefficients W040, W131, W222, W220 (micrometres, full field,
        full aperture). Coma and astigmatism are oriented along the field direction.
    axial_colour_um : (float, float, float)
        Longitudinal colour: focal shift of the R, G, B image planes (micrometres along
        the axis; green is the reference, normally 0).
    lateral_colour : (float, float, float)
        Lateral colour: relative magnification difference of R, G, B with respect to
        green (``+5e-4`` puts red 0.05 % further from the centre).
    distortion_k1, distortion_k2 : float
        Radial distortion ``r_d = r (1 + k1 rho^2 + k2 rho^4)`` with ``rho`` the
        ideal radius over the half-diagonal (negative k1: barrel).
    half_field_deg : float
        Chief-ray angle in the image corner (natural vignetting ``cos^4``).
    mechanical_vignetting : float
        Fraction of light lost in the corner wide open by the lens barrel; it fades
        out when stopping down by two stops.
    mechanical_onset : float
        Field height where mechanical vignetting starts.
    focus_step_um : float
        Image-side travel per focus-drive step (position 0 = infinity end stop).
    max_focus_position : int
    """

    name: str
    focal_length_mm: float
    f_number_min: float
    f_number_default: float
    spherical_um: float
    coma_um: float
    astigmatism_um: float
    field_curvature_um: float
    axial_colour_um: tuple[float, float, float]
    lateral_colour: tuple[float, float, float]
    distortion_k1: float
    distortion_k2: float
    half_field_deg: float
    mechanical_vignetting: float
    mechanical_onset: float
    focus_step_um: float = 5.0
    max_focus_position: int = 1200

    # -- focusing (thin lens, pupil magnification 1) ------------------------------
    def image_distance_mm(self, focus_position: float, focal_length_mm: float | None = None) -> float:
        """Lens-to-sensor distance at a focus-drive position."""
        f = focal_length_mm or self.focal_length_mm
        return f + focus_position * self.focus_step_um * 1e-3

    @staticmethod
    def conjugate_mm(object_distance_m: float, focal_length_mm: float) -> float:
        """Where an object at ``object_distance_m`` comes to focus behind the lens."""
        d = object_distance_m * 1000.0
        if not math.isfinite(d):
            return focal_length_mm
        return 1.0 / (1.0 / focal_length_mm - 1.0 / d)

    def scaled_seidel_um(self, f_number: float) -> dict[str, float]:
        """Seidel OPD coefficients at ``f_number`` (full field)."""
        a = self.f_number_min / f_number
        return {
            "W040": self.spherical_um * a**4,
            "W131": self.coma_um * a**3,
            "W222": self.astigmatism_um * a**2,
            "W220": self.field_curvature_um * a**2,
        }

    def relative_illumination(self, h: np.ndarray, f_number: float) -> np.ndarray:
        """Vignetting factor (1 on axis) at normalised field height ``h``.

        float32 in, float32 out (whole rendered frames); anything else in float64.
        """
        h = np.asarray(h)
        dt = np.float32 if h.dtype == np.float32 else np.float64
        shape = h.shape
        h = np.atleast_1d(h).astype(dt, copy=False)  # 1-d at least: in-place steps below
        tan_t = h * dt(math.tan(math.radians(self.half_field_deg)))
        tan_t *= tan_t
        tan_t += dt(1.0)
        tan_t *= tan_t
        natural = np.reciprocal(tan_t, out=tan_t)  # cos^4 of the chief-ray angle
        stops = math.log2(max(f_number, self.f_number_min) / self.f_number_min)
        a = self.mechanical_vignetting * max(0.0, 1.0 - stops / 2.0)
        if a == 0.0:
            return natural.reshape(shape)
        t = h - dt(self.mechanical_onset)
        t *= dt(1.0 / max(1e-9, 1.0 - self.mechanical_onset))
        np.clip(t, 0.0, None, out=t)
        t *= t
        t *= dt(-a)
        t += dt(1.0)
        np.clip(t, 0.0, 1.0, out=t)
        natural *= t
        return natural.reshape(shape)


LENS_PROFILES: dict[str, LensProfile] = {
    # A well-corrected 50 mm prime: near diffraction limited in the centre at f/4.
    "sharp-prime": LensProfile(
        name="sharp-prime", focal_length_mm=50.0, f_number_min=2.0, f_number_default=4.0,
        spherical_um=0.35, coma_um=0.45, astigmatism_um=0.5, field_curvature_um=0.3,
        axial_colour_um=(12.0, 0.0, -18.0), lateral_colour=(3e-4, 0.0, -4e-4),
        distortion_k1=-0.01, distortion_k2=0.0, half_field_deg=23.0,
        mechanical_vignetting=0.25, mechanical_onset=0.5,
    ),
    # A kit zoom at its long end: good centre, corners much softer (astigmatism,
    # field curvature, coma), strong lateral colour and barrel distortion.
    "soft-zoom": LensProfile(
        name="soft-zoom", focal_length_mm=55.0, f_number_min=4.0, f_number_default=5.6,
        spherical_um=0.25, coma_um=1.1, astigmatism_um=1.8, field_curvature_um=1.4,
        axial_colour_um=(20.0, 0.0, -30.0), lateral_colour=(1.0e-3, 0.0, -1.2e-3),
        distortion_k1=-0.03, distortion_k2=0.008, half_field_deg=20.0,
        mechanical_vignetting=0.35, mechanical_onset=0.4, focus_step_um=6.0,
    ),
    # An old double-Gauss: undercorrected spherical aberration (glow), strong axial
    # colour, some coma; soft wide open, pleasant stopped down.
    "vintage": LensProfile(
        name="vintage", focal_length_mm=58.0, f_number_min=2.0, f_number_default=2.8,
        spherical_um=1.6, coma_um=0.9, astigmatism_um=0.7, field_curvature_um=0.6,
        axial_colour_um=(35.0, 0.0, -45.0), lateral_colour=(6e-4, 0.0, -7e-4),
        distortion_k1=0.012, distortion_k2=0.0, half_field_deg=21.0,
        mechanical_vignetting=0.45, mechanical_onset=0.35, focus_step_um=4.0,
    ),
}
