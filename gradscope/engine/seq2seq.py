"""A sequence-to-sequence model: an encoder stack reads the source, a decoder stack starts from its final states.

    encoder   layer l (both directions when bidirectional) over x (T_src, B, n), from h_{-1} = c_{-1} = 0
    bridge    decoder layer l starts from h^dec_{-1} = h^enc_{T_src-1} (and c for an LSTM); a bidirectional
              encoder hands over the SUM of its two directions' final states (the reverse one's is at t = 0)
    decoder   layer l over decoder_x (T_tgt, B, n_dec) (teacher forcing), from the bridge
    readout   y_t = h^dec_t W_yh^T + b_y on the decoder's top layer; the loss on the decoder's steps only

Backward runs the other way: the decoder stack from the top, each layer's backward kernel also returning
dL/dh_{-1} (and an LSTM's dL/dc_{-1}, its carry after step 0), the gradient that crosses the bridge; the
encoder stack from the top, each stream's direct gradient being what its layer above sends plus, at its last
step, the bridge's.  An LSTM's dL/dc_{-1} enters the encoder's c_{T_src-1} as the carry the backward kernel
starts from (its "dc_{t+1} f_{t+1}" slot), so the cell kernels are the same as in every other shape.

The driver is Python over the cells' layer kernels (cells/<name>.py, nogil, compiled in plan.py): one call
per stream and direction, each over its whole sequence (one chunk), so the pass's cost is the kernels'.
NumPy twin: reference/seq2seq.py.
"""

from __future__ import annotations

import numpy as np

from .accuracy import accuracy as accuracy_of
from .cells import cell
from .cells.gru import gru_backward, gru_forward
from .cells.lstm import lstm_backward, lstm_forward
from .cells.rnn import ACTIVATION_CODES, rnn_backward, rnn_forward
from .metrics import StepResult, first_nonfinite, step_metric_names, without_padding
from .params import LayerParams, ModelSpec, Params
from .primitives import vector_norm
from .readout import LOSS_CODES, readout_loss
from .step import pack_recurrent

_EMPTY_I2 = np.zeros((0, 0), dtype=np.int64)


class _Stream:
    """One chain's kernels and buffers for one pass: forward fills H (and S, A), backward the gradients."""

    def __init__(self, spec: ModelSpec, p: LayerParams, T: int, B: int):
        self.spec, self.p = spec, p
        self.desc = cell(spec.cell)
        d, Gd, dt = spec.hidden_size, p.W_hh.shape[0], spec.np_dtype
        self.act = ACTIVATION_CODES[spec.activation] if self.desc.uses_activation else 0
        self.P_f, self.P_b = pack_recurrent(p.W_hh)  # W_hh^T and W_hh packed for the recurrent products
        self.H = np.empty((T, B, d), dt)  # h_t
        self.S = np.empty((T, B, d), dt) if self.desc.name != "rnn" else np.empty((0, 0, 0), dt)  # c_t | u_n
        self.A = np.empty((T, B, Gd), dt) if self.desc.name != "rnn" else np.empty((0, 0, 0), dt)  # gates
        self.zero = np.zeros((B, d), dt)
        self.U = np.empty((B, Gd), dt) if self.desc.name == "gru" else np.empty((0, 0), dt)
        self.stage = np.empty((0, 0, 0), dt)
        self.rows = self.desc.metric_rows()
        self.m = np.zeros((max(self.rows.values()) + 1, T))  # (rows, T) this stream's metrics, float64
        self.h0, self.c0, self.has_h0 = self.zero, self.zero, False

    def start_from(self, h0: np.ndarray, c0: np.ndarray | None) -> None:
        """h_{-1} (and c_{-1}) given: a decoder layer after the bridge."""
        self.h0 = np.ascontiguousarray(h0)
        self.c0 = np.ascontiguousarray(c0) if c0 is not None else self.zero
        self.has_h0 = True

    def forward(self, X: np.ndarray) -> np.ndarray:
        p, name = self.p, self.desc.name
        if name == "lstm":  # S holds c_t
            lstm_forward(X, 0, p.W_hx, self.P_f, p.b_h, self.stage, self.A, self.S, self.H, self.c0,
                         self.m[0 : self.desc.forward_row_count], self.h0, self.has_h0)  # fmt: skip
        elif name == "gru":  # S holds u_n
            gru_forward(X, 0, p.W_hx, self.P_f, p.b_h, p.b_hh, self.stage, self.A, self.S, self.H, self.zero, self.U,
                        self.m[0 : self.desc.forward_row_count], self.h0, self.has_h0)  # fmt: skip
        else:
            rnn_forward(X, 0, p.W_hx, self.P_f, p.b_h, self.act, self.stage, self.H, self.m[0], self.m[1], self.h0,
                        self.has_h0)  # fmt: skip
        return self.H

    def backward(self, X: np.ndarray, G: np.ndarray, dc_end: np.ndarray | None):
        """The whole sequence as one chunk.  G (T, B, d): the direct gradient into each h_t (modified);
        dc_end (B, d): an LSTM's gradient entering c_{T-1} from outside (the bridge), else None.
        Returns (gradients, dZ (T, B, Gd) whose product with W_hx is dL/dX, dL/dh_{-1}, dL/dc_{-1})."""
        p, name, spec = self.p, self.desc.name, self.spec
        T, B, d = self.H.shape
        Gd = p.W_hh.shape[0]
        dt = spec.np_dtype
        dW_hx, dW_hh = np.zeros_like(p.W_hx), np.zeros_like(p.W_hh)
        db64, dbhh64 = np.zeros(Gd), np.zeros(Gd if p.b_hh is not None else 0)
        dh0 = np.zeros((B, d), dt)
        dc0 = None
        if name == "lstm":
            carry = np.zeros((B, d), dt) if dc_end is None else np.ascontiguousarray(dc_end, dtype=dt).copy()
            lstm_backward(X, self.H, self.S, self.A, 0, T, p.W_hx, self.P_b, G, carry, self.c0, dW_hx, dW_hh, db64,
                          self.m[self.rows["grad_h_norm"]], self.m[self.rows["grad_c_norm"]], False, self.h0,
                          self.has_h0, dh0)  # fmt: skip
            dZ, dc0 = self.A, carry  # A now holds dz_t; the carry after step 0 is dc_0 f_0 = dL/dc_{-1}
        elif name == "gru":
            DU, carry = np.empty((T, B, Gd), dt), np.zeros((B, Gd), dt)
            gru_backward(X, self.H, self.S, self.A, 0, T, p.W_hx, self.P_b, G, DU, carry, False, self.zero, dW_hx,
                         dW_hh, db64, dbhh64, self.m[self.rows["grad_h_norm"]], False, self.h0, self.has_h0,
                         dh0)  # fmt: skip
            dZ = self.A  # A now holds da_t (the input side's)
        else:
            dZ, carry = np.empty((T, B, d), dt), np.zeros((B, d), dt)
            rnn_backward(X, self.H, 0, p.W_hx, self.P_b, self.act, G, dZ, carry, False, dW_hx, dW_hh, db64,
                         self.m[self.rows["grad_h_norm"]], False, self.h0, self.has_h0, dh0)  # fmt: skip
        grads = LayerParams(dW_hx, dW_hh, db64.astype(dt), dbhh64.astype(dt) if p.b_hh is not None else None)
        return grads, dZ, dh0, dc0


