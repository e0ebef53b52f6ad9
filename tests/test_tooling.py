"""The static checks are live: each tool runs with the project's configuration (pyproject.toml) and fails on a
planted fault, and passes where there is none.  A missing tool skips its tests on a developer's machine and
fails them in CI (CI=true), where every check must run."""

import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CONFIG = tomllib.loads(PYPROJECT.read_text())
# may import Qt (api: gradscope.run / gradscope.open hand Results the GUI's figure renderer); the rest is the core
APP_OPENERS = {"gradscope.gui", "gradscope.cli", "gradscope.__main__", "gradscope.api"}


def tool(name: str) -> str:
    """The path of a checker: the one installed beside the running interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (scripts/install.sh --test installs it, extra [dev] in pyproject.toml)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: CI runs every static check")
        pytest.skip(message)
    return found


def run(*command, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def contract(**match) -> dict:
    """The import-linter contract of pyproject.toml whose keys have the given values (e.g. type="layers")."""
    found = [c for c in CONFIG["tool"]["importlinter"]["contracts"] if all(c.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"pyproject.toml: expected one import contract with {match}, found {len(found)}"
    return found[0]


CORE_WITHOUT_QT = contract(forbidden_modules=["PyQt6", "pyqtgraph", "gradscope.gui"])
ENGINE_ALONE = contract(source_modules=["gradscope.engine"])

# A module that follows the project's style: the lecture's `l` for a layer index (E741 is off), a line of 112
# characters (within 120, beyond ruff's default 88, so a lost line-length fails here), sorted imports.
CLEAN = '''"""A clean module."""

import math


def layer_norms(weights: list[list[float]]) -> list[float]:
    norms: list[float] = []
    for l, row in enumerate(weights):
        norms.append(math.sqrt(sum(w * w for w in row)) + 0.0 * l + 0.0 * len(weights) + 0.0 * len(norms) + 0.0)
    return norms
'''


# ---------------------------------------------------------------------------------------------------- ruff
@pytest.mark.parametrize(
    "fault, code",
    [
        ("import os\n", "F401"),
        ("\n\nvalue = " + "1 + " * 29 + "1\n", "E501"),  # 125 characters
        ("\n\ndef f(x=[]):\n    return x\n", "B006"),
        ("\n\ndef noise():\n    import numpy as np\n\n    return np.random.rand(3)\n", "NPY002"),
    ],
    ids=["unused-import", "long-line", "mutable-default", "global-random-state"],
)
def test_ruff_check_fails_on_a_fault_and_passes_the_clean_module(tmp_path, fault, code):
    ruff = tool("ruff")
    clean = tmp_path / "clean.py"
    clean.write_text(CLEAN)
    assert run(ruff, "check", "--no-cache", "--config", str(PYPROJECT), str(clean), cwd=tmp_path).returncode == 0
    faulty = tmp_path / "faulty.py"
    faulty.write_text(CLEAN + fault)
    result = run(ruff, "check", "--no-cache", "--config", str(PYPROJECT), str(faulty), cwd=tmp_path)
    assert result.returncode == 1 and code in result.stdout, result.stdout + result.stderr


def test_ruff_format_check_fails_on_an_unformatted_module_and_passes_the_clean_one(tmp_path):
    ruff = tool("ruff")
    clean, messy = tmp_path / "clean.py", tmp_path / "messy.py"
    clean.write_text(CLEAN)
    messy.write_text(CLEAN + "\n\nsizes = [1,2,  3]\n")
    assert (
        run(ruff, "format", "--check", "--no-cache", "--config", str(PYPROJECT), str(clean), cwd=tmp_path).returncode
        == 0
    )
    result = run(ruff, "format", "--check", "--no-cache", "--config", str(PYPROJECT), str(messy), cwd=tmp_path)
    assert result.returncode == 1 and "messy.py" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------- mypy
def test_mypy_fails_on_a_type_error_and_passes_a_typed_module(tmp_path):
    mypy = tool("mypy")
    typed, wrong = tmp_path / "typed.py", tmp_path / "wrong.py"
    typed.write_text(CLEAN)
    wrong.write_text(CLEAN + "\n\ndef total(norms: list[float]) -> str:\n    return sum(norms)\n")
    common = (mypy, "--config-file", str(PYPROJECT), "--cache-dir", str(tmp_path / "cache"))
    passed = run(*common, str(typed), cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    failed = run(*common, str(wrong), cwd=tmp_path)
    assert failed.returncode == 1 and "wrong.py:" in failed.stdout and "[return-value]" in failed.stdout, (
        failed.stdout + failed.stderr
    )


# ------------------------------------------------------------------------------------------- import-linter
def lint_imports_on_a_copy(tmp_path: Path, planted: str | None) -> str:
    """lint-imports' report on a copy of the package whose engine/__init__.py ends with the planted line."""
    lint_imports = tool("lint-imports")
    shutil.copytree(ROOT / "gradscope", tmp_path / "gradscope", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    if planted:
        with open(tmp_path / "gradscope" / "engine" / "__init__.py", "a") as f:
            f.write(f"\n{planted}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(tmp_path)}
    result = run(lint_imports, "--no-cache", "--no-logo", "pyproject.toml", cwd=tmp_path, env=env)
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: broken contracts; else a crash
    return result.stdout


def test_lint_imports_keeps_the_engine_contract_on_the_package_as_it_is(tmp_path):
    report = lint_imports_on_a_copy(tmp_path, planted=None)
    assert f"{ENGINE_ALONE['name']} KEPT" in report, report


@pytest.mark.parametrize(
    "planted, chain, broken",
    [
        ("from PyQt6 import QtCore", "gradscope.engine -> PyQt6", [CORE_WITHOUT_QT]),
        ("from .. import gui", "gradscope.engine -> gradscope.gui", [CORE_WITHOUT_QT, ENGINE_ALONE]),
    ],
    ids=["PyQt6", "gradscope.gui"],
)
def test_lint_imports_names_the_contract_an_engine_import_breaks(tmp_path, planted, chain, broken):
    report = lint_imports_on_a_copy(tmp_path, planted)
    for c in broken:
        assert f"{c['name']} BROKEN" in report, report
    assert chain in report, report  # the planted line itself, not a chain that was there before


def test_the_core_contract_lists_every_module_of_the_core():
    modules = {f"gradscope.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "gradscope")])}
    assert set(CORE_WITHOUT_QT["source_modules"]) == modules - APP_OPENERS, (
        "pyproject.toml: the Qt-free core contract must list every gradscope module but gui, cli, api and __main__"
    )


# ------------------------------------------------------------------------------------- pre-commit and CI
def test_pre_commit_runs_local_hooks_that_fail_on_a_fault(tmp_path):
    pre_commit = tool("pre-commit")
    import yaml  # comes with pre-commit

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [h for repo in config["repos"] for h in repo["hooks"]]
    assert all(repo["repo"] == "local" for repo in config["repos"]), "no hook repository may be fetched"
    assert all(h["language"] == "system" for h in hooks), "every hook runs the venv's pinned tool"
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    for name in (".pre-commit-config.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the hooks call .venv/bin/<tool>
    (tmp_path / "faulty.py").write_text(CLEAN + "import os\n")
    env = os.environ | {"PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    run("git", "init", "-q", cwd=tmp_path)
    run("git", "add", ".pre-commit-config.yaml", "pyproject.toml", "faulty.py", cwd=tmp_path)
    result = run(pre_commit, "run", "--files", "faulty.py", cwd=tmp_path, env=env)
    assert result.returncode == 1 and "F401" in result.stdout, result.stdout + result.stderr
    (tmp_path / "faulty.py").write_text(CLEAN)
    result = run(pre_commit, "run", "--files", "faulty.py", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_tools_of_the_pre_commit_hooks():
    ci = set(re.findall(r"^step .*?\.venv/bin/([\w-]+)", (ROOT / ".ci" / "run").read_text(), re.M))
    hooks = set(re.findall(r"entry: \.venv/bin/([\w-]+)", (ROOT / ".pre-commit-config.yaml").read_text()))
    assert ci == hooks == {"ruff", "lint-imports", "mypy"}


def test_a_missing_tool_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI runs every static check"):
        tool("gradscope-no-such-checker")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        tool("gradscope-no-such-checker")
