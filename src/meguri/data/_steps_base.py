"""What every preparation step shares: the fit context, column checks, the step-kind record.

A step kind is three pure functions over Polars frames:

``learn(frame, config, ctx) -> learned``
    computes what the step needs from the *training* rows (medians, category lists, bounds);
    ``learned`` is plain JSON (numbers, strings, lists, dicts), stored with the transform.
``apply(lazy_frame, config, learned) -> lazy_frame``
    the vectorised operation, identical at fit and at serving time.
``rows(lazy_frame, config, learned) -> lazy_frame`` (optional)
    a row filter (drop_missing, zscore_filter, filter): applied to training rows only, never
    at serving, where one request is one prediction and no row may disappear.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from meguri.errors import TransformError

Learned = dict[str, Any]
DtypeTest = Callable[[pl.DataType], bool]

_SELECT = re.compile(r"\bselect\b", re.IGNORECASE)


@dataclass(frozen=True)
class FitContext:
    """Where a step sits in ``data.prepare`` and what it may know about the training rows."""

    index: int
    kind: str
    target: str | None
    seed: int

    @property
    def where(self) -> str:
        return f"data.prepare[{self.index}] ({self.kind})"

    def error(self, message: str) -> TransformError:
        return TransformError(f"{self.where}: {message}")

    def check_columns(self, columns: Iterable[str], schema: pl.Schema) -> None:
        """Raise naming the first column ``schema`` lacks, with close matches."""
        for column in columns:
            if column not in schema:
                raise self.error(unknown_column(column, schema.names()))

    def resolve(
        self,
        columns: Sequence[str] | None,
        schema: pl.Schema,
        want: DtypeTest,
        what: str,
        *,
        named: DtypeTest | None = None,
    ) -> list[str]:
        """The step's columns: those named (checked), or every ``want`` column but the target.

        ``named`` widens what a column named explicitly may be (integer codes for encoders).
        """
        if columns is None:
            found = [c for c, t in schema.items() if c != self.target and want(t)]
            if not found:
                raise self.error(f"the frame has no {what} column; name the columns to use")
            return found
        self.check_columns(columns, schema)
        accept = named or want
        for column in columns:
            self.check_not_target(column)
            if not accept(schema[column]):
                raise self.error(
                    f"column {column!r} is {schema[column]}, not {what}; "
                    "cast it in the source schema or leave it out of this step"
                )
        return list(columns)

    def check_not_target(self, column: str) -> None:
        if column == self.target:
            raise self.error(
                f"{column!r} is the target, which serving never sees; leave it out of this step"
            )

    def need_target(self, frame: pl.DataFrame) -> pl.Series:
        if self.target is None:
            raise self.error("this step learns from the target; pass target= to fit_transform")
        target = frame.get_column(self.target)
        if target.null_count():
            raise self.error(
                f"the target {self.target!r} has {target.null_count()} null(s); "
                "add a drop_missing step on it before this one"
            )
        return target


def unknown_column(column: str, known: Sequence[str]) -> str:
    hint = difflib.get_close_matches(column, known, n=3)
    tail = f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
    shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    return f"unknown column {column!r}{tail} (columns here: {shown})"


@dataclass(frozen=True)
class StepKind:
    """The functions of one step kind (see the module docstring)."""

    learn: Callable[[pl.DataFrame, Any, FitContext], Learned]
    apply: Callable[[pl.LazyFrame, Any, Learned], pl.LazyFrame]
    rows: Callable[[pl.LazyFrame, Any, Learned], pl.LazyFrame] | None = None
    fit_output: Callable[[pl.DataFrame, Any, Learned, FitContext], pl.DataFrame] | None = None
    """Overrides apply on the training rows (target encoding's out-of-fold values)."""


def unchanged(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    """``apply`` of a step that only filters training rows."""
    return frame


def is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric()


def is_categorical(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical, pl.Boolean) or isinstance(dtype, pl.Enum)


def is_code(dtype: pl.DataType) -> bool:
    """Categorical, or integer codes (accepted by encoders when named explicitly)."""
    return is_categorical(dtype) or dtype.is_integer()


def is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String


def is_any(dtype: pl.DataType) -> bool:
    return True


def as_float(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64)


def as_text(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String)


def sql_expression(text: str) -> pl.Expr:
    """Parse a SQL expression (``a / (b + 1)``) with Polars; never Python ``eval``."""
    if _SELECT.search(text):
        raise TransformError(f"{text!r}: subqueries are not allowed in an expression")
    try:
        expr = pl.sql_expr(text)
    except pl.exceptions.PolarsError as exc:
        raise TransformError(f"cannot read the expression {text!r}: {exc}") from exc
    return expr


def checked_expression(
    text: str, schema: pl.Schema, ctx: FitContext, *, allow_target: bool = False
) -> pl.Expr:
    """:func:`sql_expression`, with its columns checked against ``schema``."""
    try:
        expr = sql_expression(text)
    except TransformError as exc:
        raise ctx.error(str(exc)) from exc
    columns = expr.meta.root_names()
    ctx.check_columns(columns, schema)
    for column in columns if not allow_target else ():
        ctx.check_not_target(column)
    return expr


def finite(value: Any) -> float | None:
    """A statistic as a JSON number (``None`` for null or NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


_SIMPLE_DTYPES: dict[str, pl.DataType] = {
    str(dtype): dtype
    for dtype in (
        pl.Int8(),
        pl.Int16(),
        pl.Int32(),
        pl.Int64(),
        pl.UInt8(),
        pl.UInt16(),
        pl.UInt32(),
        pl.UInt64(),
        pl.Float32(),
        pl.Float64(),
        pl.Boolean(),
        pl.String(),
        pl.Date(),
        pl.Time(),
        pl.Null(),
        pl.Categorical(),
    )
}
_UNIT = re.compile(r"(Datetime|Duration)\(time_unit='(ns|us|ms)'(?:, time_zone=(None|'[^']*'))?\)")


def parse_dtype(text: str) -> pl.DataType | None:
    """The dtype ``str(dtype)`` wrote, for the types a transform stores; else ``None``."""
    if text in _SIMPLE_DTYPES:
        return _SIMPLE_DTYPES[text]
    match = _UNIT.fullmatch(text)
    if match is None:
        return None
    unit: Any = match[2]
    if match[1] == "Duration":
        return pl.Duration(unit)
    zone = None if match[3] in (None, "None") else match[3].strip("'")
    return pl.Datetime(unit, zone)
