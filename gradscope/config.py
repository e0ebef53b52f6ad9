"""Experiment files: TOML -> frozen, validated pydantic models, and back.

An experiment file (TRACE_FORMAT.md, docs/experiments.md) has ``schema_version = 1``, an ``[experiment]``
table (name, seed, description), a ``[defaults]`` table and ``[[runs]]`` entries that override the defaults with
(dotted) keys.  ``load`` merges each run over the defaults and validates the result as a ``RunConfig``; anything
wrong is refused with a ``ConfigError`` naming the file, the run, the dotted key, what was given and what was
expected, before anything runs or touches the disk.

    experiment = load("models/relu_init_scale.toml")
    run = experiment.runs[0]                       # RunConfig, frozen
    run.model_spec(), run.init_spec()              # what the engine needs
    edited = run.model_copy(update={"hidden_size": 64})
    save(experiment.model_copy(update={"runs": [edited]}), "mine.toml")   # keeps the file's comments
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .engine.params import ACTIVATIONS, CELLS, DTYPES, INIT_SCHEMES, InitSpec, ModelSpec

SCHEMA_VERSION = 1
TASKS = ("probe", "adding", "copy", "charlm", "tagging")
OPTIMIZERS = ("sgd", "adam")

# Refuse runs whose BPTT states would not fit in this share of the machine's memory.
MEMORY_SHARE = 0.5

_MODEL = ConfigDict(frozen=True, extra="forbid", strict=True)


class ConfigError(ValueError):
    """A refused experiment file or setting.  ``str(error)`` is the message for the user.

    source: the file (or "<string>"); run: the run's name (or its index) or None for the whole file;
    key: the dotted key at fault (e.g. "init.recurrent_scale"), or None.
    """

    def __init__(self, message: str, *, source: str | None = None, run: str | int | None = None,
                 key: str | None = None):
        super().__init__(message)
        self.source, self.run, self.key = source, run, key


class _KeyedError(ValueError):
    """Raised inside a model validator for a rule across fields; ``key`` is the dotted key to blame."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


# ---------------------------------------------------------------------------------------------- the models
class InitConfig(BaseModel):
    """How the initial parameters are drawn (engine.InitSpec; formulas in engine.params.init_matrix)."""

    model_config = _MODEL
    recurrent: Literal[INIT_SCHEMES] = "gaussian"      # scheme for W_hh
    recurrent_scale: float = Field(1.0, ge=0)           # gaussian: Var(W_hh) = scale / d; orthogonal, identity: gain
    input: Literal[INIT_SCHEMES] = "gaussian"           # scheme for W_hx
    input_scale: float = Field(1.0, ge=0)               # gaussian: Var(W_hx) = scale / fan_in
    readout_scale: float = Field(1.0, ge=0)             # W_yh ~ N(0, readout_scale / d)
    forget_bias: float = 0.0                            # lstm: added to the f block of b_h
    chrono: bool = False                                # lstm: chrono initialisation of b_i, b_f
    chrono_tmax: int = Field(0, ge=0)                   # T_max for chrono; 0: the task's seq_len


class TaskConfig(BaseModel):
    """The task that makes the data (engine.tasks).  Sizes that the task fixes are left out (None)."""

    model_config = _MODEL
    name: Literal[TASKS] = "probe"
    seq_len: int = Field(100, ge=1)                     # T
    batch_size: int = Field(16, ge=1)                   # B
    input_size: int | None = Field(None, ge=1)          # probe: n (default 32); other tasks fix it
    output_size: int | None = Field(None, ge=1)         # probe: k (default 32); other tasks fix it
    symbols: int = Field(8, ge=2)                       # copy: alphabet size
    copy_length: int = Field(10, ge=1)                  # copy: how many symbols to remember
    text: str = ""                                      # charlm: text file ("" = the corpus shipped with GradScope)
    fixed_batch: bool = False                           # reuse the first batch at every iteration

    @model_validator(mode="before")
    @classmethod
    def _probe_sizes(cls, data: Any) -> Any:
        # The probe is the only task whose sizes are free; fill its defaults so files show them.
        if isinstance(data, dict) and data.get("name", "probe") == "probe":
            data = dict(data)
            for key in ("input_size", "output_size"):
                if data.get(key) is None:
                    data[key] = 32
        return data


