"""A Dask sweep sends several short points per task (DaskPool.batch: within BATCH_FLOPS of estimated work and
a shrinking share of the points left), the rows and counts are those of one point per task; and a Dask worker's
points run with glibc's ceilings for its heap thresholds (sweep/heap.py), the worker's own settings back once
they are done, as a local worker's do for good (benchmarks/bench_sweep.py and benchmarks/dask_overhead.py
measure what these buy)."""

import os
import subprocess
import sys
import threading
from concurrent.futures import Future

import pytest

from gradscope import config
from gradscope.config import sweep_points
from gradscope.config.sweep import Sweep
from gradscope.experiment import estimated_flops
from gradscope.sweep import compute_point, heap, pools, run_sweep
from gradscope.sweep.pools import BATCH_FLOPS, BATCH_SHARE, DaskPool, compute_points
from gradscope.sweep.runner import longest_first

SWEEP = """
schema_version = 1
[experiment]
name = "batch"
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
"init.recurrent_scale" = [1.0, 1.5, 2.0, 2.5, 3.0]
seeds = [0, 1, 2, 3]
"""


def experiment(tmp_path):
    path = tmp_path / "batch.toml"
    path.write_text(SWEEP)
    return config.load(path)


def pool_of(slots: int) -> DaskPool:
    pool = DaskPool.__new__(DaskPool)  # batch() needs the slots only, no cluster
    pool.slots = slots
    return pool


def batches(pool, points) -> list[list]:
    queue, sent = list(reversed(longest_first(points))), []
    while queue:
        sent.append([queue.pop() for _ in range(pool.batch(queue))])
    return sent


