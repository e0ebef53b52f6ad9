"""Axes of the views: log10 values on linear axes whose ticks read 10^k, and whole-number iteration axes.

Every norm is drawn as log10(value) on a LINEAR axis (pyqtgraph's own log mode shifts curves in SVG export,
pyqtgraph#2941), so hover values, theory lines and exported figures share one coordinate system.
"""

from __future__ import annotations

import math

import pyqtgraph as pg

_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def decade_label(exponent: int) -> str:
    """10^k written with superscripts, e.g. 10⁻³."""
    return "10" + str(exponent).translate(_SUPERSCRIPT)


def value_label(value: float) -> str:
    """A compact readout of a value: 4 significant digits, NaN / Inf spelled out."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"


def log_ticks(lo: float, hi: float, pixels: float) -> list[tuple[float, list[float]]]:
    """Tick levels for log10 data between lo and hi, as pyqtgraph's [(spacing, values), ...].

    Over two decades or more: decades (every 2nd, 5th... when crowded), plus unlabelled 2..9 multiples when
    there is room.  Over less: 1, 2, 5 (or 1..9) times the decades, all labelled, so an axis never shows a
    single number.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    span = hi - lo
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    if span < 2:
        per_decade = pixels / span
        for multiples in ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 5), (1, 3), (1,)):
            values = [d + math.log10(m) for d in decades for m in multiples]
            values = [v for v in values if lo <= v <= hi]
            # the closest two labels (8 and 9, or 2 and 2.5 ...) need a label's height between them
            ratios = [b / a for a, b in zip(multiples, multiples[1:] + (10,))]
            if math.log10(min(ratios)) * per_decade >= 18 and len(values) >= 2:
                return [(1.0, values)]
        return [(1.0, values)]
    max_major = max(2, int(pixels / 38))
    step = next(
        (s for s in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000) if span / s <= max_major), math.ceil(span / max_major)
    )
    majors = [float(k) for k in range(math.ceil(lo / step) * step, math.floor(hi) + 1, step)]
    levels = [(float(step), majors)]
    if step == 1 and pixels / span > 55:
        minors = [d + math.log10(m) for d in decades for m in range(2, 10)]
        levels.append((0.1, [v for v in minors if lo <= v <= hi]))
    return levels


class Log10Axis(pg.AxisItem):
    """An axis for data plotted as log10(value): ticks at decades, labelled 10^k."""

    def __init__(self, orientation: str, **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)
        self._spacing = 1.0

    def tickValues(self, minVal, maxVal, size):  # Qt-style name: pyqtgraph override
        levels = log_ticks(min(minVal, maxVal), max(minVal, maxVal), size)
        if levels:
            self._spacing = levels[0][0]
        return levels

    def tickStrings(self, values, scale, spacing):  # pyqtgraph override
        if spacing < 1 and self._spacing >= 1:  # minor ticks of a decade scale: unlabelled
            return ["" for _ in values]
        decades = all(abs(v - round(v)) < 1e-9 for v in values)
        # whole decades read 10^k; a short axis with 2x, 5x ticks reads plain numbers (1, 2, 5, 10, ...)
        return [decade_label(round(v)) if decades else value_label(10.0**v) for v in values]


class IterationAxis(pg.AxisItem):
    """An axis of training iterations (or other counts): ticks at whole numbers only, never an SI prefix.

    pyqtgraph's default axis put "(x0.001)" on a one-row waterfall and ticks at 0.2, 0.4 ... on a training plot
    of a single iteration; an iteration is a whole number.
    """

    def __init__(self, orientation: str, **kwargs):
        super().__init__(orientation, **kwargs)
        self.enableAutoSIPrefix(False)
        self.limits: tuple[float, float] | None = None  # no ticks outside (e.g. the recorded iterations)
        self.marks: list[float] | None = None  # ticks exactly here (a few recorded rows)

    def set_marks(self, limits: tuple[float, float] | None, marks: list[float] | None = None) -> None:
        """Ticks only within ``limits``; with ``marks``, exactly at those values (when there is room)."""
        if (limits, marks) != (self.limits, self.marks):
            self.limits, self.marks = limits, marks
            self.picture = None  # pyqtgraph's cached drawing of the axis
            self.update()

    def tickValues(self, minVal, maxVal, size):  # pyqtgraph override
        lo, hi = sorted((minVal, maxVal))
        if self.limits is not None:
            lo, hi = max(lo, self.limits[0]), min(hi, self.limits[1])
        if self.marks is not None and len(self.marks) * 30 <= size:
            return [(1.0, [float(v) for v in self.marks if lo - 1e-9 <= v <= hi + 1e-9])]
        levels = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            if spacing < 1:
                continue
            whole = [v for v in values if abs(v - round(v)) < 1e-9 and lo - 1e-9 <= v <= hi + 1e-9]
            if whole:
                levels.append((spacing, whole))
        if not levels and math.isfinite(lo) and math.isfinite(hi) and math.ceil(lo) <= math.floor(hi):
            levels = [(1.0, [float(k) for k in range(math.ceil(lo), math.floor(hi) + 1)][:50])]
        return levels

    def tickStrings(self, values, scale, spacing):  # pyqtgraph override
        return [f"{round(v)}" for v in values]
