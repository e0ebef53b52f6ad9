"""Each view fed synthetic traces: the numbers drawn, the log levels, NaN / Inf handling, empty states, hover."""

import math

import numpy as np
import pytest

from gradscope import theory
from gradscope.config import RunConfig
from gradscope.gui import axes, plotting
from gradscope.gui.model import RunData
from gradscope.gui.views import LayersView, ProfileView, SaturationView, TrainingView, WaterfallView

from .conftest import grad_values, make_trace


def append_first_row_scaled(trace, iteration: int, factor: float) -> None:
    """A new record: the trace's first row of per-timestep metrics times ``factor``, at ``iteration``."""
    from gradscope.trace import Record

    skip = ("iteration", "loss", "grad_norm", "clipped")
    metrics = {n: trace.array(n)[0] * factor for n in trace.names if n not in skip}
    trace.append(Record(iteration=iteration, loss=1.0, grad_norm=1.0, metrics=metrics))


def run_data(key, trace, name=None, color="#0072B2", **kw):
    return RunData(key, name or f"run {key}", color, trace, **kw)


def shown(curves, key):
    data = curves.data(key)
    assert data is not None, f"no curve {key!r} drawn"
    return data


@pytest.fixture
def view(qtbot, request):
    def make(cls):
        v = cls()
        qtbot.addWidget(v)
        v.resize(1000, 600)
        return v

    return make


# ----------------------------------------------------------------------------------------- log axes
def test_log_axis_labels_decades_with_superscripts(qapp):
    axis = axes.Log10Axis("left")
    levels = axis.tickValues(-3.2, 1.5, 400)
    assert levels[0][1] == [-3.0, -2.0, -1.0, 0.0, 1.0]
    assert axis.tickStrings(levels[0][1], 1, levels[0][0]) == ["10⁻³", "10⁻²", "10⁻¹", "10⁰", "10¹"]
    minor = levels[1]
    assert minor[0] < 1 and any(abs(v - (math.log10(2) - 3)) < 1e-12 for v in minor[1])  # the 2 of 2e-3
    assert set(axis.tickStrings(minor[1], 1, minor[0])) == {""}


def test_log_axis_thins_decades_when_crowded_and_labels_short_spans_in_plain_numbers(qapp):
    levels = axes.log_ticks(-60, 40, 200)  # 100 decades in 200 px: every 20th
    assert levels[0][0] == 20 and levels[0][1] == [-60, -40, -20, 0, 20, 40]
    fine = axes.log_ticks(-0.5, 0.8, 600)  # 0.32 .. 6.3: 1, 2, ... 9 times the decades
    values = [10**v for v in fine[0][1]]
    assert values == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 2, 3, 4, 5, 6])
    axis = axes.Log10Axis("left")
    axis.tickValues(-0.5, 0.8, 600)
    assert axis.tickStrings(fine[0][1][5:8], 1, 1.0) == ["0.9", "1", "2"]
    # in 300 px, 0.8 and 0.9 would be 6 px apart: 1, 2, 5 times the decades instead
    coarse = [10**v for v in axes.log_ticks(-0.5, 0.8, 300)[0][1]]
    assert coarse == pytest.approx([0.5, 1, 2, 5])


def test_log10_or_nan_turns_zero_negative_and_nonfinite_into_gaps():
    from gradscope.gui.model import log10_or_nan

    out = log10_or_nan([100.0, 0.0, -1.0, np.nan, np.inf, 1e-300])
    assert out[0] == 2.0 and out[5] == pytest.approx(-300)
    assert np.isnan(out[1:5]).all()


# ------------------------------------------------------------------------------------ through time
def test_profile_draws_log10_of_the_latest_row_for_each_visible_run(view):
    v = view(ProfileView)
    a, b = make_trace(T=12, K=4), make_trace(activation="tanh", T=12, K=2)
    runs = [run_data(0, a, "A"), run_data(1, b, "B", color="#D55E00"), run_data(2, make_trace(), "C")]
    runs[2].visible = False
    assert v.redraw(runs)
    fig = v.figure
    t, y = shown(fig.grad_curves, (0, "grad_h_norm"))
    assert t == pytest.approx(np.arange(12))
    assert y == pytest.approx(np.log10(grad_values(3, 0, 12)))  # latest row, k = 3
    _, y = shown(fig.grad_curves, (1, "grad_h_norm"))
    assert y == pytest.approx(np.log10(grad_values(1, 0, 12)))
    _, y = shown(fig.state_curves, (0, "h_norm"))
    assert y == pytest.approx(np.log10(1.0 + np.arange(12)))
    assert fig.grad_curves.data((2, "grad_h_norm")) is None  # hidden run: not drawn
    assert fig.grad_curves.items[(0, "grad_h_norm")].opts["pen"].color().name() == "#0072b2"
    assert not fig.hint.visible
    assert not v.redraw(runs)  # nothing changed: no redraw
    runs[1].visible = False
    assert v.redraw(runs)
    assert fig.grad_curves.data((1, "grad_h_norm")) is None
    assert v.redraw(runs[:1]) and (1, "grad_h_norm") not in fig.grad_curves.items


