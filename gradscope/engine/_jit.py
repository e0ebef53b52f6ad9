"""The one place Numba options are set.

- ``cache=True`` so a second process starts in well under a second.  Compiled kernels go to ONE folder,
  ``<base>/gradscope-<salt>``, where ``salt`` hashes the kernel sources (every .py of the engine, its cells included;
  file, and metrics.py, whose saturation thresholds are compiled in).
  Numba invalidates a cached function only when ITS OWN file changes; the salt also retires kernels whose
  inlined helpers (fastmath.py) or options (here) changed.  ``base`` is the first writable folder among
  NUMBA_CACHE_DIR, the package's ``__pycache__``, the user cache folder (~/.cache/numba) and the temporary
  folder; when none is writable, kernels are compiled in every process (with a warning) instead of failing
  at import (Numba's own "no locator available" error).  Folders of other versions (other salts) unused
  for 14 days are removed at import (``prune_stale_caches``), so upgrades do not pile up old kernels.
- ``nogil=True`` on every kernel, so a worker thread running one leaves the Qt event loop free.
- ``error_model="numpy"``: 1/0 gives inf and 0/0 gives NaN instead of raising; NaN and Inf are data here.
- fastmath is limited to flags that keep NaN and Inf meaningful: no "nnan", "ninf" or "afn".  "reassoc"
  lets LLVM vectorise float sums; fastmath.py's functions, inlined into kernels, are written so that it
  cannot hurt them (their range reduction goes through fma).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numba
from numba.core.caching import FunctionCache
from numba.extending import overload

FASTMATH = frozenset({"contract", "reassoc", "nsz", "arcp"})
KERNEL_OPTIONS = dict(nogil=True, error_model="numpy", boundscheck=False)

_HERE = Path(__file__).parent
# every engine source: kernels, the thresholds of metrics.py and the cells' descriptions are compiled in
_SALTED_SOURCES = tuple(sorted(str(p.relative_to(_HERE)) for p in (*_HERE.glob("*.py"), *_HERE.glob("cells/*.py"))))


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".gradscope-probe-", delete=True)
        probe.close()
        return True
    except OSError:
        return False


def source_salt() -> str:
    """A short hash of the kernel sources: a new salt means a new cache folder."""
    h = hashlib.sha1(numba.__version__.encode())
    for name in _SALTED_SOURCES:
        try:
            h.update((_HERE / name).read_bytes())
        except OSError:  # a frozen or zipped install: the version alone has to do
            h.update(name.encode())
    return h.hexdigest()[:12]


def cache_candidates() -> list[Path]:
    """Where the cache may go, in order of preference."""
    from numba.misc.appdirs import user_cache_dir

    candidates = []
    if os.environ.get("NUMBA_CACHE_DIR"):
        candidates.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    candidates.append(_HERE / "__pycache__")
    try:
        candidates.append(Path(user_cache_dir(appname="numba")))
    except Exception:  # no usable HOME: skip this candidate  # noqa: BLE001
        pass
    uid = os.getuid() if hasattr(os, "getuid") else 0
    candidates.append(Path(tempfile.gettempdir()) / f"gradscope-numba-cache-{uid}")
    return candidates


def choose_cache_dir() -> tuple[bool, str]:
    """Decide where compiled kernels are cached.  Returns (cache enabled, folder)."""
    salt = source_salt()
    for base in cache_candidates():
        folder = base / f"gradscope-{salt}"
        if _writable_dir(folder):
            return True, str(folder)
    warnings.warn(
        "GradScope: no writable folder for Numba's cache (tried NUMBA_CACHE_DIR, the package's "
        "__pycache__, ~/.cache/numba and the temporary folder); kernels will be compiled in every "
        "process",
        RuntimeWarning,
        stacklevel=2,
    )
    return False, ""


STALE_DAYS = 14


def prune_stale_caches(folder: str, days: float = STALE_DAYS) -> list[str]:
    """Mark ``folder`` (ours) as used now and remove its siblings ``gradscope-*`` (kernels of other GradScope
    versions, ~2 to 8 MB each) unused for ``days``: every process marks the folder it uses at import, so a
    version still in use within that time keeps its kernels.  Returns the folders removed; never raises."""
    import shutil
    import time

    removed = []
    try:
        ours = Path(folder)
        os.utime(ours)
        cutoff = time.time() - days * 86400
        for sibling in ours.parent.glob("gradscope-*"):
            if sibling != ours and sibling.is_dir() and sibling.stat().st_mtime < cutoff:
                shutil.rmtree(sibling, ignore_errors=True)
                removed.append(str(sibling))
    except OSError:  # a folder another process is removing, or one we may not touch: leave it
        pass
    return removed


CACHE, CACHE_DIR = choose_cache_dir()
if CACHE:
    prune_stale_caches(CACHE_DIR)


@contextlib.contextmanager
def _our_cache_dir():
    """Numba picks a function's cache folder when it is decorated: point it at ours for that moment only,
    so other Numba users in the process keep their own settings."""
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = CACHE_DIR
    try:
        yield
    finally:
        numba.config.CACHE_DIR = saved


CACHE_SAVE_ERROR: str | None = None  # why a compiled kernel could not be saved (full disk), once it happened


class _DiskFullTolerantCache(FunctionCache):
    """Numba's function cache, except that a save that fails (a full disk: ENOSPC, a file size limit: EFBIG)
    leaves the kernel compiled in memory, where Numba would end the compile, and so the run, with the OSError.
    Numba saves only after the overload is added, so the kernel runs; it is compiled again in the next process.
    The first failure warns once (KernelCacheWarning) and stops every later save in this process."""

    def save_overload(self, sig, data):
        global CACHE_SAVE_ERROR
        if CACHE_SAVE_ERROR is not None:
            return
        try:
            super().save_overload(sig, data)
        except OSError as error:
            CACHE_SAVE_ERROR = f"{error.filename or self.cache_path}: {error.strerror or error}"
            warnings.warn(
                f"GradScope: compiled kernels cannot be saved in the cache ({CACHE_SAVE_ERROR}); they run "
                f"uncached in this process and are compiled again in the next",
                KernelCacheWarning,
                stacklevel=2,
            )


class KernelCacheWarning(RuntimeWarning):
    """Numba's cache could not be written: the kernels run, compiled in this process only."""


