"""One CurvePaths item per plot paints every curve (gui/curves.py): what it holds, draws, bounds and thins."""

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui

from gradscope.gui import plotting
from gradscope.gui.curves import CurvePaths
from gradscope.gui.model import RunData
from gradscope.gui.views.base import CurveSet
from gradscope.gui.views.profile import ProfileView

from .conftest import make_trace

COLORS = ("#0072B2", "#D55E00", "#009E73")


def _render(widget_item, size=(900, 700)) -> np.ndarray:
    """(h, w, 3) pixels of a scene item rendered the way the screen and PNG export render it."""
    scene = widget_item.scene()
    image = QtGui.QImage(*size, QtGui.QImage.Format.Format_RGB32)
    image.fill(QtGui.QColor("white"))
    painter = QtGui.QPainter(image)
    scene.render(painter, QtCore.QRectF(0, 0, *size), widget_item.sceneBoundingRect())
    painter.end()
    bits = image.constBits()
    bits.setsize(image.sizeInBytes())
    bgra = np.frombuffer(bits, np.uint8).reshape(size[1], image.bytesPerLine() // 4, 4)
    return bgra[:, : size[0], 2::-1].copy()  # RGB, owned: the image goes when this returns


def _pixels_of(rgb: np.ndarray, color: str) -> int:
    c = QtGui.QColor(color)
    return int(np.count_nonzero(np.all(rgb == (c.red(), c.green(), c.blue()), axis=-1)))


def test_a_plot_holds_one_item_that_paints_every_run_in_drawing_order(qtbot):
    v = ProfileView()
    qtbot.addWidget(v)  # closed and deleted by pytest-qt, not by the garbage collector at some later test
    v.resize(900, 700)
    runs = [RunData(k, f"run {k}", c, make_trace(T=40, gain=1.1 + 0.1 * k)) for k, c in enumerate(COLORS)]
    v.redraw(runs)
    for plot in (v.figure.grad_plot, v.figure.state_plot):
        added = plot.getViewBox().addedItems
        assert not [i for i in added if isinstance(i, pg.PlotDataItem)]
        assert len([i for i in added if isinstance(i, CurvePaths)]) == 1
    paths = v.figure.grad_plot._gradscope_paths
    # the gradient curves and the theory lines of both CurveSets, in the order they were first drawn
    drawn = [c for c in paths.curves]
    expected = []
    for curves in (v.figure.grad_curves, v.figure.theory_curves):
        expected += list(curves.items.values())
    assert sorted(map(id, drawn)) == sorted(map(id, expected)) and len(drawn) == len(expected)
    assert drawn[0] is v.figure.grad_curves.items[(0, "grad_h_norm")]
    v.set_live(False)  # the still picture: smooth paths
    rgb = _render(v.figure.grad_plot)
    counts = [_pixels_of(rgb, c) for c in COLORS]
    assert min(counts) > 100, counts  # every run's curve is on screen in its colour
    v.figure.grad_curves.items[(1, "grad_h_norm")].setVisible(False)
    v.figure.theory_curves.retain([])
    rgb = _render(v.figure.grad_plot)
    assert _pixels_of(rgb, COLORS[1]) < counts[1] // 4  # hidden: gone (the legend's sample line remains)


def test_bounds_cover_the_shown_finite_points_only(qapp):
    plot = pg.PlotItem()
    curves = CurveSet(plot)
    curves.set("a", np.arange(5.0), np.array([1.0, np.nan, 3.0, np.inf, 2.0]), plotting.pen("#0072B2"))
    b = curves.set("b", np.arange(10.0, 13.0), np.array([-4.0, 0.0, 9.0]), plotting.pen("#D55E00"))
    paths = plot._gradscope_paths
    assert paths.dataBounds(0) == (0.0, 12.0) and paths.dataBounds(1) == (-4.0, 9.0)
    b.setVisible(False)
    assert paths.dataBounds(0) == (0.0, 4.0) and paths.dataBounds(1) == (1.0, 3.0)
    curves.retain(["b"])
    assert paths.curves == [b] and paths.dataBounds(0) == (None, None)  # b is hidden, a is gone
    assert paths.pixelPadding() == 0.0
    curves.set("b", np.arange(3.0), np.ones(3), plotting.pen("#D55E00"))
    assert paths.pixelPadding() == plotting.pen("#D55E00").widthF() * 0.7072


def test_long_curves_are_thinned_to_each_bins_extremes(qapp):
    plot = pg.PlotItem()
    curves = CurveSet(plot)
    rng = np.random.default_rng(0)
    n = 100_000
    y = rng.standard_normal(n)
    y[12_345] = np.nan
    curve = curves.set("loss", np.arange(n, dtype=np.float64), y, plotting.pen("#0072B2"))
    # pyqtgraph's auto factor: points per pixel over 5, e.g. 100 000 iterations over 800 pixels -> 25
    assert curve.downsample_factor(float(n), 800.0) == 25  # a view 100 000 iterations wide
    assert curve.downsample_factor(float(n - 1), 100_000.0) == 1
    x_thin, y_thin = curve._thinned(25)
    bins = y.reshape(-1, 25)
    assert len(x_thin) == 2 * len(bins)
    np.testing.assert_array_equal(x_thin[0::2], np.arange(0, n, 25))
    ok = ~np.isnan(bins).any(axis=1)
    np.testing.assert_array_equal(y_thin[0::2][ok], bins.max(axis=1)[ok])
    np.testing.assert_array_equal(y_thin[1::2][ok], bins.min(axis=1)[ok])
    assert np.isnan(y_thin[2 * (12_345 // 25)])  # the bin holding the NaN stays a gap
    assert curve.getPath(25).elementCount() < curve.getPath(1).elementCount() // 10


def test_live_curves_drawn_in_device_pixels_land_where_the_transformed_drawing_puts_them(qtbot):
    """While runs stream in, segmented curves are drawn from points mapped to device pixels by CurvePaths
    itself (Curve.device_segments), not through the painter's transform: the same pixels, give or take the
    rounding of a line's ends (26 of ~6,000 pixels).  A pen that says it is not cosmetic takes the transformed
    path: the reference."""

    class NotCosmetic(QtGui.QPen):  # CurvePaths asks Python's isCosmetic; Qt still draws the pen as it is
        def isCosmetic(self):
            return False

    v = ProfileView()
    qtbot.addWidget(v)
    v.resize(900, 700)
    runs = [RunData(k, f"run {k}", c, make_trace(T=40, gain=1.1 + 0.1 * k)) for k, c in enumerate(COLORS)]
    v.redraw(runs)
    v.set_live(True)  # aliased wide pens: drawn as segments
    paths = v.figure.grad_plot._gradscope_paths
    assert all(c.segmented() for c in paths.shown() if c.opts["pen"].style() == QtCore.Qt.PenStyle.SolidLine)
    device = _render(v.figure.grad_plot)
    assert all(c._device is not None for c in paths.shown() if c.segmented())  # the device path was taken
    for curve in paths.shown():
        curve.opts["pen"] = NotCosmetic(curve.opts["pen"])
    paths.update()  # its cached picture is drawn again
    transformed = _render(v.figure.grad_plot)
    for color in COLORS:
        a, b = _pixels_of(device, color), _pixels_of(transformed, color)
        assert b > 200 and abs(a - b) <= 0.03 * b, (color, a, b)
    moved = np.any(device != transformed, axis=-1)  # (h, w): 26 of ~6,000 here; a 2 px shift moves ~8,700
    assert np.count_nonzero(moved) <= 0.01 * sum(_pixels_of(transformed, c) for c in COLORS)
