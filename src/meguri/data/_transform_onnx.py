"""A fitted transform as one ONNX graph, when every step converts exactly.

::

    graph = transform_to_onnx(fitted)          # onnx.ModelProto, or None
    # input  "input":    float64 [N, k], the k input columns in ``fitted.input_schema`` order,
    #                    null as NaN
    # output "features": float64 [N, m], the m columns of ``fitted.output_schema`` in order

The graph works on the whole matrix at once (a handful of nodes per step, whatever the number
of columns), so one row costs a few microseconds in ONNX Runtime. A step acting on some columns
acts on all with neutral values elsewhere: fill NaN with NaN, clip to ``[-inf, inf]``, scale by
``(x - 0) * 1``; each is exact in IEEE arithmetic, so the graph gives the same float64 values
as :meth:`FittedTransform.apply` (null ↔ NaN).

Converted: ``impute`` (mean, median, or a numeric constant; with ``indicator``), ``clip``,
``scale`` (standard, minmax, robust), ``ratio``, ``bin``, ``select``, ``drop``, and the
training-only row filters (``drop_missing``, ``zscore_filter``, ``filter``, which serving
skips). Anything else (encoders, expressions, dates, text, SQL), or an input column that is not
numeric, gives ``None``: the transform then runs on Polars.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from meguri.data._steps_base import parse_dtype
from meguri.data._transform import FittedStep, FittedTransform

__all__ = ["INPUT", "OPSET", "OUTPUT", "transform_to_onnx"]

INPUT = "input"
OUTPUT = "features"
OPSET = 17
_ROWS_ONLY = frozenset({"drop_missing", "zscore_filter", "filter"})


class _Unsupported(Exception):
    """A step (or a detail of one) with no exact ONNX form."""


@dataclass
class _Graph:
    """The graph under construction: its nodes and constants, and the current matrix."""

    columns: list[str]
    matrix: str = INPUT
    nodes: list[NodeProto] = field(default_factory=list)
    constants: list[TensorProto] = field(default_factory=list)
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

    def append(self, names: Sequence[str], block: str) -> None:
        """New columns ``names`` (the ``[N, len(names)]`` tensor ``block``) at the end."""
        if any(n in self.columns for n in names):
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


def transform_to_onnx(fitted: FittedTransform) -> ModelProto | None:
    """``fitted`` as an ONNX model (see the module docstring), or ``None`` when a step or an
    input column has no exact ONNX form."""
    if not all(_numeric(text) for text in fitted.input_schema.values()):
        return None
    graph = _Graph(list(fitted.input_schema))
    try:
        for step in fitted.steps:
            _convert(graph, step)
        graph.keep(list(fitted.output_schema))
    except _Unsupported:
        return None
    return _model(graph, len(fitted.input_schema), len(fitted.output_schema))


def _numeric(text: str) -> bool:
    dtype = parse_dtype(text)
    return dtype is not None and dtype.is_numeric()


def _convert(graph: _Graph, step: FittedStep) -> None:
    if step.kind in _ROWS_ONLY:
        return
    converter = _CONVERTERS.get(step.kind)
    if converter is None:
        raise _Unsupported(step.kind)
    converter(graph, step.learned)


def _model(graph: _Graph, inputs: int, outputs: int) -> ModelProto:
    if graph.matrix == INPUT:  # an identity transform still needs one node
        graph.matrix = graph.op("Identity", INPUT)
    graph.nodes.append(helper.make_node("Identity", [graph.matrix], [OUTPUT]))
    body = helper.make_graph(
        graph.nodes,
        "meguri_transform",
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, ["N", inputs])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, ["N", outputs])],
        initializer=graph.constants,
    )
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


# -- steps ------------------------------------------------------------------------------------


def _impute(graph: _Graph, learned: dict[str, Any]) -> None:
    values: dict[str, Any] = learned["values"]
    if not all(_plain_number(v) for v in values.values()):
        raise _Unsupported("a non-numeric fill value")
    names = list(values)
    if learned["indicator"]:
        missing = graph.op("IsNaN", graph.gather(names))
        graph.append([f"{c}_missing" for c in names], graph.op("Cast", missing, to=_DOUBLE))
    fill = graph.row({c: float(v) for c, v in values.items()}, np.nan)
    graph.matrix = graph.op("Where", graph.op("IsNaN", graph.matrix), fill, graph.matrix)


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
    dropped = set(learned["dropped"])
    graph.keep([c for c in graph.columns if c not in dropped])


def _drop(graph: _Graph, learned: dict[str, Any]) -> None:
    dropped = set(learned["columns"])
    graph.keep([c for c in graph.columns if c not in dropped])


_DOUBLE = TensorProto.DOUBLE
_CONVERTERS: dict[str, Callable[[_Graph, dict[str, Any]], None]] = {
    "impute": _impute,
    "clip": _clip,
    "scale": _scale,
    "ratio": _ratio,
    "bin": _bin,
    "select": _select,
    "drop": _drop,
}
