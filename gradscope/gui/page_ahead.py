"""The waterfall pages of the runs that have ended, drawn while the other runs compute (``gradscope run`` of many
runs in one process), so that the export after the last run has only the overlay views left to draw.
The command line uses it when the export would hand its waterfalls to worker processes anyway (for_run).

    ahead = for_run(recording.path / "plots", [r.name for r in experiment.runs], processes)  # or None
    progress = ahead.also(progress)        # each run that ends queues its page
    ...
    ready = ahead.move_into(plots_dir)     # at the export: stop, and the pages drawn so far into its plots/
    ahead.close()                          # always (a no-op after move_into): the worker ends

Why: a 1,000-run export spent ~36 CPU-seconds on its 1,000 waterfall pages (~36 ms each: Qt's rendering, the
PNG's zlib, the SVG passes) against a 10 s target on a 2-core machine, while the runs before it, in one
process, left the second core idle for minutes.  One worker process (page_pool.py ``--serve``, the same
drawing code as the export's pool, at a lower priority than the runs) draws each ended run's page into the
recording's ``plots/`` folder; the export renames that folder into its own ``plots/`` and keeps each page
that is the plan's (figures.render_figures: the same stem at the same place, of the same run with the same
rows, in the same font), so the files are the bytes the export would have drawn.  Anything else (a guess
that the plan contradicts, a worker that failed or was killed) is drawn by the export as before: the pages
drawn ahead are a cache, never the only copy of anything computed.
"""

from __future__ import annotations

import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path


def for_run(folder: Path, names: list[str], processes: int) -> PagesAhead | None:
    """A PagesAhead when the export would hand its waterfalls to worker processes anyway (page_pool: enough
    pages, more than one core) and the runs compute in this one process (``processes``: workers of their own
    would take the cores); else None.  Cheap to import and to ask: nothing of Qt or the figures is loaded."""
    from .page_pool import worth_pool

    return PagesAhead(folder, names) if processes == 1 and worth_pool(len(names)) else None


@dataclass(frozen=True)
class Drawn:
    """A page drawn ahead: its place in the plan (``n``: its SVG ids' prefix), the run's key, how many rows
    and which last iteration it showed, the application font it was drawn in, and its files."""

    n: int
    key: int
    rows: int
    last: int
    font: str | None
    files: tuple[Path, ...]

    def matches(self, n: int, run, font: str | None) -> bool:
        return (n, run.key, len(run.trace), _last(run), font) == (self.n, self.key, self.rows, self.last, self.font)


def _last(run) -> int:
    return int(run.trace.iterations[-1]) if len(run.trace) else -1


class PagesAhead:
    """One worker process drawing the waterfall page of each run handed to ``add``, one page at a time, into
    ``folder`` (started with the first page)."""

    def __init__(self, folder: Path, names: list[str], formats=("png", "svg")):
        from .figures import slug, unique

        self.folder = Path(folder)
        shutil.rmtree(self.folder, ignore_errors=True)  # what a killed process had drawn: not this run's
        self.folder.mkdir(parents=True)
        taken: set[str] = set()
        # the plan's stems and places if every run has data: through_time first, then the waterfalls in order
        self.stems = [unique(f"waterfall_{slug(name)}", taken) for name in names]
        self.index = {name: i for i, name in enumerate(names)}
        self.formats = tuple(formats)
        self.drawn: dict[str, Drawn] = {}
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.process: subprocess.Popen | None = None  # the worker, once started

    def also(self, progress: Callable | None) -> Callable:
        """``progress`` (called as each run ends, from any thread) that also queues the run's page."""

        def both(result) -> None:
            if progress is not None:
                progress(result)
            self.add(result)

        return both

    def writer(self, write_figures: Callable) -> Callable:
        """io.export_experiment's figure writer: ``write_figures(experiment, results, plots_dir, ahead=self)``."""
        return lambda experiment, results, plots_dir: write_figures(experiment, results, plots_dir, ahead=self)

    def add(self, result) -> None:
        """Queue the page of a run that has ended (not the composite's first pages: the export draws those)."""
        from .figures import COMPOSITE_COLUMNS

        index = self.index.get(result.name)
        if index is None or index < COMPOSITE_COLUMNS or not len(result.trace) or self._stop.is_set():
            return
        self._jobs.put((index, result))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="gradscope-pages-ahead", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop after the page being drawn (the queue is dropped) and wait for the worker to end."""
        self._stop.set()
        self._jobs.put(None)
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def move_into(self, plots_dir: Path) -> dict[str, Drawn]:
        """Stop, then make the pages drawn so far the content of ``plots_dir`` (the export's, still empty): one
        rename of the folder.  Returns them by stem ({} when there are none or they could not be moved)."""
        self.close()
        plots_dir = Path(plots_dir)
        if not self.drawn:
            return {}
        try:
            plots_dir.rmdir()
            os.rename(self.folder, plots_dir)
        except OSError:  # e.g. another file system: the export draws every page
            plots_dir.mkdir(parents=True, exist_ok=True)
            return {}
        names = {path.name for drawn in self.drawn.values() for path in drawn.files}
        for entry in os.scandir(plots_dir):  # a temporary of a write the worker did not finish
            if entry.name not in names:
                os.unlink(entry.path)
        return {
            stem: replace(drawn, files=tuple(plots_dir / path.name for path in drawn.files))
            for stem, drawn in self.drawn.items()
        }

    def _serve(self) -> None:
        from .figures import run_data_from_result
        from .page_pool import app_font

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if isinstance(p, str) and p))
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "gradscope.gui.page_pool", "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            return  # the export draws every page
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        try:
            font = app_font()
            pickle.dump((str(self.folder), self.formats, False, font), process.stdin)
            while not self._stop.is_set():
                job = self._jobs.get()
                if job is None or self._stop.is_set():
                    break
                index, result = job
                run = run_data_from_result(index, result)
                n, stem = 1 + index, self.stems[index]
                pickle.dump((n, stem, run), process.stdin)
                process.stdin.flush()
                kind, value = pickle.load(process.stdout)
                if kind != "files":
                    break  # that page, and the ones after it, are the export's to draw (and to report)
                files = tuple(Path(p) for p in value)
                with self._lock:
                    self.drawn[stem] = Drawn(n, index, len(run.trace), _last(run), font, files)
        except (OSError, EOFError, pickle.PickleError):
            pass  # the worker died or could not start: the export draws the pages it lacks
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass
            process.wait()
