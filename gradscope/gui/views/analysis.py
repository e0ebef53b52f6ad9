"""Views 6 and 7, the mechanism behind the curves (docs/trace_format.md, "Analysis"; runs with analysis.every > 0).

Jacobian:  sigma_max(ds_{T-1}/ds_t) against the lag T-1-t (log scale), every run, at its latest analysed
           iteration, with the Pascanu bound (gamma sigma_max(W_hh))^lag and the mean-field line
           exp(lambda_MF lag); beside it ||dL/dW_hh at lag k||_F, where the weight update comes from.
Lyapunov:  the spectrum lambda_i against the index i with the zero line (above it: chaos), and lambda_max over
           the analysed iterations, with the mean-field largest exponent at initialisation.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtWidgets

from ... import theory
from ...theory.meanfield import DERIVATIVE_BOUND
from ..axes import value_label
from ..hover import HoverReadout
from ..model import RunData, log10_or_nan, nonfinite_mask
from ..plotting import STYLE_GREY, EmptyHint, Legend, SnapBounds, make_plot, pen, set_title
from .base import (
    CurveSet,
    Figure,
    NonFiniteMarkers,
    View,
    layer_combo,
    resolve_layer,
    set_layer_choices,
    snap_and_mark,
    stream_label,
    visible_with_data,
)
from .profile import latest_finite

NO_ANALYSIS = "No analysis recorded: set analysis.every > 0 (and analysis.lyapunov > 0 for exponents)"


def analysis_arrays(run: RunData) -> dict[str, np.ndarray]:
    """The run's analysis.npz and units.npz arrays so far (empty without analysis), cached until a row is added."""
    log = getattr(run.result, "analysis", None)
    if log is None or not len(log):
        return {}
    cached = run._cache.get("analysis")
    if cached is None or cached[0] != len(log):
        cached = run._cache["analysis"] = (len(log), log.unit_arrays() | log.to_arrays())
    return cached[1]


def stream_length(run: RunData, s: int, T: int) -> int:
    """Steps of stream s (docs/trace_format.md: stream_len): a seq2seq decoder's are task.target_len (or seq_len);
    T (the arrays' length) without settings."""
    if run.run is None or s >= len(run.streams):
        return T
    task = run.run.task
    target_len = getattr(task, "target_len", None) or task.seq_len
    return min(T, target_len if run.streams[s].startswith("decoder.") else task.seq_len)


def has_analysis(run: RunData, key: str) -> bool:
    return key in analysis_arrays(run)


def mean_field_exponent(run: RunData) -> float | None:
    """lambda_max of the run's random RNN at initialisation (theory.mean_field_largest_exponent), or None."""
    rt = run.theory
    if rt is None or rt.c is None or not rt.c > 0:
        return None
    q_in = float(rt.q_in[-1]) if len(rt.q_in) else 0.0
    try:
        value = theory.mean_field_largest_exponent(rt.activation, rt.c, q_in, rt.q_b)
    except (ValueError, RuntimeError, ArithmeticError):
        return None
    return value if math.isfinite(value) else None


