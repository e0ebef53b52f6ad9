"""The per-run waterfall pages of a many-run export, drawn by worker processes while the exporting process draws
the other views (figures.render_figures).

    with PagePool(plots_dir, formats, durable) as pool:
        pool.draw([(n, stem, run), ...])   # page number (its SVG ids' prefix), file stem, RunData
        ...                                # this process draws the overlay views meanwhile
        files = pool.written()             # every page's files, or the first worker's error re-raised

Why processes: a waterfall page costs ~20 ms of drawing in Qt and pyqtgraph, which hold the GIL (a 1,000-run
export spent most of its time on them, one after another); a thread cannot overlap them with the overlays.
Each worker is a fresh process (spawn: never fork a process that has Qt loaded) with its own offscreen
QApplication, one waterfall figure redrawn per run exactly as figure_pages does, and writes the page's PNG and
SVG itself into plots_dir (inside the export's temporary folder: published with it or not at all).  The pool
always waits for its workers before it returns or raises, so nothing writes into a folder being removed.
Workers ignore SIGINT (the exporting process decides what a Ctrl+C stops) and exit if it dies.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

# Below this many waterfall pages the exporting process draws them itself: a worker's start (Python, NumPy,
# Qt and pyqtgraph imported, a QApplication made) costs about 1.5 s on the project's 2-core machine, ~70 pages.
MIN_PAGES = 96
PAGES_PER_TASK = 40  # pages a worker draws with one figure before it hands back (small enough to share out)


def workers() -> int:
    """Worker processes: one per core this process may use, at most 2 (the exporting process draws too)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def worth_pool(pages: int) -> bool:
    """Whether this many waterfall pages go to worker processes (on a machine with more than one core)."""
    return pages >= MIN_PAGES and (os.cpu_count() or 1) > 1


class PagePool:
    """Worker processes drawing waterfall pages into ``plots_dir`` (started only when given pages to draw)."""

    def __init__(self, plots_dir: Path, formats, durable: bool):
        self.plots_dir, self.formats, self.durable = Path(plots_dir), tuple(formats), durable
        self.executor: ProcessPoolExecutor | None = None
        self.futures: list[Future] = []

    def __enter__(self) -> PagePool:
        return self

    def __exit__(self, *_exc) -> None:
        if self.executor is not None:  # always wait: a worker must not write into a folder being removed
            self.executor.shutdown(wait=True, cancel_futures=True)

    def draw(self, jobs: list) -> None:
        """Start drawing ``jobs`` (page number, stem, RunData), PAGES_PER_TASK to a task."""
        if not jobs:
            return
        count = min(workers(), -(-len(jobs) // PAGES_PER_TASK))
        self.executor = ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
        )
        for start in range(0, len(jobs), PAGES_PER_TASK):
            chunk = jobs[start : start + PAGES_PER_TASK]
            self.futures.append(
                self.executor.submit(_draw_waterfalls, self.plots_dir, self.formats, self.durable, chunk)
            )

    def written(self) -> list[Path]:
        """The files the workers wrote, once all are done; the first worker's exception is raised here."""
        files: list[Path] = []
        for future in self.futures:
            files += future.result()
        return files


def _start_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ..experiment import exit_when_orphaned

    exit_when_orphaned()
    from .figures import ensure_app

    ensure_app()


def _draw_waterfalls(plots_dir: Path, formats: tuple, durable: bool, jobs: list) -> list[Path]:
    """In a worker: each job's waterfall page drawn as figures.figure_pages draws it, written to plots_dir."""
    from .figures import VIEW_SIZE, new_page, page_writes
    from .rendering import render_page, settle
    from .views import WaterfallFigure

    widget, figure = new_page(WaterfallFigure, VIEW_SIZE)
    written = []
    for n, stem, run in jobs:
        figure.run_key = run.key
        figure.refresh([run])  # the figure shows the run of run_key only; the others would not change it
        settle(widget)
        page = render_page(widget, formats, id_prefix=f"p{n}c")
        written += [write() for write in page_writes(plots_dir, stem, page, formats, durable)]
    return written
