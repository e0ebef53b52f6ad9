"""Plain NumPy twins of the engine's kernels: the readable specification and the test oracle.

Nothing here is fast; everything here is meant to be obviously right.  Notation (TRACE_FORMAT.md):
T steps, batch B, L layers, hidden size d, layer input size n, output size k; arrays are time-major.
Each function twins the kernel of the same name in cells.py at the same granularity: a layer's forward
pass, a chunk of a layer's backward pass (the whole layer when no carries are given), the readout of a
chunk of steps; ``bptt`` twins the step kernels.  fastmath.exp / sigmoid / tanh twin np.exp, ``sigmoid``
and np.tanh.

    RNN   z_t = x_t W_hx^T + h_{t-1} W_hh^T + b_h          h_t = f(z_t)
    LSTM  [i, f, g, o] = split(x_t W_hx^T + h_{t-1} W_hh^T + b_h)
          i, f, o = sigmoid(.), g = tanh(.)   c_t = f * c_{t-1} + i * g   h_t = o * tanh(c_t)
    readout y_t = h_t W_yh^T + b_y on the top layer;  L = (1/B) sum_{t,b} mask[t,b] ell(y_tb, target_tb)

The backward pass carries the TOTAL derivative dL/dh_t = (direct part: the readout at t, or the layer
above at t) + (recurrent part: dL/dz_{t+1} W_hh), which is what the metrics record.
"""
from __future__ import annotations

import numpy as np

from .metrics import SAT_HIGH, SAT_LOW, StepResult, first_nonfinite
from .params import LayerParams, ModelSpec, Params


# ----------------------------------------------------------------------------------------------- activations
def activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return sigmoid(z)
    if name == "linear":
        return z.copy()
    raise ValueError(f"unknown activation {name!r}")


def activation_grad_from_output(name: str, h: np.ndarray) -> np.ndarray:
    """f'(z) written in terms of h = f(z), so the backward pass needs only the stored states."""
    if name == "relu":
        return (h > 0).astype(h.dtype)
    if name == "tanh":
        return 1 - h * h
    if name == "sigmoid":
        return h * (1 - h)
    if name == "linear":
        return np.ones_like(h)
    raise ValueError(f"unknown activation {name!r}")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def row_norms(v: np.ndarray) -> np.ndarray:
    """L2 norm of each row (last axis), accumulated in float64.  Where the plain sum of squares overflows
    (float64 entries above ~1e154), the norm is taken of v * 2^-600 and scaled back, so a norm is infinite
    only when the row holds an Inf."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.sqrt(np.sum(v * v, axis=-1))
        big = norms == np.inf
        if np.any(big):
            scaled = v[big] * 2.0 ** -600
            norms[big] = np.sqrt(np.sum(scaled * scaled, axis=-1)) * 2.0 ** 600
    return norms


def row_norm_mean(v: np.ndarray) -> float:
    """Mean over the batch (rows) of the L2 norm of each row."""
    return float(np.mean(row_norms(v)))


def sat_fraction(a: np.ndarray) -> float:
    return float(np.mean((a < SAT_LOW) | (a > SAT_HIGH)))


# ---------------------------------------------------------------------------------------------- RNN layer
def rnn_forward(x: np.ndarray, p: LayerParams, activation: str):
    """Forward through time.  x (T, B, n) -> H (T, B, d) and the layer's (T,) metrics."""
    T, B, _ = x.shape
    d = p.W_hh.shape[1]
    H = np.zeros((T, B, d), dtype=x.dtype)                                # (T, B, d)
    m = {"h_norm": np.zeros(T)}
    extra = {"relu": "relu_dead", "tanh": "tanh_sat", "sigmoid": "sigmoid_sat"}.get(activation)
    if extra:
        m[extra] = np.zeros(T)
    h = np.zeros((B, d), dtype=x.dtype)                                   # h_{-1} = 0
    for t in range(T):
        z = x[t] @ p.W_hx.T + h @ p.W_hh.T + p.b_h                        # (B, d)
        h = activate(activation, z)                                       # (B, d)
        H[t] = h
        m["h_norm"][t] = row_norm_mean(h)
        if activation == "relu":
            m["relu_dead"][t] = float(np.mean(h == 0))
        elif activation == "tanh":
            m["tanh_sat"][t] = float(np.mean(np.abs(h) > SAT_HIGH))
        elif activation == "sigmoid":
            m["sigmoid_sat"][t] = sat_fraction(h)
    return H, m


