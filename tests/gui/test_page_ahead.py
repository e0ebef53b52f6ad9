"""Waterfall pages drawn while the runs compute (gui/page_ahead.py): the export keeps exactly the pages that are
its own, byte for byte what it would have drawn; a page the plan contradicts, and every page a killed worker
did not finish, is drawn again by the export; ``gradscope run`` exports the same files with or without it."""

import time

import pytest

from gradscope import cli
from gradscope.gui import figures, page_ahead, page_pool
from gradscope.trace import Trace

from .conftest import make_trace
from .test_page_pool import many_runs


def results_of(runs):
    return [run.result for run in runs]


def export_pages(results, folder, ready=None, drawn_here=None):
    """The figures of ``results`` rendered into ``folder``; ``drawn_here`` collects the stems drawn again."""
    runs = figures.run_data_from_results(results)
    if drawn_here is not None:
        real = figures.figure_pages

        def spy(runs, size=figures.VIEW_SIZE, plan=None):
            for stem, widget, figure in real(runs, size, plan):
                drawn_here.append(stem)
                yield stem, widget, figure

        figures.figure_pages = spy
    try:
        return figures.render_figures(runs, folder, title="ahead", durable=False, ready=ready)
    finally:
        if drawn_here is not None:
            figures.figure_pages = real


def draw_ahead(tmp_path, results, *, kill_after=None):
    """Every result handed to a PagesAhead as its run ends; returns (ready pages moved into plots/, plots/).
    ``kill_after``: once that many pages are drawn, the worker is killed and the other runs end after."""
    ahead = page_ahead.PagesAhead(tmp_path / "recording" / "plots", [r.name for r in results])
    for index, result in enumerate(results):
        ahead.add(result)
        if kill_after is not None and index == 1 + kill_after:
            wait_for(ahead, kill_after)
            ahead.process.kill()  # the pages drawn so far are whole: each is answered before the next is sent
    if kill_after is None:
        wait_for(ahead, len(results) - 2)  # the export comes after the worker drew every page queued
    plots = tmp_path / "ahead" / "plots"
    plots.mkdir(parents=True)
    ready = ahead.move_into(plots)
    assert ahead.process is None or ahead.process.returncode is not None  # no worker outlives the export
    return ready, plots


def wait_for(ahead, count: int) -> None:
    """Until ``count`` pages are drawn (a worker's start takes ~1.5 s: the runs here end at once)."""
    deadline = time.monotonic() + 120
    while len(ahead.drawn) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def assert_same_files(exported, here):
    assert sorted(p.name for p in exported) == sorted(p.name for p in here)
    folder = exported[0].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in here)  # nothing else left
    for path in here:
        assert (folder / path.name).read_bytes() == path.read_bytes(), path.name


def test_pages_drawn_ahead_are_kept_and_are_the_bytes_the_export_draws(tmp_path, qapp):
    results = results_of(many_runs(count=6))
    here = export_pages(results, tmp_path / "here")
    ready, plots = draw_ahead(tmp_path, results)
    # the composite's two waterfalls are left to the export; the other four were drawn ahead
    assert sorted(ready) == [f"waterfall_run_{i}" for i in range(2, 6)]
    drawn_here: list[str] = []
    exported = export_pages(results, plots, ready=ready, drawn_here=drawn_here)
    assert not [stem for stem in drawn_here if stem in ready]  # kept, not drawn again
    assert_same_files(exported, here)


def test_a_page_the_plan_contradicts_is_removed_and_drawn_again(tmp_path, qapp):
    results = results_of(many_runs(count=6))
    results[1].trace = Trace()  # run 1 has no data: every later waterfall moves one place up in the plan
    results[5].trace = make_trace(T=10, K=3)  # and run 5 has fewer rows than the page drawn of it showed
    ready, plots = draw_ahead(tmp_path, results_of(many_runs(count=6)))
    assert len(ready) == 4
    here = export_pages(results, tmp_path / "here")
    drawn_here: list[str] = []
    exported = export_pages(results, plots, ready=ready, drawn_here=drawn_here)
    assert sorted(s for s in drawn_here if s.startswith("waterfall_")) == [
        f"waterfall_run_{i}" for i in (0, 2, 3, 4, 5)
    ]
    assert "waterfall_run_1" not in {p.stem for p in exported}  # its page drawn ahead is not left behind
    assert_same_files(exported, here)


def test_a_killed_worker_leaves_the_pages_it_did_not_draw_to_the_export(tmp_path, qapp):
    results = results_of(many_runs(count=6))
    ready, plots = draw_ahead(tmp_path, results, kill_after=2)
    assert sorted(ready) == ["waterfall_run_2", "waterfall_run_3"]
    here = export_pages(results, tmp_path / "here")
    assert_same_files(export_pages(results, plots, ready=ready), here)


SMALL_MANY = """
schema_version = 1
[experiment]
name = "many"
seed = 3
[defaults]
hidden_size = 8
activation = "tanh"
[defaults.task]
name = "probe"
seq_len = 6
batch_size = 2
input_size = 3
output_size = 2
[defaults.train]
iterations = 2
""" + "".join(f'[[runs]]\nname = "r{i}"\nseed = {i}\n' for i in range(5))


@pytest.mark.skipif(page_pool.workers() < 2, reason="pages are drawn ahead only with a core to spare")
def test_gradscope_run_exports_the_same_figures_with_pages_drawn_ahead(tmp_path, qapp, monkeypatch):
    path = tmp_path / "many.toml"
    path.write_text(SMALL_MANY)
    assert cli.main(["run", str(path), "--out", str(tmp_path / "plain"), "--backend", "numpy"]) == 0
    monkeypatch.setattr(page_pool, "MIN_PAGES", 1)
    started = []
    real_add, real_move = page_ahead.PagesAhead.add, page_ahead.PagesAhead.move_into
    monkeypatch.setattr(page_ahead.PagesAhead, "add", lambda self, r: (started.append(self), real_add(self, r)))
    monkeypatch.setattr(page_ahead.PagesAhead, "move_into", lambda self, d: (wait_for(self, 3), real_move(self, d))[1])
    assert cli.main(["run", str(path), "--out", str(tmp_path / "ahead"), "--backend", "numpy"]) == 0
    ahead = started[0]
    assert sorted(ahead.drawn) == ["waterfall_r2", "waterfall_r3", "waterfall_r4"]  # the runs ended one by one
    assert ahead.process.returncode == 0
    plain = sorted((tmp_path / "plain" / "plots").iterdir())
    assert [p.name for p in sorted((tmp_path / "ahead" / "plots").iterdir())] == [p.name for p in plain]
    for file in plain:
        assert (tmp_path / "ahead" / "plots" / file.name).read_bytes() == file.read_bytes(), file.name
    assert not (tmp_path / "ahead" / "recording").exists()  # the pages went with the export, the recording too
