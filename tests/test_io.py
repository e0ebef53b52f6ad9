"""Exported experiment folders: checked against docs/trace_format.md with plain NumPy, json and csv; iteration 0
recomputed in PyTorch from init_params.npz and first_batch.npz alone; atomic writes; reading folders back."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gradscope import config
from gradscope.engine.params import Params
from gradscope.experiment import run_experiment
from gradscope.io import atomic_write_bytes, export_experiment, load_experiment_folder

ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = """
schema_version = 1
[experiment]
name = "export test"
seed = 4
[defaults]
hidden_size = 10
dtype = "float64"
[defaults.task]
seq_len = 9
batch_size = 3
input_size = 4
output_size = 2
[defaults.train]
iterations = 5
record_every = 2
lr = 0.05
[[runs]]
name = "tanh 2 layers"
activation = "tanh"
layers = 2
[[runs]]
name = "lstm copy"
cell = "lstm"
task.name = "copy"
task.symbols = 3
task.copy_length = 2
task.input_size = 5
task.output_size = 3
[[runs]]
name = "relu blows up"
init.recurrent_scale = 40.0
train.lr = 100.0
"""

PER_TIMESTEP = {
    "rnn-tanh": ("h_norm", "grad_h_norm", "tanh_sat"),
    "lstm": (
        "h_norm",
        "grad_h_norm",
        "c_norm",
        "grad_c_norm",
        "gate_i_mean",
        "gate_f_mean",
        "gate_g_mean",
        "gate_o_mean",
        "gate_i_sat",
        "gate_f_sat",
        "gate_g_sat",
        "gate_o_sat",
    ),
    "rnn-relu": ("h_norm", "grad_h_norm", "relu_dead"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    experiment = config.loads(EXPERIMENT)
    results = run_experiment(experiment, backend="numpy", processes=1)
    out = tmp_path_factory.mktemp("export") / "out"
    export_experiment(out, experiment, results, figures=False)
    return experiment, results, out


def test_folder_layout_and_summary(exported):
    experiment, results, out = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "01-tanh-2-layers",
        "02-lstm-copy",
        "03-relu-blows-up",
        "experiment.toml",
        "summary.json",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 1 and summary["gradscope_version"]
    assert summary["experiment"]["name"] == "export test" and summary["experiment"]["seed"] == 4
    statuses = {r["name"]: r["status"] for r in summary["runs"]}
    assert statuses == {"tanh 2 layers": "completed", "lstm copy": "completed", "relu blows up": "diverged"}
    for entry in summary["runs"]:
        assert {"name", "dir", "status", "iterations", "loss_kind", "wall_seconds", "config"} <= set(entry)
        assert set(entry["config"]) >= {"cell", "activation", "hidden_size", "layers", "dtype", "init", "task", "train"}
        assert (out / entry["dir"] / "trace.npz").exists()
    by_name = {r["name"]: r for r in summary["runs"]}
    assert by_name["lstm copy"]["loss_kind"] == "ce" and by_name["tanh 2 layers"]["loss_kind"] == "mse"
    bad = by_name["relu blows up"]["nonfinite"]
    assert set(bad) == {"iteration", "layer", "timestep", "quantity"} and bad["iteration"] >= 1
    assert by_name["relu blows up"]["iterations"] == bad["iteration"] + 1


def test_trace_npz_and_csv_follow_the_format(exported):
    _, _, out = exported
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary["runs"]:
        run_dir = out / entry["dir"]
        cfg = entry["config"]
        label = "lstm" if cfg["cell"] == "lstm" else f"rnn-{cfg['activation']}"
        L, T = cfg["layers"], cfg["task"]["seq_len"]
        with np.load(run_dir / "trace.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        K = len(arrays["iteration"])
        assert arrays["iteration"][0] == 0
        if entry["status"] == "completed":
            assert list(arrays["iteration"]) == [0, 2, 4]  # record_every 2 and the last (4)
        for name in PER_TIMESTEP[label]:
            assert arrays[name].shape == (K, L, T), name
        for name in ("loss", "grad_norm", "iteration"):
            assert arrays[name].shape == (K,)
        assert arrays["loss_t"].shape == (K, T)
        assert arrays["grad_norm_W_hh"].shape == (K, L) and arrays["spectral_radius"].shape == (K, L)
        finite = np.isfinite(arrays["loss_t"]).all(axis=1)
        np.testing.assert_allclose(arrays["loss"][finite], arrays["loss_t"][finite].sum(axis=1), rtol=1e-12)
        # csv: the same numbers in long format
        with open(run_dir / "trace.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["run", "iteration", "layer", "timestep", "metric", "value"]
        assert {r["run"] for r in rows} == {entry["name"]}
        loss_rows = [r for r in rows if r["metric"] == "loss"]
        assert all(r["layer"] == "" and r["timestep"] == "" for r in loss_rows)
        np.testing.assert_array_equal([float(r["value"]) for r in loss_rows], arrays["loss"])
        grad = {
            (int(r["iteration"]), int(r["layer"]), int(r["timestep"])): float(r["value"])
            for r in rows
            if r["metric"] == "grad_h_norm"
        }
        for k, it in enumerate(arrays["iteration"]):
            for l in range(L):
                for t in range(T):
                    assert grad[(int(it), l, t)] == arrays["grad_h_norm"][k, l, t] or (
                        np.isnan(grad[(int(it), l, t)]) and np.isnan(arrays["grad_h_norm"][k, l, t])
                    )
        n_per_step = sum(v.size for k, v in arrays.items() if k != "iteration")
        assert len(rows) == n_per_step


def test_init_params_and_first_batch(exported):
    _, results, out = exported
    with np.load(out / "01-tanh-2-layers" / "init_params.npz") as npz:
        assert sorted(npz.files) == sorted(
            [
                "layer0.W_hx",
                "layer0.W_hh",
                "layer0.b_h",
                "layer1.W_hx",
                "layer1.W_hh",
                "layer1.b_h",
                "readout.W_yh",
                "readout.b_y",
            ]
        )
        assert npz["layer0.W_hx"].shape == (10, 4) and npz["layer1.W_hx"].shape == (10, 10)
    with np.load(out / "02-lstm-copy" / "first_batch.npz") as npz:
        assert npz["x"].shape == (9, 3, 5) and npz["target"].shape == (9, 3) and npz["mask"].shape == (9, 3)
        assert np.issubdtype(npz["target"].dtype, np.integer)
    with np.load(out / "01-tanh-2-layers" / "first_batch.npz") as npz:
        assert npz["target"].shape == (9, 3, 2) and npz["target"].dtype == np.float64


def _torch_iteration_zero(torch, cfg, params, batch):
    """Iteration 0 recomputed with PyTorch from the exported arrays alone (an unrolled loop, retain_grad)."""
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    x, mask = torch.tensor(batch["x"]), torch.tensor(batch["mask"])
    T, B, _ = x.shape
    d, L = cfg["hidden_size"], cfg["layers"]
    act = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "linear": lambda z: z}
    inputs, hs, cs = x, [], []
    for l in range(L):
        h = torch.zeros(B, d, dtype=x.dtype)
        c = torch.zeros(B, d, dtype=x.dtype)
        layer_h, layer_c = [], []
        for t in range(T):
            z = inputs[t] @ P[f"layer{l}.W_hx"].T + h @ P[f"layer{l}.W_hh"].T + P[f"layer{l}.b_h"]
            if cfg["cell"] == "lstm":
                i, f, g, o = z.split(d, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                c.retain_grad()
                layer_c.append(c)
            else:
                h = act[cfg["activation"]](z)
            h.retain_grad()
            layer_h.append(h)
        hs.append(layer_h)
        cs.append(layer_c)
        inputs = torch.stack(layer_h)
    Y = inputs @ P["readout.W_yh"].T + P["readout.b_y"]  # (T, B, k)
    if batch["target"].ndim == 3:
        ell = 0.5 * ((Y - torch.tensor(batch["target"])) ** 2).sum(-1)
    else:
        ell = torch.nn.functional.cross_entropy(
            Y.reshape(T * B, -1), torch.tensor(batch["target"]).reshape(-1), reduction="none"
        ).reshape(T, B)
    loss = (mask * ell).sum() / B
    loss.backward()

    def norm(v):  # mean over the batch of ||.||
        return v.detach().norm(dim=1).mean().item()

    out = {
        "loss": loss.item(),
        "grad_norm": torch.sqrt(sum((p.grad**2).sum() for p in P.values())).item(),
        "h_norm": np.array([[norm(h) for h in layer] for layer in hs]),
        "grad_h_norm": np.array([[norm(h.grad) for h in layer] for layer in hs]),
    }
    if cfg["cell"] == "lstm":
        out["c_norm"] = np.array([[norm(c) for c in layer] for layer in cs])
        out["grad_c_norm"] = np.array([[norm(c.grad) for c in layer] for layer in cs])
    return out


@pytest.mark.parametrize("run_dir", ["01-tanh-2-layers", "02-lstm-copy"])
def test_iteration_zero_recomputed_in_pytorch_from_the_exported_arrays(torch, exported, run_dir):
    _, _, out = exported
    summary = json.loads((out / "summary.json").read_text())
    cfg = next(r["config"] for r in summary["runs"] if r["dir"] == run_dir)
    with np.load(out / run_dir / "init_params.npz") as npz:
        params = {k: npz[k] for k in npz.files}
    with np.load(out / run_dir / "first_batch.npz") as npz:
        batch = {k: npz[k] for k in npz.files}
    with np.load(out / run_dir / "trace.npz") as npz:
        trace = {k: npz[k] for k in npz.files}
    assert trace["iteration"][0] == 0
    expected = _torch_iteration_zero(torch, cfg, params, batch)
    for name, value in expected.items():
        np.testing.assert_allclose(trace[name][0], value, rtol=1e-9, atol=1e-13, err_msg=name)


def test_reading_the_folder_back(exported):
    experiment, results, out = exported
    experiment2, results2 = load_experiment_folder(out)
    assert experiment2.runs == experiment.runs and experiment2.seed == experiment.seed
    for a, b in zip(results, results2):
        assert (a.name, a.status, a.iterations, a.loss_kind) == (b.name, b.status, b.iterations, b.loss_kind)
        assert sorted(a.trace.names) == sorted(b.trace.names)
        for name in a.trace.names:
            np.testing.assert_array_equal(a.trace.array(name), b.trace.array(name))
        for (n1, p1), (n2, p2) in zip(a.init_params.named(), b.init_params.named()):
            assert n1 == n2 and np.array_equal(p1, p2)
        assert (a.nonfinite is None) == (b.nonfinite is None)
    assert results2[2].nonfinite.as_dict() == results[2].nonfinite.as_dict()
    assert results2[2].trace.nonfinite is not None


def test_same_file_and_seed_reproduce_the_traces_and_so_does_the_exported_file(exported, tmp_path):
    experiment, results, out = exported
    again = run_experiment(config.load(out / "experiment.toml"), backend="numpy", processes=1)
    for a, b in zip(results, again):
        for name in a.trace.names:
            np.testing.assert_array_equal(a.trace.array(name), b.trace.array(name))


def test_worker_processes_give_the_same_traces(exported):
    experiment, results, _ = exported
    parallel = run_experiment(experiment, backend="numpy", processes=2)
    for a, b in zip(results, parallel):
        assert a.status == b.status
        for name in a.trace.names:
            np.testing.assert_array_equal(a.trace.array(name), b.trace.array(name))


def test_export_replaces_an_earlier_export_and_refuses_other_folders(exported, tmp_path):
    experiment, results, _ = exported
    out = tmp_path / "x"
    export_experiment(out, experiment, results[:1], figures=False)
    export_experiment(out, experiment, results[1:2], figures=False)
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["01-lstm-copy"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(OSError, match="not a GradScope export"):
        export_experiment(other, experiment, results, figures=False)
    assert (other / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "x"]  # no temporary folders left


def test_an_export_interrupted_by_an_error_leaves_no_final_folder_and_keeps_the_earlier_one(
    exported, tmp_path, monkeypatch
):
    experiment, results, _ = exported
    import gradscope.io as gio

    out = tmp_path / "out"
    export_experiment(out, experiment, results[:1], figures=False)
    before = (out / "summary.json").read_bytes()
    calls = []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_write(path, data)

    real_write = gio._write
    monkeypatch.setattr(gio, "_write", failing_write)
    with pytest.raises(OSError, match="No space"):
        export_experiment(out, experiment, results, figures=False)
    assert (out / "summary.json").read_bytes() == before  # the earlier export is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # and nothing half-written is around
    calls.clear()
    with pytest.raises(OSError):
        export_experiment(tmp_path / "fresh", experiment, results, figures=False)
    assert not (tmp_path / "fresh").exists()


def test_atomic_write_interrupted_leaves_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "f.toml"
    atomic_write_bytes(path, b"old")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new content")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.toml"]
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "g.toml", b"x")
    assert not (tmp_path / "g.toml").exists()


def test_an_export_killed_midway_leaves_no_final_folder(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from gradscope import config
        import gradscope.io as gio
        from gradscope.experiment import run_experiment
        experiment = config.loads({EXPERIMENT!r})
        results = run_experiment(experiment, backend="numpy", processes=1)
        real, n = gio._write, [0]
        def write_then_die(path, data):
            n[0] += 1
            if n[0] == 4:
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)
        gio._write = write_then_die
        gio.export_experiment({str(tmp_path / "out")!r}, experiment, results, figures=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert not (tmp_path / "out").exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".out.tmp-") for name in leftovers)  # only a hidden, clearly temporary folder


def test_params_from_the_export_rebuild_a_model(exported):
    _, results, out = exported
    with np.load(out / "02-lstm-copy" / "init_params.npz") as npz:
        params = Params.from_arrays({k: npz[k] for k in npz.files})
    assert params.layers[0].W_hh.shape == (40, 10)


def test_trace_csv_reads_back_cell_by_cell_with_any_run_name():
    from gradscope.io import trace_csv

    rng = np.random.default_rng(0)
    arrays = {
        "iteration": np.array([0, 5, 10]),
        "loss": np.array([1.5, np.nan, 0.1 + 0.2]),
        "clipped": np.array([True, False, True]),
        "grad_norm_W_hh": rng.normal(size=(3, 2)),
        "loss_t": rng.normal(size=(3, 4)),
        "h_norm": rng.normal(size=(3, 2, 4)) * 1e300,
    }
    arrays["h_norm"][1, 0, 2] = -np.inf
    name = 'relu "3/n", seed 1\nsecond line'
    rows = list(csv.DictReader(trace_csv(name, arrays).splitlines(keepends=True)))
    assert {r["run"] for r in rows} == {name}
    rebuilt = {}
    for r in rows:
        index = (int(r["iteration"]) // 5,) + tuple(int(r[c]) for c in ("layer", "timestep") if r[c] != "")
        key = (r["metric"], "layer" if r["layer"] else "", "timestep" if r["timestep"] else "")
        rebuilt.setdefault(key, {})[index] = float(r["value"])
    assert set(rebuilt) == {
        ("loss", "", ""),
        ("clipped", "", ""),
        ("grad_norm_W_hh", "layer", ""),
        ("loss_t", "", "timestep"),
        ("h_norm", "layer", "timestep"),
    }
    for (metric, _, _), cells in rebuilt.items():
        values = np.zeros(arrays[metric].shape)
        for index, value in cells.items():
            values[index] = value
        assert len(cells) == arrays[metric].size
        np.testing.assert_array_equal(values, arrays[metric].astype(float))  # exact: repr round-trips


# ------------------------------------------------------------------------------ figures: composed by the caller
def test_export_calls_the_callers_figure_writer_inside_the_unpublished_folder(exported, tmp_path):
    experiment, results, _ = exported
    out = tmp_path / "out"
    seen = []

    def writer(ran, given, plots_dir):
        seen.append((ran.runs, [r.name for r in given], plots_dir, out.exists()))
        (plots_dir / "one.png").write_bytes(b"png")

    assert export_experiment(out, experiment, results, figures=writer) == out.absolute()
    ((runs, names, plots_dir, published),) = seen
    assert runs == [r.run for r in results] and names == [r.name for r in results]
    assert plots_dir.name == "plots" and plots_dir.parent.name.startswith(".out.tmp-") and not published
    assert (out / "plots" / "one.png").read_bytes() == b"png"
    assert "figures_error" not in json.loads((out / "summary.json").read_text())


def test_a_failing_figure_writer_still_publishes_the_traces_and_says_why(exported, tmp_path):
    from gradscope.io import FigureExportError

    experiment, results, _ = exported
    out = tmp_path / "out"

    def writer(ran, given, plots_dir):
        (plots_dir / "half.svg").write_bytes(b"<svg")
        raise ImportError("libEGL.so.1: cannot open shared object file")

    with pytest.raises(FigureExportError) as caught:
        export_experiment(out, experiment, results, figures=writer)
    assert caught.value.path == out.absolute() and "libEGL.so.1" in caught.value.details
    assert str(caught.value) == f"the traces are in {out.absolute()}, but rendering the figures failed"
    summary = json.loads((out / "summary.json").read_text())
    assert "libEGL.so.1" in summary["figures_error"] and len(summary["runs"]) == len(results)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_io_never_imports_the_gui():
    """The core points down only: exporting (without figures) loads neither gradscope.gui nor Qt."""
    script = textwrap.dedent(f"""
        import sys, tempfile, pathlib
        from gradscope import config
        import gradscope.io as gio
        from gradscope.experiment import run_experiment
        experiment = config.loads({EXPERIMENT!r})
        results = run_experiment(experiment, backend="numpy", processes=1)
        gio.export_experiment(pathlib.Path(tempfile.mkdtemp()) / "out", experiment, results)
        print(sorted(m for m in sys.modules if m.startswith(("gradscope.gui", "PyQt6", "pyqtgraph"))))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    import ast

    import gradscope.io as gio

    tree = ast.parse(Path(gio.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if "gui" in name.split(".")]  # not even lazily, in a function
