"""Results not exported yet: before opening a file, a preset or an export, or pressing Reset (which drop the
runs' traces), the window asks whether to export them first, discard them, or cancel."""

from __future__ import annotations

from PyQt6 import QtWidgets


def signature(window) -> dict:
    """What the runs have computed: the trace version of every run with data (loaded exports excluded)."""
    return {s.key: s.data.trace.version for s in window.controller.states if len(s.data.trace) and not s.loaded}


def keep_or_discard(window, doing: str) -> bool:
    """True to go on with ``doing``.  Nothing to lose (no run computed anything since the last export) goes on at
    once; otherwise window.ask_discard asks: export first (then go on if the export took them), discard, cancel."""
    computed = signature(window)
    if not computed or computed == window._exported:
        return True
    choice = window.ask_discard(len(computed), doing)
    if choice == "export":
        window.export_dialog()
        return signature(window) == window._exported
    return choice == "discard"


def ask_discard(window, runs: int, doing: str) -> str:
    """A modal question: "export" | "discard" | "cancel" (Cancel is the default, Escape too)."""
    box = QtWidgets.QMessageBox(window)
    box.setIcon(QtWidgets.QMessageBox.Icon.Question)
    box.setWindowTitle("Keep the results?")
    box.setText(f"{runs} run(s) have results that are not exported. {doing.capitalize()} and discard them?")
    buttons = QtWidgets.QMessageBox.StandardButton
    box.setStandardButtons(buttons.Save | buttons.Discard | buttons.Cancel)
    box.button(buttons.Save).setText("Export first...")
    box.setDefaultButton(buttons.Cancel)
    box.setEscapeButton(buttons.Cancel)
    answer = box.exec()
    return {buttons.Save: "export", buttons.Discard: "discard"}.get(buttons(answer), "cancel")
