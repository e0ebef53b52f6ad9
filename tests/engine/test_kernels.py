"""Every Numba kernel against its plain NumPy twin (reference.py), on seeded data with odd sizes and
odd chunk sizes; the workspace; float32 kernels staying float32; compile_kernels covering every call.

Twins and kernels compute the same formulas in different orders, so they agree to rounding: rtol 1e-12
in float64 and 2e-5 in float32 (single-precision sums over a few dozen terms), with an absolute floor
of the same relative size times the largest entry for arrays whose entries can cancel.
"""

import dataclasses

import numba
import numpy as np
import pytest

import gradscope.engine as engine
from gradscope.engine import (
    LayerParams,
    ModelSpec,
    _jit,
    blas,
    bptt,
    driver,
    plan as engine_plan,
    primitives,
    readout,
    reference,
    shards,
    step as step_kernels,
)
from gradscope.engine.cells import cell as describe, gru, lstm, rnn
from gradscope.engine.cells.rnn import ACTIVATION_CODES
from gradscope.engine.readout import LOSS_CODES

from ._helpers import CELL_KINDS, label, make_batch, make_model

DTYPES = ["float64", "float32"]
TOL = {"float64": 1e-12, "float32": 2e-5}


def close(got, want, dtype, name=""):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = np.max(np.abs(want)) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=name)


def close_added(grads, dtype, W_hx, W_hh, b_h):
    """A backward kernel ADDS its weight gradients: each (after, before) pair differs by the twin's."""
    for name, (after, before), want in zip(
        ("dW_hx", "dW_hh", "db_h"), (W_hx, W_hh, b_h), (grads.W_hx, grads.W_hh, grads.b_h)
    ):
        close(after - before, want, dtype, name)


def same_counts(got, want, name=""):
    """Shares of counted pairs: the same counts, up to the rounding of the division."""
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0, err_msg=name)


def rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# --------------------------------------------------------------------------------------------- BLAS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", list(blas.GEMMS), ids=[g.__name__ for g in blas.GEMMS.values()])
def test_gemm_matches_matmul(flags, dtype):
    trans_a, trans_b, beta = flags
    rng = np.random.default_rng(1)
    m, k, n = 5, 7, 3
    A = rand(rng, (k, m) if trans_a else (m, k), dtype)
    Bm = rand(rng, (n, k) if trans_b else (k, n), dtype)
    C0 = rand(rng, (m, n), dtype)
    C = C0.copy()
    assert blas.GEMMS[flags](A, Bm, C) == 0
    want = (A.T if trans_a else A) @ (Bm.T if trans_b else Bm) + (C0 if beta else 0)
    close(C, want, dtype)


def test_gemm_on_rows_of_a_bigger_array_and_empty_inner_dimension():
    rng = np.random.default_rng(2)
    big = rand(rng, (6, 4, 5), "float64")
    W = rand(rng, (3, 5), "float64")
    C = np.zeros((4, 3))
    blas.gemm_nt(big[2], W, C)  # a (4, 5) block in the middle
    close(C, big[2] @ W.T, "float64")
    C[:] = 7.0
    blas.gemm_tn_acc(np.zeros((0, 4)), np.zeros((0, 3)), C)
    assert np.all(C == 7.0)  # k = 0: C += nothing
    blas.gemm_nn(np.zeros((4, 0)), np.zeros((0, 3)), C)
    assert np.all(C == 0.0)


