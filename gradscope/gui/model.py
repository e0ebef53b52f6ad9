"""RunData: everything a view needs to draw one run, Qt-free, so views can be fed synthetic traces."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import theory
from ..trace import Trace


@dataclass(eq=False)
class RunData:
    """One run as the views see it.

    key         a stable identity (a run keeps its key when renamed or edited)
    trace       the recorded iterations (gradscope.trace.Trace), read through trace.array(name)
    run         the RunConfig, when known: theory lines, clip threshold, cell and activation come from it
    first_batch the batch of iteration 0 (x, target, mask): the mask says which steps are scored
    """

    key: int
    name: str
    color: str
    trace: Trace
    run: object | None = None
    visible: bool = True
    loss_kind: str | None = None
    baseline_loss: float | None = None
    first_batch: dict | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------ what the run is
    @property
    def cell(self) -> str:
        if self.run is not None:
            return self.run.cell
        return "lstm" if "c_norm" in self.trace else "rnn"

    @property
    def activation(self) -> str | None:
        if self.cell == "lstm":
            return None
        if self.run is not None:
            return self.run.activation
        for metric, act in (("relu_dead", "relu"), ("tanh_sat", "tanh"), ("sigmoid_sat", "sigmoid")):
            if metric in self.trace:
                return act
        return None

    @property
    def layers(self) -> int:
        if "h_norm" in self.trace and len(self.trace):
            return int(self.trace.array("h_norm").shape[1])
        return self.run.layers if self.run is not None else 1

    @property
    def clip_norm(self) -> float:
        return float(self.run.train.clip_norm) if self.run is not None else 0.0

    @property
    def label(self) -> str:
        """The run's name for legends and titles; a diverged run says so, and at which iteration."""
        nonfinite = getattr(self.trace, "nonfinite", None)
        if nonfinite is None:
            return self.name
        at = f" at iteration {nonfinite.iteration}" if nonfinite.iteration is not None else ""
        return f"{self.name} (diverged{at})"

    def has_data(self) -> bool:
        return len(self.trace) > 0

    # ------------------------------------------------------------------------------------ theory
    def anchor_step(self, T: int) -> int:
        """The last step the loss scores (the theory lines start there)."""
        mask = self.first_batch.get("mask") if self.first_batch else None
        loss_t = self.trace.latest("loss_t") if "loss_t" in self.trace and len(self.trace) else None
        step = theory.last_scored_step(mask=mask, loss_t=loss_t, T=T)
        return min(step, T - 1)

    @property
    def theory(self) -> theory.RunTheory | None:
        """Mean-field inputs of this run (None for an LSTM or without a RunConfig); computed once."""
        if "theory" not in self._cache:
            x = self.first_batch.get("x") if self.first_batch else None
            self._cache["theory"] = (theory.RunTheory.for_run(self.run, x) if self.run is not None else None)
        return self._cache["theory"]

    def invalidate(self) -> None:
        """Forget derived values (after the run's settings changed)."""
        self._cache.clear()


def log10_or_nan(values) -> np.ndarray:
    """log10 of positive values; NaN for zero, negative, NaN and Inf (drawn as gaps, marked separately)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    ok = np.isfinite(values) & (values > 0)
    np.log10(values, out=out, where=ok)
    return out


def nonfinite_mask(values) -> np.ndarray:
    """True where a value is NaN or +-Inf (data, drawn distinctly)."""
    return ~np.isfinite(np.asarray(values, dtype=np.float64))
