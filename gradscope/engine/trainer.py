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

import time
from typing import Iterator

import numpy as np

from ..trace import Record
from . import bptt
from . import metrics as _metrics
from .optim import clip_by_global_norm, make_optimizer
from .params import Params, init_params, spectral_stats
from .tasks import make_task


def parameter_metrics(spec, params: Params, grads: Params) -> dict:
    """Per-parameter metrics: gradient norms of each layer's W_hx, W_hh, b_h ((L,) arrays), of W_yh and b_y
    (floats), and the spectral radius and largest singular value of each layer's W_hh ((L,) arrays).

    Uses the engine's ``metrics.parameter_metrics`` when it has one (same names and meanings).
    """
    engine_version = getattr(_metrics, "parameter_metrics", None)
    if engine_version is not None:
        return engine_version(spec, params, grads)
    norms = grads.norms()
    L = spec.layers
    out = {f"grad_norm_{p}": np.array([norms[f"layer{l}.{p}"] for l in range(L)]) for p in ("W_hx", "W_hh", "b_h")}
    out["grad_norm_W_yh"] = norms["readout.W_yh"]
    out["grad_norm_b_y"] = norms["readout.b_y"]
    stats = np.array([spectral_stats(layer.W_hh, spec.gates) for layer in params.layers])  # (L, 2)
    out["spectral_radius"], out["sigma_max"] = stats[:, 0].copy(), stats[:, 1].copy()
    return out


class Training:
    """A run being trained.  Iterate it for Records; ``close()`` stops it."""

    def __init__(self, run, seed: int, backend: str = "numba"):
        self.run, self.seed, self.backend = run, int(seed), backend
        self.spec = run.model_spec()
        self.task = make_task(run.task, run.dtype)
        init_stream, data_stream = np.random.SeedSequence(self.seed).spawn(2)
        self._data_rng = np.random.default_rng(data_stream)
        params = init_params(self.spec, run.init_spec(), np.random.default_rng(init_stream), run.task.seq_len)
        self.init_params = params.copy()
        self.params = params
        x, target, mask = self.task.batch(self._data_rng)
        self.first_batch = {"x": x, "target": target, "mask": mask}
        self.optimizer = make_optimizer(run.train, self.params)
        self.iterations = max(run.train.iterations, 1)        # passes to make
        self.iteration = 0                                    # the next iteration to compute
        self._workspace: dict = {}
        self._generator: Iterator[Record] | None = None

    def __iter__(self) -> Iterator[Record]:
        if self._generator is None:
            self._generator = self._steps()
        return self._generator

    def __next__(self) -> Record:
        return next(iter(self))

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()

    def is_recorded(self, iteration: int) -> bool:
        """Iteration 0, every record_every-th and the last belong in the trace (a diverged one too)."""
        return (iteration == 0 or iteration % self.run.train.record_every == 0
                or iteration == self.iterations - 1)

    def _batch(self, iteration: int):
        if iteration == 0 or self.run.task.fixed_batch:
            b = self.first_batch
            return b["x"], b["target"], b["mask"]
        return self.task.batch(self._data_rng)

    def _steps(self) -> Iterator[Record]:
        train = self.run.train
        for iteration in range(self.iterations):
            start = time.perf_counter()
            x, target, mask = self._batch(iteration)
            with np.errstate(all="ignore"):   # NaN and Inf are data here: recorded, located, never warned about
                result = bptt(self.spec, self.params, x, target, mask, self.task.loss_kind, backend=self.backend,
                              workspace=self._workspace if self.backend == "numba" else None)
                grad_norm, clipped = clip_by_global_norm(result.grads, train.clip_norm)
            diverged = result.nonfinite is not None or not np.isfinite(grad_norm)
            recorded = diverged or self.is_recorded(iteration)
            metrics: dict = {}
            if recorded:
                metrics = dict(result.metrics)
                with np.errstate(all="ignore"):
                    metrics.update(parameter_metrics(self.spec, self.params, result.grads))
            nonfinite = result.nonfinite
            if nonfinite is not None:
                nonfinite.iteration = iteration
            if not diverged and train.iterations > 0:
                with np.errstate(all="ignore"):
                    self.optimizer.step(self.params, result.grads)
            self.iteration = iteration + 1
            yield Record(iteration=iteration, loss=float(result.loss), grad_norm=float(grad_norm), clipped=clipped,
                         recorded=recorded, metrics=metrics, nonfinite=nonfinite,
                         seconds=time.perf_counter() - start)
            if diverged:
                return


def run_training(run, seed: int, **kwargs) -> Iterator[Record]:
    """iter(Training(run, seed, **kwargs)): a generator of one Record per iteration."""
    return iter(Training(run, seed, **kwargs))


__all__ = ["Training", "run_training", "parameter_metrics"]
