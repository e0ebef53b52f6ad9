"""View 5, layers: ||dL/dh_t|| and ||h_t|| against t for every layer of one (stacked) run, layer by colour."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtWidgets

from .. import style
from ..axes import value_label
from ..hover import HoverReadout
from ..model import RunData
from ..plotting import Legend, pen, set_title
from .base import (
    Figure,
    View,
    log_series,
    run_combo,
    set_run_choices,
    snap_and_mark,
    stream_label,
    timestep_range,
    visible_with_data,
)


def layer_colors(layers: int) -> list[str]:
    """Colour-blind-safe colours for layers 0..L-1, from dark (bottom layer) to light (top)."""
    cmap = pg.colormap.get(style.LAYER_MAP)
    if layers == 1:
        return [cmap.map(0.0, mode="qcolor").name()]
    # up to 0.85 of the map: its last stretch is a pale yellow that fades into a white background
    return [cmap.map(0.85 * l / (layers - 1), mode="qcolor").name() for l in range(layers)]


class LayersFigure(Figure):
    name = "layers"
    title = "Layers"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        super().__init__(layout, interactive)
        self.gradient_and_state_plots(("Gradient per layer", "Hidden state per layer"), (0, 0), (0, 1))
        self.legend = Legend(layout, 0, 2)
        self.run_key = None
        self.shown: dict | None = None
        self.readouts = [
            HoverReadout(self.grad_plot, lambda x, y: self._describe(x, "grad_h_norm")),
            HoverReadout(self.state_plot, lambda x, y: self._describe(x, "h_norm")),
        ]

    def options(self) -> tuple:
        return (self.run_key,)

    def chosen(self, runs: list[RunData]) -> RunData | None:
        shown = visible_with_data(runs)
        for run in shown:
            if run.key == self.run_key:
                return run
        # by default the deepest run: the view is about stacks
        return max(shown, key=lambda r: r.layers) if shown else None

    def refresh(self, runs: list[RunData]) -> None:
        run = self.chosen(runs)
        grad_keys, state_keys, grad_marks, state_marks, entries = [], [], [], [], []
        self.shown = None
        if run is not None:
            colors = layer_colors(run.layers)
            self.shown = {
                "name": run.name,
                "iteration": int(run.trace.iterations[-1]),
                "grad_h_norm": [],
                "h_norm": [],
                "streams": run.streams,
            }
            for l in range(run.layers):
                for metric, curves, keys, marks in (
                    ("grad_h_norm", self.grad_curves, grad_keys, grad_marks),
                    ("h_norm", self.state_curves, state_keys, state_marks),
                ):
                    series = log_series(run.trace, metric, -1, l)
                    if series is None:
                        continue
                    y, bad = series
                    t = np.arange(len(y), dtype=np.float64)
                    label = (
                        stream_label(run.streams, l)
                        + (" (bottom)" if l == 0 and run.layers > 1 else "")
                        + (" (top)" if l == run.layers - 1 and run.layers > 1 else "")
                    )
                    curves.set(l, t, y, pen(colors[l]))
                    if metric == "grad_h_norm":
                        entries.append((label, colors[l], "solid"))
                    keys.append(l)
                    marks.append((t[bad], colors[l]))
                    self.shown[metric].append(run.trace.latest(metric)[l])
            single = "" if run.layers > 1 else " (1 layer)"
            set_title(self.grad_plot, f"Gradient per layer: {run.label}{single}, iteration {self.shown['iteration']}")
        else:
            set_title(self.grad_plot, "Gradient per layer")
        self.legend.set(entries)
        self.grad_curves.retain(grad_keys)
        self.state_curves.retain(state_keys)
        empty_x = timestep_range(runs)
        snap_and_mark(self.grad_snap, self.grad_marks, grad_marks, self.grad_curves, live=self.live, empty_x=empty_x)
        snap_and_mark(
            self.state_snap, self.state_marks, state_marks, self.state_curves, live=self.live, empty_x=empty_x
        )
        self.hint.show(run is None)

    def _describe(self, x: float, metric: str) -> str | None:
        if self.shown is None:
            return None
        t = round(x)
        names = self.shown["streams"]
        parts = [
            f"{stream_label(names, l)}: {value_label(float(v[t]))}"
            for l, v in enumerate(self.shown[metric])
            if 0 <= t < len(v)
        ]
        symbol = "‖∂L/∂h‖" if metric == "grad_h_norm" else "‖h‖"
        return f"{self.shown['name']}, t = {t}, {symbol}\n" + "\n".join(parts) if parts else None


class LayersView(View):
    figure_class = LayersFigure

    def __init__(self, parent=None):
        super().__init__(parent)
        self.run_box = run_combo("Which run's layers to show (default: the deepest)")
        self.run_box.currentIndexChanged.connect(self._run_changed)
        self.controls.addWidget(QtWidgets.QLabel("Run:"))
        self.controls.addWidget(self.run_box)
        self.controls.addStretch(1)

    def _run_changed(self, *_):
        self.figure.run_key = self.run_box.currentData()
        self.options_changed()

    def update_controls(self, runs: list[RunData]) -> None:
        chosen = self.figure.chosen(runs)  # by default the deepest run
        set_run_choices(
            self.run_box,
            [(f"{r.name} ({r.layers} layer{'s' if r.layers != 1 else ''})", r.key) for r in runs if r.visible],
            chosen.key if chosen is not None else None,
        )
