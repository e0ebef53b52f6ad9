"""The package as users get it: a wheel built from this repository, installed with --no-deps into a fresh
virtual environment, run from a folder outside the source tree; and an editable install of the same tree.

Nothing is downloaded: the wheel is built with the running interpreter's build backend, hatchling (no build
isolation), and the fresh environment sees the already installed dependencies through a .pth file pointing at
the running interpreter's site-packages (a .pth file's folders are added to sys.path, their own .pth files are
not run, so the running environment's GradScope, if any, stays out of it).  The fresh environment has no pip of
its own: the running one's, seen through that .pth file, installs into whichever interpreter runs it.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted(p.name for p in (ROOT / "models").glob("*.toml"))

pytestmark = pytest.mark.slow

# Runs in the fresh environment: where GradScope and its presets come from, and the app on every preset.
CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import gradscope
    from gradscope import config, presets
    files = presets.preset_files()
    report = {"package": gradscope.__file__, "presets": [str(p) for p in files],
              "default": str(presets.default_preset()), "runs": {}, "menu": []}
    if "--app" in sys.argv:
        from PyQt6 import QtCore
        from gradscope.gui.app import make_app
        from gradscope.gui.main_window import MainWindow
        app = make_app()
        settings = QtCore.QSettings(sys.argv[-1], QtCore.QSettings.Format.IniFormat)
        for path in files:
            window = MainWindow(backend="numpy", settings=settings, warm_up=False)
            assert window.open_file(path), path
            report["runs"][path.name] = [s.run.name for s in window.controller.states]
            report["menu"] = [a.text() for a in window.presets_menu.actions()]
            window.controller.shutdown(timeout_ms=None)
            window.close()
            window.deleteLater()
            app.processEvents()
    print(json.dumps(report))
""")


def _require_the_build_backend() -> None:
    """The build runs without isolation (nothing downloaded), so this environment needs pyproject.toml's
    build requirement (the test extra installs it)."""
    from importlib import metadata

    try:
        version = metadata.version("hatchling")
    except metadata.PackageNotFoundError:
        version = "0.0"
    major, minor = (int(part) for part in version.split(".")[:2])
    if (major, minor) < (1, 27):
        pytest.fail(f"hatchling {version} cannot build GradScope (pyproject.toml needs >= 1.27): pip install '.[test]'")


def _backend_warnings(stderr: str) -> list[str]:
    """The lines of a quiet pip run that warn, apart from pip's own notes on this machine's package indexes."""
    return [line for line in stderr.splitlines() if "warn" in line.lower() and not line.startswith("WARNING: Location")]


def _copy_of_the_repository(dest: Path) -> Path:
    """The source tree without build products or caches (the build writes into the tree it builds)."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "out", "runs", ".pytest_cache", "*.nbi", "*.nbc"
    )
    return Path(shutil.copytree(ROOT, dest / "src", ignore=ignore))


def _fresh_venv(path: Path) -> Path:
    # No pip of its own: the running environment's pip and hatchling (seen through the .pth file) install into
    # it, since pip installs into the interpreter that runs it.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True, timeout=300
    )
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if Path(p).is_dir()]
    (Path(purelib) / "gradscope-test-deps.pth").write_text("\n".join(ours) + "\n")
    return python


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        NUMBA_CACHE_DIR=str(tmp_path / "numba"),
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        GRADSCOPE_LOG_DIR=str(tmp_path / "logs"),
    )
    return env


def _report(python: Path, cwd: Path, env: dict, *args) -> dict:
    proc = subprocess.run(
        [str(python), "-c", CHILD, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_wheel_installed_elsewhere_finds_validates_and_opens_every_preset(tmp_path):
    _require_the_build_backend()
    src = _copy_of_the_repository(tmp_path)
    env = _env(tmp_path)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=src,
        timeout=600,
        text=True,
    )
    assert _backend_warnings(built.stderr) == []
    (wheel,) = (tmp_path / "dist").glob("gradscope-*.whl")
    venv = tmp_path / "venv"
    python = _fresh_venv(venv)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel)],
        check=True,
        capture_output=True,
        env=env,
        timeout=600,
    )
    shutil.rmtree(src)  # nothing may come from a source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    report = _report(python, elsewhere, env, "--app", str(tmp_path / "settings.ini"))
    assert Path(report["package"]).is_relative_to(venv)
    presets = [Path(p) for p in report["presets"]]
    assert [p.name for p in presets] == PRESETS and all(p.is_relative_to(venv) for p in presets)
    assert Path(report["default"]).name == "relu_init_scale.toml"
    assert sorted(report["runs"]) == PRESETS and all(report["runs"].values())
    assert report["menu"] == [Path(name).stem.replace("_", " ") for name in PRESETS]
    for path in presets:
        proc = subprocess.run(
            [str(venv / "bin" / "gradscope"), "validate", str(path)],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0 and ": ok, experiment" in proc.stderr, proc.stderr


def test_an_editable_install_finds_the_presets_in_the_source_tree(tmp_path):
    _require_the_build_backend()
    src = _copy_of_the_repository(tmp_path)
    env = _env(tmp_path)
    python = _fresh_venv(tmp_path / "venv")
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--ignore-installed",
            "--no-build-isolation",
            "-q",
            "-e",
            str(src),
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        text=True,
    )
    # setuptools printed two warnings at every install (an importable folder missing from its package list; its
    # editable finder's "be careful with folders" notice): an install a user runs prints nothing
    assert _backend_warnings(installed.stderr) == []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = _report(python, elsewhere, env)
    assert Path(report["package"]).is_relative_to(src)
    assert [Path(p).parent for p in report["presets"]] == [src / "models"] * len(PRESETS)
    assert [Path(p).name for p in report["presets"]] == PRESETS
