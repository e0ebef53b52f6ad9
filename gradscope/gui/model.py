"""The app's runs, Qt-free: RunData, everything a view needs to draw one run (so views can be fed synthetic
traces), and RunState, a run as the controller holds it.  Both hold the run's gradscope.runs.RunResult."""

from __future__ import annotations

import itertools
import os
import time

import numpy as np

from .. import theory
from ..engine.cells import ACTIVATION_METRIC, CELLS, Cell, cell
from ..engine.params import parse_stream
from ..runs import RunResult, RunStatus
from ..trace import Trace

TRACE_BYTES = 96 * 2**20  # per run: past this the trace thins itself (keeps every other older row)


def _of_result(name: str) -> property:
    """An attribute that is the run's RunResult's (``self.result``): one record of the run, never a copy."""
    return property(
        lambda self: getattr(self.result, name),
        lambda self, value: setattr(self.result, name, value),
        doc=f"The run's {name} (RunResult.{name}).",
    )


def stream_label(streams, s: int, top: bool = False) -> str:
    """A stream as people read it: "layer 1", "layer 1 reverse", "decoder layer 0" (docs/trace_format.md's names:
    layer1_reverse, decoder.layer0).  Layers are counted from 0 everywhere; ``top``: the stream was shown because
    the chooser says "top layer", and the label says so ("layer 2 (top)"), so that the two words meet."""
    name = streams[s] if s < len(streams) else f"layer{s}"
    label = name.replace(".", " ").replace("layer", "layer ", 1).replace("_reverse", " reverse")
    return f"{label} (top)" if top else label


