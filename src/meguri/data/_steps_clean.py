"""Cleaning steps: missing values, outliers, row filters, scaling, dropping columns."""

from __future__ import annotations

from typing import Any

import polars as pl

from meguri.data._steps_base import (
    FitContext,
    Learned,
    StepKind,
    as_float,
    checked_expression,
    finite,
    is_any,
    is_numeric,
    sql_expression,
    unchanged,
)
from meguri.spec._prepare import (
    Clip,
    Drop,
    DropMissing,
    Filter,
    Impute,
    Scale,
    ZScoreFilter,
)

# -- drop_missing -----------------------------------------------------------------------------


def _learn_drop_missing(frame: pl.DataFrame, config: DropMissing, ctx: FitContext) -> Learned:
    if config.columns is None:
        return {"columns": frame.columns}
    ctx.check_columns(config.columns, frame.schema)
    return {"columns": list(config.columns)}


def _rows_drop_missing(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    return frame.drop_nulls(subset=learned["columns"])


# -- impute -----------------------------------------------------------------------------------


def _learn_impute(frame: pl.DataFrame, config: Impute, ctx: FitContext) -> Learned:
    numeric = config.strategy in ("mean", "median")
    want = is_numeric if numeric else is_any
    columns = ctx.resolve(config.columns, frame.schema, want, "numeric" if numeric else "any")
    values = {column: _fill_value(frame, column, config, ctx) for column in columns}
    return {"columns": columns, "values": values, "indicator": config.indicator}


def _fill_value(frame: pl.DataFrame, column: str, config: Impute, ctx: FitContext) -> Any:
    if config.strategy == "constant":
        return config.value
    series = frame.get_column(column)
    if series.null_count() == series.len():
        raise ctx.error(f"column {column!r} is null in every training row; drop it instead")
    if config.strategy == "mode":
        return _mode(series, ctx)
    stat = series.mean() if config.strategy == "mean" else series.median()
    return finite(stat)


def _mode(series: pl.Series, ctx: FitContext) -> Any:
    """The most frequent value; among ties the smallest (as scikit-learn's SimpleImputer)."""
    counts = series.drop_nulls().value_counts(name="n")
    top = counts.sort(["n", series.name], descending=[True, False]).row(0)[0]
    if not isinstance(top, int | float | str | bool):
        raise ctx.error(
            f"the mode of {series.name!r} is a {series.dtype} value, which the transform "
            "cannot store; use strategy constant or cast the column"
        )
    return top


def _apply_impute(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    values: dict[str, Any] = learned["values"]
    if learned["indicator"]:
        frame = frame.with_columns(
            pl.col(c).is_null().cast(pl.Int8).alias(f"{c}_missing") for c in values
        )
    return frame.with_columns(pl.col(c).fill_null(pl.lit(v)) for c, v in values.items())


# -- clip -------------------------------------------------------------------------------------


def _learn_clip(frame: pl.DataFrame, config: Clip, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_numeric, "numeric")
    if config.method == "quantile":
        bounds = _quantiles(frame, columns, [config.lower, config.upper])
        return {"columns": columns, "bounds": bounds}
    bounds = {}
    for column, (q1, q3) in _quantiles(frame, columns, [0.25, 0.75]).items():
        spread = (q3 - q1) * config.factor
        bounds[column] = [q1 - spread, q3 + spread]
    return {"columns": columns, "bounds": bounds}


def _quantiles(frame: pl.DataFrame, columns: list[str], qs: list[float]) -> dict[str, list[float]]:
    """Quantiles ``qs`` of each column, interpolated linearly (numpy's default), in one pass."""
    row = frame.select(as_float(c).quantile(qs, interpolation="linear") for c in columns).row(0)
    return {
        c: [finite(v) or 0.0 for v in values or qs] for c, values in zip(columns, row, strict=True)
    }


def _apply_clip(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    bounds: dict[str, list[float]] = learned["bounds"]
    return frame.with_columns(as_float(c).clip(lo, hi) for c, (lo, hi) in bounds.items())


# -- zscore_filter ----------------------------------------------------------------------------


def _learn_zscore(frame: pl.DataFrame, config: ZScoreFilter, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_numeric, "numeric")
    stats = _center_scale(frame, columns, "standard")
    return {"columns": columns, "stats": stats, "threshold": config.threshold}


def _rows_zscore(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    limit = learned["threshold"]
    keep = [
        ((as_float(c) - mean) / sd).abs().le(limit).fill_null(True)
        for c, (mean, sd) in learned["stats"].items()
    ]
    return frame.filter(pl.all_horizontal(keep))


# -- filter -----------------------------------------------------------------------------------


def _learn_filter(frame: pl.DataFrame, config: Filter, ctx: FitContext) -> Learned:
    checked_expression(config.where, frame.schema, ctx, allow_target=True)
    return {"where": config.where}


def _rows_filter(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    return frame.filter(sql_expression(learned["where"]))


# -- scale ------------------------------------------------------------------------------------


def _learn_scale(frame: pl.DataFrame, config: Scale, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_numeric, "numeric")
    return {"method": config.method, "stats": _center_scale(frame, columns, config.method)}


def _center_scale(frame: pl.DataFrame, columns: list[str], method: str) -> dict[str, list[float]]:
    """``[center, scale]`` per column; a scale of 0 becomes 1, as in scikit-learn's scalers."""
    if method == "standard":
        centers = frame.select(as_float(c).mean() for c in columns).row(0)
        scales = frame.select(as_float(c).std(ddof=0) for c in columns).row(0)
    elif method == "minmax":
        centers = frame.select(as_float(c).min() for c in columns).row(0)
        highs = frame.select(as_float(c).max() for c in columns).row(0)
        scales = tuple(_diff(h, lo) for h, lo in zip(highs, centers, strict=True))
    else:
        quartiles = _quantiles(frame, columns, [0.25, 0.5, 0.75]).values()
        centers = tuple(q[1] for q in quartiles)
        scales = tuple(q[2] - q[0] for q in quartiles)
    return {
        c: [finite(center) or 0.0, _nonzero(scale)]
        for c, center, scale in zip(columns, centers, scales, strict=True)
    }


def _diff(high: float | None, low: float | None) -> float | None:
    return None if high is None or low is None else high - low


def _nonzero(scale: float | None) -> float:
    value = finite(scale)
    return 1.0 if value is None or value == 0 else value


def _apply_scale(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    stats: dict[str, list[float]] = learned["stats"]
    return frame.with_columns(
        (as_float(c) - center) / scale for c, (center, scale) in stats.items()
    )


# -- drop -------------------------------------------------------------------------------------


def _learn_drop(frame: pl.DataFrame, config: Drop, ctx: FitContext) -> Learned:
    ctx.check_columns(config.columns, frame.schema)
    for column in config.columns:
        ctx.check_not_target(column)
    return {"columns": list(config.columns)}


def _apply_drop(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    return frame.drop(learned["columns"])


KINDS: dict[str, StepKind] = {
    "drop_missing": StepKind(_learn_drop_missing, unchanged, rows=_rows_drop_missing),
    "impute": StepKind(_learn_impute, _apply_impute),
    "clip": StepKind(_learn_clip, _apply_clip),
    "zscore_filter": StepKind(_learn_zscore, unchanged, rows=_rows_zscore),
    "filter": StepKind(_learn_filter, unchanged, rows=_rows_filter),
    "scale": StepKind(_learn_scale, _apply_scale),
    "drop": StepKind(_learn_drop, _apply_drop),
}
