"""NumPy twin of cells/rnn.py: the plain RNN's layer forward and backward through time.

z_t = x_t W_hx^T + h_{t-1} W_hh^T + b_h          h_t = f(z_t)
"""

from __future__ import annotations

import numpy as np

from ..metrics import SAT_HIGH
from ..params import LayerParams
from . import activate, activation_grad_from_output, row_norm_mean, sat_fraction


def rnn_forward(x: np.ndarray, p: LayerParams, activation: str, h0: np.ndarray | None = None):
    """Forward through time.  x (T, B, n) -> H (T, B, d) and the layer's (T,) metrics; h0 (B, d): h_{-1}
    when given (a seq2seq decoder), else 0."""
    T, B, _ = x.shape
    d = p.W_hh.shape[1]
    H = np.zeros((T, B, d), dtype=x.dtype)  # (T, B, d)
    m = {"h_norm": np.zeros(T)}
    extra = {"relu": "relu_dead", "tanh": "tanh_sat", "sigmoid": "sigmoid_sat"}.get(activation)
    if extra:
        m[extra] = np.zeros(T)
    h = np.zeros((B, d), dtype=x.dtype) if h0 is None else h0  # h_{-1}
    for t in range(T):
        z = x[t] @ p.W_hx.T + h @ p.W_hh.T + p.b_h  # (B, d)
        h = activate(activation, z)  # (B, d)
        H[t] = h
        m["h_norm"][t] = row_norm_mean(h)
        if activation == "relu":
            m["relu_dead"][t] = float(np.mean(h == 0))
        elif activation == "tanh":
            m["tanh_sat"][t] = float(np.mean(np.abs(h) > SAT_HIGH))
        elif activation == "sigmoid":
            m["sigmoid_sat"][t] = sat_fraction(h)
    return H, m


def rnn_backward(
    x: np.ndarray,
    H: np.ndarray,
    G: np.ndarray,
    p: LayerParams,
    activation: str,
    dz_next: np.ndarray | None = None,
    h_prev: np.ndarray | None = None,
):
    """Backward through time over steps t0 .. t0+Tc-1 (the whole layer by default).

    x (Tc, B, n) and H (Tc, B, d) are the steps' inputs and states; G (Tc, B, d) holds the DIRECT gradient
    into each h_t (from the readout or the layer above).  For a chunk inside the sequence, dz_next (B, d)
    is dz_{t0+Tc} from the later steps and h_prev (B, d) is h_{t0-1}; both default to zero (the sequence's
    end and start).  Returns the parameter gradients, dL/dx (Tc, B, n) for the layer below,
    grad_h_norm (Tc,) and dz_{t0} (the carry for the earlier steps).
        g_t   = G_t + dz_{t+1} W_hh            total dL/dh_t
        dz_t  = g_t * f'(z_t)
        dW_hh = sum_t dz_t^T h_{t-1}    dW_hx = sum_t dz_t^T x_t    db_h = sum_t,b dz_t    dx_t = dz_t W_hx
    """
    T, B, d = H.shape
    dZ = np.zeros_like(H)  # (T, B, d)
    grad_h_norm = np.zeros(T)
    dz_next = np.zeros((B, d), dtype=H.dtype) if dz_next is None else dz_next
    for t in range(T - 1, -1, -1):
        g = G[t] + dz_next @ p.W_hh  # (B, d) total dL/dh_t
        grad_h_norm[t] = row_norm_mean(g)
        dz_next = dZ[t] = g * activation_grad_from_output(activation, H[t])
    h_prev = np.zeros_like(H[0]) if h_prev is None else h_prev
    H_prev = np.concatenate([h_prev[None], H[:-1]])  # (T, B, d) h_{t-1}
    grads = LayerParams(
        W_hx=np.einsum("tbi,tbj->ij", dZ, x),  # (d, n)
        W_hh=np.einsum("tbi,tbj->ij", dZ, H_prev),  # (d, d)
        b_h=dZ.sum(axis=(0, 1)),
    )  # (d,)
    dx = dZ @ p.W_hx  # (T, B, n)
    return grads, dx, grad_h_norm, dZ[0]
