"""Capture, simulation, analysis and the PSF database.

``calib`` reads chart layouts through ``targets``' public API and never imports
``gphoto2`` itself (only its gphoto2 backend module does, on demand).
"""
from ._errors import CalibError
from ._psfmap import FLAG_FILLED, FLAG_NOISY, FLAG_OK, FLAG_SATURATED, PSFMap, sensor_grid_psf
from ._mtf_psf import field_direction, psf_map_mtf, psf_mtf
from ._records import CalibrationKey, MTFRecord, NoiseModel, ShotMetadata
from ._sim import (
    LENS_PROFILES,
    SENSOR_PRESETS,
    LensProfile,
    PointPx,
    RadialDistortion,
    SensorModel,
    SimShot,
    SimulatedCamera,
    TrueDots,
    psf_centroid_px,
)
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
from ._edge import EdgeMTF, measure_edge
from ._mtf_stripes import StripePatchResult, StripeResult, measure_stripes
from ._through_focus import ThroughFocus, through_focus
from ._chart_mtf import ChartEdge, ChartMTF, EdgeAgreement, ItemSummary, measure_chart_mtf, psf_edge_agreement
from ._camera import Camera, CameraInfo, Setting, check_image_file, open_camera
from ._gphoto2_backend import DetectedCamera, GPhoto2Camera, detect_cameras
from ._simcamera import SimCamera
from ._report import ReportResult, RestoredExample, write_report
from ._session import (
    ChartRef,
    FocusPlan,
    Session,
    ShotFile,
    ShotRecord,
    load_charts,
    load_session,
    parse_focus_spec,
    run_session,
)

from ._psf_dots import DotsPSF, dot_ellipse_px, estimate_psf_dots
from ._psf_pattern import PatternPSF, estimate_psf_pattern
from ._register import Registration, register_chart
from ._pattern_register import PatternPSFResult, estimate_psf_from_pattern
from ._analyze import AnalysisResult, analyze_images, analyze_session, estimate_noise_model, noise_from_darks, noise_model_complete

__all__ = [
    "psf_mtf",
    "psf_map_mtf",
    "field_direction",
    "CalibError",
    "PSFMap",
    "sensor_grid_psf",
    "ShotMetadata",
    "CalibrationKey",
    "NoiseModel",
    "MTFRecord",
    "LENS_PROFILES",
    "SENSOR_PRESETS",
    "LensProfile",
    "PointPx",
    "RadialDistortion",
    "SensorModel",
    "SimShot",
    "SimulatedCamera",
    "TrueDots",
    "psf_centroid_px",
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
    "EdgeMTF",
    "measure_edge",
    "Camera",
    "CameraInfo",
    "Setting",
    "open_camera",
    "check_image_file",
    "GPhoto2Camera",
    "SimCamera",
    "DetectedCamera",
    "detect_cameras",
    "ChartRef",
    "FocusPlan",
    "Session",
    "ShotFile",
    "ShotRecord",
    "load_charts",
    "load_session",
    "parse_focus_spec",
    "run_session",
    "DotsPSF",
    "dot_ellipse_px",
    "estimate_psf_dots",
    "PatternPSF",
    "estimate_psf_pattern",
    "Registration",
    "register_chart",
    "PatternPSFResult",
    "estimate_psf_from_pattern",
    "AnalysisResult",
    "analyze_images",
    "analyze_session",
    "noise_from_darks",
    "estimate_noise_model",
    "noise_model_complete",
    "StripePatchResult",
    "StripeResult",
    "measure_stripes",
    "ThroughFocus",
    "through_focus",
    "ChartEdge",
    "ChartMTF",
    "EdgeAgreement",
    "ItemSummary",
    "measure_chart_mtf",
    "psf_edge_agreement",
]
