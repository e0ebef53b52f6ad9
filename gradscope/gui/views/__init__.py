"""The seven views.  Each module holds a Figure (pyqtgraph items, drawn from RunData) and its View widget."""

from .analysis import JacobianFigure, JacobianView, LyapunovFigure, LyapunovView
from .layers import LayersFigure, LayersView
from .profile import ProfileFigure, ProfileView
from .saturation import SaturationFigure, SaturationView
from .training import TrainingFigure, TrainingView
from .waterfall import WaterfallFigure, WaterfallView

FIGURES = (ProfileFigure, WaterfallFigure, TrainingFigure, SaturationFigure, LayersFigure, JacobianFigure, LyapunovFigure)
VIEWS = (ProfileView, WaterfallView, TrainingView, SaturationView, LayersView, JacobianView, LyapunovView)

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
    "JacobianFigure",
    "JacobianView",
    "LyapunovFigure",
    "LyapunovView",
]
