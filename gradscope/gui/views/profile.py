"""View 1, through time: ||dL/dh_t|| and ||h_t|| (LSTM: ||dL/dc_t||, ||c_t||) against t at one recorded
iteration, every run overlaid in its colour on log10 axes, with the theory's predictions anchored at the last
scored step."""

from __future__ import annotations

import functools

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

from ... import theory as theory_lines
from .. import style
from ..axes import value_label
from ..hover import HoverReadout
from ..model import RunData
from ..plotting import STYLE_GREY, Legend, pen, set_title
from .base import (
    CurveSet,
    Figure,
    NonFiniteMarkers,
    View,
    layer_combo,
    log_series,
    resolve_layer,
    set_layer_choices,
    snap_and_mark,
    stream_label,
    timestep_range,
    visible_with_data,
)
from .theory_overlays import LINE_STYLE, OVERLAYS


class _RunParts:
    """One run's share of a through-time frame (ProfileFigure._run_parts), and the signature it was made for."""

    def __init__(self, signature: tuple):
        self.signature = signature
        self.entry: dict = {}  # the hover readout's values
        self.curves: list[tuple] = []  # ("grad" | "state", key, t (T,), log10 y (T,), pen)
        self.theory: list[tuple] = []  # (key, t (T,), log10 line (T,), pen)
        self.grad_marks: list[tuple] = []  # (t of non-finite values, colour)
        self.state_marks: list[tuple] = []
        self.grad_zeros: list[tuple] = []  # (t of gradients exactly 0, colour)
        self.bridged = False
        self.any_lstm = False
        self.theory_kinds: set[str] = set()


