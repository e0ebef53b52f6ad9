"""Plot building blocks shared by the views: log10 axes, empty-state hints, pens (hover readouts: gui/hover.py).

Log scales: every norm is drawn as log10(value) on a LINEAR axis whose ticks read 10^k.  pyqtgraph's own log
mode shifts curves in SVG export (pyqtgraph#2941); plotting log10 values sidesteps it and keeps hover values,
theory lines and exported figures in one coordinate system.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

from . import style
from .axes import IterationAxis, Log10Axis

_PEN_STYLES = {
    "solid": QtCore.Qt.PenStyle.SolidLine,
    "dash": QtCore.Qt.PenStyle.DashLine,
    "dot": QtCore.Qt.PenStyle.DotLine,
    "dashdot": QtCore.Qt.PenStyle.DashDotLine,
    "none": QtCore.Qt.PenStyle.NoPen,  # a legend entry that explains a marker, not a line
}


@functools.lru_cache(maxsize=1024)
def pen(color: str, width: float = style.CURVE_WIDTH, line: str = "solid", alpha: int = 255) -> QtGui.QPen:
    """One QPen object per (colour, width, line style, alpha), never changed by its users (the items that keep a
    pen keep a copy): a frame asks for a pen per curve, and building QColor and QPen anew was a tenth of the
    through-time view's redraw (issue 9); the same object also tells a CurveSet at once that a pen is unchanged."""
    qcolor = QtGui.QColor(color)
    qcolor.setAlpha(alpha)
    p = pg.mkPen(qcolor, width=width)
    p.setStyle(_PEN_STYLES[line])
    return p


@functools.lru_cache(maxsize=512)
def shared_pen(color: str, width: float = 1.0) -> QtGui.QPen:
    """One QPen object per (colour, width), never changed: pyqtgraph's symbol atlas keys a marker's picture by
    the id of its pen and brush, so fresh pens render (and store) every marker anew on every redraw."""
    return pg.mkPen(QtGui.QColor(color), width=width)


@functools.lru_cache(maxsize=512)
def shared_brush(color: str) -> QtGui.QBrush:
    """One QBrush object per colour, never changed (see shared_pen)."""
    return pg.mkBrush(QtGui.QColor(color))


def set_title(plot: pg.PlotItem, title: str) -> None:
    """The plot's title, only when it changed: setting it re-lays out the plot (fixed title row, label size)."""
    if getattr(plot, "_gradscope_title", None) != title:
        plot.setTitle(title, size="11pt")
        plot._gradscope_title = title


class PlotItem(pg.PlotItem):
    """pyqtgraph's PlotItem without its O(N) pass over every curve each time a curve is added (updateParamList:
    the "Average" menu's list of the curves' averaging parameters), which made N runs' curves cost O(N^2):
    18 s of a 1,000-run export's 95.  GradScope gives no curve such parameters, so the pass (and the list) is
    kept only for a plot that was given some."""

    _averaging_params = False

    def addItem(self, item, *args, **kwargs):
        self._averaging_params = self._averaging_params or bool(kwargs.get("params"))
        return super().addItem(item, *args, **kwargs)

    def updateParamList(self):
        if self._averaging_params:
            super().updateParamList()


def make_plot(
    layout: pg.GraphicsLayout,
    row: int,
    col: int,
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_y: bool = False,
    iterations_x: bool = False,
    iterations_y: bool = False,
    rowspan: int = 1,
    colspan: int = 1,
    menu: bool = True,
) -> pg.PlotItem:
    """A PlotItem placed in ``layout`` with the project's look; log_y gives a Log10Axis on the left,
    iterations_x / iterations_y an IterationAxis (whole numbers) at the bottom / on the left; menu: pyqtgraph's
    context menus (not needed in exported figures)."""
    axes = {}
    if log_y:
        axes["left"] = Log10Axis("left")
    elif iterations_y:
        axes["left"] = IterationAxis("left")
    if iterations_x:
        axes["bottom"] = IterationAxis("bottom")
    plot = PlotItem(axisItems=axes, enableMenu=menu)  # as layout.addPlot makes one, without the O(N^2)
    layout.addItem(plot, row=row, col=col, rowspan=rowspan, colspan=colspan)
    set_title(plot, title)
    plot.setLabel("bottom", x_label)
    plot.setLabel("left", y_label)
    plot.showGrid(x=True, y=True, alpha=style.GRID_ALPHA)
    plot.getAxis("left").setWidth(62)
    for name in ("left", "bottom"):
        # "(x0.001)" beside a timestep or a fraction of units reads as a unit; the numbers are plain
        plot.getAxis(name).enableAutoSIPrefix(False)
    # minor grid lines of linear axes are clutter, and they were a third of a frame's paint time
    plot.getAxis("bottom").setStyle(maxTickLevel=0)
    if not log_y:
        plot.getAxis("left").setStyle(maxTickLevel=0)
    return plot


