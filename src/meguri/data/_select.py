"""Feature selection: variance threshold, correlation pruning, mutual information, importance.

Selection learns which columns to drop; applying it drops them. Candidates are the numeric
columns (or those named), never the target; other columns pass through untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from meguri.data._steps_base import FitContext, Learned, StepKind, finite, is_numeric
from meguri.spec._prepare import Select

#: A target with at most this many distinct integer values is treated as classes.
MAX_CLASSES = 20
IMPORTANCE_TREES = 100


def _learn_select(frame: pl.DataFrame, config: Select, ctx: FitContext) -> Learned:
    columns = ctx.resolve(config.columns, frame.schema, is_numeric, "numeric")
    if config.method == "variance":
        scores = _variances(frame, columns)
        threshold = 0.0 if config.threshold is None else config.threshold
        kept = [c for c in columns if (scores[c] or 0.0) > threshold]
    elif config.method == "correlation":
        threshold = 0.95 if config.threshold is None else config.threshold
        scores, kept = _uncorrelated(_matrix(frame, columns, ctx), columns, threshold)
    else:
        scores = _ranked(frame, columns, config, ctx)
        ordered = sorted(columns, key=lambda c: -(scores[c] or 0.0))
        kept = [c for c in columns if c in ordered[: config.k]]
    dropped = [c for c in columns if c not in kept]
    return {"method": config.method, "scores": scores, "kept": kept, "dropped": dropped}


def _apply_select(frame: pl.LazyFrame, config: Any, learned: Learned) -> pl.LazyFrame:
    return frame.drop(learned["dropped"])


def _variances(frame: pl.DataFrame, columns: list[str]) -> dict[str, float | None]:
    """Population variance (ddof 0), as scikit-learn's VarianceThreshold."""
    row = frame.select(pl.col(c).cast(pl.Float64).var(ddof=0) for c in columns).row(0)
    return {c: finite(v) for c, v in zip(columns, row, strict=True)}


def _matrix(frame: pl.DataFrame, columns: list[str], ctx: FitContext) -> np.ndarray[Any, Any]:
    nulls = frame.select(columns).null_count().row(0)
    for column, count in zip(columns, nulls, strict=True):
        if count:
            raise ctx.error(
                f"column {column!r} has {count} null(s); add an impute step before selection"
            )
    return frame.select(pl.col(c).cast(pl.Float64) for c in columns).to_numpy()


def _uncorrelated(
    matrix: np.ndarray[Any, Any], columns: list[str], threshold: float
) -> tuple[dict[str, float | None], list[str]]:
    """Keep columns in order, dropping one whose |r| with a kept column exceeds ``threshold``.

    The score of a column is its largest |r| with an earlier kept column.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.abs(np.corrcoef(matrix, rowvar=False)).reshape(len(columns), len(columns))
    corr = np.nan_to_num(corr, nan=0.0)
    kept: list[int] = []
    scores: dict[str, float | None] = {}
    for j, column in enumerate(columns):
        worst = float(corr[j, kept].max()) if kept else 0.0
        scores[column] = worst
        if worst <= threshold:
            kept.append(j)
    return scores, [columns[j] for j in kept]


def is_classification(target: pl.Series) -> bool:
    """Classes for text, boolean or few-valued integer targets; a number to regress otherwise."""
    if not target.dtype.is_numeric():
        return True
    return target.dtype.is_integer() and target.n_unique() <= MAX_CLASSES


def sample_rows(frame: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    """At most ``limit`` rows, chosen by content hash (so independent of row order)."""
    if frame.height <= limit:
        return frame
    order = frame.hash_rows(seed=seed).rank("ordinal")
    return frame.filter(order <= limit)


def _ranked(
    frame: pl.DataFrame, columns: list[str], config: Select, ctx: FitContext
) -> dict[str, float | None]:
    target = ctx.need_target(frame)
    rows = sample_rows(frame, config.max_rows, ctx.seed)
    x = _matrix(rows, columns, ctx)
    y = rows.get_column(target.name).to_numpy()
    classes = is_classification(target)
    if config.method == "mutual_info":
        values = _mutual_info(x, y, classes, ctx.seed)
    else:
        values = _importance(x, y, classes, ctx.seed)
    return {c: finite(v) for c, v in zip(columns, values, strict=True)}


def _mutual_info(
    x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], classes: bool, seed: int
) -> np.ndarray[Any, Any]:
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    score = mutual_info_classif if classes else mutual_info_regression
    values: np.ndarray[Any, Any] = score(x, y, random_state=seed)
    return values


def _importance(
    x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], classes: bool, seed: int
) -> np.ndarray[Any, Any]:
    """Impurity importances of a seeded random forest (scikit-learn)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    forest = RandomForestClassifier if classes else RandomForestRegressor
    model = forest(n_estimators=IMPORTANCE_TREES, max_depth=10, random_state=seed, n_jobs=1)
    values: np.ndarray[Any, Any] = model.fit(x, y).feature_importances_
    return values


KINDS: dict[str, StepKind] = {"select": StepKind(_learn_select, _apply_select)}
