"""Predictions as log10 lines over t = 0..T-1, anchored at a measured value at the last scored step a
(NaN after a, where the assumptions do not hold), and what one run's lines need (RunTheory)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..engine.cells import cell
from .meanfield import (
    DERIVATIVE_BOUND,
    _check_activation,
    gain_squared,
    layer_input_variances,
    second_moment,
    variance_factor,
    variance_trajectory,
)


# ------------------------------------------------------------------------------------------ anchored lines
def anchored_line(log10_gains: np.ndarray, anchor_t: int, anchor_value: float) -> np.ndarray:
    """log10 of the prediction G(t) = G(a) prod_{s=t+1}^{a} gain_s, for t = 0..T-1 (NaN after a).

    ``log10_gains`` (T,) holds log10 gain_s, the factor applied stepping back from s to s-1.
    A non-positive or non-finite anchor value gives an all-NaN line (nothing to anchor at).
    """
    log10_gains = np.asarray(log10_gains, dtype=np.float64)
    T = len(log10_gains)
    if not 0 <= anchor_t < T:
        raise ValueError(f"anchor step {anchor_t} is outside 0..{T - 1}")
    line = np.full(T, np.nan)
    if not (math.isfinite(anchor_value) and anchor_value > 0):
        return line
    # cumulative sum from the anchor backwards: line[t] = log10 G(a) + sum_{s=t+1}^{a} log10 gain_s
    back = np.concatenate([np.cumsum(log10_gains[anchor_t:0:-1])[::-1], [0.0]])  # (a+1,)
    line[: anchor_t + 1] = math.log10(anchor_value) + back
    return line


def mean_field_line(
    activation: str, c: float, q_in, T: int, anchor_t: int, anchor_value: float, q_b: float = 0.0
) -> np.ndarray:
    """(T,) log10 of the mean-field gradient norm back in time, anchored at ||dL/dh_a|| = anchor_value."""
    _check_activation(activation)
    q = variance_trajectory(activation, c, q_in, T, q_b)  # (T,)
    gains2 = np.array([gain_squared(activation, c, v) for v in q])  # (T,) relu and linear need no finite q
    with np.errstate(divide="ignore"):
        log10_gains = 0.5 * np.log10(gains2)  # (T,) -inf where the gain is 0
    return anchored_line(log10_gains, anchor_t, anchor_value)


def relu_line(c: float, T: int, anchor_t: int, anchor_value: float) -> np.ndarray:
    """(T,) log10 of the lecture's ReLU prediction: sqrt(c/2)^(a-t) times the anchor value."""
    return anchored_line(np.full(T, 0.5 * math.log10(c / 2)), anchor_t, anchor_value)


def pascanu_line(activation: str, sigma_max: float, T: int, anchor_t: int, anchor_value: float) -> np.ndarray:
    """(T,) log10 of the upper bound (gamma sigma_max)^(a-t) times the anchor value (Pascanu et al. 2013)."""
    _check_activation(activation)
    if not (math.isfinite(sigma_max) and sigma_max > 0):
        return np.full(T, np.nan)
    step = math.log10(DERIVATIVE_BOUND[activation] * sigma_max)
    return anchored_line(np.full(T, step), anchor_t, anchor_value)


@dataclass(frozen=True)
class RunTheory:
    """What the mean-field line of one RNN run needs, read off its settings and first batch.

    c       recurrent variance factor (Var(W_hh) = c / d), None when W_hh is not random (identity)
    q_in    (T,) the top layer's input contribution to its pre-activation variance
    q_b     bias variance (init.bias_scale, plus the pytorch scheme's own)
    The lines describe the TOP layer, which the loss reaches directly; layers below also receive gradient
    from the layer above at every step, which this recursion leaves out.
    """

    activation: str
    c: float | None
    q_in: np.ndarray
    q_b: float
    layer: int

    @classmethod
    def for_run(cls, run, x: np.ndarray | None = None) -> RunTheory | None:
        """From a RunConfig and the run's input batch x (T, B, n) (None: x ~ N(0, 1), the probe's inputs).

        None for a gated cell (its nonlinearities are fixed, not the run's activation: see gradscope.theory.gates)
        or an activation without theory.
        """
        if not cell(run.cell).uses_activation or run.activation not in DERIVATIVE_BOUND:
            return None
        d, T = run.hidden_size, run.task.seq_len
        init = run.init
        n = x.shape[-1] if x is not None else (run.task.input_size or 1)
        c = variance_factor(init.recurrent, init.recurrent_scale, d, d, d)
        c_in = variance_factor(init.input, init.input_scale, n, d, d)
        c_up = variance_factor(init.input, init.input_scale, d, d, d)
        if c_in is None or c_up is None:  # identity W_hx (both): unit j receives scale * x_j, q_in = scale^2 E[x^2]
            c_in = c_up = init.input_scale**2
        m2 = 1.0 if x is None else np.mean(np.square(x, dtype=np.float64), axis=(1, 2))  # (T,) E[x_t^2]
        # the pytorch scheme also draws b_h as the sum of two U(-1/sqrt(d), 1/sqrt(d)): variance 2 / (3 d)
        q_b = 2.0 / (3.0 * d) if init.recurrent == "pytorch" else 0.0
        q_b += init.bias_scale  # init.bias_scale: b_h ~ N(0, bias_scale) on top
        if c is None:
            q_in = np.full(T, np.nan)
        else:
            q = layer_input_variances(run.activation, c, c_in, m2, run.layers, T, q_b, c_in_upper=c_up)
            top_in = (
                c_in * np.broadcast_to(m2, (T,))
                if run.layers == 1
                else np.array(
                    [c_up * second_moment(run.activation, v) if math.isfinite(v) else math.inf for v in q[-2]]
                )
            )
            q_in = np.asarray(top_in, dtype=np.float64)
        return cls(run.activation, c, q_in, q_b, run.layers - 1)

    def mean_field(self, anchor_t: int, anchor_value: float) -> np.ndarray | None:
        """(T,) log10 mean-field prediction for the top layer anchored at step anchor_t, or None (identity)."""
        if self.c is None:
            return None
        return mean_field_line(self.activation, self.c, self.q_in, len(self.q_in), anchor_t, anchor_value, self.q_b)

    def pascanu(self, sigma_max: float, anchor_t: int, anchor_value: float) -> np.ndarray:
        return pascanu_line(self.activation, sigma_max, len(self.q_in), anchor_t, anchor_value)


def last_scored_step(mask=None, loss_t=None, T: int | None = None) -> int:
    """The last step the loss scores: from the task's (T, B) mask, else the last nonzero loss_t, else T-1."""
    if mask is not None:
        mask = np.asarray(mask)
        scored = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
        if scored.size:
            return int(scored[-1])
    if loss_t is not None:
        loss_t = np.asarray(loss_t, dtype=np.float64)
        scored = np.flatnonzero(loss_t != 0)
        if scored.size:
            return int(scored[-1])
        return len(loss_t) - 1
    if T is None:
        raise ValueError("last_scored_step needs a mask, loss_t or T")
    return T - 1


__all__ = ["anchored_line", "mean_field_line", "relu_line", "pascanu_line", "RunTheory", "last_scored_step"]
