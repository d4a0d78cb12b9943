"""Non-parametric local PSF from a photo of a known sharp pattern (random noise chart).

The quantity estimated everywhere in ``calib`` is the *system PSF on the sensor grid*:
the optics PSF convolved with the pixel aperture (a 1 x 1 pixel box), point-sampled at
integer pixel offsets from its centre. It is what the simulated camera's
``true_psf(..., oversample=1)`` returns and what restore deconvolves with.

Model (one colour channel, a small region where the PSF is constant)::

    g(n) = a * sum_m u(n - m / s) q(m / s) + b + c_x x + c_y y + noise

``u`` is the chart reflectance rendered on a grid ``s`` times finer than the pixels
(fine index ``I`` sits at pixel coordinate ``I / s``, so every ``s``-th fine sample is a
pixel centre), ``q`` the system PSF sampled on the same fine grid. Following the
non-parametric sub-pixel method of Delbracio, Muse, Almansa and Morel (2012), a random
binary pattern makes this linear system well conditioned even at ``s > 1``; we add a
light gradient penalty on ``q`` (it is smooth on the fine grid) and enforce positivity by
projected accelerated gradient from the unconstrained solution. The sensor-grid PSF is
``q`` at integer offsets (every ``s``-th fine sample), normalised to sum 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ._errors import CalibError
from ._psfmap import check_estimate_request

__all__ = ["PatternPSF", "estimate_psf_pattern"]


@dataclass(frozen=True)
class PatternPSF:
    """A PSF estimated from a known pattern.

    Attributes
    ----------
    psf : ndarray (k, k), float32
        System PSF on the sensor grid (optics x pixel aperture), sum 1, centred.
    psf_fine : ndarray (k_s, k_s), float32
        The same PSF at ``oversample`` samples per pixel, ``k_s = (k - 1) * s + 1``; sum 1.
    oversample : int
        Fine samples per pixel.
    contrast : float
        Fitted gain ``a`` (image units per unit reflectance).
    residual_rms : float
        Root-mean-square misfit of the model, image units (compare with the noise).
    n_pixels : int
        Number of observed pixels used.
    """

    psf: np.ndarray
    psf_fine: np.ndarray
    oversample: int
    contrast: float
    residual_rms: float
    n_pixels: int


def _gradient_gram(k: int) -> np.ndarray:
    """D^T D for forward differences along both axes of a k x k kernel (flattened)."""
    d1 = np.zeros((k - 1, k))
    idx = np.arange(k - 1)
    d1[idx, idx] = -1.0
    d1[idx, idx + 1] = 1.0
    g1 = d1.T @ d1
    eye = np.eye(k)
    return np.kron(eye, g1) + np.kron(g1, eye)


def _nonneg_refine(h: np.ndarray, b: np.ndarray, x0: np.ndarray, n_kernel: int,
                   iterations: int) -> np.ndarray:
    """Minimise 1/2 x^T H x - b^T x with the first ``n_kernel`` entries >= 0 (FISTA)."""
    v = np.random.default_rng(0).standard_normal(h.shape[0])
    for _ in range(30):  # power iteration for the Lipschitz constant
        v = h @ v
        v /= np.linalg.norm(v)
    lip = float(v @ h @ v) * 1.05
    x = x0.copy()
    x[:n_kernel] = np.clip(x[:n_kernel], 0, None)
    y, t = x.copy(), 1.0
    for _ in range(iterations):
        x_new = y - (h @ y - b) / lip
        x_new[:n_kernel] = np.clip(x_new[:n_kernel], 0, None)
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


def estimate_psf_pattern(
    image: np.ndarray,
    sharp: np.ndarray,
    *,
    size: int = 15,
    oversample: int = 2,
    reg: float = 0.03,
    weights: np.ndarray | None = None,
    positivity: bool = True,
    iterations: int = 150,
) -> PatternPSF:
    """Estimate the local system PSF from a photo crop and its ideal sharp rendering.

    Parameters
    ----------
    image : ndarray (h, w)
        Observed linear photo crop (one channel).
    sharp : ndarray (h * s, w * s)
        Ideal reflectance on a grid ``s = oversample`` times finer: ``sharp[s*i, s*j]``
        is the reflectance at the centre of pixel ``(x=j, y=i)`` of ``image``. Render it
        with area averaging over each fine cell (e.g. ``targets.render_layout`` with a
        supersample) so it carries no aliasing of its own.
    size : int, keyword-only
        Odd side ``k`` of the sensor-grid PSF.
    oversample : int, keyword-only
        ``s``; 1 estimates on the sensor grid directly (fast, slightly aliased); 2-4
        resolve the sub-pixel PSF.
    reg : float, keyword-only
        Weight of the gradient penalty relative to the mean data energy per unknown.
    weights : ndarray (h, w), optional, keyword-only
        0/1 (or inverse-variance) weight per pixel; 0 excludes saturated pixels.
    positivity : bool, keyword-only
        Project onto non-negative PSFs.
    iterations : int, keyword-only
        Projected-gradient iterations for positivity.

    Returns
    -------
    PatternPSF

    Raises
    ------
    CalibError
        The crop is too small for the PSF size, or the pattern has no contrast.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> u = (rng.random((64, 64)) > 0.5).astype(np.float32)
    >>> est = estimate_psf_pattern(u, u, size=5, oversample=1)
    >>> round(float(est.psf[2, 2]), 3)
    1.0
    """
    s = check_estimate_request(size, oversample)
    image = np.asarray(image, dtype=np.float64)
    sharp = np.asarray(sharp, dtype=np.float64)
    h, w = image.shape
    if sharp.shape != (h * s, w * s):
        raise CalibError(
            f"sharp pattern has shape {sharp.shape}; expected {(h * s, w * s)} for a "
            f"{w}x{h} crop at oversample {s}"
        )
    r = size // 2
    big_m = r * s
    kf = 2 * big_m + 1
    ny, nx = h - 2 * r, w - 2 * r
    if ny < 4 or nx < 4 or ny * nx < 2 * kf * kf:
        raise CalibError(
            f"a {w}x{h} pixel crop is too small to estimate a {size}x{size} PSF at "
            f"oversample {s}; use a larger region or a smaller PSF"
        )
    if float(np.std(sharp)) < 1e-6:
        raise CalibError("the sharp pattern has no contrast in this region; choose another region")

    # Row n of the design matrix holds u(s*n - m) for the kernel offsets m (flipped order).
    win = np.lib.stride_tricks.sliding_window_view(sharp, (kf, kf))[::s, ::s]
    win = win[:ny, :nx]
    g = image[r:r + ny, r:r + nx].ravel()
    wts = np.ones_like(g) if weights is None else np.asarray(weights, float)[r:r + ny, r:r + nx].ravel()
    keep = wts > 0
    if keep.sum() < kf * kf:
        raise CalibError(
            "too few usable (unsaturated) pixels in this region to estimate the PSF; "
            "use a shorter exposure or a larger region"
        )
    a_ker = win.reshape(ny * nx, kf * kf)[keep].astype(np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx]
    nuis = np.stack(
        [np.ones(ny * nx), (xx.ravel() - nx / 2) / nx, (yy.ravel() - ny / 2) / ny], axis=1
    )[keep]
    g = g[keep]
    sw = np.sqrt(wts[keep])
    a_ker *= sw[:, None].astype(np.float32)
    nuis *= sw[:, None]
    g = g * sw

    # Normal equations of [kernel | background plane]; float32 BLAS for the big block.
    n_k = kf * kf
    hmat = np.empty((n_k + 3, n_k + 3))
    hmat[:n_k, :n_k] = (a_ker.T @ a_ker).astype(np.float64)
    cross = a_ker.T.astype(np.float64) @ nuis
    hmat[:n_k, n_k:] = cross
    hmat[n_k:, :n_k] = cross.T
    hmat[n_k:, n_k:] = nuis.T @ nuis
    rhs = np.concatenate([a_ker.T.astype(np.float64) @ g, nuis.T @ g])
    scale = float(np.trace(hmat[:n_k, :n_k])) / n_k
    hmat[:n_k, :n_k] += reg * scale * _gradient_gram(kf)
    try:
        x = scipy.linalg.solve(hmat, rhs, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        x = scipy.linalg.lstsq(hmat, rhs)[0]
    if positivity:
        x = _nonneg_refine(hmat, rhs, x, n_k, iterations)
    q = x[:n_k].reshape(kf, kf)[::-1, ::-1]
    total = float(q.sum())
    if not np.isfinite(total) or total <= 0:
        raise CalibError(
            "the photo does not match the pattern in this region (no positive PSF fits); "
            "check the registration and that the pattern file is the one photographed"
        )
    resid = g - np.concatenate([a_ker.astype(np.float64), nuis], axis=1) @ x
    fine = (q / total).astype(np.float32)
    coarse = np.clip(q[::s, ::s], 0, None) if positivity else q[::s, ::s]
    coarse = (coarse / coarse.sum()).astype(np.float32)
    return PatternPSF(
        psf=coarse,
        psf_fine=fine,
        oversample=s,
        contrast=total / (s * s),
        residual_rms=float(np.sqrt(np.mean((resid / np.where(sw > 0, sw, 1)) ** 2))),
        n_pixels=int(keep.sum()),
    )
