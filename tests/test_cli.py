"""The command line: exit codes 0 / 1 / 2, progress lines, the log file, overrides, opening the app."""

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from gradscope import cli, config

from .cli_support import SMALL_HEADER, run

ROOT = Path(__file__).resolve().parent.parent

SMALL = (
    SMALL_HEADER
    + """\
[[runs]]
name = "tanh"
activation = "tanh"
"""
)


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


@pytest.fixture(autouse=True)
def logs(tmp_path, monkeypatch):
    folder = tmp_path / "logs"
    monkeypatch.setenv("GRADSCOPE_LOG_DIR", str(folder))
    return folder


def test_run_exports_and_reports_progress(small, tmp_path, capsys):
    assert run(small, "--out", tmp_path / "out") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and all("it/s" in line and "completed" in line for line in lines)
    assert lines[0].startswith("[1/2] relu") and lines[1].startswith("[2/2] tanh")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["iterations"] for r in summary["runs"]] == [3, 3]


def test_overrides_are_applied_and_exported(small, tmp_path):
    out = tmp_path / "out"
    assert run(small, "--out", out, "--runs", "tanh", "--iterations", "5", "--seed", "9") == 0
    experiment = config.load(out / "experiment.toml")
    assert [r.name for r in experiment.runs] == ["tanh"] and experiment.seed == 9
    assert experiment.runs[0].train.iterations == 5
    with np.load(out / "01-tanh" / "trace.npz") as npz:
        assert list(npz["iteration"]) == [0, 1, 2, 3, 4]
    # re-running the exported file reproduces the trace
    assert run(out / "experiment.toml", "--out", tmp_path / "again") == 0
    with np.load(out / "01-tanh" / "trace.npz") as a, np.load(tmp_path / "again" / "01-tanh" / "trace.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.parametrize(
    "args,culprit",
    [
        (["--runs", "gru"], "'gru'"),
        (["--iterations", "-1"], "--iterations"),
        (["--seed", "-3"], "--seed"),
        (["--processes", "0"], "--processes"),
    ],
)
def test_bad_options_exit_2_with_one_message(small, tmp_path, capsys, args, culprit):
    assert run(small, "--out", tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert culprit in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_file_and_occupied_folder_exit_2(small, tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err
    occupied = tmp_path / "thesis"
    occupied.mkdir()
    (occupied / "chapter1.tex").write_text("x")
    assert run(small, "--out", occupied) == 2
    assert "not a GradScope export" in capsys.readouterr().err
    assert [p.name for p in occupied.iterdir()] == ["chapter1.tex"]


def test_argparse_usage_errors_exit_2(capsys):
    assert cli.main(["run"]) == 2
    assert cli.main(["frobnicate", "x.toml"]) == 2


def test_unexpected_error_exits_1_with_the_traceback_in_a_log(small, tmp_path, capsys, logs, monkeypatch):
    import gradscope.experiment

    def broken(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(gradscope.experiment, "run_experiment", broken)
    assert run(small, "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err
    log = Path(err.strip().splitlines()[-1].split("the traceback is in ")[1])
    assert log.parent == logs and "RuntimeError: simulated bug" in log.read_text()
    assert "Traceback" in log.read_text() and "Traceback" not in err


def test_a_failed_run_exits_1_and_the_others_are_kept(small, tmp_path, capsys, logs, monkeypatch):
    import gradscope.engine.trainer as trainer

    real = trainer.Training

    class FailsForTanh(real):
        def __init__(self, run, seed, backend="numba"):
            if run.activation == "tanh":
                raise FloatingPointError("simulated failure in the tanh run")
            super().__init__(run, seed, backend)

    monkeypatch.setattr(trainer, "Training", FailsForTanh)
    out = tmp_path / "out"
    assert run(small, "--out", out) == 1
    err = capsys.readouterr().err
    assert "tanh: failed" in err and "simulated failure" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["completed", "failed"]
    assert "FloatingPointError" in summary["runs"][1]["error"]
    assert [r["loss_kind"] for r in summary["runs"]] == ["mse", "mse"]  # a failed run still says which
    log = next(logs.iterdir())
    assert "simulated failure in the tanh run" in log.read_text()


def test_a_diverged_run_is_a_result_exit_0(tmp_path, capsys):
    path = tmp_path / "boom.toml"
    path.write_text(SMALL.replace('name = "relu"', 'name = "relu"\ninit.recurrent_scale = 400.0\ntrain.lr = 1e6'))
    assert run(path, "--out", tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "relu: diverged" in err and "non-finite" in err


def test_no_arguments_or_a_file_open_the_app(small, monkeypatch):
    opened = []
    fake = types.ModuleType("gradscope.gui.app")
    fake.main = lambda path=None, end_process=False: opened.append((path, end_process)) and 0
    monkeypatch.setitem(sys.modules, "gradscope.gui.app", fake)
    assert cli.main([]) == 0 and cli.main([str(small)]) == 0
    assert opened == [(None, True), (str(small), True)]  # the process ends with the window


def test_opening_a_bad_file_says_so_in_one_line_and_opens_the_app_for_its_dialog(monkeypatch, capsys):
    """docs/gui.md: a bad file is refused with a dialog; the terminal gets the same one line."""
    opened = []
    fake = types.ModuleType("gradscope.gui.app")
    fake.main = lambda path=None, end_process=False: opened.append(path) or 0
    monkeypatch.setitem(sys.modules, "gradscope.gui.app", fake)
    bad = ROOT / "tests" / "data" / "bad" / "bad_cell.toml"
    assert cli.main([str(bad)]) == 0 and opened == [str(bad)]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gradscope: {bad}") and "cell" in err[0]
    assert cli.main(["/no/such/file.toml"]) == 0 and opened[-1] == "/no/such/file.toml"
    assert "no such experiment file" in capsys.readouterr().err


def test_python_dash_m_and_main_py(small):
    for command in (
        [sys.executable, "-m", "gradscope", "validate", str(small)],
        [sys.executable, str(ROOT / "main.py"), "validate", str(small)],
    ):
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0 and "2 run(s)" in proc.stderr
    bad = ROOT / "tests" / "data" / "bad" / "syntax_error.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "gradscope", "validate", str(bad)], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2 and "line 6" in proc.stderr


def test_run_with_figures_writes_png_and_svg(small, tmp_path):
    pytest.importorskip("gradscope.gui.figures")
    out = tmp_path / "out"
    assert cli.main(["run", str(small), "--out", str(out), "--backend", "numpy"]) == 0
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert any(n.endswith(".png") for n in plots) and any(n.endswith(".svg") for n in plots)
    assert all((out / "plots" / n).stat().st_size > 0 for n in plots)
    assert "figures_error" not in json.loads((out / "summary.json").read_text())
    import xml.etree.ElementTree as ElementTree

    for name in plots:
        data = (out / "plots" / name).read_bytes()
        if name.endswith(".png"):
            assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
        else:  # well-formed XML with an <svg> root
            assert ElementTree.fromstring(data).tag.endswith("svg"), name


# ------------------------------------------------------------------------------ stopping with a signal
STOPPABLE = """
schema_version = 1
[experiment]
name = "stoppable"
seed = 1
[defaults]
hidden_size = 8
[defaults.task]
name = "adding"
seq_len = 12
batch_size = 2
[defaults.train]
iterations = 5
[[runs]]
name = "short"
[[runs]]
name = "long"
train.iterations = 10000000
train.record_every = 10
"""


def _start(path, out, extra, **kwargs):
    import os

    env = dict(os.environ, GRADSCOPE_LOG_DIR=str(Path(out).parent / "logs"))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradscope",
            "run",
            str(path),
            "--out",
            str(out),
            "--no-plots",
            "--backend",
            "numpy",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        **kwargs,
    )


def _check_stopped_export(out, log_dir):
    summary = json.loads((out / "summary.json").read_text())
    short, long = summary["runs"]
    assert (short["status"], short["iterations"]) == ("completed", 5)
    with np.load(out / short["dir"] / "trace.npz") as npz:
        assert list(npz["iteration"]) == [0, 1, 2, 3, 4]  # the finished run is all there
    assert long["status"] == "stopped"
    if long["iterations"]:
        with np.load(out / long["dir"] / "trace.npz") as npz:
            assert list(npz["iteration"]) == list(range(0, long["iterations"], 10))  # nothing computed lost
    assert not log_dir.exists() or not any(log_dir.iterdir())  # a stop is not an error
    return long


def test_sigterm_stops_the_runs_exports_what_was_computed_and_exits_143(tmp_path):
    import signal

    path = tmp_path / "stoppable.toml"
    path.write_text(STOPPABLE)
    out = tmp_path / "out"
    proc = _start(path, out, ["--processes", "1"], stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # wait for the first run's line, then stop the second
        seen.append(line)
        if line.startswith("[1/2] short: completed"):
            proc.send_signal(signal.SIGTERM)
            break
    else:
        pytest.fail(f"the first run never ended: {''.join(seen)}")
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143
    assert "SIGTERM received" in rest and "stopped by SIGTERM" in rest and "Traceback" not in rest
    assert "[2/2] long: stopped" in rest
    _check_stopped_export(out, tmp_path / "logs")


def test_ctrl_c_in_a_terminal_stops_the_worker_processes_too_and_exits_130(tmp_path):
    """As in a terminal: stderr is a tty (so the status line shows the long run's iterations), and Ctrl+C
    sends SIGINT to the whole process group, workers included."""
    import os
    import re
    import select
    import signal

    path = tmp_path / "stoppable.toml"
    path.write_text(STOPPABLE)
    out = tmp_path / "out"
    master, slave = os.openpty()
    proc = _start(
        path, out, ["--processes", "2"], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    text = ""

    def read_until(pattern, timeout=120.0):
        nonlocal text
        import time

        deadline = time.monotonic() + timeout
        while not re.search(pattern, text):
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"no {pattern!r} on the terminal within {timeout} s: {text!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                return False
            text += chunk.decode(errors="replace")
        return True

    try:
        assert read_until(r"\[2/2\] long: [1-9]\d*/10000000, [\d.]+ it/s")  # the status line, live
        assert read_until(r"\[1/2\] short: completed")  # both run at once: on a loaded machine the short
        # one can still be going when the long one shows its first iteration; the short one must be complete
        os.killpg(proc.pid, signal.SIGINT)
        read_until(r"will never appear")  # read to the end
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert "SIGINT received" in text and "stopped by SIGINT" in text and "Traceback" not in text
    long = _check_stopped_export(out, tmp_path / "logs")
    assert long["iterations"] >= 1


def test_the_command_line_imports_heavy_packages_only_when_needed(small, tmp_path):
    """Start-up time: gradscope.cli needs only the standard library; a run without figures never loads Qt,
    pyqtgraph or PyTorch."""
    code = textwrap.dedent(f"""
        import json, sys
        heavy = ("numpy", "pydantic", "numba", "scipy", "PyQt6", "pyqtgraph", "torch")
        from gradscope import cli
        at_import = sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
        code = cli.main(["run", {str(small)!r}, "--out", {str(tmp_path / "out")!r}, "--no-plots",
                         "--backend", "numpy"])
        after_run = sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
        print(json.dumps([code, at_import, after_run]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    code, at_import, after_run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 0 and at_import == []
    assert not {"PyQt6", "pyqtgraph", "torch"} & set(after_run) and "numpy" in after_run


def test_compile_refuses_a_bad_job_count(capsys):
    assert cli.main(["compile", "--jobs", "0"]) == 2
    assert "--jobs: got 0; expected 1 or more" in capsys.readouterr().err


def test_compile_fills_an_empty_cache_so_a_later_process_compiles_nothing(tmp_path):
    """gradscope compile (two processes, one per dtype) into an empty NUMBA_CACHE_DIR; a new process then
    loads every kernel of every cell and dtype from that cache: Numba counts no cache miss."""
    import os

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run(
        [sys.executable, "-m", "gradscope", "compile", "--jobs", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "kernels ready in" in out.stderr and str(tmp_path / "cache") in out.stderr
    check = textwrap.dedent("""
        from gradscope.engine import plan
        misses, hits = 0, 0
        for dtype in plan.KERNEL_DTYPES:
            plan.compile_kernels(dtype)
            for name, dispatcher, signature in plan.kernel_plan(dtype):
                misses += sum(dispatcher.stats.cache_misses.values())
                hits += dispatcher.stats.cache_hits[signature]
        print("misses", misses, "hits", hits)
    """)
    out = subprocess.run([sys.executable, "-c", check], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[0] == "misses" and int(words[1]) == 0, out.stdout
    assert int(words[3]) >= len(cells_plan_sizes()), out.stdout


def cells_plan_sizes():
    from gradscope.engine import plan

    return [entry for dtype in plan.KERNEL_DTYPES for entry in plan.kernel_plan(dtype)]


def test_run_refuses_a_valid_file_too_big_for_this_machine(tmp_path, capsys):
    """validate accepts the file (it is valid everywhere); run refuses it here, before compiling anything."""
    path = ROOT / "tests" / "data" / "bad" / "too_big.toml"
    assert cli.main(["validate", str(path)]) == 0
    capsys.readouterr()
    out = tmp_path / "never"
    assert cli.main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gradscope: {path}: run 'bad' (runs[0]): hidden_size:") and "GiB" in err
    for key in ("hidden_size", "layers", "task.seq_len", "task.batch_size"):
        assert key in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "compiling" not in err
    assert not out.exists()


def test_figures_are_written_by_the_gui_writer_the_cli_passes(small, tmp_path, monkeypatch):
    """The CLI composes the export: io gets cli.write_figures, which loads gradscope.gui.figures only then."""
    import gradscope.io as gio

    passed = []
    real = gio.export_experiment

    def spy(out_dir, experiment, results, figures=None, **rest):  # rest: the recording's extra_files
        passed.append(figures)
        return real(out_dir, experiment, results, figures=None, **rest)

    monkeypatch.setattr(gio, "export_experiment", spy)
    assert cli.main(["run", str(small), "--out", str(tmp_path / "a"), "--backend", "numpy"]) == 0
    assert cli.main(["run", str(small), "--out", str(tmp_path / "b"), "--backend", "numpy", "--no-plots"]) == 0
    assert passed == [cli.write_figures, None]
    fake = types.ModuleType("gradscope.gui.figures")
    fake.export_figures = lambda experiment, results, plots_dir: [plots_dir / "drawn"]
    monkeypatch.setitem(sys.modules, "gradscope.gui.figures", fake)
    assert cli.write_figures(None, [], tmp_path) == [tmp_path / "drawn"]


def test_a_diverged_run_says_where_in_the_engines_words():
    """One text for a non-finite location (NonFinite.location), in the CLI's progress line as everywhere."""
    from gradscope.engine.metrics import NonFinite
    from gradscope.trace import Trace

    nf = NonFinite(quantity="grad_h", layer=0, timestep=41, iteration=3)
    assert nf.location() == "iteration 3, layer 0, t = 41"
    assert str(nf) == "non-finite grad_h at iteration 3, layer 0, t = 41"
    assert NonFinite("loss", None, None, 2).location() == "iteration 2"
    assert str(NonFinite("loss", None, None)) == "non-finite loss"
    result = types.SimpleNamespace(
        name="relu",
        status="diverged",
        iterations=4,
        wall_seconds=2.0,
        trace=Trace(),
        nonfinite=nf,
        error=None,
        init_params=object(),
    )
    assert cli.progress_line(1, 2, result) == (
        "[1/2] relu: diverged, 4 iteration(s) in 2.00 s (2.0 it/s); non-finite grad_h at iteration 3, layer 0, t = 41"
    )
