"""Lateral colour across the frame: each channel's shift from green as a radial model."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Powers of rho in the radial scale (rho^0 .. rho^(RADIAL_TERMS-1)), the form of
#: lensfun's "poly3" TCA model. Fitted (without the translation) to the dot-centroid
#: offsets of the 1200x800 bench (rendered at 5 samples/px, R-B against the truth at
#: 6x9 nodes, worst node): 3 terms 0.003-0.021 px over the three lenses in focus and at
#: +15 steps; 4 terms reached 0.039 px (soft-zoom +15: the cubic swings beyond the
#: outermost dots) and 5 terms 0.061 px.
RADIAL_TERMS = 3
#: Dots that miss the fit by more than this multiple of the median miss are left out
#: and the fit repeated (dots near a marker's quiet zone, a defect on the print):
#: without it vintage in focus read 0.042 px instead of 0.008.
CLIP_MEDIANS = 4.5
#: Each dot weighs by the inverse of its centroid's noise, which grows towards the frame's
#: corners (wider, dimmer PSFs): the misses' square fitted as a quadratic in rho, at least
#: this fraction of their median. soft-zoom 1200x800, R-B against the true centroids,
#: worst node over noise seeds 1-3, in focus and at +15 steps: 0.006-0.043 -> 0.006-0.033 px
#: (seed 1 in focus 0.035 -> 0.033, +15 0.043 -> 0.032; seed 3 in focus 0.030 -> 0.024).
NOISE_FLOOR = 0.2
#: Fewer usable dots than this: no model (the caller falls back to local estimates).
MIN_DOTS = 30


@dataclass(frozen=True)
class LateralColourModel:
    """Each channel's shift from green, ``t + (p - c) (a0 + a1 rho + a2 rho^2)``.

    ``c`` is the optical centre (the registration's distortion centre) and ``rho`` the
    distance from it over ``norm_radius_px``. A centred lens makes the shift radial;
    the translation ``t`` takes up a decentred element or a tilted sensor.

    Attributes
    ----------
    centre_xy_px : (float, float)
        Optical centre, pixels.
    norm_radius_px : float
        Radius normalising ``rho``, pixels.
    scale : ndarray (C, RADIAL_TERMS)
        Radial scale coefficients per channel (pixels of shift per pixel of radius);
        green's row is zero.
    translation_px : ndarray (C, 2)
        Constant shift per channel, pixels.
    residual_rms_px : ndarray (C,)
        Rms misfit of the dots kept, pixels (their centroids' noise, mostly).
    n_dots : int
        Dots the fit used (before clipping).
    """

    centre_xy_px: tuple[float, float]
    norm_radius_px: float
    scale: np.ndarray
    translation_px: np.ndarray
    residual_rms_px: np.ndarray
    n_dots: int

    def at(self, xy: np.ndarray) -> np.ndarray:
        """Each channel's shift from green (C, N, 2) at pixel positions ``xy`` (N, 2)."""
        d = (np.atleast_2d(np.asarray(xy, dtype=np.float64)) - self.centre_xy_px)
        rho = np.hypot(d[:, 0], d[:, 1]) / self.norm_radius_px
        s = self.scale @ rho[None] ** np.arange(self.scale.shape[1])[:, None]  # (C, N)
        return s[..., None] * d[None] + self.translation_px[:, None, :]


def fit_lateral_colour(shift_px: np.ndarray, xy: np.ndarray, *, centre_xy_px: tuple[float, float],
                       norm_radius_px: float) -> LateralColourModel | None:
    """Fit the radial model to dots' measured shifts from green.

    Parameters
    ----------
    shift_px : ndarray (C, N, 2)
        Each channel's dot centroid minus green's (NaN where a dot was not measured).
    xy : ndarray (N, 2)
        The dots' positions, pixels.
    centre_xy_px, norm_radius_px
        Optical centre and normalising radius (the registration's).

    Returns
    -------
    LateralColourModel or None
        None when fewer than MIN_DOTS dots were measured in all channels.

    Why one model for the frame: a dot's centroid carries ~0.03 px of noise (1200x800,
    vintage at +15 steps), and a plane through the 80 dots near a frame corner,
    extrapolated to the node, missed the true R-B shift by 0.056 px; the whole frame's
    dots under a three-term radial model miss it by 0.004 px.
    """
    ok = np.isfinite(shift_px).all(axis=(0, 2))
    if ok.sum() < MIN_DOTS:
        return None
    p = np.asarray(xy, dtype=np.float64)[ok]
    d = p - centre_xy_px
    rho = np.hypot(d[:, 0], d[:, 1]) / norm_radius_px
    n = len(p)
    powers = rho[:, None] ** np.arange(RADIAL_TERMS)
    one, zero = np.ones(n), np.zeros(n)
    # x rows then y rows: radial scale terms, then the two translations
    design = np.vstack([np.c_[d[:, :1] * powers, one, zero], np.c_[d[:, 1:] * powers, zero, one]])
    nc = shift_px.shape[0]
    coef = np.zeros((nc, RADIAL_TERMS + 2))
    rms = np.zeros(nc)
    for c in range(nc):
        target = np.r_[shift_px[c, ok, 0], shift_px[c, ok, 1]]
        if not np.any(target):
            continue  # the reference channel
        keep = np.ones(n, bool)
        wt = np.ones(n)
        for it in range(5):
            rows = np.r_[keep, keep]
            sw = np.sqrt(np.r_[wt, wt][rows])
            coef[c], *_ = np.linalg.lstsq(design[rows] * sw[:, None], target[rows] * sw, rcond=None)
            miss = np.hypot(*(target - design @ coef[c]).reshape(2, n))
            if it >= 1:  # the misses of a first fit give the centroids' noise across the frame
                var = np.polyval(np.polyfit(rho[keep], miss[keep] ** 2, 2), rho)
                wt = 1.0 / np.maximum(var, NOISE_FLOOR * np.median(miss[keep] ** 2))
            new = miss < CLIP_MEDIANS * np.median(miss[keep])
            if (new == keep).all() and it >= 3:
                break
            keep = new
        rms[c] = float(np.sqrt(np.mean(miss[keep] ** 2)))
    return LateralColourModel(tuple(map(float, centre_xy_px)), float(norm_radius_px), coef[:, :RADIAL_TERMS],
                              coef[:, RADIAL_TERMS:], rms, n)
