"""Many runs' waterfall pages drawn by worker processes (gui/page_pool.py): the same files, byte for byte, as
drawn in the exporting process; a worker's error reaches the caller; no worker outlives the export; a script
without a main guard is not run again by the workers."""

import os
import subprocess
import sys
import textwrap

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
    pools = []
    real_draw = page_pool.PagePool.draw

    def draw(self, jobs):
        drawn_elsewhere.extend(jobs)
        pools.append(self)
        real_draw(self, jobs)

    monkeypatch.setattr(page_pool.PagePool, "draw", draw)
    pooled = figures.render_figures(runs, tmp_path / "pool", title="pool")
    # the first two waterfalls (the composite's) are drawn here, the other four by the workers
    assert [stem for _, stem, _ in drawn_elsewhere] == [f"waterfall_run_{i}" for i in range(2, 6)]
    assert sorted(p.name for p in pooled) == sorted(p.name for p in here)
    assert len(here) == 2 * (len(runs) + 5)  # 6 waterfalls, through_time, training, saturation, layers, composite
    for path in here:
        assert (tmp_path / "pool" / path.name).read_bytes() == path.read_bytes(), path.name
    workers = [process for process, _, _ in pools[0]._workers]
    assert len(workers) == page_pool.workers()
    assert all(process.returncode == 0 for process in workers)  # the pool waited for its workers


def test_the_workers_draw_in_the_exporting_processs_font(tmp_path, qapp, monkeypatch):
    """The app raises its font to 10 pt (app.make_app); a worker must draw its pages in that font too."""
    from PyQt6 import QtWidgets

    font = QtWidgets.QApplication.font()
    bigger = QtWidgets.QApplication.font()
    bigger.setPointSize(font.pointSize() + 4)
    QtWidgets.QApplication.setFont(bigger)
    try:
        test_pool_pages_are_the_files_drawn_here_byte_for_byte(tmp_path, qapp, monkeypatch)
    finally:
        QtWidgets.QApplication.setFont(font)


def test_a_worker_error_is_raised_to_the_caller_and_no_worker_is_left(tmp_path, qapp):
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    runs = many_runs(count=2)
    pool = page_pool.PagePool(blocked / "plots", ("png",), durable=False)
    with pytest.raises(NotADirectoryError) as raised, pool:
        pool.draw([(5, "waterfall_run_0", runs[0]), (6, "waterfall_run_1", runs[1])])
        pool.written()  # the worker's own exception, raised here
    assert all(process.returncode is not None for process, _, _ in pool._workers)
    notes = "".join(getattr(raised.value, "__notes__", []))
    assert "in figure worker" in notes and "write_atomically" in notes  # where it failed, in the worker


def test_a_killed_worker_is_a_clear_error_and_the_pool_waits_for_the_others(tmp_path, qapp):
    with pytest.raises(page_pool.PageWorkerError, match="exited with code -9"):
        with page_pool.PagePool(tmp_path, ("png",), durable=False) as pool:
            pool.draw([(n, f"waterfall_{n}", run) for n, run in enumerate(many_runs(count=4))])
            pool._workers[0][0].kill()
            pool.written()
    assert all(process.returncode is not None for process, _, _ in pool._workers)


def test_workers_never_run_the_callers_script_again(tmp_path):
    """A user's script without `if __name__ == "__main__"`: a multiprocessing spawn would import it again in
    every worker (and run its experiment again); the workers are `python -m gradscope.gui.page_pool`."""
    marks = tmp_path / "marks"
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(f"""
            import os
            from gradscope.gui import figures, page_pool
            from tests.gui.test_page_pool import many_runs
            with open({str(marks)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            page_pool.MIN_PAGES = 1
            figures.ensure_app()
            figures.render_figures(many_runs(count=5), {str(tmp_path / "plots")!r}, formats=("png",))
        """)
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(marks.read_text().split()) == 1  # the script ran once: in its own process only
    assert len(list((tmp_path / "plots").glob("waterfall_*.png"))) == 5


def test_few_pages_stay_in_this_process():
    assert not page_pool.worth_pool(page_pool.MIN_PAGES - 1)
    assert page_pool.worth_pool(10 * page_pool.MIN_PAGES) == (page_pool.workers() > 1)


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
