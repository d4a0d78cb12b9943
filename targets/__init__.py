"""Printable calibration charts: geometry in millimetres, fiducials, rendering.

``targets`` imports neither ``calib`` nor ``restore``.
"""
from ._atomic import atomic_write
from ._errors import TargetError

__all__ = ["TargetError", "atomic_write"]
