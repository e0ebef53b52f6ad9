"""The GRU cell (PyTorch's equations): forward and backward through time of one layer, instrumented inside
the time loop.

    forward    a_t = x_t W_hx^T + b_h,   u_t = h_{t-1} W_hh^T + b_hh          (B, 3d) each, blocks r, z, n
               r = sigmoid(a_r + u_r),   z = sigmoid(a_z + u_z),   n = tanh(a_n + r * u_n)
               h_t = (1 - z) * n + z * h_{t-1},   h_{-1} = 0
    backward   g_t  = G_t + du_{t+1} W_hh + g_{t+1} * z_{t+1}                 total dL/dh_t
               dn = g_t (1 - z) (1 - n^2)        dL/d(a_n + r u_n)
               dz = g_t (h_{t-1} - n) z (1 - z)  dr = dn u_n r (1 - r)
               da_t = [dr, dz, dn]               du_t = [dr, dz, dn * r]
               dW_hx += da_t^T x_t   db_h += sum_b da_t   dW_hh += du_t^T h_{t-1}   db_hh += sum_b du_t
               G_t <- da_t W_hx                  (the direct gradient into the layer below)

u_n is kept for the backward pass (S); the gates are overwritten with da_t in place, and S[t] with g_t z_t
once it is read, which is the term the step before needs (across chunk boundaries too).  Each kernel has a
NumPy twin of the same name in reference/gru.py.
"""

from __future__ import annotations

import numpy as np

from .. import _jit
from ..blas import gemm_nn, gemm_tn_acc, project_ahead
from ..fastmath import sigmoid, tanh
from ..gemm import gemm_packed_acc
from ..metrics import SAT_HIGH, SAT_LOW
from ..primitives import add_row, fill_zero, row_norm, rows


# The row passes: see cells/rnn.py for why each is its own function.
@_jit.helper
def gru_forward_row(a, u, b_h, b_hh, h_prev, un, h, stats):
    """a (3d,) holds x_t W_hx^T, u (3d,) h_{t-1} W_hh^T; in place the gates r, z, n; un (d,) out: u_n
    (with b_hh); h (d,) out.  stats (7,) float64 accumulates ||h||, the gate sums and saturation counts.
    The row's sums are kept in the model's precision (float64 ones would halve a float32 loop's vector
    width), as in lstm_forward_row."""
    d = h.shape[0]
    one = a.dtype.type(1)
    zero = a.dtype.type(0)
    lo = a.dtype.type(SAT_LOW)
    hi = a.dtype.type(SAT_HIGH)
    ss = zero
    r_sum = zero
    z_sum = zero
    n_sum = zero
    r_sat = zero
    z_sat = zero
    n_sat = zero
    for j in range(d):
        r = sigmoid(a[j] + b_h[j] + u[j] + b_hh[j])
        z = sigmoid(a[d + j] + b_h[d + j] + u[d + j] + b_hh[d + j])
        unj = u[2 * d + j] + b_hh[2 * d + j]
        n = tanh(a[2 * d + j] + b_h[2 * d + j] + r * unj)
        hj = (one - z) * n + z * h_prev[j]
        a[j] = r
        a[d + j] = z
        a[2 * d + j] = n
        un[j] = unj
        h[j] = hj
        ss += hj * hj
        r_sum += r
        z_sum += z
        n_sum += n
        r_sat += one if (r < lo) | (r > hi) else zero
        z_sat += one if (z < lo) | (z > hi) else zero
        n_sat += one if abs(n) > hi else zero
    stats[0] += row_norm(ss, h)
    stats[1] += r_sum
    stats[2] += z_sum
    stats[3] += n_sum
    stats[4] += r_sat
    stats[5] += z_sat
    stats[6] += n_sat


@_jit.helper
def gru_backward_row(a, g_in, gz_next, un_gz, h_prev, du, g_row):
    """a (3d,) the gates r, z, n of step t, overwritten with da_t; g_in (d,) G_t + du_{t+1} W_hh;
    gz_next (d,) g_{t+1} z_{t+1} (zeros at the sequence's end); un_gz (d,) in: u_n of step t, out: g_t z_t;
    h_prev (d,); du (3d,) out; g_row (d,) out: g_t (scratch: the norm's fallback reads it).  Returns ||g_t||.

    The sum of squares is kept in the model's precision (``row_norm`` takes the row again in float64 when it
    overflowed, is NaN or underflowed); db_h and db_hh are added by the caller (``add_row``)."""
    d = h_prev.shape[0]
    one = a.dtype.type(1)
    ss = a.dtype.type(0)
    for j in range(d):
        r = a[j]
        z = a[d + j]
        n = a[2 * d + j]
        g = g_in[j] + gz_next[j]  # total dL/dh_t
        dn = g * (one - z) * (one - n * n)
        dz = g * (h_prev[j] - n) * (z * (one - z))
        dr = dn * un_gz[j] * (r * (one - r))
        dun = dn * r
        a[j] = dr
        a[d + j] = dz
        a[2 * d + j] = dn
        du[j] = dr
        du[d + j] = dz
        du[2 * d + j] = dun
        un_gz[j] = g * z
        g_row[j] = g
        ss += g * g
    return row_norm(ss, g_row)


