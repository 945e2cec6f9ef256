"""Fitting ``data.prepare`` on a Ray Dataset (``pipeline.compute: ray``).

The steps are the same :class:`~meguri.data._steps_base.StepKind` definitions Polars fits
locally; only where the statistics come from changes. Each step runs in order on the Ray
Dataset the previous one left (materialised once per step):

* the numeric steps learn from statistics computed block by block on the Ray workers
  (``map_batches`` over whole blocks, Polars/numpy inside) and combined on the driver:
  ``impute`` (mean, median, constant), ``clip`` (iqr, quantile), ``scale`` (standard, minmax,
  robust), ``zscore_filter``;
* steps that learn from the column names and types only (``drop``, ``drop_missing``,
  ``filter``, ``ratio``, ``expression``, ``text_length``) learn from the schema;
* every other step (encoders, target encoding, selection, binning, SQL...) falls back to
  Polars: the dataset is gathered into one frame, the step fitted there, a note logged.

Each fitted step is then applied to every block with ``map_batches`` (row filters included,
as at fit time). The result is a :class:`FittedTransform` like the one ``fit_transform``
gives on the same rows.

Exactness. Minimum, maximum, median and quantiles are order statistics: they are selected
exactly (``_ray_stats``: a histogram pass narrows each rank to a window, then the window's
values are gathered and sorted) and interpolated with Polars' linear formula, so they equal
the Polars-fitted values bit for bit. Means and standard deviations are sums: each block sums
exactly (``math.fsum``, carried as a double-double), so the mean is the correctly rounded
one. Polars sums pairwise, which is not always correctly rounded: the two agree to 1e-15
relative in practice and often to the bit, not always.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import polars as pl

from meguri.data import _steps_clean
from meguri.data._fit_ray_stats import RayStats
from meguri.data._steps_base import (
    FitContext,
    Learned,
    finite,
    is_any,
    is_numeric,
    unknown_column,
)
from meguri.data._transform import (
    KINDS,
    FittedStep,
    FittedTransform,
    _fit_step,
    _parse_step,
    _schema,
    fit_transform,
)
from meguri.errors import TransformError

if TYPE_CHECKING:
    import pyarrow as pa

    from meguri.compute import Executor
    from meguri.spec._prepare import Clip, Impute, PrepareStep, Scale, ZScoreFilter

__all__ = ["RAY_FITTED", "fit_on", "fit_transform_ray"]

log = logging.getLogger(__name__)

RayLearner = Callable[[RayStats, Any, FitContext], Learned | None]
SCHEMA_ONLY = frozenset({"drop", "drop_missing", "filter", "ratio", "expression", "text_length"})


# -- the numeric steps, learned from Ray statistics ------------------------------------------


def _impute(stats: RayStats, config: Impute, ctx: FitContext) -> Learned | None:
    if config.strategy not in ("mean", "median", "constant"):
        return None
    numeric = config.strategy != "constant"
    want = is_numeric if numeric else is_any
    columns = ctx.resolve(config.columns, stats.schema, want, "numeric" if numeric else "any")
    if config.strategy == "constant":
        values = dict.fromkeys(columns, config.value)
    else:
        for column in columns:
            if stats.count(column) == 0:
                raise ctx.error(f"column {column!r} is null in every training row; drop it instead")
        values = _centers(stats, columns, config.strategy)
    return {"columns": columns, "values": values, "indicator": config.indicator}


def _centers(stats: RayStats, columns: list[str], strategy: str) -> dict[str, Any]:
    if strategy == "mean":
        return {c: finite(stats.mean(c)) for c in columns}
    medians = stats.quantiles(columns, [0.5])
    return {c: finite(medians[c][0]) for c in columns}


def _clip(stats: RayStats, config: Clip, ctx: FitContext) -> Learned | None:
    columns = ctx.resolve(config.columns, stats.schema, is_numeric, "numeric")
    if config.method == "quantile":
        found = stats.quantiles(columns, [config.lower, config.upper])
        bounds = {c: [finite(v) or 0.0 for v in found[c]] for c in columns}
        return {"columns": columns, "bounds": bounds}
    quartiles = stats.quantiles(columns, [0.25, 0.75])
    bounds = {}
    for column in columns:
        q1, q3 = (finite(v) or 0.0 for v in quartiles[column])
        spread = (q3 - q1) * config.factor
        bounds[column] = [q1 - spread, q3 + spread]
    return {"columns": columns, "bounds": bounds}


def _scale(stats: RayStats, config: Scale, ctx: FitContext) -> Learned | None:
    columns = ctx.resolve(config.columns, stats.schema, is_numeric, "numeric")
    return {"method": config.method, "stats": _center_scale(stats, columns, config.method)}


def _zscore(stats: RayStats, config: ZScoreFilter, ctx: FitContext) -> Learned | None:
    columns = ctx.resolve(config.columns, stats.schema, is_numeric, "numeric")
    found = _center_scale(stats, columns, "standard")
    return {"columns": columns, "stats": found, "threshold": config.threshold}


def _center_scale(stats: RayStats, columns: list[str], method: str) -> dict[str, list[float]]:
    """As ``_steps_clean._center_scale``: ``[center, scale]``, a zero scale becoming 1."""
    if method == "standard":
        pairs = [(stats.mean(c), stats.std(c)) for c in columns]
    elif method == "minmax":
        pairs = [
            (stats.minimum(c), _steps_clean._diff(stats.maximum(c), stats.minimum(c)))
            for c in columns
        ]
    else:
        quartiles = stats.quantiles(columns, [0.25, 0.5, 0.75])
        pairs = [(quartiles[c][1], _difference(quartiles[c])) for c in columns]
    return {
        c: [finite(center) or 0.0, _steps_clean._nonzero(scale)]
        for c, (center, scale) in zip(columns, pairs, strict=True)
    }


def _difference(quartiles: list[float | None]) -> float | None:
    high, low = quartiles[2], quartiles[0]
    return None if high is None or low is None else high - low


RAY_FITTED: dict[str, RayLearner] = {
    "impute": _impute,
    "clip": _clip,
    "scale": _scale,
    "zscore_filter": _zscore,
}
"""Step kinds whose statistics are computed on Ray (a learner returning None falls back)."""


# -- the chain --------------------------------------------------------------------------------


def fit_transform_ray(
    dataset: Any,
    steps: Iterable[PrepareStep | Mapping[str, Any]],
    *,
    target: str | None = None,
    seed: int = 0,
    max_collect: int = 200_000,
) -> tuple[FittedTransform, Any]:
    """Fit ``steps`` on the Ray Dataset ``dataset`` (the training rows only): the fitted
    transform and the transformed training rows (a materialised Ray Dataset).

    ``max_collect`` bounds how many values of one quantile's neighbourhood are brought to the
    driver; above it, another histogram pass narrows the window first."""
    parsed = [_parse_step(i, s) for i, s in enumerate(steps)]
    stats = RayStats(dataset.materialize(), max_collect=max_collect)
    _check_dataset(stats, target)
    input_schema = _schema(stats.schema, target)
    fitted: list[FittedStep] = []
    for index, step in enumerate(parsed):
        ctx = FitContext(index, step.kind, target, seed)
        one, stats = _fit_one(stats, step, ctx)
        fitted.append(one)
    transform = FittedTransform(
        steps=tuple(fitted),
        input_schema=input_schema,
        output_schema=_schema(stats.schema, target),
        target=target,
        seed=seed,
    )
    keep = [*transform.output_schema, *([target] if target else [])]
    return transform, stats.dataset.select_columns(keep)


def _check_dataset(stats: RayStats, target: str | None) -> None:
    """The checks of the local fit, with its messages."""
    if stats.rows == 0:
        raise TransformError("cannot fit the transform on an empty frame; check the source")
    if target is not None and target not in stats.schema:
        hint = unknown_column(target, stats.schema.names())
        raise TransformError(f"the target is missing: {hint}")


def _fit_one(stats: RayStats, step: PrepareStep, ctx: FitContext) -> tuple[FittedStep, RayStats]:
    learned = _learn_on_ray(stats, step, ctx)
    if learned is None:
        return _fit_on_polars(stats, step, ctx)
    fitted = FittedStep(step, learned)
    mapped = stats.dataset.map_batches(
        partial(_apply_block, fitted), batch_format="pyarrow", batch_size=None
    )
    after = stats.derive(mapped.materialize())
    if KINDS[step.kind].rows is not None and after.rows == 0:
        raise ctx.error("no training row is left after this step; loosen it")
    return fitted, after


def _learn_on_ray(stats: RayStats, step: PrepareStep, ctx: FitContext) -> Learned | None:
    try:
        if step.kind in SCHEMA_ONLY:
            empty = pl.DataFrame(schema=stats.schema)
            return KINDS[step.kind].learn(empty, step.config, ctx)
        learner = RAY_FITTED.get(step.kind)
        if learner is None or stats.has_nan(_numeric_columns(stats, step, ctx)):
            return None
        return learner(stats, step.config, ctx)
    except pl.exceptions.PolarsError as exc:
        raise ctx.error(f"cannot be fitted: {exc}") from exc


def _numeric_columns(stats: RayStats, step: PrepareStep, ctx: FitContext) -> list[str]:
    """The columns a numeric step reads (NaN in one sends the step to Polars, whose NaN
    ordering the exact selection does not reproduce)."""
    named: list[str] | None = getattr(step.config, "columns", None)
    if named is not None:
        return [c for c in named if c in stats.schema and stats.schema[c].is_float()]
    return [c for c, t in stats.schema.items() if c != ctx.target and t.is_float()]


def _fit_on_polars(
    stats: RayStats, step: PrepareStep, ctx: FitContext
) -> tuple[FittedStep, RayStats]:
    log.info(
        "%s: no Ray fitting for this step; gathering %d rows to fit it on Polars",
        ctx.where,
        stats.rows,
    )
    fitted, out = _fit_step(stats.collect(), step, ctx)
    return fitted, stats.derive(stats.from_polars(out))


def _apply_block(fitted: FittedStep, table: pa.Table) -> pa.Table:
    """One fitted step over one block, as at fit time (row filters included)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return fitted.apply(frame.lazy(), training=True).collect().to_arrow()


# -- the seam the pipeline calls --------------------------------------------------------------


def fit_on(
    engine: Executor | None,
    frame: pl.DataFrame,
    steps: Iterable[PrepareStep | Mapping[str, Any]],
    *,
    target: str | None = None,
    seed: int = 0,
    block_rows: int = 262_144,
) -> tuple[FittedTransform, pl.DataFrame]:
    """``fit_transform`` on Polars, or on Ray Data when ``engine`` is a Ray executor: the
    fitted transform and the transformed training rows either way."""
    if engine is None or engine.name != "ray":
        return fit_transform(frame, steps, target=target, seed=seed)
    dataset = RayStats.dataset_of(frame, block_rows)
    transform, out = fit_transform_ray(dataset, steps, target=target, seed=seed)
    collected = RayStats(out).collect()
    return transform, collected
