"""``lenspsf report``: the HTML calibration report of a PSF database."""
from __future__ import annotations

import argparse
import sys

from .. import write_report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``lenspsf`` parser."""
    p = subparsers.add_parser(
        "report",
        help="write an HTML report of a PSF database (PSF montage, MTF, field maps, through focus)",
        description=(
            "Write one self-contained HTML file with plots of every calibration in a PSF "
            "database: PSFs across the field, MTF curves and MTF50 maps, through-focus MTF "
            "and best focus, lateral colour, distortion and the PSF-vs-edge check."
        ),
    )
    p.add_argument("--db", required=True, metavar="FILE", help="the PSF database (.psfdb)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.html",
                   help="the report to write (its folder must exist)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report; print where it is."""
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = write_report(args.db, args.output, progress=progress)
    n = len(result.rows)
    print(f"wrote {result.path} ({n} calibration{'s' if n != 1 else ''})")
    return 0
