"""Checks on what a source gives: type overrides, the memory budget, and the diagnosis of bad
input (mixed types, a wrong delimiter, an empty table), each a one-line :class:`DataError`
naming the file, column, row or setting and the fix.

Everything here works on whole columns (Polars expressions); finding the first bad value of a
column is one filter over the column, never a loop over rows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import polars as pl

from meguri.errors import DataError

__all__ = [
    "BUDGET_ENV",
    "apply_overrides",
    "check_budget",
    "check_not_empty",
    "first_bad_value",
    "memory_budget",
    "parse_dtype",
    "parse_size",
    "sniff_separator",
    "type_name",
]

BUDGET_ENV = "MEGURI_DATA_MAX_BYTES"
"""Environment variable: the largest source (bytes, or e.g. ``2GB``) read into memory at once."""

_ALIASES: dict[str, pl.DataType] = {
    "int": pl.Int64(),
    "integer": pl.Int64(),
    "float": pl.Float64(),
    "double": pl.Float64(),
    "number": pl.Float64(),
    "str": pl.String(),
    "string": pl.String(),
    "text": pl.String(),
    "utf8": pl.String(),
    "bool": pl.Boolean(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "time": pl.Time(),
    "category": pl.Categorical(),
    "categorical": pl.Categorical(),
}
for _bits in (8, 16, 32, 64):
    _ALIASES[f"int{_bits}"] = getattr(pl, f"Int{_bits}")()
    _ALIASES[f"uint{_bits}"] = getattr(pl, f"UInt{_bits}")()
for _bits in (32, 64):
    _ALIASES[f"float{_bits}"] = getattr(pl, f"Float{_bits}")()

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
_SEPARATORS = (";", "\t", "|", ",", ":")
_SHOWN = {"\t": "\\t"}


def type_name(dtype: pl.DataType) -> str:
    """The stored name of a Polars type, e.g. ``Int64``, ``String``, ``Datetime(time_unit='us',
    time_zone=None)``: what a schema maps each column to."""
    return str(dtype)


def parse_dtype(name: str, *, column: str) -> pl.DataType:
    """The Polars type named ``name`` (``int``, ``float64``, ``str``, ``date``, ``Int32``...)."""
    found = _ALIASES.get(name.strip().lower())
    if found is not None:
        return found
    candidate = getattr(pl, name.strip(), None)
    if isinstance(candidate, type) and issubclass(candidate, pl.DataType):
        return candidate()
    raise DataError(
        f"Unknown type {name!r} for column {column!r} in the schema override. Use one of "
        f"{', '.join(sorted(_ALIASES))} (or a Polars type name such as Int32)."
    )


def parse_size(value: int | str, *, setting: str) -> int:
    """Bytes from an int or a string such as ``512MB`` or ``2 GiB``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise DataError(
            f"{setting} = {value!r} is not a size: use a positive number of bytes or a value "
            "such as 512MB or 2GiB."
        )
    return int(float(match.group(1)) * _UNITS[unit])


