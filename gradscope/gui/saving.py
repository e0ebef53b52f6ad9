"""The main window's File > Save and Export actions (a mixin of MainWindow: they use its controller,
status bar and dialogs)."""

from __future__ import annotations

import time
from pathlib import Path

from PyQt6 import QtCore, QtWidgets

from .. import config, io as gio
from . import unsaved
from .figures import export_figures


class SavingAndExport:
    """Save the experiment file, export traces and figures (MainWindow's)."""

    def save(self) -> bool:
        experiment = self.controller.experiment
        if experiment is None:
            return False
        if experiment.source is None or not str(experiment.source).endswith(".toml"):
            return self.save_as_dialog()
        return self.save_to(experiment.source)

    def save_as_dialog(self) -> bool:
        if self.controller.experiment is None:
            return False
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Save experiment", str(self._source_dir()), "Experiment files (*.toml)"
        )
        return self.save_to(path) if path else False

    def save_to(self, path) -> bool:
        path = Path(path)
        experiment = self.controller.experiment
        try:
            config.save(experiment, path)
        except (OSError, ValueError) as error:
            self.show_error("Cannot save the experiment", f"{path}: {error}")
            return False
        self.controller.experiment = experiment.model_copy(update={"source": path})
        self.setWindowModified(False)
        self._add_recent(path)
        self._update_title()
        self.statusBar().showMessage(f"Saved {path}", 10000)
        return True

    # ------------------------------------------------------------------------------------- export
    def export_dialog(self) -> None:
        if self.controller.experiment is None:
            return
        parent = QtWidgets.QFileDialog.getExistingDirectory(self, "Export into which folder?", str(Path.cwd()))
        if parent:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.export_to(Path(parent) / f"{self.controller.experiment.name}-{stamp}")

    def export_to(self, out_dir) -> Path | None:
        """Traces, parameters, batches and figures of every run with data (same code as the CLI)."""
        results = self.controller.results()
        if not results:
            self.show_error("Nothing to export", "No run has recorded anything yet: press Run first.")
            return None
        experiment = self.controller.experiment
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.CursorShape.WaitCursor)
        try:
            out = gio.export_experiment(out_dir, experiment, results, figures=export_figures)
        except gio.FigureExportError as error:
            self.show_error(
                "Figures failed",
                f"The traces are in {error.path}, but the figures failed.",
                error.details,
                warning=True,
            )
            return error.path
        except gio.ExportError as error:  # the folder holds something else: refused before anything is written
            self.show_error("Cannot export", f"{out_dir}: {error}")
            return None
        except OSError as error:  # a full disk, an unwritable folder: say so, keep the traces, offer another
            self.recording.export_failed(out_dir, error)
            return None
        except ValueError as error:
            self.show_error("Cannot export", f"{out_dir}: {error}")
            return None
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()
        self._exported = unsaved.signature(self)
        self.statusBar().showMessage(f"Exported {len(results)} run(s) to {out}", 15000)
        return out

    def export_figures_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Export figures into", str(Path.cwd()))
        if folder:
            self.export_figures_to(folder)

    def export_figures_to(self, folder) -> list[Path]:
        from .figures import render_figures

        title = self.controller.experiment.name if self.controller.experiment else ""
        try:
            files = render_figures(self.controller.run_data(), folder, title=title)
        except OSError as error:
            self.show_error("Cannot export the figures", f"{folder}: {error}")
            return []
        self.statusBar().showMessage(f"Wrote {len(files)} figure files to {folder}", 15000)
        return files
