"""The eight views.  Each module holds a Figure (pyqtgraph items, drawn from RunData) and its View widget."""

from .analysis import JacobianFigure, JacobianView, LyapunovFigure, LyapunovView
from .layers import LayersFigure, LayersView
from .profile import ProfileFigure, ProfileView
from .saturation import SaturationFigure, SaturationView
from .training import TrainingFigure, TrainingView
from .units import UnitsFigure, UnitsView
from .waterfall import WaterfallFigure, WaterfallView

FIGURES = (
    ProfileFigure,
    WaterfallFigure,
    TrainingFigure,
    SaturationFigure,
    LayersFigure,
    JacobianFigure,
    LyapunovFigure,
    UnitsFigure,
)
VIEWS = (ProfileView, WaterfallView, TrainingView, SaturationView, LayersView, JacobianView, LyapunovView, UnitsView)

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
    "UnitsFigure",
    "UnitsView",
]
