"""Seq2seq encoder-decoders: the compiled pass against its NumPy twin, PyTorch and central differences.

Streams are encoder.layer0 (encoder.layer0_reverse), ..., then decoder.layer0, ...; metrics are (S, T) with
T = max(T_src, T_tgt) and NaN past a stream's length (docs/trace_format.md, streams).  PyTorch: the model
unrolled from nn.RNNCell / nn.LSTMCell / nn.GRUCell holding our weights, the decoder's cells started from
the encoder's final states (the sum of both directions' for a bidirectional encoder), retain_grad on every
state and on the decoder's initial states, so dL/dh_t is the TOTAL derivative and grad_bridge_norm is
||dL/dh^dec_{-1}||, as the contract defines them.
"""

import zlib

import numpy as np
import pytest

from gradscope.engine import InitSpec, ModelSpec, bptt, init_params
from gradscope.engine.cells import cell as describe

from ._helpers import torch_loss

KINDS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
RTOL = {"float64": 1e-6, "float32": 1e-4}
GRAD_ATOL = {"float64": 1e-12, "float32": 1e-5}
T_SRC, T_TGT, B = 7, 5, 3


def model(cell, activation, layers, dtype, rng, bidirectional=False, n=4, n_dec=3, d=5, k=3):
    spec = ModelSpec(
        cell=cell,
        activation=activation,
        input_size=n,
        hidden_size=d,
        layers=layers,
        output_size=k,
        dtype=dtype,
        bidirectional=bidirectional,
        architecture="seq2seq",
        decoder_input_size=n_dec,
    )
    params = init_params(spec, InitSpec(recurrent="pytorch", recurrent_scale=1.3), rng)
    for p in params.layers:  # every bias random: their gradients matter
        p.b_h[...] = rng.normal(0, 0.3, p.b_h.shape)
        if p.b_hh is not None:
            p.b_hh[...] = rng.normal(0, 0.3, p.b_hh.shape)
    params.b_y[...] = rng.normal(0, 0.3, params.b_y.shape)
    return spec, params


def batch(spec, loss_kind, rng, T_src=T_SRC, T_tgt=T_TGT, B=B):
    dt = spec.np_dtype
    x = rng.standard_normal((T_src, B, spec.input_size)).astype(dt)
    decoder_x = rng.standard_normal((T_tgt, B, spec.decoder_input_size)).astype(dt)
    if loss_kind == "mse":
        target = rng.standard_normal((T_tgt, B, spec.output_size)).astype(dt)
    else:
        target = rng.integers(0, spec.output_size, size=(T_tgt, B))
    mask = (rng.random((T_tgt, B)) < 0.7).astype(np.float64)
    mask[-1] = 1.0
    return x, decoder_x, target, mask


def close(got, want, dtype, name, atol=0.0):
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=atol, err_msg=name)


