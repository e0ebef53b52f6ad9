"""The compressed long-lag products (engine/analysis/longlag.py: P_t = U N_t, cut now and then) against the
dense products P_t = P_{t+1} J_{t+1} formed in full, with NumPy's SVD for sigma_max: they must agree to 1e-9
relatively (the cuts' stated budget is ~5e-13 per cut; the torch identities at rtol 1e-6 are in test_analysis.py).
Cases: random tanh RNNs in order and chaos, a trained-like W_hh (a few large outlier directions on a weak bulk),
near-degenerate ones (an orthogonal W_hh with equal singular values, ReLU with dead units, a saturated tanh, an
LSTM and a GRU), and products long enough for several cuts."""

from __future__ import annotations

import numpy as np
import pytest

from gradscope.engine import InitSpec, ModelSpec, init_params
from gradscope.engine.analysis import jacobian_norms, longlag, stack_streams
from gradscope.engine.analysis.maps import take_steps


def dense_norms(stream):
    """The reference: every P_t formed, sigma_max by SVD, per example, batch means."""
    T, B, D = stream.S.shape
    sigma, fro = np.ones((B, T)), np.ones((B, T))
    P = np.broadcast_to(np.eye(D), (B, D, D)).copy()
    for t in range(T - 2, -1, -1):
        J = stream.map.jacobian(stream.p, take_steps(stream.caches, B, t + 1, t + 2))  # (B, D, D)
        P = np.matmul(P, J)
        sigma[:, t] = np.linalg.norm(P, ord=2, axis=(1, 2))
        fro[:, t] = np.linalg.norm(P, axis=(1, 2)) / np.sqrt(D)
    return sigma.mean(0), fro.mean(0)


def stream_of(cell="rnn", activation="tanh", d=48, T=60, B=3, scale=4.0, W_hh=None, input_scale=1.0, seed=0):
    spec = ModelSpec(cell=cell, activation=activation, input_size=4, hidden_size=d, output_size=1, dtype="float64")
    params = init_params(spec, InitSpec(recurrent_scale=scale, input_scale=input_scale), np.random.default_rng(seed))
    if W_hh is not None:
        params.layers[0].W_hh[...] = W_hh
    x = np.random.default_rng(seed + 1).standard_normal((T, B, 4))
    return stack_streams(spec, params, x)[0]


def trained_like(d, rng):
    """A weak random bulk plus three strong low-rank directions, as training leaves W_hh (outlier eigenvalues)."""
    U, V = rng.standard_normal((d, 3)), rng.standard_normal((d, 3))
    return 0.6 * rng.standard_normal((d, d)) / np.sqrt(d) + U @ np.diag([3.0, 2.0, 1.5]) @ V.T / d


def orthogonal(d, rng):
    return np.linalg.qr(rng.standard_normal((d, d)))[0]


CASES = {
    "tanh g=0.5 (order)": dict(scale=0.25),
    "tanh g=2 (chaos)": dict(scale=4.0),
    "tanh g=3 (chaos)": dict(scale=9.0),
    "tanh saturated": dict(scale=4.0, input_scale=100.0),
    "relu, dead units": dict(activation="relu", scale=2.0),
    "linear orthogonal (no cut drops)": dict(activation="linear", W_hh="orthogonal"),
    "trained-like": dict(W_hh="trained"),
    "lstm": dict(cell="lstm", d=24),
    "gru": dict(cell="gru", d=32),
}


@pytest.mark.parametrize("name", list(CASES))
def test_compressed_products_equal_the_dense_ones(name):
    kwargs = dict(CASES[name])
    rng = np.random.default_rng(5)
    d = kwargs.get("d", 48)
    if kwargs.get("W_hh") == "orthogonal":
        kwargs["W_hh"] = orthogonal(d, rng)
    elif kwargs.get("W_hh") == "trained":
        kwargs["W_hh"] = trained_like(d, rng)
    stream = stream_of(**kwargs)
    sigma, fro = jacobian_norms(stream)
    ref_sigma, ref_fro = dense_norms(stream)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(fro, ref_fro, rtol=1e-9, atol=1e-300)


