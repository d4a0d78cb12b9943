"""``lenspsf db``: list, show, export, import and delete calibrations in a PSF database."""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence

import numpy as np

from .. import (
    Calibration,
    CalibError,
    CalibrationSummary,
    PSFDatabase,
    export_mtf_csv,
    export_npz,
    import_npz,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``db`` and its actions to the ``lenspsf`` parser."""
    p = subparsers.add_parser(
        "db",
        help="list, show, export, import or delete calibrations in a PSF database",
        description="Inspect and exchange what a PSF database (.psfdb) holds.",
    )
    actions = p.add_subparsers(dest="db_action", metavar="ACTION", required=True)

    def action(name: str, help_: str, func) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        a.add_argument("--db", required=True, metavar="FILE", help="the PSF database (.psfdb)")
        a.set_defaults(func=func)
        return a

    action("list", "list the calibrations, one line each", _run_list)

    a = action("show", "show one calibration in detail (grid, flags, noise, MTF50)", _run_show)
    a.add_argument("id", type=int, metavar="ID", help="calibration id (see `db list`)")

    a = action("export", "write one calibration to a PSF .npz and/or its MTF to CSV", _run_export)
    a.add_argument("--id", type=int, help="calibration id (see `db list`)")
    _add_key_options(a, focus_flag="--focus")
    a.add_argument("-o", "--output", metavar="OUT.npz", help="PSF exchange file to write")
    a.add_argument("--mtf", metavar="FILE.csv", help="also write the MTF measurements as CSV")

    a = action("import", "add a calibration from a PSF .npz (metadata overridable)", _run_import)
    a.add_argument("input", metavar="IN.npz", help="PSF exchange file (the `db export` format)")
    _add_key_options(a, focus_flag="--focus-position")
    a.add_argument("--pixel-pitch-um", type=float, metavar="UM", help="sensor pixel pitch, micrometres")
    a.add_argument("--replace", action="store_true",
                   help="replace a stored calibration with the same key")

    a = action("delete", "delete one calibration", _run_delete)
    a.add_argument("id", type=int, metavar="ID", help="calibration id (see `db list`)")


def _add_key_options(a: argparse.ArgumentParser, *, focus_flag: str) -> None:
    a.add_argument("--camera", help="camera name")
    a.add_argument("--lens", help="lens name")
    a.add_argument("--focal-mm", type=float, dest="focal_length_mm", metavar="MM", help="focal length, mm")
    a.add_argument("--fnumber", type=float, dest="f_number", metavar="N", help="f-number")
    a.add_argument(focus_flag, type=int, dest="focus_position", metavar="F",
                   help="focus-drive position, steps")
    a.add_argument("--focus-distance-m", type=float, metavar="M", help="focus distance, metres")


def _key_args(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in (
        "camera", "lens", "focal_length_mm", "f_number", "focus_position", "focus_distance_m")}


# -- actions ------------------------------------------------------------------------------


def _run_list(args: argparse.Namespace) -> int:
    with PSFDatabase.open(args.db) as db:
        summaries = db.summaries()
    if not summaries:
        print(f"{args.db} holds no calibrations")
        return 0
    header = ("id", "camera", "lens", "focal", "f-number", "focus position", "focus distance",
              "channels", "grid", "kernel", "MTF records")
    rows = [(
        str(s.id), s.key.camera, s.key.lens, _num(s.key.focal_length_mm, " mm"),
        _num(s.key.f_number, "", "f/"), _num(s.key.focus_position), _distance(s.key.focus_distance_m),
        "".join(s.channels) if all(len(c) == 1 for c in s.channels) else ",".join(s.channels),
        f"{s.grid_shape[1]}x{s.grid_shape[0]}", f"{s.kernel_size}x{s.kernel_size}",
        str(s.n_mtf_records),
    ) for s in summaries]
    print(_table(header, rows))
    return 0


def _run_show(args: argparse.Namespace) -> int:
    with PSFDatabase.open(args.db) as db:
        cal = db.get(args.id)
    print("\n".join(_describe(cal)))
    return 0


def _run_export(args: argparse.Namespace) -> int:
    if not args.output and not args.mtf:
        raise CalibError("db export needs -o OUT.npz and/or --mtf FILE.csv to know what to write")
    with PSFDatabase.open(args.db) as db:
        if args.id is not None:
            cal = db.get(args.id)
        else:
            cal = db.get(_pick(db, _key_args(args)).id)
    if args.output:
        export_npz(cal, args.output)
        print(f"wrote calibration {cal.id} ({cal.label}) to {args.output}")
    if args.mtf:
        export_mtf_csv(cal, args.mtf)
        rows = sum(len(r.freq_cpp) for r in cal.mtf)
        print(f"wrote {len(cal.mtf)} MTF measurements ({rows} rows) to {args.mtf}")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    cal = import_npz(args.input, pixel_pitch_um=args.pixel_pitch_um, **_key_args(args))
    with PSFDatabase.open(args.db, create=True) as db:
        cid = db.add(cal, replace=args.replace)
    print(f"imported {args.input} into {args.db} as calibration {cid} ({cal.label})")
    return 0


def _run_delete(args: argparse.Namespace) -> int:
    with PSFDatabase.open(args.db) as db:
        label = next((s.label for s in db.summaries() if s.id == args.id), None)
        db.delete(args.id)
    print(f"deleted calibration {args.id} ({label}) from {args.db}")
    return 0


# -- helpers ------------------------------------------------------------------------------


def _pick(db: PSFDatabase, key: dict) -> CalibrationSummary:
    """The one calibration whose key equals every given option, or a clear error."""
    found = db.match(**key)
    if len(found) == 1:
        return found[0]
    flags = {"camera": "--camera", "lens": "--lens", "focal_length_mm": "--focal-mm",
             "f_number": "--fnumber", "focus_position": "--focus",
             "focus_distance_m": "--focus-distance-m"}
    asked = " ".join(f"{flags[k]} {v}" for k, v in key.items() if v is not None)
    if not found:
        everything = db.summaries()
        if not everything:
            raise CalibError(f"{db.path} holds no calibrations to export")
        raise CalibError(
            f"no calibration in {db.path} matches {asked}; it holds {_listing(everything)}"
        )
    raise CalibError(
        f"{len(found)} calibrations in {db.path} match{' ' + asked if asked else ''} "
        f"({_listing(found)}); choose one with --id or --focus"
    )


def _listing(summaries: Sequence[CalibrationSummary], limit: int = 8) -> str:
    items = [f"id {s.id}: {s.label}" for s in summaries[:limit]]
    more = f" and {len(summaries) - limit} more" if len(summaries) > limit else ""
    return "; ".join(items) + more


def _describe(cal: Calibration) -> list[str]:
    pm = cal.psf_map
    ny, nx = pm.grid_shape
    pitch = cal.pixel_pitch_um
    lines = [
        f"calibration {cal.id}: {cal.label}",
        f"  created        {cal.created.isoformat() if cal.created else 'unknown'}",
        f"  image          {pm.image_size[0]} x {pm.image_size[1]} px, pixel pitch "
        f"{_num(pitch, ' um')}",
        f"  PSF grid       {nx} x {ny} nodes (x by y), kernel {pm.kernel_size} x "
        f"{pm.kernel_size}, sampling {pm.sampling}, channels {', '.join(pm.channels)}",
        "  flagged nodes  " + ", ".join(
            f"{c}: {int(np.count_nonzero(pm.flags[i]))} of {ny * nx}" for i, c in enumerate(pm.channels)),
    ]
    if cal.noise is None:
        lines.append("  noise model    none")
    else:
        lines.append("  noise model    " + "; ".join(
            f"{c}: read {r:.3g}, gain {g:.3g}"
            for c, r, g in zip(cal.noise.channels, cal.noise.read_noise, cal.noise.gain)))
    lines.append(f"  MTF            {len(cal.mtf)} measurements")
    groups: dict[tuple[str, str], list[float]] = {}
    for rec in cal.mtf:
        groups.setdefault((rec.method, rec.channel), []).append(rec.mtf50_cpp())
    if groups:
        header = ("method", "channel", "count", "MTF50 median c/p", "min", "max", "median lp/mm")
        rows = []
        for (method, channel), values in sorted(groups.items()):
            v = np.array([x for x in values if not math.isnan(x)])
            if len(v) == 0:
                rows.append((method, channel, str(len(values)), "-", "-", "-", "-"))
                continue
            med = float(np.median(v))
            rows.append((method, channel, str(len(values)), f"{med:.4f}", f"{v.min():.4f}",
                         f"{v.max():.4f}", f"{med * 1000 / pitch:.1f}" if pitch else "-"))
        lines += ["    " + line for line in _table(header, rows).splitlines()]
    # The analysis's advice (denser grid, extrapolated nodes...) in full: the metadata
    # line below is cut short.
    notes = cal.metadata.get("notes")
    for note in notes if isinstance(notes, list) else []:
        lines.append(f"  note           {note}")
    if cal.metadata:
        text = json.dumps(cal.metadata, default=str)
        lines.append(f"  metadata       {text if len(text) <= 200 else text[:197] + '...'}")
    return lines


def _num(v, unit: str = "", prefix: str = "") -> str:
    if v is None:
        return "-"
    return f"{prefix}{v:g}{unit}" if isinstance(v, float) else f"{prefix}{v}{unit}"


def _distance(d: float | None) -> str:
    if d is None:
        return "-"
    return "infinity" if math.isinf(d) else f"{d:g} m"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in (header, *rows))
