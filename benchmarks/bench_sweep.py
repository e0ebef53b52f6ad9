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
per worker like the local pool's) is started before the Dask configurations of each round, its workers' kernels
loaded, and is not timed, as a cluster a user points GradScope at is already there; it is closed before the
local ones (idle, it took 0.10-0.15 of the 2 cores from them: --idle-cluster keeps it up to measure that).

    python benchmarks/bench_sweep.py --rounds 2 --only local --profile   # the local pool alone, where its CPU goes

--profile prints, per configuration, each worker's getrusage split, its threads' CPU, its start-up CPU and its
seconds in exports and syncfs, and the machine's cores over the points (sweep_profile.py).

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
import contextlib
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
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the source tree's gradscope, whatever is installed; sweep_profile

import sweep_profile  # noqa: E402

from gradscope import config, io as gradscope_io  # noqa: E402
from gradscope.config.sweep import Sweep  # noqa: E402
from gradscope.sweep import pools, run_sweep, runner  # noqa: E402

PRESET = HERE.parent / "models" / "sweep_relu_init_scale.toml"
TARGET_SPEEDUP = 1.8  # 2 local workers against 1, points s
TARGET_DASK = 1.15  # Dask's 2 workers' time against the local pool of 2, at most
TARGET_OVERHEAD_MS = 50.0  # per point
PROFILE = False  # --profile: print each configuration's CPU in detail (see phase_line)
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


_first_point: list = []  # this worker's CPU seconds before its first point (spawn, imports, kernels)
_io = sweep_profile.IoSeconds()
pools.export_experiment = _io.wrap(pools.export_experiment, "export", "export_cpu")  # a worker's point export
gradscope_io.sync_tree = _io.wrap(gradscope_io.sync_tree, "sync")  # its syncfs (a wait for the disk)


def timed_point(index, run, seed, backend="numba", keep=True, stop=None, export=None, probe=None, **how):
    """compute_point, with the worker's pid, its start and end on the machine's clock, its CPU seconds and
    getrusage's split of them (user, system, voluntary and involuntary context switches, this thread's)."""
    if not _first_point:
        _first_point.append(time.process_time())
    io_before = dict(_io.seconds)
    before, start, cpu = sweep_profile.usage(), time.monotonic(), time.process_time()
    outcome = _compute_point(index, run, seed, backend, keep, stop, export=export, probe=probe, **how)
    end, after = time.monotonic(), sweep_profile.usage()
    extra = {
        "usage": tuple(a - b for a, b in zip(after, before)),
        "startup_cpu": _first_point[0],
        "threads": sweep_profile.thread_seconds(),
        "io": {k: v - io_before[k] for k, v in _io.seconds.items()},
    }
    outcome.measured = dict(outcome.measured, _phases=(os.getpid(), start, end, time.process_time() - cpu, extra))
    return outcome


pools.compute_point = timed_point  # here, in each spawned local worker (this file's top level), and for Dask


class Phases:
    """The main process's side: what the workers sent back, and its own time in sweep.csv and exports."""

    def __init__(self):
        self.points: list[tuple] = []  # (pid, start, end, cpu, extra, received)
        self.table = self.exports = self.sync = 0.0
        self.last_row = 0.0  # when sweep.csv last got rows: the points' end
        self.at_last_row: tuple = ({}, 0.0)  # the machine's CPU seconds and this process's then
        self._row_values, self._write_table, self._export, self._sync = (
            runner.row_values,
            runner.write_table,
            runner.export_experiment,
            getattr(runner, "sync_tree", None),  # None: a runner whose workers flush their exports themselves
        )
        runner.row_values, runner.write_table, runner.export_experiment = self.row, self.write, self.export
        if self._sync is not None:
            runner.sync_tree = self.flush

    def row(self, name, point, measured):
        if "_phases" in measured:  # not a point the main process marked failed
            self.points.append((*measured["_phases"], time.monotonic()))
        return self._row_values(name, point, measured)

    def write(self, *args, **kwargs):
        t = time.monotonic()
        self._write_table(*args, **kwargs)
        self.last_row = time.monotonic()
        self.table += self.last_row - t
        self.at_last_row = (sweep_profile.machine_seconds(), time.process_time())

    def export(self, *args, **kwargs):
        t = time.monotonic()
        out = self._export(*args, **kwargs)
        self.exports += time.monotonic() - t
        return out

    def flush(self, *args):  # the local workers' exports, flushed here before their rows
        t = time.monotonic()
        self._sync(*args)
        self.sync += time.monotonic() - t

    def close(self):
        runner.row_values, runner.write_table, runner.export_experiment = (
            self._row_values,
            self._write_table,
            self._export,
        )
        if self._sync is not None:
            runner.sync_tree = self._sync

    def summary(self, started: float) -> dict:
        workers = {}
        for pid, start, end, cpu, extra, received in sorted(self.points, key=lambda p: p[1]):
            workers.setdefault(pid, []).append((start, end, cpu, extra, received))
        per = []
        for points in workers.values():
            per.append(
                {
                    "points": len(points),
                    "busy": sum(e - s for s, e, _, _, _ in points),
                    "cpu": sum(c for _, _, c, _, _ in points),
                    "idle_between": sum(points[i + 1][0] - points[i][1] for i in range(len(points) - 1)),
                    "first_start": points[0][0] - started,
                    "last_end": points[-1][1] - started,
                    "result_lag_ms": 1000 * statistics.median(r - e for _, e, _, _, r in points),
                    "point_cpu_ms": 1000 * statistics.median(c for _, _, c, _, _ in points),
                    **sweep_profile.worker_profile(points),
                }
            )
        return {"workers": per, "main_table_s": self.table, "main_exports_s": self.exports, "main_sync_s": self.sync}


