"""A run's records on disk as they are computed: a Zarr group that grows by one block of rows per flush.

    store = RunStore.create(run_dir / "records.zarr", name=..., streams=run.model_spec().streams, seed=...)
    store.add(record)              # every record the trace gets; written out at most ~1 s later
    store.close("completed")       # the last rows, and the run's final status
    writer = StoreWriter(lambda: RunStore.create(...))   # the same, made and flushed by a thread of its own
    arrays, info = read_store(run_dir / "records.zarr")    # what a killed run left: (K, ...) columns, attrs

Layout (docs/trace_format.md, "The live store"): one Zarr v3 array per trace column, named as in trace.npz,
shape (K, ...) with ``dimension_names`` (iteration, stream, timestep), so ``xarray.open_zarr`` reads it as a
labelled Dataset; the group's attributes say how many rows are committed (``records``), how many iterations
were computed (``iterations``), the run's ``status`` ("running" until it ends) and the streams' names.

Why it survives a SIGKILL: a flush resizes and writes each array, then rewrites the group's attributes with
the new row count.  Zarr's LocalStore writes every file under a temporary name and renames it into place
(zarr >= 3.1.3), so a kill leaves each file old or new, never torn; rows below ``records`` are never written
again, so the reader takes ``records`` rows and ignores anything a half-done flush appended past them.
A run's store is flushed by a thread of its own (StoreWriter), so training never waits for the disk.

fsync policy: a flush does not fsync (a killed process loses nothing the kernel already has); ``sync()`` fsyncs
what the store wrote since the last sync, and StoreWriter calls it before each of the run's checkpoints
(gradscope.checkpoint, every ~10 s), so a power cut loses at most the records since the last checkpoint, and a
checkpoint on disk never names rows that are not.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .engine.record import Record
from .files import fsync_dir

STORE_NAME = "records.zarr"
STORE_FORMAT = 1
FLUSH_SECONDS = 1.0  # a SIGKILL loses at most the records of the last second (and the iteration in flight)
CHUNK_BYTES = 256 * 2**10  # rows per chunk: about this many bytes (a flush rewrites at most the last chunk)
PER_STEP_WITHOUT_STREAM = ("loss_t",)  # (K, T) columns (as io.PER_STEP_WITHOUT_LAYER)
RUNNING = "running"


def dimension_names(name: str, ndim: int) -> tuple[str, ...]:
    """A trace column's dimensions: (iteration,), (iteration, stream), (iteration, timestep) for loss_t,
    (iteration, decoder_layer) for seq2seq's bridge norms, (iteration, stream, timestep); any further axis is
    named after the column."""
    if ndim == 1:
        return ("iteration",)
    if ndim == 2 and name.startswith("grad_bridge"):  # seq2seq's (K, L): one per decoder layer (io.PER_DECODER_LAYER)
        return ("iteration", "decoder_layer")
    if ndim == 2:
        return ("iteration", "timestep" if name in PER_STEP_WITHOUT_STREAM else "stream")
    base = ("iteration", "stream", "timestep")
    return base[:ndim] if ndim <= 3 else base + tuple(f"{name}_dim{i}" for i in range(3, ndim))


def _fill(dtype: np.dtype):
    return np.nan if dtype.kind == "f" else (False if dtype.kind == "b" else 0)


class StoreError(OSError):
    """The store could not be written (a full disk, a folder that went away): the run goes on in memory."""


class RunStore:
    """Appends a run's records to its Zarr group, flushed at most every FLUSH_SECONDS."""

    def __init__(self, group, path: Path, flush_seconds: float = FLUSH_SECONDS, arrays: dict | None = None):
        self.group, self.path, self.flush_seconds = group, path, flush_seconds
        # the columns' arrays by name (zarr AsyncArray): listing the group at every flush costs a read per array
        self._arrays = {n: a.async_array for n, a in group.arrays()} if arrays is None else arrays
        self._attrs: dict[str, Any] = dict(group.attrs)  # what the group's zarr.json says, rewritten whole
        self.records = 0  # rows committed
        self.iterations = 0  # iterations computed (every record, kept or not)
        self._pending: list[dict[str, np.ndarray]] = []
        self.clock = time.monotonic  # seconds, for the flush interval (a test's own clock)
        self._flushed_at = self.clock()
        self.nonfinite: dict | None = None
        self.columns: list[str] = []  # the trace's column order (first seen first), kept in the attributes
        self._synced_ns = 0  # when sync() last ran (time.time_ns): files older than that are on disk

    @classmethod
    def create(cls, path, *, name: str, streams, seed: int | None = None, flush_seconds: float = FLUSH_SECONDS):
        """A new, empty store at ``path`` (an earlier one there is replaced)."""
        import zarr

        path = Path(path)
        attrs: dict[str, Any] = {
            "gradscope_store": STORE_FORMAT,
            "run": name,
            "streams": [str(s) for s in streams],
            "seed": seed,
            "records": 0,
            "iterations": 0,
            "status": RUNNING,
            "pid": os.getpid(),
            "nonfinite": None,
            "columns": [],
        }
        group = zarr.open_group(str(path), mode="w", zarr_format=3, attributes=attrs)  # one write, not two
        return cls(group, path, flush_seconds, arrays={})

    @classmethod
    def reopen(cls, path, before: int, flush_seconds: float = FLUSH_SECONDS) -> RunStore:
        """The store at ``path``, to append to again from iteration ``before`` on (``--resume`` from a checkpoint
        at that iteration): the rows of iterations >= ``before``, committed after the checkpoint, are dropped
        first (count, then contents: a kill in between leaves them past ``records``, where no reader looks)."""
        import zarr

        path = Path(path)
        arrays, info = read_store(path)
        if int(info.get("iterations", 0)) < before:
            raise ValueError(
                f"{path}: iterations: got {info.get('iterations')}; a checkpoint at iteration {before} needs at "
                f"least that many committed"
            )
        iterations = arrays.get("iteration", np.zeros(0, dtype=np.int64))  # (K,), increasing
        K = int(np.searchsorted(iterations, before))  # rows of iterations < before
        group = zarr.open_group(str(path), mode="r+")
        attrs: dict[str, Any] = {"records": K, "iterations": before, "status": RUNNING, "pid": os.getpid()}
        attrs["nonfinite"] = None
        group.attrs.update(attrs)
        for _name, array in group.arrays():
            if array.shape[0] > K:  # back to the fill value first: a chunk cut by resize keeps its old rows
                array[K:] = _fill(array.dtype)
                array.resize((K,) + array.shape[1:])
        store = cls(group, path, flush_seconds)
        store.records, store.iterations = K, before
        store.columns = [str(n) for n in info.get("columns", [])]
        return store

    def sync(self) -> None:
        """fdatasync every file the store changed since the last sync, and fsync the folders whose entries
        changed (Zarr renames each file into place): only those, as each costs a journal commit (~5-10 ms)."""
        since, self._synced_ns = self._synced_ns, time.time_ns()
        since -= 2 * 10**9  # file systems with coarse timestamps: take a little more, never less
        try:
            for root, _dirs, files in os.walk(self.path):
                for name in files:
                    file = os.path.join(root, name)
                    if os.stat(file).st_mtime_ns >= since:
                        fd = os.open(file, os.O_RDONLY)
                        try:
                            os.fdatasync(fd)
                        finally:
                            os.close(fd)
                if os.stat(root).st_mtime_ns >= since:
                    fsync_dir(root)
        except OSError as error:
            raise StoreError(error.errno, f"{self.path}: {error.strerror or error}") from error

    def add(self, record: Record) -> None:
        """Count the iteration; a recorded one becomes a row.  Flushes when the last flush is a second old."""
        self.take(record)
        if self.clock() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def take(self, record: Record) -> None:
        """Count the iteration and keep its row for the next flush."""
        self.iterations = record.iteration + 1
        if record.nonfinite is not None and self.nonfinite is None:
            self.nonfinite = record.nonfinite.as_dict()
        if record.recorded:
            self._pending.append(record.columns())

    def flush(self, status: str = RUNNING) -> None:
        """Append the pending rows to every array, then commit their count (and ``status``) in the attributes."""
        rows, self._pending = self._pending, []
        self._flushed_at = self.clock()
        commit = {
            "records": self.records + len(rows),
            "iterations": self.iterations,
            "status": status,
            "nonfinite": self.nonfinite,
        }
        try:
            _on_zarr_loop(self._append(rows, commit))
        except OSError as error:
            raise StoreError(error.errno, f"{self.path}: {error.strerror or error}") from error
        self.records += len(rows)

    def close(self, status: str) -> None:
        """The last rows and the run's final status (completed, diverged, stopped, failed)."""
        self.flush(status)

    async def _append(self, rows: list[dict[str, np.ndarray]], commit: dict[str, Any]) -> None:
        """Every column's block at once (each array's resize, then its rows: one round trip to Zarr's I/O loop
        for the whole flush, where the synchronous API took about four per column; StoreWriter has the figures),
        then, once all are on disk, the attributes that commit them."""
        import asyncio

        from zarr.api.asynchronous import create_array

        names = list(dict.fromkeys(name for row in rows for name in row))
        self.columns += [name for name in names if name not in self.columns]
        start, stop = self.records, self.records + len(rows)

        async def write(name: str) -> None:
            sample = next(row[name] for row in rows if name in row)
            dtype = np.dtype(np.float64) if sample.dtype.kind == "f" else sample.dtype  # as the Trace keeps them
            block = np.full((len(rows),) + sample.shape, _fill(dtype), dtype=dtype)  # (n, ...)
            for i, row in enumerate(rows):
                if name in row:
                    block[i] = row[name]
            array = self._arrays.get(name)
            if array is None:  # a metric that appears late: its earlier rows are missing (NaN), not zero
                row_bytes = max(1, sample.size * dtype.itemsize)
                chunk_rows = int(2 ** np.clip(np.floor(np.log2(CHUNK_BYTES / row_bytes)), 0, 12))
                array = self._arrays[name] = await create_array(
                    self.group.store,
                    name=name,
                    shape=(stop,) + sample.shape,
                    dtype=dtype,
                    chunks=(chunk_rows,) + sample.shape,
                    fill_value=_fill(dtype),
                    dimension_names=dimension_names(name, 1 + sample.ndim),
                )
            else:
                await array.resize((stop,) + sample.shape)
            await array.setitem(slice(start, stop), block)

        async def extend(array) -> None:  # a column this block lacks: missing rows
            await array.resize((stop,) + array.shape[1:])

        if rows:
            await asyncio.gather(
                *[write(name) for name in names],
                *[extend(a) for n, a in self._arrays.items() if n not in names and a.shape[0] < stop],
            )
        self._attrs.update(commit, columns=list(self.columns))
        self.group = await self.group.update_attributes_async(dict(self._attrs))


