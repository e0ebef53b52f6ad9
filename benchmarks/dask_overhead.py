"""What a sweep point costs Dask itself, apart from its computation: CPU seconds of the scheduler (in this
process, as bench_sweep.py's LocalCluster has it) and of the two workers, per point, for ways of sending
points to a cluster of 2 workers of 1 thread each on localhost.

    python benchmarks/dask_overhead.py            # 64 points of 40 ms asleep each (no CPU of their own)

The points sleep, so every CPU second measured is the dispatch's and the result's: the scheduler's (this
process's CPU, minus the client's share, which is here too) and the workers' (their processes' CPU over the
points, their event loops' messages, heartbeats and profiler).  Ways:

    task each     one Dask task per point, 2 in flight per worker, each result fetched by its future's callback
                  (DaskPool before session 9)
    task          one Dask task per point, all sent at once, their results gathered together
    task direct   the same, the result fetched from the worker directly, not through the scheduler
    batch 4       one task per 4 points, the 4 outcomes in its one result
    actor         one actor per worker thread, one call per point (straight to its worker, no scheduler)
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import wait

POINTS = 64
SLEEP = 0.04


def point(i: int) -> dict:
    time.sleep(SLEEP)
    return {"index": i, "status": "completed"}


def batch(indices: list[int]) -> list[dict]:
    return [point(i) for i in indices]


class Runner:
    def run(self, i: int) -> dict:
        return point(i)


def workers_cpu(client) -> float:
    return sum(client.run(time.process_time).values())


def way(client, name: str) -> tuple[float, float, float]:
    """(wall s, this process's CPU s, the workers' CPU s) for POINTS points sent ``name``'s way."""
    actors = []
    if name == "actor":
        addresses = list(client.nthreads())
        actors = [client.submit(Runner, actor=True, workers=[a], pure=False).result() for a in addresses]
    w0, cpu0, t0 = workers_cpu(client), time.process_time(), time.monotonic()
    if name == "task each":  # DaskPool's way: 2 in flight per worker, each result fetched by its callback
        from concurrent.futures import FIRST_COMPLETED, Future

        todo, pending = list(range(POINTS)), set()

        def send(i: int) -> None:
            done: Future = Future()
            remote = client.submit(point, i, pure=False)
            remote.add_done_callback(lambda f: done.set_result(f.result()))
            pending.add(done)

        while todo or pending:
            while todo and len(pending) < 4:
                send(todo.pop())
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            pending -= finished
    elif name.startswith("task"):
        futures = [client.submit(point, i, pure=False) for i in range(POINTS)]
        client.gather(futures, direct=name.endswith("direct"))
    elif name == "batch 4":
        futures = [client.submit(batch, list(range(i, i + 4)), pure=False) for i in range(0, POINTS, 4)]
        client.gather(futures)
    else:  # two calls queued per actor, a new one as each returns
        pending = {}
        todo = list(range(POINTS))
        for actor in actors:
            for _ in range(2):
                pending[actor.run(todo.pop())] = actor
        while pending:
            done = [f for f in pending if f.done()] or [next(iter(pending))]
            for future in done:
                future.result()
                actor = pending.pop(future)
                if todo:
                    pending[actor.run(todo.pop())] = actor
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return wall, cpu, workers_cpu(client) - w0


def main() -> int:
    from distributed import LocalCluster

    ways = sys.argv[1:] or ["task each", "task", "task direct", "batch 4", "actor"]
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1", silence_logs=40
        ) as cluster,
        cluster.get_client() as client,
    ):
        way(client, "task")  # warm: connections, imports
        print(f"{POINTS} points of {1000 * SLEEP:.0f} ms asleep, 2 workers x 1 thread, load {os.getloadavg()[0]:.1f}")
        for name in ways:
            wall, cpu, workers = way(client, name)
            ideal = POINTS * SLEEP / 2
            print(
                f"{name:12s}: wall {wall:.2f} s ({wall / ideal:.2f}x the sleep), main process {1000 * cpu / POINTS:.2f}"
                f" ms cpu a point, workers {1000 * workers / POINTS:.2f} ms cpu a point"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
