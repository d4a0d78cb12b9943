"""The per-focus PSF database: calibrations in one SQLite file, and their exchange files.

The file format (tables, columns, array encoding) is documented in
``calib._db_schema``; this module is the Python API over it.

Choosing a calibration for a photo
----------------------------------
:meth:`PSFDatabase.find` filters by camera and lens (case-insensitive; when none is
given and the database holds only one, that one), focal length (within 1 %) and
f-number (within 3 %, finer than a third of a stop), then chooses the focus setting:

* the focus-drive position when one is asked for and the calibrations have
  positions, otherwise the focus distance compared in diopters (1/m);
* an exact match is returned silently; otherwise the nearest calibrated focus is
  returned with a :class:`NearestFocusWarning`;
* a focus is *far* (a :class:`CalibError`, not a guess) when its gap to the
  nearest calibrated focus exceeds the larger of two allowances: twice the median
  spacing between the calibrated focus settings, and (for distances, when focal
  length, f-number and pixel pitch are known) the focus change whose defocus blur
  reaches 4 pixels, ``4 * pitch * N / f**2`` diopters. With a single calibrated
  focus and neither allowance available, only that exact focus matches.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
import statistics
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from targets import atomic_write

from . import _db_schema as schema
from ._errors import CalibError
from ._psfmap import PSFMap
from ._records import CalibrationKey, MTFRecord, NoiseModel, ShotMetadata

#: Keys of the ``.npz`` exchange file written by :func:`export_npz`.
NPZ_KEYS: tuple[str, ...] = (
    "psf", "nodes_xy", "channels", "image_size", "sampling", "flags", "metadata",
)
#: Columns of the CSV written by :func:`export_mtf_csv`, one row per frequency.
MTF_CSV_COLUMNS: tuple[str, ...] = (
    "channel", "x_px", "y_px", "orientation_deg", "direction", "method",
    "freq_cpp", "freq_lpmm", "mtf",
)
MTF_DIRECTIONS = frozenset({"sagittal", "tangential", "none"})
MTF_METHODS = frozenset({"edge", "stripes", "psf"})

_NPZ_FORMAT = "lenspsf-psf-npz"
_KEY_FIELDS = ("camera", "lens", "focal_length_mm", "f_number", "focus_position", "focus_distance_m")
_FOCAL_REL_TOL = 0.01
_FNUMBER_REL_TOL = 0.03
_BLUR_LIMIT_PX = 4.0
_PSF_SUM_TOL = 1e-3
_PSF_NEG_TOL = 1e-4


class NearestFocusWarning(UserWarning):
    """No calibration at the asked focus; the nearest calibrated focus is used."""


@dataclass(frozen=True, eq=False, kw_only=True)
class Calibration:
    """Everything measured for one (camera, lens, focal length, f-number, focus).

    Attributes
    ----------
    key : CalibrationKey
    psf_map : PSFMap
    noise : NoiseModel or None
        Sensor noise per channel, if measured.
    mtf : tuple of MTFRecord
    pixel_pitch_um : float or None
        Sensor pixel pitch, micrometres (converts c/p to lp/mm).
    metadata : dict
        Free JSON-ready data: distortion fit, registration residuals, session, ...
    created : datetime or None
        When the calibration was stored (UTC); None before it is added.
    id : int or None
        Database id; None for a calibration that is not stored (yet).
    """

    key: CalibrationKey
    psf_map: PSFMap
    noise: NoiseModel | None = None
    mtf: tuple[MTFRecord, ...] = ()
    pixel_pitch_um: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created: datetime | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mtf", tuple(self.mtf))
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def label(self) -> str:
        """Human-readable key, e.g. ``"SimCam + Sim50, 50 mm, f/4, focus position 120"``."""
        return describe_key(self.key)


@dataclass(frozen=True)
class CalibrationSummary:
    """What :meth:`PSFDatabase.summaries` lists, read without loading the PSF grids."""

    id: int
    key: CalibrationKey
    channels: tuple[str, ...]
    grid_shape: tuple[int, int]
    kernel_size: int
    sampling: int
    image_size: tuple[int, int]
    pixel_pitch_um: float | None
    n_flagged_nodes: int  # summed over channels
    n_mtf_records: int
    has_noise: bool
    created: datetime

    @property
    def label(self) -> str:
        """Human-readable key."""
        return describe_key(self.key)


def describe_focus(focus_position: int | None, focus_distance_m: float | None) -> str:
    """``"position 120 / 1.5 m"``, ``"infinity"``, ... or ``"unknown focus"``."""
    parts = []
    if focus_position is not None:
        parts.append(f"position {focus_position}")
    if focus_distance_m is not None:
        parts.append("infinity" if math.isinf(focus_distance_m) else f"{focus_distance_m:g} m")
    return " / ".join(parts) or "unknown focus"


def describe_key(key: CalibrationKey) -> str:
    """One-line description of a calibration key."""
    optics = [f"{key.focal_length_mm:g} mm" if key.focal_length_mm is not None else "unknown focal length",
              f"f/{key.f_number:g}" if key.f_number is not None else "unknown f-number"]
    return (f"{key.camera} + {key.lens}, {', '.join(optics)}, focus "
            f"{describe_focus(key.focus_position, key.focus_distance_m)}")


class PSFDatabase:
    """A lenspsf PSF database file (SQLite). Open it with :meth:`open`.

    Every write is one transaction: interrupted (exception, Ctrl-C, power loss), the
    file is left as it was.

    Examples
    --------
    >>> with PSFDatabase.open("lens.psfdb") as db:  # doctest: +SKIP
    ...     cal = db.find_for(meta)
    ...     kernel = cal.psf_map.psf_at(1200.0, 800.0, "G")
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn = connection
        self._path = path

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, create: bool = False,
             timeout_s: float = 2.0) -> PSFDatabase:
        """Open (or with ``create=True`` create) the database at ``path``.

        Parameters
        ----------
        path : path-like
        create : bool
            Create a new, empty database if ``path`` does not exist.
        timeout_s : float
            How long to wait for another program's lock before giving up.

        Raises
        ------
        CalibError
            Missing file, not a lenspsf database, a newer schema, locked.
        """
        path = Path(path)
        exists = path.exists()
        if not exists and not create:
            raise CalibError(
                f"PSF database {path} does not exist; check the path, or create one with "
                f"`lenspsf analyze ... --db {path}` or `lenspsf db import --db {path} FILE.npz`"
            )
        if exists and path.is_dir():
            raise CalibError(f"{path} is a folder, not a PSF database; give the .psfdb file")
        if not exists and not path.parent.is_dir():
            raise CalibError(f"folder {path.parent} for the PSF database {path} does not exist; create it first")
        mode = "rwc" if create else ("rw" if os.access(path, os.W_OK) else "ro")
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True,
                                   timeout=timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise _as_calib_error(exc, path) from None
        db = cls(conn, path)
        try:
            with db._sql_errors():
                conn.execute("PRAGMA foreign_keys = ON")
                db._check_format(create)
        except BaseException:
            conn.close()
            raise
        return db

    def _check_format(self, create: bool) -> None:
        tables = self._tables()
        if "meta" not in tables and create and not tables:
            with self._write() as conn:
                if not self._tables():  # another process may have just created it
                    for statement in schema.SCHEMA_SQL:
                        conn.execute(statement)
                    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                        ("format", schema.FORMAT_NAME),
                        ("schema_version", str(schema.SCHEMA_VERSION)),
                        ("created", _now().isoformat()),
                    ])
                    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            tables = self._tables()
        if not tables:
            raise CalibError(f"{self._path} is empty, not a lenspsf PSF database; fill it with "
                             f"`lenspsf analyze ... --db {self._path}` or `lenspsf db import`")
        not_ours = CalibError(
            f"{self._path} is an SQLite file but not a lenspsf PSF database (no lenspsf "
            "meta table); choose a .psfdb file written by lenspsf"
        )
        if "meta" not in tables:
            raise not_ours
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != schema.FORMAT_NAME:
            raise not_ours
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise CalibError(
                f"{self._path} has no valid schema version in its meta table; it is damaged, "
                "restore it from a backup"
            ) from None
        if version > schema.SCHEMA_VERSION:
            raise CalibError(
                f"{self._path} was written by a newer lenspsf (schema {version}; this one reads "
                f"up to {schema.SCHEMA_VERSION}); upgrade lenspsf to read it"
            )

    def _tables(self) -> set[str]:
        rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {r[0] for r in rows}

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._conn.close()

    def __enter__(self) -> PSFDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions and errors ---------------------------------------------------

    @contextmanager
    def _sql_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _as_calib_error(exc, self._path) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any exception, Ctrl-C included."""
        with self._sql_errors():
            # IMMEDIATE takes the write lock up front, so a busy database fails
            # before anything is done rather than at COMMIT.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent read snapshot across several queries."""
        with self._sql_errors():
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    # -- writing -------------------------------------------------------------------

    def add(self, calibration: Calibration, *, replace: bool = False) -> int:
        """Store ``calibration`` in one transaction; return its id.

        Parameters
        ----------
        calibration : Calibration
            Its ``id`` is ignored.
        replace : bool
            Replace a stored calibration with the same key (it keeps its id).

        ``calibration.created`` is kept when set (an imported calibration keeps its
        date), otherwise the current time is stored.

        Raises
        ------
        CalibError
            The key is already stored and ``replace`` is False; invalid PSFs, noise
            model or MTF records (nothing is written then).
        """
        cal = calibration
        key, pm = cal.key, cal.psf_map
        for name in ("camera", "lens"):
            if not isinstance(getattr(key, name), str) or not getattr(key, name).strip():
                raise CalibError(f"the calibration has no {name} name; give one (--{name})")
        metadata_json = _to_json(cal.metadata, "calibration metadata")
        created = (cal.created or _now()).astimezone(timezone.utc).isoformat()
        noise_rows = _noise_rows(cal.noise, pm.channels) if cal.noise is not None else []
        with self._write() as conn:
            camera_id = _name_id(conn, "cameras", key.camera)
            lens_id = _name_id(conn, "lenses", key.lens)
            row = conn.execute(
                "SELECT id FROM calibrations WHERE camera_id = ? AND lens_id = ? AND "
                "focal_length_mm IS ? AND f_number IS ? AND focus_position IS ? AND "
                "focus_distance_m IS ?",
                (camera_id, lens_id, key.focal_length_mm, key.f_number,
                 key.focus_position, key.focus_distance_m),
            ).fetchone()
            if row is not None and not replace:
                raise CalibError(
                    f"{self._path} already holds a calibration for {describe_key(key)} "
                    f"(id {row[0]}); pass --replace to overwrite it"
                )
            if row is not None:
                conn.execute("DELETE FROM calibrations WHERE id = ?", (row[0],))
            cur = conn.execute(
                "INSERT INTO calibrations (id, camera_id, lens_id, focal_length_mm, f_number, "
                "focus_position, focus_distance_m, pixel_pitch_um, image_width, image_height, "
                "sampling, grid_ny, grid_nx, kernel_size, nodes_xy, created, metadata) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (None if row is None else row[0], camera_id, lens_id, key.focal_length_mm,
                 key.f_number, key.focus_position, key.focus_distance_m, cal.pixel_pitch_um,
                 pm.image_size[0], pm.image_size[1], pm.sampling, pm.grid_shape[0],
                 pm.grid_shape[1], pm.kernel_size, _npy_bytes(pm.nodes_xy), created,
                 metadata_json),
            )
            cal_id = int(cur.lastrowid)
            # Each channel is checked as it is written; a bad one aborts the whole
            # transaction, leaving earlier channels unwritten too.
            for c, channel in enumerate(pm.channels):
                _check_psf_channel(pm.psf[c], channel)
                conn.execute(
                    "INSERT INTO psf_grids (calibration_id, channel_index, channel, psf, flags, "
                    "n_flagged) VALUES (?, ?, ?, ?, ?, ?)",
                    (cal_id, c, channel, _npy_bytes(pm.psf[c]), _npy_bytes(pm.flags[c]),
                     int(np.count_nonzero(pm.flags[c]))),
                )
            conn.executemany(
                "INSERT INTO noise_models (calibration_id, channel_index, channel, read_noise, "
                "gain) VALUES (?, ?, ?, ?, ?)",
                [(cal_id, *r) for r in noise_rows],
            )
            _insert_mtf(conn, cal_id, cal.mtf)
        return cal_id

    def add_mtf(self, calibration_id: int, records: Iterable[MTFRecord]) -> int:
        """Append MTF measurements to a stored calibration in one transaction.

        Returns
        -------
        int
            Number of records added.
        """
        records = tuple(records)
        with self._write() as conn:
            self._require(conn, calibration_id)
            _insert_mtf(conn, calibration_id, records)
        return len(records)

    def delete(self, calibration_id: int) -> None:
        """Delete one calibration with its PSF grids, noise model and MTF rows."""
        with self._write() as conn:
            self._require(conn, calibration_id)
            conn.execute("DELETE FROM calibrations WHERE id = ?", (calibration_id,))
            conn.execute("DELETE FROM cameras WHERE id NOT IN (SELECT camera_id FROM calibrations)")
            conn.execute("DELETE FROM lenses WHERE id NOT IN (SELECT lens_id FROM calibrations)")

    def _require(self, conn: sqlite3.Connection, calibration_id: int) -> None:
        if conn.execute("SELECT 1 FROM calibrations WHERE id = ?", (calibration_id,)).fetchone() is None:
            raise CalibError(
                f"{self._path} has no calibration with id {calibration_id}; "
                f"`lenspsf db list --db {self._path}` shows the ids"
            )

    # -- reading -------------------------------------------------------------------

    def summaries(self) -> list[CalibrationSummary]:
        """Every stored calibration, sorted by camera, lens, optics and focus."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT c.id, cam.name, l.name, c.focal_length_mm, c.f_number, c.focus_position, "
                "c.focus_distance_m, c.grid_ny, c.grid_nx, c.kernel_size, c.sampling, "
                "c.image_width, c.image_height, c.pixel_pitch_um, c.created, "
                "(SELECT COUNT(*) FROM mtf m WHERE m.calibration_id = c.id), "
                "EXISTS (SELECT 1 FROM noise_models n WHERE n.calibration_id = c.id) "
                "FROM calibrations c JOIN cameras cam ON cam.id = c.camera_id "
                "JOIN lenses l ON l.id = c.lens_id "
                "ORDER BY cam.name, l.name, c.focal_length_mm, c.f_number, c.focus_position, "
                "c.focus_distance_m, c.id"
            ).fetchall()
            channels: dict[int, list[str]] = {}
            flagged: dict[int, int] = {}
            for cid, channel, n in conn.execute(
                "SELECT calibration_id, channel, n_flagged FROM psf_grids "
                "ORDER BY calibration_id, channel_index"
            ):
                channels.setdefault(cid, []).append(channel)
                flagged[cid] = flagged.get(cid, 0) + n
        return [
            CalibrationSummary(
                id=r[0], key=CalibrationKey(r[1], r[2], r[3], r[4], r[5], r[6]),
                channels=tuple(channels.get(r[0], ())), grid_shape=(r[7], r[8]),
                kernel_size=r[9], sampling=r[10], image_size=(r[11], r[12]),
                pixel_pitch_um=r[13], n_flagged_nodes=flagged.get(r[0], 0),
                n_mtf_records=r[15], has_noise=bool(r[16]),
                created=datetime.fromisoformat(r[14]),
            )
            for r in rows
        ]

    def get(self, calibration_id: int) -> Calibration:
        """The stored calibration with this id, arrays exactly as they were added."""
        with self._read() as conn:
            self._require(conn, calibration_id)
            r = conn.execute(
                "SELECT cam.name, l.name, c.focal_length_mm, c.f_number, c.focus_position, "
                "c.focus_distance_m, c.pixel_pitch_um, c.image_width, c.image_height, c.sampling, "
                "c.nodes_xy, c.created, c.metadata FROM calibrations c "
                "JOIN cameras cam ON cam.id = c.camera_id JOIN lenses l ON l.id = c.lens_id "
                "WHERE c.id = ?", (calibration_id,),
            ).fetchone()
            grids = conn.execute(
                "SELECT channel, psf, flags FROM psf_grids WHERE calibration_id = ? "
                "ORDER BY channel_index", (calibration_id,),
            ).fetchall()
            noise = conn.execute(
                "SELECT channel, read_noise, gain FROM noise_models WHERE calibration_id = ? "
                "ORDER BY channel_index", (calibration_id,),
            ).fetchall()
            mtf = conn.execute(
                "SELECT channel, x_px, y_px, orientation_deg, direction, method, freq_cpp, mtf, "
                "flags FROM mtf WHERE calibration_id = ? ORDER BY id", (calibration_id,),
            ).fetchall()
        if not grids:
            raise CalibError(f"calibration {calibration_id} in {self._path} has no PSF grids; "
                             "it is damaged, delete it and analyse again")
        psf_map = PSFMap(
            psf=np.stack([_npy_load(g[1]) for g in grids]),
            nodes_xy=_npy_load(r[10]),
            channels=tuple(g[0] for g in grids),
            image_size=(r[7], r[8]),
            sampling=r[9],
            flags=np.stack([_npy_load(g[2]) for g in grids]),
        )
        noise_model = None
        if noise:
            noise_model = NoiseModel(
                tuple(n[0] for n in noise),
                np.array([n[1] for n in noise], np.float64),
                np.array([n[2] for n in noise], np.float64),
            )
        records = tuple(
            MTFRecord(m[0], m[1], m[2], m[3], m[4], m[5], _npy_load(m[6]), _npy_load(m[7]),
                      tuple(json.loads(m[8])))
            for m in mtf
        )
        return Calibration(
            key=CalibrationKey(r[0], r[1], r[2], r[3], r[4], r[5]), psf_map=psf_map,
            noise=noise_model, mtf=records, pixel_pitch_um=r[6], metadata=json.loads(r[12]),
            created=datetime.fromisoformat(r[11]), id=calibration_id,
        )

    def match(self, *, camera: str | None = None, lens: str | None = None,
              focal_length_mm: float | None = None, f_number: float | None = None,
              focus_position: int | None = None,
              focus_distance_m: float | None = None) -> list[CalibrationSummary]:
        """Summaries of the calibrations whose key equals every given field (no nearest).

        Names compare case-insensitively, numbers to 1 part in a million.
        """
        query = dict(camera=camera, lens=lens, focal_length_mm=focal_length_mm,
                     f_number=f_number, focus_position=focus_position,
                     focus_distance_m=focus_distance_m)
        out = []
        for s in self.summaries():
            if all(v is None or _same(getattr(s.key, k), v, 1e-6) for k, v in query.items()):
                out.append(s)
        return out

    def find(self, *, camera: str | None = None, lens: str | None = None,
             focal_length_mm: float | None = None, f_number: float | None = None,
             focus_position: int | None = None,
             focus_distance_m: float | None = None) -> Calibration:
        """The calibration for these settings: exact, or the nearest focus with a warning.

        See the module docstring for the rules (tolerances, what "far" means).

        Warns
        -----
        NearestFocusWarning
            No calibration at this focus; the nearest one is returned.

        Raises
        ------
        CalibError
            No calibration matches (the message lists what the database holds), the
            choice is ambiguous, or the focus is far from every calibrated one.
        """
        query = dict(camera=camera, lens=lens, focal_length_mm=focal_length_mm,
                     f_number=f_number, focus_position=focus_position,
                     focus_distance_m=focus_distance_m)
        return self._find(query, stacklevel=3)

    def find_for(self, meta: ShotMetadata, **overrides: Any) -> Calibration:
        """The calibration for a photo with metadata ``meta``.

        Parameters
        ----------
        meta : ShotMetadata
        **overrides
            Any of ``camera``, ``lens``, ``focal_length_mm``, ``f_number``,
            ``focus_position``, ``focus_distance_m``; None means "not given". A focus
            override replaces the photo's whole focus setting (position and distance).
        """
        unknown = set(overrides) - set(_KEY_FIELDS)
        if unknown:
            raise TypeError(f"find_for() got unknown overrides {sorted(unknown)}")
        query = {k: getattr(meta, k) for k in _KEY_FIELDS}
        given = {k: v for k, v in overrides.items() if v is not None}
        if given.keys() & {"focus_position", "focus_distance_m"}:
            query["focus_position"] = query["focus_distance_m"] = None
        query.update(given)
        return self._find(query, stacklevel=3)

    def _find(self, query: dict[str, Any], *, stacklevel: int) -> Calibration:
        chosen, note = _choose(self.summaries(), query, self._path)
        calibration = self.get(chosen.id)
        if note:
            warnings.warn(NearestFocusWarning(note), stacklevel=stacklevel)
        return calibration


# -- choosing a calibration ------------------------------------------------------------


def _choose(summaries: list[CalibrationSummary], q: dict[str, Any],
            path: Path) -> tuple[CalibrationSummary, str | None]:
    if not summaries:
        raise CalibError(
            f"{path} holds no calibrations; run `lenspsf analyze ... --db {path}` or "
            f"`lenspsf db import --db {path} FILE.npz` first"
        )
    wanted = ", ".join(
        f"{n} {q[k]:g}" if isinstance(q[k], float) else f"{n} {q[k]}"
        for k, n in (("camera", "camera"), ("lens", "lens"), ("focal_length_mm", "focal length (mm)"),
                     ("f_number", "f-number"))
        if q[k] is not None
    )
    cands = summaries
    tolerances = {"camera": None, "lens": None, "focal_length_mm": _FOCAL_REL_TOL,
                  "f_number": _FNUMBER_REL_TOL}
    for name, tol in tolerances.items():
        if q[name] is not None:
            cands = [s for s in cands if _same(getattr(s.key, name), q[name], tol)]
            if not cands:
                raise CalibError(
                    f"{path} has no calibration for {wanted}; it holds {_holdings(summaries)}"
                )
    flags = {"camera": "--camera", "lens": "--lens", "focal_length_mm": "--focal-mm",
             "f_number": "--fnumber"}
    for name, flag in flags.items():
        if q[name] is None:
            values = sorted({_fmt(getattr(s.key, name)) for s in cands})
            if len(values) > 1:
                raise CalibError(
                    f"{path} holds calibrations for several {name.replace('_', ' ')} values "
                    f"({', '.join(values)}) that match; choose one with {flag}"
                )
    return _choose_focus(cands, q, path)


def _choose_focus(cands: list[CalibrationSummary], q: dict[str, Any],
                  path: Path) -> tuple[CalibrationSummary, str | None]:
    what = f"{cands[0].key.camera} + {cands[0].key.lens}"
    calibrated = ", ".join(describe_focus(s.key.focus_position, s.key.focus_distance_m) for s in cands)
    pos, dist = q["focus_position"], q["focus_distance_m"]
    if pos is None and dist is None:
        if len(cands) == 1:
            return cands[0], None
        raise CalibError(
            f"{path} holds {len(cands)} focus settings for {what} ({calibrated}) and the photo "
            "names none; choose one with --focus"
        )
    with_pos = [s for s in cands if s.key.focus_position is not None]
    with_dist = [s for s in cands if s.key.focus_distance_m is not None]
    if pos is not None and with_pos:
        values = {s.id: float(s.key.focus_position) for s in with_pos}
        target, tol, unit = float(pos), _spacing_tol(values.values()), "steps"
        pool = with_pos
    elif dist is not None and with_dist:
        values = {s.id: _diopters(s.key.focus_distance_m) for s in with_dist}
        target, unit = _diopters(dist), "diopters"
        tol = max(_spacing_tol(values.values()), max(_blur_tol(s) for s in with_dist))
        pool = with_dist
    else:
        asked = describe_focus(pos, dist)
        if len(cands) == 1:
            return cands[0], (
                f"calibration {cands[0].id} ({cands[0].label}) records no focus comparable "
                f"with {asked}; using it, the only one for {what}"
            )
        raise CalibError(
            f"the calibrations of {what} in {path} ({calibrated}) cannot be compared with "
            f"focus {asked}; choose one with --focus"
        )
    gaps = {s.id: abs(values[s.id] - target) for s in pool}
    best = min(pool, key=lambda s: (gaps[s.id], s.id))
    if gaps[best.id] <= 1e-9 * max(1.0, abs(target)):
        exact = [s for s in pool if gaps[s.id] == gaps[best.id]]
        if dist is not None and len(exact) > 1:
            exact.sort(key=lambda s: abs(_diopters(s.key.focus_distance_m) - _diopters(dist))
                       if s.key.focus_distance_m is not None else math.inf)
        return exact[0], None
    nearest = describe_focus(best.key.focus_position, best.key.focus_distance_m)
    asked = describe_focus(pos, dist) if unit == "steps" else describe_focus(None, dist)
    if gaps[best.id] > tol:
        hint = (f"--focus {best.key.focus_position}" if unit == "steps"
                else f"--focus-distance-m {best.key.focus_distance_m:g}")
        raise CalibError(
            f"focus {asked} is far from every calibrated focus of {what} in {path} "
            f"({calibrated}; the nearest is {gaps[best.id]:.3g} {unit} away, more than the "
            f"{tol:.3g} allowed); calibrate this focus, or pass {hint} to use the nearest anyway"
        )
    return best, (
        f"no calibration of {what} at focus {asked}; using the nearest, {nearest} "
        f"(calibration {best.id}, {gaps[best.id]:.3g} {unit} away)"
    )


def _spacing_tol(values: Iterable[float]) -> float:
    """Twice the median gap between distinct calibrated focus values (0 for one)."""
    v = sorted(set(values))
    return 2.0 * statistics.median(np.diff(v)) if len(v) > 1 else 0.0


def _blur_tol(s: CalibrationSummary) -> float:
    """Focus change (diopters) whose defocus blur reaches ``_BLUR_LIMIT_PX`` pixels."""
    f_mm, n, pitch = s.key.focal_length_mm, s.key.f_number, s.pixel_pitch_um
    if not f_mm or not n or not pitch:
        return 0.0
    # Blur-circle diameter on the sensor ~ (f / N) * f * delta_diopters.
    return _BLUR_LIMIT_PX * pitch * 1e-6 * n / (f_mm * 1e-3) ** 2


def _diopters(distance_m: float) -> float:
    return 0.0 if math.isinf(distance_m) or distance_m <= 0 else 1.0 / distance_m


def _same(stored: Any, asked: Any, rel_tol: float | None) -> bool:
    if stored is None:
        return False
    if isinstance(asked, str) or isinstance(stored, str):
        return str(stored).strip().casefold() == str(asked).strip().casefold()
    if math.isinf(stored) or math.isinf(asked):
        return stored == asked
    return math.isclose(float(stored), float(asked), rel_tol=rel_tol or 0.0, abs_tol=1e-12)


def _fmt(v: Any) -> str:
    if v is None:
        return "unknown"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _holdings(summaries: Sequence[CalibrationSummary], limit: int = 6) -> str:
    """``"SimCam + Sim50 at 50 mm f/4 (focus position 100, position 120)"`` per group."""
    groups: dict[tuple, list[str]] = {}
    for s in summaries:
        k = s.key
        head = (f"{k.camera} + {k.lens} at "
                f"{_fmt(k.focal_length_mm)} mm f/{_fmt(k.f_number)}")
        groups.setdefault((head,), []).append(describe_focus(k.focus_position, k.focus_distance_m))
    parts = [f"{h[0]} (focus {', '.join(f)})" for h, f in groups.items()]
    more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


# -- encoding and validation ---------------------------------------------------------------


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _npy_load(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise CalibError(f"{what} cannot be stored as JSON ({exc}); keep it to numbers, strings, lists and dicts") from None


def _name_id(conn: sqlite3.Connection, table: str, name: str) -> int:
    conn.execute(f"INSERT OR IGNORE INTO {table} (name) VALUES (?)", (name,))
    return int(conn.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()[0])


def _check_psf_channel(psf: np.ndarray, channel: str) -> None:
    """Raise unless every PSF of this (ny, nx, k, k) grid is finite, >= 0 and sums to 1."""
    if not np.all(np.isfinite(psf)):
        raise CalibError(f"the PSF grid of channel {channel} holds NaN or infinite values; "
                         "fix the analysis or the imported file before storing it")
    if psf.min() < -_PSF_NEG_TOL:
        raise CalibError(f"the PSF grid of channel {channel} has negative values (down to "
                         f"{psf.min():.3g}); PSFs must be non-negative")
    sums = psf.sum(axis=(-2, -1), dtype=np.float64)
    worst = np.unravel_index(np.argmax(np.abs(sums - 1.0)), sums.shape)
    if abs(sums[worst] - 1.0) > _PSF_SUM_TOL:
        raise CalibError(f"the PSF of channel {channel} at node (row {worst[0]}, column "
                         f"{worst[1]}) sums to {sums[worst]:.4g}; each PSF must sum to 1")


def _noise_rows(noise: NoiseModel, channels: tuple[str, ...]) -> list[tuple]:
    read = np.asarray(noise.read_noise, np.float64).ravel()
    gain = np.asarray(noise.gain, np.float64).ravel()
    if not (len(noise.channels) == len(read) == len(gain)):
        raise CalibError(f"the noise model names {len(noise.channels)} channels but has "
                         f"{len(read)} read-noise and {len(gain)} gain values; give one per channel")
    if not (np.all(np.isfinite(read)) and np.all(np.isfinite(gain)) and read.min() >= 0 and gain.min() >= 0):
        raise CalibError("the noise model has negative or non-finite read noise or gain; "
                         "re-estimate it from the dark frames")
    return [(i, str(c), float(r), float(g)) for i, (c, r, g) in enumerate(zip(noise.channels, read, gain))]


def _insert_mtf(conn: sqlite3.Connection, calibration_id: int, records: Sequence[MTFRecord]) -> None:
    for i, rec in enumerate(records):
        freq = np.asarray(rec.freq_cpp, np.float64)
        mtf = np.asarray(rec.mtf, np.float64)
        if rec.direction not in MTF_DIRECTIONS or rec.method not in MTF_METHODS:
            raise CalibError(
                f"MTF record {i} has direction {rec.direction!r} and method {rec.method!r}; "
                f"direction must be one of {', '.join(sorted(MTF_DIRECTIONS))} and method one "
                f"of {', '.join(sorted(MTF_METHODS))}"
            )
        if freq.ndim != 1 or freq.shape != mtf.shape or not np.all(np.isfinite(freq)):
            raise CalibError(
                f"MTF record {i} has {freq.shape} frequencies for {mtf.shape} values; give "
                "finite 1-D arrays of equal length"
            )
        conn.execute(
            "INSERT INTO mtf (calibration_id, channel, x_px, y_px, orientation_deg, direction, "
            "method, freq_cpp, mtf, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (calibration_id, str(rec.channel), float(rec.x_px), float(rec.y_px),
             float(rec.orientation_deg), rec.direction, rec.method, _npy_bytes(freq),
             _npy_bytes(mtf), json.dumps([str(f) for f in rec.flags])),
        )


def _as_calib_error(exc: sqlite3.Error, path: Path) -> CalibError:
    """One sentence for an SQLite failure on ``path``."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return CalibError(f"{path} is locked by another program that is writing to it; close "
                          "the other program (or wait for it to finish) and try again")
    if code.startswith("SQLITE_NOTADB") or "not a database" in text:
        return CalibError(f"{path} is not a lenspsf PSF database (not an SQLite file); "
                          "choose a .psfdb file written by lenspsf")
    if code.startswith("SQLITE_READONLY"):
        return CalibError(f"{path} is read-only; copy it somewhere writable or fix its permissions")
    if code.startswith("SQLITE_FULL"):
        return CalibError(f"the disk is full writing {path}; free some space and run again "
                          "(the database was left unchanged)")
    if code.startswith("SQLITE_CORRUPT"):
        return CalibError(f"{path} is damaged ({exc}); restore it from a backup")
    if code.startswith("SQLITE_CANTOPEN"):
        return CalibError(f"cannot open the PSF database {path}; check the path and its permissions")
    return CalibError(f"database error in {path}: {exc}")


