"""One description per cell: what the engine, the config, the views, the run editor and the tests know of it.

A cell is one unit of the engine: its forward rule and its backward rule side by side in ``cells/<name>.py``
(Numba kernels), its NumPy twin in ``reference``.  Everything else asks this registry instead of comparing
``cell == "lstm"``:

    from gradscope.engine.cells import CELLS, cell
    cell("lstm").gates            # ("i", "f", "g", "o"): row blocks of W_hh, W_hx, b_h, in this order
    cell("lstm").blocks           # 4 (G): W_hh is (G d, d)
    cell("lstm").states           # ("h", "c"): what a step carries to the next
    cell("rnn").step_metrics("relu")      # the (L, T) metrics a pass records
    cell("lstm").applies("init.forget_bias")   # config keys that mean something for this cell only
    cell("gru").parameters        # ("W_hx", "W_hh", "b_h", "b_hh"): a layer's arrays

Importing this module imports neither Numba nor NumPy: the config, the CLI and the app read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

# The names as types (for the config's fields and mypy) and as tuples (for messages and loops): one source.
Activation = Literal["relu", "tanh", "sigmoid", "linear"]
ACTIVATIONS: tuple[Activation, ...] = get_args(Activation)
CellName = Literal["rnn", "lstm", "gru"]  # the registry's keys, in its order (CELLS below)
ACTIVATION_METRIC = {"relu": "relu_dead", "tanh": "tanh_sat", "sigmoid": "sigmoid_sat", "linear": None}


@dataclass(frozen=True)
class Cell:
    """A recurrent cell as the rest of GradScope sees it."""

    name: str  # the config's ``cell`` value
    title: str  # for people: legends, menus, docs
    gates: tuple[str, ...]  # named row blocks of W_hh (empty: one block, no gates)
    states: tuple[str, ...]  # carried from step to step, h first
    parameters: tuple[str, ...]  # a layer's arrays, in Params.named() order
    own_keys: tuple[str, ...]  # config keys that apply to this cell only
    uses_activation: bool = False  # ``activation`` chooses f (the plain RNN)
    gate_kinds: dict[str, str] = field(default_factory=dict)  # gate -> "sigmoid" | "tanh"
    # work buffers the cell's kernels need besides H (L, T, B, d), as shapes in the symbols L, T, B, d, Gd
    # and chunk (steps of a backward chunk); the driver (engine/driver.py) makes them, and passes the ones a
    # cell does not list empty (carry defaults to (L, B, d))
    buffers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    kernels: str = ""  # module of the Numba kernels, e.g. gradscope.engine.cells.lstm
    twin: str = ""  # module of the NumPy twin, e.g. gradscope.engine.reference.lstm
    trace_format: int = 1  # the exported folder's format_version a run of this cell needs
    # derived in __post_init__, not arguments: no part of the description's identity (repr, ==, hash)
    _rows: dict[str, int] = field(init=False, repr=False, compare=False)
    _metrics: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        # derived once: the engine asks for them on every pass
        object.__setattr__(self, "_rows", self._metric_rows())
        object.__setattr__(self, "_metrics", {a: self._step_metrics(a) for a in ACTIVATIONS})

    @property
    def blocks(self) -> int:
        """G: row blocks of W_hh (G d, d), W_hx (G d, n) and b_h (G d,)."""
        return max(1, len(self.gates))

    @property
    def state_size_factor(self) -> int:
        """The step map's state is this many d-vectors: s_t = h_t, or (h_t, c_t) for the LSTM."""
        return len(self.states)

    def gate_metrics(self) -> tuple[str, ...]:
        """gate_<g>_mean and gate_<g>_sat for every gate, means first."""
        return tuple(f"gate_{g}_mean" for g in self.gates) + tuple(f"gate_{g}_sat" for g in self.gates)

    def step_metrics(self, activation: str = "relu") -> tuple[str, ...]:
        """Names of the (L, T) metrics one pass records, forward ones first (docs/metrics.md)."""
        if activation in self._metrics:
            return self._metrics[activation]
        return self._step_metrics(activation)

    def _step_metrics(self, activation: str) -> tuple[str, ...]:
        forward = tuple(f"{s}_norm" for s in self.states)
        if self.uses_activation:
            metric = ACTIVATION_METRIC[activation]
            forward += (metric,) if metric else ()
        forward += self.gate_metrics()
        return forward + tuple(f"grad_{s}_norm" for s in self.states)

    def metric_rows(self) -> dict[str, int]:
        """Row of each per-timestep metric in the block (rows, T) a layer's kernels fill: the forward rows
        first (state norms, the activation's metric, gate means and saturations), then the gradient norms.
        The plain RNN keeps one row for its activation's metric whichever it is (none for linear)."""
        return self._rows

    def _metric_rows(self) -> dict[str, int]:
        names = [f"{s}_norm" for s in self.states]
        rows = {name: r for r, name in enumerate(names)}
        r = len(rows)
        if self.uses_activation:
            rows.update({m: r for m in ACTIVATION_METRIC.values() if m})
            r += 1
        for name in self.gate_metrics():
            rows[name] = r
            r += 1
        for s in self.states:
            rows[f"grad_{s}_norm"] = r
            r += 1
        return rows

    @property
    def metric_row_count(self) -> int:
        """Rows of the metric block: forward rows, then one gradient norm per state."""
        return max(self._rows.values()) + 1

    @property
    def forward_row_count(self) -> int:
        """Rows the forward kernel fills (the first ones of the block)."""
        return self.metric_row_count - len(self.states)

    @property
    def has_b_hh(self) -> bool:
        """A second bias inside the recurrent product (the GRU's b_hh: n uses r * (W_hh h + b_hh)_n)."""
        return "b_hh" in self.parameters

    def applies(self, key: str) -> bool:
        """Whether a config key that belongs to some cell means something for this one."""
        if key == "activation":
            return self.uses_activation
        return key not in CELL_KEYS or key in self.own_keys

    def label(self, activation: str = "relu") -> str:
        """Short name of a model: ``rnn-relu``, ``lstm``."""
        return f"{self.name}-{activation}" if self.uses_activation else self.name


