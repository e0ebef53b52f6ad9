"""Running an experiment's runs: one after another, or in worker processes when there is enough work.

    stop = threading.Event()                       # set it (e.g. from a signal handler) to stop every run
    results = run_experiment(experiment, backend="numba", stop=stop,
                             progress=print_line,              # called with each RunResult as its run ends
                             on_iteration=show)                # show(index, done, total, seconds) as runs go
    # results: list[runs.RunResult], in the file's order

Each run trains with ``engine.trainer.Training`` and keeps its recorded iterations in a ``Trace``.  A run that
raises is "failed" (its traceback kept, the other runs go on); one that hits a NaN or Inf is "diverged"; one
interrupted by ``stop`` (or Ctrl+C in this process) is "stopped" after the iteration it was computing, and the
runs not started yet are "stopped" with no iterations.  Everything recorded is kept.

Worker processes ignore SIGINT and SIGTERM: a terminal's Ctrl+C reaches the whole process group, and a stop
must go through the main process, which tells the workers (a shared event they check between iterations)
and collects what they computed.  A worker whose main process died stops too.

Runs of one experiment use the experiment's seed unless they set their own, so they see the same data.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import ConfigError, Experiment, RunConfig
from .runs import RunControl, RunResult, RunStatus, drive

# Below this much estimated work (floating-point operations over all runs) worker processes cost more to start
# than they save.  Each worker starts Python, imports NumPy and Numba and loads the cached kernels: 1 to 3 s on
# the project's 2-core machine.  Measured there (load average ~4 from other work; `gradscope run --no-plots`,
# --processes 1 against 2, three times each): two LSTM runs at (B, T, n, d) = (32, 100, 32, 128) of 7.9 GFLOP
# each (5 iterations): 1.4-1.9 s against 3.3-4.6 s; of 31 GFLOP: 2.2-2.6 s against 4.0-5.8 s; of 94 GFLOP:
# 4.3-7.1 s against 7.8-10.7 s; models/relu_tanh_lstm.toml (708 GFLOP): 10.5 and 17.7 s against 11.7 and
# 18.6 s.  On a loaded machine the second core is not there to win; on an idle one two processes at best halve
# the work, so they pay only for work of several seconds: ~300 GFLOP at the ~40 GFLOP/s the kernels reach here.
PARALLEL_MIN_FLOPS = 300e9


# Refuse runs whose BPTT states would not fit in this share of the machine's memory.
MEMORY_SHARE = 0.5

# The recorded history of an experiment's runs: at most this many bytes in all (and never less than
# TRACE_MIN_BYTES per run).  Past its share a run's trace thins itself (trace.Trace: every other older
# iteration dropped, the first and the latest always kept), so a run of 10**17 iterations records in bounded
# memory and exports a bounded trace.csv; summary.json's "recorded" and the trace's "iteration" say which.
TRACE_BUDGET = 512 * 2**20
TRACE_MIN_BYTES = 16 * 2**20


def trace_bytes(runs: int) -> int:
    """Each run's share of TRACE_BUDGET (and of an eighth of this machine's memory, when it says)."""
    budget = TRACE_BUDGET if not machine_memory() else min(TRACE_BUDGET, machine_memory() // 8)
    return max(TRACE_MIN_BYTES, budget // max(1, runs))


def select(
    experiment: Experiment,
    *,
    runs: list[str] | None = None,
    seed: int | None = None,
    iterations: int | None = None,
    names: tuple[str, str, str] = ("runs", "seed", "iterations"),
) -> Experiment:
    """The experiment as it will run: only ``runs`` (by name, in the file's order), the experiment's seed and
    every run's train.iterations replaced (gradscope.run's options; the command line's _select checks its
    flags the same way).  A ConfigError names the option (``names``: how the caller calls them) and what was
    expected."""
    source = str(experiment.source) if experiment.source is not None else f"experiment {experiment.name!r}"
    selected = list(experiment.runs)
    if runs is not None:
        unknown = [name for name in runs if name not in {r.name for r in selected}]
        if unknown:
            raise ConfigError(
                f"{names[0]}: no run named {unknown[0]!r} in {source}; the runs are "
                f"{', '.join(repr(r.name) for r in selected)}",
                source=source,
                key=names[0],
            )
        selected = [r for r in selected if r.name in runs]
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations < 2**63:
            raise ConfigError(f"{names[2]}: got {iterations!r}; expected an integer from 0 to 2**63 - 1", key=names[2])
        selected = [
            r.model_copy(update={"train": r.train.model_copy(update={"iterations": iterations})}) for r in selected
        ]
    update: dict = {"runs": selected}
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ConfigError(f"{names[1]}: got {seed!r}; expected an integer from 0 to 2**63 - 1", key=names[1])
        update["seed"] = seed
    return experiment.model_copy(update=update)


def estimated_flops(run: RunConfig) -> float:
    """Floating-point operations of a run's training: the engine's count for one pass (engine.pass_flops:
    forward, backward and weight gradients) times max(iterations, 1) iterations."""
    from .engine import pass_flops

    return pass_flops(run.model_spec(), run.task.seq_len, run.task.batch_size) * max(run.train.iterations, 1)


def machine_memory() -> int:
    """Bytes of physical memory of this machine; 0 when the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(experiment: Experiment, runs: list[RunConfig] | None = None) -> None:
    """Refuse, before anything is computed, a run whose BPTT states and weights (RunConfig.memory_estimate)
    need more than MEMORY_SHARE of this machine's memory: a ConfigError naming the file, the run and its keys.

    ``runs``: the runs about to start (default: all of the experiment's).  A file is valid on every machine
    (config.load does not check this); whether it fits is a question for the machine that runs it, so
    ``gradscope run``, ``run_experiment`` and the app ask it before they start.
    """
    available = machine_memory()
    if not available:
        return
    source = str(experiment.source) if experiment.source is not None else f"experiment {experiment.name!r}"
    names = [r.name for r in experiment.runs]
    for run in experiment.runs if runs is None else runs:
        needed = run.memory_estimate()
        if needed <= MEMORY_SHARE * available:
            continue
        where = f"run {run.name!r} (runs[{names.index(run.name)}])" if run.name in names else f"run {run.name!r}"
        raise ConfigError(
            f"{source}: {where}: hidden_size: hidden_size = {run.hidden_size}, layers = {run.layers}, "
            f"task.seq_len = {run.task.seq_len} and task.batch_size = {run.task.batch_size} need about "
            f"{needed / 2**30:.1f} GiB for BPTT's states and weights; this machine allows "
            f"{MEMORY_SHARE * available / 2**30:.1f} GiB ({MEMORY_SHARE:.0%} of its memory)",
            source=source,
            run=run.name,
            key="hidden_size",
        )


