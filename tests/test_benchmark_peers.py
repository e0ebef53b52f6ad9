"""benchmarks/peers.py's floor in a process of its own: the machine's BLAS overrides unset there only, its steps
timed there, its BLAS read back from there."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _peers():
    if str(BENCHMARKS) not in sys.path:  # by name, as bench_engine.py and the floor's child import it
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("peers")


def test_the_peer_environment_drops_the_machines_blas_overrides(monkeypatch):
    peers = _peers()
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    env = peers.peer_environment(2)
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert env["OPENBLAS_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "2"
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"  # this process keeps them


def test_remote_floor_times_its_steps_in_its_own_process(monkeypatch):
    """With OPENBLAS_CORETYPE set here, the child's OpenBLAS does not report the forced kernels unless the
    machine has nothing better; its threads are the ones asked for; its block gives one time per step."""
    peers = _peers()
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")  # an old SSE3 core: any x86-64 OpenBLAS picks better
    case = peers.Case("lstm", 2, 5, 3, 8, dtype="float64")
    floor = peers.RemoteFloor(case, *peers.make_data(case), threads=2)
    try:
        times = floor.block(4)
        assert len(times) == 4 and all(0 < t < 5 for t in times)
        openblas = [b for b in floor.blas if b["internal_api"] == "openblas"]
        assert openblas and all(b["num_threads"] == 2 for b in openblas)
        forced = subprocess.run(  # what OpenBLAS reports when the variable does reach it
            [sys.executable, "-c", "import numpy; from threadpoolctl import threadpool_info as i; "
             "print(next(b['architecture'] for b in i() if b['internal_api'] == 'openblas'))"],
            capture_output=True, text=True, check=True, env=dict(os.environ),
        ).stdout.strip()  # fmt: skip
        assert forced and all(b["architecture"] != forced for b in openblas), (forced, openblas)
        assert floor.process.pid != os.getpid()
    finally:
        floor.close()
    assert floor.process.returncode == 0
    assert np.isfinite(peers.remote_peak_gflops(["float32"], 1)[0]["float32"])