def side_legend(layout: pg.GraphicsLayout, row: int, col: int, rowspan: int = 1) -> pg.LegendItem:
    """A legend in its own layout cell, beside the plots, so it never hides a curve."""
    legend = pg.LegendItem(
        offset=None, brush=pg.mkBrush(255, 255, 255, 0), labelTextColor=style.FOREGROUND, verSpacing=-4
    )
    layout.addItem(legend, row=row, col=col, rowspan=rowspan)
    # as tall as its entries, at the top of its cell (a grid layout would otherwise spread the entries out)
    legend.setSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred, QtWidgets.QSizePolicy.Policy.Maximum)
    layout.layout.setAlignment(legend, QtCore.Qt.AlignmentFlag.AlignTop)
    return legend


class Legend:
    """A side legend listing (label, colour, line style) entries in the given order.

    Entries are drawn from their own sample lines, not from the curves, so the legend shows runs in run order
    and explains line styles; it is rebuilt only when the entries change.
    """

    def __init__(self, layout: pg.GraphicsLayout, row: int, col: int, rowspan: int = 1):
        self.item = side_legend(layout, row, col, rowspan)
        self.entries: list[tuple[str, str, str]] = []
        self._samples: list[pg.PlotDataItem] = []

    def set(self, entries: list[tuple[str, str, str]]) -> None:
        """entries: (label, colour, line style), line style one of solid, dash, dot, dashdot."""
        if entries == self.entries:
            return
        legend = self.item
        # pyqtgraph's LegendItem lays itself out again after every entry it adds or removes (updateSize, which it
        # skips while a fixed size is set): O(N^2) for N runs, 1.8 s for 300.  Fixed meanwhile, laid out once.
        fixed, legend.size = legend.size, (0, 0)
        try:
            legend.clear()
            self._samples = []
            for label, color, line in _shown(entries):
                if color is None:  # "... and N more runs": no sample line
                    sample = pg.PlotDataItem(pen=None)
                else:
                    sample = pg.PlotDataItem(pen=pen(color, style.CURVE_WIDTH if color not in _GREYS else 1.5, line))
                self._samples.append(sample)
                legend.addItem(sample, label)
        finally:
            legend.size = fixed
        legend.updateSize()
        self.entries = list(entries)

    @property
    def labels(self) -> list[str]:
        return [label for label, _, _ in self.entries]


STYLE_GREY = "#606060"  # legend entries that explain a line style rather than a run
_GREYS = (STYLE_GREY,)
MAX_RUN_ENTRIES = 50  # a legend of 1,000 runs would fill the page and squeeze the plot into a sliver


def _shown(entries: list[tuple[str, str, str]]) -> list[tuple[str, str | None, str]]:
    """The entries a legend draws: every line-style entry, the first runs, and one line for the runs past
    MAX_RUN_ENTRIES (their curves are drawn all the same; the hover readout names them in the app)."""
    runs = sum(color not in _GREYS for _, color, _ in entries)
    if runs <= MAX_RUN_ENTRIES:
        return list(entries)
    shown: list[tuple[str, str | None, str]] = []
    kept = 0
    for entry in entries:
        if entry[1] in _GREYS:
            shown.append(entry)
        elif kept < MAX_RUN_ENTRIES - 1:
            shown.append(entry)
            kept += 1
        elif kept == MAX_RUN_ENTRIES - 1:
            shown.append((f"… and {runs - kept} more runs", None, "solid"))
            kept += 1
    return shown


NICE_STEPS = (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)  # consecutive ratios <= 4/3: little empty space


