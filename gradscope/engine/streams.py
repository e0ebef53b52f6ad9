"""Streams beyond the single chain: the step kernel of a bidirectional stack, driving the same cell kernels.

A bidirectional layer is two streams: one runs forward over t = 0..T-1 from h_{-1} = 0, the other over
t = T-1..0 from h_T = 0; the layer above, and the readout, read [h_fwd_t ; h_rev_t] (2d).  The reverse
stream runs the cell's kernels unchanged on a time-reversed copy of its input, so its buffers (H, S, A) hold
its steps in the order it takes them (step s is input position T-1-s); the driver flips its metric rows to
input positions (docs/trace_format.md, streams).

    forward, layer by layer
        fwd: the cell's forward kernel on X;   rev: on X reversed;   X <- [H_fwd ; reversed H_rev] (T, B, 2d)
    backward, layer by layer from the top (a bidirectional layer cannot run in the uni stack's wavefront:
    its two streams walk time in opposite directions)
        top: Y = X_top W_yh^T + b_y, the loss, dY, dW_yh, G = dY W_yh (T, B, 2d), split into the streams;
        each stream, chunk by chunk from its last step: the cell's backward kernel (its carry crosses
        chunks), then dX = dZ W_hx added into the layer below's direct gradient at the input positions.
"""

from __future__ import annotations

from . import _jit
from .blas import gemm_nn, stage_rows
from .primitives import fill_zero, rows
from .readout import readout_loss
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
    G_top,
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
):
    """One forward and backward pass of a bidirectional stack with every metric (module docstring).

    As ``step.step`` with a direction axis r (0 forward, 1 reverse) after the layer axis: W_hx0 (2, Gd, n),
    W_hxR (L-1, 2, Gd, 2d), W_hh (L, 2, Gd, d), b_h, b_hh (L, 2, .), P_f, P_b (L, 2, ...), H (L, 2, T, B, d),
    S, A (L, 2, T, B, .) or empty; the gradients likewise; M (2L, rows, T) by stream, each in its own step
    order.  W_yh (k, 2d).  Work: X_rev (T, B, n) layer 0's input reversed; X_cat, X_cat_rev (T, B, 2d) a
    layer's input from below and its reverse; Y (Tc, B, k); G_top (Tc, B, 2d); G_s (2, T, B, d) the direct
    gradients of a layer's streams; G_below (T, B, 2d); DX (Tc, B, max(n, 2d)); dZ, carry (B, .) as in
    ``step.step`` (carry one stream's).  No gradient norms here (the driver takes them).
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
    join_directions(H[L - 1, 0], H[L - 1, 1], X_cat)  # the readout's input (T, B, 2d)
    for t0 in range(0, T, chunk):  # readout and loss, chunk by chunk
        t1 = min(T, t0 + chunk)
        Tc = t1 - t0
        readout_loss(
            X_cat[t0:t1],
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
            G_top[:Tc],
        )
        split_directions(G_top[:Tc], G_s[0, t0:t1], G_s[1, T - t1 : T - t0])
        # split_directions reverses within the chunk: G_s[1][T-1-t] for t in t0..t1-1 is rows T-t1 .. T-t0-1
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
                    G_s[r, t0:t1],
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
