"""A private folder in memory (tmpfs), and anonymous in-memory files, for plaintext that must
not reach the disk.

With encryption at rest on, a model package still has to exist as files for the processes
that serve it (workers read a folder), but those files must not land in the workspace in
clear. They go to a memory-backed filesystem instead: ``/dev/shm`` (every Linux has it), else
``$XDG_RUNTIME_DIR`` when it is a tmpfs. Their content is gone at reboot or on
``rm -r /dev/shm/meguri-$UID``; it can reach the disk only through swap, which the operating
system encrypts or not (that is its setting, not ours).

``/dev/shm`` is shared by every user, so the folder ``meguri-<uid>`` is created with mode 700
and, if it already exists, accepted only when it is a real folder (not a link), owned by this
user and closed to others: another user who created it first could otherwise read what we
write or swap in files of their own.

:func:`memory_file` is an anonymous in-memory file (Linux ``memfd_create``), reached by the path
``/proc/self/fd/N`` that libraries (Polars, a child process given the descriptor) open like any
other: it has no name in any filesystem and is freed once closed, also when the process dies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from meguri.errors import ConfigError

__all__ = ["memory_cache_folder", "memory_file", "memory_files_available"]

_MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def memory_cache_folder(workspace_root: Path) -> Path:
    """This user's private in-memory folder for the workspace at ``workspace_root``."""
    base = _memory_base()
    top = base / f"meguri-{os.getuid()}"
    _ensure_private(top)
    folder = top / hashlib.sha256(str(workspace_root).encode()).hexdigest()[:16]
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _memory_base() -> Path:
    mounts = _mounts()
    candidates = [Path("/dev/shm")]
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(runtime))
    for candidate in candidates:
        if candidate.is_dir() and _filesystem(candidate, mounts) in _MEMORY_FILESYSTEMS:
            return candidate
    raise ConfigError(
        "Encryption at rest is on, so model packages are unpacked only in memory, but no "
        "memory-backed folder was found (/dev/shm or $XDG_RUNTIME_DIR on a tmpfs). Mount a "
        "tmpfs at /dev/shm, or turn encryption off for this workspace."
    )


def _mounts() -> dict[str, str]:
    """Mount point → filesystem type, from ``/proc/self/mounts`` (empty where there is none)."""
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    table: dict[str, str] = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            table[fields[1].replace("\\040", " ")] = fields[2]
    return table


def _filesystem(path: Path, mounts: dict[str, str]) -> str | None:
    """The type of the filesystem ``path`` is on: that of its deepest mount point."""
    here = path.resolve()
    for folder in (here, *here.parents):
        if str(folder) in mounts:
            return mounts[str(folder)]
    return None


def _ensure_private(folder: Path) -> None:
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = os.lstat(folder)
    if (
        not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        raise ConfigError(
            f"{folder} is not a private folder of this user (a link, another owner, or open to "
            "others), so decrypted model packages cannot be kept there. Remove it (it is "
            "only a cache) and try again."
        )


def memory_files_available() -> bool:
    """Whether :func:`memory_file` works here (Linux with ``/proc``)."""
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


@contextlib.contextmanager
def memory_file(name: str) -> Iterator[tuple[Path, int]]:
    """An anonymous in-memory file: its path ``/proc/self/fd/N`` and descriptor ``N``
    (close-on-exec: a child process gets it only through ``pass_fds``); closed, hence freed,
    on exit. Check :func:`memory_files_available` first."""
    fd = os.memfd_create(f"meguri-{name}", os.MFD_CLOEXEC)
    try:
        yield Path(f"/proc/self/fd/{fd}"), fd
    finally:
        os.close(fd)
