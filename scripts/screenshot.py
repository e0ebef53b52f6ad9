#!/usr/bin/env python3
"""Screenshots of the app as a user sees it: a real X window under Xvfb, captured from the X server.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot.py
        # the lecture demo after its pass, crosshair on the through-time view -> assets/screenshot.png
    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshot.py \\
        models/relu_tanh_lstm.toml --iterations 40 --tab waterfall --out /tmp/mid-run.png
        # mid-run: taken once every run has made 40 iterations (runs keep going while it is taken)
    ... scripts/screenshot.py models/deep_rnn_layers.toml --tab all --out /tmp/deep.png
        # every view: /tmp/deep-through_time.png, /tmp/deep-waterfall.png, ...

The window is captured with QScreen.grabWindow, i.e. the pixels the X server shows.  It refuses the offscreen
platform (that would not be a real window) unless --offscreen is given, for a quick look without Xvfb.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABS = {
    "through_time": 0,
    "waterfall": 1,
    "training": 2,
    "saturation": 3,
    "layers": 4,
    "jacobian": 5,
    "lyapunov": 6,
    "units": 7,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiment",
        nargs="?",
        default=str(ROOT / "models" / "relu_init_scale.toml"),
        help="experiment file or exported folder (default: the lecture demo)",
    )
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshot.png"), help="PNG to write")
    parser.add_argument(
        "--tab",
        default="through_time",
        choices=sorted(TABS) + ["all"],
        help="view to show; all: one screenshot per view, OUT-<view>.png, one after the other while the runs go on",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="take it once every run has made this many iterations (default: when all finished)",
    )
    parser.add_argument("--size", default="1600x1000", help="window size WxH")
    parser.add_argument(
        "--hover",
        type=float,
        default=0.35,
        help="put the mouse at this fraction of the first plot's width (crosshair readout); negative: no mouse",
    )
    parser.add_argument(
        "--hover-plot", type=int, default=0, help="which of the view's shown plots the mouse is put on (0: the first)"
    )
    parser.add_argument("--pascanu", action="store_true", help="switch the Pascanu bound overlay on")
    parser.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    parser.add_argument("--offscreen", action="store_true", help="allow the offscreen platform (not a real window)")
    args = parser.parse_args(argv)

    if os.environ.get("QT_QPA_PLATFORM") == "offscreen" and not args.offscreen:
        parser.error("QT_QPA_PLATFORM=offscreen is not a real window: run under xvfb-run -a (or pass --offscreen)")
    if not os.environ.get("DISPLAY") and not args.offscreen:
        parser.error("no X display: run under xvfb-run -a -s '-screen 0 1920x1200x24'")
    if args.offscreen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"

    from PyQt6 import QtCore, QtTest

    from gradscope.gui.app import close_down, make_app
    from gradscope.gui.main_window import MainWindow

    app = make_app()
    width, height = (int(v) for v in args.size.lower().split("x"))
    window = MainWindow()
    window.resize(width, height)
    window.move(0, 0)
    window.show()
    if not window.open_path(args.experiment):
        print(f"screenshot: cannot open {args.experiment}: {window.last_dialog.text()}", file=sys.stderr)
        return 2
    tabs = list(TABS) if args.tab == "all" else [args.tab]
    window.tabs.setCurrentIndex(TABS[tabs[0]])
    if args.pascanu:
        window.views[0].set_overlay("pascanu", True)
    window.controller.start()
    start = time.monotonic()
    result = {"code": 1}
    out = Path(args.out)

    def ready() -> bool:
        states = window.controller.states
        if args.iterations is None:
            return all(s.finished for s in states)
        return all(s.iteration + 1 >= args.iterations or s.finished for s in states)

    def take(pending: list[str]):
        tab = pending[0]
        window.tabs.setCurrentIndex(TABS[tab])
        window.redraw(force=True)
        app.processEvents()
        view = window.views[TABS[tab]]
        if args.hover >= 0 and view.figure.plots:
            visible = [p for p in view.figure.plots if p.isVisible()] or view.figure.plots[:1]
            plot = visible[min(args.hover_plot, len(visible) - 1)]
            rect = plot.getViewBox().sceneBoundingRect()
            scene_point = QtCore.QPointF(rect.left() + args.hover * rect.width(), rect.top() + 0.5 * rect.height())
            viewport = view.graphics.viewport()
            widget_point = view.graphics.mapFromScene(scene_point)
            QtTest.QTest.mouseMove(viewport, widget_point)
            app.processEvents()
        # a few event-loop turns so the X server has the final frame
        QtCore.QTimer.singleShot(300, lambda: grab(pending))

    def grab(pending: list[str]):
        tab, rest = pending[0], pending[1:]
        screen = window.screen()
        frame = window.frameGeometry()
        if app.platformName() == "offscreen":
            pixmap = window.grab()
        else:
            pixmap = screen.grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
        path = out if len(tabs) == 1 else out.with_name(f"{out.stem}-{tab}{out.suffix or '.png'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = pixmap.save(str(path), "PNG")
        print(
            f"screenshot: {path} ({pixmap.width()}x{pixmap.height()}, platform {app.platformName()}, "
            f"{time.monotonic() - start:.1f} s, runs: "
            + ", ".join(f"{s.name} {s.status_text()} at iteration {s.iteration}" for s in window.controller.states)
            + ")",
            file=sys.stderr,
        )
        if not ok:
            rest = []  # exit code stays 1
        elif not rest:
            result["code"] = 0  # every view saved
        if rest:
            take(rest)
        else:
            window.close()
            app.quit()

    def poll():
        if ready():
            take(tabs)
        elif time.monotonic() - start > args.timeout:
            print(f"screenshot: gave up after {args.timeout:.0f} s", file=sys.stderr)
            window.close()
            app.quit()
        else:
            QtCore.QTimer.singleShot(100, poll)

    QtCore.QTimer.singleShot(100, poll)
    app.exec()
    close_down(window, result["code"])  # threads joined, the window deleted while the app lives
    return result["code"]


if __name__ == "__main__":
    sys.exit(main())
