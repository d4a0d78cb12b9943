"""Argument types shared by several subcommands."""
from __future__ import annotations

import argparse


def roi(text: str) -> tuple[int, int, int, int]:
    """Parse ``X,Y,W,H`` (pixels) for ``--roi``."""
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"ROI {text!r} is not X,Y,W,H (four integers)")
    return parts  # type: ignore[return-value]
