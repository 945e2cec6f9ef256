"""Error analysis: metrics per slice, the worst-predicted rows, fairness gaps.

Everything is computed with Polars expressions: one ``group_by`` over all (feature, slice)
pairs at once after unpivoting the slice labels, never a Python loop over rows.

A slice is one value of a categorical (string, categorical, enum, boolean) column, or of a
numeric column with at most ``bins`` distinct values, or one quantile bin of any other numeric
column; missing values form their own slice (``"null"``).

Slice metrics (``metric=``): classification ``accuracy`` (default), ``log_loss``, ``brier``
(these two need probabilities) and, for binary tasks, ``roc_auc`` (Mann-Whitney on average
ranks within the slice, so ties count half, as in scikit-learn), ``recall``, ``precision``,
``f1`` (of the positive class; 0 when undefined); regression ``mae`` (default), ``rmse``,
``mape`` (rows with a true value of 0 left out, as in :func:`~meguri.train.evaluate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import polars as pl

from meguri.errors import DataError
from meguri.train._metrics import (
    BINARY,
    Encoded,
    check_task,
    encode,
    regression_inputs,
    row_brier,
    row_log_loss,
)

HIGHER_IS_BETTER = frozenset({"accuracy", "roc_auc", "recall", "precision", "f1"})
CLASSIFICATION_SLICE_METRICS = ("accuracy", "log_loss", "brier")
BINARY_SLICE_METRICS = ("roc_auc", "recall", "precision", "f1")
REGRESSION_SLICE_METRICS = ("mae", "rmse", "mape")
_KEYS = ("feature", "slice")


def slice_metrics(
    frame: pl.DataFrame,
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    *,
    task: str,
    features: Sequence[str] | None = None,
    bins: int = 5,
    min_rows: int = 30,
    metric: str | None = None,
    labels: Sequence[Any] | None = None,
) -> pl.DataFrame:
    """One row per slice with at least ``min_rows`` rows, worst first.

    Columns: ``feature``, ``slice``, ``rows``, ``metric`` (its name), ``value``, ``overall``
    (the metric on all rows), ``gap`` (``value - overall``) and ``worse_by`` (how much worse
    than overall, positive when worse, whichever direction the metric improves in).
    """
    per_row, metric = _row_frame(task, y_true, y_pred, y_proba, metric, labels)
    features = _features(frame, features, len(per_row))
    if bins < 2:
        raise DataError(f"bins={bins} must be at least 2 quantile bins.")
    sliced = pl.concat(
        [per_row, frame.select([slice_label(frame[f], bins).alias(f) for f in features])],
        how="horizontal",
    )
    long = sliced.unpivot(index=per_row.columns, on=features, variable_name="feature",
                          value_name="slice")  # fmt: skip
    overall = per_row.select(_metric_expr(metric, per_row.height)).item()
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
    table = (
        long.group_by(_KEYS)
        .agg(pl.len().alias("rows"), _metric_expr(metric, None).alias("value"))
        .filter(pl.col("rows") >= min_rows)
        .with_columns(
            pl.lit(metric).alias("metric"),
            pl.lit(overall, dtype=pl.Float64).alias("overall"),
            (pl.col("value") - overall).alias("gap"),
            ((pl.col("value") - overall) * sign).alias("worse_by"),
        )
    )
    order = ["worse_by", "feature", "slice"]
    table = table.sort(order, descending=[True, False, False], nulls_last=True)
    return table.select("feature", "slice", "rows", "metric", "value", "overall", "gap", "worse_by")


def _check_height(frame: pl.DataFrame, n: int) -> None:
    if frame.height != n:
        raise DataError(
            f"frame has {frame.height} rows but y_true has {n}; pass the rows that were predicted."
        )


def _features(frame: pl.DataFrame, features: Sequence[str] | None, n: int) -> list[str]:
    _check_height(frame, n)
    chosen = list(frame.columns if features is None else features)
    missing = [f for f in chosen if f not in frame.columns]
    if missing:
        raise DataError(f"features: {missing[0]!r} is not a column of frame ({frame.columns}).")
    if not chosen:
        raise DataError("features is empty; name at least one column to slice by.")
    return chosen


def slice_label(column: pl.Series, bins: int) -> pl.Series:
    """Each row's slice label: its value, or its quantile bin for a many-valued number."""
    if not column.dtype.is_numeric() or column.n_unique() <= bins:
        return column.cast(pl.String).fill_null("null")
    values = column.cast(pl.Float64).fill_nan(None).to_numpy()
    known = ~np.isnan(values)
    edges = np.unique(np.quantile(values[known], np.linspace(0, 1, bins + 1)[1:-1]))
    names = np.array(_bin_names(edges), dtype=object)
    codes = np.searchsorted(edges, values[known], side="left")  # right-closed: (a, b]
    label = np.full(len(values), "null", dtype=object)
    label[known] = names[codes]
    return pl.Series(column.name, label, dtype=pl.String)


