"""The Numba kernels: stacked RNN and LSTM forward and backward through time, instrumented inside the loops.

Notation (TRACE_FORMAT.md): T steps, batch B, L layers, hidden size d, layer input size n, output size k,
G = 1 (RNN) or 4 (LSTM, gate blocks i, f, g, o).  Arrays are time-major and C-contiguous; a batch of rows
is multiplied as ``X @ W.T`` (W_hx x_t for every example).  Each layer, chunk and step kernel has a plain
NumPy twin in reference.py, named the same (the BLAS entries: np.matmul), and the tests compare them; the
row passes are tested through the layer kernels that call them.

One training step (``rnn_step`` / ``lstm_step``, one nogil call from Python, after ``pack_layers``; a batch
split into shards runs one call per shard, on threads, each on its rows of the batch):

forward, layer by layer
    Z = X W_hx^T over all T*B rows at once (one GEMM), written straight into the state buffer (a shard of
    the batch reads its rows of x in place, so its layer 0 does this a chunk of steps at a time, through a
    small staging buffer);
    for t: Z_t += h_{t-1} W_hh^T (the only sequential product), then one fused pass adds b_h, applies the
    activation (LSTM: the gates, c_t and h_t) and accumulates every forward metric of step t.
backward, a wavefront over chunks of Tc steps from the end (memory: the chunk buffers, not T of them)
    top layer: Y = H_c W_yh^T + b_y, the loss and dY for the chunk, dW_yh += dY^T H_c, G = dY W_yh;
    each layer from the top: for t in the chunk, from its end:
        g_t = G_t + dz_{t+1} W_hh            (the TOTAL dL/dh_t; dz_{t+1} crosses chunk boundaries)
        dz_t = g_t * f'(z_t)                 (LSTM: through c_t, the gates, and dc_{t+1} f_{t+1})
    then the chunk's weight gradients as GEMMs (dW_hh += dZ^T H_{t-1}, dW_hx += dZ^T X, db_h += sum dZ)
    and the direct gradient into the layer below, G = dZ W_hx.
The LSTM overwrites its gate activations with dz_t in place (they are not needed afterwards) and
recomputes tanh(c_t) instead of storing it.

Norms, means and sums of metrics accumulate in float64.  Kernels never raise: NaN and Inf flow through
and the metrics show where they started (metrics.first_nonfinite).
"""
from __future__ import annotations

import math
import os
import threading

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from . import _jit
from .fastmath import sigmoid, tanh
from .gemm import gemm_packed_acc, pack, pack_transposed, panels
from .metrics import SAT_HIGH, SAT_LOW, StepResult, first_nonfinite, step_metric_names
from .params import LayerParams, ModelSpec, Params

RELU, TANH, SIGMOID, LINEAR = 0, 1, 2, 3
ACTIVATION_CODES = {"relu": RELU, "tanh": TANH, "sigmoid": SIGMOID, "linear": LINEAR}
MSE, CE = 0, 1
LOSS_CODES = {"mse": MSE, "ce": CE}
CHUNK_ROWS = 1024            # backward chunk: about this many (t, b) rows, so chunk buffers stay small

# Rows of the metric block M (L, n_metrics, T) each step kernel fills; names as in metrics.py.  The forward
# rows of a layer come first, so lstm_forward gets them as one contiguous (10, T) block.
RNN_ROWS = {"h_norm": 0, "relu_dead": 1, "tanh_sat": 1, "sigmoid_sat": 1, "grad_h_norm": 2}
LSTM_ROWS = {"h_norm": 0, "c_norm": 1, "gate_i_mean": 2, "gate_f_mean": 3, "gate_g_mean": 4, "gate_o_mean": 5,
             "gate_i_sat": 6, "gate_f_sat": 7, "gate_g_sat": 8, "gate_o_sat": 9,
             "grad_h_norm": 10, "grad_c_norm": 11}

_SCALE_DOWN = 2.0 ** -600    # second sum of squares, of v * 2^-600: cannot overflow for any float64 v
_SCALE_UP = 2.0 ** 600

# ------------------------------------------------------------------------------------------------- BLAS
# Numba's own BLAS entry (it calls SciPy's cython_blas sgemm/dgemm), resolved by name, so cached kernels
# that call it stay valid in a new process.  Column-major, Fortran semantics:
#     C (m x n) = alpha op(A) op(B) + beta C
# Without SciPy it would do nothing and return -1: refuse to import instead, with Numba's own message.
ensure_blas()
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,
    types.voidptr, types.voidptr, types.intp, types.voidptr, types.intp, types.voidptr,
    types.voidptr, types.intp))


@intrinsic
def _stack_pointer(typingctx, value):
    """A pointer to a stack slot holding ``value`` (BLAS takes alpha and beta by pointer; no heap)."""
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once_value(builder, args[0])
        return builder.bitcast(slot, cgutils.voidptr_t)

    return types.voidptr(value), codegen


