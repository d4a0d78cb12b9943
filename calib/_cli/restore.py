"""``lenspsf restore``: deconvolve photos with the PSF map of their calibration."""
from __future__ import annotations

import argparse

import restore


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore photos with the measured PSF map",
        description="Deconvolve photos tile by tile with the spatially varying PSF map of "
        "their calibration; writes NAME_restored.tif (16-bit linear) next to each photo or in -o.",
    )
    p.add_argument("images", nargs="+", metavar="IMG", help="photos to restore")
    p.add_argument("--db", required=True, help="PSF database (.psfdb)")
    p.add_argument("--focus", type=int, help="focus position to use (nearest calibrated, with a warning)")
    p.add_argument("--focus-distance-m", type=float, help="focus distance to use, metres")
    p.add_argument("--method", default="wiener", choices=sorted(restore.METHODS))
    p.add_argument("--strength", type=float, help="regularisation multiplier (1 = noise-matched)")
    p.add_argument("-o", "--out-dir", help="output folder (default: beside each photo)")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--camera", help="camera, for photos without metadata")
    p.add_argument("--lens", help="lens, for photos without metadata")
    p.add_argument("--preview", action="store_true", help="also write an sRGB JPEG preview")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    restore.restore_files(
        args.images,
        db=args.db,
        out_dir=args.out_dir,
        focus=args.focus,
        method=args.method,
        scheduler=args.scheduler,
        strength=args.strength,
        camera=args.camera,
        lens=args.lens,
        focus_distance_m=args.focus_distance_m,
        preview=args.preview,
    )
    return 0
