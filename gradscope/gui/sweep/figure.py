"""The Sweep tab's figure: log gain per step against one swept key (mean and spread over seeds, the mean-field
curve dashed), or a heatmap over two keys with the critical line drawn.  A pyqtgraph GraphicsLayoutWidget, so
it renders to PNG and SVG like every view (gui.rendering)."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore

from .. import style
from ..plotting import Legend, make_plot, pen
from .data import RECURRENT, SweepData

DIVERGING = "CET-D1"  # blue (vanishing) - white (level) - red (exploding), perceptually uniform


class SweepFigure(pg.GraphicsLayoutWidget):
    """``show(data, run)`` draws the sweep; it redraws only when the data changed (``data.version``)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackground(style.BACKGROUND)
        self.shown: dict | None = None  # what is on screen (tests)
        self._drawn = None
        self._build(1)

    def _build(self, dims: int) -> None:
        self.clear()
        self.dims = dims
        layout = self.ci
        if dims == 2:
            self.plot = make_plot(layout, 0, 0, title="Log gain per step back in time", x_label="", y_label="")
            self.plot.showGrid(x=False, y=False)
            self.image = pg.ImageItem(axisOrder="row-major")
            self.plot.addItem(self.image)
            self.colorbar = pg.ColorBarItem(
                colorMap=pg.colormap.get(DIVERGING), interactive=False, colorMapMenu=False, width=18
            )
            self.colorbar.setImageItem(self.image)
            self.colorbar.axis.enableAutoSIPrefix(False)
            self.colorbar.axis.setLabel("ln gain / step")  # "(x0.001)" beside a rate per step reads as a unit
            layout.addItem(self.colorbar, 0, 1)
            self.line = pg.PlotDataItem(pen=pen("#000000", 2.5, "dash"))
            self.plot.addItem(self.line)
            self.legend = Legend(layout, 0, 2)
        else:
            self.plot = make_plot(
                layout, 0, 0, title="Log gain per step back in time", x_label="", y_label="ln ||dL/dh|| per step back"
            )
            self.legend = Legend(layout, 0, 1)
            self.zero = pg.InfiniteLine(pos=0, angle=0, pen=pen("#808080", 1.0, "dot"))
            self.plot.addItem(self.zero)
            self.items: list = []
        self.caption = pg.LabelItem("", color="#505050", size="9pt", justify="left")
        layout.addItem(self.caption, 1, 0, 1, 3)
        self._drawn = None

    def show_sweep(self, data: SweepData | None, run: str | None = None, column: str = "log_gain_per_step") -> bool:
        """Draw ``data`` (its run ``run``, default the first; two keys: the heatmap of ``column``, the log gain
        per step or lyapunov_max); False when nothing changed since the last draw."""
        key = None if data is None else (id(data), data.version, run, column)
        if key == self._drawn:
            return False
        dims = data.dims if data is not None else 1
        if dims != self.dims or (data is not None and dims > 2):
            self._build(min(max(dims, 1), 2))
        if data is None:
            self.caption.setText("Open a sweep folder, or run a sweep (an experiment file with a [sweep] table)")
            self.shown = None
        elif data.dims > 2:
            self.caption.setText(f"{data.dims} swept keys: the tab draws one or two; read sweep.csv for the rest")
            self.shown = None
        else:
            run = run if run in data.runs else data.runs[0]
            if data.dims == 1:
                self._draw_curves(data, run)
            else:
                self._draw_heatmap(data, run, column if column in data.quantities() else "log_gain_per_step")
            done, failed = data.counts()
            self.caption.setText(
                f"{done}/{data.total} points done, {failed} failed" + (f"  ·  {data.folder}" if data.folder else "")
            )
        self._drawn = key
        return True

    # ------------------------------------------------------------------------------------------ one key
    def _draw_curves(self, data: SweepData, run: str) -> None:
        for item in self.items:
            self.plot.removeItem(item)
        self.items = []
        self.plot.setLabel("bottom", data.keys[0])
        entries = []
        self.shown = {"runs": {}}
        for index, name in enumerate(data.runs):
            color = style.run_color(index)
            x, mean, spread, count = data.curve(name)
            ok = np.isfinite(mean)
            if ok.any():
                bars = pg.ErrorBarItem(x=x[ok], y=mean[ok], height=2 * spread[ok], beam=0.0, pen=pen(color, 1.2))
                points = pg.PlotDataItem(
                    x[ok], mean[ok], pen=pen(color), symbol="o", symbolSize=7, symbolBrush=color, symbolPen=None
                )
                self.items += [bars, points]
            self.shown["runs"][name] = (x, mean, spread, count)
            entries.append((f"{name} (mean ± sd over seeds)", color, "solid"))
            line = data.lines.get(name)
            if line is not None:
                curve = pg.PlotDataItem(*line, pen=pen(color, style.THEORY_WIDTH, "dash"))
                self.items.append(curve)
                entries.append((f"{name}: mean field", color, "dash"))
        for item in self.items:
            self.plot.addItem(item)
        self.legend.set(entries)

    # ------------------------------------------------------------------------------------------ two keys
    def _draw_heatmap(self, data: SweepData, run: str, column: str) -> None:
        mean, count = data.grid(run, column)  # (ny, nx)
        ny, nx = mean.shape
        finite = mean[np.isfinite(mean)]
        bound = max(0.05, float(np.max(np.abs(finite)))) if finite.size else 1.0  # symmetric: white is level
        self.image.setImage(mean, autoLevels=False, levels=(-bound, bound))  # NaN (not yet done): transparent
        self.image.setRect(QtCore.QRectF(-0.5, -0.5, nx, ny))
        self.colorbar.setLevels((-bound, bound))
        self.plot.setLabel("bottom", data.keys[0])
        self.plot.setLabel("left", data.keys[1])
        for axis, values in (("bottom", data.values[0]), ("left", data.values[1])):
            self.plot.getAxis(axis).setTicks(
                [[(i, f"{v:g}" if isinstance(v, float) else str(v)) for i, v in enumerate(values)]]
            )
        self.plot.setRange(xRange=(-0.5, nx - 0.5), yRange=(-0.5, ny - 0.5), padding=0)
        what = "Log gain per step back in time" if column == "log_gain_per_step" else "Largest Lyapunov exponent"
        self.plot.setTitle(f"{what}: {run}", size="11pt")
        self.colorbar.axis.setLabel("ln gain / step" if column == "log_gain_per_step" else "lambda_max / step")
        xs, ys = self._critical_line(data, run)
        self.line.setData(xs, ys, connect="finite")
        entries = [("critical line chi_1 = 1 (mean field)", "#000000", "dash")] if len(xs) else []
        self.legend.set(entries)
        self.shown = {"run": run, "column": column, "mean": mean, "count": count, "line": (xs, ys)}

    @staticmethod
    def _critical_line(data: SweepData, run: str):
        """The critical line in the heatmap's cell coordinates (recurrent scale on its own axis), inside the grid."""
        line = data.lines.get(run)
        if line is None or RECURRENT not in data.keys:
            return np.zeros(0), np.zeros(0)
        other_values, critical = line
        r = data.keys.index(RECURRENT)
        lo, hi = min(data.values[r]), max(data.values[r])
        inside = [math.isfinite(c) and lo <= c <= hi for c in critical]
        pos_r = np.array([data.position(r, c) if ok else np.nan for c, ok in zip(critical, inside)])
        pos_o = np.array([data.position(1 - r, v) for v in other_values])
        return (pos_r, pos_o) if r == 0 else (pos_o, pos_r)


__all__ = ["SweepFigure"]
