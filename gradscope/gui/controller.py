"""The run controller: the experiment's runs, their live traces and their worker threads.

It owns one ``RunState`` per run and starts a ``TrainingThread`` for a run when asked to run or step it.
Batches of records arrive by signal on the GUI thread and are appended to the run's Trace there (the only
writer), so views read traces without locks.  Nothing here draws: the main window's timer redraws the views.

Statuses: queued -> compiling -> running <-> paused -> completed | diverged | stopped | failed.
"""
from __future__ import annotations

import itertools
import os
import time

from PyQt6 import QtCore

from .. import io as gio
from ..trace import Trace
from . import style
from .model import RunData
from .worker import TrainingThread, compiler, kernel_key

TRACE_BYTES = 96 * 2**20          # per run: past this the trace thins itself (keeps every other older row)
FINISHED = ("completed", "diverged", "stopped", "failed")


class RunState:
    """One run of the experiment as the app holds it."""

    _keys = itertools.count()

    def __init__(self, run, color: str):
        self.key = next(RunState._keys)
        self.run = run
        self.data = RunData(self.key, run.name, color, Trace(max_bytes=TRACE_BYTES), run=run)
        self.status = "queued"
        self.detail = ""                   # e.g. "kernel 3/8" while compiling
        self.error: str | None = None      # traceback of a failed run
        self.nonfinite = None
        self.thread: TrainingThread | None = None
        self.training = None               # the engine's Training (init_params, first_batch, task)
        self.iteration = -1                # last iteration computed
        self.iterations_per_second = 0.0
        self.wall_seconds = 0.0
        self.loaded = False                # came from an exported folder: nothing to run
        self.init_params = None
        self._rate_window: list[tuple[float, int]] = []

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    def status_text(self) -> str:
        if self.status == "diverged" and self.nonfinite is not None:
            nf = self.nonfinite
            where = [f"iteration {nf.iteration}"] if nf.iteration is not None else []
            if nf.layer is not None:
                where.append(f"layer {nf.layer}")
            if nf.timestep is not None:
                where.append(f"t = {nf.timestep}")
            return f"diverged at {', '.join(where)} ({nf.quantity})"
        if self.status == "compiling" and self.detail:
            return f"compiling kernels {self.detail}"
        if self.status == "failed":
            return "failed (double-click for the traceback)"
        return self.status

    def note_rate(self, iteration: int) -> None:
        """Iterations per second over the last ~2 seconds."""
        now = time.monotonic()
        self._rate_window.append((now, iteration))
        while len(self._rate_window) > 2 and now - self._rate_window[0][0] > 2.0:
            self._rate_window.pop(0)
        (t0, i0), (t1, i1) = self._rate_window[0], self._rate_window[-1]
        self.iterations_per_second = (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0


class Controller(QtCore.QObject):
    """Runs of one experiment: start, pause, step, stop, reset; edits; results for export."""

    runs_changed = QtCore.pyqtSignal()            # runs added, removed, renamed or re-coloured
    run_updated = QtCore.pyqtSignal(int)          # a run's status or counters changed (its key)
    compile_progress = QtCore.pyqtSignal(int, int, str)   # done, total, kernel name
    message = QtCore.pyqtSignal(str)              # for the status bar

    def __init__(self, backend: str = "numba", parent=None):
        super().__init__(parent)
        self.backend = backend
        self.experiment = None
        self.states: list[RunState] = []
        self.paused = False                        # the user's last choice: run or pause
        self._retired: list[TrainingThread] = []    # stopped threads not yet ended: kept alive until they end
        compiler().progress.connect(self._on_compiling)         # created here, in the GUI thread
        self.run_updated.connect(self._share_cores)              # after every change of a run's status

    # ------------------------------------------------------------------------------------ the runs
    def load(self, experiment, results=None) -> None:
        """Replace the runs by the experiment's (stopping any running ones).  With ``results`` (an exported
        folder), the runs come with their traces and nothing needs to run."""
        self.shutdown()
        self.experiment = experiment
        self.states = []
        for index, run in enumerate(experiment.runs):
            self.states.append(RunState(run, style.run_color(index)))
        if results is not None:
            by_name = {r.name: r for r in results}
            for state in self.states:
                result = by_name.get(state.name)
                if result is None:
                    continue
                state.data.trace = result.trace
                state.data.first_batch = result.first_batch
                state.data.loss_kind = result.loss_kind
                state.data.baseline_loss = result.baseline_loss
                state.status = result.status
                state.nonfinite = result.nonfinite
                state.error = result.error
                state.iteration = result.iterations - 1
                state.wall_seconds = result.wall_seconds
                state.loaded = True
                state.init_params = result.init_params
        self.paused = False
        self.runs_changed.emit()

    def run_data(self) -> list[RunData]:
        return [s.data for s in self.states]

    def state(self, key: int) -> RunState:
        for s in self.states:
            if s.key == key:
                return s
        raise KeyError(f"no run with key {key}")

    def add_run(self, run) -> RunState:
        state = RunState(_unique_name(run, self.states), style.run_color(self._free_color_index()))
        state.data.name = state.run.name
        state.data.run = state.run
        self.states.append(state)
        self._sync_experiment()
        self.runs_changed.emit()
        return state

    def duplicate_run(self, key: int) -> RunState:
        return self.add_run(self.state(key).run)

    def remove_run(self, key: int) -> None:
        state = self.state(key)
        self._stop_thread(state, wait=True)
        self.states.remove(state)
        self._sync_experiment()
        self.runs_changed.emit()

    def update_run(self, key: int, run) -> None:
        """Replace a run's settings: it is stopped and its trace cleared (the old trace no longer matches)."""
        state = self.state(key)
        others = [s for s in self.states if s is not state]
        run = _unique_name(run, others)
        self._stop_thread(state, wait=True)
        state.run = run
        self._clear(state)
        state.data.run = run
        state.data.name = run.name
        state.data.invalidate()
        self._sync_experiment()
        self.runs_changed.emit()

    def set_visible(self, key: int, visible: bool) -> None:
        """Show or hide a run in the views (run_updated, not runs_changed: the run list keeps its rows, one of
        which may be emitting this very change)."""
        self.state(key).data.visible = bool(visible)
        self.run_updated.emit(key)

    def _free_color_index(self) -> int:
        used = {s.data.color for s in self.states}
        for i, color in enumerate(style.RUN_COLORS):
            if color not in used:
                return i
        return len(self.states)

    def _sync_experiment(self) -> None:
        if self.experiment is not None:
            self.experiment = self.experiment.model_copy(update={"runs": [s.run for s in self.states]})

    # ---------------------------------------------------------------------------------- control
    def start(self) -> None:
        """Run every run that is not finished: start threads for queued runs, resume paused ones."""
        self.paused = False
        for state in self.states:
            if state.finished or state.loaded:
                continue
            if state.thread is None:
                self._launch(state, paused=False)
            else:
                state.thread.resume()

    def pause(self) -> None:
        self.paused = True
        for state in self.states:
            if state.busy:
                state.thread.pause()

    def step(self) -> None:
        """One more iteration of every unfinished run (starting paused runs that never ran)."""
        self.paused = True
        for state in self.states:
            if state.finished or state.loaded:
                continue
            if state.thread is None:
                self._launch(state, paused=True)
            else:
                state.thread.pause()
            state.thread.step()

    def stop(self) -> None:
        """Stop every run; what they recorded stays."""
        for state in self.states:
            if state.thread is not None:
                state.thread.stop()

    def reset(self) -> None:
        """Stop everything and clear the traces: every run back to queued (loaded runs too)."""
        for state in self.states:
            self._stop_thread(state, wait=True)
            self._clear(state)
        self.paused = False
        self.runs_changed.emit()

    def shutdown(self, timeout_ms: int | None = 5000) -> bool:
        """Stop every worker and wait for them (closing the window; None waits as long as it takes).

        A worker ends within one training step (a compile never holds it: see worker.KernelCompiler).
        Threads still running at the deadline are kept referenced until they end, never destroyed running.
        Returns True if all ended in time.
        """
        threads = [s.thread for s in self.states if s.thread is not None] + self._retired
        for thread in threads:
            thread.stop()
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        ok = True
        for thread in threads:
            if deadline is None:
                thread.wait()
            else:
                ok &= thread.wait(max(0, int((deadline - time.monotonic()) * 1000)))
        self._retired = [t for t in threads if t.isRunning()]
        return ok

    @property
    def any_busy(self) -> bool:
        return any(s.busy for s in self.states)

    # ---------------------------------------------------------------------------------- threads
    def _launch(self, state: RunState, paused: bool) -> None:
        seed = state.run.effective_seed(self.experiment.seed if self.experiment is not None else 0)
        thread = TrainingThread(state.run, seed, backend=self.backend, paused=paused)
        key = state.key
        # every slot gets the run's key and the thread, so late signals of a replaced thread are ignored
        thread.prepared.connect(lambda training: self._on_prepared(key, thread, training))
        thread.records.connect(lambda records: self._on_records(key, thread, records))
        thread.state.connect(lambda s: self._on_state(key, thread, s))
        thread.done.connect(lambda status: self._on_done(key, thread, status))
        thread.failed.connect(lambda text: self._on_failed(key, thread, text))
        thread.finished.connect(lambda: self._on_thread_finished(key, thread))
        state.thread = thread
        state.status = "compiling" if self.backend == "numba" else "running"
        state.detail = ""
        thread.start()
        self.run_updated.emit(key)

    def _stop_thread(self, state: RunState, wait: bool) -> None:
        thread = state.thread
        if thread is None:
            return
        thread.stop()
        if wait:
            thread.wait()
        elif thread.isRunning():
            self._retired.append(thread)
        state.thread = None

    def _clear(self, state: RunState) -> None:
        state.data.trace = Trace(max_bytes=TRACE_BYTES)
        state.data.first_batch = None
        state.training = None
        state.init_params = None
        state.status = "queued"
        state.detail = ""
        state.error = None
        state.nonfinite = None
        state.iteration = -1
        state.iterations_per_second = 0.0
        state.wall_seconds = 0.0
        state.loaded = False
        state._rate_window.clear()
        self.run_updated.emit(state.key)

    def _current(self, key: int, thread: TrainingThread) -> RunState | None:
        """The run a signal is about, or None when the run was removed or its thread replaced meanwhile."""
        for s in self.states:
            if s.key == key:
                return s if s.thread is thread else None
        return None

    # ---------------------------------------------------------------------------------- slots
    def _on_compiling(self, kernels, done, total, name) -> None:
        """Progress of the kernel compiler: shown on the runs waiting for those kernels."""
        self.compile_progress.emit(done, total, name)
        for state in self.states:
            if state.status == "compiling" and kernel_key(state.run.model_spec()) == kernels:
                state.detail = f"{done}/{total}"
                self.run_updated.emit(state.key)

    def _on_prepared(self, key, thread, training) -> None:
        state = self._current(key, thread)
        if state is None:
            return
        state.training = training
        state.init_params = training.init_params
        state.data.first_batch = training.first_batch
        state.data.loss_kind = training.task.loss_kind
        state.data.baseline_loss = training.task.baseline_loss
        state.data.invalidate()
        if not thread.stopping:
            state.status = "paused" if self.paused else "running"
        self.run_updated.emit(key)

    def _on_records(self, key, thread, records) -> None:
        state = self._current(key, thread)
        if state is None:
            return
        trace = state.data.trace
        for record in records:
            if record.recorded:
                trace.append(record)
            state.iteration = record.iteration
            state.wall_seconds += record.seconds
            if record.nonfinite is not None:
                state.nonfinite = record.nonfinite
        state.note_rate(state.iteration)
        self.run_updated.emit(key)

    def _on_state(self, key, thread, s) -> None:
        state = self._current(key, thread)
        if state is not None and not state.finished:
            state.status = s
            self.run_updated.emit(key)

    def _share_cores(self, _key=None) -> None:
        """The cores go to the runs, not to their shards: with k runs training, each pass runs its batch
        shards on cpus // k threads (at least 1), so several runs never queue for one pool of shard threads.
        Threads change only the speed of a pass, never its numbers (engine.shard_rows)."""
        running = [s.training for s in self.states if s.training is not None and s.status == "running"]
        threads = max(1, (os.cpu_count() or 1) // max(1, len(running)))
        for training in running:
            training.threads = threads

    def _on_done(self, key, thread, status) -> None:
        state = self._current(key, thread)
        if state is None:
            return
        state.status = status
        state.iterations_per_second = 0.0
        if status == "diverged":
            self.message.emit(f"{state.name}: {state.status_text()}")
        self.run_updated.emit(key)

    def _on_failed(self, key, thread, text) -> None:
        state = self._current(key, thread)
        if state is None:
            return
        state.status = "failed"
        state.error = text
        state.iterations_per_second = 0.0
        last = text.strip().splitlines()[-1] if text.strip() else "error"
        self.message.emit(f"{state.name} failed: {last}")
        self.run_updated.emit(key)

    def _on_thread_finished(self, key, thread) -> None:
        if thread in self._retired:
            self._retired.remove(thread)
        state = self._current(key, thread)
        if state is not None:
            if not state.finished:
                state.status = "stopped"      # ended without a verdict (e.g. stopped while compiling)
            state.thread = None
            self.run_updated.emit(key)

    # ---------------------------------------------------------------------------------- export
    def results(self) -> list[gio.RunResult]:
        """A RunResult per run with data, as gradscope.io.export_experiment takes them."""
        out = []
        for state in self.states:
            if not len(state.data.trace) and state.status != "failed":
                continue
            status = {"completed": "completed", "diverged": "diverged", "failed": "failed"}.get(state.status,
                                                                                              "stopped")
            training = state.training
            init_params = training.init_params if training is not None else state.init_params
            out.append(gio.RunResult(
                name=state.name, run=state.run, trace=state.data.trace, status=status,
                iterations=state.iteration + 1, wall_seconds=state.wall_seconds,
                loss_kind=state.data.loss_kind or "mse", nonfinite=state.nonfinite, init_params=init_params,
                first_batch=state.data.first_batch, error=state.error,
                seed=state.run.effective_seed(self.experiment.seed if self.experiment else 0),
                baseline_loss=state.data.baseline_loss,
                description=training.task.description if training is not None else ""))
        return out


def _unique_name(run, others: list[RunState]):
    """The run, renamed "name (2)", "name (3)" ... if another run already has its name."""
    taken = {s.run.name for s in others}
    if run.name not in taken:
        return run
    base = run.name
    for n in itertools.count(2):
        candidate = f"{base} ({n})"
        if candidate not in taken:
            return run.model_copy(update={"name": candidate})
