"""Local PSF from photographed dots whose sub-pixel centres are known from registration.

Every photographed dot is a sample of ``dot * p``: the printed dot shape (a disc, imaged
as a small ellipse) convolved with the system PSF ``p = pixel * o`` (the optical PSF
``o``, anti-aliasing filter included, integrated over the pixel's 1 px box; see
:mod:`calib._psf_pattern`), sampled at the pixel centres relative to that dot's centre.
Dots of one neighbourhood sit at different sub-pixel phases, so together they sample it
densely (shift-and-add). We

1. subtract each dot's local background and normalise it to unit integral (removing
   illumination differences), flagging saturated or too-noisy dots;
2. solve for ``o`` on a grid ``s`` times finer than the pixels (Keys-interpolated
   between nodes) in one regularised, non-negative least-squares fit of
   ``dot * pixel * o`` to all the scattered samples, the dot and pixel shapes known
   analytically (optionally with ``o`` varying linearly or quadratically across the
   neighbourhood);
3. apply the pixel box to ``o`` at the fine nodes: the system PSF ``p`` at ``s``
   samples per pixel, and every ``s``-th sample of it on the sensor grid, sum 1.

At one sample per pixel (``s = 1``) the unknowns are the system PSF's own samples.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cho_factor, cho_solve
from scipy.signal import fftconvolve
from scipy.ndimage import convolve1d, map_coordinates
from scipy.special import j1

from ._errors import CalibError
from ._psf_pattern import core_tail_basis, gradient_op
from ._psfmap import check_estimate_request

__all__ = ["DotsPSF", "estimate_psf_dots", "dot_ellipse_px"]


@dataclass(frozen=True)
class DotsPSF:
    """A PSF estimated from dots.

    Attributes
    ----------
    psf : ndarray (k, k) or (C, k, k), float32
        System PSF on the sensor grid, sum 1, centred on the registered dot centres
        (one per channel when the image had channels).
    psf_fine : ndarray (k_s, k_s) or (C, k_s, k_s), float32
        The same at ``oversample`` samples per pixel, sum 1.
    oversample : int
    n_dots : int
        Dots used.
    n_saturated : int
        Dots skipped because some of their pixels were clipped.
    n_noisy : int
        Dots skipped for a low signal-to-noise ratio.
    snr : float
        Median integrated signal-to-noise ratio of the dots used (weakest channel).
    """

    psf: np.ndarray
    psf_fine: np.ndarray
    oversample: int
    n_dots: int
    n_saturated: int
    n_noisy: int
    snr: float


def dot_ellipse_px(diameter_mm: float, jacobian_px_per_mm: np.ndarray) -> np.ndarray:
    """The 2x2 matrix ``E`` mapping the unit disc onto an imaged dot, pixels.

    Parameters
    ----------
    diameter_mm : float
        Printed dot diameter.
    jacobian_px_per_mm : ndarray (2, 2)
        Local derivative of the chart-mm -> pixel mapping at the dot.

    Returns
    -------
    ndarray (2, 2)
        ``E = J * diameter / 2``; the dot covers ``{centre + E u : |u| <= 1}``.
    """
    return np.asarray(jacobian_px_per_mm, float) * (0.5 * float(diameter_mm))


def _dot_transform(ellipse: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Fourier transform of the unit-integral ellipse ``E * disc`` at (fx, fy) cycles/px."""
    # FT of {E u} at nu equals FT of the unit disc at E^T nu.
    ux = ellipse[0, 0] * fx + ellipse[1, 0] * fy
    uy = ellipse[0, 1] * fx + ellipse[1, 1] * fy
    arg = 2 * np.pi * np.hypot(ux, uy)
    out = np.ones_like(arg)
    nz = arg > 1e-9
    out[nz] = 2 * j1(arg[nz]) / arg[nz]
    return out


