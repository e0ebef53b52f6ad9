"""Exported experiment folders (docs/trace_format.md, docs/experiments.md): writing them atomically, reading them
back.

    export_experiment("out/relu", experiment, results)        # experiment.toml, summary.json, <run>/...
    export_experiment("out/relu", experiment, results, figures=write)   # and plots/, by write(experiment, results, dir)
    experiment, results = load_experiment_folder("out/relu")   # view it again without running

Atomicity: the folder is built under a temporary name beside its destination, flushed to disk as a whole
(files.sync_tree: one syncfs, not an fsync per file), and renamed into place (an earlier export under the
same name is swapped out only then).  A crash, a
kill or a full disk leaves at most a hidden ``.<name>.tmp-*`` folder, never a truncated file under a final name.
``sync=False`` leaves the flush to a caller that flushes the file system itself before anything names the
export (a sweep's main process, once for the points its local workers exported meanwhile: sweep/runner.py).
Single files (config.save) go through ``files.atomic_write_bytes``: temporary name in the same folder, fsync,
os.replace.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import Experiment, dumps, load
from .engine.analysis import AnalysisLog, run_summary as analysis_summary
from .engine.cells import cell
from .engine.metrics import NonFinite
from .engine.params import Params
from .files import (
    TemporaryDir,
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
    fsync_dir,
    published,
    remove_stale_temporaries,
    sync_tree,
)
from .npzfile import npz_bytes
from .runs import FINISHED, RunResult, RunStatus
from .trace import Trace

FORMAT_VERSION = 1  # a plain stack of rnn or lstm layers: format 1, unchanged
FORMAT_2 = 2  # once a run has streams beyond layers (bidirectional) or a cell beyond format 1 (gru)
READABLE_FORMATS = (1, 2)
STREAM_KEYS = ("streams", "stream_len")  # trace.npz of format 2: the streams' names and lengths, (S,) each
STATUSES = tuple(status.value for status in RunStatus if status in FINISHED)  # summary.json's "status"


def gradscope_version() -> str:
    """The installed package's version, or the source tree's (pyproject.toml) when running uninstalled."""
    from importlib import metadata

    try:
        return metadata.version("gradscope")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        match = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) if pyproject.exists() else None
        return match.group(1) if match else "unknown"


# Metrics with one value per timestep but no layer axis: (K, T) in a trace.
PER_STEP_WITHOUT_LAYER = ("loss_t",)
PER_DECODER_LAYER = ("grad_bridge_norm", "grad_bridge_c_norm")  # seq2seq (K, L): one per decoder layer


class ExportError(OSError):
    """The destination cannot take an export (e.g. an unrelated, non-empty folder is there)."""


class FigureExportError(RuntimeError):
    """Traces were exported (``path``) but the figures failed; ``details`` is the traceback text."""

    def __init__(self, path: Path, details: str):
        super().__init__(f"the traces are in {path}, but rendering the figures failed")
        self.path, self.details = path, details


_npz_bytes = npz_bytes  # recording.py and checkpoint.py write theirs with it too


def _write(path: Path, data: bytes) -> None:
    """A file inside the folder under construction (flushed to disk with the whole folder, sync_tree, before the
    folder's rename publishes it)."""
    with open(path, "wb") as f:
        f.write(data)


# -------------------------------------------------------------------------------------------------- export
def run_dir_name(index: int, name: str) -> str:
    """'01-relu-3-n' for run 0 named 'relu 3/n': ordered, unique, safe on every file system."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "run"
    return f"{index + 1:02d}-{slug}"


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Refuse a destination that is neither absent, empty, nor an earlier GradScope export (never overwrite
    someone's files), or that cannot be written (a read-only folder, a file where a parent folder should be).
    Call it before running, so a refused destination costs nothing."""
    out = Path(out_dir)
    try:
        check_writable(out)
    except OSError as error:
        raise ExportError(f"--out {out}: {error.strerror or error}; expected a folder that can be written") from None
    if out.exists():
        if not out.is_dir():
            raise ExportError(
                f"--out {out}: a file is in the way; expected a folder (new, empty, or an earlier GradScope export)"
            )
        ours = (out / "summary.json").exists() or (out / "recording").is_dir()  # an export, or our recording
        if any(out.iterdir()) and not ours:
            raise ExportError(
                f"--out {out}: the folder is not empty and is not a GradScope export; choose a new folder"
            )
    return out


def _finite_or_text(value):
    """JSON has no NaN or Inf: write them as the strings "nan", "inf", "-inf" (docs/experiments.md), at any depth
    of a summary (final_loss, a divergence's values, whatever a later key holds); NumPy scalars as Python's."""
    if isinstance(value, dict):
        return {key: _finite_or_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_text(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _from_text(value):
    return float(value) if value in ("nan", "inf", "-inf") else value


def format_of(run) -> int:
    """The format a run's export needs (docs/trace_format.md): 2 for a bidirectional or seq2seq model, a GRU, or a
    run with analysis."""
    analysed = getattr(run, "analysis", None) is not None and run.analysis.every > 0
    if run.bidirectional or run.architecture != "stack" or analysed:
        return FORMAT_2
    return max(FORMAT_VERSION, cell(run.cell).trace_format)


def stream_arrays(run) -> dict[str, np.ndarray]:
    """trace.npz's format-2 keys for a run: the streams' names (S,) and their lengths (S,) in steps (a seq2seq
    decoder's are task.target_len, or seq_len when it is not set)."""
    streams = run.model_spec().streams
    T_src, T_tgt = run.task.seq_len, run.task.target_len or run.task.seq_len
    lengths = [T_tgt if name.startswith("decoder.") else T_src for name in streams]
    return {"streams": np.array(streams), "stream_len": np.array(lengths, dtype=np.int64)}


def trace_csv(run_name: str, arrays: dict[str, np.ndarray], streams=None) -> str:
    """Long format: run,iteration,layer,timestep,metric,value.  Per-timestep metrics fill layer and timestep;
    per-layer metrics (e.g. grad_norm_W_hh) fill layer; loss_t fills timestep; per-iteration ones fill neither.

    Built a metric at a time from prepared prefixes (a 100-iteration LSTM trace has ~130 000 rows; a csv.writer
    row each took 0.4 s), with the csv module's quoting for the two text fields.
    """
    iterations = [str(int(i)) for i in arrays["iteration"]]
    run = _csv_field(run_name)
    names = None if streams is None else [_csv_field(str(name)) for name in streams]  # format 2: by name
    lines = ["run,iteration,layer,timestep,metric,value"]
    for name, values in arrays.items():
        if name == "iteration":
            continue
        values = np.asarray(values)
        head = f"{run},"
        tail = f",{_csv_field(name)},"
        if values.ndim == 1:  # (K,): per iteration
            keys = [f"{head}{it},,{tail}" for it in iterations]
        elif values.ndim == 2 and name in PER_STEP_WITHOUT_LAYER:  # (K, T)
            keys = [f"{head}{it},,{t}{tail}" for it in iterations for t in range(values.shape[1])]
        elif values.ndim == 2:  # (K, S), or (K, L) for the decoder's layers
            layers = names or range(values.shape[1])
            if name in PER_DECODER_LAYER:
                layers = [f"decoder.layer{l}" for l in range(values.shape[1])]
            keys = [f"{head}{it},{l},{tail}" for it in iterations for l in layers]
        else:  # (K, S, T)
            layers, T = names or range(values.shape[1]), values.shape[2]
            keys = [f"{head}{it},{l},{t}{tail}" for it in iterations for l in layers for t in range(T)]
        lines += map(str.__add__, keys, _csv_values(values))
    return "\n".join(lines) + "\n"


def _csv_field(text: str) -> str:
    """One text field, quoted as the csv module quotes it (when it holds a comma, a quote or a line break)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([text])  # the terminator also decides the quoting
    return buffer.getvalue()[:-1]


def _csv_values(values: np.ndarray) -> list[str]:
    """Every value in C order: booleans as 1/0, integers as such, floats with full precision (repr; nan, inf)."""
    flat = values.reshape(-1)
    if flat.dtype == np.bool_:
        return ["1" if v else "0" for v in flat.tolist()]
    if np.issubdtype(flat.dtype, np.integer):
        return [str(v) for v in flat.tolist()]
    return list(map(repr, flat.astype(np.float64).tolist()))


def _final(trace, name: str):
    """The last recorded value of a per-iteration metric (text when not finite), or None without one."""
    return _finite_or_text(float(trace.array(name)[-1])) if len(trace) and name in trace else None


def _run_summary(result: RunResult, dir_name: str) -> dict:
    trace = result.trace
    loss = trace.array("loss") if len(trace) and "loss" in trace else np.zeros(0)
    config = result.run.model_dump(exclude_none=True)
    config.pop("name")
    return {
        "name": result.name,
        "dir": dir_name,
        "status": result.status,
        "iterations": result.iterations,
        "recorded": len(result.trace),
        "loss_kind": result.loss_kind,
        "wall_seconds": result.wall_seconds,
        "seed": result.seed,
        "final_loss": _finite_or_text(float(loss[-1])) if len(loss) else None,
        "baseline_loss": result.baseline_loss,
        "accuracy_ceiling": result.accuracy_ceiling,
        "final_accuracy": _final(trace, "accuracy"),
        "task_description": result.description,
        "nonfinite": result.nonfinite.as_dict() if result.nonfinite is not None else None,
        "error": result.error,
        "config": config,
    }


# What writes the figures: (experiment as it ran, results, plots folder) -> anything.  The core never imports the
# GUI; the caller that wants figures passes gui.figures.export_figures (or a lazy wrapper around it).
FigureWriter = Callable[[Experiment, list, Path], object]


def export_experiment(
    out_dir: str | os.PathLike,
    experiment: Experiment,
    results: list[RunResult],
    figures: FigureWriter | None = None,
    extra_files: Callable[[Path, list], object] | None = None,
    sync: bool = True,
) -> Path:
    """Write the experiment folder of docs/trace_format.md at ``out_dir``; returns its path.

    ``figures(experiment, results, plots_dir)``, when given, writes the figures into the folder's ``plots/``
    while the folder is still under its temporary name, so they are published with the traces or not at all;
    None (or False): traces only.  Raises ExportError when ``out_dir`` holds something else, and
    FigureExportError (after the traces are in place, with ``figures_error`` in summary.json) when only the
    figures failed, whatever the writer raised (including an ImportError of the GUI it loads).
    ``extra_files(folder, results)``, when given, adds files to the folder under construction (the recording's
    stores, gradscope.recording, moved in by files.move_into: given back if the export fails), published with it.
    ``sync=False``: published without the flush; the caller runs files.sync_tree on the folder's file system
    before anything names the export (the module's docstring).
    """
    out = check_output_dir(out_dir).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)  # with the umask's mode, as mkdir -p
    remove_stale_temporaries(out)  # what an export killed here (kill -9, power cut) left behind
    building = TemporaryDir(out)
    tmp = building.path
    figures_error = None
    try:
        summaries = []
        for index, result in enumerate(results):
            dir_name = run_dir_name(index, result.name)
            run_dir = tmp / dir_name
            run_dir.mkdir()
            arrays = result.trace.to_arrays() if len(result.trace) else {}
            two = format_of(result.run) == FORMAT_2
            extra = stream_arrays(result.run) if two else {}
            _write(run_dir / "trace.npz", _npz_bytes(arrays | extra))
            if arrays:
                csv_text = trace_csv(result.name, arrays, extra.get("streams"))
                _write(run_dir / "trace.csv", csv_text.encode("utf-8"))
            if result.init_params is not None:
                _write(run_dir / "init_params.npz", _npz_bytes(result.init_params.arrays()))
            if result.first_batch is not None:
                _write(run_dir / "first_batch.npz", _npz_bytes(dict(result.first_batch)))
            summaries.append(_run_summary(result, dir_name) | write_analysis(run_dir, result))
        ran = experiment.model_copy(update={"runs": [r.run for r in results]})
        _write(tmp / "experiment.toml", dumps(ran).encode("utf-8"))
        if figures:
            try:
                (tmp / "plots").mkdir()
                figures(ran, results, tmp / "plots")
            except Exception:  # noqa: BLE001  (no figure must cost the traces: they are published all the same)
                figures_error = traceback.format_exc()
        if extra_files is not None:  # last: the recording's stores move in (files.move_into) for the shortest time
            extra_files(tmp, results)
        summary = {
            "format_version": max([FORMAT_VERSION] + [format_of(r.run) for r in results]),
            "gradscope_version": gradscope_version(),
            "experiment": {
                "name": experiment.name,
                "seed": experiment.seed,
                "description": experiment.description,
                "source": str(experiment.source) if experiment.source else None,
            },
            "runs": summaries,
        }
        if figures_error:
            summary["figures_error"] = figures_error
        summary_json = json.dumps(_finite_or_text(summary), indent=2, allow_nan=False)
        _write(tmp / "summary.json", summary_json.encode("utf-8"))
        building.release()
        if sync:
            sync_tree(tmp)  # every file of the folder on disk before its name is
        _publish(tmp, out)
        published(out)
    except BaseException:
        building.remove()
        raise
    if figures_error:
        raise FigureExportError(out, figures_error)
    return out


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished folder into place; an earlier export there is moved aside first, then removed."""
    old = None
    if out.exists():
        old = TemporaryDir(out, kind="old")
        os.replace(out, old.path / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old.path / out.name, out)  # put the earlier export back
            old.remove()
        raise
    fsync_dir(out.parent)
    if old is not None:
        old.remove()


def write_analysis(run_dir: Path, result: RunResult) -> dict:
    """analysis.npz of a run with analysis on (docs/trace_format.md, "Analysis"); returns the run's summary.json
    additions: "analysis", the spectrum's figures per stream at the first and last analysed iterations."""
    if result.analysis is None or not len(result.analysis):
        return {}
    _write(run_dir / "analysis.npz", _npz_bytes(result.analysis.to_arrays()))
    units = result.analysis.unit_arrays()
    if units:
        _write(run_dir / "units.npz", _npz_bytes(units))
    return {"analysis": analysis_summary(result.analysis, result.run.model_spec().streams)}


def read_analysis(run_dir: Path) -> AnalysisLog | None:
    path = run_dir / "analysis.npz"
    if not path.exists():
        return None
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if "iteration" not in arrays:
        raise ValueError(f"{path}: no 'iteration' array; expected the keys of docs/trace_format.md, Analysis")
    units = None
    if (run_dir / "units.npz").exists():
        with np.load(run_dir / "units.npz") as npz:
            units = {k: npz[k] for k in npz.files}
    return AnalysisLog.from_arrays(arrays, units)


# -------------------------------------------------------------------------------------------------- import
def load_experiment_folder(path: str | os.PathLike) -> tuple[Experiment, list[RunResult]]:
    """Read an exported folder back: the experiment and one RunResult per run (traces, initial parameters,
    first batch), with no need to run anything."""
    folder = Path(path)
    summary_path = folder / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{folder}: no summary.json; not a GradScope export folder")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if summary.get("format_version") not in READABLE_FORMATS:
        raise ValueError(
            f"{summary_path}: format_version {summary.get('format_version')!r}; this GradScope "
            f"reads versions {', '.join(map(str, READABLE_FORMATS))}"
        )
    experiment = load(folder / "experiment.toml", check_tasks=False)
    results = []
    for entry in summary["runs"]:
        run_dir = folder / entry["dir"]
        run = experiment.run(entry["name"])
        with np.load(run_dir / "trace.npz") as npz:
            arrays = {k: npz[k] for k in npz.files if k not in STREAM_KEYS}  # the streams follow from the run
        init_params = first_batch = None
        if (run_dir / "init_params.npz").exists():
            with np.load(run_dir / "init_params.npz") as npz:
                init_params = Params.from_arrays({k: npz[k] for k in npz.files})
        if (run_dir / "first_batch.npz").exists():
            with np.load(run_dir / "first_batch.npz") as npz:
                first_batch = {k: npz[k] for k in npz.files}
        nonfinite = NonFinite(**entry["nonfinite"]) if entry.get("nonfinite") else None
        trace = Trace.from_arrays(arrays)
        trace.nonfinite = nonfinite
        analysis = read_analysis(run_dir)
        results.append(
            RunResult(
                name=entry["name"],
                run=run,
                trace=trace,
                status=RunStatus(entry["status"]),
                iterations=entry["iterations"],
                wall_seconds=_from_text(entry["wall_seconds"]),
                loss_kind=entry["loss_kind"],
                nonfinite=nonfinite,
                init_params=init_params,
                first_batch=first_batch,
                error=entry.get("error"),
                seed=entry.get("seed"),
                baseline_loss=_from_text(entry.get("baseline_loss")),
                accuracy_ceiling=entry.get("accuracy_ceiling"),
                description=entry.get("task_description", ""),
                analysis=analysis,
            )
        )
    return experiment, results


__all__ = [
    "RunResult",
    "export_experiment",
    "load_experiment_folder",
    "check_output_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "trace_csv",
    "run_dir_name",
    "ExportError",
    "FigureExportError",
    "FigureWriter",
    "FORMAT_VERSION",
    "STATUSES",
]
