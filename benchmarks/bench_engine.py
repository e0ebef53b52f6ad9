"""Engine speed and memory, measured against peers in the same run (see peers.py and docs/performance.md).

    python benchmarks/bench_engine.py                      # everything: float32 and float64 tables, ~15 min
    python benchmarks/bench_engine.py --quick              # the two small sizes, float32 only
    python benchmarks/bench_engine.py --only speed         # or: memory, linear, compile

Times are medians of the time per training step (forward + backward + every per-timestep metric, no optimizer),
2 threads everywhere (BLAS, Numba, PyTorch).  Writes benchmarks/results/engine.json and engine.md.
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

from peers import Case, GemmFloor, TorchFused, TorchInstrumented, make_data, sgemm_peak_gflops  # noqa: E402

THREADS = 2
SIZES = [(1, 100, 8, 32), (32, 100, 32, 128), (32, 200, 64, 256), (64, 500, 64, 512)]
CELLS = ["rnn-relu", "rnn-tanh", "lstm"]


def set_threads(n: int = THREADS):
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(n)
    torch.set_num_threads(n)
    return threadpool_limits(n)


class GradScopeStep:
    """GradScope's engine on the same weights and batch as the peers."""

    name = "gradscope"

    def __init__(self, case: Case, weights, x, target, parameter_metrics: bool = False):
        from gradscope.engine import LayerParams, ModelSpec, Params, bptt

        self.bptt = bptt
        self.spec = ModelSpec(cell="lstm" if case.cell == "lstm" else "rnn", activation=case.activation,
                              input_size=case.n, hidden_size=case.d, layers=1, output_size=case.k,
                              dtype=case.dtype)
        self.params = Params([LayerParams(weights["W_hx"], weights["W_hh"], weights["b_h"])],
                             weights["W_yh"], weights["b_y"])
        self.x, self.target = x, target
        self.mask = np.ones(x.shape[:2], dtype=x.dtype)
        self.workspace: dict = {}
        self.parameter_metrics = parameter_metrics

    def step(self):
        result = self.bptt(self.spec, self.params, self.x, self.target, self.mask, "mse", workspace=self.workspace)
        if self.parameter_metrics:
            from gradscope.engine.metrics import parameter_metrics

            parameter_metrics(self.spec, self.params, result.grads)
        return result.loss


def median_time(step, budget: float = 3.0, min_repeats: int = 3, max_repeats: int = 25) -> tuple[float, int]:
    step()  # warm-up: compile, allocate workspaces
    t0 = time.perf_counter()
    step()
    once = time.perf_counter() - t0
    repeats = int(np.clip(budget / max(once, 1e-6), min_repeats, max_repeats))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), repeats


def bench_speed(dtypes, sizes, cells, budget):
    rows = []
    for dtype in dtypes:
        for size in sizes:
            for cell in cells:
                case = Case(cell, *size, dtype=dtype)
                weights, x, target = make_data(case)
                row = {"cell": cell, "B": case.B, "T": case.T, "n": case.n, "d": case.d, "dtype": dtype,
                       "flops": case.flops()}
                peers = [("gradscope", GradScopeStep), ("gradscope+param", None), ("torch_fused", TorchFused),
                         ("torch_instrumented", TorchInstrumented), ("floor", GemmFloor)]
                for key, cls in peers:
                    if key == "gradscope+param":
                        runner = GradScopeStep(case, weights, x, target, parameter_metrics=True)
                    else:
                        runner = cls(case, weights, x, target)
                    seconds, row[key + "_repeats"] = median_time(runner.step, budget)
                    row[key + "_ms"] = seconds * 1e3
                    del runner
                row["floor_gflops"] = case.flops() / (row["floor_ms"] / 1e3) / 1e9
                row["gradscope_gflops"] = case.flops() / (row["gradscope_ms"] / 1e3) / 1e9
                row["vs_floor"] = row["gradscope_ms"] / row["floor_ms"]
                row["speedup_vs_torch_instrumented"] = row["torch_instrumented_ms"] / row["gradscope_ms"]
                row["speedup_vs_torch_fused"] = row["torch_fused_ms"] / row["gradscope_ms"]
                print(f"{case.label():52s} gradscope {row['gradscope_ms']:9.3f} ms  fused {row['torch_fused_ms']:9.3f}"
                      f"  instrumented {row['torch_instrumented_ms']:9.3f}  floor {row['floor_ms']:9.3f}"
                      f"  -> {row['vs_floor']:.2f}x floor, {row['speedup_vs_torch_instrumented']:.1f}x faster than "
                      f"instrumented, {row['speedup_vs_torch_fused']:.2f}x vs fused", file=sys.stderr, flush=True)
                rows.append(row)
    return rows


