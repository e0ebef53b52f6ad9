"""The app's views rendered offscreen to PNG and SVG, by the same Figure classes the app shows.

    export_figures(experiment, results, plots_dir)   # the writer the app and the CLI hand io.export_experiment
    render_figures(runs, plots_dir)                   # the same from RunData (the app's Export figures)

Every view that has something to show becomes NAME.png and NAME.svg: through_time and training always (for
runs with data), waterfall_<run> once per run, saturation when a run has a saturation metric (not for linear
RNNs), layers when a run has more than one layer.  composite.png / composite.svg put those pages side by side,
two to a row under the experiment's name: the same renders, not drawn again.  Files are written under a
temporary name and renamed, so a crash never leaves a truncated figure under its final name.

Each figure is drawn once: its pixels go to a worker thread for PNG encoding (zlib releases the GIL) and its
files are written (and fsynced) there while the next figure is drawn; its SVG comes from svg.py.  With many
runs (page_pool.MIN_PAGES), the waterfalls past the composite's two are drawn by worker processes
(page_pool.py) meanwhile, by the same code, into the same folder: the files are the same bytes.
"""

from __future__ import annotations

import functools
import itertools
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
    return [run_data_from_result(index, result) for index, result in enumerate(results)]


def run_data_from_result(index: int, result) -> RunData:
    """The RunData of the index-th run of an experiment (its key, colour and references), as
    run_data_from_results makes it."""
    from ..engine.tasks import make_task

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
    return data


def export_figures(experiment, results, plots_dir, ready=None) -> list[Path]:
    """Render every view of an experiment's results to PNG and SVG in plots_dir.  Returns the files written.
    ``ready``: pages already in plots_dir (page_ahead.PagesAhead.move_into), kept where they are the plan's."""
    ensure_app()
    title = getattr(experiment, "name", "") or ""
    # plots_dir is inside the export being built, which io.export_experiment flushes to disk as a whole
    return render_figures(run_data_from_results(results), plots_dir, title=title, durable=False, ready=ready)


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


def page_plan(runs: list[RunData]) -> list[tuple[type, str, RunData | None]]:
    """(figure class, file stem, run) of every page to export, in order: the waterfall once per run with data
    (its run given), every other view with something to show once (run None).  Nothing is drawn yet."""
    from .views import FIGURES, WaterfallFigure

    stems: set[str] = set()
    plan: list[tuple[type, str, RunData | None]] = []
    for figure_class in FIGURES:
        if not shows_something(figure_class.name, runs):
            continue
        if figure_class is WaterfallFigure:
            for run in runs:
                if run.visible and run.has_data():
                    plan.append((figure_class, unique(f"waterfall_{slug(run.name)}", stems), run))
            continue
        plan.append((figure_class, unique(figure_class.name, stems), None))
    return plan


def new_page(figure_class, size=VIEW_SIZE):
    """(widget, figure): an offscreen widget of ``size`` holding a new, non-interactive figure of the class."""
    import pyqtgraph as pg

    widget = pg.GraphicsLayoutWidget()
    widget.setBackground(style.BACKGROUND)
    widget.resize(*size)
    return widget, figure_class(widget.ci, interactive=False)


def figure_pages(runs: list[RunData], size=VIEW_SIZE, plan=None):
    """(stem, widget, figure) for each page of ``plan`` (default: page_plan(runs)), drawn and laid out at
    ``size``.

    A generator: each page is ready when it is yielded (and the waterfall's one figure is redrawn for the next
    run after that), so a caller renders it before asking for the next.
    """
    from .rendering import settle

    for figure_class, group in itertools.groupby(page_plan(runs) if plan is None else plan, key=lambda p: p[0]):
        widget, figure = new_page(figure_class, size)
        for _, stem, run in group:
            if run is not None:
                figure.run_key = run.key
            figure.refresh(runs)
            settle(widget)
            yield stem, widget, figure


def page_writes(plots_dir: Path, stem: str, page, formats, durable: bool) -> list:
    """The page's files as calls that write them and return their paths (PNG encoding, SVG text and the disk:
    for a worker thread or process)."""
    from . import svg

    writes = []
    if "png" in formats:
        writes.append(functools.partial(_write_png, plots_dir / f"{stem}.png", page.rgb, durable))
    if "svg" in formats:
        data = svg.document(
            page.width, page.height, style.BACKGROUND, page.svg_defs, page.svg_body, title=f"GradScope: {stem}"
        )
        writes.append(functools.partial(_write_bytes, plots_dir / f"{stem}.svg", data, durable))
    return writes