class ProfileFigure(Figure):
    name = "through_time"
    title = "Through time"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        super().__init__(layout, interactive)
        self.gradient_and_state_plots(("Gradient through time: ‖∂L/∂hₜ‖", "Hidden state: ‖hₜ‖"), (0, 0), (1, 0))
        layout.layout.setRowStretchFactor(0, 3)
        layout.layout.setRowStretchFactor(1, 2)
        self.legend = Legend(layout, 0, 1, rowspan=2)
        self.theory_curves = CurveSet(self.grad_plot)
        self.grad_zeros = NonFiniteMarkers(self.grad_plot, symbol="t")  # gradients that underflowed to 0
        # seq2seq: the bridge between the encoder's last step (t = -1) and the decoder's first (t = 0)
        self.bridges = []
        for plot, label in ((self.grad_plot, "bridge: encoder | decoder"), (self.state_plot, None)):
            line = pg.InfiniteLine(
                pos=-0.5,
                angle=90,
                movable=False,
                pen=pen(STYLE_GREY, 1.5, "dash"),
                label=label,
                labelOpts={"position": 0.92, "color": STYLE_GREY, "anchors": [(0.5, 1), (0.5, 1)]},
            )
            line.setVisible(False)
            plot.addItem(line, ignoreBounds=True)
            self.bridges.append(line)
        self.layer = -1  # -1: the top layer of each run
        self.row = -1  # recorded row to show; -1: the latest
        self.overlays = {"relu": True, "tanh": True, "pascanu": False, "gates": True}
        self._shown: list[dict] = []
        self._parts: dict[object, _RunParts] = {}  # run key -> what it drew (_run_parts)
        self.readouts = [
            HoverReadout(self.grad_plot, self._describe_grad),
            HoverReadout(self.state_plot, self._describe_state),
        ]

    def options(self) -> tuple:
        return self.layer, self.row, tuple(sorted(self.overlays.items()))

    # ------------------------------------------------------------------------------------------- drawing
    def refresh(self, runs: list[RunData]) -> None:
        shown = visible_with_data(runs)
        self._shown = []
        grad_keys, theory_keys, state_keys = [], [], []
        grad_marks, state_marks, grad_zeros = [], [], []
        bridged = False  # a seq2seq run is shown: mark the bridge
        any_lstm = False
        theory_kinds = set()
        parts_by_key = {}
        for run in shown:
            parts = self._run_parts(run)
            parts_by_key[run.key] = parts
            for which, key, t, y, qpen in parts.curves:
                curves, keys = (self.grad_curves, grad_keys) if which == "grad" else (self.state_curves, state_keys)
                curves.set(key, t, y, qpen)
                keys.append(key)
            for key, t, line, qpen in parts.theory:
                self.theory_curves.set(key, t, line, qpen)
                theory_keys.append(key)
            grad_marks += parts.grad_marks
            state_marks += parts.state_marks
            grad_zeros += parts.grad_zeros
            bridged |= parts.bridged
            any_lstm |= parts.any_lstm
            theory_kinds |= parts.theory_kinds
            self._shown.append(parts.entry)
        self._parts = parts_by_key  # the runs not shown any more are forgotten
        self.grad_curves.retain(grad_keys)
        self.theory_curves.retain(theory_keys)
        self.state_curves.retain(state_keys)
        zeros = "▼ exactly 0 (underflow)" if any(len(t) for t, _ in grad_zeros) else None
        entries = [(run.label, run.color, "solid") for run in shown] + _style_entries(any_lstm, theory_kinds)
        self.legend.set(entries + ([(zeros, STYLE_GREY, "none")] if zeros else []))
        empty_x = timestep_range(runs)
        snap_and_mark(
            self.grad_snap,
            self.grad_marks,
            grad_marks,
            self.grad_curves,
            self.theory_curves,
            live=self.live,
            empty_x=empty_x,
        )
        snap_and_mark(
            self.state_snap, self.state_marks, state_marks, self.state_curves, live=self.live, empty_x=empty_x
        )
        bottom = self.grad_snap.bounds[1][0] if self.grad_snap.bounds is not None else 0.0
        self.grad_zeros.set(grad_zeros, bottom - 0.25)
        for bridge in self.bridges:
            bridge.setVisible(bridged)
        self.hint.show(not shown)
        self.hint.set_text(_empty_text(runs))
        titles = sorted({e["iteration"] for e in self._shown})
        when = "" if not titles else (f", iteration {titles[0]}" if len(titles) == 1 else ", latest iterations")
        set_title(self.grad_plot, f"Gradient through time: ‖∂L/∂hₜ‖{when}")

    def forget_drawn(self) -> None:
        super().forget_drawn()
        self._parts = {}

    def _run_parts(self, run: RunData) -> _RunParts:
        """What one run draws, kept while its trace, settings and this view's options stay as they were: with 5
        live runs a frame brings new data for one or two of them, and recomputing the others' log10 values,
        pens and theory lines, and comparing them with what is drawn, was a fifth of the frame (issue 9).
        The same arrays and pens go back to the curves, which then see at once that nothing changed."""
        layer = resolve_layer(self.layer, run.layers, run.top_stream)
        row = self.row if -len(run.trace) <= self.row < len(run.trace) else -1
        signature = (
            id(run.trace),
            run.trace.version,
            id(run.run),
            run.name,
            run.color,
            layer,
            row,
            self.layer,
            tuple(sorted(self.overlays.items())),
        )
        kept = self._parts.get(run.key)
        if kept is not None and kept.signature == signature:
            return kept
        parts = _RunParts(signature)
        iteration = int(run.trace.iterations[row])
        entry = parts.entry = {"name": run.name, "iteration": iteration, "layer": layer, "values": {}, "theory": {}}
        segments = run.segments(layer)  # a seq2seq stream: encoder and decoder on one axis
        parts.bridged = len(segments) > 1
        ts = [_segment_t(offset, length, run) for _, offset, length in segments]
        entry["t"] = ts[0] if len(ts) == 1 else np.concatenate(ts)  # (T,) the shared array when one segment
        # the stream each drawn step belongs to, by name (a seq2seq decoder's t < 0 is its encoder's)
        entry["streams"] = [stream_label(run.streams, s, top=self.layer == -1 and s == layer) for s, _, _ in segments]
        entry["segment"] = np.concatenate(
            [np.full(len(_segment_t(offset, length, run)), i) for i, (_, offset, length) in enumerate(segments)]
        )
        for metric, which, line in (
            ("grad_h_norm", "grad", "solid"),
            ("grad_c_norm", "grad", "dashdot"),
            ("h_norm", "state", "solid"),
            ("c_norm", "state", "dashdot"),
        ):
            series = [log_series(run.trace, metric, row, s) for s, _, _ in segments]
            if any(p is None for p in series):
                continue
            cut = [len(_segment_t(offset, length, run)) for _, offset, length in segments]  # no padding
            y = np.concatenate([p[0][:n] for p, n in zip(series, cut)])  # type: ignore[index]
            bad = np.concatenate([p[1][:n] for p, n in zip(series, cut)])  # type: ignore[index]
            t = entry["t"]
            parts.curves.append((which, (run.key, metric), t, y, pen(run.color, line=line)))
            (parts.grad_marks if which == "grad" else parts.state_marks).append((t[bad], run.color))
            values = run.trace.array(metric)[row]
            entry["values"][metric] = np.concatenate([values[s][:n] for (s, _, _), n in zip(segments, cut)])
            if metric.startswith("grad_"):
                parts.grad_zeros.append((t[entry["values"][metric] == 0], run.color))
            parts.any_lstm |= metric == "c_norm"
        for kind, line in self._theory_lines(run, row, layer).items():
            t = np.arange(len(line), dtype=np.float64)
            qpen = pen(run.color, style.THEORY_WIDTH, LINE_STYLE[kind], alpha=220)
            parts.theory.append(((run.key, kind), t, line, qpen))
            entry["theory"][kind] = line
            parts.theory_kinds.add(kind)
        return parts

    def _theory_lines(self, run: RunData, row: int, layer: int) -> dict[str, np.ndarray]:
        if self.overlays["gates"] and len(run.segments(layer)) == 1:
            gated = self._gate_lines(run, row, layer)
            if gated is not None:
                return gated
        theory = run.theory
        if theory is None or layer != theory.layer or "grad_h_norm" not in run.trace:
            return {}
        grad = run.trace.array("grad_h_norm")[row][layer]  # (T,)
        T = len(grad)
        if len(theory.q_in) != T:
            return {}
        a = run.anchor_step(T)
        lines = {}
        kind = "relu" if theory.activation == "relu" else "tanh"
        # the mean field describes the initial weights: after updates it would compare with another network
        if self.overlays[kind] and int(run.trace.iterations[row]) == 0:
            key = ("mean_field", a)
            if key not in run._cache:  # the line's shape; the anchor value only shifts it
                run._cache[key] = theory.mean_field(a, 1.0)
            shape = run._cache[key]
            if shape is not None and np.isfinite(grad[a]) and grad[a] > 0:
                lines[kind] = shape + np.log10(grad[a])
        if self.overlays["pascanu"] and "sigma_max" in run.trace:
            sigma = latest_finite(run.trace.array("sigma_max"), row, layer)
            if sigma is not None:
                lines["pascanu"] = theory.pascanu(sigma, a, float(grad[a]))
        return lines

    def _gate_lines(self, run: RunData, row: int, layer: int) -> dict[str, np.ndarray] | None:
        """The gate path's lines (OVERLAYS["gates"]) for a gated cell, None for another."""
        path = run.gate_path(layer)
        if path is None:
            return None
        gate, b = path
        anchored_on = "grad_c_norm" if gate == "f" else "grad_h_norm"
        if anchored_on not in run.trace or f"gate_{gate}_mean" not in run.trace:
            return {}
        grad = run.trace.array(anchored_on)[row][layer]  # (T,)
        T = len(grad)
        a = run.anchor_step(T)
        if not (np.isfinite(grad[a]) and grad[a] > 0):
            return {}
        lines: dict[str, np.ndarray] = {}
        if int(run.trace.iterations[row]) != 0:  # both describe the network at initialisation (OVERLAYS)
            return lines
        lines["gate"] = theory_lines.gate_product_line(b, 0.0, T, a, float(grad[a]))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_gate = np.log10(np.asarray(run.trace.array(f"gate_{gate}_mean")[row][layer], dtype=np.float64))
        measured = np.full(T, np.nan)  # log10(grad[a] prod_{j=t+1}^{a} mean gate_j) for t <= a
        measured[: a + 1] = np.log10(grad[a]) + np.concatenate([np.cumsum(log_gate[a:0:-1])[::-1], [0.0]])
        lines["gate_measured"] = measured
        return lines

    # ------------------------------------------------------------------------------------------- hover
    def _describe(self, x: float, metrics: tuple[str, ...], with_theory: bool) -> str | None:
        t = round(x)
        lines = []
        for entry in self._shown:
            parts = []
            at = np.flatnonzero(entry["t"] == t)  # the entry's index of step t (seq2seq: t < 0 is the encoder)
            for metric in metrics:
                values = entry["values"].get(metric)
                if values is not None and at.size:
                    parts.append(f"{_SYMBOL[metric]} = {value_label(float(values[at[0]]))}")
            if with_theory:
                for kind, line in entry["theory"].items():
                    if 0 <= t < len(line) and np.isfinite(line[t]):
                        parts.append(f"{_READOUT[kind]} = {value_label(10 ** line[t])}")
            if parts:
                stream = entry["streams"][entry["segment"][at[0]]] if at.size else entry["streams"][-1]
                lines.append(f"{entry['name']}, {stream}, iteration {entry['iteration']}: " + ", ".join(parts))
        return f"t = {t}\n" + "\n".join(lines) if lines else None

    def _describe_grad(self, x, y):
        return self._describe(x, ("grad_h_norm", "grad_c_norm"), True)

    def _describe_state(self, x, y):
        return self._describe(x, ("h_norm", "c_norm"), False)