def test_the_cuts_shrink_the_rank_and_drop_within_budget():
    """At a cut, the kept rows' squared Frobenius norm falls short of the whole by at most DROP of it, and a
    contracting product loses rows; an orthogonal product (all singular values equal) loses none."""
    stream = stream_of(scale=4.0, d=64, T=40)
    T, B, D = stream.S.shape
    N = np.broadcast_to(np.eye(D), (B, D, D)).copy()
    for t in range(T - 2, T - 22, -1):
        N = stream.map.vjp(stream.p, take_steps(stream.caches, B, t + 1, t + 2), N)[0]
    kept, sigma, fro = longlag.compress(N)
    assert kept.shape[1] < D // 2
    whole = np.sum(N * N, axis=(1, 2))
    assert np.all(whole - np.sum(kept * kept, axis=(1, 2)) <= 1.01 * longlag.DROP * whole)
    np.testing.assert_allclose(sigma, np.linalg.norm(N, ord=2, axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(fro, np.sqrt(whole), rtol=1e-12)
    Q = np.broadcast_to(orthogonal(D, np.random.default_rng(0)), (B, D, D))
    assert longlag.compress(np.array(Q))[0].shape[1] == D


def _svd_sigma_max(N):
    return np.linalg.norm(N, ord=2, axis=(1, 2))


def _spectrum(rng, B, r, D, singular_values):
    """(B, r, D) blocks with the given singular values (r,) and random singular vectors."""
    U = np.linalg.qr(rng.standard_normal((B, r, r)))[0]
    V = np.linalg.qr(rng.standard_normal((B, D, r)))[0]
    return np.matmul(U * singular_values, np.swapaxes(V, 1, 2))


@pytest.mark.parametrize(
    "kind",
    ["random", "graded", "close top pair", "equal top four", "all equal", "rank one", "rank deficient"]
    + ["tiny", "huge", "zero"],
)
def test_lanczos_equals_the_svd(kind):
    """sigma_max by Lanczos (cold, from the all-ones start, and warm, from its own answer) against NumPy's SVD
    at 1e-10, on spectra from easy (graded) to the ones Lanczos finds hard (a top pair 1e-6 apart, equal top
    singular values, every singular value equal: an invariant Krylov space at once; rank one and rank
    deficient: beta vanishes; 1e-150 and 1e150, whose Gram would under/overflow; zero)."""
    rng = np.random.default_rng(7)
    B, r, D = 4, 40, 90
    s = {
        "random": None,
        "graded": np.exp(-0.2 * np.arange(r)),
        "close top pair": np.r_[1.0, 1.0 - 1e-6, np.linspace(0.9, 0.1, r - 2)],
        "equal top four": np.r_[np.ones(4), np.linspace(0.8, 0.1, r - 4)],
        "all equal": np.ones(r),
        "rank one": np.r_[3.0, np.zeros(r - 1)],
        "rank deficient": np.r_[np.linspace(2.0, 1.0, 10), np.zeros(r - 10)],
        "tiny": 1e-150 * np.exp(-0.1 * np.arange(r)),
        "huge": 1e150 * np.exp(-0.1 * np.arange(r)),
        "zero": np.zeros(r),
    }[kind]
    N = rng.standard_normal((B, r, D)) if s is None else _spectrum(rng, B, r, D, s)
    sigma, x = longlag.top_singular_values(N, np.ones((B, r)))
    np.testing.assert_allclose(sigma, _svd_sigma_max(N), rtol=1e-10, atol=0)
    assert x.shape == (B, r) and np.all(np.isfinite(x))
    again, _ = longlag.top_singular_values(N, x)
    np.testing.assert_allclose(again, _svd_sigma_max(N), rtol=1e-10)


def test_lanczos_falls_back_to_the_exact_value_when_it_cannot_certify(monkeypatch):
    """Too few steps allowed for a close top pair: the Kato-Temple bound is not met, and the Gram's exact top
    eigenvalue is used for those examples (the easy one in the batch keeps its Lanczos value)."""
    monkeypatch.setattr(longlag, "POWER_MAX_ITER", 3)
    rng = np.random.default_rng(2)
    hard = _spectrum(rng, 1, 30, 60, np.r_[1.0, 1.0 - 1e-4, np.linspace(0.99, 0.5, 28)])
    easy = _spectrum(rng, 1, 30, 60, np.r_[1.0, 1e-3 * np.ones(29)])
    N = np.concatenate([hard, easy])
    calls = []
    exact = longlag.gram_sigma_max
    monkeypatch.setattr(longlag, "gram_sigma_max", lambda M: calls.append(len(M)) or exact(M))
    sigma, _ = longlag.top_singular_values(N, np.ones((2, 30)))
    np.testing.assert_allclose(sigma, _svd_sigma_max(N), rtol=1e-12)
    assert calls == [1]


def test_gram_sigma_max_equals_the_svd_also_where_dsyevr_fails():
    """The exact path: dsyrk + dsyevr (top eigenvalue only); dsyevr's bisection fails (info > 0) on some exact
    clusters, e.g. a scaled orthogonal matrix, and the full eigensolver answers instead."""
    rng = np.random.default_rng(3)
    Q = 0.8 * np.linalg.qr(rng.standard_normal((16, 16)))[0]
    N = np.stack([Q, rng.standard_normal((16, 16)), np.diag(np.linspace(1, 2, 16))])
    np.testing.assert_allclose(longlag.gram_sigma_max(N), _svd_sigma_max(N), rtol=1e-12)


def test_products_far_below_the_gram_range_keep_their_value():
    """A linear RNN with W_hh = 0.2 Q (Q orthogonal): P_t = (0.2 Q)^{T-1-t}, so sigma_max = ||P_t||_F / sqrt(d)
    = 0.2^lag exactly, down to 1e-208 at lag 297, where the Gram N N^T (1e-416) would underflow."""
    d, T = 16, 298
    stream = stream_of(activation="linear", d=d, T=T, B=2, W_hh=0.2 * orthogonal(d, np.random.default_rng(3)))
    sigma, fro = jacobian_norms(stream)
    lag = np.arange(T)[::-1]
    np.testing.assert_allclose(sigma, 0.2**lag, rtol=1e-9)
    np.testing.assert_allclose(fro, 0.2**lag, rtol=1e-9)


def test_nonfinite_products_give_nan_not_an_error():
    stream = stream_of(scale=4.0, T=30)
    stream.caches["fp"][5 * 3] = np.nan  # one unit's slope at step 5 of example 0
    sigma, fro = jacobian_norms(stream)
    assert np.all(np.isnan(sigma[:5])) and np.all(np.isnan(fro[:5]))
    assert np.all(np.isfinite(sigma[5:])) and sigma[-1] == 1.0
    N = np.ones((2, 3, 4))
    N[0, 0, 0] = np.inf
    s, x = longlag.top_singular_values(N, np.ones((2, 3)))
    assert np.isnan(s[0]) and s[1] == pytest.approx(np.sqrt(12))
    assert np.all(np.isfinite(x[1]))


def test_zero_products_give_zero_norms():
    """W_hh = 0 (linear): every product past lag 0 is exactly 0, so both norms are 0 there (no rescale of 0, no
    division by a vanished Lanczos beta)."""
    stream = stream_of(activation="linear", d=16, T=20, B=2, W_hh=np.zeros((16, 16)))
    sigma, fro = jacobian_norms(stream)
    assert sigma[-1] == fro[-1] == 1.0
    assert np.all(sigma[:-1] == 0) and np.all(fro[:-1] == 0)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_rows_split_over_threads_equal_the_dense_products(cell, monkeypatch):
    """B = 10: two shards of 5 rows, one of them on the shard pool's thread, each compressed to its own rank."""
    calls = []
    inner = longlag._example_norms
    monkeypatch.setattr(longlag, "_example_norms", lambda s, b0, b1: calls.append((b0, b1)) or inner(s, b0, b1))
    stream = stream_of(cell=cell, d=24 if cell == "lstm" else 48, T=40, B=10, seed=3)
    sigma, fro = jacobian_norms(stream)
    assert sorted(calls) == [(0, 5), (5, 10)]
    ref_sigma, ref_fro = dense_norms(stream)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(fro, ref_fro, rtol=1e-9, atol=1e-300)
    again = jacobian_norms(stream)  # the split fixes the bits, not the threads' timing
    assert np.array_equal(again[0], sigma) and np.array_equal(again[1], fro)


def test_nan_in_one_shard_makes_the_batch_means_nan_from_there_back():
    stream = stream_of(d=16, T=30, B=8)  # two shards of 4 rows
    stream.caches = {k: v.copy() for k, v in stream.caches.items()}
    for v in stream.caches.values():
        if v.dtype.kind == "f":
            v[20 * 8 + 6] = np.nan  # step 20, row 6 (the second shard): the products through it are NaN
    sigma, fro = jacobian_norms(stream)
    assert np.all(np.isnan(sigma[:20])) and np.all(np.isnan(fro[:20]))
    assert np.all(np.isfinite(sigma[20:])) and np.all(np.isfinite(fro[20:]))
