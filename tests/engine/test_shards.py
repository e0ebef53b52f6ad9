"""A pass split into shards of the batch, run on threads (shards.shard_rows): the same numbers as the whole
batch in the NumPy twin, whatever the split; the split depends on the settings only, never on the threads
(the same bits on 1, 2 or 3 threads); a BLAS given its own threads takes the place of shard threads; NaN
and Inf are located as without shards."""

import numpy as np
import pytest

from gradscope.engine import ModelSpec, bptt, driver, reference, shards

from ._helpers import CELL_KINDS, label, make_batch, make_model

TOL = {"float64": 1e-12, "float32": 2e-5}


@pytest.fixture
def small_shards(monkeypatch):
    """Let the small test models split (the real thresholds keep passes this small whole)."""
    monkeypatch.setattr(shards, "MIN_SHARD_FLOPS", 0)
    monkeypatch.setattr(shards, "MIN_SHARD_ROWS", 2)


def close(got, want, dtype, name):
    want = np.asarray(want, dtype=np.float64)
    scale = np.max(np.abs(want)) if want.size else 0.0
    np.testing.assert_allclose(
        np.asarray(got, dtype=np.float64), want, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=name
    )


def test_shard_rows_follow_shards_batch_and_work():
    big = ModelSpec(cell="lstm", input_size=32, hidden_size=128, output_size=32)
    assert shards.shard_rows(big, 100, 32, shards=1) == [(0, 32)]
    assert shards.shard_rows(big, 100, 32, shards=2) == [(0, 16), (16, 32)]
    assert shards.shard_rows(big, 100, 33, shards=3) == [(0, 11), (11, 22), (22, 33)]
    assert shards.shard_rows(big, 100, 2 * shards.MIN_SHARD_ROWS - 1, shards=2) == [(0, 15)]  # too few rows
    assert shards.shard_rows(big, 100, 64, shards=16) == [(8 * s, 8 * s + 8) for s in range(8)]
    tiny = ModelSpec(cell="rnn", input_size=8, hidden_size=16, output_size=8)
    assert shards.pass_flops(tiny, 10, 32) < shards.MIN_SHARD_FLOPS
    assert shards.shard_rows(tiny, 10, 32, shards=2) == [(0, 32)]  # too little work
    assert shards.shard_rows(big, 100, 32, shards=None) == shards.shard_rows(big, 100, 32, shards.DEFAULT_SHARDS)


def test_the_default_split_is_a_setting_not_the_machine(monkeypatch):
    """NUMBA_NUM_THREADS = 1 (a worker process of gradscope run) or another CPU count changes the threads,
    never the split: the default is a fixed number of shards."""
    big = ModelSpec(cell="lstm", input_size=64, hidden_size=256, output_size=64)
    split = shards.shard_rows(big, 100, 64)
    assert len(split) == shards.DEFAULT_SHARDS > 1
    monkeypatch.setattr(shards.numba.config, "NUMBA_NUM_THREADS", 1)
    monkeypatch.setattr(shards.os, "cpu_count", lambda: 7)
    assert shards.default_threads() == 1
    assert shards.shard_rows(big, 100, 64) == split


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("cell,activation", CELL_KINDS, ids=[label(*c) for c in CELL_KINDS])
def test_shards_match_the_whole_batch_twin(small_shards, cell, activation, loss_kind, dtype):
    rng = np.random.default_rng(20)
    spec, params = make_model(cell, activation, 2, dtype, rng, n=5, d=7, k=4)
    x, target, mask = make_batch(spec, 9, 7, loss_kind, rng)
    want = reference.bptt(spec, params, x, target, mask, loss_kind)
    for threads in (2, 3):
        got = bptt(spec, params, x, target, mask, loss_kind, threads=threads, shards=threads)
        assert got.extras["shards"] == threads
        assert got.loss == pytest.approx(want.loss, rel=TOL[dtype])
        for name in want.metrics:
            if name.endswith("_sat") or name == "relu_dead":  # counted shares, added back up
                np.testing.assert_allclose(got.metrics[name], want.metrics[name], rtol=1e-13, atol=1e-15)
            else:
                close(got.metrics[name], want.metrics[name], dtype, f"{name}, {threads} shards")
        for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
            assert g.dtype == spec.np_dtype
            close(g, w, dtype, f"{name}, {threads} shards")
        np.testing.assert_allclose(got.extras["grad_norms"], list(want.grads.norms().values()), rtol=10 * TOL[dtype])
        assert got.nonfinite is None


