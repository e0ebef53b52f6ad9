"""NaN and Inf are data: a pass that produces one returns everything it computed, and result.nonfinite
names the first one in the order metrics.first_nonfinite defines (forward layer by layer and step by
step, then the loss, then backward from the last step and the top layer, then parameter gradients).

The overflow runs are engineered so the location is known independently: the same model run in float64
(NumPy twin) says at which layer and step a float32 value must exceed the float32 range, with a margin
of 100x on either side so rounding cannot move it.
"""

import dataclasses

import numpy as np
import pytest

from gradscope.engine import InitSpec, LayerParams, ModelSpec, NonFinite, Params, bptt, init_params, reference

F32_MAX = float(np.finfo(np.float32).max)


def _as64(p):
    return LayerParams(p.W_hx.astype(np.float64), p.W_hh.astype(np.float64), p.b_h.astype(np.float64))


def _linear_two_layer(rng, gain_top, n=3, d=4, k=2):
    """A 2-layer linear RNN: layer 0 contracting (W_hh = 0.5 I), layer 1 W_hx = 0.1 I, W_hh = gain_top I,
    readout W_yh = the first k units."""
    spec = ModelSpec(cell="rnn", activation="linear", input_size=n, hidden_size=d, layers=2, output_size=k)
    params = init_params(spec, InitSpec(recurrent_scale=1.0), rng)
    eye = np.eye(d, dtype=np.float32)
    params.layers[0].W_hh[...] = 0.5 * eye
    params.layers[1].W_hx[...] = 0.1 * eye
    params.layers[1].W_hh[...] = gain_top * eye
    params.W_yh[...] = np.eye(k, d, dtype=np.float32)
    return spec, params


def test_forward_overflow_is_located_and_everything_before_it_is_kept():
    rng = np.random.default_rng(0)
    spec, params = _linear_two_layer(rng, gain_top=1000.0)
    T, B = 20, 2
    x = (0.03 * rng.standard_normal((T, B, 3))).astype(np.float32)  # scaled to keep off the boundary
    target = rng.standard_normal((T, B, 2)).astype(np.float32)
    mask = np.ones((T, B))
    # where must float32 overflow?  The float64 twin of the same model, step by step: max |h^(1)_t|
    H0, _ = reference.rnn_forward(x.astype(np.float64), _as64(params.layers[0]), "linear")
    H1, _ = reference.rnn_forward(H0, _as64(params.layers[1]), "linear")
    peak = np.abs(H1).max(axis=(1, 2))  # (T,)
    t_star = next(t for t in range(T) if peak[t] > F32_MAX)
    assert peak[t_star] > 10 * F32_MAX and peak[t_star - 1] < F32_MAX / 10  # rounding cannot move it
    assert np.abs(H0).max() < 1e3  # the bottom layer stays finite

    result = bptt(spec, params, x, target, mask, "mse")
    assert result.nonfinite == NonFinite("h", 1, t_star)
    m = result.metrics
    assert np.all(np.isfinite(m["h_norm"][0]))  # layer 0: computed and kept
    assert np.all(np.isfinite(m["h_norm"][1, :t_star]))  # layer 1 before the overflow
    assert not np.isfinite(m["h_norm"][1, t_star])
    ref64 = [reference.row_norm_mean(H1[t]) for t in range(t_star)]
    np.testing.assert_allclose(m["h_norm"][1, :t_star], ref64, rtol=1e-4)
    np.testing.assert_allclose(m["h_norm"][0], [reference.row_norm_mean(h) for h in H0], rtol=1e-4)
    assert not np.isfinite(result.loss)
    assert "layer 1" in str(result.nonfinite) and f"t = {t_star}" in str(result.nonfinite)


