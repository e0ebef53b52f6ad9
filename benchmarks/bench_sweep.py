"""Sweeps: 64 points of the shipped ReLU sweep on 1 and 2 local worker processes and on a Dask cluster of 2
workers on localhost, and the per-point overhead of the dispatch and the result; prints each target and
whether it is met.

    python benchmarks/bench_sweep.py                 # 3 rounds; writes benchmarks/results/sweep.json and sweep.md
    python benchmarks/bench_sweep.py --rounds 2      # ~1 min on the idle 2-core machine

The work is what users run: models/sweep_relu_init_scale.toml as shipped (ReLU RNN, d = 256, T = 100, B = 16,
one forward/backward at initialisation, defaults on), its first 8 scales x its 8 seeds = 64 points, each
point's export kept (traces, initial parameters, first batch: DIR/points/<point>/).  The same points with
--no-traces (sweep.csv only) are separate rows.  Each configuration runs once per round and the rounds
alternate their order (1, 2, Dask, then the same --no-traces, then backwards), so a change in the
machine's load hits them alike; the 1-minute load average is printed before each.  Timed: the points (from
the moment the workers are up to the last row written; ``points s``, what the targets are about) and the
whole run_sweep call (``total s``, with the workers' start-up: spawn, import, kernels from the cache).  The
Dask cluster (a LocalCluster: scheduler and two worker processes, one thread each, and one BLAS / Numba thread
per worker like the local pool's) is started before and is not timed, as a cluster a user points GradScope at
is already there.

Phases, in both processes (CLOCK_MONOTONIC is one clock for every process of the machine): each worker's
points (how many, busy and CPU seconds, idle seconds between its points, when its first point started and its
last ended) and the main process's CPU seconds over the points and its time rewriting sweep.csv and writing
exports (a Dask point's export is written by the main process; a local worker writes its own).  The timing
wrapper is this file's own ``timed_point``: spawned local workers run this file's top level (as __mp_main__),
so they wrap compute_point too; Dask receives it by value.

Per-point overhead: 64 points of a tiny model (d = 4, T = 2, 0 iterations: ~0.1 ms of compute) on one local
worker, exports kept; (points s - the points' own wall_seconds) / 64 is what the dispatch, the transfer, the
point's export, the row and the atomic rewrite of sweep.csv cost per point.

Every configuration's rows are compared: every column but wall_seconds must be the same text.
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
from gradscope.sweep import pools, run_sweep, runner  # noqa: E402

PRESET = HERE.parent / "models" / "sweep_relu_init_scale.toml"
TARGET_SPEEDUP = 1.8  # 2 local workers against 1, points s
TARGET_DASK = 1.15  # Dask's 2 workers' time against the local pool of 2, at most
TARGET_OVERHEAD_MS = 50.0  # per point
IDLE_LOAD = 0.5  # a 1-minute load average above this (before a configuration): the machine was not idle

TINY = """
schema_version = 1
[experiment]
name = "bench-sweep-tiny"
[defaults]
hidden_size = 4
[defaults.task]
seq_len = 2
batch_size = 1
input_size = 1
output_size = 1
[defaults.train]
iterations = 0
[[runs]]
name = "relu"
"""

# ------------------------------------------------------------------------------------------ phases
_compute_point = pools.compute_point


def timed_point(index, run, seed, backend="numba", keep=True, stop=None, export=None, probe=None):
    """compute_point, with the worker's pid, its start and end on the machine's clock and its CPU seconds."""
    start, cpu = time.monotonic(), time.process_time()
    outcome = _compute_point(index, run, seed, backend, keep, stop, export=export, probe=probe)
    outcome.measured = dict(outcome.measured, _phases=(os.getpid(), start, time.monotonic(), time.process_time() - cpu))
    return outcome


pools.compute_point = timed_point  # here, in each spawned local worker (this file's top level), and for Dask


class Phases:
    """The main process's side: what the workers sent back, and its own time in sweep.csv and exports."""

    def __init__(self):
        self.points: list[tuple] = []  # (pid, start, end, cpu, received)
        self.table = self.exports = 0.0
        self.last_row = 0.0  # when sweep.csv last got rows: the points' end
        self._row_values, self._write_table, self._export = (
            runner.row_values,
            runner.write_table,
            runner.export_experiment,
        )
        runner.row_values, runner.write_table, runner.export_experiment = self.row, self.write, self.export

    def row(self, name, point, measured):
        if "_phases" in measured:  # not a point the main process marked failed
            self.points.append((*measured["_phases"], time.monotonic()))
        return self._row_values(name, point, measured)

    def write(self, *args, **kwargs):
        t = time.monotonic()
        self._write_table(*args, **kwargs)
        self.last_row = time.monotonic()
        self.table += self.last_row - t

    def export(self, *args, **kwargs):
        t = time.monotonic()
        out = self._export(*args, **kwargs)
        self.exports += time.monotonic() - t
        return out

    def close(self):
        runner.row_values, runner.write_table, runner.export_experiment = (
            self._row_values,
            self._write_table,
            self._export,
        )

    def summary(self, started: float) -> dict:
        workers = {}
        for pid, start, end, cpu, received in sorted(self.points, key=lambda p: p[1]):
            workers.setdefault(pid, []).append((start, end, cpu, received))
        per = []
        for points in workers.values():
            per.append(
                {
                    "points": len(points),
                    "busy": sum(e - s for s, e, _, _ in points),
                    "cpu": sum(c for _, _, c, _ in points),
                    "idle_between": sum(points[i + 1][0] - points[i][1] for i in range(len(points) - 1)),
                    "first_start": points[0][0] - started,
                    "last_end": points[-1][1] - started,
                    "result_lag_ms": 1000 * statistics.median(r - e for _, e, _, r in points),
                }
            )
        return {"workers": per, "main_table_s": self.table, "main_exports_s": self.exports}