# Sizes at every edge of gemm.gemm_acc's tiling: rows of C around MR, columns around a panel (NR = 32 float32
# or 16 float64 with AVX-512), steps of the sum around a block (KC = 256), rows past a block of op(A) (256
# float32, 128 float64 rows at KC steps) and columns past a packed block of op(B) (512, 256), and the shapes
# BPTT gives them.
TILING_SIZES = [
    (1, 1, 1),
    (7, 3, 5),
    (9, 255, 17),
    (8, 256, 32),
    (17, 257, 33),
    (3, 600, 64),
    (64, 513, 100),
    (300, 256, 40),
    (20, 260, 530),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", TILING_SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("flags", list(blas.GEMMS), ids=[g.__name__ for g in blas.GEMMS.values()])
def test_batched_products_match_matmul_at_every_tiling_edge(flags, size, dtype):
    """C = op(A) op(B) (+ C) against NumPy's matmul in float64 (an independent sum), within the rounding of a
    float32/float64 sum of k products; A and B are strided views (every other row of a bigger array)."""
    trans_a, trans_b, beta = flags
    m, k, n = size
    rng = np.random.default_rng(m * 1000 + k + n)
    a_shape, b_shape = ((k, m) if trans_a else (m, k)), ((n, k) if trans_b else (k, n))
    A = rand(rng, (2 * a_shape[0], a_shape[1]), dtype)[::2]  # rows two apart
    Bm = rand(rng, (2 * b_shape[0], b_shape[1]), dtype)[::2]
    C0 = rand(rng, (m, n), dtype)
    C = C0.copy()
    assert blas.GEMMS[flags](A, Bm, C) == 0
    A64, B64 = A.astype(np.float64), Bm.astype(np.float64)
    want = (A64.T if trans_a else A64) @ (B64.T if trans_b else B64) + (C0 if beta else 0)
    eps = np.finfo(dtype).eps
    scale = np.abs(A64.T if trans_a else A64) @ np.abs(B64.T if trans_b else B64) + np.abs(C0 if beta else 0)
    assert np.all(np.abs(C - want) <= 4 * k * eps * scale + np.finfo(dtype).tiny)


@pytest.mark.parametrize("flags", list(blas.GEMMS), ids=[g.__name__ for g in blas.GEMMS.values()])
def test_batched_products_carry_nan_and_inf_to_exactly_their_row_and_column(flags):
    """One NaN in op(A) and one Inf in op(B) reach exactly the entries of C whose sums contain them."""
    trans_a, trans_b, beta = flags
    rng = np.random.default_rng(5)
    m, k, n = 19, 300, 40
    opA, opB = rand(rng, (m, k), "float32"), np.abs(rand(rng, (k, n), "float32")) + 0.5
    opA[3, 270], opB[10, 37] = np.nan, np.inf  # past the first block of the sum; in the second panel
    opA[:, 10] = np.abs(opA[:, 10]) + 0.5  # rows that meet the Inf do so with a positive weight
    A = np.ascontiguousarray(opA.T) if trans_a else opA
    Bm = np.ascontiguousarray(opB.T) if trans_b else opB
    C = np.zeros((m, n), np.float32)
    blas.GEMMS[flags](A, Bm, C)
    assert np.isnan(C[3]).all()  # a NaN times anything (and NaN + Inf) is NaN
    assert np.isposinf(np.delete(C, 3, axis=0)[:, 37]).all()
    assert np.isfinite(np.delete(np.delete(C, 3, axis=0), 37, axis=1)).all()


def test_vector_norm_matches_numpy_and_never_overflows():
    rng = np.random.default_rng(3)
    v = rng.standard_normal(101)
    assert primitives.vector_norm(v) == pytest.approx(np.linalg.norm(v), rel=1e-14)
    huge = v * 1e200  # sum of squares overflows float64
    assert primitives.vector_norm(huge) == pytest.approx(np.linalg.norm(v) * 1e200, rel=1e-14)
    assert primitives.vector_norm(np.array([1.0, np.inf])) == np.inf
    assert np.isnan(primitives.vector_norm(np.array([1.0, np.nan])))
    assert primitives.vector_norm(v.astype(np.float32)) == pytest.approx(np.linalg.norm(v.astype(np.float32)), rel=1e-7)


NO_STATE = {dt: np.zeros((0, 0), dt) for dt in ("float32", "float64")}  # no initial state given


# -------------------------------------------------------------------------------------------- layers
def _layer(cell, dtype, rng, n, d):
    G = describe(cell).blocks
    b_hh = rand(rng, (G * d,), dtype, 0.3) if describe(cell).has_b_hh else None
    return LayerParams(
        rand(rng, (G * d, n), dtype, 1 / np.sqrt(n)),
        rand(rng, (G * d, d), dtype, 1.2 / np.sqrt(d)),
        rand(rng, (G * d,), dtype, 0.3),
        b_hh,
    )


# Which rows of a batch of B_all examples a layer reads: all of them, or a shard (rows b0 .. b0+2) staged
# a block of Tc_stage steps at a time (3 does not divide T = 7; 7 is all of them; b0 = 0 of a bigger batch).
SHARD_ROWS = [(0, 3, 0), (2, 6, 3), (0, 5, 7), (3, 6, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "linear"])
@pytest.mark.parametrize("b0,B_all,Tc_stage", SHARD_ROWS)
def test_rnn_forward_matches_twin(activation, b0, B_all, Tc_stage, dtype):
    rng = np.random.default_rng(4)
    T, B, n, d = 7, 3, 5, 9
    x = rand(rng, (T, B_all, n), dtype)
    p = _layer("rnn", dtype, rng, n, d)
    H = np.empty((T, B, d), dtype)
    h_norm, act_metric = np.empty(T), np.full(T, -1.0)
    stage = np.full((Tc_stage, B, n), np.nan, dtype)
    rnn.rnn_forward(
        x,
        b0,
        p.W_hx,
        step_kernels.pack_recurrent(p.W_hh)[0],
        p.b_h,
        ACTIVATION_CODES[activation],
        stage,
        H,
        h_norm,
        act_metric,
        NO_STATE[dtype],
        False,
    )
    H_ref, m = reference.rnn_forward(x[:, b0 : b0 + B], p, activation)
    close(H, H_ref, dtype, "H")
    close(h_norm, m["h_norm"], dtype, "h_norm")
    for name in ("relu_dead", "tanh_sat", "sigmoid_sat"):
        if name in m:
            same_counts(act_metric, m[name], name)
    if activation == "linear":
        assert np.all(act_metric == -1.0)  # left untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "linear"])
@pytest.mark.parametrize("t0,Tc", [(0, 11), (4, 7), (0, 4), (3, 1), (5, 5)])
@pytest.mark.parametrize("n", [5, 9])
def test_rnn_backward_chunk_matches_twin(activation, t0, Tc, n, dtype):
    """A chunk of steps t0 .. t0+Tc-1 inside a sequence of T = 11, with carries in and out.  Above layer 0
    (n = d) the kernel also writes the gradient into the layer below over G."""
    rng = np.random.default_rng(5)
    T, B, d = 11, 3, 9
    propagate = n == d
    x = rand(rng, (T, B, n), dtype)
    p = _layer("rnn", dtype, rng, n, d)
    H, _ = reference.rnn_forward(x, p, activation)
    G = rand(rng, (Tc, B, d), dtype)
    has_carry = t0 + Tc < T
    carry = rand(rng, (B, d), dtype) if has_carry else np.zeros((B, d), dtype)
    dW_hx0, dW_hh0, db0 = rand(rng, p.W_hx.shape, dtype), rand(rng, p.W_hh.shape, dtype), rng.standard_normal(d)
    dW_hx, dW_hh, db = dW_hx0.copy(), dW_hh0.copy(), db0.copy()
    G_k, dZ, carry_k, gh = G.copy(), np.empty((Tc, B, d), dtype), carry.copy(), np.full(T, -1.0)
    rnn.rnn_backward(
        x[t0 : t0 + Tc],
        H,
        t0,
        p.W_hx,
        step_kernels.pack_recurrent(p.W_hh)[1],
        ACTIVATION_CODES[activation],
        G_k,
        dZ,
        carry_k,
        has_carry,
        dW_hx,
        dW_hh,
        db,
        gh,
        propagate,
        NO_STATE[dtype],
        False,
        NO_STATE[dtype],
    )
    grads, dx, gh_ref, dz_first = reference.rnn_backward(
        x[t0 : t0 + Tc],
        H[t0 : t0 + Tc],
        G,
        p,
        activation,
        dz_next=carry if has_carry else None,
        h_prev=H[t0 - 1] if t0 > 0 else None,
    )
    close_added(grads, dtype, (dW_hx, dW_hx0), (dW_hh, dW_hh0), (db, db0))
    if propagate:
        close(G_k, dx, dtype, "dx")
    close(carry_k, dz_first, dtype, "carry")
    close(gh[t0 : t0 + Tc], gh_ref, dtype, "grad_h_norm")
    assert np.all(np.delete(gh, np.s_[t0 : t0 + Tc]) == -1.0)  # other steps untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b0,B_all,Tc_stage", SHARD_ROWS)
def test_lstm_forward_matches_twin(b0, B_all, Tc_stage, dtype):
    rng = np.random.default_rng(6)
    T, B, n, d = 7, 3, 5, 9
    x = rand(rng, (T, B_all, n), dtype)
    p = _layer("lstm", dtype, rng, n, d)
    A, C, H = np.empty((T, B, 4 * d), dtype), np.empty((T, B, d), dtype), np.empty((T, B, d), dtype)
    m = np.empty((10, T))
    stage = np.full((Tc_stage, B, n), np.nan, dtype)
    lstm.lstm_forward(
        x,
        b0,
        p.W_hx,
        step_kernels.pack_recurrent(p.W_hh)[0],
        p.b_h,
        stage,
        A,
        C,
        H,
        np.zeros((B, d), dtype),
        m,
        NO_STATE[dtype],
        False,
    )
    H_ref, C_ref, A_ref, m_ref = reference.lstm_forward(x[:, b0 : b0 + B], p)
    close(H, H_ref, dtype, "H")
    close(C, C_ref, dtype, "C")
    close(A, A_ref, dtype, "gates")
    names = ["h_norm", "c_norm"] + [f"gate_{g}_mean" for g in "ifgo"] + [f"gate_{g}_sat" for g in "ifgo"]
    for row, name in enumerate(names):
        if name.endswith("_sat"):
            same_counts(m[row], m_ref[name], name)
        else:
            close(m[row], m_ref[name], dtype, name)


@pytest.mark.parametrize("case", ["overflow", "underflow"])
def test_lstm_state_norms_survive_a_float32_sum_of_squares_out_of_range(case):
    """The forward rows sum squares in the model's precision.  A given c_{-1} of 1e20 makes c_t^2 ~ 1e40, past
    float32's range; inputs of 1e-24 with no bias make h_t ~ 1e-25, whose squares underflow.  Both norms must
    still be exact (taken again in float64), not Inf or 0."""
    rng = np.random.default_rng(11)
    T, B, n, d = 3, 2, 4, 40
    x = rand(rng, (T, B, n), "float32")
    p = _layer("lstm", "float32", rng, n, d)
    c0 = np.zeros((B, d), np.float32)
    if case == "overflow":
        c0[:] = 1e20
    else:
        x *= np.float32(1e-24)
        p.b_h[:] = 0
    A, C, H = np.empty((T, B, 4 * d), np.float32), np.empty((T, B, d), np.float32), np.empty((T, B, d), np.float32)
    m = np.empty((10, T))
    stage = np.empty((T, B, n), np.float32)
    packed = step_kernels.pack_recurrent(p.W_hh)[0]
    lstm.lstm_forward(x, 0, p.W_hx, packed, p.b_h, stage, A, C, H, c0, m, NO_STATE["float32"], False)
    want_c = np.linalg.norm(C.astype(np.float64), axis=2).mean(axis=1)  # (T,) mean over the batch
    want_h = np.linalg.norm(H.astype(np.float64), axis=2).mean(axis=1)
    assert np.all(want_c > 1e20) if case == "overflow" else np.all(want_h < 1e-22)
    np.testing.assert_allclose(m[1], want_c, rtol=1e-6)
    np.testing.assert_allclose(m[0], want_h, rtol=1e-5)


@pytest.mark.parametrize("cell,d", [("rnn", 512), ("lstm", 128), ("gru", 128)])
@pytest.mark.parametrize("shards", [1, 2])
def test_forward_projects_in_blocks_of_steps_like_the_twin(cell, d, shards):
    """A forward computes x_t W_hx^T a block of steps ahead (blas.project_ahead, ~256 KiB of rows), not
    all T at once.  At these widths a block is a few steps, so T = 13 takes several blocks and a ragged last
    one, for the whole batch and for a shard of it (its rows staged): every metric and gradient as the twin's."""
    rng = np.random.default_rng(31)
    T, B = 13, 24
    spec, params = make_model(cell, "tanh", 2, "float64", rng, n=5, d=d, k=3)
    width = describe(cell).blocks * d
    assert all(1 < blas.PROJECTION_BYTES // (rows * width * 8) < T for rows in (B, B // 2)), "not several blocks"
    x, target, mask = make_batch(spec, T, B, "mse", rng)
    got = bptt(spec, params, x, target, mask, "mse", shards=shards)
    assert got.extras["shards"] == shards
    want = reference.bptt(spec, params, x, target, mask, "mse")
    for name in want.metrics:
        close(got.metrics[name], want.metrics[name], "float64", name)
    for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
        close(g, w, "float64", name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("weight", [1e21, 1e-26], ids=["overflow", "underflow"])
def test_gradient_norms_survive_a_float32_sum_of_squares_out_of_range(cell, weight):
    """The backward rows sum squares in the model's precision.  Loss weights of 1e21 make dL/dh_t about 1e20,
    whose float32 squares overflow; weights of 1e-26 make it about 1e-25, whose squares underflow.  The norms
    (||dL/dh_t||, and ||dL/dc_t|| for the LSTM) must equal the float64 twin's on the same weights, not Inf
    or 0, and the bias gradients, summed in float64, must stay finite and match too."""
    rng = np.random.default_rng(23)
    spec, params = make_model(cell, "tanh", 2, "float32", rng, n=3, d=40, k=2)
    x, target, mask = make_batch(spec, 5, 3, "mse", rng)
    got = bptt(spec, params, x, target, mask * weight, "mse")
    spec64 = dataclasses.replace(spec, dtype="float64")
    want = reference.bptt(spec64, params.astype(np.float64), x.astype(np.float64), target.astype(np.float64),
                          mask * weight, "mse")  # fmt: skip
    names = ["grad_h_norm"] + (["grad_c_norm"] if cell == "lstm" else [])
    for name in names:
        w = want.metrics[name]
        assert np.all(w > 1e18) if weight > 1 else np.all((w > 0) & (w < 1e-22)), (name, w)
        np.testing.assert_allclose(got.metrics[name], w, rtol=2e-4, err_msg=name)
    for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
        if name.endswith(("b_h", "b_hh")):
            assert np.all(np.isfinite(g)), name
            np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-4 * np.max(np.abs(w)), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t0,Tc", [(0, 11), (4, 7), (0, 4), (3, 1), (5, 5)])
@pytest.mark.parametrize("n", [5, 9])
def test_lstm_backward_chunk_matches_twin(t0, Tc, n, dtype):
    rng = np.random.default_rng(7)
    T, B, d = 11, 3, 9
    propagate = n == d
    x = rand(rng, (T, B, n), dtype)
    p = _layer("lstm", dtype, rng, n, d)
    H, C, A, _ = reference.lstm_forward(x, p)
    G = rand(rng, (Tc, B, d), dtype)
    has_carry = t0 + Tc < T
    A_k = A.copy()
    dz_next = None
    if has_carry:  # dz_{t0+Tc} sits in A[t0+Tc] already
        dz_next = rand(rng, (B, 4 * d), dtype)
        A_k[t0 + Tc] = dz_next
    dc_next = rand(rng, (B, d), dtype) if has_carry else np.zeros((B, d), dtype)
    dW_hx0, dW_hh0, db0 = rand(rng, p.W_hx.shape, dtype), rand(rng, p.W_hh.shape, dtype), rng.standard_normal(4 * d)
    dW_hx, dW_hh, db = dW_hx0.copy(), dW_hh0.copy(), db0.copy()
    G_k, dc_k = G.copy(), dc_next.copy()
    gh, gc = np.full(T, -1.0), np.full(T, -1.0)
    lstm.lstm_backward(
        x[t0 : t0 + Tc],
        H,
        C,
        A_k,
        t0,
        Tc,
        p.W_hx,
        step_kernels.pack_recurrent(p.W_hh)[1],
        G_k,
        dc_k,
        np.zeros((B, d), dtype),
        dW_hx,
        dW_hh,
        db,
        gh,
        gc,
        propagate,
        NO_STATE[dtype],
        False,
        NO_STATE[dtype],
    )
    grads, dx, gh_ref, gc_ref, dz_first, dc_first = reference.lstm_backward(
        x[t0 : t0 + Tc],
        H[t0 : t0 + Tc],
        C[t0 : t0 + Tc],
        A[t0 : t0 + Tc],
        G,
        p,
        dz_next=dz_next,
        dc_next=dc_next if has_carry else None,
        h_prev=H[t0 - 1] if t0 > 0 else None,
        c_prev=C[t0 - 1] if t0 > 0 else None,
    )
    close_added(grads, dtype, (dW_hx, dW_hx0), (dW_hh, dW_hh0), (db, db0))
    if propagate:
        close(G_k, dx, dtype, "dx")
    close(A_k[t0], dz_first, dtype, "dz_t0 (in place of the gates)")
    close(dc_k, dc_first, dtype, "dc carry")
    close(gh[t0 : t0 + Tc], gh_ref, dtype, "grad_h_norm")
    close(gc[t0 : t0 + Tc], gc_ref, dtype, "grad_c_norm")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b0,B_all,Tc_stage", SHARD_ROWS)
def test_gru_forward_matches_twin(b0, B_all, Tc_stage, dtype):
    rng = np.random.default_rng(16)
    T, B, n, d = 7, 3, 5, 9
    x = rand(rng, (T, B_all, n), dtype)
    p = _layer("gru", dtype, rng, n, d)
    A, S, H = np.empty((T, B, 3 * d), dtype), np.empty((T, B, d), dtype), np.empty((T, B, d), dtype)
    m = np.empty((7, T))
    stage = np.full((Tc_stage, B, n), np.nan, dtype)
    gru.gru_forward(
        x,
        b0,
        p.W_hx,
        step_kernels.pack_recurrent(p.W_hh)[0],
        p.b_h,
        p.b_hh,
        stage,
        A,
        S,
        H,
        np.zeros((B, d), dtype),
        np.full((B, 3 * d), np.nan, dtype),
        m,
        NO_STATE[dtype],
        False,
    )
    H_ref, U_ref, A_ref, m_ref = reference.gru_forward(x[:, b0 : b0 + B], p)
    close(H, H_ref, dtype, "H")
    close(S, U_ref, dtype, "u_n")
    close(A, A_ref, dtype, "gates")
    for row, name in enumerate(["h_norm"] + list(describe("gru").gate_metrics())):
        if name.endswith("_sat"):
            same_counts(m[row], m_ref[name], name)
        else:
            close(m[row], m_ref[name], dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t0,Tc", [(0, 11), (4, 7), (0, 4), (3, 1), (5, 5)])
@pytest.mark.parametrize("n", [5, 9])
def test_gru_backward_chunk_matches_twin(t0, Tc, n, dtype):
    """A chunk inside a sequence of T = 11: du_{t0+Tc} comes in the carry, g_{t0+Tc} z_{t0+Tc} in S[t0+Tc]
    (where the later chunk left it); out go du_{t0} (carry), g_{t0} z_{t0} (S[t0]), dL/da (A) and dx (G)."""
    rng = np.random.default_rng(17)
    T, B, d = 11, 3, 9
    propagate = n == d
    x = rand(rng, (T, B, n), dtype)
    p = _layer("gru", dtype, rng, n, d)
    H, U_n, A, _ = reference.gru_forward(x, p)
    G = rand(rng, (Tc, B, d), dtype)
    has_carry = t0 + Tc < T
    S_k, A_k = U_n.copy(), A.copy()
    du_next = rand(rng, (B, 3 * d), dtype) if has_carry else None
    gz_next = rand(rng, (B, d), dtype) if has_carry else None
    if has_carry:
        S_k[t0 + Tc] = gz_next
    carry = du_next.copy() if has_carry else np.zeros((B, 3 * d), dtype)
    shapes = (p.W_hx.shape, p.W_hh.shape, (3 * d,), (3 * d,))
    before = [rand(rng, shape, dtype) if len(shape) == 2 else rng.standard_normal(shape) for shape in shapes]
    dW_hx, dW_hh, db, dbhh = (a.copy() for a in before)
    G_k, DU, gh = G.copy(), np.empty((Tc, B, 3 * d), dtype), np.full(T, -1.0)
    gru.gru_backward(
        x[t0 : t0 + Tc],
        H,
        S_k,
        A_k,
        t0,
        Tc,
        p.W_hx,
        step_kernels.pack_recurrent(p.W_hh)[1],
        G_k,
        DU,
        carry,
        has_carry,
        np.zeros((B, d), dtype),
        dW_hx,
        dW_hh,
        db,
        dbhh,
        gh,
        propagate,
        NO_STATE[dtype],
        False,
        NO_STATE[dtype],
    )
    grads, dx, gh_ref, du_first, gz_first = reference.gru_backward(
        x[t0 : t0 + Tc],
        H[t0 : t0 + Tc],
        U_n[t0 : t0 + Tc],
        A[t0 : t0 + Tc],
        G,
        p,
        du_next=du_next,
        gz_next=gz_next,
        h_prev=H[t0 - 1] if t0 > 0 else None,
    )
    close_added(grads, dtype, (dW_hx, before[0]), (dW_hh, before[1]), (db, before[2]))
    close(dbhh - before[3], grads.b_hh, dtype, "db_hh")
    if propagate:
        close(G_k, dx, dtype, "dx")
    close(carry, du_first, dtype, "du carry")
    close(S_k[t0], gz_first, dtype, "g z carry (in place of u_n)")
    close(gh[t0 : t0 + Tc], gh_ref, dtype, "grad_h_norm")
    assert np.all(np.delete(gh, np.s_[t0 : t0 + Tc]) == -1.0)  # other steps untouched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("b0,B_all", [(0, 3), (2, 6), (0, 7)])
def test_readout_loss_matches_twin(loss_kind, b0, B_all, dtype):
    """H holds rows b0 .. b0+2 of a batch of B_all: the kernel reads those rows of the targets and mask."""
    rng = np.random.default_rng(8)
    Tc, B, d, k = 5, 3, 6, 4
    H = rand(rng, (Tc, B, d), dtype)
    W_yh, b_y = rand(rng, (k, d), dtype, 0.5), rand(rng, (k,), dtype)
    mask = (rng.random((Tc, B_all)) < 0.6).astype(np.float64)
    if loss_kind == "mse":
        target_f, target_i = rand(rng, (Tc, B_all, k), dtype), driver._EMPTY_I2
        target = target_f
    else:
        target_f, target_i = driver._EMPTY_F3[dtype], rng.integers(0, k, size=(Tc, B_all))
        target = target_i
    Y = np.empty((Tc, B, k), dtype)
    loss_t, dW_yh, db_y, G = np.empty(Tc), np.zeros((k, d), dtype), np.zeros(k), np.empty((Tc, B, d), dtype)
    readout.readout_loss(
        H, W_yh, b_y, target_f, target_i, mask, b0, LOSS_CODES[loss_kind], 1.0 / B, Y, loss_t, dW_yh, db_y, G
    )
    _, loss_t_ref, dY = reference.readout_loss(H, W_yh, b_y, target[:, b0 : b0 + B], mask[:, b0 : b0 + B], loss_kind)
    dW_ref, db_ref, G_ref = reference.readout_backward(H, dY, W_yh)
    close(loss_t, loss_t_ref, dtype, "loss_t")
    close(Y, dY, dtype, "dY")
    close(dW_yh, dW_ref, dtype, "dW_yh")
    close(db_y, db_ref, dtype, "db_y")
    close(G, G_ref, dtype, "G")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_grad_norms_match_params_norms(dtype, cell):
    """The kernel's norms come in Params.named() order, the GRU's b_hh included."""
    rng = np.random.default_rng(9)
    spec, params = make_model(cell, "tanh", 3, dtype, rng)
    L = spec.layers
    per_layer = len(describe(cell).parameters)  # 4 with the GRU's b_hh
    out = np.empty(per_layer * L + 2)
    W_hxR = np.stack([p.W_hx for p in params.layers[1:]])
    b_hh = np.stack([p.b_hh for p in params.layers]) if cell == "gru" else np.zeros((L, 0), spec.np_dtype)
    step_kernels.grad_norms(
        params.layers[0].W_hx,
        W_hxR,
        np.stack([p.W_hh for p in params.layers]),
        np.stack([p.b_h for p in params.layers]),
        b_hh,
        params.W_yh,
        params.b_y,
        out,
    )
    np.testing.assert_allclose(out, list(params.norms().values()), rtol=1e-12)


# ------------------------------------------------------------------------------ the whole step
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("cell,activation", CELL_KINDS, ids=[label(*c) for c in CELL_KINDS])
def test_step_matches_twin_for_every_chunk_size(cell, activation, loss_kind, dtype):
    rng = np.random.default_rng(10)
    spec, params = make_model(cell, activation, 3, dtype, rng, n=5, d=7, k=4)
    T, B = 11, 3
    x, target, mask = make_batch(spec, T, B, loss_kind, rng)
    want = reference.bptt(spec, params, x, target, mask, loss_kind)
    for chunk in (1, 2, 3, 5, 11):
        got = driver.bptt(spec, params, x, target, mask, loss_kind, chunk=chunk)
        assert got.loss == pytest.approx(want.loss, rel=TOL[dtype])
        assert set(got.metrics) == set(want.metrics)
        for name in want.metrics:
            if name.endswith("_sat") or name == "relu_dead":
                same_counts(got.metrics[name], want.metrics[name], name)
            else:
                close(got.metrics[name], want.metrics[name], dtype, f"{name} chunk {chunk}")
        for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
            close(g, w, dtype, f"{name} chunk {chunk}")
        np.testing.assert_allclose(got.extras["grad_norms"], list(want.grads.norms().values()), rtol=10 * TOL[dtype])
        assert got.nonfinite is None and want.nonfinite is None


def test_default_chunk_is_about_chunk_rows():
    assert shards.chunk_steps(100, 1) == 100
    assert shards.chunk_steps(500, 64) == 16
    assert shards.chunk_steps(500, 5000) == 1
    assert shards.chunk_steps(3, 7) == 3


# --------------------------------------------------------------------------------- the workspace
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_workspace_reuse_gives_identical_results_and_nothing_aliases_it(cell):
    rng = np.random.default_rng(11)
    spec, params = make_model(cell, "tanh", 2, "float32", rng)
    x1, t1, m1 = make_batch(spec, 13, 4, "mse", rng)
    x2, t2, m2 = make_batch(spec, 13, 4, "mse", rng)
    fresh = bptt(spec, params, x1, t1, m1, "mse")
    ws: dict = {}
    first = bptt(spec, params, x1, t1, m1, "mse", workspace=ws)
    buffers = ws["buffers"]
    first_copy = {name: v.copy() for name, v in first.metrics.items()}
    grads_copy = first.grads.copy()
    bptt(spec, params, x2, t2, m2, "mse", workspace=ws)  # reuses and overwrites the buffers
    again = bptt(spec, params, x1, t1, m1, "mse", workspace=ws)
    assert ws["buffers"] is buffers  # same shapes: nothing reallocated
    for name in fresh.metrics:
        np.testing.assert_array_equal(again.metrics[name], fresh.metrics[name])
        np.testing.assert_array_equal(first.metrics[name], first_copy[name])  # results own their arrays
    for (name, g), (_, w) in zip(again.grads.named(), fresh.grads.named()):
        np.testing.assert_array_equal(g, w, err_msg=name)
    for (_, a), (_, b) in zip(first.grads.named(), grads_copy.named()):
        np.testing.assert_array_equal(a, b)
    assert again.loss == fresh.loss
    x3, t3, m3 = make_batch(spec, 9, 2, "mse", rng)  # new shapes: new buffers, right answer
    other = bptt(spec, params, x3, t3, m3, "mse", workspace=ws)
    assert ws["buffers"] is not buffers
    assert other.loss == pytest.approx(reference.bptt(spec, params, x3, t3, m3, "mse").loss, rel=1e-5)


# ------------------------------------------------------------------------------ float32 stays float32
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_float32_kernels_compute_in_float32(cell):
    """The per-unit values of the float32 row kernels (activations, gates, cell state, their gradients) are
    typed float32: Numba would silently promote an expression holding a float64 literal (the float32
    literal trap) and the whole loop would run at half the vector width."""
    spec = ModelSpec(cell=cell, dtype="float32")
    engine.compile_kernels(spec)
    per_unit = {
        "v",
        "h",
        "gj",
        "i",
        "f",
        "g",
        "o",
        "cj",
        "hj",
        "ghj",
        "tc",
        "dc",
        "di",
        "df",
        "dg",
        "do",
        "r",
        "z",
        "n",
        "unj",
        "dn",
        "dz",
        "dr",
        "dun",
        "one",
        "zero",
        "lo",
        "hi",
    }
    rows = [f"{cell}_forward_row", f"{cell}_backward_row"]
    plan = {name: (d, sig) for name, d, sig in engine_plan.kernel_plan("float32")}
    checked = 0
    for name in rows:
        kernel, sig = plan[name]
        # the cached build has no type annotations: type the same source with the same options afresh
        fresh = numba.njit(**dict(_jit.KERNEL_OPTIONS, fastmath=set(_jit.FASTMATH)))(kernel.py_func)
        fresh.compile(sig)
        for var, typ in fresh.overloads[tuple(sig)].type_annotation.typemap.items():
            if var.split(".")[0] in per_unit and isinstance(typ, numba.types.Number):
                assert typ == numba.types.float32, (name, var, typ)
                checked += 1
    assert checked > 10
    rng = np.random.default_rng(12)
    spec, params = make_model(cell, "tanh", 2, "float32", rng)
    x, t, m = make_batch(spec, 5, 2, "mse", rng)
    result = bptt(spec, params, x, t, m, "mse")
    assert all(g.dtype == np.float32 for _, g in result.grads.named())
    assert all(v.dtype == np.float64 for v in result.metrics.values())


# ----------------------------------------------------------------------------- compile_kernels
@pytest.mark.parametrize("cell,dtype", [("rnn", "float32"), ("lstm", "float64")])
def test_compile_kernels_covers_everything_bptt_runs(cell, dtype):
    spec = ModelSpec(cell=cell, dtype=dtype, layers=2, input_size=3, hidden_size=4, output_size=2)
    calls = []
    engine.compile_kernels(spec, progress=lambda done, total, name: calls.append((done, total, name)))
    loaded = engine_plan.model_plan(spec)
    assert [c[0] for c in calls] == list(range(1, len(loaded) + 1))
    assert all(c[1] == len(loaded) for c in calls) and [c[2] for c in calls] == [name for name, _, _ in loaded]
    plan = engine_plan.kernel_plan(dtype)
    assert {"step", "bidirectional_step"} <= {name for name, _, _ in plan}
    before = {name: len(d.signatures) for name, d, _ in plan}
    rng = np.random.default_rng(13)
    from gradscope.engine import InitSpec, init_params

    params = init_params(spec, InitSpec(), rng)
    for loss_kind in ("mse", "ce"):
        x, target, mask = make_batch(spec, 6, 2, loss_kind, rng)
        bptt(spec, params, x, target, mask, loss_kind)
    after = {name: len(d.signatures) for name, d, _ in plan}
    assert after == before, "bptt compiled a signature that compile_kernels did not"


@pytest.mark.parametrize(
    "dtype,value,finite",
    [("float32", 3e38, False), ("float32", 1e20, True), ("float32", 1e-25, True), ("float64", 1e200, True)],
)
def test_row_norms_are_inf_exactly_when_a_value_is(dtype, value, finite):
    """float32: an overflowed state gives an infinite norm (not a rescaled 0); entries near 1e20, whose
    float32 sum of squares overflows (the row loop's), a finite one, and entries near 1e-25, whose squares
    underflow in float32, their exact one; float64: entries near 1e200 give a finite norm although their
    plain sum of squares overflows."""
    T, B, n, d = 2, 1, 2, 3
    x = np.full((T, B, n), value, dtype)
    p = LayerParams(np.ones((d, n), dtype), np.zeros((d, d), dtype), np.zeros(d, dtype))
    H, h_norm, act = np.empty((T, B, d), dtype), np.empty(T), np.empty(T)
    with np.errstate(over="ignore"):
        rnn.rnn_forward(
            x,
            0,
            p.W_hx,
            step_kernels.pack_recurrent(p.W_hh)[0],
            p.b_h,
            ACTIVATION_CODES["linear"],
            driver._EMPTY_F3[dtype],
            H,
            h_norm,
            act,
            NO_STATE[dtype],
            False,
        )
        want = 2 * value * np.sqrt(3.0)  # each h entry is 2 * value
    if finite:
        np.testing.assert_allclose(h_norm, want, rtol=1e-14 if dtype == "float64" else 1e-6)
    else:
        assert h_norm[0] == np.inf and np.isnan(h_norm[1])  # then inf * 0 (W_hh = 0) is NaN


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_eight_layers_one_step_and_one_example(cell):
    rng = np.random.default_rng(14)
    spec, params = make_model(cell, "tanh", 8, "float64", rng, n=3, d=5, k=2)
    for T, B in ((1, 1), (9, 1)):
        x, target, mask = make_batch(spec, T, B, "ce", rng)
        got = bptt(spec, params, x, target, mask, "ce")
        want = reference.bptt(spec, params, x, target, mask, "ce")
        assert got.metrics["h_norm"].shape == (8, T)
        for name in want.metrics:
            close(got.metrics[name], want.metrics[name], "float64", name)
        for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
            close(g, w, "float64", name)


def test_non_contiguous_inputs_and_weighted_masks():
    rng = np.random.default_rng(15)
    spec, params = make_model("lstm", "tanh", 2, "float64", rng, n=4, d=6, k=3)
    x, target, mask = make_batch(spec, 7, 3, "mse", rng)
    mask = rng.random((7, 3))  # real weights, not just 0/1
    strided = params.copy()
    strided.layers[0].W_hx = np.asfortranarray(params.layers[0].W_hx)
    strided.layers[1].W_hh = np.asfortranarray(params.layers[1].W_hh)
    strided.W_yh = np.asfortranarray(params.W_yh)
    x_strided = np.asfortranarray(x)
    assert not x_strided.flags.c_contiguous and not strided.W_yh.flags.c_contiguous
    got = bptt(spec, strided, x_strided, target, mask.T.copy().T, "mse")
    want = reference.bptt(spec, params, x, target, mask, "mse")
    assert got.loss == pytest.approx(want.loss, rel=1e-12)
    for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
        close(g, w, "float64", name)
