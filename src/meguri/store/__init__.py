"""Persistence shared by every phase: the metadata store, the artifact store, the workspace."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meguri.store._workspace import (
        Workspace,
        current_user,
        default_workspace,
        find_root,
        init,
        open_workspace,
    )

__all__ = ["Workspace", "current_user", "default_workspace", "find_root", "init", "open_workspace"]


def __getattr__(name: str) -> Any:
    # Lazy: subpackages (metadata, artifacts) import without pulling in the workspace.
    if name in __all__:
        from meguri.store import _workspace

        return getattr(_workspace, name)
    raise AttributeError(f"module 'meguri.store' has no attribute {name!r}")
