"""View 4, saturation: gate means of the gated cells (LSTM, GRU) and the share of saturated gate units against t;
for RNNs the share of dead ReLU units (h = 0) or of saturated tanh / sigmoid units.  Saturated units pass
almost no gradient."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtWidgets

from .. import style
from ..axes import value_label
from ..hover import HoverReadout
from ..model import RunData
from ..plotting import STYLE_GREY, EmptyHint, Legend, SnapBounds, make_plot, pen
from .base import CurveSet, Figure, View, layer_combo, resolve_layer, set_layer_choices, visible_with_data

GATE_NAMES = {
    "i": "input gate i",
    "f": "forget gate f",
    "g": "candidate g",
    "o": "output gate o",
    "r": "reset gate r",
    "z": "update gate z",
    "n": "candidate n",
}
RNN_FRACTIONS = {
    "relu_dead": "dead ReLU (h = 0)",
    "tanh_sat": "saturated tanh (|h| > 0.95)",
    "sigmoid_sat": "saturated sigmoid (h < 0.05 or > 0.95)",
}


class SaturationFigure(Figure):
    name = "saturation"
    title = "Saturation"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        super().__init__(layout, interactive)
        self.gate_plot = make_plot(
            layout, 0, 0, menu=interactive, title="Gate means", x_label="timestep t", y_label="mean activation"
        )
        self.sat_plot = make_plot(
            layout,
            0,
            1,
            menu=interactive,
            title="Saturated or dead units",
            x_label="timestep t",
            y_label="fraction of units",
        )
        # the fractions are the plot every run has; the gate means (LSTMs only) follow its time axis, and are
        # left out when no LSTM is shown (a hidden plot gives its room to the other)
        self.gate_plot.setXLink(self.sat_plot)
        self.gate_plot.setYRange(-1.05, 1.05)
        self.sat_plot.setYRange(-0.02, 1.02)
        for plot in (self.gate_plot, self.sat_plot):
            plot.enableAutoRange(y=False)
            plot.hideButtons()  # its "A" (auto-range) would show on every hover: y is fixed on purpose
        self.plots = [self.gate_plot, self.sat_plot]
        self.legend = Legend(layout, 0, 2)
        self.gate_curves = CurveSet(self.gate_plot)
        self.sat_curves = CurveSet(self.sat_plot)
        self.sat_snap = SnapBounds(self.sat_plot)  # x: every shown run's timesteps
        self.gate_hint = EmptyHint(self.gate_plot, "Gate means: gated cells (LSTM, GRU) only")
        self.sat_hint = EmptyHint(self.sat_plot, "Press Run (Space) to start")
        self.layer = -1
        self._shown: list[dict] = []
        self.readouts = [
            HoverReadout(self.gate_plot, lambda x, y: self._describe(x, "mean")),
            HoverReadout(self.sat_plot, lambda x, y: self._describe(x, "sat")),
        ]

    def options(self) -> tuple:
        return (self.layer,)

    def refresh(self, runs: list[RunData]) -> None:
        shown = visible_with_data(runs)
        gate_keys, sat_keys, legend_runs = [], [], []
        self._shown = []
        gates_shown: dict[str, object] = {}  # the gates of every shown gated cell, in order -> its cell
        for run in shown:
            layer = resolve_layer(self.layer, run.layers, run.top_stream)
            entry = {"name": run.name, "iteration": int(run.trace.iterations[-1]), "mean": {}, "sat": {}}
            gates = run.cell_description.gates
            if gates:
                gates_shown.update(dict.fromkeys(gates, run.cell_description))
                for g in gates:
                    for kind, curves, keys in (
                        ("mean", self.gate_curves, gate_keys),
                        ("sat", self.sat_curves, sat_keys),
                    ):
                        metric = f"gate_{g}_{kind}"
                        if metric in run.trace:
                            y = np.asarray(run.trace.latest(metric)[layer], dtype=np.float64)  # (T,)
                            curves.set(
                                (run.key, metric),
                                np.arange(len(y), dtype=np.float64),
                                y,
                                pen(run.color, line=style.gate_style(run.cell_description, g)),
                            )
                            keys.append((run.key, metric))
                            entry[kind][GATE_NAMES.get(g, f"gate {g}")] = y
                legend_runs.append(run)
            else:
                for metric, label in RNN_FRACTIONS.items():
                    if metric in run.trace:
                        y = np.asarray(run.trace.latest(metric)[layer], dtype=np.float64)  # (T,)
                        self.sat_curves.set((run.key, metric), np.arange(len(y), dtype=np.float64), y, pen(run.color))
                        sat_keys.append((run.key, metric))
                        entry["sat"][label] = y
                        legend_runs.append(run)
            self._shown.append(entry)
        self.gate_curves.retain(gate_keys)
        self.sat_curves.retain(sat_keys)
        entries = [(run.label, run.color, "solid") for run in dict.fromkeys(legend_runs)]
        entries += [
            (GATE_NAMES.get(g, f"gate {g}"), STYLE_GREY, style.gate_style(c, g)) for g, c in gates_shown.items()
        ]
        self.legend.set(entries)
        # the time axis spans every shown run's steps, whether or not it has a saturation metric
        T = max([int(run.trace.array("h_norm").shape[-1]) for run in shown if "h_norm" in run.trace], default=0)
        self.sat_snap.snap((0.0, float(T - 1)) if T else None, (0.0, 1.0) if T else None, log_y=False)
        # without a gated cell the gate plot has nothing to show: left out (shown, with its hint, before any data)
        self.gate_plot.setVisible(bool(gates_shown) or not shown)
        self.gate_hint.show(not gates_shown)
        self.sat_hint.show(not sat_keys)
        if shown and not sat_keys:
            self.sat_hint.set_text("No saturation metric: linear RNNs do not saturate")

    def _describe(self, x: float, kind: str) -> str | None:
        t = round(x)
        lines = []
        for entry in self._shown:
            parts = [f"{label} {value_label(float(y[t]))}" for label, y in entry[kind].items() if 0 <= t < len(y)]
            if parts:
                lines.append(f"{entry['name']}: " + ", ".join(parts))
        return f"t = {t}\n" + "\n".join(lines) if lines else None


class SaturationView(View):
    figure_class = SaturationFigure

    def __init__(self, parent=None):
        super().__init__(parent)
        self.layer_box = layer_combo("Which layer of a stacked model to show")
        self.layer_box.currentIndexChanged.connect(self._layer_changed)
        self.controls.addWidget(QtWidgets.QLabel("Layer:"))
        self.controls.addWidget(self.layer_box)
        self.controls.addStretch(1)

    def _layer_changed(self, *_):
        self.figure.layer = int(self.layer_box.currentData())
        self.options_changed()

    def update_controls(self, runs: list[RunData]) -> None:
        deepest = max(runs, key=lambda r: r.layers, default=None)
        set_layer_choices(self.layer_box, deepest.layers if deepest else 1, deepest.streams if deepest else None)
