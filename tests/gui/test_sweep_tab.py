"""The Sweep tab fed synthetic sweeps (rows with known gains), a real sweep run from the tab, a folder opened,
and the figure exported as PNG and SVG."""

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PyQt6 import QtWidgets

from gradscope import config
from gradscope.config import sweep_points
from gradscope.gui.sweep import SweepData, SweepFigure, SweepTab
from gradscope.sweep.table import TAIL, point_name, row_values

BASE = """
schema_version = 1
[experiment]
name = "synthetic"
[defaults]
hidden_size = 16
activation = "{activation}"
[defaults.init]
input_scale = {input_scale}
[defaults.task]
seq_len = 12
batch_size = 2
input_size = 2
output_size = 2
[[runs]]
name = "net"
[sweep]
{keys}
seeds = [0, 1, 2]
"""
ONE = '"init.recurrent_scale" = [1.0, 2.0, 3.0, 4.0]'
TWO = '"init.recurrent_scale" = [0.5, 1.0, 2.0, 4.0]\n"init.bias_scale" = [0.01, 0.1, 1.0]'


def wait_job(qtbot, job, timeout):
    """Until the tab's job thread has ended and its last signals reached the tab (a job that fails at once can
    end before a waitSignal on its finished() would connect, and the wait then never ends)."""
    qtbot.waitUntil(job.isFinished, timeout=timeout)
    QtWidgets.QApplication.processEvents()  # the done / failed / finished signals, queued to the GUI thread


def experiment(keys, activation="relu", input_scale=0.0):
    return config.loads(BASE.format(keys=keys, activation=activation, input_scale=input_scale))


def synthetic_rows(exp, gain):
    """One row per point whose log gain is gain(values, seed): what a finished sweep's table holds."""
    points = sweep_points(exp)
    rows = []
    for p in points:
        measured = dict.fromkeys(TAIL, None) | {
            "status": "completed",
            "iterations": 1,
            "final_loss": 1.0,
            "log_gain_per_step": gain(p.values, p.seed),
            "wall_seconds": 0.01,
        }
        header = ["point", "run", "seed", *exp.sweep.keys, *TAIL]
        rows.append(dict(zip(header, row_values(point_name(p.index, len(points)), p, measured))))
    return rows


def test_one_key_mean_and_spread_over_seeds_and_the_mean_field_curve(qtbot):
    exp = experiment(ONE)
    data = SweepData(exp)
    for row in synthetic_rows(exp, lambda v, s: 0.5 * math.log(v[0] / 2) + 0.01 * (s - 1)):
        data.add_row(row)
    data.compute_theory()
    figure = SweepFigure()
    qtbot.addWidget(figure)
    assert figure.show_sweep(data) and not figure.show_sweep(data)  # unchanged: no redraw
    x, mean, spread, count = figure.shown["runs"]["net"]
    np.testing.assert_allclose(x, [1, 2, 3, 4])
    np.testing.assert_allclose(mean, 0.5 * np.log(x / 2), atol=1e-12)  # seeds -0.01, 0, +0.01 average out
    np.testing.assert_allclose(spread, 0.01, rtol=1e-9)  # their sample standard deviation
    assert list(count) == [3, 3, 3, 3]
    line_x, line_y = data.lines["net"]  # ReLU: 0.5 ln(c/2) on a fine grid
    np.testing.assert_allclose(line_y, 0.5 * np.log(line_x / 2), rtol=1e-12)
    assert "12/12 points done" in figure.caption.text


def test_a_partial_sweep_shows_what_has_finished(qtbot):
    exp = experiment(ONE)
    data = SweepData(exp)
    rows = synthetic_rows(exp, lambda v, s: v[0])
    for row in rows[:4]:  # c = 1 (3 seeds) and one seed of c = 2
        data.add_row(row)
    failed = dict(rows[5], status="failed", log_gain_per_step="")
    data.add_row(failed)
    x, mean, _, count = data.curve("net")
    assert list(count) == [3, 1, 0, 0] and np.isnan(mean[2:]).all()
    assert data.counts() == (4, 1)


