"""Checks of an experiment file that come before its schema: what a hostile or damaged file can hold that no
key's type rules out.  Each returns a problem in words (the caller names the file) or None.

    text = strip_bom(text)                      # editors write a UTF-8 byte-order mark; TOML does not allow one
    problem = text_problem(text)                # too big to read, a dotted key of thousands of parts
    problem = document_problem(doc)             # nesting too deep, an integer TOML cannot hold
    problem = name_problem("relu 3/n")          # a run's or an experiment's name every export can write

Decisions (docs/experiments.md, "Limits"):
- integers are TOML's: 64-bit signed, so every exported experiment.toml is readable by any TOML reader;
  a seed is therefore 0 .. 2**63 - 1;
- tables and arrays nest at most MAX_DEPTH deep (a run's deepest key, runs[i].init.recurrent_scale, is 3);
- names have at most NAME_MAX characters and no control characters (they become file names, SVG text,
  CSV fields and window titles).
"""

from __future__ import annotations

import re
import unicodedata

BOM = "\ufeff"
MAX_DEPTH = 16  # tables and arrays inside each other
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # TOML's integers (and NumPy's int64)
NAME_MAX = 200  # characters in a name
MAX_BYTES = 32 * 2**20  # an experiment file (10 000 runs take ~1 MB)
MAX_KEY_PARTS = 64  # a dotted key's parts: Python's TOML reader takes time and memory quadratic in them
_LONG_DOTTED_KEY = re.compile(r"(?:[A-Za-z0-9_-]++[ \t]*+\.[ \t]*+){" + str(MAX_KEY_PARTS) + "}")


def strip_bom(text: str) -> str:
    """The text without a leading byte-order mark."""
    return text[1:] if text.startswith(BOM) else text


def text_problem(text: str) -> str | None:
    """What makes a text too costly to parse at all (checked before the TOML reader sees it), or None."""
    if len(text) > MAX_BYTES:
        return f"{len(text)} characters; expected an experiment file of at most {MAX_BYTES // 2**20} MiB"
    match = _LONG_DOTTED_KEY.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        return f"line {line}: a dotted key of more than {MAX_KEY_PARTS} parts; expected at most {MAX_DEPTH} levels"
    return None


def document_problem(doc: dict) -> str | None:
    """The first value of a parsed file that nests deeper than MAX_DEPTH or is an integer outside TOML's range,
    as "KEY: what is wrong"; None when there is none.  Iterative: a deep file cannot exhaust the stack here."""
    stack: list[tuple[object, str, int]] = [(doc, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return f"{key}: nested {depth} levels deep; expected at most {MAX_DEPTH} levels of tables and arrays"
            items = value.items() if isinstance(value, dict) else ((f"[{i}]", v) for i, v in enumerate(value))
            for name, item in items:
                child = f"{key}{name}" if name.startswith("[") else (f"{key}.{name}" if key else str(name))
                stack.append((item, child, depth + 1))
        elif isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
            return f"{key}: got {_short(value)}; expected an integer from -2**63 to 2**63 - 1 (TOML's 64-bit integers)"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a run's or an experiment's name, or None."""
    if len(name) > NAME_MAX:
        return f"got a name of {len(name)} characters; expected at most {NAME_MAX}"
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs"):
            return f"got {_short(name)}, which holds the control character {char!r}; expected printable text"
    return None


def _short(value) -> str:
    if isinstance(value, int) and value.bit_length() > 200:  # repr of a huge integer is refused past 4300 digits
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


__all__ = [
    "strip_bom",
    "text_problem",
    "document_problem",
    "name_problem",
    "MAX_DEPTH",
    "INT_MIN",
    "INT_MAX",
    "NAME_MAX",
]
