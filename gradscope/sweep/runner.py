"""Running a sweep into its folder, resumably.

    summary = run_sweep(experiment, "out/phase", workers=2)                 # local worker processes
    summary = run_sweep(experiment, "out/phase", scheduler="tcp://host:8786", resume=True, traces=False)

The folder (docs/trace_format.md, "Sweeps"):

    DIR/sweep.csv          one row per finished point (table.py), sorted by point, rewritten atomically after each
    DIR/sweep.json         what the sweep is: its keys, seeds, mode, points and a fingerprint of every point's run
    DIR/experiment.toml    the experiment file, every setting written out, with its [sweep] table
    DIR/points/<point>/    each point's export (the folder `gradscope run` writes, without figures), unless
                           traces=False

A point's export is published, and on disk, before its row, so a row always has its folder (a local worker's
export is flushed here, one syncfs for the points that finished together: sweep/pools.py).  A kill loses only the points
that were running: every finished one is in sweep.csv already.  ``resume=True`` runs the points that have no
row, or whose row says "failed" or "stopped"; it refuses a folder written by a different sweep.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Experiment, SweepPoint, dumps, sweep_points
from ..files import atomic_write_text, sync_tree
from ..io import export_experiment, gradscope_version
from .pools import MARKER_PREFIX, DaskPool, LocalPool, PointOutcome, SweepError, default_workers, failure_text
from .table import KEPT, TAIL, columns, point_name, read_table, row_values, write_table

MANIFEST = "sweep.json"
TABLE = "sweep.csv"
POINTS = "points"


@dataclass
class SweepProgress:
    """Where a sweep is: what the progress bar and the app show."""

    total: int  # points of the sweep
    done: int = 0  # points with a row (those of an earlier run included)
    running: int = 0
    failed: int = 0
    resumed: int = 0  # points already done in the folder when this run started
    started: float = field(default_factory=time.monotonic)
    where: str = ""

    @property
    def eta(self) -> float | None:
        """Seconds left at this run's pace (None before its first point)."""
        finished_here = self.done + self.failed - self.resumed
        if finished_here <= 0:
            return None
        left = self.total - self.done - self.failed
        return left * (time.monotonic() - self.started) / finished_here

    def summary(self) -> str:
        """``12/64 done, 2 running, 1 failed, ETA 00:31``: the progress bar's text and the app's."""
        return f"{self.done}/{self.total} done, {self.running} running, {self.failed} failed, ETA {_clock(self.eta)}"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


@dataclass
class SweepSummary:
    out: Path
    progress: SweepProgress
    stopped: bool
    errors: dict[str, str]  # point name -> traceback of its failed run


def fingerprint(points) -> str:
    """sha256 of every point's run and seed, in order: whether a folder holds this sweep."""
    digest = hashlib.sha256()
    for point in points:
        digest.update(json.dumps([point.base, point.seed, point.run.model_dump(mode="json")], sort_keys=True).encode())
    return digest.hexdigest()


def _prepare(out: Path, experiment: Experiment, points, resume: bool) -> dict[int, list[str]]:
    """Make (or check) the folder; returns the rows already finished there, by point index."""
    keys = list(experiment.sweep.keys)
    manifest = {
        "format_version": 2,
        "gradscope_version": gradscope_version(),
        "experiment": experiment.name,
        "source": str(experiment.source) if experiment.source else None,
        "keys": keys,
        "seeds": None if experiment.sweep.seeds is None else list(experiment.sweep.seeds),
        "mode": experiment.sweep.mode,
        "runs": [r.name for r in experiment.runs],
        "points": len(points),
        "fingerprint": fingerprint(points),
    }
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out}: a file is in the way; expected a folder for the sweep")
    if out.exists() and (out / MANIFEST).exists():
        if not resume:
            raise SweepError(
                f"--out {out}: it holds a sweep already; add --resume to finish it, or choose a new folder"
            )
        try:
            held = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SweepError(f"{out / MANIFEST}: cannot read it ({error})") from None
        if held.get("fingerprint") != manifest["fingerprint"]:
            raise SweepError(
                f"--resume: {out} holds a different sweep ({held.get('points')} points of "
                f"{held.get('experiment')!r}, with other settings); choose a new --out"
            )
        for leftover in (out / POINTS).glob(".*.tmp-*") if (out / POINTS).exists() else []:
            shutil.rmtree(leftover, ignore_errors=True)  # an export a kill interrupted
        for marker in out.glob(f"{MARKER_PREFIX}*"):
            marker.unlink(missing_ok=True)  # a killed Dask sweep's (pools.DaskPool._probe)
        header, rows = read_table(out / TABLE)
        if header and header != columns(keys):
            raise SweepError(f"{out / TABLE}: its columns are not this sweep's; choose a new --out")
        names = {point_name(p.index, len(points)): p.index for p in points}
        return {names[r["point"]]: [r[c] for c in header] for r in rows if r.get("point") in names}
    if out.exists() and any(out.iterdir()):
        raise SweepError(f"--out {out}: the folder is not empty and holds no sweep; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment.toml", dumps(experiment))
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    return {}


