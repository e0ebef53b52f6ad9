"""Engine speed and memory, measured against peers in the same run (see peers.py and docs/performance.md).

    python benchmarks/bench_engine.py                      # everything: float32 and float64 tables, ~25 min
    python benchmarks/bench_engine.py --quick              # the two small sizes, float32 only
    python benchmarks/bench_engine.py --only speed         # or: memory, linear, compile, spectral
    python benchmarks/bench_engine.py --threads 1          # every peer on one thread

Speed: the median (and best) time per training step, forward + backward + every per-timestep metric, no
optimizer, of GradScope's engine, PyTorch fused (nn.RNN / nn.LSTM), PyTorch instrumented (unrolled cells,
retain_grad on every h_t and c_t, the per-step norms) and the NumPy GEMM floor, on the same weights and batch.
``--threads N`` (default 2) is given to every peer, each in its own way, and read back into the results:

    GradScope           the batch in the machine's shards (engine.shards.shard_rows; as many as CPUs), run N
                        at a time on N threads, each calling its BLAS (SciPy's OpenBLAS) on one thread:
                        GradScope's own way to use N cores (the shards, not the threads, fix the numbers)
    PyTorch             torch.set_num_threads(N) (its OpenMP pool, oneDNN)
    NumPy GEMM floor    NumPy's OpenBLAS on N threads, in a process of its own (peers.RemoteFloor) with
                        OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset there only, so its BLAS picks the
                        machine's fastest kernels; the large-GEMM peak is measured in such a process too,
                        before and after the cases, and the higher of the two is the one shares are of

Every other BLAS pool is on one thread while a peer runs, so no idle pool busy-waits beside it.  The peers are
measured round-robin (--rounds blocks of each, interleaved), each block after a short pause (so the threads of
the peer before have gone to sleep) and one untimed step, so that the machine's load hits them alike; the
machine's load average is recorded with every row.  A bidirectional layer's time against a unidirectional
one's (issue 14's target) is also measured apart, from steps of the two taken in turn (``paired_ratio``): the
machine's speed drifts by ~10% within a minute here, which moved the ratio of two blocks' medians by up to 0.1
from run to run, more than the target's margin.  Writes benchmarks/results/engine.json and engine.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from engine_targets import target_lines  # noqa: E402

import gradscope  # noqa: E402,F401  (GradScope's thread defaults before NumPy loads, as in the app)

from peers import UNSET_IN_PEER, Case, RemoteFloor, TorchFused, TorchInstrumented, make_data, remote_peak_gflops  # noqa: E402

SIZES = [(1, 100, 8, 32), (32, 100, 32, 128), (32, 200, 64, 256), (64, 500, 64, 512)]
CELLS = ["rnn-relu", "rnn-tanh", "lstm", "gru"]
SETTLE = 0.2  # seconds of pause before each block: other pools' spinning threads go to sleep
# Samples per block: at least MIN_BLOCK_STEPS (a block of one step made a median of 3 steps at the largest size,
# where one slow step moved a ratio by 5%), at most MAX_BLOCK_STEPS (the B = 1 steps take ~0.1 ms: a cap of 200
# made their blocks 20 ms, shorter than a scheduler's hiccup); between the two, about budget / rounds seconds.
MIN_BLOCK_STEPS = 3
MAX_BLOCK_STEPS = 5000
# Pairs of the bidirectional / uni measurement (paired_ratio): at least MIN_PAIRS (3 pairs at the largest size,
# one ratio's worth, gave 1.98x to 2.11x between the cells of one run), else about the budget's seconds
MIN_PAIRS = 10


def load() -> float:
    """The machine's 1-minute load average."""
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


