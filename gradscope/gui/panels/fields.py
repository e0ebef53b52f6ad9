"""The run editor's fields, read from the config schema (the pydantic models behind gradscope.config.RunConfig):
one ``Field`` per dotted key, with its type, bounds, choices and default, in the models' order.  Qt-free.

Which fields mean something for which cell comes from the cell descriptions (gradscope.engine.cells:
``cell(name).applies(key)``); the few rules between other settings (a task's or an optimizer's own keys) are
``DEPENDS`` below.  A key added to the schema shows up in the editor by itself.
"""

from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel

from ...config import RunConfig
from ...engine.cells import cell

INT_MAX = 2**31 - 1  # a QSpinBox holds a C int
FLOAT_MAX = sys.float_info.max  # "no upper bound" for a float field (Inf and NaN are refused)


@dataclass(frozen=True)
class Field:
    """One setting of RunConfig as the schema states it."""

    key: str  # dotted: "init.recurrent_scale"
    group: str  # the sub-table ("init", "task", "train"), "" for RunConfig's own keys
    kind: str  # "text" | "choice" | "int" | "float" | "bool"
    default: Any = None
    choices: tuple = ()  # a Literal's values
    lo: float | None = None  # bounds (None: none); open bounds exclude the value itself
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    nullable: bool = False  # None is allowed (e.g. task.input_size: "set by the task")
    description: str | None = None

    def int_range(self) -> tuple[int, int]:
        """The values an int field takes; a nullable one also takes lo - 1, which stands for None."""
        lo = -INT_MAX if self.lo is None else int(self.lo) + (1 if self.lo_open else 0)
        hi = INT_MAX if self.hi is None else int(self.hi) - (1 if self.hi_open else 0)
        return (lo - 1 if self.nullable else lo), hi

    def float_range(self) -> tuple[float, float]:
        return (-FLOAT_MAX if self.lo is None else float(self.lo)), (FLOAT_MAX if self.hi is None else float(self.hi))


def schema_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[Field]:
    """Every leaf setting of ``model``, sub-models flattened to dotted keys, in declaration order."""
    out = []
    for name, info in model.model_fields.items():
        annotation, nullable = _without_none(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += schema_fields(annotation, f"{prefix}{name}.")
            continue
        bounds: dict = {}
        for item in info.metadata:
            for attr, (side, is_open) in (
                ("ge", ("lo", False)),
                ("gt", ("lo", True)),
                ("le", ("hi", False)),
                ("lt", ("hi", True)),
            ):
                if isinstance(item, getattr(annotated_types, attr.capitalize())):
                    bounds[side], bounds[f"{side}_open"] = getattr(item, attr), is_open
        out.append(
            Field(
                key=f"{prefix}{name}",
                group=prefix.rstrip("."),
                kind=_kind(annotation),
                default=info.default,
                choices=_choices(annotation),
                nullable=nullable,
                description=info.description,
                **bounds,
            )
        )
    return out


def _without_none(annotation) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of ``X | None``; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _kind(annotation) -> str:
    if typing.get_origin(annotation) is Literal:
        return "choice"
    for python_type, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "text")):  # bool first
        if annotation is python_type:
            return kind
    raise TypeError(f"the run editor has no field for a setting of type {annotation!r}")


def _choices(annotation) -> tuple:
    return tuple(typing.get_args(annotation)) if typing.get_origin(annotation) is Literal else ()


FIELDS: dict[str, Field] = {f.key: f for f in schema_fields()}


def _task(*names):
    return lambda v: v["task.name"] in names


def _optimizer(name):
    return lambda v: v["train.optimizer"] == name


# keys that mean something only given other settings (besides a cell's own keys: engine.cells)
DEPENDS = {
    "init.chrono_tmax": lambda v: v["init.chrono"],
    "task.input_size": _task("probe"),
    "task.output_size": _task("probe"),
    "task.symbols": _task("copy"),
    "task.copy_length": _task("copy"),
    "task.text": _task("charlm"),
    "train.momentum": _optimizer("sgd"),
    "train.beta1": _optimizer("adam"),
    "train.beta2": _optimizer("adam"),
    "train.eps": _optimizer("adam"),
}


def applies(key: str, values: dict) -> bool:
    """Whether the setting ``key`` means something given the form's ``values`` (dotted key -> value)."""
    depends = DEPENDS.get(key)
    return cell(values["cell"]).applies(key) and (depends is None or bool(depends(values)))


__all__ = ["Field", "FIELDS", "DEPENDS", "schema_fields", "applies", "INT_MAX", "FLOAT_MAX"]
