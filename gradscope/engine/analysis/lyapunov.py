"""Lyapunov exponents of a stream's step map by the QR method (Benettin et al. 1980; Shimada & Nagashima 1979).

Along a trajectory s_t = F(s_{t-1}, x_t), m tangent vectors Q (D, m) are carried forward and
re-orthonormalised at every step:

    J_t Q_{t-1} = Q_t R_t   (thin QR, R_t upper triangular)       lambda_i = (1/steps) sum_t ln |R_t[i, i]|

over the measured steps, after ``warmup`` steps whose R are discarded (they align Q with the growing
directions).  In float64, in nats per step, averaged over the examples (rows) and sorted descending.
The sum of all D exponents is the volume growth rate, the mean of ln |det J_t| along the same steps.
"""

from __future__ import annotations

import numpy as np

from .maps import take_steps
from .streams import Stream


def qr_exponents(stream: Stream, m: int, warmup: int) -> np.ndarray:
    """(m,) the first m exponents of ``stream``'s step map, measured over its steps past ``warmup``."""
    T, N, D = stream.S.shape
    if not 1 <= m <= D:
        raise ValueError(f"the number of exponents must be between 1 and the state size {D}, got {m}")
    if not 0 <= warmup < T:
        raise ValueError(f"warmup must leave steps to measure: warmup = {warmup}, steps in all = {T}")
    Q = np.broadcast_to(np.eye(D)[:, :m], (N, D, m)).copy()  # (N, D, m) orthonormal columns
    total = np.zeros((N, m))
    with np.errstate(all="ignore"):
        for t in range(T):
            V = stream.map.jvp(stream.p, take_steps(stream.caches, N, t, t + 1), np.swapaxes(Q, 1, 2))  # (N, m, D)
            if not np.all(np.isfinite(V)):
                return np.full(m, np.nan)  # a NaN or Inf on the trajectory: no exponents, recorded as NaN
            Q, R = np.linalg.qr(np.swapaxes(V, 1, 2))  # (N, D, m), (N, m, m)
            if t >= warmup:
                total += np.log(np.abs(np.diagonal(R, axis1=1, axis2=2)))
    return np.sort(np.mean(total, axis=0) / (T - warmup))[::-1]
