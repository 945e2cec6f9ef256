"""A fitted transform as one ONNX graph, when every step converts exactly.

::

    graph = transform_to_onnx(fitted)          # onnx.ModelProto, or None
    feeds = graph_inputs(fitted)               # which column goes into which graph input

Graph inputs (see :class:`GraphInputs`)::

    "input"        float64 [N, k]  the numeric input columns, in ``fitted.input_schema`` order,
                                   null as NaN
    "nulls"        bool    [N, t]  one column per text input column (same order): null or not
    "text:<name>"  string  [N, 1]  one per text input column, null as "" (``nulls`` tells)

Output ``"features"``: float64 [N, m], the m columns of ``fitted.output_schema`` in order.

The graph works on the whole matrix at once (a handful of nodes per step, whatever the number
of columns), so one row costs a few microseconds in ONNX Runtime. A step acting on some columns
acts on all with neutral values elsewhere: fill NaN with NaN, clip to ``[-inf, inf]``, scale by
``(x - 0) * 1``; each is exact in IEEE arithmetic, so the graph gives the same float64 values
as :meth:`FittedTransform.apply` (null ↔ NaN). Text columns go through ``LabelEncoder``
(``ai.onnx.ml``): the category's index, or a default for unseen values, with nulls masked to
what Polars gives them (no category for ``one_hot``, ``unseen`` for ``ordinal``, the prior for
``target_encode``).

Converted: ``impute`` (mean, median, a constant or the mode, on numeric or text columns; with
``indicator``), ``clip``, ``scale`` (standard, minmax, robust), ``ratio``, ``bin``, ``select``,
``drop``, ``one_hot``, ``ordinal`` and ``target_encode`` on text columns, and the training-only
row filters (``drop_missing``, ``zscore_filter``, ``filter``, which serving skips). Anything
else (expressions, dates, text lengths, SQL, encoders of integer codes), or an input column
neither numeric nor text, gives ``None``: the transform then runs on Polars.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto, helper, numpy_helper

from meguri.data._steps_base import parse_dtype
from meguri.data._transform import FittedStep, FittedTransform

__all__ = [
    "INPUT",
    "ML_OPSET",
    "NULLS",
    "OPSET",
    "OUTPUT",
    "TEXT",
    "GraphInputs",
    "graph_inputs",
    "transform_to_onnx",
]

INPUT = "input"
NULLS = "nulls"
TEXT = "text:"
OUTPUT = "features"
OPSET = 17
ML_OPSET = 3
_ML = "ai.onnx.ml"
_ROWS_ONLY = frozenset({"drop_missing", "zscore_filter", "filter"})


class _Unsupported(Exception):
    """A step (or a detail of one) with no exact ONNX form."""


@dataclass(frozen=True)
class GraphInputs:
    """Which input columns feed which graph input (see the module docstring)."""

    numeric: tuple[str, ...]
    text: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """For ``model.json``: ``{"numeric": [...], "nulls": "nulls" or None,
        "text": {column: graph input}}``; the numeric matrix is the entry's ``input``."""
        return {
            "numeric": list(self.numeric),
            "nulls": NULLS if self.text else None,
            "text": {column: f"{TEXT}{column}" for column in self.text},
        }


def graph_inputs(fitted: FittedTransform) -> GraphInputs | None:
    """The graph inputs of ``fitted``'s input columns, or ``None`` when one is neither numeric
    nor text."""
    numeric, text = [], []
    for column, type_text in fitted.input_schema.items():
        dtype = parse_dtype(type_text)
        if dtype == pl.String:
            text.append(column)
        elif dtype is not None and dtype.is_numeric():
            numeric.append(column)
        else:
            return None
    return GraphInputs(tuple(numeric), tuple(text))


@dataclass
class _Text:
    """A text column in the graph: its ``[N, 1]`` string tensor and null mask (``None``: no
    nulls, as after imputing)."""

    values: str
    null: str | None


