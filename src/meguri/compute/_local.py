"""Local execution: a process pool sized to the cores, BLAS/OpenMP threads capped per task."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor as _PoolExecutor
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from meguri.compute._base import Executor

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")
R = TypeVar("R")

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS")


def _cap_threads(threads: int) -> None:
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)


class LocalExecutor(Executor):
    """``map`` in a pool of ``workers`` processes (default: one per core); ``map_arrow`` runs
    in this process, batch by batch (Polars already uses every core on one batch)."""

    name = "local"

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.threads_per_worker = threads_per_worker
        self._pool: _PoolExecutor | None = None

    def _get_pool(self) -> _PoolExecutor:
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_cap_threads,
                initargs=(self.threads_per_worker,),
            )
        return self._pool

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        work = list(items)
        if len(work) <= 1 or self.workers == 1:
            return [fn(x) for x in work]
        return list(self._get_pool().map(fn, work))

    def map_arrow(
        self, table: pa.Table, fn: Callable[[pa.Table], pa.Table], batch_rows: int = 262_144
    ) -> pa.Table:
        import pyarrow as pa

        if table.num_rows <= batch_rows:
            return fn(table)
        parts = [fn(pa.Table.from_batches([b])) for b in table.to_batches(batch_rows)]
        return pa.concat_tables(parts)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
