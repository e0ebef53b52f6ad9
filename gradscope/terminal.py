"""What the command line shows and hears while it runs: stop signals, progress on stderr, the kernels loading.

The first SIGINT / SIGTERM asks the runs to stop and export what they computed; a second ends the process.
Progress: one line per run as it ends; on a terminal also a status line that follows the running runs.
Standard library only, like gradscope.cli.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

STOP_SIGNALS = ("SIGINT", "SIGTERM")  # exit code 128 + the signal's number, as a shell reports it
LONG_ITERATION_LINE = 30.0  # seconds: not on a terminal, a line this often says a long iteration goes on


# ------------------------------------------------------------------------------------------ stop signals
class StopRequest:
    """SIGINT / SIGTERM during ``gradscope run``: the first asks every run to stop after its current iteration,
    and what was computed is exported; a second one ends the process at once (the signal's default action).

    Use as ``with stop.handling(): ...``; ``is_set()`` is what the runs check.  The handler only sets a flag
    and writes one line to the stderr file descriptor (never through sys.stderr's buffer, which the main
    thread may be in the middle of).
    """

    def __init__(self, tty: bool = False):
        self.event = threading.Event()
        self.signum: int | None = None
        self.tty = tty
        self.exporting = False  # what the signal's message says is happening

    def is_set(self) -> bool:
        return self.event.is_set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process that a signal ended."""
        if self.signum is None:
            raise RuntimeError("no stop signal was received")
        return 128 + int(self.signum)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: quit now, as if we had no handler
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        self.event.set()
        again = "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name
        doing = (
            "finishing the export"
            if self.exporting
            else "stopping the runs after their current iteration and exporting what was computed"
        )
        message = (
            f"gradscope: {signal.Signals(signum).name} received: {doing} ({again} again quits at once, "
            f"exporting nothing)\n"
        )
        try:
            os.write(2, (("\r\033[K" if self.tty else "") + message).encode())
        except OSError:
            pass

    @contextmanager
    def handling(self):
        """Install the handler for SIGINT and SIGTERM (main thread only; elsewhere this does nothing)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        signums = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
        previous = {signum: signal.signal(signum, self._handle) for signum in signums}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------------- progress
class Console:
    """stderr during a run: permanent lines (one per run as it ends) and, on a terminal, one status line
    under them, redrawn at most 10 times a second, that follows the running runs."""

    def __init__(self, names: list[str], stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.names = names
        self.running: dict[int, tuple[int, int, float]] = {}  # index -> (done, total, seconds)
        self._status = ""
        self._drawn_at = 0.0
        self._since: dict[int, float] = {}  # index -> when its last iteration ended (monotonic)
        self._told: dict[int, float] = {}  # index -> when a line last said its iteration goes on (not a tty)

    def line(self, text: str) -> None:
        """A permanent line; the status line, if any, is drawn again under it."""
        had_status = bool(self._status)
        self.clear()
        self._write(text + "\n")
        if had_status:
            self._draw()

    def status(self, text: str) -> None:
        """Replace the status line (terminals only)."""
        if not self.tty:
            return
        width = _terminal_width()
        text = text if len(text) < width else text[: width - 2] + "…"
        self._status = text
        self._write("\r\033[K" + text)
        self._drawn_at = time.monotonic()

    def clear(self) -> None:
        if self._status:
            self._write("\r\033[K")
            self._status = ""

    def iteration(self, index: int, done: int, total: int, seconds: float) -> None:
        self.running[index] = (done, total, seconds)
        self._since[index] = time.monotonic()
        if self.tty and time.monotonic() - self._drawn_at >= 0.1:
            self._draw()

    def tick(self) -> None:
        """Called a few times a second while runs compute: an iteration that takes long shows how long it has
        run so far (on a terminal in the status line; elsewhere a line every LONG_ITERATION_LINE seconds)."""
        now = time.monotonic()
        if self.tty:
            if now - self._drawn_at >= 0.5 and any(now - t >= 1.0 for t in self._since.values()):
                self._draw()
            return
        for index, since in self._since.items():
            done, total, _ = self.running.get(index, (0, 0, 0.0))
            waited = now - since
            if waited >= LONG_ITERATION_LINE and now - self._told.get(index, since) >= LONG_ITERATION_LINE:
                self._told[index] = now
                self.line(
                    f"[{index + 1}/{len(self.names)}] {self.names[index]}: iteration {done} of {total} "
                    f"running for {waited:.0f} s"
                )

    def finished(self, result) -> None:
        index = self.names.index(result.name)
        self.running.pop(index, None)
        self._since.pop(index, None)
        self.line(progress_line(index + 1, len(self.names), result))

    def _draw(self) -> None:
        parts = []
        now = time.monotonic()
        for index, (done, total, seconds) in sorted(self.running.items()):
            rate = f", {done / seconds:.1f} it/s" if seconds > 0 else ""
            waited = now - self._since.get(index, now)
            inside = f", iteration {done} for {waited:.0f} s" if waited >= 1.0 else ""  # a long one, going on
            parts.append(f"[{index + 1}/{len(self.names)}] {self.names[index]}: {done}/{total}{rate}{inside}")
        if parts:
            self.status(" | ".join(parts))
        else:
            self.clear()

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _terminal_width() -> int:
    import shutil

    return max(20, shutil.get_terminal_size((100, 24)).columns)


def progress_line(index: int, total: int, result) -> str:
    """``[2/3] relu 2/n: completed, 100 iteration(s) in 1.20 s (83.3 it/s), loss 2.1 -> 0.3`` (and for a ce task
    ``, accuracy 0.15 -> 0.89``, with the task's accuracy ceiling when it has one)."""
    from .runs import RunStatus

    if result.status is RunStatus.STOPPED and result.iterations == 0 and result.init_params is None:
        return f"[{index}/{total}] {result.name}: stopped before it started"
    rate = result.iterations / result.wall_seconds if result.wall_seconds > 0 else float("inf")
    line = (
        f"[{index}/{total}] {result.name}: {result.status}, {result.iterations} iteration(s) in "
        f"{result.wall_seconds:.2f} s ({rate:.1f} it/s)"
    )
    if len(result.trace):
        loss = result.trace.array("loss")
        line += f", loss {loss[0]:.4g} -> {loss[-1]:.4g}"
        if "accuracy" in result.trace:  # ce tasks: the share of scored positions right, and the ceiling if known
            accuracy = result.trace.array("accuracy")
            line += f", accuracy {accuracy[0]:.4f} -> {accuracy[-1]:.4f}"
            if getattr(result, "accuracy_ceiling", None) is not None:
                line += f" (unidirectional ceiling {result.accuracy_ceiling:.4f})"
    if result.nonfinite is not None:
        line += f"; {result.nonfinite}"
    if result.error:
        line += f"; {result.error.strip().splitlines()[-1]}"
    return line


# ------------------------------------------------------------------------------------------- sweeps
def sweep_bar(progress, width: int = 24) -> str:
    """``[#########---------] 12/64 done, 2 running, 1 failed, ETA 00:31`` (a runner.SweepProgress)."""
    total = max(progress.total, 1)
    filled = int(width * (progress.done + progress.failed) / total)
    bar = "#" * filled + "-" * (width - filled)
    return f"[{bar}] {progress.summary()}"


class SweepConsole:
    """stderr during ``gradscope sweep``: on a terminal a bar redrawn at most 10 times a second; elsewhere a
    line at every tenth of the points.  Failed points get a permanent line each."""

    def __init__(self, stream=None):
        self.console = Console([], stream)
        self._said = -1  # the last tenth reported (not a terminal)
        self._failed = 0

    @property
    def tty(self) -> bool:
        return self.console.tty

    def line(self, text: str) -> None:
        self.console.line(text)

    def progress(self, progress) -> None:
        if progress.failed > self._failed:
            self._failed = progress.failed
            self.console.line(f"point failed ({progress.failed} so far; the tracebacks go to a log at the end)")
        if self.console.tty:
            if time.monotonic() - self.console._drawn_at >= 0.1 or progress.running == 0:
                self.console.status(sweep_bar(progress))
            return
        tenth = (10 * (progress.done + progress.failed)) // max(progress.total, 1)
        if tenth != self._said:
            self._said = tenth
            self.console.line(sweep_bar(progress))

    def clear(self) -> None:
        self.console.clear()


# ------------------------------------------------------------------------------------- the command line's
def log_dir() -> Path:
    """Where tracebacks go: $GRADSCOPE_LOG_DIR, else ~/.cache/gradscope/logs, else the temporary folder."""
    import tempfile

    for candidate in (
        os.environ.get("GRADSCOPE_LOG_DIR"),
        Path.home() / ".cache" / "gradscope" / "logs",
        Path(tempfile.gettempdir()) / "gradscope-logs",
    ):
        if not candidate:
            continue
        try:
            Path(candidate).mkdir(parents=True, exist_ok=True)
            return Path(candidate)
        except OSError:
            continue
    return Path(tempfile.gettempdir())


def write_log(text: str) -> Path:
    path = log_dir() / f"gradscope-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(path, "a", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path


def log_note(text: str, what: str = "traceback") -> str:
    """``text`` written to a log, and the words that say where: "the traceback is in PATH".  A log that cannot
    be written (the disk that is full is often the one the log goes to) is said so, never a second error."""
    try:
        return f"the {what} is in {write_log(text)}"
    except OSError as error:
        return f"no log of the {what} could be written ({error.strerror or error})"


def exit_process(code: int) -> None:
    """End a command-line process once ``cli.main()`` has returned: as the interpreter ends one (the non-daemon
    threads joined, the atexit handlers run, the output flushed), but without its module-by-module teardown,
    which frees Numba's LLVM objects, Qt's and every module one by one: ~0.5 s of CPU after ``gradscope run``
    (measured with strace: no system call in between), a tenth of the whole command.  Nothing is left to write
    by then: main() returns after the export (or the rescue) is on disk and the recording is closed, and the
    atexit handlers (logging's, weakref.finalize's) still run.  Called from the process's entry points only
    (python -m gradscope, the gradscope script), so main() itself keeps returning to a caller in-process."""
    import atexit

    try:
        shutdown = getattr(threading, "_shutdown", None)  # what Py_FinalizeEx runs first: joins the threads
        if shutdown is not None:
            shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said there
                pass
        os._exit(code)


def compute_in_thread(work, console: Console, meanwhile=None):
    """``work(progress, on_iteration)`` (the runs) in a thread of its own, while this, the main thread, waits in
    steps of 0.1 s: a signal's handler runs only in the main thread, between bytecodes, so a long iteration in
    a kernel here would hold a Ctrl+C (and the second one, which must quit at once) until it returned.  The
    runs' progress comes back through a queue and is shown from here, with the time spent in an iteration
    that has not ended yet.  ``meanwhile()``, when given, runs here once the runs have started: work of the main
    thread's that need not wait for them (the figure renderer's imports)."""
    import queue
    import threading

    events: queue.SimpleQueue = queue.SimpleQueue()
    outcome: dict = {}

    def target():
        try:
            outcome["results"] = work(
                lambda result: events.put((console.finished, (result,))),
                lambda *update: events.put((console.iteration, update)),
            )
        except BaseException as error:  # noqa: BLE001  (raised again in the main thread)
            outcome["error"] = error

    thread = threading.Thread(target=target, name="gradscope-runs", daemon=True)
    thread.start()
    if meanwhile is not None:
        meanwhile()
    while True:
        thread.join(0.1)
        while not events.empty():
            method, arguments = events.get()
            method(*arguments)
        if not thread.is_alive():
            break
        console.tick()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["results"]


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def rescue(out, error: OSError, experiment, results, export, recording) -> None:
    """``gradscope run``'s destination failed mid-export: the results go, traces only, to a folder of their own in the
    temporary folder (or the cache) instead, and one line says where; never lose what was computed.  When
    nothing can be written anywhere (a full disk, a file size limit), the line says what the live recording in
    ``out`` kept: every record, or those up to where its store stopped."""
    import tempfile

    why = f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for parent in (Path(tempfile.gettempdir()), Path.home() / ".cache" / "gradscope" / "rescued"):
        target = parent / f"gradscope-rescued-{Path(out).name or 'export'}-{stamp}-{os.getpid()}"
        try:
            export(target, experiment, results, figures=None)
        except Exception:  # noqa: BLE001  (try the next place)
            continue
        print(
            f"gradscope: cannot write {out}: {why}; the results (traces, no figures) are in {target}", file=sys.stderr
        )
        return
    stopped = [f"{r.name!r} from {r.store_error}" for r in results if r.store_error]
    if not recording.path.is_dir():
        kept = "the results are lost"
    elif stopped:
        kept = (
            f"{recording.path} keeps the records written before recording stopped ({'; '.join(stopped)}); "
            f"gradscope.open reads them"
        )
    else:
        kept = f"every record is kept in {recording.path} (gradscope.open {out} reads it)"
    print(f"gradscope: cannot write {out}: {why}; nor a copy elsewhere: {kept}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ kernels
class StoppedBeforeRuns(Exception):
    """A stop signal arrived before any run started (e.g. while kernels compiled)."""


def load_kernels(experiment, backend: str, console: Console, stop: StopRequest) -> None:
    """Compile (or load from Numba's cache) the kernels every run needs.  A cold compile takes seconds, so its
    progress is shown; loading a warm cache is quick and stays quiet.  A stop signal ends it between kernels
    (StoppedBeforeRuns).  The engine is imported here, when a command computes."""
    if backend != "numba":
        return
    import warnings

    from .engine import compile_kernels
    from .engine._jit import KernelCacheWarning

    with warnings.catch_warnings(record=True) as caught:  # a full disk's cache: one line, the kernels still run
        warnings.simplefilter("always", KernelCacheWarning)
        _load_each(experiment, console, stop, compile_kernels)
    console.clear()
    for warning in caught:
        if issubclass(warning.category, KernelCacheWarning):
            print(f"gradscope: {str(warning.message).removeprefix('GradScope: ')}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _load_each(experiment, console: Console, stop: StopRequest, compile_kernels) -> None:
    for spec in dict.fromkeys(r.model_spec() for r in experiment.runs):  # each once, in the file's order
        start = time.perf_counter()

        def report(done, total, name, spec=spec, start=start):
            if stop.is_set():
                raise StoppedBeforeRuns
            if time.perf_counter() - start > 0.5:
                # shown after 0.5 s: mostly the cache's load on a busy machine, a compile only the first time
                text = f"loading kernels for {spec.label} ({spec.dtype}; compiled on first use): {done}/{total} {name}"
                if console.tty:
                    console.status(text)
                else:
                    console.line(text)

        compile_kernels(spec, progress=report)
