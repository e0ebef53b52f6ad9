"""Side panels of the main window: the run list and the run editor."""

from .run_editor import RunEditor
from .run_list import RunList

__all__ = ["RunEditor", "RunList"]