def rnn_backward(x: np.ndarray, H: np.ndarray, G: np.ndarray, p: LayerParams, activation: str,
                 dz_next: np.ndarray | None = None, h_prev: np.ndarray | None = None):
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
    dZ = np.zeros_like(H)                                                 # (T, B, d)
    grad_h_norm = np.zeros(T)
    dz_next = np.zeros((B, d), dtype=H.dtype) if dz_next is None else dz_next
    for t in range(T - 1, -1, -1):
        g = G[t] + dz_next @ p.W_hh                                       # (B, d) total dL/dh_t
        grad_h_norm[t] = row_norm_mean(g)
        dz_next = dZ[t] = g * activation_grad_from_output(activation, H[t])
    h_prev = np.zeros_like(H[0]) if h_prev is None else h_prev
    H_prev = np.concatenate([h_prev[None], H[:-1]])                       # (T, B, d) h_{t-1}
    grads = LayerParams(W_hx=np.einsum("tbi,tbj->ij", dZ, x),             # (d, n)
                        W_hh=np.einsum("tbi,tbj->ij", dZ, H_prev),        # (d, d)
                        b_h=dZ.sum(axis=(0, 1)))                          # (d,)
    dx = dZ @ p.W_hx                                                      # (T, B, n)
    return grads, dx, grad_h_norm, dZ[0]


# --------------------------------------------------------------------------------------------- LSTM layer
def lstm_forward(x: np.ndarray, p: LayerParams):
    """Forward through time.  Returns H, C (T, B, d), the gate activations A (T, B, 4d) and (T,) metrics."""
    T, B, _ = x.shape
    d = p.W_hh.shape[1]
    H = np.zeros((T, B, d), dtype=x.dtype)
    C = np.zeros((T, B, d), dtype=x.dtype)
    A = np.zeros((T, B, 4 * d), dtype=x.dtype)                            # blocks i, f, g, o
    names = ("h_norm", "c_norm", "gate_i_mean", "gate_f_mean", "gate_g_mean", "gate_o_mean",
             "gate_i_sat", "gate_f_sat", "gate_g_sat", "gate_o_sat")
    m = {k: np.zeros(T) for k in names}
    h = np.zeros((B, d), dtype=x.dtype)
    c = np.zeros((B, d), dtype=x.dtype)
    for t in range(T):
        z = x[t] @ p.W_hx.T + h @ p.W_hh.T + p.b_h                        # (B, 4d)
        i, f, g, o = (sigmoid(z[:, :d]), sigmoid(z[:, d:2 * d]),
                      np.tanh(z[:, 2 * d:3 * d]), sigmoid(z[:, 3 * d:]))  # (B, d) each
        c = f * c + i * g                                                 # (B, d)
        h = o * np.tanh(c)                                                # (B, d)
        H[t], C[t] = h, c
        A[t] = np.concatenate([i, f, g, o], axis=1)
        m["h_norm"][t], m["c_norm"][t] = row_norm_mean(h), row_norm_mean(c)
        for name, gate in zip("ifgo", (i, f, g, o)):
            m[f"gate_{name}_mean"][t] = float(np.mean(gate, dtype=np.float64))
        m["gate_i_sat"][t], m["gate_f_sat"][t], m["gate_o_sat"][t] = sat_fraction(i), sat_fraction(f), sat_fraction(o)
        m["gate_g_sat"][t] = float(np.mean(np.abs(g) > SAT_HIGH))
    return H, C, A, m


def lstm_backward(x: np.ndarray, H: np.ndarray, C: np.ndarray, A: np.ndarray, G: np.ndarray, p: LayerParams,
                  dz_next: np.ndarray | None = None, dc_next: np.ndarray | None = None,
                  h_prev: np.ndarray | None = None, c_prev: np.ndarray | None = None):
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
    dZ = np.zeros_like(A)                                                 # (T, B, 4d)
    grad_h_norm, grad_c_norm = np.zeros(T), np.zeros(T)
    dz_next = np.zeros((B, 4 * d), dtype=H.dtype) if dz_next is None else dz_next
    dc_next = np.zeros((B, d), dtype=H.dtype) if dc_next is None else dc_next   # dc_{t+1} * f_{t+1}
    h_prev = np.zeros((B, d), dtype=H.dtype) if h_prev is None else h_prev
    c_before = np.zeros((B, d), dtype=H.dtype) if c_prev is None else c_prev
    for t in range(T - 1, -1, -1):
        i, f, g, o = A[t, :, :d], A[t, :, d:2 * d], A[t, :, 2 * d:3 * d], A[t, :, 3 * d:]
        c_prev_t = C[t - 1] if t > 0 else c_before
        tc = np.tanh(C[t])
        gh = G[t] + dz_next @ p.W_hh                                      # (B, d) total dL/dh_t
        dc = gh * o * (1 - tc * tc) + dc_next                             # (B, d) total dL/dc_t
        grad_h_norm[t], grad_c_norm[t] = row_norm_mean(gh), row_norm_mean(dc)
        dZ[t] = np.concatenate([dc * g * i * (1 - i), dc * c_prev_t * f * (1 - f),
                                dc * i * (1 - g * g), gh * tc * o * (1 - o)], axis=1)
        dz_next = dZ[t]
        dc_next = dc * f
    H_prev = np.concatenate([h_prev[None], H[:-1]])
    grads = LayerParams(W_hx=np.einsum("tbi,tbj->ij", dZ, x),             # (4d, n)
                        W_hh=np.einsum("tbi,tbj->ij", dZ, H_prev),        # (4d, d)
                        b_h=dZ.sum(axis=(0, 1)))                          # (4d,)
    dx = dZ @ p.W_hx                                                      # (T, B, n)
    return grads, dx, grad_h_norm, grad_c_norm, dZ[0], dc_next


