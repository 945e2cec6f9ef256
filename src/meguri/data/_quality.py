"""Data quality checks: the ones declared in the spec's ``data.quality`` and inferred ones.

:func:`run_checks` evaluates every row-level check (not null, range, allowed values, unique,
regex) as one Polars ``select`` over the frame with a row number: each check is a boolean
"violates" expression, summed for the count and filtered for the first example rows. Row
numbers are 0-based positions in the frame as given. The inferred checks (type drift, constant
columns, duplicate rows, target leakage, PII-looking columns) live in ``_quality_infer``.

The JSON form of a report (:meth:`QualityReport.to_json`) is versioned by
``"format": "meguri.quality/1"``::

    {"format": "meguri.quality/1", "rows": 569,
     "results": [{"check": "not_null", "name": "not_null(age)", "columns": ["age"],
                  "severity": "error" | "warning", "passed": false, "message": "...",
                  "failing_rows": 3, "examples": [4, 17, 99], "inferred": false}, ...]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
import polars as pl

from meguri.data._profile import DatasetProfile
from meguri.errors import DataError, DataQualityError
from meguri.spec._quality import (
    AllowedValuesCheck,
    FreshnessCheck,
    NotNullCheck,
    QualityCheck,
    QualitySpec,
    RangeCheck,
    RegexCheck,
    RowCountCheck,
    Severity,
    SqlCheck,
    UniqueCheck,
    age_seconds,
)

__all__ = ["ROW", "QualityReport", "QualityResult", "run_checks"]

FORMAT = "meguri.quality/1"
#: The row-number column added to the data (and to the SQL checks' table ``data``).
ROW = "_row"


@dataclass(frozen=True, slots=True)
class QualityResult:
    """The outcome of one check: which, where, how bad, and what to do (in ``message``)."""

    check: str
    name: str
    columns: tuple[str, ...]
    severity: Severity
    passed: bool
    message: str
    failing_rows: int = 0
    examples: tuple[int, ...] = ()
    inferred: bool = False

    def __str__(self) -> str:
        state = "ok" if self.passed else self.severity.upper()
        return f"[{state}] {self.name}: {self.message}"


@dataclass(frozen=True, slots=True)
class QualityReport:
    rows: int
    results: tuple[QualityResult, ...]

    @property
    def errors(self) -> tuple[QualityResult, ...]:
        """Failed checks of severity ``error`` (they stop the pipeline)."""
        return tuple(r for r in self.results if not r.passed and r.severity == "error")

    @property
    def warnings(self) -> tuple[QualityResult, ...]:
        return tuple(r for r in self.results if not r.passed and r.severity == "warning")

    @property
    def passed(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise :class:`~meguri.errors.DataQualityError` naming every failed error check."""
        if self.errors:
            lines = [f"  {result}" for result in self.errors]
            raise DataQualityError(
                f"{len(self.errors)} data quality check(s) failed on {self.rows} rows:\n"
                + "\n".join(lines)
            )

    def to_json(self) -> bytes:
        return orjson.dumps({"format": FORMAT, "rows": self.rows, "results": self.results})

    @classmethod
    def from_json(cls, data: bytes | str) -> QualityReport:
        body = orjson.loads(data)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise DataError(
                f"Not a meguri quality report (expected format {FORMAT!r}); run the checks again"
            )
        results = tuple(_result_from(r) for r in body["results"])
        return cls(rows=int(body["rows"]), results=results)


def _result_from(body: Mapping[str, Any]) -> QualityResult:
    return QualityResult(
        **{**body, "columns": tuple(body["columns"]), "examples": tuple(body["examples"])}
    )


def run_checks(
    frame: pl.LazyFrame | pl.DataFrame,
    spec: QualitySpec,
    *,
    target: str | None = None,
    profile: DatasetProfile | None = None,
    previous_schema: Mapping[str, pl.DataType | str] | None = None,
    task: str | None = None,
    now: datetime | None = None,
) -> QualityReport:
    """Run the declared checks of ``spec`` and, if ``spec.infer``, the inferred ones.

    ``profile`` (of the same data) saves recomputing distinct counts; ``previous_schema``
    (column -> type, from the previous dataset version) enables the type-drift check;
    ``task`` (``binary_classification``, ``multiclass_classification``, ``regression``) is
    inferred from the target's type when not given; ``now`` is the reference time of
    freshness checks (default: the current UTC time; naive datetimes are read as UTC).
    """
    from meguri.data._quality_infer import inferred_results

    data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    if target is not None and target not in data.columns:
        raise DataError(
            f"The target column {target!r} is not in the data (columns: "
            f"{', '.join(data.columns)}); fix requirements.functional.target"
        )
    results = declared_results(data, spec, now or datetime.now(UTC))
    if spec.infer:
        results += inferred_results(data, spec, target, profile, previous_schema, task)
    return QualityReport(rows=data.height, results=tuple(results))


