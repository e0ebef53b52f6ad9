"""The only training loop: a plain generator of Records, one per iteration, with no Qt and no threads.

    training = Training(run, seed=0)                  # builds the task, the initial parameters, the first batch
    for record in training:                           # one pull = one forward/backward (+ update)
        if record.recorded:
            trace.append(record)
    training.close()                                  # stop early (not pulling is a pause)

Iteration i computes the loss, every gradient and every metric at the current parameters on batch i (batch 0 is
``first_batch``), then, when ``train.iterations`` > 0, clips and updates.  ``train.iterations = N`` makes N
updates, hence N records (iterations 0 .. N-1); N = 0 makes one record at the initial parameters.

Randomness: one np.random.SeedSequence(seed) spawns two independent streams, one for the initial parameters
and one for the data, so two runs with the same seed see the same batches whatever their models.
A pass that produces a NaN or Inf yields its record (recorded, ``nonfinite`` set with its iteration) and ends
the generator: the run diverged and keeps everything recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager

import numpy as np

from . import bptt
from .analysis import AnalysisSpec, analyse, exponent_inputs
from .metrics import parameter_metrics
from .optim import clip_by_global_norm, make_optimizer
from .params import Params, init_params
from .record import Record, diverges
from .spectra import SpectralTracker
from .tasks import make_task

_blas_lock = threading.RLock()
_blas_controller = None  # threadpoolctl's handle on the BLAS libraries, made once


@contextmanager
def small_linear_algebra():
    """Run the block's BLAS/LAPACK calls on one thread: NumPy's small ones in the trainer (the per-parameter
    metrics' eigvals, eigvalsh and W^T W of each W_hh; the NumPy backend's gradient norms).

    Why: OpenBLAS's threads busy-wait for each other, so on a machine whose cores are busy with other work a
    128 x 128 eigvals on two threads took up to 0.8 s instead of 5 ms, and a 512 x 512 one 8 s instead of
    1.4 s (benchmarks/bench_cli.py --lapack); one thread costs at most ~10 % on an idle machine.  The thread
    counts change only inside the block (milliseconds), so the kernels' large GEMMs, between blocks, keep
    every thread (a kernel running meanwhile in another of the app's threads runs those milliseconds on one).
    The lock keeps concurrent trainers from restoring each other's settings out of order.

    The libraries are listed once (~1-5 ms), the first time something trains: NumPy's, the one these calls
    use, is always among them, since NumPy is imported by then.  A library loaded later (e.g. SciPy's, with
    the Numba kernels, when the NumPy backend trained first) is not limited: nothing in the block calls it.
    Libraries already on one thread (GradScope's default, gradscope/__init__.py) are left alone: nothing is
    set then, which matters because an OpenBLAS thread count set from a thread Qt started (the app's
    workers) can no longer be changed from the main thread afterwards (OpenBLAS 0.3.30, 0.3.31).
    """
    global _blas_controller
    with _blas_lock:
        if _blas_controller is None:
            from .shards import blas_controller  # the one the passes' shards already made, if they ran first

            _blas_controller = blas_controller()
        saved = [
            (lib, lib.num_threads)
            for lib in _blas_controller.lib_controllers
            if lib.user_api == "blas" and lib.num_threads > 1
        ]
        for lib, _ in saved:
            lib.set_num_threads(1)
        try:
            yield
        finally:
            for lib, threads in saved:
                lib.set_num_threads(threads)


class Training:
    """A run being trained.  Iterate it for Records; ``close()`` stops it."""

    def __init__(self, run, seed: int, backend: str = "numba"):
        self.run, self.seed, self.backend = run, int(seed), backend
        self.spec = run.model_spec()
        self.task = make_task(run.task, run.dtype, self.spec.architecture)
        init_stream, data_stream = np.random.SeedSequence(self.seed).spawn(2)
        self._data_rng = np.random.default_rng(data_stream)
        params = init_params(self.spec, run.init_spec(), np.random.default_rng(init_stream), run.task.seq_len)
        self.init_params = params.copy()
        self.params = params
        self.first_batch = self._draw()
        self.optimizer = make_optimizer(run.train, self.params)
        self.iterations = max(run.train.iterations, 1)  # passes to make
        self.iteration = 0  # the next iteration to compute
        self._workspace: dict = {}
        # spectral_radius and sigma_max tracked from iteration to iteration (engine.spectra), exact at iteration 0,
        # at the last iteration and at a diverged one
        self._spectra = [SpectralTracker(self.spec.gates) for _ in self.spec.streams]
        self.threads: int | None = None  # threads per pass (engine.bptt); None: all
        self._generator: Generator[Record, None, None] | None = None  # closed by close()
        # analysis (docs/trace_format.md, "Analysis"): off unless analysis.every > 0; the exponents' drive and
        # initial states come from a third stream of the seed, drawn once, so every analysed iteration measures
        # the same trajectories' inputs and the data and parameters do not move
        self.analysis: AnalysisSpec = run.analysis_spec() if hasattr(run, "analysis_spec") else AnalysisSpec()
        self.analysis_drive = self.analysis_h0 = None
        if self.analysis.on and self.analysis.lyapunov > 0:
            analysis_rng = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(3)[2])
            self.analysis_drive, self.analysis_h0 = exponent_inputs(self.spec, self.analysis, self.task, analysis_rng)
        self._recorded = 0  # recorded iterations so far (analysis.every counts them)

    def __iter__(self) -> Generator[Record, None, None]:
        if self._generator is None:
            self._generator = self._steps()
        return self._generator

    def __next__(self) -> Record:
        return next(iter(self))

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()

    def checkpoint(self) -> dict[str, np.ndarray]:
        """Everything the next iteration depends on, as npz-able arrays: the parameters, the optimizer's state,
        the data stream's RNG state and the counters.  ``restore`` of it continues the run exactly as it would
        have gone on: the same batches, updates and records, bit for bit, except spectral_radius and sigma_max,
        which restart from an exact eigensolve (the tracker's warm start is not kept: engine.spectra) and so
        agree within the tracker's tolerance, not bit for bit."""
        state = {f"param/{k}": v.copy() for k, v in self.params.arrays().items()}
        state |= {f"optimizer/{k}": v for k, v in self.optimizer.state().items()}
        state["data_rng"] = np.array(json.dumps(self._data_rng.bit_generator.state))
        state["iteration"], state["recorded"] = np.array(self.iteration), np.array(self._recorded)
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from a ``checkpoint`` of this run (same run, same seed), before iterating."""
        if self._generator is not None:
            raise RuntimeError("restore before the run is iterated")
        params = Params.from_arrays({k[6:]: v for k, v in state.items() if k.startswith("param/")})
        for (name, theta), (_, saved) in zip(self.params.named(), params.named(), strict=True):
            if theta.shape != saved.shape or theta.dtype != saved.dtype:
                raise ValueError(
                    f"checkpoint: {name}: got {saved.dtype}{saved.shape}; expected {theta.dtype}{theta.shape}"
                )
            theta[...] = saved
        self.optimizer.load_state({k[10:]: v for k, v in state.items() if k.startswith("optimizer/")})
        self._data_rng.bit_generator.state = json.loads(str(state["data_rng"]))
        self.iteration, self._recorded = int(state["iteration"]), int(state["recorded"])

    def is_recorded(self, iteration: int) -> bool:
        """Iteration 0, every record_every-th and the last belong in the trace (a diverged one too)."""
        return iteration == 0 or iteration % self.run.train.record_every == 0 or iteration == self.iterations - 1

    def measures_spectrum(self, iteration: int, diverged: bool = False) -> bool:
        """Whether a recorded iteration carries spectral_radius and sigma_max: every spectral_every-th
        (iteration 0 included), the last and a diverged one; never when spectral_every is 0.  An eigensolve
        from scratch costs O(d^3) (docs/metrics.md); the trainer tracks the spectrum instead (engine.spectra)."""
        every = self.run.train.spectral_every
        return every > 0 and (iteration % every == 0 or iteration == self.iterations - 1 or diverged)

    def is_analysed(self, recorded: bool) -> bool:
        """Whether this recorded iteration is analysed: iteration 0 and every analysis.every-th recorded one."""
        return recorded and self.analysis.on and self._recorded % self.analysis.every == 0

    def _analyse(self, batch: dict) -> dict:
        """The analysis row at the current parameters, on this iteration's batch (engine.analysis)."""
        with np.errstate(all="ignore"), small_linear_algebra():
            return analyse(
                self.spec, self.params, batch, self.task.loss_kind, self.analysis, self.analysis_drive, self.analysis_h0
            )

    def _draw(self) -> dict[str, np.ndarray]:
        """A batch as first_batch.npz holds it: x, target, mask (and decoder_x for seq2seq)."""
        if self.spec.seq2seq:
            x, decoder_x, target, mask = self.task.seq2seq_batch(self._data_rng)
            return {"x": x, "target": target, "mask": mask, "decoder_x": decoder_x}
        x, target, mask = self.task.batch(self._data_rng)
        return {"x": x, "target": target, "mask": mask}

    def _batch(self, iteration: int) -> dict[str, np.ndarray]:
        if iteration == 0 or self.run.task.fixed_batch:
            return self.first_batch
        return self._draw()

    def _steps(self) -> Generator[Record, None, None]:
        train = self.run.train
        for iteration in range(self.iteration, self.iterations):  # from a restored checkpoint's, else 0
            start = time.perf_counter()
            batch = self._batch(iteration)
            with np.errstate(all="ignore"):  # NaN and Inf are data here: recorded, located, never warned about
                result = bptt(
                    self.spec,
                    self.params,
                    batch["x"],
                    batch["target"],
                    batch["mask"],
                    self.task.loss_kind,
                    decoder_x=batch.get("decoder_x"),
                    backend=self.backend,
                    workspace=self._workspace if self.backend == "numba" else None,
                    threads=self.threads if self.backend == "numba" else None,
                    shards=self.run.train.shards if self.backend == "numba" else None,
                    accuracy=self.task.loss_kind == "ce" and self.is_recorded(iteration),
                )
            # Every gradient figure of the record is taken BEFORE clipping (docs/trace_format.md: grad_norm is
            # before clipping; the per-parameter norms follow it, so they add up to grad_norm in quadrature),
            # and every parameter figure at the parameters this pass used, before the update.
            with np.errstate(all="ignore"), small_linear_algebra():
                grad_norm = result.grad_norm
                diverged = diverges(result.nonfinite, grad_norm)
                recorded = diverged or self.is_recorded(iteration)
                metrics: dict = {}
                if recorded:
                    metrics = dict(result.metrics)
                    metrics.update(
                        parameter_metrics(
                            self.spec,
                            self.params,
                            result.grads,
                            spectral=self.measures_spectrum(iteration, diverged),
                            spectra=self._spectra,
                            exact=iteration == 0 or iteration == self.iterations - 1 or diverged,
                            grad_norms=result.extras.get("grad_norms"),
                            seed=iteration < self.iterations - 1 and not diverged,  # a later one is tracked
                        )
                    )
            analysed = self.is_analysed(recorded)
            analysis = self._analyse(batch) if analysed else None
            self._recorded += recorded
            clipped = clip_by_global_norm(result.grads, train.clip_norm, norm=grad_norm)[1]
            nonfinite = result.nonfinite
            if nonfinite is not None:
                nonfinite.iteration = iteration
            if not diverged and train.iterations > 0:
                with np.errstate(all="ignore"):
                    self.optimizer.step(self.params, result.grads)
            self.iteration = iteration + 1
            yield Record(
                iteration=iteration,
                loss=float(result.loss),
                grad_norm=float(grad_norm),
                clipped=clipped,
                recorded=recorded,
                metrics=metrics,
                nonfinite=nonfinite,
                seconds=time.perf_counter() - start,
                analysis=analysis,
            )
            if diverged:
                return


def run_training(run, seed: int, **kwargs) -> Generator[Record, None, None]:
    """iter(Training(run, seed, **kwargs)): a generator of one Record per iteration."""
    return iter(Training(run, seed, **kwargs))


__all__ = ["Training", "run_training", "small_linear_algebra"]
