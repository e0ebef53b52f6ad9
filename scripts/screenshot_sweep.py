#!/usr/bin/env python3
"""A screenshot of the app's Sweep tab as a user sees it: a real X window under Xvfb, captured from the X server.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot_sweep.py \\
        models/sweep_tanh_phase_diagram.toml --out assets/screenshot-sweep.png
        # runs the sweep from the tab (local workers, into a temporary folder), taken when it has finished
    ... scripts/screenshot_sweep.py --folder out/relu-curve --out /tmp/relu.png      # a finished sweep folder
    ... scripts/screenshot_sweep.py models/sweep_relu_init_scale.toml --points 20    # mid-sweep, at 20 points
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default=str(ROOT / "models" / "sweep_tanh_phase_diagram.toml"))
    parser.add_argument("--folder", help="open this finished sweep folder instead of running the experiment")
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshot-sweep.png"))
    parser.add_argument("--points", type=int, help="take it once this many points are done (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", default="1600x1000")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY"):
        parser.error("no X display: run under xvfb-run -a -s '-screen 0 1920x1200x24'")

    from PyQt6 import QtCore

    from gradscope import config
    from gradscope.gui.app import close_down, make_app
    from gradscope.gui.main_window import MainWindow

    app = make_app()
    window = MainWindow()
    window.resize(*(int(v) for v in args.size.lower().split("x")))
    window.move(0, 0)
    window.show()
    tab = window.sweep_tab
    window.tabs.setCurrentWidget(tab)
    if args.folder:
        job = tab.open_folder(args.folder)
    else:
        experiment = config.load(args.experiment)
        window.open_path(args.experiment)
        out = Path(tempfile.mkdtemp(prefix="gradscope-sweep-")) / experiment.name
        job = tab.run_sweep(experiment, out, workers=args.workers, scheduler="")
    start = time.monotonic()
    result = {"code": 1}

    def ready() -> bool:
        if args.points is not None and tab.data is not None and tab.data.counts()[0] >= args.points:
            return True
        return job.isFinished()

    def grab():
        tab.redraw()
        frame = window.frameGeometry()
        pixmap = window.screen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        result["code"] = 0 if pixmap.save(args.out, "PNG") else 1
        print(
            f"screenshot: {args.out} ({pixmap.width()}x{pixmap.height()}, {time.monotonic() - start:.1f} s, "
            f"{tab.status.text()}; error: {tab.last_error})",
            file=sys.stderr,
        )
        window.close()
        app.quit()

    def poll():
        if ready():
            tab.redraw()
            QtCore.QTimer.singleShot(400, grab)
        elif time.monotonic() - start > args.timeout:
            print(f"screenshot: gave up after {args.timeout:.0f} s", file=sys.stderr)
            window.close()
            app.quit()
        else:
            QtCore.QTimer.singleShot(200, poll)

    QtCore.QTimer.singleShot(200, poll)
    app.exec()
    close_down(window, result["code"])
    return result["code"]


if __name__ == "__main__":
    raise SystemExit(main())
