"""The accuracy metric: the compiled pass's (engine/accuracy.py, from the top states left in its buffers) against
its NumPy twin's (from the twin's own logits) and against PyTorch (nn.RNN / nn.LSTM / nn.GRU, uni- and
bidirectional, our weights copied in, argmax of the outputs), with shards, ties, masks and NaN."""

import zlib

import numpy as np
import pytest

from gradscope.engine import InitSpec, ModelSpec, accuracy, bptt, init_params, reference

from ._helpers import make_batch

KINDS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def model(cell, activation, layers, dtype, bidirectional, rng, n=4, d=5, k=4):
    spec = ModelSpec(
        cell=cell,
        activation=activation,
        input_size=n,
        hidden_size=d,
        layers=layers,
        output_size=k,
        dtype=dtype,
        bidirectional=bidirectional,
    )
    params = init_params(spec, InitSpec(recurrent="pytorch", recurrent_scale=1.3, readout_scale=4.0), rng)
    for p in params.layers:
        p.b_h[...] = rng.normal(0, 0.3, p.b_h.shape)
        if p.b_hh is not None:
            p.b_hh[...] = rng.normal(0, 0.3, p.b_hh.shape)
    params.b_y[...] = rng.normal(0, 0.3, params.b_y.shape)
    return spec, params


def with_right_answers(spec, params, x, target, rng):
    """target with about half its entries replaced by the model's own argmax (twin logits, float64)."""
    p64 = params.astype(np.float64)
    H = _twin_top_states(spec, p64, x.astype(np.float64))
    predicted = np.argmax(H @ p64.W_yh.T + p64.b_y, axis=-1)  # (T, B)
    take = rng.random(target.shape) < 0.5
    return np.where(take, predicted, target)


def _twin_top_states(spec, params, x):
    """The top layer's states by position, from the NumPy twin's forward rules (reference._TWINS)."""
    twin = reference._TWINS[spec.cell]
    X = x
    for l in range(spec.layers):
        outs = []
        for r in range(spec.directions):
            H, _, _ = twin.forward(X[::-1].copy() if r else X, params.layers[l * spec.directions + r], spec.activation)
            outs.append(H[::-1] if r else H)
        X = np.concatenate(outs, axis=2)
    return X


# --------------------------------------------------------------------------------------------- the counting
def test_counts_ties_masks_nan_and_blocks(monkeypatch):
    W_yh, b_y = np.eye(3), np.zeros(3)
    H = np.array([[[1.0, 0.0, 0.0], [0.0, 2.0, 2.0]], [[0.0, 0.0, 5.0], [3.0, 1.0, 0.0]]])  # (T=2, B=2, 3)
    target = np.array([[0, 2], [2, 1]])
    mask = np.array([[1.0, 1.0], [0.5, 0.0]])  # (1, 1) unscored; a weight still scores
    # (0,0) right; (0,1) a tie between 1 and 2 goes to 1: wrong; (1,0) right; (1,1) unscored
    assert accuracy.counts(H, W_yh, b_y, target, mask) == (2, 3, False)
    assert accuracy.accuracy(H, W_yh, b_y, target, mask) == pytest.approx(2 / 3)
    assert np.isnan(accuracy.accuracy(H, W_yh, b_y, target, np.zeros((2, 2))))  # nothing scored
    H_nan = H.copy()
    H_nan[1, 1, 0] = np.nan  # at the unscored position: no effect
    assert accuracy.counts(H_nan, W_yh, b_y, target, mask) == (2, 3, False)
    H_nan[0, 0, 2] = np.nan
    assert np.isnan(accuracy.accuracy(H_nan, W_yh, b_y, target, mask))
    assert np.isnan(accuracy.share([(3, 4, False), (0, 0, True)]))
    assert accuracy.share([(3, 4, False), (1, 4, False)]) == 0.5
    rng = np.random.default_rng(0)
    H, target = rng.normal(size=(50, 7, 3)), rng.integers(0, 3, (50, 7))
    mask = (rng.random((50, 7)) < 0.6).astype(float)
    whole = accuracy.counts(H, W_yh, b_y, target, mask)
    monkeypatch.setattr(accuracy, "ROWS_PER_BLOCK", 10)  # blocks of one step
    assert accuracy.counts(H, W_yh, b_y, target, mask) == whole
    assert whole[0] == np.sum((H.argmax(-1) == target) & (mask != 0))


