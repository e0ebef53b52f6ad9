"""A run's checkpoint in its recording folder: where ``gradscope run --resume`` continues a killed run from.

    state = checkpoint_state(training, result)      # in the training thread, between iterations
    recorder.checkpoint(state)                      # recording.RunRecorder: written once the store holds its rows
    at, why = resumable(run_dir)                    # (iteration, "") or (None, why it starts again from 0)
    at = resume_run(run_dir, training, result)      # restores the Training, reloads the records before ``at``

``<run dir>/checkpoint.npz`` (docs/trace_format.md, "Checkpoints") holds engine.trainer.Training.checkpoint()
(parameters, optimizer state, the data stream's RNG state, the iteration and recorded counters), the run's wall
seconds so far and, when analysis is on, the analysed rows so far (they are not in the store).  It is written
every CHECKPOINT_SECONDS of computing and when a run is stopped, by the store's thread after the store has
committed and fsynced every row before it (store.StoreWriter.after_commit), under a temporary name that is
fsynced and renamed into place (files.atomic_write_bytes): a SIGKILL or a power cut leaves the previous
checkpoint or the new one, never a torn one, and never one that names rows the store lacks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .engine.analysis import AnalysisLog
from .files import atomic_write_bytes
from .io import _npz_bytes
from .runs import RunResult
from .store import STORE_NAME, read_store

CHECKPOINT_NAME = "checkpoint.npz"
CHECKPOINT_FORMAT = 1
# seconds of computing between two checkpoints: a SIGKILL costs at most this much work on --resume.  Taking one
# costs the training thread a copy of the parameters and optimizer state (milliseconds for the presets);
# writing and fsyncing it is the store thread's (benchmarks/bench_checkpoint.py measures both)
CHECKPOINT_SECONDS = 10.0


def checkpoint_state(training, result: RunResult) -> dict[str, np.ndarray]:
    """What the run's next iteration depends on (Training.checkpoint), with what the store does not keep."""
    state = training.checkpoint()
    state["gradscope_checkpoint"] = np.array(CHECKPOINT_FORMAT)
    state["wall_seconds"] = np.array(result.wall_seconds, dtype=np.float64)
    if result.analysis is not None and len(result.analysis):
        state |= {f"analysis/{k}": v for k, v in result.analysis.to_arrays().items()}
        state |= {f"units/{k}": v for k, v in result.analysis.unit_arrays().items()}
    return state


def write_checkpoint(run_dir: Path, state: dict[str, np.ndarray]) -> None:
    atomic_write_bytes(Path(run_dir) / CHECKPOINT_NAME, _npz_bytes(state))


def read_checkpoint(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The run's checkpoint, or None when it has none.  ValueError (naming the file) when it is not one."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        with np.load(path) as npz:
            state = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as error:  # a zip that is not one: never written by us (atomic)
        raise ValueError(f"{path}: not a GradScope checkpoint ({error})") from None
    if int(state.get("gradscope_checkpoint", -1)) != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: gradscope_checkpoint: got {state.get('gradscope_checkpoint')!r}; expected {CHECKPOINT_FORMAT}"
        )
    return state


def remove_checkpoint(run_dir: Path) -> None:
    (Path(run_dir) / CHECKPOINT_NAME).unlink(missing_ok=True)


def resumable(run_dir: Path) -> tuple[int | None, str]:
    """(the iteration a killed run resumes at, "") when its checkpoint and store agree; else (None, why not):
    no checkpoint (killed within its first CHECKPOINT_SECONDS), or one the store cannot back."""
    try:
        state = read_checkpoint(run_dir)
    except ValueError as error:
        return None, str(error)
    if state is None:
        return None, "no checkpoint was written before it stopped"
    at, recorded = int(state["iteration"]), int(state["recorded"])
    try:
        arrays, info = read_store(Path(run_dir) / STORE_NAME)
    except (FileNotFoundError, ValueError) as error:
        return None, str(error)
    rows = int(np.searchsorted(arrays.get("iteration", np.zeros(0, dtype=np.int64)), at))
    if int(info.get("iterations", 0)) < at or rows != recorded:
        return None, (
            f"{Path(run_dir) / STORE_NAME}: holds {rows} record(s) before iteration {at}, its checkpoint counts "
            f"{recorded}"
        )
    return at, ""


def resume_run(run_dir: Path, training, result: RunResult) -> int | None:
    """Continue a killed run from its checkpoint: restore ``training`` (fresh, of the same run and seed), put the
    store's records before the checkpoint's iteration into ``result`` (row by row, so its trace thins exactly as
    the uninterrupted run's did) and return that iteration; None (nothing changed) when it has no usable one."""
    at, _why = resumable(run_dir)
    if at is None:
        return None
    state = read_checkpoint(run_dir)
    assert state is not None  # resumable read it a moment ago; nothing else writes the folder now
    training.restore(state)
    arrays, _info = read_store(Path(run_dir) / STORE_NAME)
    rows = int(state["recorded"])
    for k in range(rows):
        result.trace.append_columns({name: column[k] for name, column in arrays.items()})
    result.iterations = at
    result.wall_seconds = float(state["wall_seconds"])
    if any(k.startswith("analysis/") for k in state):
        analysis = {k.partition("/")[2]: v for k, v in state.items() if k.startswith("analysis/")}
        units = {k.partition("/")[2]: v for k, v in state.items() if k.startswith("units/")}
        log = AnalysisLog.from_arrays(analysis, units)
        log.h0 = result.analysis.h0 if result.analysis is not None else log.h0  # the seed's, as the run drew it
        result.analysis = log
    return at


def resume_note(run_dir: Path, name: str, total: int) -> str | None:
    """``gradscope run --resume``'s line for an unfinished run: "run 'x' resumed at iteration i of N", or why
    it starts again from iteration 0; None for a run that had not started."""
    if not (Path(run_dir) / STORE_NAME).exists():
        return None
    at, why = resumable(run_dir)
    if at is None:
        return f"run {name!r} starts again from iteration 0: {why}"
    return f"run {name!r} resumed at iteration {at} of {total}"


__all__ = [
    "CHECKPOINT_NAME",
    "CHECKPOINT_SECONDS",
    "checkpoint_state",
    "write_checkpoint",
    "read_checkpoint",
    "remove_checkpoint",
    "resumable",
    "resume_run",
    "resume_note",
]