def test_streams_parameters_and_padding_are_as_the_contract_says():
    rng = np.random.default_rng(0)
    spec, params = model("lstm", "tanh", 2, "float64", rng, bidirectional=True)
    assert spec.streams == (
        "encoder.layer0",
        "encoder.layer0_reverse",
        "encoder.layer1",
        "encoder.layer1_reverse",
        "decoder.layer0",
        "decoder.layer1",
    )
    shapes = {name: a.shape for name, a in params.named()}
    d = spec.hidden_size
    assert shapes["encoder.layer0.W_hx"] == (4 * d, 4) and shapes["encoder.layer1.W_hx"] == (4 * d, 2 * d)
    assert shapes["decoder.layer0.W_hx"] == (4 * d, 3) and shapes["decoder.layer1.W_hx"] == (4 * d, d)
    assert shapes["readout.W_yh"] == (3, d)  # the decoder is unidirectional
    again = type(params).from_arrays(params.arrays())  # init_params.npz round trip
    assert again.stream_names() == spec.streams
    x, decoder_x, target, mask = batch(spec, "mse", rng)
    result = bptt(spec, params, x, target, mask, "mse", decoder_x=decoder_x)
    M = result.metrics["grad_h_norm"]
    assert M.shape == (6, T_SRC)
    assert np.all(np.isfinite(M[:4])) and np.all(np.isfinite(M[4:, :T_TGT])) and np.all(np.isnan(M[4:, T_TGT:]))
    assert result.metrics["grad_bridge_norm"].shape == (2,) and result.metrics["grad_bridge_c_norm"].shape == (2,)
    assert result.nonfinite is None  # padding is not data


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell,activation", KINDS, ids=[describe(c).label(a) for c, a in KINDS])
def test_compiled_pass_matches_its_twin(cell, activation, layers, bidirectional, dtype):
    rng = np.random.default_rng(zlib.crc32(f"s2s{cell}{activation}{layers}{bidirectional}".encode()))
    spec, params = model(cell, activation, layers, dtype, rng, bidirectional)
    for loss_kind in ("mse", "ce"):
        x, decoder_x, target, mask = batch(spec, loss_kind, rng)
        got = bptt(spec, params, x, target, mask, loss_kind, decoder_x=decoder_x)
        want = bptt(spec, params, x, target, mask, loss_kind, decoder_x=decoder_x, backend="numpy")
        assert got.loss == pytest.approx(want.loss, rel=RTOL[dtype])
        assert set(got.metrics) == set(want.metrics)
        for name, w in want.metrics.items():
            atol = 1e-6 if name.endswith(("_mean", "_sat", "_dead")) else 0.0
            close(got.metrics[name], w, dtype, name, atol=atol if dtype == "float32" else 1e-13 * bool(atol))
        for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
            close(g, w, dtype, name, atol=GRAD_ATOL[dtype] * np.max(np.abs(w)))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_gradient_entry_matches_central_differences(cell, bidirectional):
    rng = np.random.default_rng(17)
    spec, params = model(cell, "tanh", 2, "float64", rng, bidirectional, n=2, n_dec=2, d=2, k=2)
    x, decoder_x, target, mask = batch(spec, "mse", rng, T_src=4, T_tgt=3, B=2)

    def loss():
        return bptt(spec, params, x, target, mask, "mse", decoder_x=decoder_x).loss

    grads = bptt(spec, params, x, target, mask, "mse", decoder_x=decoder_x).grads
    for (name, w), (_, g) in zip(params.named(), grads.named()):
        fd = np.empty_like(w)
        for index in np.ndindex(w.shape):
            original = w[index]
            e = 1e-6 * max(1.0, abs(original))
            w[index] = original + e
            up = loss()
            w[index] = original - e
            down = loss()
            w[index] = original
            fd[index] = (up - down) / (2 * e)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9, err_msg=name)


def test_the_bridge_gradient_matches_central_differences_of_the_initial_state():
    """grad_bridge_norm from a perturbation of what the bridge hands over: run the decoder's twin from
    h0 + e and h0 - e (the encoder's final state moved), one coordinate at a time."""
    from gradscope.engine.reference import readout_loss
    from gradscope.engine.reference.rnn import rnn_forward

    rng = np.random.default_rng(5)
    spec, params = model("rnn", "tanh", 1, "float64", rng, n=2, n_dec=2, d=3, k=2)
    x, decoder_x, target, mask = batch(spec, "mse", rng, T_src=4, T_tgt=3, B=2)
    result = bptt(spec, params, x, target, mask, "mse", decoder_x=decoder_x)
    H_enc, _ = rnn_forward(x, params.layers[0], "tanh")
    h0 = H_enc[-1].copy()  # (B, d)

    def loss(h):
        H, _ = rnn_forward(decoder_x, params.layers[1], "tanh", h)
        return readout_loss(H, params.W_yh, params.b_y, target, mask, "mse")[0]

    dh0 = np.empty_like(h0)
    for index in np.ndindex(h0.shape):
        up, down = h0.copy(), h0.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        dh0[index] = (loss(up) - loss(down)) / 2e-6
    assert result.metrics["grad_bridge_norm"][0] == pytest.approx(np.mean(np.linalg.norm(dh0, axis=1)), rel=1e-6)


