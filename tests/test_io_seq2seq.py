"""Exported seq2seq folders (docs/trace_format.md, "Format 2": seq2seq, streams, grad_bridge_norm).

Read back with NumPy and csv alone, as a user's script would, and iteration 0 recomputed in PyTorch from
init_params.npz and first_batch.npz alone: the encoder-decoder unrolled from nn.*Cell, the decoder started
from the encoder's final states (both directions summed), retain_grad on the decoder's initial states.
"""

import csv
import json

import numpy as np
import pytest

from gradscope import cli
from gradscope.config import loads
from gradscope.experiment import run_experiment
from gradscope.io import export_experiment, load_experiment_folder

EXPERIMENT = """
schema_version = 1
[experiment]
name = "seq2seq"
seed = 11
[defaults]
architecture = "seq2seq"
hidden_size = 5
dtype = "float64"
[defaults.init]
recurrent = "pytorch"
[defaults.task]
seq_len = 6
target_len = 4
batch_size = 3
[defaults.train]
iterations = 3
lr = 0.05
[[runs]]
name = "lstm, bidirectional encoder"
cell = "lstm"
layers = 2
bidirectional = true
task.input_size = 3
task.output_size = 2
[[runs]]
name = "gru translate reversed"
cell = "gru"
task.name = "translate"
task.symbols = 4
task.reverse_source = true
[[runs]]
name = "tanh"
activation = "tanh"
layers = 3
task.input_size = 3
task.output_size = 2
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    experiment = loads(EXPERIMENT)
    results = run_experiment(experiment, processes=1)
    out = export_experiment(tmp_path_factory.mktemp("s2s") / "out", experiment, results)
    return experiment, results, out


def _dir(out, run):
    summary = json.loads((out / "summary.json").read_text())
    return summary, out / next(r for r in summary["runs"] if r["name"] == run)["dir"]


def test_the_folder_holds_the_streams_lengths_and_decoder_inputs(exported):
    _, results, out = exported
    summary, folder = _dir(out, "lstm, bidirectional encoder")
    assert summary["format_version"] == 2
    with np.load(folder / "trace.npz") as npz:
        trace = {k: npz[k] for k in npz.files}
    assert list(trace["streams"]) == [
        "encoder.layer0",
        "encoder.layer0_reverse",
        "encoder.layer1",
        "encoder.layer1_reverse",
        "decoder.layer0",
        "decoder.layer1",
    ]
    assert list(trace["stream_len"]) == [6, 6, 6, 6, 4, 4]
    assert trace["grad_h_norm"].shape == (3, 6, 6) and np.all(np.isnan(trace["grad_h_norm"][:, 4:, 4:]))
    assert np.all(np.isfinite(trace["grad_h_norm"][:, :4])) and np.all(np.isfinite(trace["grad_h_norm"][:, 4:, :4]))
    assert trace["grad_bridge_norm"].shape == (3, 2) and trace["grad_bridge_c_norm"].shape == (3, 2)
    with np.load(folder / "first_batch.npz") as npz:
        assert npz["x"].shape == (6, 3, 3) and npz["decoder_x"].shape == (4, 3, 3)
        assert npz["target"].shape == (4, 3, 2) and npz["mask"].shape == (4, 3)
    with open(folder / "trace.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "grad_bridge_norm" and r["iteration"] == "0"]
    assert [r["layer"] for r in rows] == ["decoder.layer0", "decoder.layer1"]
    np.testing.assert_allclose([float(r["value"]) for r in rows], trace["grad_bridge_norm"][0], rtol=1e-15)
    _, reloaded = load_experiment_folder(out)
    assert [r.status for r in reloaded] == [r.status for r in results]


def test_a_reversed_source_is_what_the_encoder_read(exported):
    _, _, out = exported
    _, folder = _dir(out, "gru translate reversed")
    with np.load(folder / "first_batch.npz") as npz:
        x, decoder_x, target = npz["x"], npz["decoder_x"], npz["target"]
    source = np.argmax(x[::-1], axis=2)  # the encoder read it backwards: position 0 is the last source word
    dictionary = np.random.default_rng(4).permutation(4)  # docs: a fixed permutation seeded by the vocabulary
    np.testing.assert_array_equal(target, dictionary[source[:4]])
    np.testing.assert_array_equal(np.argmax(decoder_x[1:], axis=2), target[:-1])  # teacher forcing
    assert np.all(np.argmax(decoder_x[0], axis=1) == 4)  # the start code


def _torch_iteration_zero(torch, config, params, batch):
    nn = torch.nn
    cell, layers, bi = config["cell"], config["layers"], config.get("bidirectional", False)
    kind = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]
    extra = {"nonlinearity": config["activation"]} if cell == "rnn" else {}
    D = 2 if bi else 1
    cells = {}  # stream -> its nn.*Cell holding the exported arrays (bias_hh = the GRU's b_hh, else 0)

    def make(stream):
        W_hx, W_hh = params[f"{stream}.W_hx"], params[f"{stream}.W_hh"]
        c = kind(W_hx.shape[1], W_hh.shape[1], dtype=torch.float64, **extra)
        with torch.no_grad():
            c.weight_ih.copy_(torch.tensor(W_hx))
            c.weight_hh.copy_(torch.tensor(W_hh))
            c.bias_ih.copy_(torch.tensor(params[f"{stream}.b_h"]))
            c.bias_hh.copy_(torch.tensor(params.get(f"{stream}.b_hh", np.zeros_like(params[f"{stream}.b_h"]))))
        cells[stream] = c
        return c

    def run(c, xs, order, h, cs):
        outs = {}
        for t in order:
            if cell == "lstm":
                h, cs = c(xs[t], (h, cs))
            else:
                h = c(xs[t], h)
            outs[t] = h
        return outs, h, cs

    x, decoder_x = batch["x"], batch["decoder_x"]
    T_src, B, _ = x.shape
    T_tgt = decoder_x.shape[0]
    d = params["encoder.layer0.W_hh"].shape[1]
    xs = [torch.tensor(x[t]) for t in range(T_src)]
    finals = []
    for l in range(layers):
        outs, fin = [], []
        for r in range(D):
            stream = f"encoder.layer{l}" + ("_reverse" if r else "")
            zero = torch.zeros(B, d, dtype=torch.float64)
            o, h, cs = run(make(stream), xs, range(T_src) if r == 0 else range(T_src - 1, -1, -1), zero, zero)
            outs.append(o)
            fin.append((h, cs))
        finals.append(fin)
        xs = [torch.cat([o[t] for o in outs], dim=1) for t in range(T_src)]
    xs = [torch.tensor(decoder_x[t]) for t in range(T_tgt)]
    bridges = []
    for l in range(layers):
        h0 = sum(f[0] for f in finals[l])
        c0 = sum(f[1] for f in finals[l]) if cell == "lstm" else torch.zeros(B, d, dtype=torch.float64)
        h0.retain_grad()
        bridges.append(h0)
        o, _, _ = run(make(f"decoder.layer{l}"), xs, range(T_tgt), h0, c0)
        xs = [o[t] for t in range(T_tgt)]
    W_yh = torch.tensor(params["readout.W_yh"], requires_grad=True)
    b_y = torch.tensor(params["readout.b_y"], requires_grad=True)
    y = torch.stack(xs) @ W_yh.T + b_y
    w = torch.tensor(batch["mask"] / B)
    target = batch["target"]
    if target.ndim == 3:
        ell = 0.5 * ((y - torch.tensor(target)) ** 2).sum(dim=2)
    else:
        ell = torch.nn.functional.cross_entropy(
            y.reshape(-1, y.shape[2]), torch.tensor(target.reshape(-1)), reduction="none"
        ).reshape(w.shape)
    loss = (w * ell).sum()
    loss.backward()
    bridge = [float(h0.grad.norm(dim=1).mean()) for h0 in bridges]
    names = {"W_hx": "weight_ih", "W_hh": "weight_hh", "b_h": "bias_ih", "b_hh": "bias_hh"}
    grads = {"readout.W_yh": W_yh.grad, "readout.b_y": b_y.grad}
    for name in params:
        stream, array = name.rsplit(".", 1)
        if stream != "readout":
            grads[name] = getattr(cells[stream], names[array]).grad
    return loss.item(), grads, bridge


@pytest.mark.parametrize("run", ["lstm, bidirectional encoder", "gru translate reversed", "tanh"])
def test_iteration_zero_recomputed_in_pytorch_from_the_exported_arrays(torch, exported, run):
    _, _, out = exported
    summary, folder = _dir(out, run)
    config = next(r for r in summary["runs"] if r["name"] == run)["config"]
    config.setdefault("cell", "rnn")
    config.setdefault("activation", "relu")
    config.setdefault("layers", 1)
    with np.load(folder / "init_params.npz") as npz:
        params = {k: npz[k] for k in npz.files}
    with np.load(folder / "first_batch.npz") as npz:
        batch = {k: npz[k] for k in npz.files}
    with np.load(folder / "trace.npz") as npz:
        trace = {k: npz[k] for k in npz.files}
    loss, grads, bridge = _torch_iteration_zero(torch, config, params, batch)
    assert trace["loss"][0] == pytest.approx(loss, rel=1e-9)
    total = np.sqrt(sum(float((g**2).sum()) for g in grads.values()))
    assert trace["grad_norm"][0] == pytest.approx(total, rel=1e-9)
    for s, stream in enumerate(trace["streams"]):
        for array in ("W_hx", "W_hh", "b_h", "b_hh"):
            if f"{stream}.{array}" in grads:
                want = float(grads[f"{stream}.{array}"].norm())
                assert trace[f"grad_norm_{array}"][0, s] == pytest.approx(want, rel=1e-9), (stream, array)
    np.testing.assert_allclose(trace["grad_bridge_norm"][0], bridge, rtol=1e-9)


def test_seq2seq_keys_on_a_plain_stack_are_refused_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "stack.toml"
    path.write_text('schema_version = 1\n[[runs]]\nname = "plain"\ntask.target_len = 5\n')
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'plain'" in err and "task.target_len" in err and "seq2seq" in err
