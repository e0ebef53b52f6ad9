"""Bidirectional stacks: the compiled pass against its NumPy twin, PyTorch and central differences.

Streams are layer0, layer0_reverse, layer1, ...; a reverse stream's metrics are indexed by input position
(docs/trace_format.md, streams).  PyTorch checks: every parameter gradient and the loss against the fused module
(nn.RNN / nn.LSTM / nn.GRU with bidirectional=True, our weights copied in); every stream's state and gradient
norms per timestep against the same model unrolled from nn.*Cell with retain_grad on every state, so that
dL/dh_t is the TOTAL derivative, as the metrics define it.  Tolerances as in test_torch.py.
"""

import zlib

import numpy as np
import pytest

from gradscope.engine import InitSpec, ModelSpec, bptt, driver, init_params, reference
from gradscope.engine.cells import cell as describe

from ._helpers import make_batch, torch_loss

KINDS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
RTOL = {"float64": 1e-6, "float32": 1e-4}
GRAD_ATOL = {"float64": 1e-12, "float32": 1e-5}


def model(cell, activation, layers, dtype, rng, n=4, d=5, k=3):
    spec = ModelSpec(
        cell=cell,
        activation=activation,
        input_size=n,
        hidden_size=d,
        layers=layers,
        output_size=k,
        dtype=dtype,
        bidirectional=True,
    )
    params = init_params(spec, InitSpec(recurrent="pytorch", recurrent_scale=1.3), rng)
    for p in params.layers:  # every bias random: their gradients matter
        p.b_h[...] = rng.normal(0, 0.3, p.b_h.shape)
        if p.b_hh is not None:
            p.b_hh[...] = rng.normal(0, 0.3, p.b_hh.shape)
    params.b_y[...] = rng.normal(0, 0.3, params.b_y.shape)
    return spec, params


def close(got, want, dtype, name, atol=0.0):
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=atol, err_msg=name)


def test_streams_are_named_and_sized_as_the_contract_says():
    spec = ModelSpec(cell="lstm", input_size=3, hidden_size=4, layers=2, output_size=2, bidirectional=True)
    assert spec.streams == ("layer0", "layer0_reverse", "layer1", "layer1_reverse")
    params = init_params(spec, InitSpec(), np.random.default_rng(0))
    shapes = {name: a.shape for name, a in params.named()}
    assert shapes["layer0_reverse.W_hx"] == (16, 3) and shapes["layer1.W_hx"] == (16, 8)
    assert shapes["readout.W_yh"] == (2, 8)
    again = type(params).from_arrays(params.arrays())  # init_params.npz round trip
    assert [n for n, _ in again.named()] == [n for n, _ in params.named()]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell,activation", KINDS, ids=[describe(c).label(a) for c, a in KINDS])
def test_compiled_pass_matches_its_twin(cell, activation, layers, loss_kind, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{cell}{activation}{layers}{loss_kind}".encode()))
    spec, params = model(cell, activation, layers, dtype, rng)
    x, target, mask = make_batch(spec, 9, 3, loss_kind, rng)
    want = reference.bptt(spec, params, x, target, mask, loss_kind)
    for chunk in (None, 2):  # whole, and chunks of 2 with carries between
        got = driver.bptt(spec, params, x, target, mask, loss_kind, chunk=chunk)
        assert got.loss == pytest.approx(want.loss, rel=RTOL[dtype])
        assert set(got.metrics) == set(want.metrics)
        for name, w in want.metrics.items():
            assert got.metrics[name].shape == w.shape
            atol = 1e-6 if name.endswith(("_mean", "_sat", "_dead")) else 0.0
            close(got.metrics[name], w, dtype, name, atol=atol if dtype == "float32" else 1e-13 * bool(atol))
        for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
            close(g, w, dtype, name, atol=GRAD_ATOL[dtype] * np.max(np.abs(w)))
        assert got.grad_norm == pytest.approx(want.grad_norm, rel=RTOL[dtype])


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_shards_add_up_to_the_whole_batch(monkeypatch, cell, shards):
    from gradscope.engine import shards as sharding

    monkeypatch.setattr(sharding, "MIN_SHARD_FLOPS", 0)
    monkeypatch.setattr(sharding, "MIN_SHARD_ROWS", 2)
    rng = np.random.default_rng(3)
    spec, params = model(cell, "tanh", 2, "float64", rng)
    x, target, mask = make_batch(spec, 7, 7, "ce", rng)
    got = bptt(spec, params, x, target, mask, "ce", shards=shards, threads=2)
    assert got.extras["shards"] == shards
    want = reference.bptt(spec, params, x, target, mask, "ce")
    for name, w in want.metrics.items():
        close(got.metrics[name], w, "float64", name, atol=1e-13)
    for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
        close(g, w, "float64", name, atol=1e-12 * np.max(np.abs(w)))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_gradient_entry_matches_central_differences(cell):
    rng = np.random.default_rng(11)
    spec, params = model(cell, "tanh", 2, "float64", rng, n=2, d=2, k=2)
    x, target, mask = make_batch(spec, 4, 2, "mse", rng)
    grads = bptt(spec, params, x, target, mask, "mse").grads
    for (name, w), (_, g) in zip(params.named(), grads.named()):
        fd = np.empty_like(w)
        for index in np.ndindex(w.shape):
            original = w[index]
            e = 1e-6 * max(1.0, abs(original))
            w[index] = original + e
            up = bptt(spec, params, x, target, mask, "mse").loss
            w[index] = original - e
            down = bptt(spec, params, x, target, mask, "mse").loss
            w[index] = original
            fd[index] = (up - down) / (2 * e)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9, err_msg=name)


