"""Running an experiment's runs: one after another, or in worker processes when there is enough work.

    results = run_experiment(experiment, backend="numba", progress=print_line)   # list[io.RunResult]

Each run trains with ``engine.trainer.Training`` and keeps its recorded iterations in a ``Trace``.  A run that
raises is "failed" (its traceback kept, the other runs go on); one that hits a NaN or Inf is "diverged"; one
interrupted with Ctrl+C is "stopped" and the runs after it are not started.  Everything recorded is kept.

Runs of one experiment use the experiment's seed unless they set their own, so they see the same data.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable

from .config import Experiment, RunConfig
from .io import RunResult
from .trace import Trace

# Below this much estimated work (floating-point operations over all runs) worker processes cost more to start
# (about a second each: Python, NumPy, Numba's cached kernels) than they save.
PARALLEL_MIN_FLOPS = 4e9


def estimated_flops(run: RunConfig) -> float:
    """Floating-point operations of a run's training: 3 passes (forward, backward, weight gradients) of
    2 G d (n + d) multiply-adds per layer, example and step, for max(iterations, 1) iterations."""
    G = 4 if run.cell == "lstm" else 1
    d, T, B = run.hidden_size, run.task.seq_len, run.task.batch_size
    n = run.task.input_size or d
    per_step = 2 * G * d * (n + d) + (run.layers - 1) * 2 * G * d * 2 * d
    return 3.0 * per_step * T * B * max(run.train.iterations, 1)


def execute_run(run: RunConfig, seed: int, backend: str = "numba") -> RunResult:
    """Train one run to its end (or its divergence, failure or interruption) and collect its trace."""
    from .engine.trainer import Training

    start = time.perf_counter()
    trace = Trace()
    result = RunResult(name=run.name, run=run, trace=trace, status="failed", iterations=0, wall_seconds=0.0,
                       loss_kind="", seed=seed)
    training = None
    try:
        training = Training(run, seed, backend=backend)
        result.loss_kind = training.task.loss_kind
        result.baseline_loss = training.task.baseline_loss
        result.description = training.task.description
        result.init_params, result.first_batch = training.init_params, training.first_batch
        status = "completed"
        for record in training:
            result.iterations = record.iteration + 1
            if record.recorded:
                trace.append(record)
            if record.nonfinite is not None:
                status = "diverged"
                result.nonfinite = record.nonfinite
        result.status = status
    except KeyboardInterrupt:
        result.status = "stopped"
    except Exception:
        result.status, result.error = "failed", traceback.format_exc()
    finally:
        if training is not None:
            training.close()
    result.wall_seconds = time.perf_counter() - start
    return result


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
    """How many worker processes to use: 1 (in this process) unless several runs share enough work."""
    if processes is not None:
        return max(1, min(processes, len(runs)))
    if len(runs) < 2 or sum(estimated_flops(r) for r in runs) < PARALLEL_MIN_FLOPS:
        return 1
    return max(1, min(os.cpu_count() or 1, len(runs)))


def run_experiment(experiment: Experiment, *, backend: str = "numba", processes: int | None = None,
                   progress: Callable[[RunResult], None] | None = None) -> list[RunResult]:
    """Run every run of ``experiment`` (in order of the file); ``progress(result)`` is called as each ends."""
    runs = list(experiment.runs)
    workers = choose_processes(runs, processes)
    results: list[RunResult] = []
    if workers == 1:
        for run in runs:
            result = execute_run(run, run.effective_seed(experiment.seed), backend)
            results.append(result)
            if progress:
                progress(result)
            if result.status == "stopped":
                break
        for run in runs[len(results):]:   # not started after a Ctrl+C
            results.append(RunResult(name=run.name, run=run, trace=Trace(), status="stopped", iterations=0,
                                     wall_seconds=0.0, loss_kind="", seed=run.effective_seed(experiment.seed)))
        return results
    with _single_threaded_children():
        context = multiprocessing.get_context("spawn")   # never fork a process that may hold threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(execute_run, run, run.effective_seed(experiment.seed), backend)
                       for run in runs]
            for run, future in zip(runs, futures):
                try:
                    result = future.result()
                except Exception:  # the worker process itself died: the run failed, the others go on
                    result = RunResult(name=run.name, run=run, trace=Trace(), status="failed", iterations=0,
                                       wall_seconds=0.0, loss_kind="", seed=run.effective_seed(experiment.seed),
                                       error=traceback.format_exc())
                results.append(result)
                if progress:
                    progress(result)
    return results


__all__ = ["run_experiment", "execute_run", "estimated_flops", "choose_processes", "PARALLEL_MIN_FLOPS"]
