"""A local worker publishes its point's export without waiting for the disk; the sweep's main process flushes
the file system (one syncfs, files.sync_tree) before any row names those exports, so a row still always has
its folder on disk.  A flush that fails writes no row for the points it covered, and --resume runs them again
to the same rows (benchmarks/bench_sweep.py --profile measures what the moved wait buys)."""

import csv
import errno
from concurrent.futures import Future
from pathlib import Path

import pytest

from gradscope import config, io as gio
from gradscope.config import sweep_points
from gradscope.sweep import LocalPool, compute_point, pools, run_sweep, runner

SWEEP = """
schema_version = 1
[experiment]
name = "flush"
[defaults]
hidden_size = 8
[defaults.task]
seq_len = 6
batch_size = 2
input_size = 2
output_size = 2
[defaults.train]
iterations = 1
[[runs]]
name = "relu"
[sweep]
"init.recurrent_scale" = [1.0, 2.0, 3.0]
seeds = [0, 1]
"""


def experiment(tmp_path):
    path = tmp_path / "flush.toml"
    path.write_text(SWEEP)
    return config.load(path)


def table(out: Path) -> list[list[str]]:
    with open(out / "sweep.csv", newline="") as f:
        return [[v for k, v in r.items() if k != "wall_seconds"] for r in csv.DictReader(f)]


class InProcessPool:
    """LocalPool's submit, run here (so the test sees every call): each point exported as a local worker does."""

    slots = 2
    where = "this process"

    def batch(self, queue) -> int:
        return 1

    def submit(self, point, backend, keep, export=None) -> Future:
        future: Future = Future()
        future.set_result(compute_point(point.index, point.run, point.seed, backend, keep, export=export, sync=False))
        return future

    def stop(self):
        pass

    def close(self):
        pass


def test_a_worker_publishes_unflushed_only_when_told(tmp_path, monkeypatch):
    exp = experiment(tmp_path)
    point = sweep_points(exp)[0]
    single = exp.model_copy(update={"runs": [point.run], "sweep": None})
    synced = []
    monkeypatch.setattr(gio, "sync_tree", lambda path: synced.append(Path(path)))
    told = compute_point(point.index, point.run, point.seed, export=(tmp_path / "a", single), sync=False)
    assert told.exported and not told.flushed and synced == []
    assert (tmp_path / "a" / "summary.json").exists()  # published all the same
    default = compute_point(point.index, point.run, point.seed, export=(tmp_path / "b", single))
    assert default.exported and default.flushed and len(synced) == 1  # the Dask worker's way: flushed by itself
    assert synced[0].parent == tmp_path and synced[0].name.startswith(".b.tmp-")  # before the rename


def test_the_local_pools_workers_leave_the_flush_to_the_main_process(tmp_path):
    exp = experiment(tmp_path)
    point = sweep_points(exp)[1]
    single = exp.model_copy(update={"runs": [point.run], "sweep": None})
    pool = LocalPool(1)
    try:
        outcome = pool.submit(point, "numba", True, (tmp_path / "p", single)).result()
    finally:
        pool.close()
    assert outcome.exported and not outcome.flushed


def test_every_row_of_an_unflushed_export_comes_after_a_flush_of_the_points(tmp_path, monkeypatch):
    exp = experiment(tmp_path)
    out = tmp_path / "out"
    events: list[tuple] = []
    real_sync, real_write = runner.sync_tree, runner.write_table

    def sync(path):
        events.append(("sync", Path(path), sorted(p.name for p in Path(path).iterdir() if not p.name.startswith("."))))
        real_sync(path)

    def write(path, header, rows):
        events.append(("rows", len(rows)))
        real_write(path, header, rows)

    monkeypatch.setattr(runner, "sync_tree", sync)
    monkeypatch.setattr(runner, "write_table", write)
    summary = run_sweep(exp, out, pool=InProcessPool())
    assert summary.progress.done == 6 and not summary.errors
    flushed: set[str] = set()
    for event in events:
        if event[0] == "sync":
            assert event[1] == out / "points"
            flushed |= set(event[2])
        else:  # every point with a row so far had its export on disk before this rewrite
            assert event[1] <= len(flushed)
    assert flushed == {f"{i:04d}" for i in range(6)} and len(table(out)) == 6


def test_a_failing_flush_writes_no_row_for_its_points_and_resume_runs_them_again(tmp_path, monkeypatch):
    exp = experiment(tmp_path)
    reference = tmp_path / "reference"
    run_sweep(exp, reference, workers=1)
    out = tmp_path / "out"
    calls = []

    def failing(path):
        calls.append(path)
        if len(calls) == 2:  # the second batch's flush: a disk error
            raise OSError(errno.EIO, f"{path}: Input/output error")

    monkeypatch.setattr(runner, "sync_tree", failing)
    with pytest.raises(OSError, match="Input/output error"):
        run_sweep(exp, out, pool=InProcessPool())
    kept = table(out)
    assert 0 < len(kept) < 6  # the first batch's rows only: none for the points the failed flush covered
    monkeypatch.setattr(runner, "sync_tree", gio.sync_tree)
    summary = run_sweep(exp, out, pool=InProcessPool(), resume=True)
    assert summary.progress.resumed == len(kept) and summary.progress.done == 6
    assert table(out) == table(reference)


def test_a_dask_worker_leaves_the_flush_only_on_this_kernel_and_file_system(tmp_path, monkeypatch):
    exp = experiment(tmp_path)
    point = sweep_points(exp)[2]
    single = exp.model_copy(update={"runs": [point.run], "sweep": None})
    here = (pools.boot_id(), (tmp_path).stat().st_dev)  # what DaskPool._probe sends: this machine, this folder
    assert here[0] is not None  # Linux: the tests run where a local Dask worker gets the main process's flush
    folder = tmp_path / "points" / "0002"
    assert pools.flushes_here(*here, folder)
    assert not pools.flushes_here("another-kernel", here[1], folder)  # another host
    assert not pools.flushes_here(here[0], here[1] + 1, folder)  # another file system on this host
    synced = []
    monkeypatch.setattr(gio, "sync_tree", lambda path: synced.append(path))
    same = compute_point(point.index, point.run, point.seed, export=(folder, single), flusher=here)
    assert same.exported and not same.flushed and synced == []
    other = compute_point(point.index, point.run, point.seed, export=(folder, single), flusher=("x", here[1]))
    assert other.exported and other.flushed and len(synced) == 1
