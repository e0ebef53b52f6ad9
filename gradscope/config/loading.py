"""Reading experiment files: TOML -> validated Experiment, or a ConfigError whose message names the file, the
run, the dotted key, what was given and what was expected.

    experiment = load("models/relu_init_scale.toml")
    experiment = loads(text, source="<editor>")
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ..engine.tasks import TaskError, make_task
from .schema import SCHEMA_VERSION, ConfigError, Experiment, RunConfig, _Header, _KeyedError


def load(path: str | os.PathLike, *, check_tasks: bool = True) -> Experiment:
    """Read and validate an experiment file.  Raises ConfigError (with the file's name) on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the experiment file: {error}", source=str(path)) from None
    return loads(text, source=path, check_tasks=check_tasks)


def loads(text: str, source: str | os.PathLike = "<string>", *, check_tasks: bool = True) -> Experiment:
    """Validate the text of an experiment file.  ``source`` names it in messages; when it is a path, relative
    text files (task.text) are resolved against its folder.  ``check_tasks`` also builds each run's task
    (catches a missing text file or a sequence too short for the copy task)."""
    name = str(source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{name}: TOML syntax error: {error}", source=name) from None

    def fail(message: str, key: str | None = None, run=None):
        raise ConfigError(f"{name}: {message}", source=name, run=run, key=key)

    unknown = sorted(set(doc) - {"schema_version", "experiment", "defaults", "runs"})
    if unknown:
        fail(
            f"unknown top-level key {unknown[0]!r}; expected schema_version, [experiment], [defaults], [[runs]]",
            key=unknown[0],
        )
    if "schema_version" not in doc:
        fail("schema_version is missing; expected schema_version = 1 at the top of the file", key="schema_version")
    if doc["schema_version"] != SCHEMA_VERSION or isinstance(doc["schema_version"], bool):
        fail(
            f"schema_version: got {doc['schema_version']!r}; expected {SCHEMA_VERSION} (the only version this "
            f"GradScope reads)",
            key="schema_version",
        )
    header = doc.get("experiment", {})
    if not isinstance(header, dict):
        fail(f"[experiment] must be a table, got {header!r}", key="experiment")
    try:
        header = _Header.model_validate(header)
    except ValidationError as error:
        fail(*_explain(error, prefix="experiment."))
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        fail(f"[defaults] must be a table, got {defaults!r}", key="defaults")
    if "name" in defaults:
        fail("defaults.name: every run names itself; put name = ... in each [[runs]] entry", key="defaults.name")
    entries = doc.get("runs", [{}])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        fail("runs must be an array of tables ([[runs]] entries)", key="runs")
    if not entries:
        fail("the file has an empty runs array; give at least one [[runs]] entry or none at all", key="runs")
    base_dir = Path(source).parent if isinstance(source, Path) else None

    runs: list[RunConfig] = []
    for index, entry in enumerate(entries):
        label = entry.get("name") if isinstance(entry.get("name"), str) else None
        where = f"run {label!r} (runs[{index}])" if label else f"runs[{index}]"
        if "runs" not in doc:
            where = "[defaults] (the file's only run)"
        merged = _merge(defaults, entry)
        merged.setdefault("name", label or (header.name if len(entries) == 1 else f"run {index + 1}"))
        merged = _resolve_text(merged, base_dir)
        try:
            run = RunConfig.model_validate(merged)
        except ValidationError as error:
            message, key = _explain(error)
            origin = ""
            if key and "runs" in doc and not _has_key(entry, key) and _has_key(defaults, key):
                origin = " (set in [defaults])"
            fail(f"{where}: {message}{origin}", key=key, run=label if label else index)
        if check_tasks:
            try:
                task = make_task(run.task, run.dtype, run.architecture)
            except TaskError as error:
                fail(f"{where}: {error.key}: {error}", key=error.key, run=label if label else index)
            if run.init.input == "identity" and task.input_size != run.hidden_size:
                fail(
                    f'{where}: init.input: got "identity", which needs a square W_hx, but the task\'s input size '
                    f"is {task.input_size} and hidden_size is {run.hidden_size}",
                    key="init.input",
                    run=label if label else index,
                )
        if any(r.name == run.name for r in runs):
            fail(
                f"{where}: name: {run.name!r} is used by an earlier run; expected every run to have its own name",
                key="name",
                run=run.name,
            )
        runs.append(run)
    return Experiment(
        name=header.name,
        seed=header.seed,
        description=header.description,
        defaults=defaults,
        runs=runs,
        source=Path(source) if isinstance(source, Path) else None,
    )


def _merge(base: dict, override: dict) -> dict:
    """Deep merge: the run's tables override the defaults key by key."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _has_key(table: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(table, dict) or part not in table:
            return False
        table = table[part]
    return True


def _resolve_text(run: dict, base_dir: Path | None) -> dict:
    """task.text relative to the experiment file's folder, made absolute so a run stands on its own."""
    task = run.get("task")
    if isinstance(task, dict) and isinstance(task.get("text"), str) and task["text"]:
        path = Path(task["text"]).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = (base_dir / path).resolve()
        run = dict(run, task=dict(task, text=str(path)))
    return run


def _explain(error: ValidationError, prefix: str = "") -> tuple[str, str | None]:
    """One readable line per problem: key, what was given, what was expected.  Returns (message, first key)."""
    lines, first = [], None
    for err in error.errors():
        key = prefix + ".".join(str(p) for p in err["loc"]) if err["loc"] else None
        first = first or key
        given = err.get("input")
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            model = _model_at(parent, prefix)
            known = ", ".join(model.model_fields) if model else ""
            lines.append(f"{key}: unknown key; expected one of: {known}")
        elif err["type"] == "value_error":
            cause = err["ctx"]["error"]
            if isinstance(cause, _KeyedError):
                key = prefix + cause.key
                first = first or key
            lines.append((f"{key}: " if key else "") + str(cause))
        else:
            expected = err["msg"][0].lower() + err["msg"][1:]
            expected = expected.replace("input should be", "expected").replace("input", "a value")
            for word in ("greater", "less"):
                expected = expected.replace(f"expected {word} than", f"expected a value {word} than")
            lines.append(f"{key}: got {given!r} ({type(given).__name__}); {expected}")
    return "; ".join(lines), first


def _model_at(loc: tuple, prefix: str):
    model: type[BaseModel] = _Header if prefix == "experiment." else RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


__all__ = ["load", "loads"]
