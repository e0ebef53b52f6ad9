"""Streams beyond the single chain: the step kernel of a bidirectional stack, driving the same cell kernels.

A bidirectional layer is two streams: one runs forward over t = 0..T-1 from h_{-1} = 0, the other over
t = T-1..0 from h_T = 0; the layer above, and the readout, read [h_fwd_t ; h_rev_t] (2d).  The reverse
stream runs the cell's kernels unchanged on a time-reversed copy of its input, so its buffers (H, S, A) hold
its steps in the order it takes them (step s is input position T-1-s); the kernel flips its metric rows to
input positions in place at the end of the pass (docs/trace_format.md, streams).

    forward, layer by layer
        fwd: the cell's forward kernel on X;   rev: on X reversed;   X <- [H_fwd ; reversed H_rev] (T, B, 2d)
    backward, layer by layer from the top (a bidirectional layer cannot run in the uni stack's wavefront:
    its two streams walk time in opposite directions)
        top: Y = H_fwd W_f^T + H_rev W_r^T + b_y (W_yh = [W_f  W_r]: the readout of [h_fwd ; h_rev] without
        joining them), the loss and dY (T, B, k) for all steps, kept in each stream's step order;
        each stream, chunk by chunk from its last step: its direct gradient G = dY W_r of the chunk (top
        layer) or its part of the layer above's dX, the cell's backward kernel (its carry crosses chunks),
        then dX = dZ W_hx added into the layer below's direct gradient at the input positions.
The top layer's streams never meet in a (T, B, 2d) buffer: its G is made chunk by chunk where it is used
(measured: the join and the split of [h_fwd ; h_rev] cost 5 to 7 % of a bidirectional step).
"""

from __future__ import annotations

from . import _jit
from .blas import gemm_nn, gemm_nt, gemm_tn_acc, stage_rows
from .primitives import fill_zero, rows, vector_norm
from .readout import loss_rows
from .step import GRU, LSTM, layer_backward, layer_forward


@_jit.helper
def reverse_rows(X, b0, B, out):
    """out[s, b] = X[T-1-s, b0+b] for a (T, B', w) X: a stream's input in its own step order."""
    T = out.shape[0]
    w = out.shape[2]
    for s in range(T):
        for b in range(B):
            for j in range(w):
                out[s, b, j] = X[T - 1 - s, b0 + b, j]


@_jit.helper
def join_directions(H_fwd, H_rev, X):
    """X[t] = [H_fwd[t] ; H_rev[T-1-t]] (T, B, 2d): both directions' states at input position t."""
    T, B, d = H_fwd.shape
    for t in range(T):
        for b in range(B):
            for j in range(d):
                X[t, b, j] = H_fwd[t, b, j]
                X[t, b, d + j] = H_rev[T - 1 - t, b, j]


@_jit.helper
def split_directions(G, G_fwd, G_rev):
    """G (T, B, 2d) by input position into the streams' own step orders: G_fwd[t] = G[t, :, :d],
    G_rev[s] = G[T-1-s, :, d:]."""
    T, B, d = G_fwd.shape
    for t in range(T):
        for b in range(B):
            for j in range(d):
                G_fwd[t, b, j] = G[t, b, j]
                G_rev[T - 1 - t, b, j] = G[t, b, d + j]


@_jit.helper
def add_at_positions(DX, t0, reverse, G_below):
    """G_below[t] += DX[s] for the chunk's steps t0+s of a stream, t its input position (T-1-(t0+s) when
    reverse)."""
    Tc, B, w = DX.shape
    T = G_below.shape[0]
    for s in range(Tc):
        t = T - 1 - (t0 + s) if reverse else t0 + s
        for b in range(B):
            for j in range(w):
                G_below[t, b, j] += DX[s, b, j]


@_jit.helper
def add_reversed(Y_r, Y):
    """Y[t] += Y_r[T-1-t] for (T, B, k) arrays: the reverse stream's part of the logits at input position t."""
    T, B, k = Y.shape
    for t in range(T):
        for b in range(B):
            for j in range(k):
                Y[t, b, j] += Y_r[T - 1 - t, b, j]


