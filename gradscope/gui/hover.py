"""The hover readout every view has: a vertical crosshair and a box of exact values under the mouse."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore

from . import style
from .curves import drawn_curves
from .plotting import pen


class HoverReadout:
    """A vertical crosshair and a text box of exact values under the mouse.

    ``describe(x, y)`` returns the text for the data point nearest to x (or None to hide).
    """

    def __init__(self, plot: pg.PlotItem, describe: Callable[[float, float], str | None]):
        self.plot, self.describe = plot, describe
        self.line = pg.InfiniteLine(angle=90, movable=False, pen=pen("#808080", 1, "dash"))
        self.label = pg.TextItem(
            anchor=(0, 0), color=style.FOREGROUND, fill=pg.mkBrush(255, 255, 255, 225), border=pg.mkPen("#A0A0A0")
        )
        for item in (self.line, self.label):
            item.setZValue(1000)
            item.setVisible(False)
            plot.addItem(item, ignoreBounds=True)
        self._connected = False
        self._last = None
        self._shown: tuple = (None, None, None)  # (crosshair x, text, room) last set
        self._top: bool | None = None  # the box's corner, chosen by the last mouse move
        self.connect()

    def connect(self) -> None:
        scene = self.plot.scene()
        if scene is not None and not self._connected:
            scene.sigMouseMoved.connect(self.hover)
            self._connected = True

    def hover(self, scene_pos) -> None:
        """Update for a mouse position in scene coordinates (also called by tests)."""
        self._update(scene_pos, choose_corner=True)

    def _update(self, scene_pos, choose_corner: bool) -> None:
        """The crosshair and the box for ``scene_pos``.  A mouse move chooses the box's corner; a redraw under a
        resting mouse (``refresh``) keeps it, so the box holds still while data streams in, and it sets the
        text and the crosshair only when they changed: with 5 live runs this ran at every frame, and laying
        out the same text again and counting the points under both corners were a sixth of it (issue 9)."""
        self._last = scene_pos
        vb = self.plot.getViewBox()
        box = vb.sceneBoundingRect()
        if not box.contains(scene_pos):
            self.hide()
            return
        point = vb.mapSceneToView(scene_pos)
        text = self.describe(point.x(), point.y())
        if not text:
            self.hide()
            return
        if point.x() != self._shown[0]:
            self.line.setPos(point.x())
        # never wider than the plot (the plot clips it): long lines wrap instead of being cut off
        room = max(80.0, box.width() - 6)
        if (text, room) != self._shown[1:]:
            self.label.setText(text)
            self.label.setTextWidth(-1)
            if self.label.textItem.boundingRect().width() > room:
                self.label.setTextWidth(room)
        self._shown = (point.x(), text, room)
        # keep the box inside the view, in a corner away from the mouse, the top or the bottom one, whichever
        # hides fewer points of the curves (the ends of exploding or vanishing curves sit in the corners);
        # scene coordinates, so an inverted axis, as in the waterfall, is handled alike
        right_half = scene_pos.x() > box.center().x()
        x = box.left() if right_half else box.right()
        if choose_corner or self._top is None:
            size = self.label.textItem.boundingRect()
            corners = []
            for top in (True, False):
                y = box.top() if top else box.bottom()
                covered = QtCore.QRectF(
                    x if right_half else x - size.width(), y if top else y - size.height(), size.width(), size.height()
                )
                corners.append((self._points_under(vb, covered), not top, top))
            self._top = min(corners)[2]  # fewest points hidden; the top corner on a tie
        top = self._top
        corner = vb.mapSceneToView(QtCore.QPointF(x, box.top() if top else box.bottom()))
        self.label.setAnchor((0 if right_half else 1, 0 if top else 1))
        self.label.setPos(corner.x(), corner.y())
        self.line.setVisible(True)
        self.label.setVisible(True)

    def _points_under(self, vb, scene_rect) -> int:
        """How many points of the plot's curves fall inside a rectangle in scene coordinates."""
        rect = vb.mapSceneToView(scene_rect).boundingRect()
        count = 0
        for x, y in drawn_curves(self.plot):
            inside = (x >= rect.left()) & (x <= rect.right()) & (y >= rect.top()) & (y <= rect.bottom())
            count += int(np.count_nonzero(inside))
        return count

    def refresh(self) -> None:
        """Describe the last mouse position again (after a redraw, so the values shown are the ones drawn)."""
        if self.label.isVisible() and self._last is not None:
            self._update(self._last, choose_corner=False)

    def hide(self) -> None:
        self.line.setVisible(False)
        self.label.setVisible(False)

    @property
    def text(self) -> str:
        return self.label.toPlainText() if self.label.isVisible() else ""
