"""The QR method's re-orthonormalisation: a Cholesky QR of each tangent block, with a Householder fallback.

For a block A = J_t Q_{t-1} (D, m) of full column rank,

    G = A^T A = R^T R   (Cholesky, R upper triangular with a positive diagonal)      Q = A R^{-1}

is the thin QR (the unique one with diag R > 0).  It costs one syrk, one potrf and one trsm (all level-3 BLAS,
in place on the caller's buffer) instead of LAPACK's Householder geqrf plus orgqr to form Q.

Its rounding: the R_ii are those of A's Gram matrix, so a column whose part orthogonal to the earlier ones is a
fraction r of its length loses about eps / r^2 in R_ii (Householder: eps / r); and Q's orthogonality is off by
about eps cond(A)^2.  Neither accumulates along the trajectory: the next step factors J_{t+1} Q_t whatever Q_t's
small departure from orthogonality, and the product of the R_t is that of the exact chain, so the exponents
change by O(eps cond^2 / steps).  A step is refactored by Householder when its Cholesky fails or
R's diagonal spans more than GRADED (then cond(A)^2 eps could reach 1e-6).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas, lapack

GRADED = 1e5  # max R_ii / min R_ii above which the Gram matrix is too ill-conditioned to trust


def _householder(A: np.ndarray) -> np.ndarray | None:
    """A (D, m) Fortran-ordered, overwritten by Q; returns ln |diag R| (m,), or None if A is not finite."""
    if not np.all(np.isfinite(A)):
        return None
    Q, R = np.linalg.qr(A)
    A[...] = Q
    return np.log(np.abs(np.diagonal(R)))


def cholesky_qr(V: np.ndarray) -> np.ndarray | None:
    """V (N, m, D): per row n, the block A = V[n]^T (the tangent vectors as rows, C order, so V[n].T is A in
    Fortran order with no copy).  Overwrites V[n] with Q^T and returns ln |R_ii| (N, m); None when a block holds
    NaN or Inf (the exponents are then NaN)."""
    N, m, _ = V.shape
    out = np.empty((N, m))
    for n in range(N):
        A = V[n].T  # (D, m) Fortran-ordered view of the caller's memory
        G = blas.dsyrk(1.0, A, trans=1)  # (m, m) upper triangle of A^T A
        R, info = lapack.dpotrf(G, lower=0, overwrite_a=1, clean=0)
        r = np.abs(np.diagonal(R))  # (m,)
        if info == 0 and np.all(np.isfinite(r)) and r.min() * GRADED > r.max():
            Q = blas.dtrsm(1.0, R, A, side=1, lower=0, overwrite_b=1)  # A R^{-1}, in A's memory
            if Q is not A and not np.shares_memory(Q, A):
                A[...] = Q
            out[n] = np.log(r)
            continue
        log_r = _householder(A)
        if log_r is None:
            return None
        out[n] = log_r
    return out