def execute_run(
    run: RunConfig,
    seed: int,
    backend: str = "numba",
    *,
    stop=None,
    on_iteration: Callable[[int, int, float], None] | None = None,
    record_to: str | os.PathLike | None = None,
    max_trace_bytes: int | None = None,
    resume: bool = False,
) -> RunResult:
    """Train one run to its end (or its divergence, failure or a stop) and collect its trace.

    ``stop``: anything with ``is_set()``, checked between iterations (and before the run starts).
    ``on_iteration(done, total, seconds)``: called after every iteration, with the seconds since the start.
    ``record_to``: the run's folder of a recording (gradscope.recording): its initial parameters and first
    batch are written there when it starts, its records to ``records.zarr`` as it goes (gradscope.store), and
    its checkpoint every CHECKPOINT_SECONDS of computing and when it is stopped (gradscope.checkpoint).
    ``resume``: continue from the checkpoint in ``record_to``, when it has a usable one (else from iteration 0).
    ``max_trace_bytes``: the run's recorded history, at most (trace.Trace thins itself past it; default 1 run's
    share of TRACE_BUDGET).  The loop is runs.drive, the app's too.
    """
    from .engine.trainer import Training
    from .trace import Trace

    start = time.perf_counter()
    trace = Trace(max_bytes=max_trace_bytes or trace_bytes(1))
    result = RunResult.for_run(run, seed, trace=trace, status=RunStatus.FAILED)
    if stop is not None and stop.is_set():
        return _not_started(run, seed)
    training = recorder = None
    earlier = 0.0  # seconds computed before a resumed run's checkpoint
    try:
        training = Training(run, seed, backend=backend)
        result.prepare(training)
        if record_to is not None:
            from .recording import RunRecorder  # the live store and checkpoints (recording.py)

            recorder = RunRecorder.start(Path(record_to), result, training, resume=resume)
            earlier = result.wall_seconds

        def on_record(record):
            result.add(record)
            if recorder is not None:
                recorder.add(record)
            if on_iteration is not None:
                on_iteration(result.iterations, training.iterations, earlier + time.perf_counter() - start)

        if on_iteration is not None:  # the run has started: a long first iteration shows as going on
            on_iteration(result.iterations, training.iterations, earlier + time.perf_counter() - start)

        result.status = drive(training, RunControl(stop=stop), on_record=on_record)
        if recorder is not None and result.status is RunStatus.STOPPED:  # a clean stop: --resume goes on here
            recorder.checkpoint()
    except KeyboardInterrupt:  # raised inside an iteration: no checkpoint of a half-made update
        result.status = RunStatus.STOPPED
    except Exception:  # noqa: BLE001  (a run that fails ends as FAILED with its traceback; the others go on)
        result.status, result.error = RunStatus.FAILED, traceback.format_exc()
    finally:
        if training is not None:
            training.close()
        if recorder is not None:
            recorder.close(result.status)
    result.wall_seconds = earlier + time.perf_counter() - start
    return result


