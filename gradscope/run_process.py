"""One run in a process of its own, driven through a pipe: what the app's workers start (gui/worker.py).

Why a process and not a thread of the app: a thread of the app's process shares its interpreter lock with the
GUI thread.  Measured with five live runs under the window (benchmarks/bench_gui.py, 2026-12-07, py-spy --gil and
each thread's CPU from /proc): the GUI thread held the lock ~40% of the time and the runs' recorders (zarr and
its asyncio threads) another ~12%; the runs, which need the lock between their kernels, made ~45% of their
headless iterations while the machine still had ~20% of its cores idle, and the GUI waited for the lock in turn
(its 10 ms timer fired up to 330 ms late).  In a process of its own a run shares nothing with the window but
this pipe.

The child (``serve``) builds the run's Training, records it (the app's session folder, gradscope.recording), and
drives it with runs.drive, the command line's loop.  It sends, in order::

    ("prepared", Prepared)           what the app needs of the Training before its first record
    ("records", [Record, ...])       batches, at most 1 / EMIT_INTERVAL per second (and before a pause)
    ("state", RunStatus)             RUNNING / PAUSED
    ("recording", path | None)       the run's store folder once it records (None: the take was discarded)
    ("recording_failed", text, strerror, file)  the recorder could not start (the error, the file it names)
    ("recording_stopped", error)     the store failed mid-run (full disk...): the run goes on in memory
    ("done", RunStatus)              COMPLETED / DIVERGED / STOPPED, after the store is closed
    ("failed", traceback text)       anything raised, after the store is closed

and obeys ``("resume",) ("pause",) ("step",) ("stop",) ("threads", n)`` between iterations.  If the app's
process dies, the pipe ends: the run stops at its next iteration, closes its store (what was computed stays on
disk) and the process exits.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from .runs import RunControl, RunResult, RunStatus, drive

EMIT_INTERVAL = 0.05  # seconds between batches: <= 20 messages per second per run
WORKER_NICE = 19  # the runs' niceness: the app's GUI thread (nice 0) gets the CPU first
_context = None


@dataclass
class Prepared:
    """The part of an engine Training the app reads before the first record (RunResult.prepare reads it as it
    reads a Training: ``task.loss_kind``, ``init_params``, ``analysis.on`` ...)."""

    task: SimpleNamespace
    init_params: object  # engine.params.Params
    first_batch: object
    analysis: SimpleNamespace
    analysis_h0: object

    @classmethod
    def of(cls, training) -> Prepared:
        task = training.task
        return cls(
            task=SimpleNamespace(
                loss_kind=task.loss_kind,
                baseline_loss=task.baseline_loss,
                accuracy_ceiling=task.accuracy_ceiling,
                description=task.description,
            ),
            init_params=training.init_params,
            first_batch=training.first_batch,
            analysis=SimpleNamespace(on=bool(training.analysis.on)),
            analysis_h0=training.analysis_h0 if training.analysis.on else None,
        )


def process_context():
    """Where runs' processes come from: a fork server that has imported the engine once (each run's process is
    forked from it in milliseconds, never from this process, which has Qt's threads); spawn where there is no
    fork server."""
    global _context
    if _context is None:
        import multiprocessing

        if "forkserver" in multiprocessing.get_all_start_methods():
            _context = multiprocessing.get_context("forkserver")
            multiprocessing.set_forkserver_preload(["gradscope.run_process", "gradscope.engine.trainer"])
        else:
            _context = multiprocessing.get_context("spawn")
    return _context


def lower_priority() -> None:
    """Let the calling thread (and the threads it starts, which inherit it) yield the CPU to the GUI thread.

    Linux schedules threads individually, and nice 10 weighs a thread about ten times less than nice 0.
    Elsewhere (or if refused) nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except (AttributeError, OSError):
        pass