@dataclass
class _Graph:
    """The graph under construction: its nodes and constants, the current numeric matrix and
    the text columns beside it."""

    columns: list[str]
    matrix: str = INPUT
    texts: dict[str, _Text] = field(default_factory=dict)
    nodes: list[NodeProto] = field(default_factory=list)
    constants: list[TensorProto] = field(default_factory=list)
    ml: bool = False
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def name(self, hint: str) -> str:
        return f"{hint}_{next(self._ids)}"

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        name = self.name("c")
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def row(self, values: dict[str, float], neutral: float) -> str:
        """A ``[k]`` constant: ``values`` at their columns, ``neutral`` elsewhere."""
        return self.const([values.get(c, neutral) for c in self.columns])

    def index(self, names: Sequence[str]) -> list[int]:
        try:
            return [self.columns.index(n) for n in names]
        except ValueError as exc:
            raise _Unsupported(str(exc)) from exc

    def gather(self, names: Sequence[str], matrix: str | None = None) -> str:
        indices = self.const(self.index(names), np.int64)
        return self.op("Gather", matrix or self.matrix, indices, axis=1)

    def keep(self, names: Sequence[str]) -> None:
        if list(names) != self.columns:
            self.matrix = self.gather(names)
            self.columns = list(names)

    def forget(self, names: set[str]) -> None:
        """Drop columns ``names``, numeric or text."""
        self.keep([c for c in self.columns if c not in names])
        self.texts = {c: t for c, t in self.texts.items() if c not in names}

    def append(self, names: Sequence[str], block: str) -> None:
        """New columns ``names`` (the ``[N, len(names)]`` tensor ``block``) at the end."""
        if any(n in self.columns or n in self.texts for n in names):
            raise _Unsupported(f"a new column replaces one of {names}")
        self.matrix = self.op("Concat", self.matrix, block, axis=1)
        self.columns = [*self.columns, *names]

    def replace(self, blocks: dict[str, str]) -> None:
        """Columns replaced in place by ``[N, 1]`` tensors: appended, then gathered back."""
        width = len(self.columns)
        slot = {name: width + j for j, name in enumerate(blocks)}
        order = [slot.get(c, i) for i, c in enumerate(self.columns)]
        wide = self.op("Concat", self.matrix, *blocks.values(), axis=1)
        self.matrix = self.op("Gather", wide, self.const(order, np.int64), axis=1)

    def text(self, column: str) -> _Text:
        found = self.texts.get(column)
        if found is None:  # integer codes, booleans: compared as Polars' text casts
            raise _Unsupported(f"{column!r} is not a text column")
        return found

    def codes(self, column: str, keys: Sequence[str], default: int, null: int | None = None) -> str:
        """``[N, 1]`` int64: the index of each value of text ``column`` in ``keys``,
        ``default`` where it is unseen, ``null`` (default: ``default``) where it is null."""
        if not keys:
            raise _Unsupported(f"{column!r} has no categories")
        text = self.text(column)
        index = self.op(
            "LabelEncoder",
            text.values,
            domain=_ML,
            keys_strings=list(keys),
            values_int64s=list(range(len(keys))),
            default_int64=default,
        )
        self.ml = True
        if text.null is None:
            return index
        code = self.const([default if null is None else null], np.int64)
        return self.op("Where", text.null, code, index)

    def numeric_from_text(self, column: str, block: str) -> None:
        """Text ``column`` becomes the numeric ``[N, 1]`` tensor ``block`` (same name)."""
        del self.texts[column]
        self.append([column], block)


def transform_to_onnx(fitted: FittedTransform) -> ModelProto | None:
    """``fitted`` as an ONNX model (see the module docstring), or ``None`` when a step or an
    input column has no exact ONNX form."""
    inputs = graph_inputs(fitted)
    if inputs is None:
        return None
    graph = _Graph(list(inputs.numeric))
    for j, column in enumerate(inputs.text):
        null = graph.op("Gather", NULLS, graph.const([j], np.int64), axis=1)
        graph.texts[column] = _Text(f"{TEXT}{column}", null)
    try:
        for step in fitted.steps:
            _convert(graph, step)
        graph.keep(list(fitted.output_schema))
    except _Unsupported:
        return None
    return _model(graph, inputs, len(fitted.output_schema))


