"""The kernels release the GIL (the GUI keeps painting while a run computes) and runs in parallel threads
do not disturb each other."""

import threading
import time

import numpy as np

import gradscope.engine as engine
from gradscope.engine import bptt

from ._helpers import make_batch, make_model


def test_bptt_releases_the_gil_while_it_computes():
    """While a worker thread is inside one bptt call, the main thread keeps running Python code.  Holding
    the GIL, the kernel would let the main thread resume only after it returned (its time counting ~0)."""
    rng = np.random.default_rng(0)
    spec, params = make_model("lstm", "tanh", 2, "float32", rng, n=32, d=128, k=8)
    x, target, mask = make_batch(spec, 400, 32, "mse", rng)
    engine.compile_kernels(spec)
    ws: dict = {}
    bptt(spec, params, x, target, mask, "mse", workspace=ws)  # buffers allocated, kernels loaded
    started, finished = threading.Event(), threading.Event()
    inside = []

    def work():
        started.set()
        t0 = time.perf_counter()
        bptt(spec, params, x, target, mask, "mse", workspace=ws)
        inside.append(time.perf_counter() - t0)
        finished.set()

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    t0 = time.perf_counter()
    ticks = 0
    while not finished.is_set():  # pure Python: needs the GIL
        ticks += 1
    counting = time.perf_counter() - t0
    worker.join()
    assert inside[0] > 0.02  # long enough to tell
    assert counting > 0.5 * inside[0] and ticks > 1000, (counting, inside, ticks)


def test_parallel_runs_in_threads_match_sequential_runs():
    rng = np.random.default_rng(1)
    jobs = []
    for cell in ("rnn", "lstm", "rnn", "lstm"):
        spec, params = make_model(cell, "relu", 2, "float32", rng, n=8, d=48, k=4)
        jobs.append((spec, params) + make_batch(spec, 60, 16, "mse", rng))
    for spec, *_ in jobs:
        engine.compile_kernels(spec)
    sequential = [bptt(spec, p, x, t, m, "mse") for spec, p, x, t, m in jobs]
    parallel = [None] * len(jobs)

    def run(i):
        spec, p, x, t, m = jobs[i]
        ws: dict = {}
        for _ in range(3):
            parallel[i] = bptt(spec, p, x, t, m, "mse", workspace=ws)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for a, b in zip(sequential, parallel):
        assert a.loss == b.loss
        for name in a.metrics:
            np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
        for (_, g), (_, h) in zip(a.grads.named(), b.grads.named()):
            np.testing.assert_array_equal(g, h)
