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
_TRANSLATE = re.compile(r"translate\(([^)]*)\)")


def svg_shapes(path):
    """(curves, texts) of an SVG file in absolute coordinates.

    curves: (stroke colour, (n, 2) vertices) of every path; texts: (text, x, y).
    """
    curves, texts = [], []

    def walk(node, M, stroke):
        transform = node.get("transform")
        if transform and _MATRIX.search(transform):
            a, b, c, d, e, f = (float(v) for v in _MATRIX.search(transform).group(1).split(","))
            M = M @ np.array([[a, c, e], [b, d, f], [0, 0, 1]])
        elif transform:
            e, f = (float(v) for v in _TRANSLATE.search(transform).group(1).split(","))
            M = M @ np.array([[1, 0, e], [0, 1, f], [0, 0, 1]])
        stroke = node.get("stroke", stroke)
        if node.tag == SVG + "path":
            pts = np.array(
                [[float(x), float(y)] for x, y in re.findall(r"[ML]\s*([-\d.e]+),([-\d.e]+)", node.get("d", ""))]
            )
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
    cfg = RunConfig.model_validate(
        {
            "name": "relu 3/n",
            "hidden_size": 16,
            "init": {"recurrent_scale": 3.0},
            "task": {"seq_len": T},
            "train": {"clip_norm": 1.0},
        }
    )
    return [
        RunData(0, "relu 3/n", "#0072B2", make_trace(T=T), run=cfg, baseline_loss=16.0),
        RunData(1, "tanh 1.5/n", "#D55E00", make_trace(activation="tanh", T=T, gain=0.8)),
        RunData(2, "lstm", "#009E73", make_trace(cell="lstm", layers=2, T=T)),
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, qapp):
    out = tmp_path_factory.mktemp("plots")
    files = figures.render_figures(demo_runs(), out, title="test")
    return out, files


def test_every_view_and_the_composite_are_written_as_png_and_svg(exported):
    out, files = exported
    stems = {
        "through_time",
        "waterfall_relu_3_n",
        "waterfall_tanh_1.5_n",
        "waterfall_lstm",
        "training",
        "saturation",
        "layers",
        "composite",
    }
    assert {f.name for f in files} == {f"{s}.{ext}" for s in stems for ext in ("png", "svg")}
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in files)  # no partial files left
    for f in files:
        if f.suffix == ".png":
            image = QtGui.QImage(str(f))
            assert not image.isNull() and image.width() >= 1000
            # the run colours are on the image: it is not blank
            colours = {
                image.pixelColor(x, y).name() for x in range(0, image.width(), 3) for y in range(0, image.height(), 3)
            }
            assert len(colours) > 20, f.name