def _convert(graph: _Graph, step: FittedStep) -> None:
    if step.kind in _ROWS_ONLY:
        return
    converter = _CONVERTERS.get(step.kind)
    if converter is None:
        raise _Unsupported(step.kind)
    converter(graph, step.learned)


def _model(graph: _Graph, inputs: GraphInputs, outputs: int) -> ModelProto:
    if graph.matrix == INPUT:  # an identity transform still needs one node
        graph.matrix = graph.op("Identity", INPUT)
    graph.nodes.append(helper.make_node("Identity", [graph.matrix], [OUTPUT]))
    body = helper.make_graph(
        graph.nodes,
        "meguri_transform",
        _inputs(inputs),
        [helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, ["N", outputs])],
        initializer=graph.constants,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    if graph.ml:
        opsets.append(helper.make_opsetid(_ML, ML_OPSET))
    model = helper.make_model(body, opset_imports=opsets)
    model.ir_version = 8
    return model


def _inputs(inputs: GraphInputs) -> list[ValueInfoProto]:
    info = helper.make_tensor_value_info
    found = [info(INPUT, TensorProto.DOUBLE, ["N", len(inputs.numeric)])]
    if inputs.text:
        found.append(info(NULLS, TensorProto.BOOL, ["N", len(inputs.text)]))
    found += [info(f"{TEXT}{c}", TensorProto.STRING, ["N", 1]) for c in inputs.text]
    return found


# -- steps ------------------------------------------------------------------------------------


def _impute(graph: _Graph, learned: dict[str, Any]) -> None:
    values: dict[str, Any] = learned["values"]
    texts = {c: v for c, v in values.items() if c in graph.texts}
    numbers = {c: v for c, v in values.items() if c not in texts}
    if not all(_plain_number(v) for v in numbers.values()):
        raise _Unsupported("a non-numeric fill value of a numeric column")
    if not all(isinstance(v, str) for v in texts.values()):
        raise _Unsupported("a non-text fill value of a text column")
    if learned["indicator"]:
        _indicators(graph, list(values))
    for column, value in texts.items():
        _fill_text(graph, column, value)
    if numbers:
        fill = graph.row({c: float(v) for c, v in numbers.items()}, np.nan)
        graph.matrix = graph.op("Where", graph.op("IsNaN", graph.matrix), fill, graph.matrix)


def _indicators(graph: _Graph, columns: list[str]) -> None:
    """``<column>_missing``: 1.0 where the column is null (NaN for numeric ones)."""
    for column in columns:
        if column in graph.texts:
            null = graph.texts[column].null
            values = graph.texts[column].values  # imputed already: never null
            missing = null or graph.op("Not", graph.op("Equal", values, values))
        else:
            missing = graph.op("IsNaN", graph.gather([column]))
        graph.append([f"{column}_missing"], graph.op("Cast", missing, to=_DOUBLE))


def _fill_text(graph: _Graph, column: str, value: str) -> None:
    text = graph.texts[column]
    if text.null is not None:
        fill = graph.const([[value]], object)
        graph.texts[column] = _Text(graph.op("Where", text.null, fill, text.values), None)


def _plain_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _clip(graph: _Graph, learned: dict[str, Any]) -> None:
    bounds: dict[str, list[float]] = learned["bounds"]
    low = graph.row({c: b[0] for c, b in bounds.items()}, -np.inf)
    high = graph.row({c: b[1] for c, b in bounds.items()}, np.inf)
    x = graph.matrix
    upper = graph.op("Where", graph.op("Greater", x, high), high, x)
    graph.matrix = graph.op("Where", graph.op("Less", x, low), low, upper)


