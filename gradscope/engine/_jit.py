"""The one place Numba options are set.

- ``cache=True`` so a second process starts in well under a second.  Numba caches next to the source
  (``__pycache__``); when that folder is read-only it uses NUMBA_CACHE_DIR or the user cache folder, and when
  nothing is writable decorating a cached function fails.  ``choose_cache_dir`` settles this once, at import,
  falling back to a private temporary folder and, last, to no cache at all.
- ``nogil=True`` on every entry point so a worker thread running a kernel leaves the Qt event loop free.
- ``error_model="numpy"``: 1/0 gives inf and 0/0 gives NaN instead of raising; NaN and Inf are data here.
- fastmath is limited to flags that keep NaN and Inf meaningful: no "nnan", "ninf" or "afn".
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numba

FASTMATH = frozenset({"contract", "reassoc", "nsz", "arcp"})


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".gradscope-probe-", delete=True)
        probe.close()
        return True
    except OSError:
        return False


def choose_cache_dir() -> tuple[bool, str]:
    """Decide where compiled kernels are cached.  Returns (cache enabled, where)."""
    user_dir = os.environ.get("NUMBA_CACHE_DIR")
    if user_dir:
        if _writable_dir(Path(user_dir)):
            return True, user_dir
    elif _writable_dir(Path(__file__).parent / "__pycache__"):
        return True, str(Path(__file__).parent / "__pycache__")
    else:
        from numba.misc.appdirs import user_cache_dir

        if _writable_dir(Path(user_cache_dir(appname="numba"))):
            return True, user_cache_dir(appname="numba")
    fallback = Path(tempfile.gettempdir()) / f"gradscope-numba-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"
    if _writable_dir(fallback):
        numba.config.CACHE_DIR = str(fallback)
        return True, str(fallback)
    warnings.warn("GradScope: no writable folder for Numba's cache; kernels will be compiled in every process",
                  RuntimeWarning, stacklevel=2)
    return False, ""


CACHE, CACHE_DIR = choose_cache_dir()


def kernel(*args, **overrides):
    """``@kernel`` / ``@kernel(parallel=True)``: numba.njit with the project's options."""
    options = dict(cache=CACHE, nogil=True, error_model="numpy", fastmath=set(FASTMATH))
    options.update(overrides)
    if args and callable(args[0]):
        return numba.njit(**options)(args[0])
    return numba.njit(*args, **options)


def inline(func):
    """A helper inlined into the kernels that call it (no call overhead, vectorisable)."""
    return numba.njit(inline="always", cache=CACHE, error_model="numpy", fastmath=set(FASTMATH))(func)
