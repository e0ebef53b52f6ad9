"""File > Add exported folder overlays a second experiment on the first; a killed run's folder opens as
"interrupted at iteration i"; Results.figure gives the export's figures as sane PNG and SVG bytes."""

import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PyQt6 import QtCore

import gradscope
from gradscope.config import Experiment, RunConfig, TaskConfig, TrainConfig
from gradscope.gui.main_window import MainWindow
from gradscope.recording import Recording
from gradscope.store import RunStore

TASK = TaskConfig(name="probe", seq_len=10, batch_size=4, input_size=3, output_size=2)


def experiment(name, runs):
    return Experiment(name=name, seed=2, runs=runs)


def rnn(name, **keys):
    return RunConfig(name=name, hidden_size=6, task=TASK, train=TrainConfig(iterations=3), **keys)


@pytest.fixture
def window(qtbot, tmp_path):
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    w = MainWindow(backend="numpy", settings=settings, warm_up=False)
    qtbot.addWidget(w)
    yield w
    w.controller.shutdown(timeout_ms=None)


@pytest.fixture
def two_exports(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    gradscope.run(
        experiment("first", [rnn("relu"), rnn("tanh", activation="tanh")]), out=a, progress=False, plots=False
    )
    gradscope.run(
        experiment("rerun", [rnn("relu", seed=5), rnn("lstm", cell="lstm")]), out=b, progress=False, plots=False
    )
    return a, b


def test_add_exported_folder_overlays_it_on_what_is_shown(window, two_exports):
    a, b = two_exports
    assert window.open_folder(a)
    assert [s.name for s in window.controller.states] == ["relu", "tanh"]
    assert window.add_folder(b)
    states = window.controller.states
    assert [s.name for s in states] == ["relu", "tanh", "relu (2)", "lstm"]  # a repeated name is told apart
    assert len({s.data.color for s in states}) == 4  # every run its own colour
    assert all(s.loaded and len(s.data.trace) == 3 for s in states)
    assert [r.name for r in window.controller.experiment.runs] == ["relu", "tanh", "relu (2)", "lstm"]
    first, rerun = gradscope.open(a)["relu"], gradscope.open(b)["relu"]
    np.testing.assert_array_equal(states[2].data.trace.array("h_norm"), rerun.trace.array("h_norm"))
    assert not np.array_equal(states[0].data.trace.array("h_norm"), states[2].data.trace.array("h_norm"))
    np.testing.assert_array_equal(states[0].data.trace.array("h_norm"), first.trace.array("h_norm"))
    window.redraw(force=True)
    curves = window.views[0].figure.grad_curves
    assert all(curves.data((s.key, "grad_h_norm")) is not None for s in states)  # all four drawn, overlaid
    assert "Added the export" in window.statusBar().full_message()
    window.controller.start()  # loaded runs: nothing to run
    assert not window.controller.any_busy
    assert window.act_add_folder in window.menuBar().actions()[0].menu().actions()


def test_a_killed_runs_folder_opens_as_interrupted(window, tmp_path):
    exp = experiment("killed", [rnn("a"), rnn("b")])
    out = tmp_path / "killed"
    recording = Recording.start(out, exp)
    store = RunStore.create(recording.run_dir(0, "a") / "records.zarr", name="a", streams=["layer0"], flush_seconds=0)
    from gradscope.engine.record import Record

    for i in range(4):
        store.add(Record(i, 1.0, 1.0, metrics={"h_norm": np.ones((1, 10)), "grad_h_norm": np.ones((1, 10))}))
    assert window.open_folder(out)
    a, b = window.controller.states
    assert a.status_text() == "interrupted at iteration 3"
    assert len(a.data.trace) == 4 and len(b.data.trace) == 0
    assert "interrupted" in window.statusBar().full_message()


def test_results_figures_are_png_and_svg_files(two_exports):
    results = gradscope.open(*two_exports)
    png = results.figure("through_time", size=(900, 500))
    assert png.data[:8] == b"\x89PNG\r\n\x1a\n" and png.data[12:16] == b"IHDR"
    assert struct.unpack(">II", png.data[16:24]) == (900, 500)
    assert png._repr_png_() == png.data and png._repr_svg_() is None
    svg = results.figure("training", format="svg")
    root = ET.fromstring(svg.data)
    assert root.tag.endswith("svg") and float(root.get("width")) == 1400
    assert (
        len(root.findall(".//{http://www.w3.org/2000/svg}path"))
        + len(root.findall(".//{http://www.w3.org/2000/svg}polyline"))
        > 4
    )
    assert svg._repr_svg_().startswith("<") and svg._repr_png_() is None
    waterfall = results.figure("waterfall")  # the first run's
    assert waterfall.data[:4] == b"\x89PNG"
    composite = results._repr_png_()
    width, height = struct.unpack(">II", composite[16:24])
    assert width == 2800 and height > 800  # two pages to a row, under a title
    with pytest.raises(ValueError, match="'through_time'"):
        results.figure("nope")
    with pytest.raises(ValueError, match="expected 'png' or 'svg'"):
        results.figure("training", format="jpg")
