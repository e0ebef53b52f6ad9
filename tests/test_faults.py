"""Hostile input and faults on the command line and in the exporter: refuse before computing (exit 2, the path
or key named), keep what was computed when writing fails later, clean up after a killed export, write folders
with the user's umask, and stop at once on a second Ctrl+C."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gradscope import cli, config, files, io as gio
from gradscope.runs import RunResult, RunStatus

from .cli_support import SMALL_HEADER, run

ROOT = Path(__file__).resolve().parent.parent

SMALL = SMALL_HEADER


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


@pytest.fixture(autouse=True)
def logs(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADSCOPE_LOG_DIR", str(tmp_path / "logs"))


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ------------------------------------------------------------------------- refused before the first iteration
@pytest.mark.parametrize("where", ["under_a_file", "proc", "proc_deep"])
def test_an_unwritable_destination_is_refused_before_anything_runs(small, tmp_path, capsys, monkeypatch, where):
    (tmp_path / "a_file").write_text("in the way")
    out = {
        "under_a_file": tmp_path / "a_file" / "out",  # a parent that is a file
        "proc": Path("/proc/gradscope-out"),  # a folder nobody may write into, root included
        "proc_deep": Path("/proc/no/such/out"),
    }[where]
    import gradscope.experiment

    monkeypatch.setattr(gradscope.experiment, "run_experiment", lambda *a, **k: pytest.fail("it ran"))
    assert run(small, "--out", out) == 2
    line = one_line(capsys)
    assert line.startswith(f"gradscope: --out {out}:") and "expected a folder that can be written" in line


def test_check_writable_tries_rather_than_guesses(tmp_path):
    files.check_writable(tmp_path / "new" / "deeper")  # absent folders below a writable one: fine
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind
    with pytest.raises(NotADirectoryError):
        (tmp_path / "f").write_text("")
        files.check_writable(tmp_path / "f" / "out")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[defaults.train]\nlr = inf", "train.lr"),
        ("[defaults.init]\nrecurrent_scale = inf", "init.recurrent_scale"),
        ("[defaults.init]\nforget_bias = -inf", "init.forget_bias"),
        ("[defaults.train]\nclip_norm = nan", "train.clip_norm"),
        ("[defaults.train]\neps = inf", "train.eps"),
        ("[experiment]\nseed = 18446744073709551616", "experiment.seed"),  # 2**64
        ("[defaults]\nseed = 9223372036854775808", "defaults.seed"),  # 2**63
        ('[[runs]]\nname = "a\\u0000b"', "name"),
        (f'[[runs]]\nname = "{"x" * 5000}"', "name"),
        ('[experiment]\nname = "e\\nf"', "experiment.name"),
    ],
)
def test_values_that_cannot_be_exported_are_refused_by_validate(tmp_path, capsys, text, key):
    path = tmp_path / "bad.toml"
    path.write_text("schema_version = 1\n" + text + "\n")
    assert cli.main(["validate", str(path)]) == 2
    line = one_line(capsys)
    assert line.startswith(f"gradscope: {path}:") and key in line and len(line) < 400


def test_schema_version_one_point_zero_is_refused_and_a_bom_is_accepted(tmp_path, capsys):
    path = tmp_path / "e.toml"
    path.write_text("schema_version = 1.0\n")
    assert cli.main(["validate", str(path)]) == 2
    assert "expected the integer 1" in one_line(capsys)
    path.write_bytes(b"\xef\xbb\xbf" + SMALL.encode())  # as Windows editors save UTF-8
    assert cli.main(["validate", str(path)]) == 0
    assert config.load(path).runs[0].name == "relu"


def test_files_that_are_not_experiment_files_are_refused_without_reading_them_whole(tmp_path, capsys):
    assert cli.main(["validate", "/dev/zero"]) == 2  # never ends: must not be read
    assert "not a regular file" in one_line(capsys)
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(40 * 2**20)
    assert cli.main(["validate", str(big)]) == 2
    assert "MiB" in one_line(capsys)


def test_a_seed_on_the_command_line_is_held_to_the_same_range(small, tmp_path, capsys):
    assert run(small, "--out", tmp_path / "out", "--seed", str(2**64)) == 2
    assert "--seed" in one_line(capsys)


# ------------------------------------------------------------------------------------ keeping the results
def test_a_write_failure_after_the_runs_keeps_the_results_elsewhere_and_says_where(
    small, tmp_path, capsys, monkeypatch
):
    import tempfile

    rescue = tmp_path / "tmp"
    rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    out = tmp_path / "out"
    real = gio._write

    def disk_full(path, data):
        if f".{out.name}.tmp-" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(gio, "_write", disk_full)
    assert run(small, "--out", out) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines: one line says it all
    assert line.startswith(f"gradscope: cannot write {out}: No space left on device")
    kept = Path(line.rpartition(" are in ")[2])
    assert kept.parent == rescue
    summary = json.loads((kept / "summary.json").read_text())
    assert summary["runs"][0]["status"] == "completed" and summary["runs"][0]["iterations"] == 3
    with np.load(kept / summary["runs"][0]["dir"] / "trace.npz") as npz:
        assert list(npz["iteration"]) == [0, 1, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    # no export under the final name; what stays in out is the live recording (docs/trace_format.md), itself a
    # second copy of the records: it reopens with every run completed
    assert [p.name for p in out.iterdir()] == ["recording"]
    import gradscope

    assert [str(r.status) for r in gradscope.open(out)] == ["completed"] * len(summary["runs"])


def _result(experiment, **changes) -> RunResult:
    from gradscope.trace import Trace

    run = experiment.runs[0]
    trace = Trace()
    trace.append_columns({"iteration": np.array(0), "loss": np.array(np.inf), "h_norm": np.full((1, 10), np.nan)})
    result = RunResult.for_run(run, 0, trace=trace, status=RunStatus.DIVERGED)
    for key, value in changes.items():
        setattr(result, key, value)
    return result


def test_the_summary_holds_nan_and_inf_wherever_they_appear(small, tmp_path):
    experiment = config.load(small)
    result = _result(experiment, baseline_loss=float("inf"), wall_seconds=float("nan"), iterations=1)
    out = gio.export_experiment(tmp_path / "out", experiment, [result])
    summary = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN/Infinity tokens
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    entry = summary["runs"][0]
    assert (entry["final_loss"], entry["baseline_loss"], entry["wall_seconds"]) == ("inf", "inf", "nan")
    _, (back,) = gio.load_experiment_folder(out)
    assert back.baseline_loss == float("inf") and np.isnan(back.wall_seconds)


# --------------------------------------------------------------------------------- temporaries and modes
def test_a_killed_export_leaves_temporaries_that_the_next_export_removes(small, tmp_path):
    experiment = config.load(small)
    out = tmp_path / "out"
    # a real kill -9 while a temporary folder is locked and half written
    code = (
        "import os, signal, sys\n"
        "from gradscope.files import TemporaryDir\n"
        f"t = TemporaryDir({str(out)!r})\n"
        "open(t.path / 'trace.npz', 'wb').write(b'x' * 100000)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == -signal.SIGKILL
    old_unlocked = tmp_path / ".out.tmp-old"
    old_unlocked.mkdir()
    os.utime(old_unlocked, (time.time() - 2 * files.STALE_SECONDS,) * 2)
    young_unlocked = tmp_path / ".out.tmp-young"  # maybe an export that has not taken its lock yet
    young_unlocked.mkdir()
    live = files.TemporaryDir(out)  # an export going on in this process right now
    other = tmp_path / ".other.tmp-x"  # another destination's: not ours to judge
    other.mkdir()
    os.utime(other, (time.time() - 2 * files.STALE_SECONDS,) * 2)
    killed = [
        p
        for p in tmp_path.iterdir()
        if p.name.startswith(".out.tmp-") and p not in (old_unlocked, young_unlocked, live.path)
    ]
    assert len(killed) == 1
    gio.export_experiment(out, experiment, [_result(experiment)])
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left == sorted([young_unlocked.name, live.path.name, other.name])
    live.remove()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_exported_folders_and_saved_files_follow_the_umask(small, tmp_path, mask):
    experiment = config.load(small)
    previous = os.umask(mask)
    try:
        out = gio.export_experiment(tmp_path / "deep" / "out", experiment, [_result(experiment)])
        config.save(experiment, tmp_path / "saved.toml")
    finally:
        os.umask(previous)
    for folder in (out, out / "01-relu", tmp_path / "deep"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask, folder
    for file in (out / "summary.json", out / "01-relu" / "trace.npz", tmp_path / "saved.toml"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~mask, file


def test_saving_over_a_file_keeps_its_mode(small, tmp_path):
    target = tmp_path / "mine.toml"
    target.write_text(SMALL)
    target.chmod(0o640)
    config.save(config.load(small), target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


# ------------------------------------------------------------------------------------------- the trace cap
def test_the_command_lines_traces_share_a_bounded_budget(monkeypatch):
    import gradscope.experiment as ex

    monkeypatch.setattr(ex, "machine_memory", lambda: 64 * 2**30)
    assert ex.trace_bytes(1) == ex.TRACE_BUDGET and ex.trace_bytes(4) == ex.TRACE_BUDGET // 4
    assert ex.trace_bytes(10_000) == ex.TRACE_MIN_BYTES
    monkeypatch.setattr(ex, "machine_memory", lambda: 2**30)  # a small machine: an eighth of it
    assert ex.trace_bytes(1) == 2**27


def test_a_run_of_huge_iteration_count_records_in_bounded_memory(small, monkeypatch):
    """10**17 iterations: the trace thins itself at its budget (here made tiny) and keeps the first and the
    latest iterations, evenly spread."""
    import threading

    import gradscope.experiment as ex

    experiment = config.load(small)
    run = experiment.runs[0]
    run = run.model_copy(update={"train": run.train.model_copy(update={"iterations": 10**17})})
    stop = threading.Event()
    seen = []

    def on_iteration(done, total, seconds):
        seen.append(done)
        if done >= 3000:
            stop.set()

    result = ex.execute_run(run, 0, "numpy", stop=stop, on_iteration=on_iteration, max_trace_bytes=2**16)
    trace = result.trace
    row = sum(trace.array(name)[0].nbytes for name in trace.names)
    assert result.status is RunStatus.STOPPED and result.iterations >= 3000 and seen[0] == 0
    assert len(trace) * row <= 2**16 and len(trace) >= 2**16 // row // 4
    iterations = trace.array("iteration")
    assert iterations[0] == 0 and iterations[-1] == result.iterations - 1
    steps = np.diff(iterations[:-1])
    assert steps.min() == steps.max()  # evenly spread


# ------------------------------------------------------------------------------------- the second Ctrl+C
LONG_ITERATION = """
schema_version = 1
[experiment]
name = "long-iteration"
[defaults]
hidden_size = 1024
[defaults.task]
seq_len = 1500
batch_size = 32
input_size = 8
output_size = 8
[defaults.train]
iterations = 3
"""


def test_a_second_ctrl_c_quits_at_once_during_a_long_iteration(tmp_path):
    """One iteration of this run takes many seconds in one kernel call (Numba, nogil).  The first SIGINT asks
    for a stop after it; the second must end the process at once, not when the kernel returns."""
    from gradscope.engine import compile_kernels

    path = tmp_path / "long.toml"
    path.write_text(LONG_ITERATION)
    compile_kernels(config.load(path).runs[0].model_spec())  # the cache is warm: no compile in the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradscope", "run", str(path), "--out", str(tmp_path / "out"), "--no-plots"],
        cwd=ROOT,
        env=dict(os.environ, GRADSCOPE_LOG_DIR=str(tmp_path / "logs"), PYTHONPATH=str(ROOT)),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "running 'long-iteration'" in proc.stderr.readline()
        time.sleep(4.0)  # inside the first iteration (iteration 0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None  # the first one waits for the iteration
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        proc.wait(timeout=30)
        quit_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    rest = proc.stderr.read()
    assert proc.returncode == -signal.SIGINT, rest
    assert quit_after < 2.0, f"quit {quit_after:.1f} s after the second Ctrl+C"
    assert "SIGINT received" in rest and "again quits at once" in rest


WORKERS = """
schema_version = 1
[experiment]
name = "workers"
[defaults]
hidden_size = 64
[defaults.task]
seq_len = 200
batch_size = 16
[defaults.train]
iterations = 100000
[[runs]]
name = "a"
[[runs]]
name = "b"
"""


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process table in /proc")
def test_worker_processes_end_when_the_command_line_is_killed(tmp_path):
    """SIGKILL of `gradscope run --processes 2`: its workers must not live on (they are orphans, at 10-20% CPU
    for an hour, before experiment.exit_when_orphaned)."""
    path = tmp_path / "workers.toml"
    path.write_text(WORKERS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradscope", "run", str(path), "--out", str(tmp_path / "out"), "--processes", "2"],
        cwd=ROOT,
        env=dict(os.environ, GRADSCOPE_LOG_DIR=str(tmp_path / "logs"), PYTHONPATH=str(ROOT)),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline:  # the pool's spawned workers (and its resource tracker)
            workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
            if len(workers) >= 2:
                break
            time.sleep(0.2)
        assert len(workers) >= 2, "no worker processes started"
        time.sleep(3.0)  # they are training
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "worker processes outlived the killed command line"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _children(proc.pid):
            os.kill(p, signal.SIGKILL)
