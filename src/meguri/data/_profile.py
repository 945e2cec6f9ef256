"""Dataset profiles: per-column statistics, histograms, top values and correlations.

:func:`profile` builds the counts, moments, top values and correlations of every column as one
Polars ``select`` and collects it once (Polars runs the expressions in parallel). The order
statistics of a numeric column (minimum, maximum, quantiles, distinct values, histogram) all
come from one sort of its present values (:mod:`meguri.data._order`: two columns at a time,
no more held): quantiles are then lookups, distinct values a comparison of neighbours and the
histogram a binary search per bin edge, where a hash table for the distinct count and a
selection per quantile cost twice as much. Only the results (a few numbers per column, at
most ``bins`` and ``top`` entries) reach Python.

Definitions (the tests check each against numpy/pandas on the same rows):

- ``count`` is the number of present values: not null and, for floats, not NaN. ``nulls`` and
  ``nans`` count the others. Every other statistic is over the present values only.
- ``distinct`` is the exact number of distinct present values.
- ``std`` is the sample standard deviation (``ddof=1``, as pandas).
- quantiles use linear interpolation between the two nearest ranks: numpy's default
  ``method="linear"`` and pandas' ``interpolation="linear"``.
- histograms have ``bins`` equal-width bins from the minimum to the maximum, each bin closed on
  the left and the last also on the right: exactly ``numpy.histogram(values, bins)`` (a
  constant column gets the range ``min - 0.5`` to ``max + 0.5``, as numpy does).
- top values are sorted by count (descending), then by value; nulls are not a value.
- correlations are Pearson's, over the rows where both columns are present (pandas'
  pairwise-complete ``DataFrame.corr``); a constant column's correlation is ``None``.

The JSON form (:meth:`DatasetProfile.to_json`) is the reference baseline monitoring compares
production data with; its layout is versioned by ``"format": "meguri.profile/1"``::

    {"format": "meguri.profile/1", "rows": 569, "target": "malignant" | null,
     "columns": [{"name", "dtype", "kind": "numeric|boolean|string|temporal|other",
                  "count", "nulls", "nans", "distinct",
                  "numeric": {"min", "max", "mean", "std",
                              "quantiles": {"p01", "p05", "p25", "p50", "p75", "p95", "p99"},
                              "histogram": {"edges": [bins + 1 floats], "counts": [bins ints]}}
                             | null,
                  "top": [{"value", "count"}, ...],
                  "temporal": {"min": ISO text, "max": ISO text} | null}, ...],
     "correlations": {"columns": [names], "matrix": [[r | null, ...], ...]},
     "target_correlations": {"column": r | null, ...}}

Missing numbers (no present values, a constant column's correlation) are ``null``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import orjson
import polars as pl

from meguri.data._order import sorted_each
from meguri.errors import DataError

__all__ = [
    "QUANTILES",
    "ColumnProfile",
    "Correlations",
    "DatasetProfile",
    "Histogram",
    "Kind",
    "NumericStats",
    "ProfileWarning",
    "TemporalRange",
    "ValueCount",
    "column_kind",
    "profile",
    "profile_warnings",
]

FORMAT = "meguri.profile/1"
Kind = Literal["numeric", "boolean", "string", "temporal", "other"]
#: The quantiles of every numeric column, by the name they have in the profile.
QUANTILES: dict[str, float] = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.5,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}
_SEP = "\x1f"  # separates a column name from a statistic in the output of the one select
JsonScalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Histogram:
    """``len(edges) == len(counts) + 1``; bin ``i`` holds ``edges[i] <= x < edges[i + 1]``."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NumericStats:
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    quantiles: dict[str, float | None]
    histogram: Histogram | None


@dataclass(frozen=True, slots=True)
class ValueCount:
    value: JsonScalar
    count: int


@dataclass(frozen=True, slots=True)
class TemporalRange:
    min: str | None
    max: str | None


@dataclass(frozen=True, slots=True)
class ColumnProfile:
    name: str
    dtype: str
    kind: Kind
    count: int
    nulls: int
    nans: int
    distinct: int
    numeric: NumericStats | None = None
    top: tuple[ValueCount, ...] = ()
    temporal: TemporalRange | None = None

    @property
    def missing(self) -> int:
        """Nulls plus NaNs."""
        return self.nulls + self.nans


@dataclass(frozen=True, slots=True)
class Correlations:
    """Pearson correlations: ``matrix[i][j]`` between ``columns[i]`` and ``columns[j]``."""

    columns: tuple[str, ...] = ()
    matrix: tuple[tuple[float | None, ...], ...] = ()

    def get(self, a: str, b: str) -> float | None:
        return self.matrix[self.columns.index(a)][self.columns.index(b)]


