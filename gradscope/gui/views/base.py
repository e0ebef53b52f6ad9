"""What every view shares.

A view is two parts:
- a ``Figure``: the pyqtgraph plots of the view inside a ``pg.GraphicsLayout``, with ``refresh(runs)``
  drawing a list of RunData in place (items created once, then setData / setImage).  It knows nothing of
  widgets, so the same code draws in the app, in the composite figure and in exported files;
- a ``View``: the QWidget the app shows, the figure's layout in a GraphicsLayoutWidget under a row of
  controls (layer, run, overlays).  ``View.redraw(runs)`` redraws only when something it shows changed.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtGui, QtWidgets

from .. import style
from ..curves import Curve, CurvePaths
from ..model import RunData, log10_or_nan, nonfinite_mask, stream_label
from ..plotting import EmptyHint, SnapBounds, data_ranges, make_plot, shared_brush, shared_pen


class CurveSet:
    """One curve per key in a plot: created on first use, updated in place, removed when its key goes.

    The curves are painted by the plot's one CurvePaths item (gui/curves.py), shared by every CurveSet of the
    plot; ``items`` maps each key to its Curve (xData, yData, opts["pen"], isVisible, as a PlotDataItem had).
    A line needs two neighbouring finite points: a single recorded iteration, or a finite value between NaNs,
    would draw nothing.  Such points get a dot (and every point does when ``markers`` is asked for, e.g. a
    training curve of a few iterations, so one sees which iterations were recorded).
    """

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        self.items: dict[object, Curve] = {}
        self._markers: dict = {}  # key -> whether every point was asked to get a dot
        self.antialias = True

    def set_antialias(self, on: bool) -> None:
        """Smooth lines (for still pictures and exports) or fast ones (while runs stream in)."""
        if on == self.antialias:
            return
        self.antialias = on
        for item in self.items.values():
            item.set_antialias(on)

    def set(self, key, x: np.ndarray, y: np.ndarray, qpen, markers: bool = False) -> Curve:
        """Draw y against x (non-finite y are gaps: connect="finite"); dots on isolated points, or on every
        point with ``markers``."""
        item = self.items.get(key)
        if item is None:
            item = self.items[key] = CurvePaths.for_plot(self.plot).add(self.antialias)
        elif (
            not item.stale
            and _same(item.xData, x)
            and _same(item.yData, y)
            and item.opts["pen"] == qpen
            and self._markers.get(key) == markers
        ):
            # unchanged (another run brought the new data): its path is kept
            item.setVisible(True)
            return item
        item.opts["pen"] = qpen  # setData below repaints and pads the bounds for the pen (and the dots)
        item.setData(x, y, dots=self._dots(x, y, qpen, markers))
        item.setVisible(True)
        self._markers[key] = markers
        return item

    @staticmethod
    def _dots(x, y, qpen, markers: bool) -> tuple | None:
        """(x, y, colour) of the points that get a dot (curves.CurvePaths paints them), or None."""
        finite = np.isfinite(y)  # (n,)
        if markers:
            show = finite
        else:
            before = np.r_[False, finite[:-1]]
            after = np.r_[finite[1:], False]
            show = finite & ~before & ~after  # no finite neighbour
        if not show.any():
            return None
        x = np.asarray(x, dtype=np.float64)[show]  # (m,)
        return x, np.asarray(y, dtype=np.float64)[show], QtGui.QColor(qpen.color())

    def retain(self, keys) -> None:
        """Remove every curve whose key is not in ``keys``."""
        keys = set(keys)
        for key in [k for k in self.items if k not in keys]:
            CurvePaths.for_plot(self.plot).remove(self.items.pop(key))
            self._markers.pop(key, None)

    def data(self, key) -> tuple[np.ndarray, np.ndarray] | None:
        """The (x, y) drawn for ``key`` (tests and hover readouts read what is on screen)."""
        item = self.items.get(key)
        if item is None or not item.isVisible():
            return None
        return item.xData, item.yData

    def dot_positions(self, key) -> np.ndarray:
        """(n, 2) positions of the dots drawn for ``key`` (empty when none)."""
        item = self.items.get(key)
        if item is None or item.dots is None:
            return np.zeros((0, 2))
        return np.c_[item.dots[0], item.dots[1]]


def _same(drawn, new) -> bool:
    """Whether a curve already holds these values (NaN equal to NaN); the very array it holds at once."""
    if drawn is new:
        return True
    return drawn is not None and drawn.shape == np.shape(new) and np.array_equal(drawn, new, equal_nan=True)


class NonFiniteMarkers:
    """Crosses at the top of a log plot for the steps whose value is NaN or Inf (one colour per run); with
    ``symbol="t"``, triangles at its bottom for the steps whose value is exactly 0 (an underflow: log10 has no
    place for it, and a gap alone would say nothing)."""

    def __init__(self, plot: pg.PlotItem, symbol: str = "x"):
        self.plot = plot
        self.item = pg.ScatterPlotItem(symbol=symbol, size=9, pxMode=True)
        self.item.setZValue(50)
        plot.addItem(self.item)
        self.points: list[tuple[float, str]] = []
        self._y_top: float | None = None

    def set(self, marks: list[tuple[np.ndarray, str]], y_top: float) -> None:
        """marks: (x positions, colour) pairs; drawn at height y_top.  Unchanged marks are left as drawn (a
        redraw that brings nothing new for them must not rebuild every marker: with a few hundred underflowed
        steps that was half of a frame)."""
        points = [(float(x), color) for xs, color in marks for x in xs]
        if points == self.points and y_top == self._y_top:
            return
        self.points, self._y_top = points, y_top
        # hidden while there is nothing to mark: an empty ScatterPlotItem still cost a tenth of each paint
        self.item.setVisible(bool(points))
        x = np.fromiter((p for p, _ in points), dtype=np.float64, count=len(points))  # (n,)
        # one pen and brush object per colour, so pyqtgraph renders each colour's marker once (shared_pen)
        self.item.setData(
            x=x,
            y=np.full(len(points), y_top),  # (n,)
            pen=[shared_pen(color, 2.0) for _, color in points],
            brush=[shared_brush(color) for _, color in points],
        )

    @property
    def count(self) -> int:
        return len(self.points)


def log_series(trace, name: str, row: int = -1, layer: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(log10 values, non-finite mask) of a per-timestep metric at one recorded row, or None if absent."""
    if name not in trace or len(trace) == 0:
        return None
    values = trace.array(name)[row]
    if layer is not None:
        values = values[min(layer, values.shape[0] - 1)]
    return log10_or_nan(values), nonfinite_mask(values)


