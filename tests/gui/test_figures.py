"""Exported figures: every view as PNG and valid SVG whose curves sit where the data and the axis say."""
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest
from PyQt6 import QtGui

from gradscope.config import RunConfig
from gradscope.gui import figures
from gradscope.gui.model import RunData

from .conftest import grad_values, make_trace

SVG = "{http://www.w3.org/2000/svg}"
_MATRIX = re.compile(r"matrix\(([^)]*)\)")


def svg_shapes(path):
    """(curves, texts) of an SVG file in absolute coordinates.

    curves: (stroke colour, (n, 2) vertices) of every path; texts: (text, x, y).
    """
    curves, texts = [], []

    def walk(node, M, stroke):
        transform = node.get("transform")
        if transform:
            a, b, c, d, e, f = (float(v) for v in _MATRIX.search(transform).group(1).split(","))
            M = M @ np.array([[a, c, e], [b, d, f], [0, 0, 1]])
        stroke = node.get("stroke", stroke)
        if node.tag == SVG + "path":
            pts = np.array([[float(x), float(y)] for x, y in re.findall(r"[ML]\s*([-\d.e]+),([-\d.e]+)",
                                                                       node.get("d", ""))])
            if len(pts):
                pts = (M @ np.c_[pts, np.ones(len(pts))].T).T[:, :2]
                curves.append((stroke, pts))
        if node.tag == SVG + "text" and node.text:
            x, y = float(node.get("x", 0)), float(node.get("y", 0))
            X, Y, _ = M @ np.array([x, y, 1.0])
            texts.append((node.text, X, Y))
        for child in node:
            walk(child, M, stroke)

    walk(ET.parse(path).getroot(), np.eye(3), None)
    return curves, texts


def demo_runs(T=12):
    cfg = RunConfig.model_validate({"name": "relu 3/n", "hidden_size": 16, "init": {"recurrent_scale": 3.0},
                                    "task": {"seq_len": T}, "train": {"clip_norm": 1.0}})
    return [RunData(0, "relu 3/n", "#0072B2", make_trace(T=T), run=cfg, baseline_loss=16.0),
            RunData(1, "tanh 1.5/n", "#D55E00", make_trace(activation="tanh", T=T, gain=0.8)),
            RunData(2, "lstm", "#009E73", make_trace(cell="lstm", layers=2, T=T))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, qapp):
    out = tmp_path_factory.mktemp("plots")
    files = figures.render_figures(demo_runs(), out, title="test")
    return out, files


def test_every_view_and_the_composite_are_written_as_png_and_svg(exported):
    out, files = exported
    stems = {"through_time", "waterfall_relu_3_n", "waterfall_tanh_1.5_n", "waterfall_lstm", "training",
             "saturation", "layers", "composite"}
    assert {f.name for f in files} == {f"{s}.{ext}" for s in stems for ext in ("png", "svg")}
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in files)   # no partial files left
    for f in files:
        if f.suffix == ".png":
            image = QtGui.QImage(str(f))
            assert not image.isNull() and image.width() >= 1000
            # the run colours are on the image: it is not blank
            colours = {image.pixelColor(x, y).name() for x in range(0, image.width(), 3)
                       for y in range(0, image.height(), 3)}
            assert len(colours) > 20, f.name


def test_svg_is_valid_and_holds_every_curve_where_the_axis_says(exported):
    out, _ = exported
    T = 12
    curves, texts = svg_shapes(out / "through_time.svg")          # ET.parse: well-formed XML
    full = [(stroke, pts) for stroke, pts in curves if len(pts) == T]
    by_colour = {}
    for stroke, pts in full:
        by_colour.setdefault(stroke.lower(), []).append(pts)
    # run 0 draws ||dL/dh_t|| (and its mean-field line), run 1 its gradient; locate run 0's gradient curve
    measured = np.log10(grad_values(3, 0, T))
    fits = []
    for pts in by_colour["#0072b2"]:
        A = np.c_[measured, np.ones(T)]
        coef, residual, *_ = np.linalg.lstsq(A, pts[:, 1], rcond=None)
        if residual.size and residual[0] < 1e-4 and coef[0] < 0:
            fits.append(coef)
    assert fits, "the gradient curve of run 0 is not in the SVG"
    a, b = fits[0]
    # the x coordinates are evenly spaced timesteps
    xs = [pts[:, 0] for pts in by_colour["#0072b2"]][0]
    assert np.diff(xs) == pytest.approx(np.full(T - 1, np.diff(xs)[0]), rel=1e-6)
    # run 1's gradient uses the same vertical map (no per-curve shift)
    tanh = np.log10(grad_values(3, 0, T, gain=0.8))
    assert any(np.allclose(pts[:, 1], a * tanh + b, atol=1e-3) for pts in by_colour["#d55e00"])
    # and the decade labels of the axis sit at a * k + b: curves and axis agree (pyqtgraph#2941 shifted them)
    state_title = min(y for t, _, y in texts if t.startswith("Hidden state"))   # the plot below starts here
    decades = {int(m.translate(str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-"))[2:]): y
               for m, x, y in texts if m.startswith("10") and len(m) > 2 and x < 100 and y < state_title}
    assert len(decades) >= 3
    offsets = [y - (a * k + b) for k, y in decades.items()]
    assert np.ptp(offsets) < 1.0 and abs(np.mean(offsets)) < 10      # one baseline offset for every label


def test_waterfall_svg_embeds_the_heatmap_and_the_colour_bar(exported):
    out, _ = exported
    root = ET.parse(out / "waterfall_relu_3_n.svg").getroot()
    images = [n for n in root.iter(SVG + "image")]
    assert images and all(n.get("{http://www.w3.org/1999/xlink}href", "").startswith("data:image/png")
                          for n in images)
    _, texts = svg_shapes(out / "waterfall_relu_3_n.svg")
    assert any("Waterfall" in t and "relu 3/n" in t for t, _, _ in texts)


def test_export_figures_takes_run_results_and_survives_nan(tmp_path, qapp):
    def tweak(k, m):
        if k == 3:
            m["grad_h_norm"][:] = np.nan
            m["h_norm"][0, 5:] = np.inf
    cfg = RunConfig.model_validate({"name": "diverged", "task": {"seq_len": 12}})
    result = SimpleNamespace(name="diverged", run=cfg, trace=make_trace(T=12, tweak=tweak), loss_kind="mse",
                             first_batch=None, status="diverged")
    experiment = SimpleNamespace(name="nan test")
    files = figures.export_figures(experiment, [result], tmp_path)
    assert (tmp_path / "through_time.svg") in files and (tmp_path / "composite.png") in files
    ET.parse(tmp_path / "through_time.svg")
    runs = figures.run_data_from_results([result])
    assert runs[0].baseline_loss == pytest.approx(16.0)          # the probe's "predict 0" baseline, k / 2


def test_slugs_are_file_safe_and_unique():
    taken = set()
    assert figures.slug("relu 1.5/n") == "relu_1.5_n"
    assert figures.slug("../..") == "run"
    assert figures.unique("a", taken) == "a" and figures.unique("a", taken) == "a_2"
    assert taken == {"a", "a_2"}
