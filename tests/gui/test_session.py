"""The app records every run as it runs (gradscope.sessions, gui/session.py): what it recorded reads back equal to
what it holds in memory; a SIGKILLed app leaves a session that reads as interrupted, whose records are an
uninterrupted run's prefix, and the next start offers it; an unwritable folder or a full disk (RLIMIT_FSIZE)
while recording or exporting gives a dialog naming the folder, with the traces still shown.

Dialogs are opened, never exec'd: QMessageBox.exec is replaced by a failure, so nothing here can block."""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PyQt6 import QtCore, QtWidgets

import gradscope
from gradscope import config
from gradscope.experiment import execute_run, select
from gradscope.gui.main_window import MODELS_DIR, MainWindow
from gradscope.sessions import SESSION, last_interrupted, open_session
from tests.small_experiment import SMALL

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _never_blocks(monkeypatch):
    def refuse(*_args):
        raise AssertionError("a modal QMessageBox.exec() would block here")

    monkeypatch.setattr(QtWidgets.QMessageBox, "exec", refuse)


def make_window(qtbot, tmp_path, root):
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    settings.setValue("recording_folder", str(root))
    w = MainWindow(backend="numpy", settings=settings, warm_up=False)
    w.ask_discard = lambda runs, doing: "discard"
    qtbot.addWidget(w)
    return w


@pytest.fixture
def small(tmp_path):
    def write(iterations=30):
        path = tmp_path / "small.toml"
        path.write_text(SMALL.format(iterations=iterations))
        return path

    return write


def wait_finished(qtbot, w, timeout=120000):
    qtbot.waitUntil(lambda: all(s.finished and not s.busy for s in w.controller.states), timeout=timeout)


def assert_same_trace(memory, disk):
    a, b = memory.to_arrays(), disk.to_arrays()
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ------------------------------------------------------------------------------------------- (a) records
def test_runs_record_to_the_session_and_read_back_equal_to_memory(qtbot, tmp_path, small):
    w = make_window(qtbot, tmp_path, tmp_path / "rec")
    session = w.recording.session
    assert session.path.parent == tmp_path / "rec"
    assert w.recording.label.text().startswith("Recording to ") and session.path.name in w.recording.label.text()
    assert w.open_file(small(iterations=40))
    w.controller.start()
    wait_finished(qtbot, w)
    w.controller.shutdown(timeout_ms=None)
    assert [s.status for s in w.controller.states] == ["completed", "completed"]

    results = gradscope.open(session.path)  # the public API reads the app's session folder
    assert [r.name for r in results.runs] == ["a", "b"]
    for state, run in zip(w.controller.states, results.runs):
        assert str(run.status) == "completed" and run.iterations == 40 == state.iteration + 1
        assert_same_trace(state.data.trace, run.trace)
        assert run.seed == state.result.seed

    # Reset drops the traces, and their recordings with them; the runs again record anew
    w.controller.reset()
    assert not any(p.is_dir() for p in session.path.iterdir())
    w.controller.start()
    wait_finished(qtbot, w)
    w.close()  # a clean close: the folder is kept and marked ended (not offered for recovery)
    manifest = json.loads((session.path / SESSION).read_text())
    assert manifest["ended"]
    folder = open_session(session.path)
    assert folder.state == "ended" and [r.name for r in folder.results] == ["a", "b"]
    for state, result in zip(w.controller.states, folder.results):
        assert_same_trace(state.data.trace, result.trace)
    assert last_interrupted(tmp_path / "rec") is None


# ------------------------------------------------------------------------------------------- (b) SIGKILL
CHILD = """
import sys
from PyQt6 import QtCore
from gradscope import config
from gradscope.experiment import select
from gradscope.gui.app import make_app
from gradscope.gui.main_window import MainWindow

app = make_app()
window = MainWindow(backend="numpy", warm_up=False)
window.show()
window.open_file(sys.argv[1])
window.controller.start()
app.exec()
"""