def test_same_settings_same_bits_and_the_workspace_is_reused(small_shards):
    rng = np.random.default_rng(21)
    spec, params = make_model("lstm", "tanh", 2, "float32", rng, n=5, d=40, k=3)
    x, target, mask = make_batch(spec, 8, 12, "mse", rng)
    ws: dict = {}
    first = bptt(spec, params, x, target, mask, "mse", workspace=ws, threads=2, shards=3)
    buffers = ws["buffers"]
    x2, t2, m2 = make_batch(spec, 8, 12, "mse", rng)
    bptt(spec, params, x2, t2, m2, "mse", workspace=ws, threads=2, shards=3)  # other data through the buffers
    again = bptt(spec, params, x, target, mask, "mse", workspace=ws, threads=2, shards=3)
    fresh = bptt(spec, params, x, target, mask, "mse", threads=2, shards=3)
    alone = bptt(spec, params, x, target, mask, "mse", threads=1, shards=3)  # one thread runs all three
    wide = bptt(spec, params, x, target, mask, "mse", threads=3, shards=3)
    assert ws["buffers"] is buffers
    assert first.extras["shards"] == alone.extras["shards"] == 3
    for other in (again, fresh, alone, wide):
        assert other.loss == first.loss
        for name in first.metrics:
            np.testing.assert_array_equal(other.metrics[name], first.metrics[name])
        for (_, a), (_, b) in zip(other.grads.named(), first.grads.named()):
            np.testing.assert_array_equal(a, b)
    work = [
        v
        for shard in buffers["shards"]
        for value in shard.values()
        for v in (value if isinstance(value, tuple) else (value,))
    ]
    assert len(work) > 20 and all(isinstance(v, np.ndarray) for v in work)
    for _, g in first.grads.named():  # results own their arrays
        assert not any(np.shares_memory(g, v) for v in work)
    for v in first.metrics.values():
        assert not any(np.shares_memory(v, w) for w in work)


def test_a_multithreaded_blas_takes_the_place_of_shard_threads(small_shards, monkeypatch):
    """Shards run one at a time (in the calling thread) when the BLAS has as many threads as asked for."""
    rng = np.random.default_rng(22)
    spec, params = make_model("rnn", "tanh", 1, "float64", rng, n=5, d=8, k=3)
    x, target, mask = make_batch(spec, 5, 8, "mse", rng)
    callers = []
    run_step = driver._run_step
    monkeypatch.setattr(driver, "_run_step", lambda *a: (callers.append(shards.threading.get_ident()), run_step(*a)))
    want = bptt(spec, params, x, target, mask, "mse", threads=2, shards=2)
    assert want.extras["shards"] == 2 and len(callers) == 2
    monkeypatch.setattr(driver, "kernel_blas_threads", lambda: 2)
    callers.clear()
    got = bptt(spec, params, x, target, mask, "mse", threads=2, shards=2)
    assert got.extras["shards"] == 2 and callers == [shards.threading.get_ident()] * 2
    assert got.loss == want.loss
    for (_, a), (_, b) in zip(got.grads.named(), want.grads.named()):
        np.testing.assert_array_equal(a, b)


def test_kernel_blas_is_scipys_and_gradscope_keeps_it_on_one_thread():
    libs = shards.kernel_blas_controllers()
    assert libs, "threadpoolctl finds the BLAS library the kernels call"
    assert shards.kernel_blas_threads() == 1  # gradscope/__init__.py's default


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_non_finite_values_are_located_as_without_shards(small_shards, cell):
    rng = np.random.default_rng(23)
    spec, params = make_model(cell, "relu", 2, "float64", rng, n=4, d=6, k=3)
    x, target, mask = make_batch(spec, 7, 6, "mse", rng)
    x[4, 5, 1] = np.nan  # in the last shard only
    located_like_the_twin(
        bptt(spec, params, x, target, mask, "mse", threads=3, shards=3),
        3,
        reference.bptt(spec, params, x, target, mask, "mse"),
    )


def located_like_the_twin(got, shards, want):
    """The pass ran in ``shards`` shards and found the first non-finite value where the twin finds it, with
    the same finite / non-finite pattern in every metric."""
    assert got.extras["shards"] == shards
    assert want.nonfinite is not None
    assert got.nonfinite.as_dict() == want.nonfinite.as_dict()
    for name in want.metrics:
        np.testing.assert_array_equal(np.isfinite(got.metrics[name]), np.isfinite(want.metrics[name]), name)


