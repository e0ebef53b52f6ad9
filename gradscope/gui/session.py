"""The app's recording (gradscope.sessions) in the window: every run it runs is recorded as it runs into a
folder of this session; the status bar says where; a recording stopped by a full disk or an unwritable folder,
and an export that failed, get a dialog naming the folder and what was kept, with an offer to export elsewhere;
and at start a session left by a crash or a SIGKILL is offered in a one-line notice above the views.

    recording = SessionRecording(window)     # MainWindow.__init__: the controller records into its session
    recording.check_for_interrupted()        # app.main, at start: the notice, if a last session died
    recording.export_failed(out_dir, error)  # gui/saving.py
    recording.closed(all_stopped)            # MainWindow.closeEvent, after the runs' threads were stopped

The folder: the setting ``recording_folder`` (File > Recording folder…), else ``sessions/`` in Qt's
AppDataLocation (~/.local/share/GradScope/GradScope/sessions on Linux).
"""

from __future__ import annotations

import threading
from pathlib import Path

from PyQt6 import QtCore, QtWidgets

from ..sessions import KEEP_DAYS, KEEP_LAST, Interrupted, Session, last_interrupted, mark, prune

CLOSE_WAIT_MS = 5000  # closing the window waits this long for the runs' last records to reach their stores


def recording_root(settings: QtCore.QSettings) -> Path:
    chosen = settings.value("recording_folder", "", type=str)
    if chosen:
        return Path(chosen)
    base = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".gradscope") / "sessions"


class _HeadAndPathLabel(QtWidgets.QLabel):
    """One line: a sentence kept whole, then a folder path elided in its middle to the room left (the whole text
    in the tooltip).  Eliding the whole line would hide what the sentence says (the run, the iteration); when
    even the sentence does not fit, a shorter wording of it is shown (``heads``: longest first)."""

    MIN_PATH_PX = 80  # ~12 characters of the path: its start and its session's name

    def __init__(self):
        super().__init__("")
        self.heads: list[str] = [""]
        self.path = ""
        # its width is what the layout gives it: a long path must not widen the window
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)

    def set_parts(self, heads: list[str], path: str) -> None:
        self.heads, self.path = heads, path
        self.setToolTip(heads[0] + path)
        self._elide()

    def _elide(self) -> None:
        metrics = self.fontMetrics()
        width = self.width() if self.isVisible() else 900
        fits = [h for h in self.heads if metrics.horizontalAdvance(h) + self.MIN_PATH_PX <= width]
        head = fits[0] if fits else self.heads[-1]  # too narrow for any: the shortest, clipped at the right
        room = max(width - metrics.horizontalAdvance(head), self.MIN_PATH_PX)
        self.setText(head + metrics.elidedText(self.path, QtCore.Qt.TextElideMode.ElideMiddle, room))

    def resizeEvent(self, event) -> None:  # re-elide to the new width
        super().resizeEvent(event)
        self._elide()

    def showEvent(self, event) -> None:  # laid out while hidden: no resize event comes when it is shown
        super().showEvent(event)
        self._elide()


