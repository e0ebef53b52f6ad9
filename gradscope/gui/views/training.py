"""View 3, training: the loss of every run against the iteration, with its task's baseline (the loss of the
trivial strategy the task names), the global gradient norm before clipping with the clip threshold, and for ce
tasks the accuracy (share of scored positions whose largest logit is the target's) with the task's accuracy
ceiling where it has one (the best a unidirectional model can do: the lookahead task)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from .. import style
from ..axes import value_label
from ..hover import HoverReadout
from ..model import RunData, log10_or_nan, nonfinite_mask
from ..plotting import STYLE_GREY, EmptyHint, Legend, SnapBounds, make_plot, nearest_index, pen, thin_rows
from .base import CurveSet, Figure, NonFiniteMarkers, View, iteration_range, snap_and_mark, visible_with_data

MAX_POINTS = 4000  # points per curve at most: the trace may keep more, a plot cannot show them
MARKER_POINTS = 30  # curves of at most this many recorded iterations get a dot on each
LABELS = {"loss": "loss", "grad_norm": "‖∂L/∂θ‖", "accuracy": "accuracy"}  # the hover readout's names


class TrainingFigure(Figure):
    name = "training"
    title = "Training"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        super().__init__(layout, interactive)
        self.loss_plot = make_plot(
            layout,
            0,
            0,
            menu=interactive,
            title="Loss",
            x_label="iteration",
            y_label="loss L",
            log_y=True,
            iterations_x=True,
        )
        self.norm_plot = make_plot(
            layout,
            0,
            1,
            menu=interactive,
            title="Global gradient norm (before clipping)",
            x_label="iteration",
            y_label="‖∂L/∂θ‖",
            log_y=True,
            iterations_x=True,
        )
        self.norm_plot.setXLink(self.loss_plot)
        self.accuracy_plot = make_plot(
            layout,
            0,
            2,
            menu=interactive,
            title="Accuracy (scored positions)",
            x_label="iteration",
            y_label="accuracy",
            iterations_x=True,
        )
        # ce tasks only: left out (its room given to the others) when no shown run records an accuracy
        self.accuracy_plot.setXLink(self.loss_plot)
        self.accuracy_plot.setYRange(-0.02, 1.02)
        self.accuracy_plot.enableAutoRange(y=False)
        self.accuracy_plot.hideButtons()  # y is fixed on purpose: a share
        self.plots = [self.loss_plot, self.norm_plot, self.accuracy_plot]
        self.legend = Legend(layout, 0, 3)
        self.loss_curves = CurveSet(self.loss_plot)
        self.baselines = CurveSet(self.loss_plot)
        self.norm_curves = CurveSet(self.norm_plot)
        self.thresholds = CurveSet(self.norm_plot)
        self.accuracy_curves = CurveSet(self.accuracy_plot)
        self.ceilings = CurveSet(self.accuracy_plot)
        self.accuracy_marks = NonFiniteMarkers(self.accuracy_plot)
        self.loss_marks = NonFiniteMarkers(self.loss_plot)
        self.norm_marks = NonFiniteMarkers(self.norm_plot)
        self.loss_snap = SnapBounds(self.loss_plot)
        self.norm_snap = SnapBounds(self.norm_plot)
        self.hint = EmptyHint(self.loss_plot, "Press Run (Space) to start")
        self._shown: list[dict] = []
        self.readouts = [
            HoverReadout(self.loss_plot, lambda x, y: self._describe(x, "loss")),
            HoverReadout(self.norm_plot, lambda x, y: self._describe(x, "grad_norm")),
            HoverReadout(self.accuracy_plot, lambda x, y: self._describe(x, "accuracy")),
        ]

    def refresh(self, runs: list[RunData]) -> None:
        shown = visible_with_data(runs)
        self._shown = []
        keys, base_keys, clip_keys, accuracy_keys, ceiling_keys = [], [], [], [], []
        loss_marks, norm_marks, accuracy_marks = [], [], []
        x_lo, x_hi = np.inf, -np.inf
        # dots on every point while the longest curve is short: all runs alike, not only the slowest
        few = max([len(run.trace) for run in shown], default=0) <= MARKER_POINTS
        for run in shown:
            rows = thin_rows(len(run.trace), MAX_POINTS)  # (K',) evenly spread
            iterations = run.trace.iterations[rows].astype(np.float64)  # (K',)
            loss = np.asarray(run.trace.array("loss")[rows], dtype=np.float64)  # (K',)
            grad = np.asarray(run.trace.array("grad_norm")[rows], dtype=np.float64)  # (K',)
            self.loss_curves.set(run.key, iterations, log10_or_nan(loss), pen(run.color), markers=few)
            self.norm_curves.set(run.key, iterations, log10_or_nan(grad), pen(run.color), markers=few)
            keys.append(run.key)
            loss_marks.append((iterations[nonfinite_mask(loss)], run.color))
            norm_marks.append((iterations[nonfinite_mask(grad)], run.color))
            x_lo, x_hi = min(x_lo, float(iterations[0])), max(x_hi, float(iterations[-1]))
            accuracy = None
            if "accuracy" in run.trace:
                accuracy = np.asarray(run.trace.array("accuracy")[rows], dtype=np.float64)  # (K',)
                self.accuracy_curves.set(run.key, iterations, accuracy, pen(run.color), markers=few)
                accuracy_keys.append(run.key)
                accuracy_marks.append((iterations[nonfinite_mask(accuracy)], run.color))
            self._shown.append(
                {
                    "name": run.name,
                    "iterations": iterations,
                    "loss": loss,
                    "grad_norm": grad,
                    "accuracy": accuracy,
                    "baseline": run.baseline_loss,
                    "clip": run.clip_norm,
                    "ceiling": run.accuracy_ceiling,
                }
            )
        if x_hi - x_lo < 1:  # one iteration: the references still read as lines
            x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
        # horizontal references drawn across the iterations shown
        for run in shown:
            if run.baseline_loss is not None and run.baseline_loss > 0:
                y = np.log10(run.baseline_loss)
                self.baselines.set(
                    run.key,
                    np.array([x_lo, x_hi]),
                    np.array([y, y]),
                    pen(run.color, style.THEORY_WIDTH, "dash", alpha=200),
                )
                base_keys.append(run.key)
            if run.clip_norm > 0:
                y = np.log10(run.clip_norm)
                self.thresholds.set(
                    run.key,
                    np.array([x_lo, x_hi]),
                    np.array([y, y]),
                    pen(run.color, style.THEORY_WIDTH, "dash", alpha=200),
                )
                clip_keys.append(run.key)
            if run.accuracy_ceiling is not None and run.key in accuracy_keys:
                y = float(run.accuracy_ceiling)
                self.ceilings.set(
                    run.key,
                    np.array([x_lo, x_hi]),
                    np.array([y, y]),
                    pen(run.color, style.THEORY_WIDTH, "dash", alpha=200),
                )
                ceiling_keys.append(run.key)
        self.loss_curves.retain(keys)
        self.norm_curves.retain(keys)
        self.baselines.retain(base_keys)
        self.thresholds.retain(clip_keys)
        self.accuracy_curves.retain(accuracy_keys)
        self.ceilings.retain(ceiling_keys)
        entries = [(run.label, run.color, "solid") for run in shown]
        if base_keys:
            entries.append(("task baseline (loss)", STYLE_GREY, "dash"))
        if clip_keys:
            entries.append(("clip threshold (norm)", STYLE_GREY, "dash"))
        if ceiling_keys:
            entries.append(("unidirectional ceiling (accuracy)", STYLE_GREY, "dash"))
        self.legend.set(entries)
        empty_x = iteration_range(runs)
        snap_and_mark(
            self.loss_snap,
            self.loss_marks,
            loss_marks,
            self.loss_curves,
            self.baselines,
            nice_x=True,
            live=self.live,
            empty_x=empty_x,
        )
        snap_and_mark(
            self.norm_snap,
            self.norm_marks,
            norm_marks,
            self.norm_curves,
            self.thresholds,
            nice_x=True,
            live=self.live,
            empty_x=empty_x,
        )
        self.accuracy_marks.set(accuracy_marks, 1.0)
        self._show_accuracy(bool(accuracy_keys))
        self.hint.show(not shown)

    def _show_accuracy(self, on: bool) -> None:
        """The plots share the width evenly; a hidden accuracy plot's column takes none of it."""
        grid = self.layout.layout
        self.accuracy_plot.setVisible(on)
        for col, plot in enumerate(self.plots):
            shown = on or col < 2
            grid.setColumnStretchFactor(col, 1 if shown else 0)
            plot.setPreferredWidth(300 if shown else 0)  # not the title's width: the plots as wide as each other
        grid.setColumnMaximumWidth(2, 1e6 if on else 0)

    def _describe(self, x: float, metric: str) -> str | None:
        lines = []
        for entry in self._shown:
            i = nearest_index(entry["iterations"], x)
            if i is None or entry[metric] is None:
                continue
            text = (
                f"{entry['name']}: iteration {int(entry['iterations'][i])}, "
                f"{LABELS[metric]} = {value_label(float(entry[metric][i]))}"
            )
            if metric == "loss" and entry["baseline"] is not None:
                text += f" (baseline {value_label(entry['baseline'])})"
            if metric == "grad_norm" and entry["clip"] > 0:
                text += f" (clip at {value_label(entry['clip'])})"
            if metric == "accuracy" and entry["ceiling"] is not None:
                text += f" (unidirectional ceiling {value_label(entry['ceiling'])})"
            lines.append(text)
        return "\n".join(lines) or None


class TrainingView(View):
    figure_class = TrainingFigure
