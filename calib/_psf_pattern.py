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
binary pattern makes this linear system well conditioned even at ``s > 1`` (provided
the cell edges fall at many sub-pixel phases: a cell of a non-integer number of pixels,
or a rotated pattern). We add a light gradient penalty on ``q`` (optionally on its tails
only) and enforce positivity exactly (active-set NNLS on the Cholesky factor of the
normal equations). ``core_px`` keeps the ``s``-fold sampling to the PSF's core and
describes the tails by sensor-grid tents, so a sharp PSF with wide tails needs a few
hundred unknowns rather than thousands. The sensor-grid PSF is ``q`` at integer offsets
(every ``s``-th fine sample), normalised to sum 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


class _Quadratic:
    """Minimiser of 1/2 x^T H x - b^T x for many ``b``, optionally with the first
    ``n_kernel`` entries >= 0; H is factored once.

    The unconstrained tail (background terms) is eliminated (Schur complement). With
    positivity, the reduced quadratic is written as a least-squares problem through its
    Cholesky factor and solved by active-set NNLS (Lawson-Hanson), which, unlike a
    projected gradient, converges on the badly conditioned systems a sharp PSF at
    sub-pixel sampling gives.
    """

    def __init__(self, h: np.ndarray, n_kernel: int) -> None:
        self.n = n_kernel
        hkk, self.hkn, self.hnn = h[:n_kernel, :n_kernel], h[:n_kernel, n_kernel:], h[n_kernel:, n_kernel:]
        self.t = np.linalg.solve(self.hnn, self.hkn.T) if self.hnn.size else np.zeros((0, n_kernel))
        red = hkk - self.hkn @ self.t
        red = 0.5 * (red + red.T)
        try:
            self.upper = scipy.linalg.cholesky(red)
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            red = red + np.eye(n_kernel) * 1e-9 * float(np.trace(red)) / n_kernel
            self.upper = scipy.linalg.cholesky(red)

    def solve(self, b: np.ndarray, *, positivity: bool) -> np.ndarray:
        from scipy.optimize import nnls  # noqa: PLC0415

        n = self.n
        bn = b[n:]
        tb = np.linalg.solve(self.hnn, bn) if bn.size else bn
        rb = b[:n] - self.hkn @ tb
        z = scipy.linalg.solve_triangular(self.upper, rb, trans="T")
        xk = scipy.linalg.solve_triangular(self.upper, z)
        if positivity and (xk < 0).any():
            xk, _ = nnls(self.upper, z, maxiter=50 * n)
        return np.concatenate([xk, tb - self.t @ xk])


@dataclass(frozen=True)
class _Basis:
    """Kernel unknowns: fine-grid samples in the core, sensor-grid tents outside.

    ``fine`` and ``coarse`` list window element indices (row, col) of the ``kf x kf``
    fine-grid window; ``synth`` (kf*kf, n, sparse) turns the unknowns into fine-grid PSF samples.
    Every basis function is non-negative, so non-negative unknowns give a non-negative PSF.
    """

    fine: tuple[np.ndarray, np.ndarray]
    coarse: tuple[np.ndarray, np.ndarray]
    synth: Any  # scipy.sparse.csr_matrix

    @property
    def n(self) -> int:
        return self.synth.shape[1]


