"""``lenspsf capture``: shoot the charts at every focus setting into a session folder."""
from __future__ import annotations

import argparse
import sys

import calib


def register(subparsers) -> None:
    """Add the ``capture`` subcommand."""
    p = subparsers.add_parser(
        "capture",
        help="shoot printed charts with a tethered (gphoto2) or simulated camera",
        description=(
            "Shoot every chart at every focus setting REPEAT times (then dark frames) and "
            "record each shot in OUT/session.json, rewritten after every shot; "
            "--resume continues an interrupted session without duplicates."
        ),
    )
    p.add_argument("--camera", choices=("gphoto2", "sim"), required=True, help="camera backend")
    p.add_argument("--port", help="gphoto2 port of the camera (usb:001,004), when several are connected")
    p.add_argument("--model", help="part of the camera model name (gphoto2), when several are connected")
    p.add_argument("--chart", action="append", default=[], metavar="NAME.json",
                   help="chart layout file (repeat for several prints)")
    p.add_argument("--focus", default="current", metavar="SPEC",
                   help="focus-drive positions: START:STOP:STEP, a list 0,120,240, or current (default)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="shots per chart and focus setting")
    p.add_argument("--darks", type=int, default=0, metavar="N", help="dark frames for the noise model")
    p.add_argument("--fnumber", metavar="F", help="f-number (8, f/8)")
    p.add_argument("--shutter", metavar="S", help="shutter speed (1/125, 0.5)")
    p.add_argument("--iso", metavar="I", help="ISO (100, auto)")
    p.add_argument("--format", choices=("raw", "raw+jpeg", "jpeg"),
                   help="image format, found among the camera's own choices")
    p.add_argument("--lens", help="lens name to record when the camera does not report it")
    p.add_argument("--lens-profile", help="simulated lens profile (sim camera)")
    p.add_argument("--distance", type=float, default=None, metavar="M",
                   help="chart distance in metres (sim camera)")
    p.add_argument("--out", required=True, metavar="captures/NAME", help="session folder")
    p.add_argument("--resume", action="store_true", help="continue the session in --out")
    p.add_argument("--no-prompt", action="store_true",
                   help="never wait for the operator (scripted runs, combined charts)")
    p.set_defaults(func=run)


def _prompt(message: str) -> None:
    print(f"lenspsf: {message}", file=sys.stderr, flush=True)
    try:
        input()
    except EOFError:
        raise calib.CalibError(
            "capture needs an answer at the prompt but its input is closed; "
            "run it in a terminal, or use --no-prompt for scripted runs"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Run a capture session; 0 when every planned shot is finished."""
    focus = calib.parse_focus_spec(args.focus)
    charts = calib.load_charts(args.chart)
    settings = {k: v for k, v in (("fnumber", args.fnumber), ("shutter", args.shutter),
                                  ("iso", args.iso), ("format", args.format)) if v is not None}
    if args.camera == "gphoto2":
        options = {"port": args.port, "model": args.model}
    else:
        options = {k: v for k, v in (("lens_profile", args.lens_profile),
                                     ("object_distance_m", args.distance)) if v is not None}
    with calib.open_camera(args.camera, **options) as camera:
        session = calib.run_session(
            camera, args.out, charts=charts, focus=focus, repeat=args.repeat, darks=args.darks,
            settings=settings, lens=args.lens, resume=args.resume,
            prompt=None if args.no_prompt else _prompt,
        )
    n_files = sum(len(s.files) for s in session.shots)
    print(f"{len(session.shots)} shots, {n_files} files in {session.folder}", file=sys.stderr)
    return 0
