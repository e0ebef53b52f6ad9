"""The recovery notice keeps its sentence whole at any width and elides only the folder's path: the run's name
and the iteration it was interrupted at stay visible in a narrow window; the whole line is in the tooltip."""

from pathlib import Path
from types import SimpleNamespace

from PyQt6 import QtCore

from gradscope.gui.main_window import MainWindow


def test_a_narrow_window_elides_the_notices_path_not_the_run_or_its_iteration(qtbot, tmp_path):
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    settings.setValue("recording_folder", str(tmp_path / "rec"))
    w = MainWindow(backend="numpy", settings=settings, warm_up=False)
    qtbot.addWidget(w)
    w.show()
    w.resize(1500, 700)
    # a path far longer than the window, as a home folder with XDG data gives
    path = Path("/home/researcher") / ("a-very-long-folder-name/" * 6) / "sessions" / "20261203-042811-4242"
    interrupted = SimpleNamespace(
        started="2026-12-03T04:28:11+0000", path=path, summary=lambda: "'clip 1.0' at iteration 7856"
    )
    w.recording._found(interrupted)
    notice = w.recording.notice
    label = notice.label
    qtbot.waitUntil(lambda: notice.isVisible() and label.width() > 0)
    narrow = w.width()
    qtbot.waitUntil(lambda: label.width() < narrow)

    def check():
        shown = label.text()
        assert "'clip 1.0' at iteration 7856" in shown and "nterrupted" in shown
        assert "…" in shown and str(path) not in shown  # the path, elided in its middle
        assert shown.endswith(path.name[-4:]) and "/home/" in shown  # both of its ends kept
        assert label.fontMetrics().horizontalAdvance(shown) <= label.width()  # on one line, within the label
        assert label.toolTip() == notice.text() and str(path) in notice.text()  # whole in the tooltip
        assert "\n" not in shown

    qtbot.wait(300)
    check()
    assert label.text().startswith("The last session")  # the longest wording that fits with room for the path
    w.resize(1000, 700)  # narrower (the views get ~460 px beside the run panel): a shorter wording, re-elided
    qtbot.waitUntil(lambda: label.width() < narrow - 300)
    qtbot.wait(300)
    check()
    assert label.text().startswith("Interrupted: 'clip 1.0' at iteration 7856; in /home/")
