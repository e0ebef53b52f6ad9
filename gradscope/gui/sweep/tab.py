"""The Sweep tab: open a finished sweep folder, or run a sweep (on local worker processes or on the Dask
cluster whose scheduler address is typed in) and watch its figure fill in as points finish; export the figure
as PNG and SVG.  The sweep, the loading and the mean-field lines all run in worker threads; rows come back by
signal and a 5 Hz timer redraws the figure when they changed."""

from __future__ import annotations

import os
import threading
import traceback
from pathlib import Path

from PyQt6 import QtCore, QtWidgets

from .. import style
from ..rendering import encode_png, render_page, settle, write_atomically
from .data import SweepData
from .figure import SweepFigure

REDRAW_MS = 200


class _Job(QtCore.QThread):
    """Runs ``work(job)`` off the GUI thread; ``job.emit_row`` and ``job.emit_progress`` send data back."""

    row = QtCore.pyqtSignal(dict)
    progress = QtCore.pyqtSignal(str)
    lines = QtCore.pyqtSignal(dict)
    done = QtCore.pyqtSignal(object, str)  # (result, message)
    failed = QtCore.pyqtSignal(str)  # traceback text

    def __init__(self, work, parent=None):
        super().__init__(parent)
        self.work = work
        self.stop_event = threading.Event()

    def run(self) -> None:  # Qt override: the thread's body
        try:
            result, message = self.work(self)
            self.done.emit(result, message)
        except Exception:  # noqa: BLE001  (every failure ends as a visible message, never a dead thread)
            self.failed.emit(traceback.format_exc())