def _scale(graph: _Graph, learned: dict[str, Any]) -> None:
    stats: dict[str, list[float]] = learned["stats"]
    center = graph.row({c: s[0] for c, s in stats.items()}, 0.0)
    # Polars divides by a literal as a product with its reciprocal: so does the graph
    inverse = graph.row({c: 1.0 / s[1] for c, s in stats.items()}, 1.0)
    graph.matrix = graph.op("Mul", graph.op("Sub", graph.matrix, center), inverse)


def _ratio(graph: _Graph, learned: dict[str, Any]) -> None:
    top = graph.gather([learned["numerator"]])
    below = graph.gather([learned["denominator"]])
    zero = graph.op("Equal", below, graph.const(0.0))
    value = graph.op("Where", zero, graph.const(np.nan), graph.op("Div", top, below))
    graph.append([learned["name"]], value)


def _bin(graph: _Graph, learned: dict[str, Any]) -> None:
    edges: dict[str, list[float]] = learned["edges"]
    graph.replace({column: _bin_column(graph, column, e[1:-1]) for column, e in edges.items()})


def _bin_column(graph: _Graph, column: str, inner: list[float]) -> str:
    """``sum(x >= edge)`` over the inner edges, NaN where ``x`` is NaN: ``[N, 1]``."""
    x = graph.gather([column])
    if inner:
        above = graph.op("Cast", graph.op("GreaterOrEqual", x, graph.const(inner)), to=_DOUBLE)
        total = graph.op("ReduceSum", above, graph.const([1], np.int64))
    else:
        total = graph.const(0.0)
    return graph.op("Where", graph.op("IsNaN", x), graph.const(np.nan), total)


def _select(graph: _Graph, learned: dict[str, Any]) -> None:
    graph.forget(set(learned["dropped"]))


def _drop(graph: _Graph, learned: dict[str, Any]) -> None:
    graph.forget(set(learned["columns"]))


# -- encoders of text columns -----------------------------------------------------------------


def _one_hot(graph: _Graph, learned: dict[str, Any]) -> None:
    encoded: dict[str, dict[str, Any]] = learned["columns"]
    for column, spec in encoded.items():
        categories: list[str] = spec["categories"]
        codes = graph.codes(column, categories, -1, null=-2)  # null: not other
        hits = graph.op("Equal", codes, graph.const(np.arange(len(categories)), np.int64))
        names = [f"{column}_{category}" for category in categories]
        if spec["other"]:
            hits = graph.op(
                "Concat", hits, graph.op("Equal", codes, graph.const([-1], np.int64)), axis=1
            )
            names.append(f"{column}_other")
        graph.append(names, graph.op("Cast", hits, to=_DOUBLE))
    if learned["drop_original"]:
        graph.forget(set(encoded))


def _ordinal(graph: _Graph, learned: dict[str, Any]) -> None:
    unseen: int = learned["unseen"]
    for column, order in learned["categories"].items():
        codes = graph.codes(column, order, unseen)
        graph.numeric_from_text(column, graph.op("Cast", codes, to=_DOUBLE))


def _target_encode(graph: _Graph, learned: dict[str, Any]) -> None:
    prior: float = learned["prior"]
    for column, spec in learned["columns"].items():
        categories: list[str] = spec["categories"]
        means = [np.nan if m is None else m for m in spec["means"]]
        codes = graph.codes(column, categories, len(categories))
        table = graph.const([*means, prior])
        graph.numeric_from_text(column, graph.op("Gather", table, codes, axis=0))


_DOUBLE = TensorProto.DOUBLE
_CONVERTERS: dict[str, Callable[[_Graph, dict[str, Any]], None]] = {
    "impute": _impute,
    "clip": _clip,
    "scale": _scale,
    "ratio": _ratio,
    "bin": _bin,
    "select": _select,
    "drop": _drop,
    "one_hot": _one_hot,
    "ordinal": _ordinal,
    "target_encode": _target_encode,
}
