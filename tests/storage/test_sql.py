"""SQL filter helpers: literals that cannot be broken out of, checked column names."""

from __future__ import annotations

import pytest

from storage.sql import sql_and, sql_eq, sql_in, sql_literal


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("it's", "'it''s'"),
        ("x' OR '1'='1", "'x'' OR ''1''=''1'"),
        ("back\\slash", "'back\\slash'"),
        (True, "TRUE"),
        (False, "FALSE"),
        (7, "7"),
        (0.25, "0.25"),
    ],
)
def test_literals(value: str | int | float | bool, literal: str) -> None:
    assert sql_literal(value) == literal


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        sql_literal(value)


def test_other_types_are_refused() -> None:
    with pytest.raises(TypeError, match="bytes"):
        sql_literal(b"x")  # type: ignore[arg-type]


def test_column_names_must_be_plain_identifiers() -> None:
    assert sql_eq("video_id", "v1") == "video_id = 'v1'"
    with pytest.raises(ValueError, match="not a plain column name"):
        sql_eq("id; DROP", "v1")


def test_builders() -> None:
    assert sql_eq("error", None) == "error IS NULL"
    assert sql_in("path", ["a", "b'c"]) == "path IN ('a', 'b''c')"
    assert sql_in("path", []) == "FALSE"
    assert sql_and("kept = TRUE", None, "x = 1") == "(kept = TRUE) AND (x = 1)"
    assert sql_and(None) is None
