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
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import time
import traceback
from pathlib import Path

import numpy as np
from PyQt6 import QtCore

from ..runs import RunControl, RunStatus, drive

EMIT_INTERVAL = 0.05  # seconds between batches: <= 20 signals per second per run
STOP_POLL = 0.05  # seconds between stop checks while waiting for the compiler
WORKER_NICE = 10  # workers' niceness: the GUI thread (nice 0) gets the CPU first


def lower_priority() -> None:
    """Let the calling thread yield the CPU to the GUI thread.

    Linux schedules threads individually, and nice 10 weighs a thread about ten times less than nice 0: with
    5 runs (and their kernels' OpenMP threads, which inherit the niceness) on 2 cores, the GUI thread still gets
    the CPU within milliseconds.  Elsewhere (or if refused) nothing changes.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except (AttributeError, OSError):
        pass


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

    prepared = QtCore.pyqtSignal(object)  # the Training object (spec, task, init_params, first_batch)
    records = QtCore.pyqtSignal(object)  # list[Record] in iteration order
    state = QtCore.pyqtSignal(object)  # RunStatus.RUNNING | RunStatus.PAUSED
    done = QtCore.pyqtSignal(object)  # RunStatus.COMPLETED | DIVERGED | STOPPED
    failed = QtCore.pyqtSignal(str)  # traceback text
    # "'a' (001-a/): stopped (why); its iterations 0-41 are kept": the run's folder in its session's
    recording_failed = QtCore.pyqtSignal(str)

    def __init__(self, run, seed: int, backend: str = "numba", paused: bool = False, take=None, parent=None):
        super().__init__(parent)
        self.run_config, self.seed, self.backend = run, int(seed), backend
        self.control = RunControl(paused=paused)
        self.take = take  # sessions.Take: where this run records, or None
        self.recorder = None  # recording.RunRecorder while it records

    # ------------------------------------------------------------------ control (any thread)
    def resume(self) -> None:
        self.control.resume()

    def pause(self) -> None:
        self.control.pause()

    def step(self) -> None:
        self.control.step()

    def stop(self) -> None:
        self.control.stop()

    @property
    def stopping(self) -> bool:
        return self.control.stopping

    # ------------------------------------------------------------------ the worker thread
    def run(self) -> None:  # QThread override: runs in the new thread
        training = None
        status = RunStatus.FAILED
        lower_priority()
        try:
            if self.backend == "numba" and not self._wait_for_kernels():
                self.done.emit(RunStatus.STOPPED)
                return
            from ..engine.trainer import Training

            training = Training(self.run_config, self.seed, backend=self.backend)
            self._start_recording(training)
            self.prepared.emit(training)
            status = self._drive(training)
            self.done.emit(status)
        except Exception:  # noqa: BLE001  (a failed run is a visible status, never a silent dead thread)
            self.failed.emit(traceback.format_exc())
        finally:
            if training is not None:
                training.close()
            self._stop_recording(status)

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
            why = str(error)
            if getattr(error, "filename", None):  # the file, within the session's folder the dialog names
                where, session = Path(error.filename), self.take.session.path
                inside = where.is_relative_to(session)
                why = (
                    error.strerror
                    if where == session
                    else f"{where.relative_to(session) if inside else where}: {error.strerror}"
                )
            self.recording_failed.emit(
                f"{self.run_config.name!r} ({self.take.path.name}/): could not start ({why}); nothing of it is on disk"
            )

    def _record(self, record) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        recorder.add(record)
        if recorder.result.store_error:
            self._recording_stopped()

    def _recording_stopped(self) -> None:
        recorder, self.recorder = self.recorder, None
        self.take.closed()
        # "PATH: File too large", PATH within the run's folder, which the note names
        error = str(recorder.result.store_error).replace(f"{self.take.path}{os.sep}", "")
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
        """runs.drive (the command line's loop too), its records sent in batches."""
        pending: list = []
        last_emit = time.monotonic()

        def flush() -> None:
            if pending:
                self.records.emit(list(pending))
                pending.clear()

        def on_record(record) -> None:
            nonlocal last_emit
            # the batch reaches the GUI thread up to EMIT_INTERVAL later, after more steps: own the arrays, in
            # case the engine reuses its buffers between steps (the CLI appends before the next step)
            record.metrics = {name: np.array(value) for name, value in record.metrics.items()}
            self._record(record)
            pending.append(record)
            if self.control.paused or time.monotonic() - last_emit >= EMIT_INTERVAL:
                flush()
                last_emit = time.monotonic()

        def on_state(status: RunStatus) -> None:
            flush()  # what was computed before a pause shows during it
            self.state.emit(status)

        try:
            return drive(training, self.control, on_record=on_record, on_state=on_state)
        finally:
            flush()
