"""``lenspsf analyze``: photos of a chart (a capture session or any files) -> PSF database."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import calib


def register(subparsers) -> None:
    """Add the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        "analyze",
        help="measure PSF maps from chart photos into a PSF database",
        description=(
            "Analyse a capture session folder (every focus setting, dark frames for the noise "
            "model) or photos of one chart taken with any tool (--chart, --focus), and store one "
            "calibration per focus setting in the database, one transaction each."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="SESSION_DIR|IMG",
                   help="a capture session folder, or photos of one chart at one focus setting")
    p.add_argument("--db", required=True, metavar="LENS.psfdb", help="PSF database (created if missing)")
    p.add_argument("--chart", metavar="NAME.json", help="chart layout of the photos (not for a session)")
    p.add_argument("--focus", type=int, metavar="F", help="focus-drive position of the photos")
    p.add_argument("--replace", action="store_true", help="replace a stored calibration of the same setting")
    p.add_argument("--grid", default=None, metavar="NYxNX",
                   help="field nodes, e.g. 6x9 (default); 'auto': denser where the dots show the PSF changing fast")
    p.add_argument("--oversample", type=int, default=None, metavar="S",
                   help="sub-pixel sampling of the estimate (default: by PSF size)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads for the field nodes (default: every core)")
    p.set_defaults(func=run)


def _grid(text: str | None) -> tuple[int, int] | str | None:
    if text is None or text.lower() == "auto":
        return None if text is None else "auto"
    try:
        ny, nx = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise calib.CalibError(f"--grid {text!r} is not NYxNX (e.g. 6x9); give rows x columns, or auto") from None
    return ny, nx


def run(args: argparse.Namespace) -> int:
    """Analyse and store; 0 on success."""
    grid = _grid(args.grid)
    if args.workers is not None and args.workers < 1:
        raise calib.CalibError(f"--workers must be at least 1, got {args.workers}")
    first = Path(args.inputs[0])
    is_session = len(args.inputs) == 1 and first.is_dir()
    if is_session and args.chart:
        raise calib.CalibError(f"{first} is a capture session; its charts are in its manifest, drop --chart")
    if not is_session and not args.chart:
        raise calib.CalibError(
            f"{first} is not a capture session folder; for single photos name their chart with --chart NAME.json"
        )
    # Opened first: a locked database or one of a newer schema fails before the slow part.
    created = not Path(args.db).exists()
    db = calib.PSFDatabase.open(args.db, create=True)
    try:
        ids = _analyze_into(db, args, grid, first, is_session)
    except BaseException:
        empty = created and not db.summaries()
        db.close()
        if empty:  # a failed first run leaves no empty database behind; stored work is kept
            Path(args.db).unlink(missing_ok=True)
        raise
    db.close()
    print(f"stored {len(ids)} calibration(s) in {args.db}: ids {', '.join(map(str, ids))}")
    return 0


def _analyze_into(db: calib.PSFDatabase, args: argparse.Namespace, grid: tuple[int, int] | str | None, first: Path,
                  is_session: bool) -> list[int]:
    if is_session:
        return calib.analyze_session(first, db=db, replace=args.replace, grid=grid,
                                     oversample=args.oversample, workers=args.workers, progress=True)
    res = calib.analyze_images(args.inputs, args.chart, focus_position=args.focus, grid=grid,
                               oversample=args.oversample, workers=args.workers, progress=True)
    if res.psf_map is None:
        raise calib.CalibError(
            f"{args.chart} is an edges/stripes chart: the database stores MTF with a PSF map, so "
            "analyse a dots, noise or combo chart (or a capture session holding one at this setting)"
        )
    cal = calib.Calibration(
        key=res.key, psf_map=res.psf_map, noise=res.noise, mtf=res.mtf,
        pixel_pitch_um=res.metadata.pixel_pitch_um,
        metadata={"distortion": res.registration.to_dict(), "method": res.method,
                  "n_images": res.n_images, "notes": list(res.notes)},
    )
    ids = [db.add(cal, replace=args.replace)]
    for note in res.notes:
        print(f"lenspsf: note: {note}", file=sys.stderr)
    return ids
