"""The run model (gradscope.runs): statuses, the one result type, and the one loop the CLI and the app drive."""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gradscope import io as gio
from gradscope.config import RunConfig
from gradscope.engine.metrics import NonFinite
from gradscope.engine.trainer import Training
from gradscope.experiment import execute_run
from gradscope.runs import FINISHED, RunControl, RunResult, RunStatus, drive
from gradscope.trace import Record

BACKEND = "numpy"


def make_run(**kw):
    base = {
        "name": "r",
        "hidden_size": 8,
        "task": {"name": "probe", "seq_len": 6, "batch_size": 2, "input_size": 3, "output_size": 2},
        "train": {"iterations": 5, "record_every": 2},
    }
    for key, value in kw.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return RunConfig.model_validate(base)


def exploding_run():
    """Diverges within a few iterations (as tests/test_trainer.py's divergence test)."""
    return make_run(
        init={"recurrent_scale": 6.0},
        hidden_size=32,
        task={"seq_len": 40},
        train={"iterations": 50, "optimizer": "sgd", "lr": 10.0, "record_every": 100},
    )


class FakeTraining:
    """Training's interface to drive: iterate for records, ``iteration`` / ``iterations`` counters."""

    def __init__(self, records, iterations=None):
        self.records = list(records)
        self.iterations = len(self.records) if iterations is None else iterations
        self.iteration = 0
        self.pulled = 0

    def __iter__(self):
        for record in self.records:
            self.pulled += 1
            self.iteration = record.iteration + 1
            yield record


def record(i, grad_norm=1.0, nonfinite=None):
    return Record(iteration=i, loss=0.5, grad_norm=grad_norm, nonfinite=nonfinite, seconds=0.25)


# ------------------------------------------------------------------------------------------- statuses
def test_finished_statuses_are_the_strings_summary_json_writes():
    assert gio.STATUSES == ("completed", "diverged", "stopped", "failed")
    assert {s.value for s in FINISHED} == set(gio.STATUSES)
    assert all(RunStatus(text) == text for text in gio.STATUSES)
    for status in RunStatus:
        assert status.exported == (status if status in FINISHED else RunStatus.STOPPED)
        assert status.finished == (status.value in gio.STATUSES)


# -------------------------------------------------------------------------------------------- divergence
def test_record_diverged_is_the_rule_under_which_the_trainer_ends():
    assert not record(0).diverged
    assert record(0, grad_norm=float("inf")).diverged and record(0, grad_norm=float("nan")).diverged
    assert record(0, nonfinite=NonFinite("h", 0, 3)).diverged
    training = Training(exploding_run(), 0, backend=BACKEND)
    records = list(training)  # the trainer decides where it ends
    assert len(records) < 50
    assert [r.diverged for r in records] == [False] * (len(records) - 1) + [True]


def test_drive_stops_at_the_diverged_record_without_pulling_more():
    fake = FakeTraining([record(0), record(1, grad_norm=float("nan")), record(2)])
    seen = []
    assert drive(fake, on_record=seen.append) is RunStatus.DIVERGED
    assert [r.iteration for r in seen] == [0, 1] and fake.pulled == 2


def test_execute_run_of_a_diverging_run_matches_the_trainer():
    run = exploding_run()
    records = list(Training(run, 0, backend=BACKEND))
    result = execute_run(run, 0, backend=BACKEND)
    assert result.status is RunStatus.DIVERGED and result.iterations == len(records)
    assert result.nonfinite is not None and result.nonfinite.iteration == records[-1].iteration


# -------------------------------------------------------------------------------------------- the result
def test_run_result_counts_every_iteration_and_keeps_the_recorded_ones():
    run = make_run()
    result = RunResult.for_run(run, seed=4)
    assert (result.status, result.iterations, result.iteration, result.loss_kind) == (RunStatus.QUEUED, 0, -1, "mse")
    rows = [Record(iteration=i, loss=1.0 / (i + 1), grad_norm=1.0, recorded=i % 2 == 0, seconds=0.5) for i in range(5)]
    for r in rows:
        result.add(r)
    assert result.iterations == 5 and result.iteration == 4 and result.wall_seconds == pytest.approx(2.5)
    assert result.trace.iterations.tolist() == [r.iteration for r in rows if r.recorded]
    located = NonFinite("grad_h", 0, 2, iteration=5)
    result.add(Record(iteration=5, loss=float("nan"), grad_norm=float("nan"), nonfinite=located))
    assert result.nonfinite is located and np.isnan(result.trace.array("loss")[-1])


def test_prepare_takes_what_training_knows_before_its_first_iteration():
    run = make_run()
    training = Training(run, 7, backend=BACKEND)
    result = RunResult.for_run(run, 7)
    result.prepare(training)
    assert result.init_params is training.init_params and result.first_batch is training.first_batch
    assert result.baseline_loss == training.task.baseline_loss and result.description == training.task.description


# -------------------------------------------------------------------------------------------- control
def test_paused_control_makes_exactly_the_steps_asked_for_then_stops():
    fake = FakeTraining(record(i) for i in range(1000))
    control = RunControl(paused=True)
    seen, states, out = [], [], {}
    held, stepped = threading.Semaphore(0), threading.Semaphore(0)

    def on_record(r):
        seen.append(r)
        stepped.release()

    def on_state(status):
        states.append(status)
        if status is RunStatus.PAUSED:
            held.release()

    thread = threading.Thread(
        target=lambda: out.setdefault("status", drive(fake, control, on_record=on_record, on_state=on_state))
    )
    thread.start()
    assert held.acquire(timeout=10) and seen == []  # paused before the first iteration
    control.step()
    control.step()
    assert stepped.acquire(timeout=10) and stepped.acquire(timeout=10)
    control.stop()
    thread.join(10)
    # two steps, two iterations: running freely would have made hundreds of these instant ones meanwhile
    assert out["status"] is RunStatus.STOPPED and [r.iteration for r in seen] == [0, 1]
    assert states == [RunStatus.PAUSED]
    states.clear()
    assert drive(FakeTraining(record(i) for i in range(3)), RunControl(), on_state=states.append) is RunStatus.COMPLETED
    assert states == [RunStatus.RUNNING]


def test_a_stop_after_the_last_iteration_leaves_the_run_completed():
    control = RunControl()
    fake = FakeTraining(record(i) for i in range(3))

    def on_record(r):
        if r.iteration == 2:
            control.stop()

    assert drive(fake, control, on_record=on_record) is RunStatus.COMPLETED
    fake = FakeTraining(record(i) for i in range(3))
    control = RunControl()
    assert drive(fake, control, on_record=lambda r: control.stop()) is RunStatus.STOPPED and fake.pulled == 1


def test_an_outside_stop_event_stops_the_cli_loop_between_iterations():
    stop = threading.Event()
    seen = []

    def on_record(r):
        seen.append(r)
        if len(seen) == 2:
            stop.set()

    assert (
        drive(FakeTraining(record(i) for i in range(10)), RunControl(stop=stop), on_record=on_record)
        is RunStatus.STOPPED
    )
    assert len(seen) == 2


def test_the_run_model_imports_no_qt():
    code = "import sys, gradscope.runs, gradscope.experiment; print('PyQt6' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
