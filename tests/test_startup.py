"""Start-up work that overlaps with the runs (issue 9): the figure renderer is imported in the main thread
while the runs compute in theirs, and Qt is never first imported in another thread."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from gradscope.terminal import Console, compute_in_thread

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
schema_version = 1
[experiment]
name = "small"
[defaults]
hidden_size = 8
[defaults.task]
name = "probe"
seq_len = 5
batch_size = 2
input_size = 3
output_size = 3
[defaults.train]
iterations = 3
[[runs]]
name = "relu"
"""


def test_meanwhile_runs_in_the_main_thread_while_the_work_goes_on():
    started, meanwhile_done = threading.Event(), threading.Event()
    seen = {}

    def work(progress, on_iteration):
        started.set()
        # still running when meanwhile() ends: it waits for it (a meanwhile run before or after would time out)
        seen["overlapped"] = meanwhile_done.wait(10)
        return ["result"]

    def meanwhile():
        seen["work_started"] = started.wait(10)
        seen["thread"] = threading.current_thread() is threading.main_thread()
        meanwhile_done.set()

    console = Console(["run"])
    assert compute_in_thread(work, console, meanwhile=meanwhile) == ["result"]
    assert seen == {"work_started": True, "thread": True, "overlapped": True}


def test_gradscope_run_with_figures_imports_qt_in_the_main_thread_only(tmp_path):
    """Qt makes the first thread that imports it its main thread: had the renderer been imported in another
    thread, the QApplication of the export would warn "QApplication was not created in the main() thread"."""
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    code = textwrap.dedent(f"""
        from gradscope import cli
        print(cli.main(["run", {str(path)!r}, "--out", {str(tmp_path / "out")!r}, "--backend", "numpy"]))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert proc.stdout.split()[-1:] == ["0"], proc.stderr[-2000:]
    assert "not created in the main() thread" not in proc.stderr
    assert (tmp_path / "out" / "plots" / "composite.png").exists()