# ------------------------------------------------------------------------------------------ readout + loss
def readout_loss(H: np.ndarray, W_yh: np.ndarray, b_y: np.ndarray, target: np.ndarray, mask: np.ndarray,
                 loss_kind: str):
    """y_t = h_t W_yh^T + b_y and L = (1/B) sum mask * ell.  Returns (loss, loss_t (T,), dY (T, B, k)).

    mse: ell = 0.5 ||y - target||^2,        dell/dy = y - target
    ce:  ell = -log softmax(y)[target],     dell/dy = softmax(y) - onehot(target)
    """
    T, B, _ = H.shape
    Y = H @ W_yh.T + b_y                                                  # (T, B, k)
    w = (mask / B).astype(np.float64)                                     # (T, B)
    if loss_kind == "mse":
        diff = Y - target.astype(H.dtype)                                 # (T, B, k) in the model's dtype
        ell = 0.5 * np.sum(np.square(diff, dtype=np.float64), axis=-1)    # (T, B)
        dY = diff * w[..., None].astype(H.dtype)
    elif loss_kind == "ce":
        Y64 = Y.astype(np.float64)
        zmax = np.max(Y64, axis=-1, keepdims=True)
        lse = zmax[..., 0] + np.log(np.sum(np.exp(Y64 - zmax), axis=-1))  # (T, B) log-sum-exp
        ell = lse - np.take_along_axis(Y64, target[..., None].astype(np.intp), axis=-1)[..., 0]
        P = np.exp(Y64 - lse[..., None])                                  # (T, B, k) softmax
        P[np.arange(T)[:, None], np.arange(B)[None, :], target] -= 1.0
        dY = (P * w[..., None]).astype(H.dtype)
    else:
        raise ValueError(f"unknown loss kind {loss_kind!r}")
    loss_t = np.sum(w * ell, axis=1)                                      # (T,)
    return float(np.sum(loss_t)), loss_t, dY


def readout_backward(H: np.ndarray, dY: np.ndarray, W_yh: np.ndarray):
    """The readout's gradients and the direct gradient into the top layer's states, given dY (T, B, k).

        dW_yh = sum_t dY_t^T h_t  (k, d)     db_y = sum_{t,b} dY  (k,)     G_t = dY_t W_yh  (T, B, d)
    """
    return np.einsum("tbk,tbd->kd", dY, H), dY.sum(axis=(0, 1)), dY @ W_yh


# -------------------------------------------------------------------------------------------- whole model
def bptt(spec: ModelSpec, params: Params, x: np.ndarray, target: np.ndarray, mask: np.ndarray,
         loss_kind: str) -> StepResult:
    """One forward and backward pass through time over the stacked model, with every metric.  NaN and Inf
    are data, as in the kernels: they flow through without warnings and ``nonfinite`` says where they began."""
    with np.errstate(all="ignore"):
        return _bptt(spec, params, x, target, mask, loss_kind)


def _bptt(spec: ModelSpec, params: Params, x: np.ndarray, target: np.ndarray, mask: np.ndarray,
          loss_kind: str) -> StepResult:
    T = x.shape[0]
    L = spec.layers
    inputs, caches = [x], []
    metrics: dict[str, np.ndarray] = {}

    def put(l, layer_metrics):
        for k, v in layer_metrics.items():
            metrics.setdefault(k, np.zeros((L, T)))[l] = v

    for l, p in enumerate(params.layers):
        if spec.cell == "lstm":
            H, C, A, m = lstm_forward(inputs[l], p)
            caches.append((H, C, A))
        else:
            H, m = rnn_forward(inputs[l], p, spec.activation)
            caches.append((H,))
        put(l, m)
        inputs.append(H)

    H_top = inputs[-1]
    loss, loss_t, dY = readout_loss(H_top, params.W_yh, params.b_y, target, mask, loss_kind)
    metrics["loss_t"] = loss_t
    grads = params.zeros_like()
    grads.W_yh, grads.b_y, G = readout_backward(H_top, dY, params.W_yh)  # G (T, B, d) direct grad into h_top
    for l in range(L - 1, -1, -1):
        p = params.layers[l]
        if spec.cell == "lstm":
            H, C, A = caches[l]
            grads.layers[l], G, gh, gc, _, _ = lstm_backward(inputs[l], H, C, A, G, p)
            put(l, {"grad_h_norm": gh, "grad_c_norm": gc})
        else:
            (H,) = caches[l]
            grads.layers[l], G, gh, _ = rnn_backward(inputs[l], H, G, p, spec.activation)
            put(l, {"grad_h_norm": gh})
    grads = grads.astype(spec.np_dtype)
    return StepResult(loss=loss, grads=grads, metrics=metrics, nonfinite=first_nonfinite(metrics, grads))
