"""The app under load: event-loop latency and redraw rate while 5 runs of (B = 32, T = 200, d = 128) train.

    python benchmarks/bench_gui.py                       # offscreen (or the X display if DISPLAY is set)
    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/bench_gui.py    # a real X window
    python benchmarks/bench_gui.py --seconds 20 --tab 1  # longer, on the waterfall tab
    python benchmarks/bench_gui.py --startup             # also: process start -> window on screen (warm cache)
    python benchmarks/bench_gui.py --blas-threads 1      # OPENBLAS_NUM_THREADS=1 set before NumPy loads

What it measures, in one process, after the kernels are compiled and 2 s of warm-up:
- tick latency: a 10 ms QTimer records how late each timeout fires (time the event loop was busy elsewhere);
- input latency: a background thread posts an event (as a key press arrives) every 50 ms; the time until the GUI
  thread handles it is how long a user waits for a reaction;
- redraw rate: how often the visible view actually redrew (it redraws only when a trace changed, at most
  ~30 Hz; --force redraws on every tick, the worst case), and the time one redraw takes;
- training speed: iterations per second of each run while the GUI works.
Writes benchmarks/results/gui.json.

OpenBLAS threads: on the 2-core machines of this project, training steps with OpenBLAS's default threads were 20
to 150 times slower than with OPENBLAS_NUM_THREADS=1 (in a worker thread and in the main thread alike), and
several runs at once collapsed.  The variable must be set before NumPy is imported; --blas-threads does that for
this process, and the report prints which BLAS libraries and thread counts were in use.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

EXPERIMENT = """
schema_version = 1
[experiment]
name = "gui-load"
seed = 0
[defaults]
hidden_size = 128
[defaults.task]
name = "probe"
seq_len = 200
batch_size = 32
[defaults.train]
iterations = 100000000
lr = 0.001
clip_norm = 1.0
[[runs]]
name = "relu 2/n"
activation = "relu"
init.recurrent_scale = 2.0
[[runs]]
name = "tanh 1/n"
activation = "tanh"
[[runs]]
name = "sigmoid 4/n"
activation = "sigmoid"
init.recurrent_scale = 4.0
[[runs]]
name = "lstm"
cell = "lstm"
[[runs]]
name = "lstm forget 1"
cell = "lstm"
init.forget_bias = 1.0
"""


def percentiles(values, qs=(50, 95, 99)):
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(values, q)) for q in qs} | {"max": float(values.max()),
                                                                     "n": int(values.size)}


def measure(seconds: float, tab: int, backend: str = "numba", force: bool = False) -> dict:
    import gradscope  # noqa: F401  first, as the app starts: it sets OpenBLAS's threads before NumPy loads
    import numpy as np

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt6 import QtCore, QtWidgets

    from gradscope import config
    from gradscope.gui.app import make_app
    from gradscope.gui.main_window import MainWindow
    from gradscope.gui.worker import compiler

    app = make_app()
    window = MainWindow(backend=backend, warm_up=backend == "numba")
    window.show()
    experiment = config.loads(EXPERIMENT)
    window._set_experiment(experiment)
    window.tabs.setCurrentIndex(tab)
    # kernels first (cold compiles are measured by the engine's benchmark, not here)
    for run in experiment.runs if backend == "numba" else []:
        event = compiler().request(run.model_spec())
        while not event.wait(0.05):
            app.processEvents()

    ticks: list[float] = []
    inputs: list[float] = []
    redraw_seconds: list[float] = []
    redraws = [0]
    recording = [False]

    # 1. timer lateness
    interval = 0.010
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        if recording[0]:
            ticks.append(max(0.0, now - last[0] - interval))
        last[0] = now

    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    timer.setInterval(int(interval * 1000))
    timer.timeout.connect(tick)
    timer.start()

    # 2. events posted from another thread, like input arriving from the window system
    class Probe(QtCore.QObject):
        def event(self, e):  # Qt override
            if e.type() == PROBE_TYPE:
                if recording[0]:
                    inputs.append(time.perf_counter() - e.sent)
                return True
            return super().event(e)

    PROBE_TYPE = QtCore.QEvent.Type(QtCore.QEvent.registerEventType())
    probe = Probe()
    stop_posting = threading.Event()

    def post():
        while not stop_posting.wait(0.05):
            e = QtCore.QEvent(PROBE_TYPE)
            e.sent = time.perf_counter()
            QtCore.QCoreApplication.postEvent(probe, e)

    # 3. redraws: time the main window's redraw (the views' work) and count those that drew
    original = window.redraw
    force_every_tick = force          # redraw every tick as if every run had new data each frame

    def timed_redraw(force=False):
        start = time.perf_counter()
        drew = original(force=force or (force_every_tick and recording[0]))
        if recording[0] and drew:
            redraws[0] += 1
            redraw_seconds.append(time.perf_counter() - start)
        return drew

    window.redraw = timed_redraw

    poster = threading.Thread(target=post, daemon=True)
    poster.start()
    window.controller.start()
    iterations_at = {}

    def begin():
        recording[0] = True
        iterations_at["start"] = ([s.iteration for s in window.controller.states], time.perf_counter())

    def end():
        recording[0] = False
        iterations_at["end"] = ([s.iteration for s in window.controller.states], time.perf_counter())
        app.quit()

    QtCore.QTimer.singleShot(2000, begin)
    QtCore.QTimer.singleShot(int(2000 + seconds * 1000), end)
    app.exec()
    stop_posting.set()
    statuses = [s.status for s in window.controller.states]
    window.close()
    window.controller.shutdown(timeout_ms=None)

    (i0, t0), (i1, t1) = iterations_at["start"], iterations_at["end"]
    elapsed = t1 - t0
    return {
        "platform": QtWidgets.QApplication.platformName(),
        "backend": backend,
        "forced_redraws": force,
        "tab": window.tabs.tabText(tab),
        "seconds": elapsed,
        "runs": [r.name for r in experiment.runs],
        "statuses_at_end": statuses,
        "iterations_per_second": [(b - a) / elapsed for a, b in zip(i0, i1)],
        "redraws_per_second": redraws[0] / elapsed,
        "redraw_ms": percentiles(np.array(redraw_seconds) * 1000) if redraw_seconds else {"p50": float("nan"), "p95": float("nan")},
        "tick_lateness_ms": percentiles(np.array(ticks) * 1000),
        "input_latency_ms": percentiles(np.array(inputs) * 1000),
    }


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"library": "unknown (threadpoolctl not installed)", "threads": None}]
    return [{"library": Path(i["filepath"]).name, "threads": i["num_threads"], "api": i["internal_api"]}
            for i in threadpool_info()]


STARTUP_PROBE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from PyQt6 import QtCore
    from gradscope.gui.app import make_app
    from gradscope.gui.main_window import MainWindow, DEFAULT_EXPERIMENT
    app = make_app()
    w = MainWindow()
    w.show()
    def shown():
        print("SHOWN", time.time(), flush=True)
        w.open_path(DEFAULT_EXPERIMENT)
        QtCore.QTimer.singleShot(0, lambda: (print("LOADED", time.time(), flush=True), w.close(), app.quit()))
    QtCore.QTimer.singleShot(0, shown)
    app.exec()
    w.controller.shutdown(None)
""")


