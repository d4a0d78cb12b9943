"""``lenspsf demo``: the whole path on the simulated camera, with ground truth."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole path on the simulated camera and write a report",
        description=(
            "Print a dots and an edges chart, shoot them with the simulated camera at three focus settings, "
            "analyse the shots into a PSF database, restore an out-of-focus photo of a real "
            "scene with it, and write report.html; prints the figures measured against the "
            "simulator's ground truth."
        ),
    )
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--lens", default="soft-zoom",
                   help="simulated lens profile: sharp-prime, soft-zoom or vintage (default: soft-zoom)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from restore import run_demo  # noqa: PLC0415  (the demo drives all three packages)

    r = run_demo(args.out, lens=args.lens)

    def cpp(v: float) -> str:
        return "above Nyquist" if v >= 0.5 else f"{v:.3f} c/p"

    print(f"""
lenspsf demo finished in {r.seconds:.0f} s. What it made:
  charts            {r.out_dir / 'charts'}
  capture session   {r.session_dir}
  PSF database      {r.db_path}
  out-of-focus photo {r.photo_path}
  restored photo    {r.restored_path}
  report            {r.report_path}   (open it in a browser)

Key figures (against the simulated camera's ground truth):
  PSF error (relative L2)    median {r.psf_error_median:.1%}, worst node {r.psf_error_worst:.1%}
  MTF50 at best focus (G)    centre {cpp(r.mtf50_centre_cpp)}, corners {cpp(r.mtf50_corner_cpp)}
  restored photo PSNR        {r.psnr_before_db:.2f} dB before -> {r.psnr_after_db:.2f} dB after""")
    return 0