# ------------------------------------------------------------------------------------------- threads
class Threads:
    """The thread settings of each peer, applied when its block starts (see the module docstring)."""

    def __init__(self, n: int):
        import torch
        from threadpoolctl import ThreadpoolController

        from gradscope.engine import shards

        self.n, self.torch = n, torch
        self.blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        kernel_paths = {lib.filepath for lib in shards.kernel_blas_controllers()}
        self.kernel_blas = [lib for lib in self.blas if lib.filepath in kernel_paths]
        self.numpy_blas = [lib for lib in self.blas if lib.filepath not in kernel_paths] or self.blas

    def apply(self, peer: str) -> dict:
        """Set the threads for ``peer`` ("gradscope", "torch" or "floor"); returns the settings read back.
        The floor runs in a process of its own (peers.RemoteFloor): meanwhile every pool here is on one thread."""
        for lib in self.blas:
            lib.set_num_threads(1)
        self.torch.set_num_threads(self.n if peer == "torch" else 1)
        return self.read(peer)

    def read(self, peer: str) -> dict:
        return {
            "numpy_blas": max(lib.num_threads for lib in self.numpy_blas),
            "kernel_blas": max(lib.num_threads for lib in self.kernel_blas) if self.kernel_blas else None,
            "torch": self.torch.get_num_threads(),
        }


# --------------------------------------------------------------------------------------------- peers
class GradScopeStep:
    """GradScope's engine on the same weights and batch as the peers."""

    def __init__(
        self, case: Case, weights, x, target, threads: int = 1, parameter_metrics: bool = False, bidirectional=False
    ):
        from gradscope.engine import InitSpec, LayerParams, ModelSpec, Params, bptt, init_params

        self.bptt = bptt
        # the GRU's second bias, zero like the peers' bias_hh (PyTorch's LSTM and RNN fold theirs into b_h)
        b_hh = np.zeros_like(weights["b_h"]) if case.cell == "gru" else None
        self.spec = ModelSpec(
            cell=case.cell.split("-")[0],
            activation=case.activation,
            input_size=case.n,
            hidden_size=case.d,
            layers=1,
            output_size=case.k,
            dtype=case.dtype,
            bidirectional=bidirectional,
        )
        self.params = Params(
            [LayerParams(weights["W_hx"], weights["W_hh"], weights["b_h"], b_hh)], weights["W_yh"], weights["b_y"]
        )
        if bidirectional:  # the same layer run both ways: its own weights (the peers have no such layer)
            self.params = init_params(self.spec, InitSpec(), np.random.default_rng(0))
        self.x, self.target = x, target
        self.mask = np.ones(x.shape[:2], dtype=x.dtype)
        self.workspace: dict = {}
        self.threads = threads
        self.parameter_metrics = parameter_metrics
        self.shards = None

    def step(self):
        result = self.bptt(
            self.spec,
            self.params,
            self.x,
            self.target,
            self.mask,
            "mse",
            workspace=self.workspace,
            threads=self.threads,
        )
        self.shards = result.extras["shards"]
        if self.parameter_metrics:
            from gradscope.engine.metrics import parameter_metrics

            parameter_metrics(self.spec, self.params, result.grads)
        return result.loss


PEERS = {
    "gradscope": "gradscope",
    "gradscope+param": "gradscope",
    "gradscope_bidirectional": "gradscope",
    "torch_fused": "torch",
    "torch_instrumented": "torch",
    "floor": "floor",
}


def make_peer(key: str, case: Case, data, threads: int):
    if key == "gradscope":
        return GradScopeStep(case, *data, threads=threads)
    if key == "gradscope+param":
        return GradScopeStep(case, *data, threads=threads, parameter_metrics=True)
    if key == "gradscope_bidirectional":
        return GradScopeStep(case, *data, threads=threads, bidirectional=True)
    if key == "floor":  # in its own process, timing its own steps (RemoteFloor.block)
        return RemoteFloor(case, *data, threads=threads)
    return {"torch_fused": TorchFused, "torch_instrumented": TorchInstrumented}[key](case, *data)


def timed_steps(step):
    """A peer of this process as a block: ``block(repeats)`` runs its step that many times, each timed here."""

    def block(repeats: int) -> list[float]:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return times

    return block


