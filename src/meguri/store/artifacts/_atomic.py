"""Atomic writes of local files: a dot-named temp file in the target's folder, then os.replace."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from meguri.store.artifacts._digest import TEMP_PREFIX


def atomic_write(
    target: Path,
    chunks: Iterable[bytes],
    *,
    durable: bool,
    check: Callable[[], None] | None = None,
) -> None:
    """Write ``chunks`` to ``target`` so that it appears whole or not at all.

    The bytes go to a unique ``.tmp-…`` file in the same folder (so the rename never crosses a
    filesystem), are fsynced when ``durable``, then ``check`` runs (it may raise to abandon the
    write) and ``os.replace`` puts the file in place in one step. A writer killed before the
    rename leaves only the temp file, which no reader looks for.
    """
    created = _ensure_folder(target.parent)
    temp = target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with temp.open("xb") as out:
            for chunk in chunks:
                out.write(chunk)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        if check is not None:
            check()
        os.replace(temp, target)
    except BaseException:
        with suppress(OSError):
            temp.unlink()
        raise
    if durable:
        _fsync_folder(target.parent)
        if created:
            _fsync_folder(target.parent.parent)


def _ensure_folder(folder: Path) -> bool:
    """Create ``folder`` if missing; whether this call created it."""
    if folder.is_dir():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    return True


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
