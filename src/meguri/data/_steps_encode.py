"""Encoding steps: one-hot, ordinal and target encoding of categorical columns.

Categories are compared as text (``cast(String)``), so the stored lists are JSON strings
whatever the column's type. A null is never a category: one-hot gives zeros, ordinal gives
``unseen``, target encoding gives the prior.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from meguri.data._steps_base import (
    FitContext,
    Learned,
    StepKind,
    as_text,
    finite,
    is_categorical,
    is_code,
)
from meguri.spec._prepare import OneHot, Ordinal, TargetEncode

_CATEGORICAL = "categorical (text, boolean or integer codes)"


def _counts(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """Non-null categories of ``column`` as text with their counts, most frequent first."""
    counts = frame.lazy().select(as_text(column).alias("value")).drop_nulls()
    counts = counts.group_by("value").agg(pl.len().alias("n"))
    return counts.sort(["n", "value"], descending=[True, False]).collect()


# -- one_hot ----------------------------------------------------------------------------------


def _learn_one_hot(frame: pl.DataFrame, config: OneHot, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_categorical, _CATEGORICAL, named=is_code)
    encoded = {column: _one_hot_column(frame, column, config) for column in columns}
    _check_new_names(frame.schema, _one_hot_names(encoded), ctx)
    return {"columns": encoded, "drop_original": config.drop_original}


def _one_hot_column(frame: pl.DataFrame, column: str, config: OneHot) -> dict[str, Any]:
    values: list[str] = _counts(frame, column).get_column("value").to_list()
    limit = config.max_categories
    rare = limit is not None and len(values) > limit
    kept = values[: limit - 1] if rare and limit is not None else values
    return {"categories": sorted(kept), "other": rare or config.unseen == "other"}


def _one_hot_names(encoded: dict[str, dict[str, Any]]) -> list[str]:
    names = []
    for column, spec in encoded.items():
        names += [f"{column}_{category}" for category in spec["categories"]]
        names += [f"{column}_other"] if spec["other"] else []
    return names


def _check_new_names(schema: pl.Schema, names: list[str], ctx: FitContext) -> None:
    seen: set[str] = set()
    for name in names:
        if name in schema or name in seen:
            raise ctx.error(
                f"the new column {name!r} would collide with another column; "
                "rename that column first (a drop or expression step)"
            )
        seen.add(name)


def _apply_one_hot(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    encoded: dict[str, dict[str, Any]] = learned["columns"]
    frame = frame.with_columns(expr for c, spec in encoded.items() for expr in _indicators(c, spec))
    return frame.drop(list(encoded)) if learned["drop_original"] else frame


def _indicators(column: str, spec: dict[str, Any]) -> list[pl.Expr]:
    text = as_text(column)
    out = [
        text.eq(category).fill_null(False).cast(pl.Int8).alias(f"{column}_{category}")
        for category in spec["categories"]
    ]
    if spec["other"]:
        other = text.is_not_null() & ~text.is_in(spec["categories"])
        out.append(other.cast(pl.Int8).alias(f"{column}_other"))
    return out


# -- ordinal ----------------------------------------------------------------------------------


def _learn_ordinal(frame: pl.DataFrame, config: Ordinal, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_categorical, _CATEGORICAL, named=is_code)
    ctx.check_columns(config.categories, frame.schema)
    order = {column: _order(frame, column, config, ctx) for column in columns}
    return {"categories": order, "unseen": config.unseen}


def _order(frame: pl.DataFrame, column: str, config: Ordinal, ctx: FitContext) -> list[str]:
    seen = sorted(_counts(frame, column).get_column("value").to_list())
    if column not in config.categories:
        return seen
    given = [str(value) for value in config.categories[column]]
    missing = [value for value in seen if value not in given]
    if missing:
        raise ctx.error(
            f"column {column!r} has values {missing[:5]} that its categories list lacks; "
            "add them to categories"
        )
    return given


def _apply_ordinal(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    unseen: int = learned["unseen"]
    return frame.with_columns(
        as_text(c).replace_strict(order, range(len(order)), default=unseen, return_dtype=pl.Int32)
        for c, order in learned["categories"].items()
    )


# -- target_encode ----------------------------------------------------------------------------


def _learn_target(frame: pl.DataFrame, config: TargetEncode, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_categorical, _CATEGORICAL, named=is_code)
    target = ctx.need_target(frame)
    if not (target.dtype.is_numeric() or target.dtype == pl.Boolean):
        raise ctx.error(
            f"the target {target.name!r} is {target.dtype}; target encoding needs a numeric or "
            "0/1 target (use one_hot or ordinal for a text target)"
        )
    y = target.cast(pl.Float64)
    prior = float(y.mean() or 0.0)  # type: ignore[arg-type]
    encoded = {c: _encodings(frame, c, y, prior, config.smoothing) for c in columns}
    return {
        "prior": prior,
        "smoothing": config.smoothing,
        "folds": config.folds,
        "columns": encoded,
    }


def _encodings(
    frame: pl.DataFrame, column: str, y: pl.Series, prior: float, smoothing: float
) -> dict[str, list[Any]]:
    stats = pl.DataFrame({"value": frame.get_column(column).cast(pl.String), "y": y})
    stats = stats.drop_nulls("value").group_by("value").agg(pl.col("y").sum(), pl.len())
    stats = stats.sort("value").with_columns(
        ((pl.col("y") + smoothing * prior) / (pl.col("len") + smoothing)).alias("mean")
    )
    means = [finite(v) for v in stats.get_column("mean")]
    return {"categories": stats.get_column("value").to_list(), "means": means}


def _apply_target(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    prior: float = learned["prior"]
    return frame.with_columns(
        as_text(c).replace_strict(
            spec["categories"], spec["means"], default=prior, return_dtype=pl.Float64
        )
        for c, spec in learned["columns"].items()
    )


def fold_ids(frame: pl.DataFrame, folds: int, seed: int) -> pl.Series:
    """Each row's fold: ``hash_rows(seed) % folds``, so it depends on content, not order."""
    return (frame.hash_rows(seed=seed) % folds).alias("fold")


def _fit_target(
    frame: pl.DataFrame, config: Any, learned: Learned, ctx: FitContext
) -> pl.DataFrame:
    """Training rows get out-of-fold encodings: each from the other folds' rows only."""
    assert ctx.target is not None
    y = pl.col(ctx.target).cast(pl.Float64)
    fold = fold_ids(frame, learned["folds"], ctx.seed)
    work = frame.lazy().with_columns(fold.alias("__fold"))
    work = work.with_columns(_oof(c, y, learned["smoothing"]) for c in learned["columns"])
    return work.drop("__fold").collect()


def _oof(column: str, y: pl.Expr, smoothing: float) -> pl.Expr:
    key = as_text(column)
    outside_sum = y.sum() - y.sum().over("__fold")
    outside_n = pl.len() - pl.len().over("__fold")
    prior = outside_sum / outside_n
    cat_sum = y.sum().over(key) - y.sum().over(key, "__fold")
    cat_n = pl.len().over(key) - pl.len().over(key, "__fold")
    encoded = (cat_sum + smoothing * prior) / (cat_n + smoothing)
    fallback = pl.when(key.is_null() | encoded.is_nan()).then(prior).otherwise(encoded)
    return fallback.cast(pl.Float64).alias(column)


KINDS: dict[str, StepKind] = {
    "one_hot": StepKind(_learn_one_hot, _apply_one_hot),
    "ordinal": StepKind(_learn_ordinal, _apply_ordinal),
    "target_encode": StepKind(_learn_target, _apply_target, fit_output=_fit_target),
}
