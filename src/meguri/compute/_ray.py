"""Distributed execution on Ray (``pip install meguri[ray]``).

Connects to ``address`` (or ``MEGURI_RAY_ADDRESS``), else starts Ray on this machine (local
mode, as the tests do). ``map`` runs one Ray task per item; ``map_arrow`` runs ``fn`` through
Ray Data's ``map_batches`` on Arrow batches, so the same step definitions that run on Polars
locally run on a Ray cluster unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from meguri.compute._base import Executor
from meguri.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")
R = TypeVar("R")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "compute: ray needs Ray installed: pip install 'meguri[ray]' (or set compute: local)."
        ) from None
    return ray


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        ray = _ray()
        self._owns = False
        if not ray.is_initialized():
            target = address or os.environ.get("MEGURI_RAY_ADDRESS")
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if target:
                options["address"] = target
            else:  # local mode: everything on loopback
                options["num_cpus"] = num_cpus or os.cpu_count() or 1
                options["_node_ip_address"] = "127.0.0.1"
            ray.init(**options)
            self._owns = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        self._ray = ray

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        task = self._ray.remote(_call)
        return list(self._ray.get([task.remote(fn, x) for x in items]))

    def map_arrow(
        self, table: pa.Table, fn: Callable[[pa.Table], pa.Table], batch_rows: int = 262_144
    ) -> pa.Table:
        import pyarrow as pa

        if table.num_rows == 0:
            return fn(table)
        dataset = self._ray.data.from_arrow(table)
        mapped = dataset.map_batches(fn, batch_format="pyarrow", batch_size=batch_rows)
        parts = self._ray.get(mapped.to_arrow_refs())
        return pa.concat_tables(parts)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False


def _call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)