def test_profile_iteration_slider_shows_an_older_row(view):
    v = view(ProfileView)
    runs = [run_data(0, make_trace(K=4))]
    v.redraw(runs)
    assert v.row_slider.maximum() == 3 and v.row_label.text() == "latest"
    v.row_slider.setValue(1)
    _, y = shown(v.figure.grad_curves, (0, "grad_h_norm"))
    assert y == pytest.approx(np.log10(grad_values(1, 0, 12)))
    assert v.row_label.text() == "10"  # iteration of row 1


def test_profile_marks_nan_and_inf_and_leaves_gaps(view):
    def tweak(k, m):
        if k == 3:
            m["grad_h_norm"][0, :3] = np.nan
            m["grad_h_norm"][0, 3] = np.inf
            m["grad_h_norm"][0, 4] = 0.0  # underflow: a gap, not a non-finite mark
        return None

    v = view(ProfileView)
    v.redraw([run_data(0, make_trace(tweak=tweak))])
    _, y = shown(v.figure.grad_curves, (0, "grad_h_norm"))
    assert np.isnan(y[:5]).all() and np.isfinite(y[5:]).all()
    marks = v.figure.grad_marks
    assert sorted(x for x, _ in marks.points) == [0, 1, 2, 3]
    y_top = marks.item.data["y"][0]
    assert y_top > np.nanmax(y)  # above every finite value


def test_profile_layer_choice_and_lstm_cell_curves(view):
    v = view(ProfileView)
    run = run_data(0, make_trace(cell="lstm", layers=3))
    v.redraw([run])
    assert v.layer_box.count() == 4  # top layer + 3 layers
    _, y = shown(v.figure.grad_curves, (0, "grad_h_norm"))
    assert y == pytest.approx(np.log10(grad_values(3, 2, 12)))  # default: top layer
    _, yc = shown(v.figure.grad_curves, (0, "grad_c_norm"))
    assert yc == pytest.approx(np.log10(grad_values(3, 2, 12) / 2))
    v.layer_box.setCurrentIndex(v.layer_box.findData(0))
    _, y = shown(v.figure.grad_curves, (0, "grad_h_norm"))
    assert y == pytest.approx(np.log10(grad_values(3, 0, 12)))
    _, yc = shown(v.figure.state_curves, (0, "c_norm"))
    assert yc == pytest.approx(np.log10(2 * (1.0 + np.arange(12))))


def _relu_run(c=3.0, T=12, layers=1):
    return RunConfig.model_validate(
        {
            "name": "relu",
            "activation": "relu",
            "hidden_size": 16,
            "layers": layers,
            "init": {"recurrent_scale": c},
            "task": {"seq_len": T},
        }
    )


def test_profile_theory_lines_are_anchored_at_the_last_scored_step(view):
    T, a = 12, 8
    mask = np.zeros((T, 2))
    mask[a] = 1  # scored at step 8, not the last
    run = run_data(0, make_trace(T=T), run=_relu_run(3.0, T), first_batch={"mask": mask})
    v = view(ProfileView)
    v.set_overlay("pascanu", True)
    v.redraw([run])
    # the latest row is iteration 30: the Pascanu bound (of that W_hh) but no mean field (initial weights only)
    latest = grad_values(3, 0, T)
    _, pb = shown(v.figure.theory_curves, (0, "pascanu"))
    assert pb == pytest.approx(theory.pascanu_line("relu", 1.1, T, a, latest[a]), nan_ok=True)
    assert v.figure.theory_curves.data((0, "relu")) is None
    v.row_slider.setValue(0)  # iteration 0: the initial weights
    measured = grad_values(0, 0, T)
    _, mf = shown(v.figure.theory_curves, (0, "relu"))
    assert mf == pytest.approx(theory.relu_line(3.0, T, a, measured[a]), nan_ok=True)
    assert mf[a] == pytest.approx(math.log10(measured[a])) and np.isnan(mf[a + 1 :]).all()
    assert mf[0] - mf[1] == pytest.approx(0.5 * math.log10(1.5))  # sqrt(c/2) per step
    assert "mean field (iteration 0)" in v.figure.legend.labels
    v.set_overlay("relu", False)
    assert v.figure.theory_curves.data((0, "relu")) is None
    assert v.overlay_boxes["relu"].isChecked() is False
    v.overlay_actions["pascanu"].setChecked(False)  # the View menu's action
    assert v.figure.theory_curves.data((0, "pascanu")) is None


def test_profile_theory_only_for_the_top_layer_and_not_for_lstm(view):
    v = view(ProfileView)
    stacked = run_data(0, make_trace(layers=2, K=1), run=_relu_run(layers=2))
    lstm_cfg = RunConfig.model_validate({"name": "l", "cell": "lstm", "hidden_size": 8, "task": {"seq_len": 12}})
    lstm = run_data(1, make_trace(cell="lstm"), run=lstm_cfg)
    v.redraw([stacked, lstm])
    assert set(v.figure.theory_curves.items) == {(0, "relu")}
    v.layer_box.setCurrentIndex(v.layer_box.findData(0))
    assert not v.figure.theory_curves.items


