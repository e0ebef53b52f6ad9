"""The run controller: the experiment's runs, their live traces and their worker threads.

It owns one ``RunState`` per run (its gradscope.runs.RunResult, the type the command line exports, plus what
the app needs to drive it) and queues the runs asked to run: at most ``runs_at_once`` of them have a
``TrainingThread`` at a time; the others show "queued" and start, in order, as workers end.  Batches of records
arrive by signal on the GUI thread and are added to the run's RunResult there (the only writer), so views read
traces without locks.  Nothing here draws: the main window's timer redraws the views.

Statuses (runs.RunStatus): queued -> compiling -> running <-> paused -> completed | diverged | stopped | failed.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import replace

from PyQt6 import QtCore

from ..runs import RunResult, RunStatus
from . import style
from .model import RunData, RunState, default_runs_at_once, fresh_result
from .worker import TrainingThread, compiler, kernel_key


class Controller(QtCore.QObject):
    """Runs of one experiment: start, pause, step, stop, reset; edits; results for export."""

    runs_changed = QtCore.pyqtSignal()  # runs added, removed, renamed or re-coloured
    run_updated = QtCore.pyqtSignal(int)  # a run's status or counters changed (its key)
    compile_progress = QtCore.pyqtSignal(int, int, str)  # done, total, kernel name
    message = QtCore.pyqtSignal(str)  # for the status bar
    recording_failed = QtCore.pyqtSignal(str)  # a run's recording stopped: which folder, why, what it kept

    def __init__(self, backend: str = "numba", runs_at_once: int | None = None, parent=None):
        super().__init__(parent)
        self.backend = backend
        self.experiment = None
        self.states: list[RunState] = []
        self.paused = False  # the user's last choice: run or pause
        self.runs_at_once = max(1, int(runs_at_once or default_runs_at_once()))  # runs with a worker, at most
        self._waiting: list[RunState] = []  # asked to run, no worker yet: started first come, first served
        self._retired: list[TrainingThread] = []  # stopped threads not yet ended: kept alive until they end
        self._by_key: dict[int, RunState] = {}  # self.states by key (rebuilt when the list changed)
        self._threads: dict[int, RunState] = {}  # the runs given a worker (pruned by _working)
        self._queued: set[int] = set()  # keys of _waiting
        self.session = None  # sessions.Session: every run launched records into it (gui/session.py)
        self._takes: dict[int, object] = {}  # run key -> its sessions.Take (the run's recording on disk)
        compiler().progress.connect(self._on_compiling)  # created here, in the GUI thread
        self.run_updated.connect(self._share_cores)  # after every change of a run's status

    # ------------------------------------------------------------------------------------ the runs
    def load(self, experiment, results=None) -> None:
        """Replace the runs by the experiment's (stopping any running ones).  With ``results`` (an exported
        folder), the runs come with their traces and nothing needs to run."""
        self.shutdown()
        for state in self.states:  # their traces go: so do their recordings
            self._discard_take(state)
        self.experiment = experiment
        self.states = []
        for index, run in enumerate(experiment.runs):
            self.states.append(RunState(run, style.run_color(index)))
        self._by_key = {s.key: s for s in self.states}
        if results is not None:
            by_name = {r.name: r for r in results}
            for state in self.states:
                result = by_name.get(state.name)
                if result is not None:
                    state.data.result = result
                    state.loaded = True
        self.paused = False
        self.runs_changed.emit()

    def add_loaded(self, experiment, results) -> list[RunState]:
        """Add an exported (or recorded) folder's runs to those shown, with their traces: an overlay.  A run
        whose name is taken is renamed "name (2)"; each gets a colour not in use."""
        if self.experiment is None:
            self.load(experiment, results)
            return list(self.states)
        added = []
        for run, result in zip(experiment.runs, results):
            state = RunState(_unique_name(run, self.states), style.run_color(self._free_color_index()))
            state.data.result = replace(result, name=state.run.name, run=state.run)
            state.loaded = True
            self.states.append(state)
            added.append(state)
        self._sync_experiment()
        self.runs_changed.emit()
        return added

    def run_data(self) -> list[RunData]:
        return [s.data for s in self.states]

    def state(self, key: int) -> RunState:
        """The run with this key (a dict lookup: signals name runs by key, thousands of runs are fine)."""
        state = self._by_key.get(key)
        if state is None:
            raise KeyError(f"no run with key {key}")
        return state

    def add_run(self, run) -> RunState:
        state = RunState(_unique_name(run, self.states), style.run_color(self._free_color_index()))
        self.states.append(state)
        self._by_key[state.key] = state
        self._sync_experiment()
        self.runs_changed.emit()
        return state

    def duplicate_run(self, key: int) -> RunState:
        return self.add_run(self.state(key).run)

    def remove_run(self, key: int) -> None:
        state = self.state(key)
        self._stop_thread(state, wait=True)
        self._unqueue(state)
        self._discard_take(state)
        self.states.remove(state)
        del self._by_key[key]
        self._sync_experiment()
        self.runs_changed.emit()
        self._fill_slots()

    def update_run(self, key: int, run) -> None:
        """Replace a run's settings: it is stopped and its trace cleared (the old trace no longer matches)."""
        state = self.state(key)
        others = [s for s in self.states if s is not state]
        run = _unique_name(run, others)
        self._stop_thread(state, wait=True)
        self._clear(state, run)
        state.data.invalidate()
        self._sync_experiment()
        self.runs_changed.emit()
        self._fill_slots()

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
        """Run every run that is not finished: resume paused ones, queue the others (they start as workers
        become free)."""
        self.paused = False
        for state in self.states:
            if state.finished or state.loaded:
                continue
            if state.thread is None:
                self._enqueue(state)
            else:
                state.thread.resume()
        self._fill_slots()

    def pause(self) -> None:
        """Hold every run between iterations; queued runs stay queued."""
        self.paused = True
        for state in self.states:
            if state.busy:
                state.thread.pause()

    def step(self) -> None:
        """One more iteration of every run with a worker; queued runs that find a free worker start with one
        iteration, the others stay queued."""
        self.paused = True
        for state in self.states:
            if state.finished or state.loaded:
                continue
            if state.thread is None:
                self._enqueue(state)
            else:
                state.thread.pause()
                state.thread.step()
        self._fill_slots(step=True)

    def stop(self) -> None:
        """Stop every run; what they recorded stays.  Queued runs are stopped before they start."""
        for state in self.states:
            if state.thread is not None:
                state.thread.stop()
        waiting, self._waiting = self._waiting, []
        for state in waiting:
            state.status = RunStatus.STOPPED
            self.run_updated.emit(state.key)

    def reset(self) -> None:
        """Stop everything and clear the traces: every run back to queued (loaded runs too), none waiting."""
        self._waiting = []
        for state in self.states:
            self._stop_thread(state, wait=True)
            self._clear(state)
        self.paused = False
        self.runs_changed.emit()

    def set_runs_at_once(self, n: int) -> None:
        """At most ``n`` runs with a worker from now on (runs already training go on; more start if allowed)."""
        self.runs_at_once = max(1, int(n))
        self._fill_slots()

    def shutdown(self, timeout_ms: int | None = 5000) -> bool:
        """Stop every worker and wait for them (closing the window; None waits as long as it takes).

        A worker ends within one training step (a compile never holds it: see worker.KernelCompiler).
        Threads still running at the deadline are kept referenced until they end, never destroyed running.
        Returns True if all ended in time.
        """
        self._waiting = []
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
        return any(s.busy for s in self._working())

    def _working(self) -> list[RunState]:
        """The runs that have a worker thread (at most runs_at_once, whatever the number of runs)."""
        self._threads = {k: s for k, s in self._threads.items() if s.thread is not None and self._by_key.get(k) is s}
        return list(self._threads.values())

    @property
    def queued(self) -> list[RunState]:
        """The runs waiting for a worker, in the order they will start."""
        return list(self._waiting)

    # ---------------------------------------------------------------------------------- the queue
    def _enqueue(self, state: RunState) -> None:
        if state.key not in self._queued_keys():  # a set: queueing 10 000 runs is linear
            self._waiting.append(state)
            self._queued.add(state.key)

    def _unqueue(self, state: RunState) -> None:
        if state.key in self._queued_keys():
            self._waiting.remove(state)
            self._queued.discard(state.key)

    def _queued_keys(self) -> set[int]:
        """The keys of self._waiting (kept beside it; rebuilt if the list was replaced or popped)."""
        if len(self._queued) != len(self._waiting):
            self._queued = {s.key for s in self._waiting}
        return self._queued

    def _fill_slots(self, step: bool = False) -> None:
        """Give waiting runs a worker while fewer than runs_at_once have one.  While paused only a step starts
        runs (with its one iteration): a run started paused would hold a worker and do nothing."""
        if self.paused and not step:
            return
        while self._waiting and len(self._working()) < self.runs_at_once:
            state = self._waiting.pop(0)
            self._launch(state, paused=self.paused)
            if step:
                state.thread.step()

    # ---------------------------------------------------------------------------------- threads
    def _launch(self, state: RunState, paused: bool) -> None:
        seed = state.run.effective_seed(self.experiment.seed if self.experiment is not None else 0)
        state.result.seed = seed
        key = state.key
        take = None
        if self.session is not None and self.experiment is not None:
            take = self._takes[key] = self.session.take(self.experiment, state.run, seed)
        thread = TrainingThread(state.run, seed, backend=self.backend, paused=paused, take=take)
        # every slot gets the run's key and the thread, so late signals of a replaced thread are ignored
        thread.prepared.connect(lambda training: self._on_prepared(key, thread, training))
        thread.records.connect(lambda records: self._on_records(key, thread, records))
        thread.state.connect(lambda s: self._on_state(key, thread, s))
        thread.done.connect(lambda status: self._on_done(key, thread, status))
        thread.failed.connect(lambda text: self._on_failed(key, thread, text))
        thread.finished.connect(lambda: self._on_thread_finished(key, thread))
        thread.recording_failed.connect(self.recording_failed)  # even from a replaced thread: a folder to name
        state.thread = thread
        self._threads[key] = state
        state.status = RunStatus.COMPILING if self.backend == "numba" else RunStatus.RUNNING
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

    def _clear(self, state: RunState, run=None) -> None:
        """The run back to queued with nothing recorded (with new settings ``run``, if given)."""
        self._unqueue(state)
        self._discard_take(state)
        state.data.result = fresh_result(run if run is not None else state.run)
        state.training = None
        state.threads = None
        state.detail = ""
        state.iterations_per_second = 0.0
        state.loaded = False
        state._rate_window.clear()
        self.run_updated.emit(state.key)

    def _discard_take(self, state: RunState) -> None:
        """The run's trace is dropped (Reset, an edit, removed, another experiment): its recording too."""
        take = self._takes.pop(state.key, None)
        if take is not None:
            self.session.discard(take)

    def _current(self, key: int, thread: TrainingThread) -> RunState | None:
        """The run a signal is about, or None when the run was removed or its thread replaced meanwhile."""
        try:
            state = self.state(key)
        except KeyError:
            return None
        return state if state.thread is thread else None

    # ---------------------------------------------------------------------------------- slots
    def _on_compiling(self, kernels, done, total, name) -> None:
        """Progress of the kernel compiler: shown on the runs waiting for those kernels."""
        self.compile_progress.emit(done, total, name)
        for state in self.states:
            if state.status is RunStatus.COMPILING and kernel_key(state.run.model_spec()) == kernels:
                state.detail = f"{done}/{total}"
                self.run_updated.emit(state.key)

    def _on_prepared(self, key, thread, training) -> None:
        state = self._current(key, thread)
        if state is None:
            return
        state.training = training
        state.threads = None
        state.result.prepare(training)
        state.data.invalidate()
        if not thread.stopping:
            state.status = RunStatus.PAUSED if self.paused else RunStatus.RUNNING
        self.run_updated.emit(key)

    def _on_records(self, key, thread, records) -> None:
        state = self._current(key, thread)
        if state is None:
            return
        for record in records:
            state.result.add(record)
        state.note_rate(state.iteration)
        self.run_updated.emit(key)

    def _on_state(self, key, thread, status) -> None:
        state = self._current(key, thread)
        if state is not None and not state.finished:
            state.status = status
            self.run_updated.emit(key)

    def _share_cores(self, _key=None) -> None:
        """The cores go to the runs, not to their shards: with k runs training, each pass runs its batch
        shards on cpus // k threads (at least 1), so several runs never queue for one pool of shard threads.
        Threads change only the speed of a pass, never its numbers (engine.shard_rows)."""
        running = [s for s in self._working() if s.training is not None and s.status is RunStatus.RUNNING]
        threads = max(1, (os.cpu_count() or 1) // max(1, len(running)))
        for state in running:
            if state.threads != threads:  # a message to the run's process only when it changes
                state.threads = threads
                state.thread.set_threads(threads)

    def _on_done(self, key, thread, status) -> None:
        state = self._current(key, thread)
        if state is None:
            return
        state.status = status
        state.iterations_per_second = 0.0
        if status is RunStatus.DIVERGED:
            self.message.emit(f"{state.name}: {state.status_text()}")
        self.run_updated.emit(key)

    def _on_failed(self, key, thread, text) -> None:
        state = self._current(key, thread)
        if state is None:
            return
        state.status = RunStatus.FAILED
        state.error = text
        state.iterations_per_second = 0.0
        last = text.strip().splitlines()[-1] if text.strip() else "error"
        self.message.emit(f"{state.name} failed: {last}")
        self.run_updated.emit(key)

    def _on_thread_finished(self, key, thread) -> None:
        thread.wait()  # its last instructions: never count it as free while it runs
        if thread in self._retired:
            self._retired.remove(thread)
        state = self._current(key, thread)
        if state is not None:
            if not state.finished:
                state.status = RunStatus.STOPPED  # ended without a verdict (e.g. stopped while compiling)
            state.thread = None
            self.run_updated.emit(key)
        self._fill_slots()  # its worker is free: the next queued run starts

    # ---------------------------------------------------------------------------------- export
    def results(self) -> list[RunResult]:
        """A RunResult per run with data, as gradscope.io.export_experiment takes them: a run not finished
        yet is exported as "stopped" (RunStatus.exported)."""
        seed = self.experiment.seed if self.experiment else 0
        return [
            replace(state.result, status=RunStatus(state.status).exported, seed=state.run.effective_seed(seed))
            for state in self.states
            if len(state.data.trace) or state.status is RunStatus.FAILED
        ]


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
