"""Many runs' waterfall pages drawn by worker processes (gui/page_pool.py): the same files, byte for byte, as
drawn in the exporting process; a worker's error reaches the caller; no worker outlives the export."""

import multiprocessing

import pyqtgraph as pg
import pytest

from gradscope.gui import figures, page_pool, plotting
from gradscope.gui.model import RunData

from .conftest import make_trace


def many_runs(count=6, T=10):
    kinds = [{"activation": "tanh"}, {"activation": "relu", "gain": 1.3}, {"cell": "lstm", "layers": 2}]
    return [
        RunData(i, f"run {i}", f"#{(40 * i) % 256:02x}72B2", make_trace(T=T, **kinds[i % len(kinds)]))
        for i in range(count)
    ]


def test_pool_pages_are_the_files_drawn_here_byte_for_byte(tmp_path, qapp, monkeypatch):
    runs = many_runs()
    here = figures.render_figures(runs, tmp_path / "here", title="pool")
    monkeypatch.setattr(page_pool, "MIN_PAGES", 1)
    drawn_elsewhere = []
    real_draw = page_pool.PagePool.draw
    monkeypatch.setattr(
        page_pool.PagePool, "draw", lambda self, jobs: (drawn_elsewhere.extend(jobs), real_draw(self, jobs))
    )
    pooled = figures.render_figures(runs, tmp_path / "pool", title="pool")
    # the first two waterfalls (the composite's) are drawn here, the other four by the workers
    assert [stem for _, stem, _ in drawn_elsewhere] == [f"waterfall_run_{i}" for i in range(2, 6)]
    assert sorted(p.name for p in pooled) == sorted(p.name for p in here)
    assert len(here) == 2 * (len(runs) + 5)  # 6 waterfalls, through_time, training, saturation, layers, composite
    for path in here:
        assert (tmp_path / "pool" / path.name).read_bytes() == path.read_bytes(), path.name
    assert not multiprocessing.active_children()  # the pool waited for its workers and ended them


def test_a_worker_error_is_raised_to_the_caller_and_no_worker_is_left(tmp_path, qapp):
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    runs = many_runs(count=2)
    with pytest.raises(OSError), page_pool.PagePool(blocked / "plots", ("png", "svg"), durable=False) as pool:
        pool.draw([(5, "waterfall_run_0", runs[0]), (6, "waterfall_run_1", runs[1])])
        pool.written()
    assert not multiprocessing.active_children()


def test_few_pages_stay_in_this_process():
    assert not page_pool.worth_pool(page_pool.MIN_PAGES - 1)
    assert page_pool.worth_pool(10 * page_pool.MIN_PAGES) == (multiprocessing.cpu_count() > 1)


def test_adding_curves_never_walks_every_curve_unless_a_curve_has_averaging_parameters(qapp, monkeypatch):
    walks = []
    monkeypatch.setattr(pg.PlotItem, "updateParamList", lambda self: walks.append(len(self.curves)))
    layout = pg.GraphicsLayout()
    plot = plotting.make_plot(layout, 0, 0, title="t", x_label="x", y_label="y")
    assert isinstance(plot, pg.PlotItem)
    for k in range(5):
        plot.addItem(pg.PlotDataItem([0, 1], [k, k]))
    assert walks == []  # pyqtgraph walks all curves per added curve: N runs' curves cost O(N^2)
    plot.addItem(pg.PlotDataItem([0, 1], [0, 2]), params={"lr": 0.1})
    assert walks == [6]  # a plot given averaging parameters keeps pyqtgraph's "Average" list