# ------------------------------------------------------------------ shards read the batch in place
@pytest.mark.parametrize("loss_kind", ["mse", "ce"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_shards_read_their_rows_in_place(small_shards, cell, layers, loss_kind):
    """Uneven shards (3, 3, 4 examples: the later ones start at b0 > 0), weighted masks with zeros, and
    backward chunks of 3 steps (not dividing T = 11, so layer 0's input is staged in blocks, the last one
    short): the twin's numbers on the whole batch, and the caller's arrays are left as they were."""
    rng = np.random.default_rng(24)
    spec, params = make_model(cell, "tanh", layers, "float64", rng, n=5, d=6, k=4)
    x, target, mask = make_batch(spec, 11, 10, loss_kind, rng)
    mask *= rng.random(mask.shape)  # weights, and zeros
    mask[:, 7] = 0.0  # an example of the last shard off
    inputs = (x.copy(), target.copy(), mask.copy())
    want = reference.bptt(spec, params, x, target, mask, loss_kind)
    assert shards.shard_rows(spec, 11, 10, 3) == [(0, 3), (3, 6), (6, 10)]
    got = driver.bptt(spec, params, x, target, mask, loss_kind, threads=2, shards=3, chunk=3)
    assert got.extras["shards"] == 3
    assert got.loss == pytest.approx(want.loss, rel=1e-12)
    for name in want.metrics:
        if name.endswith("_sat"):
            np.testing.assert_allclose(got.metrics[name], want.metrics[name], rtol=1e-13, atol=1e-15)
        else:
            close(got.metrics[name], want.metrics[name], "float64", name)
    for (name, g), (_, w) in zip(got.grads.named(), want.grads.named()):
        close(g, w, "float64", name)
    assert len(got.grads.layers) == layers
    for given, kept in zip((x, target, mask), inputs):
        np.testing.assert_array_equal(given, kept)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("where", ["x", "target"])
def test_non_finite_in_the_last_shard_is_located(small_shards, layers, where):
    """A NaN in the last shard's rows of x, or an Inf in its target (read in place by the readout), is
    located as the twin locates it on the whole batch."""
    rng = np.random.default_rng(25)
    spec, params = make_model("rnn", "relu", layers, "float64", rng, n=4, d=6, k=3)
    x, target, mask = make_batch(spec, 9, 8, "mse", rng)
    if where == "x":
        x[5, 7, 2] = np.nan
    else:
        target[6, 6, 0] = np.inf
    located_like_the_twin(
        driver.bptt(spec, params, x, target, mask, "mse", threads=2, shards=2, chunk=4),
        2,
        reference.bptt(spec, params, x, target, mask, "mse"),
    )


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_shards_keep_no_copy_of_the_batch(small_shards, cell):
    """The workspace of a pass in two shards holds what one shard's does, twice, plus a chunk of x's rows
    per shard and the second shard's gradients: no copy of x, the targets or the mask, one set of packed
    weights.  (T is long against the model, so a copy of x would be most of the workspace.)"""
    rng = np.random.default_rng(26)
    spec, params = make_model(cell, "tanh", 1, "float32", rng, n=64, d=8, k=32)
    T, B = 1000, 16
    x, target, mask = make_batch(spec, T, B, "mse", rng)
    ws1: dict = {}
    ws2: dict = {}
    bptt(spec, params, x, target, mask, "mse", workspace=ws1, threads=1, shards=1)
    bptt(spec, params, x, target, mask, "mse", workspace=ws2, threads=2, shards=2)

    def arrays(buf):
        for value in buf.values():
            if isinstance(value, dict):
                yield from arrays(value)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    yield from (arrays(v) if isinstance(v, dict) else [v])
            else:
                yield value

    one, two = ws1["buffers"], ws2["buffers"]
    assert len(two["shards"]) == 2
    assert all("P_f" not in shard and "x" not in shard for shard in two["shards"])
    chunk = shards.chunk_steps(T, B)
    stages = 2 * chunk * (B // 2) * spec.input_size * 4
    second = sum(
        a.nbytes
        for a in arrays({"g": two["shards"][1]["grads"], "M": two["shards"][1]["M"], "l": two["shards"][1]["loss_t"]})
    )
    extra = sum(a.nbytes for a in arrays(two)) - sum(a.nbytes for a in arrays(one))
    per_shard_small = 2 * sum(
        a.nbytes for name, a in one.items() if name in ("Y", "G", "dZ", "carry", "c_zero", "db64", "dby64")
    )
    assert extra <= stages + second + per_shard_small
    assert extra < x.nbytes / 4  # a copy of x alone would be more
