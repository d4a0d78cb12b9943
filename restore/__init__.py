"""Regularised, spatially varying deconvolution with a measured PSF map.

``restore`` reads PSF maps only through ``calib``'s public API.
"""
from ._errors import RestoreError

__all__ = ["RestoreError"]
