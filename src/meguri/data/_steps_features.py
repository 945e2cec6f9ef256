"""Feature steps: date parts, expressions and ratios, binning, text length."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from meguri.data._steps_base import (
    FitContext,
    Learned,
    StepKind,
    as_float,
    checked_expression,
    finite,
    is_numeric,
    is_text,
    sql_expression,
)
from meguri.spec._prepare import Bin, DateParts, Expression, Ratio, TextLength

# -- date_parts -------------------------------------------------------------------------------

_PARTS = {
    "year": lambda e: e.dt.year(),
    "month": lambda e: e.dt.month(),
    "day": lambda e: e.dt.day(),
    "weekday": lambda e: e.dt.weekday(),
    "hour": lambda e: e.dt.hour(),
    "minute": lambda e: e.dt.minute(),
    "quarter": lambda e: e.dt.quarter(),
    "dayofyear": lambda e: e.dt.ordinal_day(),
}


def _is_dated(dtype: pl.DataType) -> bool:
    return dtype.is_temporal() and dtype not in (pl.Time, pl.Duration)


def _learn_dates(frame: pl.DataFrame, config: DateParts, ctx: FitContext) -> Learned:
    def want(dtype: pl.DataType) -> bool:
        return _is_dated(dtype) or (config.format is not None and dtype == pl.String)

    columns = ctx.resolve(config.columns, frame.schema, want, "a date or datetime")
    learned = {
        "columns": columns,
        "parts": list(config.parts),
        "format": config.format,
        "drop_original": config.drop_original,
    }
    probe = _apply_dates(frame.lazy(), config, learned)
    try:
        probe.collect()
    except pl.exceptions.PolarsError as exc:
        message = f"cannot read {columns} as dates with format {config.format!r}: {exc}"
        raise ctx.error(message) from exc
    return learned


def _apply_dates(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    schema = frame.collect_schema()
    fmt: str | None = learned["format"]
    exprs = []
    for column in learned["columns"]:
        value = pl.col(column)
        if schema[column] == pl.String:
            value = value.str.to_datetime(fmt, strict=True)
        elif schema[column] == pl.Date:
            value = value.cast(pl.Datetime)
        exprs += [
            _PARTS[part](value).cast(pl.Int32).alias(f"{column}_{part}")
            for part in learned["parts"]
        ]
    frame = frame.with_columns(exprs)
    return frame.drop(learned["columns"]) if learned["drop_original"] else frame


# -- expression and ratio ---------------------------------------------------------------------


def _learn_expression(frame: pl.DataFrame, config: Expression, ctx: FitContext) -> Learned:
    ctx.check_not_target(config.name)
    expr = checked_expression(config.expr, frame.schema, ctx)
    try:
        frame.head(1).select(expr)
    except pl.exceptions.PolarsError as exc:
        raise ctx.error(f"cannot compute {config.expr!r}: {exc}") from exc
    return {"name": config.name, "expr": config.expr}


def _apply_expression(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    return frame.with_columns(sql_expression(learned["expr"]).alias(learned["name"]))


def _learn_ratio(frame: pl.DataFrame, config: Ratio, ctx: FitContext) -> Learned:
    ctx.check_not_target(config.name)
    ctx.resolve([config.numerator, config.denominator], frame.schema, is_numeric, "numeric")
    return {"name": config.name, "numerator": config.numerator, "denominator": config.denominator}


def _apply_ratio(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    below = as_float(learned["denominator"])
    ratio = pl.when(below != 0).then(as_float(learned["numerator"]) / below)
    return frame.with_columns(ratio.alias(learned["name"]))


# -- bin --------------------------------------------------------------------------------------


def _learn_bin(frame: pl.DataFrame, config: Bin, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_numeric, "numeric")
    return {"edges": {column: _edges(frame, column, config, ctx) for column in columns}}


def _edges(frame: pl.DataFrame, column: str, config: Bin, ctx: FitContext) -> list[float]:
    """Bin edges as scikit-learn's KBinsDiscretizer: linear quantiles or equal widths."""
    values = frame.get_column(column).cast(pl.Float64).drop_nulls().drop_nans()
    if values.len() == 0:
        raise ctx.error(f"column {column!r} has no values in the training rows; drop it")
    if config.method == "uniform":
        low, high = float(values.min()), float(values.max())  # type: ignore[arg-type]
        edges = np.linspace(low, high, config.bins + 1)
    else:
        points = np.linspace(0.0, 1.0, config.bins + 1).tolist()
        quantiles = values.to_frame().select(pl.first().quantile(points, interpolation="linear"))
        edges = np.array(quantiles.item())
    distinct = np.unique(edges)
    if distinct.size < 2:
        raise ctx.error(f"column {column!r} is constant in the training rows; it cannot be binned")
    return [finite(edge) or 0.0 for edge in distinct]


def _apply_bin(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    exprs = []
    for column, edges in learned["edges"].items():
        value = as_float(column)
        index = pl.sum_horizontal([(value >= edge).cast(pl.Int32) for edge in edges[1:-1]])
        index = index if len(edges) > 2 else pl.lit(0, dtype=pl.Int32)
        exprs.append(pl.when(value.is_null()).then(None).otherwise(index).alias(column))
    return frame.with_columns(exprs)


# -- text_length ------------------------------------------------------------------------------


def _learn_text(frame: pl.DataFrame, config: TextLength, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_text, "text")
    return {"columns": columns, "unit": config.unit}


def _apply_text(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    def length(column: str) -> pl.Expr:
        text = pl.col(column)
        size = (
            text.str.len_chars() if learned["unit"] == "chars" else text.str.count_matches(r"\S+")
        )
        return size.cast(pl.Int32).alias(f"{column}_length")

    return frame.with_columns(length(column) for column in learned["columns"])


KINDS: dict[str, StepKind] = {
    "date_parts": StepKind(_learn_dates, _apply_dates),
    "expression": StepKind(_learn_expression, _apply_expression),
    "ratio": StepKind(_learn_ratio, _apply_ratio),
    "bin": StepKind(_learn_bin, _apply_bin),
    "text_length": StepKind(_learn_text, _apply_text),
}
