"""sweep.csv: one row per point, its columns and their values (docs/trace_format.md, "Sweeps").

    point, run, seed, <each swept key, named as in the file>, status, iterations, final_loss,
    log_gain_per_step, lyapunov_max, wall_seconds

Every value is computed from the point's own run (``measure``, on the worker that ran it) and written with
full precision (repr of the float: it reads back to the same bits), so a point's row is the same whichever
worker, process or cluster computed it and in whatever order the points finished; only ``wall_seconds``
measures the machine.  Rows are written sorted by point.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..files import atomic_write_text

HEAD = ("point", "run", "seed")
TAIL = ("status", "iterations", "final_loss", "log_gain_per_step", "lyapunov_max", "wall_seconds")
MEASURED = TAIL  # what a worker sends back for a point
KEPT = ("completed", "diverged")  # a row with one of these statuses is finished: --resume does not run it again


def columns(keys: Sequence[str]) -> list[str]:
    """The header of sweep.csv for a sweep over ``keys``."""
    return [*HEAD, *keys, *TAIL]


def point_name(index: int, total: int) -> str:
    """'0007': the point's name in sweep.csv and its folder under points/ (sorted like the points)."""
    return f"{index:0{max(4, len(str(max(total - 1, 0))))}d}"


# -------------------------------------------------------------------------------------------- the measures
def top_stream(streams: Sequence[str]) -> int:
    """The stream whose gradient sweep.csv reports: the decoder's last stream for a seq2seq model (streams
    named ``decoder.*``), else the top layer's forward stream (its reverse one meets a loss at the last step
    only at that step)."""
    names = list(streams)
    decoder = [i for i, name in enumerate(names) if name.startswith("decoder.")]
    if decoder:
        return decoder[-1]
    forward = [i for i, name in enumerate(names) if not name.endswith("_reverse")]
    return forward[-1] if forward else len(names) - 1


def log_gain_per_step(grad_h_norm: np.ndarray) -> float:
    """The least-squares slope of ln ||dL/dh_t|| against the lag k = T-1-t, over the steps where the norm is
    finite and positive (NaN when fewer than two are): the gradient's growth rate per step back in time.

    Sums are exact (math.fsum) and logs are math.log, so the value does not depend on a vectorised summation
    order or on NumPy's SIMD log kernels, only on the norms."""
    g = [float(v) for v in np.asarray(grad_h_norm, dtype=np.float64).reshape(-1)]  # (T,)
    T = len(g)
    pairs = [(float(T - 1 - t), math.log(v)) for t, v in enumerate(g) if math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return math.nan
    n = len(pairs)
    k_mean = math.fsum(k for k, _ in pairs) / n
    y_mean = math.fsum(y for _, y in pairs) / n
    sxx = math.fsum((k - k_mean) ** 2 for k, _ in pairs)
    sxy = math.fsum((k - k_mean) * (y - y_mean) for k, y in pairs)
    return sxy / sxx


def lyapunov_max(result, stream: int) -> float | None:
    """The largest Lyapunov exponent of ``stream`` at iteration 0, when the run was analysed; None otherwise.

    The analysis (docs/trace_format.md, "Analysis") leaves ``lyapunov`` (Ka, S, m) beside ``iteration`` (Ka,)
    as ``result.analysis``; a run without it (analysis off, or a GradScope without the analysis) has none."""
    analysis = getattr(result, "analysis", None)  # an engine.analysis.AnalysisLog (or its arrays)
    if analysis is None or not len(analysis):
        return None
    if hasattr(analysis, "to_arrays"):
        analysis = analysis.to_arrays()
    if "lyapunov" not in analysis:
        return None
    exponents = np.asarray(analysis["lyapunov"], dtype=np.float64)  # (Ka, S, m)
    iterations = np.asarray(analysis.get("iteration", np.arange(len(exponents))))  # (Ka,)
    rows = np.flatnonzero(iterations == 0)
    if not rows.size or exponents.ndim != 3 or exponents.shape[2] == 0:
        return None
    return float(exponents[rows[0], stream, 0])


def measure(result) -> dict:
    """A point's measured columns from its RunResult (status ... wall_seconds)."""
    trace = result.trace
    loss = trace.array("loss") if len(trace) and "loss" in trace else np.zeros(0)
    gain = math.nan
    stream = top_stream(result.run.model_spec().streams)
    if len(trace) and "grad_h_norm" in trace and int(trace.iterations[0]) == 0:
        gain = log_gain_per_step(trace.array("grad_h_norm")[0, stream])  # iteration 0, (T,)
    return {
        "status": str(result.status),
        "iterations": int(result.iterations),
        "final_loss": float(loss[-1]) if len(loss) else None,
        "log_gain_per_step": gain,
        "lyapunov_max": lyapunov_max(result, stream),
        "wall_seconds": float(result.wall_seconds),
    }


# -------------------------------------------------------------------------------------------- the file
def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 'nan', 'inf', or the shortest text that reads back to the same float
    return str(value)


def row_values(name: str, point, measured: dict) -> list[str]:
    """One row's fields: the point's name, run, seed and swept values, then the measured columns."""
    return [name, point.base, str(point.seed), *(_text(v) for v in point.values), *(_text(measured[c]) for c in TAIL)]


def csv_text(header: Sequence[str], rows: Iterable[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_table(path: Path, header: Sequence[str], rows: dict[int, list[str]]) -> None:
    """sweep.csv, rows sorted by point, written atomically (a kill never leaves half a file)."""
    atomic_write_text(path, csv_text(header, (rows[index] for index in sorted(rows))))


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as dicts of text) of a sweep.csv; ([], []) when there is none."""
    if not path.exists():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        return header, [dict(zip(header, fields)) for fields in reader if fields]


def number(text: str) -> float:
    """A measured column as a float (empty: NaN)."""
    return float(text) if text not in ("", None) else math.nan


__all__ = [
    "HEAD",
    "TAIL",
    "KEPT",
    "columns",
    "point_name",
    "top_stream",
    "log_gain_per_step",
    "lyapunov_max",
    "measure",
    "row_values",
    "csv_text",
    "write_table",
    "read_table",
    "number",
]
