"""Plain NumPy twins of the engine's kernels: the readable specification and the test oracle.

Nothing here is fast; everything here is meant to be obviously right.  Notation (docs/trace_format.md):
T steps, batch B, L layers, hidden size d, layer input size n, output size k; arrays are time-major.
Each function twins the kernel of the same name at the same granularity: a cell's layer forward pass and a
chunk of its backward pass (the whole layer when no carries are given) in reference/<cell>.py beside
cells/<cell>.py, the readout of a chunk of steps here (readout.py); ``bptt`` twins the step kernels
(step.py, streams.py).  fastmath.exp / sigmoid / tanh twin np.exp, ``sigmoid`` and np.tanh.

    RNN   z_t = x_t W_hx^T + h_{t-1} W_hh^T + b_h          h_t = f(z_t)
    LSTM  [i, f, g, o] = split(x_t W_hx^T + h_{t-1} W_hh^T + b_h)
          i, f, o = sigmoid(.), g = tanh(.)   c_t = f * c_{t-1} + i * g   h_t = o * tanh(c_t)
    readout y_t = h_t W_yh^T + b_y on the top layer;  L = (1/B) sum_{t,b} mask[t,b] ell(y_tb, target_tb)

The backward pass carries the TOTAL derivative dL/dh_t = (direct part: the readout at t, or the layer
above at t) + (recurrent part: dL/dz_{t+1} W_hh), which is what the metrics record.
"""

from __future__ import annotations

import numpy as np

from ..cells import cell
from ..metrics import SAT_HIGH, SAT_LOW, StepResult, first_nonfinite
from ..params import ModelSpec, Params


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
            scaled = v[big] * 2.0**-600
            norms[big] = np.sqrt(np.sum(scaled * scaled, axis=-1)) * 2.0**600
    return norms


def row_norm_mean(v: np.ndarray) -> float:
    """Mean over the batch (rows) of the L2 norm of each row."""
    return float(np.mean(row_norms(v)))


def sat_fraction(a: np.ndarray) -> float:
    return float(np.mean((a < SAT_LOW) | (a > SAT_HIGH)))


# ------------------------------------------------------------------------------------------ readout + loss
def readout_loss(
    H: np.ndarray, W_yh: np.ndarray, b_y: np.ndarray, target: np.ndarray, mask: np.ndarray, loss_kind: str
):
    """y_t = h_t W_yh^T + b_y and L = (1/B) sum mask * ell.  Returns (loss, loss_t (T,), dY (T, B, k)).

    mse: ell = 0.5 ||y - target||^2,        dell/dy = y - target
    ce:  ell = -log softmax(y)[target],     dell/dy = softmax(y) - onehot(target)
    """
    T, B, _ = H.shape
    Y = H @ W_yh.T + b_y  # (T, B, k)
    w = (mask / B).astype(np.float64)  # (T, B)
    if loss_kind == "mse":
        diff = Y - target.astype(H.dtype)  # (T, B, k) in the model's dtype
        ell = 0.5 * np.sum(np.square(diff, dtype=np.float64), axis=-1)  # (T, B)
        dY = diff * w[..., None].astype(H.dtype)
    elif loss_kind == "ce":
        Y64 = Y.astype(np.float64)
        zmax = np.max(Y64, axis=-1, keepdims=True)
        lse = zmax[..., 0] + np.log(np.sum(np.exp(Y64 - zmax), axis=-1))  # (T, B) log-sum-exp
        ell = lse - np.take_along_axis(Y64, target[..., None].astype(np.intp), axis=-1)[..., 0]
        P = np.exp(Y64 - lse[..., None])  # (T, B, k) softmax
        P[np.arange(T)[:, None], np.arange(B)[None, :], target] -= 1.0
        dY = (P * w[..., None]).astype(H.dtype)
    else:
        raise ValueError(f"unknown loss kind {loss_kind!r}")
    loss_t = np.sum(w * ell, axis=1)  # (T,)
    return float(np.sum(loss_t)), loss_t, dY


def readout_backward(H: np.ndarray, dY: np.ndarray, W_yh: np.ndarray):
    """The readout's gradients and the direct gradient into the top layer's states, given dY (T, B, k).

    dW_yh = sum_t dY_t^T h_t  (k, d)     db_y = sum_{t,b} dY  (k,)     G_t = dY_t W_yh  (T, B, d)
    """
    return np.einsum("tbk,tbd->kd", dY, H), dY.sum(axis=(0, 1)), dY @ W_yh


# -------------------------------------------------------------------------------------------- whole model
def bptt(
    spec: ModelSpec,
    params: Params,
    x: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    loss_kind: str,
    accuracy: bool = False,
) -> StepResult:
    """One forward and backward pass through time over the stacked model, with every metric.  NaN and Inf
    are data, as in the kernels: they flow through without warnings and ``nonfinite`` says where they began.
    ``accuracy`` (ce only): also metrics["accuracy"] (``accuracy_of_logits``)."""
    with np.errstate(all="ignore"):
        return _bptt(spec, params, x, target, mask, loss_kind, accuracy)


