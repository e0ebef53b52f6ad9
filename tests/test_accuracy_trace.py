"""The accuracy metric through the layers above the engine: the trainer records it at recorded iterations of ce
tasks only, the trace and the exported folder carry it (trace.npz, trace.csv, summary.json with the task's
accuracy ceiling), the folder reads back with it, and the command line's progress line states it."""

import csv
import importlib.util
import json

import numpy as np
import pytest

from gradscope import config
from gradscope.engine.trainer import Training
from gradscope.experiment import run_experiment
from gradscope.io import export_experiment, load_experiment_folder
from gradscope.terminal import progress_line

BACKEND = "numba" if importlib.util.find_spec("gradscope.engine.driver") else "numpy"

EXPERIMENT = """
schema_version = 1
[experiment]
name = "accuracy"
seed = 3
[defaults]
cell = "gru"
hidden_size = 8
[defaults.task]
name = "lookahead"
seq_len = 6
batch_size = 5
[defaults.train]
iterations = 7
record_every = 3
optimizer = "adam"
lr = 0.05
[[runs]]
name = "lookahead"
[[runs]]
name = "bidirectional copy"
bidirectional = true
task.name = "copy"
task.seq_len = 7
task.symbols = 3
task.copy_length = 2
[[runs]]
name = "probe"
task.name = "probe"
task.input_size = 3
task.output_size = 2
"""


def test_recorded_iterations_of_ce_tasks_carry_the_accuracy_of_their_batch():
    experiment = config.loads(EXPERIMENT)
    run = experiment.runs[0]
    training = Training(run, 3, backend=BACKEND)
    records = list(training)
    assert [r.iteration for r in records if r.recorded] == [0, 3, 6]
    assert all(("accuracy" in r.metrics) == r.recorded for r in records)
    # iteration 0 recomputed by hand: the twin's logits on the first batch, argmax against the tags
    from gradscope.engine import bptt

    b = training.first_batch
    twin = bptt(
        training.spec, training.init_params, b["x"], b["target"], b["mask"], "ce", backend="numpy", accuracy=True
    )
    assert float(records[0].metrics["accuracy"]) == pytest.approx(float(twin.metrics["accuracy"]), abs=1e-12)
    probe = list(Training(experiment.runs[2], 3, backend=BACKEND))
    assert all("accuracy" not in r.metrics for r in probe)  # mse: no accuracy


def test_the_export_carries_accuracy_and_ceiling_and_reads_back(tmp_path):
    experiment = config.loads(EXPERIMENT)
    results = run_experiment(experiment, backend=BACKEND, processes=1)
    out = export_experiment(tmp_path / "out", experiment, results, figures=False)
    summary = json.loads((out / "summary.json").read_text())
    by_name = {r["name"]: r for r in summary["runs"]}
    assert by_name["lookahead"]["accuracy_ceiling"] == pytest.approx(1 - 0.4 * 5 / 6 * 0.3)
    assert by_name["bidirectional copy"]["accuracy_ceiling"] is None  # a ce task without a known ceiling
    assert by_name["probe"]["accuracy_ceiling"] is None and by_name["probe"]["final_accuracy"] is None
    for name in ("lookahead", "bidirectional copy"):
        entry = by_name[name]
        with np.load(out / entry["dir"] / "trace.npz") as npz:
            accuracy = npz["accuracy"]
            assert accuracy.shape == npz["loss"].shape == (3,)
        assert np.all((0 <= accuracy) & (accuracy <= 1)) and entry["final_accuracy"] == accuracy[-1]
        with open(out / entry["dir"] / "trace.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["metric"] == "accuracy"]
        assert [(int(r["iteration"]), r["layer"], r["timestep"]) for r in rows] == [
            (0, "", ""),
            (3, "", ""),
            (6, "", ""),
        ]
        assert [float(r["value"]) for r in rows] == accuracy.tolist()
    with np.load(out / by_name["probe"]["dir"] / "trace.npz") as npz:
        assert "accuracy" not in npz.files
    _, back = load_experiment_folder(out)
    assert back[0].accuracy_ceiling == pytest.approx(1 - 0.4 * 5 / 6 * 0.3)
    assert np.array_equal(back[0].trace.array("accuracy"), results[0].trace.array("accuracy"))
    line = progress_line(1, 3, results[0])
    first, last = results[0].trace.array("accuracy")[[0, -1]]
    assert f"accuracy {first:.4f} -> {last:.4f} (unidirectional ceiling 0.9000)" in line
    assert "accuracy" not in progress_line(3, 3, results[2])