def snap_and_mark(
    snap: SnapBounds,
    marks: NonFiniteMarkers,
    marked: list,
    *curve_sets: CurveSet,
    log_y: bool = True,
    nice_x: bool = False,
    live: bool = True,
    empty_x: tuple[float, float] | None = None,
) -> None:
    """Snap the plot's auto-range to the drawn curves and put the non-finite markers just above them;
    empty_x: the x range while nothing is drawn (SnapBounds.snap)."""
    x, y = data_ranges(*curve_sets)
    snap.snap(x, y, log_y=log_y, nice_x=nice_x, live=live, empty_x=empty_x)
    top = snap.bounds[1][1] if snap.bounds is not None else 0.0
    marks.set(marked, top + 0.25)


def visible_with_data(runs: list[RunData]) -> list[RunData]:
    return [r for r in runs if r.visible and r.has_data()]


def timestep_range(runs: list[RunData]) -> tuple[float, float] | None:
    """0 .. T-1 of the longest sequence among the runs' settings (None without settings): the x range of a
    through-time plot before any data."""
    lengths = [r.run.task.seq_len for r in runs if r.run is not None]
    return (0.0, float(max(lengths) - 1)) if lengths else None


def iteration_range(runs: list[RunData]) -> tuple[float, float] | None:
    """0 .. the last iteration any run will make (None without settings): a training plot before any data."""
    counts = [max(r.run.train.iterations, 1) for r in runs if r.run is not None]
    return (0.0, float(max(max(counts) - 1, 1))) if counts else None