def with_rows(data: pl.DataFrame) -> pl.DataFrame:
    if ROW in data.columns:
        raise DataError(
            f"The data has a column named {ROW!r}, the name quality checks give row numbers; "
            "rename that column"
        )
    return data.with_row_index(ROW)


def violations(
    data: pl.DataFrame, checks: Mapping[str, pl.Expr], examples: int
) -> dict[str, tuple[int, tuple[int, ...]]]:
    """``{key: (rows violating, first example row numbers)}`` for all checks in one pass."""
    if not checks:
        return {}
    exprs = []
    for key, bad in checks.items():
        bad = bad.fill_null(False)
        exprs.append(bad.sum().alias(f"n{key}"))
        exprs.append(pl.col(ROW).filter(bad).head(examples).implode().alias(f"r{key}"))
    row = with_rows(data).lazy().select(exprs).collect().row(0, named=True)
    return {key: (int(row[f"n{key}"]), tuple(row[f"r{key}"])) for key in checks}


def rows_text(count: int, examples: tuple[int, ...]) -> str:
    shown = ", ".join(str(i) for i in examples)
    more = ", …" if count > len(examples) else ""
    plural = "s" if count != 1 else ""
    where = f" (row{'s' if len(examples) != 1 else ''} {shown}{more})" if shown else ""
    return f"{count} row{plural}{where}"


# -- declared checks ---------------------------------------------------------------------------


def declared_results(data: pl.DataFrame, spec: QualitySpec, now: datetime) -> list[QualityResult]:
    row_checks: dict[str, pl.Expr] = {}
    early: dict[int, QualityResult] = {}
    for i, check in enumerate(spec.checks):
        problem = _unusable(data, check)
        if problem is not None:
            early[i] = _result(check, False, problem)
        elif isinstance(check, RowCountCheck | FreshnessCheck | SqlCheck):
            early[i] = _table_check(data, check, now, spec.examples)
        else:
            row_checks[str(i)] = _violates(check, data.schema)
    found = violations(data, row_checks, spec.examples)
    out = []
    for i, check in enumerate(spec.checks):
        out.append(early[i] if i in early else _row_result(check, *found[str(i)]))
    return out


def _result(
    check: QualityCheck, passed: bool, message: str, count: int = 0, examples: tuple[int, ...] = ()
) -> QualityResult:
    return QualityResult(
        check=check.check,
        name=check.label(),
        columns=check.columns_checked(),
        severity=check.severity,
        passed=passed,
        message=message,
        failing_rows=count,
        examples=examples,
    )


def _unusable(data: pl.DataFrame, check: QualityCheck) -> str | None:
    """Why ``check`` cannot run on ``data`` (a missing column, a wrong type), or None."""
    missing = [c for c in check.columns_checked() if c not in data.columns]
    if missing:
        return (
            f"column {missing[0]!r} is not in the data (columns: {', '.join(data.columns)}); "
            "fix the column name in data.quality.checks"
        )
    if isinstance(check, RangeCheck):
        return _range_type_problem(check, data.schema[check.column])
    if isinstance(check, FreshnessCheck) and data.schema[check.column] not in (
        pl.Date,
        pl.Datetime,
    ):
        return (
            f"{check.column!r} is {data.schema[check.column]}, not a date or datetime; "
            "parse it as a date (the source's schema) or check another column"
        )
    return None


def _range_type_problem(check: RangeCheck, dtype: pl.DataType) -> str | None:
    bound = check.min if check.min is not None else check.max
    temporal = isinstance(bound, date)
    if dtype.is_numeric() and not temporal:
        return None
    if dtype in (pl.Date, pl.Datetime) and temporal:
        return None
    kind = "dates" if temporal else "numbers"
    return (
        f"the bounds are {kind} but {check.column!r} is {dtype}; give bounds of the "
        "column's kind or cast the column in the source's schema"
    )


def _violates(check: QualityCheck, schema: pl.Schema) -> pl.Expr:
    if isinstance(check, NotNullCheck):
        x = pl.col(check.column)
        return x.is_null() | x.is_nan() if schema[check.column].is_float() else x.is_null()
    if isinstance(check, RangeCheck):
        return _out_of_range(check, schema[check.column])
    if isinstance(check, AllowedValuesCheck):
        return ~pl.col(check.column).cast(pl.String).is_in([str(v) for v in check.values])
    if isinstance(check, UniqueCheck):
        return pl.struct(check.columns).is_duplicated()
    if isinstance(check, RegexCheck):
        pattern = f"^(?:{check.pattern})$"
        return ~pl.col(check.column).cast(pl.String).str.contains(pattern)
    raise AssertionError(f"not a row check: {check.check}")


