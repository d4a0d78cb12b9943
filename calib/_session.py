"""Capture sessions: shoot every chart at every focus setting, and keep a manifest.

A session folder (``captures/<name>/``) holds the files exactly as the camera
delivered them, each prefixed with the shot it belongs to, plus ``session.json``.
The manifest is rewritten atomically after every shot, so whatever stops a session
(Ctrl-C, a full disk, an unplugged camera) it always parses and lists exactly the
finished shots; ``resume=True`` shoots only what is missing.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import targets
from targets import atomic_write

from ._camera import Camera
from ._errors import CalibError

MANIFEST_NAME = "session.json"
MANIFEST_FORMAT = "lenspsf-session"
MANIFEST_VERSION = 1

_SPEC_HELP = "use a range START:STOP:STEP (0:400:50), a list (0,120,240) or current"


# ------------------------------------------------------------------------ focus spec


@dataclass(frozen=True)
class FocusPlan:
    """The focus settings of a session.

    Attributes
    ----------
    positions : tuple of int or None
        Focus-drive positions (steps from the near end stop), in shooting order;
        None means ``current``: leave the focus where it is.
    spec : str
        The text it was parsed from.
    """

    positions: tuple[int, ...] | None
    spec: str

    @property
    def is_current(self) -> bool:
        """True when the focus is left where it is."""
        return self.positions is None

    def settings(self) -> tuple[int | None, ...]:
        """One entry per focus setting to shoot (``(None,)`` for ``current``)."""
        return (None,) if self.positions is None else self.positions


def parse_focus_spec(spec: str) -> FocusPlan:
    """Parse a focus SPEC: ``0:400:50`` (inclusive range), ``0,120,240`` or ``current``.

    Parameters
    ----------
    spec : str

    Returns
    -------
    FocusPlan

    Raises
    ------
    CalibError
        The spec does not parse, a position is negative, or positions repeat.

    Examples
    --------
    >>> parse_focus_spec("0:100:50").positions
    (0, 50, 100)
    """
    text = str(spec).strip().lower()
    if text == "current":
        return FocusPlan(None, "current")
    bad = CalibError(f"focus spec {spec!r} does not parse; {_SPEC_HELP}")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3 or not all(re.fullmatch(r"-?\d+", p.strip()) for p in parts):
            raise bad
        start, stop, step = (int(p) for p in parts)
        if step <= 0 or stop < start:
            raise CalibError(
                f"focus spec {spec!r} is an empty range; STOP must be >= START and STEP > 0 ({_SPEC_HELP})"
            )
        positions = tuple(range(start, stop + 1, step))
    else:
        parts = [p.strip() for p in text.split(",")]
        if not parts or not all(re.fullmatch(r"-?\d+", p) for p in parts):
            raise bad
        positions = tuple(int(p) for p in parts)
    if any(p < 0 for p in positions):
        raise CalibError(
            f"focus spec {spec!r} has a negative position; positions count steps from the near end stop"
        )
    if len(set(positions)) != len(positions):
        raise CalibError(f"focus spec {spec!r} repeats a position; list each focus setting once")
    return FocusPlan(positions, str(spec).strip())


# ------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ChartRef:
    """A chart layout placed in front of the camera during a session."""

    id: str
    name: str
    path: str
    layout: Any = field(repr=False, compare=False, default=None)


def load_charts(paths: Sequence[str | Path]) -> list[ChartRef]:
    """Load chart layouts through ``targets.load_layout``.

    Raises
    ------
    targets.TargetError
        A file is missing or not a layout.
    CalibError
        The same chart is given twice.
    """
    charts: list[ChartRef] = []
    for p in paths:
        layout = targets.load_layout(p)
        ref = ChartRef(id=str(getattr(layout, "layout_id", "") or Path(p).stem),
                       name=Path(p).stem, path=str(p), layout=layout)
        if any(c.id == ref.id for c in charts):
            raise CalibError(f"chart {p} is given twice (same layout as another --chart); give each chart once")
        charts.append(ref)
    return charts


@dataclass(frozen=True)
class PlannedShot:
    """One shot a session takes: a chart (or a dark frame) at one focus setting."""

    kind: str  # "chart" or "dark"
    chart: ChartRef | None
    focus_position: int | None
    repeat: int  # 1-based

    @property
    def key(self) -> str:
        """Identity of the shot within a session: what ``resume`` skips when done."""
        if self.kind == "dark":
            return f"dark/r{self.repeat}"
        assert self.chart is not None
        focus = "current" if self.focus_position is None else str(self.focus_position)
        return f"chart/{self.chart.id}/{focus}/r{self.repeat}"

    @property
    def prefix(self) -> str:
        """File-name prefix of this shot's files (ends in ``__``, unique per shot)."""
        if self.kind == "dark":
            return f"dark_r{self.repeat:02d}__"
        assert self.chart is not None
        name = re.sub(r"[^A-Za-z0-9.-]+", "-", self.chart.name).strip("-") or "chart"
        focus = "fcur" if self.focus_position is None else f"f{self.focus_position:05d}"
        return f"{name}_{focus}_r{self.repeat:02d}__"


