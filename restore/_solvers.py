"""Deconvolution of one tile with one PSF: the methods, chosen by name through ``METHODS``.

Every solver takes a :class:`TileProblem` (the tile, its OTF on the tile's FFT grid,
the noise level and the user's strength) and returns the restored tile. Transforms go
through ``_fft`` only. The regularisation weight of each method follows from the
noise standard deviation (``strength`` = 1 is the noise-matched default; larger is
smoother, smaller is sharper and noisier).

Clipped pixels (``mask`` = 0) are left out of the data term: Richardson-Lucy weights
them out directly; the quadratic methods solve the masked normal equations by
conjugate gradients preconditioned with their closed form; the splitting method
replaces clipped samples by the re-blurred estimate at each step (expectation-
maximisation for missing data, never below the clipped value).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _fft

_EPS = 1e-12
# Calibration of strength = 1 to the PSNR-optimal weight on natural scenes with
# 0.5 % noise (astronaut, coffee, camera from scikit-image; see bench/bench_restore.py).
_WIENER_SCALE = 6.0
_TIKHONOV_SCALE = 50.0
_TV_SCALE = 0.4
_TV_ALPHA = 2.0 / 3.0


@dataclass
class TileProblem:
    """One tile to deconvolve.

    Attributes
    ----------
    y : ndarray, shape (h, w), float32
        Observed tile (guard margin included, edges tapered); (h, w) is the FFT grid.
    otf : ndarray, shape (h, w // 2 + 1), complex64
        The tile's PSF on that grid.
    sigma : float
        Noise standard deviation, 0..1 units.
    strength : float
        Multiplier of the automatic regularisation weight.
    mask : ndarray of float32 or None
        1 where the pixel is valid data, 0 where it was clipped; None = all valid.
    options : dict
        Method-specific settings (``iterations``, ``tol``, ``damping``, ``fill_rounds``...).
    grad_energy : float or None
        E|grad y|^2 of the whole channel (forward differences, both axes summed);
        the tile's own when None. Frame-wide statistics keep tiles consistent.
    grad_abs : float or None
        Mean |forward difference| of the whole channel (average of both axes).
    mean_h2 : float or None
        Mean of |H|^2 over the full frequency grid; by Parseval this is the PSF's
        sum of squares, so callers that have the PSF pass it (no OTF needed).
    """

    y: np.ndarray
    otf: np.ndarray
    sigma: float
    strength: float = 1.0
    mask: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)
    grad_energy: float | None = None
    grad_abs: float | None = None
    mean_h2: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.shape[-2], self.y.shape[-1]


def _blur(
    x: np.ndarray, otf: np.ndarray, *, spec: np.ndarray | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Circular convolution of ``x`` by ``otf`` (into ``out``, through the ``spec`` buffer when given)."""
    sp = _fft.rfft2(x, out=spec)
    sp *= otf
    return _fft.irfft2(sp, x.shape, overwrite=True, out=out)


def _blur_adjoint(x: np.ndarray, otf: np.ndarray, otf_conj: np.ndarray | None = None) -> np.ndarray:
    return _blur(x, np.conj(otf) if otf_conj is None else otf_conj)


def _mean_h2(otf: np.ndarray) -> float:
    """Mean of |H|^2 over the full (two-sided) frequency grid."""
    h2 = otf.real**2 + otf.imag**2
    # The half-spectrum counts interior columns twice in the full grid.
    return float((2 * h2.sum() - h2[:, 0].sum() - h2[:, -1].sum()) / (h2.shape[0] * (2 * h2.shape[1] - 2)))


def _grad_energy(y: np.ndarray) -> float:
    """Mean squared forward difference (both directions) of a tile, circular."""
    gx = np.diff(y, axis=-1)
    gy = np.diff(y, axis=-2)
    return float(np.mean(gx * gx) + np.mean(gy * gy))


def _sharp_gradient_energy(p: TileProblem) -> float:
    """E|grad x|^2 of the unblurred tile under a 1/f^2 spectrum model.

    With power spectrum A / |D|^2, E|grad x|^2 = A and E|grad(h*x)|^2 = A mean|H|^2;
    noise adds 4 sigma^2 to the observed gradient energy.
    """
    energy = p.grad_energy if p.grad_energy is not None else _grad_energy(p.y)
    observed = energy - 4.0 * p.sigma * p.sigma
    floor = 1e-6 + p.sigma * p.sigma
    mean_h2 = p.mean_h2 if p.mean_h2 is not None else _mean_h2(p.otf)
    return max(observed, floor) / max(mean_h2, 1e-3)


def _solve_quadratic(p: TileProblem, prior: np.ndarray) -> np.ndarray:
    """argmin ||m (h*x - y)||^2 + x^T R x, R diagonal in Fourier (``prior``), m the clipped mask.

    Without clipped pixels this is one closed-form filter. With them, conjugate
    gradients on the masked normal equations, preconditioned by that same filter
    (exact when nothing is masked, so a few iterations suffice).
    """
    shape = p.shape
    spec = _fft.rfft2(p.y)
    spec *= _fft.inverse_filter(p.otf, prior)
    x = _fft.irfft2(spec, shape, overwrite=True)
    if p.mask is None:
        return x
    m = p.mask
    denom = p.otf.real**2 + p.otf.imag**2 + prior

    def apply_a(v: np.ndarray) -> np.ndarray:
        vs = _fft.rfft2(v)
        hv = _fft.irfft2(vs * p.otf, shape, overwrite=True) * m
        return _fft.irfft2(_fft.rfft2(hv) * np.conj(p.otf) + prior * vs, shape, overwrite=True)

    def precond(r: np.ndarray) -> np.ndarray:
        return _fft.irfft2(_fft.rfft2(r) / denom, shape, overwrite=True)

    b = _fft.irfft2(_fft.rfft2(p.y * m) * np.conj(p.otf), shape, overwrite=True)
    r = b - apply_a(x)
    z = precond(r)
    d = z.copy()
    rz = float(np.vdot(r, z))
    for _ in range(int(p.options.get("cg_iterations", 12))):
        ad = apply_a(d)
        step = rz / max(float(np.vdot(d, ad)), _EPS)
        x += step * d
        r -= step * ad
        z = precond(r)
        rz_new = float(np.vdot(r, z))
        d = z + (rz_new / max(rz, _EPS)) * d
        rz = rz_new
    return x


def _wiener_weight(p: TileProblem) -> float:
    # The 1/f^2 model overstates fine detail in blurred tiles; the factor matches the
    # MSE-optimal weight measured on natural scenes (bench/ and tests/restore).
    return _WIENER_SCALE * p.strength * p.sigma * p.sigma / _sharp_gradient_energy(p)


def _tikhonov_weight(p: TileProblem) -> float:
    # E|lap x|^2 of the sharp tile under the 1/f^2 model: the gradient energy times the
    # Laplacian's mean gain (about 6 for the 5-point stencil against 4 for forward differences).
    return _TIKHONOV_SCALE * p.strength * p.sigma * p.sigma / (_sharp_gradient_energy(p) * 6.0)


def _laplacian_power(shape: tuple[int, int]) -> np.ndarray:
    return _fft.gradient_power(shape) ** 2


@dataclass(frozen=True)
class ClosedForm:
    """A method whose solution is one Fourier-domain filter: conj(H) / (|H|^2 + weight * prior)."""

    weight: Callable[[TileProblem], float]
    prior: Callable[[tuple[int, int]], np.ndarray]

    def filter(self, p: TileProblem) -> np.ndarray:
        return _fft.inverse_filter(p.otf, self.weight(p) * self.prior(p.shape))


def wiener(p: TileProblem) -> np.ndarray:
    """Wiener filter with a natural-image (1/f^2) signal spectrum fitted to the tile.

    NSR(f) = sigma^2 |D(f)|^2 / A, where A (the sharp image's gradient energy) is
    estimated from the channel's gradient statistics and the tile's PSF.
    """
    cf = CLOSED_FORM["wiener"]
    return _solve_quadratic(p, cf.weight(p) * cf.prior(p.shape))


def tikhonov(p: TileProblem) -> np.ndarray:
    """Regularised least squares with a Laplacian prior, closed form.

    x = argmin ||h*x - y||^2 + lam ||lap x||^2, lam = strength sigma^2 / E|lap x|^2.
    """
    cf = CLOSED_FORM["tikhonov"]
    return _solve_quadratic(p, cf.weight(p) * cf.prior(p.shape))


#: Methods that are a single linear filter per tile (without clipped pixels): the
#: engine applies them to all channels of a tile in one batched transform.
CLOSED_FORM: dict[str, ClosedForm] = {
    "wiener": ClosedForm(_wiener_weight, _fft.gradient_power),
    "tikhonov": ClosedForm(_tikhonov_weight, _laplacian_power),
}


def richardson_lucy(p: TileProblem) -> np.ndarray:
    """Richardson-Lucy with Biggs-Andrews acceleration, noise damping and a stop rule.

    Options: ``iterations`` (maximum, default 40), ``tol`` (stop when the relative
    change of an update falls below it, default 1e-3), ``damping`` (residuals below
    ``damping * strength * sigma`` do not drive the update, White's damped RL;
    default 1.0; 0 disables), ``discrepancy`` (stop when the weighted mean squared
    residual falls to sigma^2, default True).
    """
    otf = p.otf
    shape = p.shape
    n_iter = int(p.options.get("iterations", 40))
    tol = float(p.options.get("tol", 1e-3))
    damp_t = float(p.options.get("damping", 1.0)) * p.strength * p.sigma
    use_discrepancy = bool(p.options.get("discrepancy", True))
    # RL needs positive data; a constant offset commutes with a PSF that sums to 1.
    offset = max(0.0, -float(p.y.min())) + 3.0 * p.sigma + 1e-3
    y = p.y + np.float32(offset)
    w = p.mask
    otf_c = np.conj(otf)
    norm = None
    if w is not None:
        norm = _blur_adjoint(w, otf, otf_c)
    # Work arrays reused by every iteration (fresh arrays would be faulted in at each
    # step; the inverse transforms also run in place on ``spec``): two transform pairs
    # and about ten float32 passes per iteration.
    spec = np.empty(otf.shape, np.complex64)
    hv = np.empty(shape, np.float32)
    v = np.empty(shape, np.float32)
    x = y.copy()
    x_prev = x
    spare = np.empty(shape, np.float32)
    g1 = g2 = None
    gg1 = gg2 = 0.0  # g1 . g1 and g2 . g2
    sig2 = p.sigma * p.sigma
    for it in range(n_iter):
        alpha = 0.0
        if g1 is not None and g2 is not None:
            alpha = float(np.vdot(g1, g2)) / max(gg2, _EPS)
            alpha = min(max(alpha, 0.0), 0.95)
        if alpha > 0:
            np.subtract(x, x_prev, out=v)
            v *= np.float32(alpha)
            v += x
            np.maximum(v, 1e-6, out=v)
            u_pt = v
        else:
            u_pt = x
        _blur(u_pt, otf, spec=spec, out=hv)
        np.maximum(hv, 1e-6, out=hv)
        resid = None
        if damp_t > 0 or use_discrepancy:
            resid = y - hv
        if damp_t > 0:
            u = resid / np.float32(damp_t)
            np.square(u, out=u)
            np.minimum(u, 1.0, out=u)
            # White (1994): smooth switch from 0 (residual at noise level) to 1,
            # d = u^9 (10 - 9u), with u^9 by repeated squaring (a float power is slow).
            u8 = np.square(u)
            np.square(u8, out=u8)
            np.square(u8, out=u8)
            u8 *= u
            u *= np.float32(-9.0)
            u += np.float32(10.0)
            u8 *= u
            u8 *= resid
            np.divide(u8, hv, out=hv)
            hv += np.float32(1.0)
            ratio = hv
        else:
            ratio = np.divide(y, hv, out=hv)
        if w is not None:
            ratio *= w
        # x_new goes where x_prev was (not needed any more), unless that is x itself.
        x_new = spare if x_prev is x else x_prev
        _blur(ratio, otf_c, spec=spec, out=x_new)
        if norm is not None:
            # Deep inside a clipped area no datum constrains x: leave it unchanged there.
            x_new[...] = np.where(norm > 0.05, x_new / norm, 1.0)
        x_new *= u_pt
        np.maximum(x_new, 1e-6, out=x_new)
        # The newest step replaces the oldest one (g2, used only for this iteration's alpha).
        g_new = np.subtract(x_new, u_pt, out=g2 if g2 is not None else None)
        g2, g1 = g1, g_new
        gg2, gg1 = gg1, float(np.vdot(g_new, g_new))
        x_prev, x = x, x_new
        if tol > 0 and (gg1 / max(float(np.vdot(x, x)), _EPS)) ** 0.5 < tol:
            break
        if use_discrepancy:
            r = resid if w is None else resid * w
            if float(np.vdot(r, r)) / r.size <= sig2:
                break
    return x - np.float32(offset)


def total_variation(p: TileProblem) -> np.ndarray:
    """Total-variation prior by half-quadratic splitting (Krishnan-Fergus style).

    Minimises lam/2 ||h*x - y||^2 + sum |grad x| (isotropic) by alternating a
    shrinkage of an auxiliary gradient field w with a closed-form x step, while the
    coupling weight beta grows (continuation). lam follows from the noise: the MAP
    weight for Laplace-distributed gradients of mean magnitude s is s / sigma^2.
    The default prior is hyper-Laplacian, |grad x|^(2/3) (``alpha`` option; 1 = plain TV),
    which natural images follow more closely than TV.
    Options: ``alpha``, ``beta_steps`` (default 14), ``beta_rate`` (default 2).
    """
    shape = p.shape
    otf = p.otf
    sig2 = max(p.sigma * p.sigma, 1e-10)
    if p.grad_abs is not None:
        s = max(p.grad_abs, 1e-4)
    else:
        gx = np.abs(np.diff(p.y, axis=-1)).mean()
        gy = np.abs(np.diff(p.y, axis=-2)).mean()
        s = max(float(gx + gy) * 0.5, 1e-4)
    lam = s / (sig2 * p.strength * float(p.options.get("tv_scale", _TV_SCALE)))
    dx, dy = _fft.difference_otfs(shape)
    h2 = otf.real**2 + otf.imag**2
    d2 = (dx.real**2 + dx.imag**2 + dy.real**2 + dy.imag**2).astype(np.float32)
    steps = int(p.options.get("beta_steps", 14))
    rate = float(p.options.get("beta_rate", 2.0))
    beta0 = float(p.options.get("beta0", 1.0 / s))
    alpha = float(p.options.get("alpha", _TV_ALPHA))
    # lam is the Laplace-prior MAP weight; for alpha < 1 the prior |g|^alpha has a
    # different scale, matched so that the penalty agrees at the typical gradient s.
    lam *= s ** (alpha - 1.0)

    clipped = None if p.mask is None else p.mask < 0.5

    def solve(y: np.ndarray) -> np.ndarray:
        hty = np.conj(otf) * _fft.rfft2(y)
        x = _fft.irfft2(lam * hty / (lam * h2 + beta0 * 0.1 * d2 + _EPS), shape, overwrite=True)
        beta = beta0
        for _ in range(steps):
            if clipped is not None:
                # Missing data (EM): clipped samples take the re-blurred estimate, never below the clip.
                y_fill = np.where(clipped, np.maximum(_blur(x, otf), p.y), p.y)
                hty = np.conj(otf) * _fft.rfft2(y_fill)
            vx = np.roll(x, -1, axis=-1) - x
            vy = np.roll(x, -1, axis=-2) - x
            mag = np.sqrt(vx * vx + vy * vy)
            shrink = _shrink(mag, 1.0 / beta, alpha) / np.maximum(mag, _EPS)
            wx = vx * shrink
            wy = vy * shrink
            # D^T w computed spatially (circular), then one forward transform.
            dtw = (np.roll(wx, 1, axis=-1) - wx) + (np.roll(wy, 1, axis=-2) - wy)
            num = lam * hty + beta * _fft.rfft2(dtw.astype(np.float32))
            x = _fft.irfft2(num / (lam * h2 + beta * d2 + _EPS), shape, overwrite=True)
            beta *= rate
        return x

    if clipped is None:
        return solve(p.y)
    # Start the missing data from the masked quadratic (Wiener) solution, re-blurred.
    x_q = wiener(p)
    return solve(np.where(clipped, np.maximum(_blur(x_q, otf), p.y), p.y).astype(np.float32))


def _shrink(mag: np.ndarray, t: float, alpha: float) -> np.ndarray:
    """argmin_w |w|^alpha + (w - mag)^2 / (2 t) for mag >= 0 (generalised shrinkage).

    alpha = 1 is soft thresholding; below 1 (hyper-Laplacian) a few fixed-point
    steps of the generalised iterated shrinkage of Zuo et al. (2013).
    """
    if alpha >= 1.0:
        return np.maximum(mag - t, 0.0)
    tau = (2 * t * (1 - alpha)) ** (1 / (2 - alpha)) + t * alpha * (2 * t * (1 - alpha)) ** (
        (alpha - 1) / (2 - alpha)
    )
    w = mag.copy()
    for _ in range(3):
        w = mag - t * alpha * np.maximum(w, 1e-8) ** (alpha - 1)
    return np.where(mag > tau, np.maximum(w, 0.0), 0.0).astype(np.float32)


#: The methods, by the name users pass as ``method=``.
METHODS: dict[str, Callable[[TileProblem], np.ndarray]] = {
    "wiener": wiener,
    "tikhonov": tikhonov,
    "rl": richardson_lucy,
    "tv": total_variation,
}