# -- exchange files ------------------------------------------------------------------------


def export_npz(calibration: Calibration, path: str | os.PathLike) -> Path:
    """Write one calibration to the documented ``.npz`` exchange file (atomically).

    Keys (exactly these, no pickled objects):

    - ``psf``: float32 (channels, ny, nx, k, k), each PSF sums to 1
    - ``nodes_xy``: float64 (ny, nx, 2), node (x, y) in pixels
    - ``channels``: unicode (channels,)
    - ``image_size``: int64 (2,), (width, height) in pixels
    - ``sampling``: int64 scalar, PSF samples per pixel
    - ``flags``: uint8 (channels, ny, nx), ``FLAG_*`` bits per node
    - ``metadata``: unicode scalar, a JSON object with ``camera``, ``lens``,
      ``focal_length_mm``, ``f_number``, ``focus_position``, ``focus_distance_m``,
      ``pixel_pitch_um`` (any may be null; a focus at infinity is ``"inf"``), ``noise`` (null or ``{"channels",
      "read_noise", "gain"}`` lists), ``created``, ``format``, ``format_version`` and
      ``calibration_metadata`` (the free metadata). MTF records are not included
      (see :func:`export_mtf_csv`).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    pm = calibration.psf_map
    key = calibration.key
    noise = calibration.noise
    meta = {
        "format": _NPZ_FORMAT,
        "format_version": 1,
        **{k: getattr(key, k) for k in _KEY_FIELDS},
        # Strict JSON has no infinity; a focus at infinity is written as "inf".
        "focus_distance_m": (None if key.focus_distance_m is None else
                             "inf" if math.isinf(key.focus_distance_m) else key.focus_distance_m),
        "pixel_pitch_um": calibration.pixel_pitch_um,
        "noise": None if noise is None else {
            "channels": list(noise.channels),
            "read_noise": np.asarray(noise.read_noise, np.float64).tolist(),
            "gain": np.asarray(noise.gain, np.float64).tolist(),
        },
        "created": calibration.created.isoformat() if calibration.created else None,
        "calibration_metadata": calibration.metadata,
    }
    arrays = {
        "psf": pm.psf.astype(np.float32, copy=False),
        "nodes_xy": pm.nodes_xy.astype(np.float64, copy=False),
        "channels": np.array(pm.channels, dtype=np.str_),
        "image_size": np.array(pm.image_size, dtype=np.int64),
        "sampling": np.array(pm.sampling, dtype=np.int64),
        "flags": pm.flags.astype(np.uint8, copy=False),
        "metadata": np.array(_to_json(meta, "calibration metadata"), dtype=np.str_),
    }
    path = Path(path)
    # A file handle, not a name: np.savez would append ".npz" to other suffixes.
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def import_npz(path: str | os.PathLike, *, camera: str | None = None, lens: str | None = None,
               focal_length_mm: float | None = None, f_number: float | None = None,
               focus_position: int | None = None, focus_distance_m: float | None = None,
               pixel_pitch_um: float | None = None) -> Calibration:
    """Read a PSF ``.npz`` (the :func:`export_npz` format) as an unsaved Calibration.

    Only ``psf``, ``nodes_xy``, ``channels`` and ``image_size`` are required, so grids
    from other tools import too: ``sampling`` defaults to 1, ``flags`` to zeros,
    ``metadata`` to ``{}``. Keyword arguments override the metadata. PSFs whose sum is
    off 1 by more than 0.1 % (peak-normalised exports, say) are rescaled to sum 1.

    Raises
    ------
    CalibError
        Unreadable file, missing or malformed key (named), no camera or lens.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibError(f"PSF file {path} does not exist; check the path")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CalibError(f"{path} is not a readable .npz file ({exc}); write one with "
                         "`lenspsf db export` or numpy.savez") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CalibError(f"{path} is a single .npy array, not an .npz with the keys {', '.join(NPZ_KEYS)}")

    def bad(key: str, why: str) -> CalibError:
        return CalibError(f"{path}: key '{key}' {why}")

    def get(key: str, required: bool) -> np.ndarray | None:
        if key not in npz.files:
            if required:
                raise bad(key, f"is missing; a PSF .npz needs {', '.join(NPZ_KEYS[:4])}")
            return None
        try:
            return npz[key]
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise bad(key, f"cannot be read ({exc}); store plain numeric or string arrays") from None

    with npz:
        psf = get("psf", True)
        if psf.dtype.kind not in "fiu" or psf.ndim != 5:
            raise bad("psf", f"has dtype {psf.dtype} and shape {psf.shape}; expected float (channels, ny, nx, k, k)")
        psf = psf.astype(np.float32, copy=False)
        nodes = get("nodes_xy", True)
        if nodes.dtype.kind not in "fiu" or nodes.shape != (*psf.shape[1:3], 2):
            raise bad("nodes_xy", f"has shape {nodes.shape}; expected {(*psf.shape[1:3], 2)} (x, y) pixels")
        channels = get("channels", True)
        if channels.dtype.kind not in "US" or channels.shape != (psf.shape[0],):
            raise bad("channels", f"has dtype {channels.dtype} and shape {channels.shape}; expected "
                      f"{psf.shape[0]} channel names")
        size = get("image_size", True)
        if size.dtype.kind not in "iu" or size.shape != (2,) or size.min() <= 0:
            raise bad("image_size", f"is {size.tolist()}; expected two positive integers (width, height)")
        sampling = get("sampling", False)
        if sampling is None:
            sampling_px = 1
        elif sampling.dtype.kind not in "iu" or sampling.size != 1 or int(sampling.ravel()[0]) < 1:
            raise bad("sampling", f"is {sampling.tolist()}; expected one integer >= 1")
        else:
            sampling_px = int(sampling.ravel()[0])
        flags = get("flags", False)
        if flags is not None and (flags.dtype.kind not in "iub" or flags.shape != psf.shape[:3]):
            raise bad("flags", f"has shape {flags.shape}; expected {psf.shape[:3]} integers")
        raw_meta = get("metadata", False)
        meta: dict[str, Any] = {}
        if raw_meta is not None:
            try:
                meta = json.loads(str(raw_meta.item()) if raw_meta.size == 1 else "")
            except (ValueError, TypeError):
                raise bad("metadata", "is not a JSON string") from None
            if not isinstance(meta, dict):
                raise bad("metadata", "is not a JSON object")

    if not np.all(np.isfinite(psf)):
        raise bad("psf", "holds NaN or infinite values")
    peaks = psf.max(axis=(-2, -1), keepdims=True)
    if np.any(psf < -_PSF_NEG_TOL * np.maximum(peaks, 0)):
        raise bad("psf", "has negative values; PSFs must be non-negative")
    sums = psf.sum(axis=(-2, -1), keepdims=True, dtype=np.float64)
    if np.any(sums <= 0):
        raise bad("psf", "has an all-zero PSF; fill or drop that node")
    if np.any(np.abs(sums - 1.0) > _PSF_SUM_TOL):
        psf = (psf / sums).astype(np.float32)

    given = dict(camera=camera, lens=lens, focal_length_mm=focal_length_mm, f_number=f_number,
                 focus_position=focus_position, focus_distance_m=focus_distance_m,
                 pixel_pitch_um=pixel_pitch_um)
    values = {k: given[k] if given[k] is not None else meta.get(k) for k in given}
    for name in ("camera", "lens"):
        if not values[name]:
            raise CalibError(f"{path} names no {name} in its metadata; pass --{name}")
    try:
        key = CalibrationKey(
            camera=str(values["camera"]), lens=str(values["lens"]),
            focal_length_mm=_opt(values["focal_length_mm"], float),
            f_number=_opt(values["f_number"], float),
            focus_position=_opt(values["focus_position"], int),
            focus_distance_m=_opt(values["focus_distance_m"], float),
        )
        pitch = _opt(values["pixel_pitch_um"], float)
    except (TypeError, ValueError) as exc:
        raise bad("metadata", f"has a non-numeric setting ({exc})") from None
    noise = None
    if meta.get("noise"):
        n = meta["noise"]
        try:
            noise = NoiseModel(tuple(str(c) for c in n["channels"]),
                               np.asarray(n["read_noise"], np.float64),
                               np.asarray(n["gain"], np.float64))
        except (KeyError, TypeError, ValueError):
            raise bad("metadata", "has a noise model without channels, read_noise and gain lists") from None
    created = None
    if meta.get("created"):
        try:
            created = datetime.fromisoformat(str(meta["created"]))
        except ValueError:
            created = None
    extra = meta.get("calibration_metadata") or {}
    psf_map = PSFMap(psf=psf, nodes_xy=nodes.astype(np.float64), channels=tuple(str(c) for c in channels),
                     image_size=(int(size[0]), int(size[1])), sampling=sampling_px,
                     flags=None if flags is None else flags.astype(np.uint8))
    return Calibration(key=key, psf_map=psf_map, noise=noise, pixel_pitch_um=pitch,
                       metadata=extra if isinstance(extra, dict) else {"imported": extra},
                       created=created)


def _opt(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


def export_mtf_csv(calibration: Calibration, path: str | os.PathLike) -> Path:
    """Write the calibration's MTF measurements as CSV, one row per frequency (atomically).

    Columns: ``channel, x_px, y_px, orientation_deg, direction, method, freq_cpp,
    freq_lpmm, mtf``; ``freq_lpmm`` is empty when the pixel pitch is unknown.
    """
    pitch = calibration.pixel_pitch_um
    path = Path(path)
    with atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(MTF_CSV_COLUMNS)
        for rec in calibration.mtf:
            lpmm = rec.freq_lpmm(pitch) if pitch else [None] * len(rec.freq_cpp)
            for f, lp, m in zip(np.asarray(rec.freq_cpp, float), lpmm, np.asarray(rec.mtf, float)):
                writer.writerow([rec.channel, repr(float(rec.x_px)), repr(float(rec.y_px)),
                                 repr(float(rec.orientation_deg)), rec.direction, rec.method,
                                 repr(float(f)), "" if lp is None else repr(float(lp)),
                                 repr(float(m))])
    return path
