"""The local pool's dispatch: every worker up before the first point, each point's export written by the
worker that ran it (nothing of its traces pickled back), an export it cannot write handed back, and the
longest points sent first (benchmarks/bench_sweep.py measures what these buy)."""

import numpy as np

from gradscope import config
from gradscope.config import sweep_points
from gradscope.config.sweep import Sweep
from gradscope.experiment import execute_run
from gradscope.io import load_experiment_folder
from gradscope.sweep import LocalPool, compute_point
from gradscope.sweep.runner import longest_first

SMALL = """
schema_version = 1
[experiment]
name = "pool"
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
hidden_size = [8, 32, 16]
seeds = [0, 1]
"""


def small(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text(SMALL)
    return config.load(path)


def single(experiment, point):
    return experiment.model_copy(update={"runs": [point.run], "sweep": None})


def test_every_local_worker_is_up_before_the_first_point():
    """A ProcessPoolExecutor spawns a process only when a task finds none idle: the second worker started on
    the sweep's second point and loaded GradScope while the first computed.  Now all are alive at once."""
    pool = LocalPool(2)
    try:
        processes = list(pool._pool._processes.values())
        assert len(processes) == 2 and all(p.is_alive() for p in processes)
    finally:
        pool.close()


def test_a_worker_writes_its_points_export_and_sends_no_traces_back(tmp_path):
    experiment = small(tmp_path)
    point = sweep_points(experiment)[3]
    folder = tmp_path / "points" / "0003"
    outcome = compute_point(point.index, point.run, point.seed, keep=True, export=(folder, single(experiment, point)))
    assert outcome.exported and outcome.result is None and outcome.measured["status"] == "completed"
    _, (exported,) = load_experiment_folder(folder)
    again = execute_run(point.run, point.seed)  # the same point run here: the export holds its trace's bits
    assert np.array_equal(exported.trace.array("grad_h_norm"), again.trace.array("grad_h_norm"))
    assert exported.run == point.run and exported.seed == point.seed


def test_an_export_the_worker_cannot_write_comes_back_with_the_traces(tmp_path):
    experiment = small(tmp_path)
    point = sweep_points(experiment)[0]
    (tmp_path / "points").write_text("a file where the folder goes")
    outcome = compute_point(
        point.index, point.run, point.seed, keep=True, export=(tmp_path / "points" / "0000", single(experiment, point))
    )
    assert not outcome.exported and outcome.result is not None  # the main process writes it, or says why not
    assert outcome.measured["status"] == "completed"


def test_points_go_out_longest_first_ties_in_the_sweeps_order(tmp_path):
    points = sweep_points(small(tmp_path))  # hidden sizes 8, 8, 32, 32, 16, 16 (seeds 0, 1)
    order = longest_first(points)
    assert [(p.run.hidden_size, p.seed) for p in order] == [(32, 0), (32, 1), (16, 0), (16, 1), (8, 0), (8, 1)]
    one = small(tmp_path).model_copy(update={"sweep": Sweep(keys={"init.recurrent_scale": (1.0, 2.0)})})
    assert [p.index for p in longest_first(sweep_points(one))] == [0, 1]  # equal work: the sweep's order
