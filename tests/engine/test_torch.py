"""The Numba engine against PyTorch: every per-timestep metric, every parameter gradient and the
per-parameter metrics, for every cell kind, 1 to 3 layers, both losses, float64 and float32.

Tolerances.  float64: rtol 1e-6 (we see ~1e-13).  float32: rtol 1e-4.  Where an absolute floor is needed
it is stated next to the comparison:
- a gradient entry is a sum over T*B*units of products with both signs; its rounding error scales with
  the size of those products, not with the (possibly cancelled) sum, so entries are compared with
  atol = 1e-5 (float32) / 1e-12 (float64) times the largest entry of the same array;
- gate means of values in (-1, 1) can cancel to ~0: atol = 1e-6 (float32) / 1e-13 (float64), a few
  times the rounding of one activation;
- saturation and dead-unit shares count values against a threshold; an activation within a few ulp of
  the threshold can land on either side in two correct float32 implementations.  We count, from
  PyTorch's own values, how many sit that close and allow exactly that many flips.
Norms (h, c and their gradients) and the loss are compared with rtol only: they have no cancellation.
"""

import zlib

import numpy as np
import pytest

from gradscope.engine import bptt, parameter_metrics
from gradscope.engine.cells import cell as describe
from gradscope.engine.metrics import SAT_HIGH, SAT_LOW

from ._helpers import CELL_KINDS, label, make_batch, make_model, torch_pass

T, B = 9, 4
RTOL = {"float64": 1e-6, "float32": 1e-4}
GRAD_ATOL = {"float64": 1e-12, "float32": 1e-5}
MEAN_ATOL = {"float64": 1e-13, "float32": 1e-6}
NEAR = {"float64": 1e-12, "float32": 1e-6}  # "within a few ulp" of a threshold (ulp(0.95) = 6e-8 in float32)


def _allowed_flips(name, l, t, pre, act, d, dtype, cell="lstm"):
    """How many (example, unit) pairs of this metric sit so close to a threshold that rounding decides."""
    desc = describe(cell)
    near = NEAR[dtype]
    if name == "relu_dead":
        values = np.abs(pre[l, t].numpy().astype(np.float64))
        return int(np.sum(values <= near)), values.size
    a = act[l, t].numpy().astype(np.float64)
    tanh_like = name == "tanh_sat"
    if name.startswith("gate_"):
        gate = name.split("_")[1]
        q = desc.gates.index(gate)
        a = a[:, q * d : (q + 1) * d]
        tanh_like = desc.gate_kinds[gate] == "tanh"
    if tanh_like:
        a = np.abs(a)
    thresholds = [SAT_HIGH] if tanh_like else [SAT_LOW, SAT_HIGH]
    close = np.zeros(a.shape, dtype=bool)
    for th in thresholds:
        close |= np.abs(a - th) <= near
    return int(np.sum(close)), a.size


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell,activation", CELL_KINDS, ids=[label(*c) for c in CELL_KINDS])
def test_engine_matches_pytorch(torch, cell, activation, layers, loss_kind, dtype):
    seed = zlib.crc32(f"{cell}-{activation}-{layers}-{loss_kind}".encode())
    rng = np.random.default_rng(seed)
    spec, params = make_model(cell, activation, layers, dtype, rng)
    x, target, mask = make_batch(spec, T, B, loss_kind, rng)
    result = bptt(spec, params, x, target, mask, loss_kind, workspace={})
    assert result.extras["shards"] == 1
    check_against_pytorch(torch, spec, params, x, target, mask, loss_kind, result)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("cell,activation", [("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")])
