"""What one live frame of a view costs the GUI thread, away from the runs' noise (issue 9).

    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/bench_frames.py --tab 0
    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/bench_frames.py --tab 2 --frames 800

bench_gui.py measures the app under load: frames, latency and the runs' speed, all moved by how the kernel
shares two cores between the window and five runs (a run's iterations per second under the window change by
tens of percent from one try to the next).  This measures the window's side alone, the figure the runs' share
follows from: the same five runs of (B = 32, T = 200, d = 128) as bench_gui.py train for a few seconds, then
pause; each frame then gives one run a new record (its last one, scaled by a factor within 0.3% of 1, so
every metric is new, as when a run sends a record), the app's timer tick redraws the shown view and the
event loop paints it, and every third frame the mouse moves over the first plot (the hover readout follows).
Printed: the GUI thread's CPU per frame (time.thread_time over --frames frames), and the medians of the
redraw (MainWindow's tick) and of the event loop's turn that paints.  Nothing is written: compare two
checkouts by running it in each, alternately.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tab", type=int, default=0, help="view: 0 through time, 1 waterfall, 2 training, ...")
    parser.add_argument("--frames", type=int, default=400, help="frames measured (after 30 of warm-up)")
    parser.add_argument("--train-seconds", type=float, default=8.0, help="training before the runs pause")
    args = parser.parse_args(argv)

    import gradscope  # noqa: F401  first, as the app starts: it sets OpenBLAS's threads before NumPy loads

    # isort: split
    import numpy as np

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import bench_gui
    from PyQt6 import QtCore

    from gradscope import config
    from gradscope.gui.app import make_app
    from gradscope.gui.main_window import MainWindow
    from gradscope.gui.worker import compiler

    app = make_app()
    window = MainWindow(backend="numba", warm_up=True)
    window.resize(1600, 1000)
    window.show()
    experiment = config.loads(bench_gui.EXPERIMENT)
    window.controller.set_runs_at_once(len(experiment.runs))
    window._set_experiment(experiment)
    window.tabs.setCurrentIndex(args.tab)
    for run in experiment.runs:
        event = compiler().request(run.model_spec())
        while not event.wait(0.05):
            app.processEvents()
    window.controller.start()
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(int(args.train_seconds * 1000), loop.quit)
    loop.exec()
    window.controller.pause()
    for _ in range(50):  # the last records in
        app.processEvents()
        time.sleep(0.01)
    window.controller.paused = False  # drawn as live runs are (no antialiasing, snapped ranges)
    traces = [r.trace for r in window.controller.run_data()]
    if not all(len(t) for t in traces):
        print(f"a run recorded nothing in {args.train_seconds} s: give it longer (--train-seconds)", file=sys.stderr)
        return 1
    view = window.views[args.tab]
    viewport = view.graphics.viewport()
    box = view.figure.plots[0].getViewBox().sceneBoundingRect()
    spots = [
        view.graphics.mapFromScene(QtCore.QPointF(box.left() + f * box.width(), box.center().y())) for f in (0.3, 0.6)
    ]
    times: list[tuple[float, float]] = []  # (redraw, event loop) seconds per frame

    def new_record(k: int) -> None:
        trace = traces[k % len(traces)]
        row = {name: np.array(trace.array(name)[-1]) for name in trace.names}
        for name, value in row.items():
            if value.dtype.kind == "f" and name != "iteration":
                row[name] = value * (1 + 1e-3 * ((k % 7) - 3))
        trace.append_columns(row)

    def frame(k: int) -> None:
        new_record(k)
        if k % 3 == 0:
            QtCore.QCoreApplication.sendEvent(viewport, bench_gui.mouse_move(spots[k % 2]))
        start = time.perf_counter()
        window._tick()
        drawn = time.perf_counter()
        app.processEvents()  # the paint
        times.append((drawn - start, time.perf_counter() - drawn))

    for k in range(30):
        frame(k)
    times.clear()
    cpu, wall = time.thread_time(), time.perf_counter()
    for k in range(args.frames):
        frame(k)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    redraw, paint = np.median(np.array(times), axis=0) * 1000
    print(
        f"view '{window.tabs.tabText(args.tab)}', {args.frames} frames: {1000 * cpu / args.frames:.2f} ms of GUI "
        f"thread CPU per frame ({1000 * wall / args.frames:.2f} ms wall); median redraw {redraw:.2f} ms, "
        f"event loop with the paint {paint:.2f} ms"
    )
    window.close()
    window.controller.shutdown(timeout_ms=None)
    return 0


if __name__ == "__main__":  # the runs' fork server imports this file again: nothing may run at import
    sys.exit(main())
