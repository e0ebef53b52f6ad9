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
import contextlib
import csv
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gradscope import config, io as gradscope_io  # noqa: E402  (the source tree's, whatever is installed)
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


def thread_seconds() -> dict[str, float]:
    """This process's threads: name -> CPU seconds (Linux /proc; empty elsewhere).  A pool that spins beside
    the compute thread shows here."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    named = {t.native_id: t.name for t in threading.enumerate()}  # the rest are native (Numba's, BLAS's, ...)
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            name = named.get(int(tid), "native " + stat[stat.index("(") + 1 : stat.rindex(")")])
            fields = stat[stat.rindex(")") + 2 :].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    except OSError:
        pass
    return out


def _usage() -> tuple:
    self, thread = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
    return (self.ru_utime, self.ru_stime, self.ru_nvcsw, self.ru_nivcsw, thread.ru_utime + thread.ru_stime)


_first_point: list = []  # this worker's CPU seconds before its first point (spawn, imports, kernels)
_io_seconds = {"export": 0.0, "export_cpu": 0.0, "sync": 0.0}  # this process's, so far


def _timing(function, wall: str, cpu: str | None = None):
    def timed_call(*args, **kwargs):
        t, c = time.monotonic(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            _io_seconds[wall] += time.monotonic() - t
            if cpu:
                _io_seconds[cpu] += time.process_time() - c

    return timed_call


pools.export_experiment = _timing(pools.export_experiment, "export", "export_cpu")  # a worker's point export
gradscope_io.sync_tree = _timing(gradscope_io.sync_tree, "sync")  # its syncfs (waits for the disk)


def timed_point(index, run, seed, backend="numba", keep=True, stop=None, export=None, probe=None):
    """compute_point, with the worker's pid, its start and end on the machine's clock, its CPU seconds and
    getrusage's split of them (user, system, voluntary and involuntary context switches, this thread's)."""
    if not _first_point:
        _first_point.append(time.process_time())
    io_before = dict(_io_seconds)
    before, start, cpu = _usage(), time.monotonic(), time.process_time()
    outcome = _compute_point(index, run, seed, backend, keep, stop, export=export, probe=probe)
    end, after = time.monotonic(), _usage()
    usage = tuple(a - b for a, b in zip(after, before))
    io = {k: v - io_before[k] for k, v in _io_seconds.items()}
    extra = {"usage": usage, "startup_cpu": _first_point[0], "threads": thread_seconds(), "io": io}
    outcome.measured = dict(outcome.measured, _phases=(os.getpid(), start, end, time.process_time() - cpu, extra))
    return outcome


pools.compute_point = timed_point  # here, in each spawned local worker (this file's top level), and for Dask


class Phases:
    """The main process's side: what the workers sent back, and its own time in sweep.csv and exports."""

    def __init__(self):
        self.points: list[tuple] = []  # (pid, start, end, cpu, extra, received)
        self.table = self.exports = 0.0
        self.last_row = 0.0  # when sweep.csv last got rows: the points' end
        self.at_last_row: tuple = ({}, 0.0)  # the machine's CPU seconds and this process's then
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
        self.at_last_row = (machine_seconds(), time.process_time())

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
        for pid, start, end, cpu, extra, received in sorted(self.points, key=lambda p: p[1]):
            workers.setdefault(pid, []).append((start, end, cpu, extra, received))
        per = []
        for points in workers.values():
            usage = [sum(u) for u in zip(*(x["usage"] for _, _, _, x, _ in points))]
            busy = sum(e - s for s, e, _, _, _ in points)
            per.append(
                {
                    "points": len(points),
                    "busy": busy,
                    "cpu": sum(c for _, _, c, _, _ in points),
                    "user": usage[0],
                    "sys": usage[1],
                    "compute_thread": usage[4],  # the rest of "cpu" is the worker's other threads
                    "share": sum(c for _, _, c, _, _ in points) / busy,  # of one core while it computed
                    "preempted": usage[3],  # involuntary context switches: the core was taken from it
                    "waits": usage[2],  # voluntary: it blocked (I/O, a lock, a futex of an idle pool)
                    "startup_cpu": points[0][3]["startup_cpu"],
                    "threads": points[-1][3]["threads"],  # CPU seconds per thread name, the whole process
                    "idle_between": sum(points[i + 1][0] - points[i][1] for i in range(len(points) - 1)),
                    "first_start": points[0][0] - started,
                    "last_end": points[-1][1] - started,
                    "result_lag_ms": 1000 * statistics.median(r - e for _, e, _, _, r in points),
                    "point_cpu_ms": 1000 * statistics.median(c for _, _, c, _, _ in points),
                    **{k: sum(x["io"][k] for _, _, _, x, _ in points) for k in ("export", "export_cpu", "sync")},
                }
            )
        return {"workers": per, "main_table_s": self.table, "main_exports_s": self.exports}