def test_svg_is_valid_and_holds_every_curve_where_the_axis_says(exported):
    out, _ = exported
    T = 12
    curves, texts = svg_shapes(out / "through_time.svg")  # ET.parse: well-formed XML
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
    # the x coordinates are evenly spaced timesteps (page coordinates are written to 1/1000 px)
    xs = next(pts[:, 0] for pts in by_colour["#0072b2"])
    assert np.diff(xs) == pytest.approx(np.full(T - 1, np.diff(xs)[0]), abs=2e-3)
    # run 1's gradient uses the same vertical map (no per-curve shift)
    tanh = np.log10(grad_values(3, 0, T, gain=0.8))
    assert any(np.allclose(pts[:, 1], a * tanh + b, atol=1e-3) for pts in by_colour["#d55e00"])
    # and the decade labels of the axis sit at a * k + b: curves and axis agree (pyqtgraph#2941 shifted them)
    state_title = min(y for t, _, y in texts if t.startswith("Hidden state"))  # the plot below starts here
    decades = {
        int(m.translate(str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-"))[2:]): y
        for m, x, y in texts
        if m.startswith("10") and len(m) > 2 and x < 100 and y < state_title
    }
    assert len(decades) >= 3
    offsets = [y - (a * k + b) for k, y in decades.items()]
    assert np.ptp(offsets) < 1.0 and abs(np.mean(offsets)) < 10  # one baseline offset for every label


def test_waterfall_svg_embeds_the_heatmap_and_the_colour_bar(exported):
    out, _ = exported
    root = ET.parse(out / "waterfall_relu_3_n.svg").getroot()
    images = [n for n in root.iter(SVG + "image")]
    assert images and all(n.get("{http://www.w3.org/1999/xlink}href", "").startswith("data:image/png") for n in images)
    _, texts = svg_shapes(out / "waterfall_relu_3_n.svg")
    assert any("Waterfall" in t and "relu 3/n" in t for t, _, _ in texts)


def test_export_figures_takes_run_results_and_survives_nan(tmp_path, qapp):
    def tweak(k, m):
        if k == 3:
            m["grad_h_norm"][:] = np.nan
            m["h_norm"][0, 5:] = np.inf

    cfg = RunConfig.model_validate({"name": "diverged", "task": {"seq_len": 12}})
    result = SimpleNamespace(
        name="diverged",
        run=cfg,
        trace=make_trace(T=12, tweak=tweak),
        loss_kind="mse",
        first_batch=None,
        status="diverged",
    )
    experiment = SimpleNamespace(name="nan test")
    files = figures.export_figures(experiment, [result], tmp_path)
    assert (tmp_path / "through_time.svg") in files and (tmp_path / "composite.png") in files
    ET.parse(tmp_path / "through_time.svg")
    runs = figures.run_data_from_results([result])
    assert runs[0].baseline_loss == pytest.approx(16.0)  # the probe's "predict 0" baseline, k / 2


def test_slugs_are_file_safe_and_unique():
    taken = set()
    assert figures.slug("relu 1.5/n") == "relu_1.5_n"
    assert figures.slug("../..") == "run"
    assert figures.unique("a", taken) == "a" and figures.unique("a", taken) == "a_2"
    assert taken == {"a", "a_2"}


# ------------------------------------------------------------------------------ the files themselves
def test_png_files_hold_the_rendered_pixels(tmp_path, qapp):
    """The PNG encoder's files decode (by Qt's libpng) to exactly the pixels drawn, and the composite is the
    pages side by side under the title: its first row is through_time and the first run's waterfall."""
    from gradscope.gui import rendering

    rgb = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)  # (H, W, 3)
    image = QtGui.QImage.fromData(rendering.encode_png(rgb))
    assert not image.isNull() and (image.width(), image.height()) == (53, 37)
    assert np.array_equal(rendering.image_rgb(image.convertToFormat(QtGui.QImage.Format.Format_RGB32)), rgb)

    figures.render_figures(demo_runs(), tmp_path, title="pages")

    def pixels(name):
        image = QtGui.QImage(str(tmp_path / name)).convertToFormat(QtGui.QImage.Format.Format_RGB32)
        return rendering.image_rgb(image)

    composite, through_time, waterfall = (
        pixels(f"{n}.png") for n in ("composite", "through_time", "waterfall_relu_3_n")
    )
    h, w, _ = through_time.shape
    top = figures.COMPOSITE_TITLE_HEIGHT
    assert composite.shape == (top + 3 * h, 2 * w, 3)  # 5 views and 3 waterfalls: 6 pages, 3 rows
    assert np.array_equal(composite[top : top + h, :w], through_time)
    assert np.array_equal(composite[top : top + h, w:], waterfall)
    assert (composite[:top] < 128).any()  # the title's dark text


def test_svg_curves_sit_inside_their_plots_and_scale_like_the_page(exported):
    """Curves are in page coordinates (no group transform, so viewers without non-scaling strokes draw them
    2 px wide) and inside the clip rectangle of their plot; the composite places pages by translation."""
    out, _ = exported
    for name in ("through_time.svg", "training.svg", "composite.svg"):
        root = ET.parse(out / name).getroot()
        clips = {}
        for clip in root.iter(SVG + "clipPath"):
            r = clip.find(SVG + "rect")
            clips[clip.get("id")] = [float(r.get(k)) for k in ("x", "y", "width", "height")]
        assert clips, name
        clipped = 0

        def walk(node, offset, clip, *, clips=clips, name=name):  # this file's clip rects and name
            nonlocal clipped
            transform = node.get("transform", "")
            if transform.startswith("translate"):
                dx, dy = (float(v) for v in _TRANSLATE.search(transform).group(1).split(","))
                offset = (offset[0] + dx, offset[1] + dy)
            if node.get("clip-path"):
                clip = clips[node.get("clip-path")[5:-1]]
                clip = (clip[0] + offset[0], clip[1] + offset[1], clip[2], clip[3])
            if node.tag == SVG + "path" and clip is not None:
                pts = np.array(
                    [[float(x), float(y)] for x, y in re.findall(r"([-\d.e]+),([-\d.e]+)", node.get("d", ""))]
                )
                if len(pts) > 2:
                    pts = pts + offset
                    x, y, w, h = clip
                    pad = 12  # a dot's radius, a marker above the data
                    assert (pts[:, 0] >= x - pad).all() and (pts[:, 0] <= x + w + pad).all(), name
                    assert (pts[:, 1] >= y - pad).all() and (pts[:, 1] <= y + h + pad).all(), name
                    clipped += 1
            for child in node:
                walk(child, offset, clip)

        walk(root, (0.0, 0.0), None)
        assert clipped >= 2, name
        for group in root.iter(SVG + "g"):
            if "matrix" in group.get("transform", ""):
                assert not group.findall(SVG + "path") and not group.findall(SVG + "polyline"), name
        # fonts: what Qt drew with, then a generic family every viewer has (Qt writes "Sans Serif", an alias)
        families = {node.get("font-family") for node in root.iter() if node.get("font-family")}
        assert families and all(f.endswith(", sans-serif") for f in families), families


def test_one_recorded_iteration_reads_as_such(tmp_path, qapp):
    """The lecture demo's shape (iterations = 0, RNNs only): dots for the single loss and norm values, whole
    iteration numbers on the axes (no "x0.001"), and no empty LSTM panel or single-layer layers figure."""
    from gradscope.gui.views import SaturationFigure, TrainingFigure, WaterfallFigure

    runs = [
        RunData(i, name, color, make_trace(T=100, K=1, gain=gain))
        for i, (name, color, gain) in enumerate((("relu 3/n", "#0072B2", 1.2), ("relu 1.5/n", "#D55E00", 0.9)))
    ]
    drawn = list(figures.figure_pages(runs, size=(1000, 600)))
    pages = {stem: figure for stem, _widget, figure in drawn}  # (the widgets stay alive in drawn)
    assert set(pages) == {"through_time", "waterfall_relu_3_n", "waterfall_relu_1.5_n", "training", "saturation"}
    training = pages["training"]
    assert isinstance(training, TrainingFigure)
    for key, run in enumerate(runs):
        loss = run.trace.array("loss")[0]
        assert training.loss_curves.dot_positions(key) == pytest.approx(np.array([[0, np.log10(loss)]]))
    axis = training.loss_plot.getAxis("bottom")
    (x0, x1), _ = training.loss_plot.getViewBox().viewRange()
    assert x0 < 0 < x1 and x1 - x0 <= 2
    assert [v for _, values in axis.tickValues(x0, x1, 500) for v in values] == [0]
    saturation = pages["saturation"]
    assert isinstance(saturation, SaturationFigure)
    assert not saturation.gate_plot.isVisible() and saturation.sat_plot.isVisible()
    waterfall = pages["waterfall_relu_1.5_n"]
    assert isinstance(waterfall, WaterfallFigure)
    axis = waterfall.plot.getAxis("left")
    (y0, y1) = waterfall.plot.getViewBox().viewRange()[1]
    assert [v for _, values in axis.tickValues(y0, y1, 500) for v in values] == [0]
    assert axis.labelString().find("x0.001") < 0 and axis.autoSIPrefixScale == 1.0

    files = figures.render_figures(runs, tmp_path)
    assert {f.name for f in files} == {f"{s}.{ext}" for s in list(pages) + ["composite"] for ext in ("png", "svg")}


def test_linear_rnns_have_no_saturation_figure(tmp_path, qapp):
    runs = [RunData(0, "linear", "#0072B2", make_trace(activation="linear", K=2))]
    stems = [stem for stem, _, _ in figures.figure_pages(runs, size=(800, 500))]
    assert stems == ["through_time", "waterfall_linear", "training"]