@_jit.inline
def _gemm(trans_a, trans_b, A, B, beta, C):
    """C = op(A) op(B) + beta * C for row-major 2-D arrays, op(M) = M^T when trans_*; beta is 0 or 1.

    A row-major C is a column-major C^T = op(B)^T op(A)^T, which is what BLAS is asked for.  Returns
    BLAS's status (0).  Accumulating with beta = 1 is what spares every temporary in the kernels below.
    Inlined into the five entry points below, whose only arguments are arrays: a compiled function called
    with constant flags would be compiled again for every combination of them (Numba types constants as
    literals), which cost seconds of cold compile.
    """
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return 0
    if k == 0:
        if not beta:
            _fill_zero(C.ravel())
        return 0
    one = C.dtype.type(1)
    kind = ord("s") if C.itemsize == 4 else ord("d")
    return _xxgemm(kind, ord("t") if trans_b else ord("n"), ord("t") if trans_a else ord("n"), n, m, k,
                   _stack_pointer(one), B.ctypes, max(1, B.strides[0] // B.itemsize),
                   A.ctypes, max(1, A.strides[0] // A.itemsize), _stack_pointer(one if beta else one - one),
                   C.ctypes, max(1, C.strides[0] // C.itemsize))


@_jit.kernel
def gemm_nt(A, B, C):
    """C = A B^T (BLAS)."""
    return _gemm(False, True, A, B, False, C)


@_jit.kernel
def gemm_nn(A, B, C):
    """C = A B (BLAS)."""
    return _gemm(False, False, A, B, False, C)


@_jit.kernel
def gemm_tn_acc(A, B, C):
    """C += A^T B (BLAS)."""
    return _gemm(True, False, A, B, True, C)


GEMMS = {(False, True, False): gemm_nt, (False, False, False): gemm_nn, (True, False, True): gemm_tn_acc}


# -------------------------------------------------------------------------------------------- helpers
@_jit.helper
def _fill_zero(v):
    """v[:] = 0 for a 1-D array (a plain loop: Numba's slice assignment costs seconds of compile time)."""
    for i in range(v.shape[0]):
        v[i] = 0


@_jit.helper
def _rows(a):
    """(m, B, c) -> the (m*B, c) view of the same rows (one function, so one compiled reshape)."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))


@_jit.helper
def _stage(x, t0, t1, b0, B, stage):
    """Rows b0 .. b0+B-1 of steps t0 .. t1-1 of x (T, B', n) as a C-contiguous (t1-t0, B, n) array: the
    view x[t0:t1] when they are all of x's rows, else a copy in stage (at least t1-t0, B, n).  A GEMM reads
    a block of (t, b) rows as one (rows, n) matrix; a shard's rows of one step are contiguous in x, of
    several steps they are not."""
    if b0 == 0 and B == x.shape[1]:
        return x[t0:t1]
    out = stage[:t1 - t0]
    n = x.shape[2]
    for s in range(t1 - t0):
        for b in range(B):
            for j in range(n):
                out[s, b, j] = x[t0 + s, b0 + b, j]
    return out


@_jit.helper
def _project(X, b0, W_hx, stage, Z):
    """Z (T, B, Gd) = X[:, b0:b0+B] W_hx^T, the input projection of every step: one GEMM over all T*B rows
    when they are all of X's, else a GEMM per block of stage.shape[0] steps staged in ``stage``."""
    T, B = Z.shape[0], Z.shape[1]
    Tc = max(1, T if (b0 == 0 and B == X.shape[1]) else stage.shape[0])
    for t0 in range(0, T, Tc):
        t1 = min(T, t0 + Tc)
        gemm_nt(_rows(_stage(X, t0, t1, b0, B, stage)), W_hx, _rows(Z[t0:t1]))


def _is_float64(a):
    """True for a float64 array (in kernels: a compile-time constant, so dead branches vanish)."""
    return a.dtype == np.float64


_jit.type_constant(_is_float64, lambda array_type: array_type.dtype == types.float64)


@_jit.inline
def _sq_scaled(x, wide):
    """(x 2^-600)^2 when ``wide`` (float64 models, whose squares can overflow), else 0: a float32 value
    squared cannot overflow a float64 sum, and the second accumulator would cost ~20% of an LSTM row."""
    if wide:
        xs = x * _SCALE_DOWN
        return xs * xs
    return 0.0


@_jit.inline
def _norm(ss, ss_scaled):
    """sqrt of a sum of squares kept twice: plainly (exact for small values) and of v * 2^-600 (which
    cannot overflow); the second is used only when the first overflowed and it was kept (float64 models:
    for float32 it is 0, and an infinite plain sum means an Inf entry).  NaN stays NaN, Inf stays Inf."""
    if ss == np.inf and ss_scaled > 0:
        return math.sqrt(ss_scaled) * _SCALE_UP
    return math.sqrt(ss)


@_jit.kernel
def vector_norm(v):
    """||v||_2 of a 1-D array, accumulated in float64 without overflow."""
    ss = 0.0
    ss_scaled = 0.0
    for i in range(v.shape[0]):
        x = np.float64(v[i])
        ss += x * x
        xs = x * _SCALE_DOWN
        ss_scaled += xs * xs
    return _norm(ss, ss_scaled)


# ------------------------------------------------------------------------------------------ row passes
# The fused elementwise work of one step, one batch row at a time.  Each is its own function on purpose:
# LLVM vectorises a loop over one row (16 float32 lanes with AVX-512), but when the same loop sits inside
# the loop over rows it hoists its runtime alias checks to the whole step, where the in-place gate writes
# look like they overlap, and falls back to scalar code (measured: 3 ns vs 30 ns per LSTM unit).  They are
# tested through the layer kernels that call them (against reference.py).
@_jit.helper
def _rnn_forward_row(z, b_h, act, lo, hi):
    """z (d,) holds x_t W_hx^T + h_{t-1} W_hh^T; in place h = f(z + b_h).
    Returns (sum h^2, sum (h 2^-600)^2, count for the activation's metric)."""
    d = z.shape[0]
    zero = z.dtype.type(0)
    wide = _is_float64(z)
    ss = 0.0
    ss_scaled = 0.0
    count = 0
    if act == RELU:
        for j in range(d):
            v = z[j] + b_h[j]
            h = zero if v <= zero else v                                  # NaN stays NaN
            z[j] = h
            count += h == zero
            hd = np.float64(h)
            ss += hd * hd
            ss_scaled += _sq_scaled(hd, wide)
    elif act == TANH:
        for j in range(d):
            h = tanh(z[j] + b_h[j])
            z[j] = h
            count += abs(h) > hi
            hd = np.float64(h)
            ss += hd * hd
            ss_scaled += _sq_scaled(hd, wide)
    elif act == SIGMOID:
        for j in range(d):
            h = sigmoid(z[j] + b_h[j])
            z[j] = h
            count += (h < lo) | (h > hi)
            hd = np.float64(h)
            ss += hd * hd
            ss_scaled += _sq_scaled(hd, wide)
    else:
        for j in range(d):
            h = z[j] + b_h[j]
            z[j] = h
            hd = np.float64(h)
            ss += hd * hd
            ss_scaled += _sq_scaled(hd, wide)
    return ss, ss_scaled, count


@_jit.helper
def _rnn_backward_row(g, h, dz, db_h, act):
    """g (d,) total dL/dh_t, h (d,) = f(z_t): dz = g f'(z_t) (f' from h), db_h += dz (float64).
    Returns (sum g^2, sum (g 2^-600)^2)."""
    d = g.shape[0]
    one = g.dtype.type(1)
    zero = g.dtype.type(0)
    wide = _is_float64(g)
    ss = 0.0
    ss_scaled = 0.0
    if act == RELU:
        for j in range(d):
            gj = g[j]
            v = gj if h[j] > zero else gj * zero                          # 0 * NaN keeps NaN
            dz[j] = v
            db_h[j] += v
            gd = np.float64(gj)
            ss += gd * gd
            ss_scaled += _sq_scaled(gd, wide)
    elif act == TANH:
        for j in range(d):
            gj = g[j]
            v = gj * (one - h[j] * h[j])
            dz[j] = v
            db_h[j] += v
            gd = np.float64(gj)
            ss += gd * gd
            ss_scaled += _sq_scaled(gd, wide)
    elif act == SIGMOID:
        for j in range(d):
            gj = g[j]
            v = gj * (h[j] * (one - h[j]))
            dz[j] = v
            db_h[j] += v
            gd = np.float64(gj)
            ss += gd * gd
            ss_scaled += _sq_scaled(gd, wide)
    else:
        for j in range(d):
            gj = g[j]
            dz[j] = gj
            db_h[j] += gj
            gd = np.float64(gj)
            ss += gd * gd
            ss_scaled += _sq_scaled(gd, wide)
    return ss, ss_scaled


@_jit.helper
def _lstm_forward_row(a, b_h, c_prev, c, h, stats):
    """a (4d,) holds the pre-activations without b_h; in place the gates i, f, g, o; c, h (d,) out.
    stats (14,) float64 accumulates: sum h^2, sum c^2 (plain and scaled), the gate sums, the gate
    saturation counts (see lstm_forward)."""
    d = c.shape[0]
    lo = a.dtype.type(SAT_LOW)
    hi = a.dtype.type(SAT_HIGH)
    wide = _is_float64(a)
    ssh = 0.0
    ssh_scaled = 0.0
    ssc = 0.0
    ssc_scaled = 0.0
    i_sum = 0.0
    f_sum = 0.0
    g_sum = 0.0
    o_sum = 0.0
    i_sat = 0
    f_sat = 0
    g_sat = 0
    o_sat = 0
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
        hd = np.float64(hj)
        cd = np.float64(cj)
        ssh += hd * hd
        ssh_scaled += _sq_scaled(hd, wide)
        ssc += cd * cd
        ssc_scaled += _sq_scaled(cd, wide)
        i_sum += np.float64(i)
        f_sum += np.float64(f)
        g_sum += np.float64(g)
        o_sum += np.float64(o)
        i_sat += (i < lo) | (i > hi)
        f_sat += (f < lo) | (f > hi)
        g_sat += abs(g) > hi
        o_sat += (o < lo) | (o > hi)
    stats[0] += _norm(ssh, ssh_scaled)
    stats[1] += _norm(ssc, ssc_scaled)
    stats[2] += i_sum
    stats[3] += f_sum
    stats[4] += g_sum
    stats[5] += o_sum
    stats[6] += i_sat
    stats[7] += f_sat
    stats[8] += g_sat
    stats[9] += o_sat


@_jit.helper
def _lstm_backward_row(a, gh, c, c_prev, dc_next, db_h, stats):
    """a (4d,) the gates i, f, g, o of step t, overwritten with dz_t; gh (d,) total dL/dh_t; c, c_prev (d,);
    dc_next (d,) in: dc_{t+1} f_{t+1}, out: dc_t f_t; db_h (4d,) float64 += dz_t.
    stats (2,) float64 accumulates ||dL/dh_t||, ||dL/dc_t|| of this row."""
    d = c.shape[0]
    one = a.dtype.type(1)
    wide = _is_float64(a)
    ssh = 0.0
    ssh_scaled = 0.0
    ssc = 0.0
    ssc_scaled = 0.0
    for j in range(d):
        i = a[j]
        f = a[d + j]
        g = a[2 * d + j]
        o = a[3 * d + j]
        ghj = gh[j]
        tc = tanh(c[j])                                                   # recomputed, not stored
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
        db_h[j] += di
        db_h[d + j] += df
        db_h[2 * d + j] += dg
        db_h[3 * d + j] += do
        ghd = np.float64(ghj)
        dcd = np.float64(dc)
        ssh += ghd * ghd
        ssh_scaled += _sq_scaled(ghd, wide)
        ssc += dcd * dcd
        ssc_scaled += _sq_scaled(dcd, wide)
    stats[0] += _norm(ssh, ssh_scaled)
    stats[1] += _norm(ssc, ssc_scaled)


# ----------------------------------------------------------------------------------------- RNN layer
@_jit.kernel
def rnn_forward(X, b0, W_hx, P_hh, b_h, act, stage, H, h_norm, act_metric):
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
    _project(X, b0, W_hx, stage, H)                                           # x_t W_hx^T, all t
    for t in range(T):
        if t > 0:
            gemm_packed_acc(H[t - 1], P_hh, H[t])                             # += h_{t-1} W_hh^T
        norm_sum = 0.0
        count = 0
        for b in range(B):
            ss, ss_scaled, c = _rnn_forward_row(H[t, b], b_h, act, lo, hi)
            norm_sum += _norm(ss, ss_scaled)
            count += c
        h_norm[t] = norm_sum / B
        if act != LINEAR:
            act_metric[t] = count / (B * d)


@_jit.kernel
def rnn_backward(X, H, t0, W_hx, P_hh, act, G, dZ, dz_carry, has_carry,
                 dW_hx, dW_hh, db_h, grad_h_norm, propagate):
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
            gemm_packed_acc(dZ[s + 1], P_hh, G[s])                            # g_t = G_t + dz_{t+1} W_hh
        elif has_carry:
            gemm_packed_acc(dz_carry, P_hh, G[s])
        norm_sum = 0.0
        for b in range(B):
            ss, ss_scaled = _rnn_backward_row(G[s, b], H[t, b], dZ[s, b], db_h, act)
            norm_sum += _norm(ss, ss_scaled)
        grad_h_norm[t] = norm_sum / B
    for b in range(B):                                                    # dz_{t0}, for the earlier chunk
        for j in range(d):
            dz_carry[b, j] = dZ[0, b, j]
    dZ2 = _rows(dZ)                                         # (Tc*B, d)
    gemm_tn_acc(dZ2, _rows(X), dW_hx)                                         # += dZ^T X
    if t0 > 0:
        gemm_tn_acc(dZ2, _rows(H[t0 - 1:t0 + Tc - 1]), dW_hh)                 # += dZ^T H_{t-1}
    elif Tc > 1:                                                          # h_{-1} = 0 adds nothing
        gemm_tn_acc(_rows(dZ[1:]), _rows(H[0:Tc - 1]), dW_hh)
    if propagate:
        gemm_nn(dZ2, W_hx, _rows(G))                                          # (Tc*B, n) = dZ W_hx


# ---------------------------------------------------------------------------------------- LSTM layer
@_jit.kernel
def lstm_forward(X, b0, W_hx, P_hh, b_h, stage, A, C, H, c_zero, m):
    """Forward through time of one LSTM layer, with its metrics.

        [i, f, g, o] = split(x_t W_hx^T + h_{t-1} W_hh^T + b_h)      blocks of d, in this order
        i, f, o = sigmoid(.), g = tanh(.),  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t),  h_{-1} = c_{-1} = 0
    X (T, B', n), b0, stage: the input rows as in ``rnn_forward``; P_hh: W_hh^T packed (``pack_recurrent``);
    A (T, B, 4d) out: the gate activations i, f, g, o;
    C, H (T, B, d) out; c_zero (B, d) zeros.
    m (10, T) out: h_norm, c_norm (mean_b of the L2 norms), gate_{i,f,g,o}_mean (over batch and units),
    gate_{i,f,o}_sat (share < 0.05 or > 0.95), gate_g_sat (share with |g| > 0.95).
    """
    T, B, d = H.shape
    stats = np.empty(10)
    _project(X, b0, W_hx, stage, A)                                           # x_t W_hx^T, all t
    for t in range(T):
        if t > 0:
            gemm_packed_acc(H[t - 1], P_hh, A[t])                             # += h_{t-1} W_hh^T
        c_prev = C[t - 1] if t > 0 else c_zero                            # (B, d)
        _fill_zero(stats)
        for b in range(B):
            _lstm_forward_row(A[t, b], b_h, c_prev[b], C[t, b], H[t, b], stats)
        m[0, t] = stats[0] / B
        m[1, t] = stats[1] / B
        for q in range(2, 10):
            m[q, t] = stats[q] / (B * d)


@_jit.kernel
def lstm_backward(X, H, C, A, t0, Tc, W_hx, P_hh, G, dc_carry, c_zero,
                  dW_hx, dW_hh, db_h, grad_h_norm, grad_c_norm, propagate):
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
    for s in range(Tc - 1, -1, -1):
        t = t0 + s
        if t + 1 < T:
            gemm_packed_acc(A[t + 1], P_hh, G[s])                             # g_t = G_t + dz_{t+1} W_hh
        c_prev = C[t - 1] if t > 0 else c_zero
        _fill_zero(stats)
        for b in range(B):
            _lstm_backward_row(A[t, b], G[s, b], C[t, b], c_prev[b], dc_carry[b], db_h, stats)
        grad_h_norm[t] = stats[0] / B
        grad_c_norm[t] = stats[1] / B
    dZ2 = _rows(A[t0:t0 + Tc])                          # (Tc*B, 4d)
    gemm_tn_acc(dZ2, _rows(X), dW_hx)                                         # += dZ^T X
    if t0 > 0:
        gemm_tn_acc(dZ2, _rows(H[t0 - 1:t0 + Tc - 1]), dW_hh)
    elif Tc > 1:
        gemm_tn_acc(_rows(A[1:Tc]), _rows(H[0:Tc - 1]), dW_hh)
    if propagate:
        gemm_nn(dZ2, W_hx, _rows(G))                                          # (Tc*B, n) = dZ W_hx


# ------------------------------------------------------------------------------------- readout + loss
@_jit.kernel
def readout_loss(H, W_yh, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, Y, loss_t, dW_yh, db_y, G):
    """Readout, loss and their gradients for a chunk of steps of the top layer.

        y_t = h_t W_yh^T + b_y,   loss_t[t] = sum_b w_tb ell(y_tb, target_tb),  w_tb = mask[t,b] / B
        mse: ell = 0.5 ||y - target||^2,        dL/dy = w (y - target)
        ce:  ell = -log softmax(y)[target],     dL/dy = w (softmax(y) - onehot(target))
        dW_yh += dY^T H,   db_y += sum dY,   G = dY W_yh   (the direct gradient into h_t)
    H (Tc, B, d); target_f (Tc, B', k) for mse, target_i (Tc, B') int64 for ce (the other may be empty),
    mask (Tc, B') float64: their rows b0 .. b0+B-1 are H's (a shard of the batch reads its rows in place);
    Y (Tc, B, k) scratch, ends holding dY; loss_t (Tc,) float64 out; db_y (k,) float64.  ell and the
    softmax are computed in float64; masked steps still count a NaN (w * NaN is NaN), like the reference
    and PyTorch.
    """
    Tc, B, d = H.shape
    k = W_yh.shape[0]
    Y2 = _rows(Y)
    gemm_nt(_rows(H), W_yh, Y2)                                               # (Tc*B, k)
    for s in range(Tc):
        total = 0.0
        for b in range(B):
            y = Y[s, b]                                                   # (k,) becomes dL/dy
            w = mask[s, b0 + b] * inv_B
            wt = Y.dtype.type(w)
            ell = 0.0
            if loss_kind == MSE:
                tgt = target_f[s, b0 + b]
                for j in range(k):
                    diff = (y[j] + b_y[j]) - tgt[j]
                    dd = np.float64(diff)
                    ell += dd * dd
                    y[j] = diff * wt
                    db_y[j] += y[j]
                ell *= 0.5
            else:
                zmax = -np.inf
                for j in range(k):
                    zmax = max(zmax, np.float64(y[j] + b_y[j]))
                sum_exp = 0.0
                for j in range(k):
                    sum_exp += math.exp(np.float64(y[j] + b_y[j]) - zmax)
                lse = zmax + math.log(sum_exp)
                c = target_i[s, b0 + b]
                ell = lse - np.float64(y[c] + b_y[c])
                if zmax != zmax:                                          # NaN logits: a NaN loss
                    ell = zmax
                for j in range(k):
                    p = math.exp(np.float64(y[j] + b_y[j]) - lse)
                    if j == c:
                        p -= 1.0
                    y[j] = Y.dtype.type(p * w)
                    db_y[j] += y[j]
            total += w * ell
        loss_t[s] = total
    gemm_tn_acc(Y2, _rows(H), dW_yh)                                          # += dY^T H
    gemm_nn(Y2, W_yh, _rows(G))                                               # (Tc*B, d) = dY W_yh


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


# ------------------------------------------------------------------------------------------ the steps
@_jit.kernel
def grad_norms(dW_hx0, dW_hxR, dW_hh, db_h, dW_yh, db_y, out):
    """out = the L2 norm of every gradient array, in Params.named() order (3 per layer, then readout)."""
    L = dW_hh.shape[0]
    for l in range(L):
        dW_hx = dW_hx0 if l == 0 else dW_hxR[l - 1]
        out[3 * l] = vector_norm(dW_hx.ravel())
        out[3 * l + 1] = vector_norm(dW_hh[l].ravel())
        out[3 * l + 2] = vector_norm(db_h[l])
    out[3 * L] = vector_norm(dW_yh.ravel())
    out[3 * L + 1] = vector_norm(db_y)


@_jit.helper
def _zero_accumulators(dW_hx0, dW_hxR, dW_hh, dW_yh, db64, dby64, loss_t):
    _fill_zero(dW_hx0.ravel())
    _fill_zero(dW_hxR.ravel())
    _fill_zero(dW_hh.ravel())
    _fill_zero(dW_yh.ravel())
    _fill_zero(db64.ravel())
    _fill_zero(dby64)
    _fill_zero(loss_t)


@_jit.kernel
def rnn_step(x, W_hx0, W_hxR, W_hh, b_h, W_yh, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, act,
             chunk, stage, P_f, P_b, H, Y, G, dZ, dz_carry, dW_hx0, dW_hxR, dW_hh, db_h, dW_yh, db_y, db64, dby64,
             M, loss_t, norms):
    """One forward and backward pass of a stacked RNN with every metric (see the module docstring).

    x (T, B', n), target_f (T, B', k) or target_i (T, B'), mask (T, B'): the whole batch; the pass runs on
    its rows b0 .. b0+B-1 (B = H.shape[2]: a shard, or all of them), read in place;
    W_hx0 (d, n) layer 0, W_hxR (L-1, d, d) layers 1.., W_hh (L, d, d), b_h (L, d);
    inv_B: 1 / the batch size the loss averages over (a shard of a batch holds only some of its examples);
    P_f, P_b (L, ...): each layer's W_hh^T and W_hh packed by ``pack_layers`` (read only: shards share them);
    work: stage (Tc, B, n) a chunk of the shard's rows of x, for the GEMMs that read x (unused, may be
    empty, when the pass runs on all of x's rows), H (L, T, B, d) states, Y (Tc, B, k), G and dZ (Tc, B, d),
    dz_carry (L, B, d);
    out: the gradients (same shapes; db64 (L, d), dby64 (k,) float64 sums), M (L, 3, T) rows h_norm,
    the activation's metric (relu_dead, tanh_sat or sigmoid_sat), grad_h_norm (means over this B);
    loss_t (T,); norms (3L+2,) the gradient norms, or (0,) to skip them (a shard's are not wanted).
    """
    T = x.shape[0]
    L, B = W_hh.shape[0], H.shape[2]
    for l in range(L):
        if l == 0:
            rnn_forward(x, b0, W_hx0, P_f[0], b_h[0], act, stage, H[0], M[0, 0], M[0, 1])
        else:
            rnn_forward(H[l - 1], 0, W_hxR[l - 1], P_f[l], b_h[l], act, stage, H[l], M[l, 0], M[l, 1])
    _zero_accumulators(dW_hx0, dW_hxR, dW_hh, dW_yh, db64, dby64, loss_t)
    t1 = T
    while t1 > 0:
        t0 = max(0, t1 - chunk)
        Tc = t1 - t0
        Gc = G[:Tc]
        readout_loss(H[L - 1, t0:t1], W_yh, b_y, target_f[t0:t1], target_i[t0:t1], mask[t0:t1], b0, loss_kind,
                     inv_B, Y[:Tc], loss_t[t0:t1], dW_yh, dby64, Gc)
        for l in range(L - 1, -1, -1):
            X = _stage(x, t0, t1, b0, B, stage) if l == 0 else H[l - 1, t0:t1]          # (Tc, B, n)
            W_hx = W_hx0 if l == 0 else W_hxR[l - 1]
            dW_hx = dW_hx0 if l == 0 else dW_hxR[l - 1]
            rnn_backward(X, H[l], t0, W_hx, P_b[l], act, Gc, dZ[:Tc], dz_carry[l], t1 < T,
                         dW_hx, dW_hh[l], db64[l], M[l, 2], l > 0)
        t1 = t0
    for l in range(L):
        for j in range(db_h.shape[1]):
            db_h[l, j] = db64[l, j]
    for j in range(db_y.shape[0]):
        db_y[j] = dby64[j]
    if norms.shape[0] > 0:
        grad_norms(dW_hx0, dW_hxR, dW_hh, db_h, dW_yh, db_y, norms)


@_jit.kernel
def lstm_step(x, W_hx0, W_hxR, W_hh, b_h, W_yh, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, chunk,
              stage, P_f, P_b, H, C, A, c_zero, Y, G, dc_carry, dW_hx0, dW_hxR, dW_hh, db_h, dW_yh, db_y, db64,
              dby64, M, loss_t, norms):
    """One forward and backward pass of a stacked LSTM with every metric (see the module docstring).

    As ``rnn_step`` with G = 4 gate blocks: W_hx0 (4d, n), W_hxR (L-1, 4d, d), W_hh (L, 4d, d),
    b_h (L, 4d); work: H, C (L, T, B, d), A (L, T, B, 4d) gates (then dz), c_zero (B, d) zeros,
    dc_carry (L, B, d); M (L, 12, T) rows as LSTM_ROWS.
    """
    T = x.shape[0]
    L, B = W_hh.shape[0], H.shape[2]
    for l in range(L):
        if l == 0:
            lstm_forward(x, b0, W_hx0, P_f[0], b_h[0], stage, A[0], C[0], H[0], c_zero, M[0, 0:10])
        else:
            lstm_forward(H[l - 1], 0, W_hxR[l - 1], P_f[l], b_h[l], stage, A[l], C[l], H[l], c_zero, M[l, 0:10])
    _zero_accumulators(dW_hx0, dW_hxR, dW_hh, dW_yh, db64, dby64, loss_t)
    _fill_zero(dc_carry.ravel())
    t1 = T
    while t1 > 0:
        t0 = max(0, t1 - chunk)
        Tc = t1 - t0
        Gc = G[:Tc]
        readout_loss(H[L - 1, t0:t1], W_yh, b_y, target_f[t0:t1], target_i[t0:t1], mask[t0:t1], b0, loss_kind,
                     inv_B, Y[:Tc], loss_t[t0:t1], dW_yh, dby64, Gc)
        for l in range(L - 1, -1, -1):
            X = _stage(x, t0, t1, b0, B, stage) if l == 0 else H[l - 1, t0:t1]          # (Tc, B, n)
            W_hx = W_hx0 if l == 0 else W_hxR[l - 1]
            dW_hx = dW_hx0 if l == 0 else dW_hxR[l - 1]
            lstm_backward(X, H[l], C[l], A[l], t0, Tc, W_hx, P_b[l], Gc, dc_carry[l], c_zero,
                          dW_hx, dW_hh[l], db64[l], M[l, 10], M[l, 11], l > 0)
        t1 = t0
    for l in range(L):
        for j in range(db_h.shape[1]):
            db_h[l, j] = db64[l, j]
    for j in range(db_y.shape[0]):
        db_y[j] = dby64[j]
    if norms.shape[0] > 0:
        grad_norms(dW_hx0, dW_hxR, dW_hh, db_h, dW_yh, db_y, norms)


# ------------------------------------------------------------------------------------ compiled set
def _array_types(dtype: str):
    f = types.float32 if dtype == "float32" else types.float64
    return tuple(types.Array(f, ndim, "C") for ndim in (1, 2, 3, 4))


def kernel_plan(cell: str, dtype: str) -> list[tuple[str, object, tuple]]:
    """The kernels a (cell, dtype) model runs, with their exact signatures, callees before callers."""
    A1, A2, A3, A4 = _array_types(dtype)
    F1, F2, F3 = (types.Array(types.float64, ndim, "C") for ndim in (1, 2, 3))
    I2 = types.Array(types.int64, 2, "C")
    i64, flag, f64 = types.int64, types.boolean, types.float64
    f = A1.dtype
    plan = [("fill_zero", _fill_zero, (A1,)),
            ("fill_zero", _fill_zero, (F1,)),
            ("rows", _rows, (A3,))]
    plan += [(g.__name__, g, (A2, A2, A2)) for g in GEMMS.values()]
    plan += [("stage", _stage, (A3, i64, i64, i64, i64, A3)), ("project", _project, (A3, i64, A2, A3, A3))]
    plan += [("pack_transposed", pack_transposed, (A2, A3)), ("pack", pack, (A2, A3)),
             ("gemm_packed_acc", gemm_packed_acc, (A2, A3, A2)),
             ("pack_layers", pack_layers, (A3, A4, A4))]
    plan += [("vector_norm", vector_norm, (A1,)),
             ("grad_norms", grad_norms, (A2, A3, A3, A2, A2, A1, F1)),
             ("zero_accumulators", _zero_accumulators, (A2, A3, A3, A2, F2, F1, F1)),
             ("readout_loss", readout_loss, (A3, A2, A1, A3, I2, F2, i64, i64, f64, A3, F1, A2, F1, A3))]
    head = (A3, A2, A3, A3, A2, A2, A1, A3, I2, F2, i64, i64, f64)  # x, weights, targets, mask, b0, loss_kind, inv_B
    grads = (A2, A3, A3, A2, A2, A1, F2, F1, F3, F1, F1)            # dW_hx0 .. norms
    if cell == "rnn":
        plan += [("rnn_forward_row", _rnn_forward_row, (A1, A1, i64, f, f)),
                 ("rnn_backward_row", _rnn_backward_row, (A1, A1, A1, F1, i64)),
                 ("rnn_forward", rnn_forward, (A3, i64, A2, A3, A1, i64, A3, A3, F1, F1)),
                 ("rnn_backward", rnn_backward, (A3, A3, i64, A2, A3, i64, A3, A3, A2, flag, A2, A2, F1, F1,
                                                 flag)),
                 ("rnn_step", rnn_step, head + (i64, i64, A3, A4, A4, A4, A3, A3, A3, A3) + grads)]
    else:
        plan += [("lstm_forward_row", _lstm_forward_row, (A1, A1, A1, A1, A1, F1)),
                 ("lstm_backward_row", _lstm_backward_row, (A1, A1, A1, A1, A1, F1, F1)),
                 ("lstm_forward", lstm_forward, (A3, i64, A2, A3, A1, A3, A3, A3, A3, A2, F2)),
                 ("lstm_backward", lstm_backward, (A3, A3, A3, A3, i64, i64, A2, A3, A3, A2, A2, A2, A2, F1,
                                                   F1, F1, flag)),
                 ("lstm_step", lstm_step, head + (i64, A3, A4, A4, A4, A4, A4, A2, A3, A3, A3) + grads)]
    return plan


_compile_lock = threading.Lock()


def compile_kernels(spec: ModelSpec, progress=None) -> None:
    """Compile, or load from the cache, every kernel ``bptt`` runs for this model's cell and dtype.

    ``progress(done, total, name)`` is called after each kernel.  A cold compile takes seconds (the GUI
    shows "compiling kernels"); a warm cache loads in a fraction of a second.
    """
    plan = kernel_plan(spec.cell, spec.dtype)
    with _compile_lock:
        for done, (name, dispatcher, signature) in enumerate(plan, start=1):
            dispatcher.compile(signature)
            if progress is not None:
                progress(done, len(plan), name)
    # Numba finds SciPy's BLAS on the first call, taking the GIL to import it: do that here, not inside a
    # nogil kernel running in a worker thread.
    one = np.ones((1, 1), spec.np_dtype)
    if gemm_nt(one, one, np.empty((1, 1), spec.np_dtype)) != 0:
        raise RuntimeError("Numba could not call SciPy's BLAS (scipy.linalg.cython_blas); reinstall scipy")


KERNEL_SETS = [(cell, dtype) for dtype in ("float32", "float64") for cell in ("rnn", "lstm")]


def _compile_sets(sets: list[tuple[str, str]]) -> None:
    """Compile the kernel sets of these (cell, dtype) pairs in this process (a worker of ``compile_all``)."""
    for cell, dtype in sets:
        compile_kernels(ModelSpec(cell=cell, dtype=dtype))


def compile_all(jobs: int | None = None) -> None:
    """Compile every kernel of every cell and dtype into the cache, ``jobs`` processes at a time (default:
    one per CPU, at most one per dtype), then load them here.  ``gradscope compile`` (run by
    scripts/install.sh), so that no first run waits for a compile.

    Each process compiles one dtype (both cells).  The dtypes share a single signature (fill_zero on
    float64); should two processes race on its cache index, the load here finds what is missing and
    compiles it (milliseconds), so the cache is whole when this returns.
    """
    dtypes = sorted({dtype for _, dtype in KERNEL_SETS})
    jobs = max(1, min(len(dtypes), os.cpu_count() or 1) if jobs is None else int(jobs))
    if jobs > 1 and _jit.CACHE:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        groups = [[s for s in KERNEL_SETS if s[1] == dtype] for dtype in dtypes]
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_compile_sets, groups))
    _compile_sets(KERNEL_SETS)                    # from the cache now (or compiled here, with one job)


# ------------------------------------------------------------------------------------------- driver
_EMPTY_I2 = np.zeros((0, 0), dtype=np.int64)
_EMPTY_F3 = {"float32": np.zeros((0, 0, 0), np.float32), "float64": np.zeros((0, 0, 0), np.float64)}
_NO_NORMS = np.zeros(0)

MIN_SHARD_ROWS = 8           # examples per shard at least: below, BLAS's small-matrix overheads dominate
MIN_SHARD_FLOPS = 2e7        # a pass with fewer FLOPs runs whole (handing a shard to a thread costs ~50 us)


def chunk_steps(T: int, B: int) -> int:
    """Steps per backward chunk: about CHUNK_ROWS (t, b) rows, at least 1, at most T."""
    return max(1, min(T, -(-CHUNK_ROWS // B)))


def pass_flops(spec: ModelSpec, T: int, B: int) -> float:
    """Multiply-adds x 2 of a pass's matrix products (forward, recurrence both ways, weight gradients)."""
    G, d, k = spec.gates, spec.hidden_size, spec.output_size
    per_row = sum(3 * G * d * (spec.layer_input_size(l) + d) for l in range(spec.layers)) + 3 * d * k
    return 2.0 * T * B * per_row


# ------------------------------------------------------------------------------------- threads
def default_threads() -> int:
    """Threads a pass may use unless told: Numba's setting (NUMBA_NUM_THREADS; by default every CPU)."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


_kernel_blas = None          # threadpoolctl's controllers of the kernels' BLAS, looked up once


def kernel_blas_controllers() -> list:
    """threadpoolctl's handles on the BLAS library the kernels call: SciPy's (Numba calls it through
    scipy.linalg.cython_blas), told from NumPy's by the folder it was loaded from; every BLAS library if
    none is SciPy's own (a system install where both share one).  Empty without threadpoolctl."""
    global _kernel_blas
    if _kernel_blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        except Exception:  # no threadpoolctl, or a library it cannot handle  # noqa: BLE001
            blas = []
        scipy_own = [lib for lib in blas if "scipy" in os.path.basename(os.path.dirname(str(lib.filepath)))]
        _kernel_blas = scipy_own or blas
    return _kernel_blas


def kernel_blas_threads() -> int:
    """Threads of the BLAS library the kernels call, as set now (1 if it cannot be told).

    GradScope sets it to 1 (gradscope/__init__.py).  A user who raises it gets parallel GEMMs instead of
    shards, not both: two shards each waking a pool of busy-waiting BLAS threads would fight for the cores.
    """
    try:
        return max([1] + [int(lib.num_threads) for lib in kernel_blas_controllers()])
    except Exception:  # noqa: BLE001
        return 1


def default_shards() -> int:
    """Shards a big enough pass splits its batch into unless told: the machine's CPUs (at most 8).

    A property of the machine, never of how many threads happen to run the pass (threads only decide
    which shards run concurrently), so a run gives the same bits in the app, in ``gradscope run`` and
    in a worker process of either."""
    return max(1, min(8, os.cpu_count() or 1))


def shard_rows(spec: ModelSpec, T: int, B: int, shards: int | None = None) -> list[tuple[int, int]]:
    """How a pass splits its batch: [(b0, b1), ...], as many shards as asked (``default_shards()``).

    Examples never interact in BPTT: each shard runs the whole pass on its rows, with the loss weighted by
    the WHOLE batch's 1/B, and the shards' gradients and per-step sums add up to the batch's.  One shard
    (the whole batch) when ``shards`` is 1, when a shard would hold fewer than MIN_SHARD_ROWS examples, or
    when the pass is too small to gain from threads (MIN_SHARD_FLOPS).  The split depends only on these
    numbers, so the same settings give bit-identical results whatever the threads that compute them.
    """
    shards = default_shards() if shards is None else max(1, int(shards))
    shards = min(shards, B // MIN_SHARD_ROWS)
    if shards <= 1 or pass_flops(spec, T, B) < MIN_SHARD_FLOPS:
        return [(0, B)]
    bounds = [B * s // shards for s in range(shards + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


_pool = None
_pool_lock = threading.Lock()


def _executor():
    """The threads that run the shards a pass does not run in its own thread."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=max(1, default_shards() - 1), thread_name_prefix="gradscope-shard")
        return _pool


def shutdown_threads() -> None:
    """End the shard threads (idle between passes); the next threaded pass starts new ones.  For programs
    that tear down in order (the app, before its QApplication goes)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)


# ------------------------------------------------------------------------------------- buffers
def _work_buffers(spec: ModelSpec, T: int, B: int, chunk: int) -> dict:
    """What a step needs besides its inputs, weights and outputs: states (what BPTT must keep) and chunk
    buffers; one set per shard."""
    L, d, k, G = spec.layers, spec.hidden_size, spec.output_size, spec.gates
    dt = spec.np_dtype
    buf = {"H": np.empty((L, T, B, d), dt),                                 # states h_t, every layer
           "Y": np.empty((chunk, B, k), dt),                                # readout of a chunk, then dY
           "G": np.empty((chunk, B, d), dt),                                # direct, then total dL/dh
           "carry": np.zeros((L, B, d), dt),                                # dz_{t+1} (rnn), dc f (lstm)
           "db64": np.empty((L, G * d), np.float64),
           "dby64": np.empty(k, np.float64)}
    if spec.cell == "lstm":
        buf["C"] = np.empty((L, T, B, d), dt)                               # cell states c_t
        buf["A"] = np.empty((L, T, B, 4 * d), dt)                           # gates i, f, g, o, then dz
        buf["c_zero"] = np.zeros((B, d), dt)                                # c_{-1}
    else:
        buf["dZ"] = np.empty((chunk, B, d), dt)                             # dz_t of a chunk
    return buf


def _stack_buffers(spec: ModelSpec) -> dict:
    """Room for the weights as the step kernels take them: layers 1.. stacked, and packed W_hh (one set,
    shared by the shards)."""
    L, d, G = spec.layers, spec.hidden_size, spec.gates
    dt = spec.np_dtype
    return {"W_hxR": np.empty((L - 1, G * d, d), dt),                          # layers 1.. (none when L = 1)
            "W_hh": np.empty((L, G * d, d), dt),
            "b_h": np.empty((L, G * d), dt),
            "P_f": np.stack([panels(d, G * d, dt)] * L),                     # W_hh^T (d, Gd) packed, per layer
            "P_b": np.stack([panels(G * d, d, dt)] * L)}                     # W_hh (Gd, d) packed


def _shard_buffers(spec: ModelSpec, T: int, B: int, n: int, chunk: int, first: bool) -> dict:
    """A shard's work buffers and a chunk of its rows of x (``stage``; the shard reads x, the targets and
    the mask in place); the shards after the first also get their own gradients and metrics (summed into
    the first's, which are the pass's outputs)."""
    L = spec.layers
    buf = _work_buffers(spec, T, B, chunk)
    buf["stage"] = np.empty((chunk, B, n), spec.np_dtype)                      # (Tc, B_s, n)
    if not first:
        buf.update(grads=_new_grads(spec, n),
                   M=np.full((L, 12 if spec.cell == "lstm" else 3, T), np.nan),     # (L, metric, T)
                   loss_t=np.empty(T))
    return buf


def _new_grads(spec: ModelSpec, n: int) -> tuple:
    """dW_hx0 (Gd, n), dW_hxR (L-1, Gd, d), dW_hh (L, Gd, d), db_h (L, Gd), dW_yh (k, d), db_y (k,)."""
    L, d, k, G = spec.layers, spec.hidden_size, spec.output_size, spec.gates
    dt = spec.np_dtype
    return (np.empty((G * d, n), dt), np.empty((L - 1, G * d, d), dt), np.empty((L, G * d, d), dt),
            np.empty((L, G * d), dt), np.empty((k, d), dt), np.empty(k, dt))


def _stack(params: Params, buf: dict, L: int):
    """W_hxR (L-1, Gd, d), W_hh (L, Gd, d), b_h (L, Gd): views when L = 1 (W_hxR empty), else copied into
    buf (``_stack_buffers``)."""
    layers = params.layers
    if L == 1:
        p = layers[0]
        return buf["W_hxR"], np.ascontiguousarray(p.W_hh)[None], np.ascontiguousarray(p.b_h)[None]
    W_hxR, W_hh, b_h = buf["W_hxR"], buf["W_hh"], buf["b_h"]
    for l, p in enumerate(layers):
        if l > 0:
            W_hxR[l - 1] = p.W_hx
        W_hh[l] = p.W_hh
        b_h[l] = p.b_h
    return W_hxR, W_hh, b_h


def _run_step(spec: ModelSpec, weights: tuple, packed: tuple, x, target_f, target_i, mask, b0: int,
              loss_kind: str, inv_B: float, chunk: int, buf: dict, grads: tuple, M, loss_t, norms) -> None:
    """One call of the step kernel (nogil) on a batch, or on its rows b0 .. (a shard), with its buffers;
    packed: (P_f, P_b), ``pack_layers`` of the weights' W_hh."""
    W_hx0, W_hxR, W_hh, b_h, W_yh, b_y = weights
    P_f, P_b = packed
    stage = buf.get("stage", _EMPTY_F3[spec.dtype])
    if spec.cell == "lstm":
        lstm_step(x, W_hx0, W_hxR, W_hh, b_h, W_yh, b_y, target_f, target_i, mask, b0, LOSS_CODES[loss_kind],
                  inv_B, chunk, stage, P_f, P_b, buf["H"], buf["C"], buf["A"], buf["c_zero"], buf["Y"],
                  buf["G"], buf["carry"], *grads, buf["db64"], buf["dby64"], M, loss_t, norms)
    else:
        rnn_step(x, W_hx0, W_hxR, W_hh, b_h, W_yh, b_y, target_f, target_i, mask, b0, LOSS_CODES[loss_kind],
                 inv_B, ACTIVATION_CODES[spec.activation], chunk, stage, P_f, P_b, buf["H"], buf["Y"],
                 buf["G"], buf["dZ"], buf["carry"], *grads, buf["db64"], buf["dby64"], M, loss_t, norms)


def _run_shards(spec: ModelSpec, weights: tuple, packed: tuple, x, target_f, target_i, mask, loss_kind: str,
                Tc: int, rows: list, shards: list, grads: tuple, M, loss_t, threads: int) -> None:
    """Run every shard on its rows of the batch (read in place), ``threads`` at a time (thread w runs shards
    w, w + threads, ...; thread 0 is this one, the others come from the pool), then add their results up in
    shard order, into the first shard's, which are the outputs:

        dW = sum_s dW_s,   loss_t = sum_s loss_t_s,   M = sum_s (B_s / B) M_s   (M_s: means over shard s)

    The bias gradients are added from the shards' float64 sums and rounded once."""
    B = x.shape[1]
    inv_B = 1.0 / B
    outputs = [(grads, M, loss_t)] + [(buf["grads"], buf["M"], buf["loss_t"]) for buf in shards[1:]]
    work = list(zip(rows, shards, outputs))

    def run_every(group):
        for (b0, _), buf, (g, m, lt) in group:
            _run_step(spec, weights, packed, x, target_f, target_i, mask, b0, loss_kind, inv_B, Tc, buf, g, m, lt,
                      _NO_NORMS)

    threads = max(1, min(threads, len(shards)))
    pending = [_executor().submit(run_every, work[w::threads]) for w in range(1, threads)]
    try:
        run_every(work[::threads])
    finally:
        for future in pending:                 # every shard ends before its buffers can be touched again
            future.result()
    first, rest = shards[0], shards[1:]
    M *= (rows[0][1] - rows[0][0]) * inv_B
    db64, dby64 = first["db64"].copy(), first["dby64"].copy()
    for (b0, b1), buf in zip(rows[1:], rest):
        for total, part in zip(grads, buf["grads"]):
            total += part
        M += (b1 - b0) * inv_B * buf["M"]
        loss_t += buf["loss_t"]
        db64 += buf["db64"]
        dby64 += buf["dby64"]
    grads[3][...] = db64                      # db_h (L, Gd)
    grads[5][...] = dby64                     # db_y (k,)


def bptt(spec: ModelSpec, params: Params, x: np.ndarray, target: np.ndarray, mask: np.ndarray,
         loss_kind: str, *, workspace: dict | None = None, chunk: int | None = None,
         threads: int | None = None, shards: int | None = None) -> StepResult:
    """One forward and backward pass with every metric, in compiled kernels that release the GIL.

    Arrays are assumed checked (``engine.check_batch``).  ``workspace``: a dict the caller keeps and passes
    back each iteration; the state and chunk buffers live in it and are reused while the shapes stay the
    same, so a steady run allocates only its outputs.  ``chunk``: steps per backward chunk (default:
    ``chunk_steps``).  ``shards``: how many parts of the batch the pass runs on (``shard_rows``; default
    ``default_shards()``); they decide the bits of the result.  ``threads``: how many of them run at once
    (default ``default_threads()``, divided by the threads of the kernels' BLAS if a user gave it more than
    one); they decide only the speed.  The returned arrays are new; nothing returned aliases the workspace.
    """
    T, B, n = x.shape
    L = spec.layers
    dt = spec.np_dtype
    if threads is None:
        threads = default_threads()
    rows = shard_rows(spec, T, B, shards)
    if threads > 1 and len(rows) > 1:
        threads = max(1, threads // kernel_blas_threads())
    # steps per backward chunk: the batch's (each shard's chunk buffers hold its share of the chunk's rows)
    Tc = chunk_steps(T, B) if chunk is None else max(1, min(T, int(chunk)))
    key = (spec, T, B, n, Tc, tuple(rows))
    if workspace is not None and workspace.get("key") == key:
        buf = workspace["buffers"]
    else:
        if len(rows) == 1:
            buf = _work_buffers(spec, T, B, Tc)
        else:
            buf = {"shards": [_shard_buffers(spec, T, b1 - b0, n, Tc, first=s == 0)
                              for s, (b0, b1) in enumerate(rows)]}
        buf.update(_stack_buffers(spec))
        if workspace is not None:
            workspace.clear()
            workspace.update(key=key, buffers=buf)
    weights = (np.ascontiguousarray(params.layers[0].W_hx),) + _stack(params, buf, L) + (
        np.ascontiguousarray(params.W_yh), np.ascontiguousarray(params.b_y))
    grads = _new_grads(spec, n)
    M = np.full((L, 12 if spec.cell == "lstm" else 3, T), np.nan)          # (L, metric, T)
    loss_t = np.empty(T)
    norms = np.empty(3 * L + 2)
    x = np.ascontiguousarray(x, dtype=dt)                                   # the caller's, when they fit
    if loss_kind == "mse":
        target_f, target_i = np.ascontiguousarray(target, dtype=dt), _EMPTY_I2
    else:
        target_f, target_i = _EMPTY_F3[spec.dtype], np.ascontiguousarray(target, dtype=np.int64)
    mask = np.ascontiguousarray(mask, dtype=np.float64)
    packed = (buf["P_f"], buf["P_b"])
    pack_layers(weights[2], *packed)
    if len(rows) == 1:
        _run_step(spec, weights, packed, x, target_f, target_i, mask, 0, loss_kind, 1.0 / B, Tc, buf, grads, M,
                  loss_t, norms)
    else:
        _run_shards(spec, weights, packed, x, target_f, target_i, mask, loss_kind, Tc, rows, buf["shards"], grads,
                    M, loss_t, threads)
        grad_norms(*grads, norms)
    rows_of = LSTM_ROWS if spec.cell == "lstm" else RNN_ROWS
    metrics = {name: M[:, rows_of[name]] for name in step_metric_names(spec)}
    metrics["loss_t"] = loss_t
    dW_hx0, dW_hxR, dW_hh, db_h, dW_yh, db_y = grads
    result_grads = Params([LayerParams(dW_hx0 if l == 0 else dW_hxR[l - 1], dW_hh[l], db_h[l]) for l in range(L)],
                          dW_yh, db_y)
    return StepResult(loss=float(loss_t.sum()), grads=result_grads, metrics=metrics,
                      nonfinite=first_nonfinite(metrics, result_grads, norms),
                      extras={"grad_norms": norms, "shards": len(rows)})