def machine_seconds() -> dict[str, float]:
    """The whole machine's CPU seconds so far (/proc/stat's first line, every process of every user; Linux):
    busy (user, nice, system, irq, softirq), steal (the hypervisor gave the core to another guest) and idle."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) / os.sysconf("SC_CLK_TCK") for v in f.readline().split()[1:9]]
    except OSError:
        return {}
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return {"busy": user + nice + system + irq + softirq, "steal": steal, "idle": idle + iowait}


def phase_line(p: dict) -> str:
    def each(key: str, form: str = "{:.2f}") -> str:
        return "/".join(form.format(w[key]) for w in p["workers"])

    line = (
        f"workers: {each('points', '{}')} points, busy {each('busy')} s (cpu {each('cpu')}), idle between points "
        f"{each('idle_between')} s, first at +{each('first_start')} s, last end {each('last_end')} s, result to row "
        f"{each('result_lag_ms', '{:.1f}')} ms; main process: cpu {p['main_cpu_s']:.2f} s, sweep.csv "
        f"{p['main_table_s']:.2f} s, exports {p['main_exports_s']:.2f} s"
    )
    if not PROFILE:
        return line
    m = p.get("machine", {})
    return line + (
        f"\n    per worker: point cpu median {each('point_cpu_ms', '{:.1f}')} ms, share of a core while computing "
        f"{each('share')}, user {each('user')} s, sys {each('sys')} s, compute thread {each('compute_thread')} s, "
        f"preempted {each('preempted', '{}')} times, waits {each('waits', '{}')}, start-up cpu "
        f"{each('startup_cpu')} s; exports {each('export')} s (cpu {each('export_cpu')}, syncfs "
        f"{each('sync')})\n    threads (cpu s): "
        + " | ".join(
            ", ".join(f"{n} {v:.2f}" for n, v in sorted(w["threads"].items(), key=lambda kv: -kv[1]) if v >= 0.01)
            for w in p["workers"]
        )
        + f"\n    machine over the points ({m.get('wall', 0):.2f} s): busy {m.get('busy', 0):.2f} cores, ours "
        f"{m.get('ours', 0):.2f} (workers {m.get('workers', 0):.2f}, main {m.get('main', 0):.2f}), others "
        f"{m.get('others', 0):.2f}, steal {m.get('steal', 0):.2f}, idle {m.get('idle', 0):.2f}"
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
            machine.append(machine_seconds())

    load = os.getloadavg()[0]
    phases = Phases()
    cpu, machine = [time.process_time()], [machine_seconds()]
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
    if after and machine[-1]:  # in cores over the points: busy = ours + everyone else's
        cores = {k: (after[k] - machine[-1][k]) / wall for k in after}
        ours = {"workers": sum(w["cpu"] for w in phase["workers"]) / wall, "main": (main_cpu - cpu[-1]) / wall}
        others = cores["busy"] - ours["workers"] - ours["main"]
        phase["machine"] = cores | ours | {"ours": ours["workers"] + ours["main"], "others": others, "wall": wall}
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
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    from distributed import LocalCluster

    # the cluster's workers get one BLAS / Numba thread each, like the local pool's (gradscope.sweep.pools): on a
    # machine others load too, a process with more threads takes a bigger share of the cores, not more work done
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = "1"
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    work, tiny = work_experiment(), tiny_experiment(tmp)
    names = [name for name in CONFIGS if name.startswith(args.only or "")]
    times: dict[str, list[dict]] = {name: [] for name in [*names, "overhead"]}
    dask = any(name.startswith("dask") for name in names)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1", silence_logs=40
        )
        if dask
        else contextlib.nullcontext()
    ) as cluster:
        if dask:
            run_sweep(work, tmp / "warm", scheduler=cluster.scheduler_address, traces=False)  # workers load kernels
        run_sweep(tiny, tmp / "warm-local", workers=2)  # and this process (the first load here took seconds)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
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
