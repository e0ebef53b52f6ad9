"""The live store: records on disk within a second of being computed, a killed `gradscope run` read back as
"interrupted at iteration i" with the records an uninterrupted run computes, and --resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gradscope
from gradscope import cli, store
from gradscope.config import load
from gradscope.engine.record import Record
from gradscope.recording import RECORDING, open_folder
from gradscope.store import RunStore, read_store
from tests.test_resume import assert_same_but_tracked

ROOT = Path(__file__).resolve().parent.parent

TRAINING = """schema_version = 1
[experiment]
name = "kill-me"
seed = 3
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
[[runs]]
name = "short"
train.iterations = {short}
[[runs]]
name = "long"
cell = "lstm"
train.iterations = {long}
[[runs]]
name = "never started"
"""


def record(i, T=5, recorded=True):
    metrics = {"h_norm": np.full((2, T), float(i)), "sigma_max": np.array([1.0, 2.0])}
    return Record(iteration=i, loss=1.0 / (i + 1), grad_norm=2.0, recorded=recorded, metrics=metrics)


def test_a_store_commits_at_most_a_second_late_and_reads_back_what_was_committed(tmp_path):
    clock = [100.0]
    path = tmp_path / "records.zarr"
    s = RunStore.create(path, name="r", streams=["layer0", "layer1"], seed=1)
    s.clock, s._flushed_at = (lambda: clock[0]), clock[0]
    assert store.FLUSH_SECONDS == s.flush_seconds == 1.0
    for i in range(3):
        clock[0] += 0.4
        s.add(record(i))
        if i < 2:  # within the first second: kept in memory
            assert read_store(path)[1]["records"] == 0
    assert read_store(path)[1]["records"] == 3  # the third came 1.2 s after the start: all three written
    s.add(record(3))  # 0 s after that flush: in memory
    assert read_store(path)[1]["records"] == 3
    clock[0] += 1.0
    s.add(record(4))
    clock[0] += 0.1
    s.add(record(5))
    arrays, info = read_store(path)
    assert info["records"] == 5 and info["iterations"] == 5 and info["status"] == "running"
    assert list(arrays) == ["iteration", "loss", "grad_norm", "clipped", "h_norm", "sigma_max"]  # the trace's order
    np.testing.assert_array_equal(arrays["iteration"], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(arrays["h_norm"][:, 1, 0], [0, 1, 2, 3, 4])
    s.add(record(6, recorded=False))  # counted, not kept
    s.close("completed")
    arrays, info = read_store(path)
    assert info["records"] == 6 and info["iterations"] == 7 and info["status"] == "completed"
    assert info["streams"] == ["layer0", "layer1"]
    np.testing.assert_array_equal(arrays["iteration"], [0, 1, 2, 3, 4, 5])


def test_a_flush_cut_short_leaves_the_committed_rows(tmp_path):
    import zarr

    path = tmp_path / "records.zarr"
    s = RunStore.create(path, name="r", streams=["layer0", "layer1"], flush_seconds=0)
    for i in range(3):
        s.add(record(i))
    group = zarr.open_group(str(path), mode="a")
    group["h_norm"].resize((5, 2, 5))  # a kill after a flush resized one array, before it committed the count
    arrays, info = read_store(path)
    assert info["records"] == 3 and {len(a) for a in arrays.values()} == {3}


def test_the_store_is_a_labelled_dataset_xarray_reads(tmp_path):
    import xarray as xr

    path = tmp_path / "records.zarr"
    s = RunStore.create(path, name="r", streams=["layer0", "layer1"], flush_seconds=0)
    for i in range(2):
        s.add(record(i))
    s.close("completed")
    ds = xr.open_zarr(path, consolidated=False)
    assert ds["h_norm"].dims == ("iteration", "stream", "timestep")
    assert list(ds["iteration"].values) == [0, 1]


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _records(path: Path) -> int:
    try:
        return read_store(path)[1]["records"]
    except (OSError, ValueError):  # not made yet by the writer thread
        return -1


def _committed(folder: Path, run_dir: str) -> int:
    try:
        return int(
            json.loads((folder / RECORDING / run_dir / "records.zarr" / "zarr.json").read_text())["attributes"][
                "records"
            ]
        )
    except (OSError, ValueError, KeyError):
        return 0


def test_a_sigkilled_gradscope_run_reopens_as_interrupted_with_its_records(tmp_path):
    experiment_file = tmp_path / "train.toml"
    experiment_file.write_text(TRAINING.format(short=30, long=1_000_000))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradscope",
            "run",
            str(experiment_file),
            "--out",
            str(out),
            "--no-plots",
            "--processes",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: _committed(out, "02-long") >= 20, 300, "the long run's first records on disk")
        time.sleep(1.5)  # a second of computing after that: at most about this much may be lost
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL

    results = gradscope.open(out)
    assert results.state == "interrupted"
    short, long, never = results.runs
    assert str(short.status) == "completed" and short.iterations == 30 and len(short.trace) == 30
    assert long.interrupted_at is not None and len(long.trace) == long.interrupted_at + 1 >= 20
    assert results.status("long") == f"interrupted at iteration {long.interrupted_at}"
    assert len(never.trace) == 0 and never.iterations == 0
    assert long.init_params is not None and long.first_batch is not None

    # the records equal those of an uninterrupted run with the same seed, up to where it was killed
    again = gradscope.run(experiment_file, runs=["short"], progress=False)
    np.testing.assert_array_equal(again["short"].trace.array("grad_h_norm"), short.trace.array("grad_h_norm"))
    reference = gradscope.run(load(experiment_file), runs=["long"], iterations=long.interrupted_at + 1, progress=False)[
        "long"
    ].trace.to_arrays()
    kept = long.trace.to_arrays()
    assert list(kept) == list(reference)
    # the reference's last iteration is measured exactly, the killed run's was tracked from the one before
    # (engine.spectra): equal within the tracker's stated tolerance, the rest bit for bit
    assert_same_but_tracked(kept, reference)
    ds = results.to_xarray()
    assert ds["interrupted_at"].sel(run="long").item() == long.interrupted_at

    # the command line will not overwrite it by accident
    code = cli.main(["run", str(experiment_file), "--out", str(out), "--no-plots"])
    assert code == cli.EXIT_BAD_INPUT
    assert (out / RECORDING).is_dir()


def test_resume_keeps_finished_runs_and_runs_the_others_again(tmp_path, capsys):
    from gradscope.experiment import execute_run
    from gradscope.recording import Recording

    experiment_file = tmp_path / "train.toml"
    experiment_file.write_text(TRAINING.format(short=4, long=6))
    experiment = load(experiment_file)
    out = tmp_path / "out"
    recording = Recording.start(out, experiment)  # what a killed `gradscope run` leaves:
    short = execute_run(experiment.runs[0], 3, record_to=recording.run_dir(0, "short"))  # one run finished,
    s = RunStore.create(recording.run_dir(1, "long") / "records.zarr", name="long", streams=["layer0"], flush_seconds=0)
    s.add(record(0))  # one cut short
    assert "interrupted" in open_folder(out).state

    assert cli.main(["run", str(experiment_file), "--out", str(out), "--no-plots"]) == cli.EXIT_BAD_INPUT
    assert "pass --resume" in capsys.readouterr().err
    assert cli.main(["run", str(experiment_file), "--out", str(out), "--no-plots", "--resume"]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "'short' finished before and is kept" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["name"], r["status"], r["iterations"]) for r in summary["runs"]] == [
        ("short", "completed", 4),
        ("long", "completed", 6),
        ("never started", "completed", 1),
    ]
    assert not (out / RECORDING).exists()
    reopened = gradscope.open(out)
    np.testing.assert_array_equal(reopened["short"].trace.array("h_norm"), short.trace.array("h_norm"))
    fresh = gradscope.run(experiment_file, runs=["long"], progress=False)
    np.testing.assert_array_equal(reopened["long"].trace.array("grad_h_norm"), fresh["long"].trace.array("grad_h_norm"))
    arrays, info = read_store(out / "02-long" / "records.zarr")  # the export keeps every run's store
    assert info["status"] == "completed" and info["records"] == 6

    other = tmp_path / "other.toml"
    other.write_text(TRAINING.format(short=5, long=6))
    Recording.start(tmp_path / "again", load(other))
    assert cli.main(["run", str(experiment_file), "--out", str(tmp_path / "again"), "--resume"]) == cli.EXIT_BAD_INPUT
    assert "of another experiment" in capsys.readouterr().err


def test_a_store_that_cannot_be_written_stops_recording_not_the_run(tmp_path, monkeypatch):
    from gradscope.experiment import execute_run

    experiment = load_text(tmp_path, TRAINING.format(short=3, long=3))

    def full(self, rows, commit):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunStore, "_append", full)
    result = execute_run(experiment.runs[0], 3, record_to=tmp_path / "rec" / "01-short")
    assert str(result.status) == "completed" and len(result.trace) == 3
    assert "No space left on device" in result.store_error


def load_text(tmp_path, text):
    path = tmp_path / "e.toml"
    path.write_text(text)
    return load(path)


def test_the_writer_thread_commits_while_the_run_goes_on_and_reports_a_failed_write(tmp_path, monkeypatch):
    from gradscope.store import StoreError, StoreWriter

    path = tmp_path / "records.zarr"
    writer = StoreWriter(lambda: RunStore.create(path, name="r", streams=["layer0", "layer1"]), flush_seconds=0.05)
    for i in range(3):
        writer.add(record(i))  # returns at once: the thread writes
    _wait_for(lambda: _records(path) == 3, 30, "the writer thread's flush")
    assert read_store(path)[1]["status"] == "running"
    writer.add(record(3))
    writer.close("completed")
    arrays, info = read_store(path)
    assert info["records"] == 4 and info["status"] == "completed"

    def full(self, rows, commit):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunStore, "_append", full)
    failing = StoreWriter(
        lambda: RunStore.create(tmp_path / "full.zarr", name="r", streams=["layer0"]), flush_seconds=0.05
    )
    failing.add(record(0))
    _wait_for(lambda: failing.error is not None, 30, "the failed write")
    with pytest.raises(StoreError, match="No space left on device"):
        failing.add(record(1))
