"""Data quality of captured requests against the training baseline, per monitor window.

What the server let through (it refuses wrong types, missing columns and non-finite numbers
with a 400 and counts each refusal by code) is compared with the training rows' profile
(``baseline/profile.json`` of the model package):

* **missing values**: nulls and NaNs per column, beside the training rows' own missing rate;
* **out of range**: present numeric values below the training minimum or above its maximum;
* **unseen categories**: present text values that the training rows never held. Known only
  where the baseline lists every category (a column whose distinct values all fit in the
  profile's top values); elsewhere the column's unseen rate is ``None``, not a guess.
* **type errors**: requests the server refused for a value of the wrong type or a non-finite
  number (error codes :data:`TYPE_ERROR_CODES`), and **schema errors**: requests refused for
  their shape (:data:`SCHEMA_ERROR_CODES`), each as a share of all requests.

Rates are over the window's captured rows (type and schema errors over its requests). One
Polars ``select`` computes every column's counts in a single pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from meguri.data import DatasetProfile

__all__ = [
    "SCHEMA_ERROR_CODES",
    "TYPE_ERROR_CODES",
    "QualityBaseline",
    "quality_figures",
]

TYPE_ERROR_CODES = ("wrong_type", "not_finite")
SCHEMA_ERROR_CODES = (
    "missing_column",
    "extra_column",
    "duplicate_column",
    "invalid_columns",
    "wrong_width",
    "wrong_shape",
    "ragged_columns",
    "ragged_rows",
)


@dataclass(frozen=True)
class QualityBaseline:
    """What the training rows held, per input column."""

    missing_rate: Mapping[str, float]
    ranges: Mapping[str, tuple[float, float]]
    categories: Mapping[str, frozenset[str] | None]

    @classmethod
    def from_profile(cls, profile: DatasetProfile, columns: Sequence[str]) -> QualityBaseline:
        missing: dict[str, float] = {}
        ranges: dict[str, tuple[float, float]] = {}
        categories: dict[str, frozenset[str] | None] = {}
        known = {c.name for c in profile.columns}
        for name in columns:
            if name not in known:  # a column the profile lacks: nothing to compare with
                continue
            column = profile.column(name)
            missing[name] = column.missing / profile.rows if profile.rows else 0.0
            numeric = column.numeric
            if numeric is not None and numeric.min is not None and numeric.max is not None:
                ranges[name] = (float(numeric.min), float(numeric.max))
            elif column.kind in ("string", "boolean"):
                complete = column.distinct <= len(column.top)
                values = frozenset(_as_text(v.value) for v in column.top)
                categories[name] = values if complete else None
        return cls(missing, ranges, categories)


def _as_text(value: object) -> str:
    """A baseline value as the captured column reads once cast to text, which is how
    :func:`_count_exprs` compares: Polars spells booleans ``true``/``false`` (Python's ``str``
    would say ``True``, and every present value of a yes/no column would count as unseen)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def quality_figures(
    frame: pl.DataFrame,
    baseline: QualityBaseline,
    *,
    requests: float | None = None,
    errors: Mapping[str, float] | None = None,
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The window's ``quality.*`` figures and per-column detail.

    ``frame`` holds the captured input columns; ``requests`` (answered and refused) and
    ``errors`` (count per error code) are the window's system figures, for the type and schema
    error rates.
    """
    rows = frame.height
    columns = [c for c in frame.columns if c in baseline.missing_rate]
    counts = frame.select(_count_exprs(frame, columns, baseline)).row(0, named=True) if rows else {}
    per_column: dict[str, dict[str, Any]] = {}
    missing = out_of_range = unseen = 0
    checked_range = checked_unseen = 0
    for name in columns:
        entry: dict[str, Any] = {
            "missing_rate": counts.get(f"{name}/missing", 0) / rows if rows else None,
            "baseline_missing_rate": baseline.missing_rate[name],
        }
        missing += counts.get(f"{name}/missing", 0)
        if name in baseline.ranges:
            low, high = baseline.ranges[name]
            entry |= {"min": low, "max": high}
            entry["out_of_range_rate"] = counts.get(f"{name}/out", 0) / rows if rows else None
            out_of_range += counts.get(f"{name}/out", 0)
            checked_range += 1
        if baseline.categories.get(name) is not None:
            entry["unseen_category_rate"] = counts.get(f"{name}/unseen", 0) / rows if rows else None
            entry["unseen_examples"] = counts.get(f"{name}/examples") or []
            unseen += counts.get(f"{name}/unseen", 0)
            checked_unseen += 1
        per_column[name] = entry
    cells = rows * len(columns)
    figures: dict[str, float | None] = {
        "quality.missing_rate": missing / cells if cells else None,
        "quality.out_of_range_rate": (
            out_of_range / (rows * checked_range) if rows and checked_range else None
        ),
        "quality.unseen_category_rate": (
            unseen / (rows * checked_unseen) if rows and checked_unseen else None
        ),
    }
    errors = errors or {}
    total = requests or 0.0  # every request the server took, answered or refused
    for figure, codes in (
        ("quality.type_error_rate", TYPE_ERROR_CODES),
        ("quality.schema_error_rate", SCHEMA_ERROR_CODES),
    ):
        figures[figure] = sum(errors.get(c, 0.0) for c in codes) / total if total else None
    return figures, {"rows": rows, "columns": per_column}


def _count_exprs(
    frame: pl.DataFrame, columns: Sequence[str], baseline: QualityBaseline
) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    for name in columns:
        column = pl.col(name)
        dtype = frame.schema[name]
        absent = column.is_null()
        if dtype.is_float():
            absent = absent | column.is_nan()
        exprs.append(absent.sum().alias(f"{name}/missing"))
        if name in baseline.ranges and dtype.is_numeric():
            low, high = baseline.ranges[name]
            out = ((column < low) | (column > high)) & ~absent
            exprs.append(out.sum().alias(f"{name}/out"))
        known = baseline.categories.get(name)
        if known is not None:
            text = column.cast(pl.String)
            new = text.is_not_null() & ~text.is_in(sorted(known))
            exprs.append(new.sum().alias(f"{name}/unseen"))
            exprs.append(
                text.filter(new).unique().sort().head(5).implode().alias(f"{name}/examples")
            )
    return exprs
