"""Fairness gaps across declared sensitive columns (the spec's ``model.fairness``).

Groups are the raw values of each sensitive column of the test part, or, for a number with more
than ``bins`` distinct values, its quantile bins, exactly as slices label them; missing values
form the group ``"null"``. Per group: ``rows``; for classification ``accuracy``; for binary
tasks ``selection_rate`` (share predicted positive), ``tpr`` and ``fpr`` (``None`` where the
group has no positives, or no negatives); and each requested task metric in its per-slice form
(:func:`~meguri.train._slices.slice_metrics`).

Gaps, over the groups with at least ``min_rows`` rows (smaller groups are reported, not judged):

* ``demographic_parity_difference``: largest minus smallest selection rate;
  ``demographic_parity_ratio``: smallest over largest (the four-fifths rule asks >= 0.8);
* ``equal_opportunity_difference``: the TPR range; ``equalized_odds_difference``: the larger of
  the TPR range and the FPR range (fairlearn's definitions);
* ``accuracy_difference`` and ``<metric>_difference``: largest minus smallest.

A gap that no two groups define is NaN (a criterion on it fails).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from meguri.errors import DataError
from meguri.train._metrics import BINARY, check_task, encode
from meguri.train._slices import slice_label, slice_metrics

__all__ = ["ColumnFairness", "FairnessReport", "fairness_report"]

_RANGED = ("selection_rate", "tpr", "fpr", "accuracy")


@dataclass(frozen=True)
class ColumnFairness:
    """One sensitive column: a row per group (``group``, ``rows``, rates, metrics), the gaps,
    and which groups hold the lowest and highest value of each quantity."""

    groups: pl.DataFrame
    gaps: dict[str, float]
    extremes: dict[str, dict[str, str]]
    min_rows: int

    def to_dict(self) -> dict[str, Any]:
        groups = {row.pop("group"): row for row in self.groups.to_dicts()}
        small = [g for g, row in groups.items() if row["rows"] < self.min_rows]
        return {
            "groups": groups,
            "gaps": {k: _json_float(v) for k, v in self.gaps.items()},
            "extremes": self.extremes,
            "min_rows": self.min_rows,
            "left_out_of_gaps": small,
        }


@dataclass(frozen=True)
class FairnessReport:
    columns: dict[str, ColumnFairness]

    def metrics(self) -> dict[str, float]:
        """``fairness/<column>/<gap>`` → value, the names success criteria use."""
        return {
            f"fairness/{column}/{gap}": value
            for column, report in self.columns.items()
            for gap, value in report.gaps.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {"columns": {c: r.to_dict() for c, r in self.columns.items()}}


def fairness_report(
    frame: pl.DataFrame,
    y_true: Any,
    y_pred: Any = None,
    y_proba: Any = None,
    *,
    task: str,
    sensitive: Sequence[str],
    metrics: Sequence[str] = (),
    min_rows: int = 30,
    bins: int = 5,
    labels: Sequence[Any] | None = None,
) -> FairnessReport:
    """Per-group rates and gaps for each column of ``sensitive`` (see the module docstring)."""
    missing = [c for c in sensitive if c not in frame.columns]
    if missing:
        raise DataError(
            f"sensitive column {missing[0]!r} is not a column of the frame ({frame.columns}); "
            "name an input column."
        )
    row_data = _row_data(task, y_true, y_pred, y_proba, labels, frame.height)
    extra = [m for m in metrics if m != "accuracy"]
    per_metric = {m: _group_metric(frame, (y_true, y_pred, y_proba), m, task, sensitive,
                                   bins, labels) for m in extra}  # fmt: skip
    out = {}
    for column in sensitive:
        table = _rates(row_data, slice_label(frame[column], bins))
        for m, found in per_metric.items():
            values = found.filter(pl.col("feature") == column).select(
                pl.col("slice").alias("group"), pl.col("value").alias(m)
            )
            table = table.join(values, on="group", how="left")
        out[column] = _column(table, [*_RANGED, *extra], min_rows)
    return FairnessReport(out)


def _group_metric(
    frame: pl.DataFrame,
    predicted: tuple[Any, Any, Any],
    metric: str,
    task: str,
    sensitive: Sequence[str],
    bins: int,
    labels: Sequence[Any] | None,
) -> pl.DataFrame:
    """``metric`` per group of every sensitive column (feature, slice, value, ...)."""
    chosen = frame.select(sensitive)
    return slice_metrics(
        chosen, *predicted, task=task, features=sensitive, bins=bins, min_rows=1, metric=metric,
        labels=labels,
    )  # fmt: skip


def _row_data(
    task: str, y_true: Any, y_pred: Any, y_proba: Any, labels: Any, n: int
) -> dict[str, Any]:
    if check_task(task) == "regression":
        if len(np.asarray(y_true)) != n:
            raise DataError(f"frame has {n} rows but y_true has {len(np.asarray(y_true))}.")
        return {}
    e = encode(task, y_true, y_pred, y_proba, labels)
    if len(e.y) != n:
        raise DataError(f"frame has {n} rows but y_true has {len(e.y)}.")
    data: dict[str, Any] = {"_correct": e.y == e.pred}
    if e.task == BINARY:
        data |= {"_y": e.y == 1, "_p": e.pred == 1}
    return data


def _rates(row_data: dict[str, Any], group: pl.Series) -> pl.DataFrame:
    """One row per group: ``rows`` and the rates the task defines, one ``group_by``."""
    frame = pl.DataFrame({"group": group, **row_data})
    aggs = [pl.len().alias("rows")]
    if "_correct" in row_data:
        aggs.append(pl.col("_correct").mean().alias("accuracy"))
    if "_y" in row_data:
        y, p = pl.col("_y"), pl.col("_p")
        aggs += [
            p.mean().alias("selection_rate"),
            p.filter(y).mean().alias("tpr"),
            p.filter(~y).mean().alias("fpr"),
        ]
    return frame.group_by("group").agg(aggs).sort("group")


def _column(table: pl.DataFrame, quantities: list[str], min_rows: int) -> ColumnFairness:
    judged = table.filter(pl.col("rows") >= min_rows)
    present = [q for q in quantities if q in table.columns]
    spread, extremes = {}, {}
    for q in present:
        values = judged.select("group", q).drop_nulls().filter(pl.col(q).is_not_nan())
        if values.height == 0:
            spread[q] = (math.nan, math.nan)
            continue
        ordered = values.sort(q)
        low, high = float(ordered[q][0]), float(ordered[q][-1])
        spread[q] = (low, high)
        extremes[q] = {"lowest": ordered["group"][0], "highest": ordered["group"][-1]}
    return ColumnFairness(table, _gaps(spread, present), extremes, min_rows)


def _gaps(spread: dict[str, tuple[float, float]], present: list[str]) -> dict[str, float]:
    def diff(q: str) -> float:
        low, high = spread[q]
        return high - low

    gaps: dict[str, float] = {}
    if "selection_rate" in present:
        low, high = spread["selection_rate"]
        gaps["demographic_parity_difference"] = diff("selection_rate")
        gaps["demographic_parity_ratio"] = low / high if high > 0 else math.nan
        gaps["equal_opportunity_difference"] = diff("tpr")
        gaps["equalized_odds_difference"] = _max_defined(diff("tpr"), diff("fpr"))
    for q in present:
        if q not in ("selection_rate", "tpr", "fpr"):
            gaps[f"{q}_difference"] = diff(q)
    return gaps


def _max_defined(a: float, b: float) -> float:
    values = [v for v in (a, b) if not math.isnan(v)]
    return max(values) if values else math.nan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value
