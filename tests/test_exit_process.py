"""terminal.exit_process: how `python -m gradscope` and the `gradscope` script end, without the interpreter's
teardown, but with everything the interpreter would still have done first: the non-daemon threads joined, the
atexit handlers run, the output flushed, the exit code kept."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_threads_joined_atexit_run_output_flushed_code_kept(tmp_path):
    done = tmp_path / "written by a thread"
    script = textwrap.dedent(f"""
        import atexit, sys, threading, time
        from gradscope.terminal import exit_process

        def late_writer():
            time.sleep(0.3)
            with open({str(done)!r}, "w") as f:
                f.write("done")

        threading.Thread(target=late_writer).start()  # not a daemon: the interpreter would wait for it
        atexit.register(lambda: print("atexit ran"))
        print("buffered", end="")  # no newline: still in the buffer when exit_process is called
        sys.stderr.write("to stderr")
        exit_process(3)
        print("never printed")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 3
    assert out.stdout == "bufferedatexit ran\n"
    assert out.stderr == "to stderr"
    assert done.read_text() == "done"


def test_entry_points_end_through_exit_process():
    import tomllib

    from gradscope import __main__ as entry_module

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gradscope"] == "gradscope.__main__:entry" and callable(entry_module.entry)
    assert "exit_process(main())" in (ROOT / "gradscope" / "__main__.py").read_text()
    out = subprocess.run([sys.executable, "-m", "gradscope", "run"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "gradscope" in out.stderr  # a usage error keeps its exit code