def test_two_keys_heatmap_cells_and_the_critical_line(qtbot):
    exp = experiment(TWO, activation="tanh")
    data = SweepData(exp)
    for row in synthetic_rows(exp, lambda v, s: v[0] - 10 * v[1]):
        data.add_row(row)
    data.compute_theory()
    figure = SweepFigure()
    qtbot.addWidget(figure)
    figure.show_sweep(data)
    mean = figure.shown["mean"]  # (ny, nx): y = bias_scale, x = recurrent_scale
    assert mean.shape == (3, 4)
    assert mean[2, 1] == pytest.approx(1.0 - 10 * 1.0) and mean[0, 3] == pytest.approx(4.0 - 0.1)
    xs, ys = figure.shown["line"]
    # the critical line in cell coordinates: at sigma_b^2 = 0.1 (row 1) chi_1 = 1 at c = 1.99, between the
    # cells c = 1 (column 1) and c = 2 (column 2), near the latter
    from gradscope.theory import critical_sigma_w

    c = critical_sigma_w(math.sqrt(0.1)) ** 2
    at_row_1 = np.interp(1.0, ys[np.isfinite(xs)], xs[np.isfinite(xs)])
    assert at_row_1 == pytest.approx(1 + (c - 1.0) / (2.0 - 1.0), abs=0.02)
    assert figure.legend.labels == ["critical line chi_1 = 1 (mean field)"]


def test_the_tab_runs_a_real_sweep_and_fills_in_then_exports_png_and_svg(qtbot, tmp_path):
    exp = experiment('"init.recurrent_scale" = [1.5, 3.0]', input_scale=1.0)
    tab = SweepTab()
    qtbot.addWidget(tab)
    tab.resize(1200, 700)
    job = tab.run_sweep(exp, tmp_path / "sweep", workers=1, scheduler="")
    wait_job(qtbot, job, timeout=120_000)
    assert tab.last_error is None, tab.last_error
    assert "Sweep finished: 6/6 points done" in tab.status.text()
    tab.redraw()
    x, mean, _, count = tab.figure.shown["runs"]["net"]
    assert list(count) == [3, 3] and mean[1] > mean[0]  # 3/n grows faster back in time than 1.5/n
    paths = tab.export_to(tmp_path / "figures")
    assert [p.name for p in paths] == ["sweep.png", "sweep.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 5000
    ET.fromstring(paths[1].read_bytes())  # well-formed SVG

    other = SweepTab()  # the finished folder, opened again
    qtbot.addWidget(other)
    job = other.open_folder(tmp_path / "sweep")
    wait_job(qtbot, job, timeout=60_000)
    other.redraw()
    np.testing.assert_array_equal(other.figure.shown["runs"]["net"][1], mean)
    assert other.data.lines["net"][1][0] == pytest.approx(0.5 * math.log(1.5 / 2))


def test_a_folder_that_is_no_sweep_is_a_message_not_a_crash(qtbot, tmp_path):
    tab = SweepTab()
    qtbot.addWidget(tab)
    job = tab.open_folder(tmp_path)
    wait_job(qtbot, job, timeout=30_000)
    assert "not a GradScope sweep folder" in tab.status.text()


def test_the_heatmap_shows_lambda_max_once_the_points_were_analysed(qtbot):
    exp = experiment(TWO, activation="tanh")
    tab = SweepTab()
    qtbot.addWidget(tab)
    tab._set_data(SweepData(exp))
    rows = synthetic_rows(exp, lambda v, s: v[0])
    tab.data.add_row(rows[0])
    tab.redraw()
    assert [tab.quantity.itemText(i) for i in range(tab.quantity.count())] == ["log_gain_per_step"]
    for row in rows[1:]:
        tab.data.add_row(dict(row, lyapunov_max=repr(-float(row["init.bias_scale"]))))
    tab.redraw()
    tab.quantity.setCurrentText("lyapunov_max")
    shown = tab.figure.shown
    assert shown["column"] == "lyapunov_max" and shown["mean"][2, 0] == pytest.approx(-1.0)
    assert "Lyapunov" in tab.figure.plot.titleLabel.text