def test_short_points_go_several_a_task_fewer_as_the_sweep_ends(tmp_path):
    points = sweep_points(experiment(tmp_path))  # 20 tiny points
    sent = batches(pool_of(2), points)
    assert [p.index for b in sent for p in b] == [p.index for p in longest_first(points)]  # each once, in order
    sizes = [len(b) for b in sent]
    assert sizes[0] == -(-20 // (BATCH_SHARE * 2)) > 1  # a share of what is left
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1  # shrinking to single points at the end
    assert len(sent) < len(points)


def test_a_long_point_goes_alone_and_a_batch_stays_within_its_work(tmp_path):
    exp = experiment(tmp_path)
    wide = exp.model_copy(update={"sweep": Sweep(keys={"hidden_size": (256,)}, seeds=(0,))})
    per_iteration = estimated_flops(sweep_points(wide)[0].run)  # of one iteration
    keys = {"hidden_size": (256,), "train.iterations": (int(BATCH_FLOPS // per_iteration) + 1,)}
    big = exp.model_copy(update={"sweep": Sweep(keys=keys, seeds=tuple(range(40)))})  # each beyond a batch's work
    assert estimated_flops(sweep_points(big)[0].run) > BATCH_FLOPS
    sent = batches(pool_of(2), sweep_points(big))
    assert all(len(b) == 1 for b in sent)
    for b in batches(pool_of(1), sweep_points(exp)):
        assert len(b) == 1 or sum(estimated_flops(p.run) for p in b) <= BATCH_FLOPS


class BatchingPool:
    """DaskPool's batching and its relay, the task run here: a Future per point, all set when the task ends."""

    slots = 2
    where = "this process, in batches"
    batch = DaskPool.batch

    def __init__(self):
        self.tasks: list[int] = []

    def submit(self, point, backend, keep, export=None):
        return self.submit_batch([point], backend, keep, [export])[0]

    def submit_batch(self, points, backend, keep, exports):
        self.tasks.append(len(points))
        outcomes = compute_points([(p.index, p.run, p.seed, e) for p, e in zip(points, exports)], backend, keep)
        futures = [Future() for _ in points]
        for future, outcome in zip(futures, outcomes):
            future.set_result(outcome)
        return futures

    def stop(self):
        pass

    def close(self):
        pass


def test_a_batched_sweep_has_the_rows_and_counts_of_one_point_a_task(tmp_path):
    exp = experiment(tmp_path)
    single = run_sweep(exp, tmp_path / "one", workers=1, traces=False)
    seen = []
    pool = BatchingPool()
    batched = run_sweep(exp, tmp_path / "batched", pool=pool, traces=False, on_progress=lambda p: seen.append(p.done))
    assert max(pool.tasks) > 1 and sum(pool.tasks) == 20
    assert batched.progress.done == single.progress.done == 20 and not batched.errors
    assert seen == sorted(seen) and seen[-1] == 20
    strip = [line.rsplit(",", 1)[0] for line in (tmp_path / "one" / "sweep.csv").read_text().splitlines()]
    assert [line.rsplit(",", 1)[0] for line in (tmp_path / "batched" / "sweep.csv").read_text().splitlines()] == strip


def test_each_point_of_a_task_runs_the_function_given(tmp_path):
    exp = experiment(tmp_path)
    called = []

    def each(index, run, seed, backend, keep, **how):
        called.append(index)
        return compute_point(index, run, seed, backend, keep, **how)

    points = sweep_points(exp)[:3]
    outcomes = compute_points([(p.index, p.run, p.seed, None) for p in points], "numpy", False, each=each)
    assert called == [0, 1, 2] and [o.index for o in outcomes] == [0, 1, 2]
    assert pools.compute_point is compute_point


class FakeLibc:
    def __init__(self):
        self.calls: list[tuple] = []

    def mallopt(self, what, value):
        self.calls.append(("mallopt", what, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


def test_the_heap_is_roomy_while_points_run_and_the_workers_own_after_the_last(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_libc", lambda: libc)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a Dask nanny gives its worker
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    inside = threading.Event()
    release = threading.Event()

    def other_thread():
        with heap.roomy_heap():
            inside.set()
            release.wait(10)

    with heap.roomy_heap():
        roomy = [
            ("mallopt", heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD),
            ("mallopt", heap.M_TRIM_THRESHOLD, heap.TRIM_THRESHOLD),
        ]
        assert libc.calls == roomy
        thread = threading.Thread(target=other_thread)
        thread.start()
        assert inside.wait(10)
    assert libc.calls == roomy  # a point of another thread still runs: nothing put back yet
    release.set()
    thread.join(10)
    assert libc.calls[2:] == [
        ("mallopt", heap.M_TRIM_THRESHOLD, 65536),
        ("mallopt", heap.M_MMAP_THRESHOLD, heap.DEFAULT_MMAP_THRESHOLD),
        ("trim", 0),
    ]


@pytest.mark.parametrize("env", [{}, {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}])
def test_the_heap_is_left_alone_where_glibc_slides_its_thresholds_or_they_are_high(monkeypatch, env):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_libc", lambda: libc)
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with heap.roomy_heap():
        pass
    assert libc.calls == []


FAULTS = """
import resource, numpy as np
from gradscope.sweep.heap import roomy_heap
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        a = np.ones(1 << 18)  # 2 MiB: above a fixed 128 KiB mmap threshold
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
fixed = faults()
with roomy_heap():
    roomy = faults()
print(fixed, roomy)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and Linux's fault counts")
def test_a_point_in_a_dask_like_worker_does_not_fault_in_fresh_pages_for_every_block(tmp_path):
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")  # as distributed.nanny.pre-spawn-environ sets it
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True).stdout
    fixed, roomy = (int(v) for v in out.split())
    assert fixed > 100 * 400  # each 2 MiB block a fresh mmap: ~512 faults each
    assert roomy < fixed / 10  # from the heap, reused


TRIMMED = """
import resource, sys, numpy as np
from gradscope.sweep.heap import keep_roomy
if sys.argv[1] == "roomy":
    keep_roomy()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        blocks = [np.ones(1 << 17) for _ in range(8)]  # 8 x 1 MiB, freed together: more than glibc keeps
        del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()  # glibc's thresholds slide up to these blocks first
print(faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and Linux's fault counts")
def test_a_local_workers_heap_keeps_what_a_point_frees(tmp_path):
    counts = {}
    for how in ("default", "roomy"):
        run = subprocess.run([sys.executable, "-c", TRIMMED, how], capture_output=True, text=True, check=True)
        counts[how] = int(run.stdout)
    assert counts["default"] > 20 * 8 * 128  # glibc trims the freed 8 MiB and faults it in again each time
    assert counts["roomy"] < counts["default"] / 10
