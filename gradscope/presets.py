"""The experiment files shipped with GradScope: the repository's top-level models/ folder, installed with the
package as ``gradscope.models`` (pyproject.toml maps that package to models/ and ships its *.toml files).

    preset_files()          # [.../models/char_lstm_vs_tanh.toml, ...], sorted by name
    default_preset()        # the lecture's ReLU demo, or None where no preset is installed

Found with importlib.resources, so an installed wheel, an editable install and a source tree all give the same
files; a source tree used without installing (PYTHONPATH pointing at it) has no ``gradscope.models`` to
import, and there the folder beside the package is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE = "gradscope.models"
DEFAULT = "relu_init_scale.toml"  # the lecture's demo: the app opens it when given nothing


def presets_dir() -> Path:
    """The folder holding the shipped experiment files (it may be missing from a stripped install)."""
    try:
        folder = resources.files(PACKAGE)
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "models"
    # Installed packages live on the file system (the wheel is not zip-safe): a real folder the app can list,
    # open and offer as the start of a file dialog.
    return Path(str(folder))


def preset_files() -> list[Path]:
    """Every shipped experiment file, sorted by name; empty when there is none."""
    folder = presets_dir()
    return sorted(folder.glob("*.toml")) if folder.is_dir() else []


def default_preset() -> Path | None:
    """The experiment the app opens when given nothing, if it is installed."""
    path = presets_dir() / DEFAULT
    return path if path.is_file() else None


__all__ = ["presets_dir", "preset_files", "default_preset", "PACKAGE", "DEFAULT"]
