"""Running sweeps: sweep.csv's rows are the same bits with 1 or 2 local workers and on a Dask cluster; a
SIGKILLed sweep resumes to the same rows; Ctrl+C keeps every finished point; the folder is checked."""

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gradscope import cli, config
from gradscope.io import load_experiment_folder
from gradscope.sweep import SweepError, columns, run_sweep

ROOT = Path(__file__).resolve().parent.parent

SWEEP = """
schema_version = 1
[experiment]
name = "small-sweep"
seed = 1
[defaults]
hidden_size = 24
[defaults.task]
seq_len = 16
batch_size = 4
input_size = 4
output_size = 4
[defaults.train]
iterations = {iterations}
lr = 0.001
clip_norm = 1.0
[[runs]]
name = "relu"
[[runs]]
name = "tanh"
activation = "tanh"
[sweep]
"init.recurrent_scale" = [1.5, 3.0]
"init.bias_scale" = [0.0, 0.2]
seeds = [0, 1]
"""
SAME = [c for c in columns(["init.recurrent_scale", "init.bias_scale"]) if c != "wall_seconds"]


def write(tmp_path, iterations=2, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(SWEEP.format(iterations=iterations))
    return path


def rows(folder):
    with open(Path(folder) / "sweep.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_bits(a, b):
    """Rows equal in every column but wall_seconds (the machine's measurement), as text: the same bits."""
    return [[r[c] for c in SAME] for r in a] == [[r[c] for c in SAME] for r in b]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep run on one local worker: the rows every other way of running it must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    experiment = config.load(write(tmp))
    summary = run_sweep(experiment, tmp / "out", workers=1)
    assert summary.progress.done == 16 and not summary.errors and not summary.stopped
    return experiment, tmp / "out", rows(tmp / "out")


def test_the_table_has_the_contracts_columns_one_row_per_point_sorted(reference):
    experiment, out, table = reference
    with open(out / "sweep.csv") as f:
        assert f.readline().strip().split(",") == columns(["init.recurrent_scale", "init.bias_scale"])
    assert [r["point"] for r in table] == [f"{i:04d}" for i in range(16)]
    assert {r["status"] for r in table} == {"completed"} and {r["iterations"] for r in table} == {"2"}
    assert [(r["run"], r["init.recurrent_scale"], r["init.bias_scale"], r["seed"]) for r in table[:3]] == [
        ("relu", "1.5", "0.0", "0"),
        ("relu", "1.5", "0.0", "1"),
        ("relu", "1.5", "0.2", "0"),
    ]
    assert all(r["lyapunov_max"] == "" for r in table)  # no analysis results: empty
    assert all(math.isfinite(float(r["log_gain_per_step"])) and float(r["wall_seconds"]) > 0 for r in table)


def test_each_points_export_reproduces_its_row(reference):
    """points/<point>/ is the folder `gradscope run` writes; its trace gives the row's numbers again, computed
    here in NumPy (np.polyfit), not by the sweep's code."""
    experiment, out, table = reference
    for row in (table[0], table[13]):
        ran, results = load_experiment_folder(out / "points" / row["point"])
        (result,) = results
        assert result.run.init.recurrent_scale == float(row["init.recurrent_scale"])
        assert result.seed == int(row["seed"]) and result.name == row["run"]
        g = result.trace.array("grad_h_norm")[0, 0]  # iteration 0, the only stream, (T,)
        lag = len(g) - 1 - np.arange(len(g))
        assert float(row["log_gain_per_step"]) == pytest.approx(np.polyfit(lag, np.log(g), 1)[0], rel=1e-9)
        assert float(row["final_loss"]) == result.trace.array("loss")[-1]


def test_two_local_workers_give_the_same_bits(reference, tmp_path):
    experiment, _, table = reference
    run_sweep(experiment, tmp_path / "two", workers=2, traces=False)
    assert same_bits(rows(tmp_path / "two"), table)
    assert not (tmp_path / "two" / "points").exists()  # --no-traces


def test_two_local_workers_write_each_points_export_with_the_same_bits(reference, tmp_path):
    """The workers write the exports themselves (gradscope.sweep.pools): every point's folder is there, and
    holds the same arrays as the reference's."""
    experiment, out, table = reference
    run_sweep(experiment, tmp_path / "two", workers=2)
    assert same_bits(rows(tmp_path / "two"), table)
    for row in table:
        _, (mine,) = load_experiment_folder(tmp_path / "two" / "points" / row["point"])
        _, (theirs,) = load_experiment_folder(out / "points" / row["point"])
        assert mine.run == theirs.run and mine.seed == theirs.seed
        for key in ("loss", "grad_h_norm", "h_norm"):
            assert np.array_equal(mine.trace.array(key), theirs.trace.array(key), equal_nan=True), key
    assert not list((tmp_path / "two" / "points").glob(".*"))  # no temporary left behind


def dask_cluster():
    try:
        from distributed import LocalCluster
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Dask is required in CI (scripts/install.sh --test installs gradscope[dask])")
        pytest.skip("dask not installed: pip install 'gradscope[dask]'")
    # a scheduler and two worker processes on localhost, one thread each, as a real (small) cluster
    return LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1", silence_logs=40
    )


def test_a_dask_scheduler_with_two_workers_gives_the_same_bits(reference, tmp_path):
    experiment, _, table = reference
    with dask_cluster() as cluster:
        summary = run_sweep(experiment, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert "Dask cluster" in summary.progress.where and summary.progress.done == 16
    assert same_bits(rows(tmp_path / "dask"), table)
    _, results = load_experiment_folder(tmp_path / "dask" / "points" / "0005")  # written where its worker ran
    assert results[0].status == "completed"
    assert not list((tmp_path / "dask").glob(".gradscope-sweep-*"))  # the marker is gone with the sweep


def test_a_worker_writes_a_points_export_only_where_it_reads_the_sweeps_marker(tmp_path):
    from gradscope.sweep.pools import compute_point

    experiment = config.load(write(tmp_path))
    point = config.sweep_points(experiment)[0]
    export = (tmp_path / "points" / "0000", experiment.model_copy(update={"runs": [point.run], "sweep": None}))
    marker = tmp_path / ".gradscope-sweep-abc"
    # another host: no marker at that path (or another sweep's token): the traces travel back, nothing written
    for written in (None, "other"):
        if written is not None:
            marker.write_text(written)
        outcome = compute_point(0, point.run, point.seed, "numpy", True, export=export, probe=(str(marker), "abc"))
        assert outcome.result is not None and not outcome.exported and not export[0].exists()
    marker.write_text("abc")  # this sweep's folder: the worker publishes the export, the traces stay there
    outcome = compute_point(0, point.run, point.seed, "numpy", True, export=export, probe=(str(marker), "abc"))
    assert outcome.result is None and outcome.exported
    _, results = load_experiment_folder(export[0])
    assert results[0].status == "completed" and len(results[0].trace) == 2


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path, monkeypatch, capsys):
    pytest.importorskip("distributed")
    monkeypatch.setenv("GRADSCOPE_LOG_DIR", str(tmp_path / "logs"))
    path = write(tmp_path)
    code = cli.main(["sweep", str(path), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 2
    assert "cannot reach a Dask scheduler" in capsys.readouterr().err


def test_resume_runs_only_what_is_missing_and_refuses_another_sweep(reference, tmp_path):
    experiment, out, table = reference
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    kept = [r for r in table if int(r["point"]) % 3 != 0]  # a third of the rows lost
    with open(copy / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(kept)
    shutil.rmtree(copy / "points" / "0001")  # a row whose export is gone runs again too
    with pytest.raises(SweepError, match="--resume"):
        run_sweep(experiment, copy, workers=1)
    summary = run_sweep(experiment, copy, workers=1, resume=True)
    assert summary.progress.resumed == len(kept) - 1
    assert same_bits(rows(copy), table)
    other = config.load(write(tmp_path, iterations=3, name="other.toml"))
    with pytest.raises(SweepError, match="different sweep"):
        run_sweep(other, copy, resume=True)


def test_a_folder_that_is_not_a_sweep_is_refused(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="not empty"):
        run_sweep(config.load(write(tmp_path)), tmp_path / "busy")


# --------------------------------------------------------------------------------------- killed sweeps
def start(path, out, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRADSCOPE_LOG_DIR=str(Path(out).parent / "logs"))
    return subprocess.Popen(
        [sys.executable, "-m", "gradscope", "sweep", str(path), "--out", str(out), "--workers", "1", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(out, at_least, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "sweep.csv").exists() and len(rows(out)) >= at_least:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} rows in {timeout} s")


def children(pid):
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker pids from /proc")
def test_a_sigkilled_sweep_loses_only_running_points_and_resumes_to_the_same_rows(tmp_path):
    path = write(tmp_path, iterations=40)  # long enough points that the kill lands mid-sweep
    clean = tmp_path / "clean"
    run_sweep(config.load(path), clean, workers=2, traces=False)
    out = tmp_path / "killed"
    process = start(path, out)
    wait_for_rows(out, 3, process)
    workers = children(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    done = rows(out)
    assert 3 <= len(done) < 16 and {r["status"] for r in done} == {"completed"}
    assert same_bits(done, [r for r in rows(clean) if r["point"] in {d["point"] for d in done}])
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "a worker outlived its killed sweep"
    resumed = start(path, out, "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"({len(done)} from before)" in err
    assert same_bits(rows(out), rows(clean))


def test_ctrl_c_stops_cleanly_keeping_every_finished_point(tmp_path):
    path = write(tmp_path, iterations=40)
    out = tmp_path / "stopped"
    process = start(path, out)
    wait_for_rows(out, 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "--resume" in err and "finished point(s) are in sweep.csv" in err
    done = rows(out)
    assert 2 <= len(done) < 16 and {r["status"] for r in done} == {"completed"}
    for row in done:  # each finished point's export is complete
        assert (out / "points" / row["point"] / "summary.json").exists()


@pytest.mark.slow
def test_the_relu_presets_mean_log_gain_per_step_is_on_the_mean_field_line(tmp_path):
    """Requirement: the ReLU sweep's mean over seeds within 0.05 of 0.5 ln(c/2) at c = 1.5, 2 and 3; the
    shipped preset's settings (d = 256, T = 100), its 8 seeds, on a sweep of those three scales."""
    from gradscope.config.sweep import Sweep

    preset = config.load(ROOT / "models" / "sweep_relu_init_scale.toml")
    scales = (1.5, 2.0, 3.0)
    experiment = preset.model_copy(
        update={"sweep": Sweep(keys={"init.recurrent_scale": scales}, seeds=preset.sweep.seeds)}
    )
    run_sweep(experiment, tmp_path / "relu", workers=2, traces=False)
    table = rows(tmp_path / "relu")
    for c in scales:
        gains = [float(r["log_gain_per_step"]) for r in table if float(r["init.recurrent_scale"]) == c]
        assert len(gains) == 8
        assert np.mean(gains) == pytest.approx(0.5 * math.log(c / 2), abs=0.05), c
