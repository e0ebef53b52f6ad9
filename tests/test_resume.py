"""A SIGKILLed `gradscope run` resumes where its last checkpoint left it: `--resume` restores each unfinished run,
drops the store's rows past the checkpoint, appends, and the final export equals an uninterrupted run's export
with the same seed (bit for bit, except spectral_radius and sigma_max, which restart from an exact eigensolve:
within engine.spectra.TOLERANCE, as tests/test_checkpoint.py explains)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gradscope import cli
from gradscope.checkpoint import CHECKPOINT_NAME, read_checkpoint
from gradscope.engine.spectra import TOLERANCE
from gradscope.recording import RECORDING
from gradscope.store import read_store

ROOT = Path(__file__).resolve().parent.parent

TRAINING = """schema_version = 1
[experiment]
name = "resume-me"
seed = 7
[defaults]
activation = "tanh"
hidden_size = 16
[defaults.task]
name = "probe"
seq_len = 20
batch_size = 4
input_size = 3
output_size = 2
[defaults.train]
lr = 0.01
optimizer = "adam"
spectral_every = 3
[[runs]]
name = "short"
train.iterations = 20
[[runs]]
name = "long"
cell = "lstm"
train.iterations = {long}
[[runs]]
name = "last"
cell = "gru"
train.iterations = 30
"""

# `gradscope run` itself, with checkpoints every half second instead of every 10 s so the test is quick
CHILD = "import sys; from gradscope import checkpoint, cli; checkpoint.CHECKPOINT_SECONDS = 0.5; sys.exit(cli.main())"


def _wait_for(condition, timeout, what, process):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            pytest.fail(f"gradscope run ended ({process.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def assert_same_but_tracked(got, want, tracked: bool = True, where: str = "") -> None:
    """Every column of ``want`` bit for bit in ``got``; with ``tracked``, spectral_radius and sigma_max within
    engine.spectra.TOLERANCE instead (a resumed or killed run's spectra were tracked from an iteration the
    uninterrupted run measured exactly, and the tracker's warm start is not checkpointed)."""
    for name in want:
        if tracked and name in TOLERANCE:
            np.testing.assert_allclose(got[name], want[name], rtol=TOLERANCE[name], err_msg=f"{where}{name}")
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{where}{name}")


def _checkpoint_at(run_dir: Path) -> int:
    try:
        state = read_checkpoint(run_dir)
    except ValueError:
        return -1
    return -1 if state is None else int(state["iteration"])


def test_a_sigkilled_run_resumes_at_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path):
    iterations = 4000
    experiment = tmp_path / "train.toml"
    experiment.write_text(TRAINING.format(long=iterations))
    out, whole = tmp_path / "out", tmp_path / "whole"
    args = ["run", str(experiment), "--no-plots", "--processes", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args, "--out", str(out)], env=env, stdout=subprocess.DEVNULL
    )
    long_dir = out / RECORDING / "02-long"
    try:
        _wait_for(lambda: _checkpoint_at(long_dir) >= 2, 300, "a checkpoint of the long run", process)
        time.sleep(0.3)  # rows past the checkpoint reach the store: --resume must drop them
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    at = _checkpoint_at(long_dir)
    assert 0 < at < iterations
    arrays, info = read_store(long_dir / "records.zarr")
    assert info["iterations"] >= at  # the checkpoint never names rows the store lacks

    done = subprocess.run(
        [sys.executable, "-m", "gradscope", *args, "--out", str(out), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "resuming: 'short' finished before and is kept" in done.stderr
    assert f"run 'long' resumed at iteration {at} of {iterations}" in done.stderr
    assert not (out / RECORDING).exists()
    assert not list(out.rglob(CHECKPOINT_NAME))  # finished runs leave none

    assert cli.main([*args, "--out", str(whole)]) == cli.EXIT_OK  # the same seed, never interrupted
    got, want = json.loads((out / "summary.json").read_text()), json.loads((whole / "summary.json").read_text())
    for g, w in zip(got["runs"], want["runs"], strict=True):
        assert (g["name"], g["status"], g["iterations"]) == (w["name"], w["status"], w["iterations"])
    for run_dir in ("01-short", "02-long", "03-last"):
        with np.load(out / run_dir / "trace.npz") as a, np.load(whole / run_dir / "trace.npz") as b:
            assert a.files == b.files
            assert_same_but_tracked(a, {name: b[name] for name in b.files}, run_dir == "02-long", f"{run_dir}: ")
        stored, info = read_store(out / run_dir / "records.zarr")  # the appended store is whole too
        assert info["status"] == "completed"
        np.testing.assert_array_equal(stored["iteration"], np.load(whole / run_dir / "trace.npz")["iteration"])


def test_a_run_killed_before_its_first_checkpoint_starts_again_from_iteration_0(tmp_path, capsys):
    from gradscope.config import load
    from gradscope.recording import Recording
    from gradscope.store import RunStore

    experiment_file = tmp_path / "train.toml"
    experiment_file.write_text(TRAINING.format(long=5))
    experiment = load(experiment_file)
    out = tmp_path / "out"
    recording = Recording.start(out, experiment)
    RunStore.create(recording.run_dir(1, "long") / "records.zarr", name="long", streams=["layer0"])
    code = cli.main(["run", str(experiment_file), "--out", str(out), "--no-plots", "--resume"])
    assert code == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "run 'long' starts again from iteration 0: no checkpoint was written before it stopped" in err
    assert json.loads((out / "summary.json").read_text())["runs"][1]["iterations"] == 5


def test_a_reopened_store_drops_the_rows_past_the_checkpoint_and_appends(tmp_path):
    from gradscope.engine.record import Record
    from gradscope.store import RunStore

    def row(i, value):
        return Record(iteration=i, loss=value, grad_norm=2.0, metrics={"h_norm": np.full((1, 3), value)})

    path = tmp_path / "records.zarr"
    s = RunStore.create(path, name="r", streams=["layer0"], flush_seconds=0)
    for i in range(10):
        s.add(row(i, -1.0))  # rows 6..9 were committed after a checkpoint at iteration 6
    with pytest.raises(ValueError, match="iterations: got 10; a checkpoint at iteration 11"):
        RunStore.reopen(path, 11)
    s = RunStore.reopen(path, 6, flush_seconds=0)
    assert read_store(path)[1]["records"] == 6
    s.add(row(6, 6.0))
    s.close("completed")
    arrays, info = read_store(path)
    assert info["records"] == 7 and info["iterations"] == 7 and info["status"] == "completed"
    np.testing.assert_array_equal(arrays["iteration"], np.arange(7))
    np.testing.assert_array_equal(arrays["loss"], [-1.0] * 6 + [6.0])
    assert arrays["h_norm"].shape == (7, 1, 3)


def test_a_clean_stop_leaves_a_checkpoint_that_resume_continues_from(tmp_path):
    from gradscope.config import loads
    from gradscope.experiment import execute_run

    experiment = loads(TRAINING.format(long=25))
    run = experiment.runs[1]
    seed = run.effective_seed(experiment.seed)

    class StopAfter:  # set once the run has made 9 iterations (checked before each)
        def __init__(self):
            self.asked = 0

        def is_set(self):
            self.asked += 1
            return self.asked > 10

    folder = tmp_path / "02-long"
    stopped = execute_run(run, seed, stop=StopAfter(), record_to=folder)
    assert str(stopped.status) == "stopped" and 0 < stopped.iterations < 25
    assert int(read_checkpoint(folder)["iteration"]) == stopped.iterations
    resumed = execute_run(run, seed, record_to=folder, resume=True)
    assert str(resumed.status) == "completed" and resumed.iterations == 25
    assert not (folder / CHECKPOINT_NAME).exists()
    whole = execute_run(run, seed).trace.to_arrays()
    got = resumed.trace.to_arrays()
    assert list(got) == list(whole)
    assert_same_but_tracked(got, whole)
    np.testing.assert_array_equal(read_store(folder / "records.zarr")[0]["loss"], whole["loss"])
