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

The three calls go to SciPy's BLAS and LAPACK through their C entry points (scipy.linalg.cython_blas and
cython_lapack) by ctypes, which lets go of the GIL for the length of each call; SciPy's Python wrappers
(scipy.linalg.blas.dsyrk, ...) hold it, so a thread running them would stop every other Python thread.  With
the GIL free, the QR method factors one step while another thread computes the next step's products
(lyapunov.py).  Memory: a block is handed over as V (m, D) C-ordered, the tangent vectors as rows, which is
A = V^T (D, m) in Fortran order with leading dimension D; R is kept in an (m, m) buffer read as Fortran.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

GRADED = 1e5  # max R_ii / min R_ii above which the Gram matrix is too ill-conditioned to trust


# ------------------------------------------------------------------------ BLAS and LAPACK, GIL-free
@cache
def _entry(module: str, name: str, arguments: int):
    """SciPy's Fortran-convention routine ``name`` (every argument by pointer, no hidden lengths), callable
    by ctypes: a foreign call through CFUNCTYPE releases the GIL while it runs."""
    from numba.extending import get_cython_function_address

    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * arguments)(get_cython_function_address(module, name))


def _char(c: str):
    return ctypes.byref(ctypes.c_char(c.encode()))


def _int(n: int):
    return ctypes.byref(ctypes.c_int(n))


def _double(x: float):
    return ctypes.byref(ctypes.c_double(x))


def _at(a: np.ndarray, offset: int = 0) -> ctypes.c_void_p:
    """A pointer to element ``offset`` of ``a``'s memory, which BLAS reads as float64 with the leading
    dimension given beside it: anything but a C-contiguous float64 array would be read wrong, so it is refused."""
    if a.dtype != np.float64 or not a.flags.c_contiguous:
        raise ValueError(f"a C-contiguous float64 array is needed, got {a.dtype} with strides {a.strides}")
    return ctypes.c_void_p(a.ctypes.data + 8 * offset)


def gram_cholesky(V: np.ndarray, R: np.ndarray) -> int:
    """R (m, m) := the Cholesky factor of A^T A, A = V^T (D, m) (V (m, D) C-contiguous float64), in R's upper
    triangle read in Fortran order (its other entries are left as they were).  Returns LAPACK's info: 0 when
    the Gram matrix was numerically positive definite."""
    gram_rows(V, R)
    return cholesky(R)


def gram_rows(V: np.ndarray, G: np.ndarray, r0: int = 0, r1: int | None = None, add: bool = False) -> None:
    """G (m, m) := (or += with ``add``) A_rows^T A_rows for rows r0 .. r1-1 of A = V^T (D, m), in G's upper
    triangle read in Fortran order: the Gram matrix of a block whose rows arrive in two parts."""
    m, D = V.shape
    r1 = D if r1 is None else r1
    _entry("scipy.linalg.cython_blas", "dsyrk", 10)(
        _char("U"), _char("T"), _int(m), _int(r1 - r0), _double(1.0), _at(V, r0), _int(D),
        _double(1.0 if add else 0.0), _at(G), _int(m),
    )  # fmt: skip


def cholesky(G: np.ndarray) -> int:
    """G's upper triangle (m, m, Fortran order) := R with R^T R = G; LAPACK's info (0: positive definite)."""
    m, info = len(G), ctypes.c_int(0)
    _entry("scipy.linalg.cython_lapack", "dpotrf", 5)(_char("U"), _int(m), _at(G), _int(m), ctypes.byref(info))
    return info.value


def solve_right(R: np.ndarray, V: np.ndarray, r0: int = 0, r1: int | None = None) -> None:
    """Rows r0 .. r1-1 of A = V^T (D, m) := those rows of A R^{-1}, in V's memory (R as gram_cholesky left it).
    Each row of A R^{-1} depends only on that row, so disjoint row ranges may be solved in parallel."""
    m, D = V.shape
    r1 = D if r1 is None else r1
    if r1 > r0:
        _entry("scipy.linalg.cython_blas", "dtrsm", 11)(
            _char("R"), _char("U"), _char("N"), _char("N"), _int(r1 - r0), _int(m), _double(1.0), _at(R), _int(m),
            _at(V, r0), _int(D),
        )  # fmt: skip


def log_diagonal(R: np.ndarray) -> tuple[np.ndarray, bool]:
    """ln R_ii (m,), and whether the factor can be trusted: finite, and its diagonal spanning at most GRADED."""
    r = np.abs(np.diagonal(R))  # (m,)
    with np.errstate(divide="ignore"):  # R_ii = 0: a direction the step removes (dead ReLU units), ln 0 = -inf
        return np.log(r), bool(np.all(np.isfinite(r)) and r.min() * GRADED > r.max())


def householder(V: np.ndarray) -> np.ndarray | None:
    """V (m, D), A = V^T, overwritten by Q^T of Householder's thin QR; returns ln |diag R| (m,), or None if A
    is not finite."""
    if not np.all(np.isfinite(V)):
        return None
    Q, R = np.linalg.qr(V.T)  # (D, m), (m, m)
    V[...] = Q.T
    with np.errstate(divide="ignore"):  # as in log_diagonal: ln 0 = -inf is a measurement, not an error
        return np.log(np.abs(np.diagonal(R)))


def cholesky_qr(V: np.ndarray) -> np.ndarray | None:
    """V (N, m, D) C-contiguous: per row n, the block A = V[n]^T.  Overwrites V[n] with Q^T and returns
    ln |R_ii| (N, m); None when a block holds NaN or Inf (the exponents are then NaN)."""
    N, m, _ = V.shape
    R, log_r = np.empty((N, m, m)), np.empty((N, m))
    trusted = np.empty(N, dtype=bool)
    for n in range(N):
        info = gram_cholesky(V[n], R[n])
        log_r[n], ok = log_diagonal(R[n])
        trusted[n] = info == 0 and ok
    return log_r if orthonormalise(V, R, log_r, trusted) else None


def orthonormalise(V: np.ndarray, R: np.ndarray, log_r: np.ndarray, trusted: np.ndarray) -> bool:
    """V[n] := Q^T of its block, in place: by R[n] (its Cholesky factor) where ``trusted[n]``, by Householder
    elsewhere (their ln |R_ii| into log_r[n]).  False when a block holds NaN or Inf."""
    for n in range(len(V)):
        if trusted[n]:
            solve_right(R[n], V[n])
            continue
        exact = householder(V[n])
        if exact is None:
            return False
        log_r[n] = exact
    return True
