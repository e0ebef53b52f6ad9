"""What the trainer yields for every iteration: a Record (plain data, no Qt, no threads).

The ones marked ``recorded`` belong in the run's trace (gradscope.trace.Trace, one layer up), which stores
``columns()`` as (K, ...) arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .metrics import NonFinite


def diverges(nonfinite: NonFinite | None, grad_norm: float) -> bool:
    """The one divergence rule: a NaN or Inf located in the pass, or a global gradient norm that is not finite."""
    return nonfinite is not None or not math.isfinite(grad_norm)


@dataclass
class Record:
    """One training iteration, as the trainer saw it (before the parameter update)."""

    iteration: int
    loss: float
    grad_norm: float  # global L2 norm of every parameter gradient, before clipping
    clipped: bool = False
    recorded: bool = True  # belongs in the trace (iteration 0, every record_every-th, last, diverged)
    metrics: dict[str, np.ndarray | float] = field(default_factory=dict)
    nonfinite: NonFinite | None = None
    seconds: float = 0.0  # wall time of the iteration
    # the analysed iterations' row of analysis.npz (engine.analysis.analyse: (S, T) and (S, m) arrays), else None
    analysis: dict[str, np.ndarray] | None = None

    @property
    def diverged(self) -> bool:
        """Whether this iteration diverged (``diverges``): the trainer ends its generator after such a record;
        the command line and the app read it from here."""
        return diverges(self.nonfinite, self.grad_norm)

    def columns(self) -> dict[str, np.ndarray]:
        """The record as trace columns: per-iteration scalars plus every metric."""
        cols = {
            "iteration": np.asarray(self.iteration, dtype=np.int64),
            "loss": np.asarray(self.loss, dtype=np.float64),
            "grad_norm": np.asarray(self.grad_norm, dtype=np.float64),
            "clipped": np.asarray(self.clipped, dtype=np.bool_),
        }
        for name, value in self.metrics.items():
            cols[name] = np.asarray(value)
        return cols
