"""The plain RNN cell: forward and backward through time of one layer, instrumented inside the time loop.

    forward    z_t = x_t W_hx^T + h_{t-1} W_hh^T + b_h          h_t = f(z_t),   h_{-1} = 0
    backward   g_t = G_t + dz_{t+1} W_hh                         total dL/dh_t (G_t: the direct part)
               dz_t = g_t * f'(z_t)                              f' read off h_t: no z_t is kept
               dW_hh += dz_t^T h_{t-1}   dW_hx += dz_t^T x_t   db_h += sum_b dz_t   G_t <- dz_t W_hx

f = relu | tanh | sigmoid | linear (codes 0..3).  Each kernel here has a NumPy twin of the same name in
reference/rnn.py; the tests compare them.  The layer's metric rows are RNN.metric_rows() (cells/__init__.py).
"""

from __future__ import annotations

from .. import _jit
from ..blas import gemm_nn, gemm_tn_acc, project_ahead
from ..fastmath import sigmoid, tanh
from ..gemm import gemm_packed_acc
from ..metrics import SAT_HIGH, SAT_LOW
from ..primitives import add_row, fill_zero, row_norm, rows

RELU, TANH, SIGMOID, LINEAR = 0, 1, 2, 3
ACTIVATION_CODES = {"relu": RELU, "tanh": TANH, "sigmoid": SIGMOID, "linear": LINEAR}


# The fused elementwise work of one step, one batch row at a time.  Each is its own function on purpose:
# LLVM vectorises a loop over one row (16 float32 lanes with AVX-512), but when the same loop sits inside
# the loop over rows it hoists its runtime alias checks to the whole step, where the in-place gate writes
# look like they overlap, and falls back to scalar code (measured: 3 ns vs 30 ns per LSTM unit).  They are
# tested through the layer kernels that call them (against reference.py).
@_jit.helper
def rnn_forward_row(z, b_h, act, lo, hi):
    """z (d,) holds x_t W_hx^T + h_{t-1} W_hh^T; in place h = f(z + b_h).
    Returns (||h||, count for the activation's metric).

    The loop sums in the model's precision (float64 accumulators held a float32 loop to 8 lanes); when that
    sum overflows (a ReLU RNN exploding forward), holds a NaN or is so small that squares underflowed (a
    vanishing one), ``row_norm`` takes the row's norm again in float64."""
    d = z.shape[0]
    zero = z.dtype.type(0)
    one = z.dtype.type(1)
    ss = zero
    count = zero  # at most d: exact
    if act == RELU:
        for j in range(d):
            v = z[j] + b_h[j]
            h = zero if v <= zero else v  # NaN stays NaN
            z[j] = h
            count += one if h == zero else zero
            ss += h * h
    elif act == TANH:
        for j in range(d):
            h = tanh(z[j] + b_h[j])
            z[j] = h
            count += one if abs(h) > hi else zero
            ss += h * h
    elif act == SIGMOID:
        for j in range(d):
            h = sigmoid(z[j] + b_h[j])
            z[j] = h
            count += one if (h < lo) | (h > hi) else zero
            ss += h * h
    else:
        for j in range(d):
            h = z[j] + b_h[j]
            z[j] = h
            ss += h * h
    return row_norm(ss, z), int(count)


@_jit.helper
def rnn_backward_row(g, h, dz, act):
    """g (d,) total dL/dh_t, h (d,) = f(z_t): dz = g f'(z_t) (f' from h).  Returns ||g||.

    The sum of squares is kept in the model's precision (``row_norm`` takes the row again in float64 when
    it overflowed, is NaN or underflowed) and db_h is added by the caller (``add_row``): float64 work in
    this loop held a float32 model to 8 lanes."""
    d = g.shape[0]
    one = g.dtype.type(1)
    zero = g.dtype.type(0)
    ss = zero
    if act == RELU:
        for j in range(d):
            gj = g[j]
            dz[j] = gj if h[j] > zero else gj * zero  # 0 * NaN keeps NaN
            ss += gj * gj
    elif act == TANH:
        for j in range(d):
            gj = g[j]
            dz[j] = gj * (one - h[j] * h[j])
            ss += gj * gj
    elif act == SIGMOID:
        for j in range(d):
            gj = g[j]
            dz[j] = gj * (h[j] * (one - h[j]))
            ss += gj * gj
    else:
        for j in range(d):
            gj = g[j]
            dz[j] = gj
            ss += gj * gj
    return row_norm(ss, g)