@dataclass(frozen=True, slots=True)
class DatasetProfile:
    rows: int
    columns: tuple[ColumnProfile, ...]
    correlations: Correlations = Correlations()
    target: str | None = None
    target_correlations: dict[str, float | None] = field(default_factory=dict)

    def column(self, name: str) -> ColumnProfile:
        for column in self.columns:
            if column.name == name:
                return column
        known = ", ".join(c.name for c in self.columns)
        raise KeyError(f"No column {name!r} in the profile (columns: {known})")

    def to_json(self) -> bytes:
        """The profile as JSON (layout in the module docstring); ``from_json`` reads it back."""
        body = {"format": FORMAT, **_plain(self)}
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, data: bytes | str) -> DatasetProfile:
        body = orjson.loads(data)
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            got = body.get("format") if isinstance(body, dict) else type(body).__name__
            raise DataError(
                f"Not a meguri profile (format {got!r}, expected {FORMAT!r}); "
                "profile the dataset again with meguri.data.profile"
            )
        return _dataset_from(body)


@dataclass(frozen=True, slots=True)
class ProfileWarning:
    """Something in a profile worth a look before training (constant column, many nulls...)."""

    column: str
    kind: str
    message: str


# -- computing ---------------------------------------------------------------------------------


def column_kind(dtype: pl.DataType) -> Kind:
    """How a column of ``dtype`` is profiled."""
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_numeric():
        return "numeric"
    if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum):
        return "string"
    if dtype.is_temporal() and dtype != pl.Duration:
        return "temporal"
    return "other"


def profile(
    frame: pl.LazyFrame | pl.DataFrame,
    *,
    target: str | None = None,
    bins: int = 20,
    top: int = 10,
) -> DatasetProfile:
    """Profile every column of ``frame`` (see the module docstring for the definitions).

    One pass over the data for the counts, moments, top values and correlations, then one
    sort per numeric column for its order statistics and histogram (a lazy ``frame`` is read
    one such column at a time). ``target`` adds each numeric column's correlation with it (a
    boolean target counts as 0/1).
    """
    if bins < 1 or top < 0:
        raise DataError(f"bins must be at least 1 and top at least 0 (got {bins}, {top})")
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    if target is not None and target not in schema:
        raise DataError(
            f"The target column {target!r} is not in the data (columns: "
            f"{', '.join(schema.names())}); fix requirements.functional.target"
        )
    kinds = {name: column_kind(dtype) for name, dtype in schema.items()}
    numeric = [name for name, kind in kinds.items() if kind == "numeric"]
    exprs = [pl.len().alias("rows")]
    for name, dtype in schema.items():
        exprs += _column_exprs(name, dtype, kinds[name], top)
    exprs += _correlation_exprs(numeric, schema, target)
    row = lazy.select(exprs).collect().row(0, named=True)
    columns = {
        name: _column_from(row, name, str(dtype), kinds[name]) for name, dtype in schema.items()
    }
    present = (partial(_present_values, frame, name, columns[name].nans > 0) for name in numeric)
    for name, ordered in zip(numeric, sorted_each(present), strict=True):
        columns[name] = _with_order_statistics(columns[name], ordered, bins)
    correlations = _matrix_from(row, numeric)
    return DatasetProfile(
        rows=int(row["rows"]),
        columns=tuple(columns.values()),
        correlations=correlations,
        target=target,
        target_correlations=_target_from(row, correlations, target, schema),
    )


def _out(name: str, stat: str) -> str:
    return f"{name}{_SEP}{stat}"


def _present(name: str, dtype: pl.DataType) -> pl.Expr:
    """The column with NaN turned into null, so that statistics skip both."""
    return pl.col(name).fill_nan(None) if dtype.is_float() else pl.col(name)


def _column_exprs(name: str, dtype: pl.DataType, kind: Kind, top: int) -> list[pl.Expr]:
    col = pl.col(name)
    x = _present(name, dtype)
    exprs = [
        x.count().alias(_out(name, "count")),
        col.null_count().alias(_out(name, "nulls")),
        (col.is_nan().sum() if dtype.is_float() else pl.lit(0)).alias(_out(name, "nans")),
    ]
    if kind not in ("other", "numeric"):  # a numeric column's comes from its sort
        exprs.append(x.drop_nulls().n_unique().alias(_out(name, "distinct")))
    if kind == "numeric":
        exprs += _numeric_exprs(name, x)
    elif kind in ("string", "boolean"):
        exprs.append(_top_expr(name, x, top))
    elif kind == "temporal":
        exprs += [x.min().alias(_out(name, "min")), x.max().alias(_out(name, "max"))]
    return exprs


def _numeric_exprs(name: str, x: pl.Expr) -> list[pl.Expr]:
    return [x.mean().alias(_out(name, "mean")), x.std().alias(_out(name, "std"))]