class RecoveryNotice(QtWidgets.QFrame):
    """One line above the views: "The last session was interrupted ...: Open / Dismiss"."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("recovery-notice")
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.setStyleSheet("#recovery-notice { background: #fff4ce; border: 1px solid #e0c060; }")
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 4)
        self.label = _HeadAndPathLabel()
        self.open_button = QtWidgets.QPushButton("Open")
        self.dismiss_button = QtWidgets.QPushButton("Dismiss")
        row.addWidget(self.label, 1)
        row.addWidget(self.open_button)
        row.addWidget(self.dismiss_button)
        self.setVisible(False)

    def text(self) -> str:
        """The whole line, path included (the label shows it with the path elided)."""
        return self.label.toolTip()

    def show_text(self, heads: list[str], path: str) -> None:
        """``heads``: the sentence before the path, longest wording first (the narrowest window gets the last)."""
        self.label.set_parts(heads, path)
        self.setVisible(True)


class SessionRecording(QtCore.QObject):
    found = QtCore.pyqtSignal(object)  # an Interrupted session (from the scanning thread), or None
    pruned = QtCore.pyqtSignal(int)  # how many old sessions the scan removed

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.root = recording_root(window.settings)
        self.session = Session(self.root)
        window.controller.session = self.session
        self.stopped_notes: list[str] = []  # every recording that stopped, as the worker said it
        self.dialog: QtWidgets.QMessageBox | None = None
        self.interrupted: Interrupted | None = None

        self.label = QtWidgets.QLabel("")
        self.label.setContentsMargins(8, 0, 8, 0)
        window.statusBar().addPermanentWidget(self.label)
        self._show_where()
        window.controller.recording_failed.connect(self.recording_failed)
        self.found.connect(self._found)
        self.pruned.connect(
            lambda n: window.statusBar().showMessage(
                f"Removed {n} old session(s) from {self.root} (closed or answered, older than {KEEP_DAYS} days, "
                f"beyond the newest {KEEP_LAST})",
                15000,
            )
        )

        # the notice above the views: the central widget becomes [notice, tabs]
        self.notice = RecoveryNotice()
        self.notice.open_button.clicked.connect(self.open_interrupted)
        self.notice.dismiss_button.clicked.connect(self.dismiss_interrupted)
        tabs = window.takeCentralWidget()
        central = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.notice)
        column.addWidget(tabs, 1)
        window.setCentralWidget(central)

        action = window.addAction("Recording &folder…")
        action.setStatusTip("Where the app records every run as it runs (one folder per session)")
        action.triggered.connect(self.choose_folder_dialog)
        self.act_folder = action
        file_menu = window.menuBar().actions()[0].menu()
        file_menu.insertAction(window.act_quit, action)
        file_menu.insertSeparator(window.act_quit)

    # ------------------------------------------------------------------------------------- where
    def _show_where(self) -> None:
        where = str(self.session.path)
        home = str(Path.home())
        shown = "~" + where[len(home) :] if where.startswith(home + "/") else where
        # a permanent widget: a long path would starve the bar's messages of room: at most ~260 px, its session kept
        shown = self.label.fontMetrics().elidedText(shown, QtCore.Qt.TextElideMode.ElideLeft, 260)
        if self.stopped_notes:
            self.label.setText(f"Recording stopped ({len(self.stopped_notes)} run(s)): {shown}")
        else:
            self.label.setText(f"Recording to {shown}")
        self.label.setToolTip(
            f"Every run is recorded as it runs into {where}; a crash or a killed process loses at most the last "
            f"second, and the next start offers to open it (File > Open exported folder opens it any time)"
        )

    def choose_folder_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self.window, "Record into which folder?", str(self.root))
        if path:
            self.set_root(path)

    def set_root(self, path) -> None:
        """Record the runs started from now on under ``path`` (remembered for the next sessions)."""
        self.window.settings.setValue("recording_folder", str(path))
        self.root = Path(path)
        self.session = Session(self.root)
        self.window.controller.session = self.session
        self._show_where()
        self.window.statusBar().showMessage(f"The runs started from now on record into {self.session.path}", 10000)

    # ------------------------------------------------------------------------------------- a full disk
    def recording_failed(self, note: str) -> None:
        """A run's recording stopped: the run goes on in memory.  One dialog for all (later ones add to it)."""
        self.stopped_notes.append(note)
        self._show_where()
        text = "\n".join(f"• {n}" for n in self.stopped_notes)
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.setInformativeText(self._informative(text))
            return
        self.dialog = self._dialog(
            "Recording stopped", f"GradScope could not record to {self.session.path}.", self._informative(text)
        )

    def _informative(self, text: str) -> str:
        return (
            f"In that folder (one folder per run):\n{text}\n\n"
            f"Every trace is still in memory and shown, and the runs go on (Stop ends them cleanly). "
            f"Export them to a folder on another disk to keep them."
        )

    def export_failed(self, out_dir, error: OSError) -> None:
        """gui/saving.py: the export could not be written (full disk, unwritable folder)."""
        why = error.strerror or str(error)
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        recorded = f", and recorded in {self.session.path}" if self.session.recorded and not self.stopped_notes else ""
        self._dialog(
            "Cannot export",
            f"Could not export to {out_dir}: {why}{where}.",
            f"Nothing was written under {out_dir} (an export is built under a temporary name and moved into place "
            f"only once whole). Every trace is still in memory and shown{recorded}. Export them elsewhere?",
        )

    def _dialog(self, title: str, text: str, informative: str) -> QtWidgets.QMessageBox:
        box = QtWidgets.QMessageBox(self.window)
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setWindowTitle(title)
        box.setText(text)
        box.setInformativeText(informative)
        export = box.addButton("Export elsewhere…", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QtWidgets.QMessageBox.StandardButton.Close)
        export.clicked.connect(lambda: QtCore.QTimer.singleShot(0, self.window.export_dialog))
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.window.last_dialog = box
        box.open()  # not modal for the runs: they go on, the views keep drawing
        return box

    # ------------------------------------------------------------------------------------- recovery
    def check_for_interrupted(self, wait: bool = False) -> None:
        """Look for a session left by a crash (reading its stores takes a moment: not in the GUI thread)."""

        def scan():
            removed = prune(self.root)  # the stated policy (sessions.prune): old sessions done with
            if removed:
                self.pruned.emit(len(removed))
            self.found.emit(last_interrupted(self.root))

        thread = threading.Thread(target=scan, daemon=True)
        thread.start()
        if wait:
            thread.join()

    def _found(self, interrupted: Interrupted | None) -> None:
        self.interrupted = interrupted
        if interrupted is None:
            return
        started, what = interrupted.started.replace("T", " ")[:16], interrupted.summary()
        self.notice.show_text(
            [
                f"The last session (started {started}) was interrupted: {what}; its records are kept in ",
                f"The last session was interrupted: {what}; its records are in ",
                f"Interrupted: {what}; in ",
            ],
            str(interrupted.path),
        )

    def open_interrupted(self) -> bool:
        interrupted = self.interrupted
        if interrupted is None:
            return False
        if not self.window.open_folder(interrupted.path):
            return False  # the user cancelled (unsaved results): the notice stays
        self._handled("opened")
        return True

    def dismiss_interrupted(self) -> None:
        """Not offered again; its folder stays (File > Open exported folder opens it)."""
        if self.interrupted is not None:
            self.window.statusBar().showMessage(f"Its records stay in {self.interrupted.path}", 10000)
            self._handled("dismissed")

    def _handled(self, what: str) -> None:
        try:
            mark(self.interrupted.path, handled=what)
        except OSError:
            pass  # offered again next time: nothing lost
        self.interrupted = None
        self.notice.setVisible(False)

    # ------------------------------------------------------------------------------------- closing
    def closed(self, all_stopped: bool) -> None:
        """The window closed; if every run's thread ended (their stores closed) the session ended cleanly, else
        the next start offers it as interrupted (its stores hold all but the last second)."""
        if all_stopped:
            try:
                self.session.end()
            except OSError:
                pass  # then it reads as interrupted next time: offered, nothing lost