@_jit.kernel
def rnn_forward(X, b0, W_hx, P_hh, b_h, act, stage, H, h_norm, act_metric, h0, has_h0):
    """Forward through time of one RNN layer, with its metrics.

        z_t = x_t W_hx^T + h_{t-1} W_hh^T + b_h,   h_t = f(z_t),   h_{-1} = 0
    X (T, B', n): the layer's input is its rows b0 .. b0+B-1 (a shard of the batch; all of them when
    b0 = 0 and B' = B); stage (Tc, B, n) scratch for them when they are not all of X's rows (else unused,
    may be empty); H (T, B, d) output; P_hh: W_hh^T packed (``pack_recurrent``).
    f = relu | tanh | sigmoid | linear (act 0..3).
    h_norm[t] = mean_b ||h_t||; act_metric[t] = share of (b, unit) pairs with h = 0 (relu),
    |h| > 0.95 (tanh), h < 0.05 or h > 0.95 (sigmoid); untouched for linear.
    """
    T, B, d = H.shape
    lo = H.dtype.type(SAT_LOW)
    hi = H.dtype.type(SAT_HIGH)
    for t in range(T):
        project_ahead(X, b0, W_hx, stage, H, t)  # x_t W_hx^T, a block of steps ahead
        if t > 0:
            gemm_packed_acc(H[t - 1], P_hh, H[t])  # += h_{t-1} W_hh^T
        elif has_h0:
            gemm_packed_acc(h0, P_hh, H[0])  # += h_{-1} W_hh^T
        norm_sum = 0.0
        count = 0
        for b in range(B):
            norm, c = rnn_forward_row(H[t, b], b_h, act, lo, hi)
            norm_sum += norm
            count += c
        h_norm[t] = norm_sum / B
        if act != LINEAR:
            act_metric[t] = count / (B * d)


@_jit.kernel
def rnn_backward(
    X, H, t0, W_hx, P_hh, act, G, dZ, dz_carry, has_carry, dW_hx, dW_hh, db_h, grad_h_norm, propagate, h0, has_h0, dh0
):
    """Backward through the chunk of steps t0 .. t0+Tc-1 of one RNN layer (the whole layer when t0 = 0
    and Tc = T).

        g_t   = G_t + dz_{t+1} W_hh        total dL/dh_t          grad_h_norm[t] = mean_b ||g_t||
        dz_t  = g_t * f'(z_t)              f' from h_t: relu 1[h>0], tanh 1-h^2, sigmoid h(1-h), linear 1
        dW_hh += sum_t dz_t^T h_{t-1}      dW_hx += sum_t dz_t^T x_t      db_h += sum_{t,b} dz_t
        G_t  <- dz_t W_hx                  direct gradient into the layer below (when propagate)
    X (Tc, B, n) the chunk's input; H (T, B, d) the layer's states (all steps: h_{t0-1} is needed);
    P_hh: W_hh packed (``pack_recurrent``); G (Tc, B, d) in: direct gradient, out: the layer below's (or
    scratch); dZ (Tc, B, d) out;
    dz_carry (B, d) in: dz_{t0+Tc} (used if has_carry), out: dz_{t0}; db_h (d,) float64.
    """
    Tc, B, n = X.shape
    d = H.shape[2]
    for s in range(Tc - 1, -1, -1):
        t = t0 + s
        if s + 1 < Tc:
            gemm_packed_acc(dZ[s + 1], P_hh, G[s])  # g_t = G_t + dz_{t+1} W_hh
        elif has_carry:
            gemm_packed_acc(dz_carry, P_hh, G[s])
        norm_sum = 0.0
        for b in range(B):
            norm_sum += rnn_backward_row(G[s, b], H[t, b], dZ[s, b], act)
            add_row(dZ[s, b], db_h)  # db_h += dz_t (float64)
        grad_h_norm[t] = norm_sum / B
    for b in range(B):  # dz_{t0}, for the earlier chunk
        for j in range(d):
            dz_carry[b, j] = dZ[0, b, j]
    dZ2 = rows(dZ)  # (Tc*B, d)
    gemm_tn_acc(dZ2, rows(X), dW_hx)  # += dZ^T X
    if t0 > 0:
        gemm_tn_acc(dZ2, rows(H[t0 - 1 : t0 + Tc - 1]), dW_hh)  # += dZ^T H_{t-1}
    else:
        if Tc > 1:
            gemm_tn_acc(rows(dZ[1:]), rows(H[0 : Tc - 1]), dW_hh)
        if has_h0:  # h_{-1} given (a seq2seq decoder)
            gemm_tn_acc(dZ[0], h0, dW_hh)  # += dz_0^T h_{-1}
            fill_zero(dh0.ravel())
            gemm_packed_acc(dZ[0], P_hh, dh0)  # dL/dh_{-1} = dz_0 W_hh
    if propagate:
        gemm_nn(dZ2, W_hx, rows(G))  # (Tc*B, n) = dZ W_hx