class TrainConfig(BaseModel):
    """The training loop (engine.trainer, engine.optim)."""

    model_config = _MODEL
    iterations: int = Field(0, ge=0)                    # parameter updates; 0: one pass at the initial parameters
    optimizer: Literal[OPTIMIZERS] = "sgd"
    lr: float = Field(0.01, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)            # sgd: heavy-ball momentum (PyTorch's SGD)
    beta1: float = Field(0.9, ge=0, lt=1)               # adam
    beta2: float = Field(0.999, ge=0, lt=1)             # adam
    eps: float = Field(1e-8, gt=0)                      # adam
    clip_norm: float = Field(0.0, ge=0)                 # clip the global gradient norm to this; 0: no clipping
    record_every: int = Field(1, ge=1)                  # keep every record_every-th iteration in the trace
    spectral_every: int = Field(1, ge=0)                # spectral_radius, sigma_max on every k-th iteration; 0: never


class RunConfig(BaseModel):
    """One run, fully resolved (defaults merged with the run's own keys)."""

    model_config = _MODEL
    name: str = Field("run", min_length=1)
    seed: int | None = Field(None, ge=0)                # None: the experiment's seed
    cell: Literal[CELLS] = "rnn"
    activation: Literal[ACTIVATIONS] = "relu"           # rnn only
    hidden_size: int = Field(128, ge=1)                 # d
    layers: int = Field(1, ge=1, le=64)                 # L
    dtype: Literal[DTYPES] = "float32"
    init: InitConfig = InitConfig()
    task: TaskConfig = TaskConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.init.chrono and self.cell != "lstm":
            raise _KeyedError("init.chrono", f"got true with cell = {self.cell!r}; expected cell = \"lstm\" "
                                             f"(chrono initialises the LSTM's gate biases)")
        if self.init.chrono and (self.init.chrono_tmax or self.task.seq_len) < 3:
            raise _KeyedError("init.chrono_tmax", "chrono initialisation needs T_max >= 3 (init.chrono_tmax, or "
                                                  "task.seq_len when it is 0)")
        needed, available = self.memory_estimate(), _memory_bytes()
        if available and needed > MEMORY_SHARE * available:
            raise _KeyedError("hidden_size", 
                f"hidden_size = {self.hidden_size}, layers = {self.layers}, task.seq_len = {self.task.seq_len} and "
                f"task.batch_size = {self.task.batch_size} need about {needed / 2**30:.1f} GiB for BPTT's states "
                f"and weights; this machine allows {MEMORY_SHARE * available / 2**30:.1f} GiB "
                f"({MEMORY_SHARE:.0%} of its memory)")
        return self

    def memory_estimate(self) -> int:
        """Bytes BPTT keeps: (G + 2) L T B d state floats, the batch and the weights (with gradients and
        optimizer state: four copies)."""
        G = 4 if self.cell == "lstm" else 1
        d, L, T, B = self.hidden_size, self.layers, self.task.seq_len, self.task.batch_size
        n = self.task.input_size or 1
        k = self.task.output_size or 1
        states = (G + 2) * L * T * B * d + T * B * (n + k + 1)
        weights = G * d * (n + d + 1) + (L - 1) * G * d * (2 * d + 1) + k * (d + 1)
        return (states + 4 * weights) * (4 if self.dtype == "float32" else 8)

    def model_spec(self) -> ModelSpec:
        """The engine's ModelSpec; input and output sizes come from the task."""
        from .engine.tasks import task_sizes

        n, k = task_sizes(self.task)
        return ModelSpec(cell=self.cell, activation=self.activation, input_size=n, hidden_size=self.hidden_size,
                         layers=self.layers, output_size=k, dtype=self.dtype)

    def init_spec(self) -> InitSpec:
        return InitSpec(**self.init.model_dump())

    def effective_seed(self, experiment_seed: int) -> int:
        return self.seed if self.seed is not None else experiment_seed


