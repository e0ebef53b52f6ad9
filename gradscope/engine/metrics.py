"""What one forward/backward pass returns, and where its first non-finite value appeared.

Per-timestep metrics have shape (L, T): layer l, timestep t.  Their definitions (TRACE_FORMAT.md and
docs/metrics.md) are shared by the Numba kernels and their NumPy twins:

    h_norm, c_norm             mean over the batch of ||h_t||, ||c_t||
    grad_h_norm, grad_c_norm   mean over the batch of ||dL/dh_t||, ||dL/dc_t||, the TOTAL derivatives
    gate_{i,f,g,o}_mean        LSTM gate activations averaged over batch and units
    gate_{i,f,o}_sat           share of (example, unit) pairs with the sigmoid gate < 0.05 or > 0.95
    gate_g_sat                 share with |g| > 0.95 (g is a tanh)
    relu_dead                  ReLU RNN: share of (example, unit) pairs with h = 0 (pre-activation <= 0)
    tanh_sat                   tanh RNN: share with |h| > 0.95
    sigmoid_sat                sigmoid RNN: share with h < 0.05 or h > 0.95
    loss_t                     (T,) the loss contributed by step t; the step's loss is their sum
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .params import ModelSpec, Params

SAT_LOW, SAT_HIGH = 0.05, 0.95

COMMON_STEP_METRICS = ("h_norm", "grad_h_norm")
LSTM_STEP_METRICS = ("c_norm", "grad_c_norm",
                     "gate_i_mean", "gate_f_mean", "gate_g_mean", "gate_o_mean",
                     "gate_i_sat", "gate_f_sat", "gate_g_sat", "gate_o_sat")
RNN_ACTIVATION_METRICS = {"relu": ("relu_dead",), "tanh": ("tanh_sat",), "sigmoid": ("sigmoid_sat",), "linear": ()}


def step_metric_names(spec: ModelSpec) -> tuple[str, ...]:
    """Names of the (L, T) metrics a pass over this model produces."""
    if spec.cell == "lstm":
        return COMMON_STEP_METRICS + LSTM_STEP_METRICS
    return COMMON_STEP_METRICS + RNN_ACTIVATION_METRICS[spec.activation]


@dataclass
class NonFinite:
    """Where the first NaN or Inf appeared, in the order the pass computes things."""

    quantity: str                 # "h", "c", "loss", "grad_h", "grad_c" or "grad <param name>"
    layer: int | None
    timestep: int | None
    iteration: int | None = None  # filled in by the trainer

    def as_dict(self) -> dict:
        return {"iteration": self.iteration, "layer": self.layer, "timestep": self.timestep,
                "quantity": self.quantity}

    def __str__(self) -> str:
        where = [f"iteration {self.iteration}"] if self.iteration is not None else []
        if self.layer is not None:
            where.append(f"layer {self.layer}")
        if self.timestep is not None:
            where.append(f"t = {self.timestep}")
        return f"non-finite {self.quantity} at " + ", ".join(where) if where else f"non-finite {self.quantity}"


@dataclass
class StepResult:
    """One forward + backward pass: the loss, every parameter gradient and the per-timestep metrics."""

    loss: float
    grads: Params
    metrics: dict[str, np.ndarray]      # name -> (L, T) float64, plus "loss_t" (T,)
    nonfinite: NonFinite | None = None
    extras: dict = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        return self.nonfinite is None


def first_nonfinite(metrics: dict[str, np.ndarray], grads: Params) -> NonFinite | None:
    """Locate the first non-finite value of a pass from its metrics, in computation order.

    Forward: layer by layer, and in each layer t = 0..T-1 (c_t before h_t); then the loss, step by step;
    backward: t = T-1..0, and at each step from the top layer down (dL/dh_t before dL/dc_t); last the
    parameter gradients.  A norm is non-finite exactly when its vector holds a NaN or an Inf (norms are
    accumulated in float64, so float32 values cannot overflow them).
    """
    h, c = metrics["h_norm"], metrics.get("c_norm")
    L, T = h.shape
    for l in range(L):
        for t in range(T):
            if c is not None and not np.isfinite(c[l, t]):
                return NonFinite("c", l, t)
            if not np.isfinite(h[l, t]):
                return NonFinite("h", l, t)
    bad = np.flatnonzero(~np.isfinite(metrics["loss_t"]))
    if bad.size:
        return NonFinite("loss", None, int(bad[0]))
    gh, gc = metrics["grad_h_norm"], metrics.get("grad_c_norm")
    for t in range(T - 1, -1, -1):
        for l in range(L - 1, -1, -1):
            if not np.isfinite(gh[l, t]):
                return NonFinite("grad_h", l, t)
            if gc is not None and not np.isfinite(gc[l, t]):
                return NonFinite("grad_c", l, t)
    for name, g in grads.named():
        if not np.all(np.isfinite(g)):
            layer = int(name[5:name.index(".")]) if name.startswith("layer") else None
            return NonFinite(f"grad {name}", layer, None)
    return None
