"""Running experiments: stopping runs in this process and in worker processes, progress as runs go."""

import threading

import numpy as np
import pytest

from gradscope import config
from gradscope.experiment import estimated_flops, execute_run, run_experiment

EXPERIMENT = """
schema_version = 1
[experiment]
name = "stoppable"
seed = 3
[defaults]
hidden_size = 8
[defaults.task]
name = "adding"
seq_len = 12
batch_size = 2
[defaults.train]
iterations = 4
record_every = 3
[[runs]]
name = "short"
[[runs]]
name = "long"
train.iterations = 100000
[[runs]]
name = "after"
"""


@pytest.fixture(scope="module")
def experiment():
    return config.loads(EXPERIMENT)


class StopAt:
    """on_iteration callback that sets the stop event once run ``index`` has done ``count`` iterations."""

    def __init__(self, index: int, count: int):
        self.index, self.count = index, count
        self.event = threading.Event()
        self.updates = []

    def __call__(self, index, done, total, seconds):
        self.updates.append((index, done, total))
        if index == self.index and done >= self.count:
            self.event.set()


def test_a_stop_in_one_process_keeps_what_was_computed_and_starts_nothing_more(experiment):
    stop = StopAt(index=1, count=7)
    ended = []
    results = run_experiment(
        experiment, backend="numpy", processes=1, stop=stop.event, on_iteration=stop, progress=ended.append
    )
    assert [r.status for r in results] == ["completed", "stopped", "stopped"]
    assert [r.iterations for r in results] == [4, 7, 0]
    assert [r.name for r in ended] == ["short", "long", "after"]  # one report per run
    long = results[1]
    assert list(long.trace.array("iteration")) == [0, 3, 6]  # every recorded row is kept
    assert long.init_params is not None and long.first_batch is not None
    assert results[2].init_params is None and len(results[2].trace) == 0  # never started
    assert [r.loss_kind for r in results] == ["mse"] * 3  # the contract's values, even unstarted
    assert stop.updates[:5] == [(0, 0, 4), (0, 1, 4), (0, 2, 4), (0, 3, 4), (0, 4, 4)]  # (0, 0): it started
    # What was kept is what an uninterrupted run computes over those iterations.
    whole = execute_run(
        experiment.runs[1].model_copy(update={"train": experiment.runs[1].train.model_copy(update={"iterations": 7})}),
        3,
        "numpy",
    )
    for name in whole.trace.names:
        if name in ("spectral_radius", "sigma_max"):  # tracked between iterations (engine.spectra); the
            # uninterrupted 7-iteration run measures its last iteration exactly: equal within the tolerance
            from gradscope.engine.spectra import TOLERANCE

            np.testing.assert_allclose(long.trace.array(name), whole.trace.array(name), rtol=TOLERANCE[name])
        else:
            np.testing.assert_array_equal(long.trace.array(name), whole.trace.array(name))


def test_a_stop_reaches_worker_processes(experiment):
    stop = StopAt(index=1, count=3)
    ended = []
    results = run_experiment(
        experiment, backend="numpy", processes=2, stop=stop.event, on_iteration=stop, progress=ended.append
    )
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["short", "long", "after"]  # the file's order
    assert by_name["short"].status == "completed" and by_name["short"].iterations == 4
    long = by_name["long"]
    assert long.status == "stopped" and 3 <= long.iterations < 100000
    assert len(long.trace) == len(range(0, long.iterations, 3))
    # "after" either ran to its end before the stop or was stopped: never lost, never failed.
    assert by_name["after"].status in ("completed", "stopped")
    assert sorted(r.name for r in ended) == ["after", "long", "short"]
    assert any(index == 1 for index, _, _ in stop.updates)  # progress came back from workers


def test_a_stop_before_a_run_starts_and_a_stop_after_its_last_iteration(experiment):
    stop = threading.Event()
    stop.set()
    result = execute_run(experiment.runs[0], 0, "numpy", stop=stop)
    assert result.status == "stopped" and result.iterations == 0 and result.init_params is None
    late = threading.Event()

    def set_at_the_end(done, total, seconds):
        if done == total:
            late.set()

    finished = execute_run(experiment.runs[0], 0, "numpy", stop=late, on_iteration=set_at_the_end)
    assert finished.status == "completed" and finished.iterations == 4  # nothing was left to stop