def test_profile_hover_reads_exact_values(view, qtbot):
    v = view(ProfileView)
    with qtbot.waitExposed(v):
        v.show()
    v.redraw([run_data(0, make_trace(), "relu 3/n")])
    readout = v.figure.readouts[0]
    vb = v.figure.grad_plot.getViewBox()
    qtbot.waitUntil(lambda: vb.viewRange()[0][0] <= 0 and vb.viewRange()[0][1] >= 11)  # auto-range applied
    y = math.log10(grad_values(3, 0, 12)[5])
    readout.hover(vb.mapViewToScene(plotting.QtCore.QPointF(5.2, y)))
    text = readout.text
    assert "t = 5" in text and "relu 3/n" in text
    assert axes.value_label(grad_values(3, 0, 12)[5]) in text
    # new data arrives while the mouse rests: the readout follows what is drawn
    trace = v._runs[0].trace
    append_first_row_scaled(trace, iteration=99, factor=1000)
    v.redraw(v._runs)
    assert "iteration 99" in readout.text
    assert axes.value_label(1000 * grad_values(0, 0, 12)[5]) in readout.text
    readout.hover(plotting.QtCore.QPointF(-50, -50))  # outside the plot: hidden
    assert readout.text == ""


def test_empty_states_say_what_to_do(view):
    v = view(ProfileView)
    v.redraw([])
    assert v.figure.hint.visible and "open an experiment" in v.figure.hint.item.toPlainText()
    v.redraw([run_data(0, make_trace(K=0))])
    assert "Press Run" in v.figure.hint.item.toPlainText()
    hidden = run_data(0, make_trace())
    hidden.visible = False
    v.redraw([hidden])
    assert "hidden" in v.figure.hint.item.toPlainText()
    for cls in (WaterfallView, TrainingView, SaturationView, LayersView):
        w = view(cls)
        w.redraw([run_data(0, make_trace(K=0))])
        hints = [h for h in vars(w.figure).values() if isinstance(h, plotting.EmptyHint)]
        assert hints and any(h.visible for h in hints), cls.__name__


def test_empty_plots_show_the_experiments_timesteps_and_iterations_on_decade_axes(view, qtbot):
    """Before any data: through time and layers span t = 0 .. T-1 of the longest run, training spans its
    iterations, and log axes read 10^-3 .. 10^3 (not pyqtgraph's 0 .. 1)."""
    short = RunConfig.model_validate({"name": "a", "task": {"seq_len": 12}, "train": {"iterations": 40}})
    long = RunConfig.model_validate({"name": "b", "task": {"seq_len": 30}, "train": {"iterations": 7}})
    runs = [run_data(0, make_trace(K=0), run=short), run_data(1, make_trace(K=0), run=long)]
    for cls, plot_names, x in (
        (ProfileView, ("grad_plot", "state_plot"), (0, 29)),
        (LayersView, ("grad_plot", "state_plot"), (0, 29)),
        (TrainingView, ("loss_plot", "norm_plot"), (0, 39)),
    ):
        v = view(cls)
        with qtbot.waitExposed(v):
            v.show()
        v.redraw(runs)
        for name in plot_names:
            vb = getattr(v.figure, name).getViewBox()
            assert getattr(v.figure, name.replace("plot", "snap")).bounds == ((0.0, float(x[1])), (-3.0, 3.0))
            qtbot.waitUntil(lambda vb=vb, x=x: vb.viewRange()[0][1] >= x[1])  # auto-range applies on the next paint
            (x0, x1), (y0, y1) = vb.viewRange()
            assert x0 <= x[0] < x[1] <= x1 and x1 - x0 < 1.2 * (x[1] - x[0]) + 1, (cls.__name__, name, x0, x1)
            assert y0 <= -3 and 3 <= y1 and y1 - y0 < 8, (cls.__name__, name, y0, y1)  # 6 decades + padding


# -------------------------------------------------------------------------------------- waterfall
def test_waterfall_image_holds_log10_values_with_whole_decade_levels(view):
    v = view(WaterfallView)
    v.redraw([run_data(0, make_trace(T=12, K=4))])
    fig = v.figure
    expected = np.log10(np.stack([grad_values(k, 0, 12) for k in range(4)]))  # (K, T)
    assert fig.image.image.shape == (4, 12)
    assert fig.image.image == pytest.approx(expected)
    lo, hi = fig.levels
    assert (lo, hi) == (math.floor(expected.min()), math.ceil(expected.max()))
    assert fig.image.levels == pytest.approx([lo, hi])
    assert fig.shown["iterations"] == pytest.approx([0, 10, 20, 30])
    rect = fig.image.mapRectToParent(fig.image.boundingRect())
    assert rect.top() == pytest.approx(-5) and rect.bottom() == pytest.approx(35)  # rows centred on 0..30
    ticks = fig.colorbar.axis._tickLevels[0]
    assert next(label for _, label in ticks) == axes.decade_label(lo)


def test_waterfall_levels_only_widen_while_a_run_goes_on(view):
    trace = make_trace(T=12, K=2)
    v = view(WaterfallView)
    run = run_data(0, trace)
    v.redraw([run])
    first = v.figure.levels
    # a row with much larger and much smaller values widens the levels ...
    big = make_trace(T=12, K=1, gain=3.0)
    from gradscope.trace import Record

    trace.append(
        Record(
            iteration=99,
            loss=1.0,
            grad_norm=1.0,
            metrics={n: big.array(n)[0] for n in big.names if n not in ("iteration", "loss", "grad_norm", "clipped")},
        )
    )
    v.redraw([run])
    wide = v.figure.levels
    assert wide[0] <= first[0] and wide[1] > first[1]
    # ... and choosing another run resets them
    other = run_data(1, make_trace(T=12, K=1, gain=1.01), "calm")
    v.redraw([run, other])
    v.run_box.setCurrentIndex(v.run_box.findData(1))
    assert v.figure.levels[1] - v.figure.levels[0] < wide[1] - wide[0]


