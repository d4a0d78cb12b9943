"""``lenspsf edge``: the slanted-edge MTF (e-SFR) of one edge in any photo."""
from __future__ import annotations

import argparse
import csv
import math
import sys
import warnings

import targets

from .. import CalibError, GammaEncodedWarning, load_linear, measure_edge
from ._args import roi


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``edge`` to the ``lenspsf`` parser."""
    p = subparsers.add_parser(
        "edge",
        help="measure the MTF (e-SFR) of one slanted edge in any photo",
        description=(
            "Measure one slanted edge (ISO 12233 e-SFR): the edge is found automatically "
            "in the ROI; prints MTF50 and the SFR table per channel."
        ),
    )
    p.add_argument("image", metavar="IMG", help="photo holding the edge (raw, TIFF, PNG, JPEG)")
    p.add_argument("--roi", type=roi, metavar="X,Y,W,H", help="region holding one edge (default: whole image)")
    p.add_argument("--channel", metavar="C", help="R, G, B or Y (luminance); default: all")
    p.add_argument("--csv", metavar="OUT.csv", help="write the SFR table here")
    p.add_argument(
        "--no-linearize", action="store_true",
        help="keep 8-bit gamma-encoded values as they are (how reference tools read them)",
    )
    p.add_argument("--cfa", metavar="PATTERN", help="the image is an undemosaiced mosaic (RGGB, BGGR, GRBG, GBRG)")
    p.add_argument("--fit-order", type=int, default=1, help="edge fit polynomial order (default 1)")
    p.add_argument("--window", default="tukey", help="LSF window: tukey (default), hamming, none")
    p.add_argument("--pixel-pitch-um", type=float, help="pixel pitch for lp/mm (default: from the file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure, print, optionally write the CSV."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GammaEncodedWarning)
        img = load_linear(args.image, linearize=not args.no_linearize, demosaic="none" if args.cfa else "linear")
    for w in caught:
        print(f"lenspsf: warning: {w.message}", file=sys.stderr)
    res = measure_edge(
        img, roi=args.roi, channel=args.channel, cfa=args.cfa, fit_order=args.fit_order, window=args.window,
    )
    pitch = args.pixel_pitch_um or img.metadata.pixel_pitch_um
    if pitch is not None and pitch <= 0:
        raise CalibError(f"pixel pitch {pitch} um is not positive; give --pixel-pitch-um")
    x, y = res.edge_xy_px
    print(
        f"{args.image}: edge at ({x:.1f}, {y:.1f}) px, slant {res.angle_deg:+.2f} deg, "
        f"normal {res.normal_deg:.1f} deg, length {res.edge_length_px:.0f} px"
        + ("" if res.linear else " (gamma-encoded values, not linear)")
    )
    for ch in res.channels:
        m50 = res.mtf50_cpp[ch]
        lpmm = f" = {m50 * 1000 / pitch:.1f} lp/mm" if pitch and not math.isnan(m50) else ""
        flags = ", ".join(res.flags[ch]) or "ok"
        print(
            f"  {ch}: MTF50 {m50:.4f} c/p{lpmm}, MTF(Nyquist/2) {res.mtf_at_half_nyquist[ch]:.3f}, "
            f"contrast {res.contrast[ch]:.3f} [{flags}]"
        )
    header = ["freq_cpp"] + (["freq_lpmm"] if pitch else []) + [f"mtf_{ch}" for ch in res.channels]
    rows = []
    for i, f in enumerate(res.freq_cpp):
        row = [f"{f:.2f}"] + ([f"{f * 1000 / pitch:.2f}"] if pitch else [])
        rows.append(row + [f"{res.mtf[c, i]:.4f}" for c in range(len(res.channels))])
    if args.csv:  # before the printout: a closed pipe (``| head``) must not lose the file
        with targets.atomic_write(args.csv) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
    print("  " + "  ".join(f"{h:>9s}" for h in header))
    for row in rows[: int(round(0.5 / 0.01)) + 1 : 5]:
        print("  " + "  ".join(f"{v:>9s}" for v in row))
    if args.csv:
        print(f"wrote {args.csv}")
    return 0
