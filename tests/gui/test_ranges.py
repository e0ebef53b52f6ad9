"""Every plot's range covers what it draws, in the live views and in the exported figures, for one recorded
iteration, a few, thousands, RNN-only, LSTM-only and mixed experiments, and a diverged run."""

import numpy as np
import pyqtgraph as pg
import pytest

from gradscope.gui import figures
from gradscope.gui.curves import CurvePaths
from gradscope.gui.model import RunData
from gradscope.gui.views import VIEWS

from .conftest import make_trace


def _diverged(k, m):
    if k == 2:
        m["grad_h_norm"][:, :4] = np.nan
        m["grad_h_norm"][:, 4] = np.inf
        m["h_norm"][:, 7:] = np.inf


SCENARIOS = {
    # the lecture demo's shape: one recorded iteration (iterations = 0) of three ReLU RNNs
    "rnn, 1 iteration": lambda: [
        RunData(i, f"relu {i}", c, make_trace(T=100, K=1, gain=g))
        for i, (c, g) in enumerate((("#0072B2", 1.2), ("#D55E00", 1.0), ("#009E73", 0.9)))
    ],
    "lstm, 3 iterations": lambda: [
        RunData(0, "lstm", "#0072B2", make_trace(cell="lstm", T=30, K=3)),
        RunData(1, "lstm f=1", "#D55E00", make_trace(cell="lstm", T=30, K=3, gain=0.9)),
    ],
    "mixed, 1500 iterations": lambda: [
        RunData(0, "lstm", "#0072B2", make_trace(cell="lstm", T=20, K=1500)),
        RunData(1, "deep tanh", "#D55E00", make_trace(activation="tanh", layers=3, T=20, K=1500)),
    ],
    "diverged": lambda: [
        RunData(0, "relu 3/n", "#0072B2", make_trace(T=16, K=3, tweak=_diverged)),
        RunData(1, "sigmoid", "#D55E00", make_trace(activation="sigmoid", T=16, K=3)),
    ],
}


def drawn_extent(item):
    """((x0, x1), (y0, y1)) of the finite data an item draws, in its view's coordinates, or None."""
    if isinstance(item, CurvePaths):  # every curve of the plot
        (x0, x1), (y0, y1) = item.dataBounds(0), item.dataBounds(1)
        return None if x0 is None else ((x0, x1), (y0, y1))
    if isinstance(item, pg.PlotDataItem):
        x, y = item.xData, item.yData
    elif isinstance(item, pg.ScatterPlotItem):
        x, y = item.data["x"], item.data["y"]
    elif isinstance(item, pg.ImageItem):
        if item.image is None:
            return None
        rect = item.mapRectToParent(item.boundingRect())
        return (rect.left(), rect.right()), (rect.top(), rect.bottom())
    else:
        return None
    if x is None or len(x) == 0:
        return None
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    return (x[ok].min(), x[ok].max()), (y[ok].min(), y[ok].max())


def assert_ranges_cover_the_data(figure, where):
    """Each visible plot's view range holds every visible item's finite data, and the data is not squeezed
    into a corner of a far wider time or iteration axis."""
    checked = 0
    for plot in figure.plots:
        if not plot.isVisible():
            continue
        vb = plot.getViewBox()
        (x0, x1), (y0, y1) = vb.viewRange()
        xs = []
        for item in vb.addedItems:
            extent = drawn_extent(item) if item.isVisible() else None
            if extent is None:
                continue
            (a, b), (c, d) = extent
            eps = 1e-9 * max(1.0, abs(x1 - x0), abs(y1 - y0))
            assert x0 - eps <= a and b <= x1 + eps, (
                f"{where}, {plot.titleLabel.text!r}: data x {a:g}..{b:g} outside the view's x {x0:g}..{x1:g}"
            )
            assert y0 - eps <= c and d <= y1 + eps, (
                f"{where}, {plot.titleLabel.text!r}: data y {c:g}..{d:g} outside the view's y {y0:g}..{y1:g}"
            )
            xs += [a, b]
            checked += 1
        if xs:
            span = max(xs) - min(xs)
            limit = 0.5 * (x1 - x0) if span > 0 else None
            assert (span >= limit) if limit is not None else (x1 - x0 <= 2.0), (
                f"{where}, {plot.titleLabel.text!r}: data x {min(xs):g}..{max(xs):g} squeezed into {x0:g}..{x1:g}"
            )
    assert checked, f"{where}: nothing drawn"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_live_views_cover_their_data_after_refresh(qtbot, scenario):
    runs = SCENARIOS[scenario]()
    for cls in VIEWS:
        if not figures.shows_something(cls.figure_class.name, runs):
            continue  # e.g. the analysis views of runs without analysis: a hint, no data to cover
        view = cls()
        qtbot.addWidget(view)
        view.resize(1200, 700)
        view.show()
        assert view.redraw(runs)
        view.graphics.grab()  # a paint, as on screen: pyqtgraph applies auto-ranges there
        assert_ranges_cover_the_data(view.figure, f"{scenario}: {cls.__name__}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_exported_figures_cover_their_data(qapp, scenario):
    runs = SCENARIOS[scenario]()
    stems = []
    for stem, _widget, figure in figures.figure_pages(runs, size=(1000, 600)):
        assert_ranges_cover_the_data(figure, f"{scenario}: {stem}")  # the state they are rendered in
        stems.append(stem)
    assert "through_time" in stems and "training" in stems
    assert ("layers" in stems) == any(r.layers > 1 for r in runs)
    assert sum(s.startswith("waterfall_") for s in stems) == len(runs)