def test_waterfall_draws_nonfinite_cells_grey_and_zeros_at_the_bottom(view):
    def tweak(k, m):
        if k == 1:
            m["grad_h_norm"][0, 2] = np.nan
            m["grad_h_norm"][0, 3] = np.inf
            m["grad_h_norm"][0, 4] = 0.0

    v = view(WaterfallView)
    v.redraw([run_data(0, make_trace(tweak=tweak))])
    fig = v.figure
    alpha = fig.bad.image[..., 3]  # (K, T) overlay opacity
    assert alpha[1, 2] == 255 and alpha[1, 3] == 255
    assert alpha.sum() == 2 * 255  # only those two cells
    assert fig.image.image[1, 4] == fig.levels[0]  # zero: bottom colour
    assert "2 cells" in fig.caption.text
    v.redraw([run_data(0, make_trace())])  # all finite: no overlay
    assert not fig.bad.isVisible()


def test_waterfall_draws_at_most_max_rows(view, monkeypatch):
    from gradscope.gui.views import waterfall

    monkeypatch.setattr(waterfall, "MAX_ROWS", 5)
    v = view(WaterfallView)
    v.redraw([run_data(0, make_trace(K=23))])
    assert v.figure.image.image.shape[0] == 5
    assert v.figure.shown["iterations"][[0, -1]] == pytest.approx([0, 220])  # first and last kept


# --------------------------------------------------------------------------------------- training
def test_training_draws_loss_norm_baseline_and_clip_threshold(view):
    cfg = RunConfig.model_validate({"name": "r", "train": {"clip_norm": 0.5}})
    runs = [run_data(0, make_trace(K=5), run=cfg, baseline_loss=16.0), run_data(1, make_trace(K=3), color="#D55E00")]
    v = view(TrainingView)
    v.redraw(runs)
    fig = v.figure
    x, y = shown(fig.loss_curves, 0)
    assert x == pytest.approx([0, 10, 20, 30, 40])
    assert y == pytest.approx(np.log10(0.5 / np.arange(1, 6)))
    _, y = shown(fig.norm_curves, 1)
    assert y == pytest.approx(np.log10(2.0 ** -np.arange(3)))
    _, base = shown(fig.baselines, 0)
    assert base == pytest.approx([math.log10(16.0)] * 2)
    _, clip = shown(fig.thresholds, 0)
    assert clip == pytest.approx([math.log10(0.5)] * 2)
    assert set(fig.baselines.items) == {0} and set(fig.thresholds.items) == {0}  # run 1 has neither


def test_training_draws_accuracy_and_its_ceiling_for_ce_runs_only(view):
    def with_accuracy(k, m):
        m["accuracy"] = np.asarray(float("nan") if k == 3 else 0.2 * (k + 1))

    ce, mse = make_trace(K=4, tweak=with_accuracy), make_trace(K=3)
    v = view(TrainingView)
    v.redraw([run_data(1, mse)])
    assert not v.figure.accuracy_plot.isVisible()  # no run records an accuracy: the plot gives its room
    runs = [run_data(0, ce, accuracy_ceiling=0.886, loss_kind="ce"), run_data(1, mse, color="#D55E00")]
    v.redraw(runs)
    fig = v.figure
    assert fig.accuracy_plot.isVisible()
    x, y = shown(fig.accuracy_curves, 0)
    assert x == pytest.approx([0, 10, 20, 30]) and y[:3] == pytest.approx([0.2, 0.4, 0.6]) and np.isnan(y[3])
    assert set(fig.accuracy_curves.items) == {0}
    _, ceiling = shown(fig.ceilings, 0)
    assert ceiling == pytest.approx([0.886, 0.886])
    assert [x for x, _ in fig.accuracy_marks.points] == [30]  # the NaN accuracy is marked
    assert "unidirectional ceiling (accuracy)" in fig.legend.labels
    text = fig._describe(20, "accuracy")
    assert "accuracy = 0.6" in text and "ceiling 0.886" in text and "run 1" not in text


def test_training_marks_a_nan_loss(view):
    from gradscope.trace import Record

    trace = make_trace(K=2)
    trace.append(
        Record(
            iteration=20,
            loss=float("nan"),
            grad_norm=float("inf"),
            metrics={
                n: trace.array(n)[-1] for n in trace.names if n not in ("iteration", "loss", "grad_norm", "clipped")
            },
        )
    )
    v = view(TrainingView)
    v.redraw([run_data(0, trace)])
    assert [x for x, _ in v.figure.loss_marks.points] == [20]
    assert [x for x, _ in v.figure.norm_marks.points] == [20]


