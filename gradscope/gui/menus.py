"""The main window's actions, menus, toolbar and status bar (what each command is called, its shortcut and tip),
and the About box.  The commands themselves are the window's methods."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from PyQt6 import QtCore, QtGui, QtWidgets

from .. import io as gio, presets
from .statusbar import StatusBar

MODELS_DIR = presets.presets_dir()  # the shipped experiment files, installed with the package
TAB_TITLES = ("Through time", "Waterfall", "Training", "Saturation", "Layers", "Jacobian", "Lyapunov", "Units")
TAB_TIPS = (
    "‖∂L/∂h_t‖ and ‖h_t‖ against t, with the theory's lines",
    "log ‖∂L/∂h_t‖ over training iteration and timestep for one run",
    "Loss with the task's baseline; gradient norm with the clip threshold; accuracy (ce tasks) with its ceiling",
    "LSTM gates; dead ReLU and saturated tanh/sigmoid units",
    "Gradient norm against t for each layer of a stacked model",
    "sigma_max of the long-lag Jacobian ∂s_{T-1}/∂s_t against the lag, and ∂L/∂W_hh split by lag (analysis.every)",
    "The Lyapunov spectrum and the largest exponent over training (analysis.lyapunov)",
    "One example's h_t and dL/dh_t unit by unit, and a unit's gate traces (analysis.every)",
)


def _action(window, text, slot, shortcut=None, tip="", checkable=False) -> QtGui.QAction:
    action = QtGui.QAction(text, window)
    if shortcut:
        action.setShortcut(QtGui.QKeySequence(shortcut))
    action.setStatusTip(tip)
    action.setToolTip(f"{tip} ({action.shortcut().toString()})" if shortcut else tip)
    action.setCheckable(checkable)
    action.triggered.connect(slot)
    window.addAction(action)
    return action


# (attribute, text, the window's method, shortcut, tip)
ACTIONS = (
    ("act_open", "&Open experiment…", "open_dialog", "Ctrl+O", "Open an experiment file"),
    (
        "act_open_folder",
        "Open exported &folder…",
        "open_folder_dialog",
        "Ctrl+Shift+O",
        "View an exported experiment folder (or a killed run's) again without running",
    ),
    (
        "act_add_folder",
        "&Add exported folder…",
        "add_folder_dialog",
        "Ctrl+Alt+O",
        "Show an exported (or interrupted) folder's runs beside those already shown",
    ),
    ("act_save", "&Save", "save", "Ctrl+S", "Save the experiment file (keeps comments)"),
    ("act_save_as", "Save &as…", "save_as_dialog", "Ctrl+Shift+S", "Save the experiment to a new file"),
    (
        "act_export",
        "&Export traces and figures…",
        "export_dialog",
        "Ctrl+E",
        "Write the experiment folder: traces, parameters, batches, figures",
    ),
    ("act_export_figures", "Export &figures only…", "export_figures_dialog", None, "Write every view as PNG and SVG"),
    ("act_quit", "&Quit", "close", "Ctrl+Q", "Stop every run and quit"),
    ("act_run", "Run", "run_or_pause", "Space", "Run every run; again to pause"),
    ("act_step", "Step", "step", "S", "One more iteration of every run"),
    ("act_stop", "Stop", "stop", "X", "Stop every run, keeping what it recorded"),
    ("act_reset", "Reset", "reset", "Ctrl+R", "Stop and clear every trace"),
    ("act_about", "&About GradScope", "about", None, "Versions and credits"),
)


def make_actions(window) -> None:
    """The window's ``act_*`` actions and ``tab_actions`` (Ctrl+1 ... for the views)."""
    for attribute, text, method, shortcut, tip in ACTIONS:
        setattr(window, attribute, _action(window, text, getattr(window, method), shortcut, tip))
    window.tab_actions = [
        _action(window, title, lambda _=False, i=i: window.tabs.setCurrentIndex(i), f"Ctrl+{i + 1}", TAB_TIPS[i])
        for i, title in enumerate(TAB_TITLES)
    ]


def make_menus(window) -> None:
    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addAction(window.act_open)
    window.recent_menu = file_menu.addMenu("Open &recent")
    file_menu.addAction(window.act_open_folder)
    file_menu.addAction(window.act_add_folder)
    file_menu.addSeparator()
    file_menu.addAction(window.act_save)
    file_menu.addAction(window.act_save_as)
    file_menu.addSeparator()
    file_menu.addAction(window.act_export)
    file_menu.addAction(window.act_export_figures)
    file_menu.addSeparator()
    file_menu.addAction(window.act_quit)
    window.presets_menu = bar.addMenu("&Presets")
    fill_presets(window)
    run_menu = bar.addMenu("&Run")
    for action in (window.act_run, window.act_step, window.act_stop, window.act_reset):
        run_menu.addAction(action)
    run_menu.addSeparator()
    window.runs_at_once_menu = run_menu.addMenu("Runs training at &once")
    fill_runs_at_once(window)
    view_menu = bar.addMenu("&View")
    for action in window.tab_actions:
        view_menu.addAction(action)
    view_menu.addSeparator()
    overlays = view_menu.addMenu("Theory overlays")
    for action in window.views[0].overlay_actions.values():
        overlays.addAction(action)
    help_menu = bar.addMenu("&Help")
    help_menu.addAction(window.act_about)
    fill_recent(window)


