"""Regularised, spatially varying deconvolution with a measured PSF map.

``restore`` reads PSF maps only through ``calib``'s public API.
"""
from ._demo import DemoResult, run_demo
from ._engine import RestoreResult, restore_image
from ._errors import RestoreError
from ._files import RestoredFile, restore_file, restore_files
from ._noise import NoiseEstimate, estimate_sigma
from ._solvers import METHODS
from ._tiling import TileLayout, plan_tiles

__all__ = [
    "run_demo",
    "DemoResult",
    "RestoreError",
    "RestoreResult",
    "restore_image",
    "restore_file",
    "restore_files",
    "RestoredFile",
    "METHODS",
    "NoiseEstimate",
    "estimate_sigma",
    "TileLayout",
    "plan_tiles",
]
