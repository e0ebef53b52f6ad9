"""What the command line prepares for the figures while its runs compute.  Qt-free at import: ``gradscope run
--no-plots`` imports this module and never loads Qt.

    with figure_imports_meanwhile(wanted):   # PyQt6, pyqtgraph and the views imported in a thread meanwhile
        ...                                  # load the kernels, run, export (write_figures draws)
"""

from __future__ import annotations

import contextlib
import os


def offscreen_without_display() -> None:
    """Qt draws offscreen when there is no display to draw on (set before Qt is imported)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@contextlib.contextmanager
def figure_imports_meanwhile(wanted: bool):
    """Import the figure renderer (PyQt6, pyqtgraph, the views: about half a second) in a thread of its own
    while the kernels load and the runs compute, so that the export only draws; joined when the block ends, so
    no import is cut off by the process's exit.  Imports only: the QApplication and every widget are still
    made in the main thread, by write_figures.  A failure here is left to write_figures, which imports again
    and reports it as a figure failure."""
    if not wanted:
        yield
        return
    import threading

    offscreen_without_display()

    def target():
        try:
            from . import figures, rendering, svg, views  # noqa: F401
        except Exception:  # noqa: BLE001  (reported by write_figures)
            pass

    thread = threading.Thread(target=target, name="gradscope-figure-imports", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
