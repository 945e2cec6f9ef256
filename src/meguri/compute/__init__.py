"""The execution seam: :class:`LocalExecutor` (processes) and :class:`RayExecutor` (Ray)."""

from __future__ import annotations

from typing import Literal

from meguri.compute._base import Executor
from meguri.compute._local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "executor"]


def executor(kind: Literal["local", "ray"] = "local", **options: object) -> Executor:
    """The executor for the spec's ``compute:`` setting."""
    if kind == "ray":
        from meguri.compute._ray import RayExecutor

        return RayExecutor(**options)  # type: ignore[arg-type]
    return LocalExecutor(**options)  # type: ignore[arg-type]
