"""The per-run waterfall pages of a many-run export, drawn by worker processes while the exporting process draws
the other views (figures.render_figures).

    with PagePool(plots_dir, formats, durable) as pool:
        pool.draw([(n, stem, run), ...])   # page number (its SVG ids' prefix), file stem, RunData
        ...                                # this process draws the overlay views meanwhile
        files = pool.written()             # every page's files, or a worker's error raised here

Why processes: a waterfall page costs ~20 ms of drawing in Qt and pyqtgraph, which hold the GIL (a 1,000-run
export spent most of its time on them, one after another); a thread cannot overlap them with the overlays.

Each worker is ``python -m gradscope.gui.page_pool``, a fresh process (never a fork of one that has Qt
loaded), and not a multiprocessing spawn: that would import the caller's main script again, and a script that
calls gradscope.run without an ``if __name__ == "__main__"`` guard would run its experiment a second time in
every worker.  Its jobs arrive pickled on stdin, its files' paths (or its exception) leave pickled on stdout.
It draws with its own offscreen QApplication (in the exporting process's application font) and one
waterfall figure redrawn per run, exactly as figure_pages does, and writes the page's PNG and SVG itself
into plots_dir (inside the export's temporary folder: published with it or not at all).  The pool always
waits for its workers before it returns or raises (and ends them first when the export is failing), so
nothing writes into a folder being removed.  Workers ignore SIGINT (the exporting process decides what a
Ctrl+C stops) and exit if it dies.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

# Below this many waterfall pages the exporting process draws them itself: a worker's start (Python, NumPy,
# Qt and pyqtgraph imported, a QApplication made) costs about 1.5 s on the project's 2-core machine, ~70 pages.
MIN_PAGES = 96
SERVE_NICE = 10  # ``--serve`` (pages drawn while runs compute): the runs keep their core, the pages take the rest


class PageWorkerError(RuntimeError):
    """A figure worker ended without handing back its pages (killed, or it could not start)."""


def workers() -> int:
    """Worker processes: one per core this process may use, at most 2 (the exporting process draws too)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def worth_pool(pages: int) -> bool:
    """Whether this many waterfall pages go to worker processes (on a machine with more than one core)."""
    return pages >= MIN_PAGES and workers() > 1


