"""Colours, pens and sizes shared by every view (a light theme, also used for exported figures).

Run colours are the Okabe & Ito (2008) colour-blind-safe palette, ordered for contrast on white (its yellow
last: it is faint on white).  Layers of one run use samples of the perceptually uniform, colour-blind-safe
'cividis' map; the waterfall uses 'viridis'.
"""

from __future__ import annotations

RUN_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
BACKGROUND = "#FFFFFF"
FOREGROUND = "#202020"
GRID_ALPHA = 0.25
NONFINITE_COLOR = "#9E9E9E"  # waterfall cells and curve markers for NaN / Inf (viridis has no greys)
HEATMAP = "viridis"
LAYER_MAP = "cividis"
CURVE_WIDTH = 2.0
THEORY_WIDTH = 1.5
FONT_POINT_SIZE = 10

# LSTM gates: one line style each (colours stay with runs)
# a line style per gate, by its place in the cell's description: i, f, g, o (LSTM); r, z, n (GRU)
LINE_STYLES = ("solid", "dash", "dot", "dashdot")


def gate_style(cell, gate: str) -> str:
    """The line style of a gate of this cell (engine.cells.Cell), the same in every view and legend."""
    return LINE_STYLES[cell.gates.index(gate) % len(LINE_STYLES)]


def run_color(index: int) -> str:
    """The colour of the index-th run: the palette, then repeated (runs also differ by name in the legend)."""
    return RUN_COLORS[index % len(RUN_COLORS)]
