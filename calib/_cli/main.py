"""Entry point of ``lenspsf``: builds the parser and turns user errors into one sentence.

This is the application layer above all three packages, so it (alone in ``calib``)
imports ``restore``; ``import calib`` never does.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

import restore
import targets

from .._errors import CalibError

# Subcommand modules in the order ``lenspsf --help`` lists them. A module is added
# here only once its command works end to end.
_COMMANDS: tuple[str, ...] = (
    "targets", "capture", "analyze", "db", "report", "restore", "edge", "psf", "demo",
)

_USER_ERRORS = (targets.TargetError, CalibError, restore.RestoreError)


def build_parser() -> argparse.ArgumentParser:
    """The full ``lenspsf`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="lenspsf",
        description=(
            "Calibrate a camera + lens from photos of printed charts (PSF and MTF across "
            "the field, per colour channel and focus setting) and restore its photos "
            "with the measured PSF map."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def explain(exc: BaseException) -> str:
    """One sentence for an error a user can cause."""
    if isinstance(exc, _USER_ERRORS):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"the disk is full{where}; free some space and run again (finished work was kept)"
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror.lower()}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lenspsf`` with ``argv`` (default: the process arguments); return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("lenspsf: interrupted; finished work was kept, nothing half-written.", file=sys.stderr)
        return 130
    except (*_USER_ERRORS, OSError) as exc:
        print(f"lenspsf: error: {explain(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
