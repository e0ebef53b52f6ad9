"""Experiment files: TOML -> frozen, validated pydantic models, and back.

An experiment file (docs/trace_format.md, docs/experiments.md) has ``schema_version = 1``, an ``[experiment]``
table (name, seed, description), a ``[defaults]`` table and ``[[runs]]`` entries that override the defaults with
(dotted) keys.  ``load`` merges each run over the defaults and validates the result as a ``RunConfig``; anything
wrong is refused with a ``ConfigError`` naming the file, the run, the dotted key, what was given and what was
expected, before anything runs or touches the disk.  Validity depends on the file alone, never on the machine:
whether a run fits this machine's memory is checked where it runs (experiment.check_memory).

    experiment = load("models/relu_init_scale.toml")
    run = experiment.runs[0]                       # RunConfig, frozen
    run.model_spec(), run.init_spec()              # what the engine needs
    edited = run.model_copy(update={"hidden_size": 64})
    save(experiment.model_copy(update={"runs": [edited]}), "mine.toml")   # keeps the file's comments

    schema.py     the models (RunConfig, InitConfig, TaskConfig, TrainConfig, Experiment) and ConfigError
    loading.py    load, loads: merging [defaults] into [[runs]], and the error messages
    saving.py     dumps, save: writing every setting out, or editing the user's file in place
    sweep.py      the [sweep] table and the points it expands to (sweep_points)
"""

from __future__ import annotations

from .loading import load, loads
from .saving import dumps, save
from .schema import (
    OPTIMIZERS,
    SCHEMA_VERSION,
    TASKS,
    AnalysisConfig,
    ConfigError,
    Experiment,
    InitConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
)
from .sweep import Sweep, SweepPoint, sweep_points

__all__ = [
    "ConfigError",
    "AnalysisConfig",
    "InitConfig",
    "TaskConfig",
    "TrainConfig",
    "RunConfig",
    "Experiment",
    "Sweep",
    "SweepPoint",
    "sweep_points",
    "load",
    "loads",
    "dumps",
    "save",
    "SCHEMA_VERSION",
    "TASKS",
    "OPTIMIZERS",
]
