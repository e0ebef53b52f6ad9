"""The app's views rendered offscreen to PNG and SVG, by the same Figure classes the app shows.

    export_figures(experiment, results, plots_dir)   # the writer the app and the CLI hand io.export_experiment
    render_figures(runs, plots_dir)                   # the same from RunData (the app's Export figures)

Every view that has something to show becomes NAME.png and NAME.svg: through_time and training always (for
runs with data), waterfall_<run> once per run, saturation when a run has a saturation metric (not for linear
RNNs), layers when a run has more than one layer.  composite.png / composite.svg put those pages side by side,
two to a row under the experiment's name: the same renders, not drawn again.  Files are written under a
temporary name and renamed, so a crash never leaves a truncated figure under its final name.

Each figure is drawn once: its pixels go to a worker thread for PNG encoding (zlib releases the GIL) and its
files are written (and fsynced) there while the next figure is drawn; its SVG comes from svg.py.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from . import style
from .model import RunData
from .warmup import offscreen_without_display

FORMATS = ("png", "svg")
VIEW_SIZE = (1400, 800)
COMPOSITE_COLUMNS = 2
COMPOSITE_TITLE_HEIGHT = 60  # px above the pages, for the experiment's name
SATURATION_METRICS = ("relu_dead", "tanh_sat", "sigmoid_sat", "gate_i_sat", "gate_f_sat", "gate_g_sat", "gate_o_sat")


def ensure_app():
    """The running QApplication, or a new one (offscreen when there is no display) with GradScope's plot style."""
    offscreen_without_display()
    from PyQt6 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(["gradscope-figures"])
        ensure_app.app = app  # keep a reference: the app must outlive the figures
    configure_pyqtgraph()
    return app


def configure_pyqtgraph() -> None:
    import pyqtgraph as pg

    pg.setConfigOptions(
        antialias=True, background=style.BACKGROUND, foreground=style.FOREGROUND, imageAxisOrder="row-major"
    )


def run_data_from_results(results) -> list[RunData]:
    """RunData for each gradscope.runs.RunResult (the baseline and the accuracy ceiling, when missing, from the
    run's task)."""
    from ..engine.tasks import make_task

    runs = []
    for index, result in enumerate(results):
        baseline = getattr(result, "baseline_loss", None)
        ceiling = getattr(result, "accuracy_ceiling", None)
        if (baseline is None or ceiling is None) and result.run is not None:
            try:
                task = make_task(result.run.task, result.run.dtype, result.run.architecture)
                baseline = task.baseline_loss if baseline is None else baseline
                ceiling = task.accuracy_ceiling if ceiling is None else ceiling
            except (ValueError, OSError):
                pass  # e.g. a corpus that moved since the run: no baseline line
        data = RunData(
            index,
            result.name,
            style.run_color(index),
            result.trace,
            run=result.run,
            loss_kind=result.loss_kind,
            baseline_loss=baseline,
            first_batch=result.first_batch,
            accuracy_ceiling=ceiling,
        )
        data.result.analysis = getattr(result, "analysis", None)  # the Jacobian and Lyapunov views' rows
        runs.append(data)
    return runs


def export_figures(experiment, results, plots_dir) -> list[Path]:
    """Render every view of an experiment's results to PNG and SVG in plots_dir.  Returns the files written."""
    ensure_app()
    title = getattr(experiment, "name", "") or ""
    # plots_dir is inside the export being built, which io.export_experiment flushes to disk as a whole
    return render_figures(run_data_from_results(results), plots_dir, title=title, durable=False)


ANALYSIS_FIGURES = {
    "jacobian": "jac_sigma_max",
    "lyapunov": "lyapunov",
    "units": "unit_h",
}  # figure -> the analysis key it draws


def shows_something(figure_name: str, runs: list[RunData]) -> bool:
    """Whether a view has anything to draw for these runs (an export leaves the others out)."""
    with_data = [r for r in runs if r.visible and r.has_data()]
    if figure_name == "saturation":
        return any(name in r.trace for r in with_data for name in SATURATION_METRICS)
    if figure_name == "layers":
        return any(r.layers > 1 for r in with_data)
    if figure_name in ANALYSIS_FIGURES:
        from .views.analysis import has_analysis

        return any(has_analysis(r, ANALYSIS_FIGURES[figure_name]) for r in with_data)
    return bool(with_data)


def figure_pages(runs: list[RunData], size=VIEW_SIZE):
    """(stem, widget, figure) for each figure to export, drawn and laid out at ``size``.

    A generator: each page is ready when it is yielded (and the waterfall's one figure is redrawn for the next
    run after that), so a caller renders it before asking for the next.
    """
    import pyqtgraph as pg

    from .rendering import settle
    from .views import FIGURES, WaterfallFigure

    stems: set[str] = set()
    for figure_class in FIGURES:
        if not shows_something(figure_class.name, runs):
            continue
        widget = pg.GraphicsLayoutWidget()
        widget.setBackground(style.BACKGROUND)
        widget.resize(*size)
        figure = figure_class(widget.ci, interactive=False)
        if figure_class is WaterfallFigure:
            for run in runs:
                if run.visible and run.has_data():
                    figure.run_key = run.key
                    figure.refresh(runs)
                    settle(widget)
                    yield unique(f"waterfall_{slug(run.name)}", stems), widget, figure
            continue
        figure.refresh(runs)
        settle(widget)
        yield unique(figure_class.name, stems), widget, figure