class PagePool:
    """Worker processes drawing waterfall pages into ``plots_dir`` (started only when given pages to draw)."""

    def __init__(self, plots_dir: Path, formats, durable: bool):
        self.plots_dir, self.formats, self.durable = Path(plots_dir), tuple(formats), durable
        self._workers: list[tuple[subprocess.Popen, threading.Thread, list]] = []

    def __enter__(self) -> PagePool:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        for process, talk, _ in self._workers:  # always wait: a worker must not write into a folder being removed
            if exc_type is not None and process.poll() is None:
                process.kill()  # the export is failing: its pages are not wanted
            talk.join()
            process.wait()

    def draw(self, jobs: list) -> None:
        """Start drawing ``jobs`` (page number, stem, RunData), shared out in order among the workers."""
        if not jobs:
            return
        count = min(workers(), len(jobs))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if isinstance(p, str) and p))
        for k in range(count):
            share = jobs[k * len(jobs) // count : (k + 1) * len(jobs) // count]
            payload = pickle.dumps((str(self.plots_dir), self.formats, self.durable, share, app_font()))
            process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            answer: list = []  # (stdout, stderr), filled by the thread that talks to the worker
            talk = threading.Thread(
                target=lambda p=process, data=payload, a=answer: a.append(p.communicate(data)),
                name="gradscope-page-worker",
                daemon=True,
            )
            talk.start()
            self._workers.append((process, talk, answer))

    def written(self) -> list[Path]:
        """The files the workers wrote, once all are done; a worker's exception is raised here."""
        files: list[Path] = []
        for process, talk, answer in self._workers:
            talk.join()
            out, err = answer[0] if answer else (b"", b"")
            try:
                kind, value = pickle.loads(out)
            except Exception:  # noqa: BLE001  (no answer: killed, or Python could not start it)
                tail = err.decode(errors="replace").strip().splitlines()[-5:]
                raise PageWorkerError(
                    f"a figure worker exited with code {process.wait()} without its pages: {' / '.join(tail)}"
                ) from None
            if kind == "error":
                raise value
            files += [Path(p) for p in value]
        return files


def app_font() -> str | None:
    """The exporting process's application font (the app raises it to 10 pt): the workers draw with it too."""
    from PyQt6 import QtWidgets

    return QtWidgets.QApplication.font().toString() if QtWidgets.QApplication.instance() is not None else None


def draw_waterfalls(plots_dir: Path, formats: tuple, durable: bool, jobs: list, font: str | None = None) -> list[Path]:
    """Each job's waterfall page drawn as figures.figure_pages draws it (in the application font ``font``, a
    QFont.toString()), and written to plots_dir."""
    draw = waterfall_drawer(plots_dir, formats, durable, font)
    return [path for job in jobs for path in draw(*job)]


def waterfall_drawer(plots_dir: Path, formats: tuple, durable: bool, font: str | None = None):
    """draw(n, stem, run) -> the files of that run's waterfall page, drawn on one figure redrawn per run (the
    figure shows the run of run_key only; the other runs would not change it)."""
    from PyQt6 import QtGui, QtWidgets

    from .figures import VIEW_SIZE, ensure_app, new_page, page_writes
    from .rendering import render_page, settle
    from .views import WaterfallFigure

    ensure_app()
    if font is not None:
        chosen = QtGui.QFont()
        if chosen.fromString(font):
            QtWidgets.QApplication.setFont(chosen)
    widget, figure = new_page(WaterfallFigure, VIEW_SIZE)

    def draw(n: int, stem: str, run) -> list[Path]:
        figure.run_key = run.key
        figure.refresh([run])
        settle(widget)
        page = render_page(widget, formats, id_prefix=f"p{n}c")
        return [write() for write in page_writes(Path(plots_dir), stem, page, formats, durable)]

    return draw


def _answer(error: Exception) -> bytes:
    """A worker's exception, pickled for the exporting process, with the worker's traceback as a note."""
    error.add_note(f"in figure worker {os.getpid()}:\n{traceback.format_exc()}")
    try:
        return pickle.dumps(("error", error))
    except Exception:  # noqa: BLE001  (an exception that does not pickle: its text)
        return pickle.dumps(("error", RuntimeError(traceback.format_exc())))


def _serve(answers, requests) -> None:
    """``--serve``: (plots_dir, formats, durable, font), then one job (n, stem, RunData) at a time until the end
    of the input, each answered with its files (or the error) before the next is read (page_ahead.py)."""
    plots_dir, formats, durable, font = pickle.load(requests)
    draw = None
    while True:
        try:
            n, stem, run = pickle.load(requests)
        except EOFError:
            return
        try:
            draw = draw or waterfall_drawer(Path(plots_dir), formats, durable, font)
            answer = pickle.dumps(("files", [str(p) for p in draw(n, stem, run)]))
        except Exception as error:  # noqa: BLE001  (the caller draws that page itself)
            answer = _answer(error)
        answers.write(answer)
        answers.flush()


def _worker_main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever an import prints must not get into the answer
    from ..experiment import exit_when_orphaned

    exit_when_orphaned()
    if sys.argv[1:] == ["--serve"]:
        try:
            os.nice(SERVE_NICE)
        except (OSError, AttributeError):  # not permitted, or not POSIX: at the runs' priority
            pass
        _serve(answers, sys.stdin.buffer)
        return
    plots_dir, formats, durable, jobs, font = pickle.load(sys.stdin.buffer)
    try:
        files = draw_waterfalls(Path(plots_dir), formats, durable, jobs, font)
        answer = pickle.dumps(("files", [str(p) for p in files]))
    except Exception as error:  # noqa: BLE001  (handed to the exporting process, which raises it)
        answer = _answer(error)
    answers.write(answer)
    answers.flush()


if __name__ == "__main__":
    _worker_main()
