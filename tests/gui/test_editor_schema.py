"""The run editor is generated from the config schema: its keys, ranges, choices and defaults are the pydantic
models', read here independently through RunConfig's JSON schema; which fields a cell enables is the cell
description's answer (engine.cells)."""

import math

import pytest

from gradscope.config import RunConfig
from gradscope.engine.cells import CELL_KEYS, CELLS
from gradscope.gui.panels.run_editor import FloatEdit, RunEditor, ScaleEdit

SCHEMA = RunConfig.model_json_schema()


def leaves(properties: dict, prefix: str = "") -> dict[str, dict]:
    """Dotted key -> the JSON schema of that setting (sub-models followed through $ref)."""
    out = {}
    for name, prop in properties.items():
        if "$ref" in prop:
            sub = SCHEMA["$defs"][prop["$ref"].rsplit("/", 1)[-1]]
            out.update(leaves(sub["properties"], f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = prop
    return out


LEAVES = leaves(SCHEMA["properties"])


def nullable_and_type(prop: dict) -> tuple[bool, dict]:
    options = prop.get("anyOf")
    if options:
        kinds = [o for o in options if o.get("type") != "null"]
        return len(kinds) < len(options), kinds[0]
    return False, prop


@pytest.fixture
def editor(qtbot):
    e = RunEditor()
    qtbot.addWidget(e)
    e.set_run(0, RunConfig())
    return e


def test_every_schema_setting_has_a_field_and_nothing_else(editor):
    assert list(editor.widgets) == list(LEAVES)  # the models' order too


@pytest.mark.parametrize("key", [k for k, p in LEAVES.items() if nullable_and_type(p)[1].get("type") == "integer"])
def test_an_int_field_spans_the_schema_bounds(editor, key):
    nullable, prop = nullable_and_type(LEAVES[key])
    spin = editor.widgets[key]
    lowest = prop.get("minimum", prop.get("exclusiveMinimum", -math.inf) + 1)
    assert spin.minimum() == lowest - (1 if nullable else 0)  # a nullable one's lowest is None
    if "maximum" in prop or "exclusiveMaximum" in prop:
        assert spin.maximum() == prop.get("maximum", prop.get("exclusiveMaximum", 0) - 1)


@pytest.mark.parametrize("key", [k for k, p in LEAVES.items() if p.get("type") == "number"])
def test_a_float_field_accepts_exactly_the_schema_range(editor, key):
    prop = LEAVES[key]
    widget = editor.widgets[key]
    box = widget.box if isinstance(widget, ScaleEdit) else widget
    assert isinstance(box, FloatEdit)
    for bound, is_open, side in (
        ("minimum", False, -1),
        ("exclusiveMinimum", True, -1),
        ("maximum", False, 1),
        ("exclusiveMaximum", True, 1),
    ):
        if bound in prop:
            value = float(prop[bound])
            assert box.accepts(value) is not is_open, (key, bound)
            assert not box.accepts(value + side * 1e-9), (key, bound)  # just outside
            assert box.accepts(value - side * 1e-3), (key, bound)  # just inside
    assert not box.accepts(math.nan) and not box.accepts(math.inf)


def test_momentum_refuses_one_as_the_schema_does(editor):
    assert LEAVES["train.momentum"]["exclusiveMaximum"] == 1
    editor.set_value("train.momentum", 1.0)
    assert "train.momentum" in editor.message.text() and not editor.apply_button.isEnabled()
    editor.set_value("train.momentum", 0.5)
    assert editor.message.text() == ""


@pytest.mark.parametrize("key", [k for k, p in LEAVES.items() if "enum" in p])
def test_a_choice_offers_the_literal_values_and_shows_the_default(editor, key):
    combo = editor.widgets[key]
    assert [combo.itemText(i) for i in range(combo.count())] == LEAVES[key]["enum"]
    assert str(LEAVES[key]["default"]) in combo.toolTip()


def test_the_cell_description_decides_which_cell_fields_are_enabled(editor):
    editor.set_value("init.chrono", True)  # chrono_tmax also needs chrono on
    for name, description in CELLS.items():
        editor.set_value("cell", name)
        for key in sorted(CELL_KEYS | {"activation"}):
            assert editor.widgets[key].isEnabled() == description.applies(key), (name, key)


def test_a_nullable_field_at_its_lowest_value_is_none(editor):
    editor.set_value("seed", 7)
    assert editor.edited_run().seed == 7
    editor.set_value("seed", None)
    assert editor.widgets["seed"].value() == editor.widgets["seed"].minimum()
    assert editor.edited_run().seed is None