def estimate_psf_dots(
    image: np.ndarray,
    centres_xy: np.ndarray,
    *,
    dot_ellipse: np.ndarray | float,
    size: int = 15,
    oversample: int = 3,
    saturation_level: float | None = 0.98,
    mask: np.ndarray | None = None,
    min_snr: float = 10.0,
    reg: float | Sequence[float] = 0.3,
    iterations: int = 300,
    weights: np.ndarray | None = None,
    node_xy: tuple[float, float] | None = None,
    slope_radius: float = 1.0,
    core_px: float | None = None,
    other_xy: np.ndarray | None = None,
    field_order: int = 1,
    rotations: np.ndarray | None = None,
    field_xy: np.ndarray | None = None,
    field_axes: int = 2,
    stretch: np.ndarray | None = None,
    stretch_axis: tuple[float, float] = (1.0, 0.0),
    channel_shifts: np.ndarray | None = None,
    sharp_core: bool | Sequence[bool] = False,
) -> DotsPSF:
    """Estimate the local system PSF from dots at known sub-pixel centres.

    Parameters
    ----------
    image : ndarray (h, w) or (h, w, C)
        Linear photo crop, one channel or several sharing the dot geometry (solved
        together: one system matrix). Dots may be bright on dark or dark on bright.
    centres_xy : ndarray (n, 2)
        Dot centres (x, y) in crop pixel coordinates (origin: top-left pixel centre),
        from the registration (the green channel's geometry for every channel, so
        lateral colour stays in the red and blue PSFs).
    dot_ellipse : float or ndarray (2, 2), keyword-only
        Imaged dot shape: a diameter in pixels (a circle) or the matrix ``E`` of
        :func:`dot_ellipse_px`. One shape for the neighbourhood.
    size : int, keyword-only
        Odd side ``k`` of the sensor-grid PSF.
    oversample : int, keyword-only
        Fine samples per pixel for the shift-and-add (2 to 4).
    saturation_level : float or None, keyword-only
        Pixels at or above this value are clipped; dots containing any are skipped.
    mask : ndarray (h, w) or (h, w, C) of bool, optional, keyword-only
        True where pixels are known bad (saturated); such dots are skipped.
    min_snr : float, keyword-only
        Dots whose summed signal is below ``min_snr`` times the noise of the pixels it is
        summed over are skipped.
    reg : float or sequence of float, keyword-only
        Weight of the gradient penalty on the fine optical PSF, relative to the data
        energy; one per channel to smooth a wide channel more than a sharp one.
    iterations : int, keyword-only
        Projected-gradient iterations enforcing a non-negative PSF.
    weights : ndarray (n,), optional, keyword-only
        Per-dot weight in the fit (e.g. falling with the distance from the field node,
        so a wide neighbourhood still describes the node).
    node_xy : (x, y), optional, keyword-only
        Field point (crop pixels) the PSF should describe. Given, the PSF is fitted as
        varying linearly across the neighbourhood, ``P0 + dx Px + dy Py`` with (dx, dy)
        each dot's offset from this point, and ``P0`` is returned: a one-sided
        neighbourhood (a node at the frame edge) then still describes the node rather
        than the centre of its dots.
    slope_radius : float, keyword-only
        With ``node_xy``: the slopes ``Px``, ``Py`` are fitted over this fraction of the
        PSF's half side (its core; 1 = all of it). Smaller is much faster (a smaller
        dense system) and loses little where the PSF changes mostly in its core.
    core_px : float, optional, keyword-only
        Keep the ``oversample``-fold sampling within this many pixels of the centre
        and describe the PSF beyond by sensor-grid tents (default: fine everywhere).
        A defocused PSF with a sharp core and a wide halo then needs a few hundred
        unknowns instead of thousands: the core is resolved, the halo stays quiet.
    other_xy : ndarray (m, 2), optional, keyword-only
        Centres (crop pixels) of further dots in the crop that are not fitted (beyond
        the neighbourhood, or too near a marker): their light is kept out of the
        background estimate as well. A wide PSF's faint halo around them would
        otherwise tilt the background plane and shift the PSF (0.1 px in a soft corner).
    field_order : {1, 2}, keyword-only
        With ``node_xy``: the PSF varies linearly (1) or quadratically (2, adding
        ``dx^2 Pxx + dx dy Pxy + dy^2 Pyy``; from 12 dots) across the neighbourhood.
    rotations : ndarray (n,), optional, keyword-only
        Angle (radians, counted as ``atan2(y, x)`` in the image) by which each dot's
        samples are turned about its centre before they enter the fit. A rotationally
        symmetric lens images a point at another azimuth as the node's PSF turned by the
        azimuth difference; turned back, dots all around the optical centre describe
        the node.
    field_xy : ndarray (n, 2), optional, keyword-only
        With ``node_xy``: each dot's position in the coordinates of the field variation
        (default: its centre), e.g. its radial and tangential offsets from the node,
        added to ``node_xy``, for dots gathered about the optical centre.
    field_axes : {2, 1}, keyword-only
        With ``node_xy``: the PSF varies along both coordinates of the dots' field
        positions, or along the first only (the radius, when the dots are turned to the
        node's azimuth: fewer unknowns, less noise where the fit extrapolates).
    stretch : ndarray (n,), optional, keyword-only
        Factor by which each dot's samples (after ``rotations``) are scaled along
        ``stretch_axis`` about its centre, and its light spread thinner in proportion,
        before they enter the fit: the node's PSF is then this dot's PSF stretched. Off
        axis a lens's PSF grows with the distance from the optical centre, so a dot
        nearer the centre than the node sees the node's PSF shrunk along the radius.
    stretch_axis : (float, float), keyword-only
        Direction (x, y) along which ``stretch`` acts (the node's radial direction).
    channel_shifts : ndarray (C, n, 2), optional, keyword-only
        How far (x, y pixels, before ``rotations``) each channel's PSF at each dot sits
        from where it sits at the field point the PSF should describe: the change of
        the lateral colour across the neighbourhood. Each channel's samples of a dot are
        moved back by it, so the fit sees that channel's PSF at one position instead of
        one that drifts with the field. Channels with different shifts are solved with
        their own system matrices (slower).
    sharp_core : bool or sequence of bool, keyword-only
        Per channel (or one for all): its optical PSF has a core narrower than a pixel.
        Such a channel's gradient penalty is made edge-preserving (Huber: quadratic up to
        HUBER_KNEE of the steepest gradient of a first, unconstrained solve, linear
        beyond), so the core's flanks are smoothed no more than the noise asks for. One
        more factorisation per such channel.

    Returns
    -------
    DotsPSF

    Raises
    ------
    CalibError
        No usable dot (all saturated or too noisy, or outside the crop).
    """
    s = check_estimate_request(size, oversample)
    if field_order not in (1, 2):
        raise CalibError(f"field_order {field_order} must be 1 (linear) or 2 (quadratic)")
    if field_axes not in (1, 2):
        raise CalibError(f"field_axes {field_axes} must be 1 (the first coordinate) or 2 (both)")
    image = np.asarray(image, dtype=np.float64)
    multi = image.ndim == 3
    img3 = image if multi else image[..., None]
    nc = img3.shape[2]
    mask3 = None
    if mask is not None:
        mask3 = np.asarray(mask, bool)
        mask3 = mask3 if mask3.ndim == 3 else np.repeat(mask3[..., None], nc, axis=2)
    centres = np.atleast_2d(np.asarray(centres_xy, dtype=np.float64))
    ell = (
        np.eye(2) * (0.5 * float(dot_ellipse))
        if np.ndim(dot_ellipse) == 0
        else np.asarray(dot_ellipse, dtype=np.float64)
    )
    dot_r = float(np.linalg.norm(ell, 2))
    r = size // 2
    h, w = img3.shape[:2]
    support = r + dot_r + 1.0  # beyond this a dot's light is negligible by construction
    half = int(np.ceil(support)) + 1
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    lit = centres if other_xy is None else np.vstack([centres, np.reshape(other_xy, (-1, 2))])
    far = _far_from_dots((h, w), lit, support)
    planes = _background_planes(img3, far, mask3)
    n_sat = n_noisy = 0
    dot_w = np.ones(len(centres)) if weights is None else np.asarray(weights, dtype=np.float64)
    turn = np.zeros(len(centres)) if rotations is None else np.asarray(rotations, dtype=np.float64)
    if stretch is None:
        stretch_a = np.ones(len(centres))
    else:
        stretch_a = np.asarray(stretch, dtype=np.float64).ravel()
        if stretch_a.shape != (len(centres),) or not (stretch_a > 0).all():
            raise CalibError(f"stretch must hold one positive factor per dot ({len(centres)})")
    axis = np.asarray(stretch_axis, dtype=np.float64).ravel()
    if axis.shape != (2,) or not np.hypot(*axis) > 0:
        raise CalibError(f"stretch_axis {tuple(stretch_axis)} must be a non-zero (x, y) direction")
    axis = axis / np.hypot(*axis)
    at_xy = centres if field_xy is None else np.asarray(field_xy, dtype=np.float64).reshape(-1, 2)
    if channel_shifts is not None:
        channel_shifts = np.asarray(channel_shifts, dtype=np.float64)
        if channel_shifts.shape != (nc, len(centres), 2):
            raise CalibError(f"channel_shifts must be (channels, dots, 2) = ({nc}, {len(centres)}, 2), "
                             f"not {channel_shifts.shape}")
    sigs, offs, amps, snrs, wts, fpos, thin = [], [], [], [], [], [], []
    # Dots cut by the crop's edge (the frame's edge) keep the part inside: the nodes at
    # the frame's edges have no dots beyond them, and their nearest dots are these.
    padded = np.pad(img3, ((half, half), (half, half), (0, 0)), constant_values=np.nan)
    mask_p = None if mask3 is None else np.pad(mask3, ((half, half), (half, half), (0, 0)))
    # Each dot's samples fill the square around it, not the disc: the kernel is square,
    # and its corners, beyond a disc's samples, were free to take up noise (soft-zoom
    # 1200x800 in focus: 1-2 % of the light at the kernel's corners, the MTF 0.04 low at
    # 0.06 c/p; R/G/B median 6.0/7.1/8.2 -> 5.6/6.0/7.8 %, PSF-vs-edge max 0.053 -> 0.046).
    full_inner = int((np.maximum(np.abs(xx), np.abs(yy)) <= support).sum())
    whole = []
    kept, frames = [], []  # the dots used, and how each one's samples are turned and stretched
    for d_i, ((cx, cy), wd, ang, fxy, k) in enumerate(zip(centres, dot_w, turn, at_xy, stretch_a)):
        ix, iy = int(round(cx)), int(round(cy))
        if not (0 <= ix < w and 0 <= iy < h):
            continue
        win = padded[iy:iy + 2 * half + 1, ix:ix + 2 * half + 1]
        if (saturation_level is not None and np.nanmax(win) >= saturation_level) or (
            mask_p is not None and mask_p[iy:iy + 2 * half + 1, ix:ix + 2 * half + 1].any()
        ):
            n_sat += 1
            continue
        tx, ty = ix + xx - cx, iy + yy - cy
        valid = np.isfinite(win[..., 0])
        inner = (np.maximum(np.abs(tx), np.abs(ty)) <= support) & valid
        if inner.sum() < PARTIAL_DOT_MIN * full_inner:
            continue
        sig = np.empty((int(inner.sum()), nc))
        snr = np.empty(nc)
        for c in range(nc):
            coef, sigma = planes[c]
            if coef is not None:
                bg = coef[0] + coef[1] * (ix + xx) + coef[2] * (iy + yy)
            else:  # dots too dense for a shared background: use each dot's outer ring
                ring = ~inner & valid
                bg = float(np.median(win[..., c][ring]))
                sigma = 1.4826 * float(np.median(np.abs(win[..., c][ring] - bg))) + 1e-12
            sc = (win[..., c] - bg)[inner]
            if sc.sum() < 0:  # dark dot on a bright background
                sc = -sc
            sig[:, c] = sc
            # Integrated signal against the noise of the pixels it spreads over: a blurred
            # dot has a low peak but its light is all there.
            snr[c] = float(sc.sum()) / (max(sigma, 1e-12) * np.sqrt(inner.sum()))
        if snr.min() < min_snr:
            n_noisy += 1
            continue
        snrs.append(snr)
        kept.append(d_i)
        sigs.append(sig)
        ca, sa = np.cos(ang), np.sin(ang)
        frame = (np.eye(2) + (k - 1.0) * np.outer(axis, axis)) @ np.array([[ca, -sa], [sa, ca]])
        offs.append(np.stack([tx[inner], ty[inner]], axis=1) @ frame.T)
        frames.append(frame)
        thin.append(k)
        whole.append(bool(valid.all()))
        amps.append(sig.sum(0))
        wts.append(np.full(int(inner.sum()), np.sqrt(max(float(wd), 0.0))))
        fpos.append(fxy)
    if not sigs:
        raise CalibError(
            f"no usable dot among {len(centres)} in this region ({n_sat} saturated, "
            f"{n_noisy} too noisy); "
            + ("use a shorter exposure" if n_sat >= n_noisy else "use a longer exposure or more light")
        )
    # Each dot's sum is noisy; illumination varies slowly, so share a plane fitted to them.
    amps_a = np.asarray(amps)
    whole_a = np.asarray(whole)
    amp = np.stack([_smooth_amplitudes(centres[kept], amps_a[:, c], whole_a) for c in range(nc)], axis=1)
    t = np.concatenate(offs)
    sw = np.concatenate(wts)
    v = np.concatenate([sg / (a * k) for sg, a, k in zip(sigs, amp, thin)]) * sw[:, None]
    counts = [len(o) for o in offs]  # samples per dot
    big = r * s
    n = 2 * big + 1
    synth = _synth(r, s, core_px)

    def fit(t: np.ndarray, v: np.ndarray, regs: np.ndarray, sharp: np.ndarray) -> np.ndarray:
        """The unknowns (nn, k) fitted to the samples at offsets ``t`` with values ``v``
        (k columns, one smoothing weight each in ``regs``, edge-preserving where ``sharp``)."""
        # One regularised, non-negative least-squares solve for p on the fine grid: each
        # sample is the dot shape convolved with p (Keys-interpolated fine samples),
        # evaluated at the sample's offset from its dot centre. Channels that share the
        # geometry share one system matrix.
        # The normal equations are sparse but fill in when factorised: they are factorised
        # dense (LAPACK, a few thousand unknowns) and iterated on sparse (positivity).
        nn = n * n
        amat_fine = _sample_matrix(t, sw, ell, s, big)
        # Penalty weights relative to the data energy per fine sample, whatever the basis.
        scale = float(amat_fine.power(2).sum() / nn)
        amat = (amat_fine @ synth).tocsr()
        ata = (amat.T @ amat).tocsr()
        nn = synth.shape[1]
        if node_xy is not None and len(sigs) >= 6:
            # Linear field variation P0 + dx Px + dy Py, (dx, dy) each dot's offset from the
            # node in units of the neighbourhood's spread (conditioning). The slopes need
            # P0's fine grid: lateral colour moves a sharp PSF across the neighbourhood, and
            # the derivative of a sharp PSF is sharp (slopes on the sensor grid measured
            # 1200x800 in focus B 9.3/20 -> 11/27 %).
            ud = np.asarray(fpos) - np.asarray(node_xy, dtype=np.float64)
            ell_len = float(np.sqrt((ud**2).sum(1).mean())) + 1e-9
            d = np.repeat(ud / ell_len, counts, axis=0)  # each sample's dot
            # Over the PSF's core only (slope_radius of the half side) where asked: that is
            # where a moving or sharpening PSF changes most, and it keeps the unknowns (and
            # the dense factorisation) small.
            s1 = s if SLOPE_OVERSAMPLE is None else SLOPE_OVERSAMPLE
            r1 = min(r, max(1, int(np.ceil(slope_radius * r))))
            if s1 == s:
                core = np.arange(big - r1 * s, big + r1 * s + 1)
                synth1 = _synth(r1, s, core_px)
                a1 = amat_fine[:, (core[:, None] * n + core[None, :]).ravel()] @ synth1
            else:
                a1 = _sample_matrix(t, sw, ell, s1, r1 * s1)
                synth1 = _synth(r1, s1, None)
            terms = [d[:, a] for a in range(field_axes)]
            if field_order == 2 and len(sigs) >= 12:
                terms += [d[:, a] * d[:, b] for a in range(field_axes) for b in range(a, field_axes)]
            slopes = sp.hstack([sp.diags(tm) @ a1 for tm in terms]).tocsr()
            cross = (amat.T @ slopes).tocsr()
            sts = (slopes.T @ slopes).tocsr()
            # Relative to P0's data energy (the slope columns are P0's scaled by offsets of
            # rms 1); a coarser slope grid has columns of another size: its own energy.
            slope_scale = scale if s1 == s else float(sts.diagonal().mean())
            pen1 = (SLOPE_REG * slope_scale) * _penalty(r1, s1, core_px if s1 == s else None, ridge=True)
            hmat = sp.bmat([[ata, cross], [cross.T, sts + sp.block_diag([pen1] * len(terms))]]).tocsr()
            amat = sp.hstack([amat, slopes]).tocsr()
        else:
            hmat = ata
        hmat = (hmat + (1e-8 * scale) * sp.identity(hmat.shape[0])).tocsr()
        rhs = np.asarray(amat.T @ v)
        # Dense from here: a few hundred to a few thousand unknowns, and the projected
        # iterations' products are faster dense than through the filled-in sparse matrix.
        hdense = hmat.toarray()
        pen = _penalty(r, s, core_px, ridge=False).toarray() * scale
        hcs = np.empty((len(regs), *hdense.shape))
        x0 = np.empty((len(regs), hdense.shape[0], 1))
        # One factorisation per distinct weight: channels of one lens differ in sharpness
        # (a sharp red edge beside a wide blue one), and each needs its own smoothing.
        for r_c in np.unique(regs):
            cols = np.flatnonzero(regs == r_c)
            hc = hdense.copy()
            hc[:nn, :nn] += r_c * pen
            hcs[cols] = hc
            x0[cols, :, 0] = cho_solve(cho_factor(hc, check_finite=False), rhs[:, cols], check_finite=False).T
        # A sub-pixel core (a channel near its own focus, or a sharp lens) has steep flanks,
        # which the quadratic penalty rounds as much as it smooths the noise in the halo:
        # where the first solve is steep, the penalty grows only linearly (Huber).
        grad = _gradient_basis(r, s, core_px)
        for col in np.flatnonzero(sharp):
            g = grad @ np.clip(x0[col, :nn, 0], 0, None)
            knee = HUBER_KNEE * float(np.abs(g).max())
            if knee <= 0:
                continue
            hc = hdense.copy()
            hc[:nn, :nn] += (regs[col] * scale) * (grad.T @ sp.diags(np.minimum(1.0, knee / np.maximum(
                np.abs(g), 1e-30))) @ grad).toarray()
            hcs[col] = hc
            x0[col, :, 0] = cho_solve(cho_factor(hc, check_finite=False), rhs[:, col], check_finite=False)
        return _nonneg_fista(hcs, rhs.T[:, :, None], x0, iterations, n_constrained=nn)[:, :nn, 0].T

    regs = np.broadcast_to(np.asarray(reg, dtype=np.float64), (nc,))
    sharp = np.asarray(sharp_core, dtype=bool)
    if sharp.size not in (1, nc):
        raise CalibError(f"sharp_core must be one flag or one per channel ({nc}), not {sharp.size}")
    sharp = np.broadcast_to(sharp.ravel(), (nc,))
    if channel_shifts is None:
        x = fit(t, v, regs, sharp)
    else:
        # Each channel's shifts in the fit's frame (its dots turned and stretched),
        # per sample; channels shifted alike share one system matrix.
        in_frame = np.einsum("dij,cdj->cdi", np.asarray(frames), channel_shifts[:, kept])
        shifts = np.repeat(in_frame, counts, axis=1)
        x = np.empty((synth.shape[1], nc))
        done = np.zeros(nc, bool)
        for c in range(nc):
            if done[c]:
                continue
            alike = np.flatnonzero(~done & np.all(np.abs(shifts - shifts[c]) < 1e-6, axis=(1, 2)))
            x[:, alike] = fit(t - shifts[c], v[:, alike], regs[alike], sharp[alike])
            done[alike] = True
    coarse_all, fine_all = [], []
    box = _pixel_box_fine(s) if s > 1 else None
    for c in range(nc):
        p = (synth @ x[:, c]).reshape(n, n)
        if box is not None:  # the optical unknowns -> the system PSF's fine samples (the pixel applied)
            p = convolve1d(convolve1d(p, box, axis=0, mode="constant"), box, axis=1, mode="constant")
            p = np.clip(p, 0, None)  # the Keys kernel's small negative lobes, where o ends
        if p.sum() <= 0:
            raise CalibError("the dots in this region show no PSF; check the registration and the chart layout")
        fine = p / p.sum()
        coarse = fine[::s, ::s]
        fine_all.append(fine)
        coarse_all.append(coarse / coarse.sum())
    pick = (lambda a: np.stack(a)) if multi else (lambda a: a[0])
    return DotsPSF(
        psf=pick(coarse_all).astype(np.float32),
        psf_fine=pick(fine_all).astype(np.float32),
        oversample=s,
        n_dots=len(sigs),
        n_saturated=n_sat,
        n_noisy=n_noisy,
        snr=float(np.median(np.min(snrs, axis=1))),
    )


