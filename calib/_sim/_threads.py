"""Thread use of the simulator: many small PSFs in parallel, each with serial BLAS.

A PSF is a few complex matrix products of a few hundred rows. Letting OpenBLAS split
such small products over threads costs more than it gains, and on a loaded machine
its spinning threads wait for each other: the wall time grew to four times the CPU
time. So PSFs run one per thread (numpy releases the GIL in matmul), with BLAS held
at one thread while they do.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Threads for PSF batches and FFT convolutions (the project targets 2 cores).
WORKERS = max(1, min(2, os.cpu_count() or 1))

_lock = threading.Lock()
_depth = 0
_limiter = None
_controller = None


def _blas_controller():
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415
        except ImportError:  # optional: without it BLAS keeps its own thread count
            _controller = False
        else:
            _controller = ThreadpoolController()
    return _controller or None


@contextmanager
def serial_blas() -> Iterator[None]:
    """Hold BLAS at one thread inside the block (re-entrant, safe across threads).

    The limit is process-wide, so only the outermost block sets and restores it.
    """
    global _depth, _limiter
    with _lock:
        if _depth == 0:
            ctl = _blas_controller()
            _limiter = ctl.limit(limits=1, user_api="blas") if ctl is not None else None
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]`` on ``WORKERS`` threads with serial BLAS (order kept)."""
    with serial_blas():
        if WORKERS == 1 or len(items) < 2:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(fn, items))
