"""The same experiment gives the same bits whatever runs it: 1 or 2 threads, NUMBA_NUM_THREADS, the CPU count.

The batch split into shards decides the order of the floating-point sums, so it must not follow the machine:
it is a fixed setting (engine.shards.DEFAULT_SHARDS); threads only decide which shards run at once.  Each case
trains the same run in a fresh process and prints a digest of every recorded metric and the final weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    cpus = os.environ.get("FAKE_CPU_COUNT")
    if cpus:                                   # a machine with another number of CPUs
        os.cpu_count = lambda: int(cpus)
        os.sched_getaffinity = lambda pid: set(range(int(cpus)))
    import numpy as np
    from gradscope.config import RunConfig
    from gradscope.engine import shard_rows
    from gradscope.engine.trainer import Training

    run = RunConfig.model_validate({"cell": "lstm", "hidden_size": 64,
                                    "task": {"name": "probe", "seq_len": 50, "batch_size": 16, "input_size": 16,
                                             "output_size": 16},
                                    "train": {"iterations": 3, "lr": 0.1}})
    threads = os.environ.get("PASS_THREADS")
    training = Training(run, seed=5)
    training.threads = int(threads) if threads else None
    digest = hashlib.sha256()
    for record in training:
        for name in sorted(record.metrics):
            digest.update(name.encode() + np.ascontiguousarray(record.metrics[name]).tobytes())
        digest.update(np.float64(record.loss).tobytes())
    for name, array in training.params.named():
        digest.update(name.encode() + array.tobytes())
    print(len(shard_rows(run.model_spec(), 50, 16)), digest.hexdigest())
""")


def _digest(**env) -> tuple[int, str]:
    full = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=full, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    shards, digest = out.stdout.split()
    return int(shards), digest


@pytest.mark.slow
def test_the_same_bits_on_any_threads_and_any_machine():
    base_shards, base = _digest(NUMBA_NUM_THREADS="2", PASS_THREADS="2")
    assert base_shards > 1  # the pass is split, so the sums' order matters
    cases = {
        "1 thread": dict(NUMBA_NUM_THREADS="2", PASS_THREADS="1"),
        "NUMBA_NUM_THREADS=1": dict(NUMBA_NUM_THREADS="1"),
        "NUMBA_NUM_THREADS=2": dict(NUMBA_NUM_THREADS="2"),
        "1 CPU": dict(FAKE_CPU_COUNT="1", NUMBA_NUM_THREADS="1"),
        "16 CPUs": dict(FAKE_CPU_COUNT="16"),
    }
    got = {name: _digest(**env) for name, env in cases.items()}
    assert got == {name: (base_shards, base) for name in cases}
