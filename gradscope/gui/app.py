"""Start the app: ``main(path)`` opens GradScope's window on an experiment file or an exported folder, or on the
lecture's ReLU demo (models/relu_init_scale.toml) when no path is given."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_APP = None  # the QApplication: referenced here so it outlives every widget (see close_down)


def make_app():
    """The QApplication (created if needed) with GradScope's names, font and plot style."""
    global _APP
    from PyQt6 import QtWidgets

    from .figures import configure_pyqtgraph

    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(sys.argv[:1])
    _APP = app
    app.setApplicationName("GradScope")
    app.setOrganizationName("GradScope")
    # no setApplicationDisplayName: Qt would append it to every window title ("GradScope — x — GradScope")
    font = app.font()
    if font.pointSize() < 10:
        font.setPointSize(10)
        app.setFont(font)
    app.setWindowIcon(_icon())
    configure_pyqtgraph()
    return app


def _icon():
    from PyQt6 import QtGui

    path = Path(__file__).resolve().parents[2] / "assets" / "icon.png"
    return QtGui.QIcon(str(path)) if path.exists() else QtGui.QIcon()


def main(path: str | None = None, end_process: bool = False) -> int:
    """Open the window (on ``path``, an experiment file or exported folder, else the lecture demo) and run the
    event loop.  Returns the exit code; with ``end_process`` (the command line) it never returns: once the window
    is closed the process ends at once (exit_process), its training threads told to stop but not waited for."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
        print("gradscope: no display found; run under xvfb-run -a, or set QT_QPA_PLATFORM=offscreen", file=sys.stderr)
    from PyQt6 import QtCore

    from .main_window import DEFAULT_EXPERIMENT, MainWindow

    app = make_app()
    window = MainWindow()
    window.ends_process = end_process
    window.show()
    window.recording.check_for_interrupted()  # a session left by a crash: offered in a notice above the views
    target = Path(path) if path else (DEFAULT_EXPERIMENT if DEFAULT_EXPERIMENT.exists() else None)
    if target is not None:
        # after the window is on screen: it appears at once, then loads (and compiles in the background)
        QtCore.QTimer.singleShot(0, lambda: window.open_path(target))
    main.window = window  # reachable for scripts (screenshots) and tests
    code = int(app.exec())
    main.window = None
    if end_process:
        exit_process(code)
    close_down(window, code)
    return code


def close_down(window, code: int = 0) -> None:
    """Take the window down after the event loop, in a fixed order, while the QApplication still exists.

    Left to the interpreter's teardown, the order is arbitrary: a QApplication released before the window
    (locals are freed in order of definition) or a plot item collected after it can crash the process at exit.
    So: the redraw timer stops; every training thread is stopped and joined (no thread outlives its QThread),
    and the engine's shard threads with them;
    signals they queued are delivered while their receivers live; then the window and everything in it is
    deleted and Python's cycles collected.  The QApplication itself stays referenced (module global _APP)
    until the process ends, with no widget left to outlive it.
    """
    import gc

    from PyQt6 import QtCore, QtWidgets, sip

    window.timer.stop()
    window.controller.shutdown(timeout_ms=None)
    exit_now_if_compiling(code)
    engine = sys.modules.get("gradscope.engine")  # loaded if a run computed anything
    if engine is not None:
        engine.shutdown_threads()  # the idle batch-shard threads end too
    QtWidgets.QApplication.processEvents()
    window.close()
    window.deleteLater()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
    if not sip.isdeleted(window):
        sip.delete(window)
    gc.collect()


def exit_process(code: int) -> None:
    """End the process once the window is closed: atexit handlers run, output is flushed, and both the
    teardown of the window (close_down, 0.2-0.3 s) and the interpreter's module-by-module teardown are
    skipped, as is the wait for the training threads to end their current step.  Measured here with 5 runs
    training: Ctrl+Q to main's return 0.2-0.4 s (the wait for the threads' steps), then 0.9-1.3 s of
    interpreter teardown (Qt's plugins, Numba/LLVM, OpenMP: no Python frame left), which is what made quitting
    take over 2 s on a loaded machine.  Nothing is lost: the threads compute, they never write."""
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_now_if_compiling(code: int) -> None:
    """End the process at once if the kernel compiler is still at work (the window closed mid-compile).

    A compile cannot be interrupted, and letting the interpreter tear itself down around a thread inside Numba
    and LLVM risks a crash; the operating system ends it cleanly instead (Numba writes its cache files under
    temporary names, so an interrupted compile is simply redone next time).
    """
    from .worker import compiler

    if compiler().busy:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
