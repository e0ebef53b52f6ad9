"""The app's run queue: at most ``runs_at_once`` runs have a worker thread; the others wait as "queued" and
start, in order, as workers end; pause, step, stop and reset act on queued runs too.  NumPy engine (no
compile); every wait is on a condition, never a sleep."""

import threading

import pytest

from gradscope import config
from gradscope.gui import controller as controller_module
from gradscope.gui.controller import Controller
from gradscope.runs import RunStatus


def experiment(runs: int, iterations: int):
    text = f"""schema_version = 1
[experiment]
name = "queue"
seed = 1
[defaults]
activation = "tanh"
hidden_size = 6
[defaults.task]
name = "probe"
seq_len = 5
batch_size = 2
input_size = 2
output_size = 2
[defaults.train]
iterations = {iterations}
"""
    text += "".join(f'[[runs]]\nname = "run {i}"\n' for i in range(runs))
    return config.loads(text)


class CountingThread(controller_module.TrainingThread):
    """A TrainingThread that counts how many of its kind are inside run() at once."""

    lock = threading.Lock()
    alive = 0
    most = 0
    started = 0

    def run(self):
        cls = CountingThread
        with cls.lock:
            cls.alive += 1
            cls.started += 1
            cls.most = max(cls.most, cls.alive)
        try:
            super().run()
        finally:
            with cls.lock:
                cls.alive -= 1


@pytest.fixture
def counting(monkeypatch):
    monkeypatch.setattr(CountingThread, "alive", 0)
    monkeypatch.setattr(CountingThread, "most", 0)
    monkeypatch.setattr(CountingThread, "started", 0)
    monkeypatch.setattr(controller_module, "TrainingThread", CountingThread)
    return CountingThread


@pytest.fixture
def make_controller(qtbot):
    made = []

    def make(runs, iterations, runs_at_once):
        c = Controller(backend="numpy", runs_at_once=runs_at_once)
        c.load(experiment(runs, iterations))
        made.append(c)
        return c

    yield make
    for c in made:
        c.shutdown(timeout_ms=None)


def statuses(c):
    return [s.status for s in c.states]


def test_twelve_runs_train_at_most_n_at_once_and_all_finish(make_controller, counting, qtbot):
    N = 3
    c = make_controller(12, 15, N)
    with_worker = []
    c.run_updated.connect(lambda _key: with_worker.append(sum(s.thread is not None for s in c.states)))
    c.start()
    assert sum(s.thread is not None for s in c.states) == N
    assert statuses(c)[N:] == [RunStatus.QUEUED] * (12 - N)
    assert [s.name for s in c.queued] == [f"run {i}" for i in range(N, 12)]  # in the file's order
    qtbot.waitUntil(lambda: all(s.finished and not s.busy for s in c.states), timeout=120000)
    assert statuses(c) == [RunStatus.COMPLETED] * 12
    assert [s.iteration for s in c.states] == [14] * 12
    assert counting.started == 12 and 1 < counting.most <= N and max(with_worker) <= N
    assert counting.alive == 0 and not c.queued


def test_raising_the_limit_starts_queued_runs_at_once(make_controller, counting, qtbot):
    c = make_controller(4, 10**6, 1)
    c.start()
    assert statuses(c)[1:] == [RunStatus.QUEUED] * 3
    c.set_runs_at_once(3)
    assert sum(s.thread is not None for s in c.states) == 3 and len(c.queued) == 1
    qtbot.waitUntil(lambda: sum(s.status is RunStatus.RUNNING for s in c.states) == 3, timeout=30000)
    c.stop()
    qtbot.waitUntil(lambda: not c.any_busy, timeout=30000)
    assert counting.most <= 3


def test_pause_step_stop_and_reset_with_queued_runs(make_controller, counting, qtbot):
    c = make_controller(3, 10**6, 1)
    first, second, third = c.states
    c.start()
    qtbot.waitUntil(lambda: first.iteration >= 2, timeout=30000)
    c.pause()
    qtbot.waitUntil(lambda: first.status is RunStatus.PAUSED, timeout=30000)
    assert (second.status, third.status) == (RunStatus.QUEUED, RunStatus.QUEUED)
    at = first.iteration
    c.step()  # the run with the worker makes one iteration ...
    qtbot.waitUntil(lambda: first.iteration == at + 1, timeout=30000)
    assert second.thread is None and second.iteration == -1  # ... the queued ones stay queued
    first.thread.stop()  # its worker ends: paused, nothing else starts ...
    qtbot.waitUntil(lambda: first.thread is None, timeout=30000)
    assert second.thread is None and second.status is RunStatus.QUEUED
    c.step()  # ... until a step: the next run starts with one iteration
    qtbot.waitUntil(lambda: second.iteration == 0 and second.status is RunStatus.PAUSED, timeout=30000)
    assert third.status is RunStatus.QUEUED and counting.most == 1
    c.stop()  # queued runs are stopped before they start
    assert third.status is RunStatus.STOPPED and third.iteration == -1 and not c.queued
    qtbot.waitUntil(lambda: not c.any_busy and second.thread is None, timeout=30000)
    assert statuses(c) == [RunStatus.STOPPED] * 3
    c.reset()
    assert statuses(c) == [RunStatus.QUEUED] * 3 and not c.queued
    c.start()
    assert first.thread is not None and [s.thread for s in (second, third)] == [None, None]
    c.reset()  # reset empties the queue: nothing starts afterwards
    qtbot.waitUntil(lambda: not c.any_busy, timeout=30000)
    assert all(s.thread is None and s.status is RunStatus.QUEUED for s in c.states)


def test_the_limit_is_a_setting_chosen_in_the_run_menu_and_kept(qtbot, tmp_path):
    from PyQt6 import QtCore

    from gradscope.gui.controller import default_runs_at_once
    from gradscope.gui.main_window import MainWindow

    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    window = MainWindow(backend="numpy", settings=settings, warm_up=False)
    qtbot.addWidget(window)
    assert window.controller.runs_at_once == default_runs_at_once()
    checked = [a.text() for a in window.runs_at_once_menu.actions() if a.isChecked()]
    assert checked == [str(default_runs_at_once())]
    choice = next(a for a in window.runs_at_once_menu.actions() if a.text() == "1")
    choice.trigger()
    assert window.controller.runs_at_once == 1
    assert [a.text() for a in window.runs_at_once_menu.actions() if a.isChecked()] == ["1"]
    again = MainWindow(backend="numpy", settings=settings, warm_up=False)  # the next session
    qtbot.addWidget(again)
    assert again.controller.runs_at_once == 1