class SweepTab(QtWidgets.QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: SweepData | None = None
        self.experiment = None  # the window's experiment, when it has a [sweep] table
        self.job: _Job | None = None
        self.last_error: str | None = None
        self.figure = SweepFigure()
        self.open_button = QtWidgets.QPushButton("Open sweep folder…")
        self.run_button = QtWidgets.QPushButton("Run sweep…")
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.export_button = QtWidgets.QPushButton("Export PNG + SVG…")
        self.workers = QtWidgets.QSpinBox()
        self.workers.setRange(1, 256)
        self.workers.setValue(max(1, os.cpu_count() or 1))
        self.workers.setToolTip("Local worker processes (ignored with a scheduler)")
        self.scheduler = QtWidgets.QLineEdit()
        self.scheduler.setMinimumWidth(120)
        self.scheduler.setPlaceholderText("Dask scheduler tcp://host:8786 (empty: local)")
        self.run_choice = QtWidgets.QComboBox()
        self.run_choice.setToolTip("The run of the sweep to draw (two keys: one heatmap per run)")
        self.quantity = QtWidgets.QComboBox()
        self.quantity.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.quantity.setToolTip("Two keys: the heatmap's quantity (lambda_max once the points were analysed)")
        self.status = QtWidgets.QLabel("Open a sweep folder, or run an experiment file that has a [sweep] table")
        self.status.setStyleSheet(f"color: {style.FOREGROUND}")
        self.status.setWordWrap(True)  # a long progress line wraps instead of widening the window past the screen
        # Two rows: running a sweep, then what is drawn; on one row they made the window 1,400 px wide at least.
        bar = QtWidgets.QHBoxLayout()
        for widget in (self.open_button, self.run_button, QtWidgets.QLabel("workers"), self.workers):
            bar.addWidget(widget)
        bar.addWidget(self.scheduler, 1)
        bar.addWidget(self.stop_button)
        shown = QtWidgets.QHBoxLayout()
        for widget in (QtWidgets.QLabel("run"), self.run_choice, self.quantity, self.export_button):
            shown.addWidget(widget)
        shown.addStretch(1)
        column = QtWidgets.QVBoxLayout(self)
        column.addLayout(bar)
        column.addLayout(shown)
        column.addWidget(self.figure, 1)
        column.addWidget(self.status)
        self.open_button.clicked.connect(self.open_dialog)
        self.run_button.clicked.connect(self.run_dialog)
        self.stop_button.clicked.connect(self.stop)
        self.export_button.clicked.connect(self.export_dialog)
        self.run_choice.currentTextChanged.connect(lambda _: self.redraw())
        self.quantity.currentTextChanged.connect(lambda _: self.redraw())
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()
        self._sync_buttons()
        self.redraw()

    # ------------------------------------------------------------------------------------------ state
    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.isRunning()

    def _sync_buttons(self) -> None:
        self.stop_button.setEnabled(self.busy)
        self.open_button.setEnabled(not self.busy)
        self.run_button.setEnabled(not self.busy)
        self.export_button.setEnabled(self.data is not None)

    def set_experiment(self, experiment) -> None:
        """The window's experiment: what Run sweep… runs by default (when it has a [sweep] table)."""
        self.experiment = experiment if getattr(experiment, "sweep", None) is not None else None

    def _set_data(self, data: SweepData) -> None:
        self.data = data
        self.run_choice.blockSignals(True)
        self.run_choice.clear()
        self.run_choice.addItems(data.runs)
        self.run_choice.blockSignals(False)
        self._sync_buttons()
        self.redraw()

    def redraw(self) -> bool:
        if self.data is not None:
            offered = self.data.quantities()
            if [self.quantity.itemText(i) for i in range(self.quantity.count())] != offered:
                chosen = self.quantity.currentText()
                self.quantity.blockSignals(True)
                self.quantity.clear()
                self.quantity.addItems(offered)
                self.quantity.setCurrentText(chosen if chosen in offered else offered[0])
                self.quantity.blockSignals(False)
        column = self.quantity.currentText() or "log_gain_per_step"
        return self.figure.show_sweep(self.data, self.run_choice.currentText() or None, column)

    def _start(self, job: _Job) -> None:
        self.job = job
        job.row.connect(self._on_row)
        job.progress.connect(self.status.setText)
        job.lines.connect(lambda lines: self.data.set_lines(lines) if self.data is not None else None)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.finished.connect(self._sync_buttons)
        job.start(QtCore.QThread.Priority.LowPriority)
        self._sync_buttons()

    def _on_row(self, row: dict) -> None:
        if self.data is not None:
            self.data.add_row(row)

    def _on_done(self, result, message: str) -> None:
        if isinstance(result, SweepData):
            self._set_data(result)
        self.status.setText(message)
        self.redraw()

    def _on_failed(self, text: str) -> None:
        self.last_error = text
        self.status.setText(f"Failed: {text.strip().splitlines()[-1]}")

    # ------------------------------------------------------------------------------------------ open
    def open_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Open sweep folder")
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder) -> _Job:
        """Read the folder's experiment.toml and sweep.csv and its mean-field lines, in a worker thread."""

        def work(job):
            data = SweepData.from_folder(folder)
            data.compute_theory()
            done, failed = data.counts()
            return data, f"Opened {folder}: {done}/{data.total} points done, {failed} failed"

        self.status.setText(f"Opening {folder}…")
        job = _Job(work, self)
        self._start(job)
        return job

    # ------------------------------------------------------------------------------------------ run
    def run_dialog(self) -> None:
        experiment = self.experiment
        if experiment is None:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(
                self, "Experiment with a [sweep] table", "", "TOML (*.toml)"
            )
            if not path:
                return
            from ... import config

            try:
                experiment = config.load(path)
            except config.ConfigError as error:
                self.status.setText(str(error))
                return
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Folder of the sweep (new, or one to resume)")
        if folder:
            chosen = Path(folder)
            fresh = not any(chosen.iterdir()) or (chosen / "sweep.json").exists()  # empty, or a sweep to resume
            self.run_sweep(experiment, chosen if fresh else chosen / experiment.name)

    def run_sweep(self, experiment, out, workers: int | None = None, scheduler: str | None = None) -> _Job:
        """Run (or resume) ``experiment``'s sweep into ``out`` in a worker thread; rows fill the figure live."""
        from ...sweep import run_sweep

        scheduler = scheduler if scheduler is not None else (self.scheduler.text().strip() or None)
        workers = workers or self.workers.value()
        self._set_data(SweepData(experiment, Path(out)))

        def work(job):
            job.lines.emit(SweepData(experiment).theory_lines())  # its own copy: the GUI thread owns self.data
            summary = run_sweep(
                experiment,
                out,
                workers=workers,
                scheduler=scheduler,
                resume=True,
                stop=job.stop_event,
                on_row=job.row.emit,
                on_progress=lambda p: job.progress.emit(f"{p.summary()}, on {p.where}"),
            )
            p = summary.progress
            state = "stopped" if summary.stopped else "finished"
            return None, f"Sweep {state}: {p.done}/{p.total} points done, {p.failed} failed, in {summary.out}"

        self.status.setText(f"Starting the sweep into {out}…")
        job = _Job(work, self)
        self._start(job)
        return job

    def stop(self) -> None:
        if self.job is not None:
            self.job.stop_event.set()
            self.status.setText("Stopping: finished points stay in sweep.csv…")

    def close_job(self, timeout_ms: int = 30000) -> None:
        """Stop and wait for the worker thread (the window closing)."""
        if self.busy:
            self.stop()
            self.job.wait(timeout_ms)

    # ------------------------------------------------------------------------------------------ export
    def export_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Export the sweep figure to")
        if folder:
            paths = self.export_to(folder)
            self.status.setText(f"Exported {', '.join(str(p) for p in paths)}")

    def export_to(self, folder, stem: str = "sweep") -> list[Path]:
        """The figure as ``stem``.png and ``stem``.svg in ``folder`` (the same renderer as every view)."""
        from .. import svg

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.redraw()
        if not self.figure.isVisible():
            settle(self.figure)
        page = render_page(self.figure, ("png", "svg"))
        png = write_atomically(folder / f"{stem}.png", encode_png(page.rgb))
        document = svg.document(
            page.width, page.height, style.BACKGROUND, page.svg_defs, page.svg_body, title=f"GradScope: {stem}"
        )
        return [png, write_atomically(folder / f"{stem}.svg", document)]


__all__ = ["SweepTab"]
