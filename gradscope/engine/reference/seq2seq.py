"""NumPy twin of seq2seq.py: an encoder stack into a decoder stack, through the layer twins.

encoder   h^enc,l over x (T_src, B, n) from 0 (both directions when bidirectional)
bridge    h^dec,l_{-1} = sum over directions of the final h^enc,l (and c for an LSTM)
decoder   h^dec,l over decoder_x (T_tgt, B, n_dec) from the bridge; readout and loss on its top layer

dL/dh^dec_{-1} = dz_0 W_hh (RNN, LSTM),  du_0 W_hh + g_0 z_0 (GRU);   dL/dc^dec_{-1} = dc_0 f_0 (LSTM)
and each encoder stream's final h (c) receives exactly that: the bridge is a sum, its gradient a copy.
"""

from __future__ import annotations

import numpy as np

from ..cells import cell
from ..metrics import StepResult, first_nonfinite, without_padding
from ..params import ModelSpec, Params
from . import accuracy_of_logits, readout_backward, readout_loss, row_norm_mean
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward


def _forward(spec: ModelSpec, X, p, h0=None, c0=None):
    """One stream forward: (H, cache, metrics, (h_final, c_final))."""
    name = cell(spec.cell).name
    if name == "lstm":
        H, C, A, m = lstm_forward(X, p, h0, c0)
        return H, (H, C, A), m, (H[-1], C[-1])
    if name == "gru":
        H, U_n, A, m = gru_forward(X, p, h0)
        return H, (H, U_n, A), m, (H[-1], None)
    H, m = rnn_forward(X, p, spec.activation, h0)
    return H, (H,), m, (H[-1], None)


def _backward(spec: ModelSpec, X, cache, G, p, h0=None, c0=None, dc_end=None):
    """One stream backward over its whole sequence: (grads, dX, metrics, dL/dh_{-1}, dL/dc_{-1})."""
    name = cell(spec.cell).name
    if name == "lstm":
        H, C, A = cache
        grads, dx, gh, gc, dz0, dc0 = lstm_backward(X, H, C, A, G, p, None, dc_end, h0, c0)
        return grads, dx, {"grad_h_norm": gh, "grad_c_norm": gc}, dz0 @ p.W_hh, dc0
    if name == "gru":
        H, U_n, A = cache
        grads, dx, gh, du0, gz0 = gru_backward(X, H, U_n, A, G, p, None, None, h0)
        return grads, dx, {"grad_h_norm": gh}, du0 @ p.W_hh + gz0, None
    grads, dx, gh, dz0 = rnn_backward(X, cache[0], G, p, spec.activation, None, h0)
    return grads, dx, {"grad_h_norm": gh}, dz0 @ p.W_hh, None


def bptt(
    spec: ModelSpec, params: Params, x, decoder_x, target, mask, loss_kind: str, accuracy: bool = False
) -> StepResult:
    """One forward and backward pass of the seq2seq model, with every metric (seq2seq.bptt's twin); ``accuracy``
    (ce only): also the decoder's metrics["accuracy"] (reference.accuracy_of_logits)."""
    with np.errstate(all="ignore"):
        return _bptt(spec, params, x, decoder_x, target, mask, loss_kind, accuracy)


def _bptt(
    spec: ModelSpec, params: Params, x, decoder_x, target, mask, loss_kind: str, accuracy: bool = False
) -> StepResult:
    L, D, d = spec.layers, spec.directions, spec.hidden_size
    T_src, T_tgt = x.shape[0], decoder_x.shape[0]
    T, S = max(T_src, T_tgt), L * D + L
    metrics: dict[str, np.ndarray] = {}

    def put(s, m, reverse):
        for k, v in m.items():  # by position; NaN past the stream's length
            metrics.setdefault(k, np.full((S, T), np.nan))[s, : len(v)] = v[::-1] if reverse else v

    # encoder
    enc_in, enc_cache, finals = [], [], []
    X = x
    for l in range(L):
        enc_in.append(X)
        outs, layer_finals = [], []
        for r in range(D):
            H, cache, m, final = _forward(spec, X[::-1].copy() if r else X, params.layers[l * D + r])
            enc_cache.append(cache)
            put(l * D + r, m, r == 1)
            outs.append(H[::-1] if r else H)
            layer_finals.append(final)
        finals.append(layer_finals)
        X = np.concatenate(outs, axis=2) if D == 2 else outs[0]  # (T_src, B, D d)
    # bridge and decoder
    lstm = cell(spec.cell).name == "lstm"
    bridge = []
    dec_in, dec_cache = [], []
    X = decoder_x
    for l in range(L):
        h0 = sum(f[0] for f in finals[l])
        c0 = sum(f[1] for f in finals[l]) if lstm else None
        bridge.append((h0, c0))
        dec_in.append(X)
        X, cache, m, _ = _forward(spec, X, params.layers[L * D + l], h0, c0)
        dec_cache.append(cache)
        put(L * D + l, m, False)
    # readout
    loss, loss_t, dY = readout_loss(X, params.W_yh, params.b_y, target, mask, loss_kind)
    metrics["loss_t"] = loss_t
    grads = params.zeros_like()
    grads.W_yh, grads.b_y, G = readout_backward(X, dY, params.W_yh)  # G (T_tgt, B, d)
    # decoder backward
    dh_bridge: list = [None] * L  # dL/dh^dec_{-1} (B, d) per decoder layer
    dc_bridge: list = [None] * L  # dL/dc^dec_{-1} (LSTM)
    for l in range(L - 1, -1, -1):
        s = L * D + l
        h0, c0 = bridge[l]
        grads.layers[s], G, m, dh_bridge[l], dc_bridge[l] = _backward(
            spec, dec_in[l], dec_cache[l], G.copy(), params.layers[s], h0, c0
        )
        put(s, m, False)
    # encoder backward
    G = np.zeros((T_src,) + (x.shape[1], D * d), dtype=x.dtype)  # the top layer's direct gradient: the bridge only
    for l in range(L - 1, -1, -1):
        dX = 0
        for r in range(D):
            s = l * D + r
            G_s = G[:, :, r * d : (r + 1) * d]
            G_s = (G_s[::-1] if r else G_s).copy()  # in the stream's own step order
            G_s[-1] += dh_bridge[l]
            X_s = enc_in[l][::-1].copy() if r else enc_in[l]
            grads.layers[s], dx, m, _, _ = _backward(
                spec, X_s, enc_cache[s], G_s, params.layers[s], dc_end=dc_bridge[l]
            )
            put(s, m, r == 1)
            dX = dX + (dx[::-1] if r else dx)
        G = dX
    metrics["grad_bridge_norm"] = np.array([row_norm_mean(g) for g in dh_bridge])
    if lstm:
        metrics["grad_bridge_c_norm"] = np.array([row_norm_mean(g) for g in dc_bridge])
    grads = grads.astype(spec.np_dtype)
    if accuracy and loss_kind == "ce":  # the decoder's logits (X: its top layer's states)
        metrics["accuracy"] = np.asarray(accuracy_of_logits(X @ params.W_yh.T + params.b_y, target, mask))
    return StepResult(
        loss=loss,
        grads=grads,
        metrics=metrics,
        nonfinite=first_nonfinite(without_padding(metrics, L * D, T_src, T_tgt), grads),
    )