def phase_line(p: dict) -> str:
    def each(key: str, form: str = "{:.2f}") -> str:
        return "/".join(form.format(w[key]) for w in p["workers"])

    return (
        f"workers: {each('points', '{}')} points, busy {each('busy')} s (cpu {each('cpu')}), idle between points "
        f"{each('idle_between')} s, first at +{each('first_start')} s, last end {each('last_end')} s, result to row "
        f"{each('result_lag_ms', '{:.1f}')} ms; main process: cpu {p['main_cpu_s']:.2f} s, sweep.csv "
        f"{p['main_table_s']:.2f} s, exports {p['main_exports_s']:.2f} s, syncfs {p['main_sync_s']:.2f} s"
    ) + (sweep_profile.profile_lines(p) if PROFILE else "")


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
            machine.append(sweep_profile.machine_seconds())

    load = os.getloadavg()[0]
    phases = Phases()
    cpu, machine = [time.process_time()], [sweep_profile.machine_seconds()]
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
    phase = phases.summary(start) | {"main_cpu_s": time.process_time() - cpu[-1]}
    (after, main_cpu), wall = phases.at_last_row, phases.last_row - start
    workers_cpu = sum(w["cpu"] for w in phase["workers"])
    phase["machine"] = sweep_profile.machine_share(machine[-1], after, wall, workers_cpu, main_cpu - cpu[-1])
    return {
        "total": end - t0,
        "points": phases.last_row - start,  # to the last row written (not the workers' exit after it)
        "compute": sum(float(r["wall_seconds"]) for r in table),
        "load": load,
        "phases": phase,
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


@contextlib.contextmanager
def dask_cluster(work, warm: Path):
    """A LocalCluster on this host (a scheduler in this process, two worker processes of one thread each), its
    workers' kernels loaded (untimed: a cluster a user points GradScope at is up already); yields its address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1", silence_logs=40
    ) as cluster:
        few = work.model_copy(update={"sweep": Sweep(keys=work.sweep.keys, seeds=work.sweep.seeds[:2])})
        run_sweep(few, warm, scheduler=cluster.scheduler_address, traces=False)  # 16 points: each worker loads
        if PROFILE:
            own, workers = sweep_profile.idle_cores()
            print(f"idle Dask cluster: {own:.3f} cores (scheduler, here) + {workers:.3f} (workers)", file=sys.stderr)
        yield cluster.scheduler_address


def verdict(value: float, target: float, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    return f"target {'>=' if at_least else '<='} {target:g}: {'MET' if met else 'NOT MET'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print where each configuration's CPU went: per worker (getrusage, its threads), the machine",
    )
    parser.add_argument("--only", help="run only the configurations whose name starts with this (e.g. 'local')")
    parser.add_argument(
        "--idle-cluster",
        action="store_true",
        help="keep a Dask cluster up, idle, through every configuration (as this benchmark did before): what it "
        "costs the local pool",
    )
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    # the cluster's workers get one BLAS / Numba thread each, like the local pool's (gradscope.sweep.pools): on a
    # machine others load too, a process with more threads takes a bigger share of the cores, not more work done
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = "1"
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    work, tiny = work_experiment(), tiny_experiment(tmp)
    names = [name for name in CONFIGS if name.startswith(args.only or "")]
    times: dict[str, list[dict]] = {name: [] for name in [*names, "overhead"]}
    local, dask = [n for n in names if not n.startswith("dask")], [n for n in names if n.startswith("dask")]

    def run(name: str, r: int, address: str | None = None) -> None:
        how = CONFIGS[name] | ({"scheduler": address} if "scheduler" in CONFIGS[name] else {})
        times[name].append(t := timed(work, tmp / f"{name.replace(' ', '_')}-{r}", **how))
        print(
            f"{name}: points {t['points']:.2f} s, total {t['total']:.2f} s, load {t['load']:.1f}; "
            + phase_line(t["phases"]),
            file=sys.stderr,
        )

    run_sweep(tiny, tmp / "warm-local", workers=2)  # this process's kernels (the first load here took seconds)
    with dask_cluster(work, tmp / "warm-dask") if args.idle_cluster else contextlib.nullcontext() as idle:
        for r in range(args.rounds):
            order = (lambda names: names) if r % 2 == 0 else (lambda names: names[::-1])
            for group in order([local, dask]):
                if group is local:
                    for name in order(local):
                        run(name, r)
                elif dask:  # the cluster is up for its own configurations only: idle, it takes ~0.1 of 2 cores
                    with contextlib.nullcontext(idle) if idle else dask_cluster(work, tmp / f"dask-{r}") as address:
                        for name in order(dask):
                            run(name, r, address)
            if not args.only:
                times["overhead"].append(timed(tiny, tmp / f"tiny-{r}", workers=1))
    if args.only:  # a partial run: the 2-over-1 ratios it has, nothing saved
        for tail in ("", " --no-traces"):
            one, two = times.get("local 1" + tail), times.get("local 2" + tail)
            if one and two:
                ratio = statistics.median(t["points"] for t in one) / statistics.median(t["points"] for t in two)
                print(f"2 local workers / 1{tail}: {ratio:.2f}x, {verdict(ratio, TARGET_SPEEDUP, True)}")
        return 0
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
