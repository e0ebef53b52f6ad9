"""Where a sweep's points run: worker processes on this machine (``LocalPool``) or a Dask cluster
(``DaskPool``, the optional extra ``gradscope[dask]``).  Both hand back ``concurrent.futures.Future``s of
``PointOutcome``s, so the sweep's loop (runner.py) is the same for both.

What travels to a worker: the point's RunConfig (a frozen pydantic model, pickled), its seed, the backend
name, whether to send the run's traces back and where its export goes.  What comes back: the point's measured
columns (table.measure, computed on the worker) and, unless --no-traces or the worker wrote the point's export
itself, its RunResult (traces, initial parameters, first batch), which the main process exports.  A worker
needs only GradScope installed; its kernel cache fills itself on first use.

Local workers share this machine's file system, so they write each point's export themselves (``export``:
its folder and its one-run experiment) and send back only the measured columns: the exports run in parallel
and no trace is pickled back, where the main process would otherwise write them one after the other while
the workers wait for it (the phases benchmarks/bench_sweep.py prints).  A worker that cannot write the export
sends the RunResult back instead, and the main process writes it (and reports what stops it).  A local worker
publishes its export without flushing it (``sync=False``): the main process flushes the file system once (one
syncfs, files.sync_tree) for the points that finished together, before their rows name them.  The worker goes
on to its next point instead of waiting for the disk (with two workers each syncfs also waited for the other's
files: ~5 ms a point, 4% of a worker's time, against 1.4 ms with one); the wait is the main process's now,
while both cores compute.  Dask workers write their exports too when they see the sweep's folder
(``DaskPool._probe``): those on this host, or on a shared disk; those on this host (the same kernel and file
system: ``flushes_here``) leave the flush to the main process as well, the others flush their own.

Local workers each get one BLAS / Numba thread (two processes on two cores, no oversubscription; the bits
do not depend on threads: the batch's split is a setting, train.shards).  They all start, and load their
kernels, before the first point is sent: a pool that spawned its second process on the second point made that
worker load GradScope and its kernels while the first computed (1.7 s of a 7 s sweep on one core).  They ignore
SIGINT and SIGTERM and stop between iterations when the main process says so or has died (experiment.py's
worker start-up).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from ..experiment import _init_worker, _single_threaded_children, _stop_signals_blocked, _WorkerStop, execute_run
from ..io import export_experiment
from ..runs import RunResult
from .heap import keep_roomy, roomy_heap
from .table import KEPT, measure

STARTUP_SECONDS = 600.0  # a worker waits this long at most for the others to start (then starts anyway)


class SweepError(RuntimeError):
    """A sweep that cannot start: no [sweep] table, a folder in the way, Dask missing or unreachable."""


@dataclass
class PointOutcome:
    """What a worker sends back for one point."""

    index: int
    measured: dict  # table.TAIL's columns
    result: RunResult | None = None  # when its traces are wanted and the worker did not export them
    error: str | None = None  # a failed run's traceback
    exported: bool = False  # the worker published the point's export itself
    flushed: bool = True  # False: published unflushed; the sweep's main process syncs it before the row


def compute_point(
    index: int,
    run,
    seed: int,
    backend: str = "numba",
    keep: bool = True,
    stop=None,
    export=None,
    probe=None,
    sync: bool = True,
    flusher: tuple[str, int] | None = None,
) -> PointOutcome:
    """Run one point to its end and measure it (on whichever worker): the function every pool runs.

    ``export``: (folder, experiment) when this worker shares the sweep's file system: a finished point's export
    is published there (io.export_experiment, atomically) and its traces stay here; else they travel back.
    ``probe``: (path, token) of the sweep's marker file: the export is written here only if this worker reads
    that token there (a Dask worker on another host, without the sweep's file system, sends the traces back).
    ``sync=False``: the export is published unflushed (``flushed`` False): only where the process that writes
    the point's row flushes this machine's file system first (a local worker's).  ``flusher``: (boot id,
    device) of the sweep's folder as that process sees it: a worker on the same kernel and file system (a Dask
    worker on this host) leaves the flush to it too, as a local worker does (its syncfs flushes the same one)."""
    result = execute_run(run, seed, backend, stop=stop)
    outcome = PointOutcome(index, measure(result), result if keep else None, result.error)
    if probe is not None and not sees_marker(*probe):
        export = None
    if export is not None and flusher is not None and flushes_here(*flusher, export[0]):
        sync = False
    if keep and export is not None and outcome.measured["status"] in KEPT:
        folder, experiment = export
        try:
            export_experiment(folder, experiment, [result], sync=sync)
            outcome.result, outcome.exported, outcome.flushed = None, True, sync
        except Exception:  # noqa: BLE001  (the main process writes it instead, and says what stops it)
            pass
    return outcome


MARKER_PREFIX = ".gradscope-sweep-"  # a Dask sweep's marker file in its folder (removed when the sweep ends)


def sees_marker(path: str, token: str) -> bool:
    """Does this process see the sweep's folder (the marker at ``path`` holds ``token``)?"""
    try:
        with open(path, encoding="utf-8") as marker:
            return marker.read() == token
    except OSError:
        return False