class Figure:
    """Base of the views' plot parts.  Subclasses build plots in __init__ and draw in ``refresh``."""

    name = "figure"  # file stem in exports
    title = "Figure"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        """interactive: the plots get pyqtgraph's context menus (in the app; exported figures need none, and
        the menus were a fifth of a figure's construction time)."""
        self.layout = layout
        self.interactive = interactive
        self.live = False  # runs streaming in: ranges snapped so axes hold still (see SnapBounds)
        self.plots: list[pg.PlotItem] = []
        self.readouts = []

    def refresh(self, runs: list[RunData]) -> None:
        raise NotImplementedError

    def options(self) -> tuple:
        """The settings that change what is drawn (part of the redraw signature)."""
        return ()

    def connect_hover(self) -> None:
        for readout in self.readouts:
            readout.connect()

    def curve_sets(self) -> list[CurveSet]:
        return [v for v in vars(self).values() if isinstance(v, CurveSet)]

    def forget_drawn(self) -> None:
        """The next refresh redraws every curve as if every run had brought new values: what its curves hold is
        forgotten (a view that keeps more of what it drew forgets that too).  benchmarks/bench_gui.py's --force
        measures the worst frame with it; the app never calls it."""
        for curves in self.curve_sets():
            for item in curves.items.values():
                item.stale = True  # CurveSet.set does not compare it with the new values: a setData follows

    def gradient_and_state_plots(self, titles: tuple[str, str], grad_at: tuple[int, int], state_at: tuple[int, int]):
        """The pair of plots the through-time and layers views start from: ||dL/dh_t|| and ||h_t|| against t on
        log axes, x-linked, each with its curves, its non-finite marks and its snapped bounds (``grad_plot``,
        ``grad_curves``, ``grad_marks``, ``grad_snap`` and the ``state_`` ones), and the empty plot's hint."""

        def log_plot(at: tuple[int, int], title: str, y_label: str) -> pg.PlotItem:
            return make_plot(
                self.layout, *at, menu=self.interactive, title=title, x_label="timestep t", y_label=y_label, log_y=True
            )

        self.grad_plot = log_plot(grad_at, titles[0], "‖∂L/∂hₜ‖ (batch mean)")
        self.state_plot = log_plot(state_at, titles[1], "‖hₜ‖ (batch mean)")
        self.state_plot.setXLink(self.grad_plot)
        self.plots = [self.grad_plot, self.state_plot]
        self.grad_curves = CurveSet(self.grad_plot)
        self.state_curves = CurveSet(self.state_plot)
        self.grad_marks = NonFiniteMarkers(self.grad_plot)
        self.state_marks = NonFiniteMarkers(self.state_plot)
        self.grad_snap = SnapBounds(self.grad_plot)
        self.state_snap = SnapBounds(self.state_plot)
        self.hint = EmptyHint(self.grad_plot, "Press Run (Space) to start")