def render_figures(runs: list[RunData], plots_dir, title: str = "", formats=FORMATS, durable=True) -> list[Path]:
    """Each view with something to show (the waterfall once per run) and the composite, as files in plots_dir
    (each flushed to disk unless not ``durable``: a folder its caller flushes whole)."""
    from . import svg
    from .rendering import encode_png, render_page, write_atomically

    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; expected png or svg")
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pages = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="gradscope-png") as pool:
        pending = []

        def write_png(path, rgb):
            return write_atomically(path, encode_png(rgb), durable)

        def write_svg(path, data):
            return write_atomically(path, data, durable)

        waterfalls = 0
        for n, (stem, widget, _figure) in enumerate(figure_pages(runs)):
            page = render_page(widget, formats, id_prefix=f"p{n}c")
            waterfalls += stem.startswith("waterfall_")
            if not stem.startswith("waterfall_") or waterfalls <= COMPOSITE_COLUMNS:
                pages.append((stem, page))  # a candidate for the composite (see composite_order)
            if "png" in formats:
                pending.append(pool.submit(write_png, plots_dir / f"{stem}.png", page.rgb))
            if "svg" in formats:
                data = svg.document(
                    page.width, page.height, style.BACKGROUND, page.svg_defs, page.svg_body, title=f"GradScope: {stem}"
                )
                pending.append(pool.submit(write_svg, plots_dir / f"{stem}.svg", data))
        if pages:
            composite = _composite(pages, title, formats)
            if "png" in formats:
                pending.append(pool.submit(write_png, plots_dir / "composite.png", composite.rgb))
            if "svg" in formats:
                pending.append(pool.submit(write_svg, plots_dir / "composite.svg", composite.svg))
        written += [future.result() for future in pending]  # re-raises an encoding or disk error
    return written


def composite_order(stems: list[str]) -> list[str]:
    """The pages of the composite: every view, with the first run's waterfall beside the through-time view;
    further waterfalls only to fill the last row."""
    waterfalls = [s for s in stems if s.startswith("waterfall_")]
    views = [s for s in stems if not s.startswith("waterfall_")]
    order = views[:1] + waterfalls[:1] + views[1:]
    spare = waterfalls[1:]
    while len(order) % COMPOSITE_COLUMNS and spare:
        order.append(spare.pop(0))
    return order


class _Composite(NamedTuple):
    rgb: object  # (H, W, 3) uint8 pixels, or None without "png"
    svg: bytes | None


def _composite(pages, title: str, formats) -> _Composite:
    """The pages side by side, COMPOSITE_COLUMNS to a row, under a title: pixels and SVG from the renders."""
    import numpy as np

    from . import svg

    by_stem = dict(pages)
    chosen = [by_stem[s] for s in composite_order([stem for stem, _ in pages])]
    cell_w = max(p.width for p in chosen)
    cell_h = max(p.height for p in chosen)
    rows = -(-len(chosen) // COMPOSITE_COLUMNS)
    columns = min(COMPOSITE_COLUMNS, len(chosen))
    top = COMPOSITE_TITLE_HEIGHT if title else 0
    width, height = columns * cell_w, top + rows * cell_h
    heading = f"GradScope: {title}" if title else ""
    rgb = None
    if "png" in formats:
        rgb = np.full((height, width, 3), 255, dtype=np.uint8)  # (H, W, 3) white
        for i, page in enumerate(chosen):
            y, x = top + (i // COMPOSITE_COLUMNS) * cell_h, (i % COMPOSITE_COLUMNS) * cell_w
            rgb[y : y + page.height, x : x + page.width] = page.rgb
        if heading:
            rgb[:top] = _title_pixels(heading, width, top)
    svg_bytes = None
    if "svg" in formats:
        defs, body = [], []
        if heading:
            body.append(svg.text_element(heading, width / 2, top * 0.62, 22, style.FOREGROUND))
        for i, page in enumerate(chosen):
            y, x = top + (i // COMPOSITE_COLUMNS) * cell_h, (i % COMPOSITE_COLUMNS) * cell_w
            defs += page.svg_defs
            body.append(svg.translated(page.svg_body, x, y))
        svg_bytes = svg.document(width, height, style.BACKGROUND, defs, body, title=heading or "GradScope")
    return _Composite(rgb, svg_bytes)


def _title_pixels(text: str, width: int, height: int):
    """(height, width, 3) pixels of a centred title line."""
    from PyQt6 import QtCore, QtGui

    from .rendering import image_rgb

    image = QtGui.QImage(width, height, QtGui.QImage.Format.Format_RGB32)
    image.fill(QtGui.QColor(style.BACKGROUND))
    painter = QtGui.QPainter(image)
    try:
        painter.setRenderHint(QtGui.QPainter.RenderHint.TextAntialiasing, True)
        font = QtGui.QFont(QtGui.QGuiApplication.font())
        font.setPixelSize(22)
        painter.setFont(font)
        painter.setPen(QtGui.QColor(style.FOREGROUND))
        painter.drawText(QtCore.QRectF(0, 0, width, height), QtCore.Qt.AlignmentFlag.AlignCenter, text)
    finally:
        painter.end()
    return image_rgb(image)


def unique(stem: str, taken: set[str]) -> str:
    """stem, or stem_2, stem_3, ... if taken (two runs whose names differ only in punctuation)."""
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}_{n}"
    taken.add(candidate)
    return candidate


def slug(name: str) -> str:
    """A run name as a file-name part: letters, digits, '.', '-' and '_' kept, the rest '_', at most 60 characters
    (a file name has at most 255 bytes; unique() tells apart names that agree up to there)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60].strip("._")
    return cleaned or "run"
