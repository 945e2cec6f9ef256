"""Requests checked against the signature and turned into a columnar batch.

Every way a request can carry rows (JSON columns, JSON rows, JSON records, CSV text) ends here,
in one :class:`Validator` per model. It builds one numpy array per signature column (the dtypes
of :mod:`meguri.serve._signature`) with numpy, checking on the way:

* the columns: none missing, none extra, not more than ``max_columns`` named;
* the rows: not more than ``max_rows``, every row the same width;
* the values: numbers for ``double``/``long`` (integral for ``long``), ``true``/``false`` for
  ``boolean``, text for ``string``, ISO 8601 text for ``datetime``; ``null`` (JSON) or an empty
  field (CSV) only where the column is nullable; no NaN or Infinity (JSON has no such literals;
  in CSV, ``nan``/``inf`` text is refused too); only ASCII digits in CSV numbers (Python and
  numpy would otherwise read ``١٢٣`` or ``1_000`` as numbers); ``-0.0`` becomes ``0.0``.

All-numeric requests take a fast path: the values go straight into one float64 ``[n, k]``
matrix (one ``np.array`` call after one type check), returned as a :class:`MatrixBatch` whose
columns are views of it; the micro-batcher stacks such matrices in one call. Anything the fast
path cannot take (nulls where they are refused, strings, missing keys...) goes the column-wise
way, which finds and names the faulty column.

A failure raises :class:`BadRequest`, an :class:`~meguri.errors.InvalidInputError` that also
carries the HTTP status and a short machine-readable ``code``; the app renders it as
``{"error": {"code": ..., "message": ..., "column": ...}}``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from meguri.errors import InvalidInputError
from meguri.serve._model import Array
from meguri.serve._signature import Column, Signature

__all__ = ["BadRequest", "Batch", "Limits", "MatrixBatch", "Validator"]

Batch = Mapping[str, Array]
"""A checked batch: one array per signature column, by name, in signature order."""
_NUMERIC = frozenset({float, int})
_NUMERIC_OR_NULL = frozenset({float, int, type(None)})
_TRUE = frozenset({"true", "1", "t", "yes"})
_FALSE = frozenset({"false", "0", "f", "no"})
_JSON_TYPE = {
    float: "number",
    int: "number",
    str: "string",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


class BadRequest(InvalidInputError):
    """A request the server refuses: ``status`` (4xx), ``code``, message and the column."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid_input",
        status: int = 400,
        column: str | None = None,
    ) -> None:
        super().__init__(message, column=column)
        self.code = code
        self.status = status


class MatrixBatch(Mapping[str, Array]):
    """A batch of numeric columns held as one C-contiguous float64 ``[n, k]`` matrix in
    signature order; ``batch[name]`` is a view of its column."""

    __slots__ = ("index", "matrix")

    def __init__(self, matrix: Array, index: Mapping[str, int]) -> None:
        self.matrix = matrix
        self.index = index
        """Column position of each name (signature order)."""

    def __getitem__(self, name: str) -> Array:
        column: Array = self.matrix[:, self.index[name]]
        return column

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"MatrixBatch(rows={self.matrix.shape[0]}, columns={list(self.index)})"


@dataclass(frozen=True)
class Limits:
    """How much one request may carry."""

    max_columns: int = 1_000
    max_rows: int = 10_000