def _bin_names(edges: np.ndarray[Any, Any]) -> list[str]:
    for digits in (4, 8, 17):
        text = [f"{e:.{digits}g}" for e in edges]
        names = [f"<= {text[0]}"] + [f"({a}, {b}]" for a, b in pairwise(text)]
        names.append(f"> {text[-1]}")
        if len(set(names)) == len(names):
            break
    return names


# -- per-row quantities and metric expressions --------------------------------------------------


def _row_frame(
    task: str, y_true: Any, y_pred: Any, y_proba: Any, metric: str | None, labels: Any
) -> tuple[pl.DataFrame, str]:
    if check_task(task) == "regression":
        metric = metric or "mae"
        _known(metric, REGRESSION_SLICE_METRICS, task)
        y, pred = regression_inputs(y_true, y_pred)
        ape = np.abs(pred - y) / np.where(y == 0, np.nan, np.abs(y))
        return pl.DataFrame({"_abs_error": np.abs(pred - y), "_ape": ape}, nan_to_null=True), metric
    e = encode(task, y_true, y_pred, y_proba, labels)
    metric = metric or "accuracy"
    known = CLASSIFICATION_SLICE_METRICS + (BINARY_SLICE_METRICS if task == BINARY else ())
    _known(metric, known, task)
    return _classification_rows(e, metric), metric


def _known(metric: str, known: Sequence[str], task: str) -> None:
    if metric not in known:
        raise DataError(f"metric={metric!r} has no slice form for {task}; use one of {known}.")


def _classification_rows(e: Encoded, metric: str) -> pl.DataFrame:
    columns: dict[str, Any] = {"_correct": (e.y == e.pred).astype(np.float64)}
    if metric in ("log_loss", "brier"):
        columns["_loss"] = row_log_loss(e) if metric == "log_loss" else row_brier(e)
    if e.task == BINARY:
        columns |= {"_positive": e.y == 1, "_predicted": e.pred == 1}
    if metric == "roc_auc":
        columns["_score"] = e.require_proba("roc_auc")[:, 1]
    return pl.DataFrame(columns)


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num / den).otherwise(0.0)


def _metric_expr(metric: str, n: int | None) -> pl.Expr:
    """The metric as an aggregation over a group (or over the frame: ``n`` rows, ``over=None``)."""
    positive, predicted = pl.col("_positive"), pl.col("_predicted")
    true_pos = (positive & predicted).sum()
    simple = {
        "accuracy": pl.col("_correct").mean(),
        "log_loss": pl.col("_loss").mean(),
        "brier": pl.col("_loss").mean(),
        "mae": pl.col("_abs_error").mean(),
        "rmse": (pl.col("_abs_error") ** 2).mean().sqrt(),
        "mape": pl.col("_ape").mean(),
    }
    if metric in simple:
        return simple[metric]
    if metric == "recall":
        return _ratio(true_pos, positive.sum())
    if metric == "precision":
        return _ratio(true_pos, predicted.sum())
    if metric == "f1":
        return _ratio(2 * true_pos, positive.sum() + predicted.sum())
    return _auc_expr(grouped=n is None)


