"""Initialisation schemes, tested statistically, and the model / init specs' validation.

Moments are checked against their sampling error: with N entries the sample variance has relative
standard error sqrt(2/N) (Gaussian) or sqrt(0.8/N) (uniform), and we allow 5 standard errors.
"""

import numpy as np
import pytest

from gradscope.engine import InitSpec, ModelSpec, Params, init_params, spectral_stats
from gradscope.engine.params import combine_norms, init_matrix


def _var_ok(w, expected, kurtosis_excess):
    """Sample variance within 5 standard errors of `expected` (and mean within 5 of 0)."""
    n = w.size
    se_var = expected * np.sqrt((2 + kurtosis_excess) / n)
    assert abs(np.var(w) - expected) < 5 * se_var, (np.var(w), expected)
    assert abs(np.mean(w)) < 5 * np.sqrt(expected / n)


def _kurtosis(w):
    z = (w - w.mean()) / w.std()
    return float(np.mean(z**4))


@pytest.mark.parametrize("scale", [1.5, 2.0, 3.0])
def test_gaussian_variance_is_scale_over_fan_in(scale):
    w = init_matrix("gaussian", scale, 400, 300, np.random.default_rng(0))
    _var_ok(w, scale / 300, 0.0)
    assert abs(_kurtosis(w) - 3.0) < 0.05  # Gaussian tails


def test_uniform_has_the_gaussian_variance_and_a_hard_edge():
    scale, fan_in = 2.0, 250
    w = init_matrix("uniform", scale, 400, fan_in, np.random.default_rng(1))
    _var_ok(w, scale / fan_in, -1.2)
    a = np.sqrt(3 * scale / fan_in)
    assert np.max(np.abs(w)) <= a and np.max(np.abs(w)) > 0.999 * a
    assert abs(_kurtosis(w) - 1.8) < 0.03  # uniform, not Gaussian


def test_xavier_and_kaiming():
    rng = np.random.default_rng(2)
    w = init_matrix("xavier", 1.0, 300, 200, rng)  # fan_out 300, fan_in 200
    _var_ok(w, 2.0 / 500, -1.2)
    assert np.max(np.abs(w)) <= np.sqrt(6 / 500)
    w = init_matrix("kaiming", 1.0, 300, 200, rng)
    _var_ok(w, 2.0 / 200, 0.0)
    w = init_matrix("kaiming", 0.5, 300, 200, rng)  # gain 0.5
    _var_ok(w, 0.25 * 2.0 / 200, 0.0)


@pytest.mark.parametrize("rows,cols", [(64, 64), (96, 40), (40, 96)])
def test_orthogonal_is_orthogonal_with_gain_and_haar_signs(rows, cols):
    gain = 1.7
    q = init_matrix("orthogonal", gain, rows, cols, np.random.default_rng(3))
    small = min(rows, cols)
    gram = q.T @ q if rows >= cols else q @ q.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=1e-12)
    # Haar-distributed: E[trace Q] = 0 (LAPACK's QR without the sign correction gives about -2.4 at 16 x 16)
    traces = [np.trace(init_matrix("orthogonal", 1.0, 16, 16, np.random.default_rng(s))) for s in range(400)]
    assert abs(np.mean(traces)) < 5 * np.std(traces) / np.sqrt(400)


def test_identity_and_its_refusal_for_non_square():
    np.testing.assert_array_equal(init_matrix("identity", 0.9, 5, 5, None), 0.9 * np.eye(5))
    spec = ModelSpec(cell="rnn", input_size=3, hidden_size=5)
    with pytest.raises(ValueError, match=r"init.input = 'identity' for layer 0's W_hx \(5 x 3\)"):
        init_params(spec, InitSpec(input="identity"), np.random.default_rng(0))


def test_pytorch_default_matches_torch_rnn_ranges():
    d, n = 200, 50
    spec = ModelSpec(cell="lstm", input_size=n, hidden_size=d)
    p = init_params(spec, InitSpec(recurrent="pytorch", input="pytorch"), np.random.default_rng(4)).astype(np.float64)
    k = 1 / np.sqrt(d)
    layer = p.layers[0]
    for w in (layer.W_hx, layer.W_hh):
        assert np.max(np.abs(w)) <= k
        _var_ok(w, k * k / 3, -1.2)
    # b_h = b_ih + b_hh, each U(-k, k): variance 2k^2/3, inside (-2k, 2k), triangular
    assert np.max(np.abs(layer.b_h)) <= 2 * k
    _var_ok(layer.b_h, 2 * k * k / 3, -0.6)