def _out_of_range(check: RangeCheck, dtype: pl.DataType) -> pl.Expr:
    """Values beyond a bound; nulls and NaNs are missing, not out of range."""
    x = pl.col(check.column).fill_nan(None) if dtype.is_float() else pl.col(check.column)
    bad = pl.lit(False)
    if check.min is not None:
        bad = bad | (x < pl.lit(check.min))
    if check.max is not None:
        bad = bad | (x > pl.lit(check.max))
    return bad


_FIXES = {
    "not_null": "fill them (a missing-values step) or drop those rows",
    "range": "clip or filter them (an outlier step), or correct the bounds",
    "allowed_values": "map them to allowed values, or add the values to the check",
    "unique": "drop the duplicates, or fix the key columns",
    "regex": "correct those values, or the pattern",
}


def _row_result(check: QualityCheck, count: int, examples: tuple[int, ...]) -> QualityResult:
    if count == 0:
        return _result(check, True, _WHAT[check.check](check, "no rows"))
    what = _WHAT[check.check](check, rows_text(count, examples))
    return _result(check, False, f"{what}; {_FIXES[check.check]}", count, examples)


def bounds_text(low: object, high: object) -> str:
    """``[0, 120]``, ``at least 0`` or ``at most 120``."""
    if low is None:
        return f"at most {_show(high)}"
    if high is None:
        return f"at least {_show(low)}"
    return f"[{_show(low)}, {_show(high)}]"


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


_WHAT: dict[str, Any] = {
    "not_null": lambda c, n: f"{n} with a missing {c.column!r}",
    "range": lambda c, n: f"{n} with {c.column!r} outside {bounds_text(c.min, c.max)}",
    "allowed_values": lambda c, n: f"{n} with a {c.column!r} not in {c.values}",
    "unique": lambda c, n: f"{n} sharing their ({', '.join(c.columns)}) with another row",
    "regex": lambda c, n: f"{n} with a {c.column!r} not matching {c.pattern!r}",
}


# -- table-level checks: row count, freshness, SQL ---------------------------------------------


def _table_check(
    data: pl.DataFrame, check: QualityCheck, now: datetime, examples: int
) -> QualityResult:
    if isinstance(check, RowCountCheck):
        return _row_count(data.height, check)
    if isinstance(check, FreshnessCheck):
        return _freshness(data, check, now)
    assert isinstance(check, SqlCheck)
    return _sql(data, check, examples)


def _row_count(rows: int, check: RowCountCheck) -> QualityResult:
    low = check.min if check.min is not None else 0
    high = check.max if check.max is not None else rows
    wanted = bounds_text(check.min, check.max)
    if low <= rows <= high:
        return _result(check, True, f"{rows} rows, within {wanted}")
    return _result(
        check,
        False,
        f"{rows} rows, not {wanted}; check the source (a partial "
        "extract, a bad filter) or update the bounds",
    )


def _freshness(data: pl.DataFrame, check: FreshnessCheck, now: datetime) -> QualityResult:
    newest: Any = data.get_column(check.column).max()
    if newest is None:
        return _result(check, False, f"{check.column!r} has no values; the data has no dates")
    stamp = (
        newest if isinstance(newest, datetime) else datetime.combine(newest, datetime.min.time())
    )
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    age = (now if now.tzinfo else now.replace(tzinfo=UTC)) - stamp
    hours = age.total_seconds() / 3600
    if age.total_seconds() <= age_seconds(check.max_age):
        return _result(check, True, f"newest {check.column!r} is {newest} ({hours:.1f} h old)")
    return _result(
        check,
        False,
        f"newest {check.column!r} is {newest}, {hours:.1f} h old, older than {check.max_age}; "
        "refresh the source (is the extract stuck?) or relax max_age",
    )


def _sql(data: pl.DataFrame, check: SqlCheck, examples: int) -> QualityResult:
    import duckdb

    con = duckdb.connect()
    try:
        con.register("data", with_rows(data).to_arrow())
        bad = con.sql(check.query).pl()
    except duckdb.Error as err:
        first = str(err).splitlines()[0]
        return _result(check, False, f"the query failed ({first}); fix the SQL of this check")
    finally:
        con.close()
    if bad.height == 0:
        return _result(check, True, "the query returned no rows")
    rows = tuple(bad.get_column(ROW).sort().head(examples).to_list()) if ROW in bad.columns else ()
    return _result(
        check,
        False,
        f"the query returned {rows_text(bad.height, rows)}; fix those rows or the query",
        bad.height,
        rows,
    )
