"""The app's main flows, headless: load a preset, run, pause, step, stop, edit, save and reopen, export, reopen an
exported folder, bad files, failed and diverged runs, drag and drop, shortcuts, closing mid-run.

Most runs use the NumPy reference engine (tiny models, no compile); one test drives the Numba kernels and the
kernel compiler.  Every wait is on a signal or a condition, never a sleep."""

import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PyQt6 import QtCore, QtGui, QtWidgets

from gradscope import config
from gradscope.gui.main_window import MODELS_DIR, MainWindow

SMALL = """# a small experiment for the tests: keep this comment
schema_version = 1

[experiment]
name = "small"
seed = 3

[defaults]
activation = "tanh"
hidden_size = 12

[defaults.task]
name = "probe"
seq_len = 10
batch_size = 4
input_size = 3
output_size = 2

[defaults.train]
iterations = {iterations}
lr = 0.01

[[runs]]
name = "a"
init.recurrent_scale = 1.5   # a comment on a value

[[runs]]
name = "b"
activation = "relu"
"""


@pytest.fixture
def small_file(tmp_path):
    def write(iterations=5, name="small.toml"):
        path = tmp_path / name
        path.write_text(SMALL.format(iterations=iterations))
        return path

    return write


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    w = MainWindow(backend="numpy", settings=settings, warm_up=False)
    w.ask_discard = lambda runs, doing: "discard"  # the question is tested in tests/gui/test_hostile.py
    qtbot.addWidget(w)
    yield w
    w.controller.shutdown(timeout_ms=None)


def statuses(w):
    return [s.status for s in w.controller.states]


def wait_finished(qtbot, w, timeout=90000):
    qtbot.waitUntil(lambda: all(s.finished and not s.busy for s in w.controller.states), timeout=timeout)


# -------------------------------------------------------------------------------------------- presets
def test_presets_menu_lists_every_shipped_experiment(window):
    names = [a.text() for a in window.presets_menu.actions()]
    expected = sorted(p.stem.replace("_", " ") for p in MODELS_DIR.glob("*.toml"))
    assert names == expected and "relu init scale" in names


def test_lecture_demo_preset_runs_and_draws_three_lines_with_theory(window, qtbot):
    action = next(a for a in window.presets_menu.actions() if a.text() == "relu init scale")
    action.trigger()
    assert [s.name for s in window.controller.states] == ["relu 3/n", "relu 2/n", "relu 1.5/n"]
    assert window.windowTitle().startswith("GradScope — relu-init-scale")
    window.controller.start()
    wait_finished(qtbot, window)
    assert statuses(window) == ["completed"] * 3
    window.redraw(force=True)
    fig = window.views[0].figure
    slopes = {}
    for state in window.controller.states:
        t, y = fig.grad_curves.data((state.key, "grad_h_norm"))
        assert len(t) == 100
        slopes[state.name] = np.polyfit(t[10:90], y[10:90], 1)[0]  # log10 per step
        assert (state.key, "relu") in fig.theory_curves.items
    # exploding, level, vanishing, as the lecture says
    assert slopes["relu 3/n"] < -0.05 and slopes["relu 1.5/n"] > 0.03 and abs(slopes["relu 2/n"]) < 0.03
    assert window.run_list.row_texts(window.controller.states[0].key)[1:3] == ["completed", "0"]


# --------------------------------------------------------------------------------- run / pause / step / stop
def test_run_pause_step_and_stop(window, qtbot, small_file):
    assert window.open_file(small_file(iterations=100000))
    window.act_run.trigger()
    qtbot.waitUntil(lambda: all(s.iteration >= 3 for s in window.controller.states))
    assert statuses(window) == ["running", "running"]
    window.act_run.trigger()  # Space again: pause
    qtbot.waitUntil(lambda: statuses(window) == ["paused", "paused"])
    before = [s.iteration for s in window.controller.states]
    assert all(len(s.data.trace) == s.iteration + 1 for s in window.controller.states)  # record_every = 1
    window.act_step.trigger()
    qtbot.waitUntil(lambda: [s.iteration for s in window.controller.states] == [i + 1 for i in before])
    window.act_step.trigger()
    qtbot.waitUntil(lambda: [s.iteration for s in window.controller.states] == [i + 2 for i in before])
    assert statuses(window) == ["paused", "paused"]
    window.act_stop.trigger()
    wait_finished(qtbot, window)
    assert statuses(window) == ["stopped", "stopped"]
    assert [len(s.data.trace) for s in window.controller.states] == [i + 3 for i in before]  # kept
    window.act_reset.trigger()
    assert statuses(window) == ["queued", "queued"] and all(len(s.data.trace) == 0 for s in window.controller.states)