# ----------------------------------------------------------------------------------------------- PyTorch
def _cells(torch, spec, params):
    """One nn.*Cell per stream, holding our weights (PyTorch's bias_ih = b_h, bias_hh = b_hh or 0)."""
    nn = torch.nn
    dt = torch.float64 if spec.dtype == "float64" else torch.float32
    kind = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[spec.cell]
    extra = {"nonlinearity": spec.activation} if spec.cell == "rnn" else {}
    cells = []
    with torch.no_grad():
        for stream, p in zip(spec.streams, params.layers):
            c = kind(spec.stream_input_size(stream), spec.hidden_size, dtype=dt, **extra)
            c.weight_ih.copy_(torch.tensor(p.W_hx))
            c.weight_hh.copy_(torch.tensor(p.W_hh))
            c.bias_ih.copy_(torch.tensor(p.b_h))
            c.bias_hh.copy_(torch.tensor(p.b_hh) if p.b_hh is not None else torch.zeros(p.b_h.shape, dtype=dt))
            cells.append(c)
    return cells


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell,activation", KINDS, ids=[describe(c).label(a) for c, a in KINDS])
def test_engine_matches_pytorch(torch, cell, activation, layers, bidirectional, loss_kind, dtype):
    rng = np.random.default_rng(zlib.crc32(f"s2storch{cell}{activation}{layers}{bidirectional}{loss_kind}".encode()))
    spec, params = model(cell, activation, layers, dtype, rng, bidirectional)
    x, decoder_x, target, mask = batch(spec, loss_kind, rng)
    result = bptt(spec, params, x, target, mask, loss_kind, decoder_x=decoder_x)
    cells = _cells(torch, spec, params)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    W_yh = torch.tensor(params.W_yh, requires_grad=True)
    b_y = torch.tensor(params.b_y, requires_grad=True)
    L, D, d = layers, spec.directions, spec.hidden_size
    lstm = cell == "lstm"

    def run(c, inputs, order, h, cs, keep):
        outs = {}
        for t in order:
            if lstm:
                h, cs = c(inputs[t], (h, cs))
                cs.retain_grad()
            else:
                h = c(inputs[t], h)
            h.retain_grad()
            keep[t] = (h, cs if lstm else None)
            outs[t] = h
        return outs, h, cs

    states: dict = {}
    finals = []
    inputs = [torch.tensor(x[t]) for t in range(T_SRC)]
    for l in range(L):
        outs, layer_finals = [], []
        for r in range(D):
            s = l * D + r
            keep = states.setdefault(s, {})
            zero = torch.zeros(B, d, dtype=tdt)
            order = range(T_SRC) if r == 0 else range(T_SRC - 1, -1, -1)
            o, h, cs = run(cells[s], inputs, order, zero, zero, keep)
            outs.append(o)
            layer_finals.append((h, cs))
        finals.append(layer_finals)
        inputs = [torch.cat([o[t] for o in outs], dim=1) for t in range(T_SRC)]
    inputs = [torch.tensor(decoder_x[t]) for t in range(T_TGT)]
    bridges = []
    for l in range(L):
        h0 = sum(f[0] for f in finals[l])
        c0 = sum(f[1] for f in finals[l]) if lstm else torch.zeros(B, d, dtype=tdt)
        h0.retain_grad()
        if lstm:
            c0.retain_grad()
        bridges.append((h0, c0))
        s = L * D + l
        o, _, _ = run(cells[s], inputs, range(T_TGT), h0, c0, states.setdefault(s, {}))
        inputs = [o[t] for t in range(T_TGT)]
    y = torch.stack(inputs) @ W_yh.T + b_y
    loss = torch_loss(torch, y, target, mask, loss_kind)
    loss.backward()
    assert result.loss == pytest.approx(loss.item(), rel=RTOL[dtype])

    names = {"W_hx": "weight_ih", "W_hh": "weight_hh", "b_h": "bias_ih", "b_hh": "bias_hh"}
    streams = list(spec.streams)
    for name, g in result.grads.named():
        stream, array = name.rsplit(".", 1)
        if stream == "readout":
            want = (W_yh if array == "W_yh" else b_y).grad
        else:
            want = getattr(cells[streams.index(stream)], names[array]).grad
        want = want.numpy()
        close(g, want, dtype, name, atol=GRAD_ATOL[dtype] * np.max(np.abs(want)))

    def norms(v):
        return v.detach().to(torch.float64).norm(dim=1).mean().item()

    for s, keep in states.items():
        for t, (h, c) in keep.items():
            assert result.metrics["h_norm"][s, t] == pytest.approx(norms(h), rel=RTOL[dtype]), (s, t)
            assert result.metrics["grad_h_norm"][s, t] == pytest.approx(norms(h.grad), rel=RTOL[dtype]), (s, t)
            if c is not None:
                assert result.metrics["c_norm"][s, t] == pytest.approx(norms(c), rel=RTOL[dtype])
                assert result.metrics["grad_c_norm"][s, t] == pytest.approx(norms(c.grad), rel=RTOL[dtype])
    for l, (h0, c0) in enumerate(bridges):
        assert result.metrics["grad_bridge_norm"][l] == pytest.approx(norms(h0.grad), rel=RTOL[dtype])
        if lstm:
            assert result.metrics["grad_bridge_c_norm"][l] == pytest.approx(norms(c0.grad), rel=RTOL[dtype])
