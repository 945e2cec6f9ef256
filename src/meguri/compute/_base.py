"""The execution seam: every phase that fans work out goes through an :class:`Executor`.

Contract (checked on every executor by ``tests/test_compute.py``):

* ``map(fn, items)`` returns ``[fn(x) for x in items]`` in order; ``fn`` and the items must be
  picklable (they may run in other processes or on other machines); the first exception raised
  by ``fn`` propagates to the caller.
* ``map_arrow(table, fn, batch_rows)`` returns the concatenation, in order, of ``fn`` applied
  to consecutive row batches of ``table`` (each at most ``batch_rows`` rows). ``fn`` must be
  row-local (a batch's output depends on that batch only) and give every batch the same schema.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")
R = TypeVar("R")


class Executor(ABC):
    """Runs functions over items or over batches of an Arrow table; see the module docstring."""

    name: str

    @abstractmethod
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]``, possibly in parallel, in order."""

    @abstractmethod
    def map_arrow(
        self, table: pa.Table, fn: Callable[[pa.Table], pa.Table], batch_rows: int = 262_144
    ) -> pa.Table:
        """``fn`` over consecutive row batches of ``table``, concatenated in order."""

    def close(self) -> None:  # noqa: B027 (an optional hook: most executors hold nothing)
        """Release workers (processes, a Ray connection). Idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