class JacobianFigure(Figure):
    name = "jacobian"
    title = "Jacobian"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        super().__init__(layout, interactive)
        self.jac_plot = make_plot(
            layout,
            0,
            0,
            menu=interactive,
            title="Long-lag Jacobian",
            x_label="lag (steps back from the stream's last step)",
            y_label="sigma_max(∂s_{T-1}/∂sₜ) (batch mean)",
            log_y=True,
        )
        self.lag_plot = make_plot(
            layout,
            0,
            1,
            menu=interactive,
            title="Where ∂L/∂W_hh comes from",
            x_label="lag k = t - s (steps)",
            y_label="‖∂L/∂W_hh at lag k‖_F",
            log_y=True,
        )
        self.plots = [self.jac_plot, self.lag_plot]
        self.legend = Legend(layout, 0, 2)
        self.jac_curves, self.lag_curves = CurveSet(self.jac_plot), CurveSet(self.lag_plot)
        self.theory_curves = CurveSet(self.jac_plot)
        self.jac_marks, self.lag_marks = NonFiniteMarkers(self.jac_plot), NonFiniteMarkers(self.lag_plot)
        self.jac_snap, self.lag_snap = SnapBounds(self.jac_plot), SnapBounds(self.lag_plot)
        self.hint = EmptyHint(self.jac_plot, NO_ANALYSIS)
        self.layer = -1  # the stream shown (-1: the top layer)
        self.shown: list[dict] = []
        self.readouts = [
            HoverReadout(self.jac_plot, lambda x, y: self._describe(x, "jac")),
            HoverReadout(self.lag_plot, lambda x, y: self._describe(x, "lag")),
        ]

    def options(self) -> tuple:
        return (self.layer,)

    def refresh(self, runs: list[RunData]) -> None:
        shown = [r for r in visible_with_data(runs) if has_analysis(r, "jac_sigma_max")]
        self.shown = []
        entries, jac_keys, lag_keys, theory_keys, jac_marks, lag_marks = [], [], [], [], [], []
        for run in shown:
            a = analysis_arrays(run)
            s = resolve_layer(self.layer, a["jac_sigma_max"].shape[1], run.top_stream)
            n = stream_length(run, s, a["jac_sigma_max"].shape[2])
            sigma = a["jac_sigma_max"][-1, s, :n]  # (T_s,) by input position t (NaN padding past T_s dropped)
            if not run.streams[s].endswith("_reverse"):  # a reverse stream's last step is t = 0: lag = t
                sigma = sigma[::-1]  # (T_s,) by lag T_s-1-t
            by_lag = a["grad_W_hh_by_lag"][-1, s, :n]
            lag = np.arange(len(sigma), dtype=np.float64)
            for curves, marks, keys, values in (
                (self.jac_curves, jac_marks, jac_keys, sigma),
                (self.lag_curves, lag_marks, lag_keys, by_lag),
            ):
                curves.set(run.key, lag, log10_or_nan(values), pen(run.color))
                marks.append((lag[nonfinite_mask(values)], run.color))
                keys.append(run.key)
            entries.append((f"{run.label} ({stream_label(run.streams, s, top=self.layer == -1)})", run.color, "solid"))
            self.shown.append({"name": run.name, "iteration": int(a["iteration"][-1]), "jac": sigma, "lag": by_lag})
            theory_keys += self._theory(run, s, lag, int(a["iteration"][-1]), log10_or_nan(sigma))
        if any(k[1] == "bound" for k in theory_keys):
            entries.append(("Pascanu bound (gamma sigma_max(W_hh))^lag", STYLE_GREY, "dash"))
        if any(k[1] == "mean field" for k in theory_keys):
            entries.append(("mean field at init, exp(λ_MF lag)", STYLE_GREY, "dot"))
        self.legend.set(entries)
        self.jac_curves.retain(jac_keys)
        self.lag_curves.retain(lag_keys)
        self.theory_curves.retain(theory_keys)
        its = sorted({r["iteration"] for r in self.shown})
        at = f", iteration {its[0]}" if len(its) == 1 else ""
        set_title(self.jac_plot, f"Long-lag Jacobian{at}")
        empty = (0.0, float(max((len(r["jac"]) for r in self.shown), default=2) - 1))
        snap_and_mark(
            self.jac_snap, self.jac_marks, jac_marks, self.jac_curves, self.theory_curves,
            live=self.live, empty_x=empty,
        )  # fmt: skip
        snap_and_mark(self.lag_snap, self.lag_marks, lag_marks, self.lag_curves, live=self.live, empty_x=empty)
        self.hint.show(not self.shown)

    def _theory(self, run: RunData, s: int, lag: np.ndarray, iteration: int, measured: np.ndarray) -> list:
        """The bound (sigma_max(W_hh) of the analysed iteration, or the closest earlier one measured) and the
        mean-field line for a plain RNN (gated cells have neither); their curve keys.  Drawn within four
        decades of the measured curve, so a bound of 10^40 does not squeeze it into a line."""
        if run.run is None or run.cell != "rnn" or run.run.activation not in DERIVATIVE_BOUND:
            return []
        ok = measured[np.isfinite(measured)]
        low, high = (float(ok.min()) - 4, float(ok.max()) + 4) if ok.size else (-4.0, 4.0)

        def draw(kind, line, style):
            line = np.where((line >= low) & (line <= high), line, np.nan)
            self.theory_curves.set((run.key, kind), lag, line, pen(run.color, 1.5, style, 160))
            return [(run.key, kind)]

        keys = []
        if "sigma_max" in run.trace:
            rows = np.flatnonzero(run.trace.iterations <= iteration)
            w_sigma = latest_finite(run.trace.array("sigma_max"), int(rows[-1]), s) if rows.size else None
            if w_sigma is not None and w_sigma > 0:
                keys += draw("bound", math.log10(DERIVATIVE_BOUND[run.run.activation] * w_sigma) * lag, "dash")
        rate = mean_field_exponent(run)
        if rate is not None:
            keys += draw("mean field", rate / math.log(10) * lag, "dot")
        return keys

    def _describe(self, x: float, which: str) -> str | None:
        k = round(x)
        parts = [
            f"{r['name']} (it. {r['iteration']}): {value_label(float(r[which][k]))}"
            for r in self.shown
            if 0 <= k < len(r[which])
        ]
        symbol = "sigma_max(∂s_{T-1}/∂sₜ)" if which == "jac" else "‖∂L/∂W_hh at lag k‖"
        return f"lag {k}, {symbol}\n" + "\n".join(parts) if parts else None