def _on_zarr_loop(coroutine):
    """Run ``coroutine`` on Zarr's I/O loop, as each call of its synchronous API does, and return its result."""
    from zarr.core.sync import sync

    return sync(coroutine)


class StoreWriter:
    """A run's store written by a thread of its own, so the run never waits for the disk: the thread makes the
    store (``open_store()``, e.g. RunStore.create plus the run's first files), then flushes once a second;
    ``add`` only queues the record.  Measured: a flush of an LSTM's ~25 arrays took 0.1 to 0.4 s on the loaded
    2-core machine when each array was its own round trips to Zarr's I/O loop; done in line every second it slowed
    runs by up to 40%.  Batched into one round trip (RunStore._append), a relu run's 15 columns flush in 21-42 ms
    where they took 61-90 ms (load 2-3; 10 rows flushed in two blocks, medians of 15 stores).
    A write that fails ends the thread; the next ``add`` or ``close`` raises its StoreError.
    ``after_commit(write)``: ``write()`` runs in the thread once every record added before it is committed and
    fsynced (a checkpoint never names rows that are not on disk)."""

    def __init__(self, open_store: Callable[[], RunStore], flush_seconds: float = FLUSH_SECONDS):
        self.store: RunStore | None = None
        self.flush_seconds = flush_seconds
        self._queue: list[Record | Callable[[], None]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self.error: StoreError | None = None
        self._thread = threading.Thread(target=self._loop, args=(open_store,), name="gradscope-store", daemon=True)
        self._thread.start()

    def add(self, record: Record) -> None:
        if self.error is not None:
            raise self.error
        with self._lock:
            self._queue.append(record)

    def after_commit(self, write: Callable[[], None]) -> None:
        if self.error is not None:
            raise self.error
        with self._lock:
            self._queue.append(write)

    def close(self, status: str) -> None:
        """Stop the thread, then write what is left and the run's final status."""
        self._closing = True
        self._wake.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        self._write(status)

    def _loop(self, open_store) -> None:
        try:
            self.store = open_store()
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            why = where + (error.strerror or str(error))
            self.error = error if isinstance(error, StoreError) else StoreError(error.errno, why)
            return
        while not self._closing:
            self._wake.wait(self.flush_seconds)
            if self._closing:
                return
            try:
                self._write(RUNNING)
            except StoreError as error:
                self.error = error
                return

    def _write(self, status: str) -> None:
        if self.store is None:
            return
        with self._lock:
            items, self._queue = self._queue, []
        if not items and status == RUNNING:
            return
        pending = True
        for item in items:
            if isinstance(item, Record):
                self.store.take(item)
                pending = True
                continue
            self.store.flush(RUNNING)  # the rows before it committed, then on disk, then the checkpoint
            self.store.sync()
            try:
                item()
            except OSError as error:
                raise StoreError(
                    error.errno, f"{error.filename or self.store.path}: {error.strerror or error}"
                ) from error
            pending = False
        if pending or status != RUNNING:
            self.store.flush(status)


def read_store(path) -> tuple[dict[str, np.ndarray], dict]:
    """The committed rows of a store, as trace.npz's (K, ...) columns, and the group's attributes.

    Raises FileNotFoundError when there is no store at ``path`` and ValueError when it is not GradScope's."""
    import zarr

    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"{path}: no records store")
    group = zarr.open_group(str(path), mode="r")
    info: dict[str, Any] = dict(group.attrs)
    if info.get("gradscope_store") != STORE_FORMAT:
        raise ValueError(f"{path}: gradscope_store: got {info.get('gradscope_store')!r}; expected {STORE_FORMAT}")
    K = int(info.get("records", 0))
    arrays = {name: np.asarray(array[:K]) for name, array in group.arrays()}
    K = min([K] + [len(a) for a in arrays.values()])  # a flush killed before its first resize
    arrays = {name: a[:K] for name, a in arrays.items()}
    order = [n for n in info.get("columns", []) if n in arrays]  # the trace's column order
    arrays = {n: arrays[n] for n in order} | {n: a for n, a in arrays.items() if n not in order}
    info["records"] = K
    return arrays, info


__all__ = [
    "RunStore",
    "StoreWriter",
    "StoreError",
    "read_store",
    "dimension_names",
    "STORE_NAME",
    "FLUSH_SECONDS",
    "RUNNING",
]
