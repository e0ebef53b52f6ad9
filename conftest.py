"""Repository-wide pytest setup: headless Qt unless told otherwise, one Numba cache for every process."""

import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # must precede any Qt import
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "gradscope-test-numba-cache"))
