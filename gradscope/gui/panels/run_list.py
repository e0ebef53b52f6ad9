"""The run list: one row per run with its colour, a visibility tick, its status, iteration and speed.

Rows are a model (RunTable) over the controller's runs, not widgets: the view asks for the texts of the rows
on screen only, so 10 000 runs cost what the visible ones cost.  Column widths are fixed from the font (no
ResizeToContents, which measures every row on every change), and a run's change repaints its row only.
"""

from __future__ import annotations

import functools

from PyQt6 import QtCore, QtGui, QtWidgets

from ...runs import RunStatus

STATUS_COLORS = {
    RunStatus.QUEUED: "#606060",
    RunStatus.COMPILING: "#8a6d00",
    RunStatus.RUNNING: "#006d3c",
    RunStatus.PAUSED: "#8a6d00",
    RunStatus.COMPLETED: "#202020",
    RunStatus.DIVERGED: "#b03000",
    RunStatus.STOPPED: "#606060",
    RunStatus.FAILED: "#b00020",
}
COLUMNS = ("Run", "Status", "Iteration", "it/s")
MIN_ROWS = 8  # rows the list shows at least (the editor below takes the rest)
NAME_WIDTH_MAX = 320  # px: a longer name is elided (whole in its tooltip)
COUNTER_REFRESH_MS = 200  # the rows' iteration and it/s are repainted at most 5 times a second
_KEY = QtCore.Qt.ItemDataRole.UserRole
_Role = QtCore.Qt.ItemDataRole


@functools.lru_cache(maxsize=64)
def color_icon(color: str, size: int = 14) -> QtGui.QIcon:
    pixmap = QtGui.QPixmap(size, size)
    pixmap.fill(QtGui.QColor(color))
    return QtGui.QIcon(pixmap)


class RunTable(QtCore.QAbstractTableModel):
    """The runs as rows; texts are made when the view asks for them (the rows on screen)."""

    visibility_changed = QtCore.pyqtSignal(int, bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.states: list = []
        self.rows: dict[int, int] = {}  # key -> row

    def set_states(self, states) -> None:
        self.beginResetModel()
        self.states = list(states)
        self.rows = {s.key: row for row, s in enumerate(self.states)}
        self.endResetModel()

    def changed(self, key: int) -> None:
        row = self.rows.get(key)
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    # ------------------------------------------------------------------------------ Qt's model
    def rowCount(self, parent=QtCore.QModelIndex()) -> int:  # noqa: B008  (Qt's signature)
        return 0 if parent.isValid() else len(self.states)

    def columnCount(self, parent=QtCore.QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=_Role.DisplayRole):
        if orientation == QtCore.Qt.Orientation.Horizontal and role == _Role.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index):
        flags = super().flags(index)
        return flags | QtCore.Qt.ItemFlag.ItemIsUserCheckable if index.column() == 0 else flags

    def data(self, index, role=_Role.DisplayRole):
        if not index.isValid() or index.row() >= len(self.states):
            return None
        state, column = self.states[index.row()], index.column()
        if role == _KEY:
            return state.key
        if role == _Role.DisplayRole:
            return row_texts(state)[column]
        if column == 0:
            if role == _Role.DecorationRole:
                return color_icon(state.data.color)
            if role == _Role.CheckStateRole:
                return QtCore.Qt.CheckState.Checked if state.data.visible else QtCore.Qt.CheckState.Unchecked
            if role == _Role.ToolTipRole:
                return f"{state.name}: tick to show it in the views"
        if column == 1:
            if role == _Role.ForegroundRole:
                return QtGui.QBrush(QtGui.QColor(STATUS_COLORS.get(state.status, "#202020")))
            if role == _Role.ToolTipRole:
                return state.error.strip().splitlines()[-1] if state.error else state.status_text()
        return None

    def setData(self, index, value, role=_Role.EditRole) -> bool:
        if role != _Role.CheckStateRole or index.column() != 0:
            return False
        state = self.states[index.row()]
        checked = QtCore.Qt.CheckState(value) == QtCore.Qt.CheckState.Checked
        self.visibility_changed.emit(state.key, checked)  # the controller sets it; the row shows it after
        self.dataChanged.emit(index, index)
        return True


def row_texts(state) -> list[str]:
    """A run's row: name, status, the last iteration computed, iterations per second (while it runs)."""
    going = state.status in (RunStatus.RUNNING, RunStatus.COMPILING)  # paused or ended: no rate to show
    rate = f"{state.iterations_per_second:.1f}" if going and state.iterations_per_second > 0 else ""
    return [state.name, state.status_text(), str(state.iteration) if state.iteration >= 0 else "", rate]