@pytest.mark.parametrize("runs_in", ["process", "thread"])
def test_a_killed_app_leaves_an_interrupted_session_that_the_next_start_offers(qtbot, tmp_path, runs_in):
    """SIGKILL the app mid-run.  A run in a process of its own (the default) hears its pipe end, stops and
    closes its store: every iteration it computed is kept, as "stopped".  A run in one of the app's threads
    dies with it: its store keeps what was committed, marked as interrupted there."""
    experiment = select(config.load(MODELS_DIR / "clipping_exploding_relu.toml"), runs=["clip 1.0"], iterations=100000)
    path = tmp_path / "long.toml"
    config.save(experiment, path)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    env["GRADSCOPE_RUNS_IN_PROCESS"] = "1" if runs_in == "thread" else "0"
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # the default recording folder: Qt's AppDataLocation
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    log = (tmp_path / "stderr.txt").open("wb")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=env, stderr=log)
    root = tmp_path / "data" / "GradScope" / "GradScope" / "sessions"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # a few flushes in: some records on disk
            stores = list(root.glob("*/*/recording/*/records.zarr/zarr.json"))
            if stores and json.loads(stores[0].read_text())["attributes"].get("records", 0) >= 20:
                break
            assert child.poll() is None, (tmp_path / "stderr.txt").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("the app recorded nothing in 240 s")
        time.sleep(1.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        log.close()

    [session] = root.iterdir()
    if runs_in == "process":  # the run's process closes its store once it heard the app is gone
        store = next(session.glob("*/recording/*/records.zarr/zarr.json"))
        deadline = time.monotonic() + 60
        while json.loads(store.read_text())["attributes"].get("status") != "stopped":
            assert time.monotonic() < deadline, "the run's process did not close its store after the app died"
            time.sleep(0.2)
    folder = open_session(session)
    assert folder.state == "interrupted"
    [result] = folder.results
    K = len(result.trace)
    if runs_in == "thread":
        assert result.interrupted_at is not None and K >= 20 and result.interrupted_at == result.iterations - 1
    else:
        assert result.interrupted_at is None and K >= 20 and result.iterations >= K
    assert str(result.status) == "stopped"

    # an uninterrupted run with the same seed, stopped after as many iterations: the same records
    stop = threading.Event()
    run = experiment.runs[0]
    reference = execute_run(
        run,
        run.effective_seed(experiment.seed),
        backend="numpy",
        stop=stop,
        on_iteration=lambda done, total, seconds: stop.set() if done >= result.iterations else None,
    )
    prefix = {name: array[:K] for name, array in reference.trace.to_arrays().items()}
    kept = result.trace.to_arrays()
    assert sorted(prefix) == sorted(kept)
    for name in kept:
        np.testing.assert_array_equal(kept[name], prefix[name], err_msg=name)

    # the next start offers it, in one line; Open shows its runs in every view, and it is not offered again
    w = make_window(qtbot, tmp_path, root)
    w.recording.check_for_interrupted(wait=True)
    qtbot.waitUntil(lambda: not w.recording.notice.isHidden())
    text = w.recording.notice.text()
    said = (
        f"'clip 1.0' at iteration {result.interrupted_at}"
        if runs_in == "thread"
        else f"'clip 1.0' stopped ({result.iterations} iterations)"
    )
    assert "interrupted" in text and said in text
    assert str(session) in text and "\n" not in text
    assert w.recording.open_interrupted()
    assert w.recording.notice.isHidden()
    [state] = w.controller.states
    assert state.loaded and state.name == "clip 1.0"
    assert_same_trace(result.trace, state.data.trace)
    w.redraw(force=True)
    assert last_interrupted(root) is None  # opened: not offered again
    w.controller.shutdown(timeout_ms=None)


# ------------------------------------------------------------------------------------------- (c) full disk
def test_an_unwritable_recording_folder_gets_a_dialog_and_the_runs_go_on(qtbot, tmp_path, small):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # root ignores permissions; a file in the way stops it too
    w = make_window(qtbot, tmp_path, blocked / "sessions")
    assert w.open_file(small(iterations=30))
    w.controller.start()
    wait_finished(qtbot, w)
    assert [s.status for s in w.controller.states] == ["completed", "completed"]
    assert all(len(s.data.trace) == 30 for s in w.controller.states)  # the traces are still in memory
    qtbot.waitUntil(lambda: w.last_dialog is not None and w.last_dialog.isVisible())
    box = w.last_dialog
    assert box.windowTitle() == "Recording stopped"
    # the session's folder named once, each run by its name and its folder's, and what it kept
    assert (box.text() + box.informativeText()).count(str(w.recording.session.path)) == 1
    assert str(blocked) not in box.informativeText()
    for run in ("a", "b"):
        assert f"'{run}' (00{'ab'.index(run) + 1}-{run}/): could not start (Not a directory)" in box.informativeText()
    assert "nothing of it is on disk" in box.informativeText()
    assert "still in memory" in box.informativeText()
    assert any(b.text() == "Export elsewhere…" for b in box.buttons())
    assert "Recording stopped" in w.recording.label.text()
    out = w.export_to(tmp_path / "elsewhere")  # the offer: another folder takes them all
    assert out is not None and (out / "summary.json").exists()
    w.controller.shutdown(timeout_ms=None)


@pytest.fixture
def file_size_limit():
    """RLIMIT_FSIZE for this process (a full disk for files over ``limit`` bytes), SIGXFSZ ignored."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(n):
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, old_limit[1]))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def _committed_iterations(session_path: Path) -> list[bool]:
    """For each run folder of the session (in order): has its store committed any iteration yet?"""
    committed = []
    for zarr_json in sorted(Path(session_path).glob("*/**/records.zarr/zarr.json")):
        try:
            attrs = json.loads(zarr_json.read_text(encoding="utf-8"))["attributes"]
        except (OSError, ValueError, KeyError):  # mid-write
            attrs = {}
        committed.append(int(attrs.get("iterations", 0)) > 0)
    return committed


def test_a_full_disk_while_recording_and_exporting_gets_dialogs_with_the_traces_shown(
    qtbot, tmp_path, small, file_size_limit, monkeypatch
):
    from gradscope.gui import worker

    # the limit is this process's: the runs record in its threads here (a run's own process and a full disk:
    # tests/test_run_process.py)
    monkeypatch.setattr(worker, "IN_PROCESS", True)
    w = make_window(qtbot, tmp_path, tmp_path / "rec")
    assert w.open_file(small(iterations=3000))
    w.controller.start()
    # the disk fills once each store holds some rows (how many the first flush holds depends on the machine's
    # speed: a limit set before it can leave nothing kept, which the dialog then says instead)
    qtbot.waitUntil(lambda: _committed_iterations(w.recording.session.path) == [True, True], timeout=60_000)
    file_size_limit(20_000)  # the stores' chunks outgrow it after a few hundred more iterations
    wait_finished(qtbot, w)
    assert [s.status for s in w.controller.states] == ["completed", "completed"]
    assert all(len(s.data.trace) == 3000 for s in w.controller.states)
    qtbot.waitUntil(lambda: len(w.recording.stopped_notes) == 2)
    box = w.last_dialog
    assert box.windowTitle() == "Recording stopped" and box.isVisible()
    assert "File too large" in box.informativeText(), box.informativeText()
    assert (box.text() + box.informativeText()).count(str(w.recording.session.path)) == 1, box.informativeText()
    # what it says was kept is on disk, and equals the traces' prefix
    folder = open_session(w.recording.session.path)
    for i, (state, result) in enumerate(zip(w.controller.states, folder.results)):
        K = len(result.trace)
        store = f"recording/01-{result.name}/records.zarr"
        note = (
            f"'{result.name}' ({i + 1:03d}-{result.name}/): stopped ({store}: File too large); its iterations 0-{K - 1}"
        )
        assert 0 < K < 3000 and f"{note} are kept" in box.informativeText(), box.informativeText()
        memory = state.data.trace.to_arrays()
        for name, array in result.trace.to_arrays().items():
            np.testing.assert_array_equal(array, memory[name][:K], err_msg=name)

    out = tmp_path / "export"
    assert w.export_to(out) is None  # trace.npz is over the limit
    box = w.last_dialog
    assert box.windowTitle() == "Cannot export" and str(out) in box.text()
    assert "File too large" in box.text() and "still in memory" in box.informativeText()
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]
    assert all(len(s.data.trace) == 3000 for s in w.controller.states)
    w.controller.shutdown(timeout_ms=None)
