"""One training step of a stacked recurrent model, for every cell: the one driver loop of the engine.

    forward, layer by layer
        Z = X W_hx^T over all T*B rows at once (one GEMM), straight into the layer's state buffer;
        for t: Z_t += h_{t-1} W_hh^T (the only sequential product), then the cell's fused row pass.
    backward, a wavefront over chunks of Tc steps from the end (memory: the chunk buffers, not T of them)
        top layer: Y = H_c W_yh^T + b_y, the loss and dY for the chunk, dW_yh += dY^T H_c, G = dY W_yh;
        each layer from the top: the cell's backward rule through the chunk, its weight gradients as GEMMs,
        and the direct gradient into the layer below, G = dZ W_hx.
    last, the norm of every parameter gradient.

The cell is a run-time code (``CELL_CODES``): one branch per layer and chunk picks the cell's kernels
(cells/<name>.py), whose arguments are the same buffers for every cell; a buffer a cell does not use is
empty.  A pass runs on rows b0 .. b0+B-1 of the batch (a shard; all of them when b0 = 0), read in place.
"""

from __future__ import annotations

import numpy as np

from . import _jit
from .blas import stage_rows
from .cells import CELL_NAMES, GRU as _GRU_DESCRIPTION, LSTM as _LSTM_DESCRIPTION
from .cells.gru import gru_backward, gru_forward
from .cells.lstm import lstm_backward, lstm_forward
from .cells.rnn import rnn_backward, rnn_forward
from .gemm import pack, pack_transposed, panels
from .primitives import fill_zero, vector_norm
from .readout import readout_loss

CELL_CODES: dict[str, int] = {name: code for code, name in enumerate(CELL_NAMES)}
RNN, LSTM, GRU = CELL_CODES["rnn"], CELL_CODES["lstm"], CELL_CODES["gru"]
_LSTM_FORWARD_ROWS = _LSTM_DESCRIPTION.forward_row_count  # 10: h, c, 4 gate means, 4 saturations
_LSTM_GRAD_H, _LSTM_GRAD_C = (_LSTM_DESCRIPTION.metric_rows()[k] for k in ("grad_h_norm", "grad_c_norm"))
_GRU_FORWARD_ROWS = _GRU_DESCRIPTION.forward_row_count  # 7: h, 3 gate means, 3 saturations
_GRU_GRAD_H = _GRU_DESCRIPTION.metric_rows()["grad_h_norm"]


@_jit.kernel
def pack_layers(W_hh, P_f, P_b):
    """P_f[l], P_b[l] = W_hh[l]^T and W_hh[l] packed (gemm.py) for every layer l of W_hh (L, Gd, d): the
    operands of the forward and backward recurrent products.  Once per pass, before its shards run (they
    only read them)."""
    for l in range(W_hh.shape[0]):
        pack_transposed(W_hh[l], P_f[l])
        pack(W_hh[l], P_b[l])