def boot_id() -> str | None:
    """This kernel's boot id (Linux): equal in every process of this machine since it booted, also in its
    containers; None where there is none."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def flushes_here(boot: str, device: int, folder) -> bool:
    """Does a syncfs by the process that sent (``boot``, ``device``) flush what this process writes into
    ``folder`` (DIR/points/<point>)?  Only on the same kernel and the same file system (st_dev of DIR)."""
    try:
        return boot_id() == boot and os.stat(os.path.dirname(os.path.dirname(os.fspath(folder)))).st_dev == device
    except OSError:
        return False


_started = None  # a local worker's start-up barrier (all the pool's workers up)


def _init_sweep_worker(stop, updates, specs, started=None, cached=None) -> None:
    """A local worker's start-up: experiment.py's (signals, the stop), then the kernels its points need, loaded
    from the cache before the first point, so that no point's wall_seconds holds the load.  ``cached``: set
    once the main process has them in the cache (it compiles a cold cache once, while this process imports)."""
    global _started
    _init_worker(stop, updates)  # with its parent watch: an orphaned worker ends (experiment.exit_when_orphaned)
    _started = started
    keep_roomy()  # the heap a Dask worker's points get too (heap.py): fewer pages faulted in a point
    from ..engine import compile_kernels

    if cached is not None:
        cached.wait()  # the parent watch ends this process if the main process dies meanwhile
    for spec in specs:
        compile_kernels(spec)


def _all_started() -> None:
    """Return once every worker of the pool runs this: one such task per worker holds each worker busy until
    all are up, so the pool spawns them all (it spawns a process only when no started one is idle)."""
    try:
        if _started is not None:
            _started.wait(STARTUP_SECONDS)
    except threading.BrokenBarrierError:
        pass  # one did not start in time: the others go on, and the pool replaces a dead one


def _compute_in_worker(index: int, run, seed: int, backend: str, keep: bool, export=None) -> PointOutcome:
    return compute_point(index, run, seed, backend, keep, stop=_WorkerStop(), export=export, sync=False)


class LocalPool:
    """``workers`` processes on this machine (spawned: never a fork of a process that holds threads)."""

    def __init__(self, workers: int, specs=(), prepare=None):
        """``prepare()``: what this process does while the workers start (the sweep compiles, or loads, the
        kernels of ``specs`` into the cache); the workers load those kernels once it has returned."""
        self._specs = tuple(specs)  # engine.ModelSpecs whose kernels each worker loads as it starts
        self.slots = max(1, int(workers))
        self.where = f"{self.slots} local worker process{'es' if self.slots > 1 else ''}"
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._updates = self._context.Queue()  # the start-up's progress queue; points report no iterations
        self._pool = self._start(prepare)

    def _start(self, prepare=None) -> ProcessPoolExecutor:
        cached = self._context.Event()
        with _stop_signals_blocked(), _single_threaded_children():
            pool = ProcessPoolExecutor(
                max_workers=self.slots,
                mp_context=self._context,
                initializer=_init_sweep_worker,
                initargs=(self._stop, self._updates, self._specs, self._context.Barrier(self.slots), cached),
            )
            # every worker starts now (a submit spawns a process while none is idle), with the signals blocked
            # and one thread each; each holds its task until all are up, their kernels loaded
            started = [pool.submit(_all_started) for _ in range(self.slots)]
        try:
            if prepare is not None:
                prepare()  # here, with this process's own signals and threads
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self._stop.set()
            raise
        finally:
            cached.set()
        for future in started:
            future.result()
        return pool

    def batch(self, queue) -> int:
        """How many points the next submit takes: one.  A local worker's point costs no scheduler round trip to
        share out (the per-point overhead is a few ms), and one at a time keeps a kill's loss to the running points."""
        return 1

    def submit(self, point, backend: str, keep: bool, export=None) -> Future:
        """``export``: (folder, experiment) of the point's export, which the worker writes (see the module)."""
        args = (point.index, point.run, point.seed, backend, keep, export)
        try:
            return self._pool.submit(_compute_in_worker, *args)
        except BrokenProcessPool:  # a worker died (killed, out of memory): a new pool for the points left
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(_compute_in_worker, *args)

    def stop(self) -> None:
        """The running points stop after their current iteration (and come back as "stopped")."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._updates.close()


BATCH_FLOPS = 1.6e10  # a Dask task's points do at most this much work (estimated_flops; ~1 s here)
BATCH_SHARE = 2  # and at most 1 / (BATCH_SHARE x slots) of the points left: tasks shrink to one point as it ends


def compute_points(points, backend: str, keep: bool, probe=None, flusher=None, each=None) -> list[PointOutcome]:
    """A Dask task: ``points`` ((index, run, seed, export) each) one after the other on this worker, their
    outcomes in one result, with the heap a local worker has (heap.roomy_heap: a Dask nanny lowers glibc's
    thresholds).  ``each``: the function each point runs (compute_point; a benchmark wraps it)."""
    each = each or compute_point
    with roomy_heap():
        return [each(i, run, seed, backend, keep, export=e, probe=probe, flusher=flusher) for i, run, seed, e in points]


class DaskPool:
    """The Dask cluster whose scheduler is at ``address`` (``tcp://host:8786``); a task per few points.

    A task's life in Dask (the client's submit, the scheduler's assignment, the worker's run, its report, the
    scheduler's release and the result fetched back) costs ~10 ms of CPU on the 2 cores of this machine
    (benchmarks/dask_overhead.py: 6 ms the scheduler's and the client's, 5 the worker's), a fifth of a ~50 ms
    point of the shipped ReLU sweep.  So a task takes several short points (``batch``: up to BATCH_FLOPS of
    estimated work, and fewer as the sweep ends, so that no worker waits long for the last ones) and sends
    their outcomes back in one result; a long point goes alone, as before.  The benchmark's 64 points go as
    13 tasks (16, 12, 9, 7, 5, 4, 3, 2, 2, then 4 single points).  A task's rows come together when it ends,
    so a kill of the sweep's process loses its points' rows (their exports, published, are written again by
    --resume), at most ~1 s of work a worker thread."""

    def __init__(self, address: str, timeout: float = 10.0):
        try:
            from distributed import Client
        except ImportError:
            raise SweepError(
                "--scheduler needs Dask's distributed scheduler, which is not installed: pip install 'gradscope[dask]'"
            ) from None
        try:
            self._client = Client(address, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            raise SweepError(f"--scheduler {address}: cannot reach a Dask scheduler there ({error})") from None
        threads = sum(self._client.nthreads().values())
        if threads == 0:
            self._client.close()
            raise SweepError(f"--scheduler {address}: the cluster has no workers")
        self.slots = threads
        self.where = f"the Dask cluster at {address} ({threads} worker thread{'s' if threads > 1 else ''})"
        self._tag = uuid.uuid4().hex[:8]  # task keys of this sweep, distinct from any other client's
        self._futures: dict[int, object] = {}  # the remote future of each task by its first point's index
        self._lock = threading.Lock()
        self._marker: str | None = None  # the marker file workers look for (see _probe)
        self._flusher: tuple[str, int] | None = None  # (boot id, device) of the sweep's folder here

    def _probe(self, export) -> tuple[str, str] | None:
        """A cluster's workers need not share this file system; those that do (a worker on this host, a shared
        disk) write their points' exports themselves, as local workers do, which keeps this process from
        writing every export while the cores compute.  A worker knows by reading a marker file with this
        sweep's token in the sweep's folder: at the same path on another host it is absent (or another's).  A
        worker on this machine's kernel and file system leaves the export's flush to this process (``flusher``)."""
        if export is None:
            return None
        if self._marker is None:
            folder = os.path.dirname(os.path.dirname(os.fspath(export[0])))  # DIR of DIR/points/<point>
            path = os.path.join(folder, f"{MARKER_PREFIX}{self._tag}")
            try:
                with open(path, "w", encoding="utf-8") as marker:
                    marker.write(self._tag)
            except OSError:
                return None  # then every worker sends its traces back, as without a shared disk
            self._marker = path
            boot = boot_id()
            self._flusher = None if boot is None else (boot, os.stat(folder).st_dev)
        return self._marker, self._tag

    def batch(self, queue) -> int:
        """How many points the next task takes from the end of ``queue`` (the sweep's points left, the next
        one last): at least one; more while their estimated work stays within BATCH_FLOPS and their number
        within the share of the points left."""
        from ..experiment import estimated_flops

        most = -(-len(queue) // (BATCH_SHARE * self.slots))
        taken, work = 0, 0.0
        for point in reversed(queue):
            work += estimated_flops(point.run)
            if taken and (taken >= most or work > BATCH_FLOPS):
                break
            taken += 1
        return taken

    def submit(self, point, backend: str, keep: bool, export=None) -> Future:
        """``export``: the point's (folder, experiment), written by the worker if it sees this file system."""
        return self.submit_batch([point], backend, keep, [export])[0]

    def submit_batch(self, points, backend: str, keep: bool, exports) -> list[Future]:
        """One task for ``points`` (their exports as in ``submit``); a Future per point, all set together."""
        done: list[Future] = [Future() for _ in points]
        probe = self._probe(exports[0]) if keep else None
        first = points[0].index
        remote = self._client.submit(
            compute_points,
            [(p.index, p.run, p.seed, e if probe is not None else None) for p, e in zip(points, exports)],
            backend,
            keep,
            probe,
            self._flusher if probe is not None else None,
            compute_point,  # looked up now: what a benchmark put in its place runs on the workers too
            pure=False,
            key=f"gradscope-point-{self._tag}-{first}",
        )
        with self._lock:
            self._futures[first] = remote

        def relay(remote_future) -> None:  # on the client's thread: hand the outcomes to the sweep's loop
            with self._lock:
                self._futures.pop(first, None)
            try:
                if remote_future.status == "cancelled":
                    for future in done:
                        if future.cancel():
                            future.set_running_or_notify_cancel()
                    return
                if remote_future.status != "finished":
                    raise remote_future.exception() or RuntimeError(f"the Dask task ended {remote_future.status}")
                outcomes = remote_future.result()
            except Exception as error:  # noqa: BLE001  (whatever fetching the result raised is the points' failure)
                for future in done:
                    if not future.done():
                        future.set_exception(error)
                return
            for future, outcome in zip(done, outcomes):
                if not future.done():
                    future.set_result(outcome)

        remote.add_done_callback(relay)
        return done

    def stop(self) -> None:
        """A task on a Dask worker cannot be interrupted: the running points are cancelled (and lost)."""
        with self._lock:
            remote = list(self._futures.values())
        if remote:
            self._client.cancel(remote)

    def close(self) -> None:
        self.stop()
        self._client.close()
        if self._marker is not None:
            try:
                os.remove(self._marker)
            except OSError:
                pass  # a stale marker names this sweep only: no later sweep's token matches it


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def failure_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


__all__ = ["SweepError", "PointOutcome", "compute_point", "LocalPool", "DaskPool", "default_workers"]