def test_lstm_gate_blocks_are_drawn_separately():
    d = 32
    spec = ModelSpec(cell="lstm", input_size=d, hidden_size=d)
    p = init_params(
        spec, InitSpec(recurrent="orthogonal", recurrent_scale=1.0, input="identity"), np.random.default_rng(5)
    ).astype(np.float64)
    W_hh = p.layers[0].W_hh
    for g in range(4):
        block = W_hh[g * d : (g + 1) * d]
        np.testing.assert_allclose(block @ block.T, np.eye(d), atol=1e-6)
        np.testing.assert_array_equal(p.layers[0].W_hx[g * d : (g + 1) * d], np.eye(d))
    assert not np.allclose(W_hh[:d], W_hh[d : 2 * d])


def test_forget_bias_and_chrono():
    d, t_max = 400, 50
    spec = ModelSpec(cell="lstm", input_size=8, hidden_size=d)
    p = init_params(spec, InitSpec(forget_bias=1.0), np.random.default_rng(6))
    b = p.layers[0].b_h
    np.testing.assert_array_equal(b[d : 2 * d], 1.0)
    assert np.all(b[:d] == 0) and np.all(b[2 * d :] == 0)
    p = init_params(spec, InitSpec(chrono=True), np.random.default_rng(7), seq_len=t_max).astype(np.float64)
    b = p.layers[0].b_h
    b_f = b[d : 2 * d]
    np.testing.assert_allclose(b[:d], -b_f)  # b_i = -b_f
    u = np.exp(b_f)  # u ~ U[1, T_max - 1]
    assert u.min() >= 1 and u.max() <= t_max - 1
    _var_ok(u - (t_max / 2), (t_max - 2) ** 2 / 12, -1.2)  # mean (1 + T_max - 1)/2
    assert np.all(b[2 * d :] == 0)
    with pytest.raises(ValueError, match="T_max >= 3"):
        init_params(spec, InitSpec(chrono=True), np.random.default_rng(0), seq_len=0)
    p2 = init_params(spec, InitSpec(chrono=True, chrono_tmax=5), np.random.default_rng(7), seq_len=t_max)
    assert np.exp(p2.layers[0].b_h[d : 2 * d]).max() <= 4.0 + 1e-6


def test_readout_and_biases():
    spec = ModelSpec(cell="rnn", input_size=8, hidden_size=300, output_size=200)
    p = init_params(spec, InitSpec(readout_scale=2.0), np.random.default_rng(8)).astype(np.float64)
    _var_ok(p.W_yh, 2.0 / 300, 0.0)
    assert np.all(p.b_y == 0) and np.all(p.layers[0].b_h == 0)


def test_deterministic_dtype_and_no_global_random_state():
    spec = ModelSpec(cell="lstm", layers=3, input_size=5, hidden_size=7, dtype="float32")
    state = np.random.get_state()[1].copy()  # noqa: NPY002  (the legacy global state is what must stay untouched)
    a = init_params(spec, InitSpec(), np.random.default_rng(9))
    b = init_params(spec, InitSpec(), np.random.default_rng(9))
    c = init_params(spec, InitSpec(), np.random.default_rng(10))
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002  (as above)
    for (name, x), (_, y), (_, z) in zip(a.named(), b.named(), c.named()):
        assert x.dtype == np.float32, name
        np.testing.assert_array_equal(x, y)
        if x.any():
            assert not np.array_equal(x, z)
    assert [n for n, _ in a.named()] == [
        "layer0.W_hx",
        "layer0.W_hh",
        "layer0.b_h",
        "layer1.W_hx",
        "layer1.W_hh",
        "layer1.b_h",
        "layer2.W_hx",
        "layer2.W_hh",
        "layer2.b_h",
        "readout.W_yh",
        "readout.b_y",
    ]
    assert a.layers[1].W_hx.shape == (28, 7) and a.layers[0].W_hx.shape == (28, 5)
    round_trip = Params.from_arrays(a.arrays())
    for (_, x), (_, y) in zip(a.named(), round_trip.named()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"cell": "transformer"}, "cell must be one of"),
        ({"activation": "softplus"}, "activation must be one of"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"hidden_size": 0}, "hidden_size must be a whole number of at least 1, got 0"),
        ({"layers": 2.5}, "layers must be a whole number"),
        ({"input_size": True}, "input_size must be a whole number"),
    ],
)
def test_model_spec_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(**kwargs)


def test_model_spec_accepts_numpy_integers():
    spec = ModelSpec(hidden_size=np.int64(16))
    assert spec.hidden_size == 16 and type(spec.hidden_size) is int


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"recurrent": "he"}, "init.recurrent must be one of"),
        ({"input": "zeros"}, "init.input must be one of"),
        ({"recurrent_scale": -1.0}, "init.recurrent_scale must be a finite number >= 0, got -1.0"),
        ({"input_scale": float("nan")}, "init.input_scale must be a finite number"),
        ({"forget_bias": float("inf")}, "init.forget_bias must be a finite number"),
        ({"chrono_tmax": -3}, "init.chrono_tmax must be a whole number >= 0"),
    ],
)
def test_init_spec_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InitSpec(**kwargs)


