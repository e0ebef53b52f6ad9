"""What the command line prepares for the figures while its runs compute.  Qt-free at import: ``gradscope run
--no-plots`` imports this module and never loads Qt.

    compute_in_thread(work, console, meanwhile=import_figure_renderer)   # the runs in their thread; this here

Qt takes the first thread that imports it for its main thread (importing PyQt6.QtWidgets in a worker thread
makes a later QApplication in the real main thread warn and misbehave), so the renderer is imported in the main
thread, while the runs compute in theirs (their kernels release the GIL).
"""

from __future__ import annotations

import os


def offscreen_without_display() -> None:
    """Qt draws offscreen when there is no display to draw on (set before Qt is imported)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def import_figure_renderer() -> None:
    """Import the figure renderer (PyQt6, pyqtgraph, the views: about half a second) and make the
    QApplication, in the main thread, so that the export only draws.  A failure here is left to the figure
    writer, which imports again and reports it as a figure failure (the traces are exported all the same)."""
    offscreen_without_display()
    try:
        from . import figures, rendering, svg, views  # noqa: F401

        figures.ensure_app()
    except Exception:  # noqa: BLE001  (reported by write_figures)
        pass