def phase_line(p: dict) -> str:
    def each(key: str, form: str = "{:.2f}") -> str:
        return "/".join(form.format(w[key]) for w in p["workers"])

    return (
        f"workers: {each('points', '{}')} points, busy {each('busy')} s (cpu {each('cpu')}), idle between points "
        f"{each('idle_between')} s, first at +{each('first_start')} s, last end {each('last_end')} s, result to row "
        f"{each('result_lag_ms', '{:.1f}')} ms; main process: cpu {p['main_cpu_s']:.2f} s, sweep.csv "
        f"{p['main_table_s']:.2f} s, exports {p['main_exports_s']:.2f} s"
    )


# ------------------------------------------------------------------------------------------ the runs
def work_experiment():
    """The shipped preset, its sweep cut to its first 8 scales (x its 8 seeds: 64 points)."""
    preset = config.load(PRESET)
    scales = preset.sweep.keys["init.recurrent_scale"][:8]
    return preset.model_copy(update={"sweep": Sweep(keys={"init.recurrent_scale": scales}, seeds=preset.sweep.seeds)})


def tiny_experiment(tmp: Path):
    path = tmp / "tiny.toml"
    path.write_text(TINY)
    base = config.load(path)
    keys = {"init.recurrent_scale": tuple(1.0 + 0.25 * i for i in range(8))}
    return base.model_copy(update={"sweep": Sweep(keys=keys, seeds=tuple(range(8)))})


