"""Atomic file output, shared by all three packages.

It lives in ``targets`` because ``targets`` is the bottom of the dependency chain
(``restore`` -> ``calib`` -> ``targets``), so every package can use it.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file keeps the suffix of ``path`` so libraries that choose the
    format from the extension (OpenCV, tifffile, reportlab) write the right one.
    On any exception (disk full, Ctrl-C) the temporary file is removed and
    ``path`` is left as it was.

    Parameters
    ----------
    path : path-like
        Final destination.

    Yields
    ------
    pathlib.Path
        Where to write.

    Raises
    ------
    FileNotFoundError
        The destination folder does not exist.
    PermissionError
        The destination folder is not writable.

    Examples
    --------
    >>> with atomic_write("chart.json") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("{}")
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"output folder {folder} does not exist; create it or choose another output path"
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"output folder {folder} is not writable; choose another output path"
        )
    tmp = folder / f".{path.stem}.tmp{os.getpid()}{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