def _not_started(run: RunConfig, seed: int) -> RunResult:
    return RunResult.for_run(run, seed, status=RunStatus.STOPPED)


@contextmanager
def _single_threaded_children():
    """Worker processes each get one BLAS / Numba thread: two processes on two cores, no oversubscription."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def choose_processes(runs: list[RunConfig], processes: int | None = None) -> int:
    """How many worker processes to use: 1 (in this process) unless several runs share enough work that
    one process cannot spread over the cores by itself.

    A run whose passes the engine splits into batch shards (engine.shard_rows) already keeps every
    core busy in this process, with no worker to start: measured on models/relu_tanh_lstm.toml (three runs,
    every pass split in two), 6.8 and 7.2 s in one process against 8.3 and 8.5 s in two.  So only the work of
    runs whose passes run whole counts towards PARALLEL_MIN_FLOPS."""
    if processes is not None:
        return max(1, min(processes, len(runs)))
    if len(runs) < 2:
        return 1
    from .engine import shard_rows

    whole = [r for r in runs if len(shard_rows(r.model_spec(), r.task.seq_len, r.task.batch_size)) == 1]
    if len(whole) < 2 or sum(estimated_flops(r) for r in whole) < PARALLEL_MIN_FLOPS:
        return 1
    return max(1, min(os.cpu_count() or 1, len(runs)))


def run_experiment(
    experiment: Experiment,
    *,
    backend: str = "numba",
    processes: int | None = None,
    progress: Callable[[RunResult], None] | None = None,
    stop=None,
    on_iteration: Callable[[int, int, int, float], None] | None = None,
    record_to: list | None = None,
    resume: bool = False,
) -> list[RunResult]:
    """Run every run of ``experiment``; returns their results in the file's order.

    ``progress(result)`` is called as each run ends (in worker processes: in the order they end);
    ``on_iteration(index, done, total, seconds)`` as runs go (from workers: at most ~10 times a second each);
    ``stop`` (anything with ``is_set()``) stops every run after its current iteration.  Ctrl+C in this process
    (KeyboardInterrupt) is a stop too.  ``record_to``: a folder per run (or None), where each run records as
    it goes (execute_run), from this process or a worker; with ``resume``, a run whose folder has a checkpoint
    continues from it.  Raises ConfigError (check_memory) before the first
    iteration when a run cannot fit this machine's memory.
    """
    check_memory(experiment)
    runs = list(experiment.runs)
    seeds = [run.effective_seed(experiment.seed) for run in runs]
    folders = list(record_to) if record_to is not None else [None] * len(runs)
    workers = choose_processes(runs, processes)
    options: dict[str, Any] = dict(max_trace_bytes=trace_bytes(len(runs)), resume=resume)  # for execute_run
    if workers == 1:
        results: list[RunResult] = []
        for index, (run, seed) in enumerate(zip(runs, seeds)):
            report = None
            if on_iteration is not None:

                def report(done, total, seconds, index=index):
                    on_iteration(index, done, total, seconds)

            result = execute_run(
                run, seed, backend, stop=stop, on_iteration=report, record_to=folders[index], **options
            )
            results.append(result)
            if progress:
                progress(result)
            if result.status is RunStatus.STOPPED:
                break
        for run, seed in zip(runs[len(results) :], seeds[len(results) :]):
            results.append(_not_started(run, seed))
            if progress:
                progress(results[-1])
        return results
    return _run_in_processes(runs, seeds, folders, backend, workers, progress, stop, on_iteration, options)


# ------------------------------------------------------------------------------------- worker processes
_STOP_SIGNALS = {signal.SIGINT} | ({signal.SIGTERM} if hasattr(signal, "SIGTERM") else set())
_worker_stop = None  # in a worker: the main process's stop event
_worker_updates = None  # in a worker: where progress goes, (index, done, total, seconds)
_worker_parent = None  # in a worker: the main process's pid (a changed parent means it died)


def _init_worker(stop, updates) -> None:
    """Worker start-up: leave SIGINT and SIGTERM to the main process (see the module's docstring)."""
    global _worker_stop, _worker_updates, _worker_parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # they were blocked while this process was started
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    updates.cancel_join_thread()  # progress may be dropped at exit; never block on it
    _worker_stop, _worker_updates, _worker_parent = stop, updates, os.getppid()
    exit_when_orphaned()


def exit_when_orphaned(poll: float = 0.5) -> None:
    """In a worker: end this process once the main process has died (its parent changes).  A worker between
    iterations notices through _WorkerStop, but one blocked on its queue, or on handing back a result nobody
    will read, would otherwise live on (seen: two orphans at 10-20% CPU for an hour after a SIGKILL)."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="gradscope-parent-watch", daemon=True).start()


class _WorkerStop:
    """Stop when the main process says so or has died."""

    def is_set(self) -> bool:
        if _worker_stop is None:
            raise RuntimeError("_WorkerStop is asked outside a worker process (_init_worker has not run)")
        return _worker_stop.is_set() or os.getppid() != _worker_parent


def _execute_in_worker(index: int, run: RunConfig, seed: int, backend: str, options: dict, folder=None) -> RunResult:
    last = [0.0]

    def report(done, total, seconds):
        if seconds - last[0] >= 0.1 or done == total:
            last[0] = seconds
            try:
                _worker_updates.put_nowait((index, done, total, seconds))
            except (queue.Full, OSError, ValueError):
                pass  # progress is a courtesy; the run goes on

    return execute_run(run, seed, backend, stop=_WorkerStop(), on_iteration=report, record_to=folder, **options)


@contextmanager
def _stop_signals_blocked():
    """Block SIGINT and SIGTERM in this thread while worker processes start: a child inherits the mask, so
    a Ctrl+C in that instant waits (in this process) instead of killing a half-started worker."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _run_in_processes(runs, seeds, folders, backend, workers, progress, stop, on_iteration, options) -> list[RunResult]:
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold threads
    shared_stop, updates = context.Event(), context.Queue()
    results: dict[int, RunResult] = {}  # by the run's index, filled as the runs end

    def drain():
        while True:
            try:
                update = updates.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            if on_iteration is not None:
                on_iteration(*update)

    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(shared_stop, updates)
    )
    try:
        with _stop_signals_blocked(), _single_threaded_children():  # the workers start here
            pending = {
                pool.submit(_execute_in_worker, index, run, seed, backend, options, folders[index]): index
                for index, (run, seed) in enumerate(zip(runs, seeds))
            }
        while pending:
            try:
                done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:  # Ctrl+C here without a handler: a stop, as in one process
                shared_stop.set()
                continue
            if stop is not None and stop.is_set():
                shared_stop.set()
            drain()
            for future in done:
                index = pending.pop(future)
                try:
                    result = future.result()
                except Exception:  # noqa: BLE001  (the worker process itself died: the run failed, the others go on)
                    result = RunResult.for_run(runs[index], seeds[index], status=RunStatus.FAILED)
                    result.error = traceback.format_exc()
                results[index] = result
                if progress:
                    progress(result)
    finally:
        shared_stop.set()  # whatever happened, no worker keeps computing
        pool.shutdown(wait=True, cancel_futures=True)
        drain()
        updates.close()
    return [results[index] for index in range(len(runs))]  # every run ended: `pending` ran empty


__all__ = [
    "run_experiment",
    "select",
    "execute_run",
    "estimated_flops",
    "choose_processes",
    "check_memory",
    "machine_memory",
    "PARALLEL_MIN_FLOPS",
    "MEMORY_SHARE",
    "TRACE_BUDGET",
    "trace_bytes",
]
