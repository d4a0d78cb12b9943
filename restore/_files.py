"""Restoring photo files: loading, choosing the calibration, writing 16-bit linear TIFFs."""
from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import calib
from targets import atomic_write

from ._engine import check_image, restore_image
from ._errors import RestoreError


@dataclass(frozen=True)
class RestoredFile:
    """One photo restored to disk.

    Attributes
    ----------
    source : Path
    output : Path
        The 16-bit linear TIFF written.
    preview : Path or None
        The sRGB JPEG preview, when asked for.
    calibration_id : int or None
    seconds : float
    """

    source: Path
    output: Path
    preview: Path | None
    calibration_id: int | None
    seconds: float


def output_path(src: Path, out_dir: Path | None) -> Path:
    """Where the restored version of ``src`` goes (``NAME_restored.tif``)."""
    folder = out_dir if out_dir is not None else src.parent
    return folder / f"{src.stem}_restored.tif"


@contextmanager
def _disk_errors(path: Path, nbytes: int) -> Iterator[None]:
    """A full disk (or quota) becomes one sentence naming the file; the partial file
    is already gone (``atomic_write`` removes its temporary)."""
    try:
        yield
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        if exc.errno is None:
            # numpy's tofile (used by tifffile) reports a short write without an errno.
            try:
                full = shutil.disk_usage(path.parent).free < nbytes
            except OSError:
                full = False
        if full:
            raise RestoreError(
                f"no space left to write {path}: nothing was written; free some space or choose another -o folder"
            ) from None
        raise


def check_outputs(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None) -> None:
    """Refuse a batch in which an output would overwrite one of the inputs, or two
    photos would be written to the same output (e.g. ``a.tif`` and ``a.tiff``)."""
    folder = Path(out_dir) if out_dir is not None else None
    inputs = {Path(p).resolve(): Path(p) for p in paths}
    seen: dict[Path, Path] = {}
    for p in paths:
        out = output_path(Path(p), folder).resolve()
        if out in inputs:
            raise RestoreError(
                f"restoring {p} would overwrite the input photo {inputs[out]}; "
                "restore into another folder with -o"
            )
        if out in seen and seen[out] != Path(p):
            raise RestoreError(
                f"{seen[out]} and {p} would both be restored to {out}; restore them into separate folders with -o"
            )
        seen[out] = Path(p)


def _write_tiff(path: Path, data: np.ndarray, meta: dict[str, Any]) -> None:
    import tifffile

    with _disk_errors(path, data.nbytes), atomic_write(path) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            photometric="rgb" if data.ndim == 3 and data.shape[2] == 3 else "minisblack",
            description=json.dumps({"lenspsf": meta}),
            metadata=None,
            extratags=[],
        )


def _write_preview(path: Path, data16: np.ndarray) -> None:
    from PIL import Image

    lin = data16.astype(np.float32) / 65535.0
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    img8 = np.clip(srgb * 255 + 0.5, 0, 255).astype(np.uint8)
    with _disk_errors(path, img8.nbytes // 4), atomic_write(path) as tmp:
        Image.fromarray(img8 if img8.ndim == 2 or img8.shape[2] == 3 else img8[..., 0]).save(tmp, quality=92)


def restore_file(
    path: str | os.PathLike,
    *,
    db: calib.PSFDatabase,
    out_dir: str | os.PathLike | None = None,
    focus: int | None = None,
    focus_distance_m: float | None = None,
    camera: str | None = None,
    lens: str | None = None,
    method: str = "wiener",
    strength: float | None = None,
    preview: bool = False,
    scheduler: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> RestoredFile:
    """Restore one photo with the calibration its metadata (or the overrides) selects.

    The result is a 16-bit linear TIFF ``NAME_restored.tif`` in ``out_dir`` (default:
    beside the photo) carrying the photo's metadata; written atomically, never over
    the input.
    """
    import time

    t0 = time.perf_counter()
    src = Path(path)
    out = output_path(src, Path(out_dir) if out_dir is not None else None)
    if out.resolve() == src.resolve():
        raise RestoreError(f"the output {out} would overwrite the input photo; choose another -o folder")
    img = calib.load_linear(src)
    meta = img.metadata
    overrides = {
        "camera": camera,
        "lens": lens,
        "focus_position": focus,
        "focus_distance_m": focus_distance_m,
    }
    if meta.camera is None and camera is None:
        names = {(s.key.camera, s.key.lens) for s in db.summaries()}
        if len(names) == 1:
            overrides["camera"], overrides["lens"] = next(iter(names))
        elif len(names) > 1:
            listed = "; ".join(f"{c} + {l}" for c, l in sorted(names))
            raise RestoreError(
                f"{src} carries no camera/lens metadata and {db.path} holds several ({listed}); "
                "name one with --camera and --lens"
            )
    calibration = db.find_for(meta, **overrides)
    # Checked here too so that the sentence names the file rather than "the image".
    check_image(img.data, name=str(src), clip_level=None)
    result = restore_image(
        img.data,
        calibration.psf_map,
        method=method,
        strength=strength,
        noise=calibration.noise,
        saturated=img.saturated,
        scheduler=scheduler,
        progress=progress,
    )
    data16 = np.clip(result.image * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
    if data16.shape[2] == 1:
        data16 = data16[..., 0]
    desc = dict(meta.to_dict())
    desc.update(
        black_level=0,
        white_level=65535,
        cfa=None,
        restored={
            "method": method,
            "strength": result.strength,
            "calibration_id": calibration.id,
            "noise_sigma": list(result.noise_sigma),
        },
    )
    _write_tiff(out, data16, desc)
    prev = None
    if preview:
        prev = out.with_suffix(".jpg")
        _write_preview(prev, data16)
    return RestoredFile(src, out, prev, calibration.id, time.perf_counter() - t0)


def restore_files(
    paths: Sequence[str | os.PathLike],
    *,
    db: calib.PSFDatabase | str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    focus: int | None = None,
    method: str = "wiener",
    scheduler: Any = None,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> list[RestoredFile]:
    """Restore a batch of photos, one progress line per photo.

    Parameters
    ----------
    paths : sequence of path-like
    db : calib.PSFDatabase or path
    out_dir : path-like, optional
        Output folder (created if missing); default beside each photo.
    focus : int, optional
        Focus position to use instead of the photos' (the nearest calibrated one
        is used, with a warning).
    method : str
    scheduler : str or distributed.Client, optional
        Dask scheduler address: the photos run on the cluster.
    log : callable(str), optional
        Progress lines (default: stderr).
    **kwargs
        ``strength``, ``camera``, ``lens``, ``focus_distance_m``, ``preview``.

    Returns
    -------
    list of RestoredFile
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    check_outputs(paths, out_dir)
    own_db = not isinstance(db, calib.PSFDatabase)
    database = calib.PSFDatabase.open(db) if own_db else db
    try:
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
        if scheduler is not None:
            from ._cluster import restore_files_on_cluster

            return restore_files_on_cluster(
                paths, db_path=database.path, out_dir=out_dir, focus=focus, method=method,
                scheduler=scheduler, log=log, **kwargs,
            )
        done = []
        for n, p in enumerate(paths, 1):
            r = restore_file(p, db=database, out_dir=out_dir, focus=focus, method=method, **kwargs)
            log(f"[{n}/{len(paths)}] {p} -> {r.output} ({r.seconds:.1f} s)")
            done.append(r)
        return done
    finally:
        if own_db:
            database.close()
