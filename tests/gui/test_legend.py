"""The side legend of many runs: laid out once, and placed as pyqtgraph's entry-by-entry layout placed it."""

import pyqtgraph as pg

from gradscope.gui.plotting import Legend
from gradscope.gui.rendering import settle


def _entries(n):
    return [(f"run {i}", "#1f77b4", "solid") for i in range(n)]


def _figure(qtbot):
    widget = pg.GraphicsLayoutWidget()
    qtbot.addWidget(widget)
    widget.resize(1400, 800)
    widget.ci.addPlot(row=0, col=0)
    return widget, Legend(widget.ci, 0, 1)


def _placement(widget, legend):
    settle(widget)  # as a figure is laid out before it is drawn
    rows = [legend.item.layout.itemAt(r, 1).geometry().y() for r in range(legend.item.layout.rowCount())]
    return legend.item.geometry(), rows


def test_a_legend_of_many_runs_is_laid_out_once_where_entry_by_entry_put_it(qtbot, monkeypatch):
    before_widget, before = _figure(qtbot)
    for label, _, _ in _entries(40):  # how Legend.set added them before: a layout after every entry
        before.item.addItem(pg.PlotDataItem(), label)
    widget, legend = _figure(qtbot)
    layouts = []
    original = type(legend.item).updateSize

    def counting(item):
        layouts.append(item.size is None)  # a layout that does work (it returns at once while a size is fixed)
        return original(item)

    monkeypatch.setattr(type(legend.item), "updateSize", counting)
    legend.set(_entries(40))
    assert sum(layouts) == 1  # entry by entry: 41 (one per entry, and the clear)
    assert legend.item.size is None  # not left fixed: a later change lays it out again
    assert legend.labels == [f"run {i}" for i in range(40)] and len(legend.item.items) == 40
    monkeypatch.undo()
    geometry, rows = _placement(widget, legend)
    assert (geometry, rows) == _placement(before_widget, before)
    assert geometry.height() > 0 and rows == sorted(rows) and len(set(rows)) == 40
    legend.set(_entries(3))  # fewer entries: a smaller legend
    assert len(legend.item.items) == 3 and 0 < _placement(widget, legend)[0].height() < geometry.height()


def test_a_legend_of_a_thousand_runs_names_the_first_and_counts_the_rest_keeping_every_style_entry(qtbot):
    from gradscope.gui.plotting import MAX_RUN_ENTRIES, STYLE_GREY

    widget, legend = _figure(qtbot)
    styles = [("mean field (iteration 0)", STYLE_GREY, "dash"), ("Pascanu bound", STYLE_GREY, "dot")]
    legend.set(_entries(1000) + styles)
    shown = [label.text for _, label in legend.item.items]
    assert shown[: MAX_RUN_ENTRIES - 1] == [f"run {i}" for i in range(MAX_RUN_ENTRIES - 1)]
    assert shown[MAX_RUN_ENTRIES - 1] == f"… and {1000 - MAX_RUN_ENTRIES + 1} more runs"
    assert shown[MAX_RUN_ENTRIES:] == [label for label, _, _ in styles] and len(shown) == MAX_RUN_ENTRIES + 2
    assert legend.labels[:2] == ["run 0", "run 1"] and len(legend.labels) == 1002  # what it was asked to explain
    # the legend no longer takes the page: narrower than the plot beside it
    geometry, _ = _placement(widget, legend)
    assert geometry.width() < widget.width() / 2
    legend.set(_entries(MAX_RUN_ENTRIES))  # up to the limit every run is named
    assert [label.text for _, label in legend.item.items] == [f"run {i}" for i in range(MAX_RUN_ENTRIES)]