def test_spectral_stats_and_combined_norms():
    rng = np.random.default_rng(11)
    W = rng.standard_normal((30, 30))
    rho, sigma = spectral_stats(W)
    assert rho == pytest.approx(np.max(np.abs(np.linalg.eigvals(W))), rel=1e-12)
    assert sigma == pytest.approx(np.linalg.svd(W, compute_uv=False)[0], rel=1e-12)
    rho_big, sigma_big = spectral_stats(W * 1e200)  # W^T W would overflow unscaled
    assert rho_big == pytest.approx(rho * 1e200, rel=1e-12) and sigma_big == pytest.approx(sigma * 1e200, rel=1e-12)
    lstm = rng.standard_normal((120, 30))
    blocks = [lstm[g * 30 : (g + 1) * 30] for g in range(4)]
    assert spectral_stats(lstm, 4)[1] == pytest.approx(max(np.linalg.norm(b, 2) for b in blocks), rel=1e-12)
    W[3, 4] = np.nan
    assert all(np.isnan(spectral_stats(W)))
    assert spectral_stats(np.zeros((5, 5))) == (0.0, 0.0)
    assert combine_norms([3.0, 4.0]) == pytest.approx(5.0)
    assert combine_norms([3e200, 4e200]) == pytest.approx(5e200)
    assert combine_norms([1.0, np.inf]) == np.inf and np.isnan(combine_norms([np.nan, np.inf]))


def test_parameter_metrics_cache_and_spectral_switch():
    from gradscope.engine import parameter_metrics
    from gradscope.engine.metrics import spectral_cache

    spec = ModelSpec(cell="rnn", layers=2, input_size=3, hidden_size=9, output_size=2, dtype="float64")
    params = init_params(spec, InitSpec(), np.random.default_rng(12))
    grads = params.copy()
    first = parameter_metrics(spec, params, grads)
    misses = spectral_cache.misses
    again = parameter_metrics(spec, params.copy(), grads)  # same content, new arrays: cache hits
    assert spectral_cache.misses == misses
    np.testing.assert_array_equal(first["spectral_radius"], again["spectral_radius"])
    params.layers[1].W_hh[0, 0] += 0.5  # changed: recomputed, and right
    changed = parameter_metrics(spec, params, grads)
    assert spectral_cache.misses == misses + 1
    assert changed["spectral_radius"][1] == pytest.approx(spectral_stats(params.layers[1].W_hh)[0], rel=1e-12)
    assert changed["spectral_radius"][0] == first["spectral_radius"][0]
    quick = parameter_metrics(spec, params, grads, spectral=False)
    assert "spectral_radius" not in quick and "sigma_max" not in quick
    np.testing.assert_array_equal(quick["grad_norm_W_hh"], changed["grad_norm_W_hh"])
    assert quick["grad_norm_b_y"] == pytest.approx(np.linalg.norm(grads.b_y))


@pytest.mark.parametrize(
    "kind",
    [
        dict(cell="lstm", layers=2),
        dict(cell="gru", layers=2, bidirectional=True),
        dict(cell="rnn", layers=1, architecture="seq2seq"),
    ],
)
def test_parameter_metrics_take_the_pass_gradient_norms(kind):
    """The trainer hands parameter_metrics the norms the compiled pass computed (StepResult.extras): they must be
    the norms of the gradient arrays, name by name, as Params.norms computes them from the arrays."""
    from gradscope.engine import bptt, parameter_metrics

    spec = ModelSpec(input_size=3, hidden_size=7, output_size=2, dtype="float32", **kind)
    rng = np.random.default_rng(5)
    params = init_params(spec, InitSpec(), rng)
    T, B = 6, 4
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    extra = {"decoder_x": rng.standard_normal((T, B, 3)).astype(np.float32)} if spec.architecture == "seq2seq" else {}
    result = bptt(spec, params, x, rng.standard_normal((T, B, 2)).astype(np.float32), np.ones((T, B)), "mse", **extra)
    given = parameter_metrics(spec, params, result.grads, spectral=False, grad_norms=result.extras["grad_norms"])
    plain = parameter_metrics(spec, params, result.grads, spectral=False)
    assert given.keys() == plain.keys()
    for name in plain:
        np.testing.assert_allclose(given[name], plain[name], rtol=1e-12, err_msg=name)
