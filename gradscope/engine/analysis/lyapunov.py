"""Lyapunov exponents of a stream's step map by the QR method (Benettin et al. 1980; Shimada & Nagashima 1979).

Along a trajectory s_t = F(s_{t-1}, x_t), m tangent vectors Q (D, m) are carried forward and
re-orthonormalised at every step:

    J_t Q_{t-1} = Q_t R_t   (thin QR, R_t upper triangular)       lambda_i = (1/steps) sum_t ln |R_t[i, i]|

over the measured steps, after ``warmup`` steps whose R are discarded (they align Q with the growing
directions).  In float64, in nats per step, averaged over the examples (rows) and sorted descending.
The sum of all D exponents is the volume growth rate, the mean of ln |det J_t| along the same steps.

The thin QR of each step is a Cholesky QR (orthonormal.cholesky_qr: A^T A = R^T R, Q = A R^{-1}, three level-3
BLAS calls on the tangent block in place, 2.5x less time than LAPACK's Householder QR with its explicit Q at
D = m = 256), falling back to Householder on a step whose block is too ill-conditioned for it.  The exponents
agree with a Householder loop's to 1e-8 nats per step (tests/engine/test_analysis_speed.py; the argument is
there); those below ln(eps) + 6 (directions dead ReLU units remove) are rounding in either method.
"""

from __future__ import annotations

import numpy as np

from .maps import take_steps
from .orthonormal import cholesky_qr
from .streams import Stream


def qr_exponents(stream: Stream, m: int, warmup: int) -> np.ndarray:
    """(m,) the first m exponents of ``stream``'s step map, measured over its steps past ``warmup``."""
    T, N, D = stream.S.shape
    if not 1 <= m <= D:
        raise ValueError(f"the number of exponents must be between 1 and the state size {D}, got {m}")
    if not 0 <= warmup < T:
        raise ValueError(f"warmup must leave steps to measure: warmup = {warmup}, steps in all = {T}")
    QT = np.broadcast_to(np.eye(D)[:m], (N, m, D)).copy()  # (N, m, D) Q^T: the tangent vectors as rows
    total = np.zeros((N, m))
    with np.errstate(all="ignore"):
        for t in range(T):
            V = stream.map.jvp(stream.p, take_steps(stream.caches, N, t, t + 1), QT)  # (N, m, D) (J_t Q_{t-1})^T
            log_r = cholesky_qr(V)  # V becomes Q_t^T in place; (N, m) ln |R_t[i, i]|
            if log_r is None:
                return np.full(m, np.nan)  # a NaN or Inf on the trajectory: no exponents, recorded as NaN
            QT = V
            if t >= warmup:
                total += log_r
    return np.sort(np.mean(total, axis=0) / (T - warmup))[::-1]
