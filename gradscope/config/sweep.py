"""The ``[sweep]`` table of an experiment file: which run keys take which values, over which seeds, and the
points it expands to (docs/trace_format.md, "Sweeps"; docs/sweeps.md).

    [sweep]
    "init.recurrent_scale" = [1.0, 1.5, 2.0, 3.0]   # a dotted run key (quoted) and its values
    "init.bias_scale" = [0.0, 0.1]
    seeds = [0, 1, 2]                              # optional: default, each run's own seed
    mode = "grid"                                  # "grid": every combination (default); "zip": lists in step

    points = sweep_points(experiment)              # list[SweepPoint], in the file's order:
    # for each run of the file, for each combination of values (the last key varying fastest), for each seed

A point is one run of the file with the swept values applied and its seed set: a fully validated RunConfig,
so a point's export reproduces it alone.  Everything is checked when the file is loaded: an unknown or
unsweepable key, an empty list, lists of unequal length in zip mode, and any value its key refuses (the
message names the file, the sweep key, the value and the run).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .schema import ConfigError, RunConfig

SweepMode = Literal["grid", "zip"]
RESERVED = ("seeds", "mode")  # the table's own keys; every other key is a dotted run key
UNSWEPT = ("name", "seed")  # a point keeps its run's name; seeds are swept with `seeds`


class Sweep(BaseModel):
    """The validated table: ``keys`` maps each dotted run key to its values, in the file's order."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    keys: dict[str, tuple] = {}
    seeds: tuple[int, ...] | None = None  # None: each run's own (effective) seed
    mode: SweepMode = "grid"

    def combinations(self) -> list[tuple]:
        """The value tuples, one per combination (grid: the last key varies fastest; zip: position by position)."""
        lists = list(self.keys.values())
        if not lists:
            return [()]
        return list(zip(*lists)) if self.mode == "zip" else list(itertools.product(*lists))

    def table(self) -> dict[str, Any]:
        """The table as a file writes it (config.dumps)."""
        out: dict[str, Any] = {key: list(values) for key, values in self.keys.items()}
        if self.seeds is not None:
            out["seeds"] = list(self.seeds)
        out["mode"] = self.mode
        return out


@dataclass(frozen=True)
class SweepPoint:
    """One point: ``run`` (the file's run ``base`` with ``values`` applied and ``seed`` set), numbered ``index``."""

    index: int
    base: str  # the run's name in the file
    seed: int
    values: tuple  # one per swept key, in Sweep.keys order
    run: RunConfig


def _leaf_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            keys += _leaf_keys(info.annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: ``init.recurrent_scale = [...]`` (a sub-table in TOML) and
    ``"init.recurrent_scale" = [...]`` alike (a sweep's keys; a run's table, for saving.py's diffs)."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(values: Any) -> str:
    """A sweep's values as the user wrote them, shortened for a one-line message."""
    shown = ", ".join(repr(v) for v in values[:3]) if isinstance(values, list) else repr(values)
    return shown + (", ..." if isinstance(values, list) and len(values) > 3 else "")


def parse_sweep(table: Any, source: str) -> Sweep:
    """The [sweep] table's structure (keys, lists, seeds, mode); the values themselves are checked against
    every run by ``sweep_points``.  Raises ConfigError naming the file and the key."""

    def fail(key: str, message: str):
        raise ConfigError(
            f"{source}: sweep.{key}: {message}" if key else f"{source}: {message}",
            source=source,
            key=f"sweep.{key}" if key else "sweep",
        )

    if not isinstance(table, dict):
        fail("", f"[sweep] must be a table, got {table!r}")
    mode = table.get("mode", "grid")
    if mode not in ("grid", "zip"):
        fail("mode", f'got {mode!r}; expected "grid" (every combination) or "zip" (lists in step)')
    seeds = table.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds:
            fail("seeds", f"got {seeds!r}; expected a non-empty list of integers >= 0")
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad:
            fail("seeds", f"got {bad[0]!r} in the list; expected integers >= 0")
    keys = flatten({k: v for k, v in table.items() if k not in RESERVED})
    known = _leaf_keys()
    for key, values in keys.items():
        if key == "seed":
            fail(key, "seeds are swept with seeds = [...] in [sweep]")
        nested = next((k for k in known if key.endswith(f".{k}") and k not in UNSWEPT), None)
        if key not in known and nested is not None:  # e.g. grid = { "init.recurrent_scale" = [...] }
            fail(
                key.removesuffix(f".{nested}"),
                f'unknown key; the swept keys go directly in [sweep], e.g. "{nested}" = [{_show(keys[key])}]',
            )
        if key not in known or key in UNSWEPT:
            fail(
                key,
                f"unknown key; expected a dotted run key, one of: {', '.join(k for k in known if k not in UNSWEPT)}",
            )
        if not isinstance(values, list):
            fail(key, f"got {values!r}; expected a list of values")
        if not values:
            fail(key, "got an empty list; expected at least one value")
    if not keys and seeds is None:
        fail("", "[sweep] has no key to sweep; expected dotted run keys with lists of values, or seeds = [...]")
    if mode == "zip":
        lengths = {key: len(values) for key, values in keys.items()}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{key} has {n}" for key, n in lengths.items())
            fail("mode", f'"zip" needs lists of one length; {listed}')
    return Sweep(keys={k: tuple(v) for k, v in keys.items()}, seeds=None if seeds is None else tuple(seeds), mode=mode)


def _set(table: dict, dotted: str, value) -> dict:
    """A copy of the nested ``table`` with ``dotted`` set to ``value``."""
    head, _, rest = dotted.partition(".")
    table = dict(table)
    table[head] = _set(table.get(head) or {}, rest, value) if rest else value
    return table


def with_values(run: RunConfig, keys, values) -> RunConfig:
    """``run`` with each dotted key set to its value, validated (a pydantic ValidationError when refused)."""
    table = run.model_dump()
    for key, value in zip(keys, values):
        table = _set(table, key, value)
    return RunConfig.model_validate(table)


def sweep_points(experiment, source: str | None = None) -> list[SweepPoint]:
    """Every point of ``experiment.sweep``, validated, in the sweep's order (the module's docstring); [] when
    the experiment has no [sweep] table.  Raises ConfigError naming the file (``source``, default the
    experiment's), the sweep key, the value and the run."""
    sweep: Sweep | None = experiment.sweep
    if sweep is None:
        return []
    if source is None:
        source = str(experiment.source) if experiment.source is not None else f"experiment {experiment.name!r}"
    keys = list(sweep.keys)
    combinations = sweep.combinations()
    points: list[SweepPoint] = []
    for run in experiment.runs:
        seeds = sweep.seeds if sweep.seeds is not None else (run.effective_seed(experiment.seed),)
        for values in combinations:
            try:
                point_run = with_values(run, keys, values)
            except ValidationError as error:
                from .loading import _explain

                message, key = _explain(error)
                swept = ", ".join(f"{k} = {v!r}" for k, v in zip(keys, values))
                raise ConfigError(
                    f"{source}: [sweep]: run {run.name!r} with {swept}: {message}",
                    source=source,
                    run=run.name,
                    key=f"sweep.{key}" if key in keys else key,
                ) from None
            for seed in seeds:
                points.append(
                    SweepPoint(len(points), run.name, seed, tuple(values), point_run.model_copy(update={"seed": seed}))
                )
    return points


__all__ = ["Sweep", "SweepMode", "SweepPoint", "parse_sweep", "sweep_points", "with_values", "RESERVED"]
