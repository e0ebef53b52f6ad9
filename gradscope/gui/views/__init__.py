"""The five views.  Each module holds a Figure (pyqtgraph items, drawn from RunData) and its View widget."""

from .layers import LayersFigure, LayersView
from .profile import ProfileFigure, ProfileView
from .saturation import SaturationFigure, SaturationView
from .training import TrainingFigure, TrainingView
from .waterfall import WaterfallFigure, WaterfallView

FIGURES = (ProfileFigure, WaterfallFigure, TrainingFigure, SaturationFigure, LayersFigure)
VIEWS = (ProfileView, WaterfallView, TrainingView, SaturationView, LayersView)

__all__ = [
    "FIGURES",
    "VIEWS",
    "ProfileFigure",
    "ProfileView",
    "WaterfallFigure",
    "WaterfallView",
    "TrainingFigure",
    "TrainingView",
    "SaturationFigure",
    "SaturationView",
    "LayersFigure",
    "LayersView",
]
