"""The batched matrix products of the kernels: C = op(A) op(B) (+ C), and the input projection.

Everything that can be batched over steps (x_t W_hx^T for every t, the weight gradients dZ^T X and dZ^T H,
the readout) is one call here: gemm.py's tiles on CPUs with AVX-512, BLAS elsewhere.  The recurrent products
h_{t-1} W_hh^T, which are small and sequential, go through gemm.py's packed tiles directly.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from . import _jit
from .gemm import VECTOR_BYTES, gemm_acc
from .primitives import fill_zero, rows

# The batched products go through gemm.py's tiles on CPUs with AVX-512: there they run at about the core's
# peak, while OpenBLAS's sgemm ran at half of it where its kernel is chosen as Haswell's (OPENBLAS_CORETYPE,
# set on this project's machines: 102 against 206 GFLOP/s for (512, 3200) x (3200, 128), docs/performance.md).
TILED = VECTOR_BYTES == 64

# Numba's own BLAS entry (it calls SciPy's cython_blas sgemm/dgemm), resolved by name, so cached kernels
# that call it stay valid in a new process.  Column-major, Fortran semantics:
#     C (m x n) = alpha op(A) op(B) + beta C
# Without SciPy it would do nothing and return -1: refuse to import instead, with Numba's own message.
ensure_blas()
_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,
        types.char,
        types.char,
        types.intp,
        types.intp,
        types.intp,
        types.voidptr,
        types.voidptr,
        types.intp,
        types.voidptr,
        types.intp,
        types.voidptr,
        types.voidptr,
        types.intp,
    ),
)


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
            fill_zero(C.ravel())
        return 0
    one = C.dtype.type(1)
    kind = ord("s") if C.itemsize == 4 else ord("d")
    return _xxgemm(
        kind,
        ord("t") if trans_b else ord("n"),
        ord("t") if trans_a else ord("n"),
        n,
        m,
        k,
        _stack_pointer(one),
        B.ctypes,
        max(1, B.strides[0] // B.itemsize),
        A.ctypes,
        max(1, A.strides[0] // A.itemsize),
        _stack_pointer(one if beta else one - one),
        C.ctypes,
        max(1, C.strides[0] // C.itemsize),
    )


@_jit.inline
def _product(trans_a, trans_b, A, B, beta, C):
    """C = op(A) op(B) + beta C (beta 0 or 1), row-major arrays (C with unit columns, as every caller's): gemm.py's
    tiles where they are the faster (AVX-512), else BLAS.  Returns 0, or BLAS's status."""
    if not TILED:
        return _gemm(trans_a, trans_b, A, B, beta, C)
    gemm_acc(A, trans_a, B, trans_b, C, beta)
    return 0


@_jit.kernel
def gemm_nt(A, B, C):
    """C = A B^T."""
    return _product(False, True, A, B, False, C)


@_jit.kernel
def gemm_nn(A, B, C):
    """C = A B."""
    return _product(False, False, A, B, False, C)


@_jit.kernel
def gemm_tn_acc(A, B, C):
    """C += A^T B."""
    return _product(True, False, A, B, True, C)


GEMMS = {(False, True, False): gemm_nt, (False, False, False): gemm_nn, (True, False, True): gemm_tn_acc}


# ------------------------------------------------------------------------- the input projection
@_jit.helper
def stage_rows(x, t0, t1, b0, B, stage):
    """Rows b0 .. b0+B-1 of steps t0 .. t1-1 of x (T, B', n) as a C-contiguous (t1-t0, B, n) array: the
    view x[t0:t1] when they are all of x's rows, else a copy in stage (at least t1-t0, B, n).  A GEMM reads
    a block of (t, b) rows as one (rows, n) matrix; a shard's rows of one step are contiguous in x, of
    several steps they are not."""
    if b0 == 0 and B == x.shape[1]:
        return x[t0:t1]
    out = stage[: t1 - t0]
    n = x.shape[2]
    for s in range(t1 - t0):
        for b in range(B):
            for j in range(n):
                out[s, b, j] = x[t0 + s, b0 + b, j]
    return out


@_jit.helper
def project(X, b0, W_hx, stage, Z):
    """Z (T, B, Gd) = X[:, b0:b0+B] W_hx^T, the input projection of every step: one GEMM over all T*B rows
    when they are all of X's, else a GEMM per block of stage.shape[0] steps staged in ``stage``."""
    T, B = Z.shape[0], Z.shape[1]
    Tc = max(1, T if (b0 == 0 and B == X.shape[1]) else stage.shape[0])
    for t0 in range(0, T, Tc):
        t1 = min(T, t0 + Tc)
        gemm_nt(rows(stage_rows(X, t0, t1, b0, B, stage)), W_hx, rows(Z[t0:t1]))


PROJECTION_BYTES = 256 * 1024  # the input projections a forward computes ahead of its steps


@_jit.inline
def project_ahead(X, b0, W_hx, stage, Z, t):
    """At step t of a forward: when t starts a block, Z[t : t+Tb] = the block's x W_hx^T (``project``), for
    Tb steps of about PROJECTION_BYTES of Z's rows.  They are still in L2 when their steps add
    h_{t-1} W_hh^T and the rows read them; all T at once wrote the whole of Z out to memory and read it
    back step by step (13 MB a shard for an LSTM at (32, 200, 64, 256))."""
    Tb = max(1, PROJECTION_BYTES // (Z.shape[1] * Z.shape[2] * Z.itemsize))
    if t % Tb == 0:
        project(X[t : t + Tb], b0, W_hx, stage, Z[t : t + Tb])