def round_robin(blocks: dict, threads: Threads, rounds: int, budget: float, peer_of=PEERS.__getitem__) -> dict:
    """Time each peer in ``rounds`` interleaved blocks of about budget/rounds seconds each (at least
    MIN_BLOCK_STEPS steps, at most MAX_BLOCK_STEPS).  ``blocks``: {key: block(repeats) -> each step's seconds}
    (``timed_steps`` for a peer of this process; RemoteFloor.block times its steps in its own process).
    ``peer_of(key)``: whose thread settings a block runs with ("gradscope", "torch" or "floor").

    Returns {key: {"median_ms", "best_ms", "samples", "threads": settings read back during its blocks}}.
    """
    once = {}
    for key, block in blocks.items():  # warm-up (compile, allocate) and a first time
        threads.apply(peer_of(key))
        block(1)
        once[key] = block(1)[0]
    times = {key: [] for key in blocks}
    settings = {}
    for _ in range(rounds):
        for key, block in blocks.items():
            settings[key] = threads.apply(peer_of(key))
            time.sleep(SETTLE)
            block(1)  # untimed: caches and thread pools warm again
            repeats = int(np.clip(budget / rounds / max(once[key], 1e-6), MIN_BLOCK_STEPS, MAX_BLOCK_STEPS))
            times[key].extend(block(repeats))
    return {
        key: {
            "median_ms": float(np.median(v)) * 1e3,
            "best_ms": float(np.min(v)) * 1e3,
            "samples": len(v),
            "threads": settings[key],
        }
        for key, v in times.items()
    }


def paired_ratio(first, second, threads: Threads, peer: str, budget: float) -> dict:
    """second's time over first's, both on ``peer``'s thread settings, from steps taken in turn (first,
    second, first, ...): each second step against the mean of the first steps on either side of it, so that a
    drift of the machine's speed between two blocks (seconds apart; ~10% seen here within a minute) cancels.
    At least MIN_PAIRS pairs, else about ``budget`` seconds.  {"median", "pairs", "quartiles"}."""
    threads.apply(peer)
    time.sleep(SETTLE)
    first(), second()  # untimed: caches and thread pools warm again
    one, other = timed_steps(first), timed_steps(second)
    a, b = one(1), []
    start = time.perf_counter()
    while len(b) < MIN_PAIRS or (time.perf_counter() - start < budget and len(b) < MAX_BLOCK_STEPS):
        b += other(1)
        a += one(1)
    ratios = np.array(b) / (0.5 * (np.array(a[:-1]) + np.array(a[1:])))  # (pairs,)
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    return {"median": float(med), "pairs": len(b), "quartiles": [float(q1), float(q3)]}


def bench_speed(dtypes, sizes, cells, n_threads: int, rounds: int, budget: float):
    threads = Threads(n_threads)
    rows = []
    for dtype in dtypes:
        for size in sizes:
            for cell in cells:
                case = Case(cell, *size, dtype=dtype)
                data = make_data(case)
                load_before = load()
                peers = {key: make_peer(key, case, data, n_threads) for key in PEERS}
                remote = {key: peer for key, peer in peers.items() if isinstance(peer, RemoteFloor)}
                blocks = {key: remote[key].block if key in remote else timed_steps(p.step) for key, p in peers.items()}
                measured = round_robin(blocks, threads, rounds, budget)
                for key, peer in remote.items():  # its threads are its own process's, read there
                    measured[key]["threads"] = {"own process": peer.blas}
                row = {
                    "cell": cell,
                    "B": case.B,
                    "T": case.T,
                    "n": case.n,
                    "d": case.d,
                    "dtype": dtype,
                    "flops": case.flops(),
                    "load": [load_before, load()],
                    "gradscope_shards": peers["gradscope"].shards,
                }
                for key, m in measured.items():
                    row[key] = m
                g = row["gradscope"]["median_ms"]
                row["floor_gflops"] = case.flops() / (row["floor"]["median_ms"] / 1e3) / 1e9
                row["gradscope_gflops"] = case.flops() / (g / 1e3) / 1e9
                row["vs_floor"] = g / row["floor"]["median_ms"]
                row["speedup_vs_torch_instrumented"] = row["torch_instrumented"]["median_ms"] / g
                row["speedup_vs_torch_fused"] = row["torch_fused"]["median_ms"] / g
                # the target's figure: steps of the two taken in turn (paired_ratio); the blocks' medians beside it
                row["bidirectional_vs_unidirectional_blocks"] = row["gradscope_bidirectional"]["median_ms"] / g
                pair = paired_ratio(peers["gradscope"].step, peers["gradscope_bidirectional"].step, threads,
                                    "gradscope", budget)  # fmt: skip
                row["bidirectional_vs_unidirectional"] = pair["median"]
                row["bidirectional_pairs"] = pair
                print(
                    f"{case.label():52s} gradscope {g:9.3f} ms  fused {row['torch_fused']['median_ms']:9.3f}  "
                    f"instrumented {row['torch_instrumented']['median_ms']:9.3f}  "
                    f"floor {row['floor']['median_ms']:9.3f}  -> {row['vs_floor']:.2f}x floor, "
                    f"{row['speedup_vs_torch_instrumented']:.1f}x faster than instrumented, "
                    f"{row['speedup_vs_torch_fused']:.2f}x vs fused, bidirectional "
                    f"{row['bidirectional_vs_unidirectional']:.2f}x in turn over {pair['pairs']} pairs "
                    f"({row['bidirectional_vs_unidirectional_blocks']:.2f}x by blocks) "
                    f"(load {row['load'][0]:.1f}-{row['load'][1]:.1f})",
                    file=sys.stderr,
                    flush=True,
                )
                for peer in remote.values():
                    peer.close()
                del peers
                rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------- memory
