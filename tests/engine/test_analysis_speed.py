"""The fast paths of engine.analysis against the plain algorithms they replace.

The QR method's re-orthonormalisation is a Cholesky QR (analysis.orthonormal) instead of LAPACK's Householder
QR.  Why its exponents are those of Householder: each step computes Q_t = A_t R_t^{-1} exactly up to rounding,
so J_T ... J_1 Q_0 = A_T R_{T-1} ... R_1 holds whatever Q_t's small departure from orthogonality; the R_t are
the same chain's triangular factors and only the last Q's non-orthogonality (eps cond^2, once, not per step)
enters the sum of ln R_ii.  These tests check that claim on trajectories (full spectra, every cell) and the
fallback on blocks Cholesky cannot factor accurately."""

import dataclasses
import threading

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
            with np.errstate(divide="ignore"):  # a dead ReLU direction: ln 0 = -inf, as ours records it
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
@pytest.mark.parametrize("threaded", [False, True], ids=["one thread", "two threads"])
def test_cholesky_qr_exponents_equal_householder(cell, activation, scale, m, threaded, monkeypatch):
    """On one thread, and with the step split over two (J_{t+1} A_t computed while A_t is factored, then times
    R_t^{-1}; lyapunov.THREADED_FLOPS otherwise reached only from d ~ 100 up): Householder's exponents."""
    from gradscope.engine.analysis import lyapunov

    if threaded:
        monkeypatch.setattr(lyapunov, "THREADED_FLOPS", 0)
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
    np.testing.assert_array_equal(qr_exponents(stream, m, 100), ours)  # the threads never change the bits


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


# ------------------------------------------------------------------------- the step on two threads
@pytest.fixture
def two_threads(monkeypatch):
    """Every stream's step split over the two threads (lyapunov.THREADED_FLOPS is otherwise reached only from
    d ~ 100 up): the look-ahead product on a helper thread, the triangular solve in two parts."""
    from gradscope.engine.analysis import lyapunov

    monkeypatch.setattr(lyapunov, "THREADED_FLOPS", 0)
    return lyapunov


def test_the_benchmark_size_runs_on_two_threads_and_matches_householder():
    """tanh, d = m = 256, one example: above THREADED_FLOPS with the defaults (the issue's case, shorter)."""
    from gradscope.engine import shards
    from gradscope.engine.analysis import lyapunov

    assert lyapunov.THREADED_FLOPS == shards.MIN_SHARD_FLOPS  # the engine's rule for handing work to a thread
    spec, params = model("rnn", "tanh", d=256, scale=4.0, seed=0)
    x = np.random.default_rng(2).standard_normal((120, 1, 3))
    stream = stack_streams(spec, params, x)[0]
    assert 2.0 * 1 * 256 * 256 * 256 >= lyapunov.THREADED_FLOPS
    ours, ref = qr_exponents(stream, 256, 20), householder_exponents(stream, 256, 20)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-8)


def test_a_failing_look_ahead_raises_instead_of_hanging(two_threads, monkeypatch):
    spec, params = model("rnn", "tanh", d=24, scale=4.0, seed=3)
    stream = stack_streams(spec, params, np.random.default_rng(8).standard_normal((50, 2, 3)))[0]
    calls = []
    real = stream.map.jvp

    def jvp(p, cache, V):
        calls.append(1)
        if len(calls) == 10:
            raise MemoryError("the look-ahead's product")
        return real(p, cache, V)

    monkeypatch.setattr(stream, "map", dataclasses.replace(stream.map, jvp=jvp))
    with pytest.raises(MemoryError, match="look-ahead"):
        qr_exponents(stream, 24, 5)


def test_a_busy_shard_pool_does_not_hold_the_exponents_up(two_threads):
    """The helper is the call's own thread: with the engine's shard pool held by another pass (the app trains
    runs in threads of one process), the exponents are still computed, and the pool is left as it was."""
    from gradscope.engine.shards import executor

    spec, params = model("rnn", "tanh", d=24, scale=4.0, seed=3)
    stream = stack_streams(spec, params, np.random.default_rng(8).standard_normal((60, 2, 3)))[0]
    release = threading.Event()
    held = [executor().submit(release.wait, 60) for _ in range(executor()._max_workers)]
    try:
        out: list = []
        worker = threading.Thread(target=lambda: out.append(qr_exponents(stream, 24, 5)))
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "qr_exponents waited for the shard pool"
        ref = householder_exponents(stream, 24, 5)
        np.testing.assert_allclose(out[0], ref, rtol=1e-9, atol=1e-8)
        assert not any(f.done() for f in held)
    finally:
        release.set()
    assert all(f.result() for f in held)


def test_nan_on_the_trajectory_gives_nan_exponents_on_two_threads(two_threads):
    spec, params = model("rnn", "tanh", d=24, scale=4.0, seed=3)
    params.layers[0].W_hh[0, 0] = np.nan
    stream = stack_streams(spec, params, np.random.default_rng(8).standard_normal((40, 2, 3)))[0]
    assert np.all(np.isnan(qr_exponents(stream, 24, 5)))


def test_blocks_not_c_contiguous_are_refused():
    from gradscope.engine.analysis.orthonormal import gram_cholesky

    V = np.asfortranarray(np.ones((3, 10)))
    with pytest.raises(ValueError, match="C-contiguous float64"):
        gram_cholesky(V, np.empty((3, 3)))
