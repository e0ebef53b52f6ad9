"""A run's recorded iterations: a growable, bounded-memory column store.

The trainer yields one ``Record`` per iteration; the ones marked ``recorded`` are appended to the run's
``Trace``.  Every metric becomes a column of shape (K, ...) with one row per recorded iteration, exactly the
arrays written to trace.npz (docs/trace_format.md).  Readers get read-only views; ``version`` changes on every
append so a view redraws only when there is something new.

Memory is bounded: when the columns would outgrow ``max_bytes`` the trace doubles its stride: it keeps every
other row (always the first, which is iteration 0) and from then on keeps one appended row in ``stride``, while
the latest row is always shown.  The rows that remain are evenly spread over the whole run.
"""

from __future__ import annotations

import numpy as np

from .engine.metrics import NonFinite
from .engine.record import Record

DEFAULT_MAX_BYTES = 512 * 2**20

__all__ = ["Record", "Trace", "DEFAULT_MAX_BYTES"]  # Record: the engine's, appended here


class Trace:
    """Columns of recorded iterations for one run.  Append from one thread; read anywhere via ``array``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = int(max_bytes)
        self._cols: dict[str, np.ndarray] = {}
        self._n = 0
        self.version = 0
        self.stride = 1  # one appended row in `stride` is kept
        self._seq = np.zeros(16, dtype=np.int64)  # running number of each stored row among all appended
        self._appended = 0
        self._provisional = False  # the last row is off-stride, kept only until the next append
        self.nonfinite: NonFinite | None = None

    # ------------------------------------------------------------------------------------------ writing
    def append(self, record: Record) -> None:
        self.append_columns(record.columns())
        if record.nonfinite is not None and self.nonfinite is None:
            self.nonfinite = record.nonfinite

    def append_columns(self, row: dict[str, np.ndarray]) -> None:
        if self._provisional:
            self._n -= 1  # the previous latest row was off-stride: replace it
        if not self._cols:
            for name, value in row.items():
                self._cols[name] = np.empty((len(self._seq),) + value.shape, dtype=_column_dtype(value))
        elif self._n == len(self._seq):
            self._grow()
        capacity = len(self._seq)
        for name, value in row.items():
            column = self._cols.get(name)
            if column is None:  # a metric that appears late: earlier rows are missing, not zero
                column = self._cols[name] = np.full(
                    (capacity,) + value.shape, _missing(value), dtype=_column_dtype(value)
                )
            if column.shape[1:] != value.shape:
                raise ValueError(f"metric {name!r} changed shape from {column.shape[1:]} to {value.shape}")
            column[self._n] = value
        for name, column in self._cols.items():
            if name not in row:
                column[self._n] = _missing(column)
        self._seq[self._n] = self._appended
        self._provisional = self._appended % self.stride != 0
        self._appended += 1
        self._n += 1
        self.version += 1

    def _grow(self) -> None:
        capacity = len(self._seq)
        row_bytes = sum(c[0].nbytes for c in self._cols.values())
        if row_bytes * capacity * 2 > self.max_bytes and self._n >= 4:
            self._thin()
            return
        for name, column in self._cols.items():
            grown = np.empty((capacity * 2,) + column.shape[1:], dtype=column.dtype)
            grown[: self._n] = column[: self._n]
            self._cols[name] = grown
        self._seq = np.concatenate([self._seq, np.zeros(capacity, dtype=np.int64)])

    def _thin(self) -> None:
        """Double the stride and drop the stored rows that are off the new stride."""
        self.stride *= 2
        keep = np.flatnonzero(self._seq[: self._n] % self.stride == 0)
        for _name, column in self._cols.items():
            column[: len(keep)] = column[keep]
        self._seq[: len(keep)] = self._seq[keep]
        self._n = len(keep)

    # ------------------------------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self._n

    @property
    def names(self) -> list[str]:
        return list(self._cols)

    def __contains__(self, name: str) -> bool:
        return name in self._cols

    def array(self, name: str) -> np.ndarray:
        """The column ``name`` as a read-only (K, ...) view."""
        if name not in self._cols:
            raise KeyError(f"the trace has no metric {name!r}; it has {sorted(self._cols)}")
        view = self._cols[name][: self._n]
        view.flags.writeable = False
        return view

    @property
    def iterations(self) -> np.ndarray:
        return self.array("iteration") if self._cols else np.zeros(0, dtype=np.int64)

    def latest(self, name: str):
        """The last recorded value of ``name`` (an (L, T) array for per-timestep metrics)."""
        return self.array(name)[-1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Copies of every column, keyed as in trace.npz."""
        return {name: np.array(column[: self._n]) for name, column in self._cols.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], max_bytes: int = DEFAULT_MAX_BYTES) -> Trace:
        """A trace holding the given (K, ...) columns, e.g. read back from trace.npz."""
        trace = cls(max_bytes=max_bytes)
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns have different numbers of rows: {lengths}")
        trace._cols = {name: np.array(a) for name, a in arrays.items()}
        trace._n = next(iter(lengths.values()), 0)
        trace._seq = np.arange(max(trace._n, 16), dtype=np.int64)
        trace._appended = trace._n
        trace.version = 1
        return trace


def _column_dtype(value: np.ndarray) -> np.dtype:
    if value.dtype.kind == "f":
        return np.dtype(np.float64)
    return value.dtype


def _missing(value: np.ndarray):
    return np.nan if value.dtype.kind == "f" else 0
