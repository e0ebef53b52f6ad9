"""View 8, units: one example's h_t and dL/dh_t unit by unit (timestep x unit heatmaps), and the gate traces
of a chosen unit (LSTM i, f, g, o; GRU r, z, n), at a run's latest analysed iteration (units.npz; runs with
analysis.every > 0 and analysis.jacobian on).  NaN and Inf cells are grey; exact zeros of |dL/dh| sit at the
bottom colour."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

from .. import style
from ..axes import value_label
from ..hover import HoverReadout
from ..model import RunData, log10_or_nan
from ..plotting import EmptyHint, Legend, finite_range, make_plot, pen, set_title
from .analysis import analysis_arrays, stream_length
from .base import (
    CurveSet,
    Figure,
    View,
    layer_combo,
    resolve_layer,
    run_combo,
    set_layer_choices,
    set_run_choices,
    stream_label,
    visible_with_data,
)

NO_UNITS = "No unit traces recorded: set analysis.every > 0 (with analysis.jacobian = true)"
_GREY = QtGui.QColor(style.NONFINITE_COLOR)
GATE_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")


def _grey_where(bad: np.ndarray) -> np.ndarray:
    """(T, d, 4) RGBA: grey where ``bad``, transparent elsewhere."""
    rgba = np.zeros(bad.shape + (4,), dtype=np.ubyte)
    rgba[bad] = (_GREY.red(), _GREY.green(), _GREY.blue(), 255)
    return rgba


class UnitsFigure(Figure):
    name = "units"
    title = "Units"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        super().__init__(layout, interactive)
        self.h_plot = make_plot(
            layout, 0, 0, menu=interactive, title="hₜ per unit", x_label="timestep t", y_label="unit"
        )
        self.g_plot = make_plot(
            layout, 0, 2, menu=interactive, title="log10 |∂L/∂hₜ| per unit", x_label="timestep t", y_label="unit"
        )
        self.gate_plot = make_plot(
            layout, 1, 0, colspan=4, menu=interactive, title="Gates of a unit", x_label="timestep t",
            y_label="gate activation",
        )  # fmt: skip
        self.g_plot.setXLink(self.h_plot)
        self.g_plot.setYLink(self.h_plot)
        self.plots = [self.h_plot, self.g_plot, self.gate_plot]
        self.images, self.bads, self.bars = [], [], []
        for col, (plot, cmap) in enumerate(((self.h_plot, "CET-D1"), (self.g_plot, style.HEATMAP))):
            plot.showGrid(x=False, y=False)
            image, bad = pg.ImageItem(axisOrder="row-major"), pg.ImageItem(axisOrder="row-major")
            bad.setZValue(10)
            plot.addItem(image)
            plot.addItem(bad)
            bar = pg.ColorBarItem(colorMap=pg.colormap.get(cmap), interactive=False, colorMapMenu=False, width=14)
            bar.setImageItem(image)
            layout.addItem(bar, 0, 2 * col + 1)
            self.images.append(image)
            self.bads.append(bad)
            self.bars.append(bar)
        self.gate_curves = CurveSet(self.gate_plot)
        self.legend = Legend(layout, 1, 4)
        self.hint = EmptyHint(self.h_plot, NO_UNITS)
        self.run_key = None
        self.layer = -1
        self.unit = 0
        self.shown: dict | None = None
        self.readouts = [
            HoverReadout(self.h_plot, lambda x, y: self._describe(x, y)),
            HoverReadout(self.g_plot, lambda x, y: self._describe(x, y)),
            HoverReadout(self.gate_plot, lambda x, y: self._describe_gates(x)),
        ]

    def options(self) -> tuple:
        return self.run_key, self.layer, self.unit

    def chosen(self, runs: list[RunData]) -> RunData | None:
        shown = [r for r in visible_with_data(runs) if "unit_h" in analysis_arrays(r)]
        for run in shown:
            if run.key == self.run_key:
                return run
        return shown[0] if shown else None

    def refresh(self, runs: list[RunData]) -> None:
        run = self.chosen(runs)
        self.shown = None
        gate_keys, entries = [], []
        if run is None:
            for item in self.images + self.bads:
                item.clear()
        else:
            a = analysis_arrays(run)
            s = resolve_layer(self.layer, a["unit_h"].shape[1], run.top_stream)
            n = stream_length(run, s, a["unit_h"].shape[2])
            h = a["unit_h"][-1, s, :n]  # (T_s, d)
            grad = a["unit_grad_h"][-1, s, :n]  # (T_s, d)
            T, d = h.shape
            unit = min(max(self.unit, 0), d - 1)
            bound = finite_range(np.abs(h))
            top = bound[1] if bound is not None and bound[1] > 0 else 1.0
            logg = log10_or_nan(np.abs(grad))
            span = finite_range(logg) or (-1.0, 0.0)
            lo, hi = np.floor(span[0]), max(np.ceil(span[1]), np.floor(span[0]) + 1)
            for image, bad, bar, values, levels, raw in (
                (self.images[0], self.bads[0], self.bars[0], np.nan_to_num(h, nan=0.0), (-top, top), h),
                (self.images[1], self.bads[1], self.bars[1], np.where(np.isfinite(logg), logg, lo), (lo, hi), grad),
            ):
                # row-major (T, d) shown with t across and units up: the image's rows are units
                image.setImage(values.T, autoLevels=False, levels=levels)
                image.setRect(QtCore.QRectF(-0.5, -0.5, T, d))
                bad.setImage(_grey_where(~np.isfinite(raw)).transpose(1, 0, 2))
                bad.setRect(QtCore.QRectF(-0.5, -0.5, T, d))
                bar.setLevels(levels)
            for plot in (self.h_plot, self.g_plot):
                plot.getViewBox().setLimits(xMin=-0.5, xMax=T - 0.5, yMin=-0.5, yMax=d - 0.5)
                plot.getViewBox().setRange(xRange=(-0.5, T - 0.5), yRange=(-0.5, d - 0.5), padding=0)
            gates = run.cell_description.gates if "unit_gates" in a else ()
            t = np.arange(T, dtype=np.float64)
            traces = {}
            for k, gate in enumerate(gates):
                trace = a["unit_gates"][-1, s, :n, k * d + unit]  # (T_s,)
                self.gate_curves.set(gate, t, trace, pen(GATE_COLORS[k % 4]))
                gate_keys.append(gate)
                entries.append((f"{gate} (unit {unit})", GATE_COLORS[k % 4], "solid"))
                traces[gate] = trace
            if not gates:  # a plain RNN: the unit's own h_t
                self.gate_curves.set("h", t, h[:, unit], pen(GATE_COLORS[0]))
                gate_keys.append("h")
                entries.append((f"hₜ (unit {unit})", GATE_COLORS[0], "solid"))
                traces["h"] = h[:, unit]
            where = stream_label(run.streams, s, top=self.layer == -1)
            set_title(self.gate_plot, f"{'Gates' if gates else 'State'} of unit {unit}: {run.label}, {where}")
            set_title(self.h_plot, f"hₜ per unit (example 0, iteration {int(a['iteration'][-1])})")
            self.gate_plot.setLabel("left", "gate activation" if gates else "hₜ")
            self.gate_plot.getViewBox().enableAutoRange()
            self.shown = {"name": run.name, "h": h, "grad": grad, "traces": traces, "unit": unit}
        self.gate_curves.retain(gate_keys)
        self.legend.set(entries)
        self.hint.show(run is None)

    def _describe(self, x: float, y: float) -> str | None:
        if self.shown is None:
            return None
        t, j = round(x), round(y)
        h, grad = self.shown["h"], self.shown["grad"]
        if not (0 <= t < h.shape[0] and 0 <= j < h.shape[1]):
            return None
        return f"{self.shown['name']}, t = {t}, unit {j}\nhₜ = {value_label(float(h[t, j]))}\n∂L/∂hₜ = " + value_label(
            float(grad[t, j])
        )

    def _describe_gates(self, x: float) -> str | None:
        if self.shown is None:
            return None
        t = round(x)
        parts = [f"{name} = {value_label(float(v[t]))}" for name, v in self.shown["traces"].items() if 0 <= t < len(v)]
        return f"unit {self.shown['unit']}, t = {t}\n" + "\n".join(parts) if parts else None


class UnitsView(View):
    figure_class = UnitsFigure

    def __init__(self, parent=None):
        super().__init__(parent)
        self.run_box = run_combo("Which run's units to show")
        self.run_box.currentIndexChanged.connect(self._changed)
        self.layer_box = layer_combo("Which stream (top layer: the top forward stream)")
        self.layer_box.currentIndexChanged.connect(self._changed)
        self.unit_box = QtWidgets.QSpinBox()
        self.unit_box.setToolTip("The unit whose gates (LSTM, GRU) or state (RNN) are traced below")
        self.unit_box.valueChanged.connect(self._changed)
        for label, widget in (("Run:", self.run_box), ("Stream:", self.layer_box), ("Unit:", self.unit_box)):
            self.controls.addWidget(QtWidgets.QLabel(label))
            self.controls.addWidget(widget)
        self.controls.addStretch(1)

    def _changed(self, *_):
        self.figure.run_key = self.run_box.currentData()
        self.figure.layer = self.layer_box.currentData()
        self.figure.unit = self.unit_box.value()
        self.options_changed()

    def update_controls(self, runs: list[RunData]) -> None:
        chosen = self.figure.chosen(runs)
        with_units = [r for r in runs if r.visible and "unit_h" in analysis_arrays(r)]
        set_run_choices(self.run_box, [(r.name, r.key) for r in with_units], chosen.key if chosen else None)
        if chosen is not None:
            set_layer_choices(self.layer_box, chosen.layers, chosen.streams)
            self.unit_box.blockSignals(True)
            self.unit_box.setMaximum(analysis_arrays(chosen)["unit_h"].shape[3] - 1)
            self.unit_box.blockSignals(False)

    def signature(self, runs: list[RunData]) -> tuple:
        return super().signature(runs) + (tuple(len(analysis_arrays(r).get("iteration", ())) for r in runs),)
