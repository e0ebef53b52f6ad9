"""Fuzzing the experiment loader: thousands of generated files (random TOML trees, presets with a leaf replaced,
presets mutated byte by byte, random bytes), one property: `gradscope validate FILE` exits 2 with a one-line
message naming the file, or 0 with a valid experiment that saves and loads back the same; never a traceback.

Run time is bounded for CI (each test's examples and deadline below; ~30 s in all on the project's machine).
GRADSCOPE_FUZZ_EXAMPLES=N multiplies the examples for a longer search by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gradscope import cli, config
from gradscope.config import ConfigError, RunConfig
from gradscope.config.checks import name_problem
from gradscope.io import run_dir_name

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "models").glob("*.toml"))
SCALE = max(1, int(os.environ.get("GRADSCOPE_FUZZ_EXAMPLES", "1")))
FUZZ = settings(
    max_examples=600 * SCALE,
    deadline=None,  # the first examples import the engine's tasks
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    derandomize=True,  # the same examples on every CI run; GRADSCOPE_FUZZ_EXAMPLES searches further
    database=None,
)

# ------------------------------------------------------------------------------------------- the files
# Keys the schema knows (so generated trees reach the validators), and a few it does not.
KEYS = sorted(
    {"name", "seed", "description", "schema_version", "experiment", "defaults", "runs", "sweep", "x", "a.b"}
    | set(RunConfig.model_fields)
    | {
        f"{table}.{key}"
        for table in ("init", "task", "train")
        for key in type(getattr(RunConfig(), table)).model_fields
    }
)
SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, -1, 3, 7, 64, 2**31, 2**63 - 1, -(2**63), 2**63, 10**19]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-320, 1e308, 0.5, 3.0]),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["rnn", "lstm", "gru", "relu", "tanh", "probe", "copy", "adding", "charlm", "float64", "adam"]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=150, max_size=260),
)
HOSTILE = st.sampled_from([math.inf, -math.inf, math.nan, 2**64, -(2**63) - 1, "a\x00b", "x" * 5000, "\u202e", "\n"])


def values(depth: int = 3):
    return st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
        max_leaves=8 if depth else 1,
    )


def toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-." for c in key) and ".." not in key else json.dumps(key)


def toml_value(value) -> str:
    """Inline TOML for a generated value (TOML's inline tables and arrays hold any tree)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's basic-string escapes (a lone surrogate is refused)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in doc.items())


def preset_tree(index: int) -> dict:
    return tomllib.loads(PRESETS[index % len(PRESETS)].read_text(encoding="utf-8"))


def leaves(tree, path=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, (*path, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from leaves(value, (*path, i))
    yield path


def replaced(tree, path, value):
    if not path:
        return value
    head, *rest = path
    copy = dict(tree) if isinstance(tree, dict) else list(tree)
    copy[head] = replaced(tree[head], rest, value)
    return copy


# ----------------------------------------------------------------------------------------- the property
def check_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["validate", str(path)])
    text = err.getvalue()
    assert code in (0, 2), f"exit {code} for {data[:300]!r}:\n{text}"
    assert "Traceback" not in text and "unexpected error" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"{len(lines)} lines for {data[:300]!r}:\n{text}"
    if code == 2:
        assert lines[0].startswith(f"gradscope: {path}"), lines[0]
        return
    experiment = config.load(path)  # the valid experiment: it saves and loads back the same
    again = config.loads(config.dumps(experiment), source=path)
    assert [r.model_dump() for r in again.runs] == [r.model_dump() for r in experiment.runs]
    # ... and exports: summary.json holds every run's settings (JSON has no NaN or Inf), names become file names
    json.dumps([r.model_dump() for r in experiment.runs], allow_nan=False)
    for index, run in enumerate(experiment.runs):
        assert len(run_dir_name(index, run.name).encode()) < 255 and name_problem(run.name) is None


def check_loads(text: str) -> None:
    """The library's face of the same property: a valid Experiment or a ConfigError, nothing else."""
    try:
        config.loads(text, source="<fuzz>")
    except ConfigError as error:
        assert "\n" not in str(error) and str(error).startswith("<fuzz>: ")


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "experiment.toml"


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(KEYS), values(), max_size=5), version=st.sampled_from([1, 1, 1.0, 2]))
def test_random_toml_trees(fuzz_file, doc, version):
    doc = {"schema_version": version, **doc}
    text = toml_document(doc)
    check_file(fuzz_file, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(index=st.integers(0, 100), pick=st.integers(0, 10**6), value=HOSTILE | values(), bom=st.booleans())
def test_presets_with_a_leaf_replaced(fuzz_file, index, pick, value, bom):
    tree = preset_tree(index)
    paths = [p for p in leaves(tree) if p]
    tree = replaced(tree, paths[pick % len(paths)], value)
    text = ("\ufeff" if bom else "") + toml_document(tree)
    check_file(fuzz_file, text.encode("utf-8", "surrogatepass"))
    check_loads(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))


@FUZZ
@given(index=st.integers(0, 100), seed=st.integers(0, 2**32), edits=st.integers(1, 8))
def test_presets_mutated_byte_by_byte(fuzz_file, index, seed, edits):
    data = bytearray(PRESETS[index % len(PRESETS)].read_bytes())
    rng = random.Random(seed)
    for _ in range(edits):
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(5)
        if kind == 0:  # delete a span
            del data[at : at + rng.randrange(1, 40)]
        elif kind == 1:  # insert random bytes
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif kind == 2:  # insert something a hostile file holds
            data[at:at] = rng.choice(
                [b"inf", b"nan", b"-inf", b"1e999", b"99999999999999999999", b"[[[[", b"\x00", b"\xef\xbb\xbf", b"="]
            )
        elif kind == 3:  # duplicate a line
            lines = data.split(b"\n")
            i = rng.randrange(len(lines))
            data = bytearray(b"\n".join(lines[: i + 1] + lines[i:]))
        else:  # flip a byte
            if data:
                data[at % len(data)] ^= 1 << rng.randrange(8)
    check_file(fuzz_file, bytes(data))


@settings(FUZZ, max_examples=1500 * SCALE)
@given(data=st.binary(max_size=400))
def test_random_bytes(fuzz_file, data):
    check_file(fuzz_file, data)


@pytest.mark.parametrize("depth", [17, 100, 3000, 100_000])
def test_deep_nesting_is_refused_at_every_depth(tmp_path, depth):
    for text in (
        "schema_version = 1\nx = " + "[" * depth + "]" * depth + "\n",
        "schema_version = 1\nx = " + "{a = " * depth + "1" + "}" * depth + "\n",
        "schema_version = 1\n[defaults]\n" + ".".join(["a"] * depth) + " = 1\n",
    ):
        check_file(tmp_path / "deep.toml", text.encode())
