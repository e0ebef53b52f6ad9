"""The Sweep tab: data.py (what it draws, Qt-free), figure.py (the pyqtgraph figure), tab.py (the widget)."""

from .data import SweepData
from .figure import SweepFigure
from .tab import SweepTab

__all__ = ["SweepData", "SweepFigure", "SweepTab"]