class Experiment(BaseModel):
    """A set of runs sharing defaults.  ``runs`` are fully resolved; ``defaults`` is the file's table as written."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = "experiment"
    seed: int = 0
    description: str = ""
    defaults: dict = Field(default_factory=dict)
    runs: list[RunConfig] = Field(default_factory=list)
    source: Path | None = None

    def run(self, name: str) -> RunConfig:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no run named {name!r}; the runs are {[r.name for r in self.runs]}")


class _Header(BaseModel):
    model_config = _MODEL
    name: str = Field("experiment", min_length=1)
    seed: int = Field(0, ge=0)
    description: str = ""


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


# ------------------------------------------------------------------------------------------------ loading
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
        fail(f"unknown top-level key {unknown[0]!r}; expected schema_version, [experiment], [defaults], "
             f"[[runs]]", key=unknown[0])
    if "schema_version" not in doc:
        fail("schema_version is missing; expected schema_version = 1 at the top of the file", key="schema_version")
    if doc["schema_version"] != SCHEMA_VERSION or isinstance(doc["schema_version"], bool):
        fail(f"schema_version: got {doc['schema_version']!r}; expected {SCHEMA_VERSION} (the only version this "
             f"GradScope reads)", key="schema_version")
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
            from .engine.tasks import TaskError, make_task

            try:
                task = make_task(run.task, run.dtype)
            except TaskError as error:
                fail(f"{where}: {error.key}: {error}", key=error.key, run=label if label else index)
            if run.init.input == "identity" and task.input_size != run.hidden_size:
                fail(f"{where}: init.input: got \"identity\", which needs a square W_hx, but the task's input size "
                     f"is {task.input_size} and hidden_size is {run.hidden_size}", key="init.input",
                     run=label if label else index)
        if any(r.name == run.name for r in runs):
            fail(f"{where}: name: {run.name!r} is used by an earlier run; expected every run to have its own name",
                 key="name", run=run.name)
        runs.append(run)
    return Experiment(name=header.name, seed=header.seed, description=header.description, defaults=defaults,
                      runs=runs, source=Path(source) if isinstance(source, Path) else None)


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
    model = _Header if prefix == "experiment." else RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


# ------------------------------------------------------------------------------------------------- saving
def _run_table(run: RunConfig) -> dict:
    """A run as the file's nested tables, without None values (TOML has no null) and without the name."""
    table = run.model_dump(exclude_none=True)
    table.pop("name")
    return table


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
    defaults = {k: flats[0][k] for k in keys
                if flats and all(k in f and type(f[k]) is type(flats[0][k]) and f[k] == flats[0][k] for f in flats)}
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
    from .io import atomic_write_text

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
    in_place = "runs" in doc and kept == [n for n in old_names if n in kept] and new_names[:len(kept)] == kept
    entries = []
    for run in experiment.runs:
        flat = _flatten(_run_table(run))
        entry, old = old_by_name.get(run.name, (None, None))
        if entry is None:
            entry = tomlkit.table()
            entry.add("name", run.name)
            old_flat = dict(base_flat)
        else:
            old_flat = _flatten(_run_table(old))
        for key in set(old_flat) - set(flat):        # a key that became None (e.g. seed): drop it from the run
            _delete(entry, key)
        for key, value in flat.items():
            if key in old_flat and old_flat[key] == value and type(old_flat[key]) is type(value):
                continue
            if base_flat.get(key) == value and type(base_flat.get(key)) is type(value) and _has_key(entry, key):
                _delete(entry, key)                   # back to the default
            elif not (base_flat.get(key) == value and type(base_flat.get(key)) is type(value)):
                _set(entry, key, value)
        entries.append(entry)
    if in_place:
        runs = doc["runs"]
        for index in reversed(range(len(old_names))):
            if old_names[index] not in new_names:
                del runs[index]
        for entry in entries[len(kept):]:
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


__all__ = ["ConfigError", "InitConfig", "TaskConfig", "TrainConfig", "RunConfig", "Experiment", "load", "loads",
           "dumps", "save", "SCHEMA_VERSION", "TASKS", "OPTIMIZERS"]