# A sample's stencil keeps the fine nodes whose weight exceeds this fraction of its
# largest: the pixel box widens the stencil from 9x9 to 13x13 nodes, mostly with
# negligible weights (1200x800 in focus, vintage and sharp-prime: figures unchanged
# within 0.2 % at 0.001 and 0.003; 46 nodes kept, 24 MP solves back to their old time).
STENCIL_TOL = 0.003
# Penalty on the PSF's slopes across the field (linear-variation fit), relative to the
# data energy: keeps them from absorbing noise where the dots barely constrain them. At
# 0.01 it also held back real change: soft-zoom's comets at the top and bottom edge
# centres came out less skewed, as a noise-free shot showed (G 18 %, 14 at 0.0001).
# 1200x800 in focus, soft-zoom R/G/B 5.6/6.0/7.8 %, worst 17/19/21 -> 4.8/6.4/7.1 %,
# worst 17/14/16 at 0.001 (0.0005: 5.0/6.6/7.2, worst 17/14/15; 0.003: worst 17/16/18);
# the other lenses and +15 steps within a point either way; demo unchanged.
SLOPE_REG = 0.001
# The edge-preserving penalty of ``sharp_core`` channels turns from quadratic to linear
# at this fraction of the first solve's steepest fine gradient. vintage 1200x800, R/G/B
# median/worst %, noise seeds 1 and 2 (only channels narrower than 0.7 px rms are
# flagged, ``_analyze``): 16 steps in front of focus, blue 7.9/16.8 -> 7.1/16.1 and
# 8.1/16.4 -> 6.9/15.7 (seed 3: 8.3/14.3 -> 6.3/13.6); in focus, green 4.9/8.4 ->
# 2.8/9.4; sharp-prime in focus 2.4/4.8, 4.2/5.3, 2.6/6.2 -> 1.8/4.0, 1.5/3.5, 2.6/7.7.
# 0.05 and 0.2 read within 0.3 points of 0.1; a second reweighting within 0.6. Made
# edge-preserving for every channel, vintage's green at -16 went 12.7 -> 14.2 % (seed 2:
# 14.9 -> 17.9).
HUBER_KNEE = 0.1
# A dot cut by the crop's edge is used while this fraction of its cut-out is inside.
PARTIAL_DOT_MIN = 0.5
# Beyond about this many distinct sample phases (dots turned about their centres) the
# phases are rounded to PHASE_STEPS per fine step (at 3 samples/px: 1/96 px).
PHASES_MAX = 2048
PHASE_STEPS = 32
# Samples per pixel of the slopes (None: as P0).
SLOPE_OVERSAMPLE: int | None = None