def _present_values(frame: pl.LazyFrame | pl.DataFrame, name: str, nans: bool) -> pl.Series:
    """Column ``name`` with its NaNs (``nans``: it has some) as nulls; a lazy frame reads that
    column alone."""
    if isinstance(frame, pl.LazyFrame):
        values = frame.select(pl.col(name)).collect().to_series()
    else:
        values = frame.get_column(name)
    return values.fill_nan(None) if nans else values


def _range(low: float, high: float) -> tuple[float, float]:
    """numpy's histogram range: ``(min, max)``, widened by 0.5 each side when they are equal."""
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def _top_expr(name: str, x: pl.Expr, top: int) -> pl.Expr:
    element = pl.element()
    count, value = element.struct.field("count"), element.struct.field(name)
    ordered = pl.element().sort_by([count, value], descending=[True, False])
    counts = x.drop_nulls().value_counts(name="count").implode()
    return counts.list.eval(ordered).list.head(top).alias(_out(name, "top"))


def _numeric_target(target: str | None, schema: pl.Schema) -> pl.Expr | None:
    if target is None:
        return None
    dtype = schema[target]
    if dtype == pl.Boolean or dtype.is_numeric():
        return _present(target, dtype).cast(pl.Float64)
    return None


def _correlation_exprs(
    numeric: Sequence[str], schema: pl.Schema, target: str | None
) -> list[pl.Expr]:
    present = {name: _present(name, schema[name]).cast(pl.Float64) for name in numeric}
    exprs = [
        pl.corr(present[a], present[b]).alias(_out(a, f"corr{_SEP}{b}"))
        for i, a in enumerate(numeric)
        for b in numeric[i + 1 :]
    ]
    y = _numeric_target(target, schema)
    if y is not None and target not in present:  # a numeric target's are in the matrix
        exprs += [
            pl.corr(present[name], y).alias(_out(name, "target_corr"))
            for name in numeric
            if name != target
        ]
    return exprs


# -- reading the one row of results ------------------------------------------------------------


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


def _column_from(row: Mapping[str, Any], name: str, dtype: str, kind: Kind) -> ColumnProfile:
    def stat(key: str) -> Any:
        return row.get(_out(name, key))

    return ColumnProfile(
        name=name,
        dtype=dtype,
        kind=kind,
        count=int(stat("count")),
        nulls=int(stat("nulls")),
        nans=int(stat("nans")),
        distinct=int(stat("distinct") or 0),
        numeric=_numeric_from(stat) if kind == "numeric" else None,
        top=tuple(_value_counts(stat("top") or [], name)),
        temporal=_temporal_from(stat("min"), stat("max")) if kind == "temporal" else None,
    )


def _numeric_from(stat: Any) -> NumericStats:
    """The moments; the order statistics are added by :func:`_with_order_statistics`."""
    return NumericStats(
        min=None,
        max=None,
        mean=_number(stat("mean")),
        std=_number(stat("std")),
        quantiles=dict.fromkeys(QUANTILES),
        histogram=None,
    )


def _with_order_statistics(column: ColumnProfile, ordered: pl.Series, bins: int) -> ColumnProfile:
    """``column`` with its minimum, maximum, quantiles, distinct count and histogram, all read
    off ``ordered`` (its present values, sorted): the histogram counts the values below each
    inner bin edge by binary search (bin ``i`` holds ``edges[i] <= x < edges[i + 1]``, the
    last bin also its right edge), exactly ``numpy.histogram``."""
    assert column.numeric is not None
    if ordered.is_empty():
        return dataclasses.replace(column, distinct=0)
    low, high = float(ordered[0]), float(ordered[-1])
    quantiles = {
        key: _number(ordered.quantile(q, interpolation="linear")) for key, q in QUANTILES.items()
    }
    edges = [float(e) for e in np.linspace(*_range(low, high), bins + 1)]
    exact = ordered.dtype.is_integer() or ordered.dtype.is_float()  # else Decimal: as floats
    values = (ordered if exact else ordered.cast(pl.Float64)).to_numpy()
    below = np.searchsorted(values, edges[1:-1], side="left")
    cumulative = [0, *below.tolist(), ordered.len()]
    counts = tuple(int(b - a) for a, b in itertools.pairwise(cumulative))
    numeric = dataclasses.replace(
        column.numeric,
        min=_number(low),
        max=_number(high),
        quantiles=quantiles,
        histogram=Histogram(tuple(edges), counts),
    )
    return dataclasses.replace(column, distinct=ordered.n_unique(), numeric=numeric)