def core_tail_basis(r: int, s: int, core_px: float | None) -> _Basis:
    """Unknowns of a ``(2 r s + 1)^2`` fine kernel: every fine sample within ``core_px``
    pixels of the centre (square), sensor-grid tents beyond (all fine when ``core_px`` is
    None or ``s`` is 1). Shared with the dots estimator."""
    kf = 2 * r * s + 1
    e = np.arange(kf)
    ey, ex = np.meshgrid(e, e, indexing="ij")
    off = np.maximum(np.abs(ey - r * s), np.abs(ex - r * s))  # fine samples from the centre
    if s == 1 or core_px is None or core_px >= r:
        fine_mask = np.ones((kf, kf), bool)
        coarse_mask = np.zeros((kf, kf), bool)
    else:
        rc = max(1, int(np.ceil(core_px)))
        fine_mask = off < rc * s
        on_grid = ((ey - r * s) % s == 0) & ((ex - r * s) % s == 0)
        coarse_mask = on_grid & (off >= rc * s)
    import scipy.sparse as sp  # noqa: PLC0415

    fine = np.nonzero(fine_mask)
    coarse = np.nonzero(coarse_mask)
    nf = len(fine[0])
    rows, cols, vals = [fine[0] * kf + fine[1]], [np.arange(nf)], [np.ones(nf)]
    t = np.arange(-(s - 1), s)
    tent = 1.0 - np.abs(t) / s
    for j, (cy, cx) in enumerate(zip(*coarse), start=nf):
        ys, xs = cy + t, cx + t
        oky, okx = (ys >= 0) & (ys < kf), (xs >= 0) & (xs < kf)
        rows.append((ys[oky][:, None] * kf + xs[okx][None, :]).ravel())
        vals.append(np.outer(tent[oky], tent[okx]).ravel())
        cols.append(np.full(rows[-1].size, j))
    synth = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(kf * kf, nf + len(coarse[0])))
    return _Basis(fine, coarse, synth)


def _tent_filter(sharp: np.ndarray, s: int) -> np.ndarray:
    """``sharp`` convolved with the separable tent 1 - |t|/s (|t| < s fine samples)."""
    from scipy.ndimage import convolve1d  # noqa: PLC0415

    t = np.arange(-(s - 1), s)
    tent = 1.0 - np.abs(t) / s
    out = convolve1d(sharp, tent, axis=0, mode="nearest")
    return convolve1d(out, tent, axis=1, mode="nearest")