MEMORY_CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    sys.path.insert(0, {here!r}); sys.path.insert(0, {root!r})
    from peers import Case, make_data
    from bench_engine import GradScopeStep, set_threads
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    limits = set_threads()
    case = Case({cell!r}, {B}, {T}, {n}, {d}, {dtype!r})
    small = GradScopeStep(Case({cell!r}, 2, 5, {n}, 8, {dtype!r}), *make_data(Case({cell!r}, 2, 5, {n}, 8, {dtype!r})))
    small.step()                                     # compile / load kernels before measuring
    runner = GradScopeStep(case, *make_data(case))
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")    # reset the peak (VmHWM) to the current RSS
    runner.step()
    peak = status("VmHWM")
    print(json.dumps({{"base": base, "peak": peak}}))
""")


def bench_memory(cells, size, dtype):
    rows = []
    for cell in cells:
        case = Case(cell, *size, dtype=dtype)
        code = MEMORY_CHILD.format(here=str(HERE), root=str(ROOT), cell=cell, B=case.B, T=case.T, n=case.n,
                                   d=case.d, dtype=dtype)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        extra = m["peak"] - m["base"]
        row = {"cell": cell, "B": case.B, "T": case.T, "n": case.n, "d": case.d, "dtype": dtype,
               "peak_extra_bytes": extra, "must_keep_bytes": case.state_bytes(),
               "ratio": extra / case.state_bytes()}
        print(f"memory {case.label()}: peak extra {extra / 2**20:.0f} MiB, BPTT must keep "
              f"{case.state_bytes() / 2**20:.0f} MiB -> {row['ratio']:.2f}x", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def bench_linear(cells, Ts, B=32, n=32, d=128, dtype="float32", budget=2.0):
    rows = []
    for cell in cells:
        times = []
        for T in Ts:
            case = Case(cell, B, T, n, d, dtype)
            runner = GradScopeStep(case, *make_data(case))
            times.append(median_time(runner.step, budget)[0])
        slope, intercept = np.polyfit(Ts, times, 1)
        pred = slope * np.asarray(Ts) + intercept
        r2 = 1 - np.sum((np.asarray(times) - pred) ** 2) / np.sum((np.asarray(times) - np.mean(times)) ** 2)
        rows.append({"cell": cell, "B": B, "n": n, "d": d, "dtype": dtype, "T": list(Ts),
                     "ms": [t * 1e3 for t in times], "ms_per_step": slope * 1e3, "intercept_ms": intercept * 1e3,
                     "r2": float(r2)})
        print(f"linear in T {cell}: {slope * 1e3:.4f} ms per timestep, intercept {intercept * 1e3:.3f} ms, "
              f"R^2 = {r2:.5f}", file=sys.stderr, flush=True)
    return rows


COMPILE_CHILD = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    from gradscope.engine import ModelSpec, cells
    specs = [ModelSpec(cell=c, activation="relu", dtype=dt) for c in ("rnn", "lstm") for dt in ("float32", "float64")]
    for spec in specs:
        cells.compile_kernels(spec)
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
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = float(subprocess.run([sys.executable, "-c", COMPILE_CHILD], env=env, capture_output=True, text=True,
                                    check=True, cwd=ROOT).stdout.split()[-1])
        print(f"cold compile of the whole kernel set: {cold:.1f} s", file=sys.stderr, flush=True)
        first = {}
        for cell in ("rnn", "lstm"):
            runs = []
            for _ in range(3):
                t0 = time.time()
                out = subprocess.run([sys.executable, "-c", FIRST_STEP_CHILD.format(cell=cell)], env=env,
                                     capture_output=True, text=True, check=True, cwd=ROOT)
                runs.append(float(out.stdout.split()[-1]) - t0)
            first[cell] = min(runs)
            print(f"warm cache, process start to first computed {cell} step (B=32, T=100, d=128): "
                  f"{first[cell]:.2f} s (best of 3)", file=sys.stderr, flush=True)
    return {"cold_compile_seconds": cold, "warm_first_step_seconds": first}


def machine_info():
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numba
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "torch": torch.__version__, "threads": THREADS,
            "blas": [{k: lib.get(k) for k in ("filepath", "internal_api", "version", "architecture", "num_threads")}
                     for lib in threadpool_info()]}


def markdown(result) -> str:
    lines = [f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, {THREADS} threads everywhere; "
             f"BLAS kernels: " + ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']})"
                                           for b in result["machine"]["blas"]), ""]
    if result.get("speed"):
        lines.append(f"Large-sgemm peak measured in the same run: {result['sgemm_peak_gflops']:.0f} GFLOP/s")
        for dtype in sorted({r["dtype"] for r in result["speed"]}, reverse=True):
            lines += ["", f"### {dtype}: median ms per training step", "",
                      "| cell | (B, T, n, d) | GradScope | + param. metrics | PyTorch fused | PyTorch instrumented | "
                      "NumPy GEMM floor (GFLOP/s) | GradScope / floor | speed-up vs instrumented | vs fused |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in (r for r in result["speed"] if r["dtype"] == dtype):
                lines.append(f"| {r['cell']} | ({r['B']}, {r['T']}, {r['n']}, {r['d']}) | {r['gradscope_ms']:.3f} | "
                             f"{r['gradscope+param_ms']:.3f} | {r['torch_fused_ms']:.3f} | "
                             f"{r['torch_instrumented_ms']:.3f} | {r['floor_ms']:.3f} ({r['floor_gflops']:.0f}) | "
                             f"{r['vs_floor']:.2f}x | {r['speedup_vs_torch_instrumented']:.1f}x | "
                             f"{r['speedup_vs_torch_fused']:.2f}x |")
    if result.get("memory"):
        lines += ["", "### Peak extra memory of one training step", "",
                  "| cell | (B, T, n, d) | peak extra | BPTT must keep | ratio |", "|---|---|---:|---:|---:|"]
        for r in result["memory"]:
            lines.append(f"| {r['cell']} | ({r['B']}, {r['T']}, {r['n']}, {r['d']}) | "
                         f"{r['peak_extra_bytes'] / 2**20:.0f} MiB | {r['must_keep_bytes'] / 2**20:.0f} MiB | "
                         f"{r['ratio']:.2f}x |")
    if result.get("linear"):
        lines += ["", "### Time against T (B=32, n=32, d=128, float32)", "",
                  "| cell | T | ms | fit: ms per timestep | intercept ms | R^2 |", "|---|---|---|---:|---:|---:|"]
        for r in result["linear"]:
            lines.append(f"| {r['cell']} | {', '.join(map(str, r['T']))} | {', '.join(f'{v:.2f}' for v in r['ms'])} "
                         f"| {r['ms_per_step']:.4f} | {r['intercept_ms']:.3f} | {r['r2']:.5f} |")
    if result.get("compile"):
        c = result["compile"]
        lines += ["", f"Cold compile of the whole kernel set: {c['cold_compile_seconds']:.1f} s. Warm cache, process "
                      f"start to first computed step: " + ", ".join(f"{k} {v:.2f} s"
                                                                  for k, v in c["warm_first_step_seconds"].items())]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the two small sizes, float32 only")
    parser.add_argument("--only", choices=["speed", "memory", "linear", "compile"], action="append")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--cells", nargs="+", default=CELLS)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per measurement")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    parts = set(args.only or ["speed", "memory", "linear", "compile"])
    sizes = SIZES[:2] if args.quick else SIZES
    dtypes = ["float32"] if args.quick else args.dtype

    limits = set_threads()
    result = {"command": "python benchmarks/" + " ".join([Path(__file__).name] + (argv or sys.argv[1:])),
              "machine": machine_info(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if "compile" in parts:
        result["compile"] = bench_compile()
    if "speed" in parts:
        result["sgemm_peak_gflops"] = sgemm_peak_gflops()
        result["speed"] = bench_speed(dtypes, sizes, args.cells, args.budget)
    if "memory" in parts:
        result["memory"] = bench_memory(args.cells, SIZES[-1] if not args.quick else SIZES[1], "float32")
    if "linear" in parts:
        result["linear"] = bench_linear(args.cells, [50, 100, 200, 500, 1000])
    del limits
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (args.out / f"engine{suffix}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"engine{suffix}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