def startup(repeats: int = 3) -> dict:
    """Wall time from launching a Python process to the window on screen (event loop running) and to the
    lecture demo loaded, on a warm Numba cache (the compile happens in the background either way)."""
    shown, loaded = [], []
    env = dict(os.environ)
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    for _ in range(repeats):
        start = time.time()
        out = subprocess.run([sys.executable, "-c", STARTUP_PROBE.format(root=str(ROOT))], env=env,
                             capture_output=True, text=True, timeout=120).stdout
        marks = dict(line.split() for line in out.splitlines() if line.startswith(("SHOWN", "LOADED")))
        shown.append(float(marks["SHOWN"]) - start)
        loaded.append(float(marks["LOADED"]) - start)
    return {"window_shown_s": shown, "demo_loaded_s": loaded}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="set OPENBLAS_NUM_THREADS (and OMP_NUM_THREADS) before NumPy loads")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after 2 s of warm-up)")
    parser.add_argument("--tab", type=int, default=0, help="view shown: 0 through time, 1 waterfall, ...")
    parser.add_argument("--startup", action="store_true", help="also time process start -> window shown")
    parser.add_argument("--force", action="store_true",
                        help="redraw on every timer tick, as if every trace changed each frame (worst case)")
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba",
                        help="engine of the runs (numpy: the reference engine, holds the GIL more)")
    args = parser.parse_args(argv)
    if args.blas_threads is not None:
        if "numpy" in sys.modules:
            parser.error("--blas-threads must take effect before NumPy is imported")
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.blas_threads)
    result = {"python": platform.python_version(), "cpus": os.cpu_count(), "load": measure(args.seconds, args.tab, args.backend, args.force)}
    if args.startup:
        result["startup"] = startup()
    load = result["load"]
    result["blas"] = blas_info()
    print("BLAS: " + "; ".join(f"{b['library']} {b['threads']} thread(s)" for b in result["blas"]))
    print(f"platform {load['platform']}, view '{load['tab']}', {len(load['runs'])} runs of (B 32, T 200, d 128) "
          f"training for {load['seconds']:.1f} s on the {load['backend']} engine"
          + (", redrawing on every tick" if load["forced_redraws"] else ""))
    print(f"  redraws/s            {load['redraws_per_second']:.1f}   (one redraw: median "
          f"{load['redraw_ms']['p50']:.1f} ms, p95 {load['redraw_ms']['p95']:.1f} ms)")
    for name, key in (("tick lateness (ms)", "tick_lateness_ms"), ("input latency (ms)", "input_latency_ms")):
        p = load[key]
        print(f"  {name:20s} median {p['p50']:.1f}, p95 {p['p95']:.1f}, p99 {p['p99']:.1f}, max {p['max']:.1f}"
              f"  ({p['n']} samples)")
    print("  iterations/s per run " + ", ".join(f"{n} {v:.1f}" for n, v in
                                               zip(load["runs"], load["iterations_per_second"])))
    if "startup" in result:
        s = result["startup"]
        print(f"  startup: window shown after {', '.join(f'{v:.2f}' for v in s['window_shown_s'])} s; demo loaded "
              f"after {', '.join(f'{v:.2f}' for v in s['demo_loaded_s'])} s")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "gui.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