def accuracy_of_logits(Y: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Twin of engine/accuracy.py: the share of positions with mask != 0 whose first largest logit of Y
    (T, B, k) is the target's; NaN when one of them has a NaN logit or none is scored."""
    scored = mask != 0  # (T, B)
    if not scored.any() or np.isnan(Y[scored]).any():
        return float("nan")
    return float(np.mean(np.argmax(Y, axis=-1)[scored] == target[scored]))


def _bptt(
    spec: ModelSpec,
    params: Params,
    x: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    loss_kind: str,
    accuracy: bool = False,
) -> StepResult:
    """Stream by stream: a layer's D = 1 or 2 directions (ModelSpec.streams order), the reverse one run over
    the time-reversed input; the layer above (and the readout) reads [h_fwd_t ; h_rev_t]."""
    T = x.shape[0]
    L, D, d = spec.layers, spec.directions, spec.hidden_size
    metrics: dict[str, np.ndarray] = {}

    def put(s, stream_metrics, reverse):
        for k, v in stream_metrics.items():  # a reverse stream's t is the input position, not the step
            metrics.setdefault(k, np.zeros((L * D, T)))[s] = v[::-1] if reverse else v

    twin = _TWINS[cell(spec.cell).name]
    inputs, caches = [], []
    X = x  # (T, B, n_l)
    for l in range(L):
        outs = []
        for r in range(D):
            s = l * D + r
            H, cache, m = twin.forward(X[::-1].copy() if r else X, params.layers[s], spec.activation)
            caches.append(cache)
            put(s, m, r == 1)
            outs.append(H[::-1] if r else H)  # (T, B, d) by input position
        inputs.append(X)
        X = np.concatenate(outs, axis=2) if D == 2 else outs[0]  # (T, B, D d)

    H_top = X
    loss, loss_t, dY = readout_loss(H_top, params.W_yh, params.b_y, target, mask, loss_kind)
    metrics["loss_t"] = loss_t
    grads = params.zeros_like()
    grads.W_yh, grads.b_y, G = readout_backward(H_top, dY, params.W_yh)  # G (T, B, D d) direct grad into h_top
    for l in range(L - 1, -1, -1):
        dX = 0
        for r in range(D):
            s = l * D + r
            G_s, X_s = G[:, :, r * d : (r + 1) * d], inputs[l]  # this stream's part, by position
            if r:
                G_s, X_s = G_s[::-1], X_s[::-1]  # in the stream's own step order
            grads.layers[s], dx, m = twin.backward(X_s.copy(), caches[s], G_s.copy(), params.layers[s], spec.activation)
            put(s, m, r == 1)
            dX = dX + (dx[::-1] if r else dx)
        G = dX  # (T, B, n_l) into the layer below
    grads = grads.astype(spec.np_dtype)
    if accuracy and loss_kind == "ce":
        Y = H_top @ params.W_yh.T + params.b_y  # (T, B, k) the logits
        metrics["accuracy"] = np.asarray(accuracy_of_logits(Y, target, mask))
    return StepResult(loss=loss, grads=grads, metrics=metrics, nonfinite=first_nonfinite(metrics, grads))


# --------------------------------------------------------------------------------------------- the cells
class _Twin:
    """A cell's layer twins behind one interface: forward(x, p, activation) -> (H, cache, metrics) and
    backward(x, cache, G, p, activation) -> (grads, dx, metrics), the whole layer at once."""

    def __init__(self, forward, backward):
        self.forward, self.backward = forward, backward


def _rnn_twin():
    from . import rnn

    def forward(x, p, activation):
        H, m = rnn.rnn_forward(x, p, activation)
        return H, (H,), m

    def backward(x, cache, G, p, activation):
        grads, dx, gh, _ = rnn.rnn_backward(x, cache[0], G, p, activation)
        return grads, dx, {"grad_h_norm": gh}

    return _Twin(forward, backward)


def _lstm_twin():
    from . import lstm

    def forward(x, p, activation):
        H, C, A, m = lstm.lstm_forward(x, p)
        return H, (H, C, A), m

    def backward(x, cache, G, p, activation):
        grads, dx, gh, gc, _, _ = lstm.lstm_backward(x, *cache, G, p)
        return grads, dx, {"grad_h_norm": gh, "grad_c_norm": gc}

    return _Twin(forward, backward)


def _gru_twin():
    from . import gru

    def forward(x, p, activation):
        H, U_n, A, m = gru.gru_forward(x, p)
        return H, (H, U_n, A), m

    def backward(x, cache, G, p, activation):
        grads, dx, gh, _, _ = gru.gru_backward(x, *cache, G, p)
        return grads, dx, {"grad_h_norm": gh}

    return _Twin(forward, backward)


_TWINS = {"rnn": _rnn_twin(), "lstm": _lstm_twin(), "gru": _gru_twin()}

from .gru import gru_backward, gru_forward  # noqa: E402  (the layer twins, by their kernels' names)
from .lstm import lstm_backward, lstm_forward  # noqa: E402
from .rnn import rnn_backward, rnn_forward  # noqa: E402

__all__ = [
    "bptt",
    "readout_loss",
    "readout_backward",
    "rnn_forward",
    "rnn_backward",
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
    "activate",
    "activation_grad_from_output",
    "sigmoid",
    "row_norms",
    "row_norm_mean",
    "sat_fraction",
]
