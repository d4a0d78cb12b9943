"""The radial distortion model shared by the simulator (truth) and the registration (fit)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RadialDistortion:
    """Radial distortion: ideal (undistorted) pixel -> recorded pixel.

    ``q = c + (p - c) (1 + k1 rho^2 + k2 rho^4)``, ``rho = |p - c| / norm_radius_px``,
    ``c`` the optical centre (the frame centre), pixel coordinates with the origin
    at the top-left pixel centre.
    """

    centre_x_px: float
    centre_y_px: float
    norm_radius_px: float
    k1: float
    k2: float

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """Ideal (N, 2) pixel positions -> distorted positions."""
        p = np.asarray(xy, dtype=np.float64)
        d = p - (self.centre_x_px, self.centre_y_px)
        rho2 = (d**2).sum(-1, keepdims=True) / self.norm_radius_px**2
        return (self.centre_x_px, self.centre_y_px) + d * (1 + self.k1 * rho2 + self.k2 * rho2**2)

    def undistort(self, xy: np.ndarray) -> np.ndarray:
        """Distorted (N, 2) pixel positions -> ideal positions (Newton on the radius)."""
        q = np.asarray(xy, dtype=np.float64)
        d = q - (self.centre_x_px, self.centre_y_px)
        rq = np.sqrt((d**2).sum(-1, keepdims=True)) / self.norm_radius_px
        r = rq.copy()
        for _ in range(8):
            r2 = r * r
            f = r * (1 + self.k1 * r2 + self.k2 * r2 * r2) - rq
            step = f / (1 + 3 * self.k1 * r2 + 5 * self.k2 * r2 * r2)
            r -= step
            if not np.any(np.abs(step) > 1e-13):  # Newton has converged (quadratically)
                break
        scale = np.where(rq > 0, r / np.where(rq > 0, rq, 1), 1.0)
        return (self.centre_x_px, self.centre_y_px) + d * scale