def test_backward_overflow_is_located_with_a_finite_forward_pass():
    """Inputs of 1e-20 keep the forward pass small; a target of 2e31 at the last step gives dL/dy = -1e31
    (B = 2), which the top layer's W_hh = 1000 I multiplies by 1000 per step back:
    |dL/dh^(1)_t| = 10^(31 + 3k) at k steps back, 1e37 (finite, 34x below the float32 maximum) at k = 2
    and 1e40 (overflow) at k = 3.  Layer 0 gets 0.1 of that, so layer 1 at t = T-4 is the first."""
    rng = np.random.default_rng(1)
    spec, params = _linear_two_layer(rng, gain_top=1000.0)
    T, B = 12, 2
    x = (rng.standard_normal((T, B, 3)) * 1e-20).astype(np.float32)
    target = np.zeros((T, B, 2), np.float32)
    target[-1] = 2e31
    mask = np.zeros((T, B))
    mask[-1] = 1.0
    p64 = Params([_as64(p) for p in params.layers], params.W_yh.astype(np.float64), params.b_y.astype(np.float64))
    spec64 = dataclasses.replace(spec, dtype="float64")
    want = reference.bptt(spec64, p64, x.astype(np.float64), target.astype(np.float64), mask, "mse")
    assert want.nonfinite is None and np.isfinite(want.loss)

    result = bptt(spec, params, x, target, mask, "mse")
    assert np.all(np.isfinite(result.metrics["h_norm"])) and np.isfinite(result.loss)
    assert result.loss == pytest.approx(want.loss, rel=1e-5)
    assert result.nonfinite == NonFinite("grad_h", 1, T - 4)
    kept = slice(T - 3, T)
    np.testing.assert_allclose(result.metrics["grad_h_norm"][:, kept], want.metrics["grad_h_norm"][:, kept], rtol=1e-4)
    assert result.metrics["grad_h_norm"][1, T - 3] == pytest.approx(np.sqrt(2) * 1e37, rel=1e-4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_nan_in_the_input_is_located_at_its_step(cell):
    rng = np.random.default_rng(2)
    spec = ModelSpec(cell=cell, activation="tanh", input_size=3, hidden_size=4, layers=2, output_size=2)
    params = init_params(spec, InitSpec(), rng)
    x = rng.standard_normal((8, 2, 3)).astype(np.float32)
    x[5, 1, 0] = np.nan
    result = bptt(spec, params, x, rng.standard_normal((8, 2, 2)).astype(np.float32), np.ones((8, 2)), "mse")
    assert result.nonfinite == NonFinite("c" if cell == "lstm" else "h", 0, 5)
    assert np.all(np.isfinite(result.metrics["h_norm"][0, :5]))
    assert np.all(np.isfinite(result.metrics["h_norm"][1, :5]))
    assert np.isnan(result.metrics["h_norm"][1, 5])


def test_nan_readout_is_a_loss_at_the_first_step_even_where_unscored():
    rng = np.random.default_rng(3)
    spec = ModelSpec(cell="rnn", activation="tanh", input_size=3, hidden_size=4, output_size=5)
    params = init_params(spec, InitSpec(), rng)
    params.W_yh[2, 1] = np.nan
    mask = np.zeros((6, 2))
    mask[-1] = 1.0  # step 0 is not scored: 0 * NaN is NaN
    result = bptt(
        spec, params, rng.standard_normal((6, 2, 3)).astype(np.float32), rng.integers(0, 5, size=(6, 2)), mask, "ce"
    )
    assert result.nonfinite == NonFinite("loss", None, 0)
    assert np.all(np.isfinite(result.metrics["h_norm"]))


def test_large_finite_float64_values_are_not_mistaken_for_overflow():
    """Norms of float64 states near 1e200 are finite (the sum of squares is rescaled, not overflowed)."""
    rng = np.random.default_rng(4)
    spec = ModelSpec(cell="rnn", activation="linear", input_size=2, hidden_size=3, output_size=2, dtype="float64")
    params = init_params(spec, InitSpec(), rng)
    params.layers[0].W_hx[...] = 1e200
    params.layers[0].W_hh[...] = 0.0
    x = np.ones((3, 1, 2))
    result = bptt(spec, params, x, np.zeros((3, 1, 2)), np.zeros((3, 1)), "mse")
    np.testing.assert_allclose(result.metrics["h_norm"][0], 2e200 * np.sqrt(3), rtol=1e-14)
    assert np.isfinite(result.metrics["h_norm"]).all()
    with np.errstate(over="ignore", invalid="ignore"):  # its loss overflows: that is data
        ref = reference.bptt(spec, params, x, np.zeros((3, 1, 2)), np.zeros((3, 1)), "mse")
    np.testing.assert_allclose(ref.metrics["h_norm"], result.metrics["h_norm"], rtol=1e-14)


def test_nonfinite_parameter_gradient_is_named():
    metrics = {"h_norm": np.ones((2, 3)), "grad_h_norm": np.ones((2, 3)), "loss_t": np.zeros(3)}
    rng = np.random.default_rng(5)
    spec = ModelSpec(cell="rnn", layers=2, input_size=2, hidden_size=3, output_size=2)
    grads = init_params(spec, InitSpec(), rng)
    from gradscope.engine import first_nonfinite

    assert first_nonfinite(metrics, grads) is None
    grads.layers[1].W_hh[0, 0] = np.inf
    assert first_nonfinite(metrics, grads) == NonFinite("grad layer1.W_hh", 1, None)
    grads.b_y[0] = np.nan
    assert first_nonfinite(metrics, grads) == NonFinite("grad layer1.W_hh", 1, None)  # the earlier one
    metrics["grad_h_norm"][0, 1] = np.inf
    metrics["grad_h_norm"][1, 0] = np.nan
    assert first_nonfinite(metrics, grads) == NonFinite("grad_h", 0, 1)  # t = 1 is computed before t = 0


@pytest.mark.parametrize(
    ("shape", "bad", "row"),
    [
        ({"layers": 2, "bidirectional": True}, "layer0_reverse.W_hh", 1),  # int("0_reverse") raised here
        ({"layers": 2, "bidirectional": True}, "layer1_reverse.b_h", 3),
        ({"layers": 1, "architecture": "seq2seq", "decoder_input_size": 2}, "decoder.layer0.W_hx", 1),
        ({"layers": 1, "architecture": "seq2seq", "decoder_input_size": 2}, "encoder.layer0.W_hh", 0),
    ],
)
def test_nonfinite_parameter_gradient_of_any_stream_is_located_at_its_row(shape, bad, row):
    """``layer`` indexes the metrics' stream rows for every stream name (bidirectional and seq2seq too)."""
    from gradscope.engine import first_nonfinite

    spec = ModelSpec(cell="rnn", input_size=2, hidden_size=3, output_size=2, **shape)
    grads = init_params(spec, InitSpec(), np.random.default_rng(5))
    S = len(grads.stream_names())
    assert grads.stream_names()[row] == bad.rpartition(".")[0]
    metrics = {"h_norm": np.ones((S, 3)), "grad_h_norm": np.ones((S, 3)), "loss_t": np.zeros(3)}
    grads.arrays()[bad].flat[0] = np.nan
    assert first_nonfinite(metrics, grads) == NonFinite(f"grad {bad}", row, None)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
def test_all_nan_weights_run_to_the_end(cell, loss_kind):
    rng = np.random.default_rng(6)
    spec = ModelSpec(cell=cell, activation="relu", input_size=3, hidden_size=4, layers=3, output_size=2)
    params = init_params(spec, InitSpec(), rng)
    for _, a in params.named():
        a[...] = np.nan
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    target = rng.standard_normal((5, 2, 2)).astype(np.float32) if loss_kind == "mse" else rng.integers(0, 2, (5, 2))
    result = bptt(spec, params, x, target, np.ones((5, 2)), loss_kind)
    assert result.nonfinite == NonFinite("c" if cell == "lstm" else "h", 0, 0)
    assert np.isnan(result.loss) and all(np.isnan(g).all() for _, g in result.grads.named())
