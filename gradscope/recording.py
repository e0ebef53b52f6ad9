"""The folder a run records into while it runs, and every folder GradScope reads back.

    recording = Recording.start(out, experiment)    # DIR/recording/: experiment.toml, recording.json
    recording.run_dir(index, name)                 # DIR/recording/01-relu-3-n/ (records.zarr, *.npz)
    ...                                            # the runs append to their stores (experiment.execute_run)
    export_experiment(out, ..., extra_files=recording.move_stores)   # the final folder replaces DIR, stores kept
    folder = open_folder("DIR")                    # an export, a recording still going, or a killed one

``gradscope run --out DIR`` records into ``DIR/recording/`` (docs/trace_format.md, "The live store"): the
experiment as it runs, then per run its initial parameters and first batch when it starts and its
``records.zarr`` (gradscope.store) as it goes.  When the runs end, the export of docs/trace_format.md is
written beside DIR and swapped in as before; it keeps each run's store as ``<run dir>/records.zarr`` (moved
in, one rename per store: no copy; a failed or killed export gives them back), and the recording folder goes
with the replaced DIR.  A process killed before that leaves
``DIR/recording/``, which ``open_folder`` reads as "interrupted at iteration i", run by run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ConfigError, Experiment, dumps, load
from .engine.metrics import NonFinite
from .engine.params import Params
from .files import atomic_write_bytes, atomic_write_text, move_into, pid_alive, remove_stale_temporaries
from .io import load_experiment_folder, run_dir_name
from .runs import RunResult, RunStatus
from .store import RUNNING, STORE_NAME, read_store
from .trace import Trace

RECORDING = "recording"  # DIR/recording/: a run in progress, or one that was killed
RECORDING_FORMAT = 1
MANIFEST = "recording.json"


class RecordingExists(ConfigError):
    """DIR holds an interrupted recording: resume it (``--resume``) or choose another folder; never overwritten."""


@dataclass
class Recording:
    """``DIR/recording/``: the experiment as it runs and one folder per run."""

    path: Path

    @classmethod
    def start(cls, out, experiment: Experiment, *, resume: bool = False) -> Recording:
        """Begin recording ``experiment`` under ``out``.  An interrupted recording there is refused unless
        ``resume`` (then it must be of the same experiment; its finished runs are kept by the caller)."""
        path = Path(out) / RECORDING
        remove_stale_temporaries(out)  # an export killed mid-way gives the stores it held back first
        text = dumps(experiment)
        if (path / MANIFEST).exists():
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            if pid_alive(manifest.get("pid")) and manifest.get("pid") != os.getpid():
                raise RecordingExists(f"{out}: another GradScope process (pid {manifest['pid']}) is recording here")
            if not resume:
                raise RecordingExists(
                    f"{out}: holds an interrupted recording ({describe(open_folder(out))}); pass --resume to "
                    f"continue it, or choose another folder"
                )
            old = (path / "experiment.toml").read_text(encoding="utf-8")
            if _without_source(old) != _without_source(text):
                raise RecordingExists(
                    f"{out}: the interrupted recording there is of another experiment (or other settings); "
                    f"--resume continues only the same one"
                )
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "experiment.toml", text)
        manifest = {
            "gradscope_recording": RECORDING_FORMAT,
            "experiment": experiment.name,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid": os.getpid(),
            "runs": [{"name": r.name, "dir": run_dir_name(i, r.name)} for i, r in enumerate(experiment.runs)],
        }
        atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=2))
        return cls(path)

    def run_dir(self, index: int, name: str) -> Path:
        return self.path / run_dir_name(index, name)

    def finished_runs(self, experiment: Experiment) -> dict[int, RunResult]:
        """The runs of an earlier, interrupted recording of ``experiment`` that had ended (completed or
        diverged), read from their stores: what ``--resume`` keeps instead of running them again."""
        kept = {}
        for index, run in enumerate(experiment.runs):
            result = _read_run(self.run_dir(index, run.name), run, index)
            if result is not None and result.status in (RunStatus.COMPLETED, RunStatus.DIVERGED):
                kept[index] = result
        return kept

    def resume_lines(self, experiment: Experiment, kept: dict[int, RunResult], todo: list[int]) -> list[str]:
        """What ``--resume`` does, a line each: the finished runs kept, then for each other run that had started
        "run 'x' resumed at iteration i of N" (or why it starts again from iteration 0)."""
        from .checkpoint import resume_note

        names = ", ".join(repr(r.name) for r in kept.values())
        lines = [f"resuming: {names} finished before and {'is' if len(kept) == 1 else 'are'} kept"] * bool(kept)
        for index in todo:
            run = experiment.runs[index]
            note = resume_note(self.run_dir(index, run.name), run.name, max(run.train.iterations, 1))
            lines += [note] if note else []
        return lines

    def move_stores(self, folder: Path, results: list[RunResult]) -> None:
        """io.export_experiment's ``extra_files``: each run's store into the folder being built, by one rename of
        its folder (files.move_into: put back if the export does not happen; the recording folder goes with the
        replaced DIR once it does)."""
        moves = []
        for index, result in enumerate(results):
            source = self.run_dir(index, result.name) / STORE_NAME
            if source.is_dir():
                moves.append((source, folder / run_dir_name(index, result.name) / STORE_NAME))
        move_into(folder, moves)

    def close(self) -> None:
        """The recording is no longer needed (its export is in place, or nothing was computed)."""
        shutil.rmtree(self.path, ignore_errors=True)


def _without_source(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class Folder:
    """What ``open_folder`` found: the experiment, a RunResult per run, the streams of each run (from the
    trace, by run name) and what the folder is: "exported", "recording" (a process is still writing it) or
    "interrupted" (that process is gone)."""

    path: Path
    experiment: Experiment
    results: list[RunResult]
    state: str
    streams: dict[str, tuple[str, ...]] = field(default_factory=dict)
    analysis: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # analysis.npz by run, if any


def open_folder(path) -> Folder:
    """An exported folder (summary.json), or the recording of a run in progress or killed (recording/)."""
    folder = Path(path)
    recording = folder / RECORDING / MANIFEST
    if recording.exists():
        remove_stale_temporaries(folder)  # an export killed mid-way gives the stores it held back first
        return _open_recording(folder)
    if (folder / "summary.json").exists():
        experiment, results = load_experiment_folder(folder)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        dirs = {entry["name"]: folder / entry["dir"] for entry in summary["runs"]}
        streams, analysis = {}, {}
        for result in results:
            run_dir = dirs[result.name]
            with np.load(run_dir / "trace.npz") as npz:
                if "streams" in npz.files:
                    streams[result.name] = tuple(str(s) for s in npz["streams"])
            if (run_dir / "analysis.npz").exists():
                with np.load(run_dir / "analysis.npz") as npz:
                    analysis[result.name] = {k: npz[k] for k in npz.files}
        return Folder(folder, experiment, results, "exported", streams, analysis)
    raise FileNotFoundError(
        f"{folder}: neither an exported folder (summary.json) nor a recording ({RECORDING}/{MANIFEST})"
    )


def _open_recording(folder: Path) -> Folder:
    path = folder / RECORDING
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    experiment = load(path / "experiment.toml", check_tasks=False)
    results, streams = [], {}
    for index, run in enumerate(experiment.runs):
        result = _read_run(path / run_dir_name(index, run.name), run, index)
        if result is None:  # not started: nothing recorded
            result = RunResult.for_run(run, run.effective_seed(experiment.seed), status=RunStatus.STOPPED)
        results.append(result)
        streams[run.name] = tuple(run.model_spec().streams)
    alive = pid_alive(manifest.get("pid")) and manifest.get("pid") != os.getpid()
    if not alive:
        for result in results:
            if result.interrupted_at is None and result.status is RunStatus.RUNNING:
                result.status = RunStatus.STOPPED
    return Folder(folder, experiment, results, "recording" if alive else "interrupted", streams)


def _read_run(run_dir: Path, run, index: int) -> RunResult | None:
    """A run's RunResult from its store (None when it has none): a store still "running" was interrupted
    after its last committed iteration, unless its process is still writing it."""
    try:
        arrays, info = read_store(run_dir / STORE_NAME)
    except FileNotFoundError:
        return None
    trace = Trace.from_arrays(arrays) if arrays else Trace()
    nonfinite = NonFinite(**info["nonfinite"]) if info.get("nonfinite") else None
    trace.nonfinite = nonfinite
    status = info.get("status", RUNNING)
    iterations = int(info.get("iterations", 0))
    result = RunResult.for_run(run, info.get("seed"), trace=trace, status=RunStatus.RUNNING)
    result.iterations, result.nonfinite = iterations, nonfinite
    if status != RUNNING:
        result.status = RunStatus(status)
    elif not pid_alive(info.get("pid")) or info.get("pid") == os.getpid():
        # killed (or its store stopped) before its first commit: stopped with nothing, not "at iteration -1"
        result.status, result.interrupted_at = RunStatus.STOPPED, (iterations - 1 if iterations else None)
    if (run_dir / "init_params.npz").exists():
        with np.load(run_dir / "init_params.npz") as npz:
            result.init_params = Params.from_arrays({k: npz[k] for k in npz.files})
    if (run_dir / "first_batch.npz").exists():
        with np.load(run_dir / "first_batch.npz") as npz:
            result.first_batch = {k: npz[k] for k in npz.files}
    return result


def describe(folder: Folder) -> str:
    """One line: "interrupted: 'relu 3/n' at iteration 41, 'tanh' not started" (or the export's statuses)."""
    parts = []
    for result in folder.results:
        if result.interrupted_at is not None:
            parts.append(f"{result.name!r} interrupted at iteration {result.interrupted_at}")
        elif result.iterations == 0 and not len(result.trace):
            parts.append(f"{result.name!r} not started")
        else:
            parts.append(f"{result.name!r} {result.status} ({result.iterations} iteration(s))")
    return f"{folder.state}: " + ", ".join(parts)


__all__ = ["Recording", "RecordingExists", "Folder", "open_folder", "describe", "RECORDING"]


class RunRecorder:
    """A run's store while it runs, made and written by a thread of its own (store.StoreWriter: the run does not
    wait for the disk).  A store that cannot be written (full disk) stops recording, never the run:
    ``result.store_error`` says why, and the records stay in memory.

    With ``training`` (the engine's Training of the run), ``add`` also queues a checkpoint of it every
    CHECKPOINT_SECONDS (gradscope.checkpoint; ``add`` is called between iterations, so it is consistent), and
    ``checkpoint()`` queues one now (a clean stop); each is written once the store holds every record added
    before it.  ``resume_at``: the run was restored from its checkpoint at that iteration: its store is
    reopened there (rows past it dropped) and appended to, instead of made anew (``RunRecorder.start``)."""

    def __init__(self, folder: Path, result: RunResult, *, training=None, resume_at: int | None = None):
        from .store import StoreWriter

        self.result, self.folder, self.training = result, Path(folder), training
        self._checkpointed = time.perf_counter()
        self.store: StoreWriter | None = StoreWriter(lambda: self._open(self.folder, resume_at))

    @classmethod
    def start(cls, folder: Path, result: RunResult, training, *, resume: bool = False) -> RunRecorder:
        """Record ``training``'s run (prepared into ``result``) into ``folder``, with checkpoints; with
        ``resume``, first continue it from the checkpoint there, when it has a usable one (checkpoint.resume_run)."""
        from .checkpoint import resume_run

        resume_at = resume_run(Path(folder), training, result) if resume else None
        return cls(folder, result, training=training, resume_at=resume_at)

    def _open(self, folder: Path, resume_at: int | None = None):
        from .checkpoint import remove_checkpoint
        from .io import _npz_bytes
        from .store import RunStore

        if resume_at is not None:
            return RunStore.reopen(folder / STORE_NAME, resume_at)
        result = self.result
        folder.mkdir(parents=True, exist_ok=True)
        remove_checkpoint(folder)  # an earlier attempt's: it would name rows the new store does not have
        if result.init_params is not None:
            atomic_write_bytes(folder / "init_params.npz", _npz_bytes(result.init_params.arrays()))
        if result.first_batch is not None:
            atomic_write_bytes(folder / "first_batch.npz", _npz_bytes(dict(result.first_batch)))
        streams = result.run.model_spec().streams
        return RunStore.create(folder / STORE_NAME, name=result.name, streams=streams, seed=result.seed)

    def add(self, record) -> None:
        from .checkpoint import CHECKPOINT_SECONDS

        if self.store is not None:
            try:
                self.store.add(record)
            except OSError as error:
                self._failed(error)
        if self.training is not None and time.perf_counter() - self._checkpointed >= CHECKPOINT_SECONDS:
            self.checkpoint()

    def checkpoint(self, state: dict[str, np.ndarray] | None = None) -> None:
        """Queue the run's checkpoint: ``state``, or checkpoint.checkpoint_state of ``training`` now (call it
        between iterations)."""
        from .checkpoint import checkpoint_state, write_checkpoint

        self._checkpointed = time.perf_counter()
        if state is None and self.training is not None:
            state = checkpoint_state(self.training, self.result)
        if self.store is not None and state is not None:
            try:
                self.store.after_commit(lambda: write_checkpoint(self.folder, state))
            except OSError as error:
                self._failed(error)

    def close(self, status) -> None:
        from .checkpoint import remove_checkpoint

        if self.store is not None:
            try:
                self.store.close(str(status))
                if str(status) in (RunStatus.COMPLETED, RunStatus.DIVERGED):  # nothing left to resume
                    remove_checkpoint(self.folder)
            except OSError as error:
                self._failed(error)

    def _failed(self, error: OSError) -> None:
        self.store = None
        self.result.store_error = error.strerror or str(error)  # "PATH: No space left on device"
