"""The fast paths of engine.analysis against the plain algorithms they replace.

The QR method's re-orthonormalisation is a Cholesky QR (analysis.orthonormal) instead of LAPACK's Householder
QR.  Why its exponents are those of Householder: each step computes Q_t = A_t R_t^{-1} exactly up to rounding,
so J_T ... J_1 Q_0 = A_T R_{T-1} ... R_1 holds whatever Q_t's small departure from orthogonality; the R_t are
the same chain's triangular factors and only the last Q's non-orthogonality (eps cond^2, once, not per step)
enters the sum of ln R_ii.  These tests check that claim on trajectories (full spectra, every cell) and the
fallback on blocks Cholesky cannot factor accurately."""

import numpy as np
import pytest

from gradscope.engine.analysis import qr_exponents, stack_streams
from gradscope.engine.analysis.maps import take_steps
from gradscope.engine.analysis.orthonormal import GRADED, cholesky_qr

from .test_analysis import model


def householder_exponents(stream, m, warmup):
    """The QR method written out with numpy's Householder QR, per step: the reference."""
    T, N, D = stream.S.shape
    Q = np.broadcast_to(np.eye(D)[:, :m], (N, D, m)).copy()  # (N, D, m)
    total = np.zeros((N, m))
    for t in range(T):
        J = stream.map.jacobian(stream.p, take_steps(stream.caches, N, t, t + 1))  # (N, D, D) dense J_t
        Q, R = np.linalg.qr(J @ Q)  # (N, D, m), (N, m, m)
        if t >= warmup:
            total += np.log(np.abs(np.diagonal(R, axis1=1, axis2=2)))
    return np.sort(np.mean(total, axis=0) / (T - warmup))[::-1]


@pytest.mark.parametrize(
    "cell,activation,scale,m",
    [
        ("rnn", "tanh", 4.0, None),
        ("rnn", "tanh", 9.0, None),
        ("rnn", "relu", 2.0, None),
        ("lstm", "tanh", 4.0, None),
        ("gru", "tanh", 4.0, None),
        ("rnn", "tanh", 4.0, 5),
    ],
)
def test_cholesky_qr_exponents_equal_householder(cell, activation, scale, m):
    spec, params = model(cell, activation, d=24, scale=scale, seed=3)
    x = np.random.default_rng(8).standard_normal((600, 2, 3))
    stream = stack_streams(spec, params, x)[0]
    m = m or stream.D
    ours, ref = qr_exponents(stream, m, 100), householder_exponents(stream, m, 100)
    # ReLU: directions dead units remove shrink by ~eps per step, their exponents (< ln eps + 6 = -30) are
    # rounding in either method (or -inf); both must put them there, the rest must agree
    resolved = ref > np.log(np.finfo(float).eps) + 6
    assert np.sum(resolved) >= m // 2
    np.testing.assert_array_equal(ours > np.log(np.finfo(float).eps) + 6, resolved)
    np.testing.assert_allclose(ours[resolved], ref[resolved], rtol=1e-9, atol=1e-8)  # nats per step


def test_cholesky_qr_is_the_thin_qr_with_a_positive_diagonal():
    rng = np.random.default_rng(0)
    V = rng.standard_normal((3, 7, 40))  # (N, m, D): three blocks A = V[n].T (40, 7)
    A = np.swapaxes(V, 1, 2).copy()
    log_r = cholesky_qr(V)  # V now holds Q^T
    for n in range(3):
        Q, R = np.linalg.qr(A[n])
        np.testing.assert_allclose(V[n] @ V[n].T, np.eye(7), atol=1e-13)
        np.testing.assert_allclose(np.abs(V[n].T), np.abs(Q), atol=1e-12)
        np.testing.assert_allclose(log_r[n], np.log(np.abs(np.diag(R))), atol=1e-12)


def test_graded_blocks_fall_back_to_householder_and_stay_exact():
    """Columns shrinking past GRADED: the Gram matrix would lose the small R_ii; Householder keeps them."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((30, 6)) * np.logspace(0, -9, 6)  # (D, m): R_ii spanning 1e9 > GRADED
    assert 1e9 > GRADED
    V = np.ascontiguousarray(A.T)[None]  # (1, m, D)
    log_r = cholesky_qr(V)
    R = np.linalg.qr(A)[1]
    np.testing.assert_allclose(log_r[0], np.log(np.abs(np.diag(R))), rtol=0, atol=1e-12)
    np.testing.assert_allclose(V[0] @ V[0].T, np.eye(6), atol=1e-13)


def test_a_nonfinite_block_gives_none():
    V = np.ones((2, 3, 10))
    V[1, 0, 4] = np.nan
    assert cholesky_qr(V) is None
