"""The Jacobian and Lyapunov views fed synthetic analysis rows: the numbers drawn, NaN / Inf handling, the
empty state, the theory lines, hover text and export."""

import math

import numpy as np
import pytest

from gradscope import theory
from gradscope.config import RunConfig
from gradscope.engine.analysis import AnalysisLog
from gradscope.gui import figures
from gradscope.gui.model import RunData
from gradscope.gui.views import JacobianView, LyapunovView
from gradscope.runs import RunResult

from .conftest import make_trace

T, M = 12, 5


def analysed(key, rate=-0.1, tweak=None, g2=0.64, name=None):
    """A tanh RNN run whose analysis rows at iterations 0, 10, 20 have sigma_max = exp(rate * lag), dW by lag
    = 2^-k and spectrum rate - 0.1 i (+ 0.01 per row)."""
    run = RunConfig(name=name or f"run {key}", activation="tanh", init={"recurrent_scale": g2}, task={"seq_len": T})
    log = AnalysisLog(np.zeros((1, 1, 128)))
    lag = np.arange(T)
    for k in range(3):
        row = {
            "jac_sigma_max": np.exp(rate * lag)[::-1][None].copy(),  # by t: 1 at t = T-1
            "jac_fro": 0.5 * np.exp(rate * lag)[::-1][None],
            "grad_W_hh_by_lag": (2.0 ** -lag.astype(float))[None],
            "lyapunov": (rate - 0.1 * np.arange(M) + 0.01 * k)[None],
        }
        if tweak is not None:
            tweak(k, row)
        log.append(10 * k, row)
    trace = make_trace(activation="tanh", T=T, K=3)
    result = RunResult(name=run.name, run=run, trace=trace, loss_kind="mse", analysis=log)
    return RunData(key, run.name, ["#0072B2", "#D55E00"][key % 2], result=result)


@pytest.fixture
def view(qtbot):
    def make(cls):
        v = cls()
        qtbot.addWidget(v)
        v.resize(1000, 600)
        return v

    return make


def test_jacobian_view_draws_log10_sigma_max_by_lag_and_the_lag_split(view):
    v = view(JacobianView)
    runs = [analysed(0, -0.1), analysed(1, 0.05)]
    assert v.redraw(runs)
    for run, rate in zip(runs, (-0.1, 0.05)):
        x, y = v.figure.jac_curves.data(run.key)
        np.testing.assert_allclose(x, np.arange(T))
        np.testing.assert_allclose(y, rate * np.arange(T) / math.log(10))  # the latest row, by lag
        x, y = v.figure.lag_curves.data(run.key)
        np.testing.assert_allclose(y, -np.arange(T) * math.log10(2))
    assert not v.figure.hint.visible


def test_jacobian_view_theory_lines_are_the_bound_and_the_mean_field_exponent(view):
    v = view(JacobianView)
    run = analysed(0, -0.1, g2=0.64)
    v.redraw([run])
    lag = np.arange(T)
    _, bound = v.figure.theory_curves.data((0, "bound"))
    np.testing.assert_allclose(bound, math.log10(1.1) * lag)  # gamma = 1 for tanh, sigma_max(W_hh) = 1.1
    _, line = v.figure.theory_curves.data((0, "mean field"))
    rt = run.theory
    rate = theory.mean_field_largest_exponent("tanh", 0.64, float(rt.q_in[-1]))
    np.testing.assert_allclose(line, rate / math.log(10) * lag)
    assert "Pascanu bound (gamma sigma_max(W_hh))^lag" in v.figure.legend.labels


def test_jacobian_view_marks_nonfinite_lags_and_hovers_values(view):
    def tweak(k, row):
        row["jac_sigma_max"][0, 3] = np.nan  # t = 3: lag T-1-3 = 8
        row["jac_sigma_max"][0, 2] = np.inf

    v = view(JacobianView)
    v.redraw([analysed(0, -0.1, tweak=tweak)])
    _, y = v.figure.jac_curves.data(0)
    assert np.isnan(y[8]) and np.isnan(y[9]) and np.isfinite(y[7])
    assert sorted(x for x, _ in v.figure.jac_marks.points) == [8.0, 9.0]
    text = v.figure._describe(8.2, "jac")
    assert "lag 8" in text and "NaN" in text
    assert "lag 1" in v.figure._describe(1.0, "jac") and f"{math.exp(-0.1):.4g}" in v.figure._describe(1.0, "jac")


