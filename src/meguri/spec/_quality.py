"""The spec's ``data.quality`` section: declared data quality checks and the inferred ones.

::

    data:
      quality:
        checks:
          - check: not_null
            column: customer_id
          - check: range
            column: age
            min: 0
            max: 120            # both bounds inclusive
          - check: allowed_values
            column: plan
            values: [basic, pro]
            severity: warning
          - check: unique
            columns: [customer_id]
          - check: regex
            column: postcode
            pattern: '[0-9]{3}-[0-9]{4}'    # the whole value must match
          - check: row_count
            min: 1000
          - check: freshness
            column: updated_at
            max_age: 7d
          - check: sql
            name: no-refund-above-price
            query: SELECT * FROM data WHERE refund > price
        infer: true
        inferred:
          leakage_auc: 0.99

Each check has a ``severity`` (``error`` stops the pipeline, ``warning`` is reported) and an
optional ``name``. Nulls never fail ``range``, ``allowed_values`` and ``regex`` (``not_null``
is the check for them).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

__all__ = [
    "AllowedValuesCheck",
    "FreshnessCheck",
    "InferredChecks",
    "NotNullCheck",
    "QualityCheck",
    "QualitySpec",
    "RangeCheck",
    "RegexCheck",
    "RowCountCheck",
    "Severity",
    "SqlCheck",
    "UniqueCheck",
    "age_seconds",
]

Severity = Literal["error", "warning"]
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def age_seconds(value: str) -> float:
    """Seconds in an age such as ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``."""
    match = _AGE.fullmatch(value.strip())
    if match is None or float(match[1]) <= 0:
        raise ValueError(
            f"{value!r} is not an age; write a positive number and a unit s, m, h, d or w (e.g. 7d)"
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def _age(value: str) -> str:
    age_seconds(value)
    return value


def _column(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty; name a column of the data")
    return value


def _query(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty; write a SELECT over the table data that returns bad rows")
    return value


def _pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"{value!r} is not a valid regular expression ({err}); fix it") from None
    return value


Column = Annotated[str, AfterValidator(_column)]
Bound = float | date | datetime


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Check(_Strict):
    name: str | None = None
    """Shown in reports; defaults to the check and its columns, e.g. ``not_null(age)``."""
    severity: Severity = "error"

    def columns_checked(self) -> tuple[str, ...]:
        return ()

    def label(self) -> str:
        """The check's name in reports."""
        check = str(getattr(self, "check", type(self).__name__))
        columns = ", ".join(self.columns_checked())
        return self.name or (f"{check}({columns})" if columns else check)


class _ColumnCheck(_Check):
    column: Column

    def columns_checked(self) -> tuple[str, ...]:
        return (self.column,)


class NotNullCheck(_ColumnCheck):
    check: Literal["not_null"]


class RangeCheck(_ColumnCheck):
    """``min <= value <= max`` (each bound optional, at least one given; both inclusive)."""

    check: Literal["range"]
    min: Bound | None = None
    max: Bound | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RangeCheck:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and _greater(self.min, self.max):
            raise ValueError(f"min {self.min} is greater than max {self.max}; swap them")
        return self


def _greater(a: Bound, b: Bound) -> bool:
    try:
        return bool(a > b)  # type: ignore[operator]
    except TypeError:
        raise ValueError(f"min {a!r} and max {b!r} are not comparable; use one kind") from None


class AllowedValuesCheck(_ColumnCheck):
    check: Literal["allowed_values"]
    values: list[str | int | float | bool] = Field(min_length=1)


class UniqueCheck(_Check):
    """No two rows share the same values of ``columns`` (one column or a combination)."""

    check: Literal["unique"]
    columns: list[Column] = Field(min_length=1)

    def columns_checked(self) -> tuple[str, ...]:
        return tuple(self.columns)


class RegexCheck(_ColumnCheck):
    """Every present value matches ``pattern`` whole (anchored at both ends)."""

    check: Literal["regex"]
    pattern: Annotated[str, AfterValidator(_pattern)]


class RowCountCheck(_Check):
    check: Literal["row_count"]
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> RowCountCheck:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}; swap them")
        return self


class FreshnessCheck(_ColumnCheck):
    """The newest value of a date/datetime ``column`` is at most ``max_age`` old."""

    check: Literal["freshness"]
    max_age: Annotated[str, AfterValidator(_age)]


class SqlCheck(_Check):
    """A DuckDB query over the table ``data`` that returns the violating rows.

    Select ``_row`` (the row number, added to ``data``) to have the report name the rows.
    """

    check: Literal["sql"]
    query: Annotated[str, AfterValidator(_query)]


def _check_kind(value: object) -> str | None:
    if isinstance(value, dict):
        kind = value.get("check")
        return kind if isinstance(kind, str) else None
    return getattr(value, "check", None)


QualityCheck = Annotated[
    Annotated[NotNullCheck, Tag("not_null")]
    | Annotated[RangeCheck, Tag("range")]
    | Annotated[AllowedValuesCheck, Tag("allowed_values")]
    | Annotated[UniqueCheck, Tag("unique")]
    | Annotated[RegexCheck, Tag("regex")]
    | Annotated[RowCountCheck, Tag("row_count")]
    | Annotated[FreshnessCheck, Tag("freshness")]
    | Annotated[SqlCheck, Tag("sql")],
    Discriminator(
        _check_kind,
        custom_error_type="quality_check",
        custom_error_message=(
            "names no known check; write `check:` as one of not_null, range, allowed_values, "
            "unique, regex, row_count, freshness, sql"
        ),
    ),
]
"""One declared check; its ``check`` key says which."""


class InferredChecks(_Strict):
    """Thresholds and severities of the checks meguri infers from the data itself."""

    leakage_auc: float = Field(0.99, gt=0.5, le=1.0)
    """A column alone with a ROC AUC above this on a binary target is a leakage suspect."""
    leakage_correlation: float = Field(0.99, gt=0.0, le=1.0)
    """A column with ``|Pearson r|`` above this with a numeric target is a leakage suspect."""
    leakage_purity: float = Field(0.99, gt=0.5, le=1.0)
    """A categorical column whose values map to one class each on this share of rows."""
    pii_sample_rows: int = Field(1000, ge=10)
    pii_share: float = Field(0.5, gt=0.0, le=1.0)
    """A text column is PII-looking when this share of its sampled values match a pattern."""
    type_drift: Severity = "error"
    constant: Severity = "warning"
    duplicate_rows: Severity = "warning"
    leakage: Severity = "error"
    pii: Severity = "warning"


class QualitySpec(_Strict):
    checks: list[QualityCheck] = []
    infer: bool = True
    """Also run the inferred checks: type drift, constant columns, duplicates, leakage, PII."""
    inferred: InferredChecks = InferredChecks()
    examples: int = Field(10, ge=0, le=1000)
    """How many example row numbers each failed check reports."""