def _auc_expr(*, grouped: bool) -> pl.Expr:
    rank = pl.col("_score").rank("average")
    if grouped:
        rank = rank.over(_KEYS)
    n_pos = pl.col("_positive").sum().cast(pl.Float64)
    n_neg = pl.len().cast(pl.Float64) - n_pos
    u = rank.filter(pl.col("_positive")).sum() - n_pos * (n_pos + 1) / 2
    return pl.when((n_pos > 0) & (n_neg > 0)).then(u / (n_pos * n_neg)).otherwise(None)


# -- worst rows ---------------------------------------------------------------------------------


def worst_rows(
    frame: pl.DataFrame,
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    *,
    task: str,
    k: int = 20,
    labels: Sequence[Any] | None = None,
) -> pl.DataFrame:
    """The ``k`` rows with the highest loss, worst first: ``row`` (position in ``frame``), the
    frame's columns, ``y_true``, ``y_pred`` and ``loss`` (per-row log loss for classification,
    which needs ``y_proba``; absolute error for regression)."""
    if check_task(task) == "regression":
        y, pred = regression_inputs(y_true, y_pred)
        truth, shown, loss = y, pred, np.abs(pred - y)
    else:
        e = encode(task, y_true, y_pred, y_proba, labels)
        e.require_proba("worst_rows (ranked by log loss)")
        truth, shown, loss = e.classes[e.y], e.classes[e.pred], row_log_loss(e)
    _check_height(frame, len(loss))
    extra = pl.DataFrame({"y_true": truth, "y_pred": shown, "loss": loss})
    table = pl.concat([frame.with_row_index("row"), extra], how="horizontal")
    return table.top_k(k, by="loss").sort("loss", descending=True, maintain_order=True)


# -- fairness -----------------------------------------------------------------------------------


def fairness_gaps(
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    sensitive: Any = None,
    *,
    labels: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Per-group rates and the gaps between groups of a sensitive attribute (binary tasks).

    ``groups`` maps each group to ``rows``, ``selection_rate`` (share predicted positive),
    ``tpr``, ``fpr`` (``None`` when the group has no positives or no negatives) and
    ``accuracy``. ``demographic_parity_difference`` is the largest minus the smallest selection
    rate, ``demographic_parity_ratio`` the smallest over the largest, and
    ``equalized_odds_difference`` the larger of the TPR range and the FPR range (fairlearn's
    definitions), each over the groups where the rate is defined.
    """
    e = encode(BINARY, y_true, y_pred, y_proba, labels)
    if sensitive is None:
        raise DataError("fairness_gaps needs sensitive=: the group of each row (e.g. df['sex']).")
    group = pl.Series("group", np.asarray(sensitive)).cast(pl.String).fill_null("null")
    if len(group) != len(e.y):
        raise DataError(f"sensitive has {len(group)} rows but y_true has {len(e.y)}.")
    rates = _group_rates(pl.DataFrame({"group": group, "y": e.y == 1, "p": e.pred == 1}))
    groups = {row.pop("group"): row for row in rates.to_dicts()}
    return {"groups": groups, **_gaps(rates)}


def _group_rates(data: pl.DataFrame) -> pl.DataFrame:
    y, p = pl.col("y"), pl.col("p")
    return (
        data.group_by("group")
        .agg(
            pl.len().alias("rows"),
            p.mean().alias("selection_rate"),
            p.filter(y).mean().alias("tpr"),
            p.filter(~y).mean().alias("fpr"),
            (y == p).mean().alias("accuracy"),
        )
        .sort("group")
    )


def _gaps(rates: pl.DataFrame) -> dict[str, float]:
    def spread(column: str) -> float:
        values = rates[column].drop_nulls().to_numpy().astype(np.float64)
        return float(values.max() - values.min()) if len(values) else float("nan")

    selection = rates["selection_rate"].to_numpy().astype(np.float64)
    ratio = float(selection.min() / selection.max()) if selection.max() > 0 else float("nan")
    return {
        "demographic_parity_difference": spread("selection_rate"),
        "demographic_parity_ratio": ratio,
        "equalized_odds_difference": max(spread("tpr"), spread("fpr")),
    }