def serve(conn, run_config, seed: int, backend: str, paused: bool, recording: tuple | None, threads: int | None):
    """The child process's main: one run, driven through ``conn`` (see the module's docstring).

    ``recording``: (the take's folder, its one-run experiment) to record into, or None."""
    lower_priority()
    # The app's process ends its runs through the pipe (stop, or its end closing).  Ctrl+C in its terminal is
    # the app's to handle, and the SIGTERM multiprocessing sends its daemon children at exit is a stop: the
    # run ends at its next iteration and closes its store, never mid-step.
    main = threading.current_thread() is threading.main_thread()  # a process of its own (tests call it in a thread)
    if main:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sent = threading.Lock()  # the listener's replies and the run's messages share the pipe

    control = RunControl(paused=paused)

    def send(*message) -> None:
        """To the app; once it is gone (its end of the pipe closed), the run stops at its next iteration."""
        with sent:
            try:
                conn.send(message)
            except (OSError, EOFError, ValueError):
                control.stop()

    training = None
    recorder = None

    def listen() -> None:
        """Commands from the app; the pipe's end (the app closed or died) is a stop."""
        while True:
            try:
                command, *args = conn.recv()
            except (EOFError, OSError):
                control.stop()
                return
            if command == "threads":
                if training is not None:
                    training.threads = args[0]
            elif command in ("resume", "pause", "step", "stop"):
                getattr(control, command)()

    threading.Thread(target=listen, name="gradscope-run-control", daemon=True).start()
    if main:
        signal.signal(signal.SIGTERM, lambda _signum, _frame: control.stop())
    status = RunStatus.FAILED
    error = None
    try:
        from .engine.trainer import Training

        training = Training(run_config, seed, backend=backend)
        if threads is not None:
            training.threads = threads
        if recording is not None:
            recorder = _start_recording(send, recording, run_config, seed, training)
        send("prepared", Prepared.of(training))

        def on_record(record) -> None:
            nonlocal recorder
            if recorder is not None:
                recorder.add(record)
                if recorder.result.store_error:
                    send("recording_stopped", str(recorder.result.store_error))
                    recorder = None

        status = drive_in_batches(
            training,
            control,
            lambda batch: send("records", batch),
            on_record=on_record,
            on_state=lambda state: send("state", state),
        )
    except BaseException:  # noqa: BLE001  (a failed run is a visible status in the app, with its traceback)
        error = traceback.format_exc()
    finally:
        if training is not None:
            training.close()
        if recorder is not None:
            recorder.close(status if error is None else RunStatus.FAILED)
            if recorder.result.store_error:
                send("recording_stopped", str(recorder.result.store_error))
        send("failed", error) if error is not None else send("done", status)


def drive_in_batches(training, control: RunControl, send_batch, *, on_record=None, on_state=None) -> RunStatus:
    """runs.drive, its records handed to ``send_batch(list)`` in batches: at most one per EMIT_INTERVAL, at once
    while paused, and before every change of state (what was computed before a pause shows during it).
    ``on_record(record)`` sees each record first.  The app's runs, in a process of their own or in its threads."""
    pending: list = []
    last = time.monotonic()

    def flush() -> None:
        if pending:
            send_batch(list(pending))
            pending.clear()

    def record(r) -> None:
        nonlocal last
        if on_record is not None:
            on_record(r)
        pending.append(r)
        if control.paused or time.monotonic() - last >= EMIT_INTERVAL:
            flush()
            last = time.monotonic()

    def state(status: RunStatus) -> None:
        flush()
        if on_state is not None:
            on_state(status)

    try:
        return drive(training, control, on_record=record, on_state=state)
    finally:
        flush()


def _start_recording(send, recording: tuple, run_config, seed: int, training):
    """The run's recorder in the take's folder; a folder that cannot be written is reported, never raised."""
    from .recording import Recording, RunRecorder

    path, experiment = recording
    result = RunResult.for_run(run_config, seed)
    result.prepare(training)
    try:
        run_dir = Recording.start(Path(path), experiment).run_dir(0, result.name)
        recorder = RunRecorder(run_dir, result)
    except (OSError, ValueError) as error:  # an unwritable folder (ConfigError: one already recorded there)
        filename = getattr(error, "filename", None)
        send("recording_failed", str(error), getattr(error, "strerror", None), filename and str(filename))
        return None
    send("recording", str(run_dir))
    return recorder