@_jit.helper
def flip_steps(m):
    """m[:, s] <-> m[:, T-1-s] in place for a (rows, T) m: a reverse stream's metrics from its step order to
    input positions (its step s is input position T-1-s), in the kernel, without a copy."""
    T = m.shape[1]
    for i in range(m.shape[0]):
        for s in range(T // 2):
            a = m[i, s]
            m[i, s] = m[i, T - 1 - s]
            m[i, T - 1 - s] = a


@_jit.helper
def split_columns(W_yh, W_s):
    """W_s[0] = W_yh[:, :d], W_s[1] = W_yh[:, d:] for a (k, 2d) W_yh: the readout's blocks per stream."""
    _, k, d = W_s.shape
    for i in range(k):
        for j in range(d):
            W_s[0, i, j] = W_yh[i, j]
            W_s[1, i, j] = W_yh[i, d + j]


@_jit.helper
def join_columns(W_s, W_yh):
    """W_yh = [W_s[0]  W_s[1]] (k, 2d): ``split_columns`` undone."""
    _, k, d = W_s.shape
    for i in range(k):
        for j in range(d):
            W_yh[i, j] = W_s[0, i, j]
            W_yh[i, d + j] = W_s[1, i, j]


@_jit.helper
def bidirectional_readout(
    H_f, H_r, W_s, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, Y, Y_r, loss_t, dW_s, db_y
):
    """Readout and loss of a bidirectional top layer over all T steps, its streams' states read where they
    are:
        y_t = [h_fwd_t ; h_rev_t] W_yh^T + b_y = h_fwd_t W_f^T + h_rev_t W_r^T + b_y     (W_yh = [W_f  W_r])
        dW_f += dY^T H_fwd,   dW_r += dY^T H_rev   (each over the T*B rows at once)
    H_f, H_r (T, B, d): the streams' states in their step orders (the reverse stream's step s is input
    position T-1-s); W_s (2, k, d) = W_f, W_r.  Out: Y (T, B, k) dY by input position (the forward stream's
    order), Y_r (T, B, k) dY in the reverse stream's order; dW_s (2, k, d) +=; loss_t, db_y as ``loss_rows``.
    """
    gemm_nt(rows(H_f), W_s[0], rows(Y))  # (T*B, k) h_fwd_t W_f^T
    gemm_nt(rows(H_r), W_s[1], rows(Y_r))  # (T*B, k) h_rev W_r^T, in the reverse stream's order
    add_reversed(Y_r, Y)
    loss_rows(Y, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, loss_t, db_y)  # Y <- dY
    reverse_rows(Y, 0, Y.shape[1], Y_r)  # dY in the reverse stream's order
    gemm_tn_acc(rows(Y), rows(H_f), dW_s[0])
    gemm_tn_acc(rows(Y_r), rows(H_r), dW_s[1])


@_jit.kernel
def stream_grad_norms(dW_hx0, dW_hxR, dW_hh, db_h, db_hh, dW_yh, db_y, out):
    """out = the L2 norm of every gradient array of a bidirectional stack, in Params.named() order: stream by
    stream (s = 2 l + r) W_hx, W_hh, b_h (and b_hh for a cell with one), then W_yh, b_y."""
    L = dW_hh.shape[0]
    P = 4 if db_hh.shape[2] > 0 else 3  # arrays per stream
    for l in range(L):
        for r in range(2):
            at = P * (2 * l + r)
            dW_hx = dW_hx0[r] if l == 0 else dW_hxR[l - 1, r]
            out[at] = vector_norm(dW_hx.ravel())
            out[at + 1] = vector_norm(dW_hh[l, r].ravel())
            out[at + 2] = vector_norm(db_h[l, r])
            if P == 4:
                out[at + 3] = vector_norm(db_hh[l, r])
    out[2 * P * L] = vector_norm(dW_yh.ravel())
    out[2 * P * L + 1] = vector_norm(db_y)


@_jit.kernel
def bidirectional_step(
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
    X_rev,
    X_cat,
    X_cat_rev,
    Y,
    Y_r,
    G,
    W_s,
    dW_s,
    G_s,
    G_below,
    DX,
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
    """One forward and backward pass of a bidirectional stack with every metric (module docstring).

    As ``step.step`` with a direction axis r (0 forward, 1 reverse) after the layer axis: W_hx0 (2, Gd, n),
    W_hxR (L-1, 2, Gd, 2d), W_hh (L, 2, Gd, d), b_h, b_hh (L, 2, .), P_f, P_b (L, 2, ...), H (L, 2, T, B, d),
    S, A (L, 2, T, B, .) or empty; the gradients likewise; M (2L, rows, T) by stream, each in its own step
    order while the pass runs, the reverse streams' rows flipped to input positions at its end (a shard's
    too: the driver's sums of the shards' M are position by position either way).  W_yh (k, 2d).
    Work: X_rev (T, B, n) layer 0's input reversed; Y, Y_r (T, B, k) the readout, then dY in each stream's step
    order; G (Tc, B, d) a top-layer stream's direct gradient of a chunk; W_s, dW_s (2, k, d) the readout's blocks
    per stream and their gradients; for a stack of L > 1 layers only (else empty): X_cat, X_cat_rev (T, B, 2d) a
    layer's input from below and its reverse, G_s (2, T, B, d) the direct gradients of a lower layer's streams,
    G_below (T, B, 2d), DX (Tc, B, max(n, 2d)); dZ, carry (B, .) as in ``step.step`` (carry one stream's).  norms:
    the gradient norms (``stream_grad_norms``), or (0,) to skip them.
    """
    T = x.shape[0]
    L, B = W_hh.shape[0], H.shape[3]
    given = T < 0  # no initial state given: h_{-1} = c_{-1} = 0
    reverse_rows(x, b0, B, X_rev)
    for l in range(L):  # forward, layer by layer
        if l > 0:
            join_directions(H[l - 1, 0], H[l - 1, 1], X_cat)
            reverse_rows(X_cat, 0, B, X_cat_rev)
            layer_forward(
                cell,
                act,
                X_cat,
                0,
                W_hxR[l - 1, 0],
                P_f[l, 0],
                b_h[l, 0],
                b_hh[l, 0],
                stage,
                A[l, 0],
                S[l, 0],
                H[l, 0],
                zero,
                U,
                M[2 * l],
                zero,
                zero,
                given,
            )
            layer_forward(
                cell,
                act,
                X_cat_rev,
                0,
                W_hxR[l - 1, 1],
                P_f[l, 1],
                b_h[l, 1],
                b_hh[l, 1],
                stage,
                A[l, 1],
                S[l, 1],
                H[l, 1],
                zero,
                U,
                M[2 * l + 1],
                zero,
                zero,
                given,
            )
        else:
            layer_forward(
                cell,
                act,
                x,
                b0,
                W_hx0[0],
                P_f[0, 0],
                b_h[0, 0],
                b_hh[0, 0],
                stage,
                A[0, 0],
                S[0, 0],
                H[0, 0],
                zero,
                U,
                M[0],
                zero,
                zero,
                given,
            )
            layer_forward(
                cell,
                act,
                X_rev,
                0,
                W_hx0[1],
                P_f[0, 1],
                b_h[0, 1],
                b_hh[0, 1],
                stage,
                A[0, 1],
                S[0, 1],
                H[0, 1],
                zero,
                U,
                M[1],
                zero,
                zero,
                given,
            )
    for a in (dW_hx0.ravel(), dW_hxR.ravel(), dW_hh.ravel(), dW_yh.ravel()):
        fill_zero(a)
    for a in (db64.ravel(), dbhh64.ravel(), dby64, loss_t):
        fill_zero(a)
    split_columns(W_yh, W_s)
    fill_zero(dW_s.ravel())
    bidirectional_readout(
        H[L - 1, 0], H[L - 1, 1], W_s, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, Y, Y_r, loss_t, dW_s, dby64
    )
    for l in range(L - 1, -1, -1):  # backward, layer by layer
        if l > 0:
            join_directions(H[l - 1, 0], H[l - 1, 1], X_cat)  # this layer's input again
            reverse_rows(X_cat, 0, B, X_cat_rev)
            fill_zero(G_below.ravel())
        for r in range(2):
            if l == 0:
                X = x if r == 0 else X_rev
                W_hx = W_hx0[r]
                dW_hx = dW_hx0[r]
                xb0 = b0 if r == 0 else 0
            else:
                X = X_cat if r == 0 else X_cat_rev
                W_hx = W_hxR[l - 1, r]
                dW_hx = dW_hxR[l - 1, r]
                xb0 = 0
            fill_zero(carry.ravel())
            t1 = T
            while t1 > 0:
                t0 = max(0, t1 - chunk)
                Tc = t1 - t0
                Xc = stage_rows(X, t0, t1, xb0, B, stage)  # (Tc, B, n_l)
                if l == L - 1:  # the top layer's direct gradient: dY W_r for the chunk's steps
                    Gc = G[:Tc]
                    gemm_nn(rows((Y if r == 0 else Y_r)[t0:t1]), W_s[r], rows(Gc))
                else:
                    Gc = G_s[r, t0:t1]
                layer_backward(
                    cell,
                    act,
                    Xc,
                    H[l, r],
                    S[l, r],
                    A[l, r],
                    t0,
                    Tc,
                    W_hx,
                    P_b[l, r],
                    Gc,
                    dZ[:Tc],
                    carry,
                    t1 < T,
                    zero,
                    dW_hx,
                    dW_hh[l, r],
                    db64[l, r],
                    dbhh64[l, r],
                    M[2 * l + r],
                    False,
                    zero,
                    zero,
                    given,
                    zero,
                )
                if l > 0:  # dX = dZ W_hx into the layer below
                    n_l = W_hx.shape[1]
                    D = DX[:Tc].ravel()[: Tc * B * n_l].reshape((Tc, B, n_l))
                    if cell == LSTM or cell == GRU:
                        gemm_nn(rows(A[l, r, t0:t1]), W_hx, rows(D))  # their dz_t sit in place of the gates
                    else:
                        gemm_nn(rows(dZ[:Tc]), W_hx, rows(D))
                    add_at_positions(D, t0, r == 1, G_below)
                t1 = t0
        if l > 0:
            split_directions(G_below, G_s[0], G_s[1])
    for l in range(L):
        for r in range(2):
            for j in range(db_h.shape[2]):
                db_h[l, r, j] = db64[l, r, j]
            for j in range(db_hh.shape[2]):
                db_hh[l, r, j] = dbhh64[l, r, j]
    for j in range(db_y.shape[0]):
        db_y[j] = dby64[j]
    join_columns(dW_s, dW_yh)
    for l in range(L):  # the reverse streams' metric rows by input position (docs/trace_format.md, streams)
        flip_steps(M[2 * l + 1])
    if norms.shape[0] > 0:
        stream_grad_norms(dW_hx0, dW_hxR, dW_hh, db_h, db_hh, dW_yh, db_y, norms)
