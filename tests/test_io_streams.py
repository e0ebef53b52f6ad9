"""Exported folders of format 2 (docs/trace_format.md, "Format 2"): GRU and bidirectional runs.

Read back with NumPy and csv alone, as a user's script would, and iteration 0 recomputed in PyTorch from
init_params.npz and first_batch.npz alone (the fused nn.GRU / nn.LSTM modules, our weights copied in).
"""

import csv
import json

import numpy as np
import pytest

from gradscope.config import loads
from gradscope.experiment import run_experiment
from gradscope.io import export_experiment, load_experiment_folder

EXPERIMENT = """
schema_version = 1
[experiment]
name = "streams"
seed = 7
[defaults]
hidden_size = 6
dtype = "float64"
[defaults.init]
recurrent = "pytorch"
[defaults.task]
seq_len = 7
batch_size = 3
input_size = 4
output_size = 2
[defaults.train]
iterations = 3
lr = 0.05
[[runs]]
name = "gru"
cell = "gru"
layers = 2
[[runs]]
name = "bidirectional gru"
cell = "gru"
bidirectional = true
layers = 2
[[runs]]
name = "bidirectional lstm"
cell = "lstm"
bidirectional = true
[[runs]]
name = "bidirectional tanh"
activation = "tanh"
bidirectional = true
layers = 3
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    experiment = loads(EXPERIMENT)
    results = run_experiment(experiment, processes=1)
    out = export_experiment(tmp_path_factory.mktemp("streams") / "out", experiment, results)
    return experiment, results, out


def test_the_summary_says_format_2_and_the_traces_name_their_streams(exported):
    _, _, out = exported
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 2
    want = {
        "gru": ["layer0", "layer1"],
        "bidirectional gru": ["layer0", "layer0_reverse", "layer1", "layer1_reverse"],
        "bidirectional lstm": ["layer0", "layer0_reverse"],
        "bidirectional tanh": [f"layer{l}{s}" for l in range(3) for s in ("", "_reverse")],
    }
    for entry in summary["runs"]:
        with np.load(out / entry["dir"] / "trace.npz") as npz:
            assert list(npz["streams"]) == want[entry["name"]]
            S = len(want[entry["name"]])
            assert list(npz["stream_len"]) == [7] * S
            assert npz["h_norm"].shape == (3, S, 7) and npz["grad_h_norm"].shape == (3, S, 7)  # 3 iterations
        with open(out / entry["dir"] / "trace.csv", newline="") as f:
            layers = {row["layer"] for row in csv.DictReader(f) if row["metric"] == "h_norm"}
        assert layers == set(want[entry["name"]])
        with np.load(out / entry["dir"] / "init_params.npz") as npz:
            for stream in want[entry["name"]]:
                assert f"{stream}.W_hh" in npz.files
                assert (f"{stream}.b_hh" in npz.files) == entry["name"].endswith("gru")


def test_the_folder_reads_back(exported):
    experiment, results, out = exported
    experiment2, results2 = load_experiment_folder(out)
    assert experiment2.runs == experiment.runs
    for a, b in zip(results, results2):
        np.testing.assert_array_equal(a.trace.array("grad_h_norm"), b.trace.array("grad_h_norm"))
        assert [n for n, _ in a.init_params.named()] == [n for n, _ in b.init_params.named()]


def _torch_iteration_zero(torch, cfg, params, batch):
    """Iteration 0 in PyTorch from the exported arrays: loss, global gradient norm, every per-stream gradient
    norm, and the top layer's ||h_t|| per direction by input position."""
    nn = torch.nn
    d, L, bi = cfg["hidden_size"], cfg["layers"], cfg["bidirectional"]
    kind = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cfg["cell"]]
    extra = {"nonlinearity": cfg["activation"]} if cfg["cell"] == "rnn" else {}
    n = batch["x"].shape[2]
    net = kind(n, d, num_layers=L, bidirectional=bi, dtype=torch.float64, **extra)
    names = {"W_hx": "weight_ih", "W_hh": "weight_hh", "b_h": "bias_ih", "b_hh": "bias_hh"}
    with torch.no_grad():
        for name, value in params.items():
            stream, array = name.split(".")
            if stream == "readout":
                continue
            l, suffix = stream[5:].split("_")[0], "_reverse" if stream.endswith("_reverse") else ""
            getattr(net, f"{names[array]}_l{l}{suffix}").copy_(torch.tensor(value))
            if array == "b_h" and f"{stream}.b_hh" not in params:  # one bias: PyTorch's second one is 0
                getattr(net, f"bias_hh_l{l}{suffix}").zero_()
    W_yh = torch.tensor(params["readout.W_yh"], requires_grad=True)
    b_y = torch.tensor(params["readout.b_y"], requires_grad=True)
    out, _ = net(torch.tensor(batch["x"]))
    Y = out @ W_yh.T + b_y
    ell = 0.5 * ((Y - torch.tensor(batch["target"])) ** 2).sum(-1)
    loss = (torch.tensor(batch["mask"]) * ell).sum() / Y.shape[1]
    loss.backward()
    grads = {"readout.W_yh": W_yh.grad, "readout.b_y": b_y.grad}
    for name in params:
        stream, array = name.split(".")
        if stream != "readout":
            l, suffix = stream[5:].split("_")[0], "_reverse" if stream.endswith("_reverse") else ""
            grads[name] = getattr(net, f"{names[array]}_l{l}{suffix}").grad
    top = out.detach()
    h_top = [top[:, :, :d].norm(dim=2).mean(1).numpy()] + ([top[:, :, d:].norm(dim=2).mean(1).numpy()] if bi else [])
    return loss.item(), grads, h_top


@pytest.mark.parametrize("run", ["gru", "bidirectional gru", "bidirectional lstm", "bidirectional tanh"])
def test_iteration_zero_recomputed_in_pytorch_from_the_exported_arrays(torch, exported, run):
    _, _, out = exported
    summary = json.loads((out / "summary.json").read_text())
    entry = next(r for r in summary["runs"] if r["name"] == run)
    with np.load(out / entry["dir"] / "init_params.npz") as npz:
        params = {k: npz[k] for k in npz.files}
    with np.load(out / entry["dir"] / "first_batch.npz") as npz:
        batch = {k: npz[k] for k in npz.files}
    with np.load(out / entry["dir"] / "trace.npz") as npz:
        trace = {k: npz[k] for k in npz.files}
    loss, grads, h_top = _torch_iteration_zero(torch, entry["config"], params, batch)
    assert trace["iteration"][0] == 0
    assert trace["loss"][0] == pytest.approx(loss, rel=1e-9)
    total = np.sqrt(sum(float((g**2).sum()) for g in grads.values()))
    assert trace["grad_norm"][0] == pytest.approx(total, rel=1e-9)
    streams = list(trace["streams"])
    for s, stream in enumerate(streams):
        for array in ("W_hx", "W_hh", "b_h", "b_hh"):
            if f"{stream}.{array}" in grads:
                want = float(grads[f"{stream}.{array}"].norm())
                assert trace[f"grad_norm_{array}"][0, s] == pytest.approx(want, rel=1e-9), (stream, array)
    top = [s for s, name in enumerate(streams) if name.startswith(f"layer{entry['config']['layers'] - 1}")]
    for s, want in zip(top, h_top):
        np.testing.assert_allclose(trace["h_norm"][0, s], want, rtol=1e-9)