RNN = Cell(
    name="rnn",
    title="RNN",
    gates=(),
    states=("h",),
    parameters=("W_hx", "W_hh", "b_h"),
    own_keys=("activation",),
    uses_activation=True,
    buffers={"dZ": ("chunk", "B", "d")},  # dz_t of a backward chunk
    kernels=f"{__name__}.rnn",
    twin="gradscope.engine.reference.rnn",
)
LSTM = Cell(
    name="lstm",
    title="LSTM",
    gates=("i", "f", "g", "o"),
    states=("h", "c"),
    parameters=("W_hx", "W_hh", "b_h"),
    own_keys=("init.forget_bias", "init.chrono", "init.chrono_tmax"),
    gate_kinds={"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid"},
    buffers={
        "S": ("L", "T", "B", "d"),  # cell states c_t
        "A": ("L", "T", "B", "Gd"),  # gates i, f, g, o, then dz_t in place
        "zero": ("B", "d"),
    },  # c_{-1} = 0
    kernels=f"{__name__}.lstm",
    twin="gradscope.engine.reference.lstm",
)
GRU = Cell(
    name="gru",
    title="GRU",
    gates=("r", "z", "n"),
    states=("h",),
    parameters=("W_hx", "W_hh", "b_h", "b_hh"),
    own_keys=(),
    gate_kinds={"r": "sigmoid", "z": "sigmoid", "n": "tanh"},
    buffers={
        "S": ("L", "T", "B", "d"),  # u_n, then g_t z_t (what step t-1 needs)
        "A": ("L", "T", "B", "Gd"),  # gates r, z, n, then dL/da_t in place
        "zero": ("B", "d"),  # h_{-1} = 0
        "U": ("B", "Gd"),  # W_hh h_{t-1} + b_hh of one step
        "dZ": ("chunk", "B", "Gd"),  # dL/du_t of a backward chunk
        "carry": ("L", "B", "Gd"),
    },  # du_{t0}, for the chunk before
    kernels=f"{__name__}.gru",
    twin="gradscope.engine.reference.gru",
    trace_format=2,
)

CELLS: dict[str, Cell] = {c.name: c for c in (RNN, LSTM, GRU)}
CELL_NAMES: tuple[CellName, ...] = get_args(CellName)
CELL_KEYS = frozenset(k for c in CELLS.values() for k in c.own_keys)  # keys some cell owns


def cell(name: str) -> Cell:
    """The description of the cell called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"cell must be one of {CELL_NAMES}, got {name!r}") from None


__all__ = [
    "Cell",
    "CELLS",
    "CELL_NAMES",
    "CellName",
    "CELL_KEYS",
    "cell",
    "ACTIVATIONS",
    "Activation",
    "ACTIVATION_METRIC",
]