def _segment_t(offset: int, length: int | None, run: RunData) -> np.ndarray:
    """The t values of a drawn segment: offset .. offset + length - 1 (the whole recorded T when None).
    One read-only array per range, so a curve redrawn with new values sees at once that its t are the same."""
    if length is None:
        length = int(run.trace.array("h_norm").shape[-1]) if "h_norm" in run.trace else 0
    return _steps(int(offset), int(length))


@functools.lru_cache(maxsize=256)
def _steps(offset: int, length: int) -> np.ndarray:
    t = np.arange(offset, offset + length, dtype=np.float64)  # (length,)
    t.flags.writeable = False
    return t


def latest_finite(column: np.ndarray, row: int, layer: int) -> float | None:
    """The column's value for ``layer`` at ``row``, or at the closest earlier row that has one (the spectral
    statistics are measured only every train.spectral_every-th iteration; rows between hold NaN)."""
    values = np.asarray(column, dtype=np.float64).reshape(len(column), -1)[:, layer]  # (K,)
    row = row % len(values)
    finite = np.flatnonzero(np.isfinite(values[: row + 1]))
    return float(values[finite[-1]]) if finite.size else None


def _style_entries(any_lstm: bool, theory_kinds: set) -> list[tuple[str, str, str]]:
    """Grey legend entries saying what the line styles mean."""
    entries = []
    if any_lstm:
        entries.append(("‖∂L/∂cₜ‖, ‖cₜ‖ (LSTM)", STYLE_GREY, "dashdot"))
    if theory_kinds & {"relu", "tanh"}:
        entries.append(("mean field (iteration 0)", STYLE_GREY, "dash"))
    if "pascanu" in theory_kinds:
        entries.append(("Pascanu bound", STYLE_GREY, "dot"))
    if "gate" in theory_kinds:
        entries.append(("σ(b)^(a-t), gate path (iteration 0)", STYLE_GREY, "dash"))  # noqa: RUF001
    if "gate_measured" in theory_kinds:
        entries.append(("∏ measured gate mean (iteration 0)", STYLE_GREY, "dot"))
    return entries