def _sample_matrix(t: np.ndarray, sw: np.ndarray, ell: np.ndarray, s: int, big: int) -> sp.csr_matrix:
    """Sparse matrix of the dot-convolved basis: row = one pixel sample at offset ``t``
    (px) from its dot centre, column = one node of the (2 big + 1)^2 grid at ``s``
    nodes per pixel, scaled by the sample's weight ``sw``."""
    n = 2 * big + 1
    table, tstep, treach = _dot_kernel_table(ell, s)
    reach = int(np.ceil(treach * s))  # grid nodes within reach of one sample
    sx, sy = np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1))
    sx, sy = sx.ravel(), sy.ravel()
    base_x = np.rint(t[:, 0] * s).astype(int)
    base_y = np.rint(t[:, 1] * s).astype(int)
    # A sample's offsets from its nodes depend only on its phase within a fine step,
    # and every pixel of one dot shares that dot's phase: the table is read once per
    # distinct phase (per dot), and each dot's pixels take that phase's stencil, cut to
    # its non-negligible entries (a fifth of a 24 MP photo's solve time).
    fx, fy = t[:, 0] * s - base_x, t[:, 1] * s - base_y
    key = np.rint(fx * 1e6).astype(np.int64) * 4_000_037 + np.rint(fy * 1e6).astype(np.int64)
    if len(np.unique(key[:: max(1, len(key) // PHASES_MAX)])) >= PHASES_MAX // 2:
        # Samples of dots turned about their centres each have their own phase: round
        # them to PHASE_STEPS per fine step, the table's own resolution being 1/16.
        fx, fy = np.rint(fx * PHASE_STEPS) / PHASE_STEPS, np.rint(fy * PHASE_STEPS) / PHASE_STEPS
        key = np.rint(fx * PHASE_STEPS).astype(np.int64) * 4_000_037 + np.rint(fy * PHASE_STEPS).astype(np.int64)
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    dx = (fx[first, None] - sx[None, :]) / s  # offset of the sample from each node, px
    dy = (fy[first, None] - sy[None, :]) / s
    c0 = (table.shape[0] - 1) / 2
    near = (np.abs(dx) < treach) & (np.abs(dy) < treach)
    per_phase = np.where(near, map_coordinates(table, [dy / tstep + c0, dx / tstep + c0], order=1), 0.0)
    near &= np.abs(per_phase) > STENCIL_TOL * np.abs(per_phase).max(axis=1, keepdims=True)
    by_phase = np.argsort(inv, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(inv, minlength=len(first)))]
    rows_l, cols_l, vals_l = [], [], []
    for u in range(len(first)):
        rr = by_phase[bounds[u]:bounds[u + 1]]
        kk = np.flatnonzero(near[u])
        jx = base_x[rr, None] + sx[None, kk]
        jy = base_y[rr, None] + sy[None, kk]
        ok = (np.abs(jx) <= big) & (np.abs(jy) <= big)
        vals_l.append((sw[rr, None] * per_phase[u, kk][None, :])[ok])
        rows_l.append(np.broadcast_to(rr[:, None], ok.shape)[ok])
        cols_l.append(((jy + big) * n + (jx + big))[ok])
    vals, rows, cols = np.concatenate(vals_l), np.concatenate(rows_l), np.concatenate(cols_l)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(t), n * n))


@functools.lru_cache(maxsize=16)
def _synth(r: int, s: int, core_px: float | None) -> sp.csr_matrix:
    """Fine-grid samples of a (2 r s + 1)^2 kernel from its unknowns (see core_tail_basis)."""
    if s == 1 or core_px is None:
        return sp.identity((2 * r * s + 1) ** 2, format="csr")
    return core_tail_basis(r, s, core_px).synth


# The basis and penalty matrices depend only on the PSF's size and sampling: built once
# per analysis rather than once per node (a tenth of a 24 MP photo's solve time).
@functools.lru_cache(maxsize=16)
def _penalty(r: int, s: int, core_px: float | None, *, ridge: bool) -> sp.csr_matrix:
    """Squared-gradient penalty (plus the identity with ``ridge``) on the unknowns of
    :func:`_synth`."""
    grad = _gradient_basis(r, s, core_px)
    pen = grad.T @ grad
    if ridge:
        synth = _synth(r, s, core_px)
        pen = pen + synth.T @ synth
    return pen.tocsr()


@functools.lru_cache(maxsize=16)
def _gradient_basis(r: int, s: int, core_px: float | None) -> sp.csr_matrix:
    """Forward differences of the fine kernel in terms of the unknowns of :func:`_synth`
    (the square root of :func:`_penalty` without the ridge)."""
    return (gradient_op(2 * r * s + 1) @ _synth(r, s, core_px)).tocsr()


def _far_from_dots(shape: tuple[int, int], centres: np.ndarray, support: float) -> tuple[int, np.ndarray]:
    """Sampling step and the (subsampled) pixels no dot reaches: the background's support."""
    h, w = shape
    step = max(1, int(np.sqrt(h * w / 40000)))  # enough pixels, bounded cost
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    far = np.ones(xs.shape, bool)
    for cx, cy in centres:
        # only the sample rows/columns within reach of this dot
        r0, r1 = max(0, int(np.ceil((cy - support) / step))), int(np.floor((cy + support) / step)) + 1
        c0, c1 = max(0, int(np.ceil((cx - support) / step))), int(np.floor((cx + support) / step)) + 1
        if r1 <= r0 or c1 <= c0:
            continue
        sub = (slice(r0, r1), slice(c0, c1))
        far[sub] &= (xs[sub] - cx) ** 2 + (ys[sub] - cy) ** 2 > support**2
    return step, far


def _background_planes(image: np.ndarray, far_from_dots: tuple[int, np.ndarray],
                       mask: np.ndarray | None) -> list[tuple[np.ndarray | None, float]]:
    """Per channel of ``image`` (h, w, C): a robust plane a + b x + c y through the pixels
    no dot reaches (``_far_from_dots``) and not in ``mask`` (h, w, C), and their noise
    sigma; (None, 0) where fewer than 50 such pixels are left."""
    step, far = far_from_dots
    iy, ix = np.nonzero(far)
    x, y = (ix * step).astype(float), (iy * step).astype(float)
    sub = image[::step, ::step][iy, ix].astype(float)  # (n, C)
    usable = np.ones(sub.shape, bool) if mask is None else ~mask[::step, ::step][iy, ix]
    # 3 unknowns: the normal equations suffice, their sums taken as dot products with
    # the kept pixels' indicator (row selection of an (n, 3) design was 10x slower).
    cols = (np.ones_like(x), x, y)
    out = []
    for c in range(sub.shape[1]):
        v, ok = sub[:, c], usable[:, c]
        if ok.sum() < 50:
            out.append((None, 0.0))
            continue
        keep = ok.astype(float)
        for _ in range(3):  # trim outliers (dust, stray light) then refit
            kc = [keep * col for col in cols]
            ata = np.array([[kc_i @ c_j for c_j in cols] for kc_i in kc])
            coef = np.linalg.solve(ata, np.array([kc_i @ v for kc_i in kc]))
            res = v - (coef[0] + coef[1] * x + coef[2] * y)
            # (every 4th kept pixel: the scale to about 2 %, at a quarter of the cost)
            sigma = 1.4826 * float(np.median(np.abs(res[keep > 0][::4]))) + 1e-12
            keep = (ok & (np.abs(res) < 4 * sigma)).astype(float)
        out.append((coef, sigma))
    return out


def _smooth_amplitudes(xy: np.ndarray, amps: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Per-dot brightness from a robust plane over the neighbourhood (fewer than 6 dots: median),
    fitted to the ``whole`` dots' sums: a dot cut by the crop's edge lost part of its light
    (only cut dots: their sums are all there is)."""
    known = whole if whole.any() else np.ones(len(amps), bool)
    if known.sum() < 6:
        return np.full(len(amps), float(np.median(amps[known])))
    a = np.stack([np.ones(len(amps)), xy[:, 0] - xy[:, 0].mean(), xy[:, 1] - xy[:, 1].mean()], axis=1)
    keep = known.copy()
    for _ in range(3):
        coef = np.linalg.lstsq(a[keep], amps[keep], rcond=None)[0]
        res = amps - a @ coef
        scale = 1.4826 * float(np.median(np.abs(res[keep]))) + 1e-12
        keep = known & (np.abs(res) < 4 * scale)
    out = a @ coef
    return np.where(out > 0, out, float(np.median(amps[known])))


def _dot_kernel_table(ellipse: np.ndarray, s: int) -> tuple[np.ndarray, float, float]:
    """:func:`_kernel_table` for ``ellipse`` rounded to 1e-4 px, built once per shape (the
    nodes of a chart seen square-on share one)."""
    return _kernel_table(tuple(np.round(np.asarray(ellipse, np.float64), 4).ravel()), s)


@functools.lru_cache(maxsize=64)
def _kernel_table(ellipse_flat: tuple[float, ...], s: int) -> tuple[np.ndarray, float, float]:
    """Tabulate (dot * pixel * keys_s)(t): one optical unknown's contribution to a pixel
    sample at offset t from the dot's centre.

    The dot is the unit-integral ellipse ``E * disc``, the pixel a 1 px box, keys_s the
    Keys interpolation kernel of the fine grid (half-width ``2/s`` px). Returns the
    table, its step (px) and its reach (px, half-width).
    """
    sub = 16  # table samples per fine step
    step = 1.0 / (s * sub)
    ellipse = np.reshape(ellipse_flat, (2, 2))
    dot_r = float(np.linalg.norm(ellipse, 2))
    reach = dot_r + 2.0 / s + (0.5 if s > 1 else 0.0) + step
    m = int(np.ceil(reach / step))
    ax = np.arange(-m, m + 1) * step
    gx, gy = np.meshgrid(ax, ax)
    inv = np.linalg.inv(ellipse)
    # Area-weighted indicator: 4x4 sub-samples per table cell for a smooth rim.
    acc = np.zeros_like(gx)
    for ox in (-0.375, -0.125, 0.125, 0.375):
        for oy in (-0.375, -0.125, 0.125, 0.375):
            px, py = gx + ox * step, gy + oy * step
            ux = inv[0, 0] * px + inv[0, 1] * py
            uy = inv[1, 0] * px + inv[1, 1] * py
            acc += (ux * ux + uy * uy) <= 1.0
    dot = acc / acc.sum()
    # The unknowns are samples of the optical PSF (before the pixel), interpolated between
    # nodes by the Keys cubic kernel (it reproduces quadratics, so widths come out right;
    # a tent adds 1/6 of a step squared to the variance). The pixel box is applied
    # exactly: the system PSF's sharp pixel edges are what a smooth interpolant of the
    # system PSF itself cannot follow. That rounded a sharp PSF's core into its
    # neighbours (vintage's comatic red: 0.51 for 0.58 at the centre pixel, 0.21 for
    # 0.14 beside it) and left 1.6 % of a noise-free dot's light unexplained.
    # (At one sample per pixel the optical PSF is far too sharp for its samples: the
    # unknowns are then the system PSF's, as smooth as the pixel makes it; a dots
    # synthetic with a 0.35 px core went 4.5 -> 12 % with the box at s = 1.)
    kern1 = _keys_pixel(s, sub) if s > 1 else _keys(np.arange(-2 * sub, 2 * sub + 1) / sub)
    table = fftconvolve(dot, np.outer(kern1, kern1), mode="same")
    return table, step, reach


def _keys_pixel(s: int, sub: int) -> np.ndarray:
    """The Keys kernel of a grid with ``s`` nodes per pixel, convolved with the 1 px box,
    at ``sub`` samples per node step (odd length, centred)."""
    return np.convolve(_keys(np.arange(-2 * sub, 2 * sub + 1) / sub), _box_samples(s * sub))


def _box_samples(m: int) -> np.ndarray:
    """A unit-integral box m samples wide (half weights at its two ends when that
    centres it on a sample)."""
    if m % 2:
        return np.full(m, 1.0 / m)
    b = np.ones(m + 1)
    b[0] = b[-1] = 0.5
    return b / m


@functools.lru_cache(maxsize=4)
def _pixel_box_fine(s: int) -> np.ndarray:
    """Weights over fine-sample offsets of (1 px box x Keys) at the fine nodes: the
    pixel-integrated kernel of one optical unknown, sampled on the fine grid."""
    sub = 64
    k = _keys_pixel(s, sub)
    c = len(k) // 2
    idx = np.arange(-(c // sub), c // sub + 1)
    w = k[c + idx * sub]
    return w / w.sum()


def _keys(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (interpolating, exact for quadratics), support |t| < 2."""
    t = np.abs(t)
    out = np.zeros_like(t)
    m1 = t <= 1
    m2 = (t > 1) & (t < 2)
    out[m1] = (a + 2) * t[m1] ** 3 - (a + 3) * t[m1] ** 2 + 1
    out[m2] = a * t[m2] ** 3 - 5 * a * t[m2] ** 2 + 8 * a * t[m2] - 4 * a
    return out


def _nonneg_fista(hmat: np.ndarray, rhs: np.ndarray, x0: np.ndarray, iterations: int,
                  n_constrained: int | None = None) -> np.ndarray:
    """Minimise 1/2 x^T H x - rhs^T x subject to x[:n_constrained] >= 0, from ``x0``, for
    a stack of problems at once: ``hmat`` (B, n, n), ``rhs`` and ``x0`` (B, n, k). (The
    channels iterate together: one array operation per step instead of one per channel.)"""
    m = x0.shape[1] if n_constrained is None else int(n_constrained)

    def proj(z):
        z = z.copy()
        z[:, :m] = np.clip(z[:, :m], 0, None)
        return z

    x = proj(x0)
    if np.all(x0[:, :m] >= 0):  # the unconstrained optimum is feasible: it is the answer
        return x
    # Single precision for the iterations: they stream the matrices from memory (a few
    # MB per step), and projected gradient steps need nowhere near double's digits.
    hmat, rhs, x = (np.asarray(a, np.float32) for a in (hmat, rhs, x))
    v = np.random.default_rng(0).standard_normal((*rhs.shape[:2], 1)).astype(np.float32)
    for _ in range(30):
        v = hmat @ v
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    step = np.float32(1 / 1.05) / (v * (hmat @ v)).sum(axis=1, keepdims=True)  # 1 / Lipschitz
    y, t = x.copy(), 1.0
    for _ in range(iterations):
        x_new = proj(y - (hmat @ y - rhs) * step)
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        y = x_new + np.float32((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x.astype(np.float64)
