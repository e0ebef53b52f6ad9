"""The experiment file's schema: frozen pydantic models with every default visible, and the rules across fields.

    run = RunConfig(cell="lstm", hidden_size=64)     # frozen; run.model_copy(update=...) for an edited copy
    run.model_spec(), run.init_spec()                # what the engine needs
    run.memory_estimate()                            # bytes BPTT keeps (checked where it runs: experiment.py)

The names a field accepts come from the engine, as Literal types (their tuples derived with get_args):
cells and activations from engine.cells (CellName, Activation), dtypes and init schemes from engine.params
(Dtype, InitScheme), task names from the task registry (engine.tasks.TaskName).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..engine.analysis import AnalysisSpec
from ..engine.cells import CELLS as CELL_DESCRIPTIONS, Activation, CellName, cell
from ..engine.params import DEFAULT_SHARDS, Dtype, InitScheme, InitSpec, ModelSpec
from ..engine.tasks import TASK_NAMES, TaskName, make_task
from .checks import name_problem

SCHEMA_VERSION: Final = 1
TASKS = TASK_NAMES
Architecture = Literal["stack", "seq2seq"]  # engine.params.ARCHITECTURES
Optimizer = Literal["sgd", "adam"]
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)

# allow_inf_nan: every float key refuses NaN and +-Inf (they are results, never settings)
_MODEL = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class ConfigError(ValueError):
    """A refused experiment file or setting.  ``str(error)`` is the message for the user.

    source: the file (or "<string>"); run: the run's name (or its index) or None for the whole file;
    key: the dotted key at fault (e.g. "init.recurrent_scale"), or None.
    """

    def __init__(
        self, message: str, *, source: str | None = None, run: str | int | None = None, key: str | None = None
    ):
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
    recurrent: InitScheme = "gaussian"  # scheme for W_hh
    recurrent_scale: float = Field(1.0, ge=0)  # gaussian: Var(W_hh) = scale / d; orthogonal, identity: gain
    input: InitScheme = "gaussian"  # scheme for W_hx
    input_scale: float = Field(1.0, ge=0)  # gaussian: Var(W_hx) = scale / fan_in
    readout_scale: float = Field(1.0, ge=0)  # W_yh ~ N(0, readout_scale / d)
    bias_scale: float = Field(0.0, ge=0)  # Var(b_h) = bias_scale (the phase diagram's sigma_b^2); 0: b_h = 0
    forget_bias: float = 0.0  # lstm: added to the f block of b_h
    chrono: bool = False  # lstm: chrono initialisation of b_i, b_f
    chrono_tmax: int = Field(0, ge=0)  # T_max for chrono; 0: the task's seq_len


class TaskConfig(BaseModel):
    """The task that makes the data (engine.tasks).  Sizes that the task fixes are left out (None)."""

    model_config = _MODEL
    name: TaskName = "probe"
    seq_len: int = Field(100, ge=1)  # T
    batch_size: int = Field(16, ge=1)  # B
    input_size: int | None = Field(None, ge=1)  # probe: n (default 32); other tasks fix it
    output_size: int | None = Field(None, ge=1)  # probe: k (default 32); other tasks fix it
    symbols: int = Field(8, ge=2)  # copy: alphabet size
    copy_length: int = Field(10, ge=1)  # copy: how many symbols to remember
    text: str = ""  # charlm: text file ("" = the corpus shipped with GradScope)
    fixed_batch: bool = False  # reuse the first batch at every iteration
    target_len: int | None = Field(None, ge=1)  # seq2seq: the decoder's steps T_tgt (None: seq_len)
    reverse_source: bool = False  # seq2seq: feed the source backwards (Sutskever et al. 2014)

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
    iterations: int = Field(0, ge=0)  # parameter updates; 0: one pass at the initial parameters
    optimizer: Optimizer = "sgd"
    lr: float = Field(0.01, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd: heavy-ball momentum (PyTorch's SGD)
    beta1: float = Field(0.9, ge=0, lt=1)  # adam
    beta2: float = Field(0.999, ge=0, lt=1)  # adam
    eps: float = Field(1e-8, gt=0)  # adam
    clip_norm: float = Field(0.0, ge=0)  # clip the global gradient norm to this; 0: no clipping
    record_every: int = Field(1, ge=1)  # keep every record_every-th iteration in the trace
    spectral_every: int = Field(1, ge=0)  # spectral_radius, sigma_max on every k-th iteration; 0: never
    # parts of the batch a big pass runs on, on threads: they fix the order of the sums, hence the bits of the
    # result on every machine; the threads only change the speed (engine.shards)
    shards: int = Field(DEFAULT_SHARDS, ge=1, le=64)


class AnalysisConfig(BaseModel):
    """[defaults.analysis]: long-lag Jacobians and Lyapunov exponents (engine.analysis; docs/trace_format.md)."""

    model_config = _MODEL
    every: int = Field(0, ge=0)  # 0: off; k > 0: at iteration 0 and at every k-th recorded iteration
    jacobian: bool = True  # the long-lag Jacobian norms (and dL/dW_hh by lag)
    lyapunov: int = Field(0, ge=0)  # how many Lyapunov exponents (0: none; at most the state size)
    warmup: int = Field(500, ge=0)  # steps run and discarded before the exponents are measured
    steps: int = Field(1000, ge=1)  # steps measured
    h0: Literal["zero", "random"] = "zero"  # the exponents' s_{-1}: zero, or N(0, 1) per unit
    examples: int = Field(1, ge=1, le=1024)  # batch examples the exponents are averaged over


class RunConfig(BaseModel):
    """One run, fully resolved (defaults merged with the run's own keys)."""

    model_config = _MODEL
    name: str = Field("run", min_length=1)
    seed: int | None = Field(None, ge=0)  # None: the experiment's seed
    cell: CellName = "rnn"
    activation: Activation = "relu"  # cells that use one (the plain RNN)
    hidden_size: int = Field(128, ge=1)  # d
    layers: int = Field(1, ge=1, le=64)  # L
    bidirectional: bool = False  # each layer also runs in reverse; the layer above and the readout read both
    # "stack": layers with a readout; "seq2seq": an encoder of `layers` layers (bidirectional if asked) whose
    # final states start a decoder of as many layers, the readout on the decoder (engine/seq2seq.py)
    architecture: Architecture = "stack"
    dtype: Dtype = "float32"
    init: InitConfig = InitConfig()
    task: TaskConfig = TaskConfig()
    train: TrainConfig = TrainConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        D = self.hidden_size * len(cell(self.cell).states)  # the state size: d, or 2d for the LSTM's (h, c)
        if self.analysis.lyapunov > D:
            raise _KeyedError(
                "analysis.lyapunov",
                f"got {self.analysis.lyapunov}; expected at most the state size {D} (hidden_size "
                f"{self.hidden_size}" + (", times 2 for the LSTM's (h, c))" if D > self.hidden_size else ")"),
            )
        if self.init.chrono and not cell(self.cell).applies("init.chrono"):
            takers = " or ".join(f'cell = "{c.name}"' for c in CELL_DESCRIPTIONS.values() if c.applies("init.chrono"))
            raise _KeyedError(
                "init.chrono",
                f"got true with cell = {self.cell!r}; expected {takers} (chrono initialises the LSTM's gate biases)",
            )
        if self.init.chrono and (self.init.chrono_tmax or self.task.seq_len) < 3:
            raise _KeyedError(
                "init.chrono_tmax",
                "chrono initialisation needs T_max >= 3 (init.chrono_tmax, or task.seq_len when it is 0)",
            )
        if self.architecture != "seq2seq":
            for key, value in (("target_len", self.task.target_len), ("reverse_source", self.task.reverse_source)):
                if value not in (None, False):
                    raise _KeyedError(
                        f"task.{key}",
                        f"got {value!r} with architecture = {self.architecture!r}; task.{key} is for an "
                        f'encoder-decoder: set architecture = "seq2seq", or leave task.{key} out',
                    )
        return self

    def memory_estimate(self) -> int:
        """Bytes BPTT keeps: (G + 2) L T B d state floats, the batch and the weights (with gradients and
        optimizer state: four copies)."""
        G = cell(self.cell).blocks
        d, B = self.hidden_size, self.task.batch_size
        T = max(self.task.seq_len, self.task.target_len or 0)  # seq2seq: the longer side
        L = self.layers * (2 if self.bidirectional else 1)  # streams: a bidirectional layer is two
        if self.architecture == "seq2seq":
            L += self.layers  # the decoder's
        n = self.task.input_size or 1
        k = self.task.output_size or 1
        states = (G + 2) * L * T * B * d + T * B * (n + k + 1)
        weights = G * d * (n + d + 1) + (L - 1) * G * d * (2 * d + 1) + k * (d + 1)
        return (states + 4 * weights) * np.dtype(self.dtype).itemsize

    def model_spec(self) -> ModelSpec:
        """The engine's ModelSpec; input and output sizes come from the task."""
        task = make_task(self.task, architecture=self.architecture)
        n, k = task.input_size, task.output_size
        return ModelSpec(
            cell=self.cell,
            activation=self.activation,
            input_size=n,
            hidden_size=self.hidden_size,
            layers=self.layers,
            output_size=k,
            dtype=self.dtype,
            bidirectional=self.bidirectional,
            architecture=self.architecture,
            decoder_input_size=task.decoder_input_size,
        )

    def init_spec(self) -> InitSpec:
        return InitSpec(**self.init.model_dump())

    def analysis_spec(self) -> AnalysisSpec:
        return AnalysisSpec(**self.analysis.model_dump())

    def effective_seed(self, experiment_seed: int) -> int:
        return self.seed if self.seed is not None else experiment_seed

    _name = field_validator("name")(lambda value: _printable_name(value))


class Experiment(BaseModel):
    """A set of runs sharing defaults.  ``runs`` are fully resolved; ``defaults`` is the file's table as written."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = "experiment"
    seed: int = 0
    description: str = ""
    defaults: dict = Field(default_factory=dict)
    runs: list[RunConfig] = Field(default_factory=list)
    sweep: Any = None  # config.sweep.Sweep: the file's [sweep] table, or None
    source: Path | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> Experiment:
        # run names are the keys of every export (run folders, trace.csv, the views); a file refuses the same
        # (config.loads), so does an Experiment built in Python
        names = [run.name for run in self.runs]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ValueError(
                    f"runs[{index}]: name: {name!r} is used by an earlier run; expected every run to have its own name"
                )
        return self

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

    _name = field_validator("name")(lambda value: _printable_name(value))


def _printable_name(name: str) -> str:
    """Names become file names, SVG text and titles: at most checks.NAME_MAX characters, no control characters."""
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


__all__ = [
    "ConfigError",
    "InitConfig",
    "TaskConfig",
    "TrainConfig",
    "AnalysisConfig",
    "RunConfig",
    "Experiment",
    "SCHEMA_VERSION",
    "TASKS",
    "OPTIMIZERS",
    "Architecture",
]