class LyapunovFigure(Figure):
    name = "lyapunov"
    title = "Lyapunov"

    def __init__(self, layout: pg.GraphicsLayout, interactive: bool = True):
        super().__init__(layout, interactive)
        self.spectrum_plot = make_plot(
            layout,
            0,
            0,
            menu=interactive,
            title="Lyapunov spectrum",
            x_label="exponent index i",
            y_label="λᵢ (nats per step)",
        )
        self.top_plot = make_plot(
            layout,
            0,
            1,
            menu=interactive,
            title="Largest exponent over training",
            x_label="iteration",
            y_label="λ_max (nats per step)",
            iterations_x=True,
        )
        self.plots = [self.spectrum_plot, self.top_plot]
        for plot in self.plots:
            zero = pg.InfiniteLine(pos=0.0, angle=0, movable=False, pen=pen("#404040", 1))
            plot.addItem(zero, ignoreBounds=True)
        self.legend = Legend(layout, 0, 2)
        self.spectrum_curves, self.top_curves = CurveSet(self.spectrum_plot), CurveSet(self.top_plot)
        self.theory_curves = CurveSet(self.top_plot)
        self.spectrum_marks = NonFiniteMarkers(self.spectrum_plot)
        self.top_marks = NonFiniteMarkers(self.top_plot)
        self.spectrum_snap, self.top_snap = SnapBounds(self.spectrum_plot), SnapBounds(self.top_plot)
        self.hint = EmptyHint(self.spectrum_plot, NO_ANALYSIS)
        self.layer = -1
        self.shown: list[dict] = []
        self.readouts = [
            HoverReadout(self.spectrum_plot, lambda x, y: self._describe_index(x)),
            HoverReadout(self.top_plot, lambda x, y: self._describe_iteration(x)),
        ]

    def options(self) -> tuple:
        return (self.layer,)

    def refresh(self, runs: list[RunData]) -> None:
        shown = [r for r in visible_with_data(runs) if has_analysis(r, "lyapunov")]
        self.shown = []
        entries, keys, theory_keys, spectrum_marks, top_marks = [], [], [], [], []
        for run in shown:
            a = analysis_arrays(run)
            s = resolve_layer(self.layer, a["lyapunov"].shape[1], run.top_stream)
            spectrum = a["lyapunov"][-1, s]  # (m,) descending
            index = np.arange(1, len(spectrum) + 1, dtype=np.float64)
            iterations = a["iteration"].astype(np.float64)
            top = a["lyapunov"][:, s, 0]  # (Ka,)
            finite = np.where(np.isfinite(spectrum), spectrum, np.nan)
            self.spectrum_curves.set(run.key, index, finite, pen(run.color), markers=len(index) <= 64)
            self.top_curves.set(run.key, iterations, np.where(np.isfinite(top), top, np.nan), pen(run.color), True)
            spectrum_marks.append((index[nonfinite_mask(spectrum)], run.color))
            top_marks.append((iterations[nonfinite_mask(top)], run.color))
            keys.append(run.key)
            entries.append((f"{run.label} ({stream_label(run.streams, s, top=self.layer == -1)})", run.color, "solid"))
            rate = mean_field_exponent(run)
            if rate is not None and len(iterations):
                span = np.array([iterations[0], max(iterations[-1], iterations[0] + 1)])
                self.theory_curves.set(run.key, span, np.full(2, rate), pen(run.color, 1.5, "dot", 160))
                theory_keys.append(run.key)
            self.shown.append(
                {
                    "name": run.name,
                    "iteration": int(a["iteration"][-1]),
                    "spectrum": spectrum,
                    "iterations": a["iteration"],
                    "top": top,
                }
            )
        if theory_keys:
            entries.append(("mean field λ_max at init", STYLE_GREY, "dot"))
        self.legend.set(entries)
        self.spectrum_curves.retain(keys)
        self.top_curves.retain(keys)
        self.theory_curves.retain(theory_keys)
        m = max((len(r["spectrum"]) for r in self.shown), default=2)
        snap_and_mark(
            self.spectrum_snap, self.spectrum_marks, spectrum_marks, self.spectrum_curves,
            log_y=False, live=self.live, empty_x=(1.0, float(max(m, 2))),
        )  # fmt: skip
        snap_and_mark(
            self.top_snap, self.top_marks, top_marks, self.top_curves, self.theory_curves,
            log_y=False, nice_x=True, live=self.live, empty_x=(0.0, 1.0),
        )  # fmt: skip
        self.hint.show(not self.shown)

    def _describe_index(self, x: float) -> str | None:
        i = round(x)
        parts = [
            f"{r['name']} (it. {r['iteration']}): {r['spectrum'][i - 1]:.4g}"
            for r in self.shown
            if 1 <= i <= len(r["spectrum"])
        ]
        return f"λ_{i} (nats per step)\n" + "\n".join(parts) if parts else None

    def _describe_iteration(self, x: float) -> str | None:
        parts = []
        for r in self.shown:
            if len(r["iterations"]):
                k = int(np.argmin(np.abs(r["iterations"] - x)))
                parts.append(f"{r['name']}, iteration {int(r['iterations'][k])}: {r['top'][k]:.4g}")
        return "λ_max (nats per step)\n" + "\n".join(parts) if parts else None


class _StreamView(View):
    """A view with a stream chooser (top layer or any stream) above its figure."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.layer_box = layer_combo("Which stream to show (top layer: the top forward stream)")
        self.layer_box.currentIndexChanged.connect(self._layer_changed)
        self.controls.addWidget(QtWidgets.QLabel("Stream:"))
        self.controls.addWidget(self.layer_box)
        self.controls.addStretch(1)

    def _layer_changed(self, *_):
        self.figure.layer = self.layer_box.currentData()
        self.options_changed()

    def update_controls(self, runs: list[RunData]) -> None:
        deepest = max(visible_with_data(runs), key=lambda r: r.layers, default=None)
        if deepest is not None:
            set_layer_choices(self.layer_box, deepest.layers, deepest.streams)

    def signature(self, runs: list[RunData]) -> tuple:
        return super().signature(runs) + (tuple(len(analysis_arrays(r).get("iteration", ())) for r in runs),)


class JacobianView(_StreamView):
    figure_class = JacobianFigure


class LyapunovView(_StreamView):
    figure_class = LyapunovFigure
