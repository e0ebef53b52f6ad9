"""View 2, gradient waterfall: log10 ||dL/dh_t|| of one run as a heatmap over training iteration (rows) and
timestep (columns), with a colour bar in decades.  Levels only widen while a run goes on, so colours keep
their meaning from one redraw to the next; NaN and Inf cells are drawn grey, exact zeros at the bottom
colour."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

from .. import style
from ..axes import decade_label, value_label
from ..hover import HoverReadout
from ..model import RunData, log10_or_nan
from ..plotting import EmptyHint, SnapBounds, finite_range, make_plot, nearest_index, set_title, thin_rows
from .base import (
    Figure,
    View,
    layer_combo,
    resolve_layer,
    run_combo,
    set_layer_choices,
    set_run_choices,
    stream_label,
    timestep_range,
    visible_with_data,
)

QUANTITIES = {"grad_h_norm": "‖∂L/∂hₜ‖", "grad_c_norm": "‖∂L/∂cₜ‖", "h_norm": "‖hₜ‖", "c_norm": "‖cₜ‖"}
MAX_ROWS = 2000  # rows drawn at most: the trace keeps more, the screen cannot show them
_GREY = QtGui.QColor(style.NONFINITE_COLOR)


class WaterfallFigure(Figure):
    name = "waterfall"
    title = "Waterfall"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        super().__init__(layout, interactive)
        self.plot = make_plot(
            layout,
            0,
            0,
            menu=interactive,
            title="Gradient waterfall",
            x_label="timestep t",
            y_label="training iteration",
            iterations_y=True,
        )
        self.plot.showGrid(x=False, y=False)
        self.plot.getViewBox().invertY(True)  # iteration 0 at the top, training flows down
        self.plots = [self.plot]
        self.image = pg.ImageItem(axisOrder="row-major")
        self.bad = pg.ImageItem(axisOrder="row-major")  # RGBA: grey where the value is NaN or Inf
        self.bad.setZValue(10)
        self.plot.addItem(self.image)
        self.plot.addItem(self.bad)
        self.colorbar = pg.ColorBarItem(
            colorMap=pg.colormap.get(style.HEATMAP), interactive=False, colorMapMenu=False, width=18
        )
        self.colorbar.setImageItem(self.image)
        layout.addItem(self.colorbar, 0, 1)
        self.caption = pg.LabelItem("", color="#505050", size="9pt", justify="left")
        layout.addItem(self.caption, 1, 0, 1, 2)
        self.hint = EmptyHint(self.plot, "Press Run (Space) to start")
        self.snap = SnapBounds(self.plot)
        self.run_key = None  # None: the first visible run
        self.layer = -1
        self.quantity = "grad_h_norm"
        self.levels: tuple[int, int] | None = None
        self._level_owner = None  # what the levels belong to; they reset when it changes
        self.shown: dict | None = None  # what is on screen (tests, hover)
        self.readouts = [HoverReadout(self.plot, self._describe)]

    def options(self) -> tuple:
        return self.run_key, self.layer, self.quantity

    def chosen(self, runs: list[RunData]) -> RunData | None:
        shown = [r for r in visible_with_data(runs) if self.quantity in r.trace]
        for run in shown:
            if run.key == self.run_key:
                return run
        return shown[0] if shown else None

    def refresh(self, runs: list[RunData]) -> None:
        run = self.chosen(runs)
        if run is None:  # nothing to show (e.g. after Reset): nothing of an earlier run stays either
            self.image.clear()
            self.bad.clear()
            self.snap.snap(None, None, log_y=False, empty_x=timestep_range(runs))  # the runs' 0 .. T-1
            self.shown = None
            self.levels, self._level_owner = None, None
            self.colorbar.setLevels((-1, 1))
            self._set_colorbar_ticks(-1, 1)
            set_title(self.plot, f"Waterfall of log₁₀ {QUANTITIES[self.quantity]}")
            self.hint.show(True)
            self.hint.set_text(
                "Press Run (Space) to start"
                if any(r.visible for r in runs) or not runs
                else "Every run is hidden: tick a run in the list"
            )
            if runs and any(r.visible and r.has_data() for r in runs):
                self.hint.set_text(f"No {QUANTITIES[self.quantity]} in the shown runs")
            self.caption.setText("")
            return
        self.hint.show(False)
        layer = resolve_layer(self.layer, run.layers, run.top_stream)
        rows = thin_rows(len(run.trace), MAX_ROWS)  # (K',)
        column = run.trace.array(self.quantity)
        segments = run.segments(layer)  # a seq2seq stream: the encoder's steps (t < 0), then the decoder's
        t0 = segments[0][1]
        values = np.concatenate(  # (K', T) without a stream's padding
            [np.asarray(column[rows, s, :length], dtype=np.float64) for s, _, length in segments], axis=1
        )
        iterations = run.trace.iterations[rows].astype(np.float64)  # (K',)
        logv = log10_or_nan(values)  # (K', T)
        bad = ~np.isfinite(values)  # NaN / Inf: grey
        self._update_levels((run.key, id(run.trace), self.quantity, layer), logv)
        lo, hi = self.levels
        # exact zeros (and underflow) sit at the bottom colour; bad cells are covered by the grey overlay
        image = np.where(np.isfinite(logv), logv, lo)
        self.image.setImage(image, autoLevels=False, levels=(lo, hi))
        self.colorbar.setLevels((lo, hi))
        self._set_colorbar_ticks(lo, hi)
        rect = _rect(iterations, values.shape[1], t0)
        self.image.setRect(rect)
        # iteration ticks within the recorded rows, at the rows themselves when they are few
        self.plot.getAxis("left").set_marks(
            (float(iterations[0]), float(iterations[-1])),
            [float(i) for i in iterations] if len(iterations) <= 12 else None,
        )
        # the iteration axis grows with training: snap its end to a nice number so it moves rarely
        self.snap.snap(
            (rect.left(), rect.right()), (rect.top(), rect.bottom()), log_y=False, nice_y=True, live=self.live
        )
        if bad.any():  # the overlay costs a (K', T, 4) array: only if needed
            overlay = np.zeros(values.shape + (4,), dtype=np.uint8)  # (K', T, 4) RGBA
            overlay[bad] = (_GREY.red(), _GREY.green(), _GREY.blue(), 255)
            self.bad.setImage(overlay, autoLevels=False, levels=(0, 255))
            self.bad.setRect(rect)
        else:
            self.bad.clear()
        self.bad.setVisible(bool(bad.any()))
        symbol = QUANTITIES[self.quantity]
        where = " and ".join(stream_label(run.streams, s) for s, _, _ in segments) if len(segments) > 1 else None
        where = where or stream_label(run.streams, layer, top=self.layer == -1)
        set_title(self.plot, f"Waterfall of log₁₀ {symbol}: {run.label}, {where}")
        note = (
            f"{len(rows)} of {len(run.trace)} recorded iterations shown"
            if len(rows) < len(run.trace)
            else f"{len(rows)} recorded iteration{'s' if len(rows) != 1 else ''}"
        )
        self.caption.setText(f"colour: log₁₀ {symbol};  grey: NaN or Inf ({int(bad.sum())} cells);  {note}")
        self.shown = {
            "run": run.name,
            "layer": layer,
            "t0": t0,
            "iterations": iterations,
            "values": values,
            "image": image,
            "bad": bad,
        }

    def _update_levels(self, owner, logv: np.ndarray) -> None:
        """Whole decades around the finite data; they widen as data arrives and never shrink for one run."""
        span = finite_range(logv)
        if owner != self._level_owner or self.levels is None:
            self.levels, self._level_owner = None, owner
        if span is None:
            self.levels = self.levels or (-1, 1)
            return
        lo, hi = math.floor(span[0]), math.ceil(span[1])
        if hi == lo:
            hi = lo + 1
        if self.levels is not None:
            lo, hi = min(lo, self.levels[0]), max(hi, self.levels[1])
        self.levels = (lo, hi)

    def _set_colorbar_ticks(self, lo: int, hi: int) -> None:
        step = max(1, math.ceil((hi - lo) / 8))
        decades = [k for k in range(lo, hi + 1) if (k - lo) % step == 0]
        if decades[-1] != hi:  # the top decade always has its label (it says how big the biggest values are)
            decades = decades[:-1] + [hi] if hi - decades[-1] < step / 2 else decades + [hi]
        ticks = [(float(k), decade_label(k)) for k in decades]
        self.colorbar.axis.setTicks([ticks])

    def _describe(self, x: float, y: float) -> str | None:
        if self.shown is None:
            return None
        values, iterations = self.shown["values"], self.shown["iterations"]
        t = round(x)
        row = nearest_index(iterations, y)
        column = t - self.shown["t0"]
        if row is None or not 0 <= column < values.shape[1]:
            return None
        return (
            f"{self.shown['run']}, iteration {int(iterations[row])}, t = {t}\n"
            f"{QUANTITIES[self.quantity]} = {value_label(float(values[row, column]))}"
        )


def _rect(iterations: np.ndarray, T: int, t0: int = 0) -> QtCore.QRectF:
    """Rows centred on their iterations (evenly spread by the trace's thinning), columns on t = t0..t0+T-1
    (t0 < 0: a seq2seq encoder's steps come first)."""
    if len(iterations) < 2:
        first = float(iterations[0]) if len(iterations) else 0.0
        return QtCore.QRectF(t0 - 0.5, first - 0.5, T, 1.0)
    step = (iterations[-1] - iterations[0]) / (len(iterations) - 1)
    return QtCore.QRectF(t0 - 0.5, iterations[0] - step / 2, T, iterations[-1] - iterations[0] + step)


class WaterfallView(View):
    figure_class = WaterfallFigure

    def __init__(self, parent=None):
        super().__init__(parent)
        self.run_box = run_combo("Which run to show as a heatmap")
        self.run_box.currentIndexChanged.connect(self._run_changed)
        self.quantity_box = QtWidgets.QComboBox()
        self.quantity_box.setToolTip("Which per-timestep norm to show")
        for name, label in QUANTITIES.items():
            self.quantity_box.addItem(label, name)
        self.quantity_box.currentIndexChanged.connect(self._quantity_changed)
        self.layer_box = layer_combo("Which layer of a stacked model to show")
        self.layer_box.currentIndexChanged.connect(self._layer_changed)
        for label, widget in (("Run:", self.run_box), ("Quantity:", self.quantity_box), ("Layer:", self.layer_box)):
            self.controls.addWidget(QtWidgets.QLabel(label))
            self.controls.addWidget(widget)
            self.controls.addSpacing(12)
        self.controls.addStretch(1)

    def _run_changed(self, *_):
        self.figure.run_key = self.run_box.currentData()
        self.options_changed()

    def _quantity_changed(self, *_):
        self.figure.quantity = self.quantity_box.currentData()
        self.options_changed()

    def _layer_changed(self, *_):
        self.figure.layer = int(self.layer_box.currentData())
        self.options_changed()

    def update_controls(self, runs: list[RunData]) -> None:
        deepest = max(runs, key=lambda r: r.layers, default=None)
        set_layer_choices(self.layer_box, deepest.layers if deepest else 1, deepest.streams if deepest else None)
        set_run_choices(self.run_box, [(r.name, r.key) for r in runs if r.visible], self.figure.run_key)
        self.figure.run_key = self.run_box.currentData()