MEMORY_CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    sys.path.insert(0, {here!r}); sys.path.insert(0, {root!r})
    import gradscope
    from peers import Case, make_data
    from bench_engine import GradScopeStep
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    # kernels, shard threads and their BLAS buffers ready: the same model and batch split, T = 10
    small = Case({cell!r}, {B}, 10, {n}, {d}, {dtype!r})
    warm = GradScopeStep(small, *make_data(small), threads={threads})
    warm.step()
    case = Case({cell!r}, {B}, {T}, {n}, {d}, {dtype!r})
    runner = GradScopeStep(case, *make_data(case), threads={threads})
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")    # reset the peak (VmHWM) to the current RSS
    runner.step()                                    # the first step: the workspace is allocated in it
    peak = status("VmHWM")
    print(json.dumps({{"base": base, "peak": peak, "shards": runner.shards, "warm_up_shards": warm.shards}}))
""")


def bench_memory(cells, size, dtype, n_threads):
    rows = []
    for cell in cells:
        case = Case(cell, *size, dtype=dtype)
        code = MEMORY_CHILD.format(
            here=str(HERE),
            root=str(ROOT),
            cell=cell,
            B=case.B,
            T=case.T,
            n=case.n,
            d=case.d,
            dtype=dtype,
            threads=n_threads,
        )
        # glibc's mmap threshold fixed: big arrays are mapped and unmapped, never served from pages an
        # earlier pass freed, so the peak counts every byte the step holds whatever the process did before
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        extra = m["peak"] - m["base"]
        row = {
            "cell": cell,
            "B": case.B,
            "T": case.T,
            "n": case.n,
            "d": case.d,
            "dtype": dtype,
            "peak_extra_bytes": extra,
            "must_keep_bytes": case.state_bytes(),
            "ratio": extra / case.state_bytes(),
            "shards": m["shards"],
            "warm_up_shards": m["warm_up_shards"],
        }
        print(
            f"memory {case.label()}: peak extra {extra / 2**20:.0f} MiB, BPTT must keep "
            f"{case.state_bytes() / 2**20:.0f} MiB -> {row['ratio']:.2f}x",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- linear in T
def bench_linear(cells, Ts, n_threads, rounds, B=32, n=32, d=128, dtype="float32", budget=1.0):
    threads = Threads(n_threads)
    rows = []
    for cell in cells:
        steps = {}
        for T in Ts:
            case = Case(cell, B, T, n, d, dtype)
            steps[T] = timed_steps(GradScopeStep(case, *make_data(case), threads=n_threads).step)
        measured = round_robin(steps, threads, rounds, budget, peer_of=lambda T: "gradscope")
        times = np.array([measured[T]["median_ms"] for T in Ts])
        slope, intercept = np.polyfit(Ts, times, 1)
        pred = slope * np.asarray(Ts) + intercept
        r2 = 1 - np.sum((times - pred) ** 2) / np.sum((times - np.mean(times)) ** 2)
        per_step = times / np.asarray(Ts)
        rows.append(
            {
                "cell": cell,
                "B": B,
                "n": n,
                "d": d,
                "dtype": dtype,
                "T": list(Ts),
                "ms": times.tolist(),
                "ms_per_step": float(slope),
                "intercept_ms": float(intercept),
                "r2": float(r2),
                "ms_per_timestep_each": per_step.tolist(),
                "load": load(),
            }
        )
        print(
            f"linear in T {cell}: {slope:.4f} ms per timestep, intercept {intercept:.3f} ms, R^2 = {r2:.5f}; "
            f"ms per timestep at each T: {', '.join(f'{v:.4f}' for v in per_step)}",
            file=sys.stderr,
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------------------- compile
COMPILE_CHILD = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    from gradscope.engine import ModelSpec, cells
    specs = [ModelSpec(cell=c, activation="relu", dtype=dt) for c in ("rnn", "lstm") for dt in ("float32", "float64")]
    for spec in specs:
        engine.compile_kernels(spec)
    print(time.perf_counter() - t0)
""")

