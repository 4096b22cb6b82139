"""Build Lance SQL filters from values without hand-written quoting.

Paths, captions and dataset ids can contain quotes; every `where` string a caller passes to
`storage.Store` should be built here so a value can never end a string literal early.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

SqlValue = str | int | float | bool


def sql_literal(value: SqlValue) -> str:
    """One SQL literal: strings single-quoted with embedded quotes doubled, numbers and booleans bare."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot compare with a non-finite float ({value!r}) in a filter")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__} {value!r}; use str, int, float or bool")


def sql_column(column: str) -> str:
    """A checked column name (plain identifiers only, the only kind our schemas use)."""
    if not _IDENTIFIER.fullmatch(column):
        raise ValueError(f"{column!r} is not a plain column name (letters, digits and _ only)")
    return column


def sql_eq(column: str, value: SqlValue | None) -> str:
    """`column = value`, or `column IS NULL` for None."""
    if value is None:
        return f"{sql_column(column)} IS NULL"
    return f"{sql_column(column)} = {sql_literal(value)}"


def sql_in(column: str, values: Iterable[SqlValue]) -> str:
    """`column IN (...)`; an empty collection gives a filter that matches nothing."""
    literals = [sql_literal(v) for v in values]
    if not literals:
        return "FALSE"
    return f"{sql_column(column)} IN ({', '.join(literals)})"


def sql_and(*clauses: str | None) -> str | None:
    """Join filters with AND, skipping None; None when nothing is left (no filter)."""
    present = [c for c in clauses if c]
    if not present:
        return None
    return " AND ".join(f"({c})" for c in present)
