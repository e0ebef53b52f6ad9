"""The readout and the loss of a chunk of steps, with their gradients (the top of every backward pass).

    y_t = h_t W_yh^T + b_y       L = (1/B) sum_{t,b} mask[t,b] ell(y_tb, target_tb)
    mse: ell = 0.5 ||y - target||^2          ce: ell = -log softmax(y)[target]

NumPy twin: reference.readout_loss and reference.readout_backward.
"""

from __future__ import annotations

import math

import numpy as np

from . import _jit
from .blas import gemm_nn, gemm_nt, gemm_tn_acc
from .primitives import rows

MSE, CE = 0, 1
LOSS_CODES = {"mse": MSE, "ce": CE}


@_jit.helper
def loss_rows(Y, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, loss_t, db_y):
    """The loss of Tc steps from their logits without the bias, Y (Tc, B, k), which end holding dL/dy:

        loss_t[t] = sum_b w_tb ell(y_tb + b_y, target_tb),  w_tb = mask[t,b] / B,   db_y += sum dY
    target_f (Tc, B', k) for mse, target_i (Tc, B') int64 for ce (the other may be empty), mask (Tc, B')
    float64: their rows b0 .. b0+B-1 are Y's; loss_t (Tc,) float64 out; db_y (k,) float64.  ell and the
    softmax are computed in float64; masked steps still count a NaN (w * NaN is NaN), like the reference
    and PyTorch.
    """
    Tc, B, k = Y.shape
    for s in range(Tc):
        total = 0.0
        for b in range(B):
            y = Y[s, b]  # (k,) becomes dL/dy
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
                if zmax != zmax:  # NaN logits: a NaN loss
                    ell = zmax
                for j in range(k):
                    p = math.exp(np.float64(y[j] + b_y[j]) - lse)
                    if j == c:
                        p -= 1.0
                    y[j] = Y.dtype.type(p * w)
                    db_y[j] += y[j]
            total += w * ell
        loss_t[s] = total


@_jit.kernel
def readout_loss(H, W_yh, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, Y, loss_t, dW_yh, db_y, G):
    """Readout, loss and their gradients for a chunk of steps of the top layer.

        y_t = h_t W_yh^T + b_y,   loss_t[t] = sum_b w_tb ell(y_tb, target_tb),  w_tb = mask[t,b] / B
        mse: ell = 0.5 ||y - target||^2,        dL/dy = w (y - target)
        ce:  ell = -log softmax(y)[target],     dL/dy = w (softmax(y) - onehot(target))
        dW_yh += dY^T H,   db_y += sum dY,   G = dY W_yh   (the direct gradient into h_t)
    H (Tc, B, d); the targets and the mask as ``loss_rows`` takes them; Y (Tc, B, k) scratch, ends holding
    dY; loss_t (Tc,) float64 out; db_y (k,) float64.
    """
    Y2 = rows(Y)
    gemm_nt(rows(H), W_yh, Y2)  # (Tc*B, k)
    loss_rows(Y, b_y, target_f, target_i, mask, b0, loss_kind, inv_B, loss_t, db_y)
    gemm_tn_acc(Y2, rows(H), dW_yh)  # += dY^T H
    gemm_nn(Y2, W_yh, rows(G))  # (Tc*B, d) = dY W_yh