def _finished(row: list[str], header: list[str], out: Path, traces: bool) -> bool:
    status = row[header.index("status")]
    return status in KEPT and (not traces or (out / POINTS / row[0] / "summary.json").exists())


def run_sweep(
    experiment: Experiment,
    out,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    traces: bool = True,
    backend: str = "numba",
    stop=None,
    on_progress: Callable[[SweepProgress], None] | None = None,
    on_row: Callable[[dict[str, str]], None] | None = None,
    on_compile: Callable[[int, int, str], None] | None = None,
    pool=None,
) -> SweepSummary:
    """Run every point of ``experiment``'s [sweep] not finished in ``out`` yet; returns a SweepSummary.

    ``workers``: local worker processes (default: one per CPU); ``scheduler``: a Dask scheduler's address
    instead; ``pool``: an open LocalPool or DaskPool to use (and leave open).  ``stop`` (anything with
    ``is_set()``) ends the sweep: no new point starts, local points stop after their iteration, Dask points
    are cancelled; every finished point stays in sweep.csv.  ``on_progress(progress)`` after every change;
    ``on_row(row)`` with each new row (a dict of text by column); ``on_compile(done, total, name)`` while the
    kernels compile (or load from the cache) here, as the local workers start.  Raises SweepError before
    anything runs when the sweep cannot start, ConfigError for a bad experiment.
    """
    points = sweep_points(experiment)
    if not points:
        raise SweepError(f"{experiment.source or experiment.name}: the experiment has no [sweep] table")
    out = Path(out)
    header = columns(list(experiment.sweep.keys))
    rows = _prepare(out, experiment, points, resume)
    done = {index for index, row in rows.items() if _finished(row, header, out, traces)}
    rows = {index: rows[index] for index in done}  # failed and stopped rows are run again
    todo = [p for p in points if p.index not in done]
    progress = SweepProgress(total=len(points), done=len(done), resumed=len(done))
    errors: dict[str, str] = {}
    specs = kernel_specs(todo, backend)
    own = pool is None and bool(todo)
    if own and scheduler:
        pool = DaskPool(scheduler)
    elif own:  # the kernels compile (or load) here while the workers start, then load in each from the cache
        pool = LocalPool(min(workers or default_workers(), len(todo)), specs, lambda: _load_kernels(specs, on_compile))
    progress.where = pool.where if pool is not None else ""
    progress.started = time.monotonic()  # the pace is the points', not the workers' start-up
    if on_progress:
        on_progress(progress)
    stopped = False
    in_flight: dict[Future, SweepPoint] = {}
    tasks: dict[Future, int] = {}  # each point's task (the first point's index): a DaskPool's take several
    queue = list(reversed(longest_first(todo)))  # popped from the end
    try:
        while queue or in_flight:
            if stop is not None and stop.is_set() and not stopped:
                stopped = True
                queue.clear()
                pool.stop()
            # one task queued per worker beside the one it runs: a worker never waits for the next while this
            # process writes a row (what is queued is not computed yet, so a kill loses nothing of it)
            while queue and len(set(tasks.values())) < 2 * pool.slots:
                batch = [queue.pop() for _ in range(pool.batch(queue))]
                names = [point_name(p.index, len(points)) for p in batch]
                exports = [(out.absolute() / POINTS / n, _single(experiment, p, n)) for p, n in zip(batch, names)]
                if len(batch) == 1:
                    sent = [pool.submit(batch[0], backend, traces, exports[0])]
                else:
                    sent = pool.submit_batch(batch, backend, traces, exports)
                for future, point in zip(sent, batch):
                    in_flight[future], tasks[future] = point, batch[0].index
            progress.running = min(len(in_flight), pool.slots)
            finished, _ = wait(in_flight, timeout=0.1, return_when=FIRST_COMPLETED)
            fresh = 0  # rows not in sweep.csv yet: it is rewritten once for the points that finished together
            unflushed: list[int] = []  # of them, the points whose worker published the export without a flush
            try:  # rewritten even when an export here fails: the rows before it are kept
                for future in finished:
                    point = in_flight.pop(future)
                    tasks.pop(future)
                    name = point_name(point.index, len(points))
                    try:
                        outcome: PointOutcome = future.result()
                    except Exception as error:  # noqa: BLE001  (a worker died, or Dask lost the task: the point failed)
                        if stopped:
                            continue  # cancelled by the stop: not a result
                        outcome = PointOutcome(point.index, _failed_measures(), None, failure_text(error))
                    status = outcome.measured["status"]
                    if stopped and status == "stopped":
                        continue  # interrupted by the stop: --resume runs it again
                    if outcome.result is not None and status != "failed":  # not exported by the worker
                        export_experiment(out / POINTS / name, _single(experiment, point, name), [outcome.result])
                    rows[point.index] = row_values(name, point, outcome.measured)
                    fresh += 1
                    if outcome.exported and not outcome.flushed:
                        unflushed.append(point.index)
                    if status in KEPT:
                        progress.done += 1
                    else:
                        progress.failed += 1
                        errors[name] = outcome.error or f"point {name} ended as {status!r}"
                    if on_row:
                        on_row(dict(zip(header, rows[point.index])))
            finally:
                if fresh:
                    _flush_then_write(out, header, rows, unflushed)
            progress.running = min(len(in_flight), pool.slots)
            if on_progress:
                on_progress(progress)
    except KeyboardInterrupt:
        stopped = True
    finally:
        if own:
            pool.close()
    if not rows and not (out / TABLE).exists():
        write_table(out / TABLE, header, rows)  # the header alone: the folder says what it will hold
    progress.running = 0
    return SweepSummary(out, progress, stopped, errors)