# ------------------------------------------------------------------------------------- saturation
def test_saturation_draws_gates_for_lstm_and_fractions_for_rnns(view):
    v = view(SaturationView)
    runs = [
        run_data(0, make_trace(cell="lstm", layers=2)),
        run_data(1, make_trace(activation="relu")),
        run_data(2, make_trace(activation="tanh")),
    ]
    v.redraw(runs)
    fig = v.figure
    _, f_mean = shown(fig.gate_curves, (0, "gate_f_mean"))
    assert f_mean == pytest.approx(np.full(12, 0.2 + 0.01))  # top layer (l = 1)
    _, o_sat = shown(fig.sat_curves, (0, "gate_o_sat"))
    assert o_sat == pytest.approx(np.arange(12) / (12 * 5))
    _, dead = shown(fig.sat_curves, (1, "relu_dead"))
    assert dead == pytest.approx(np.arange(12) / 12)
    assert fig.sat_curves.data((2, "tanh_sat")) is not None
    assert not fig.gate_hint.visible
    assert fig.gate_plot.isVisible()
    v.redraw(runs[1:])  # RNNs only: the gate plot is left out, not shown empty
    assert not fig.gate_plot.isVisible() and not fig.gate_curves.items
    v.redraw([])  # before any data: both plots, each with its hint
    assert fig.gate_plot.isVisible() and fig.gate_hint.visible and fig.sat_hint.visible


# ----------------------------------------------------------------------------------------- layers
def test_layers_draws_one_curve_per_layer_of_the_deepest_run(view):
    v = view(LayersView)
    v.redraw([run_data(0, make_trace()), run_data(1, make_trace(layers=3), "deep")])
    fig = v.figure
    assert sorted(fig.grad_curves.items) == [0, 1, 2]
    for l in range(3):
        _, y = shown(fig.grad_curves, l)
        assert y == pytest.approx(np.log10(grad_values(3, l, 12)))
    colors = {fig.grad_curves.items[l].opts["pen"].color().name() for l in range(3)}
    assert len(colors) == 3
    v.run_box.setCurrentIndex(v.run_box.findData(0))
    assert sorted(fig.grad_curves.items) == [0]


def test_waterfall_hover_reads_the_cell_and_stays_inside_the_inverted_plot(view, qtbot):
    v = view(WaterfallView)
    with qtbot.waitExposed(v):
        v.show()
    v.redraw([run_data(0, make_trace(T=12, K=4), "relu")])
    vb = v.figure.plot.getViewBox()
    qtbot.waitUntil(lambda: vb.viewRange()[1][0] <= 0 and vb.viewRange()[1][1] >= 30)
    readout = v.figure.readouts[0]
    readout.hover(vb.mapViewToScene(plotting.QtCore.QPointF(7.1, 19.0)))  # t = 7, iteration 20
    assert "iteration 20, t = 7" in readout.text
    assert axes.value_label(grad_values(2, 0, 12)[7]) in readout.text
    label_box = readout.label.sceneBoundingRect()
    assert vb.sceneBoundingRect().adjusted(-0.5, -0.5, 0.5, 0.5).contains(label_box.topLeft())  # not clipped


def test_axes_hold_still_while_data_moves_within_a_decade(view, qtbot):
    """The plot's auto-range snaps to whole decades, so the axes are not re-laid out on every frame."""
    from gradscope.trace import Record

    v = view(ProfileView)
    with qtbot.waitExposed(v):
        v.show()
    v.set_live(True)  # runs streaming in
    trace = make_trace(T=12, K=1)  # grad 1e-3 * 1.25^(11 - t): from 1e-3 to ~1.2e-2
    runs = [run_data(0, trace)]
    v.redraw(runs)
    vb = v.figure.grad_plot.getViewBox()
    assert v.figure.grad_snap.bounds[1] == (-4, -1)  # floor(-3 - 0.05), ceil(log10(1.16e-2) + 0.05)
    qtbot.waitUntil(lambda: vb.viewRange()[1][0] <= -4 and vb.viewRange()[1][1] >= -1)
    first = vb.viewRange()

    def add(scale):
        trace.append(
            Record(
                iteration=len(trace),
                loss=1.0,
                grad_norm=1.0,
                metrics={
                    n: trace.array(n)[0] * scale
                    for n in trace.names
                    if n not in ("iteration", "loss", "grad_norm", "clipped")
                },
            )
        )
        v.redraw(runs)

    add(1.3)  # still inside the same decades
    assert v.figure.grad_snap.bounds[1] == (-4, -1)
    assert vb.viewRange() == first
    add(1.0)  # and back: no flip-flop at a decade boundary
    assert v.figure.grad_snap.bounds[1] == (-4, -1)
    add(1000.0)  # three decades up: the range follows
    assert v.figure.grad_snap.bounds[1] == (-1, 2)
    qtbot.waitUntil(lambda: vb.viewRange()[1][1] >= 2)
    # once the runs stop, the still picture is fitted to the data: 1e-3 * 1000 .. 1.16e-2 * 1000
    v.set_live(False)
    assert v.redraw(runs)
    lo, hi = v.figure.grad_snap.bounds[1]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(np.log10(1000 * grad_values(0, 0, 12)[0]))
    assert [plotting.nice_ceil(v) for v in (37, 56, 200, 0.3, 9.1)] == pytest.approx([40, 60, 200, 0.3, 10])


