"""The products of BPTT: the recurrent ones, C += A M with the weight matrix M packed once per pass, and the
batched ones (gemm_acc, over all steps at once), on the same register tiles.

    forward    Z_t += h_{t-1} W_hh^T      A (B, d),  M = W_hh^T (d, Gd)
    backward   g_t += dz_{t+1} W_hh       A (B, Gd), M = W_hh   (Gd, d)

These run T times per pass on the same M with only B rows (a batch, or a shard of one: 1..64), and BLAS is
poor at them: OpenBLAS packs both operands into its own layout on every call, and its kernels are tuned
for many rows.  Measured on the project's AMD EPYC (Zen 4, AVX-512), one thread, float32, (B, K, N) =
(16, 128, 512): OpenBLAS 52 GFLOP/s, this module 102 GFLOP/s; (32, 512, 2048): 63 against 106
(docs/performance.md).

How: M (K, N) is copied once per pass into panels of NR columns, ``P[p, k, j] = M[k, p*NR + j]`` (zero
beyond column N), so a panel is read front to back.  A tile of MR rows of A times one panel accumulates
MR x NV vectors of LANES values (NR = NV * LANES) in registers over all K, then adds them to C: per k,
NV vector loads of the panel, MR broadcasts of A[i, k] and MR * NV fused multiply-adds.  The tile is written
in LLVM IR (``_tile``) because the vectoriser, given the same loops, keeps the accumulators in memory.
Its sizes follow the vector registers of the CPU Numba compiles for: 32 of 64 bytes with AVX-512 (MR = 8,
NV = 2: 16 accumulators), else 16 (MR = 4, NV = 2).

The batched products (gemm_acc: x_t W_hx^T, dZ^T H, dZ^T X, dZ W_hx and the readout's, thousands of rows)
use the same tile, blocked as BLAS blocks: KC steps of the sum, a block of op(A)'s rows in L2, a block of
op(B)'s columns packed (with vector copies) once per block of the sum; a product that replaces C stores its
first block instead of zeroing C and adding to it.  On this project's Zen 5 with OPENBLAS_CORETYPE=Haswell
(the machine's setting, so OpenBLAS runs its AVX2 kernel), one thread, float32 (2026-12-07):
(512, 3200) x (3200, 128), the LSTM's dW_hh at (32, 100, 32, 128), 206 GFLOP/s against OpenBLAS's 102 (and
175 with OpenBLAS's own AVX-512 kernel, the overrides unset); (3200, 32) x (32, 512), its input projection,
198 against 101 (163).  The blocks and the vector packing took the bidirectional readout's dY^T H, (64, 3200)
x (3200, 256), from 62 to 158-169 GFLOP/s (the packing had cost half its time), and the input projection at
(64, 500, 64, 512), (16000, 64) x (64, 512), from 109-115 to 211 (its A had been read once per panel).

The products are summed in the same precision as BLAS (each multiply-add rounded once), in a different
order; NaN and Inf propagate as in any sum of products.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding as llvm_binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _jit
from .primitives import fill_zero


def _vector_bytes() -> int:
    """Width of the CPU's vector registers, as Numba will compile for it (host CPU unless configured)."""
    if numba.config.CPU_NAME and numba.config.CPU_NAME != "host":
        features = numba.config.CPU_FEATURES or ""
        return 64 if "+avx512f" in features else 32 if "+avx" in features else 16
    host = llvm_binding.get_host_cpu_features()
    return 64 if host.get("avx512f") else 32 if host.get("avx") else 16


VECTOR_BYTES = _vector_bytes()
NV = 2  # vectors per tile row
MR = 8 if VECTOR_BYTES == 64 else 4  # rows per tile: MR * NV accumulators + NV panel vectors fit


def panel_width(dtype) -> int:
    """NR, the columns of a panel, for float32 or float64."""
    return NV * VECTOR_BYTES // np.dtype(dtype).itemsize


def _lanes(dtype) -> int:
    return VECTOR_BYTES // (4 if dtype == types.float32 else 8)


