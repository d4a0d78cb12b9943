"""The simulated lens + sensor: ground-truth PSFs and camera-like shots (private)."""
from ._camera import PointPx, RadialDistortion, SimShot, SimulatedCamera, TrueDots, psf_centroid_px
from ._lens import LENS_PROFILES, LensProfile
from ._sensor import SENSOR_PRESETS, SensorModel

__all__ = [
    "LENS_PROFILES",
    "LensProfile",
    "PointPx",
    "RadialDistortion",
    "SENSOR_PRESETS",
    "SensorModel",
    "SimShot",
    "SimulatedCamera",
    "TrueDots",
    "psf_centroid_px",
]
