"""gradscope.run_process: one run driven through a pipe, as the app's runs' processes drive it.

``serve`` runs here in a thread of the test process (its code is the same in a process of its own; the app's
processes themselves: tests/gui/test_app.py), so the engine can be patched and a full disk set for it."""

from __future__ import annotations

import json
import multiprocessing
import resource
import signal
import threading

import numpy as np
import pytest

from gradscope import config
from gradscope.engine import trainer
from gradscope.engine.trainer import Training
from gradscope.run_process import Prepared, serve
from gradscope.runs import RunStatus
from tests.small_experiment import SMALL


def small(iterations):
    """The small experiment with its first run only (a take's one-run experiment)."""
    experiment = config.loads(SMALL.format(iterations=iterations))
    return experiment.model_copy(update={"runs": experiment.runs[:1]})


def start(iterations=20, paused=False, recording=None, threads=None):
    experiment = small(iterations)
    run = experiment.runs[0]
    here, there = multiprocessing.Pipe()
    args = (there, run, run.effective_seed(experiment.seed), "numpy", paused, recording, threads)
    thread = threading.Thread(target=serve, args=args, daemon=True)
    thread.start()
    return experiment, run, here, thread


def messages_until_end(conn, timeout=60.0):
    """Every message up to "done" or "failed" (inclusive)."""
    out = []
    while True:
        assert conn.poll(timeout), f"no message in {timeout} s after {[m[0] for m in out]}"
        out.append(conn.recv())
        if out[-1][0] in ("done", "failed"):
            return out


def records(messages):
    return [r for kind, *args in messages if kind == "records" for r in args[0]]


def test_a_run_sends_what_it_prepared_its_records_in_order_and_its_verdict():
    experiment, run, conn, thread = start(iterations=20)
    messages = messages_until_end(conn)
    thread.join(10)
    assert messages[0][0] == "prepared" and messages[-1] == ("done", RunStatus.COMPLETED)
    assert ("state", RunStatus.RUNNING) in messages
    assert [r.iteration for r in records(messages)] == list(range(20))
    prepared: Prepared = messages[0][1]
    training = Training(run, run.effective_seed(experiment.seed), backend="numpy")  # the same run, here
    assert prepared.task.loss_kind == training.task.loss_kind
    assert prepared.task.baseline_loss == training.task.baseline_loss
    assert prepared.analysis.on == bool(training.analysis.on)
    sent = prepared.init_params.arrays()
    for name, value in training.init_params.arrays().items():
        np.testing.assert_array_equal(sent[name], value, err_msg=name)


def test_commands_pause_step_and_stop_it_between_iterations():
    _, _, conn, thread = start(iterations=100000, paused=True)
    assert conn.poll(30) and conn.recv()[0] == "prepared"
    assert conn.recv() == ("state", RunStatus.PAUSED)
    assert not conn.poll(0.3)  # paused: nothing computed
    conn.send(("step",))
    assert conn.poll(30)
    kind, batch = conn.recv()
    assert kind == "records" and [r.iteration for r in batch] == [0]  # exactly one
    assert not conn.poll(0.3)
    conn.send(("threads", 1))
    conn.send(("resume",))
    conn.send(("stop",))
    messages = messages_until_end(conn)
    thread.join(10)
    assert messages[-1] == ("done", RunStatus.STOPPED)
    assert [r.iteration for r in records(messages)] == list(range(1, 1 + len(records(messages))))


def test_a_run_whose_app_is_gone_stops_and_closes_its_store_with_what_it_computed(tmp_path):
    experiment = small(100000)
    _, _, conn, thread = start(iterations=100000, recording=(str(tmp_path / "take"), experiment))
    sent = []
    while len(sent) < 30:
        kind, *args = conn.recv()
        if kind == "records":
            sent += args[0]
    conn.close()  # the app died: its end of the pipe is gone
    thread.join(60)
    assert not thread.is_alive()
    [store] = (tmp_path / "take").glob("recording/*/records.zarr/zarr.json")
    attrs = json.loads(store.read_text())["attributes"]
    assert attrs["status"] == "stopped" and attrs["records"] >= len(sent) >= 30


def test_a_failing_run_sends_its_traceback(monkeypatch):
    def broken(self, *args, **kwargs):
        raise MemoryError("simulated: cannot allocate the states")

    monkeypatch.setattr(trainer.Training, "__init__", broken)
    _, _, conn, thread = start()
    [(kind, text)] = messages_until_end(conn)
    thread.join(10)
    assert kind == "failed" and "Traceback" in text and "MemoryError: simulated" in text


@pytest.fixture
def small_files():
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield lambda n: resource.setrlimit(resource.RLIMIT_FSIZE, (n, old_limit[1]))
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def test_a_full_disk_stops_the_recording_never_the_run(tmp_path, small_files):
    experiment = small(3000)
    _, _, conn, thread = start(iterations=3000, recording=(str(tmp_path / "take"), experiment))
    while True:  # some rows on disk first
        kind, *args = conn.recv()
        if kind == "records" and args[0][-1].iteration >= 200:
            break
    small_files(20_000)
    messages = messages_until_end(conn, timeout=120)
    thread.join(10)
    stopped = [m for m in messages if m[0] == "recording_stopped"]
    assert len(stopped) == 1 and "File too large" in stopped[0][1]
    assert messages[-1] == ("done", RunStatus.COMPLETED)
    assert records(messages)[-1].iteration == 2999  # every record still reached the app


def test_in_a_process_of_its_own_ctrl_c_is_the_apps_and_sigterm_is_a_stop_that_closes_the_store(tmp_path):
    """multiprocessing sends its daemon children SIGTERM when the app's process exits, and Ctrl+C in the app's
    terminal reaches every process of its group: neither may kill a run mid-step with its store open."""
    import os

    from gradscope.run_process import process_context

    experiment = small(100000)
    run = experiment.runs[0]
    context = process_context()
    conn, there = context.Pipe()
    recording = (str(tmp_path / "take"), experiment)
    args = (there, run, run.effective_seed(experiment.seed), "numpy", False, recording, None)
    process = context.Process(target=serve, args=args, daemon=True)
    process.start()
    there.close()

    def records_after(n):
        got = []
        while len(got) < n:
            assert conn.poll(60), "the run sent nothing for 60 s"
            kind, *rest = conn.recv()
            if kind == "records":
                got += rest[0]
        return got

    records_after(10)
    os.kill(process.pid, signal.SIGINT)
    assert records_after(10)  # it goes on
    os.kill(process.pid, signal.SIGTERM)
    messages = messages_until_end(conn)
    process.join(30)
    assert messages[-1] == ("done", RunStatus.STOPPED) and process.exitcode == 0
    [store] = (tmp_path / "take").glob("recording/*/records.zarr/zarr.json")
    assert json.loads(store.read_text())["attributes"]["status"] == "stopped"
