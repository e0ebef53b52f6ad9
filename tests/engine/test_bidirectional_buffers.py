"""A bidirectional stack's buffers and the benchmark's target lines (issue 14's speed work)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gradscope.engine import ModelSpec, buffers


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_one_bidirectional_layer_keeps_no_joined_copy(cell):
    """One layer: the readout reads the streams' own buffers, so nothing of (T, B, 2d) is allocated; with
    two layers the layer above still reads its input joined, (T, B, 2d)."""
    T, B, n, d, k = 50, 4, 3, 8, 5
    one = ModelSpec(cell=cell, input_size=n, hidden_size=d, output_size=k, bidirectional=True, layers=1)
    buf = buffers.work_buffers(one, T, B, 10, n)
    joined = [name for name, a in buf.items() if a.ndim >= 3 and a.shape[-1] == 2 * d and a.size >= T * B * 2 * d]
    assert joined == []
    assert buf["G_s"].size == 0 and buf["X_cat"].size == 0 and buf["DX"].size == 0
    assert buf["Y"].shape == buf["Y_r"].shape == (T, B, k)
    two = ModelSpec(cell=cell, input_size=n, hidden_size=d, output_size=k, bidirectional=True, layers=2)
    buf2 = buffers.work_buffers(two, T, B, 10, n)
    assert buf2["X_cat"].shape == (T, B, 2 * d) and buf2["G_s"].shape == (2, T, B, d)


def _engine_targets():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_targets.py"
    spec = importlib.util.spec_from_file_location("engine_targets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_lines_say_met_or_not():
    targets = _engine_targets()
    row = dict(cell="lstm", B=32, T=100, n=32, d=128, dtype="float32", gradscope_gflops=90.0)
    rows = [
        dict(row, bidirectional_vs_unidirectional=2.05, speedup_vs_torch_fused=1.2),
        dict(row, cell="gru", bidirectional_vs_unidirectional=2.2),
        dict(row, cell="gru", B=64, T=500, n=64, d=512, bidirectional_vs_unidirectional=1.9, gradscope_gflops=80.0),
    ]
    lines = targets.target_lines(rows, {"float32": 100.0})
    bidirectional = [line for line in lines if line.startswith("bidirectional") and "->" in line]
    assert [line.endswith("-> met") for line in bidirectional] == [True, False, True]
    assert any("lstm vs PyTorch fused" in line and line.endswith("NOT met") for line in lines)
    assert any("80% of 100 GFLOP/s" in line and line.endswith("NOT met") for line in lines)
    assert "bidirectional / uni <= 2.1x: met in 2 of 3" in lines
    assert np.isclose(targets.BIDIRECTIONAL_MAX, 2.1)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("shards", [1, 2])
def test_kernel_gradient_norms_are_the_norms_of_the_gradients(cell, layers, shards):
    """The bidirectional kernel's gradient norms (stream_grad_norms, in Params.named() order) against NumPy's
    norm of each gradient array it returns, on one shard and on two."""
    from gradscope.engine import InitSpec, bptt, init_params

    spec = ModelSpec(
        cell=cell, input_size=3, hidden_size=6, output_size=4, layers=layers, bidirectional=True, dtype="float64"
    )
    params = init_params(spec, InitSpec(), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, target = rng.normal(size=(7, 16, 3)), rng.normal(size=(7, 16, 4))
    result = bptt(spec, params, x, target, np.ones((7, 16)), "mse", shards=shards)
    expected = [np.linalg.norm(g) for _, g in result.grads.named()]
    np.testing.assert_allclose(result.extras["grad_norms"], expected, rtol=1e-12)


def test_paired_ratio_cancels_a_drift_that_moves_the_blocks_ratio():
    """bench_engine.paired_ratio on steps timed by a fake clock: a bidirectional step of exactly twice the work,
    the machine 1% slower at every step.  Steps taken in turn give 2.00x; two blocks of 10 steps, one after the
    other, would give 2.2x (the second block ran on a slower machine)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_engine.py"
    spec = importlib.util.spec_from_file_location("bench_engine_for_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    now, speed = [0.0], [1.0]

    def work(units):
        def step():
            now[0] += units * speed[0]
            speed[0] *= 1.01  # the machine slows down, step by step

        return step

    class Clock:
        @staticmethod
        def perf_counter():
            return now[0]

        @staticmethod
        def sleep(_seconds):
            pass

    class NoThreads:
        def apply(self, _peer):
            return {}

    bench.time = Clock  # the module's clock and pause, for this module object only
    got = bench.paired_ratio(work(1.0), work(2.0), NoThreads(), "gradscope", budget=50.0)
    assert got["pairs"] >= bench.MIN_PAIRS
    assert got["median"] == pytest.approx(2.0, rel=1e-3)
    blocks = [0.0, 0.0]
    for which, units in enumerate((1.0, 2.0)):  # the same drift measured as two blocks of 10 steps
        start = now[0]
        for _ in range(10):
            work(units)()
        blocks[which] = (now[0] - start) / 10
    assert blocks[1] / blocks[0] > 2.15
