"""The app under hostile input and at scale: a bad file from the command line gets its dialog, finished results
are not discarded without asking, 10 000 runs keep the window responsive and quit at once, and the small
defects of issue 12 (rates while paused, Run on an export, the run list's height)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PyQt6 import QtCore, QtWidgets

from gradscope.gui.main_window import MainWindow
from gradscope.runs import RunStatus

ROOT = Path(__file__).resolve().parents[2]

SMALL = """schema_version = 1
[experiment]
name = "small"
[defaults]
hidden_size = 6
[defaults.task]
seq_len = 6
batch_size = 2
input_size = 2
output_size = 2
[defaults.train]
iterations = {iterations}
"""


def experiment_file(tmp_path, runs=2, iterations=3, name="small.toml"):
    path = tmp_path / name
    path.write_text(SMALL.format(iterations=iterations) + "".join(f'[[runs]]\nname = "r{i}"\n' for i in range(runs)))
    return path


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    w = MainWindow(backend="numpy", settings=settings, warm_up=False)
    asked = []
    w.answer = "cancel"
    w.ask_discard = lambda runs, doing: asked.append((runs, doing)) or w.answer
    w.asked = asked
    qtbot.addWidget(w)
    yield w
    w.controller.shutdown(timeout_ms=None)


def finish(qtbot, w):
    w.controller.start()
    qtbot.waitUntil(lambda: all(s.finished and not s.busy for s in w.controller.states), timeout=60000)


# ------------------------------------------------------------------------------------ asking before discarding
def test_reset_and_open_ask_before_discarding_finished_results(window, qtbot, tmp_path):
    path = experiment_file(tmp_path)
    assert window.open_file(path) and window.asked == []  # nothing computed yet: no question
    finish(qtbot, window)
    traces = [s.data.trace for s in window.controller.states]
    window.act_reset.trigger()  # cancelled: everything stays
    assert window.asked == [(2, "reset")] and [s.data.trace for s in window.controller.states] == traces
    assert not window.open_file(experiment_file(tmp_path, runs=3, name="other.toml"))
    assert len(window.controller.states) == 2 and window.asked[-1] == (2, "open other.toml")
    preset = window.presets_menu.actions()[0]
    preset.trigger()  # a preset too
    assert len(window.controller.states) == 2 and len(window.asked) == 3
    window.answer = "discard"
    window.act_reset.trigger()
    assert all(len(s.data.trace) == 0 and s.status is RunStatus.QUEUED for s in window.controller.states)


def test_after_an_export_nothing_is_asked_until_something_new_is_computed(window, qtbot, tmp_path):
    window.open_file(experiment_file(tmp_path))
    finish(qtbot, window)
    assert window.export_to(tmp_path / "out") is not None
    assert window.open_file(experiment_file(tmp_path, runs=1, name="next.toml"))
    assert window.asked == [] and len(window.controller.states) == 1
    finish(qtbot, window)
    assert not window.open_folder(tmp_path / "out") and len(window.asked) == 1  # the new run's results


def test_run_on_a_reopened_export_says_why_nothing_runs(window, qtbot, tmp_path):
    window.open_file(experiment_file(tmp_path))
    finish(qtbot, window)
    window.export_to(tmp_path / "out")
    assert window.open_folder(tmp_path / "out")
    window.act_run.trigger()
    assert "opened from an export" in window.statusBar().full_message()
    assert not window.controller.any_busy


def test_rates_are_shown_only_while_a_run_computes(window, qtbot, tmp_path):
    window.open_file(experiment_file(tmp_path, runs=1, iterations=10**6))
    window.controller.start()
    state = window.controller.states[0]
    qtbot.waitUntil(lambda: state.iteration > 20 and state.iterations_per_second > 0)
    assert window.run_list.row_texts(state.key)[3] != ""
    window.controller.pause()
    qtbot.waitUntil(lambda: state.status is RunStatus.PAUSED)
    assert state.iterations_per_second > 0 and window.run_list.row_texts(state.key)[3] == ""  # no stale rate
    window.controller.stop()


def test_the_run_list_shows_at_least_eight_rows(window, tmp_path, qtbot):
    window.open_file(experiment_file(tmp_path, runs=12))
    window.show()
    qtbot.waitExposed(window)
    tree = window.run_list.tree
    assert tree.viewport().height() >= 8 * tree.sizeHintForRow(0)


def test_a_status_message_too_long_for_the_bar_is_elided_in_the_middle_and_whole_in_its_tooltip(
    window, qtbot, tmp_path
):
    """QStatusBar clipped a long message at its right edge ("Opened /a/long/path/...: press Run" lost the "press
    Run" part); now it keeps both ends, re-fits on resize, and the tooltip holds all of it."""
    deep = tmp_path / ("very-long-folder-name-" * 4) / "experiment.toml"
    deep.parent.mkdir()
    deep.write_text(experiment_file(tmp_path).read_text())
    window.resize(700, 500)
    window.show()
    qtbot.waitExposed(window)
    assert window.open_file(deep)
    bar = window.statusBar()
    full = bar.full_message()
    assert full == f"Opened {deep}: press Run (Space)" and bar.toolTip() == full
    shown = bar.currentMessage()
    assert shown != full and "…" in shown
    assert shown.startswith("Opened /") and shown.endswith("press Run (Space)")
    assert bar.fontMetrics().horizontalAdvance(shown) <= bar.width()
    window.resize(bar.fontMetrics().horizontalAdvance(full) + 400, 500)
    qtbot.waitUntil(lambda: bar.currentMessage() == full)  # room again: the whole message


def test_the_window_fits_a_laptop_screen(window):
    """Every tab's controls on one row made the window at least 1,609 px wide (the through-time view's theory
    toggles, the Sweep tab's buttons and its one-line status): past a 1366 px laptop screen, cut off."""
    window.show()
    assert window.minimumSizeHint().width() <= 1280
    for i in range(window.tabs.count()):
        assert window.tabs.widget(i).minimumSizeHint().width() <= 1280 - 440, window.tabs.tabText(i)


# ------------------------------------------------------------------------------------ a bad file from the command line
def test_the_app_on_a_bad_file_from_the_command_line_shows_a_dialog(qtbot, tmp_path, monkeypatch):
    from gradscope.gui import app

    bad = tmp_path / "bad.toml"
    bad.write_text('schema_version = 1\n[defaults]\ncell = "transformer"\n')
    seen = {}

    def exec_(self=None):  # the event loop, briefly: the window opens the file after it is shown
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and app.main.window.last_dialog is None:
            QtWidgets.QApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        box = app.main.window.last_dialog
        seen["text"] = box.text() if box is not None else None
        seen["visible"] = box is not None and box.isVisible()
        app.main.window.close()
        return 0

    monkeypatch.setattr(QtWidgets.QApplication, "exec", exec_)
    monkeypatch.setattr(app, "close_down", lambda window, code=0: window.controller.shutdown(timeout_ms=None))
    assert app.main(str(bad)) == 0
    assert seen["visible"] and str(bad) in seen["text"] and "cell" in seen["text"]


# ------------------------------------------------------------------------------------------------ scale
def test_ten_thousand_runs_keep_the_window_responsive_and_close_at_once(window, qtbot, tmp_path):
    path = experiment_file(tmp_path, runs=10_000, iterations=30)
    start = time.perf_counter()
    assert window.open_file(path)
    opened = time.perf_counter() - start
    window.show()
    qtbot.waitExposed(window)
    model = window.run_list.model
    assert model.rowCount() == 10_000
    assert window.run_list.tree.uniformRowHeights()  # the view measures one row, not 10 000
    gaps, last = [], [time.perf_counter()]

    def beat():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QtCore.QTimer()
    timer.timeout.connect(beat)
    timer.start(10)
    started = time.perf_counter()
    window.act_run.trigger()
    run_took = time.perf_counter() - started
    qtbot.wait(4000)
    timer.stop()
    finished = sum(s.finished for s in window.controller.states)
    gaps.sort()
    assert opened < 5 and run_took < 0.5, (opened, run_took)
    assert finished >= 2 and len(window.controller.queued) > 9000  # runs queue; a few at a time train
    assert gaps[len(gaps) // 2] < 0.05 and gaps[-1] < 1.0, (gaps[len(gaps) // 2], gaps[-1])
    closing = time.perf_counter()
    window.close()
    # closing waits for the few training runs' last records (a store flush each, 0.3-0.6 s here, more under
    # load), never for the 9,990 queued runs, which would take minutes
    assert time.perf_counter() - closing < 3.0 and not window.controller.any_busy


def test_quitting_the_app_ends_the_process_with_every_record_on_disk(tmp_path):
    """Ctrl+Q with five runs of 10^6 iterations training, in a process of its own: the process ends once the
    runs' stores have their last rows (not after the runs, not after the interpreter's teardown), each store
    says "stopped" with the iterations computed before the key, and the session is marked as ended, so the
    next start does not offer it as interrupted.  The bound is the window's own wait for the stores
    (CLOSE_WAIT_MS); the time itself (0.4-0.8 s here, the five stores' last flushes) is a figure, not a test."""
    import glob
    import json

    from gradscope.gui.session import CLOSE_WAIT_MS
    from gradscope.store import read_store

    path = experiment_file(tmp_path, runs=5, iterations=10**6)
    code = (
        "import sys, time\n"
        "from PyQt6 import QtCore, QtTest\n"
        "from gradscope import cli\n"
        "from gradscope.gui import app\n"
        "a = app.make_app()\n"
        "def check():\n"
        "    w = getattr(app.main, 'window', None)\n"
        "    if w is None or not w.controller.states:\n"
        "        return QtCore.QTimer.singleShot(50, check)\n"
        "    if not w.controller.any_busy:\n"
        "        w.controller.set_runs_at_once(5); w.controller.start()\n"
        "    if min(s.iteration for s in w.controller.states) < 3:\n"
        "        return QtCore.QTimer.singleShot(50, check)\n"
        "    print('quit', time.time(), flush=True)\n"
        "    QtTest.QTest.keyClick(w, QtCore.Qt.Key.Key_Q, QtCore.Qt.KeyboardModifier.ControlModifier)\n"
        "QtCore.QTimer.singleShot(50, check)\n"
        f"cli.main([{str(path)!r}])\n"
        "print('not reached: the process ends in cli.main', flush=True)\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # the app's settings, not the user's
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # and its session recordings
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("quit"), line
    proc.wait(timeout=60)
    ended = time.time()
    assert proc.returncode == 0 and "not reached" not in proc.stdout.read()
    took = ended - float(line.split()[1])
    assert took < CLOSE_WAIT_MS / 1000, f"quit took {took:.2f} s"
    sessions = glob.glob(str(tmp_path / "data" / "**" / "session.json"), recursive=True)
    assert len(sessions) == 1 and "ended" in json.loads(Path(sessions[0]).read_text())
    stores = sorted(glob.glob(str(Path(sessions[0]).parent / "*" / "recording" / "*" / "records.zarr")))
    assert len(stores) == 5
    for store in stores:
        columns, info = read_store(store)
        assert info["status"] == "stopped" and 3 <= info["iterations"] < 10**6, (store, info)
        assert info["records"] == len(columns["grad_norm"]) >= 3


# ------------------------------------------------------------------------------------------ the waterfall
def test_after_reset_the_waterfall_keeps_nothing_of_the_old_run(window, qtbot, tmp_path):
    window.answer = "discard"
    window.open_file(experiment_file(tmp_path, runs=1, iterations=4))
    finish(qtbot, window)
    window.tabs.setCurrentIndex(1)
    window.redraw(force=True)
    fig = window.views[1].figure
    assert "r0" in fig.plot.titleLabel.text and fig.shown is not None
    fig.levels = (-15, 3)  # as a diverged run would leave them
    window.act_reset.trigger()
    window.redraw(force=True)
    assert "r0" not in fig.plot.titleLabel.text and fig.shown is None
    assert tuple(fig.colorbar.levels()) == (-1, 1) and fig.levels is None
    assert fig.snap.bounds is None or fig.snap.bounds[0] == (0.0, 5.0)  # the runs' timesteps 0 .. T-1


def test_the_colour_bar_labels_its_top_decade(window):
    fig = window.views[1].figure
    for lo, hi in ((-17, 3), (-40, -1), (-3, 2), (0, 1)):
        fig._set_colorbar_ticks(lo, hi)
        decades = [value for value, _ in fig.colorbar.axis._tickLevels[0]]
        assert decades[0] == lo and decades[-1] == hi and len(decades) <= 10, (lo, hi, decades)


def test_gradients_that_underflow_to_zero_are_marked_not_left_as_gaps(qtbot):
    """A sigmoid RNN's gradient can underflow to exactly 0 far back in time: log10 has no place for it, so the
    through-time view marks those steps (triangles under the curves) and says so in the legend."""
    import numpy as np

    from gradscope.gui.model import RunData
    from gradscope.gui.views import ProfileView
    from gradscope.trace import Trace

    trace = Trace()
    grad = np.array([[0.0, 0.0, 0.0, 1e-30, 1e-10, 1.0]])  # (S, T): steps 0..2 underflowed
    trace.append_columns({"iteration": np.array(0), "grad_h_norm": grad, "h_norm": np.ones((1, 6))})
    view = ProfileView()
    qtbot.addWidget(view)
    view.redraw([RunData(0, "sigmoid", "#1f77b4", trace)], force=True)
    fig = view.figure
    assert sorted(x for x, _ in fig.grad_zeros.points) == [0.0, 1.0, 2.0]
    (y,) = {spot.pos().y() for spot in fig.grad_zeros.item.points()}
    assert y < -30  # under the smallest value drawn (log10 1e-30)
    assert any("exactly 0" in label for label in fig.legend.labels)
    assert fig.grad_marks.count == 0  # zeros are not NaN or Inf


def test_the_hover_box_does_not_hide_the_curves_ends(qtbot):
    """A gradient exploding back in time ends at the top left: with the mouse on the right, the readout goes to
    the left corner that hides fewer points (the bottom one here), not over the curve's end."""
    import numpy as np

    from gradscope.gui import plotting
    from gradscope.gui.model import RunData
    from gradscope.gui.views import ProfileView
    from gradscope.trace import Trace

    T = 60
    trace = Trace()
    grad = (1.25 ** (T - 1 - np.arange(T)))[None, :]  # (S, T): biggest at t = 0
    trace.append_columns({"iteration": np.array(0), "grad_h_norm": grad, "h_norm": np.ones((1, T))})
    view = ProfileView()
    qtbot.addWidget(view)
    view.resize(1000, 600)
    with qtbot.waitExposed(view):
        view.show()
    view.redraw([RunData(0, "relu 3/n", "#1f77b4", trace)], force=True)
    fig = view.figure
    vb = fig.grad_plot.getViewBox()
    qtbot.waitUntil(lambda: vb.viewRange()[0][1] >= T - 1)
    readout = fig.readouts[0]
    readout.hover(vb.mapViewToScene(plotting.QtCore.QPointF(50.0, 2.0)))
    box, plot = readout.label.sceneBoundingRect(), vb.sceneBoundingRect()
    assert readout.text and box.left() <= plot.left() + 2  # away from the mouse: the left side
    assert box.bottom() >= plot.bottom() - 2, "the box sits over the top-left end of the curve"
    assert readout._points_under(vb, box) == 0
