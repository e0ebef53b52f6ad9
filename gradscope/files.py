"""Atomic file writes: a file under its final name is either its old content or all of the new one.

    atomic_write_text("mine.toml", text)       # temporary name in the same folder, fsync, os.replace
    check_writable("out/relu")                 # before computing: can a folder be made there? (OSError if not)
    tmp = make_temporary_dir("out/relu")       # .relu.tmp-*, locked while in use, with the umask's mode
    remove_stale_temporaries("out/relu")       # .relu.tmp-* / .relu.old-* that a killed process left behind

Temporary names are hidden (``.NAME.tmp-*``) and are created with the user's umask, as any other tool's files.

The config (config.save) and the exporter (io) both write through here; this module imports only the standard
library, so neither has to import the other for it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

LOCK_NAME = ".gradscope-lock"  # inside a temporary folder: held (flock) by the process building it
MOVED_NAME = ".gradscope-moved.json"  # inside a temporary folder: what was moved into it from where (move_into)
STALE_SECONDS = 3600  # a temporary without a lock older than this is left over (a lock is taken within ms)


def umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), else set and reset."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _syncfs():
    """libc's syncfs(2) (Linux), or None where there is none."""
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    return function


def sync_tree(path: str | os.PathLike) -> None:
    """Flush every file and folder under ``path`` to disk before the folder is published (renamed into place).

    One syncfs(2) of the file system that holds it (Linux): the kernel writes the folder's files out together
    and commits the journal once, where an fsync per file waits for a journal commit each (an export of 1,000
    runs wrote 4,000 files: ~3 ms each, 13 s; two sweep workers exporting at once waited ~12 ms per point).
    Elsewhere (no syncfs): an fsync of every file and folder.  Raises OSError when the disk reports an error."""
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if syncfs(fd) != 0:
                import ctypes

                code = ctypes.get_errno()
                raise OSError(code, f"{path}: {os.strerror(code)}")
        finally:
            os.close(fd)
        return
    for root, _dirs, files in os.walk(os.fspath(path)):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either its old content or all of ``data``."""
    path = Path(path)
    remove_stale_temporaries(path)
    try:  # mkstemp makes 0600: keep the replaced file's mode, else the umask's, as any editor does
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write_bytes`` of the UTF-8 encoding of ``text``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(path: str | os.PathLike) -> None:
    """Raise OSError (naming the folder) unless a folder ``path`` can be created or replaced: its nearest existing
    ancestor is a folder in which this process can create an entry (tried, not guessed: root, read-only file
    systems and ACLs all answer the same way)."""
    path = Path(path).absolute()
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{parent} is a file, not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=f".{path.name[:100]}.probe-", dir=parent)
    except OSError as error:
        raise type(error)(error.errno, f"cannot write into {parent}: {error.strerror}") from None
    os.rmdir(probe)


class TemporaryDir:
    """A hidden folder ``.NAME.tmp-*`` beside ``path``, with the umask's mode, locked (flock on LOCK_NAME inside)
    while this object lives, so that remove_stale_temporaries never takes a folder still being built.
    ``release()`` removes the lock file (call it before renaming the folder into place)."""

    def __init__(self, path: str | os.PathLike, kind: str = "tmp"):
        path = Path(path)
        self.path = Path(tempfile.mkdtemp(prefix=f".{path.name}.{kind}-", dir=path.parent))
        os.chmod(self.path, 0o777 & ~umask())
        self._lock: int | None = os.open(self.path / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._lock is not None:
            Path(self.path / LOCK_NAME).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    def remove(self) -> None:
        """Give back what was moved in (move_into), then delete the folder."""
        self.release()
        restore_moved(self.path)
        shutil.rmtree(self.path, ignore_errors=True)


def move_into(folder: str | os.PathLike, moves: list[tuple[Path, Path]]) -> None:
    """Rename each (source, target) pair, ``target`` inside the temporary ``folder``, after writing them down in
    the folder's MOVED_NAME: one rename per folder moved (a run's store is ~40 files in ~40 folders: a hard link
    of each, and removing the old names afterwards, took 23 of a 1,000-run export's seconds).  Until the folder is
    published, whatever deletes it gives them back first (TemporaryDir.remove, remove_stale_temporaries), so a
    kill or an error mid-export leaves each where it was.  Call ``published(destination)`` after the rename."""
    folder = Path(folder)
    journal = {"pid": os.getpid(), "moves": [[str(Path(a).absolute()), str(Path(b).absolute())] for a, b in moves]}
    with open(folder / MOVED_NAME, "w", encoding="utf-8") as f:
        json.dump(journal, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before any move it describes
    for source, target in moves:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)


def published(folder: str | os.PathLike) -> None:
    """The moves into a folder are final: its journal (now under the published name) goes."""
    Path(folder, MOVED_NAME).unlink(missing_ok=True)


def restore_moved(folder: str | os.PathLike) -> None:
    """Move back what ``move_into`` moved into ``folder`` (each target still there whose source is free)."""
    journal_path = Path(folder) / MOVED_NAME
    try:
        moves = json.loads(journal_path.read_text(encoding="utf-8"))["moves"]
    except (OSError, ValueError, KeyError):
        return
    for source, target in moves:
        source_path, target_path = Path(source), Path(target)
        if target_path.exists() and not source_path.exists():
            source_path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(target_path, source_path)
    journal_path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the ``.NAME.tmp-*`` and ``.NAME.old-*`` entries beside ``path`` that no live process holds (a
    kill -9 mid-export leaves them): folders whose lock can be taken, and unlocked entries older than
    STALE_SECONDS.  Returns what was removed; anything it cannot remove is left as it is."""
    path = Path(path)
    removed: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not any(entry.name.startswith(f".{path.name}.{kind}-") for kind in ("tmp", "old")):
            continue
        try:
            if _stale(entry):
                if entry.is_dir() and not entry.is_symlink():
                    restore_moved(entry)
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


def _stale(entry: Path) -> bool:
    lock = entry / LOCK_NAME
    if entry.is_dir() and lock.exists():
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live export holds it
        finally:
            os.close(fd)
        return True
    moved = entry / MOVED_NAME
    if entry.is_dir() and moved.exists():  # released (about to be published) while holding moved folders
        try:
            pid = json.loads(moved.read_text(encoding="utf-8")).get("pid")
        except (OSError, ValueError):
            pid = None
        return not pid_alive(pid)
    return time.time() - entry.lstat().st_mtime > STALE_SECONDS


def pid_alive(pid) -> bool:
    """Whether a process with this pid exists (a recording's or an export's writer, read from its manifest)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "sync_tree",
    "check_writable",
    "TemporaryDir",
    "move_into",
    "published",
    "restore_moved",
    "remove_stale_temporaries",
    "umask",
    "STALE_SECONDS",
]
