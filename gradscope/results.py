"""What ``gradscope.run`` and ``gradscope.open`` return: the runs of one or more experiments, as labelled data.

    results = gradscope.run("models/relu_init_scale.toml")
    ds = results.to_xarray()          # (run, iteration, stream, timestep) and (run, iteration), settings as coords
    df = results.to_pandas()          # trace.csv's long table, every run
    results.figure("through_time")    # the export's figure, shown inline in Jupyter (PNG, or format="svg")

No Qt here: ``figure`` draws through the renderer its maker hands in (gradscope.api passes the GUI's), as
io.export_experiment takes its figure writer from its caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Experiment
from .io import FORMAT_2, PER_DECODER_LAYER, format_of, stream_arrays
from .runs import RunResult
from .store import dimension_names

# The analysis.npz keys of docs/trace_format.md (format 2) and their dimensions, after the run's.
ANALYSIS_DIMS = {
    "jac_sigma_max": ("analysis_iteration", "stream", "timestep"),
    "jac_fro": ("analysis_iteration", "stream", "timestep"),
    "grad_W_hh_by_lag": ("analysis_iteration", "stream", "lag"),
    "lyapunov": ("analysis_iteration", "stream", "exponent"),
    "lyapunov_h0": ("stream", "example", "state_unit"),
}
LABELLED = ("iteration", "analysis_iteration", "stream")  # dimensions aligned by label; the others by position

# (results, experiment, view, format, size) -> the file's bytes
Renderer = Callable[[list, Experiment, str, str, tuple[int, int]], bytes]


@dataclass
class Figure:
    """One rendered figure: ``data`` is the PNG or SVG file; Jupyter shows it inline; ``save(path)`` writes it."""

    view: str
    format: str
    data: bytes

    def _repr_png_(self) -> bytes | None:
        return self.data if self.format == "png" else None

    def _repr_svg_(self) -> str | None:
        return self.data.decode("utf-8") if self.format == "svg" else None

    def save(self, path) -> Path:
        from .files import atomic_write_bytes

        atomic_write_bytes(path, self.data)
        return Path(path)


@dataclass
class Results:
    """Runs with their traces, from this process (``gradscope.run``) or from folders (``gradscope.open``).

    ``runs``: a RunResult per run (unique names); ``state``: "completed" (every run ended), "stopped",
    "recording" (a folder still being written), "interrupted" (its process was killed); ``sources``: the
    folder of each run (None for a run in memory only); ``streams``: the streams' names by run (from trace.npz
    where there is one); ``analysis``: analysis.npz by run; ``sweep``: a sweep's sweep.csv (pandas)."""

    experiment: Experiment
    runs: list[RunResult]
    state: str = "completed"
    sources: list[Path | None] = field(default_factory=list)
    streams: dict[str, tuple[str, ...]] = field(default_factory=dict)
    analysis: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    sweep: Any = None
    renderer: Renderer | None = None

    # ------------------------------------------------------------------------------------------ the runs
    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[RunResult]:
        return iter(self.runs)

    def __getitem__(self, name: str) -> RunResult:
        for result in self.runs:
            if result.name == name:
                return result
        raise KeyError(f"no run named {name!r}; the runs are {self.names}")

    def status(self, name: str) -> str:
        """A run's status in words: "completed, 100 iteration(s)", "interrupted at iteration 41", ..."""
        result = self[name]
        if result.interrupted_at is not None:
            return f"interrupted at iteration {result.interrupted_at}"
        text = f"{result.status}, {result.iterations} iteration(s)"
        if result.nonfinite is not None:
            text += f"; {result.nonfinite}"
        return text

    def __repr__(self) -> str:
        lines = [f"Results of {self.experiment.name!r} ({self.state}): {len(self.runs)} run(s)"]
        lines += [f"  {r.name}: {self.status(r.name)}" for r in self.runs]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td>{escape(r.name)}</td><td>{escape(r.run.cell)}</td><td>{escape(self.status(r.name))}</td>"
            f"<td>{len(r.trace)}</td></tr>"
            for r in self.runs
        )
        return (
            f"<p><b>{escape(self.experiment.name)}</b> ({escape(self.state)})</p><table><tr><th>run</th>"
            f"<th>cell</th><th>status</th><th>records</th></tr>{rows}</table>"
        )

    def run_streams(self, result: RunResult) -> tuple[str, ...]:
        """The run's stream names: trace.npz's ``streams`` when the run came from a folder that has them, else
        the model's (the names an export writes)."""
        names = self.streams.get(result.name) or tuple(result.run.model_spec().streams)
        if "h_norm" in result.trace and result.trace.array("h_norm").shape[1] != len(names):
            return tuple(f"stream{s}" for s in range(result.trace.array("h_norm").shape[1]))  # unexplained count
        return names

    # ------------------------------------------------------------------------------------------ xarray
    def to_xarray(self):
        """One xarray.Dataset of every run: per-timestep metrics (run, iteration, stream, timestep), per-iteration
        ones (run, iteration), per-stream ones (run, iteration, stream), NaN where a run has no value (another
        iteration, stream or length); the runs' settings as coordinates on ``run`` (dotted keys as in the
        experiment file: "init.recurrent_scale"); analysis.npz's arrays under their own names
        (``jac_sigma_max``, ``lyapunov``, ...; dimension ``analysis_iteration``) and sweep.csv as "sweep.<column>"
        (dimension ``point``) where present."""
        import xarray as xr

        columns: dict[str, list[tuple[int, tuple[str, ...], np.ndarray, dict]]] = {}
        for r, result in enumerate(self.runs):
            arrays = result.trace.to_arrays() if len(result.trace) else {}
            labels = {"iteration": arrays.get("iteration", np.zeros(0, np.int64)), "stream": self.run_streams(result)}
            for name, values in arrays.items():
                if name == "iteration":
                    continue
                dims, run_labels = dimension_names(name, values.ndim), labels
                if name in PER_DECODER_LAYER:  # (K, L) by decoder layer: on the stream axis, as trace.csv names them
                    dims = ("iteration", "stream")
                    run_labels = dict(labels, stream=_decoder_layers(values.shape[1]))
                columns.setdefault(name, []).append((r, dims, values, run_labels))
            analysis = self.analysis.get(result.name) or _analysis_arrays(result)
            a_labels = dict(labels, analysis_iteration=analysis.get("iteration", np.zeros(0, np.int64)))
            for key, values in analysis.items():
                if key != "iteration":
                    dims = _analysis_dims(key, values, len(a_labels["analysis_iteration"]))
                    columns.setdefault(key, []).append((r, dims, values, a_labels))
        axes: dict[str, Any] = {
            "iteration": _union_sorted(e[3]["iteration"] for c in columns.values() for e in c),
            "analysis_iteration": _union_sorted(
                e[3].get("analysis_iteration", ()) for c in columns.values() for e in c
            ),
            "stream": list(dict.fromkeys(s for result in self.runs for s in self.run_streams(result))),
        }
        for entries in columns.values():  # dimensions aligned by position: the longest run's length, for all
            for _r, dims, values, _labels in entries:
                for d, n in zip(dims, values.shape):
                    if d not in LABELLED:
                        axes[d] = np.arange(max(n, len(axes.get(d, ()))))
        data_vars = {name: _place(entries, axes, len(self.runs)) for name, entries in columns.items()}
        coords: dict[str, Any] = {"run": self.names, "iteration": axes["iteration"], "stream": axes["stream"]}
        if any("analysis_iteration" in v[0] for v in data_vars.values()):
            coords["analysis_iteration"] = axes["analysis_iteration"]
        for dim in ("timestep", "lag"):
            if dim in axes:
                coords[dim] = axes[dim]
        coords |= {key: ("run", values) for key, values in self._settings().items()}
        data_vars["stream_len"] = (("run", "stream"), self._stream_len(axes["stream"]))
        if self.sweep is not None:
            for column in self.sweep.columns:
                data_vars[f"sweep.{column}"] = (("point",), self.sweep[column].to_numpy())
        attrs = {"experiment": self.experiment.name, "state": self.state}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    def _settings(self) -> dict[str, np.ndarray]:
        """Each run's settings flattened to dotted keys (its effective seed included), one array per key."""
        rows = []
        for result, source in zip(self.runs, self.sources or [None] * len(self.runs)):
            config = result.run.model_dump(exclude={"name"})
            row = _flatten(config)
            row["seed"] = result.seed if result.seed is not None else row.get("seed")
            row |= {
                "status": str(result.status),
                "iterations": result.iterations,
                "interrupted_at": result.interrupted_at,
                "loss_kind": result.loss_kind,
                "baseline_loss": result.baseline_loss,
                "source": str(source) if source is not None else "",
            }
            rows.append(row)
        keys = list(dict.fromkeys(k for row in rows for k in row))
        return {key: _column([row.get(key) for row in rows]) for key in keys}

    def _stream_len(self, streams: list[str]) -> np.ndarray:
        """(R, S) each run's streams' lengths in steps, as trace.npz's stream_len (NaN: a stream it lacks)."""
        out = np.full((len(self.runs), len(streams)), np.nan)  # (R, S)
        for r, result in enumerate(self.runs):
            lengths = stream_arrays(result.run)
            for name, length in zip(lengths["streams"], lengths["stream_len"]):
                if str(name) in streams:
                    out[r, streams.index(str(name))] = length
        return out

    # ------------------------------------------------------------------------------------------ pandas
    def to_pandas(self):
        """trace.csv's long table for every run: run, iteration, layer, timestep, metric, value (rows in the
        file's order; ``layer`` holds the stream's name, or its index for a format-1 run, as trace.csv does)."""
        import pandas as pd

        frames = []
        for result in self.runs:
            if not len(result.trace):
                continue
            arrays = result.trace.to_arrays()
            named = format_of(result.run) == FORMAT_2
            streams = list(self.run_streams(result))
            iterations = arrays["iteration"]
            for name, values in arrays.items():
                if name == "iteration":
                    continue
                dims = dimension_names(name, values.ndim)
                grid = np.meshgrid(*[np.arange(n) for n in values.shape], indexing="ij")  # C order, as the file
                index = dict(zip(dims, (g.reshape(-1) for g in grid)))
                n = values.size
                layer = np.full(n, None, dtype=object)
                if name in PER_DECODER_LAYER:
                    layer = np.array(_decoder_layers(values.shape[1]), dtype=object)[index["decoder_layer"]]
                elif "stream" in index:
                    labels = np.array(streams if named else [str(s) for s in range(values.shape[1])], dtype=object)
                    layer = labels[index["stream"]]
                timestep = pd.array(index["timestep"] if "timestep" in index else [pd.NA] * n, dtype="Int64")
                frames.append(
                    pd.DataFrame(
                        {
                            "run": result.name,
                            "iteration": iterations[index["iteration"]].astype(np.int64),
                            "layer": pd.array(layer, dtype="string"),
                            "timestep": timestep,
                            "metric": name,
                            "value": values.reshape(-1).astype(np.float64),
                        }
                    )
                )
        columns = ["run", "iteration", "layer", "timestep", "metric", "value"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    # ------------------------------------------------------------------------------------------ figures
    def figure(self, view: str = "composite", format: str = "png", size: tuple[int, int] = (1400, 800)) -> Figure:  # noqa: A002
        """A figure of the export (docs/gui.md): "through_time", "waterfall" (the first run's, or
        "waterfall_<run>"), "training", "saturation", "layers", or "composite" (all of them side by side)."""
        if format not in ("png", "svg"):
            raise ValueError(f"format: got {format!r}; expected 'png' or 'svg'")
        if self.renderer is None:
            raise RuntimeError("these Results have no renderer: make them with gradscope.run or gradscope.open")
        return Figure(view, format, self.renderer(self.runs, self.experiment, view, format, size))

    def _repr_png_(self) -> bytes | None:
        """Jupyter shows a Results as its composite figure when it can draw one."""
        if self.renderer is None or not any(len(r.trace) for r in self.runs):
            return None
        return self.figure("composite").data


def _analysis_arrays(result: RunResult) -> dict[str, np.ndarray]:
    """analysis.npz's arrays of a run analysed in this process (its AnalysisLog), or none."""
    log = getattr(result, "analysis", None)
    return log.to_arrays() if log is not None and len(log) else {}


def _decoder_layers(L: int) -> tuple[str, ...]:
    return tuple(f"decoder.layer{l}" for l in range(L))


def _flatten(config: dict, prefix: str = "") -> dict:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _column(values: list) -> np.ndarray:
    """A coordinate from one setting of every run: numbers (None -> NaN), booleans, or text (None -> "")."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present) and len(present) == len(values):
        return np.array(values, dtype=bool)
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        if len(present) == len(values) and all(isinstance(v, int) for v in present):
            return np.array(values, dtype=np.int64)
        return np.array([math.nan if v is None else float(v) for v in values])
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _analysis_dims(key: str, values: np.ndarray, analysed: int) -> tuple[str, ...]:
    dims = ANALYSIS_DIMS.get(key)
    if dims is not None and len(dims) == values.ndim:
        return dims
    first = ("analysis_iteration",) if values.ndim and values.shape[0] == analysed else (f"{key}_dim0",)
    return first + tuple(f"{key}_dim{i}" for i in range(1, values.ndim))


def _union_sorted(groups) -> np.ndarray:
    parts = [np.asarray(g, dtype=np.int64) for g in groups]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def _place(entries, axes: dict, runs: int):
    """Every run's array of one variable in one (run, ...) float64 array: labelled dimensions aligned by their
    labels (iteration numbers, stream names), the others by position; NaN where a run has nothing."""
    dims = entries[0][1]
    sizes = [len(axes[d]) for d in dims]
    out = np.full((runs, *sizes), np.nan)  # (R, ...)
    for r, run_dims, values, labels in entries:
        if run_dims != dims:
            raise ValueError(f"a variable has dimensions {run_dims} in one run and {dims} in another")
        index = []
        for i, d in enumerate(dims):
            if d == "stream":
                names = list(labels["stream"])[: values.shape[i]]
                index.append(np.array([axes["stream"].index(n) if n in axes["stream"] else -1 for n in names]))
            elif d in LABELLED:
                index.append(np.searchsorted(axes[d], np.asarray(labels[d], dtype=np.int64)))
            else:
                index.append(np.arange(values.shape[i]))
        if any((ix < 0).any() for ix in index):
            continue
        out[r][np.ix_(*index)] = values
    return ("run", *dims), out


__all__ = ["Results", "Figure", "Renderer", "ANALYSIS_DIMS"]
