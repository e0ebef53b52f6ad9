"""Every curve of a plot painted by one item (``CurvePaths``), with the per-curve API the views had.

A pyqtgraph PlotDataItem is a PlotCurveItem and a ScatterPlotItem, each with its bounds, signals, caches and
paint call.  With 5 runs and 2 to 4 metrics a plot held a dozen of them, and their Python work in setData and
in paint was most of a frame's cost (issue 9: 60 frames per second while 5 runs train).  Here a plot has one
item that paints every curve drawn in it, of every CurveSet, in the order the curves were first drawn (as
the PlotDataItems were stacked), each with its own pen.  A curve's path is built (``pg.arrayToQPath``,
connect="finite": a NaN or Inf is a gap) on the first paint after its values change, and only then.

What a PlotDataItem drew, this draws alike: solid opaque pens wider than 1 px without antialiasing (the live
picture) as line segments, everything else as one path; more than 5 points per pixel are thinned to each
bin's minimum and maximum (pyqtgraph's auto "peak" downsampling), so a long training curve costs what the
plot's width costs.

A curve's dots (isolated points, or every point of a short training curve: CurveSet) are painted by the same
item, after every curve, as pyqtgraph's "o" symbol was (a circle of DOT_SIZE px, a 1 px outline in the fill's
colour): one ScatterPlotItem per curve cost a 1,000-run export's training page ~2,000 items, each with its
bounds, spots and a vector path per symbol in Python (issue 9).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui
from pyqtgraph.graphicsItems.PlotCurveItem import arrayToLineSegments  # what PlotCurveItem draws with

DOWNSAMPLE_FACTOR = 5.0  # points per pixel above which a curve is thinned (pyqtgraph's autoDownsampleFactor)
DOT_SIZE = 7.0  # px: a dot's diameter (the size the ScatterPlotItems had)


class Curve:
    """One curve of a CurvePaths item.  It offers what the views and tests read from a PlotDataItem: xData,
    yData, opts["pen"], opts["antialias"], isVisible(), getData()."""

    def __init__(self, owner: CurvePaths, antialias: bool):
        self._owner = owner
        self.xData: np.ndarray | None = None  # (n,) float64
        self.yData: np.ndarray | None = None  # (n,) float64, non-finite = gap
        self.opts: dict = {"pen": None, "antialias": antialias}
        self.visible = True
        self.stale = False  # set by Figure.forget_drawn: the next CurveSet.set redraws it whatever its values
        self.path = None  # QPainterPath, built on demand (getPath) for the downsampling factor in _built
        self._segments = None  # pg's line segments (the segmented drawing), built on demand
        self._device = None  # (key, segments in device pixels): see device_segments
        self._step = 0.0  # x[1] - x[0] on average (downsample_factor), as a Python float
        self._drawn_as: tuple | None = None  # (pen, antialias, segmented?): _segmented's answer for this pen
        self._built: int | None = None
        self._range: tuple | None = None  # ((x0, x1), (y0, y1)) of the finite points, or None
        self.dots: tuple | None = None  # (x (m,), y (m,), QColor): points drawn as dots, a subset of the finite ones

    def setData(self, x, y, dots: tuple | None = None) -> None:
        """The curve's values; ``dots`` (x, y, colour): which of its finite points also get a dot."""
        self.dots = dots
        self.stale = False
        self.xData = np.asarray(x, dtype=np.float64)
        self.yData = np.asarray(y, dtype=np.float64)
        self.path = self._segments = self._built = self._device = None
        ok = np.isfinite(self.xData) & np.isfinite(self.yData)  # (n,)
        x, y = self.xData[ok], self.yData[ok]
        self._range = ((float(x.min()), float(x.max())), (float(y.min()), float(y.max()))) if ok.any() else None
        n = len(self.xData)
        self._step = (float(self.xData[-1]) - float(self.xData[0])) / (n - 1) if n >= 2 else 0.0
        self._owner.geometry_changed()

    def set_antialias(self, on: bool) -> None:
        self.opts["antialias"] = on
        self._owner.update()

    def setVisible(self, on: bool) -> None:
        if on != self.visible:
            self.visible = on
            self._owner.geometry_changed()

    def isVisible(self) -> bool:
        return self.visible

    def getData(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        return self.xData, self.yData

    def data_range(self) -> tuple | None:
        """((x0, x1), (y0, y1)) of the finite points (None: nothing finite)."""
        return self._range

    def getPath(self, ds: int = 1):
        """The curve as one QPainterPath (non-finite values break it), thinned by ``ds`` (peak)."""
        if self.path is None or self._built != ds:
            self.path = pg.arrayToQPath(*self._thinned(ds), connect="finite")
            self._segments, self._built = None, ds
        return self.path

    def segments(self, ds: int = 1):
        """The curve as line segments (QPainter.drawLines' arguments), thinned by ``ds``."""
        if self._segments is None or self._built != ds:
            self._segments = arrayToLineSegments(*self._thinned(ds), connect="finite", finiteCheck=True)
            self.path, self._built = None, ds
        return self._segments.drawargs()

    def device_segments(self, ds: int, m: QtGui.QTransform):
        """The curve as line segments in device pixels (drawLines' arguments, to draw with no transform),
        for the painter's data -> device transform ``m``, thinned by ``ds``; kept while both stay the same.

        Why: the raster engine strokes a wide cosmetic pen through a scaling transform in its general path, and
        given the pixels it takes its fast one, 3.5 times faster (111 against 32 us a 200-point curve here): with
        5 live runs, their curves were a third of each frame's paint (issue 9)."""
        key = (ds, m.m11(), m.m12(), m.m21(), m.m22(), m.dx(), m.dy())
        if self._device is None or self._device[0] != key:
            x, y = self._thinned(ds)
            px = m.m11() * x + m.m21() * y + m.dx()  # (n,) device x
            py = m.m12() * x + m.m22() * y + m.dy()  # (n,) device y
            self._device = (key, arrayToLineSegments(px, py, connect="finite", finiteCheck=True))
        return self._device[1].drawargs()

    def _thinned(self, ds: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.xData, self.yData
        if ds <= 1 or len(x) < 2 * ds:
            return x, y
        n = len(x) // ds
        bins = y[: n * ds].reshape(n, ds)  # (n, ds)
        yy = np.empty(2 * n)  # (2n,) each bin's max then min, at the bin's first x (pyqtgraph's "peak")
        yy[0::2], yy[1::2] = bins.max(axis=1), bins.min(axis=1)
        return np.repeat(x[: n * ds : ds], 2), yy

    def downsample_factor(self, view_width: float, pixels: float) -> int:
        """Points per pixel over DOWNSAMPLE_FACTOR (at least 1): x is evenly spaced (timesteps, iterations).
        In Python floats: every curve asks at every paint, and NumPy scalars cost ten times more."""
        dx = self._step
        if self.xData is None or len(self.xData) < 2 or pixels <= 0 or not math.isfinite(dx) or dx == 0:
            return 1
        ds = abs(view_width / dx / (pixels * DOWNSAMPLE_FACTOR))
        return int(ds) if math.isfinite(ds) and ds >= 2 else 1

    def segmented(self) -> bool:
        """Whether this curve's pen is drawn as line segments (_segmented), asked once per pen and setting."""
        pen, antialias = self.opts["pen"], self.opts["antialias"]
        drawn = self._drawn_as
        if drawn is None or drawn[0] is not pen or drawn[1] != antialias:
            drawn = self._drawn_as = (pen, antialias, _segmented(pen, antialias))
        return drawn[2]


class CurvePaths(pg.GraphicsObject):
    """The one item of a plot that paints its curves (see the module's docstring).  ``for_plot`` gives it."""

    def __init__(self):
        super().__init__()
        self.curves: list[Curve] = []  # in drawing order
        self._rect: QtCore.QRectF | None = None

    @classmethod
    def for_plot(cls, plot: pg.PlotItem) -> CurvePaths:
        paths = getattr(plot, "_gradscope_paths", None)
        if paths is None:
            paths = plot._gradscope_paths = cls()
            plot.addItem(paths)
        return paths

    def add(self, antialias: bool) -> Curve:
        curve = Curve(self, antialias)
        self.curves.append(curve)
        return curve

    def remove(self, curve: Curve) -> None:
        self.curves.remove(curve)
        self.geometry_changed()

    def shown(self) -> list[Curve]:
        return [c for c in self.curves if c.visible and c.xData is not None and len(c.xData)]

    def geometry_changed(self) -> None:
        """The drawn extent changed: new bounds for Qt (repaint) and for the ViewBox's auto-range.  Qt is told
        while the old bounds are still cached (it reads them), so N curves set cost N, not N^2 bound scans."""
        self.prepareGeometryChange()
        self._rect = None
        self.informViewBoundsChanged()
        self.update()

    # ------------------------------------------------------------------ pyqtgraph's and Qt's protocols
    def dataBounds(self, ax, frac=1.0, orthoRange=None):  # pyqtgraph's auto-range protocol
        ranges = [r[ax] for r in (c.data_range() for c in self.shown()) if r is not None]
        if not ranges:
            return (None, None)
        return (min(lo for lo, _ in ranges), max(hi for _, hi in ranges))

    def pixelPadding(self) -> float:  # pyqtgraph's auto-range protocol: pixels around the data (pen, dots)
        shown = self.shown()
        pens = (c.opts["pen"].widthF() * 0.7072 for c in shown if c.opts["pen"] is not None)
        dots = ((DOT_SIZE + 1.0) * 0.7072 for c in shown if c.dots is not None)  # as a ScatterPlotItem pads
        return max(itertools.chain(pens, dots), default=0.0)

    def viewTransformChanged(self):  # pyqtgraph's hook: the pixel padding is in view coordinates
        self._rect = None
        self.prepareGeometryChange()

    def boundingRect(self):  # Qt override: the finite data, padded by the widest pen
        if self._rect is None:
            (x0, x1), (y0, y1) = self.dataBounds(0), self.dataBounds(1)
            if x0 is None or y0 is None:
                return QtCore.QRectF()
            pad = self.pixelPadding()
            px = py = 0.0
            if pad > 0:
                vx, vy = self.pixelVectors()
                px = 0.0 if vx is None else vx.length()
                py = 0.0 if vy is None else vy.length()
            self._rect = QtCore.QRectF(x0 - pad * px, y0 - pad * py, (x1 - x0) + 2 * pad * px, (y1 - y0) + 2 * pad * py)
        return self._rect

    def paint(self, painter, *args):  # Qt override
        view = self.getViewBox()
        (vx0, vx1), _ = view.viewRange() if view is not None else ((0.0, 0.0), None)
        pixels = view.width() if view is not None else 0.0
        m = painter.transform()  # data -> device
        # on screen and in images, segmented curves are drawn in device pixels (Curve.device_segments); vector
        # exports (SVG) keep data coordinates under the transform, as before
        raster = painter.paintEngine().type() == QtGui.QPaintEngine.Type.Raster
        for curve in self.shown():
            pen = curve.opts["pen"]
            if pen is None or pen.style() == QtCore.Qt.PenStyle.NoPen:
                continue
            antialias = curve.opts["antialias"]
            painter.setRenderHint(painter.RenderHint.Antialiasing, antialias)
            painter.setPen(pen)
            ds = curve.downsample_factor(vx1 - vx0, pixels)
            if not curve.segmented():
                painter.drawPath(curve.getPath(ds))
            elif raster and pen.isCosmetic():  # a cosmetic pen's width is in device pixels: the same line
                painter.setWorldTransform(QtGui.QTransform())
                painter.drawLines(*curve.device_segments(ds, m))
                painter.setWorldTransform(m)
            else:
                painter.drawLines(*curve.segments(ds))
        self._paint_dots(painter)

    def _paint_dots(self, painter) -> None:
        """Every curve's dots, in page pixels (their size does not scale with the axes), antialiased."""
        dotted = [c for c in self.shown() if c.dots is not None and len(c.dots[0])]
        if not dotted:
            return
        m = painter.transform()  # data -> page: (x, y) -> (m11 x + m21 y + dx, m12 x + m22 y + dy)
        radius = DOT_SIZE / 2
        painter.save()
        try:
            painter.resetTransform()
            painter.setRenderHint(painter.RenderHint.Antialiasing, True)
            for curve in dotted:
                x, y, color = curve.dots
                px = m.m11() * x + m.m21() * y + m.dx()  # (m,)
                py = m.m12() * x + m.m22() * y + m.dy()  # (m,)
                painter.setPen(QtGui.QPen(color, 1.0))
                painter.setBrush(QtGui.QBrush(color))
                for u, v in zip(px.tolist(), py.tolist()):
                    painter.drawEllipse(QtCore.QPointF(u, v), radius, radius)
        finally:
            painter.restore()


def _segmented(pen, antialias: bool) -> bool:
    """Whether PlotCurveItem would draw this pen as line segments (its "auto" segmentedLineMode): faster, and
    what the live picture looked like."""
    return (
        pen.widthF() > 1.0
        and pen.style() == QtCore.Qt.PenStyle.SolidLine
        and pen.isSolid()
        and pen.color().alphaF() == 1.0
        and not antialias
    )


def drawn_curves(plot: pg.PlotItem):
    """(x, y) of every visible curve in a plot: the CurvePaths' and any PlotDataItem's (hover readouts)."""
    paths = getattr(plot, "_gradscope_paths", None)
    for curve in paths.shown() if paths is not None else []:
        yield curve.xData, curve.yData
    for item in plot.listDataItems():
        if item.isVisible():
            x, y = item.getData()
            if x is not None and len(x):
                yield x, y
