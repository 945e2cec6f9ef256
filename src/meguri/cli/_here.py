"""The workspace of the folder a command runs in: one place for every CLI module.

``meguri.store`` is imported when a command runs, not when the CLI starts, so that
``meguri --help`` and the light commands stay quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meguri.store import Workspace

__all__ = ["workspace", "workspace_session"]


def workspace() -> Workspace:
    """The workspace here (the caller closes it, or the process ends)."""
    from meguri.store import open_workspace

    return open_workspace()


@contextmanager
def workspace_session() -> Iterator[Workspace]:
    """The workspace here, closed when the block ends."""
    ws = workspace()
    try:
        yield ws
    finally:
        ws.close()