def test_pascanu_line_uses_the_latest_measured_sigma_max(view):
    """sigma_max is measured every train.spectral_every-th iteration; rows between hold NaN."""

    def tweak(k, m):
        m["sigma_max"] = np.array([1.1 + 0.1 * k]) if k in (0, 1) else np.array([np.nan])

    T = 12
    mask = np.zeros((T, 2))
    mask[-1] = 1
    run = run_data(0, make_trace(T=T, tweak=tweak), run=_relu_run(3.0, T), first_batch={"mask": mask})
    v = view(ProfileView)
    v.set_overlay("pascanu", True)
    v.redraw([run])
    _, pb = shown(v.figure.theory_curves, (0, "pascanu"))
    measured = grad_values(3, 0, T)
    assert pb == pytest.approx(theory.pascanu_line("relu", 1.2, T, T - 1, measured[-1]))  # row 1's value


def test_training_curves_draw_at_most_max_points(view, monkeypatch):
    from gradscope.gui.views import training

    monkeypatch.setattr(training, "MAX_POINTS", 7)
    v = view(TrainingView)
    v.redraw([run_data(0, make_trace(K=30))])
    x, y = shown(v.figure.loss_curves, 0)
    assert len(x) == 7 and x[0] == 0 and x[-1] == 290  # first and last iterations kept
    assert y == pytest.approx(np.log10(0.5 / (x / 10 + 1)))


def test_hover_readout_wraps_to_stay_inside_a_narrow_plot(view, qtbot):
    """Three long readout lines in a plot narrower than them: the box wraps, it is not cut off by the plot."""
    v = view(TrainingView)
    v.resize(1100, 500)
    with qtbot.waitExposed(v):
        v.show()
    runs = [run_data(k, make_trace(K=4), f"a rather long run name number {k}", baseline_loss=16.0) for k in range(3)]
    v.redraw(runs)
    vb = v.figure.loss_plot.getViewBox()
    qtbot.waitUntil(lambda: vb.viewRange()[0][0] <= 0 and vb.viewRange()[0][1] >= 30)
    readout = v.figure.readouts[0]
    for x in (2.0, 28.0):  # mouse on the left, then on the right half
        readout.hover(vb.mapViewToScene(plotting.QtCore.QPointF(x, vb.viewRange()[1][0] + 0.1)))
        assert "a rather long run name number 2" in readout.text.replace("\n", " ")
        box, plot = readout.label.sceneBoundingRect(), vb.sceneBoundingRect()
        assert box.width() < plot.width()
        assert plot.left() - 1 <= box.left() and box.right() <= plot.right() + 1


def test_curves_are_rebuilt_only_when_their_values_change(qapp):
    """Each redraw recomputes every run's arrays, but a curve whose values, pen and dots are unchanged keeps
    its drawn path (with 5 runs, most redraws bring new data for one of them)."""
    import pyqtgraph as pg

    from gradscope.gui.views.base import CurveSet

    plot = pg.PlotItem()
    curves = CurveSet(plot)
    x, y = np.arange(5.0), np.array([1.0, np.nan, 2.0, 3.0, 4.0])
    item = curves.set("a", x, y, plotting.pen("#0072B2"))
    path = item.getPath()
    assert curves.set("a", x.copy(), y.copy(), plotting.pen("#0072B2")) is item
    assert item.path is path  # not rebuilt
    curves.set("a", x, y + 1, plotting.pen("#0072B2"))
    assert item.path is None and item.yData[0] == 2.0  # new values: rebuilt
    item.getPath()
    curves.set("a", x, y + 1, plotting.pen("#D55E00"))
    assert item.opts["pen"].color().name() == "#d55e00"
    curves.set("a", x, y + 1, plotting.pen("#D55E00"), markers=True)
    assert len(curves.dot_positions("a")) == 4  # every finite point
    curves.set("a", x, y + 1, plotting.pen("#D55E00"))
    assert len(curves.dot_positions("a")) == 1  # back to the isolated one: t = 0


# ---------------------------------------------------------------------------------------- streams
def test_a_bidirectional_run_is_shown_by_its_streams_and_top_means_the_top_forward_one(view):
    from gradscope.config import RunConfig

    run = RunConfig.model_validate({"cell": "lstm", "bidirectional": True, "layers": 2})
    data = run_data(0, make_trace(cell="lstm", layers=4), "bi", run=run)
    assert data.streams == ("layer0", "layer0_reverse", "layer1", "layer1_reverse")
    assert data.top_stream == 2
    v = view(LayersView)
    v.redraw([data])
    labels = v.figure.legend.labels
    assert "layer 0 reverse" in " ".join(labels) and "layer 1 reverse (top)" in labels
    p = view(ProfileView)
    p.redraw([data])
    assert [p.layer_box.itemText(i) for i in range(p.layer_box.count())] == [
        "top layer",
        "layer 0",
        "layer 0 reverse",
        "layer 1",
        "layer 1 reverse",
    ]
    _, y = shown(p.figure.grad_curves, next(iter(p.figure.grad_curves.items)))
    assert y == pytest.approx(np.log10(grad_values(3, 2, 12)))  # the top layer's forward stream (row 2)


def test_gru_gates_are_drawn_with_their_names(view):
    from gradscope.config import RunConfig

    def gates(k, m):
        for i, g in enumerate("rzn"):
            m[f"gate_{g}_mean"] = np.full((1, 12), 0.2 * (i + 1))
            m[f"gate_{g}_sat"] = np.full((1, 12), 0.1)

    data = run_data(0, make_trace(tweak=gates), "gru", run=RunConfig.model_validate({"cell": "gru"}))
    v = view(SaturationView)
    v.redraw([data])
    fig = v.figure
    assert {"reset gate r", "update gate z", "candidate n"} <= set(fig.legend.labels)
    _, y = shown(fig.gate_curves, (0, "gate_z_mean"))
    assert y == pytest.approx(np.full(12, 0.4))


