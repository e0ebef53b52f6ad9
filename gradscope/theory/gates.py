"""Theory lines for the gated cells at initialisation: the LSTM's cell path and the GRU's update path.

LSTM (PyTorch's equations): c_t = f_t * c_{t-1} + i_t * g_t, f_t = sigma(a_t), a_t = W_hx,f x_t + W_hh,f h_{t-1}
+ b_f.  Along the cell path alone, dc_t/dc_{t-1} = diag(f_t), so a gradient reaching c_a is multiplied per
unit by prod_{j=t+1}^{a} f_j on its way back to c_t.
GRU (PyTorch's equations): h_t = (1 - z_t) * n_t + z_t * h_{t-1}, z_t = sigma(W_hx,z x_t + b_z + W_hh,z h_{t-1}
+ b_hh,z); the direct path dh_t/dh_{t-1} ⊃ diag(z_t), so the same product with z in place of f.

Two predictions of the product over k steps, for a gate whose pre-activation is a = b + (W contributions):
* small weights: the W_hx x and W_hh h terms are neglected, a = b, and the product is sigma(b)^k.  To first
  order in those terms the error is zero on average (they have mean 0), the first correction is
  sigma''(b) q / 2 per step; it is exact in the limit q -> 0.
* mean field: a ~ N(b, q) with q = Var(W_hx) n E[x^2] + Var(W_hh) d E[h^2] + Var(b) (``gate_preactivation_variance``),
  and the steps are taken as independent, so E[prod f] = E[sigma(b + sqrt(q) z)]^k.  It neglects (1) the
  other paths of the full Jacobian (through h_{t-1} into every gate, and for the GRU through n_t), which
  scale with sqrt(Var(W_hh) d), and (2) correlations of a unit's gate across steps (a slowly varying h_{t-1}
  makes consecutive f_t alike).
``statistic="rms"`` gives E[sigma^2]^(k/2) instead: the factor of a gradient NORM, sqrt(sum_i v_i^2 prod f_i^2),
when the units are independent; it equals the mean to O(q).
"""

from __future__ import annotations

import math

import numpy as np

from .meanfield import _sigmoid, gaussian_expectation

STATISTICS = ("mean", "rms")


def gate_preactivation_variance(
    c_in: float, input_second_moment: float, c_rec: float = 0.0, state_second_moment: float = 0.0, q_b: float = 0.0
) -> float:
    """q = c_in E[x^2] + c_rec E[h^2] + q_b: the variance of a gate's pre-activation around its bias.

    c_in and c_rec are the variance factors of W_hx and W_hh (entries of variance c / fan_in, see
    ``variance_factor``), E[x^2] and E[h^2] the mean squares per component, q_b the variance of the random
    part of the bias (e.g. 2 / (3 d) for PyTorch's two U(-1/sqrt(d), 1/sqrt(d)) biases).
    """
    q = c_in * input_second_moment + c_rec * state_second_moment + q_b
    if not (math.isfinite(q) and q >= 0):
        raise ValueError(f"the gate pre-activation variance must be finite and >= 0, got {q}")
    return float(q)


def gate_mean(b: float, q: float = 0.0, statistic: str = "mean") -> float:
    """E[sigma(b + sqrt(q) z)] (or sqrt(E[sigma(b + sqrt(q) z)^2]) for "rms"), z ~ N(0, 1): one step's factor."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; expected one of {STATISTICS}")
    if q == 0:
        return float(_sigmoid(b))
    if statistic == "mean":
        return gaussian_expectation(lambda u: _sigmoid(b + u), q)
    return math.sqrt(gaussian_expectation(lambda u: _sigmoid(b + u) ** 2, q))


def gate_product(b: float, k: int, q: float = 0.0, statistic: str = "mean") -> float:
    """The predicted product of a gate over k steps: gate_mean(b, q)^k (sigma(b)^k for q = 0)."""
    return gate_mean(b, q, statistic) ** k


def lstm_cell_decay(b_f: float, k: int, q: float = 0.0, statistic: str = "mean") -> float:
    """prod_{j=1}^{k} f_j predicted as sigma(b_f)^k (q = 0) or E[sigma(b_f + sqrt(q) z)]^k (module docstring)."""
    return gate_product(b_f, k, q, statistic)


def gru_update_decay(b_z: float, k: int, q: float = 0.0, statistic: str = "mean") -> float:
    """prod_{j=1}^{k} z_j predicted as sigma(b_z)^k (q = 0) or E[sigma(b_z + sqrt(q) z)]^k (module docstring)."""
    return gate_product(b_z, k, q, statistic)


def gate_product_line(b, q: float, T: int, anchor_t: int, anchor_value: float, statistic: str = "mean") -> np.ndarray:
    """(T,) log10 of anchor_value * mean_i m_i^(a-t) for t <= a, NaN after a, with m_i = gate_mean(b_i, q)
    ("rms": anchor_value * sqrt(mean_i m_i^(2(a-t))), the norm of a vector whose unit i decays like m_i).

    ``b`` is one bias or one per unit (chrono initialisation draws b_f per unit): the line is then the unit
    average of the per-unit products, no longer a straight line.  For one bias it is
    anchored_line(log10 m, ...), the same convention as the other lines (all NaN for an anchor value that is
    not positive and finite).
    """
    if not 0 <= anchor_t < T:
        raise ValueError(f"anchor step {anchor_t} is outside 0..{T - 1}")
    line = np.full(T, np.nan)
    if not (math.isfinite(anchor_value) and anchor_value > 0):
        return line
    biases = np.atleast_1d(np.asarray(b, dtype=np.float64))
    log_m = np.log([gate_mean(float(v), q, statistic) for v in biases])  # (units,) ln m_i < 0
    k = np.arange(anchor_t, -1, -1, dtype=np.float64)  # (a+1,) steps back a - t
    p = 1 if statistic == "mean" else 2  # a norm averages the squared products over units
    # (1/p) ln mean_i exp(p k ln m_i), shifted by the largest term so that long lines do not underflow
    terms = p * k[:, None] * log_m[None, :]  # (a+1, units)
    top = terms.max(axis=1)
    log_mean = (top + np.log(np.mean(np.exp(terms - top[:, None]), axis=1))) / p  # (a+1,)
    line[: anchor_t + 1] = math.log10(anchor_value) + log_mean / math.log(10)
    return line


def lstm_cell_line(b_f, q: float, T: int, anchor_t: int, anchor_value: float, statistic: str = "mean") -> np.ndarray:
    """(T,) log10 line of the LSTM cell-path gradient ||dL/dc_t|| back from the anchor: prod f per step."""
    return gate_product_line(b_f, q, T, anchor_t, anchor_value, statistic)


def gru_update_line(b_z, q: float, T: int, anchor_t: int, anchor_value: float, statistic: str = "mean") -> np.ndarray:
    """(T,) log10 line of the GRU direct-path gradient ||dL/dh_t|| back from the anchor: prod z per step."""
    return gate_product_line(b_z, q, T, anchor_t, anchor_value, statistic)


__all__ = [
    "gate_preactivation_variance",
    "gate_mean",
    "gate_product",
    "lstm_cell_decay",
    "gru_update_decay",
    "gate_product_line",
    "lstm_cell_line",
    "gru_update_line",
]
