"""glibc's heap as a local worker has it, while a Dask worker computes sweep points.

Dask's nanny starts each worker process with ``MALLOC_TRIM_THRESHOLD_=65536`` in its environment
(``distributed.nanny.pre-spawn-environ``), so that freed memory goes back to the system at once.  Setting it
also turns off glibc's sliding mmap threshold (malloc(3), M_MMAP_THRESHOLD): every block above 128 KiB is then
a fresh mmap, unmapped when freed.  A training step allocates and frees such blocks all the time (the weights'
copies and gradients of a 256 x 256 W_hh, the trace's rows), so each one came back as new zeroed pages: measured
on the shipped ReLU sweep's points, in one process, 3,760 minor page faults a point against ~900 (and ~5 ms more
system time, ~4 ms more user time: 20% of a 50 ms point), the gap between a Dask worker and a local one.

``roomy_heap()`` gives the points what glibc's default would have grown to (blocks up to 32 MiB from the heap,
freed memory kept up to twice that: its own ceilings), then puts the worker's settings back and hands the kept
memory back (malloc_trim), as the worker wanted, once no point runs here any more.  It does nothing where the
environment does not lower these thresholds (a local worker, a Dask worker started without a nanny) or where
the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h's mallopt parameters
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for its sliding threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc keeps twice the mmap threshold when it slides it
DEFAULT_MMAP_THRESHOLD = 128 << 10  # where a fixed threshold stays when the environment names none

_lock = threading.Lock()
_running = 0  # points in roomy_heap() in this process (a Dask worker of several threads runs several)


def _libc():
    """glibc's handle, or None elsewhere (musl, macOS, Windows: no mallopt of these meanings)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL("libc.so.6")
    except (AttributeError, ValueError, OSError):
        return None


def _setting(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def _lowered() -> tuple[int, int] | None:
    """The (trim, mmap) thresholds this process's environment fixes, when it fixes either (which stops glibc
    sliding them) below the points' own; None when glibc slides them, as in a local worker."""
    trim, mmap = _setting("MALLOC_TRIM_THRESHOLD_"), _setting("MALLOC_MMAP_THRESHOLD_")
    if trim is None and mmap is None:
        return None
    fixed = (2 * DEFAULT_MMAP_THRESHOLD if trim is None else trim, DEFAULT_MMAP_THRESHOLD if mmap is None else mmap)
    return None if fixed[0] >= TRIM_THRESHOLD and fixed[1] >= MMAP_THRESHOLD else fixed


@contextmanager
def roomy_heap() -> Iterator[None]:
    """Points computed inside get glibc's default heap behaviour (see the module); the process's own comes
    back when the last of them leaves."""
    global _running
    lowered = _lowered()
    libc = _libc() if lowered is not None else None
    if lowered is None or libc is None:
        yield
        return
    with _lock:
        if _running == 0:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0:
                trim, mmap = lowered
                libc.mallopt(M_TRIM_THRESHOLD, trim)
                libc.mallopt(M_MMAP_THRESHOLD, mmap)
                libc.malloc_trim(0)  # what the points' heap kept goes back, as the worker's settings would have it