def _write_png(path: Path, rgb, durable: bool) -> Path:
    from .rendering import encode_png, write_atomically

    return write_atomically(path, encode_png(rgb), durable)


def _write_bytes(path: Path, data: bytes, durable: bool) -> Path:
    from .rendering import write_atomically

    return write_atomically(path, data, durable)


def render_figures(
    runs: list[RunData], plots_dir, title: str = "", formats=FORMATS, durable=True, ready=None
) -> list[Path]:
    """Each view with something to show (the waterfall once per run) and the composite, as files in plots_dir
    (each flushed to disk unless not ``durable``: a folder its caller flushes whole).

    With many runs the waterfalls past the composite's are drawn by worker processes (page_pool.PagePool)
    while this process draws the other views; each page is drawn by the same code, so the files are the same.
    ``ready`` ({stem: Drawn}): waterfall pages already in plots_dir, drawn while the runs went on
    (page_ahead.py); each is kept if it is the page the plan has under its stem (same place, run and rows),
    else removed and drawn again.
    """
    from .page_pool import PagePool, app_font, worth_pool
    from .rendering import render_page

    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; expected png or svg")
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    plan = page_plan(runs)
    number = {stem: n for n, (_, stem, _) in enumerate(plan)}  # a page's place: the prefix of its SVG ids
    waterfalls = [n for n, (_, stem, _) in enumerate(plan) if stem.startswith("waterfall_")]
    kept, done = _kept_pages(plan, ready or {}, formats, set(waterfalls[:COMPOSITE_COLUMNS]), app_font())
    waterfalls_left = [n for n in waterfalls if n not in done]
    elsewhere = set(waterfalls_left[COMPOSITE_COLUMNS:]) if worth_pool(len(waterfalls_left)) else set()
    pages = []  # candidates for the composite (see composite_order): every view and the first waterfalls
    with PagePool(plots_dir, formats, durable) as pool, ThreadPoolExecutor(2, "gradscope-png") as threads:
        pool.draw([(n, plan[n][1], plan[n][2]) for n in sorted(elsewhere)])  # started first: they take longest
        pending = []
        here = [entry for n, entry in enumerate(plan) if n not in elsewhere and n not in done]
        for stem, widget, _figure in figure_pages(runs, plan=here):
            page = render_page(widget, formats, id_prefix=f"p{number[stem]}c")
            if not stem.startswith("waterfall_") or number[stem] in waterfalls[:COMPOSITE_COLUMNS]:
                pages.append((stem, page))
            pending += [threads.submit(write) for write in page_writes(plots_dir, stem, page, formats, durable)]
        if pages:
            composite = _composite(pages, title, formats)
            if "png" in formats:
                pending.append(threads.submit(_write_png, plots_dir / "composite.png", composite.rgb, durable))
            if "svg" in formats:
                pending.append(threads.submit(_write_bytes, plots_dir / "composite.svg", composite.svg, durable))
        written = [future.result() for future in pending]  # re-raises an encoding or disk error
        written += pool.written()  # the workers' pages, or their error
    return written + kept


def _kept_pages(plan, ready: dict, formats, composite: set[int], font) -> tuple[list[Path], set[int]]:
    """(files, page numbers) of the ``ready`` pages that are the plan's own: the same stem at the same place
    (its SVG ids), of the same run with the same recorded rows, in this process's application font ``font``
    and every format, and not one the composite needs drawn here.  The other ready pages' files are removed
    (they are drawn again, or are not pages of this export at all)."""
    kept: list[Path] = []
    done: set[int] = set()
    for n, (_, stem, run) in enumerate(plan):
        drawn = ready.get(stem)
        if drawn is None or run is None or n in composite:
            continue
        if drawn.matches(n, run, font) and {p.suffix[1:] for p in drawn.files} == set(formats):
            kept += drawn.files
            done.add(n)
    kept_stems = {plan[n][1] for n in done}
    for stem, drawn in ready.items():
        if stem not in kept_stems:
            for path in drawn.files:
                path.unlink(missing_ok=True)
    return kept, done


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