def _make_tile(rows: int, strided: bool = False, overwrite: bool = False):
    """The LLVM IR tile for ``rows`` rows of A (rows = MR, or 1 for leftover rows).

    _tile(A, a0, lda, mr, P, p0, C, c0, ldc, K, nc):
        acc[i, j] = sum_{k < K} A[a0 + i' lda + k] P[p0 + k NR + j]   for i < rows, j < NR, i' = min(i, mr-1)
        C[c0 + i ldc + j] += acc[i, j]                               for i < mr, j < nc
    Offsets and strides count elements.  Rows from mr on repeat row mr-1 (valid memory) and are not stored,
    so one tile serves 1..rows rows; nc < NR (a panel past the last column of C) adds through a buffer on
    the stack, one value at a time.
    ``strided``: the tile takes one more argument after lda, ``ak``, the step between A's columns, and reads
    A[a0 + i' lda + k ak]: with lda = 1 and ak = a row's length it reads A^T without a copy (gemm_acc).
    ``overwrite``: C[c0 + i ldc + j] = acc[i, j] instead (the first block of a product that replaces C, which
    then is neither zeroed nor read: for the input projection, C is the largest array the product touches).
    """
    n_args = 12 if strided else 11

    def typer(typingctx, *argtypes):
        A, P, C = argtypes[0], argtypes[n_args - 7], argtypes[n_args - 5]
        if not (
            isinstance(A, types.Array) and A.dtype in (types.float32, types.float64) and A.dtype == P.dtype == C.dtype
        ):
            return None
        return types.void(*argtypes), codegen

    def codegen(context, builder, signature, args):
        sig_args = list(signature.args)
        if strided:  # (A, a0, lda, ak, mr, ...): take ak out, the rest is the plain tile's argument list
            ak = context.cast(builder, args[3], sig_args[3], types.int64)
            args, sig_args = list(args[:3]) + list(args[4:]), sig_args[:3] + sig_args[4:]
        A = sig_args[0]
        lanes = _lanes(A.dtype)
        a, p, c = args[0], args[4], args[6]
        a0, lda, mr, p0, c0, ldc, K, nc = (
            context.cast(builder, args[i], sig_args[i], types.int64) for i in (1, 2, 3, 5, 7, 8, 9, 10)
        )
        i64 = ir.IntType(64)
        align = A.dtype.bitwidth // 8
        fl = context.get_value_type(A.dtype)
        vec = ir.VectorType(fl, lanes)
        NR = NV * lanes
        pa = builder.gep(context.make_array(sig_args[0])(context, builder, a).data, [a0])
        pp = builder.gep(context.make_array(sig_args[4])(context, builder, p).data, [p0])
        pc = builder.gep(context.make_array(sig_args[6])(context, builder, c).data, [c0])
        fma = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vec, [vec] * 3),
            f"llvm.fma.v{lanes}{'f32' if A.dtype == types.float32 else 'f64'}",
        )
        zero = ir.Constant(vec, [0.0] * lanes)
        broadcast = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        last = builder.sub(mr, ir.Constant(i64, 1))
        row_ptrs = []
        for i in range(rows):  # rows past mr-1 read row mr-1
            r = ir.Constant(i64, i)
            r = builder.select(builder.icmp_signed("<", r, mr), r, last)
            row_ptrs.append(builder.gep(pa, [builder.mul(r, lda)]))
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(NV)] for _ in range(rows)]
        with cgutils.for_range(builder, K) as loop:
            k = loop.index
            panel = builder.gep(pp, [builder.mul(k, ir.Constant(i64, NR))])
            w = [
                builder.load(
                    builder.bitcast(builder.gep(panel, [ir.Constant(i64, q * lanes)]), vec.as_pointer()), align=align
                )
                for q in range(NV)
            ]
            column = builder.mul(k, ak) if strided else k  # A's column k
            for i in range(rows):
                value = builder.load(builder.gep(row_ptrs[i], [column]))
                splat = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(ir.IntType(32), 0)),
                    ir.Constant(vec, ir.Undefined),
                    broadcast,
                )
                for q in range(NV):
                    builder.store(builder.call(fma, [splat, w[q], builder.load(acc[i][q])]), acc[i][q])
        spill = cgutils.alloca_once(builder, vec, size=NV)  # a row of accumulators, for nc < NR
        whole = builder.icmp_signed(">=", nc, ir.Constant(i64, NR))
        for i in range(rows):
            with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, i), mr), likely=True):
                row = builder.gep(pc, [builder.mul(ir.Constant(i64, i), ldc)])
                with builder.if_else(whole, likely=True) as (vector_store, partial_store):
                    with vector_store:
                        for q in range(NV):
                            ptr = builder.bitcast(builder.gep(row, [ir.Constant(i64, q * lanes)]), vec.as_pointer())
                            total = builder.load(acc[i][q])
                            if not overwrite:
                                total = builder.fadd(builder.load(ptr, align=align), total)
                            builder.store(total, ptr, align=align)
                    with partial_store:
                        for q in range(NV):
                            builder.store(builder.load(acc[i][q]), builder.gep(spill, [ir.Constant(i64, q)]))
                        values = builder.bitcast(spill, fl.as_pointer())
                        with cgutils.for_range(builder, nc) as cols:
                            ptr = builder.gep(row, [cols.index])
                            total = builder.load(builder.gep(values, [cols.index]))
                            if not overwrite:
                                total = builder.fadd(builder.load(ptr), total)
                            builder.store(total, ptr)
        return context.get_dummy_value()

    def _tile_strided(typingctx, A, a0, lda, ak, mr, P, p0, C, c0, ldc, K, nc):
        return typer(typingctx, A, a0, lda, ak, mr, P, p0, C, c0, ldc, K, nc)

    def _tile(typingctx, A, a0, lda, mr, P, p0, C, c0, ldc, K, nc):
        return typer(typingctx, A, a0, lda, mr, P, p0, C, c0, ldc, K, nc)

    return intrinsic(_tile_strided if strided else _tile)


