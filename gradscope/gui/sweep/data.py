"""What the Sweep tab draws, Qt-free: a sweep's points and the rows finished so far, aggregated over seeds, and
the mean-field lines to draw over them (computed once, off the GUI thread, by ``SweepData.compute_theory``).

    data = SweepData.from_folder("out/phase")          # experiment.toml + sweep.csv of a sweep folder
    data = SweepData(experiment)                       # a sweep about to run: rows arrive with add_row(row)
    data.compute_theory()                              # the mean-field curve / the critical line (seconds)
    lines = data.theory_lines(); data.set_lines(lines)  # the same, computed in one thread and kept in another
    data.curve(run)    -> (x, mean, spread, n)         # one swept key: per value, over seeds
    data.grid(run)     -> (mean (ny, nx), counts)      # two keys: per cell, over seeds
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ... import config, theory
from ...config.sweep import with_values
from ...sweep import TABLE, read_table
from ...sweep.table import KEPT, number

THEORY_POINTS = 61  # samples of the mean-field curve / the critical line between the sweep's extreme values
RECURRENT = "init.recurrent_scale"


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


class SweepData:
    """A sweep's definition (its experiment with a [sweep] table) and the rows finished so far."""

    def __init__(self, experiment, folder: Path | None = None):
        if experiment.sweep is None:
            raise ValueError(f"{experiment.source or experiment.name}: the experiment has no [sweep] table")
        self.experiment = experiment
        self.folder = folder
        self.keys = list(experiment.sweep.keys)
        self.values = [list(v) for v in experiment.sweep.keys.values()]
        self.runs = [r.name for r in experiment.runs]
        self.total = len(config.sweep_points(experiment))
        self.rows: dict[str, dict[str, str]] = {}  # point -> row (text by column)
        self.lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # run -> (x, y) of its theory line
        self.version = 0  # bumped by every change: the figure redraws when it moved

    @classmethod
    def from_folder(cls, folder) -> SweepData:
        folder = Path(folder)
        if not (folder / TABLE).exists() or not (folder / "experiment.toml").exists():
            raise FileNotFoundError(f"{folder}: no sweep.csv and experiment.toml; not a GradScope sweep folder")
        data = cls(config.load(folder / "experiment.toml", check_tasks=False), folder)
        for row in read_table(folder / TABLE)[1]:
            data.add_row(row)
        return data

    @property
    def dims(self) -> int:
        return len(self.keys)

    def add_row(self, row: dict[str, str]) -> None:
        self.rows[row["point"]] = row
        self.version += 1

    def counts(self) -> tuple[int, int]:
        """(points finished and kept, points failed)."""
        kept = sum(r["status"] in KEPT for r in self.rows.values())
        return kept, len(self.rows) - kept

    def _index(self, key_index: int, text: str) -> int | None:
        """The position of a row's text among the key's values (they are written as table.py writes them)."""
        from ...sweep.table import _text

        for i, value in enumerate(self.values[key_index]):
            if _text(value) == text:
                return i
        return None

    def quantities(self) -> list[str]:
        """The columns a heatmap can show: the log gain per step, and lambda_max once a row has one."""
        has_lyapunov = any(r.get("lyapunov_max") not in ("", None) for r in self.rows.values())
        return ["log_gain_per_step"] + (["lyapunov_max"] if has_lyapunov else [])

    def _gains(self, run: str, column: str = "log_gain_per_step"):
        """(position tuple, value of ``column``) of each kept row of ``run`` where it is finite."""
        for row in self.rows.values():
            if row["run"] != run or row["status"] not in KEPT:
                continue
            where = tuple(self._index(k, row[key]) for k, key in enumerate(self.keys))
            gain = number(row[column])
            if None not in where and math.isfinite(gain):
                yield where, gain

    def curve(self, run: str):
        """One key: (x values, mean over seeds, standard deviation over seeds, seeds counted), NaN where no seed
        finished yet.  x is the values themselves when numeric, else their positions."""
        n = len(self.values[0])
        by = [[] for _ in range(n)]
        for (i, *_), gain in self._gains(run):
            by[i].append(gain)
        x = np.array(self.values[0], dtype=float) if _numeric(self.values[0]) else np.arange(n, dtype=float)
        mean = np.array([np.mean(g) if g else np.nan for g in by])  # (n,)
        spread = np.array([np.std(g, ddof=1) if len(g) > 1 else (0.0 if g else np.nan) for g in by])  # (n,)
        return x, mean, spread, np.array([len(g) for g in by])

    def grid(self, run: str, column: str = "log_gain_per_step"):
        """Two keys: (mean log gain per cell (ny, nx) with NaN where none finished, seeds per cell (ny, nx)).
        x is the first key, y the second."""
        nx, ny = len(self.values[0]), len(self.values[1])
        total = np.zeros((ny, nx))
        count = np.zeros((ny, nx), dtype=int)
        for (i, j, *_), gain in self._gains(run, column):
            total[j, i] += gain
            count[j, i] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan), count

    # ------------------------------------------------------------------------------------------ theory
    def compute_theory(self) -> None:
        """theory_lines(), kept (for a thread that owns the data: loading a folder)."""
        self.set_lines(self.theory_lines())

    def set_lines(self, lines: dict) -> None:
        self.lines = dict(lines)
        self.version += 1

    def theory_lines(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The mean-field lines of every run: for one key the predicted log gain over the key's range; for two
        keys with init.recurrent_scale among them, the critical line (the recurrent scale where chi_1 = 1)
        over the other key's range.  Seconds for a tanh sweep (a fixed point per sample): call it off the GUI
        thread.  Runs and keys without theory get no line."""
        lines = {}
        for base in self.experiment.runs:
            line = self._theory_line(base)
            if line is not None:
                lines[base.name] = line
        return lines

    def _theory_line(self, base):
        numeric = [_numeric(v) for v in self.values]
        if self.dims == 1 and numeric[0]:
            xs = np.linspace(min(self.values[0]), max(self.values[0]), THEORY_POINTS)
            ys = [self._predict(base, [self.keys[0]], [float(x)]) for x in xs]
        elif self.dims == 2 and RECURRENT in self.keys and all(numeric):
            other = 1 - self.keys.index(RECURRENT)
            xs = np.linspace(min(self.values[other]), max(self.values[other]), THEORY_POINTS)
            ys = [self._critical(base, self.keys[other], float(x)) for x in xs]
        else:
            return None
        y = np.array([np.nan if v is None else v for v in ys], dtype=float)
        return (xs, y) if np.any(np.isfinite(y)) else None

    @staticmethod
    def _predict(base, keys, values):
        try:
            return theory.predicted_log_gain(with_values(base, keys, values))
        except (ValueError, ArithmeticError, RuntimeError):  # a value the run refuses, or no fixed point
            return None

    @staticmethod
    def _critical(base, key, value):
        try:
            return theory.critical_recurrent_scale(with_values(base, [key], [value]))
        except (ValueError, ArithmeticError, RuntimeError):
            return None

    def position(self, key_index: int, value: float) -> float:
        """Where a value of a key falls on the heatmap's axis, whose cells sit at 0, 1, ... (the values in
        order): piecewise linear between the swept values, so uneven grids still read right."""
        values = np.array(self.values[key_index], dtype=float)
        order = np.argsort(values)
        return float(np.interp(value, values[order], np.arange(len(values), dtype=float)[order]))


__all__ = ["SweepData", "RECURRENT"]