def test_only_ce_passes_asked_for_it_carry_an_accuracy():
    rng = np.random.default_rng(1)
    spec, params = model("lstm", "tanh", 1, "float64", False, rng)
    for loss_kind in ("mse", "ce"):
        x, target, mask = make_batch(spec, 5, 3, loss_kind, rng)
        for backend in ("numba", "numpy"):
            assert "accuracy" not in bptt(spec, params, x, target, mask, loss_kind, backend=backend).metrics
            asked = bptt(spec, params, x, target, mask, loss_kind, backend=backend, accuracy=True).metrics
            assert ("accuracy" in asked) == (loss_kind == "ce"), (loss_kind, backend)


# ---------------------------------------------------------------------------------- kernel against twin
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell,activation", KINDS)
def test_compiled_pass_and_twin_agree(cell, activation, layers, bidirectional, dtype):
    rng = np.random.default_rng(zlib.crc32(f"acc{cell}{activation}{layers}{bidirectional}{dtype}".encode()))
    spec, params = model(cell, activation, layers, dtype, bidirectional, rng)
    x, target, mask = make_batch(spec, 9, 6, "ce", rng)
    target = with_right_answers(spec, params, x, target, rng)
    got = bptt(spec, params, x, target, mask, "ce", accuracy=True).metrics["accuracy"]
    want = reference.bptt(spec, params, x, target, mask, "ce", accuracy=True).metrics["accuracy"]
    scored = int(np.count_nonzero(mask))
    assert 0.3 < want < 1  # neither chance nor everything
    # the two pass' states agree to rounding: an argmax flips only at a near-tie, never seen in float64
    assert abs(got - want) * scored <= (0 if dtype == "float64" else 1)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_shards_count_their_rows_once(monkeypatch, cell, bidirectional):
    from gradscope.engine import shards as sharding

    monkeypatch.setattr(sharding, "MIN_SHARD_FLOPS", 0)
    monkeypatch.setattr(sharding, "MIN_SHARD_ROWS", 2)
    rng = np.random.default_rng(7)
    spec, params = model(cell, "tanh", 2, "float64", bidirectional, rng)
    x, target, mask = make_batch(spec, 7, 9, "ce", rng)
    target = with_right_answers(spec, params, x, target, rng)
    want = reference.bptt(spec, params, x, target, mask, "ce", accuracy=True).metrics["accuracy"]
    for shards in (2, 3):
        got = bptt(spec, params, x, target, mask, "ce", shards=shards, threads=2, accuracy=True)
        assert got.extras["shards"] == shards
        assert got.metrics["accuracy"] == want


# ----------------------------------------------------------------------------------------------- PyTorch
def _torch_model(torch, spec, params):
    """nn.RNN / nn.LSTM / nn.GRU (bidirectional as the spec says) holding our weights."""
    nn = torch.nn
    dt = torch.float64 if spec.dtype == "float64" else torch.float32
    kind = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[spec.cell]
    extra = {"nonlinearity": spec.activation} if spec.cell == "rnn" else {}
    module = kind(
        spec.input_size, spec.hidden_size, num_layers=spec.layers, bidirectional=spec.bidirectional, dtype=dt, **extra
    )
    with torch.no_grad():
        for stream, p in zip(spec.streams, params.layers):
            l, suffix = stream[5:].split("_")[0], "_reverse" if stream.endswith("_reverse") else ""
            tail = f"_l{l}{suffix}"
            getattr(module, f"weight_ih{tail}").copy_(torch.tensor(p.W_hx))
            getattr(module, f"weight_hh{tail}").copy_(torch.tensor(p.W_hh))
            getattr(module, f"bias_ih{tail}").copy_(torch.tensor(p.b_h))
            b_hh = torch.tensor(p.b_hh) if p.b_hh is not None else torch.zeros(p.b_h.shape, dtype=dt)
            getattr(module, f"bias_hh{tail}").copy_(b_hh)
    return module


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell,activation", KINDS)
def test_accuracy_matches_pytorch(torch, cell, activation, layers, bidirectional, dtype):
    rng = np.random.default_rng(zlib.crc32(f"torch-acc{cell}{activation}{layers}{bidirectional}".encode()))
    spec, params = model(cell, activation, layers, dtype, bidirectional, rng)
    x, target, mask = make_batch(spec, 10, 5, "ce", rng)
    target = with_right_answers(spec, params, x, target, rng)
    got = bptt(spec, params, x, target, mask, "ce", accuracy=True).metrics["accuracy"]
    with torch.no_grad():
        out, _ = _torch_model(torch, spec, params)(torch.tensor(x))  # (T, B, D d)
        y = out @ torch.tensor(params.W_yh).T + torch.tensor(params.b_y)  # (T, B, k)
        right = (y.argmax(dim=2) == torch.tensor(target)).numpy()
    want = right[mask != 0].mean()
    assert 0.3 < want < 1
    assert abs(got - want) * np.count_nonzero(mask) <= (0 if dtype == "float64" else 1)


