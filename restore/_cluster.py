"""Dask distributed execution: whole photos, and the tile rows of very large ones.

Only imported when a scheduler is given, so ``restore`` works without ``distributed``.
Work is submitted in a bounded window so memory stays bounded on both ends.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._borders import extract_reflected
from ._errors import RestoreError


@contextmanager
def _client(scheduler: Any) -> Iterator[Any]:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - the cluster extra is missing
        raise RestoreError("--scheduler needs the `cluster` extra; pip install 'lenspsf[cluster]'") from None
    if isinstance(scheduler, Client):
        yield scheduler
        return
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise RestoreError(
            f"cannot reach the Dask scheduler at {scheduler} ({exc}); start it or check the address"
        ) from None
    try:
        yield client
    finally:
        client.close()


def _row_task(strip: np.ndarray, job: Any, i: int, mstrip: np.ndarray | None) -> np.ndarray:
    from ._engine import restore_row

    return restore_row(strip, job, i, mstrip)


def run_rows_on_cluster(
    image: np.ndarray,
    job: Any,
    out: np.ndarray,
    *,
    scheduler: Any,
    progress: Callable[[int, int], None] | None = None,
    mask: np.ndarray | None = None,
) -> None:
    """Restore the tile rows of ``image`` on the cluster, accumulating into ``out`` in order."""
    from ._engine import _RowAccumulator, strip_bounds

    acc = _RowAccumulator(out, job.layout)
    n = job.layout.y.count
    w = image.shape[1]
    with _client(scheduler) as client:
        window = max(2, 2 * len(client.scheduler_info().get("workers", {})) or 2)
        job_f = client.scatter(job, broadcast=True)
        pending: deque = deque()
        nxt = 0
        for i in range(n):
            while nxt < n and len(pending) < window:
                y0, y1, x0, x1 = strip_bounds(job, nxt, w)
                strip = extract_reflected(image, y0, y1, x0, x1)
                ms = extract_reflected(mask, y0, y1, x0, x1).astype(bool) if mask is not None else None
                pending.append(client.submit(_row_task, strip, job_f, nxt, ms, pure=False))
                nxt += 1
            acc.add(i, pending.popleft().result())
            if progress is not None:
                progress(i + 1, n)


def _file_task(path: str, db_path: str, out_dir: str | None, kwargs: dict) -> Any:
    import calib

    from ._files import restore_file

    with calib.PSFDatabase.open(db_path) as db:
        return restore_file(path, db=db, out_dir=out_dir, **kwargs)


def restore_files_on_cluster(
    paths: Sequence[str | os.PathLike],
    *,
    db_path: Path,
    out_dir: str | os.PathLike | None,
    scheduler: Any,
    log: Callable[[str], None],
    **kwargs: Any,
) -> list:
    """Restore each photo as one task on the cluster (workers read the same files)."""
    from distributed import as_completed

    with _client(scheduler) as client:
        futs = {
            client.submit(
                _file_task, str(p), str(db_path), None if out_dir is None else str(out_dir), kwargs, pure=False
            ): p
            for p in paths
        }
        done = {}
        for k, fut in enumerate(as_completed(futs), 1):
            r = fut.result()
            log(f"[{k}/{len(paths)}] {futs[fut]} -> {r.output} ({r.seconds:.1f} s)")
            done[futs[fut]] = r
    return [done[p] for p in paths]
