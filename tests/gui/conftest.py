"""Synthetic traces with known values, so each view's drawing can be checked number by number."""

import gc

import numpy as np
import pytest

from gradscope.trace import Record, Trace


@pytest.fixture(autouse=True, scope="session")
def _plot_style():
    from gradscope.gui.figures import configure_pyqtgraph

    configure_pyqtgraph()


def grad_values(k: int, l: int, T: int, gain: float = 1.25) -> np.ndarray:
    """(T,) a gradient that grows by `gain` per step back in time, different per row k and layer l."""
    t = np.arange(T)
    return 1e-3 * (k + 1) * (l + 1) * gain ** (T - 1 - t)


def make_trace(cell="rnn", activation="relu", layers=1, T=12, K=4, gain=1.25, tweak=None) -> Trace:
    """A trace of K recorded iterations (0, 10, 20, ...) with every metric the engine records.

    grad_h_norm[k, l] = grad_values(k, l, T); h_norm[k, l, t] = 1 + t + l; gate means and fractions are
    simple functions of t.  ``tweak(k, metrics)`` may edit a row's metrics before it is appended.
    """
    trace = Trace()
    t = np.arange(T, dtype=np.float64)
    for k in range(K):
        m = {
            "grad_h_norm": np.stack([grad_values(k, l, T, gain) for l in range(layers)]),
            "h_norm": np.stack([1.0 + t + l for l in range(layers)]),
            "loss_t": np.where(t == T - 1, 0.5 / (k + 1), 0.0),
            "sigma_max": np.full(layers, 1.1),
            "spectral_radius": np.full(layers, 1.0),
        }
        if cell == "lstm":
            m["c_norm"] = m["h_norm"] * 2
            m["grad_c_norm"] = m["grad_h_norm"] / 2
            for i, g in enumerate("ifgo"):
                m[f"gate_{g}_mean"] = np.stack([np.full(T, 0.1 * (i + 1)) + 0.01 * l for l in range(layers)])
                m[f"gate_{g}_sat"] = np.stack([t / (T * (i + 2)) for _ in range(layers)])
        else:
            name = {"relu": "relu_dead", "tanh": "tanh_sat", "sigmoid": "sigmoid_sat"}.get(activation)
            if name:
                m[name] = np.stack([t / T + 0.01 * l for l in range(layers)])
        nonfinite = None
        if tweak is not None:
            nonfinite = tweak(k, m)
        trace.append(
            Record(
                iteration=10 * k, loss=0.5 / (k + 1), grad_norm=2.0**-k, clipped=False, metrics=m, nonfinite=nonfinite
            )
        )
    return trace


@pytest.fixture
def trace_factory():
    return make_trace


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path, monkeypatch):
    """The app records every run under Qt's AppDataLocation (gui/session.py): a test's own, never the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture(autouse=True)
def _garbage_collected_between_tests():
    """After pytest-qt has closed a test's widgets, collect what the test left unreachable, here, where no
    paint is running: a collection that falls inside a later test's paint event could delete the items of a
    widget Qt is painting (a segfault in a full-suite run, once: a Log10Axis deleted under its view's paint)."""
    yield
    gc.collect()
