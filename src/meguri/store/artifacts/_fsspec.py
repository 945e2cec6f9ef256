"""The content-addressed artifact store over fsspec, and ``open_artifact_store``.

Which backend a URL opens:

=====================================  =====================================================
URL                                    backend
=====================================  =====================================================
``/path``, ``rel/path``, ``file:///p``  a local folder (``LocalArtifactStore``): temp file in
                                        the object's folder, fsync, ``os.replace``
``s3://bucket/prefix``                 S3 through s3fs (``S3ArtifactStore``): one PUT, or a
                                        multipart upload completed at the end; the endpoint
                                        comes from ``storage_options["endpoint_url"]``, else
                                        ``MEGURI_S3_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``,
                                        ``AWS_ENDPOINT_URL``; credentials from the standard
                                        AWS chain (or ``key``/``secret`` storage options)
any other fsspec URL (``memory://``…)   this module's generic path: write a ``.tmp-…``
                                        object, then ``fs.mv`` it into place
=====================================  =====================================================

With keys (``open_artifact_store(url, keys=...)``), any of these is wrapped in an
``EncryptedArtifactStore`` that seals every object with AES-256-GCM (``_encrypted.py``).

fsspec and s3fs are imported only when a store is opened (s3fs only for ``s3://``), so
``import meguri.store.artifacts`` stays light. Errors of fsspec, the OS and botocore are
translated here into :mod:`meguri.errors`, each naming what to do.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from meguri.errors import ArtifactError, ConfigError, MeguriError, NotFoundError
from meguri.store.artifacts import _digest
from meguri.store.artifacts._atomic import atomic_write
from meguri.store.artifacts._base import ArtifactStore, StoredArtifact
from meguri.store.artifacts._keys import KEY_FILE_VARIABLE, KEY_VARIABLE, KeyRing
from meguri.store.artifacts._sealed import HEAD_BYTES as HEAD
from meguri.store.artifacts._sealed import header_key_id

__all__ = ["FsspecArtifactStore", "open_artifact_store"]

_SMALL = 4 << 20
"""Files up to this size are read once into memory; larger ones are streamed (hashed, then
copied while hashed again, so a file that changes in between is not stored)."""

_READ_BLOCK = 8 << 20
"""Read-ahead block when streaming an object out of a remote filesystem."""


class FsspecArtifactStore(ArtifactStore):
    """Artifacts under ``root`` of the fsspec filesystem ``fs`` (see ``ArtifactStore``).

    This class is the generic backend: a write goes to a dot-named temp object next to its
    final key and is moved into place with ``fs.mv`` (a rename where the filesystem has one;
    on object stores a server-side copy, which also creates the object whole). Subclasses
    replace ``_write`` with the native atomic write of their backend and ``_translate`` with
    messages for their own errors.
    """

    _boundary_errors: tuple[type[BaseException], ...] = (OSError,)
    """Third-party exceptions translated into MeguriErrors at this boundary."""

    def __init__(self, fs: Any, root: str, url: str | None = None) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url or str(fs.unstrip_protocol(self.root))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def object_path(self, digest: str) -> str:
        """Where the object of ``digest`` lives in ``fs`` (derived from the digest only)."""
        return f"{self.root}/{_digest.object_key(digest)}"

    # -- the contract -----------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> StoredArtifact:
        digest = hashlib.sha256(data).hexdigest()
        return self._store(digest, len(data), lambda: iter((data,)))

    def put_file(self, path: str | Path) -> StoredArtifact:
        source = Path(path)
        if _digest.file_size(source) <= _SMALL:
            return self.put_bytes(_digest.read_file(source))
        digest, size = _digest.hash_file(source)
        return self._store(digest, size, lambda: _digest.file_chunks(source, digest))

    def get_bytes(self, digest: str) -> bytes:
        path = self.object_path(digest)
        with self._translated(f"read sha256:{digest}"):
            try:
                data = bytes(self.fs.cat_file(path))
            except FileNotFoundError as exc:
                raise self._not_found(digest, exc) from None
        self._verify(digest, hashlib.sha256(data).hexdigest(), path, data[:HEAD])
        return data

    def get_file(self, digest: str, dest: str | Path) -> Path:
        path = self.object_path(digest)
        target = Path(dest)
        hasher = hashlib.sha256()
        with self._translated(f"read sha256:{digest}"):
            try:
                stream = self.fs.open(path, "rb", block_size=_READ_BLOCK)
            except FileNotFoundError as exc:
                raise self._not_found(digest, exc) from None
        head = bytearray()

        def check() -> None:
            self._verify(digest, hasher.hexdigest(), path, bytes(head))

        def chunks() -> Iterator[bytes]:
            for chunk in self._hashed(stream, hasher, digest):
                if len(head) < HEAD:
                    head.extend(chunk[: HEAD - len(head)])
                yield chunk

        with stream:
            try:
                atomic_write(target, chunks(), durable=False, check=check)
            except OSError as exc:
                raise ArtifactError(
                    f"Cannot write artifact sha256:{digest} to {str(target)!r}: "
                    f"{exc.strerror or exc}. Choose a destination in a writable folder."
                ) from exc
        return target

    def exists(self, digest: str) -> bool:
        path = self.object_path(digest)
        with self._translated(f"look up sha256:{digest}"):
            return bool(self.fs.exists(path))

    # -- maintenance --------------------------------------------------------------------------

    def gc_temp(self, older_than_s: float = 86_400.0) -> int:
        """Remove temp objects of writes untouched for ``older_than_s`` seconds; their count.

        Such leftovers come from writers that were killed; they are never visible as
        artifacts, this only reclaims their space. Keep ``older_than_s`` above the time a
        write can take.
        """
        cutoff = time.time() - older_than_s
        with self._translated("clean up temporary objects"):
            temps = self.fs.glob(f"{self.root}/sha256/*/{_digest.TEMP_PREFIX}*")
            return sum(self._remove_if_stale(temp, cutoff) for temp in temps)

    def _remove_if_stale(self, path: str, cutoff: float) -> bool:
        try:
            if self.fs.modified(path).timestamp() > cutoff:
                return False
            self.fs.rm_file(path)
        except FileNotFoundError:  # its writer finished or another cleaner got there first
            return False
        return True

    # -- backend hooks ------------------------------------------------------------------------

    def _write(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        """Write ``chunks`` (``size`` bytes in all) to ``path`` atomically."""
        folder = path.rpartition("/")[0]
        temp = f"{folder}/{_digest.TEMP_PREFIX}{uuid.uuid4().hex}"
        self.fs.makedirs(folder, exist_ok=True)
        try:
            with self.fs.open(temp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            self.fs.mv(temp, path)
        except BaseException:
            with suppress(*self._boundary_errors):
                self.fs.rm_file(temp)
            raise

    def _translate(self, exc: BaseException, action: str) -> MeguriError:
        """The MeguriError that replaces ``exc``, raised while trying to ``action``."""
        return ArtifactError(
            f"Could not {action} in the artifact store {self.url}: {exc}. Check that the "
            "store is reachable and writable, or point MEGURI_ARTIFACTS_URL elsewhere."
        )

    def _not_found(self, digest: str, exc: FileNotFoundError) -> MeguriError:
        """The error for reading a digest whose object is missing."""
        return NotFoundError(
            f"No artifact sha256:{digest} in {self.url}. It was never stored there, or the "
            "store has moved: check MEGURI_ARTIFACTS_URL, or log the artifact again."
        )

    def _where(self, path: str) -> str:
        """``path`` as a person would look it up (with its protocol)."""
        return str(self.fs.unstrip_protocol(path))

    # -- internals ----------------------------------------------------------------------------

    def _verify(self, digest: str, actual: str, path: str, head: bytes) -> None:
        """Check the content read from ``path`` (which began with ``head``) against ``digest``.

        An encrypted object read by a store without keys hashes to something else; saying it
        is corrupted would send its owner restoring backups, so say what it is."""
        if actual != digest and (key_id := header_key_id(head)) is not None:
            raise ConfigError(
                f"Artifact sha256:{digest} is encrypted (with the key {key_id!r}) but no "
                f"encryption key is configured: set {KEY_FILE_VARIABLE} to the key file (or "
                f"{KEY_VARIABLE} to the key) this store was written with."
            )
        _digest.verify(digest, actual, self._where(path))

    def _store(
        self, digest: str, size: int, chunks: Callable[[], Iterator[bytes]]
    ) -> StoredArtifact:
        path = self.object_path(digest)
        with self._translated(f"store sha256:{digest}"):
            if self._stored_size(path) != size:  # absent, or truncated: (re)write it
                self._write(path, chunks(), size)
        return StoredArtifact(digest, size)

    def _stored_size(self, path: str) -> int | None:
        try:
            return int(self.fs.info(path)["size"])
        except FileNotFoundError:
            return None

    def _hashed(self, stream: BinaryIO, hasher: Any, digest: str) -> Iterator[bytes]:
        while True:
            with self._translated(f"read sha256:{digest}"):
                chunk = stream.read(_digest.CHUNK)
            if not chunk:
                return
            hasher.update(chunk)
            yield chunk

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except self._boundary_errors as exc:
            raise self._translate(exc, action) from exc


def open_artifact_store(
    url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    keys: KeyRing | None = None,
) -> ArtifactStore:
    """Open the artifact store at ``url`` (a folder, ``file://``, ``s3://`` or fsspec URL).

    ``storage_options`` go to the fsspec filesystem of a remote URL (for S3: ``endpoint_url``,
    ``key``, ``secret``, ``client_kwargs``, ``config_kwargs``...). With ``keys`` every object
    is encrypted at rest (:class:`~meguri.store.artifacts.EncryptedArtifactStore`; the keys
    come from :func:`~meguri.store.artifacts.load_key_ring`). Raises ConfigError for a URL
    that cannot be opened, naming the fix.
    """
    store = _open_plain(url, dict(storage_options or {}))
    if keys is None:
        return store
    from meguri.store.artifacts._encrypted import EncryptedArtifactStore

    return EncryptedArtifactStore(store, keys)


def _open_plain(url: str, options: dict[str, Any]) -> FsspecArtifactStore:
    if not url:
        raise ConfigError(
            "The artifact store URL is empty: set MEGURI_ARTIFACTS_URL to a "
            "folder or an s3://bucket/prefix URL."
        )
    scheme, sep, rest = url.partition("://")
    if not sep or scheme in ("file", "local"):
        from meguri.store.artifacts._local import open_local

        if options:
            raise ConfigError(
                f"storage_options {sorted(options)} apply to remote artifact "
                f"stores only; drop them for the local folder {url!r}."
            )
        return open_local(rest if sep else url)
    if scheme in ("s3", "s3a"):
        from meguri.store.artifacts._s3 import open_s3

        return open_s3(rest, options)
    return _open_generic(url, options)


def _open_generic(url: str, options: dict[str, Any]) -> FsspecArtifactStore:
    import fsspec.core

    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise ConfigError(
            f"The artifact store URL {url!r} needs a package that is not installed: {exc}."
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"Cannot open the artifact store URL {url!r}: {exc}. Use a folder, "
            "file:///path, s3://bucket/prefix or another fsspec URL."
        ) from exc
    return FsspecArtifactStore(fs, str(root), url)