def timed(exp, out: Path, **how) -> dict:
    started: list[float] = []

    def progress(p):
        if not started:  # the workers are up: the points' phase starts
            started.append(p.started)  # time.monotonic()
            cpu.append(time.process_time())

    load = os.getloadavg()[0]
    phases = Phases()
    cpu = [time.process_time()]
    t0 = time.monotonic()
    try:
        summary = run_sweep(exp, out, on_progress=progress, **how)
    finally:
        phases.close()
    end = time.monotonic()
    assert summary.progress.done == 64 and not summary.errors, summary.errors
    with open(out / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    start = started[0] if started else t0
    return {
        "total": end - t0,
        "points": phases.last_row - start,  # to the last row written (not the workers' exit after it)
        "compute": sum(float(r["wall_seconds"]) for r in table),
        "load": load,
        "phases": phases.summary(start) | {"main_cpu_s": time.process_time() - cpu[-1]},
        "rows": [[v for k, v in r.items() if k != "wall_seconds"] for r in table],
    }


CONFIGS = {  # name: run_sweep's arguments (the scheduler's address is filled in)
    "local 1": {"workers": 1},
    "local 2": {"workers": 2},
    "dask 2": {"scheduler": None},
    "local 1 --no-traces": {"workers": 1, "traces": False},
    "local 2 --no-traces": {"workers": 2, "traces": False},
    "dask 2 --no-traces": {"scheduler": None, "traces": False},
}


def verdict(value: float, target: float, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    return f"target {'>=' if at_least else '<='} {target:g}: {'MET' if met else 'NOT MET'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from distributed import LocalCluster

    # the cluster's workers get one BLAS / Numba thread each, like the local pool's (gradscope.sweep.pools): on a
    # machine others load too, a process with more threads takes a bigger share of the cores, not more work done
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = "1"
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    work, tiny = work_experiment(), tiny_experiment(tmp)
    times: dict[str, list[dict]] = {name: [] for name in [*CONFIGS, "overhead"]}
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1", silence_logs=40
    ) as cluster:
        run_sweep(work, tmp / "warm", scheduler=cluster.scheduler_address, traces=False)  # workers load kernels
        run_sweep(tiny, tmp / "warm-local", workers=2)  # and this process (the first load here took seconds)
        for r in range(args.rounds):
            for name in list(CONFIGS) if r % 2 == 0 else list(CONFIGS)[::-1]:
                out = tmp / f"{name.replace(' ', '_')}-{r}"
                how = dict(CONFIGS[name])
                if "scheduler" in how:
                    how["scheduler"] = cluster.scheduler_address
                times[name].append(timed(work, out, **how))
                t = times[name][-1]
                print(
                    f"{name}: points {t['points']:.2f} s, total {t['total']:.2f} s, load {t['load']:.1f}; "
                    + phase_line(t["phases"]),
                    file=sys.stderr,
                )
            times["overhead"].append(timed(tiny, tmp / f"tiny-{r}", workers=1))
    reference = times["local 1"][0]["rows"]
    same = all(t["rows"] == reference for name in CONFIGS for t in times[name])
    for runs in times.values():
        for t in runs:
            del t["rows"]
    med = {
        name: {k: statistics.median(t[k] for t in runs) for k in ("total", "points", "compute", "load")}
        for name, runs in times.items()
    }
    overhead_ms = 1000 * (med["overhead"]["points"] - med["overhead"]["compute"]) / 64
    loads = [t["load"] for runs in times.values() for t in runs]
    speedup = med["local 1"]["points"] / med["local 2"]["points"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": "python benchmarks/bench_sweep.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": load_before},
        "work": f"{PRESET.name}: 64 points, exports kept (and --no-traces rows)",
        "median": med,
        "speedup_2_over_1_points": speedup,
        "speedup_2_over_1_total": med["local 1"]["total"] / med["local 2"]["total"],
        "speedup_2_over_1_points_no_traces": med["local 1 --no-traces"]["points"]
        / med["local 2 --no-traces"]["points"],
        "dask_over_local_points": med["dask 2"]["points"] / med["local 2"]["points"],
        "dask_over_local_points_no_traces": med["dask 2 --no-traces"]["points"] / med["local 2 --no-traces"]["points"],
        "overhead_ms_per_point": overhead_ms,
        "rows_identical": same,
        "load_1min": {"before": load_before[0], "min": min(loads), "max": max(loads), "end": os.getloadavg()[0]},
        "rounds": times,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "sweep.json").write_text(json.dumps(result, indent=2))
    busy = max(loads) > IDLE_LOAD
    lines = [
        f"64 points of {PRESET.name} (d = 256, T = 100), medians of {args.rounds} round(s); "
        f"1-minute load average {load_before[0]:.1f} before, {min(loads):.1f} to {max(loads):.1f} during, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs",
        "",
        "| configuration | points s | total s (with start-up) | load |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {med[n]['points']:.2f} | {med[n]['total']:.2f} | {med[n]['load']:.1f} |" for n in CONFIGS),
        "",
        f"2 local workers / 1 (points, exports kept): {speedup:.2f}x, {verdict(speedup, TARGET_SPEEDUP, True)}"
        f" (total {result['speedup_2_over_1_total']:.2f}x; "
        f"--no-traces {result['speedup_2_over_1_points_no_traces']:.2f}x)",
        f"Dask 2 workers / local 2 (points, exports kept): {result['dask_over_local_points']:.2f}x the time, "
        + verdict(result["dask_over_local_points"], TARGET_DASK, False)
        + f" (--no-traces {result['dask_over_local_points_no_traces']:.2f}x; the exports are written by the workers "
        "in both: these Dask workers see the sweep's folder)",
        f"per-point overhead: {overhead_ms:.1f} ms, {verdict(overhead_ms, TARGET_OVERHEAD_MS, False)}",
        f"rows: {'identical' if same else 'NOT IDENTICAL'} (every column but wall_seconds) in every configuration",
    ]
    if busy:
        lines.append(
            f"NOTE: the machine was not idle (load above {IDLE_LOAD} during the run): 2-worker scaling cannot be "
            "judged from this run; measure again on the idle machine"
        )
    (HERE / "results" / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
