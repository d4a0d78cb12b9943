"""The on-disk format of a lenspsf PSF database (``*.psfdb``), schema version 1.

A PSF database is one SQLite 3 file, written with Python's standard ``sqlite3``
module and readable by any SQLite client. ``PRAGMA application_id`` is
``0x4C505346`` ("LPSF"). Foreign keys cascade: deleting a calibration deletes its
PSF grids, noise model and MTF rows.

Tables
------
``meta(key TEXT PRIMARY KEY, value TEXT)``
    ``format`` = ``"lenspsf-psfdb"``; ``schema_version`` = ``"1"``; ``created``
    (ISO 8601, UTC). lenspsf refuses a file whose ``schema_version`` is newer than
    the one it knows, and any SQLite file without this table.

``cameras(id INTEGER PRIMARY KEY, name TEXT UNIQUE)``
``lenses(id INTEGER PRIMARY KEY, name TEXT UNIQUE)``
    Names as the camera reports them (EXIF Model / lens model, or the user's).

``calibrations``
    One row per (camera, lens, focal length, f-number, focus setting), unique over
    those six values (NULL counts as one value):

    ==================  =======  =====================================================
    column              type     meaning
    ==================  =======  =====================================================
    id                  INTEGER  primary key (kept when a calibration is replaced)
    camera_id           INTEGER  -> cameras.id
    lens_id             INTEGER  -> lenses.id
    focal_length_mm     REAL     NULL if unknown
    f_number            REAL     NULL if unknown
    focus_position      INTEGER  focus-drive steps from the reference end stop, or NULL
    focus_distance_m    REAL     focus distance in metres (may be inf), or NULL
    pixel_pitch_um      REAL     sensor pixel pitch, micrometres, or NULL
    image_width         INTEGER  frame width, sensor pixels
    image_height        INTEGER  frame height, sensor pixels
    sampling            INTEGER  PSF samples per sensor pixel (1 = sensor grid)
    grid_ny, grid_nx    INTEGER  PSF grid nodes (rows, columns)
    kernel_size         INTEGER  k, odd side of every PSF in samples
    nodes_xy            BLOB     ``.npy`` float64 (ny, nx, 2): node (x, y) in pixels,
                                 origin at the top-left pixel centre
    created             TEXT     ISO 8601, UTC
    metadata            TEXT     free JSON object (distortion fit, registration
                                 residuals, capture session, ...)
    ==================  =======  =====================================================

``psf_grids``
    One row per calibration and colour channel, primary key
    (calibration_id, channel_index): ``channel`` (TEXT name, e.g. ``"G"``), ``psf``
    (BLOB ``.npy`` float32 (ny, nx, k, k); each PSF non-negative, sums to 1, centred
    at its middle sample), ``flags`` (BLOB ``.npy`` uint8 (ny, nx); ``FLAG_*`` bits),
    ``n_flagged`` (INTEGER, nodes with any flag set).

``noise_models``
    One row per calibration and channel, primary key (calibration_id,
    channel_index): ``channel``, ``read_noise`` and ``gain`` (REAL, linear 0..1
    units; variance = read_noise**2 + gain * mean).

``mtf``
    One row per MTF measurement: ``id``, ``calibration_id``, ``channel``, ``x_px``,
    ``y_px`` (field position, pixels), ``orientation_deg`` (direction of the
    measured frequency, 0 = along x), ``direction`` (``sagittal``, ``tangential``
    or ``none``), ``method`` (``edge``, ``stripes`` or ``psf``), ``freq_cpp`` and
    ``mtf`` (BLOB ``.npy`` float64 1-D arrays of equal length; cycles per pixel and
    modulation), ``flags`` (TEXT, JSON list of problem names, ``[]`` when clean).

``.npy`` blobs are exactly what ``numpy.save(..., allow_pickle=False)`` writes, so
arrays round-trip bit for bit and can be read by any NumPy.
"""
from __future__ import annotations

FORMAT_NAME = "lenspsf-psfdb"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x4C505346  # "LPSF"

SCHEMA_SQL: tuple[str, ...] = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE cameras (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE lenses (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    """CREATE TABLE calibrations (
        id INTEGER PRIMARY KEY,
        camera_id INTEGER NOT NULL REFERENCES cameras(id),
        lens_id INTEGER NOT NULL REFERENCES lenses(id),
        focal_length_mm REAL,
        f_number REAL,
        focus_position INTEGER,
        focus_distance_m REAL,
        pixel_pitch_um REAL,
        image_width INTEGER NOT NULL,
        image_height INTEGER NOT NULL,
        sampling INTEGER NOT NULL,
        grid_ny INTEGER NOT NULL,
        grid_nx INTEGER NOT NULL,
        kernel_size INTEGER NOT NULL,
        nodes_xy BLOB NOT NULL,
        created TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}'
    )""",
    # NULLs are distinct in a plain UNIQUE constraint, so the key is indexed through
    # COALESCE to make "unknown" one value.
    """CREATE UNIQUE INDEX calibrations_key ON calibrations (
        camera_id, lens_id,
        COALESCE(focal_length_mm, 'null'), COALESCE(f_number, 'null'),
        COALESCE(focus_position, 'null'), COALESCE(focus_distance_m, 'null')
    )""",
    """CREATE TABLE psf_grids (
        calibration_id INTEGER NOT NULL REFERENCES calibrations(id) ON DELETE CASCADE,
        channel_index INTEGER NOT NULL,
        channel TEXT NOT NULL,
        psf BLOB NOT NULL,
        flags BLOB NOT NULL,
        n_flagged INTEGER NOT NULL,
        PRIMARY KEY (calibration_id, channel_index)
    )""",
    """CREATE TABLE noise_models (
        calibration_id INTEGER NOT NULL REFERENCES calibrations(id) ON DELETE CASCADE,
        channel_index INTEGER NOT NULL,
        channel TEXT NOT NULL,
        read_noise REAL NOT NULL,
        gain REAL NOT NULL,
        PRIMARY KEY (calibration_id, channel_index)
    )""",
    """CREATE TABLE mtf (
        id INTEGER PRIMARY KEY,
        calibration_id INTEGER NOT NULL REFERENCES calibrations(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        x_px REAL NOT NULL,
        y_px REAL NOT NULL,
        orientation_deg REAL NOT NULL,
        direction TEXT NOT NULL,
        method TEXT NOT NULL,
        freq_cpp BLOB NOT NULL,
        mtf BLOB NOT NULL,
        flags TEXT NOT NULL DEFAULT '[]'
    )""",
    "CREATE INDEX mtf_calibration ON mtf (calibration_id)",
)