# ----------------------------------------------------------------------------------------------- seq2seq
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell,activation", KINDS)
def test_seq2seq_decoder_accuracy_matches_twin_and_pytorch(torch, cell, activation, layers, bidirectional):
    """The decoder's accuracy (the readout reads the decoder's top layer) against the twin and an encoder-decoder
    unrolled from nn.*Cell (the encoder's final states summed into the decoder's initial ones)."""
    from .test_seq2seq import _cells, batch as s2s_batch, model as s2s_model

    rng = np.random.default_rng(zlib.crc32(f"s2s-acc{cell}{activation}{layers}{bidirectional}".encode()))
    spec, params = s2s_model(cell, activation, layers, "float64", rng, bidirectional, k=4)
    params.W_yh[...] *= 4  # confident logits: few near-ties
    x, decoder_x, target, mask = s2s_batch(spec, "ce", rng, T_src=6, T_tgt=8, B=5)
    cells = _cells(torch, spec, params)
    L, D, d, B = layers, spec.directions, spec.hidden_size, x.shape[1]
    lstm = cell == "lstm"

    def run(c, inputs, order, h, cs):
        outs = {}
        for t in order:
            h, cs = c(inputs[t], (h, cs)) if lstm else (c(inputs[t], h), cs)
            outs[t] = h
        return outs, h, cs

    with torch.no_grad():
        zero = torch.zeros(B, d, dtype=torch.float64)
        inputs, finals = [torch.tensor(v) for v in x], []
        for l in range(L):
            outs, ends = [], []
            for r in range(D):
                order = range(len(inputs)) if r == 0 else range(len(inputs) - 1, -1, -1)
                o, h, cs = run(cells[l * D + r], inputs, order, zero, zero)
                outs.append(o)
                ends.append((h, cs))
            finals.append(ends)
            inputs = [torch.cat([o[t] for o in outs], dim=1) for t in range(len(inputs))]
        inputs = [torch.tensor(v) for v in decoder_x]
        for l in range(L):
            h0, c0 = sum(e[0] for e in finals[l]), sum(e[1] for e in finals[l])
            o, _, _ = run(cells[L * D + l], inputs, range(len(inputs)), h0, c0)
            inputs = [o[t] for t in range(len(inputs))]
        y = torch.stack(inputs) @ torch.tensor(params.W_yh).T + torch.tensor(params.b_y)  # (T_tgt, B, k)
        predicted = y.argmax(dim=2).numpy()  # (T_tgt, B)
    target = np.where(rng.random(target.shape) < 0.5, predicted, target)  # about half of them right
    want = (predicted == target)[mask != 0].mean()
    got = bptt(spec, params, x, target, mask, "ce", decoder_x=decoder_x, accuracy=True).metrics["accuracy"]
    twin = bptt(spec, params, x, target, mask, "ce", decoder_x=decoder_x, backend="numpy", accuracy=True)
    assert "accuracy" not in bptt(spec, params, x, target, mask, "ce", decoder_x=decoder_x).metrics
    assert 0.3 < want < 1 and got == want == twin.metrics["accuracy"]