def bptt(
    spec: ModelSpec,
    params: Params,
    x: np.ndarray,
    decoder_x: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    loss_kind: str,
    accuracy: bool = False,
) -> StepResult:
    """One forward and backward pass of a seq2seq model with every metric (module docstring); ``accuracy`` (ce
    only): also metrics["accuracy"] on the decoder's steps (engine/accuracy.py).

    x (T_src, B, n), decoder_x (T_tgt, B, n_dec); target (T_tgt, B, k) (mse) or (T_tgt, B) ints (ce) and
    mask (T_tgt, B) score the decoder's steps.  Metrics are (S, T) with T = max(T_src, T_tgt), each stream's
    steps past its own length NaN (docs/trace_format.md, streams); ``grad_bridge_norm`` (L,) is the batch
    mean of ||dL/dh^dec_{-1}|| per decoder layer (``grad_bridge_c_norm`` for an LSTM's c).
    """
    dt = spec.np_dtype
    T_src, B, _ = x.shape
    T_tgt = decoder_x.shape[0]
    L, D, d = spec.layers, spec.directions, spec.hidden_size
    lstm = cell(spec.cell).name == "lstm"
    x = np.ascontiguousarray(x, dtype=dt)
    decoder_x = np.ascontiguousarray(decoder_x, dtype=dt)
    enc = [_Stream(spec, params.layers[s], T_src, B) for s in range(L * D)]
    dec = [_Stream(spec, params.layers[L * D + l], T_tgt, B) for l in range(L)]

    # ---- forward: the encoder, layer by layer (a reverse stream on its time-reversed input)
    inputs = []
    X = x  # (T_src, B, n_l) by position
    for l in range(L):
        inputs.append(X)
        outs = [enc[l * D + r].forward(np.ascontiguousarray(X[::-1]) if r else X) for r in range(D)]
        X = np.ascontiguousarray(np.concatenate([outs[0], outs[1][::-1]], axis=2)) if D == 2 else outs[0]
    # ---- the bridge, then the decoder from it
    dec_inputs = []
    X = decoder_x
    for l in range(L):
        finals = [enc[l * D + r] for r in range(D)]  # each stream's last step (own order): its final state
        h0 = sum(s.H[T_src - 1] for s in finals)  # (B, d)
        c0 = sum(s.S[T_src - 1] for s in finals) if lstm else None
        dec[l].start_from(h0, c0)
        dec_inputs.append(X)
        X = dec[l].forward(X)
    # ---- readout and loss on the decoder's top layer
    k = spec.output_size
    Y = np.empty((T_tgt, B, k), dt)
    loss_t = np.zeros(T_tgt)
    dW_yh, dby64 = np.zeros((k, d), dt), np.zeros(k)
    G = np.empty((T_tgt, B, d), dt)  # the direct gradient into the decoder's top h_t
    if loss_kind == "mse":
        target_f, target_i = np.ascontiguousarray(target, dtype=dt), _EMPTY_I2
    else:
        target_f, target_i = np.zeros((0, 0, 0), dt), np.ascontiguousarray(target, dtype=np.int64)
    readout_loss(X, np.ascontiguousarray(params.W_yh), np.ascontiguousarray(params.b_y), target_f, target_i,
                 np.ascontiguousarray(mask, dtype=np.float64), 0, LOSS_CODES[loss_kind], 1.0 / B, Y, loss_t, dW_yh,
                 dby64, G)  # fmt: skip

    # ---- backward: the decoder from the top, collecting what crosses the bridge
    layer_grads: list[LayerParams | None] = [None] * (L * D + L)
    bridge_h: list = [None] * L  # dL/dh^dec_{-1} (B, d) per decoder layer
    bridge_c: list = [None] * L  # dL/dc^dec_{-1} (LSTM; None otherwise)
    for l in range(L - 1, -1, -1):
        grads, dZ, bridge_h[l], bridge_c[l] = dec[l].backward(dec_inputs[l], G, None)
        layer_grads[L * D + l] = grads
        if l > 0:
            G = np.ascontiguousarray(dZ.reshape(-1, dZ.shape[2]) @ dec[l].p.W_hx).reshape(T_tgt, B, d)
    # ---- the encoder from the top: what the layer above sends, plus the bridge at each stream's last step
    G_pos = np.zeros((T_src, B, D * d), dt)  # direct gradient into the top layer by position: none but the bridge
    for l in range(L - 1, -1, -1):
        n_l = inputs[l].shape[2]
        dX = np.zeros((T_src, B, n_l), dt)
        for r in range(D):
            s = l * D + r
            G_s = G_pos[:, :, r * d : (r + 1) * d]
            G_s = np.ascontiguousarray(G_s[::-1] if r else G_s)  # in the stream's own step order
            G_s[T_src - 1] += bridge_h[l]
            X_s = np.ascontiguousarray(inputs[l][::-1]) if r else inputs[l]
            grads, dZ, _, _ = enc[s].backward(X_s, G_s, bridge_c[l])
            layer_grads[s] = grads
            if l > 0:
                dx = (dZ.reshape(-1, dZ.shape[2]) @ enc[s].p.W_hx).reshape(T_src, B, n_l)
                dX += dx[::-1] if r else dx
        G_pos = dX

    # ---- results: per-stream metrics by position, NaN past a stream's length
    T = max(T_src, T_tgt)
    S = L * D + L
    metrics: dict[str, np.ndarray] = {}
    for name in step_metric_names(spec):
        M = np.full((S, T), np.nan)
        for s, stream in enumerate(enc + dec):
            row = stream.m[stream.rows[name]]
            reverse = s < L * D and s % D == 1
            M[s, : len(row)] = row[::-1] if reverse else row
        metrics[name] = M
    metrics["loss_t"] = loss_t
    metrics["grad_bridge_norm"] = np.array([_row_norm_mean(g) for g in bridge_h])  # (L,)
    if lstm:
        metrics["grad_bridge_c_norm"] = np.array([_row_norm_mean(g) for g in bridge_c])
    if accuracy and loss_kind == "ce":  # X: the decoder's top states, which the readout read
        metrics["accuracy"] = np.asarray(accuracy_of(X, params.W_yh, params.b_y, target_i, mask))
    result = Params(layer_grads, dW_yh, dby64.astype(dt), spec.streams)  # type: ignore[arg-type]
    norms = np.array([vector_norm(np.ascontiguousarray(g).ravel()) for _, g in result.named()])
    return StepResult(
        loss=float(loss_t.sum()),
        grads=result,
        metrics=metrics,
        nonfinite=first_nonfinite(without_padding(metrics, L * D, T_src, T_tgt), result, norms),
        extras={"grad_norms": norms, "shards": 1},
    )


def _row_norm_mean(v: np.ndarray) -> float:
    """mean_b ||v_b|| of a (B, d) array, accumulated in float64."""
    return float(np.mean([vector_norm(np.ascontiguousarray(row)) for row in v]))