def estimate_psf_pattern(
    image: np.ndarray,
    sharp: np.ndarray,
    *,
    size: int = 15,
    oversample: int = 2,
    reg: float = 0.03,
    weights: np.ndarray | None = None,
    positivity: bool = True,
    core_px: float | None = None,
    shading: bool = False,
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
    core_px : float, optional, keyword-only
        Resolve the PSF at ``oversample`` only within this many pixels of the centre
        (a square) and on the sensor grid (piecewise linear) beyond it: far fewer
        unknowns for a sharp core with wide, smooth tails. None: everywhere.
    shading : bool, keyword-only
        Also fit a smooth (quadratic) multiplicative gain over the crop (vignetting,
        uneven light): a first solve's model image sets it, the PSF is solved again.

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
    return estimate_psf_pattern_channels(
        np.asarray(image)[None], sharp, size=size, oversample=oversample, reg=reg, weights=weights,
        positivity=positivity, core_px=core_px, shading=shading)[0]


def estimate_psf_pattern_channels(
    images: np.ndarray,
    sharp: np.ndarray,
    *,
    size: int = 15,
    oversample: int = 2,
    reg: float = 0.03,
    weights: np.ndarray | None = None,
    positivity: bool = True,
    core_px: float | None = None,
    shading: bool = False,
    field_xy: tuple[float, float] | None = None,
    field_reg: float = 10.0,
    smooth_core: bool = False,
) -> list[PatternPSF]:
    """:func:`estimate_psf_pattern` for several channels (C, h, w) of one crop.

    The channels share the pattern, the weights and so the normal matrix, which is
    formed once (the expensive part); each channel has its own gain, offset and PSF.
    ``field_xy`` (crop pixel coordinates): let the fine (core) part of the PSF vary
    linearly across the crop and return it at this point, for a field node at or near
    the crop's edge (frame edges and corners, where the crop cannot be centred on it).
    ``field_reg``: gradient penalty on the two slope kernels, relative to the kernel's
    own penalty at equal data weight; without it the slopes fit noise, which the
    extrapolation to a crop corner amplifies.
    ``smooth_core``: with ``core_px``, apply the gradient penalty to the fine core too
    (by default only the tails are smoothed).
    """
    s = check_estimate_request(size, oversample)
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    sharp = np.asarray(sharp, dtype=np.float64)
    nch, h, w = images.shape
    if sharp.shape != (h * s, w * s):
        raise CalibError(
            f"sharp pattern has shape {sharp.shape}; expected {(h * s, w * s)} for a "
            f"{w}x{h} crop at oversample {s}"
        )
    r = size // 2
    kf = 2 * r * s + 1
    basis = core_tail_basis(r, s, core_px)
    n_k = basis.n
    # Sensor-grid tents reach s - 1 fine samples beyond the window: keep one pixel clear.
    bd = 1 if len(basis.coarse[0]) else 0
    ny, nx = h - 2 * r - 2 * bd, w - 2 * r - 2 * bd
    if ny < 4 or nx < 4 or ny * nx < 2 * n_k:
        raise CalibError(
            f"a {w}x{h} pixel crop is too small to estimate a {size}x{size} PSF at "
            f"oversample {s}; use a larger region or a smaller PSF"
        )
    if float(np.std(sharp)) < 1e-6:
        raise CalibError("the sharp pattern has no contrast in this region; choose another region")

    # Row n of the design matrix holds u(s*n - m) for the kernel offsets m (flipped order).
    def windows(img: np.ndarray, idx: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        view = np.lib.stride_tricks.sliding_window_view(img[bd * s:, bd * s:], (kf, kf))[::s, ::s][:ny, :nx]
        return view[:, :, idx[0], idx[1]].reshape(ny * nx, -1)

    wts = (np.ones(ny * nx) if weights is None
           else np.asarray(weights, float)[r + bd:r + bd + ny, r + bd:r + bd + nx].ravel())
    keep = wts > 0
    if keep.sum() < n_k:
        raise CalibError(
            "too few usable (unsaturated) pixels in this region to estimate the PSF; "
            "use a shorter exposure or a larger region"
        )
    cols = [windows(sharp, basis.fine)]
    if len(basis.coarse[0]):
        cols.append(windows(_tent_filter(sharp, s), basis.coarse))
    a_ker = np.concatenate(cols, axis=1)[keep].astype(np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx]
    xn, yn = (xx.ravel() - nx / 2) / nx, (yy.ravel() - ny / 2) / ny
    plane = np.stack([np.ones(ny * nx), xn, yn], axis=1)[keep]
    quad = np.stack([np.ones(ny * nx), xn, yn, xn * xn, xn * yn, yn * yn], axis=1)[keep]
    sw = np.sqrt(wts[keep])
    a_ker *= sw[:, None].astype(np.float32)
    nuis = plane * sw[:, None]
    if field_xy is not None:
        # PSF(x) = P0 + (x - x_f) Px + (y - y_f) Py over the crop for the fine unknowns:
        # P0 is the PSF at field_xy even when that lies at the crop's edge.
        nf = len(basis.fine[0])
        norm = float(max(h, w))
        fx = ((xx.ravel() + r + bd - field_xy[0]) / norm)[keep].astype(np.float32)
        fy = ((yy.ravel() + r + bd - field_xy[1]) / norm)[keep].astype(np.float32)
        extra = np.concatenate([a_ker[:, :nf] * fx[:, None], a_ker[:, :nf] * fy[:, None]], axis=1)
    else:
        extra = np.zeros((a_ker.shape[0], 0), np.float32)
    n_x = extra.shape[1]
    n_m = n_k + n_x  # unknowns of the model image (kernel, then its field variation)

    # Normal equations of [kernel | field terms | background plane]; float32 BLAS for the
    # big blocks.
    a_mod = np.concatenate([a_ker, extra], axis=1) if n_x else a_ker
    hmat = np.empty((n_m + 3, n_m + 3))
    hmat[:n_m, :n_m] = (a_mod.T @ a_mod).astype(np.float64)
    a_t64 = a_mod.T.astype(np.float64)
    cross = a_t64 @ nuis
    hmat[:n_m, n_m:] = cross
    hmat[n_m:, :n_m] = cross.T
    hmat[n_m:, n_m:] = nuis.T @ nuis
    if n_x:
        ridge = 1e-6 * float(np.trace(hmat[n_k:n_m, n_k:n_m])) / n_x
        hmat[n_k:n_m, n_k:n_m] += ridge * np.eye(n_x)
    scale = float(np.trace(hmat[:n_k, :n_k])) / float(basis.synth.power(2).sum())
    grad = gradient_op(kf)
    if core_px is not None and s > 1 and not smooth_core:
        # Smooth the tails only: a gradient penalty on a sharp core flattens its peak.
        grad = tail_weights(kf, s, core_px) @ grad
    db = grad @ basis.synth
    hmat[:n_k, :n_k] += reg * scale * (db.T @ db).toarray()
    if n_x:
        # Each slope kernel gets the kernel's penalty times field_reg, scaled by its share
        # of the data energy (its columns are the kernel's times the field coordinate).
        nf = n_x // 2
        dbf = (db[:, :nf].T @ db[:, :nf]).toarray()
        per_sample = float(np.trace(hmat[:nf, :nf]))
        for a in (n_k, n_k + nf):
            share = float(np.trace(hmat[a:a + nf, a:a + nf])) / per_sample
            hmat[a:a + nf, a:a + nf] += field_reg * share * reg * scale * dbf

    quad_form = _Quadratic(hmat, n_k)

    def solve(g: np.ndarray) -> np.ndarray:
        return quad_form.solve(np.concatenate([a_t64 @ g, nuis.T @ g]), positivity=positivity)

    out = []
    for c in range(nch):
        obs = images[c, r + bd:r + bd + ny, r + bd:r + bd + nx].ravel()[keep]
        g = obs * sw
        x = solve(g)
        if shading:
            # obs = L(x) m(x) + B(x) with a smooth gain L: regress on the first model image.
            m = (a_mod @ x[:n_m].astype(np.float32)).astype(np.float64) / sw
            design = np.concatenate([quad * m[:, None], quad], axis=1) * sw[:, None]
            coef = np.linalg.lstsq(design, g, rcond=None)[0]
            gain = quad @ coef[:6]
            if np.all(gain > 0.2 * abs(coef[0])):
                gain = gain / coef[0]
                g = (obs - quad @ coef[6:]) / gain * sw
                x = solve(g)
        q = (basis.synth @ x[:n_k]).reshape(kf, kf)[::-1, ::-1]
        total = float(q.sum())
        if not np.isfinite(total) or total <= 0:
            raise CalibError(
                "the photo does not match the pattern in this region (no positive PSF fits); "
                "check the registration and that the pattern file is the one photographed"
            )
        resid = g - a_mod @ x[:n_m].astype(np.float32) - nuis @ x[n_m:]
        fine = (q / total).astype(np.float32)
        coarse = np.clip(q[::s, ::s], 0, None) if positivity else q[::s, ::s]
        coarse = (coarse / coarse.sum()).astype(np.float32)
        out.append(PatternPSF(
            psf=coarse,
            psf_fine=fine,
            oversample=s,
            contrast=total / (s * s),
            residual_rms=float(np.sqrt(np.mean((resid / np.where(sw > 0, sw, 1)) ** 2))),
            n_pixels=int(keep.sum()),
        ))
    return out


def tail_weights(kf: int, s: int, core_px: float):
    """Diagonal weights of the forward differences of a kf x kf fine kernel (as in
    :func:`gradient_op`): 0 within ``core_px`` pixels of the centre (square), rising
    to 1 over the next pixel."""
    import scipy.sparse as sp  # noqa: PLC0415

    c = (kf - 1) / 2
    a = (np.arange(kf) - c) / s
    mid = (np.arange(kf - 1) + 0.5 - c) / s
    rx = np.maximum(np.abs(mid)[None, :], np.abs(a)[:, None]).ravel()  # x differences, row-major
    ry = np.maximum(np.abs(a)[None, :], np.abs(mid)[:, None]).ravel()  # y differences
    w = np.clip(np.concatenate([rx, ry]) - core_px, 0.0, 1.0)
    return sp.diags(w)


def gradient_op(k: int):
    """Sparse forward differences along both axes of a k x k kernel (flattened)."""
    import scipy.sparse as sp  # noqa: PLC0415

    d1 = sp.diags([-np.ones(k - 1), np.ones(k - 1)], [0, 1], shape=(k - 1, k))
    eye = sp.identity(k)
    return sp.vstack([sp.kron(eye, d1), sp.kron(d1, eye)]).tocsr()
