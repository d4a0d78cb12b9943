"""``lenspsf targets make KIND ... -o NAME.pdf|png|svg``: print a calibration chart."""
from __future__ import annotations

import argparse
import sys

import targets


def _pair(text: str) -> tuple[int, int]:
    try:
        a, b = text.lower().split("x")
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not NxM, e.g. 3x3") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


# Kind option name -> (argparse destination, kinds it applies to).
_KIND_OPTIONS = {
    "dot_mm": ("dots", "combo"),
    "max_psf_px": ("dots", "combo"),
    "phases": ("dots",),
    "field": ("stripes", "combo"),
    "frequencies_cpmm": ("stripes", "combo"),
    "profile": ("stripes", "combo"),
    "contrast": ("stripes",),
    "grid": ("edges",),
    "cell_mm": ("noise",),
    "seed": ("noise",),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "targets", help="make printable calibration charts (PDF/PNG/SVG + layout JSON)",
        description="Printable calibration charts and their layout files.",
    )
    sub = p.add_subparsers(dest="targets_command", metavar="ACTION", required=True)
    m = sub.add_parser(
        "make", help="write a chart and NAME.json beside it",
        description=(
            "Write a calibration chart of KIND at its exact physical size, plus NAME.json (its layout "
            "in millimetres: every dot, grating, edge, noise cell and ArUco marker). Print the PDF at "
            "100 % with no scaling and check the 100 mm bar with a ruler."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    m.add_argument("kind", metavar="KIND",
                   help="dots (PSF), stripes (MTF gratings), edges (slanted-edge MTF), noise (PSF from a "
                        "known random pattern) or combo (dots, edges and stripes on one sheet)")
    m.add_argument("-o", "--output", required=True, metavar="NAME.pdf|.png|.svg",
                   help="chart file; its suffix picks the format; NAME.json is written beside it")
    m.add_argument("--paper", default="A4", help="A4, A3, A2, letter, tabloid or WxHmm (e.g. 300x200mm)")
    m.add_argument("--landscape", action="store_true", help="long side horizontal")
    m.add_argument("--dpi", type=float, default=600.0,
                   help="PNG resolution, and the resolution of gratings and noise embedded in PDF/SVG")
    m.add_argument("--screen", metavar="WxHpx", help="design for a monitor of this many pixels instead of paper")
    m.add_argument("--pixel-pitch-mm", type=float, help="monitor pixel pitch in mm (with --screen)")
    g = m.add_argument_group("shooting geometry (optional: sizes dots to ~1 sensor pixel, keeps gratings below Nyquist)")
    g.add_argument("--pixel-pitch-um", type=float, help="sensor pixel pitch in micrometres")
    g.add_argument("--focal-mm", type=float, help="lens focal length in mm")
    g.add_argument("--distance-m", type=float, help="chart distance from the camera in metres")
    k = m.add_argument_group("kind options")
    k.add_argument("--dot-mm", type=float, help="dot diameter in mm (dots, combo); default from the geometry or 0.4")
    k.add_argument("--max-psf-px", type=float,
                   help="largest PSF diameter expected, in sensor pixels; sets the dot spacing so PSFs never overlap "
                        "(dots: 25, combo: 15)")
    k.add_argument("--phases", type=int, help="sub-pixel jitter phases per axis for the dots (default 4)")
    k.add_argument("--field", type=_pair, help="field positions NxM for stripes/combo (default 3x3)")
    k.add_argument("--frequencies", dest="frequencies_cpmm", type=_floats,
                   help="grating frequencies in cycles/mm, comma-separated (default: six, from the patch size "
                        "up to the print/sensor limit)")
    k.add_argument("--square", dest="profile", action="store_const", const="square",
                   help="square-wave gratings instead of sine")
    k.add_argument("--contrast", type=float, help="grating Michelson contrast (default 0.8)")
    k.add_argument("--grid", type=_pair, help="edge squares NxM (default: about one per 45 mm)")
    k.add_argument("--cell-mm", type=float, help="noise cell size in mm (default: 2.3 sensor pixels, printable)")
    k.add_argument("--seed", type=int, help="noise seed (default 1)")
    m.set_defaults(func=run_make)


def run_make(args: argparse.Namespace) -> int:
    options = {}
    for name, kinds in _KIND_OPTIONS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if args.kind not in kinds:
            raise targets.TargetError(
                f"--{name.replace('_cpmm', '').replace('_', '-')} does not apply to {args.kind} charts; "
                f"it is for {' and '.join(kinds)}"
            )
        options[name] = value
    layout = targets.make_layout(
        args.kind, paper=args.paper, landscape=args.landscape, screen_px=args.screen,
        pixel_pitch_mm=args.pixel_pitch_mm, dpi=args.dpi, pixel_pitch_um=args.pixel_pitch_um,
        focal_mm=args.focal_mm, distance_m=args.distance_m, **options,
    )
    print(f"lenspsf targets: writing {args.output} ({layout.kind}, {layout.page_mm[0]:g} x "
          f"{layout.page_mm[1]:g} mm) ...", file=sys.stderr)
    files = targets.write_chart(layout, args.output, dpi=args.dpi)
    counts = ", ".join(f"{len(getattr(layout, n))} {n}" for n in ("dots", "stripes", "edges", "noise")
                       if getattr(layout, n))
    print(f"wrote {files.chart} and {files.layout}: {counts}, {len(layout.markers.items)} markers "
          f"({layout.markers.dictionary}); "
          + ("show it at one image pixel per screen pixel" if layout.screen else
             "print at 100 %, no scaling; the bar must measure 100 mm"))
    return 0