def test_step_from_queued_makes_exactly_one_iteration(window, qtbot, small_file):
    window.open_file(small_file(iterations=50))
    window.act_step.trigger()
    qtbot.waitUntil(lambda: [s.iteration for s in window.controller.states] == [0, 0])
    window.act_step.trigger()
    qtbot.waitUntil(lambda: [s.iteration for s in window.controller.states] == [1, 1])
    qtbot.waitUntil(lambda: statuses(window) == ["paused", "paused"])
    assert window.controller.states[0].data.trace.iterations.tolist() == [0, 1]


def test_keyboard_shortcuts_run_and_step(window, qtbot, small_file):
    window.open_file(small_file(iterations=3))
    with qtbot.waitActive(window):  # shortcuts go to the active window
        window.show()
        window.activateWindow()
    window.tabs.setFocus()
    qtbot.keyClick(window.tabs, QtCore.Qt.Key.Key_S)
    qtbot.waitUntil(lambda: [s.iteration for s in window.controller.states] == [0, 0])
    qtbot.keyClick(window.tabs, QtCore.Qt.Key.Key_Space)
    wait_finished(qtbot, window)
    assert statuses(window) == ["completed", "completed"]
    assert [s.iteration for s in window.controller.states] == [2, 2]
    qtbot.keyClick(window.tabs, QtCore.Qt.Key.Key_3, QtCore.Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentIndex() == 2


def test_closing_mid_run_stops_every_worker_fast(qtbot, tmp_path, small_file):
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    w = MainWindow(backend="numpy", settings=settings, warm_up=False)
    w.open_file(small_file(iterations=10**6))
    w.controller.start()
    qtbot.waitUntil(lambda: all(s.iteration >= 2 for s in w.controller.states))
    threads = [s.thread for s in w.controller.states]
    start = time.monotonic()
    w.close()
    elapsed = time.monotonic() - start
    assert all(t is not None and not t.isRunning() for t in threads)
    assert elapsed < 3.0, f"closing took {elapsed:.1f} s"


# -------------------------------------------------------------------------------------- editing and files
def test_edit_a_run_save_and_reopen(window, qtbot, small_file):
    path = small_file()
    window.open_file(path)
    state = window.controller.states[0]
    window.controller.start()
    wait_finished(qtbot, window)
    window.run_list.select(state.key)
    editor = window.editor
    assert editor.values()["init.recurrent_scale"] == 1.5
    editor.set_value("hidden_size", 24)
    editor.set_value("init.recurrent_scale", 2.25)
    assert editor.apply_button.isEnabled()
    editor.apply_button.click()
    edited = window.controller.state(state.key)
    assert edited.run.hidden_size == 24 and edited.run.init.recurrent_scale == 2.25
    assert edited.status == "queued" and len(edited.data.trace) == 0  # the old trace no longer fits
    assert window.isWindowModified()
    assert window.save_to(path)
    text = path.read_text()
    assert "keep this comment" in text and "a comment on a value" in text  # the user's comments stay
    reopened = config.load(path)
    assert reopened.runs[0].hidden_size == 24 and reopened.runs[0].init.recurrent_scale == 2.25
    assert reopened.runs[1] == window.controller.states[1].run
    assert not window.isWindowModified()


def test_editor_refuses_invalid_settings_with_the_key(window, small_file):
    window.open_file(small_file())
    editor = window.editor
    editor.set_value("cell", "lstm")
    editor.set_value("init.chrono", True)
    editor.set_value("task.seq_len", 2)  # chrono needs T_max >= 3
    assert not editor.apply_button.isEnabled()
    assert "chrono" in editor.message.text()
    assert editor.apply() is False
    editor.set_value("task.seq_len", 10)
    assert editor.message.text() == "" and editor.apply()


def test_add_duplicate_and_remove_runs(window, small_file):
    window.open_file(small_file())
    first = window.controller.states[0].key
    window.run_list.duplicate_requested.emit(first)
    names = [s.name for s in window.controller.states]
    assert names == ["a", "b", "a (2)"]
    assert len({s.data.color for s in window.controller.states}) == 3  # each run its own colour
    window.run_list.add_button.click()
    assert [s.name for s in window.controller.states][-1] == "new run"
    window.run_list.remove_requested.emit(first)
    assert [s.name for s in window.controller.states] == ["b", "a (2)", "new run"]
    assert [r.name for r in window.controller.experiment.runs] == ["b", "a (2)", "new run"]


def test_hiding_a_run_removes_it_from_the_views(window, qtbot, small_file):
    window.open_file(small_file(iterations=1))
    window.controller.start()
    wait_finished(qtbot, window)
    key = window.controller.states[1].key
    window.run_list.set_checked(key, False)
    window.redraw()
    assert window.views[0].figure.grad_curves.data((key, "grad_h_norm")) is None
    assert window.views[0].figure.legend.labels[:1] == ["a"]


def test_a_bad_file_gives_a_dialog_naming_the_file_and_the_key(window, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.format(iterations=1).replace("hidden_size = 12", "hiden_size = 12"))
    assert window.open_file(bad) is False
    text = window.last_dialog.text()
    assert "bad.toml" in text and "hiden_size" in text
    assert window.controller.experiment is None  # nothing half-loaded


def test_recent_files_and_drag_and_drop(window, small_file):
    first, second = small_file(name="one.toml"), small_file(name="two.toml")
    window.open_file(first)
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(second))])
    pos = QtCore.QPointF(10, 10)
    enter = QtGui.QDragEnterEvent(
        QtCore.QPoint(10, 10),
        QtCore.Qt.DropAction.CopyAction,
        mime,
        QtCore.Qt.MouseButton.LeftButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
    )
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QtGui.QDropEvent(
        pos,
        QtCore.Qt.DropAction.CopyAction,
        mime,
        QtCore.Qt.MouseButton.LeftButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(drop)
    assert window.controller.experiment.source == second
    recent = [a.text() for a in window.recent_menu.actions()]
    assert recent == [str(second.resolve()), str(first.resolve())]
    mime_txt = QtCore.QMimeData()
    mime_txt.setUrls([QtCore.QUrl.fromLocalFile(str(second.with_suffix(".txt")))])
    refused = QtGui.QDragEnterEvent(
        QtCore.QPoint(10, 10),
        QtCore.Qt.DropAction.CopyAction,
        mime_txt,
        QtCore.Qt.MouseButton.LeftButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
    )
    refused.ignore()
    window.dragEnterEvent(refused)
    assert not refused.isAccepted()


# ------------------------------------------------------------------------------------ export and reopen
def test_export_then_reopen_the_folder_without_running(window, qtbot, small_file, tmp_path):
    window.open_file(small_file(iterations=4))
    window.controller.start()
    wait_finished(qtbot, window)
    out = window.export_to(tmp_path / "export")
    assert out is not None
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["completed", "completed"]
    assert [r["iterations"] for r in summary["runs"]] == [4, 4]
    svg = out / "plots" / "through_time.svg"
    ET.parse(svg)
    original = {s.name: s.data.trace.to_arrays() for s in window.controller.states}

    assert window.open_folder(out)
    loaded = window.controller.states
    assert statuses(window) == ["completed", "completed"]
    for s in loaded:
        arrays = s.data.trace.to_arrays()
        np.testing.assert_allclose(arrays["grad_h_norm"], original[s.name]["grad_h_norm"])
        assert s.data.baseline_loss == pytest.approx(1.0)  # probe, k = 2: k / 2
    window.controller.start()  # nothing to run
    assert not window.controller.any_busy
    window.redraw(force=True)
    assert window.views[0].figure.grad_curves.data((loaded[0].key, "grad_h_norm")) is not None


def test_export_with_nothing_recorded_says_so(window, small_file, tmp_path):
    window.open_file(small_file())
    assert window.export_to(tmp_path / "nothing") is None
    assert "press Run" in window.last_dialog.text()
    assert not (tmp_path / "nothing").exists()


def test_export_figures_only(window, qtbot, small_file, tmp_path):
    window.open_file(small_file(iterations=2))
    window.controller.start()
    wait_finished(qtbot, window)
    files = window.export_figures_to(tmp_path / "figs")
    assert {f.name for f in files} >= {"through_time.png", "through_time.svg", "composite.svg", "waterfall_a.png"}


# ------------------------------------------------------------------------------------ faults
def test_a_failing_run_is_marked_failed_with_its_traceback_and_others_finish(window, qtbot, small_file, monkeypatch):
    from gradscope.engine import trainer
    from gradscope.gui import worker

    monkeypatch.setattr(worker, "IN_PROCESS", True)  # the patched Training is this process's (runs' processes:
    # tests/test_run_process.py and the test below)

    real = trainer.Training.__init__

    def broken(self, run, seed, backend="numba"):
        if run.name == "b":
            raise MemoryError("simulated: cannot allocate the states")
        real(self, run, seed, backend=backend)

    monkeypatch.setattr(trainer.Training, "__init__", broken)
    window.open_file(small_file(iterations=3))
    window.controller.start()
    wait_finished(qtbot, window)
    assert statuses(window) == ["completed", "failed"]
    failed = window.controller.states[1]
    assert "MemoryError: simulated" in failed.error and "Traceback" in failed.error
    assert window.run_list.row_texts(failed.key)[1].startswith("failed")
    window.show_run_details(failed.key)
    assert "simulated" in window.last_dialog.text() and "Traceback" in window.last_dialog.detailedText()


def test_a_diverging_run_stops_as_diverged_and_keeps_its_trace(window, qtbot, tmp_path):
    text = SMALL.format(iterations=20).replace(
        'activation = "relu"', 'activation = "relu"\nhidden_size = 64\ninit.recurrent_scale = 8.0\ntask.seq_len = 120'
    )
    text = text.replace('name = "b"', 'name = "exploding relu"')
    path = tmp_path / "boom.toml"
    path.write_text(text)
    window.open_file(path)
    window.controller.start()
    wait_finished(qtbot, window)
    boom = window.controller.states[1]
    assert boom.status == "diverged"
    assert boom.status_text().startswith("diverged at iteration 0, layer 0, t = ")
    assert len(boom.data.trace) == 1 and not np.isfinite(boom.data.trace.array("h_norm")).all()
    window.redraw(force=True)
    assert window.views[0].figure.grad_marks.count > 0 or window.views[0].figure.state_marks.count > 0
    # the long status never squeezes the run names out of the list (it is elided, whole in its tooltip)
    tree = window.run_list.tree
    with qtbot.waitExposed(window):
        window.show()
    tree.setFixedWidth(300)
    qtbot.waitUntil(lambda: tree.viewport().width() < 300 and tree.columnWidth(1) > 0)
    assert tree.columnWidth(0) >= tree.fontMetrics().horizontalAdvance(boom.name) + 20
    assert window.run_list.tooltip(boom.key, 1) == boom.status_text()
    assert "diverged at iteration 0" in window.views[0].figure.legend.labels[1]


# ------------------------------------------------------------------------------------ the Numba engine
def test_numba_backend_runs_with_compile_progress(qtbot, tmp_path, small_file):
    pytest.importorskip("gradscope.engine.driver")
    from gradscope.gui.worker import KernelCompiler

    fresh = KernelCompiler()
    spec = config.load(small_file()).runs[0].model_spec()
    with qtbot.waitSignal(
        fresh.progress, timeout=120000, check_params_cb=lambda key, done, total, name: done == total
    ) as blocker:
        fresh.request(spec)
    assert blocker.args[0][:2] == ("rnn", "float32")  # then the architecture and the bidirectional flag
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    w = MainWindow(backend="numba", settings=settings, warm_up=True)
    qtbot.addWidget(w)
    w.open_file(small_file(iterations=5))
    w.controller.start()
    wait_finished(qtbot, w, timeout=120000)
    assert statuses(w) == ["completed", "completed"]
    assert [len(s.data.trace) for s in w.controller.states] == [5, 5]
    w.close()


def test_a_run_whose_process_is_killed_is_failed_in_one_line_and_keeps_its_records(window, qtbot, small_file):
    """Runs compute in processes of their own (gradscope.run_process): one killed mid-run (as the kernel's OOM
    killer would) is a failed run that says how it ended and keeps every record it sent; the other finishes."""
    import signal

    window.open_file(small_file(iterations=100000))
    window.controller.start()
    a, b = window.controller.states
    qtbot.waitUntil(lambda: b.thread is not None and b.thread.process is not None and b.iteration >= 5, timeout=60000)
    os.kill(b.thread.process.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: b.status == "failed", timeout=30000)
    assert b.error.startswith("RunProcessDied:") and "killed by SIGKILL" in b.error and "\n" not in b.error
    assert "records it sent before are kept" in b.error
    kept = len(b.data.trace)
    assert kept >= 5 and b.result.iterations >= kept
    assert a.status == "running"  # the other run's process goes on
    window.controller.stop()
    wait_finished(qtbot, window)
    assert a.status == "stopped" and len(b.data.trace) == kept


def test_runs_training_at_once_share_the_cores_between_them(window, qtbot, small_file):
    """Two runs training: each pass gets cpus // 2 threads (at least 1) for its batch shards; one run
    left: all of them.  Threads change only the speed, never the numbers (tests/engine/test_shards.py)."""
    import os

    window.open_file(small_file(iterations=100000))
    window.controller.start()
    states = window.controller.states
    qtbot.waitUntil(lambda: all(s.training is not None and s.status == "running" for s in states), timeout=30000)
    assert [s.threads for s in states] == [max(1, (os.cpu_count() or 1) // 2)] * 2  # sent to their processes
    states[1].thread.stop()
    qtbot.waitUntil(lambda: states[1].finished, timeout=30000)
    assert states[0].threads == (os.cpu_count() or 1)
    window.controller.stop()
    wait_finished(qtbot, window)


def test_about_box_lists_versions(window):
    window.about()
    info = window.last_dialog.informativeText()
    for name in ("Python", "NumPy", "Numba", "PyQt6", "pyqtgraph"):
        assert name in info
    assert isinstance(window.last_dialog, QtWidgets.QMessageBox)


def test_editor_shows_task_fixed_sizes_as_such_and_restores_probe_sizes(window, small_file):
    window.open_file(small_file())
    editor = window.editor
    assert editor.values()["task.input_size"] == 3
    editor.set_value("task.name", "adding")
    assert editor.values()["task.input_size"] == 0
    assert editor.widgets["task.input_size"].text() == "set by the task"
    run = editor.edited_run()
    assert run.task.input_size is None and run.model_spec().input_size == 2  # the adding problem's n
    editor.set_value("task.name", "probe")
    assert editor.values()["task.input_size"] == 32 and editor.edited_run().task.input_size == 32


def test_the_app_process_runs_blas_single_threaded(tmp_path):
    """Importing gradscope (before NumPy) keeps OpenBLAS to one thread: several pools of busy-waiting threads
    made training 30x slower on two cores (gradscope/__init__.py)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("threadpoolctl")
    code = (
        "import gradscope.gui.app, numpy, scipy.linalg\n"
        "from threadpoolctl import threadpool_info\n"
        "print(sorted({i['num_threads'] for i in threadpool_info() if i['internal_api'] == 'openblas'}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1]"
    env["OPENBLAS_NUM_THREADS"] = "2"  # the user's choice is kept
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert out.stdout.strip() == "[2]"


def test_every_editor_field_round_trips_a_run_of_each_preset(window):
    """The form shows and rebuilds every shipped run unchanged (no key lost or retyped on the way)."""
    for path in sorted(MODELS_DIR.glob("*.toml")):
        experiment = config.load(path)
        for run in experiment.runs:
            window.editor.set_run(0, run)
            assert window.editor.edited_run() == run, (path.name, run.name)
            assert not window.editor.apply_button.isEnabled()
    window.editor.set_value("train.optimizer", "adam")
    window.editor.set_value("train.beta2", 0.98)
    assert window.editor.edited_run().train.beta2 == 0.98
    assert not window.editor.widgets["train.momentum"].isEnabled()


def test_editor_keeps_exact_floats_and_refuses_text_that_is_not_a_number(window, small_file, qtbot):
    window.open_file(small_file())
    run = window.controller.states[0].run
    exact = run.model_copy(
        update={
            "train": run.train.model_copy(update={"lr": 3e-7}),
            "init": run.init.model_copy(update={"recurrent_scale": 1.41421356237}),
        }
    )
    editor = window.editor
    editor.set_run(0, exact)
    editor.set_value("hidden_size", 20)  # edit something else
    edited = editor.edited_run()
    assert edited.train.lr == 3e-7 and edited.init.recurrent_scale == 1.41421356237  # not rounded
    lr_field = editor.widgets["train.lr"]
    lr_field.clear()
    qtbot.keyClicks(lr_field, "1e-3x")  # the validator drops the x
    assert editor.edited_run().train.lr == 1e-3
    qtbot.keyClick(lr_field, QtCore.Qt.Key.Key_A, QtCore.Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(lr_field, QtCore.Qt.Key.Key_Backspace)  # the user empties the field
    assert "train.lr" in editor.message.text() and not editor.apply_button.isEnabled()
    assert editor.apply() is False


def test_unticking_runs_repeatedly_keeps_the_rows_and_the_selection(window, qtbot, small_file):
    """Each tick used to rebuild the list from inside the row's own signal (a crash, sometimes)."""
    window.open_file(small_file(iterations=1))
    keys = window.run_list.keys()
    model = window.run_list.model
    window.run_list.select(window.controller.states[1].key)
    for _ in range(5):
        for key in keys:
            window.run_list.set_checked(key, False)
            assert window.controller.state(key).data.visible is False
            window.run_list.set_checked(key, True)
    assert window.run_list.keys() == keys and window.run_list.model is model  # the same rows
    assert window.run_list.current_key() == window.controller.states[1].key
    assert all(s.data.visible for s in window.controller.states)


def test_closing_the_app_mid_compile_exits_at_once_and_cleanly(tmp_path):
    """A cold compile cannot be interrupted: app.main ends the process instead of waiting for it (subprocess)."""
    pytest.importorskip("gradscope.engine.driver")
    import os
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from PyQt6 import QtCore\n"
        "from gradscope.gui import app, worker\n"
        "a = app.make_app()\n"
        "def close():\n"
        "    w = app.main.window\n"
        "    print('compiling', worker.compiler().busy, flush=True)\n"
        "    w.close(); a.quit()\n"
        "def poll():\n"
        "    if worker.compiler().busy: close()\n"
        "    else: QtCore.QTimer.singleShot(5, poll)\n"
        "QtCore.QTimer.singleShot(0, poll)\n"
        f"start = time.monotonic(); code = app.main({str(MODELS_DIR / 'relu_tanh_lstm.toml')!r})\n"
        "print('returned', code, flush=True)\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cold-cache"), QT_QPA_PLATFORM="offscreen")
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr[-2000:]
    assert "compiling True" in out.stdout and "returned" not in out.stdout  # ended by os._exit mid-compile
    assert elapsed < 60, f"closing mid-compile took {elapsed:.0f} s"


def test_the_app_takes_itself_down_in_order_at_exit(tmp_path):
    """After the event loop, app.main joins the training threads and deletes the window while the QApplication
    still exists (an arbitrary teardown order at interpreter exit can crash the process); run mid-training in
    a subprocess, closed by its own timer."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, threading\n"
        "from PyQt6 import QtCore, sip\n"
        "from gradscope.gui import app, worker\n"
        "a = app.make_app()\n"
        "seen = {}\n"
        "def close():\n"
        "    w = seen['window'] = app.main.window\n"
        "    states = w.controller.states\n"
        "    going = [s for s in states if s.thread is not None]   # the runs not queued\n"
        "    if not going or min(s.iteration for s in going) < 2 or worker.compiler().busy:\n"
        "        return QtCore.QTimer.singleShot(20, close)\n"
        "    seen['threads'] = [s.thread for s in states]\n"
        "    w.close(); a.quit()\n"
        "def start():\n"
        "    app.main.window.controller.start(); close()\n"
        "QtCore.QTimer.singleShot(300, start)\n"
        f"code = app.main({str(MODELS_DIR / 'relu_tanh_lstm.toml')!r})\n"
        "print('returned', code, 'window deleted', sip.isdeleted(seen['window']),\n"
        "      'threads running', sum(t is not None and not sip.isdeleted(t) and t.isRunning()\n"
        "                             for t in seen['threads']),\n"
        "      'python threads', sorted(t.name for t in threading.enumerate()\n"
        "                               if not isinstance(t, threading._DummyThread)\n"
        "                               and not (t.daemon and (t.name == 'zarr_io'\n"
        "                                                      or t.name.startswith('asyncio_')))),\n"
        "      flush=True)\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "returned 0 window deleted True threads running 0" in out.stdout, out.stdout + out.stderr[-2000:]
    # what may remain: the main thread and the idle kernel compiler (a daemon blocked on its queue); Python
    # lists the ended QThreads as "dummy" threads forever, so they are left out; so are Zarr's own daemon
    # threads (its event loop "zarr_io" and that loop's executor), which the app's recording starts once
    assert (
        "python threads ['MainThread', 'gradscope-compiler']" in out.stdout
        or "python threads ['MainThread']" in out.stdout
    ), out.stdout
