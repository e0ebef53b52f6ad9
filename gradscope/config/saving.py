"""Writing experiment files: ``dumps`` writes every setting out; ``save`` edits the user's file in place when it
can (comments, order and layout stay) and writes it atomically.

    save(experiment.model_copy(update={"runs": [edited]}), "mine.toml")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from .loading import _has_key, _merge, _resolve_text, loads
from .schema import SCHEMA_VERSION, ConfigError, Experiment, RunConfig
from .sweep import flatten as _flatten


def _run_table(run: RunConfig) -> dict:
    """A run as the file's nested tables, without None values (TOML has no null) and without the name."""
    table = run.model_dump(exclude_none=True)
    table.pop("name")
    return table


def _nest(flat: dict[str, Any]) -> dict:
    nested: dict = {}
    for dotted, value in flat.items():
        *parents, last = dotted.split(".")
        table = nested
        for part in parents:
            table = table.setdefault(part, {})
        table[last] = value
    return nested


def _split_defaults(runs: list[RunConfig]) -> tuple[dict, list[dict]]:
    """(defaults, per-run overrides), both flat: defaults hold every key on which all runs agree."""
    flats = [_flatten(_run_table(r)) for r in runs]
    keys = list(flats[0]) if flats else list(_flatten(_run_table(RunConfig())))
    for flat in flats[1:]:
        keys += [k for k in flat if k not in keys]
    defaults = {
        k: flats[0][k]
        for k in keys
        if flats and all(k in f and type(f[k]) is type(flats[0][k]) and f[k] == flats[0][k] for f in flats)
    }
    overrides = [{k: v for k, v in f.items() if k not in defaults} for f in flats]
    return defaults, overrides


def dumps(experiment: Experiment) -> str:
    """The experiment as TOML with every setting written out: loading it gives the same runs."""
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("GradScope experiment file (docs/experiments.md). Every setting is written out."))
    doc.add("schema_version", SCHEMA_VERSION)
    head = tomlkit.table()
    head.add("name", experiment.name)
    head.add("seed", experiment.seed)
    if experiment.description:
        head.add("description", tomlkit.string(experiment.description, multiline="\n" in experiment.description))
    doc.add("experiment", head)
    defaults, overrides = _split_defaults(list(experiment.runs))
    doc.add("defaults", _nest(defaults))
    runs = tomlkit.aot()
    for run, override in zip(experiment.runs, overrides):
        entry = tomlkit.table()
        entry.add("name", run.name)
        for key, value in override.items():
            entry.add(tomlkit.key(key.split(".")), value)
        runs.append(entry)
    doc.add("runs", runs)
    if experiment.sweep is not None:
        sweep = tomlkit.table()
        for key, value in experiment.sweep.table().items():
            sweep.add(key, value)  # "init.recurrent_scale" = [...]: one quoted dotted key, as files write it
        doc.add("sweep", sweep)
    return tomlkit.dumps(doc)


def save(experiment: Experiment, path: str | os.PathLike) -> None:
    """Write the experiment to ``path``, atomically.

    When ``path`` (or ``experiment.source``) is a valid experiment file, it is edited in place so the user's
    comments, order and layout stay: changed values are replaced, keys added where a run now differs from the
    defaults, removed runs dropped and new runs appended.  The result is read back and compared with
    ``experiment``; if anything differs (an edit the in-place route cannot express) the file is written by
    ``dumps`` instead.
    """
    path = Path(path)
    text = dumps(experiment)
    original = path if path.exists() else experiment.source
    if original is not None and Path(original).exists():
        try:
            edited = _edit_in_place(Path(original).read_text(encoding="utf-8"), Path(original), experiment)
            if _same_runs(loads(edited, source=path, check_tasks=False), experiment):
                text = edited
        except (ConfigError, OSError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            pass  # not a file we can edit: write it whole
    atomic_write_text(path, text)


def _same_runs(a: Experiment, b: Experiment) -> bool:
    return (a.name, a.seed, a.description, a.runs) == (b.name, b.seed, b.description, b.runs)


def _edit_in_place(text: str, source: Path, experiment: Experiment) -> str:
    import tomlkit

    before = loads(text, source=source, check_tasks=False)
    doc = tomlkit.parse(text)
    if "experiment" not in doc:
        doc.add("experiment", tomlkit.table())
    head = doc["experiment"]
    for key in ("name", "seed", "description"):
        if getattr(experiment, key) != getattr(before, key):
            head[key] = getattr(experiment, key)
    # What a run entry resolves to with no keys of its own: the file's defaults.
    base = RunConfig.model_validate(_resolve_text(_merge(before.defaults, {"name": "base"}), source.parent))
    base_flat = _flatten(_run_table(base))
    old_entries = list(doc.get("runs", []))
    old_names = [r.name for r in before.runs] if old_entries else []
    old_by_name = {name: (entry, r) for name, entry, r in zip(old_names, old_entries, before.runs)}
    new_names = [r.name for r in experiment.runs]
    kept = [name for name in new_names if name in old_by_name]
    # Edit the [[runs]] array in place when the kept runs keep their order and new ones come last (layout and
    # blank lines stay); otherwise rebuild it from the (edited) entries.
    in_place = "runs" in doc and kept == [n for n in old_names if n in kept] and new_names[: len(kept)] == kept
    entries = []
    for run in experiment.runs:
        flat = _flatten(_run_table(run))
        found = old_by_name.get(run.name)
        if found is None:
            entry = tomlkit.table()
            entry.add("name", run.name)
            old_flat = dict(base_flat)
        else:
            entry, old = found
            old_flat = _flatten(_run_table(old))
        for key in set(old_flat) - set(flat):  # a key that became None (e.g. seed): drop it from the run
            _delete(entry, key)
        for key, value in flat.items():
            if key in old_flat and old_flat[key] == value and type(old_flat[key]) is type(value):
                continue
            if base_flat.get(key) == value and type(base_flat.get(key)) is type(value) and _has_key(entry, key):
                _delete(entry, key)  # back to the default
            elif not (base_flat.get(key) == value and type(base_flat.get(key)) is type(value)):
                _set(entry, key, value)
        entries.append(entry)
    if in_place:
        runs = doc["runs"]
        for index in reversed(range(len(old_names))):
            if old_names[index] not in new_names:
                del runs[index]
        for entry in entries[len(kept) :]:
            runs.append(entry)
    else:
        runs = tomlkit.aot()
        for entry in entries:
            runs.append(entry)
        if "runs" in doc:
            doc["runs"] = runs
        else:
            doc.add("runs", runs)
    return tomlkit.dumps(doc)


def _set(table, dotted: str, value) -> None:
    import tomlkit

    parts = dotted.split(".")
    node = table
    for i, part in enumerate(parts[:-1]):
        if part not in node:
            node.add(tomlkit.key(parts[i:]), value)
            return
        node = node[part]
    node[parts[-1]] = value


def _delete(table, dotted: str) -> None:
    parts = dotted.split(".")
    node = table
    for part in parts[:-1]:
        if part not in node:
            return
        node = node[part]
    if parts[-1] in node:
        del node[parts[-1]]


__all__ = ["dumps", "save"]