class View(QtWidgets.QWidget):
    """A figure in a GraphicsLayoutWidget under a row of controls."""

    figure_class = Figure

    def __init__(self, parent=None):
        super().__init__(parent)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground(style.BACKGROUND)
        self.figure = self.figure_class(self.graphics.ci)
        self.figure.connect_hover()
        # Axes (with their grid lines, which span the plot) are cached as pixmaps: their range moves only when
        # a decade is crossed (SnapBounds), so a frame blits them instead of replaying every line and label.
        # Only here, on screen: exported figures are drawn from fresh Figures, as vectors.
        # The curves too: a frame that brings no new values (the crosshair moved, a forced redraw of unchanged
        # data) blits them, and one that does re-renders the plot's one CurvePaths item into its pixmap.
        for plot in self.figure.plots:
            for item in (plot.getAxis("left"), plot.getAxis("bottom"), CurvePaths.for_plot(plot)):
                item.setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.live = False
        self.controls = QtWidgets.QHBoxLayout()
        self.controls.setContentsMargins(6, 4, 6, 0)
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(2)
        outer.addLayout(self.controls)
        outer.addWidget(self.graphics, 1)
        self._signature = None
        self._runs: list[RunData] = []

    def signature(self, runs: list[RunData]) -> tuple:
        return (
            tuple((r.key, id(r.trace), r.trace.version, r.visible, r.color, r.name) for r in runs),
            self.figure.options(),
            self.figure.live,
        )

    def set_live(self, live: bool) -> None:
        """While runs stream in, curves are drawn without antialiasing (a third of a frame's paint time) and
        ranges snap to whole decades; once they stop, the still picture is smooth and fitted to the data (the
        next redraw: the figure's live state is part of the signature)."""
        if live == self.live:
            return
        self.live = live
        self.figure.live = live
        for curves in self.figure.curve_sets():
            curves.set_antialias(not live)

    def redraw(self, runs: list[RunData], force: bool = False) -> bool:
        """Redraw when anything shown changed (or ``force``).  Returns whether it drew."""
        self._runs = runs
        signature = self.signature(runs)
        if not force and signature == self._signature:
            return False
        self.update_controls(runs)
        self.figure.refresh(runs)
        for readout in self.figure.readouts:
            readout.refresh()
        self._signature = self.signature(runs)
        return True

    def update_controls(self, runs: list[RunData]) -> None:
        """Adapt the controls to the runs (layer counts, run names).  Default: nothing."""

    def options_changed(self, *_) -> None:
        self.redraw(self._runs, force=True)


def run_combo(tooltip: str) -> QtWidgets.QComboBox:
    combo = QtWidgets.QComboBox()
    combo.setToolTip(tooltip)
    combo.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
    return combo


def set_run_choices(combo: QtWidgets.QComboBox, entries: list[tuple[str, int]], selected) -> None:
    """Offer (label, run key) entries, selecting the run ``selected`` (or the first), without emitting."""
    if [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count())] == entries:
        return
    combo.blockSignals(True)
    combo.clear()
    for label, key in entries:
        combo.addItem(label, key)
    combo.setCurrentIndex(max(combo.findData(selected), 0))
    combo.blockSignals(False)


def layer_combo(tooltip: str) -> QtWidgets.QComboBox:
    combo = QtWidgets.QComboBox()
    combo.setToolTip(tooltip)
    combo.addItem("top layer", -1)
    combo.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
    return combo


def set_layer_choices(combo: QtWidgets.QComboBox, layers, streams=None) -> None:
    """Offer "top layer" and every stream (layers 0..layers-1, or the given streams' names), keeping the
    current choice when it still exists."""
    names = tuple(streams) if streams is not None else tuple(f"layer{l}" for l in range(layers))
    wanted = ["top layer"] + [stream_label(names, l) for l in range(len(names))]
    if [combo.itemText(i) for i in range(combo.count())] == wanted:
        return
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    combo.addItem("top layer", -1)
    for l in range(len(names)):
        combo.addItem(stream_label(names, l), l)
    index = combo.findData(current)
    combo.setCurrentIndex(index if index >= 0 else 0)
    combo.blockSignals(False)


def resolve_layer(choice: int, layers: int, top: int | None = None) -> int:
    """A layer choice (-1 = top) as an index into a run with ``layers`` streams; ``top``: the stream "top"
    means (RunData.top_stream: a bidirectional run's top forward stream), else the last."""
    if choice < 0:
        return layers - 1 if top is None else top
    return min(choice, layers - 1)
