"""The app's views rendered offscreen to PNG and SVG, by the same Figure classes the app shows.

    export_figures(experiment, results, plots_dir)   # what gradscope.io.export_experiment calls
    render_figures(runs, plots_dir)                   # the same from RunData (the app's Export figures)

Every view becomes NAME.png and NAME.svg (the waterfall once per run), plus composite.png / composite.svg
with all views on one page.  Files are written under a temporary name and renamed, so a crash never leaves
a truncated figure under its final name.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from . import style
from .model import RunData

FORMATS = ("png", "svg")
VIEW_SIZE = (1400, 800)
COMPOSITE_SIZE = (2000, 2100)


def ensure_app():
    """The running QApplication, or a new one (offscreen when there is no display) with GradScope's plot style."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt6 import QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(["gradscope-figures"])
        ensure_app.app = app               # keep a reference: the app must outlive the figures
    configure_pyqtgraph()
    return app


def configure_pyqtgraph() -> None:
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=True, background=style.BACKGROUND, foreground=style.FOREGROUND,
                        imageAxisOrder="row-major")


def run_data_from_results(results) -> list[RunData]:
    """RunData for each gradscope.io.RunResult (the baseline comes from the run's task)."""
    from ..engine.tasks import make_task

    runs = []
    for index, result in enumerate(results):
        baseline = None
        if result.run is not None:
            try:
                baseline = make_task(result.run.task, result.run.dtype).baseline_loss
            except (ValueError, OSError):
                baseline = None               # e.g. a corpus that moved since the run: no baseline line
        runs.append(RunData(index, result.name, style.run_color(index), result.trace, run=result.run,
                            loss_kind=result.loss_kind, baseline_loss=baseline, first_batch=result.first_batch))
    return runs


def export_figures(experiment, results, plots_dir) -> list[Path]:
    """Render every view of an experiment's results to PNG and SVG in plots_dir.  Returns the files written."""
    ensure_app()
    title = getattr(experiment, "name", "") or ""
    return render_figures(run_data_from_results(results), plots_dir, title=title)


def render_figures(runs: list[RunData], plots_dir, title: str = "", formats=FORMATS) -> list[Path]:
    """Each view (the waterfall once per run with data) and a composite figure, as files in plots_dir."""
    import pyqtgraph as pg

    from .views import FIGURES, WaterfallFigure

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    stems: set[str] = set()
    for figure_class in FIGURES:
        if figure_class is WaterfallFigure:
            for run in runs:
                if run.has_data():
                    widget, figure = _figure_widget(figure_class, runs, VIEW_SIZE)
                    figure.run_key = run.key
                    figure.refresh(runs)
                    stem = unique(f"waterfall_{slug(run.name)}", stems)
                    written += _export(widget, plots_dir / stem, formats)
            continue
        widget, _ = _figure_widget(figure_class, runs, VIEW_SIZE)
        written += _export(widget, plots_dir / figure_class.name, formats)

    widget = pg.GraphicsLayoutWidget()
    widget.setBackground(style.BACKGROUND)
    widget.resize(*COMPOSITE_SIZE)
    if title:
        widget.ci.addLabel(f"GradScope: {title}", row=0, col=0, colspan=2, size="16pt")
    cells = {"through_time": (1, 0), "waterfall": (1, 1), "training": (2, 0, 1, 2), "saturation": (3, 0),
             "layers": (3, 1)}
    for figure_class in FIGURES:
        row, col, *span = cells[figure_class.name]
        rowspan, colspan = span or (1, 1)
        figure = figure_class(widget.ci.addLayout(row=row, col=col, rowspan=rowspan, colspan=colspan))
        figure.refresh(runs)
    for row in (1, 2, 3):
        widget.ci.layout.setRowStretchFactor(row, 1)
    written += _export(widget, plots_dir / "composite", formats)
    return written


def _figure_widget(figure_class, runs: list[RunData], size):
    import pyqtgraph as pg

    widget = pg.GraphicsLayoutWidget()
    widget.setBackground(style.BACKGROUND)
    widget.resize(*size)
    figure = figure_class(widget.ci)
    figure.refresh(runs)
    return widget, figure


def _export(widget, stem: Path, formats) -> list[Path]:
    """Write the widget's scene as stem.png / stem.svg, each under a temporary name first."""
    from pyqtgraph.exporters import ImageExporter, SVGExporter
    from PyQt6 import QtWidgets

    _settle(widget)
    written = []
    for fmt in formats:
        final = stem.with_name(f"{stem.name}.{fmt}")          # not with_suffix: run names may hold dots
        temporary = stem.with_name(f".{stem.name}.partial.{fmt}")
        if fmt == "png":
            exporter = ImageExporter(widget.ci)
            exporter.parameters()["width"] = widget.width()
            exporter.export(str(temporary))
        elif fmt == "svg":
            SVGExporter(widget.ci).export(str(temporary))
        else:
            raise ValueError(f"unknown figure format {fmt!r}; expected png or svg")
        if not temporary.exists() or temporary.stat().st_size == 0:
            raise OSError(f"writing {final} failed: the exporter produced no file")
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
        written.append(final)
    QtWidgets.QApplication.processEvents()
    return written


def _settle(widget) -> None:
    """Lay the widget out at its size without showing it, so axes and legends have their final geometry."""
    from PyQt6 import QtWidgets

    widget.ci.layout.activate()
    widget.ci.setGeometry(0, 0, widget.width(), widget.height())
    QtWidgets.QApplication.processEvents()
    widget.ci.layout.activate()


def unique(stem: str, taken: set[str]) -> str:
    """stem, or stem_2, stem_3, ... if taken (two runs whose names differ only in punctuation)."""
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}_{n}"
    taken.add(candidate)
    return candidate


def slug(name: str) -> str:
    """A run name as a file-name part: letters, digits, '.', '-' and '_' kept, the rest '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "run"