class RunData:
    """One run as the views see it: the run's RunResult (the type the command line exports) and how it is shown.

    key         a stable identity (a run keeps its key when renamed or edited)
    result      the gradscope.runs.RunResult: name, trace (read through trace.array(name)), run (the
                RunConfig, when known: theory lines, clip threshold, cell and activation come from it),
                first_batch (x, target, mask: the mask says which steps are scored), loss_kind, baseline_loss,
                accuracy_ceiling (the task's, for ce tasks that have one)
    color, visible  how it is drawn

    Views and tests may build one from a bare trace: ``RunData(key, name, color, trace, run=..., ...)``.
    """

    name = _of_result("name")
    trace = _of_result("trace")
    run = _of_result("run")
    loss_kind = _of_result("loss_kind")
    baseline_loss = _of_result("baseline_loss")
    accuracy_ceiling = _of_result("accuracy_ceiling")
    first_batch = _of_result("first_batch")
    init_params = _of_result("init_params")

    def __init__(
        self,
        key: int,
        name: str = "",
        color: str = "#000000",
        trace: Trace | None = None,
        run: object | None = None,
        visible: bool = True,
        loss_kind: str | None = None,
        baseline_loss: float | None = None,
        first_batch: dict | None = None,
        result: RunResult | None = None,
        accuracy_ceiling: float | None = None,
    ):
        if result is None:
            result = RunResult(
                name=name,
                run=run,
                trace=trace if trace is not None else Trace(),
                loss_kind=loss_kind,
                baseline_loss=baseline_loss,
                first_batch=first_batch,
                accuracy_ceiling=accuracy_ceiling,
            )
        self.key, self.color, self.visible, self.result = key, color, visible, result
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"RunData(key={self.key!r}, name={self.name!r}, color={self.color!r}, rows={len(self.trace)})"

    # ------------------------------------------------------------------------------ what the run is
    @property
    def cell_description(self) -> Cell:
        """The run's cell (engine.cells): from its RunConfig, else the cell with the most states whose norms the
        trace records (an LSTM records h_norm and c_norm; with nothing recorded, the cell of fewest states)."""
        if self.run is not None:
            return cell(self.run.cell)
        recorded = [c for c in CELLS.values() if all(f"{s}_norm" in self.trace for s in c.states)]
        if not recorded:
            return min(CELLS.values(), key=lambda c: len(c.states))
        return max(recorded, key=lambda c: len(c.states))

    @property
    def cell(self) -> str:
        return self.cell_description.name

    @property
    def activation(self) -> str | None:
        if not self.cell_description.uses_activation:
            return None
        if self.run is not None:
            return self.run.activation
        for act, metric in ACTIVATION_METRIC.items():
            if metric is not None and metric in self.trace:
                return act
        return None

    @property
    def layers(self) -> int:
        """Streams the trace records (a layer, or one direction of a bidirectional layer; docs/trace_format.md)."""
        if "h_norm" in self.trace and len(self.trace):
            return int(self.trace.array("h_norm").shape[1])
        return len(self.streams)

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams' names (layer0, layer0_reverse, ...), in the trace's order."""
        if self.run is not None:  # once per settings (invalidate): views ask for every run on every redraw
            if "streams" not in self._cache:
                self._cache["streams"] = self.run.model_spec().streams
            return self._cache["streams"]
        S = int(self.trace.array("h_norm").shape[1]) if "h_norm" in self.trace and len(self.trace) else 1
        return tuple(f"layer{l}" for l in range(S))

    @property
    def top_stream(self) -> int:
        """The stream "top layer" means: the top layer's forward one (its reverse one sees the sequence's end
        first, so a loss at the last step reaches it at that step only)."""
        names = self.streams
        if len(names) != self.layers:  # a trace that does not match its run's settings: its last row
            return self.layers - 1
        return names.index(names[-1].split("_")[0])

    def segments(self, stream: int) -> list[tuple[int, int, int | None]]:
        """What a through-time plot of ``stream`` draws, as (stream index, offset of its t, its length; None:
        all of it).  A seq2seq stream is drawn with its partner on one axis, the encoder's layer l at
        t = -T_src .. -1 and the decoder's layer l at t = 0 .. T_tgt-1, so the bridge sits between -1 and 0."""
        names = self.streams
        if self.run is None or len(names) != self.layers or not names[stream].startswith(("encoder.", "decoder.")):
            return [(stream, 0, None)]
        part, l, reverse = parse_stream(names[stream])
        encoder = names.index(f"encoder.layer{l}" + ("_reverse" if reverse else ""))
        T_src, T_tgt = self.run.task.seq_len, self.run.task.target_len or self.run.task.seq_len
        return [(encoder, -T_src, T_src), (names.index(f"decoder.layer{l}"), 0, T_tgt)]

    @property
    def clip_norm(self) -> float:
        return float(self.run.train.clip_norm) if self.run is not None else 0.0

    @property
    def label(self) -> str:
        """The run's name for legends and titles; a diverged run says so, and at which iteration."""
        nonfinite = getattr(self.trace, "nonfinite", None)
        if nonfinite is None:
            return self.name
        at = f" at iteration {nonfinite.iteration}" if nonfinite.iteration is not None else ""
        return f"{self.name} (diverged{at})"

    def has_data(self) -> bool:
        return len(self.trace) > 0

    # ------------------------------------------------------------------------------------ theory
    def anchor_step(self, T: int) -> int:
        """The last step the loss scores (the theory lines start there)."""
        mask = self.first_batch.get("mask") if self.first_batch else None
        loss_t = self.trace.latest("loss_t") if "loss_t" in self.trace and len(self.trace) else None
        step = theory.last_scored_step(mask=mask, loss_t=loss_t, T=T)
        return min(step, T - 1)

    @property
    def theory(self) -> theory.RunTheory | None:
        """Mean-field inputs of this run (None for an LSTM or without a RunConfig); computed once."""
        if "theory" not in self._cache:
            x = self.first_batch.get("x") if self.first_batch else None
            self._cache["theory"] = theory.RunTheory.for_run(self.run, x) if self.run is not None else None
        return self._cache["theory"]

    def gate_path(self, stream: int) -> tuple[str, np.ndarray] | None:
        """A gated cell's path gate and its initial bias per unit: ("f", b_f) for an LSTM (the cell path,
        dc_t/dc_{t-1} = diag(f_t)), ("z", b_z + b_hh,z) for a GRU (its direct path dh_t/dh_{t-1} ⊃ diag(z_t));
        None for a plain RNN or without the initial parameters (theory.gates)."""
        desc = self.cell_description
        params = self.init_params
        gate = {"lstm": "f", "gru": "z"}.get(desc.name) if desc is not None else None
        if gate is None or params is None or stream >= len(params.layers):
            return None
        p = params.layers[stream]
        d = p.W_hh.shape[1]
        b = np.asarray(p.b_h[d : 2 * d], dtype=np.float64)  # the second block: f (i, f, g, o) and z (r, z, n)
        if p.b_hh is not None:
            b = b + np.asarray(p.b_hh[d : 2 * d], dtype=np.float64)
        return gate, b

    def invalidate(self) -> None:
        """Forget derived values (after the run's settings changed)."""
        self._cache.clear()