_tile = _make_tile(MR)
_tile_strided = _make_tile(MR, strided=True)
_tile_strided_store = _make_tile(MR, strided=True, overwrite=True)
_tile_1 = _make_tile(1)


@_jit.helper
def pack_transposed(W, P):
    """P[p, k, j] = W[p NR + j, k], 0 beyond the rows of W: the panels of W^T (W (N, K) -> P (ceil(N/NR), K, NR))."""
    N, K = W.shape
    NP, _, NR = P.shape
    zero = P.dtype.type(0)
    for p in range(NP):
        for j in range(NR):
            row = p * NR + j
            if row < N:
                for k in range(K):
                    P[p, k, j] = W[row, k]
            else:
                for k in range(K):
                    P[p, k, j] = zero


@_jit.helper
def pack(W, P):
    """P[p, k, j] = W[k, p NR + j], 0 beyond the columns of W: the panels of W (W (K, N) -> P (ceil(N/NR), K, NR))."""
    K, N = W.shape
    NP, _, NR = P.shape
    zero = P.dtype.type(0)
    for p in range(NP):
        for k in range(K):
            for j in range(NR):
                col = p * NR + j
                P[p, k, j] = W[k, col] if col < N else zero


@_jit.helper
def gemm_packed_acc(A, P, C):
    """C += A M for A (m, K) and C (m, N) with rows of any stride (unit columns), M (K, N) packed as P.

    Tiles of MR rows (the last one partly filled; a single row uses a one-row tile) by one panel (the last
    one possibly past column N).
    """
    m, K = A.shape
    N = C.shape[1]
    NR = P.shape[2]
    lda = A.strides[0] // A.itemsize
    ldc = C.strides[0] // C.itemsize
    for p in range(P.shape[0]):
        nc = min(NR, N - p * NR)
        i0 = 0
        while i0 < m:
            mr = min(MR, m - i0)
            if mr == 1:
                _tile_1(A, i0 * lda, lda, 1, P, p * K * NR, C, i0 * ldc + p * NR, ldc, K, nc)
            else:
                _tile(A, i0 * lda, lda, mr, P, p * K * NR, C, i0 * ldc + p * NR, ldc, K, nc)
            i0 += mr


# ------------------------------------------------------------------ the batched products, C += op(A) op(B)
KC = 256  # steps of the sum per block: a packed panel of B (KC x NR) stays in L1 while every tile reads it
# Bytes of op(A) rows (MC x kc) and of packed op(B) columns (kc x NC) kept in L2 at once: every panel of the
# B block reads the same A block, and every A block the same B block, so each operand crosses from memory
# once per block of the sum instead of once per panel (the A of the input projection at (64, 500, 64, 512),
# 16,000 x 64, was read 16 times) and the panels are packed once per block of the sum.
A_BLOCK_BYTES = 256 * 1024
B_BLOCK_BYTES = 512 * 1024


@intrinsic
def _copy_panel_rows(typingctx, B, b0, ldb, kc, S, s0):
    """S[s0 + k NR + j] = B[b0 + k ldb + j] for k < kc, j < NR: whole rows of a panel, NV vector loads and
    stores each (the element-wise loop ran at ~1 value per ns, and packing H dominated dY^T H)."""
    if not (isinstance(B, types.Array) and B.dtype in (types.float32, types.float64) and B.dtype == S.dtype):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        lanes = _lanes(sig[0].dtype)
        i64 = ir.IntType(64)
        vec = ir.VectorType(context.get_value_type(sig[0].dtype), lanes)
        align = sig[0].dtype.bitwidth // 8
        b0, ldb, kc, s0 = (context.cast(builder, args[i], sig[i], types.int64) for i in (1, 2, 3, 5))
        pb = builder.gep(context.make_array(sig[0])(context, builder, args[0]).data, [b0])
        ps = builder.gep(context.make_array(sig[4])(context, builder, args[4]).data, [s0])
        with cgutils.for_range(builder, kc) as loop:
            src = builder.gep(pb, [builder.mul(loop.index, ldb)])
            dst = builder.gep(ps, [builder.mul(loop.index, ir.Constant(i64, NV * lanes))])
            for q in range(NV):
                at = [ir.Constant(i64, q * lanes)]
                value = builder.load(builder.bitcast(builder.gep(src, at), vec.as_pointer()), align=align)
                builder.store(value, builder.bitcast(builder.gep(dst, at), vec.as_pointer()), align=align)
        return context.get_dummy_value()

    return types.void(B, b0, ldb, kc, S, s0), codegen


