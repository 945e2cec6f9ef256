"""The artifact store in a local folder (the default).

A write goes to a unique ``.tmp-…`` file in the object's own folder, is fsynced, then renamed
into place with ``os.replace``: readers see the whole object or nothing, and a writer killed
half-way (even by SIGKILL) leaves only the dot-named temp file, invisible to the store and
removed by ``gc_temp``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from meguri.errors import ArtifactError, ConfigError, MeguriError
from meguri.store.artifacts._atomic import atomic_write
from meguri.store.artifacts._base import StoredArtifact
from meguri.store.artifacts._digest import hash_file
from meguri.store.artifacts._fsspec import FsspecArtifactStore

_FIX = "or set MEGURI_ARTIFACTS_URL to a folder this user can write"


class LocalArtifactStore(FsspecArtifactStore):
    """Artifacts under a local folder, read through fsspec's local filesystem."""

    def __init__(self, folder: Path) -> None:
        from fsspec.implementations.local import LocalFileSystem

        super().__init__(LocalFileSystem(), str(folder), str(folder))
        self.folder = folder

    def _write(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        atomic_write(Path(path), chunks, durable=True)

    def scratch(self) -> Path:
        """A folder on the store's own disk for files about to be taken by :meth:`take_file`
        (dot-named: never an artifact, cleared by ``gc_temp``)."""
        folder = self.folder / ".tmp-scratch"
        folder.mkdir(exist_ok=True)
        return folder

    def gc_temp(self, older_than_s: float = 86_400.0) -> int:
        """Also clears scratch files left by writers that were killed."""
        import shutil
        import time

        removed = super().gc_temp(older_than_s)
        scratch = self.folder / ".tmp-scratch"
        cutoff = time.time() - older_than_s
        for entry in scratch.iterdir() if scratch.is_dir() else ():
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                removed += 1
        return removed

    def take_file(self, path: str | Path, *, sha256: str | None = None) -> StoredArtifact:
        """Store the file at ``path`` by renaming it into place (hashed once, no copy); the
        caller gives the file up. Falls back to a copy across disks. ``sha256``: the digest of
        the file's bytes as this process wrote them (hashed on their way to the file), which
        saves reading the file again; the caller vouches for it."""
        source = Path(path)
        if source.stat().st_dev != self.folder.stat().st_dev:
            return self.put_file(source)
        if sha256 is None:
            digest, size = hash_file(source)
        else:
            digest, size = sha256, source.stat().st_size
        target = Path(self.object_path(digest))
        with self._translated(f"store sha256:{digest}"):
            if self._stored_size(str(target)) == size:
                source.unlink()  # identical content is already stored
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                _fsync(source)
                os.replace(source, target)
                _fsync(target.parent)
        return StoredArtifact(digest, size)

    def _translate(self, exc: BaseException, action: str) -> MeguriError:
        if isinstance(exc, PermissionError):
            return ConfigError(
                f"Cannot {action} in the artifact folder {self.folder}: permission denied on "
                f"{exc.filename or self.folder}. Give this user read and write access to the "
                f"folder (chown/chmod), {_FIX}."
            )
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return ArtifactError(
                f"Cannot {action} in the artifact folder {self.folder}: the disk is full. "
                f"Free some space, {_FIX} on another disk."
            )
        return super()._translate(exc, action)

    def _where(self, path: str) -> str:
        return path


def open_local(location: str) -> LocalArtifactStore:
    """The store in the folder ``location`` (created if missing); ConfigError if it cannot be."""
    folder = Path(os.path.abspath(os.path.expanduser(location)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise ConfigError(
            f"Cannot create the artifact folder {folder}: permission denied. Create it with "
            f"write access for this user, {_FIX}."
        ) from exc
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(
            f"The artifact folder {folder} cannot be created: a file is in the way "
            f"({exc.filename or folder}). Move that file, {_FIX}."
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the artifact folder {folder}: {exc.strerror or exc}. Fix the path, "
            f"{_FIX}."
        ) from exc
    return LocalArtifactStore(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
