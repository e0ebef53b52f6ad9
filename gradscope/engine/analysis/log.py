"""A run's analysed iterations, kept whole (a few (S, T) rows each: no thinning), as analysis.npz's arrays."""

from __future__ import annotations

import numpy as np

# analysis.npz (docs/trace_format.md): the per-iteration keys, then the per-run one
ANALYSIS_KEYS = ("iteration", "jac_sigma_max", "jac_fro", "lyapunov", "grad_W_hh_by_lag")
# units.npz (GradScope's addition, docs/trace_format.md): one example's units at the analysed iterations
UNIT_KEYS = ("unit_h", "unit_grad_h", "unit_gates")


class AnalysisLog:
    """Rows of ``analyse`` by iteration, plus the exponents' initial states (``h0``, (S, examples, D))."""

    def __init__(self, h0: np.ndarray | None = None):
        self.h0 = h0
        self.iterations: list[int] = []
        self.rows: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, iteration: int, row: dict[str, np.ndarray]) -> None:
        self.iterations.append(int(iteration))
        self.rows.append(row)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """iteration (Ka,), each row key stacked (Ka, S, .), and lyapunov_h0 when the exponents were measured."""
        out: dict[str, np.ndarray] = {"iteration": np.asarray(self.iterations, dtype=np.int64)}
        for key in ANALYSIS_KEYS[1:]:
            if self.rows and key in self.rows[0]:
                out[key] = np.stack([np.asarray(r[key], dtype=np.float64) for r in self.rows])
        if "lyapunov" in out and self.h0 is not None:
            out["lyapunov_h0"] = np.asarray(self.h0, dtype=np.float64)
        return out

    def unit_arrays(self) -> dict[str, np.ndarray]:
        """units.npz: iteration (Ka,), unit_h, unit_grad_h (Ka, S, T, d), unit_gates (Ka, S, T, G d); {} without."""
        if not self.rows or "unit_h" not in self.rows[0]:
            return {}
        out: dict[str, np.ndarray] = {"iteration": np.asarray(self.iterations, dtype=np.int64)}
        for key in UNIT_KEYS:
            if key in self.rows[0]:
                out[key] = np.stack([np.asarray(r[key], dtype=np.float64) for r in self.rows])
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], units: dict[str, np.ndarray] | None = None) -> AnalysisLog:
        """From analysis.npz's arrays (and units.npz's, when there is one, for the same iterations)."""
        log = cls(arrays.get("lyapunov_h0"))
        if units and "iteration" in units and np.array_equal(units["iteration"], arrays["iteration"]):
            arrays = dict(arrays) | {k: units[k] for k in UNIT_KEYS if k in units}
        keys = [k for k in ANALYSIS_KEYS[1:] + UNIT_KEYS if k in arrays]
        for k, iteration in enumerate(np.asarray(arrays["iteration"]).tolist()):
            log.append(iteration, {key: np.asarray(arrays[key][k]) for key in keys})
        return log
