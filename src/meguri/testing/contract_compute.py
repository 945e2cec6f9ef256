"""Contract of the executors (fixture ``engine``: a :class:`~meguri.compute.Executor`).

The functions shipped to workers live here, in an installed module, so that every worker
(another process, a Ray worker) can import them.
"""

from __future__ import annotations

import operator
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from meguri.compute import Executor

__all__ = [
    "test_map_arrow_batches_in_order",
    "test_map_arrow_empty_table",
    "test_map_keeps_order",
    "test_map_propagates_errors",
]


def double_and_tag(table: pa.Table) -> pa.Table:
    """Adds ``y = 2x`` and the size of the batch each row was in."""
    doubled = pc.multiply(table.column("x"), 2)
    sizes = pa.array([table.num_rows] * table.num_rows, pa.int64())
    return table.append_column("y", doubled).append_column("batch_rows", sizes)


def test_map_keeps_order(engine: Executor) -> None:
    assert engine.map(partial(operator.mul, 3), range(20)) == [3 * i for i in range(20)]


def test_map_propagates_errors(engine: Executor) -> None:
    with pytest.raises(ZeroDivisionError):
        engine.map(partial(operator.truediv, 1), [1, 0, 2])


def test_map_arrow_batches_in_order(engine: Executor) -> None:
    table = pa.table({"x": pa.array(range(10_000), pa.int64())})
    out = engine.map_arrow(table, double_and_tag, batch_rows=3_000)
    assert out.column("y").to_pylist() == [2 * i for i in range(10_000)]
    assert max(out.column("batch_rows").to_pylist()) <= 3_000


def test_map_arrow_empty_table(engine: Executor) -> None:
    table = pa.table({"x": pa.array([], pa.int64())})
    out = engine.map_arrow(table, double_and_tag)
    assert out.num_rows == 0
    assert out.column_names == ["x", "y", "batch_rows"]
