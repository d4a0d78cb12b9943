"""Capture, simulation, analysis and the PSF database.

``calib`` reads chart layouts through ``targets``' public API and never imports
``gphoto2`` itself (only its gphoto2 backend module does, on demand).
"""
from ._errors import CalibError
from ._psfmap import FLAG_FILLED, FLAG_NOISY, FLAG_OK, FLAG_SATURATED, PSFMap
from ._records import CalibrationKey, MTFRecord, NoiseModel, ShotMetadata
from ._db import (
    Calibration,
    CalibrationSummary,
    NearestFocusWarning,
    PSFDatabase,
    export_mtf_csv,
    export_npz,
    import_npz,
)
from ._imageio import GammaEncodedWarning, LinearImage, load_linear

__all__ = [
    "CalibError",
    "PSFMap",
    "ShotMetadata",
    "CalibrationKey",
    "NoiseModel",
    "MTFRecord",
    "FLAG_OK",
    "FLAG_FILLED",
    "FLAG_NOISY",
    "FLAG_SATURATED",
    "PSFDatabase",
    "Calibration",
    "CalibrationSummary",
    "NearestFocusWarning",
    "export_npz",
    "import_npz",
    "export_mtf_csv",
    "GammaEncodedWarning",
    "LinearImage",
    "load_linear",
]
