"""NumPy twin of cells/gru.py: the GRU's layer forward and backward through time (PyTorch's equations).

a_t = x_t W_hx^T + b_h,   u_t = h_{t-1} W_hh^T + b_hh        blocks r, z, n of d
r = sigmoid(a_r + u_r),  z = sigmoid(a_z + u_z),  n = tanh(a_n + r * u_n),  h_t = (1 - z) * n + z * h_{t-1}
"""

from __future__ import annotations

import numpy as np

from ..metrics import SAT_HIGH
from ..params import LayerParams
from . import row_norm_mean, sat_fraction, sigmoid


def gru_forward(x: np.ndarray, p: LayerParams, h0: np.ndarray | None = None):
    """Forward through time.  Returns H (T, B, d), U_n (T, B, d) = u_n of each step (kept for dr), the gate
    activations A (T, B, 3d) (blocks r, z, n) and the layer's (T,) metrics; h0 (B, d): h_{-1} when given
    (a seq2seq decoder), else 0."""
    T, B, _ = x.shape
    d = p.W_hh.shape[1]
    H = np.zeros((T, B, d), dtype=x.dtype)
    U_n = np.zeros((T, B, d), dtype=x.dtype)
    A = np.zeros((T, B, 3 * d), dtype=x.dtype)
    names = ("h_norm", "gate_r_mean", "gate_z_mean", "gate_n_mean", "gate_r_sat", "gate_z_sat", "gate_n_sat")
    m = {k: np.zeros(T) for k in names}
    h = np.zeros((B, d), dtype=x.dtype) if h0 is None else h0  # h_{-1}
    for t in range(T):
        a = x[t] @ p.W_hx.T + p.b_h  # (B, 3d)
        u = h @ p.W_hh.T + p.b_hh  # (B, 3d)
        r = sigmoid(a[:, :d] + u[:, :d])  # (B, d)
        z = sigmoid(a[:, d : 2 * d] + u[:, d : 2 * d])  # (B, d)
        n = np.tanh(a[:, 2 * d :] + r * u[:, 2 * d :])  # (B, d)
        h = (1 - z) * n + z * h  # (B, d)
        H[t], U_n[t] = h, u[:, 2 * d :]
        A[t] = np.concatenate([r, z, n], axis=1)
        m["h_norm"][t] = row_norm_mean(h)
        for name, gate in zip("rzn", (r, z, n)):
            m[f"gate_{name}_mean"][t] = float(np.mean(gate, dtype=np.float64))
        m["gate_r_sat"][t], m["gate_z_sat"][t] = sat_fraction(r), sat_fraction(z)
        m["gate_n_sat"][t] = float(np.mean(np.abs(n) > SAT_HIGH))
    return H, U_n, A, m


def gru_backward(
    x: np.ndarray,
    H: np.ndarray,
    U_n: np.ndarray,
    A: np.ndarray,
    G: np.ndarray,
    p: LayerParams,
    du_next: np.ndarray | None = None,
    gz_next: np.ndarray | None = None,
    h_prev: np.ndarray | None = None,
):
    """Backward through time over steps t0 .. t0+Tc-1 (the whole layer by default).

    x, H, U_n, A as ``gru_forward`` gives them for those steps; G (Tc, B, d) the DIRECT gradient into each
    h_t.  For a chunk inside the sequence: du_next (B, 3d) = du_{t0+Tc}, gz_next (B, d) = g_{t0+Tc} z_{t0+Tc},
    h_prev (B, d) = h_{t0-1}; all default to zero.
        g_t  = G_t + du_{t+1} W_hh + g_{t+1} z_{t+1}                 total dL/dh_t
        dn = g (1 - z) (1 - n^2)    dz = g (h_{t-1} - n) z (1 - z)    dr = dn u_n r (1 - r)
        da_t = [dr, dz, dn]  ->  dW_hx, db_h, dx_t = da_t W_hx
        du_t = [dr, dz, dn r]  ->  dW_hh = sum du_t^T h_{t-1}, db_hh
    Returns the parameter gradients, dL/dx (Tc, B, n), grad_h_norm (Tc,), and the carries for the earlier
    steps: du_{t0} and g_{t0} z_{t0}.
    """
    T, B, d = H.shape
    dA = np.zeros_like(A)  # (T, B, 3d) da_t
    dU = np.zeros_like(A)  # (T, B, 3d) du_t
    grad_h_norm = np.zeros(T)
    du_next = np.zeros((B, 3 * d), dtype=H.dtype) if du_next is None else du_next
    gz_next = np.zeros((B, d), dtype=H.dtype) if gz_next is None else gz_next
    h_before = np.zeros((B, d), dtype=H.dtype) if h_prev is None else h_prev
    for t in range(T - 1, -1, -1):
        r, z, n = A[t, :, :d], A[t, :, d : 2 * d], A[t, :, 2 * d :]
        h_prev_t = H[t - 1] if t > 0 else h_before
        g = G[t] + du_next @ p.W_hh + gz_next  # (B, d) total dL/dh_t
        grad_h_norm[t] = row_norm_mean(g)
        dn = g * (1 - z) * (1 - n * n)
        dz = g * (h_prev_t - n) * z * (1 - z)
        dr = dn * U_n[t] * r * (1 - r)
        dA[t] = np.concatenate([dr, dz, dn], axis=1)
        dU[t] = np.concatenate([dr, dz, dn * r], axis=1)
        du_next, gz_next = dU[t], g * z
    H_prev = np.concatenate([h_before[None], H[:-1]])  # (T, B, d) h_{t-1}
    grads = LayerParams(
        W_hx=np.einsum("tbi,tbj->ij", dA, x),  # (3d, n)
        W_hh=np.einsum("tbi,tbj->ij", dU, H_prev),  # (3d, d)
        b_h=dA.sum(axis=(0, 1)),  # (3d,)
        b_hh=dU.sum(axis=(0, 1)),
    )  # (3d,)
    dx = dA @ p.W_hx  # (T, B, n)
    return grads, dx, grad_h_norm, du_next, gz_next