def memory_budget(explicit: int | str | None = None) -> int:
    """The largest source read at once: ``explicit``, else ``MEGURI_DATA_MAX_BYTES``, else half
    of the memory available now."""
    if explicit is not None:
        return parse_size(explicit, setting="max_bytes")
    env = os.environ.get(BUDGET_ENV)
    if env:
        return parse_size(env, setting=BUDGET_ENV)
    import psutil

    return int(psutil.virtual_memory().available // 2)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{value:.1f} TiB"


def check_budget(size: int | None, budget: int, uri: str) -> None:
    """Refuse a source of ``size`` bytes (on disk) larger than ``budget`` before reading it."""
    if size is None or size <= budget:
        return
    raise DataError(
        f"{uri} is {_human(size)}, over the memory budget of {_human(budget)} for one read. "
        f"Raise it (the source option max_bytes, or {BUDGET_ENV}), free memory, or split the "
        "file into parts."
    )


def check_not_empty(frame: pl.DataFrame, uri: str) -> None:
    """A table without columns or rows cannot make a dataset."""
    if frame.width == 0:
        raise DataError(f"{uri} has no columns: check that it is the right file and format.")
    if frame.height == 0:
        raise DataError(
            f"{uri} has columns ({_columns(frame.columns)}) but no rows: an empty table makes "
            "no dataset. Check the file, or the query/table of a database source."
        )


def _columns(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def sniff_separator(header: str, used: str) -> str | None:
    """The separator a header line seems to use when it is not ``used``, else None."""
    if used in header:
        return None
    counts = {sep: header.count(sep) for sep in _SEPARATORS if sep != used}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] > 0 else None


def separator_error(uri: str, header: str, used: str, found: str) -> DataError:
    shown = _SHOWN.get(found, found)
    return DataError(
        f"{uri} looks separated by {shown!r}, not {_SHOWN.get(used, used)!r}: its header "
        f"{header[:60]!r} reads as one column. Set the read option separator: {shown!r} "
        f"(`--option separator={shown}` on the command line)."
    )


def first_bad_value(frame: pl.LazyFrame, column: str, dtype: pl.DataType) -> tuple[int, str] | None:
    """The first row (0-based) of ``column`` whose non-null value does not cast to ``dtype``,
    and that value; None when every value casts."""
    col = pl.col(column)
    bad = (
        frame.select(col)
        .with_row_index("__row")
        .filter(col.is_not_null() & col.cast(dtype, strict=False).is_null())
        .head(1)
        .collect()
    )
    if bad.height == 0:
        return None
    return int(bad["__row"][0]), str(bad[column][0])


def cast_error(uri: str, column: str, dtype: pl.DataType, bad: tuple[int, str] | None) -> DataError:
    where = f" at row {bad[0] + 1} (value {bad[1]!r})" if bad else ""
    return DataError(
        f"Column {column!r} of {uri} does not convert to {type_name(dtype)}{where}. Fix the "
        f"value, or declare the column as text in the source's schema ({column}: str)."
    )


def apply_overrides(
    frame: pl.DataFrame, overrides: Mapping[str, pl.DataType], uri: str
) -> pl.DataFrame:
    """``frame`` with each overridden column cast (strict); a failed cast names the column,
    the first bad row and its value."""
    missing = [name for name in overrides if name not in frame.columns]
    if missing:
        raise missing_column_error(missing[0], frame.columns, uri)
    casts: list[pl.Expr] = []
    for name, dtype in overrides.items():
        if frame.schema[name] == dtype:
            continue
        bad = first_bad_value(frame.lazy(), name, dtype)
        if bad is not None:
            raise cast_error(uri, name, dtype, bad)
        casts.append(pl.col(name).cast(dtype, strict=False))
    return frame.with_columns(casts) if casts else frame


def missing_column_error(column: str, columns: list[str], uri: str) -> DataError:
    return DataError(
        f"The schema override names column {column!r}, which {uri} does not have; its columns "
        f"are {_columns(columns)}. Fix the name in the source's schema."
    )


_DTYPE_CODES: dict[str, pl.DataType] = {
    "i64": pl.Int64(),
    "i32": pl.Int32(),
    "f64": pl.Float64(),
    "f32": pl.Float64(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
}


def parse_failure(message: str) -> tuple[str, pl.DataType] | None:
    """The column and type of a Polars CSV parse error (``could not parse `x` as dtype `i64`
    at column 'c'``), or None."""
    match = re.search(r"as dtype `([^`]+)` at column '([^']+)'", message)
    if match is None:
        return None
    return match.group(2), _DTYPE_CODES.get(match.group(1), pl.Float64())


def mixed_types_error(
    uri: str, column: str, dtype: pl.DataType, bad: tuple[int, str] | None
) -> DataError:
    where = f"; row {bad[0] + 1} holds {bad[1]!r}" if bad else ""
    return DataError(
        f"Column {column!r} of {uri} mixes types: its first rows read as {type_name(dtype)}"
        f"{where}. Declare the column's type in the source's schema ({column}: str keeps "
        "every value as text), or fix that value."
    )


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, trimmed (Polars adds advice paragraphs)."""
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def describe_options(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
