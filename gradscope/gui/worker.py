"""One QThread per run: it pulls Records from the engine's training generator and sends them to the GUI thread
in batches, at most ``1 / EMIT_INTERVAL`` times a second.

Each thread drives its run with gradscope.runs.drive, the command line's loop, through a runs.RunControl
obeyed between records (a kernel call is never interrupted): ``resume()`` runs freely, ``pause()`` holds,
``step()`` makes exactly one more iteration, ``stop()`` ends the run.  The kernels release the GIL (nogil), so
the GUI keeps painting while a step computes.  Anything raised in the thread comes back as
``failed(traceback text)``; the thread never dies silently.

Given a ``take`` (gradscope.sessions: the app's recording), the thread also records its run as it goes, with the
command line's recording.RunRecorder (whose own thread writes the store: the run never waits for the disk).  A
folder that cannot be written, or a disk that fills, stops the recording, never the run:
``recording_failed(note)`` says which folder, why and what it kept.

Compiling kernels (seconds on a cold cache) cannot be interrupted, so it does not happen in these threads: one
``KernelCompiler`` daemon thread compiles for everyone, and a training thread waits for it while still
answering stop.  Closing the app mid-compile therefore never waits for the compiler (a daemon thread ends with
the process; Numba writes its cache files under temporary names).

Where a run computes: by default in a process of its own (gradscope.run_process: the window's interpreter lock
is the GUI's alone; measured in that module's docstring), the thread relaying its messages to these same signals
and its commands to it; ``in_process=True`` keeps the run in this thread instead (the reference engine's tests, and
``GRADSCOPE_RUNS_IN_PROCESS=1``).  A run's process that ends without a verdict (killed, out of memory) is a
failed run whose records so far are kept, with one line that says so.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import traceback
from pathlib import Path

import numpy as np
from PyQt6 import QtCore

from ..run_process import drive_in_batches, lower_priority, process_context, serve
from ..runs import RunControl, RunStatus

STOP_POLL = 0.05  # seconds between stop checks while waiting for the compiler (and for a run's process)
IN_PROCESS = os.environ.get("GRADSCOPE_RUNS_IN_PROCESS", "") == "1"  # runs in the app's threads, not processes


def kernel_key(spec) -> tuple:
    """What the kernels a model loads depend on (engine.plan.model_plan: dtype and architecture; the cell too)."""
    return spec.cell, spec.dtype, spec.architecture, spec.bidirectional


class KernelCompiler(QtCore.QObject):
    """Compiles (or loads from Numba's cache) the kernels of each model kind once, in a daemon thread."""

    progress = QtCore.pyqtSignal(object, int, int, str)  # kernel key, done, total, kernel name
    failed = QtCore.pyqtSignal(object, str)  # kernel key, traceback text

    def __init__(self, parent=None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._done: dict[tuple, threading.Event] = {}
        self._errors: dict[tuple, str] = {}
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.busy = False  # compiling right now (cannot be interrupted)

    def request(self, spec) -> threading.Event:
        """Ask for a model's kernels (any thread); the returned event is set once they are ready (or failed)."""
        key = kernel_key(spec)
        with self._lock:
            event = self._done.get(key)
            if event is None:
                event = self._done[key] = threading.Event()
                self._queue.put((key, spec))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="gradscope-compiler", daemon=True)
                    self._thread.start()
        return event

    def error(self, spec) -> str | None:
        return self._errors.get(kernel_key(spec))

    def _report(self, key, done: int, total: int, name: str) -> None:
        self.progress.emit(key, done, total, name)

    def _work(self) -> None:
        lower_priority()
        while True:
            key, spec = self._queue.get()
            self.busy = True
            try:
                try:
                    from ..engine import compile_kernels
                except ImportError:
                    continue  # no compiled engine here: nothing to prepare
                compile_kernels(spec, progress=functools.partial(self._report, key))
            except Exception:  # noqa: BLE001  (shown as the run's failure, with its traceback)
                self._errors[key] = traceback.format_exc()
                self.failed.emit(key, self._errors[key])
            finally:
                self.busy = False
                self._done[key].set()


_compiler: KernelCompiler | None = None


def compiler() -> KernelCompiler:
    """The process's kernel compiler (create it first from the GUI thread, e.g. in the controller)."""
    global _compiler
    if _compiler is None:
        _compiler = KernelCompiler()
    return _compiler


class TrainingThread(QtCore.QThread):
    """Trains one run.  Signals are emitted from the worker thread and delivered queued to the GUI thread."""

    # the Training (in this thread) or its run_process.Prepared (task, init_params, first_batch ...)
    prepared = QtCore.pyqtSignal(object)
    records = QtCore.pyqtSignal(object)  # list[Record] in iteration order
    state = QtCore.pyqtSignal(object)  # RunStatus.RUNNING | RunStatus.PAUSED
    done = QtCore.pyqtSignal(object)  # RunStatus.COMPLETED | DIVERGED | STOPPED
    failed = QtCore.pyqtSignal(str)  # traceback text
    # "'a' (001-a/): stopped (why); its iterations 0-41 are kept": the run's folder in its session's
    recording_failed = QtCore.pyqtSignal(str)

    def __init__(
        self,
        run,
        seed: int,
        backend: str = "numba",
        paused: bool = False,
        take=None,
        parent=None,
        in_process: bool | None = None,
    ):
        super().__init__(parent)
        self.run_config, self.seed, self.backend = run, int(seed), backend
        self.control = RunControl(paused=paused)  # the run's own (in this thread), or the mirror of its process's
        self.take = take  # sessions.Take: where this run records, or None
        self.recorder = None  # recording.RunRecorder while it records (in this thread)
        self.in_process = IN_PROCESS if in_process is None else bool(in_process)
        self.training = None  # the Training (in this thread) while it runs
        self._threads: int | None = None  # threads per pass the controller asked for
        self._conn = None  # the pipe to the run's process, once it started
        self._commands = threading.Lock()  # a command and the pipe's opening never cross
        self._steps_owed = 0  # steps asked for before the run's process could hear them
        self.process = None  # the run's process (multiprocessing.Process), once started

    # ------------------------------------------------------------------ control (any thread)
    def resume(self) -> None:
        self._command("resume")

    def pause(self) -> None:
        self._command("pause")

    def step(self) -> None:
        self._command("step")

    def stop(self) -> None:
        self._command("stop")

    def set_threads(self, threads: int) -> None:
        """Threads per pass (the controller shares the cores between the runs training)."""
        with self._commands:
            self._threads = int(threads)
            if self.training is not None:
                self.training.threads = self._threads
            self._send("threads", self._threads)

    def _command(self, name: str) -> None:
        with self._commands:
            getattr(self.control, name)()
            if self._conn is None and name == "step":
                self._steps_owed += 1
            self._send(name)

    def _send(self, *message) -> None:
        if self._conn is not None:
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                pass  # the run's process has ended: its last messages say how

    @property
    def stopping(self) -> bool:
        return self.control.stopping

    # ------------------------------------------------------------------ the worker thread
    def run(self) -> None:  # QThread override: runs in the new thread
        if not self.in_process:  # the relay keeps nice 0: it only waits and passes batches on, promptly
            try:
                if self.backend != "numba" or self._wait_for_kernels():
                    self._relay()
                else:
                    self.done.emit(RunStatus.STOPPED)
            except Exception:  # noqa: BLE001  (a failed run is a visible status, never a silent dead thread)
                self.failed.emit(traceback.format_exc())
            return
        training = None
        status = RunStatus.FAILED
        lower_priority()
        try:
            if self.backend == "numba" and not self._wait_for_kernels():
                self.done.emit(RunStatus.STOPPED)
                return
            from ..engine.trainer import Training

            training = self.training = Training(self.run_config, self.seed, backend=self.backend)
            with self._commands:
                if self._threads is not None:
                    training.threads = self._threads
            self._start_recording(training)
            self.prepared.emit(training)
            status = self._drive(training)
            self.done.emit(status)
        except Exception:  # noqa: BLE001  (a failed run is a visible status, never a silent dead thread)
            self.failed.emit(traceback.format_exc())
        finally:
            if training is not None:
                self.training = None
                training.close()
            self._stop_recording(status)

    # ------------------------------------------------------------------ the run in a process of its own
    def _relay(self) -> None:
        """Start the run's process (gradscope.run_process.serve) and turn its messages into this thread's signals
        until it has ended."""
        recording = None
        if self.take is not None:
            try:
                if self.take.begin():
                    recording = (str(self.take.path), self.take.experiment)
            except OSError as error:  # the session's folder cannot be made: the run goes on, unrecorded
                self._recording_not_started(str(error), error.strerror, error.filename and str(error.filename))
        context = process_context()
        conn, child_end = context.Pipe()
        paused = self.control.paused
        process = context.Process(
            target=serve,
            args=(child_end, self.run_config, self.seed, self.backend, paused, recording, self._threads),
            name=f"gradscope-run {self.run_config.name}",
            daemon=True,
        )
        try:  # not under the commands' lock: the fork server's first start takes seconds, the GUI never waits
            process.start()
        except BaseException:
            conn.close()
            if recording is not None:
                self.take.closed()
            raise
        finally:
            child_end.close()
        with self._commands:  # what was asked while it started, then commands go straight to it
            self._conn, self.process = conn, process
            if self.control.stopping:
                self._send("stop")
            elif self.control.paused != paused:
                self._send("pause" if self.control.paused else "resume")
            for _ in range(self._steps_owed):
                self._send("step")
            self._steps_owed = 0
        ended = False
        recorder_open = recording is not None
        try:
            while not ended:
                if not conn.poll(STOP_POLL):
                    if not process.is_alive():
                        process.join()
                        if conn.poll():  # its last words arrived as it went
                            continue
                        self.failed.emit(_died(process.exitcode, self.run_config.name))
                        return
                    continue
                try:
                    kind, *args = conn.recv()
                except (EOFError, OSError):
                    process.join()
                    self.failed.emit(_died(process.exitcode, self.run_config.name))
                    return
                if kind == "records":
                    self.records.emit(args[0])
                elif kind == "prepared":
                    self.prepared.emit(args[0])
                elif kind == "state":
                    self.state.emit(args[0])
                elif kind == "recording":
                    if args[0] is not None:
                        self.take.run_dir = Path(args[0])
                elif kind == "recording_failed":
                    recorder_open = False
                    self._recording_not_started(*args)
                elif kind == "recording_stopped":
                    if recorder_open:
                        recorder_open = False
                        self._recording_stopped_by(args[0])
                elif kind in ("done", "failed"):
                    ended = True
                    if recorder_open:  # the store is closed before these are sent
                        recorder_open = False
                        self.take.closed()
                    (self.done if kind == "done" else self.failed).emit(args[0])
        finally:
            with self._commands:
                self._conn = None
            conn.close()  # a process still running hears the pipe end: it stops and closes its store
            process.join(5.0)
            if process.is_alive():  # it said its last (or cannot): never leave it behind
                process.kill()
                process.join()
            if recorder_open:  # after the process: a discarded take's folder goes once nothing writes in it
                self.take.closed()

    def _recording_not_started(self, text: str, strerror: str | None, filename: str | None) -> None:
        self.take.closed()
        why = text
        if filename:  # the file, within the session's folder the dialog names
            where, session = Path(filename), self.take.session.path
            inside = where.is_relative_to(session)
            why = strerror if where == session else f"{where.relative_to(session) if inside else where}: {strerror}"
        self.recording_failed.emit(
            f"{self.run_config.name!r} ({self.take.path.name}/): could not start ({why}); nothing of it is on disk"
        )

    # ------------------------------------------------------------------ recording (gradscope.sessions)
    def _start_recording(self, training) -> None:
        if self.take is None:
            return
        from ..runs import RunResult

        result = RunResult.for_run(self.run_config, self.seed)  # the recorder's own: the GUI thread has the other
        result.prepare(training)
        try:
            self.recorder = self.take.start(result)
        except (OSError, ValueError) as error:  # an unwritable folder (ConfigError: one already recorded there)
            filename = getattr(error, "filename", None)
            self._recording_not_started(str(error), getattr(error, "strerror", None), filename and str(filename))

    def _record(self, record) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        recorder.add(record)
        if recorder.result.store_error:
            self._recording_stopped()

    def _recording_stopped(self) -> None:
        recorder, self.recorder = self.recorder, None
        self._recording_stopped_by(str(recorder.result.store_error))

    def _recording_stopped_by(self, error: str) -> None:
        """The store failed mid-run (``error``, e.g. "PATH: File too large"): the take closes, and the note names
        PATH within the run's folder and what the store kept."""
        self.take.closed()
        error = error.replace(f"{self.take.path}{os.sep}", "")
        self.recording_failed.emit(
            f"{self.run_config.name!r} ({self.take.path.name}/): stopped ({error}); {self.take.kept()}"
        )

    def _stop_recording(self, status: RunStatus) -> None:
        """The last records and the run's final status to its store, before the thread ends."""
        recorder = self.recorder
        if recorder is None:
            return
        recorder.close(status)
        if recorder.result.store_error:
            self._recording_stopped()
        else:
            self.recorder = None
            self.take.closed()

    def _wait_for_kernels(self) -> bool:
        """Wait until the compiler has this model's kernels; False if stopped meanwhile."""
        spec = self.run_config.model_spec()
        ready = compiler().request(spec)
        while not ready.wait(STOP_POLL):
            if self.control.stopping:
                return False
        error = compiler().error(spec)
        if error:
            raise RuntimeError(f"compiling the kernels failed:\n{error}")
        return not self.control.stopping

    def _drive(self, training) -> RunStatus:
        """runs.drive (the command line's loop too), its records sent in batches, recorded as they come."""

        def on_record(record) -> None:
            # the batch reaches the GUI thread up to EMIT_INTERVAL later, after more steps: own the arrays, in
            # case the engine reuses its buffers between steps (the CLI appends before the next step)
            record.metrics = {name: np.array(value) for name, value in record.metrics.items()}
            self._record(record)

        return drive_in_batches(
            training, self.control, self.records.emit, on_record=on_record, on_state=self.state.emit
        )


def _died(exitcode: int | None, name: str) -> str:
    """The failure text of a run whose process ended without a verdict: one line that says how, and that what
    it computed until then is kept."""
    import signal

    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return (
        f"RunProcessDied: the process of run {name!r} ended without finishing ({how}; out of memory is one "
        "cause); the records it sent before are kept"
    )
