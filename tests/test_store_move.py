"""The export moves each run's recorded store into the folder it builds (one rename per store, files.move_into):
an export that succeeds has every store under its run and no recording, one that fails gives the stores back to
the recording, and one killed after the moves leaves a recording that reads (and resumes) as before."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gradscope.io as gio
from gradscope import config
from gradscope.experiment import run_experiment
from gradscope.files import MOVED_NAME
from gradscope.recording import Recording, open_folder
from gradscope.store import STORE_NAME, read_store

ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = """
schema_version = 1
[experiment]
name = "move test"
seed = 2
[defaults]
hidden_size = 6
dtype = "float64"
[defaults.task]
seq_len = 5
batch_size = 2
input_size = 3
output_size = 2
[defaults.train]
iterations = 4
[[runs]]
name = "a"
[[runs]]
name = "b"
activation = "tanh"
"""


def recorded(out: Path):
    experiment = config.loads(EXPERIMENT)
    recording = Recording.start(out, experiment)
    dirs = [recording.run_dir(i, r.name) for i, r in enumerate(experiment.runs)]
    results = run_experiment(experiment, backend="numpy", processes=1, record_to=dirs)
    return experiment, results, recording


def test_a_finished_export_holds_every_store_under_its_run_and_no_recording(tmp_path):
    out = tmp_path / "out"
    experiment, results, recording = recorded(out)
    gio.export_experiment(out, experiment, results, figures=False, extra_files=recording.move_stores)
    assert not (out / "recording").exists() and not (out / MOVED_NAME).exists()
    for index, result in enumerate(results):
        arrays, info = read_store(out / gio.run_dir_name(index, result.name) / STORE_NAME)
        assert info["status"] == "completed" and info["records"] == len(result.trace)
        np.testing.assert_array_equal(arrays["h_norm"], result.trace.array("h_norm"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_export_that_fails_gives_the_stores_back_to_the_recording(tmp_path, monkeypatch):
    out = tmp_path / "out"
    experiment, results, recording = recorded(out)

    def broken(path):
        raise OSError(28, f"{path}: No space left on device")

    monkeypatch.setattr(gio, "sync_tree", broken)
    with pytest.raises(OSError, match="No space left"):
        gio.export_experiment(out, experiment, results, figures=False, extra_files=recording.move_stores)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the temporary is gone
    folder = open_folder(out)
    assert folder.state == "interrupted"
    for result, back in zip(results, folder.results):
        assert back.status == result.status and back.iterations == result.iterations
        np.testing.assert_array_equal(back.trace.array("h_norm"), result.trace.array("h_norm"))


def test_an_export_killed_after_the_moves_leaves_a_recording_that_reads_and_resumes(tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import gradscope.io as gio
        from test_store_move import recorded
        out = Path({str(out)!r})
        experiment, results, recording = recorded(out)
        def die(path):  # every store moved, the folder complete: killed before its rename
            os.kill(os.getpid(), signal.SIGKILL)
        gio.sync_tree = die
        gio.export_experiment(out, experiment, results, figures=False, extra_files=recording.move_stores)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    leftover = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert len(leftover) == 1 and (leftover[0] / MOVED_NAME).exists()  # the killed export's folder, stores in it
    assert not (out / "recording" / "01-a" / STORE_NAME).exists()
    folder = open_folder(out)  # gives the stores back first
    assert [r.status.value for r in folder.results] == ["completed", "completed"]
    assert [r.iterations for r in folder.results] == [4, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    experiment = config.loads(EXPERIMENT)
    kept = Recording.start(out, experiment, resume=True).finished_runs(experiment)
    assert sorted(kept) == [0, 1]  # --resume keeps both runs
