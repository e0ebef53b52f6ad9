"""The LSTM cell: forward and backward through time of one layer, instrumented inside the time loop.

    forward    [i, f, g, o] = split(x_t W_hx^T + h_{t-1} W_hh^T + b_h)        blocks of d, in this order
               i, f, o = sigmoid(.),  g = tanh(.),  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)
    backward   g_t  = G_t + dz_{t+1} W_hh                                     total dL/dh_t
               dc_t = g_t o_t (1 - tanh^2 c_t) + dc_{t+1} f_{t+1}             total dL/dc_t
               dz_t = [dc_t g_t i(1-i), dc_t c_{t-1} f(1-f), dc_t i (1-g^2), g_t tanh(c_t) o(1-o)]

The gate activations are overwritten with dz_t in place (they are not needed afterwards) and tanh(c_t) is
recomputed rather than stored.  Each kernel has a NumPy twin of the same name in reference/lstm.py.
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
def lstm_forward_row(a, b_h, c_prev, c, h, stats):
    """a (4d,) holds the pre-activations without b_h; in place the gates i, f, g, o; c, h (d,) out.
    stats (10,) float64 accumulates: ||h||, ||c||, the gate sums, the gate saturation counts (see lstm_forward).

    The row's sums are kept in the model's precision and added to stats once per row: float64 accumulators
    in a float32 loop halved its vector width (8 lanes, not 16; the row ran 1.7x longer).  The counts (at most
    d) are exact; a sum of squares that overflows or underflows is taken again in float64 (``row_norm``)."""
    d = c.shape[0]
    lo = a.dtype.type(SAT_LOW)
    hi = a.dtype.type(SAT_HIGH)
    zero = a.dtype.type(0)
    one = a.dtype.type(1)
    ssh = zero
    ssc = zero
    i_sum = zero
    f_sum = zero
    g_sum = zero
    o_sum = zero
    i_sat = zero
    f_sat = zero
    g_sat = zero
    o_sat = zero
    for j in range(d):
        i = sigmoid(a[j] + b_h[j])
        f = sigmoid(a[d + j] + b_h[d + j])
        g = tanh(a[2 * d + j] + b_h[2 * d + j])
        o = sigmoid(a[3 * d + j] + b_h[3 * d + j])
        cj = f * c_prev[j] + i * g
        hj = o * tanh(cj)
        a[j] = i
        a[d + j] = f
        a[2 * d + j] = g
        a[3 * d + j] = o
        c[j] = cj
        h[j] = hj
        ssh += hj * hj
        ssc += cj * cj
        i_sum += i
        f_sum += f
        g_sum += g
        o_sum += o
        i_sat += one if (i < lo) | (i > hi) else zero
        f_sat += one if (f < lo) | (f > hi) else zero
        g_sat += one if abs(g) > hi else zero
        o_sat += one if (o < lo) | (o > hi) else zero
    stats[0] += row_norm(ssh, h)
    stats[1] += row_norm(ssc, c)
    stats[2] += i_sum
    stats[3] += f_sum
    stats[4] += g_sum
    stats[5] += o_sum
    stats[6] += i_sat
    stats[7] += f_sat
    stats[8] += g_sat
    stats[9] += o_sat


@_jit.helper
def lstm_backward_row(a, gh, c, c_prev, dc_next, dc_row, stats):
    """a (4d,) the gates i, f, g, o of step t, overwritten with dz_t; gh (d,) total dL/dh_t; c, c_prev (d,);
    dc_next (d,) in: dc_{t+1} f_{t+1}, out: dc_t f_t; dc_row (d,) out: dc_t (scratch: the norm's fallback
    reads it).  stats (2,) float64 accumulates ||dL/dh_t||, ||dL/dc_t|| of this row.

    As in the forward row, the sums of squares are kept in the model's precision (``row_norm`` takes a
    row again in float64 when its sum overflowed, is NaN or underflowed) and db_h is added by the caller
    (``add_row``), so the loop keeps its full vector width."""
    d = c.shape[0]
    one = a.dtype.type(1)
    ssh = a.dtype.type(0)
    ssc = a.dtype.type(0)
    for j in range(d):
        i = a[j]
        f = a[d + j]
        g = a[2 * d + j]
        o = a[3 * d + j]
        ghj = gh[j]
        tc = tanh(c[j])  # recomputed, not stored
        dc = ghj * o * (one - tc * tc) + dc_next[j]
        di = dc * g * (i * (one - i))
        df = dc * c_prev[j] * (f * (one - f))
        dg = dc * i * (one - g * g)
        do = ghj * tc * (o * (one - o))
        a[j] = di
        a[d + j] = df
        a[2 * d + j] = dg
        a[3 * d + j] = do
        dc_next[j] = dc * f
        dc_row[j] = dc
        ssh += ghj * ghj
        ssc += dc * dc
    stats[0] += row_norm(ssh, gh)
    stats[1] += row_norm(ssc, dc_row)


@_jit.kernel
def lstm_forward(X, b0, W_hx, P_hh, b_h, stage, A, C, H, c0, m, h0, has_h0):
    """Forward through time of one LSTM layer, with its metrics.

        [i, f, g, o] = split(x_t W_hx^T + h_{t-1} W_hh^T + b_h)      blocks of d, in this order
        i, f, o = sigmoid(.), g = tanh(.),  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t),  h_{-1} = c_{-1} = 0
    X (T, B', n), b0, stage: the input rows as in ``rnn_forward``; P_hh: W_hh^T packed (``pack_recurrent``);
    A (T, B, 4d) out: the gate activations i, f, g, o;
    C, H (T, B, d) out; c0, h0 (B, d) the initial state (c0 zeros and has_h0 false unless it is given, as
    for a seq2seq decoder).
    m (10, T) out: h_norm, c_norm (mean_b of the L2 norms), gate_{i,f,g,o}_mean (over batch and units),
    gate_{i,f,o}_sat (share < 0.05 or > 0.95), gate_g_sat (share with |g| > 0.95).
    """
    T, B, d = H.shape
    stats = np.empty(10)
    for t in range(T):
        project_ahead(X, b0, W_hx, stage, A, t)  # x_t W_hx^T, a block of steps ahead
        if t > 0:
            gemm_packed_acc(H[t - 1], P_hh, A[t])  # += h_{t-1} W_hh^T
        elif has_h0:
            gemm_packed_acc(h0, P_hh, A[0])  # += h_{-1} W_hh^T
        c_prev = C[t - 1] if t > 0 else c0  # (B, d)
        fill_zero(stats)
        for b in range(B):
            lstm_forward_row(A[t, b], b_h, c_prev[b], C[t, b], H[t, b], stats)
        m[0, t] = stats[0] / B
        m[1, t] = stats[1] / B
        for q in range(2, 10):
            m[q, t] = stats[q] / (B * d)


@_jit.kernel
def lstm_backward(
    X,
    H,
    C,
    A,
    t0,
    Tc,
    W_hx,
    P_hh,
    G,
    dc_carry,
    c0,
    dW_hx,
    dW_hh,
    db_h,
    grad_h_norm,
    grad_c_norm,
    propagate,
    h0,
    has_h0,
    dh0,
):
    """Backward through the chunk of steps t0 .. t0+Tc-1 of one LSTM layer.

        g_t  = G_t + dz_{t+1} W_hh                               total dL/dh_t
        dc_t = g_t o_t (1 - tanh^2 c_t) + dc_{t+1} f_{t+1}       total dL/dc_t
        dz_t = [dc_t g_t i_t (1 - i_t),  dc_t c_{t-1} f_t (1 - f_t),  dc_t i_t (1 - g_t^2),
                g_t tanh(c_t) o_t (1 - o_t)]                     (B, 4d), blocks i, f, g, o
        dW_hh += sum_t dz_t^T h_{t-1}   dW_hx += sum_t dz_t^T x_t   db_h += sum_{t,b} dz_t   G_t <- dz_t W_hx
    X (Tc, B, n) the chunk's input; H, C (T, B, d) and A (T, B, 4d) for all steps: A[t] holds the gates of
    step t and is overwritten with dz_t (dz_{t+1} is read from A[t+1], already converted); P_hh: W_hh packed.
    G (Tc, B, d) in: direct gradient, out: the layer below's (when propagate); dc_carry (B, d) in:
    dc_{t0+Tc} f_{t0+Tc} (zeros at the end of the sequence), out: dc_{t0} f_{t0}; db_h (4d,) float64.
    """
    T, B, d = H.shape
    stats = np.empty(2)
    dc_row = np.empty(d, H.dtype)  # (d,) one row's dc_t
    for s in range(Tc - 1, -1, -1):
        t = t0 + s
        if t + 1 < T:
            gemm_packed_acc(A[t + 1], P_hh, G[s])  # g_t = G_t + dz_{t+1} W_hh
        c_prev = C[t - 1] if t > 0 else c0
        fill_zero(stats)
        for b in range(B):
            lstm_backward_row(A[t, b], G[s, b], C[t, b], c_prev[b], dc_carry[b], dc_row, stats)
            add_row(A[t, b], db_h)  # db_h += dz_t (float64)
        grad_h_norm[t] = stats[0] / B
        grad_c_norm[t] = stats[1] / B
    dZ2 = rows(A[t0 : t0 + Tc])  # (Tc*B, 4d)
    gemm_tn_acc(dZ2, rows(X), dW_hx)  # += dZ^T X
    if t0 > 0:
        gemm_tn_acc(dZ2, rows(H[t0 - 1 : t0 + Tc - 1]), dW_hh)
    else:
        if Tc > 1:
            gemm_tn_acc(rows(A[1:Tc]), rows(H[0 : Tc - 1]), dW_hh)
        if has_h0:  # h_{-1} given (dc_{-1} is dc_carry)
            gemm_tn_acc(A[0], h0, dW_hh)  # += dz_0^T h_{-1}
            fill_zero(dh0.ravel())
            gemm_packed_acc(A[0], P_hh, dh0)  # dL/dh_{-1} = dz_0 W_hh
    if propagate:
        gemm_nn(dZ2, W_hx, rows(G))  # (Tc*B, n) = dZ W_hx
