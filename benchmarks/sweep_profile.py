"""Where a sweep's CPU goes, for bench_sweep.py --profile: per worker process (getrusage, its threads, its
exports), and the whole machine's cores over the points (/proc/stat: ours, everyone else's, the hypervisor's
steal), so that a 2-worker figure measured on a shared machine says how much of the two cores it had.

Linux only (/proc, RUSAGE_THREAD); elsewhere the figures are empty or zero.
"""

from __future__ import annotations

import os
import resource
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def thread_seconds() -> dict[str, float]:
    """This process's threads: name -> CPU seconds so far.  A pool that spins beside the compute thread
    (Numba's, BLAS's, OpenMP's: native threads, named after their process) shows here."""
    named = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            name = named.get(int(tid), "native " + stat[stat.index("(") + 1 : stat.rindex(")")])
            fields = stat[stat.rindex(")") + 2 :].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    except OSError:
        pass
    return out


def usage() -> tuple:
    """(user, system, voluntary switches, involuntary switches, this thread's CPU) of this process so far."""
    own, thread = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
    return (own.ru_utime, own.ru_stime, own.ru_nvcsw, own.ru_nivcsw, thread.ru_utime + thread.ru_stime)


class IoSeconds:
    """Wall (and CPU) seconds this process spends in wrapped functions: a worker's export and its syncfs."""

    def __init__(self):
        self.seconds = {"export": 0.0, "export_cpu": 0.0, "sync": 0.0}

    def wrap(self, function, wall: str, cpu: str | None = None):
        def timed_call(*args, **kwargs):
            t, c = time.monotonic(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[wall] += time.monotonic() - t
                if cpu:
                    self.seconds[cpu] += time.process_time() - c

        return timed_call


def machine_seconds() -> dict[str, float]:
    """The whole machine's CPU seconds so far (/proc/stat's first line: every process of every user): busy
    (user, nice, system, irq, softirq), system alone, steal (the hypervisor ran another guest) and idle."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) / TICK for v in f.readline().split()[1:9]]
    except OSError:
        return {}
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return {"busy": user + nice + system + irq + softirq, "system": system, "steal": steal, "idle": idle + iowait}


def children_seconds(pid: int | None = None) -> float:
    """CPU seconds so far of every process below ``pid`` (this one by default), their children included."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)], cpu[int(entry)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK
    below, frontier = set(), {os.getpid() if pid is None else pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return sum(cpu[p] for p in below)


def idle_cores(seconds: float = 2.0) -> tuple[float, float]:
    """Cores this process and its children take while nothing is asked of them (an idle Dask cluster's
    scheduler here and its workers below): (this process's, its children's), over ``seconds``."""
    t, own, kids = time.monotonic(), time.process_time(), children_seconds()
    time.sleep(seconds)
    wall = time.monotonic() - t
    return (time.process_time() - own) / wall, (children_seconds() - kids) / wall


def worker_profile(points: list) -> dict:
    """One worker's points [(start, end, cpu, extra, received)] -> its profile's figures (see profile_lines)."""
    total = [sum(u) for u in zip(*(x["usage"] for _, _, _, x, _ in points))]
    busy = sum(e - s for s, e, _, _, _ in points)
    cpu = sum(c for _, _, c, _, _ in points)
    return {
        "user": total[0],
        "sys": total[1],
        "compute_thread": total[4],  # the rest of the CPU is the worker's other threads
        "share": cpu / busy if busy else 0.0,  # of one core while it computed
        "preempted": total[3],  # involuntary context switches: the core was taken from it
        "waits": total[2],  # voluntary: it blocked (the disk, a lock, an idle pool's futex)
        "startup_cpu": points[0][3]["startup_cpu"],
        "threads": points[-1][3]["threads"],  # CPU seconds per thread name, the whole process so far
        **{k: sum(x["io"][k] for _, _, _, x, _ in points) for k in ("export", "export_cpu", "sync")},
    }


def machine_share(before: dict, after: dict, wall: float, workers_cpu: float, main_cpu: float) -> dict:
    """The machine's cores over ``wall`` seconds: busy = ours (the workers', the main process's) + others'."""
    if not before or not after or wall <= 0:
        return {}
    cores = {k: (after[k] - before[k]) / wall for k in after}
    ours = {"workers": workers_cpu / wall, "main": main_cpu / wall}
    return cores | ours | {"ours": sum(ours.values()), "others": cores["busy"] - sum(ours.values()), "wall": wall}


def profile_lines(p: dict) -> str:
    """The --profile lines of one configuration's phases."""

    def each(key: str, form: str = "{:.2f}") -> str:
        return "/".join(form.format(w[key]) for w in p["workers"])

    threads = " | ".join(
        ", ".join(f"{n} {v:.2f}" for n, v in sorted(w["threads"].items(), key=lambda kv: -kv[1]) if v >= 0.01)
        for w in p["workers"]
    )
    m = p.get("machine") or dict.fromkeys(("wall", "busy", "ours", "workers", "main", "others", "system"), 0.0)
    return (
        f"\n    per worker: point cpu median {each('point_cpu_ms', '{:.1f}')} ms, share of a core while computing "
        f"{each('share')}, user {each('user')} s, sys {each('sys')} s, compute thread {each('compute_thread')} s, "
        f"preempted {each('preempted', '{}')} times, waits {each('waits', '{}')}, start-up cpu "
        f"{each('startup_cpu')} s; exports {each('export')} s (cpu {each('export_cpu')}, syncfs {each('sync')})"
        f"\n    threads (cpu s, whole process): {threads}"
        f"\n    machine over the points ({m['wall']:.2f} s): busy {m['busy']:.2f} cores (system {m['system']:.2f}), "
        f"ours {m['ours']:.2f} (workers {m['workers']:.2f}, main {m['main']:.2f}), others {m['others']:.2f}, "
        f"steal {m.get('steal', 0.0):.2f}"
    )