def plan_shots(charts: Sequence[ChartRef], focus: FocusPlan, *, repeat: int, darks: int) -> list[PlannedShot]:
    """Every shot of a session in shooting order.

    Charts are the outer loop: swapping a print needs a person, driving focus does
    not, so each chart goes up once and is shot at every focus setting. Dark frames
    come last (lens cap on once).
    """
    shots = [
        PlannedShot("chart", c, f, r)
        for c in charts for f in focus.settings() for r in range(1, repeat + 1)
    ]
    shots += [PlannedShot("dark", None, None, r) for r in range(1, darks + 1)]
    return shots


# ------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ShotFile:
    """One file of a shot: its name in the session folder, size and sha256."""

    name: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ShotRecord:
    """One finished shot as ``session.json`` lists it."""

    index: int
    key: str
    kind: str
    chart_id: str | None
    chart_name: str | None
    chart_path: str | None
    focus_position: int | None
    focus_by_hand: bool
    repeat: int
    files: tuple[ShotFile, ...]
    exposure: dict[str, Any]
    time: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dict(self.__dict__)
        d["files"] = [f.__dict__ for f in self.files]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShotRecord:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["files"] = tuple(ShotFile(**f) for f in d["files"])
        return cls(**d)


@dataclass(frozen=True)
class Session:
    """A capture session as read from its ``session.json``.

    Attributes
    ----------
    folder : Path
    camera : dict
        Backend, model, serial, port, lens, focus drive.
    settings : dict
        The settings requested (generic names) and the labels the camera took.
    plan : dict
        Charts, focus spec, repeat and darks as last requested.
    shots : tuple of ShotRecord
        Every finished shot, in shooting order.
    complete : bool
        True when every planned shot is finished.
    """

    folder: Path
    camera: dict[str, Any]
    settings: dict[str, Any]
    plan: dict[str, Any]
    shots: tuple[ShotRecord, ...]
    complete: bool
    created: str
    updated: str

    def path(self, file: ShotFile) -> Path:
        """Where ``file`` is on disk."""
        return self.folder / file.name

    def verify(self) -> list[str]:
        """Files that are missing or whose sha256 no longer matches (empty: all good)."""
        bad = []
        for shot in self.shots:
            for f in shot.files:
                p = self.path(f)
                if not p.is_file() or sha256_of(p) != f.sha256:
                    bad.append(f.name)
        return bad


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_session(folder: str | Path) -> Session:
    """Read ``folder/session.json``.

    Raises
    ------
    CalibError
        No manifest there, or it is not a lenspsf session (or a newer version).
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibError(f"{folder} holds no capture session ({MANIFEST_NAME} is missing); shoot one with 'lenspsf capture'") from None
    except (OSError, ValueError) as exc:
        raise CalibError(f"{path} cannot be read as a session manifest ({exc.__class__.__name__}); check the file") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise CalibError(f"{path} is not a lenspsf capture session manifest; check the path")
    if int(doc.get("version", 0)) > MANIFEST_VERSION:
        raise CalibError(f"{path} was written by a newer lenspsf (version {doc['version']}); upgrade lenspsf")
    return Session(
        folder=folder, camera=doc["camera"], settings=doc["settings"], plan=doc["plan"],
        shots=tuple(ShotRecord.from_dict(s) for s in doc["shots"]),
        complete=bool(doc.get("complete")), created=doc["created"], updated=doc["updated"],
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _write_manifest(path: Path, doc: dict[str, Any]) -> None:
    doc["updated"] = _now()
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")


# ------------------------------------------------------------------------ the runner


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_session(
    camera: Camera,
    out: str | Path,
    *,
    charts: Sequence[ChartRef],
    focus: FocusPlan,
    repeat: int = 1,
    darks: int = 0,
    settings: dict[str, str] | None = None,
    lens: str | None = None,
    resume: bool = False,
    prompt: Callable[[str], None] | None = None,
    progress: Callable[[str], None] = _stderr_line,
) -> Session:
    """Shoot every chart at every focus setting ``repeat`` times, then ``darks`` dark frames.

    Parameters
    ----------
    camera : Camera
        An open camera (the caller closes it).
    out : path-like
        Session folder; created if needed.
    charts : sequence of ChartRef
        From :func:`load_charts`.
    focus : FocusPlan
        From :func:`parse_focus_spec`.
    repeat : int
        Shots per chart and focus setting.
    darks : int
        Dark frames (lens capped) for the noise model, at the same exposure.
    settings : dict, optional
        Generic setting -> value (``{"fnumber": "8", "format": "raw"}``), each
        checked against the camera's choices before anything is shot.
    lens : str, optional
        Lens name to record when the camera does not report one.
    resume : bool
        Continue the session in ``out``: finished shots are kept and not repeated.
    prompt : callable, optional
        Shows an instruction and waits for the operator (chart swap, lens cap,
        focusing by hand). None: never wait (scripted runs, combined charts).
    progress : callable
        Receives one line per shot (default: stderr).

    Returns
    -------
    Session
        The manifest as written at the end.

    Raises
    ------
    CalibError
        Bad request (session exists without ``resume``, another camera on resume,
        focus positions without a focus drive and no prompt, ...) or a camera
        failure; finished shots stay in the manifest.
    """
    if repeat < 1 or darks < 0:
        raise CalibError("--repeat must be at least 1 and --darks at least 0")
    if not charts and darks == 0:
        raise CalibError("nothing to shoot; give at least one --chart (or --darks N)")
    folder = Path(out)
    manifest = folder / MANIFEST_NAME
    info = camera.info()
    if focus.positions is not None and not info.has_focus_drive and prompt is None:
        raise CalibError(
            f"the {info.model} has no focus drive this backend can move, and --no-prompt "
            "rules out focusing by hand; use --focus current, or drop --no-prompt to be "
            "asked to focus by hand at each setting"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CalibError(
            f"output folder {folder} cannot be created ({exc.strerror or exc}); choose another --out"
        ) from None

    camera_doc = info.to_dict()
    if lens and not camera_doc.get("lens"):
        camera_doc["lens"] = lens
    records: list[ShotRecord] = []
    created = _now()
    if manifest.exists():
        if not resume:
            raise CalibError(
                f"{folder} already holds a capture session; continue it with --resume or choose another --out"
            )
        old = load_session(folder)
        if (old.camera.get("model"), old.camera.get("serial")) != (info.model, info.serial):
            raise CalibError(
                f"{folder} was shot with the {old.camera.get('model')} (serial "
                f"{old.camera.get('serial')}), not this {info.model}; connect that camera "
                "or choose another --out"
            )
        created = old.created
        # A shot whose files went missing is shot again.
        records = [s for s in old.shots if all((folder / f.name).is_file() for f in s.files)]

    applied = {name: camera.set(name, value) for name, value in (settings or {}).items()}
    plan = plan_shots(charts, focus, repeat=repeat, darks=darks)
    doc: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "created": created,
        "camera": camera_doc,
        "settings": {"requested": dict(settings or {}), "applied": applied},
        "plan": {
            "charts": [{"id": c.id, "name": c.name, "path": c.path} for c in charts],
            "focus": focus.spec, "repeat": repeat, "darks": darks, "shots": len(plan),
        },
        "shots": [r.to_dict() for r in records],
        "complete": False,
    }
    try:
        _write_manifest(manifest, doc)
    except PermissionError:
        raise CalibError(f"output folder {folder} is not writable; choose another --out") from None

    done = {r.key for r in records}
    todo = [s for s in plan if s.key not in done]
    if resume and done:
        progress(f"resuming {folder}: {len(done)} shots kept, {len(todo)} to go")
    exposure = camera.exposure()
    shown: ChartRef | None | str = "nothing yet"
    focus_at: int | None | str = "unknown"
    for n, shot in enumerate(todo, start=1):
        if shot.chart is not shown:
            instruction = camera.present_chart(
                shot.chart.layout if shot.chart else None,
                name=shot.chart.name if shot.chart else "dark")
            multi = len(charts) > 1 or shot.kind == "dark"
            if instruction and prompt is not None and multi:
                prompt(f"{instruction}, then press Enter")
            shown = shot.chart
        by_hand = False
        if shot.focus_position is not None and shot.focus_position != focus_at:
            if info.has_focus_drive:
                camera.focus(shot.focus_position)
            else:
                assert prompt is not None  # checked above
                prompt(f"set the focus by hand to setting {shot.focus_position}, then press Enter")
            focus_at = shot.focus_position
        by_hand = shot.focus_position is not None and not info.has_focus_drive
        # Files left by an interrupted attempt at this very shot are replaced.
        for stale in folder.glob(f"{shot.prefix}*"):
            stale.unlink()
        t0 = time.monotonic()
        paths = camera.capture(folder, prefix=shot.prefix)
        if not paths:
            raise CalibError(f"the camera delivered no file for shot {shot.key}; check it and continue with --resume")
        files = tuple(ShotFile(p.name, sha256_of(p), p.stat().st_size) for p in paths)
        record = ShotRecord(
            index=len(records), key=shot.key, kind=shot.kind,
            chart_id=shot.chart.id if shot.chart else None,
            chart_name=shot.chart.name if shot.chart else None,
            chart_path=shot.chart.path if shot.chart else None,
            focus_position=shot.focus_position, focus_by_hand=by_hand, repeat=shot.repeat,
            files=files, exposure=exposure, time=_now(),
        )
        records.append(record)
        doc["shots"].append(record.to_dict())
        _write_manifest(manifest, doc)
        what = f"chart {shot.chart.name}" if shot.chart else "dark frame"
        where = "" if shot.kind == "dark" else (
            " focus current" if shot.focus_position is None else f" focus {shot.focus_position}")
        progress(
            f"[{len(done) + n}/{len(plan)}] {what}{where} repeat {shot.repeat}: "
            f"{', '.join(f.name for f in files)} ({time.monotonic() - t0:.1f} s)"
        )
    doc["complete"] = True
    _write_manifest(manifest, doc)
    return load_session(folder)
