"""Sweeps: 64 points on 1 and 2 local worker processes and on a Dask cluster of 2 workers on localhost, and the
per-point overhead of the dispatch and the result.

    python benchmarks/bench_sweep.py                 # 3 rounds; writes benchmarks/results/sweep.json and sweep.md
    python benchmarks/bench_sweep.py --rounds 1

The work: 64 points of a ReLU RNN (d = 128, T = 100, B = 16, n = k = 32, 5 SGD iterations) over 8 scales x 8
seeds, --no-traces (sweep.csv only).  Each configuration runs in the same round, one after the other, and the
rounds alternate their order, so a change in the machine's load hits them alike.  Timed: the points (from the
moment the workers are up to the last row written; ``points s``) and the whole run_sweep call (``total s``,
with the workers' start-up).  The Dask cluster (a LocalCluster: scheduler and two worker processes, one thread
each, and one BLAS / Numba thread per worker like the local pool's) is started before and is not timed, as a
cluster a user points GradScope at is already there.

Per-point overhead: 64 points of a tiny model (d = 4, T = 2, 0 iterations: ~0.1 ms of compute) on one local
worker; (points s - the points' own wall_seconds) / 64 is what the dispatch, the transfer, the row and the
atomic rewrite of sweep.csv cost per point.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gradscope import config  # noqa: E402  (the source tree's, whatever is installed)
from gradscope.config.sweep import Sweep  # noqa: E402
from gradscope.sweep import run_sweep  # noqa: E402

WORK = """
schema_version = 1
[experiment]
name = "bench-sweep"
[defaults]
hidden_size = {d}
[defaults.task]
seq_len = {T}
batch_size = {B}
input_size = {n}
output_size = {n}
[defaults.train]
iterations = {iterations}
lr = 0.0001
clip_norm = 1.0
[[runs]]
name = "relu"
"""


def experiment(tmp: Path, name: str, **sizes):
    path = tmp / f"{name}.toml"
    path.write_text(WORK.format(**sizes))
    base = config.load(path)
    keys = {"init.recurrent_scale": tuple(1.0 + 0.25 * i for i in range(8))}
    return base.model_copy(update={"sweep": Sweep(keys=keys, seeds=tuple(range(8)))})


def timed(exp, out: Path, **how) -> dict:
    started: list[float] = []

    def progress(p):
        if not started:
            started.append(time.perf_counter() - (time.monotonic() - p.started))

    t0 = time.perf_counter()
    summary = run_sweep(exp, out, traces=False, on_progress=progress, **how)
    total = time.perf_counter() - t0
    assert summary.progress.done == 64 and not summary.errors, summary.errors
    with open(out / "sweep.csv", newline="") as f:
        compute = sum(float(r["wall_seconds"]) for r in csv.DictReader(f))
    return {"total": total, "points": time.perf_counter() - started[0] if started else total, "compute": compute}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from distributed import LocalCluster

    # the cluster's workers get one BLAS / Numba thread each, like the local pool's (gradscope.sweep.pools): on a
    # machine others load too, a process with more threads takes a bigger share of the cores, not more work done
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = "1"
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    work = experiment(tmp, "work", d=128, T=100, B=16, n=32, iterations=5)
    tiny = experiment(tmp, "tiny", d=4, T=2, B=1, n=1, iterations=0)
    times: dict[str, list[dict]] = {"local 1": [], "local 2": [], "dask 2": [], "overhead": []}
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1", silence_logs=40
    ) as cluster:
        run_sweep(work, tmp / "warm", scheduler=cluster.scheduler_address, traces=False)  # workers load kernels
        for r in range(args.rounds):
            order = ["local 1", "local 2", "dask 2"]
            for name in order if r % 2 == 0 else order[::-1]:
                out = tmp / f"{name.replace(' ', '-')}-{r}"
                how = {"scheduler": cluster.scheduler_address} if name == "dask 2" else {"workers": int(name[-1])}
                times[name].append(timed(work, out, **how))
                print(name, {k: round(v, 3) for k, v in times[name][-1].items()}, file=sys.stderr)
            times["overhead"].append(timed(tiny, tmp / f"tiny-{r}", workers=1))
    med = {name: {k: statistics.median(t[k] for t in runs) for k in runs[0]} for name, runs in times.items()}
    overhead_ms = 1000 * (med["overhead"]["points"] - med["overhead"]["compute"]) / 64
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "median": med,
        "speedup_2_over_1_points": med["local 1"]["points"] / med["local 2"]["points"],
        "speedup_2_over_1_total": med["local 1"]["total"] / med["local 2"]["total"],
        "dask_over_local_points": med["dask 2"]["points"] / med["local 2"]["points"],
        "overhead_ms_per_point": overhead_ms,
        "rounds": times,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sweep.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| configuration | points s | total s (with start-up) |",
        "|---|---:|---:|",
        *(f"| {n} | {med[n]['points']:.2f} | {med[n]['total']:.2f} |" for n in ("local 1", "local 2", "dask 2")),
        "",
        f"2 local workers / 1: {result['speedup_2_over_1_points']:.2f}x (points), "
        f"{result['speedup_2_over_1_total']:.2f}x (total); Dask 2 workers / local 2: "
        f"{result['dask_over_local_points']:.2f}x the time; overhead {overhead_ms:.1f} ms per point; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
    ]
    (HERE / "results" / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
