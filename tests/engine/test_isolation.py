"""The engine in fresh processes: no Qt behind its imports, and a package folder nobody may write to.

Read-only case: a copy of the package with every folder and file read-only (chmod), HOME,
NUMBA_CACHE_DIR and, for the last case, the temporary folder pointing at paths under a regular file
(no process, root included, can create a folder there).  Permissions do not stop root (CI runs as root),
so the child runs as the unprivileged user "nobody" when it can; where the interpreter is not reachable
by "nobody" (a pyenv Python under /root), the package's engine/__pycache__ is made a regular file instead,
which denies Numba's in-tree cache to root as well.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _as_nobody_kwargs() -> dict | None:
    """subprocess arguments that run a child as "nobody", or None when that is impossible or pointless."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    kwargs = dict(user=NOBODY, group=NOBODY, extra_groups=[])
    try:
        subprocess.run([sys.executable, "-c", "pass"], cwd="/", capture_output=True, timeout=60, check=True, **kwargs)
    except (OSError, subprocess.CalledProcessError):
        return None
    return kwargs


def _run(code: str, env: dict, cwd: Path, args=(), as_user: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        **(as_user or {}),
    )


def test_engine_config_and_trace_import_without_qt():
    code = (
        "import sys\n"
        "import gradscope.engine, gradscope.engine.driver, gradscope.engine.plan, gradscope.engine.trainer, "
        "gradscope.config, gradscope.trace\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PyQt6', 'pyqtgraph', 'PySide6')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = _run(code, env, REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


CHILD = r"""
import json, os, sys, tempfile, warnings
import numpy as np
tempfile.tempdir = os.environ["CHILD_TMP"]          # where tempfile.gettempdir() points (may be unwritable)
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import gradscope
    from gradscope.engine import _jit
result = {"package": gradscope.__file__, "cache": _jit.CACHE, "cache_dir": _jit.CACHE_DIR,
          "warnings": [str(w.message) for w in caught]}
if sys.argv[-1] == "full":
    from gradscope.engine import ModelSpec, InitSpec, init_params, bptt
    spec = ModelSpec(cell="rnn", activation="tanh", input_size=3, hidden_size=5, layers=2, output_size=2,
                     dtype="float64")
    rng = np.random.default_rng(0)
    params = init_params(spec, InitSpec(), rng)
    x = rng.standard_normal((7, 2, 3)); target = rng.standard_normal((7, 2, 2))
    r = bptt(spec, params, x, target, np.ones((7, 2)), "mse")
    result["loss"] = r.loss
    result["grad_norms"] = list(r.grads.norms().values())
else:
    from gradscope.engine import fastmath
    out = np.empty(3)
    fastmath.exp_into(np.array([0.0, 1.0, -1.0]), out)
    result["exp"] = out.tolist()
print(json.dumps(result))
"""


def _expected():
    from gradscope.engine import InitSpec, ModelSpec, bptt, init_params

    spec = ModelSpec(
        cell="rnn", activation="tanh", input_size=3, hidden_size=5, layers=2, output_size=2, dtype="float64"
    )
    rng = np.random.default_rng(0)
    params = init_params(spec, InitSpec(), rng)
    x = rng.standard_normal((7, 2, 3))
    target = rng.standard_normal((7, 2, 2))
    r = bptt(spec, params, x, target, np.ones((7, 2)), "mse")
    return r.loss, list(r.grads.norms().values())


def _make_read_only(root: Path):
    for path in [root, *root.rglob("*")]:
        mode = 0o555 if path.is_dir() else 0o444
        path.chmod(mode)


def _make_writable(root: Path):
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.fixture()
def sandbox():
    """A world-readable folder holding a read-only copy of the package; HOME and NUMBA_CACHE_DIR unwritable."""
    as_user = _as_nobody_kwargs()
    top = Path(tempfile.mkdtemp(prefix="gradscope-ro-"))
    top.chmod(0o755)
    pkg = top / "pkg"
    shutil.copytree(REPO / "gradscope", pkg / "gradscope", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    blocker = top / "blocker"  # a regular file: nothing can be created under it
    blocker.write_text("not a folder\n")
    if as_user is None:  # root without "nobody": deny the in-tree cache by a file
        (pkg / "gradscope" / "engine" / "__pycache__").write_text("not a folder\n")
    scratch = top / "scratch"
    scratch.mkdir()
    scratch.chmod(0o777)
    _make_read_only(pkg)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    env.update(
        PYTHONPATH=str(pkg),
        HOME=str(blocker / "home"),
        NUMBA_CACHE_DIR=str(blocker / "numba-cache"),
        PYTHONDONTWRITEBYTECODE="1",
        CHILD_TMP=str(scratch),
    )
    try:
        yield top, pkg, env, as_user
    finally:
        _make_writable(top)
        shutil.rmtree(top, ignore_errors=True)


def test_read_only_package_caches_in_the_temporary_folder_and_computes_right(sandbox):
    top, pkg, env, as_user = sandbox
    out = _run(CHILD, env, pkg, ["full"], as_user)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(pkg))
    assert result["cache"] is True
    assert result["cache_dir"].startswith(str(top / "scratch"))  # the last fallback, not the package
    assert list(Path(result["cache_dir"]).rglob("*.nbi")), "nothing was cached"
    assert not list((pkg / "gradscope").rglob("*.nbi"))
    loss, norms = _expected()
    assert result["loss"] == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(result["grad_norms"], norms, rtol=1e-12)


def test_nothing_writable_still_imports_and_runs_uncached(sandbox):
    top, pkg, env, as_user = sandbox
    env = {**env, "CHILD_TMP": str(top / "blocker" / "tmp")}  # the temporary folder is unwritable too
    out = _run(CHILD, env, pkg, ["small"], as_user)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["cache"] is False
    assert any("no writable folder for Numba's cache" in w for w in result["warnings"])
    np.testing.assert_allclose(result["exp"], np.exp([0.0, 1.0, -1.0]), rtol=1e-15)


def test_cache_folder_changes_with_any_kernel_source(tmp_path, monkeypatch):
    """Numba re-validates a cached kernel only against its own file; the salted folder name makes an edit
    of fastmath.py, _jit.py or metrics.py (inlined or compiled into the kernels) start a fresh cache."""
    from gradscope.engine import _jit

    if _jit.CACHE:
        assert Path(_jit.CACHE_DIR).name == "gradscope-" + _jit.source_salt()
    for name in _jit._SALTED_SOURCES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((_jit._HERE / name).read_bytes())
    monkeypatch.setattr(_jit, "_HERE", tmp_path)
    salts = {_jit.source_salt()}
    assert {"fastmath.py", "metrics.py", "step.py", "cells/lstm.py", "cells/__init__.py"} <= set(_jit._SALTED_SOURCES)
    for name in ("fastmath.py", "metrics.py", "cells/lstm.py"):
        with open(tmp_path / name, "a") as f:
            f.write("\n# edited\n")
        salts.add(_jit.source_salt())
    assert len(salts) == 4
