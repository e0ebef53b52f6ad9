"""The run list: one row per run with its colour, a visibility tick, its status, iteration and speed."""

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


@functools.lru_cache(maxsize=64)
def color_icon(color: str, size: int = 14) -> QtGui.QIcon:
    pixmap = QtGui.QPixmap(size, size)
    pixmap.fill(QtGui.QColor(color))
    return QtGui.QIcon(pixmap)


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
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setToolTip("Tick to show a run in the views; double-click a failed run for its traceback")
        header = self.tree.header()
        # names always whole; a long status ("diverged at iteration 1, layer 0, t = 18 (h)") takes the room
        # left and is elided, in full in its tooltip
        header.setStretchLastSection(False)
        for col in (0, 2, 3):
            header.setSectionResizeMode(col, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.tree.setTextElideMode(QtCore.Qt.TextElideMode.ElideRight)
        self.tree.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.tree.itemChanged.connect(self._item_changed)
        self.tree.currentItemChanged.connect(self._current_changed)
        self.tree.itemDoubleClicked.connect(lambda item, _: self.details_requested.emit(item.data(0, _KEY)))
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
        self._items: dict[int, QtWidgets.QTreeWidgetItem] = {}
        self._filling = False

    def current_key(self):
        item = self.tree.currentItem()
        return item.data(0, _KEY) if item is not None else None

    def _with_current(self, signal) -> None:
        key = self.current_key()
        if key is not None:
            signal.emit(key)

    def set_runs(self, states) -> None:
        """Show these runs, keeping the selection.  The same runs in the same order are updated in place (a row
        is never deleted while it may be emitting a signal); otherwise the rows are rebuilt."""
        if [s.key for s in states] == list(self._items):
            for state in states:
                self.update_run(state)
            return
        current = self.current_key()
        self._filling = True
        self.tree.clear()
        self._items = {}
        for state in states:
            item = QtWidgets.QTreeWidgetItem()
            item.setData(0, _KEY, state.key)
            item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
            self.tree.addTopLevelItem(item)
            self._items[state.key] = item
            self.update_run(state)
        self._filling = False
        keys = [s.key for s in states]
        target = current if current in keys else (keys[0] if keys else None)
        if target is not None:
            self.tree.setCurrentItem(self._items[target])
        else:
            self.selected.emit(None)
        self.duplicate_button.setEnabled(bool(keys))
        self.remove_button.setEnabled(bool(keys))

    def update_run(self, state) -> None:
        """Refresh one row's texts (cheap; called on every batch of records)."""
        item = self._items.get(state.key)
        if item is None:
            return
        filling, self._filling = self._filling, True
        item.setText(0, state.name)
        item.setToolTip(0, f"{state.name}: tick to show it in the views")
        item.setIcon(0, color_icon(state.data.color))
        item.setCheckState(0, QtCore.Qt.CheckState.Checked if state.data.visible else QtCore.Qt.CheckState.Unchecked)
        item.setText(1, state.status_text())
        item.setForeground(1, QtGui.QBrush(QtGui.QColor(STATUS_COLORS.get(state.status, "#202020"))))
        item.setToolTip(1, state.error.strip().splitlines()[-1] if state.error else state.status_text())
        item.setText(2, str(state.iteration) if state.iteration >= 0 else "")
        item.setText(3, f"{state.iterations_per_second:.1f}" if state.iterations_per_second > 0 else "")
        self._filling = filling

    def row_texts(self, key: int) -> list[str]:
        item = self._items[key]
        return [item.text(c) for c in range(len(COLUMNS))]

    def _item_changed(self, item, column) -> None:
        if self._filling or column != 0:
            return
        self.visibility_changed.emit(item.data(0, _KEY), item.checkState(0) == QtCore.Qt.CheckState.Checked)

    def _current_changed(self, current, _previous) -> None:
        self.selected.emit(current.data(0, _KEY) if current is not None else None)


_KEY = QtCore.Qt.ItemDataRole.UserRole