def pack_recurrent(W_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_f, P_b): one layer's W_hh (Gd, d) packed as ``pack_layers`` does, for calling the layer kernels on
    their own."""
    Gd, d = W_hh.shape
    W_hh = np.ascontiguousarray(W_hh)
    P_f, P_b = panels(d, Gd, W_hh.dtype), panels(Gd, d, W_hh.dtype)
    pack_layers(W_hh[None], P_f[None], P_b[None])
    return P_f, P_b


@_jit.kernel
def grad_norms(dW_hx0, dW_hxR, dW_hh, db_h, db_hh, dW_yh, db_y, out):
    """out = the L2 norm of every gradient array, in Params.named() order (W_hx, W_hh, b_h and, for a cell
    with one, b_hh per layer; then the readout's W_yh, b_y).  db_hh (L, 0) when the cell has none."""
    L = dW_hh.shape[0]
    P = 4 if db_hh.shape[1] > 0 else 3  # arrays per layer
    for l in range(L):
        dW_hx = dW_hx0 if l == 0 else dW_hxR[l - 1]
        out[P * l] = vector_norm(dW_hx.ravel())
        out[P * l + 1] = vector_norm(dW_hh[l].ravel())
        out[P * l + 2] = vector_norm(db_h[l])
        if P == 4:
            out[P * l + 3] = vector_norm(db_hh[l])
    out[P * L] = vector_norm(dW_yh.ravel())
    out[P * L + 1] = vector_norm(db_y)


@_jit.helper
def zero_accumulators(dW_hx0, dW_hxR, dW_hh, dW_yh, db64, dbhh64, dby64, loss_t, carry):
    """Every sum the backward pass adds into starts at 0 (db_h, db_hh, db_y are summed in float64)."""
    fill_zero(dW_hx0.ravel())
    fill_zero(dW_hxR.ravel())
    fill_zero(dW_hh.ravel())
    fill_zero(dW_yh.ravel())
    fill_zero(db64.ravel())
    fill_zero(dbhh64.ravel())
    fill_zero(dby64)
    fill_zero(loss_t)
    fill_zero(carry.ravel())


@_jit.inline
def layer_forward(cell, act, X, b0, W_hx, P_f, b_h, b_hh, stage, A, S, H, zero, U, m, h0, c0, has_h0):
    """The cell's forward kernel over one layer; m (rows, T) is the layer's metric block; h0, c0 (B, d) the
    initial state when has_h0 (a seq2seq decoder), else h_{-1} = c_{-1} = 0 (pass ``zero`` for both)."""
    if cell == LSTM:
        lstm_forward(X, b0, W_hx, P_f, b_h, stage, A, S, H, c0, m[0:_LSTM_FORWARD_ROWS], h0, has_h0)
    elif cell == GRU:
        gru_forward(X, b0, W_hx, P_f, b_h, b_hh, stage, A, S, H, zero, U, m[0:_GRU_FORWARD_ROWS], h0, has_h0)
    else:
        rnn_forward(X, b0, W_hx, P_f, b_h, act, stage, H, m[0], m[1], h0, has_h0)


@_jit.inline
def layer_backward(
    cell,
    act,
    X,
    H,
    S,
    A,
    t0,
    Tc,
    W_hx,
    P_b,
    G,
    dZ,
    carry,
    has_carry,
    zero,
    dW_hx,
    dW_hh,
    db_h,
    db_hh,
    m,
    propagate,
    h0,
    c0,
    has_h0,
    dh0,
):
    """The cell's backward kernel over the chunk t0 .. t0+Tc-1 of one layer (carry: what crosses chunks;
    dh0 (B, d) out: dL/dh_{-1} when has_h0; an LSTM's dL/dc_{-1} is the carry after the first chunk)."""
    if cell == LSTM:
        lstm_backward(
            X,
            H,
            S,
            A,
            t0,
            Tc,
            W_hx,
            P_b,
            G,
            carry,
            c0,
            dW_hx,
            dW_hh,
            db_h,
            m[_LSTM_GRAD_H],
            m[_LSTM_GRAD_C],
            propagate,
            h0,
            has_h0,
            dh0,
        )
    elif cell == GRU:
        gru_backward(
            X,
            H,
            S,
            A,
            t0,
            Tc,
            W_hx,
            P_b,
            G,
            dZ,
            carry,
            has_carry,
            zero,
            dW_hx,
            dW_hh,
            db_h,
            db_hh,
            m[_GRU_GRAD_H],
            propagate,
            h0,
            has_h0,
            dh0,
        )
    else:
        rnn_backward(
            X, H, t0, W_hx, P_b, act, G, dZ, carry, has_carry, dW_hx, dW_hh, db_h, m[2], propagate, h0, has_h0, dh0
        )


@_jit.kernel
def step(
    cell,
    act,
    x,
    W_hx0,
    W_hxR,
    W_hh,
    b_h,
    b_hh,
    W_yh,
    b_y,
    target_f,
    target_i,
    mask,
    b0,
    loss_kind,
    inv_B,
    chunk,
    stage,
    P_f,
    P_b,
    H,
    S,
    A,
    zero,
    U,
    Y,
    G,
    dZ,
    carry,
    dW_hx0,
    dW_hxR,
    dW_hh,
    db_h,
    db_hh,
    dW_yh,
    db_y,
    db64,
    dbhh64,
    dby64,
    M,
    loss_t,
    norms,
):
    """One forward and backward pass of a stacked model with every metric (see the module docstring).

    cell: CELL_CODES[name]; act: the RNN's activation code (cells.rnn.ACTIVATION_CODES; ignored otherwise).
    x (T, B', n), target_f (T, B', k) or target_i (T, B'), mask (T, B'): the whole batch; the pass runs on
    rows b0 .. b0+B-1 (B = H.shape[2]); inv_B: 1 / the batch size the loss averages over.
    Weights: W_hx0 (Gd, n) layer 0, W_hxR (L-1, Gd, d) layers 1.., W_hh (L, Gd, d), b_h (L, Gd), b_hh
    (L, Gd) (GRU; (L, 0) otherwise), W_yh (k, d), b_y (k,); P_f, P_b (L, ...): each layer's W_hh^T and W_hh
    packed by ``pack_layers`` (read only).
    Work (the cell's description lists which it uses; the others are empty): stage (Tc, B, n) the shard's
    rows of x for the GEMMs that read x (empty when the pass runs on all of x's rows); H (L, T, B, d)
    states; S (L, T, B, d) second states (LSTM: c_t; GRU: u_n); A (L, T, B, Gd) gate activations, then
    their gradients; zero (B, d) zeros (c_{-1}, h_{-1}); U (B, Gd) the GRU's W_hh h_{t-1} of one step;
    Y (Tc, B, k); G (Tc, B, d); dZ (Tc, B, .) the RNN's dz_t, the GRU's du_t of a chunk; carry (L, B, .)
    what crosses a chunk boundary (RNN: dz_{t0}; LSTM: dc_{t0} f_{t0}; GRU: du_{t0}).
    Out: the gradients (db64, dbhh64 (L, Gd), dby64 (k,): float64 sums), M (L, rows, T) as the cell's
    metric_rows(), loss_t (T,), norms (the gradient norms, Params.named() order), or (0,) to skip them.
    """
    T = x.shape[0]
    L, B = W_hh.shape[0], H.shape[2]
    given = T < 0  # no initial state given: h_{-1} = c_{-1} = 0
    for l in range(L):
        if l == 0:
            layer_forward(
                cell,
                act,
                x,
                b0,
                W_hx0,
                P_f[0],
                b_h[0],
                b_hh[0],
                stage,
                A[0],
                S[0],
                H[0],
                zero,
                U,
                M[0],
                zero,
                zero,
                given,
            )
        else:
            layer_forward(
                cell,
                act,
                H[l - 1],
                0,
                W_hxR[l - 1],
                P_f[l],
                b_h[l],
                b_hh[l],
                stage,
                A[l],
                S[l],
                H[l],
                zero,
                U,
                M[l],
                zero,
                zero,
                given,
            )
    zero_accumulators(dW_hx0, dW_hxR, dW_hh, dW_yh, db64, dbhh64, dby64, loss_t, carry)
    t1 = T
    while t1 > 0:
        t0 = max(0, t1 - chunk)
        Tc = t1 - t0
        Gc = G[:Tc]
        readout_loss(
            H[L - 1, t0:t1],
            W_yh,
            b_y,
            target_f[t0:t1],
            target_i[t0:t1],
            mask[t0:t1],
            b0,
            loss_kind,
            inv_B,
            Y[:Tc],
            loss_t[t0:t1],
            dW_yh,
            dby64,
            Gc,
        )
        for l in range(L - 1, -1, -1):
            X = stage_rows(x, t0, t1, b0, B, stage) if l == 0 else H[l - 1, t0:t1]  # (Tc, B, n)
            W_hx = W_hx0 if l == 0 else W_hxR[l - 1]
            dW_hx = dW_hx0 if l == 0 else dW_hxR[l - 1]
            layer_backward(
                cell,
                act,
                X,
                H[l],
                S[l],
                A[l],
                t0,
                Tc,
                W_hx,
                P_b[l],
                Gc,
                dZ[:Tc],
                carry[l],
                t1 < T,
                zero,
                dW_hx,
                dW_hh[l],
                db64[l],
                dbhh64[l],
                M[l],
                l > 0,
                zero,
                zero,
                given,
                zero,
            )
        t1 = t0
    for l in range(L):
        for j in range(db_h.shape[1]):
            db_h[l, j] = db64[l, j]
        for j in range(db_hh.shape[1]):
            db_hh[l, j] = dbhh64[l, j]
    for j in range(db_y.shape[0]):
        db_y[j] = dby64[j]
    if norms.shape[0] > 0:
        grad_norms(dW_hx0, dW_hxR, dW_hh, db_h, db_hh, dW_yh, db_y, norms)