# ----------------------------------------------------------------------------------------------- PyTorch
def _torch_modules(torch, spec, params):
    """The fused module and, per stream, a cell of its own, both holding our weights."""
    nn = torch.nn
    dt = torch.float64 if spec.dtype == "float64" else torch.float32
    d = spec.hidden_size
    kind = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[spec.cell]
    extra = {"nonlinearity": spec.activation} if spec.cell == "rnn" else {}
    fused = kind(spec.input_size, d, num_layers=spec.layers, bidirectional=True, dtype=dt, **extra)
    cell_kind = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[spec.cell]
    cells = []
    with torch.no_grad():
        for stream, p in zip(spec.streams, params.layers):
            l, suffix = stream[5:].split("_")[0], "_reverse" if stream.endswith("_reverse") else ""
            b_hh = torch.tensor(p.b_hh) if p.b_hh is not None else torch.zeros(p.b_h.shape, dtype=dt)
            c = cell_kind(spec.layer_input_size(int(l)), d, dtype=dt, **extra)
            for module, tail in ((fused, f"_l{l}{suffix}"), (c, "")):
                getattr(module, f"weight_ih{tail}").copy_(torch.tensor(p.W_hx))
                getattr(module, f"weight_hh{tail}").copy_(torch.tensor(p.W_hh))
                getattr(module, f"bias_ih{tail}").copy_(torch.tensor(p.b_h))
                getattr(module, f"bias_hh{tail}").copy_(b_hh)
            cells.append(c)
    return fused, cells


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell,activation", KINDS, ids=[describe(c).label(a) for c, a in KINDS])
def test_engine_matches_pytorch(torch, cell, activation, layers, loss_kind, dtype):
    rng = np.random.default_rng(zlib.crc32(f"torch{cell}{activation}{layers}{loss_kind}".encode()))
    spec, params = model(cell, activation, layers, dtype, rng)
    T, B, d = 8, 3, spec.hidden_size
    x, target, mask = make_batch(spec, T, B, loss_kind, rng)
    result = bptt(spec, params, x, target, mask, loss_kind)
    fused, cells = _torch_modules(torch, spec, params)
    W_yh = torch.tensor(params.W_yh, requires_grad=True)
    b_y = torch.tensor(params.b_y, requires_grad=True)

    # gradients: the fused module
    out, _ = fused(torch.tensor(x))
    loss = torch_loss(torch, out @ W_yh.T + b_y, target, mask, loss_kind)
    loss.backward()
    assert result.loss == pytest.approx(loss.item(), rel=RTOL[dtype])
    names = {"W_hx": "weight_ih", "W_hh": "weight_hh", "b_h": "bias_ih", "b_hh": "bias_hh"}
    for name, g in result.grads.named():
        stream, array = name.split(".")
        if stream == "readout":
            want = (W_yh if array == "W_yh" else b_y).grad
        else:
            l, suffix = stream[5:].split("_")[0], "_reverse" if stream.endswith("_reverse") else ""
            want = getattr(fused, f"{names[array]}_l{l}{suffix}").grad
        want = want.numpy()
        close(g, want, dtype, name, atol=GRAD_ATOL[dtype] * np.max(np.abs(want)))

    # per-timestep norms: the same model unrolled, every state kept (reverse streams by input position)
    W_yh.grad = b_y.grad = None
    inputs = [torch.tensor(x[t]) for t in range(T)]
    states = {}
    for l in range(layers):
        outs = {}
        for r in range(2):
            c = cells[2 * l + r]
            h = torch.zeros(B, d, dtype=out.dtype)
            cs = torch.zeros(B, d, dtype=out.dtype)
            for t in range(T) if r == 0 else range(T - 1, -1, -1):
                if cell == "lstm":
                    h, cs = c(inputs[t], (h, cs))
                    cs.retain_grad()
                else:
                    h = c(inputs[t], h)
                h.retain_grad()
                states[2 * l + r, t] = (h, cs if cell == "lstm" else None)
                outs[r, t] = h
        inputs = [torch.cat([outs[0, t], outs[1, t]], dim=1) for t in range(T)]
    y = torch.stack(inputs) @ W_yh.T + b_y
    torch_loss(torch, y, target, mask, loss_kind).backward()

    def norms(v):
        return v.detach().to(torch.float64).norm(dim=1).mean().item()

    for s in range(2 * layers):
        for t in range(T):
            h, c = states[s, t]
            assert result.metrics["h_norm"][s, t] == pytest.approx(norms(h), rel=RTOL[dtype]), (s, t)
            assert result.metrics["grad_h_norm"][s, t] == pytest.approx(norms(h.grad), rel=RTOL[dtype]), (s, t)
            if c is not None:
                assert result.metrics["c_norm"][s, t] == pytest.approx(norms(c), rel=RTOL[dtype])
                assert result.metrics["grad_c_norm"][s, t] == pytest.approx(norms(c.grad), rel=RTOL[dtype])