def kernel(func=None, **overrides):
    """``@kernel`` / ``@kernel(option=...)``: numba.njit with the project's options (cached, nogil, NaN-safe).

    Compilation is lazy (first call) or explicit (``cells.compile_kernels``), never at import.
    """
    options = dict(KERNEL_OPTIONS, cache=CACHE, fastmath=set(FASTMATH))
    options.update(overrides)

    def decorate(f):
        with _our_cache_dir():
            dispatcher = numba.njit(**options)(f)
        if isinstance(dispatcher._cache, FunctionCache):  # Numba keeps its cache there (Dispatcher.enable_caching)
            dispatcher._cache.__class__ = _DiskFullTolerantCache
        return dispatcher

    return decorate(func) if func is not None else decorate


def helper(func):
    """A kernel called only from other kernels: no CPython wrapper to compile (and link into callers)."""
    return kernel(func, no_cpython_wrapper=True)


def inline(func):
    """A small helper inlined into the kernels that call it (no call overhead; vectorisable)."""
    return numba.njit(inline="always", error_model="numpy", fastmath=set(FASTMATH))(func)


def scalar_overload(stub, implementations: dict):
    """Give the Python function ``stub`` a compiled implementation per Numba scalar type.

    ``implementations`` maps a Numba type (types.float32, types.float64) to a plain Python function.  It is
    inlined into the caller's Numba IR, so it always ends up inside the calling loop and vectorises with it
    (LLVM alone declines to inline the larger float64 ones); it then runs with the caller's flags, which is
    why fastmath.py builds its range reduction on fma, which no flag lets LLVM reassociate.
    """

    @overload(stub, inline="never", jit_options=dict(error_model="numpy", fastmath=set(FASTMATH)))
    def _typed(x):
        return implementations.get(x)

    return stub