class Validator:
    """Builds checked columnar batches for one signature (see the module docstring)."""

    def __init__(self, signature: Signature, limits: Limits | None = None) -> None:
        self.signature = signature
        self.limits = limits or Limits()
        self.names = signature.names
        self.columns = {c.name: c for c in signature.inputs}
        self._numeric = all(c.type in ("double", "long") for c in signature.inputs)
        self._longs = any(c.type == "long" for c in signature.inputs)
        self._name_set = frozenset(self.names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self._row_of = itemgetter(*self.names) if len(self.names) > 1 else None

    # -- shapes ---------------------------------------------------------------------------
    def check_names(self, names: Sequence[Any]) -> list[str]:
        """``names`` must be the signature's names, each once, in any order."""
        if names == self.names:
            return self.names
        self.check_width(len(names))
        if set(map(type, names)) - {str}:
            raise BadRequest("column names must be strings", code="invalid_columns")
        if len(names) == len(self.names) and set(names) == self._name_set:
            return list(names)
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise BadRequest(
                f"column {dup!r} is given twice; send it once", column=dup, code="duplicate_column"
            )
        extra = [n for n in names if n not in self.columns]
        if extra:
            raise BadRequest(
                f"unknown column {extra[0]!r}; the model takes {self._expected()}",
                column=extra[0],
                code="extra_column",
            )
        given = set(names)
        missing = [n for n in self.names if n not in given]
        if missing:
            raise BadRequest(
                f"column {missing[0]!r} is missing; send every column: {self._expected()}",
                column=missing[0],
                code="missing_column",
            )
        return list(names)

    def check_width(self, width: int) -> None:
        if width > self.limits.max_columns:
            raise BadRequest(
                f"{width} columns is more than the limit of {self.limits.max_columns}; "
                f"the model takes {len(self.names)} columns",
                code="too_many_columns",
                status=413,
            )

    def check_rows(self, count: int) -> None:
        if count == 0:
            raise BadRequest("the request holds no rows; send at least one", code="no_rows")
        if count > self.limits.max_rows:
            raise BadRequest(
                f"{count} rows is more than the limit of {self.limits.max_rows}; split the request",
                code="too_many_rows",
                status=413,
            )

    def _expected(self) -> str:
        shown = ", ".join(self.names[:8])
        return f"{len(self.names)} columns ({shown}{', ...' if len(self.names) > 8 else ''})"

    # -- JSON -----------------------------------------------------------------------------
    def from_columns(self, columns: Mapping[str, Any]) -> Batch:
        """``{name: [value, ...]}``, every list the same length."""
        self.check_names(list(columns))
        lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
        if -1 in lengths:
            bad = next(k for k, v in columns.items() if not isinstance(v, list))
            raise BadRequest(f"column {bad!r} must be a list of values", column=bad)
        if len(lengths) != 1:
            raise BadRequest(
                "every column must hold the same number of values", code="ragged_columns"
            )
        self.check_rows(lengths.pop())
        if self._numeric:
            values = [columns[name] for name in self.names]
            if set(map(type, chain.from_iterable(values))) <= _NUMERIC:
                matrix = _float_matrix(values)
                if matrix is not None:
                    return self._columns_of(np.ascontiguousarray(matrix.T), self.names)
        return {c.name: json_column(c, columns[c.name]) for c in self.signature.inputs}

    def from_rows(self, rows: Any, names: Sequence[Any] | None = None) -> Batch:
        """``[[value, ...], ...]`` in signature order, or in the order of ``names``."""
        order = self.names if names is None else self.check_names(names)
        rows = _rows_of_lists(rows)
        self.check_rows(len(rows))
        width = _width(rows)
        if width != len(order):
            self.check_width(width)
            raise BadRequest(
                f"each row must hold {len(order)} values, one per column "
                f"({self._expected()}); got {width}",
                code="wrong_width",
            )
        if self._numeric and set(map(type, chain.from_iterable(rows))) <= _NUMERIC:
            matrix = _float_matrix(rows)
            if matrix is not None:  # else an integer beyond float64: the column-wise path says
                return self.from_matrix(matrix, order)
        values = dict(zip(order, map(list, zip(*rows, strict=True)), strict=True))
        return {c.name: json_column(c, values[c.name]) for c in self.signature.inputs}

    def from_matrix(self, matrix: Array, order: Sequence[str] | None = None) -> Batch:
        """A float64 ``[rows, columns]`` matrix in signature order (or ``order``)."""
        order = self.names if order is None else order
        self.check_rows(matrix.shape[0])
        if not self._numeric or matrix.ndim != 2 or matrix.shape[1] != len(order):
            raise BadRequest(
                f"the tensor must be [rows, {len(order)}] numbers, one column per "
                f"input ({self._expected()})",
                code="wrong_shape",
            )
        return self._columns_of(matrix + 0.0, order)

    def from_records(self, records: Any) -> Batch:
        """``[{name: value, ...}, ...]``; a name absent from a record is null there."""
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise BadRequest("records must be a list of objects {column: value}")
        self.check_rows(len(records))
        fast = self._numeric_records(records)
        if fast is not None:
            return fast
        keys: set[Any] = set().union(*records)
        self.check_width(len(keys))
        extra = sorted(k for k in keys if k not in self.columns)
        if extra:
            raise BadRequest(
                f"unknown column {extra[0]!r}; the model takes {self._expected()}",
                column=extra[0],
                code="extra_column",
            )
        missing = [n for n in self.names if n not in keys]
        if missing:
            raise BadRequest(
                f"column {missing[0]!r} is missing; send every column: {self._expected()}",
                column=missing[0],
                code="missing_column",
            )
        return {
            c.name: json_column(c, [r.get(c.name) for r in records]) for c in self.signature.inputs
        }

    def _numeric_records(self, records: list[dict[Any, Any]]) -> Batch | None:
        """Records holding exactly the signature's names, all numbers, as one matrix; else
        ``None`` (the column-wise path then names what is wrong)."""
        if not self._numeric or self._row_of is None or set(map(len, records)) != {len(self.names)}:
            return None
        try:
            rows = list(map(self._row_of, records))
        except KeyError:
            return None
        if not set(map(type, chain.from_iterable(rows))) <= _NUMERIC:
            return None
        matrix = _float_matrix(rows)
        return None if matrix is None else self._columns_of(matrix, self.names)

    # -- CSV ------------------------------------------------------------------------------
    def from_text_rows(self, rows: list[list[str]], names: Sequence[str] | None) -> Batch:
        """CSV fields (text), in signature order or the header's ``names``."""
        order = self.names if names is None else self.check_names(names)
        self.check_rows(len(rows))
        width = _width(rows)
        if width != len(order):
            self.check_width(width)
            raise BadRequest(
                f"each CSV line must hold {len(order)} fields, one per column "
                f"({self._expected()}); got {width}",
                code="wrong_width",
            )
        if self._numeric:
            return self._numeric_text(rows, order)
        values = dict(zip(order, map(list, zip(*rows, strict=True)), strict=True))
        return {c.name: text_column(c, values[c.name]) for c in self.signature.inputs}

    def _numeric_text(self, rows: list[list[str]], order: Sequence[str]) -> Batch:
        text = np.array(rows, dtype=str)
        try:
            matrix = _parse_numbers(text)
        except BadRequest:
            values = dict(zip(order, text.T, strict=True))
            for column in self.signature.inputs:
                text_column(column, list(values[column.name]))
            raise
        return self._columns_of(matrix, order)

    def _columns_of(self, matrix: Array, order: Sequence[str]) -> Batch:
        """The checked columns of a float64 matrix whose columns are in ``order``."""
        if order is not self.names and list(order) != self.names:
            position = {name: i for i, name in enumerate(order)}
            matrix = matrix[:, [position[name] for name in self.names]]
        batch = MatrixBatch(np.ascontiguousarray(matrix), self.index)
        finite = bool(np.isfinite(matrix).all())
        if finite and not self._longs:
            return batch
        for column in self.signature.inputs:
            if not finite or column.type == "long":
                _check_numbers(column, batch[column.name])
        return batch


def _float_matrix(rows: Sequence[Sequence[Any]]) -> Array | None:
    """Python numbers (checked to be ``int``/``float``) as a float64 array, ``-0.0`` as ``0.0``;
    ``None`` when an integer is too large for float64."""
    try:
        return np.array(rows, dtype=np.float64) + 0.0
    except OverflowError:
        return None


def _rows_of_lists(rows: Any) -> list[list[Any]]:
    if not isinstance(rows, list) or set(map(type, rows)) - {list}:
        raise BadRequest("rows must be a list of lists [[value, ...], ...]")
    return rows


def _width(rows: Sequence[Sequence[Any]]) -> int:
    widths = set(map(len, rows))
    if len(widths) != 1:
        raise BadRequest("every row must hold the same number of values", code="ragged_rows")
    return widths.pop()


# -- one column ------------------------------------------------------------------------------
def json_column(column: Column, values: list[Any]) -> Array:
    """One column of JSON values as its batch array (see the module docstring)."""
    kinds = set(map(type, values))
    if type(None) in kinds and not column.nullable:
        raise _null(column)
    if column.type in ("double", "long"):
        if not kinds <= _NUMERIC_OR_NULL:
            raise _wrong_type(column, kinds - _NUMERIC_OR_NULL, "numbers")
        try:
            array = np.array(values, dtype=np.float64) + 0.0
        except OverflowError:
            raise _non_finite(column) from None
        return _check_numbers(column, array)
    if column.type == "boolean":
        if not kinds <= {bool}:
            raise _wrong_type(column, kinds - {bool}, "true or false")
        return np.array(values, dtype=bool)
    if not kinds <= {str, type(None)}:
        raise _wrong_type(column, kinds - {str, type(None)}, "text")
    if column.type == "string":
        return np.array(values, dtype=object)
    return _datetimes(column, values)


def text_column(column: Column, fields: list[str]) -> Array:
    """One column of CSV fields as its batch array; an empty field is null."""
    if column.type in ("double", "long"):
        return _check_numbers(column, _parse_numbers(np.array(fields, dtype=str), column))
    empty = [not f for f in fields]
    if any(empty) and (column.type == "boolean" or not column.nullable):
        raise _null(column)
    if column.type == "boolean":
        lowered = {f.strip().lower() for f in fields}
        if not lowered <= _TRUE | _FALSE:
            raise BadRequest(
                f"column {column.name!r}: expected true or false, got "
                f"{sorted(lowered - _TRUE - _FALSE)[0]!r}",
                column=column.name,
                code="wrong_type",
            )
        return np.isin(np.char.lower(np.char.strip(np.array(fields, dtype=str))), list(_TRUE))
    values = [f or None for f in fields]
    if column.type == "string":
        return np.array(values, dtype=object)
    return _datetimes(column, values)


def _parse_numbers(text: Array, column: Column | None = None) -> Array:
    """ASCII decimal text to float64; empty fields become NaN (null), ``-0`` becomes ``0``."""
    flat = "".join(text.ravel().tolist())
    name = column.name if column else None
    if not flat.isascii() or "_" in flat:
        raise BadRequest(
            f"column {name!r}: numbers must use ASCII digits 0-9 (no other scripts, no '_')",
            column=name,
            code="wrong_type",
        )
    empty = text == ""
    if empty.any():
        text = np.where(empty, "nan", text)
    try:
        numbers = text.astype(np.float64) + 0.0
    except ValueError as exc:
        raise BadRequest(
            f"column {name!r}: not a number ({exc}); send a decimal number",
            column=name,
            code="wrong_type",
        ) from None
    if not np.isfinite(numbers[~empty]).all():
        raise BadRequest(
            f"column {name!r}: NaN and infinity are not accepted; leave the field "
            "empty for a missing value",
            column=name,
            code="not_finite",
        )
    return numbers


def _check_numbers(column: Column, array: Array) -> Array:
    nulls = np.isnan(array)
    if np.isinf(array).any():
        raise _non_finite(column)
    if not column.nullable and nulls.any():
        raise _null(column)
    if column.type == "long" and not (nulls | (array == np.floor(array))).all():
        raise BadRequest(
            f"column {column.name!r} takes whole numbers; round the values",
            column=column.name,
            code="wrong_type",
        )
    return array


def _datetimes(column: Column, values: list[str | None]) -> Array:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.array(values, dtype="datetime64[us]")
    except ValueError:
        raise BadRequest(
            f"column {column.name!r}: expected ISO 8601 date-times such as 2024-05-01T12:00:00",
            column=column.name,
            code="wrong_type",
        ) from None


def _wrong_type(column: Column, kinds: set[type], expected: str) -> BadRequest:
    got = ", ".join(sorted({_JSON_TYPE.get(k, k.__name__) for k in kinds}))
    return BadRequest(
        f"column {column.name!r} ({column.type}) takes {expected}; got {got}",
        column=column.name,
        code="wrong_type",
    )


def _null(column: Column) -> BadRequest:
    return BadRequest(
        f"column {column.name!r} may not be null or missing; send a value",
        column=column.name,
        code="null_value",
    )


def _non_finite(column: Column) -> BadRequest:
    return BadRequest(
        f"column {column.name!r}: the number is too large (infinite); send a finite number",
        column=column.name,
        code="not_finite",
    )