def _flush_then_write(out: Path, header: list[str], rows: dict[int, list[str]], unflushed: list[int]) -> None:
    """Rewrite sweep.csv, the workers' unflushed exports on disk first (one syncfs): no row names an export a
    power cut could lose.  A flush that fails (a disk error) drops those points' rows (--resume runs them
    again), writes the others, and raises."""
    try:
        if unflushed:
            sync_tree(out / POINTS)
    except OSError:
        for index in unflushed:
            rows.pop(index, None)
        raise
    finally:
        write_table(out / TABLE, header, rows)


def _single(experiment: Experiment, point: SweepPoint, name: str) -> Experiment:
    """The experiment of the export of the point named ``name``: its run alone."""
    return experiment.model_copy(update={"runs": [point.run], "sweep": None, "name": f"{experiment.name} point {name}"})


def longest_first(points: list[SweepPoint]) -> list[SweepPoint]:
    """The points in the order they are sent: the most work first (experiment.estimated_flops; ties in the
    sweep's order), so the last points to finish are short ones and no worker idles while one long point ends.
    The rows do not depend on the order."""
    from ..experiment import estimated_flops

    return sorted(points, key=lambda p: estimated_flops(p.run), reverse=True)


def _failed_measures() -> dict:
    return dict.fromkeys(TAIL) | {"status": "failed", "iterations": 0}


def kernel_specs(points, backend: str) -> list:
    """One ModelSpec per dtype the points use (the kernels are per dtype); none for the NumPy backend."""
    if backend != "numba":
        return []
    return list({p.run.dtype: p.run.model_spec() for p in points}.values())


def _load_kernels(specs, progress=None) -> None:
    """Compile (or load) the kernels here first, so that the workers find them in the cache."""
    from ..engine import compile_kernels

    for spec in specs:
        compile_kernels(spec, progress)


__all__ = ["run_sweep", "SweepProgress", "SweepSummary", "fingerprint", "MANIFEST", "TABLE", "POINTS"]