@_jit.helper
def _pack_block(B, trans_b, k0, kc, j0, S):
    """S[k, j] = op(B)[k0 + k, j0 + j] for k < kc and j < NR (0 beyond op(B)'s columns); op(B) = B^T when trans_b."""
    NR = S.shape[1]
    N = B.shape[0] if trans_b else B.shape[1]
    nc = min(NR, N - j0)
    zero = S.dtype.type(0)
    if trans_b:
        for j in range(nc):  # along B's rows: read contiguously, write with a stride of NR
            for k in range(kc):
                S[k, j] = B[j0 + j, k0 + k]
    elif nc == NR and B.strides[1] == B.itemsize:  # whole rows of the panel, contiguous in B
        ldb = B.strides[0] // B.itemsize
        _copy_panel_rows(B, k0 * ldb + j0, ldb, kc, S, 0)
        return
    else:
        for k in range(kc):
            for j in range(nc):
                S[k, j] = B[k0 + k, j0 + j]
    for k in range(kc):
        for j in range(nc, NR):
            S[k, j] = zero


@_jit.inline
def gemm_acc(A, trans_a, B, trans_b, C, beta):
    """C = op(A) op(B) + beta C (beta True or False) for row-major 2-D arrays (C with unit columns), op(M) = M^T
    when trans_*.

    The products that BPTT batches over all steps (x_t W_hx^T, dZ^T H, dZ^T X, dZ W_hx, the readout's): the
    same tiles as the recurrent products, blocked as BLAS blocks them.  For each block of KC steps of the
    sum, a block of op(B)'s columns (B_BLOCK_BYTES) is packed into panels (KC x NR each, in L1 while it is
    read); for each block of op(A)'s rows (A_BLOCK_BYTES, in L2), every panel is read by every tile of MR rows.
    op(A) is read where it lies: A^T through the strided tile (each step reads MR neighbouring values of
    one row of A).  Each block's partial sums are added to C (the first block's stored, when not beta), so a
    sum over K steps is rounded as BLAS rounds its own blocked sums, and the same whatever the blocks of rows
    and columns.
    """
    m, N = C.shape
    K = A.shape[0] if trans_a else A.shape[1]
    step_i = A.strides[1] // A.itemsize if trans_a else A.strides[0] // A.itemsize  # between rows of op(A)
    step_k = A.strides[0] // A.itemsize if trans_a else A.strides[1] // A.itemsize  # between its columns
    ldc = C.strides[0] // C.itemsize
    NR = NV * VECTOR_BYTES // C.itemsize
    KB = min(KC, max(K, 1))
    per_row = KB * C.itemsize  # bytes of one row of op(A) (one column of op(B)) in a block of the sum
    mc = max(MR, A_BLOCK_BYTES // per_row // MR * MR)  # rows of op(A) per block
    nb = max(NR, B_BLOCK_BYTES // per_row // NR * NR)  # columns of op(B) per packed block
    S = np.empty((-(-min(nb, N) // NR), KB, NR), C.dtype)  # the packed panels of one block of op(B)
    if K == 0 and not beta:
        for i in range(m):
            fill_zero(C[i])
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        for jb in range(0, N, nb):
            panels = -(-min(nb, N - jb) // NR)
            for p in range(panels):
                _pack_block(B, trans_b, k0, kc, jb + p * NR, S[p])
            for ib in range(0, m, mc):
                ie = min(m, ib + mc)
                for p in range(panels):
                    j0 = jb + p * NR
                    nc = min(NR, N - j0)
                    i0 = ib
                    while i0 < ie:
                        mr = min(MR, ie - i0)
                        a0 = i0 * step_i + k0 * step_k
                        c0, p0 = i0 * ldc + j0, p * KB * NR
                        if k0 == 0 and not beta:
                            _tile_strided_store(A, a0, step_i, step_k, mr, S, p0, C, c0, ldc, kc, nc)
                        else:
                            _tile_strided(A, a0, step_i, step_k, mr, S, p0, C, c0, ldc, kc, nc)
                        i0 += mr


def panels(K: int, N: int, dtype) -> np.ndarray:
    """An empty packed matrix for a (K, N) operand: (ceil(N/NR), K, NR)."""
    NR = panel_width(dtype)
    return np.empty((-(-N // NR), K, NR), dtype)
