"""The main window: run list and editor on the left, the eight views in tabs, menus, toolbar, status bar.

It computes nothing: runs live in the Controller, drawing in the views.  A ~66 Hz timer redraws the visible
view, and only when a trace it shows changed (View.redraw compares a signature).
"""

from __future__ import annotations

import time
from pathlib import Path

from PyQt6 import QtCore, QtWidgets

from .. import config, presets
from ..recording import describe
from ..runs import RunStatus
from ..sessions import open_any
from . import menus, unsaved
from .controller import Controller
from .menus import MODELS_DIR, TAB_TIPS, TAB_TITLES
from .panels import RunEditor, RunList
from .saving import SavingAndExport
from .session import CLOSE_WAIT_MS, SessionRecording
from .sweep import SweepTab
from .views import VIEWS
from .worker import compiler

REDRAW_MS = 15  # ~66 Hz: a frame every 16.7 ms (60 per second) even when a tick comes late (issue 9)
MAX_RECENT = 8
DEFAULT_EXPERIMENT = MODELS_DIR / presets.DEFAULT


class MainWindow(SavingAndExport, QtWidgets.QMainWindow):
    def __init__(self, backend: str = "numba", settings: QtCore.QSettings | None = None, warm_up: bool = True):
        super().__init__()
        self.settings = settings if settings is not None else QtCore.QSettings("GradScope", "GradScope")
        saved = self.settings.value("runs_at_once", 0, type=int)  # 0: not chosen yet
        self.controller = Controller(backend=backend, runs_at_once=saved if saved > 0 else None, parent=self)
        self.warm_up_enabled = warm_up and backend == "numba"
        self.last_dialog: QtWidgets.QMessageBox | None = None
        self.setWindowTitle("GradScope")
        self.setAcceptDrops(True)
        self.resize(1600, 1000)

        # views in tabs
        self.tabs = QtWidgets.QTabWidget()
        self.views = [cls() for cls in VIEWS]
        for view, title, tip in zip(self.views, TAB_TITLES, TAB_TIPS):
            index = self.tabs.addTab(view, title)
            self.tabs.setTabToolTip(index, tip)
        self.sweep_tab = SweepTab()
        index = self.tabs.addTab(self.sweep_tab, "Sweep")
        self.tabs.setTabToolTip(
            index, "A sweep's log gain per step over its keys, with the mean-field curve or critical line"
        )
        self.tabs.currentChanged.connect(lambda _: self.redraw(force=True))
        self.setCentralWidget(self.tabs)

        # the experiment panel
        self.run_list = RunList()
        self.editor = RunEditor()
        self.experiment_label = QtWidgets.QLabel("")
        self.experiment_label.setWordWrap(True)
        panel = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(panel)
        column.setContentsMargins(6, 6, 6, 6)
        column.addWidget(self.experiment_label)
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        splitter.addWidget(self.run_list)
        splitter.addWidget(self.editor)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        column.addWidget(splitter, 1)
        dock = QtWidgets.QDockWidget("Experiment", self)
        dock.setObjectName("experiment")
        dock.setWidget(panel)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable)
        dock.setMinimumWidth(440)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.LeftDockWidgetArea, dock)

        menus.make_actions(self)
        menus.make_menus(self)
        menus.make_toolbar(self)
        menus.make_status_bar(self)
        self.recording = SessionRecording(self)  # every run records into this session's folder (gui/session.py)

        self.controller.runs_changed.connect(self._runs_changed)
        self.controller.run_updated.connect(self._run_updated)
        self.controller.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.controller.compile_progress.connect(self._compile_progress)
        compiler().failed.connect(self._compile_failed)
        self.run_list.selected.connect(self._selected)
        self.run_list.visibility_changed.connect(self.controller.set_visible)
        self.run_list.add_requested.connect(self.add_run)
        self.run_list.duplicate_requested.connect(self._duplicate)
        self.run_list.remove_requested.connect(self._remove)
        self.run_list.details_requested.connect(self.show_run_details)
        self.editor.applied.connect(self._applied)

        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self.redraw_count = 0
        self._next_tick = 0.0  # perf_counter before which ticks are skipped (see _tick)
        self._exported: dict = {}  # unsaved.signature() at the last export (nothing new to lose since)
        self.ends_process = False  # app.main(end_process=True): closing the window ends the process
        self._update_title()

    # ------------------------------------------------------------------------------------- opening
    def open_path(self, path) -> bool:
        """An experiment file or an exported folder (from the command line or a drop)."""
        path = Path(path)
        if path.is_dir():
            return self.open_folder(path)
        return self.open_file(path)

    def open_file(self, path) -> bool:
        path = Path(path)
        if not self.keep_or_discard(f"open {path.name}"):
            return False
        try:
            experiment = config.load(path)
        except config.ConfigError as error:
            self.show_error("Cannot open the experiment", str(error))
            return False
        self._set_experiment(experiment)
        self._add_recent(path)
        self.statusBar().showMessage(f"Opened {path}: press Run (Space)", 10000)
        return True

    def open_folder(self, path, add: bool = False) -> bool:
        """An exported folder, the recording a killed (or running) ``gradscope run`` left, or a session of the
        app (gradscope.sessions): its runs replace those shown, or with ``add`` join them (an overlay)."""
        path = Path(path)
        if not self.keep_or_discard(f"open {path.name}"):
            return False
        try:
            folder = open_any(path)
        except (OSError, ValueError, KeyError) as error:  # ConfigError is a ValueError
            self.show_error("Cannot open the exported folder", f"{path}: {error}")
            return False
        if add:
            self.controller.add_loaded(folder.experiment, folder.results)
            self.setWindowModified(True)
            self._update_title()
            self.redraw(force=True)
        else:
            self._set_experiment(folder.experiment, folder.results)
        self._add_recent(path)
        what = "the export" if folder.state == "exported" else f"the recording ({describe(folder)})"
        verb = "Added" if add else "Opened"
        self.statusBar().showMessage(f"{verb} {what} {path} (recorded runs, nothing to run)", 15000)
        return True

    def add_folder(self, path) -> bool:  # File > Add exported folder
        return self.open_folder(path, add=True)

    def _set_experiment(self, experiment, results=None) -> None:
        self.sweep_tab.set_experiment(experiment)
        self.controller.load(experiment, results)
        self.setWindowModified(False)
        self._update_title()
        if results is None:
            self._warm_up()
        self.redraw(force=True)

    def open_dialog(self) -> None:
        start = str(self._source_dir())
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open experiment", start, "Experiment files (*.toml);;All files (*)"
        )
        if path:
            self.open_file(path)

    def open_folder_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open exported folder", str(self._source_dir()))
        if path:
            self.open_folder(path)

    def add_folder_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Add exported folder", str(self._source_dir()))
        if path:
            self.add_folder(path)

    def _source_dir(self) -> Path:
        experiment = self.controller.experiment
        if experiment is not None and experiment.source is not None:
            return Path(experiment.source).parent
        return MODELS_DIR if MODELS_DIR.is_dir() else Path.cwd()

    def recent(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if v]

    def _add_recent(self, path: Path) -> None:
        entry = str(Path(path).resolve())
        recent = [entry] + [p for p in self.recent() if p != entry]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        menus.fill_recent(self)

    # drag and drop of a file or folder
    def dragEnterEvent(self, event) -> None:  # Qt override
        if menus.dropped_path(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # Qt override
        path = menus.dropped_path(event.mimeData())
        if path is not None:
            event.acceptProposedAction()
            self.open_path(path)

    # ------------------------------------------------------------------------------------- running
    def run_or_pause(self) -> None:
        states = self.controller.states
        if states and all(s.loaded for s in states):  # an exported folder: recorded runs, nothing to run
            self.statusBar().showMessage(
                "These runs were opened from an export: Reset (Ctrl+R) to run them again", 10000
            )
            return
        if self.controller.any_busy and not self.controller.paused:
            self.controller.pause()
            self.statusBar().showMessage("Paused: Space runs, S steps", 5000)
        else:
            self.controller.start()

    def step(self) -> None:
        self.controller.step()

    def set_runs_at_once(self, n: int) -> None:
        """How many runs train at once (Run > Runs training at once), remembered for the next session."""
        self.controller.set_runs_at_once(n)
        self.settings.setValue("runs_at_once", int(n))
        for action in self.runs_at_once_menu.actions():
            action.setChecked(action.text() == str(n))
        self.statusBar().showMessage(f"At most {n} run(s) train at once; the others wait, queued", 5000)

    def stop(self) -> None:
        self.controller.stop()
        self.statusBar().showMessage("Stopped: the traces stay; Reset clears them", 5000)

    def reset(self) -> None:
        if self.keep_or_discard("reset"):
            self.controller.reset()

    # ------------------------------------------------------------------------------------- unsaved results
    def keep_or_discard(self, doing: str) -> bool:
        """Before ``doing`` something that drops the runs' results: True to go on (gui/unsaved.py)."""
        return unsaved.keep_or_discard(self, doing)

    def ask_discard(self, runs: int, doing: str) -> str:
        """ "export" | "discard" | "cancel", from a modal question (tests replace this method)."""
        return unsaved.ask_discard(self, runs, doing)

    # ------------------------------------------------------------------------------------- run edits
    def add_run(self) -> None:
        key = self.run_list.current_key()
        base = self.controller.state(key).run if key is not None else config.RunConfig()
        state = self.controller.add_run(base.model_copy(update={"name": "new run"}))
        self._select(state.key)
        self.setWindowModified(True)

    def _duplicate(self, key: int) -> None:
        state = self.controller.duplicate_run(key)
        self._select(state.key)
        self.setWindowModified(True)

    def _remove(self, key: int) -> None:
        self.controller.remove_run(key)
        self.setWindowModified(True)

    def _applied(self, key: int, run) -> None:
        self.controller.update_run(key, run)
        self.setWindowModified(True)
        self._select(key)

    def _select(self, key: int) -> None:
        self.run_list.select(key)

    def _selected(self, key) -> None:
        if key is None:
            self.editor.set_run(None, None)
        else:
            self.editor.set_run(key, self.controller.state(key).run)

    # ------------------------------------------------------------------------------------- updates
    def _runs_changed(self) -> None:
        self.run_list.set_runs(self.controller.states)
        self._update_title()
        self.redraw(force=True)

    def _run_updated(self, key: int) -> None:
        try:
            self.run_list.update_run(self.controller.state(key))
        except KeyError:
            pass

    def _compile_progress(self, done: int, total: int, name: str) -> None:
        self.compile_bar.setRange(0, total)
        self.compile_bar.setValue(done)
        self.compile_label.setText(f"compiling {name}")
        busy = done < total
        self.compile_bar.setVisible(busy)
        self.compile_label.setVisible(busy)
        if not busy:
            self.statusBar().showMessage("Kernels ready", 3000)

    def _compile_failed(self, _kernels, text: str) -> None:
        self.statusBar().showMessage(f"Compiling kernels failed: {text.strip().splitlines()[-1]}", 15000)

    def _tick(self) -> None:
        """Redraw and update the status bar, but never spend more than a third of the time on it: with
        thousands of runs a redraw takes longer than a tick, and input must still get the GUI thread."""
        now = time.perf_counter()
        if now < self._next_tick:
            return
        self.redraw()
        self._update_summary()
        spent = time.perf_counter() - now
        self._next_tick = now + 3 * spent if spent > REDRAW_MS / 1000 else 0.0

    def redraw(self, force: bool = False) -> bool:
        """Redraw the visible view if what it shows changed."""
        if self.tabs.currentIndex() >= len(self.views):  # the Sweep tab draws itself (its own timer)
            return False
        view = self.views[self.tabs.currentIndex()]
        view.set_live(self.controller.any_busy and not self.controller.paused)
        drew = view.redraw(_for_views(self.controller.run_data()), force=force)
        self.redraw_count += drew
        return drew

    def _update_summary(self) -> None:
        states = self.controller.states
        counts: dict[str, int] = {}
        for s in states:
            counts[s.status] = counts.get(s.status, 0) + 1
        text = ", ".join(f"{n} {status}" for status, n in counts.items())
        self.summary_label.setText(f"{len(states)} run{'s' if len(states) != 1 else ''}: {text}" if states else "")
        running = self.controller.any_busy and not self.controller.paused
        if self.act_run.text() == ("Pause" if running else "Run"):
            return  # every tick: setIcon repaints the toolbar button even with the same icon
        self.act_run.setText("Pause" if running else "Run")
        self.act_run.setIcon(
            self.style().standardIcon(
                QtWidgets.QStyle.StandardPixmap.SP_MediaPause
                if running
                else QtWidgets.QStyle.StandardPixmap.SP_MediaPlay
            )
        )

    def _update_title(self) -> None:
        experiment = self.controller.experiment
        name = experiment.name if experiment is not None else ""
        self.setWindowTitle(f"GradScope — {name}[*]" if name else "GradScope")
        if experiment is not None:
            where = f"<br><small>{_display_path(experiment.source)}</small>" if experiment.source else ""
            self.experiment_label.setText(f"<b>{name}</b>: {experiment.description}{where}")
        else:
            self.experiment_label.setText("No experiment: open one (Ctrl+O) or pick a preset")

    # ------------------------------------------------------------------------------------- kernels
    def _warm_up(self) -> None:
        """Have the kernel compiler prepare the loaded runs' kernels in the background (progress in the status
        bar), so the window never freezes and Run starts at once."""
        if not self.warm_up_enabled or self.controller.experiment is None:
            return
        for run in self.controller.experiment.runs:
            try:
                compiler().request(run.model_spec())
            except ValueError:
                continue  # a run the engine refuses: its worker will report it

    # ------------------------------------------------------------------------------------- dialogs
    def show_error(self, title: str, text: str, details: str | None = None, warning: bool = False) -> None:
        """A non-blocking message box (kept in ``last_dialog``)."""
        box = QtWidgets.QMessageBox(self)
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning if warning else QtWidgets.QMessageBox.Icon.Critical)
        box.setWindowTitle(title)
        box.setText(text)
        if details:
            box.setDetailedText(details)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.last_dialog = box
        box.open()

    def show_run_details(self, key: int) -> None:
        state = self.controller.state(key)
        if state.error:
            last = state.error.strip().splitlines()[-1]
            self.show_error(f"Run {state.name!r} failed", f"{state.name} failed: {last}", state.error)
        elif state.status is RunStatus.DIVERGED:
            self.show_error(f"Run {state.name!r} diverged", f"{state.name}: {state.status_text()}", warning=True)

    def about(self) -> None:
        menus.about(self)

    # ------------------------------------------------------------------------------------- closing
    def closeEvent(self, event) -> None:  # Qt override
        self.timer.stop()
        self.sweep_tab.close_job()  # a running sweep stops; its finished points stay in sweep.csv
        # every worker is told to stop; when the process ends right after (the command line's app) there is no
        # need to wait for their current steps unless they record: then their last records reach the disk first
        writing = self.recording.session.writing
        ended = self.controller.shutdown(timeout_ms=0 if self.ends_process and not writing else CLOSE_WAIT_MS)
        self.recording.closed(ended)
        self.settings.sync()  # the process may end without destructors (app.exit_process)
        event.accept()


def _for_views(runs: list, without_data: int = 64) -> list:
    """The runs a view is given: every run with data, and of those without data (queued) the first
    ``without_data``, in order.  A view only draws runs with data; the others only tell it the empty state,
    the timesteps and layers to expect, and asking 10 000 queued runs that on every redraw held the GUI thread
    for half a second."""
    if len(runs) <= without_data:
        return runs
    kept = []
    for run in runs:
        if run.has_data():
            kept.append(run)
        elif without_data > 0:
            kept.append(run)
            without_data -= 1
    return kept


def _display_path(path) -> str:
    """A path as the user would type it: relative to the working folder when inside it, else with ~."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        home = Path.home()
        try:
            return "~/" + str(path.resolve().relative_to(home))
        except ValueError:
            return str(path)
