"""The window's status bar: a message too long for the bar is elided in the middle (a path keeps its start and
its file name), re-elided as the window is resized, and shown whole in the bar's tooltip; QStatusBar alone
clips it at the right edge, where the part that says what to do next usually is."""

from __future__ import annotations

from PyQt6 import QtCore, QtWidgets


class StatusBar(QtWidgets.QStatusBar):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._full = ""  # the message as given; currentMessage() is what fits
        self.messageChanged.connect(self._cleared)

    def full_message(self) -> str:
        """The message shown now, whole (also the tooltip)."""
        return self._full if self.currentMessage() else ""

    def showMessage(self, text: str, msecs: int = 0) -> None:
        self._full = text
        self.setToolTip(text)
        super().showMessage(self._fitted(text), msecs)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self.currentMessage() and self._full:
            # re-elide without restarting the message's timeout: QStatusBar keeps its timer
            fitted = self._fitted(self._full)
            if fitted != self.currentMessage():
                remaining = self._timer_remaining()
                super().showMessage(fitted, remaining)

    def _timer_remaining(self) -> int:
        timer = self.findChild(QtCore.QTimer)
        return max(timer.remainingTime(), 1) if timer is not None and timer.isActive() else 0

    def _available_width(self) -> int:
        """The width the temporary message gets: the bar less its permanent widgets and the size grip."""
        used = sum(w.sizeHint().width() + 8 for w in self.findChildren(QtWidgets.QWidget) if self._is_permanent(w))
        return max(self.width() - used - 24, 40)

    def _is_permanent(self, widget: QtWidgets.QWidget) -> bool:
        return widget.parent() is self and widget.isVisible() and not isinstance(widget, QtWidgets.QSizeGrip)

    def _fitted(self, text: str) -> str:
        metrics = self.fontMetrics()
        width = self._available_width()
        if metrics.horizontalAdvance(text) <= width:
            return text
        return metrics.elidedText(text, QtCore.Qt.TextElideMode.ElideMiddle, width)

    def _cleared(self, text: str) -> None:
        if not text:
            self.setToolTip("")
