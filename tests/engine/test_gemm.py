"""The packed recurrent products (gemm.py) against NumPy's matmul: every edge of the tiling (rows past the
last full tile, a single row, columns past the last full panel), rows of a bigger array, both layouts of
the packed operand, and NaN / Inf passing through as in any sum of products."""

import numba
import numpy as np
import pytest

from gradscope.engine import gemm, step as step_kernels
from gradscope.engine.gemm import MR, panel_width, panels


# The gemm functions are compiled into the kernels only (no Python entry points); call them from here.
@numba.njit
def gemm_packed_acc(A, P, C):
    gemm.gemm_packed_acc(A, P, C)


@numba.njit
def pack(W, P):
    gemm.pack(W, P)


@numba.njit
def pack_transposed(W, P):
    gemm.pack_transposed(W, P)


TOL = {"float64": 1e-13, "float32": 2e-6}


def close(got, want, dtype):
    """Rounding of a K-term sum: relative to the sum of |products| (what the rounding scales with)."""
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * np.max(np.abs(want)) * 4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pack_lays_out_panels_and_pads_with_zeros(dtype):
    rng = np.random.default_rng(0)
    NR = panel_width(dtype)
    K, N = 5, NR + 3  # one full panel, one with 3 columns
    M = rng.standard_normal((K, N)).astype(dtype)
    P = panels(K, N, dtype)
    assert P.shape == (2, K, NR)
    pack(M, P)
    np.testing.assert_array_equal(P[0], M[:, :NR])
    np.testing.assert_array_equal(P[1, :, :3], M[:, NR:])
    assert np.all(P[1, :, 3:] == 0)
    Q = panels(K, N, dtype)
    pack_transposed(np.ascontiguousarray(M.T), Q)  # the panels of (M^T)^T = M
    np.testing.assert_array_equal(Q, P)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m", [1, 2, MR - 1, MR, MR + 1, 2 * MR + 3])
@pytest.mark.parametrize("K,N", [(7, 9), (16, 64), (33, 100)])
def test_packed_product_matches_matmul(m, K, N, dtype):
    rng = np.random.default_rng(m * 1000 + K * 10 + N)
    A = rng.standard_normal((m, K)).astype(dtype)
    M = rng.standard_normal((K, N)).astype(dtype)
    C0 = rng.standard_normal((m, N)).astype(dtype)
    P = panels(K, N, dtype)
    pack(M, P)
    C = C0.copy()
    gemm_packed_acc(A, P, C)
    close(C, C0 + A.astype(np.float64) @ M.astype(np.float64), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_recurrent_packing_gives_both_products(dtype):
    """pack_recurrent: P_f multiplies by W_hh^T (forward), P_b by W_hh (backward); rows of a 3-D array."""
    rng = np.random.default_rng(1)
    Gd, d, B = 4 * 11, 11, 5
    W_hh = rng.standard_normal((Gd, d)).astype(dtype)
    P_f, P_b = step_kernels.pack_recurrent(W_hh)
    H = rng.standard_normal((3, B, d)).astype(dtype)
    Z = np.zeros((3, B, Gd), dtype)
    gemm_packed_acc(H[1], P_f, Z[2])
    close(Z[2], H[1].astype(np.float64) @ W_hh.T.astype(np.float64), dtype)
    assert np.all(Z[:2] == 0)  # nothing outside the rows asked for
    G = np.zeros((B, d), dtype)
    gemm_packed_acc(Z[2], P_b, G)
    close(G, Z[2].astype(np.float64) @ W_hh.astype(np.float64), dtype)


def test_nan_and_inf_pass_through_like_a_sum_of_products():
    A = np.ones((3, 4))
    A[1, 2] = np.nan
    A[2, 0] = np.inf
    M = np.ones((4, 5))
    P = panels(4, 5, np.float64)
    pack(M, P)
    C = np.zeros((3, 5))
    gemm_packed_acc(A, P, C)
    np.testing.assert_array_equal(C[0], 4.0)
    assert np.all(np.isnan(C[1])) and np.all(C[2] == np.inf)
    M[0, 1] = 0.0  # inf * 0 = NaN, as in BLAS
    pack(M, P)
    C[:] = 0
    gemm_packed_acc(A, P, C)
    assert np.isnan(C[2, 1]) and C[2, 0] == np.inf