# ---------------------------------------------------------------------------------------- GRU layer
@_jit.kernel
def gru_forward(X, b0, W_hx, P_hh, b_h, b_hh, stage, A, S, H, zero, U, m, h0, has_h0):
    """Forward through time of one GRU layer, with its metrics (module docstring).

    X (T, B', n), b0, stage: the input rows as in ``rnn_forward``; P_hh: W_hh^T packed (``pack_recurrent``);
    A (T, B, 3d) out: the gates r, z, n; S (T, B, d) out: u_n; H (T, B, d) out; zero (B, d) zeros;
    U (B, 3d) scratch; h0 (B, d) h_{-1} when has_h0 (a seq2seq decoder), else unused (h_{-1} = 0).
    m (7, T) out: h_norm (mean_b ||h_t||), gate_{r,z,n}_mean (over batch and units), gate_{r,z}_sat (share
    < 0.05 or > 0.95), gate_n_sat (share with |n| > 0.95).
    """
    T, B, d = H.shape
    stats = np.empty(7)
    for t in range(T):
        project_ahead(X, b0, W_hx, stage, A, t)  # x_t W_hx^T, a block of steps ahead
        fill_zero(U.ravel())
        if t > 0:
            gemm_packed_acc(H[t - 1], P_hh, U)  # h_{t-1} W_hh^T
        elif has_h0:
            gemm_packed_acc(h0, P_hh, U)
        h_prev = H[t - 1] if t > 0 else (h0 if has_h0 else zero)  # (B, d)
        fill_zero(stats)
        for b in range(B):
            gru_forward_row(A[t, b], U[b], b_h, b_hh, h_prev[b], S[t, b], H[t, b], stats)
        m[0, t] = stats[0] / B
        for q in range(1, 7):
            m[q, t] = stats[q] / (B * d)


@_jit.kernel
def gru_backward(
    X,
    H,
    S,
    A,
    t0,
    Tc,
    W_hx,
    P_hh,
    G,
    DU,
    du_carry,
    has_carry,
    zero,
    dW_hx,
    dW_hh,
    db_h,
    db_hh,
    grad_h_norm,
    propagate,
    h0,
    has_h0,
    dh0,
):
    """Backward through the chunk of steps t0 .. t0+Tc-1 of one GRU layer (module docstring).

    X (Tc, B, n) the chunk's input; H, S (T, B, d) and A (T, B, 3d) for all steps (A[t]: gates, then da_t;
    S[t]: u_n, then g_t z_t); P_hh: W_hh packed; G (Tc, B, d) in: direct gradient, out: the layer below's
    (when propagate); DU (Tc, B, 3d) out: du of the chunk; du_carry (B, 3d) in: du_{t0+Tc} (if has_carry),
    out: du_{t0}; zero (B, d) zeros; db_h, db_hh (3d,) float64; grad_h_norm[t] = mean_b ||g_t||.
    """
    T, B, d = H.shape
    g_row = np.empty(d, H.dtype)  # (d,) one row's g_t
    for s in range(Tc - 1, -1, -1):
        t = t0 + s
        if s + 1 < Tc:
            gemm_packed_acc(DU[s + 1], P_hh, G[s])  # += du_{t+1} W_hh
        elif has_carry:
            gemm_packed_acc(du_carry, P_hh, G[s])
        h_prev = H[t - 1] if t > 0 else (h0 if has_h0 else zero)
        gz_next = S[t + 1] if t + 1 < T else zero  # g_{t+1} z_{t+1}
        norm_sum = 0.0
        for b in range(B):
            norm_sum += gru_backward_row(A[t, b], G[s, b], gz_next[b], S[t, b], h_prev[b], DU[s, b], g_row)
            add_row(A[t, b], db_h)  # db_h += da_t (float64)
            add_row(DU[s, b], db_hh)  # db_hh += du_t
        grad_h_norm[t] = norm_sum / B
    for b in range(B):  # du_{t0}, for the earlier chunk
        for j in range(3 * d):
            du_carry[b, j] = DU[0, b, j]
    dA2 = rows(A[t0 : t0 + Tc])  # (Tc*B, 3d)
    gemm_tn_acc(dA2, rows(X), dW_hx)  # += da^T X
    if t0 > 0:
        gemm_tn_acc(rows(DU), rows(H[t0 - 1 : t0 + Tc - 1]), dW_hh)  # += du^T H_{t-1}
    else:
        if Tc > 1:
            gemm_tn_acc(rows(DU[1:]), rows(H[0 : Tc - 1]), dW_hh)
        if has_h0:  # h_{-1} given (a seq2seq decoder)
            gemm_tn_acc(DU[0], h0, dW_hh)  # += du_0^T h_{-1}
            for b in range(B):  # dL/dh_{-1} = du_0 W_hh + g_0 z_0
                for j in range(d):
                    dh0[b, j] = S[0, b, j]
            gemm_packed_acc(DU[0], P_hh, dh0)
    if propagate:
        gemm_nn(dA2, W_hx, rows(G))  # (Tc*B, n) = da W_hx