def _trained(run_keys: dict, seed: int = 0):
    """A run's RunData after its iteration 0, computed by the engine (settings, first batch, init params)."""
    from gradscope.engine.trainer import Training
    from gradscope.runs import RunResult
    from gradscope.trace import Trace

    run = RunConfig.model_validate(run_keys)
    training = Training(run, seed)
    trace = Trace()
    trace.append(next(iter(training)))
    result = RunResult(
        name="run", run=run, trace=trace, first_batch=training.first_batch, init_params=training.init_params
    )
    return RunData(0, color="#0072B2", result=result), trace


def test_a_seq2seq_stream_is_drawn_with_its_partner_on_one_axis_and_the_bridge_marked(view, qtbot):
    keys = {
        "architecture": "seq2seq",
        "cell": "lstm",
        "hidden_size": 4,
        "task": {"seq_len": 6, "target_len": 4, "batch_size": 2, "input_size": 3, "output_size": 2},
    }
    data, trace = _trained(keys)
    p = view(ProfileView)
    p.redraw([data])
    assert [p.layer_box.itemText(i) for i in range(p.layer_box.count())] == [
        "top layer",
        "encoder layer 0",
        "decoder layer 0",
    ]
    t, y = shown(p.figure.grad_curves, (0, "grad_h_norm"))
    assert list(t) == list(range(-6, 4))  # the encoder's 6 steps before the bridge, the decoder's 4 after
    grad = trace.array("grad_h_norm")[0]  # (S, T): encoder row 0, decoder row 1 (NaN past its 4 steps)
    assert y == pytest.approx(np.log10(np.concatenate([grad[0], grad[1, :4]])))
    assert all(b.isVisible() for b in p.figure.bridges)
    text = p.figure._describe(-6, ("grad_h_norm",), False)  # hover on the encoder's first step
    assert ", encoder layer 0, iteration" in text and f"{grad[0, 0]:.4g}"[:4] in text  # named: it said "decoder"
    assert ", decoder layer 0 (top), iteration" in p.figure._describe(1, ("grad_h_norm",), False)
    plain, _ = _trained({"cell": "lstm", "hidden_size": 4, "task": {"seq_len": 5, "batch_size": 2}})
    p.redraw([plain])
    assert not any(b.isVisible() for b in p.figure.bridges)


def test_the_gate_path_lines_follow_sigma_of_the_initial_bias(view):
    keys = {"cell": "lstm", "hidden_size": 8, "init": {"forget_bias": 2.0}, "task": {"seq_len": 10, "batch_size": 4}}
    data, trace = _trained(keys)
    p = view(ProfileView)
    p.redraw([data])
    line = shown(p.figure.theory_curves, (0, "gate"))[1]  # log10, anchored at the last scored step (t = 9)
    grad_c = trace.array("grad_c_norm")[0, 0]
    b_f = data.init_params.layers[0].b_h[8:16]
    assert np.allclose(b_f, 2.0)
    sigma = 1 / (1 + np.exp(-2.0))
    assert line == pytest.approx(np.log10(grad_c[9]) + (9 - np.arange(10)) * np.log10(sigma))
    measured = shown(p.figure.theory_curves, (0, "gate_measured"))[1]
    f_mean = trace.array("gate_f_mean")[0, 0]
    assert measured[3] == pytest.approx(np.log10(grad_c[9] * np.prod(f_mean[4:10])))
    p.figure.overlays["gates"] = False
    p.redraw([data])
    assert p.figure.theory_curves.data((0, "gate")) is None


def test_the_waterfall_of_a_seq2seq_stream_spans_encoder_and_decoder_without_padding(view):
    keys = {
        "architecture": "seq2seq",
        "cell": "gru",
        "hidden_size": 4,
        "task": {"seq_len": 5, "target_len": 3, "batch_size": 2, "input_size": 3, "output_size": 2},
    }
    data, trace = _trained(keys)
    v = view(WaterfallView)
    v.redraw([data])
    shown_ = v.figure.shown
    grad = trace.array("grad_h_norm")[0]
    np.testing.assert_array_equal(shown_["values"][0], np.concatenate([grad[0], grad[1, :3]]))
    assert not shown_["bad"].any()  # the decoder's padding is not drawn as NaN
    assert shown_["t0"] == -5 and "encoder layer 0 and decoder layer 0" in v.figure.plot.titleLabel.text
    assert "t = -5" in v.figure._describe(-5, 0)


