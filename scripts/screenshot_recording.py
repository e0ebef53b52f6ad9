#!/usr/bin/env python3
"""Screenshots of the app's recording (docs/gui.md, "Recording"), in a real X window under Xvfb:

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot_recording.py recovery \\
        --out assets/recovery-notice.png
        # an app is started on a training preset, SIGKILLed mid-run; the next start's notice is shown
    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot_recording.py full-disk \\
        --out assets/recording-stopped.png
        # the recording folder cannot be written (a file stands in its way): the dialog over the running window

Everything happens in a temporary XDG_DATA_HOME / XDG_CONFIG_HOME: the user's sessions are never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = """
import sys
from gradscope.gui.app import make_app
from gradscope.gui.main_window import MainWindow
app = make_app()
window = MainWindow(backend="numpy", warm_up=False)  # no compile: records at once
window.show()
window.open_file(sys.argv[1])
window.controller.start()
app.exec()
"""


def killed_session(tmp: Path, env: dict) -> Path:
    """Start the app on a training preset in a child process, SIGKILL it once its stores hold 50 records."""
    from gradscope import config
    from gradscope.experiment import select

    experiment = select(config.load(ROOT / "models" / "clipping_exploding_relu.toml"), iterations=100000)
    path = tmp / "clipping.toml"
    config.save(experiment, path)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=env, stderr=subprocess.DEVNULL)
    root = tmp / "data" / "GradScope" / "GradScope" / "sessions"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            stores = list(root.glob("*/*/recording/*/records.zarr/zarr.json"))
            counts = [json.loads(p.read_text())["attributes"].get("records", 0) for p in stores]
            if len(counts) == 2 and min(counts) >= 50:
                break
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", choices=["recovery", "full-disk"])
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--size", default="1600x1000", help="window size WxH")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY"):
        parser.error("no X display: run under xvfb-run -a -s '-screen 0 1920x1200x24'")

    tmp = Path(tempfile.mkdtemp(prefix="gradscope-shot-"))
    os.environ["XDG_DATA_HOME"] = str(tmp / "data")
    os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    if args.scene == "recovery":
        killed_session(tmp, env)

    from PyQt6 import QtCore

    from gradscope.gui.app import close_down, make_app
    from gradscope.gui.main_window import DEFAULT_EXPERIMENT, MainWindow

    app = make_app()
    window = MainWindow()
    if args.scene == "full-disk":
        blocked = tmp / "not-a-folder"
        blocked.write_text("a file where the recording folder should be")
        window.recording.set_root(blocked / "sessions")
    width, height = (int(v) for v in args.size.lower().split("x"))
    window.resize(width, height)
    window.move(0, 0)
    window.show()
    if args.scene == "recovery":
        window.open_path(DEFAULT_EXPERIMENT)
        window.recording.check_for_interrupted()
    else:
        window.open_path(ROOT / "models" / "relu_tanh_lstm.toml")
        window.controller.start()
    start = time.monotonic()

    def ready() -> bool:
        if args.scene == "recovery":
            return window.recording.notice.isVisible()
        return (
            window.last_dialog is not None
            and window.last_dialog.isVisible()
            and len(window.recording.stopped_notes) == len(window.controller.states)
        )

    def grab():
        window.redraw(force=True)
        frame = window.frameGeometry()
        pixmap = window.screen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
        ok = pixmap.save(args.out, "PNG")
        print(f"screenshot: {args.out} ({pixmap.width()}x{pixmap.height()}, {time.monotonic() - start:.1f} s)")
        if window.recording.notice.isVisible():
            print("notice:", window.recording.notice.text())
        if window.last_dialog is not None:
            print("dialog:", window.last_dialog.text(), window.last_dialog.informativeText())
        result["code"] = 0 if ok else 1
        window.controller.stop()
        window.close()
        app.quit()

    result = {"code": 1}

    def poll():
        if ready():
            QtCore.QTimer.singleShot(1500, grab)
        elif time.monotonic() - start > 240:
            print("screenshot: gave up", file=sys.stderr)
            app.quit()
        else:
            QtCore.QTimer.singleShot(100, poll)

    QtCore.QTimer.singleShot(100, poll)
    app.exec()
    close_down(window, result["code"])
    return result["code"]


if __name__ == "__main__":
    sys.exit(main())
