"""The heap a sweep's points run with: glibc's ceilings for its thresholds, on Dask workers and local ones.

Dask's nanny starts each worker process with ``MALLOC_TRIM_THRESHOLD_=65536`` in its environment
(``distributed.nanny.pre-spawn-environ``), so that freed memory goes back to the system at once.  Setting it
also stops glibc sliding its mmap threshold (malloc(3), M_MMAP_THRESHOLD): every block above 128 KiB is then a
fresh mmap, unmapped when freed.  A training step allocates and frees such blocks all the time (the copies and
gradients of a 256 x 256 W_hh, the trace's rows), so each came back as new zeroed pages.  Measured on the
shipped ReLU sweep's points in one process (40 points, exports kept): 3,760 minor page faults and 10-16 ms of
system time a point with that setting, 500-930 faults and 3-9 ms with glibc's own sliding thresholds, 1-4
faults and 2-5 ms with the thresholds at glibc's ceilings (mmap 32 MiB, trim twice that).  A point is ~45 ms.
Even sliding, glibc trims what a step frees together once it passes twice the largest block freed so far, and
faults it in again in the next step: a local worker paid 0.21 s of system time over 32 points --no-traces
(bench_sweep.py --profile, 20:22 UTC), 0.02 s at the ceilings.

``roomy_heap()``, around a Dask task's points: the ceilings while they run, then the worker's own settings
back and what the heap kept handed back (malloc_trim), as the worker wants, once no point runs in the process
any more.  It does nothing where the environment fixes no threshold below the ceilings (a Dask worker started
without a nanny keeps glibc's sliding ones) or where the C library is not glibc.  ``keep_roomy()``: the
ceilings for good, in a local sweep worker (a process that runs nothing but points).
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


def keep_roomy() -> None:
    """This whole process's heap thresholds at glibc's ceilings, for good (a local sweep worker's; see the
    module); nothing where the C library is not glibc."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


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
