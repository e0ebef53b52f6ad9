"""The app's recording: every run it runs is recorded as it runs, in one folder per session of the app.

    session = Session(root)                          # ROOT/20261203-031012-4242/ (made when a run starts)
    take = session.take(experiment, run, seed)       # GUI thread: the run's folder is named, nothing written
    recorder = take.start(result)                    # the run's thread: a recording.RunRecorder, or None
    ... recorder.add(record) ...; recorder.close(status); take.closed()
    session.discard(take)                            # the run's trace was cleared: its recording goes with it
    session.end()                                    # the window closed with every run's store closed
    found = last_interrupted(root)                   # a session whose process died: offered for recovery
    folder = open_any(path)                          # a session, an export or a recording, as recording.Folder

Layout (docs/gui.md, "Recording"): ``ROOT/<started>-<pid>/session.json`` and one folder per run the app ran,
``003-relu-3-n/``, each exactly what ``gradscope run --out`` leaves while it runs: ``recording/`` with a one-run
experiment.toml, recording.json and the run's ``records.zarr`` (gradscope.recording, gradscope.store).  So a
run's folder opens on its own (``gradscope.open``), and the session opens as the overlay of its runs.

A session is "interrupted" when its process is gone and ``session.json`` has no ``ended``: closing the window
(after the runs' stores are closed) writes it; a crash, a SIGKILL or a power cut does not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import Experiment
from .files import atomic_write_text, pid_alive
from .recording import MANIFEST, RECORDING, Folder, RunRecorder, open_folder
from .runs import RunResult, RunStatus
from .store import STORE_NAME

SESSION_FORMAT = 1
SESSION = "session.json"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "run"


def is_session(path) -> bool:
    return (Path(path) / SESSION).is_file()


@dataclass
class Take:
    """One run as the app ran it: its own recording folder (``session/NNN-name/``)."""

    session: Session
    path: Path
    experiment: Experiment  # the one-run experiment written to its recording
    open: bool = False  # its recorder has started and not closed yet
    discarded: bool = False  # its run's trace was cleared: the folder goes once the recorder is closed
    run_dir: Path | None = None  # recording/01-name/ once started

    def start(self, result: RunResult) -> RunRecorder | None:
        """The run's recorder (called by the run's thread, before its first iteration); None when the run was
        discarded meanwhile.  Raises OSError when the folder cannot be written (the run goes on in memory)."""
        from .recording import Recording

        if not self.begin():
            return None
        try:
            recording = Recording.start(self.path, self.experiment)
            self.run_dir = recording.run_dir(0, result.name)
            return RunRecorder(self.run_dir, result)
        except BaseException:
            self.closed()
            raise

    def begin(self) -> bool:
        """The run is about to record (start, or a run's process about to): False when it was discarded
        meanwhile.  Makes the session's folder; raises OSError (the take closed) when it cannot."""
        with self.session.lock:
            if self.discarded:
                return False
            self.open = True
        try:
            self.session.make()
        except BaseException:
            self.closed()
            raise
        return True

    def closed(self) -> None:
        """The recorder has written its last (the run's thread); a discarded take is removed now."""
        with self.session.lock:
            self.open = False
            if self.discarded:
                shutil.rmtree(self.path, ignore_errors=True)

    def kept(self) -> str:
        """What the run's store holds on disk now, in words: "its iterations 0-41 are kept" (in its folder,
        ``self.path``: the app's dialog names the session's folder once and each run's folder by its name)."""
        if self.run_dir is None:
            return "nothing of it was written"
        try:
            attrs = json.loads((self.run_dir / STORE_NAME / "zarr.json").read_text(encoding="utf-8"))["attributes"]
            iterations = int(attrs.get("iterations", 0))
        except (OSError, TypeError, ValueError, KeyError):
            return "nothing of it could be kept"
        if iterations == 0:
            return "nothing of it had been written yet"
        return f"its iterations 0-{iterations - 1} are kept"


@dataclass
class Session:
    """The folder of one session of the app: made when its first run starts recording."""

    root: Path
    path: Path = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    takes: list[Take] = field(default_factory=list, init=False)
    _made: bool = field(default=False, init=False)

    def __post_init__(self):
        self.root = Path(self.root)
        self.path = self.root / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"

    def make(self) -> None:
        with self.lock:
            if not self._made:
                self.path.mkdir(parents=True, exist_ok=True)
                manifest = {
                    "gradscope_session": SESSION_FORMAT,
                    "pid": os.getpid(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "ended": None,
                }
                atomic_write_text(self.path / SESSION, json.dumps(manifest, indent=2))
                self._made = True

    def take(self, experiment, run, seed: int) -> Take:
        """A folder for one run of ``experiment`` (named now; written by Take.start in the run's thread)."""
        one = experiment.model_copy(update={"runs": [run.model_copy(update={"seed": int(seed)})]})
        with self.lock:
            take = Take(self, self.path / f"{len(self.takes) + 1:03d}-{_slug(run.name)}", one)
            self.takes.append(take)
        return take

    def discard(self, take: Take) -> None:
        """The run's trace was cleared (Reset, an edit, another experiment): its folder goes too, at once or,
        if its recorder is still writing, as soon as it has closed."""
        with self.lock:
            take.discarded = True
            if not take.open:
                shutil.rmtree(take.path, ignore_errors=True)

    @property
    def writing(self) -> bool:
        """Some run's recorder is still open (its last records not yet on disk)."""
        return any(t.open for t in self.takes)

    @property
    def recorded(self) -> bool:
        """Some run's folder is on disk."""
        return any(t.path.exists() for t in self.takes)

    def end(self) -> None:
        """The window closed and every run's store is closed: not an interrupted session (kept, though, for
        File > Open; a session that recorded nothing is removed)."""
        if not self._made:
            return
        if not any(p.is_dir() for p in self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)
            return
        mark(self.path, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def mark(path, **fields) -> None:
    """Add ``fields`` to a session's session.json (ended, or what the user did with its recovery notice)."""
    manifest_path = Path(path) / SESSION
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest.update(fields)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))


# ------------------------------------------------------------------------------------------------ reading
def _takes(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if (p / RECORDING / MANIFEST).is_file())


def open_session(path) -> Folder:
    """Every run a session recorded, as one Folder (the runs of its takes, renamed "name (2)" where a name
    repeats).  Its state: "recording" while its app runs, "interrupted" if that app died, else "ended"."""
    path = Path(path)
    manifest = json.loads((path / SESSION).read_text(encoding="utf-8"))
    folders = [open_folder(take) for take in _takes(path)]
    if not folders:
        raise FileNotFoundError(f"{path}: a session of the app that recorded no run")
    taken: set[str] = set()
    runs, results, streams = [], [], {}
    for folder in folders:
        for run, result in zip(folder.experiment.runs, folder.results):
            name, n = run.name, 2
            while name in taken:
                name, n = f"{run.name} ({n})", n + 1
            taken.add(name)
            run = run.model_copy(update={"name": name})
            runs.append(run)
            results.append(_renamed(result, run))
            streams[name] = folder.streams.get(result.name, ())
    experiment = folders[0].experiment.model_copy(update={"runs": runs})
    if manifest.get("ended"):
        state = "ended"
    else:  # its app (this process too) still going, or gone
        state = "recording" if pid_alive(manifest.get("pid")) else "interrupted"
    return Folder(path, experiment, results, state, streams)


def _renamed(result: RunResult, run) -> RunResult:
    from dataclasses import replace

    return replace(result, name=run.name, run=run)


def open_any(path) -> Folder:
    """A session of the app, an exported folder, or a recording of ``gradscope run`` (recording.open_folder)."""
    return open_session(path) if is_session(path) else open_folder(path)


@dataclass
class Interrupted:
    """A session whose app died (a crash, a SIGKILL): what the recovery notice says and opens."""

    path: Path
    started: str
    folder: Folder

    def summary(self) -> str:
        """ "'relu 3/n' at iteration 41, 'tanh' completed (100 iterations)" """
        parts = []
        for result in self.folder.results:
            if result.interrupted_at is not None:
                parts.append(f"{result.name!r} at iteration {result.interrupted_at}")
            elif result.status is RunStatus.STOPPED and result.iterations == 0:
                parts.append(f"{result.name!r} before its first iteration")
            else:
                parts.append(f"{result.name!r} {result.status} ({result.iterations} iterations)")
        return ", ".join(parts)


def last_interrupted(root) -> Interrupted | None:
    """The newest session under ``root`` whose app died with runs recorded, not yet opened or dismissed from
    its recovery notice.  A session folder that cannot be read is skipped (never deleted)."""
    root = Path(root)
    if not root.is_dir():
        return None
    for path in sorted((p for p in root.iterdir() if is_session(p)), reverse=True):
        try:
            manifest = json.loads((path / SESSION).read_text(encoding="utf-8"))
            pid = manifest.get("pid")
            if manifest.get("ended") or manifest.get("handled") or (pid_alive(pid) and pid != os.getpid()):
                continue
            if pid == os.getpid():  # this very process: not interrupted
                continue
            folder = open_session(path)
        except (OSError, ValueError, KeyError):
            continue
        if any(len(r.trace) or r.iterations for r in folder.results):
            return Interrupted(path, str(manifest.get("started", "")), folder)
    return None


# ------------------------------------------------------------------------------------------------ pruning
KEEP_LAST = 20  # the newest sessions are always kept, however old
KEEP_DAYS = 30  # and every session younger than this


def prune(root, *, keep_last: int = KEEP_LAST, keep_days: float = KEEP_DAYS, now: float | None = None) -> list[Path]:
    """Remove the app's old sessions under ``root``; returns the folders removed.  A session goes only when it is
    done with (closed cleanly: ``ended``; or its recovery notice was answered: ``handled``), is not among the
    ``keep_last`` newest, and started more than ``keep_days`` days ago.  Never one that is interrupted and
    unanswered, one still being written, one whose session.json cannot be read, or any other folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    sessions = sorted((p for p in root.iterdir() if is_session(p)), reverse=True)  # newest first: named by time
    removed = []
    for path in sessions[keep_last:]:
        try:
            manifest = json.loads((path / SESSION).read_text(encoding="utf-8"))
            started = time.mktime(time.strptime(str(manifest["started"])[:19], "%Y-%m-%dT%H:%M:%S"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        done_with = bool(manifest.get("ended") or manifest.get("handled"))
        if done_with and now - started > keep_days * 86400 and not pid_alive(manifest.get("pid")):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


__all__ = [
    "Session",
    "Take",
    "Interrupted",
    "open_session",
    "open_any",
    "last_interrupted",
    "is_session",
    "mark",
    "prune",
]