def test_lyapunov_view_draws_the_spectrum_and_lambda_max_over_iterations(view):
    v = view(LyapunovView)
    run = analysed(0, 0.2)
    v.redraw([run])
    x, y = v.figure.spectrum_curves.data(0)
    np.testing.assert_allclose(x, np.arange(1, M + 1))
    np.testing.assert_allclose(y, 0.2 - 0.1 * np.arange(M) + 0.02)  # the latest row (k = 2)
    x, y = v.figure.top_curves.data(0)
    np.testing.assert_allclose(x, [0, 10, 20])
    np.testing.assert_allclose(y, [0.2, 0.21, 0.22])
    (lo, hi) = v.figure.spectrum_plot.getViewBox().viewRange()[1]
    assert lo < min(y) and hi > 0.22
    assert "λ_3" in v.figure._describe_index(3.1) and "0.02" in v.figure._describe_index(3.1)
    assert "iteration 10" in v.figure._describe_iteration(9.0)


def test_lyapunov_view_keeps_nan_spectra_as_gaps_with_marks(view):
    def tweak(k, row):
        row["lyapunov"][0, 1] = np.nan
        row["lyapunov"][0, 3] = -np.inf

    v = view(LyapunovView)
    v.redraw([analysed(0, 0.1, tweak=tweak)])
    _, y = v.figure.spectrum_curves.data(0)
    assert np.isnan(y[1]) and np.isnan(y[3]) and np.isfinite(y[0])
    assert sorted(x for x, _ in v.figure.spectrum_marks.points) == [2.0, 4.0]


def test_views_without_analysis_say_how_to_turn_it_on(view):
    for cls in (JacobianView, LyapunovView):
        v = view(cls)
        plain = RunData(0, "plain", "#000000", make_trace(T=T), run=RunConfig(task={"seq_len": T}))
        v.redraw([plain])
        assert v.figure.hint.visible and "analysis.every" in v.figure.hint.item.textItem.toPlainText()
        assert not figures.shows_something(v.figure.name, [plain])


def test_analysis_figures_are_exported(qapp, tmp_path):
    runs = [analysed(0, -0.1), analysed(1, 0.05)]
    stems = [stem for stem, _w, _f in figures.figure_pages(runs, size=(900, 500))]
    assert "jacobian" in stems and "lyapunov" in stems
    written = figures.render_figures(runs, tmp_path)
    assert (tmp_path / "jacobian.png") in written and (tmp_path / "lyapunov.svg") in written


def units_run(key=0, cell="lstm", T=6, d=3):
    run = RunConfig(name="units", cell=cell, hidden_size=d, task={"seq_len": T})
    G = {"lstm": 4, "gru": 3}.get(cell, 0)
    log = AnalysisLog()
    t = np.arange(T)[:, None]
    row = {
        "unit_h": (0.1 * t + 0.01 * np.arange(d))[None],  # (S, T, d)
        "unit_grad_h": (10.0 ** -(T - 1 - t) * np.ones(d))[None],
    }
    if G:
        row["unit_gates"] = (np.arange(G * d)[None, :] / (G * d) + 0 * t)[None]  # (S, T, G d)
    row["unit_grad_h"][0, 2, 1] = np.nan
    log.append(0, row)
    result = RunResult(name=run.name, run=run, trace=make_trace(cell=cell, T=T, K=1), loss_kind="mse", analysis=log)
    return RunData(key, run.name, "#0072B2", result=result)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_units_view_draws_heatmaps_and_a_units_gate_traces(view, cell):
    from gradscope.gui.views import UnitsView

    v = view(UnitsView)
    run = units_run(cell=cell)
    v.redraw([run])
    h_image = v.figure.images[0].image  # (d, T): units up, time across
    np.testing.assert_allclose(h_image.T, run.result.analysis.rows[0]["unit_h"][0])
    g_image = v.figure.images[1].image
    assert g_image[0, 5] == pytest.approx(0.0) and g_image[0, 0] == pytest.approx(-5.0)  # log10 |dL/dh|
    assert v.figure.bads[1].image[1, 2, 3] == 255 and v.figure.bads[1].image[0, 2, 3] == 0  # NaN: grey
    v.unit_box.setValue(2)
    names = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ("h",)}[cell]
    assert set(v.figure.gate_curves.items) == set(names)
    if cell != "rnn":
        G = len(names)
        _, y = v.figure.gate_curves.data(names[1])
        np.testing.assert_allclose(y, (1 * 3 + 2) / (G * 3))  # gate block 1, unit 2
    assert "unit 1" in v.figure._describe(2.0, 1.0) and "NaN" in v.figure._describe(2.0, 1.0)
    assert "unit 2" in v.figure._describe_gates(3.0)