_READOUT = {
    "relu": "mean field",
    "tanh": "mean field",
    "pascanu": "Pascanu bound",
    "gate": "σ(b)^(a-t)",  # noqa: RUF001  (sigma, as in the formula)
    "gate_measured": "∏ gate mean",
}
_SYMBOL = {"grad_h_norm": "‖∂L/∂h‖", "grad_c_norm": "‖∂L/∂c‖", "h_norm": "‖h‖", "c_norm": "‖c‖"}


def _empty_text(runs: list[RunData]) -> str:
    if not runs:
        return "No runs: open an experiment (Ctrl+O) or pick a preset"
    if not any(r.visible for r in runs):
        return "Every run is hidden: tick a run in the list"
    return "Press Run (Space) to start"


class ProfileView(View):
    """The through-time view with its layer choice, the theory toggles and an iteration slider."""

    figure_class = ProfileFigure

    def __init__(self, parent=None):
        super().__init__(parent)
        fig: ProfileFigure = self.figure
        self.layer_box = layer_combo("Which layer of a stacked model to show (theory lines: top layer only)")
        self.layer_box.currentIndexChanged.connect(self._layer_changed)
        self.controls.addWidget(QtWidgets.QLabel("Layer:"))
        self.controls.addWidget(self.layer_box)
        self.controls.addSpacing(16)
        self.controls.addWidget(QtWidgets.QLabel("Iteration:"))
        self.row_slider = QtWidgets.QSlider(orientation=QtCore.Qt.Orientation.Horizontal)
        self.row_slider.setToolTip("Recorded iteration to show; at the right end the view follows the latest")
        self.row_slider.setMinimumWidth(180)
        self.row_slider.setRange(0, 0)
        self.row_slider.valueChanged.connect(self._row_changed)
        self.row_label = QtWidgets.QLabel("latest")
        self.row_label.setMinimumWidth(110)
        self.controls.addWidget(self.row_slider, 1)
        self.controls.addWidget(self.row_label)
        # The theory toggles on a row of their own: on one row with the rest they made the window at least 1,600 px
        # wide, more than a laptop's screen, and what did not fit was cut off.
        self.theory_row = QtWidgets.QHBoxLayout()
        self.theory_row.setContentsMargins(6, 0, 6, 0)
        self.theory_row.addWidget(QtWidgets.QLabel("Theory:"))
        # each overlay is a QAction (for the View menu) mirrored by a checkbox here
        self.overlay_actions: dict[str, QtGui.QAction] = {}
        self.overlay_boxes: dict[str, QtWidgets.QCheckBox] = {}
        for kind, (label, tip) in OVERLAYS.items():
            action = QtGui.QAction(label, self, checkable=True, checked=fig.overlays[kind])
            action.setToolTip(tip)
            box = QtWidgets.QCheckBox(label)
            box.setToolTip(tip)
            box.setChecked(fig.overlays[kind])
            box.toggled.connect(action.setChecked)
            action.toggled.connect(box.setChecked)
            action.toggled.connect(lambda on, k=kind: self.set_overlay(k, on))
            self.theory_row.addWidget(box)
            self.overlay_actions[kind] = action
            self.overlay_boxes[kind] = box
        self.theory_row.addStretch(1)
        self.layout().insertLayout(1, self.theory_row)

    def set_overlay(self, kind: str, on: bool) -> None:
        if self.overlay_actions[kind].isChecked() != bool(on):
            self.overlay_actions[kind].setChecked(bool(on))  # comes back here through toggled
            return
        if self.figure.overlays[kind] != bool(on):
            self.figure.overlays[kind] = bool(on)
            self.options_changed()

    def _layer_changed(self, *_):
        self.figure.layer = int(self.layer_box.currentData())
        self.options_changed()

    def _row_changed(self, value: int):
        latest = value >= self.row_slider.maximum()
        self.figure.row = -1 if latest else value
        self._update_row_label()
        self.options_changed()

    def _update_row_label(self) -> None:
        shown = [r for r in self._runs if r.visible and r.has_data()]
        if self.figure.row == -1 or not shown:
            self.row_label.setText("latest")
        else:
            rows = [int(r.trace.iterations[min(self.figure.row, len(r.trace) - 1)]) for r in shown]
            self.row_label.setText(f"{min(rows)}" if len(set(rows)) == 1 else f"{min(rows)}..{max(rows)}")

    def update_controls(self, runs: list[RunData]) -> None:
        deepest = max(runs, key=lambda r: r.layers, default=None)
        set_layer_choices(self.layer_box, deepest.layers if deepest else 1, deepest.streams if deepest else None)
        rows = max([len(r.trace) for r in runs if r.visible], default=1)
        following = self.figure.row == -1
        self.row_slider.blockSignals(True)
        self.row_slider.setRange(0, max(rows - 1, 0))
        if following:
            self.row_slider.setValue(self.row_slider.maximum())
        self.row_slider.blockSignals(False)
        self._update_row_label()