def nice_ceil(value: float) -> float:
    """The smallest of NICE_STEPS x 10^k at or above value (for value > 0)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    k = math.floor(math.log10(value))
    for m in NICE_STEPS:
        if m * 10.0**k >= value * (1 - 1e-12):
            return m * 10.0**k
    return 10.0 ** (k + 1)


class SnapBounds(pg.GraphicsObject):
    """An invisible item whose data bounds give pyqtgraph's auto-range the plot's range.

    While runs stream in (live), the data's range is rounded out to whole decades (log10 y) and the end of a
    growing iteration axis up to a nice number (nice_ceil), so the range stays put frame after frame: axes are
    re-laid-out and repainted only when it changes, and a moving range cost a third of a frame.  A still
    picture (paused, finished, exported) is fitted to the data instead (at least half a decade tall), so a loss
    between 6 and 10 does not sit in an eighth of a plot from 1 to 100.
    Zooming and panning by hand still work, and the plot's "A" button returns to this auto-range.
    """

    MIN_LOG_SPAN = 0.5  # decades: a still log plot of nearly constant values is not all noise
    EMPTY_LOG_Y = (-3.0, 3.0)  # decades shown before there is data: axes that read 10^-3 .. 10^3

    def __init__(self, plot: pg.PlotItem):
        super().__init__()
        self.bounds: tuple | None = None  # ((x0, x1), (y0, y1))
        plot.addItem(self)

    def snap(
        self,
        x: tuple[float, float] | None,
        y: tuple[float, float] | None,
        *,
        log_y: bool,
        nice_x: bool = False,
        nice_y: bool = False,
        live: bool = True,
        empty_x: tuple[float, float] | None = None,
    ) -> None:
        """Set from the drawn data's ranges (None: nothing drawn).  nice_x / nice_y: the end of a growing
        iteration axis, rounded up by nice_ceil while live; live: whole decades (else fitted).  empty_x:
        the x range to show while nothing is drawn (e.g. the experiment's timesteps), with EMPTY_LOG_Y on
        a log axis, so that an empty plot has axes that mean something instead of 0 .. 1."""
        if x is None or y is None:
            bounds = (empty_x, self.EMPTY_LOG_Y if log_y else (0.0, 1.0)) if empty_x is not None else None
        else:
            x0, x1 = x
            if x1 - x0 < 1:
                # a single iteration or timestep: a unit-wide range centred on it, so its marker is not
                # squeezed against an edge and the whole-number axis labels it
                mid = 0.5 * (x0 + x1)
                x0, x1 = mid - 0.5, mid + 0.5
            elif nice_x and live:
                x1 = max(x1, nice_ceil(x1))
            y0, y1 = y
            if log_y and not live:
                if y1 - y0 < self.MIN_LOG_SPAN:
                    mid = 0.5 * (y0 + y1)
                    y0, y1 = mid - self.MIN_LOG_SPAN / 2, mid + self.MIN_LOG_SPAN / 2
            elif log_y:
                lo, hi = math.floor(y0 - 0.05), math.ceil(y1 + 0.05)
                if self.bounds is not None:
                    # hysteresis: keep the current decades while the data fits and they are at most one decade
                    # too wide on either side (values near a decade boundary would flip the range otherwise)
                    cur_lo, cur_hi = self.bounds[1]
                    if cur_lo <= y0 and y1 <= cur_hi and cur_lo >= lo - 1 and cur_hi <= hi + 1:
                        lo, hi = cur_lo, cur_hi
                y0, y1 = lo, hi
            elif nice_y and live:
                y1 = max(y1, nice_ceil(y1))
            bounds = ((x0, x1), (y0, y1))
        if bounds != self.bounds:
            self.bounds = bounds
            self.informViewBoundsChanged()

    def dataBounds(self, ax, frac=1.0, orthoRange=None):  # pyqtgraph's auto-range protocol
        return self.bounds[ax] if self.bounds is not None else (None, None)

    def boundingRect(self):  # Qt override: draws nothing
        return QtCore.QRectF()

    def paint(self, painter, *args):  # Qt override
        pass


def data_ranges(*curve_sets) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """(x range, y range) over the finite points of every visible curve in the given CurveSets."""
    xs, ys = [], []
    for curves in curve_sets:
        for item in curves.items.values():
            drawn = item.data_range() if item.isVisible() else None
            if drawn is not None:
                xs += drawn[0]
                ys += drawn[1]
    if not ys:
        return None, None
    return (min(xs), max(xs)), (min(ys), max(ys))


class EmptyHint:
    """A centred message in a plot that has nothing to show (e.g. "Press Run (Space) to start")."""

    def __init__(self, plot: pg.PlotItem, text: str):
        self.plot = plot
        self.item = pg.TextItem(text, color="#707070", anchor=(0.5, 0.5))
        font = QtGui.QFont()
        font.setPointSize(12)
        self.item.setFont(font)
        plot.addItem(self.item, ignoreBounds=True)
        plot.getViewBox().sigRangeChanged.connect(self._place)
        self._place()

    def set_text(self, text: str) -> None:
        self.item.setText(text)

    def show(self, visible: bool) -> None:
        self.item.setVisible(visible)

    def _place(self, *_):
        (x0, x1), (y0, y1) = self.plot.getViewBox().viewRange()
        self.item.setPos((x0 + x1) / 2, (y0 + y1) / 2)

    @property
    def visible(self) -> bool:
        return self.item.isVisible()


def nearest_index(xs: np.ndarray, x: float) -> int | None:
    """Index of the entry of sorted xs nearest to x (None for an empty array)."""
    if len(xs) == 0 or not math.isfinite(x):
        return None
    i = int(np.searchsorted(xs, x))
    if i == len(xs):
        return len(xs) - 1
    if i > 0 and x - xs[i - 1] < xs[i] - x:
        return i - 1
    return i


def thin_rows(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` row indices spread evenly over 0..n-1, always with the first and the last."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.int64))


def finite_range(values: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of the finite entries, or None."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())