def default_runs_at_once() -> int:
    """One training run per core, and at least two: the views compare runs, and two runs sharing one core
    (their kernels release the GIL) still keep a comparison live."""
    return max(2, os.cpu_count() or 1)


class RunState:
    """One run of the experiment as the app holds it: its RunResult (``result``, shared with the views through
    ``data``) and the worker driving it."""

    _keys = itertools.count()

    run = _of_result("run")
    name = _of_result("name")
    status = _of_result("status")
    error = _of_result("error")  # traceback of a failed run
    nonfinite = _of_result("nonfinite")
    wall_seconds = _of_result("wall_seconds")
    init_params = _of_result("init_params")

    def __init__(self, run, color: str):
        self.key = next(RunState._keys)
        self.data = RunData(self.key, color=color, result=fresh_result(run))
        self.detail = ""  # e.g. "kernel 3/8" while compiling
        self.thread = None  # its worker (gui.worker.TrainingThread), while it has one
        self.training = None  # what the run's worker said of its Training (init_params, first_batch, task)
        self.threads = None  # threads per pass last given to its worker
        self.iterations_per_second = 0.0
        self.loaded = False  # came from an exported folder: nothing to run
        self._rate_window: list[tuple[float, int]] = []

    @property
    def result(self) -> RunResult:
        return self.data.result

    @property
    def iteration(self) -> int:
        """The last iteration computed (-1 before the first)."""
        return self.result.iteration

    @property
    def finished(self) -> bool:
        return self.result.finished

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    def status_text(self) -> str:
        if self.status is RunStatus.DIVERGED and self.nonfinite is not None:
            nf = self.nonfinite
            where = [f"iteration {nf.iteration}"] if nf.iteration is not None else []
            if nf.layer is not None:  # a row of the metrics: a stream ("layer 0 reverse", "decoder layer 0")
                where.append(stream_label(self.data.streams, nf.layer))
            if nf.timestep is not None:
                where.append(f"t = {nf.timestep}")
            return f"diverged at {', '.join(where)} ({nf.quantity})"
        if self.status is RunStatus.COMPILING and self.detail:
            return f"compiling kernels {self.detail}"
        if self.status is RunStatus.FAILED:
            return "failed (double-click for the traceback)"
        if self.result.interrupted_at is not None:
            return f"interrupted at iteration {self.result.interrupted_at}"
        return str(self.status)

    def note_rate(self, iteration: int) -> None:
        """Iterations per second over the last ~2 seconds."""
        now = time.monotonic()
        self._rate_window.append((now, iteration))
        while len(self._rate_window) > 2 and now - self._rate_window[0][0] > 2.0:
            self._rate_window.pop(0)
        (t0, i0), (t1, i1) = self._rate_window[0], self._rate_window[-1]
        self.iterations_per_second = (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0


def fresh_result(run) -> RunResult:
    """A run's RunResult before its first iteration, its trace bounded to TRACE_BYTES."""
    return RunResult.for_run(run, trace=Trace(max_bytes=TRACE_BYTES))


def log10_or_nan(values) -> np.ndarray:
    """log10 of positive values; NaN for zero, negative, NaN and Inf (drawn as gaps, marked separately)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, np.nan)
    ok = np.isfinite(values) & (values > 0)
    np.log10(values, out=out, where=ok)
    return out


def nonfinite_mask(values) -> np.ndarray:
    """True where a value is NaN or +-Inf (data, drawn distinctly)."""
    return ~np.isfinite(np.asarray(values, dtype=np.float64))