def test_batch_shards_on_threads_match_pytorch(torch, monkeypatch, cell, activation, loss_kind, dtype):
    """The batch split over 3 threads (shards.shard_rows: rows 0-6, 7-13, 14-20), each shard's gradients
    and per-step means added up, against the whole batch in PyTorch.  d = 40 is no multiple of the packed
    panels' width, and 7 rows no multiple of the tile's: every edge of the recurrent products is used."""
    from gradscope.engine import shards

    monkeypatch.setattr(shards, "MIN_SHARD_FLOPS", 0)
    monkeypatch.setattr(shards, "MIN_SHARD_ROWS", 4)
    rng = np.random.default_rng(zlib.crc32(f"shards-{cell}-{loss_kind}-{dtype}".encode()))
    spec, params = make_model(cell, activation, 2, dtype, rng, n=5, d=40, k=3, recurrent_scale=1.0)
    x, target, mask = make_batch(spec, 6, 21, loss_kind, rng)
    result = bptt(spec, params, x, target, mask, loss_kind, workspace={}, threads=3, shards=3)
    assert result.extras["shards"] == 3
    check_against_pytorch(torch, spec, params, x, target, mask, loss_kind, result)


def check_against_pytorch(torch, spec, params, x, target, mask, loss_kind, result):
    """Every metric, gradient and per-parameter metric of ``result`` against the same pass in PyTorch."""
    loss, metrics, loss_t, grads, pre, act = torch_pass(torch, spec, params, x, target, mask, loss_kind)
    dtype, layers, T = spec.dtype, spec.layers, x.shape[0]
    rtol = RTOL[dtype]

    assert result.nonfinite is None
    assert result.loss == pytest.approx(loss, rel=rtol)
    np.testing.assert_allclose(result.metrics["loss_t"], loss_t, rtol=rtol, atol=0, err_msg="loss_t")

    assert set(result.metrics) == set(metrics) | {"loss_t"}
    for name, expected in metrics.items():
        got = result.metrics[name]
        assert got.shape == (layers, T) and got.dtype == np.float64, name
        if name.endswith("_sat") or name == "relu_dead":
            for l in range(layers):
                for t in range(T):
                    flips, count = _allowed_flips(name, l, t, pre, act, spec.hidden_size, dtype, spec.cell)
                    assert abs(got[l, t] - expected[l, t]) <= flips / count + 1e-12, (name, l, t, flips)
        elif name.endswith("_mean"):
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=MEAN_ATOL[dtype], err_msg=name)
        else:
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=0, err_msg=name)

    for name, g in result.grads.named():
        assert g.dtype == spec.np_dtype, name
        scale = np.max(np.abs(grads[name]))
        np.testing.assert_allclose(g, grads[name], rtol=rtol, atol=GRAD_ATOL[dtype] * scale, err_msg=name)

    # per-parameter metrics: gradient norms (of torch's gradients) and W_hh's spectrum via torch.linalg
    pm = parameter_metrics(spec, params, result.grads)
    d = spec.hidden_size
    for l in range(layers):
        for short in describe(spec.cell).parameters:
            ref = np.linalg.norm(grads[f"layer{l}.{short}"].astype(np.float64))
            assert pm[f"grad_norm_{short}"][l] == pytest.approx(ref, rel=rtol)
        W = torch.tensor(params.layers[l].W_hh, dtype=torch.float64)
        blocks = [W[g * d : (g + 1) * d] for g in range(spec.gates)]
        rho = max(torch.linalg.eigvals(b).abs().max().item() for b in blocks)
        sigma = max(torch.linalg.matrix_norm(b, ord=2).item() for b in blocks)
        assert pm["spectral_radius"][l] == pytest.approx(rho, rel=1e-6)
        assert pm["sigma_max"][l] == pytest.approx(sigma, rel=1e-6)
    assert pm["grad_norm_W_yh"] == pytest.approx(np.linalg.norm(grads["readout.W_yh"].astype(np.float64)), rel=rtol)
    assert pm["grad_norm_b_y"] == pytest.approx(np.linalg.norm(grads["readout.b_y"].astype(np.float64)), rel=rtol)
    total = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in grads.values()))
    assert result.grad_norm == pytest.approx(total, rel=rtol)