# ----------------------------------------------------------------------------------------- wording
def test_layers_are_counted_from_zero_and_the_top_choice_names_the_layer_it_shows(view):
    """The chooser offers "top layer"; what it shows is then titled "layer 2 (top)", the same stream chosen by
    number "layer 2": the two words meet (they were mixed: "top layer" in the chooser, "layer 2" in the title)."""
    data = run_data(0, make_trace(cell="lstm", layers=3), "deep")
    w = view(WaterfallView)
    w.redraw([data])
    assert w.layer_box.currentText() == "top layer"
    assert w.figure.plot.titleLabel.text.endswith("deep, layer 2 (top)")
    w.layer_box.setCurrentIndex(w.layer_box.findData(2))
    assert w.figure.plot.titleLabel.text.endswith("deep, layer 2")
    w.layer_box.setCurrentIndex(w.layer_box.findData(0))
    assert w.figure.plot.titleLabel.text.endswith("deep, layer 0")
    assert [w.layer_box.itemText(i) for i in range(w.layer_box.count())] == [
        "top layer",
        "layer 0",
        "layer 1",
        "layer 2",
    ]
    p = view(ProfileView)
    p.redraw([data])
    assert p.figure._shown[0]["streams"] == ["layer 2 (top)"]  # the hover text's "deep, layer 2 (top), iteration i"
    assert "deep, layer 2 (top), iteration" in p.figure._describe_grad(3.0, 0.0)
    p.layer_box.setCurrentIndex(p.layer_box.findData(1))
    assert p.figure._shown[0]["streams"] == ["layer 1"]


def test_a_diverged_stream_is_named_as_the_views_name_it(qapp):
    from gradscope.config import RunConfig
    from gradscope.engine import NonFinite
    from gradscope.gui.model import RunState, RunStatus

    run = RunConfig.model_validate({"name": "bi", "cell": "gru", "bidirectional": True, "layers": 2})
    state = RunState(run, "#0072B2")
    state.status = RunStatus.DIVERGED
    state.nonfinite = NonFinite("grad_h", 1, 4, iteration=7)  # row 1 of the metrics: layer 0's reverse stream
    assert state.status_text() == "diverged at iteration 7, layer 0 reverse, t = 4 (grad_h)"


def test_nonfinite_markers_are_kept_when_unchanged_and_share_one_pen_per_colour(qapp):
    """A redraw that brings nothing new for the markers leaves them as drawn, and every marker of a colour uses
    the same pen and brush objects (pyqtgraph's symbol atlas keys its pictures by their ids: fresh pens made it
    render, and keep, a new picture for every marker of every redraw)."""
    import pyqtgraph as pg

    from gradscope.gui.views.base import NonFiniteMarkers

    plot = pg.PlotItem()
    marks = NonFiniteMarkers(plot)
    blue, red = "#0072B2", "#D55E00"
    marks.set([(np.array([0.0, 3.0]), blue), (np.array([5.0]), red)], 2.25)
    data = marks.item.data
    assert list(data["x"]) == [0.0, 3.0, 5.0] and list(data["y"]) == [2.25] * 3
    assert [p.color().name() for p in data["pen"]] == ["#0072b2", "#0072b2", "#d55e00"]
    assert data["pen"][0] is data["pen"][1] and data["brush"][0] is data["brush"][1]
    assert data["pen"][0].widthF() == 2.0
    marks.set([(np.array([0.0, 3.0]), blue), (np.array([5.0]), red)], 2.25)
    assert marks.item.data is data  # unchanged: not rebuilt
    marks.set([(np.array([0.0, 3.0]), blue), (np.array([5.0]), red)], 3.25)  # the plot's top moved
    assert list(marks.item.data["y"]) == [3.25] * 3
    marks.set([(np.array([1.0]), red)], 3.25)
    assert list(marks.item.data["x"]) == [1.0] and marks.count == 1
    marks.set([], 3.25)
    assert len(marks.item.data) == 0 and marks.count == 0


def test_titles_are_set_only_when_they_change(qapp):
    """Setting a plot's title re-lays out the plot: a redraw with the same title leaves the label alone."""
    import pyqtgraph as pg

    plot = pg.PlotItem()
    plotting.set_title(plot, "Loss")
    calls = []
    plot.titleLabel.setText = lambda text, **kw: calls.append(text)
    plotting.set_title(plot, "Loss")
    assert calls == []
    plotting.set_title(plot, "Loss, iteration 3")
    assert calls == ["Loss, iteration 3"]


def test_through_time_redraws_only_the_runs_that_brought_new_values(qtbot):
    """A frame with new data for one run leaves what the others drew as it was (the same arrays, no new
    path), draws the new values of that one, and Figure.forget_drawn (bench_gui.py's --force) redraws all."""

    v = ProfileView()
    qtbot.addWidget(v)
    runs = [run_data(0, make_trace(), "relu 3/n"), run_data(1, make_trace(gain=1.1), "relu 2/n")]
    v.redraw(runs)
    curves = v.figure.grad_curves.items
    before = {k: curves[(k, "grad_h_norm")].yData for k in (0, 1)}
    parts = dict(v.figure._parts)
    trace = runs[1].trace
    append_first_row_scaled(trace, iteration=99, factor=1000)
    assert v.redraw(runs)
    assert v.figure._parts[0] is parts[0] and v.figure._parts[1] is not parts[1]
    assert curves[(0, "grad_h_norm")].yData is before[0]  # untouched
    expected = np.log10(trace.array("grad_h_norm")[-1][0])
    assert np.allclose(curves[(1, "grad_h_norm")].yData, expected)
    assert not np.allclose(before[1], expected)
    kept = {k: curves[(k, "grad_h_norm")].yData for k in (0, 1)}
    v.figure.forget_drawn()
    v.redraw(runs, force=True)
    for k in (0, 1):
        assert curves[(k, "grad_h_norm")].yData is not kept[k]
        assert np.array_equal(curves[(k, "grad_h_norm")].yData, kept[k])
