"""The spec's ``data.prepare`` steps compiled to one fitted, serialisable transform.

::

    fitted, train_out = fit_transform(train, spec.data.prepare, target="malignant", seed=42)
    test_out = fitted.apply(test).collect()         # the same operations, learned on train
    blob = fitted.to_json()                         # every learned number, no pickle
    FittedTransform.from_json(blob).apply(one_row)  # at serving time

Fitting runs the steps in order on the training rows; each learns from the output of the one
before. ``apply`` rebuilds the identical chain as Polars lazy expressions (a one-row frame works
the same as a million rows). Steps that drop rows (``drop_missing``, ``zscore_filter``,
``filter``) act on training rows only: ``apply`` keeps every row unless ``training=True``.
The target passes through when present and is never required at apply time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from meguri.data import _select, _steps_clean, _steps_encode, _steps_features, _steps_sql
from meguri.data._steps_base import FitContext, Learned, StepKind, parse_dtype, unknown_column
from meguri.errors import TransformError
from meguri.spec._prepare import PrepareStep

__all__ = ["FORMAT", "FORMAT_VERSION", "FittedStep", "FittedTransform", "fit_transform"]

FORMAT = "meguri.transform"
FORMAT_VERSION = 1

KINDS: dict[str, StepKind] = {
    **_steps_clean.KINDS,
    **_steps_encode.KINDS,
    **_steps_features.KINDS,
    **_steps_sql.KINDS,
    **_select.KINDS,
}


@dataclass(frozen=True)
class FittedStep:
    """One step and what it learned on the training rows (plain JSON values)."""

    step: PrepareStep
    learned: Learned

    @property
    def kind(self) -> str:
        return self.step.kind

    def apply(self, frame: pl.LazyFrame, *, training: bool = False) -> pl.LazyFrame:
        kind = KINDS[self.kind]
        frame = kind.apply(frame, self.step.config, self.learned)
        if training and kind.rows is not None:
            frame = kind.rows(frame, self.step.config, self.learned)
        return frame


@dataclass(frozen=True)
class FittedTransform:
    """The fitted ``data.prepare`` chain: apply it, store it as JSON, read what it learned."""

    steps: tuple[FittedStep, ...]
    input_schema: dict[str, str]
    """Column → dtype (``str(polars dtype)``) of the frame it was fitted on, without the target."""
    output_schema: dict[str, str]
    """Column → dtype of what :meth:`apply` returns, without the target."""
    target: str | None = None
    seed: int = 0
    _casts: dict[str, pl.DataType] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, text in self.input_schema.items():
            dtype = parse_dtype(text)
            if dtype is not None:
                self._casts[name] = dtype

    def apply(self, frame: pl.LazyFrame | pl.DataFrame, *, training: bool = False) -> pl.LazyFrame:
        """The learned operations on ``frame``, lazily; ``training`` also drops rows as fit did.

        ``frame`` needs every input column (others are ignored); input columns are cast to the
        dtypes seen at fit time, so a one-row frame from JSON (ints for floats, nulls) works.
        """
        lazy = frame.lazy()
        schema = lazy.collect_schema()
        self._check_inputs(schema)
        lazy = lazy.with_columns(
            pl.col(c).cast(t) for c, t in self._casts.items() if schema[c] != t
        )
        for step in self.steps:
            lazy = step.apply(lazy, training=training)
        keep = list(self.output_schema)
        if self.target is not None and self.target in schema:
            keep.append(self.target)
        return lazy.select(keep)

    def _check_inputs(self, schema: pl.Schema) -> None:
        missing = [c for c in self.input_schema if c not in schema]
        if missing:
            hint = unknown_column(missing[0], schema.names())
            raise TransformError(
                f"the frame lacks the input column(s) {missing} the transform was fitted "
                f"with ({hint}); supply them (null where unknown)"
            )

    def learned(self) -> list[dict[str, Any]]:
        """Per step: its index, kind, settings and what it learned, for the dataset lineage."""
        return [
            {"step": i, "kind": s.kind, "config": s.step.to_dict()[s.kind], **_summary(s)}
            for i, s in enumerate(self.steps)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "target": self.target,
            "seed": self.seed,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "steps": [{**s.step.to_dict(), "learned": s.learned} for s in self.steps],
        }

    def to_json(self) -> bytes:
        """The transform as JSON (UTF-8): settings and every learned value; no pickle."""
        return json.dumps(self.to_dict(), allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> FittedTransform:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise TransformError(f"the stored transform is not JSON: {exc}") from exc
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> FittedTransform:
        if document.get("format") != FORMAT or document.get("version") != FORMAT_VERSION:
            raise TransformError(
                f"not a {FORMAT} document of version {FORMAT_VERSION} (found "
                f"{document.get('format')!r} version {document.get('version')!r}); "
                "refit the transform with this version of meguri"
            )
        steps = tuple(_read_step(entry) for entry in document["steps"])
        return cls(
            steps=steps,
            input_schema=dict(document["input_schema"]),
            output_schema=dict(document["output_schema"]),
            target=document.get("target"),
            seed=int(document.get("seed", 0)),
        )


def _read_step(entry: Mapping[str, Any]) -> FittedStep:
    body = {key: value for key, value in entry.items() if key != "learned"}
    return FittedStep(step=PrepareStep.model_validate(body), learned=dict(entry["learned"]))


def _summary(step: FittedStep) -> Learned:
    learned = dict(step.learned)
    if "table" in learned:
        table: dict[str, list[Any]] = learned.pop("table")
        learned["table_rows"] = len(next(iter(table.values()), []))
    return learned


def fit_transform(
    frame: pl.DataFrame,
    steps: Iterable[PrepareStep | Mapping[str, Any]],
    *,
    target: str | None = None,
    seed: int = 0,
) -> tuple[FittedTransform, pl.DataFrame]:
    """Fit ``steps`` on ``frame`` (the training rows only) and return it transformed.

    Column names are checked at each step against the frame as the earlier steps left it; an
    unknown one raises :class:`~meguri.errors.TransformError` naming the step and the column.
    """
    parsed = [_parse_step(i, s) for i, s in enumerate(steps)]
    _check_frame(frame, target)
    input_schema = _schema(frame.schema, target)
    fitted: list[FittedStep] = []
    for index, step in enumerate(parsed):
        one, frame = _fit_step(frame, step, FitContext(index, step.kind, target, seed))
        fitted.append(one)
    transform = FittedTransform(
        steps=tuple(fitted),
        input_schema=input_schema,
        output_schema=_schema(frame.schema, target),
        target=target,
        seed=seed,
    )
    return transform, frame.select([*transform.output_schema, *([target] if target else [])])


def _parse_step(index: int, step: PrepareStep | Mapping[str, Any]) -> PrepareStep:
    if isinstance(step, PrepareStep):
        return step
    try:
        return PrepareStep.model_validate(step)
    except ValueError as exc:
        raise TransformError(f"data.prepare[{index}] is not a valid step: {exc}") from exc


def _check_frame(frame: pl.DataFrame, target: str | None) -> None:
    if frame.height == 0:
        raise TransformError("cannot fit the transform on an empty frame; check the source")
    if target is not None and target not in frame.columns:
        raise TransformError(f"the target is missing: {unknown_column(target, frame.columns)}")


def _schema(schema: pl.Schema, target: str | None) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in schema.items() if name != target}


def _fit_step(
    frame: pl.DataFrame, step: PrepareStep, ctx: FitContext
) -> tuple[FittedStep, pl.DataFrame]:
    kind = KINDS[step.kind]
    try:
        learned = kind.learn(frame, step.config, ctx)
        fitted = FittedStep(step, learned)
        if kind.fit_output is not None:
            out = kind.fit_output(frame, step.config, learned, ctx)
        else:
            out = fitted.apply(frame.lazy(), training=True).collect()
    except pl.exceptions.PolarsError as exc:
        raise ctx.error(f"cannot be fitted: {exc}") from exc
    if out.height == 0:
        raise ctx.error("no training row is left after this step; loosen it")
    return fitted, out