def _value_counts(entries: Iterable[Mapping[str, Any]], name: str) -> Iterable[ValueCount]:
    for entry in entries:  # at most ``top`` entries
        yield ValueCount(value=_scalar(entry[name]), count=int(entry["count"]))


def _scalar(value: Any) -> JsonScalar:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _temporal_from(low: Any, high: Any) -> TemporalRange:
    return TemporalRange(
        min=None if low is None else low.isoformat(),
        max=None if high is None else high.isoformat(),
    )


def _matrix_from(row: Mapping[str, Any], numeric: Sequence[str]) -> Correlations:
    matrix: list[list[float | None]] = [[None] * len(numeric) for _ in numeric]
    for i, a in enumerate(numeric):
        matrix[i][i] = 1.0 if _number(row[_out(a, "std")]) else None
        for j in range(i + 1, len(numeric)):
            value = _number(row[_out(a, f"corr{_SEP}{numeric[j]}")])
            matrix[i][j] = matrix[j][i] = value
    return Correlations(tuple(numeric), tuple(tuple(r) for r in matrix))


def _target_from(
    row: Mapping[str, Any], matrix: Correlations, target: str | None, schema: pl.Schema
) -> dict[str, float | None]:
    """Each numeric column's correlation with the target: read off the matrix when the target
    is one of its columns, else (a boolean target) computed beside it."""
    numeric = matrix.columns
    if target is None or _numeric_target(target, schema) is None:
        return {}
    if target in numeric:
        return {name: matrix.get(name, target) for name in numeric if name != target}
    return {name: _number(row[_out(name, "target_corr")]) for name in numeric}


# -- JSON --------------------------------------------------------------------------------------


def _plain(profile: DatasetProfile) -> dict[str, Any]:
    """The profile as plain JSON types (dataclasses become mappings, tuples lists)."""
    body: dict[str, Any] = orjson.loads(orjson.dumps(profile))
    return body


def _dataset_from(body: Mapping[str, Any]) -> DatasetProfile:
    corr = body.get("correlations") or {}
    return DatasetProfile(
        rows=int(body["rows"]),
        columns=tuple(_column_from_json(c) for c in body["columns"]),
        correlations=Correlations(
            columns=tuple(corr.get("columns", ())),
            matrix=tuple(tuple(r) for r in corr.get("matrix", ())),
        ),
        target=body.get("target"),
        target_correlations=dict(body.get("target_correlations") or {}),
    )


def _column_from_json(body: Mapping[str, Any]) -> ColumnProfile:
    numeric, temporal = body.get("numeric"), body.get("temporal")
    return ColumnProfile(
        name=body["name"],
        dtype=body["dtype"],
        kind=body["kind"],
        count=body["count"],
        nulls=body["nulls"],
        nans=body.get("nans", 0),
        distinct=body["distinct"],
        numeric=None if numeric is None else _numeric_from_json(numeric),
        top=tuple(ValueCount(v["value"], v["count"]) for v in body.get("top", ())),
        temporal=None if temporal is None else TemporalRange(temporal["min"], temporal["max"]),
    )


def _numeric_from_json(body: Mapping[str, Any]) -> NumericStats:
    hist = body.get("histogram")
    return NumericStats(
        min=body["min"],
        max=body["max"],
        mean=body["mean"],
        std=body["std"],
        quantiles=dict(body["quantiles"]),
        histogram=None if hist is None else Histogram(tuple(hist["edges"]), tuple(hist["counts"])),
    )


# -- warnings ----------------------------------------------------------------------------------


def profile_warnings(
    profile: DatasetProfile, *, null_share: float = 0.3, id_share: float = 0.95
) -> list[ProfileWarning]:
    """Columns worth a look: constant, mostly missing, or text that looks like an identifier."""
    out: list[ProfileWarning] = []
    for column in profile.columns:
        out += _column_warnings(column, profile.rows, null_share, id_share)
    return out


def _column_warnings(
    column: ColumnProfile, rows: int, null_share: float, id_share: float
) -> list[ProfileWarning]:
    out = []
    if rows and column.distinct <= 1 and column.kind != "other":
        what = "is empty (every value missing)" if column.distinct == 0 else "is constant"
        out.append(ProfileWarning(column.name, "constant", f"{column.name!r} {what}; drop it"))
    if rows and column.missing / rows > null_share:
        share = column.missing / rows
        out.append(
            ProfileWarning(
                column.name,
                "missing",
                f"{column.name!r} is {share:.0%} missing; impute it or drop the column",
            )
        )
    if column.kind == "string" and rows > 1 and column.distinct >= id_share * max(column.count, 1):
        out.append(
            ProfileWarning(
                column.name,
                "identifier",
                f"{column.name!r} has a distinct value on almost every row, like an identifier;"
                " exclude it from the inputs (constraints.excluded_columns)",
            )
        )
    return out
