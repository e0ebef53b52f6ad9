"""NumPy twin of cells/lstm.py: the LSTM's layer forward and backward through time.

[i, f, g, o] = split(x_t W_hx^T + h_{t-1} W_hh^T + b_h)
i, f, o = sigmoid(.), g = tanh(.)   c_t = f * c_{t-1} + i * g   h_t = o * tanh(c_t)
"""

from __future__ import annotations

import numpy as np

from ..metrics import SAT_HIGH
from ..params import LayerParams
from . import row_norm_mean, sat_fraction, sigmoid


def lstm_forward(x: np.ndarray, p: LayerParams, h0: np.ndarray | None = None, c0: np.ndarray | None = None):
    """Forward through time.  Returns H, C (T, B, d), the gate activations A (T, B, 4d) and (T,) metrics;
    h0, c0 (B, d): h_{-1}, c_{-1} when given (a seq2seq decoder), else 0."""
    T, B, _ = x.shape
    d = p.W_hh.shape[1]
    H = np.zeros((T, B, d), dtype=x.dtype)
    C = np.zeros((T, B, d), dtype=x.dtype)
    A = np.zeros((T, B, 4 * d), dtype=x.dtype)  # blocks i, f, g, o
    names = (
        "h_norm",
        "c_norm",
        "gate_i_mean",
        "gate_f_mean",
        "gate_g_mean",
        "gate_o_mean",
        "gate_i_sat",
        "gate_f_sat",
        "gate_g_sat",
        "gate_o_sat",
    )
    m = {k: np.zeros(T) for k in names}
    h = np.zeros((B, d), dtype=x.dtype) if h0 is None else h0
    c = np.zeros((B, d), dtype=x.dtype) if c0 is None else c0
    for t in range(T):
        z = x[t] @ p.W_hx.T + h @ p.W_hh.T + p.b_h  # (B, 4d)
        i, f, g, o = (
            sigmoid(z[:, :d]),
            sigmoid(z[:, d : 2 * d]),
            np.tanh(z[:, 2 * d : 3 * d]),
            sigmoid(z[:, 3 * d :]),
        )  # (B, d) each
        c = f * c + i * g  # (B, d)
        h = o * np.tanh(c)  # (B, d)
        H[t], C[t] = h, c
        A[t] = np.concatenate([i, f, g, o], axis=1)
        m["h_norm"][t], m["c_norm"][t] = row_norm_mean(h), row_norm_mean(c)
        for name, gate in zip("ifgo", (i, f, g, o)):
            m[f"gate_{name}_mean"][t] = float(np.mean(gate, dtype=np.float64))
        m["gate_i_sat"][t], m["gate_f_sat"][t], m["gate_o_sat"][t] = sat_fraction(i), sat_fraction(f), sat_fraction(o)
        m["gate_g_sat"][t] = float(np.mean(np.abs(g) > SAT_HIGH))
    return H, C, A, m


def lstm_backward(
    x: np.ndarray,
    H: np.ndarray,
    C: np.ndarray,
    A: np.ndarray,
    G: np.ndarray,
    p: LayerParams,
    dz_next: np.ndarray | None = None,
    dc_next: np.ndarray | None = None,
    h_prev: np.ndarray | None = None,
    c_prev: np.ndarray | None = None,
):
    """Backward through time over steps t0 .. t0+Tc-1 (the whole layer by default).

    x, H, C, A, G as in ``lstm_forward`` for those steps, G the direct gradient into each h_t.  For a chunk
    inside the sequence: dz_next (B, 4d) = dz_{t0+Tc}, dc_next (B, d) = dc_{t0+Tc} f_{t0+Tc},
    h_prev, c_prev (B, d) = h_{t0-1}, c_{t0-1}; all default to zero.
        g_t   = G_t + dz_{t+1} W_hh                              total dL/dh_t
        dc_t  = g_t * o_t * (1 - tanh^2 c_t) + dc_{t+1} * f_{t+1}  total dL/dc_t
        di = dc_t g_t^gate,  df = dc_t c_{t-1},  dg = dc_t i_t,  do = g_t tanh c_t
        dz_t  = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]    (B, 4d)
    Returns the parameter gradients, dL/dx (Tc, B, n), grad_h_norm, grad_c_norm (Tc,), and the carries
    for the earlier steps: dz_{t0} and dc_{t0} f_{t0}.
    """
    T, B, d = H.shape
    dZ = np.zeros_like(A)  # (T, B, 4d)
    grad_h_norm, grad_c_norm = np.zeros(T), np.zeros(T)
    dz_next = np.zeros((B, 4 * d), dtype=H.dtype) if dz_next is None else dz_next
    dc_next = np.zeros((B, d), dtype=H.dtype) if dc_next is None else dc_next  # dc_{t+1} * f_{t+1}
    h_prev = np.zeros((B, d), dtype=H.dtype) if h_prev is None else h_prev
    c_before = np.zeros((B, d), dtype=H.dtype) if c_prev is None else c_prev
    for t in range(T - 1, -1, -1):
        i, f, g, o = A[t, :, :d], A[t, :, d : 2 * d], A[t, :, 2 * d : 3 * d], A[t, :, 3 * d :]
        c_prev_t = C[t - 1] if t > 0 else c_before
        tc = np.tanh(C[t])
        gh = G[t] + dz_next @ p.W_hh  # (B, d) total dL/dh_t
        dc = gh * o * (1 - tc * tc) + dc_next  # (B, d) total dL/dc_t
        grad_h_norm[t], grad_c_norm[t] = row_norm_mean(gh), row_norm_mean(dc)
        dZ[t] = np.concatenate(
            [dc * g * i * (1 - i), dc * c_prev_t * f * (1 - f), dc * i * (1 - g * g), gh * tc * o * (1 - o)], axis=1
        )
        dz_next = dZ[t]
        dc_next = dc * f
    H_prev = np.concatenate([h_prev[None], H[:-1]])
    grads = LayerParams(
        W_hx=np.einsum("tbi,tbj->ij", dZ, x),  # (4d, n)
        W_hh=np.einsum("tbi,tbj->ij", dZ, H_prev),  # (4d, d)
        b_h=dZ.sum(axis=(0, 1)),
    )  # (4d,)
    dx = dZ @ p.W_hx  # (T, B, n)
    return grads, dx, grad_h_norm, grad_c_norm, dZ[0], dc_next
