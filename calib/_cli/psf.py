"""``lenspsf psf``: the local PSF from a photo of any known random pattern."""
from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

import targets

from .. import CalibError, GammaEncodedWarning, estimate_psf_from_pattern, load_linear
from .._pattern_register import load_pattern
from ._args import roi


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``psf`` to the ``lenspsf`` parser."""
    p = subparsers.add_parser(
        "psf",
        help="estimate the local PSF from a photo of a known random pattern",
        description=(
            "Estimate the local PSF (optics x pixel aperture) from a photo of a printed random "
            "pattern (no markers needed): the pattern is found from its outline, registered by "
            "its texture, and the PSF solved against its ideal rendering. Writes an .npz with "
            "psf (sum 1, at the oversampling), psf_sensor, oversample, homography (pattern px "
            "to photo px), fwhm_px and sigma_px."
        ),
    )
    p.add_argument("image", metavar="IMG", help="photo of the pattern (raw, 16-bit TIFF/PNG; 8-bit JPEG with a warning)")
    p.add_argument("--pattern", required=True, metavar="PATTERN.png",
                   help="the printed pattern as an image, one pixel per cell")
    p.add_argument("--roi", type=roi, metavar="X,Y,W,H",
                   help="region holding the whole pattern with some paper around it (default: whole photo)")
    p.add_argument("--oversample", type=int, default=2, metavar="S",
                   help="PSF samples per sensor pixel (default 2; 1 = sensor grid)")
    p.add_argument("--size", type=int, metavar="K", help="odd PSF side in sensor pixels (default: from its width)")
    p.add_argument("--channel", default="G", metavar="C",
                   help="R, G, B, or Y (luminance) for RGB photos (default G)")
    p.add_argument("-o", "--output", required=True, metavar="PSF.npz", help="where to write the PSF")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, estimate, print the width, write the npz atomically."""
    if args.oversample < 1:
        raise CalibError(f"--oversample {args.oversample} must be at least 1")
    if args.size is not None and (args.size < 3 or args.size % 2 == 0):
        raise CalibError(f"--size {args.size} must be odd and at least 3")
    pattern = load_pattern(args.pattern)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GammaEncodedWarning)
        img = load_linear(args.image)
    for w in caught:
        print(f"lenspsf: warning: {w.message}", file=sys.stderr)
    channel = args.channel if len(img.channels) > 1 else img.channels[0]
    data = img.channel(channel)
    sat = img.saturated[:, :, img.channels.index(channel)] if channel in img.channels else img.saturated.any(axis=2)
    print(f"{args.image}: searching for {args.pattern} ({pattern.shape[1]}x{pattern.shape[0]} cells), "
          f"channel {channel}", file=sys.stderr)
    res = estimate_psf_from_pattern(
        data, pattern, roi=args.roi, oversample=args.oversample, size=args.size, saturated=sat,
        where=str(args.image),
    )
    x, y, w, h = res.region_xywh_px
    print(
        f"{args.image}: PSF over {w}x{h} px at ({x}, {y}), registration correlation {res.correlation:.3f}; "
        f"FWHM {res.fwhm_px:.2f} px, sigma {res.sigma_px[0]:.2f} x {res.sigma_px[1]:.2f} px "
        f"(major axis at {res.angle_deg:.0f} deg), residual {res.residual_rms:.4g}"
    )
    with targets.atomic_write(args.output) as tmp:
        np.savez(
            tmp,
            psf=res.psf.astype(np.float32),
            psf_sensor=res.psf_sensor.astype(np.float32),
            oversample=np.int64(res.oversample),
            homography=res.homography.astype(np.float64),
            fwhm_px=np.float64(res.fwhm_px),
            sigma_px=np.asarray(res.sigma_px, dtype=np.float64),
            channel=np.str_(channel),
        )
    print(f"wrote {args.output} (psf {res.psf.shape[0]}x{res.psf.shape[1]} at oversample {res.oversample})")
    return 0