FIRST_STEP_CHILD = textwrap.dedent("""
    import time, sys
    import numpy as np
    from gradscope.engine import ModelSpec, InitSpec, init_params, bptt
    spec = ModelSpec(cell={cell!r}, activation="relu", input_size=32, hidden_size=128, output_size=32)
    params = init_params(spec, InitSpec(), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 32, 32)).astype(np.float32)
    target = rng.normal(size=(100, 32, 32)).astype(np.float32)
    bptt(spec, params, x, target, np.ones((100, 32), np.float32), "mse")
    print(time.time())
""")


def bench_compile():
    """A cold compile of every kernel (both cells, both dtypes) in a fresh process and an empty cache; then
    new processes on that cache, from their start to their first computed step."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        load_before = load()
        cold = float(
            subprocess.run(
                [sys.executable, "-c", COMPILE_CHILD], env=env, capture_output=True, text=True, check=True, cwd=ROOT
            ).stdout.split()[-1]
        )
        print(
            f"cold compile of the whole kernel set, one process: {cold:.1f} s (load {load_before:.1f})",
            file=sys.stderr,
            flush=True,
        )
    with tempfile.TemporaryDirectory() as cache:  # as users get it: gradscope compile (install.sh)
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        load_parallel = load()
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "gradscope", "compile"], env=env, capture_output=True, check=True, cwd=ROOT
        )
        parallel = time.perf_counter() - t0
        print(
            f"cold compile of the whole kernel set, gradscope compile (whole process): {parallel:.1f} s "
            f"(load {load_parallel:.1f})",
            file=sys.stderr,
            flush=True,
        )
        first = {}
        for cell in ("rnn", "lstm"):
            runs = []
            for _ in range(5):
                t0 = time.time()
                out = subprocess.run(
                    [sys.executable, "-c", FIRST_STEP_CHILD.format(cell=cell)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                )
                runs.append(float(out.stdout.split()[-1]) - t0)
            first[cell] = {"median": float(np.median(runs)), "best": float(np.min(runs))}
            print(
                f"warm cache, process start to first computed {cell} step (B=32, T=100, d=128): "
                f"median {first[cell]['median']:.2f} s, best {first[cell]['best']:.2f} s of 5",
                file=sys.stderr,
                flush=True,
            )
    return {
        "cold_compile_seconds": cold,
        "cold_compile_command_seconds": parallel,
        "warm_first_step_seconds": first,
        "load": [load_before, load()],
    }


# ------------------------------------------------------------------------------------------- spectral
def bench_spectral(sizes=(32, 128, 256, 512)):
    """parameter_metrics' spectral pair per changed W_hh (uncached), its BLAS on 1 and on 2 threads."""
    from threadpoolctl import threadpool_limits

    from gradscope.engine.params import spectral_stats

    rng = np.random.default_rng(0)
    rows = []
    for d in sizes:
        for gates in (1, 4):
            W = (rng.standard_normal((gates * d, d)) / np.sqrt(d)).astype(np.float32)
            row = {"d": d, "cell": "lstm" if gates == 4 else "rnn"}
            for blas_threads in (1, 2):
                with threadpool_limits(blas_threads, user_api="blas"):
                    spectral_stats(W, gates)
                    times = []
                    for _ in range(3 if d >= 256 else 10):
                        t0 = time.perf_counter()
                        spectral_stats(W, gates)
                        times.append(time.perf_counter() - t0)
                row[f"ms_{blas_threads}_thread"] = float(np.median(times)) * 1e3
            row["load"] = load()
            print(
                f"spectral stats {row['cell']} d={d}: {row['ms_1_thread']:.1f} ms on 1 BLAS thread, "
                f"{row['ms_2_thread']:.1f} ms on 2",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------- report
def machine_info(n_threads):
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numba
    import scipy
    import torch

    from gradscope.engine import shards

    kernel_blas = {str(lib.filepath) for lib in shards.kernel_blas_controllers()}  # loads SciPy's BLAS
    numba_cpu = numba.config.CPU_NAME or __import__("llvmlite.binding", fromlist=["x"]).get_host_cpu_name()
    return {
        "cpu": cpu,
        "numba_cpu": numba_cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "threads": n_threads,
        "environment": {
            k: os.environ.get(k)
            for k in (
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "NUMBA_NUM_THREADS",
                "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE",
            )
        },
        "blas": [
            dict(
                {k: lib.get(k) for k in ("filepath", "internal_api", "version", "architecture")},
                used_by="GradScope's kernels (SciPy's OpenBLAS, through Numba)"
                if lib.get("filepath") in kernel_blas
                else "NumPy in this process (the floor runs in its own)",
            )
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        ],
        "torch_backend": [
            line.strip()
            for line in torch.__config__.parallel_info().splitlines()
            if "Math Kernel" in line or line.startswith("OpenMP")
        ]
        + [f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}"],
    }


def _ms(m: dict) -> str:
    return f"{m['median_ms']:.3g} ({m['best_ms']:.3g})"


def _bidirectional(r: dict) -> str:
    """The bidirectional column: the ratio of steps taken in turn (the target's figure), and of the blocks."""
    pair = r.get("bidirectional_pairs")
    if pair is None:  # a result written before the paired measurement
        return f"{r['bidirectional_vs_unidirectional']:.2f}x by blocks"
    q1, q3 = pair["quartiles"]
    return (
        f"**{pair['median']:.2f}x** in turn ({q1:.2f}-{q3:.2f}, {pair['pairs']} pairs), "
        f"{r['bidirectional_vs_unidirectional_blocks']:.2f}x by blocks"
    )


def markdown(result) -> str:
    machine = result["machine"]
    lines = [f"Command: `{result['command']}` ({result['date']})", ""]
    lines += [
        f"Then: `{u['command']}` ({u['date']}), which measured {', '.join(u['parts'])} again.\n"
        for u in result.get("updates", [])
    ]
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, NumPy "
        f"{machine['numpy']}, SciPy {machine['scipy']}, Numba {machine['numba']} (compiling for "
        f"{machine.get('numba_cpu', '?')}), PyTorch {machine['torch']}",
        "",
        "BLAS kernels (threadpoolctl): "
        + "; ".join(
            f"{b.get('used_by', '?')}: {Path(b['filepath']).parent.name}/{Path(b['filepath']).name}, "
            f"{b['internal_api']} {b['version']} ({b['architecture']} kernels)"
            for b in machine["blas"]
        ),
        "",
    ]
    if machine.get("peer_blas"):
        unset = " and ".join(UNSET_IN_PEER)
        lines += [
            f"The NumPy GEMM floor and the large-GEMM peak: each in a process of its own, {unset} unset there "
            "only (this process keeps the machine's settings: "
            + ", ".join(f"{k}={v}" for k, v in machine.get("environment", {}).items() if k in UNSET_IN_PEER)
            + "): "
            + "; ".join(
                f"{Path(b['filepath']).name}, {b['internal_api']} {b['version']} ({b['architecture']} kernels, "
                f"{b['num_threads']} threads)"
                for b in machine["peer_blas"]
            ),
            "",
        ]
    lines += ["PyTorch: " + "; ".join(machine.get("torch_backend", [])), ""]
    if result.get("speed"):
        n = machine["threads"]
        lines.append(
            f"{n} thread(s) per peer (read back during its blocks: GradScope's shards, PyTorch's "
            f"threads, NumPy's BLAS threads). Milliseconds per training step: median (best) of the "
            f"interleaved repeats; bidirectional / uni: the median ratio of steps of the two taken in turn "
            f"(quartiles, pairs), and the ratio of their blocks' medians."
        )
        for dtype in sorted({r["dtype"] for r in result["speed"]}, reverse=True):
            peak = result["peak_gflops"][dtype]
            lines += [
                "",
                f"### {dtype}: ms per training step (large-{'s' if dtype == 'float32' else 'd'}gemm peak "
                f"in the same run: {peak:.0f} GFLOP/s)",
                "",
                "| cell | (B, T, n, d) | GradScope | + param. metrics | PyTorch fused | PyTorch instrumented | "
                "NumPy GEMM floor | floor GFLOP/s | GradScope / floor | vs instrumented | vs fused | "
                "bidirectional / uni | shards | load |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in (r for r in result["speed"] if r["dtype"] == dtype):
                lines.append(
                    f"| {r['cell']} | ({r['B']}, {r['T']}, {r['n']}, {r['d']}) | {_ms(r['gradscope'])} | "
                    f"{_ms(r['gradscope+param'])} | {_ms(r['torch_fused'])} | "
                    f"{_ms(r['torch_instrumented'])} | {_ms(r['floor'])} | "
                    f"{r['floor_gflops']:.0f} ({r['flops'] / 1e9:.3g} GFLOP) | {r['vs_floor']:.2f}x | "
                    f"{r['speedup_vs_torch_instrumented']:.1f}x faster | "
                    f"{r['speedup_vs_torch_fused']:.2f}x | "
                    f"{_ms(r['gradscope_bidirectional'])}: {_bidirectional(r)} | "
                    f"{r['gradscope_shards']} | "
                    f"{r['load'][0]:.1f}-{r['load'][1]:.1f} |"
                )
    if result.get("memory"):
        lines += [
            "",
            "### Peak extra memory of one training step",
            "",
            "The first step at this size (its workspace is allocated in it), in a process that has run "
            "one pass of the same model and batch split into the same shards at T = 10 (kernels, shard threads "
            "and their BLAS buffers ready); peak RSS (VmHWM) above the RSS before the step, with glibc's mmap "
            "threshold fixed (MALLOC_MMAP_THRESHOLD_=131072) so that no freed pages hide an allocation.",
            "",
            "| cell | (B, T, n, d) | peak extra | BPTT must keep | ratio | shards |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in result["memory"]:
            lines.append(
                f"| {r['cell']} | ({r['B']}, {r['T']}, {r['n']}, {r['d']}) | "
                f"{r['peak_extra_bytes'] / 2**20:.0f} MiB | {r['must_keep_bytes'] / 2**20:.0f} MiB | "
                f"{r['ratio']:.2f}x | {r['shards']} |"
            )
    if result.get("linear"):
        r0 = result["linear"][0]
        lines += [
            "",
            f"### Time against T (B={r0['B']}, n={r0['n']}, d={r0['d']}, {r0['dtype']}): least-squares "
            f"line through the medians",
            "",
            "| cell | T | ms | ms per timestep at each T | fit: ms per timestep | intercept ms | R^2 |",
            "|---|---|---|---|---:|---:|---:|",
        ]
        for r in result["linear"]:
            lines.append(
                f"| {r['cell']} | {', '.join(map(str, r['T']))} | {', '.join(f'{v:.2f}' for v in r['ms'])} "
                f"| {', '.join(f'{v:.4f}' for v in r['ms_per_timestep_each'])} | {r['ms_per_step']:.4f} | "
                f"{r['intercept_ms']:.3f} | {r['r2']:.5f} |"
            )
    if result.get("compile"):
        c = result["compile"]
        warm = ", ".join(
            f"{k} {v['median']:.2f} s (best {v['best']:.2f} s)" for k, v in c["warm_first_step_seconds"].items()
        )
        lines += [
            "",
            f"Cold compile of the whole kernel set (both cells, both dtypes, empty cache): "
            f"{c['cold_compile_seconds']:.1f} s in one process; "
            f"{c['cold_compile_command_seconds']:.1f} s as `gradscope compile` (a process per dtype, "
            f"the whole command). Warm cache, process start to first computed step "
            f"(B=32, T=100, d=128): {warm}",
        ]
    if result.get("spectral"):
        lines += [
            "",
            "### Spectral radius and sigma_max of one changed W_hh (parameter_metrics, uncached)",
            "",
            "| cell | d | 1 BLAS thread | 2 BLAS threads | load |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in result["spectral"]:
            lines.append(
                f"| {r['cell']} | {r['d']} | {r['ms_1_thread']:.1f} ms | {r['ms_2_thread']:.1f} ms | {r['load']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the two small sizes, float32 only")
    parser.add_argument("--only", choices=["speed", "memory", "linear", "compile", "spectral"], action="append")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--cells", nargs="+", default=CELLS)
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        choices=range(len(SIZES)),
        metavar="I",
        help=f"indices into {SIZES} (default: all)",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for every peer (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved blocks per peer (default 5)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per peer and case")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    parts = set(args.only or ["speed", "memory", "linear", "compile", "spectral"])
    sizes = SIZES[:2] if args.quick else [SIZES[i] for i in args.sizes] if args.sizes else SIZES
    dtypes = ["float32"] if args.quick else args.dtype

    command = "python benchmarks/" + " ".join([Path(__file__).name] + (argv or sys.argv[1:]))
    result = {
        "command": command,
        "machine": machine_info(args.threads),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load": load(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    earlier = args.out / f"engine{suffix}.json"
    if args.only and earlier.exists():  # some parts again: the other parts' results stay
        result = dict(json.loads(earlier.read_text()), **{key: result[key] for key in ("machine", "load")})
        result.setdefault("updates", []).append(
            {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "parts": sorted(parts)}
        )

    def save():  # after every part: an interrupted run keeps what it measured
        result["load_end"] = load()
        (args.out / f"engine{suffix}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"engine{suffix}.md").write_text(markdown(result))

    if "compile" in parts:
        result["compile"] = bench_compile()
        save()
    if "speed" in parts:
        # in a process of its own, as the floor: the machine's BLAS overrides unset there, its own kernels.
        # Before and after the cases, and the higher kept: a peak taken while the shared machine was busy
        # read 223 GFLOP/s where it reads 369-414 (2026-12-08 00:40), and made every share look met.
        before, result["machine"]["peer_blas"] = remote_peak_gflops(dtypes, args.threads)
        result["speed"] = bench_speed(dtypes, sizes, args.cells, args.threads, args.rounds, args.budget)
        after, _ = remote_peak_gflops(dtypes, args.threads)
        result["peak_gflops"] = {dt: max(before[dt], after[dt]) for dt in before}
        result["peak_gflops_samples"] = {dt: [before[dt], after[dt]] for dt in before}
        save()
    if "memory" in parts:
        result["memory"] = bench_memory(args.cells, SIZES[-1] if not args.quick else SIZES[1], "float32", args.threads)
        save()
    if "linear" in parts:
        result["linear"] = bench_linear(args.cells, [50, 100, 200, 500, 1000], args.threads, args.rounds)
        save()
    if "spectral" in parts:
        result["spectral"] = bench_spectral()
    save()
    print(markdown(result))
    if result.get("speed"):  # every target this run measured, met or not (engine_targets.py)
        print("\n".join(target_lines(result["speed"], result.get("peak_gflops", {}))))


if __name__ == "__main__":
    main()