def test_estimated_flops_counts_three_passes_of_every_layer():
    """The engine's one FLOP model (engine.pass_flops), checked by hand: every layer and the readout (k = 7)."""
    from gradscope.engine import pass_flops

    run = config.RunConfig.model_validate(
        {
            "cell": "lstm",
            "hidden_size": 10,
            "layers": 2,
            "task": {"seq_len": 5, "batch_size": 3, "input_size": 4, "output_size": 7},
            "train": {"iterations": 2},
        }
    )
    per_step = 2 * 4 * 10 * (4 + 10) + 2 * 4 * 10 * 2 * 10  # layer 0 (n = 4), layer 1 (n = d)
    readout = 2 * 10 * 7  # y = W_yh h + b_y, and its two gradients
    assert estimated_flops(run) == 3 * (per_step + readout) * 5 * 3 * 2
    assert estimated_flops(run) == 2 * pass_flops(run.model_spec(), 5, 3)
    rnn = run.model_copy(update={"cell": "rnn"})  # one block instead of four
    assert estimated_flops(rnn) == 2 * pass_flops(rnn.model_spec(), 5, 3) < estimated_flops(run)


def test_worker_processes_only_for_several_runs_with_enough_work(experiment, monkeypatch):
    import gradscope.experiment as ex

    monkeypatch.setattr(ex.os, "cpu_count", lambda: 2)
    small = list(experiment.runs)  # a few MFLOP
    assert ex.choose_processes(small) == 1
    big = [r.model_copy(update={"train": r.train.model_copy(update={"iterations": 10**9})}) for r in small]
    assert sum(map(estimated_flops, big)) > ex.PARALLEL_MIN_FLOPS
    assert ex.choose_processes(big) == 2  # one per core
    assert ex.choose_processes(big[:1]) == 1  # one run: nothing to share
    assert ex.choose_processes(small, processes=3) == 3 and ex.choose_processes(small[:2], processes=5) == 2


def test_runs_whose_passes_split_into_shards_stay_in_one_process(experiment, monkeypatch):
    """A pass split into batch shards already uses every core: worker processes would only add start-up."""
    import gradscope.experiment as ex
    from gradscope.engine import shards

    monkeypatch.setattr(ex.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(shards, "DEFAULT_SHARDS", 2)
    big = [
        r.model_copy(
            update={
                "train": r.train.model_copy(update={"iterations": 10**9}),
                "hidden_size": 128,
                "task": r.task.model_copy(update={"batch_size": 64, "seq_len": 200}),
            }
        )
        for r in experiment.runs
    ]
    assert all(len(shards.shard_rows(r.model_spec(), 200, 64)) == 2 for r in big)
    assert ex.choose_processes(big) == 1
    monkeypatch.setattr(shards, "DEFAULT_SHARDS", 1)  # a setting that does not split
    assert ex.choose_processes(big) == 2


# ------------------------------------------------------------------------------ fitting this machine's memory
def test_a_run_too_big_for_this_machine_is_refused_before_the_first_iteration(tmp_path):
    """The file is valid (config.load accepts it); run_experiment refuses it before computing anything."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "bad" / "too_big.toml"
    experiment = config.load(path)  # ~4 TB of BPTT states: no machine allows it
    seen = []
    with pytest.raises(config.ConfigError) as caught:
        run_experiment(
            experiment, backend="numpy", progress=seen.append, on_iteration=lambda *update: seen.append(update)
        )
    error = caught.value
    assert seen == []
    assert (error.source, error.run, error.key) == (str(path), "bad", "hidden_size")
    message = str(error)
    assert message.startswith(f"{path}: run 'bad' (runs[0]): hidden_size:")
    for part in ("hidden_size = 65536", "layers = 1", "task.seq_len = 10000", "task.batch_size = 512", "GiB"):
        assert part in message


def test_the_memory_check_compares_the_estimate_with_this_machines_share(experiment, monkeypatch):
    import gradscope.experiment as ex

    needed = max(run.memory_estimate() for run in experiment.runs)
    monkeypatch.setattr(ex, "machine_memory", lambda: int(needed / ex.MEMORY_SHARE))  # exactly enough
    ex.check_memory(experiment)
    monkeypatch.setattr(ex, "machine_memory", lambda: int(needed / ex.MEMORY_SHARE) - 1024)
    with pytest.raises(config.ConfigError, match="experiment 'stoppable': run 'short' \\(runs\\[0\\]\\)"):
        ex.check_memory(experiment)
    ex.check_memory(experiment, runs=[])  # nothing to start
    monkeypatch.setattr(ex, "machine_memory", lambda: 0)  # the system does not say
    ex.check_memory(experiment)