class RunList(QtWidgets.QWidget):
    """Rows of runs; emits which run is selected, which was ticked, and the add / duplicate / remove buttons."""

    selected = QtCore.pyqtSignal(object)  # key or None
    visibility_changed = QtCore.pyqtSignal(int, bool)
    add_requested = QtCore.pyqtSignal()
    duplicate_requested = QtCore.pyqtSignal(int)
    remove_requested = QtCore.pyqtSignal(int)
    details_requested = QtCore.pyqtSignal(int)  # double-click: e.g. a failed run's traceback

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = RunTable(self)
        self.tree = QtWidgets.QTreeView()
        self.tree.setModel(self.model)
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)  # the view measures one row, not all of them
        self.tree.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setToolTip("Tick to show a run in the views; double-click a failed run for its traceback")
        header = self.tree.header()
        # names whole up to NAME_WIDTH_MAX; a long status ("diverged at iteration 1, layer 0, t = 18 (h)") takes
        # the room left and is elided, in full in its tooltip
        header.setStretchLastSection(False)
        for col in (0, 2, 3):
            header.setSectionResizeMode(col, QtWidgets.QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.tree.setTextElideMode(QtCore.Qt.TextElideMode.ElideRight)
        self.tree.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        metrics = self.tree.fontMetrics()
        self.tree.setMinimumHeight(metrics.height() * (MIN_ROWS + 2) + 8)
        self.tree.setColumnWidth(
            2, max(metrics.horizontalAdvance("Iteration"), metrics.horizontalAdvance("0000000")) + 16
        )
        self.tree.setColumnWidth(3, max(metrics.horizontalAdvance("it/s"), metrics.horizontalAdvance("0000.0")) + 16)
        self.model.visibility_changed.connect(self.visibility_changed)
        self.tree.selectionModel().currentChanged.connect(self._current_changed)
        self.tree.doubleClicked.connect(lambda index: self.details_requested.emit(index.data(_KEY)))
        buttons = QtWidgets.QHBoxLayout()
        self.add_button = QtWidgets.QPushButton("Add")
        self.add_button.setToolTip("Add a run with the selected run's settings (or the defaults)")
        self.duplicate_button = QtWidgets.QPushButton("Duplicate")
        self.duplicate_button.setToolTip("Copy the selected run")
        self.remove_button = QtWidgets.QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected run (stops it)")
        self.add_button.clicked.connect(self.add_requested)
        self.duplicate_button.clicked.connect(lambda: self._with_current(self.duplicate_requested))
        self.remove_button.clicked.connect(lambda: self._with_current(self.remove_requested))
        for b in (self.add_button, self.duplicate_button, self.remove_button):
            buttons.addWidget(b)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree)
        layout.addLayout(buttons)
        # a run's counters (iteration, it/s) change with every batch of records, up to 20 times a second per
        # run: the rows are repainted for them at most every COUNTER_REFRESH_MS (each repaint of the list was
        # ~1.5 ms of the GUI thread, so 5 runs cost a frame's worth every 20 ms); a new status shows at once
        self._shown_status: dict = {}  # key -> the status the row last showed
        self._stale: set = set()  # keys whose counters changed since their row was repainted
        self._counter_timer = QtCore.QTimer(self)
        self._counter_timer.setSingleShot(True)
        self._counter_timer.setInterval(COUNTER_REFRESH_MS)
        self._counter_timer.timeout.connect(self._refresh_counters)

    # ------------------------------------------------------------------------------------ keys
    def current_key(self):
        index = self.tree.currentIndex()
        return index.data(_KEY) if index.isValid() else None

    def keys(self) -> list[int]:
        return [s.key for s in self.model.states]

    def select(self, key: int) -> None:
        row = self.model.rows.get(key)
        if row is not None:
            self.tree.setCurrentIndex(self.model.index(row, 0))

    def set_checked(self, key: int, checked: bool) -> None:
        """Tick or untick a run's row, as a click does."""
        row = self.model.rows[key]
        state = QtCore.Qt.CheckState.Checked if checked else QtCore.Qt.CheckState.Unchecked
        self.model.setData(self.model.index(row, 0), state.value, _Role.CheckStateRole)

    def tooltip(self, key: int, column: int) -> str:
        return self.model.data(self.model.index(self.model.rows[key], column), _Role.ToolTipRole) or ""

    def _with_current(self, signal) -> None:
        key = self.current_key()
        if key is not None:
            signal.emit(key)

    # ------------------------------------------------------------------------------------ rows
    def set_runs(self, states) -> None:
        """Show these runs, keeping the selection.  The same runs in the same order are updated in place (a row
        is never replaced while it may be emitting a signal); otherwise the model is reset."""
        states = list(states)
        if [s.key for s in states] == self.keys():
            for state in states:
                self.model.changed(state.key)
            return
        current = self.current_key()
        self.model.set_states(states)
        self._fit_names(states)
        keys = self.keys()
        target = current if current in self.model.rows else (keys[0] if keys else None)
        if target is not None:
            self.select(target)
        else:
            self.selected.emit(None)
        self.duplicate_button.setEnabled(bool(keys))
        self.remove_button.setEnabled(bool(keys))

    def _fit_names(self, states) -> None:
        """The name column as wide as the longest name (up to NAME_WIDTH_MAX), measured once per set of runs."""
        metrics = self.tree.fontMetrics()
        longest = max((metrics.horizontalAdvance(s.name) for s in states), default=0)
        width = max(metrics.horizontalAdvance(COLUMNS[0]), longest) + 56  # tick, colour icon, margins
        self.tree.setColumnWidth(0, min(width, NAME_WIDTH_MAX))

    def update_run(self, state) -> None:
        """Refresh one row: at once for a new status, within COUNTER_REFRESH_MS for new counters."""
        if self._shown_status.get(state.key) != state.status:
            self._shown_status[state.key] = state.status
            self._stale.discard(state.key)
            self.model.changed(state.key)
            return
        self._stale.add(state.key)
        if not self._counter_timer.isActive():
            self._counter_timer.start()

    def _refresh_counters(self) -> None:
        stale, self._stale = self._stale, set()
        for key in stale:
            self.model.changed(key)  # a key removed meanwhile has no row: nothing happens

    def row_texts(self, key: int) -> list[str]:
        return row_texts(self.model.states[self.model.rows[key]])

    def _current_changed(self, current, _previous) -> None:
        self.selected.emit(current.data(_KEY) if current.isValid() else None)
