"""A run as everything outside the engine sees it, and the one loop that drives it (no Qt, no threads of its own).

    result = RunResult.for_run(run, seed)          # status QUEUED, an empty Trace
    training = Training(run, seed)
    result.prepare(training)                       # init_params, first_batch, the task's loss and baseline
    control = RunControl()                         # pause / step / resume / stop from any thread
    result.status = drive(training, control, on_record=result.add)   # COMPLETED | DIVERGED | STOPPED

The command line (experiment.execute_run) and the app's worker threads both call ``drive``: the same
iteration-by-iteration loop, stopped or paused between iterations, and the trainer alone says when a run
diverged (``Record.diverged``, the rule under which the trainer ends its generator).  ``RunResult`` is what a
run leaves behind, written to summary.json by gradscope.io and held by the app for each of its runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from .engine.analysis import AnalysisLog
from .engine.metrics import NonFinite
from .engine.params import Params
from .trace import Record, Trace

if TYPE_CHECKING:  # the config imports pydantic; the run model needs only its data
    from .config import RunConfig


class RunStatus(StrEnum):
    """Where a run is: queued -> compiling -> running <-> paused -> completed | diverged | stopped | failed.

    The values of the finished ones are the strings summary.json's ``status`` holds (docs/trace_format.md)."""

    QUEUED = "queued"  # not started (waiting for its turn, or never asked to run)
    COMPILING = "compiling"  # waiting for its kernels
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"  # every iteration computed
    DIVERGED = "diverged"  # a NaN or Inf ended it; everything up to there is kept
    STOPPED = "stopped"  # stopped by the user (or never started before a stop)
    FAILED = "failed"  # raised; the traceback is kept

    @property
    def finished(self) -> bool:
        return self in FINISHED

    @property
    def exported(self) -> RunStatus:
        """The status an export writes: a run not finished yet was interrupted by the export, so "stopped"."""
        return self if self.finished else RunStatus.STOPPED


FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.DIVERGED, RunStatus.STOPPED, RunStatus.FAILED})


@dataclass
class RunResult:
    """Everything a run has left behind so far: finished (or stopped, diverged, failed), or still going."""

    name: str
    run: RunConfig
    trace: Trace = field(default_factory=Trace)
    status: RunStatus = RunStatus.QUEUED
    iterations: int = 0  # iterations computed (records yielded)
    wall_seconds: float = 0.0
    loss_kind: str | None = None  # "mse" | "ce"
    nonfinite: NonFinite | None = None
    init_params: Params | None = None
    first_batch: dict[str, np.ndarray] | None = None
    error: str | None = None  # traceback text of a failed run
    seed: int | None = None  # the seed the run used
    baseline_loss: float | None = None  # the task's trivial strategy, in the units of the loss
    accuracy_ceiling: float | None = None  # the best expected accuracy of a unidirectional model, when known
    description: str = ""  # the task, in words
    interrupted_at: int | None = None  # read back from the store of a killed process: its last iteration
    store_error: str | None = None  # why recording to the run's store stopped (the run went on in memory)
    analysis: AnalysisLog | None = None  # the analysed iterations (analysis.npz), when analysis is on

    @classmethod
    def for_run(
        cls, run, seed: int | None = None, trace: Trace | None = None, status: RunStatus = RunStatus.QUEUED
    ) -> RunResult:
        """A run that has computed nothing yet (its loss kind known from its task without building it)."""
        from .engine.tasks import loss_kind_of

        return cls(
            name=run.name,
            run=run,
            trace=trace if trace is not None else Trace(),
            status=status,
            loss_kind=loss_kind_of(run.task),
            seed=seed,
        )

    @property
    def finished(self) -> bool:
        return RunStatus(self.status).finished

    @property
    def iteration(self) -> int:
        """The last iteration computed (-1 before the first)."""
        return self.iterations - 1

    def prepare(self, training) -> None:
        """What the engine's Training knows before its first iteration."""
        self.loss_kind = training.task.loss_kind
        self.baseline_loss = training.task.baseline_loss
        self.accuracy_ceiling = training.task.accuracy_ceiling
        self.description = training.task.description
        self.init_params, self.first_batch = training.init_params, training.first_batch
        if training.analysis.on:
            self.analysis = AnalysisLog(training.analysis_h0)

    def add(self, record: Record) -> None:
        """Count one iteration; the recorded ones go into the trace; a NaN or Inf is located."""
        self.iterations = record.iteration + 1
        self.wall_seconds += record.seconds
        if record.recorded:
            self.trace.append(record)
        if record.analysis is not None and self.analysis is not None:
            self.analysis.append(record.iteration, record.analysis)
        if record.nonfinite is not None:
            self.nonfinite = record.nonfinite


class RunControl:
    """Pause, single steps, resume and stop for a run being driven, from any thread; obeyed between
    iterations (an iteration is never interrupted).

    ``stop``: an outside stop (anything with ``is_set()``, e.g. the CLI's signal-handler event) instead of
    one of its own."""

    def __init__(self, paused: bool = False, stop=None):
        self._go = threading.Event()
        if not paused:
            self._go.set()
        self._stop = stop if stop is not None else threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._steps = 0  # single steps asked for while paused

    def resume(self) -> None:
        self._go.set()
        self._wake.set()

    def pause(self) -> None:
        self._go.clear()
        self._wake.set()

    def step(self) -> None:
        """One more iteration, then paused again."""
        with self._lock:
            self._steps += 1
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._go.is_set()

    def wait_turn(self, on_hold: Callable[[], None] | None = None) -> bool:
        """Block until the next iteration may be computed: True to compute it, False once stopped.
        ``on_hold()`` is called each time before blocking (paused, with no step owed)."""
        while True:
            if self._stop.is_set():
                return False
            if self._go.is_set():
                return True
            with self._lock:
                if self._steps > 0:
                    self._steps -= 1
                    return True
            if on_hold is not None:
                on_hold()
            while not (self._stop.is_set() or self._go.is_set() or self._steps > 0):
                self._wake.wait()
                self._wake.clear()


def drive(
    training,
    control: RunControl | None = None,
    *,
    on_record: Callable[[Record], None] | None = None,
    on_state: Callable[[RunStatus], None] | None = None,
) -> RunStatus:
    """Pull the Training's records until it ends: COMPLETED, DIVERGED (the trainer's verdict on the last
    record), or STOPPED (``control`` stopped it between iterations).

    ``on_record(record)`` gets every record in iteration order; ``on_state(status)`` hears RUNNING when the run
    goes on freely and PAUSED when it holds (the app's status)."""
    records = iter(training)
    state = None

    def tell(status: RunStatus) -> None:
        nonlocal state
        if state is not status:
            state = status
            if on_state is not None:
                on_state(status)

    while training.iteration < training.iterations:  # a stop after the last iteration changes nothing
        if control is not None and not control.wait_turn(lambda: tell(RunStatus.PAUSED)):
            return RunStatus.STOPPED
        if control is None or not control.paused:
            tell(RunStatus.RUNNING)
        try:
            record = next(records)
        except StopIteration:
            break
        if on_record is not None:
            on_record(record)
        if record.diverged:
            return RunStatus.DIVERGED
    return RunStatus.COMPLETED


__all__ = ["RunStatus", "FINISHED", "RunResult", "RunControl", "drive"]
