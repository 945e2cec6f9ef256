"""Mixed JSON types in a JSON-lines source, found and named.

Polars reads a JSON-lines column from the types of its first rows (``infer_schema_length``):
a later value of another JSON type either fails the read with a message that names neither
the column nor the line, or, where the column was read as text, is turned into text without a
word (``1`` becomes ``"1"``, an object its JSON text). Both are bad input: this module finds the
column and the first line whose value is not of the JSON type of the column's first value, so
:mod:`meguri.data._sources` can raise a :class:`DataError` naming the column, the line and the
fix.

The lines are split once with Polars; DuckDB's ``json_type`` gives the JSON type of each
column's value on every line in one vectorised query (a JSON pointer per column); the first
disagreeing line per column is one Polars filter. No Python loop runs over rows.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from meguri.errors import DataError

__all__ = ["Conflict", "find_conflict", "might_be_cast", "mixed_json_error", "read_lines"]

#: DuckDB ``json_type`` names → the JSON kind shown to the user (numbers are one kind: an int
#: column with a float in it reads as Float64, which loses nothing).
_KINDS = {
    "UBIGINT": "number",
    "BIGINT": "number",
    "HUGEINT": "number",
    "DOUBLE": "number",
    "VARCHAR": "string",
    "BOOLEAN": "boolean",
    "OBJECT": "object",
    "ARRAY": "array",
}
#: A text value that may be a non-string JSON value Polars turned into text.
_LITERAL = r"^\s*(?:-?\d|\{|\[|true$|false$)"


@dataclass(frozen=True)
class Conflict:
    """Column ``column`` holds a ``first_kind`` value on line ``first_line`` and a ``kind``
    value (``value``, as JSON text) on line ``line`` (1-based line numbers of the file)."""

    column: str
    first_kind: str
    first_line: int
    kind: str
    line: int
    value: str


def read_lines(target: Path | io.BytesIO) -> pl.DataFrame | None:
    """The file's non-blank lines with their 1-based line numbers (``line_no``, ``line``);
    None when it cannot be read as UTF-8 text here (e.g. zstd-compressed)."""
    data = target.getvalue() if isinstance(target, io.BytesIO) else target.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = pl.DataFrame({"line": pl.Series([text]).str.split("\n")}).explode("line")
    return (
        lines.with_row_index("line_no", offset=1)
        .with_columns(pl.col("line").str.strip_chars_end("\r"))
        .filter(pl.col("line").str.strip_chars() != "")
    )


def might_be_cast(frame: pl.DataFrame, skip: Sequence[str] = ()) -> list[str]:
    """The text columns of ``frame`` (not in ``skip``) holding a value that may have been a
    number, boolean, object or array in the file: the only ones a silent cast can hide in."""
    text = [c for c, t in frame.schema.items() if t == pl.String and c not in skip]
    if not text:
        return []
    found = frame.select(pl.col(c).str.contains(_LITERAL).any() for c in text).row(0)
    return [c for c, hit in zip(text, found, strict=True) if hit]


def _pointer(column: str) -> str:
    """The JSON pointer (RFC 6901) of a top-level key, as a SQL string literal."""
    escaped = column.replace("~", "~0").replace("/", "~1").replace("'", "''")
    return f"'/{escaped}'"


def _types(lines: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame | None:
    """``line_no`` and, per column, DuckDB's JSON type of its value on that line (null when
    absent); None when DuckDB cannot parse a line (the read error then stands)."""
    import duckdb

    shown = [f'json_type(line, {_pointer(c)}) AS "c{i}"' for i, c in enumerate(columns)]
    values = [
        f'json_extract(line, {_pointer(c)})::VARCHAR AS "v{i}"' for i, c in enumerate(columns)
    ]
    query = f"SELECT line_no, {', '.join(shown + values)} FROM lines"
    connection = duckdb.connect(":memory:")
    try:
        connection.register("lines", lines.to_arrow())
        out = pl.from_arrow(connection.sql(query).to_arrow_table())
    except duckdb.Error:
        return None
    finally:
        connection.close()
    assert isinstance(out, pl.DataFrame)
    return out


def find_conflict(lines: pl.DataFrame, columns: Sequence[str]) -> Conflict | None:
    """The first column (in ``columns`` order) whose values are not all of one JSON kind, at
    its first disagreeing line; None when every column is of one kind."""
    if not columns or lines.height == 0:
        return None
    types = _types(lines, columns)
    if types is None:
        return None
    for i, column in enumerate(columns):
        found = _first_disagreement(types, f"c{i}", f"v{i}", column)
        if found is not None:
            return found
    return None


def _first_disagreement(
    types: pl.DataFrame, kinds: str, values: str, column: str
) -> Conflict | None:
    known = types.select(
        "line_no", pl.col(kinds).replace_strict(_KINDS, default=None).alias("kind"), values
    ).drop_nulls("kind")
    if known.height == 0:
        return None
    first_line, first_kind = known.row(0)[:2]
    other = known.filter(pl.col("kind") != first_kind).head(1)
    if other.height == 0:
        return None
    line, kind, value = other.row(0)
    return Conflict(column, first_kind, int(first_line), kind, int(line), str(value))


def mixed_json_error(uri: str, conflict: Conflict) -> DataError:
    """The error for ``conflict``: the column, both lines and the two fixes."""
    c = conflict
    value = c.value if len(c.value) <= 40 else c.value[:37] + "..."
    return DataError(
        f"Column {c.column!r} of {uri} mixes JSON types: line {c.first_line} holds a "
        f"{c.first_kind}, line {c.line} a {c.kind} ({value}). Declare the column's type in the "
        f"source's schema ({c.column}: str keeps every value as text; {c.column}: float turns "
        "numbers in text into numbers and names any value that is not one), or clean the file."
    )