def make_toolbar(window) -> None:
    bar = window.addToolBar("Run")
    bar.setObjectName("run")
    bar.setMovable(False)
    bar.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    style = window.style()
    icons = {
        window.act_run: QtWidgets.QStyle.StandardPixmap.SP_MediaPlay,
        window.act_step: QtWidgets.QStyle.StandardPixmap.SP_MediaSkipForward,
        window.act_stop: QtWidgets.QStyle.StandardPixmap.SP_MediaStop,
        window.act_reset: QtWidgets.QStyle.StandardPixmap.SP_BrowserReload,
    }
    for action, icon in icons.items():
        action.setIcon(style.standardIcon(icon))
        bar.addAction(action)
    bar.addSeparator()
    bar.addAction(window.act_open)
    bar.addAction(window.act_export)
    bar.addSeparator()
    window.summary_label = QtWidgets.QLabel("")
    window.summary_label.setContentsMargins(8, 0, 8, 0)
    bar.addWidget(window.summary_label)


def make_status_bar(window) -> None:
    status = StatusBar(window)
    window.setStatusBar(status)
    window.compile_bar = QtWidgets.QProgressBar()
    window.compile_bar.setMaximumWidth(220)
    window.compile_bar.setFormat("compiling kernels %v/%m")
    window.compile_bar.setVisible(False)
    window.compile_label = QtWidgets.QLabel("")
    window.compile_label.setVisible(False)
    status.addPermanentWidget(window.compile_label)
    status.addPermanentWidget(window.compile_bar)
    status.showMessage("Ready")


def fill_runs_at_once(window) -> None:
    """One choice per limit, 1 up to twice the cores (at least 8): how many runs train at once, the others
    wait as queued (Controller.runs_at_once, kept in the settings)."""
    menu, controller = window.runs_at_once_menu, window.controller
    menu.clear()
    group = QtGui.QActionGroup(menu)
    menu.setToolTipsVisible(True)
    for n in range(1, max(8, 2 * (os.cpu_count() or 1), controller.runs_at_once) + 1):
        action = menu.addAction(str(n))
        action.setCheckable(True)
        action.setChecked(n == controller.runs_at_once)
        action.setToolTip(f"At most {n} run{'s' if n > 1 else ''} train at once; the others wait, queued")
        action.triggered.connect(lambda _=False, n=n: window.set_runs_at_once(n))
        group.addAction(action)


def fill_presets(window) -> None:
    window.presets_menu.clear()
    files = sorted(MODELS_DIR.glob("*.toml")) if MODELS_DIR.is_dir() else []
    for path in files:
        action = window.presets_menu.addAction(path.stem.replace("_", " "))
        action.setToolTip(first_comment(path))
        action.triggered.connect(lambda _=False, p=path: window.open_file(p))
    window.presets_menu.setToolTipsVisible(True)
    if not files:
        window.presets_menu.addAction("(no presets found)").setEnabled(False)


def fill_recent(window) -> None:
    window.recent_menu.clear()
    for entry in window.recent():
        action = window.recent_menu.addAction(entry)
        action.triggered.connect(lambda _=False, p=entry: window.open_path(p))
    window.recent_menu.setEnabled(bool(window.recent()))


def about(window) -> None:
    import numba
    import numpy
    import pyqtgraph

    box = QtWidgets.QMessageBox(window)
    box.setWindowTitle("About GradScope")
    box.setIconPixmap(window.windowIcon().pixmap(64, 64))
    box.setText(
        f"<b>GradScope {gio.gradscope_version()}</b><br>"
        "How gradients flow through time in recurrent networks: instrumented backpropagation through "
        "time for ReLU, tanh and sigmoid RNNs and LSTMs, with the theory drawn over the measurements."
    )
    box.setInformativeText(
        f"Python {platform.python_version()}<br>NumPy {numpy.__version__}<br>Numba {numba.__version__}<br>"
        f"PyQt6 {QtCore.PYQT_VERSION_STR} (Qt {QtCore.qVersion()})<br>pyqtgraph {pyqtgraph.__version__}"
    )
    box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
    window.last_dialog = box
    box.open()


def first_comment(path: Path) -> str:
    """The opening comment of an experiment file (what it shows), for the preset's tooltip."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    out = []
    for line in lines:
        if not line.startswith("#"):
            break
        out.append(line.lstrip("# ").rstrip())
    return "\n".join(out[:6])


def dropped_path(mime: QtCore.QMimeData) -> Path | None:
    """The first local .toml file or folder in a drop, else None."""
    if not mime.hasUrls():
        return None
    for url in mime.urls():
        if url.isLocalFile():
            path = Path(url.toLocalFile())
            if path.is_dir() or path.suffix.lower() == ".toml":
                return path
    return None
