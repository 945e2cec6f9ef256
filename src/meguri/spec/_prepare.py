"""The spec's ``data.prepare`` steps and ``data.split``, as pydantic models.

``data.prepare`` is a list of steps, each a mapping with exactly one key, the step's kind::

    data:
      prepare:
        - impute: {columns: [age, income], strategy: median, indicator: true}
        - clip: {columns: [income], method: iqr, factor: 1.5}
        - one_hot: {columns: [city], max_categories: 10, unseen: other}
        - expression: {name: income_per_person, expr: "income / household_size"}
        - select: {method: importance, k: 20}
      split: {method: stratified, by: churned, train: 0.7, validation: 0.15, test: 0.15, seed: 42}

``columns`` left out means every column the step applies to (numeric ones for numeric steps,
text ones for encoders), never the target. Steps that drop rows (``drop_missing``,
``zscore_filter``, ``filter``) act on training rows only: serving never drops a request.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

__all__ = [
    "PREPARE_KINDS",
    "Bin",
    "Clip",
    "DateParts",
    "Drop",
    "DropMissing",
    "Expression",
    "Filter",
    "Impute",
    "OneHot",
    "Ordinal",
    "PrepareStep",
    "Ratio",
    "Scale",
    "Select",
    "SplitSpec",
    "Sql",
    "SqlLookup",
    "TargetEncode",
    "TextLength",
    "ZScoreFilter",
]

DatePart = Literal["year", "month", "day", "weekday", "hour", "minute", "quarter", "dayofyear"]
SelectMethod = Literal["variance", "correlation", "mutual_info", "importance"]
SplitMethod = Literal["random", "stratified", "group", "time"]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Columns(_Step):
    columns: list[str] | None = Field(None, min_length=1)
    """The columns to act on; left out, every column the step applies to but the target."""

    @model_validator(mode="after")
    def _unique(self) -> _Columns:
        columns = self.columns or []
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise ValueError(f"columns {repeated} appear more than once; list each once")
        return self


class DropMissing(_Columns):
    """Drop training rows with a null in ``columns`` (any column when left out)."""


class Impute(_Columns):
    """Fill nulls with the training mean, median, mode or a constant; optionally flag them."""

    strategy: Literal["mean", "median", "mode", "constant"] = "median"
    value: float | int | str | bool | None = None
    """The fill value for ``strategy: constant``."""
    indicator: bool = False
    """Add ``<column>_missing`` (1 where the value was null) before filling."""

    @model_validator(mode="after")
    def _check(self) -> Impute:
        if self.strategy == "constant" and self.value is None:
            raise ValueError("strategy constant needs a value: add `value: ...`")
        if self.strategy != "constant" and self.value is not None:
            raise ValueError(f"value is only read with strategy constant, not {self.strategy}")
        return self


class Clip(_Columns):
    """Clip outliers to bounds learned on training rows (Tukey's fences or quantiles)."""

    method: Literal["iqr", "quantile"] = "iqr"
    factor: float = Field(1.5, gt=0)
    """For ``iqr``: bounds are ``q1 - factor*IQR`` and ``q3 + factor*IQR``."""
    lower: float = Field(0.01, ge=0, le=1)
    upper: float = Field(0.99, ge=0, le=1)
    """For ``quantile``: the quantiles that bound each column."""

    @model_validator(mode="after")
    def _check(self) -> Clip:
        if self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


class ZScoreFilter(_Columns):
    """Drop training rows whose |z-score| exceeds ``threshold`` in any of ``columns``."""

    threshold: float = Field(3.0, gt=0)


class Filter(_Step):
    """Keep training rows where the SQL predicate ``where`` holds (e.g. ``age >= 18``)."""

    where: str = Field(min_length=1)


class Scale(_Columns):
    """Standardise (mean 0, sd 1), min-max to [0, 1], or robust (median 0, IQR 1)."""

    method: Literal["standard", "minmax", "robust"] = "standard"


class OneHot(_Columns):
    """One 0/1 column per category (``<column>_<category>``); rare and unseen ones to other."""

    max_categories: int | None = Field(None, ge=2)
    """Keep the ``max_categories - 1`` most frequent categories and put the rest in ``other``."""
    unseen: Literal["ignore", "other"] = "ignore"
    """At apply time, a category not seen in training: all zeros, or 1 in ``<column>_other``."""
    drop_original: bool = True


class Ordinal(_Columns):
    """Code each category as an integer (sorted order or the one given); unseen → ``unseen``."""

    categories: dict[str, list[str]] = {}
    """An explicit order per column (e.g. ``size: [S, M, L]``); others are sorted."""
    unseen: int = -1


class TargetEncode(_Columns):
    """Replace a category by the smoothed target mean; out-of-fold on the training rows."""

    smoothing: float = Field(10.0, ge=0)
    """Weight of the prior: ``(sum + smoothing * prior) / (count + smoothing)``."""
    folds: int = Field(5, ge=2, le=50)


class DateParts(_Columns):
    """Add ``<column>_<part>`` for each part of a date or datetime column."""

    parts: list[DatePart] = Field(["year", "month", "day", "weekday"], min_length=1)
    """``weekday`` is ISO: 1 = Monday ... 7 = Sunday."""
    format: str | None = None
    """strftime format to parse a text column with (e.g. ``%Y-%m-%d``)."""
    drop_original: bool = True


class Expression(_Step):
    """A new column ``name`` computed by a SQL expression over columns (``a / (b + 1)``)."""

    name: str = Field(min_length=1)
    expr: str = Field(min_length=1)


class Ratio(_Step):
    """``name = numerator / denominator``, null where the denominator is 0 or null."""

    name: str = Field(min_length=1)
    numerator: str = Field(min_length=1)
    denominator: str = Field(min_length=1)


class Bin(_Columns):
    """Replace a numeric column by its bin index 0..bins-1 (uniform width or quantile edges)."""

    method: Literal["uniform", "quantile"] = "quantile"
    bins: int = Field(5, ge=2, le=1000)


class TextLength(_Columns):
    """Add ``<column>_length``: characters or words (runs of non-space) in a text column."""

    unit: Literal["chars", "words"] = "chars"


class Sql(_Step):
    """A row-wise DuckDB query over the table ``data``; re-run on each frame at apply time.

    It must return one row per input row computed from that row alone (no aggregates, windows
    or joins across rows): fit checks it. For per-group aggregates use ``sql_lookup``.
    """

    query: str = Field(min_length=1)


class SqlLookup(_Step):
    """An aggregate DuckDB query over the training table ``data``, left-joined on ``on``.

    The query runs once at fit time; its result is stored in the transform and joined to every
    frame at apply time (keys not seen in training give nulls).
    """

    query: str = Field(min_length=1)
    on: list[str] = Field(min_length=1)


class Select(_Columns):
    """Keep the best features: variance, correlation pruning, mutual information, importance."""

    method: SelectMethod
    threshold: float | None = None
    """variance: drop columns with variance <= threshold (default 0); correlation: drop a
    column whose |Pearson r| with an earlier kept column exceeds it (default 0.95)."""
    k: PositiveInt | None = None
    """mutual_info and importance: how many columns to keep."""
    max_rows: PositiveInt = 20_000
    """mutual_info and importance learn on a seeded sample of at most this many rows."""

    @model_validator(mode="after")
    def _check(self) -> Select:
        ranked = self.method in ("mutual_info", "importance")
        if ranked and self.k is None:
            raise ValueError(f"method {self.method} needs k, the number of columns to keep")
        if ranked and self.threshold is not None:
            raise ValueError(f"threshold is not read by method {self.method}; use k")
        if not ranked and self.k is not None:
            raise ValueError(f"k is not read by method {self.method}; use threshold")
        return self


class Drop(_Step):
    """Remove columns (identifiers, leaks)."""

    columns: list[str] = Field(min_length=1)


class PrepareStep(_Step):
    """One step of ``data.prepare``: a mapping with exactly one key, the step's kind."""

    drop_missing: DropMissing | None = None
    impute: Impute | None = None
    clip: Clip | None = None
    zscore_filter: ZScoreFilter | None = None
    filter: Filter | None = None
    scale: Scale | None = None
    one_hot: OneHot | None = None
    ordinal: Ordinal | None = None
    target_encode: TargetEncode | None = None
    date_parts: DateParts | None = None
    expression: Expression | None = None
    ratio: Ratio | None = None
    bin: Bin | None = None
    text_length: TextLength | None = None
    sql: Sql | None = None
    sql_lookup: SqlLookup | None = None
    select: Select | None = None
    drop: Drop | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> PrepareStep:
        given = [name for name in PREPARE_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(
                f"a step has exactly one kind (found {found}); write one of "
                f"{', '.join(PREPARE_KINDS)} as the only key, e.g. `- impute: {{columns: [a]}}`"
            )
        return self

    @property
    def kind(self) -> str:
        """The step's kind, e.g. ``impute``."""
        return next(name for name in PREPARE_KINDS if getattr(self, name) is not None)

    @property
    def config(self) -> BaseModel:
        """The step's settings, e.g. an :class:`Impute`."""
        config: BaseModel = getattr(self, self.kind)
        return config

    def to_dict(self) -> dict[str, Any]:
        """The step as written in YAML, ``{kind: {settings}}``, with defaults filled in."""
        return {self.kind: self.config.model_dump(mode="json")}


PREPARE_KINDS: tuple[str, ...] = tuple(PrepareStep.model_fields)


class SplitSpec(_Step):
    """How rows are split into train, validation and test (``data.split``)."""

    method: SplitMethod = "random"
    train: float = Field(0.7, gt=0, le=1)
    validation: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)
    seed: int = 42
    by: str | None = None
    """stratified: the class column (default: the target); group: the group id; time: the
    timestamp, earliest rows to train and latest to test."""

    @model_validator(mode="after")
    def _check(self) -> SplitSpec:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + validation + test is {total:g}; the fractions must sum to 1")
        if self.method in ("group", "time") and self.by is None:
            raise ValueError(f"method {self.method} needs `by`, the {_BY_ROLE[self.method]}")
        return self

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


_BY_ROLE = {"group": "group id column", "time": "timestamp column"}
