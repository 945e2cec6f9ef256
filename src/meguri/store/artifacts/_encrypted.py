"""Encryption at rest: a wrapper that seals every object another artifact store writes.

``EncryptedArtifactStore(inner, keys)`` keeps the inner store's layout, atomic write
(``os.replace`` locally, one PUT or a completed multipart upload on S3, ``fs.mv`` elsewhere)
and error messages; it changes only the bytes: objects are sealed with the ring's current key
(see :mod:`meguri.store.artifacts._sealed`) and opened with whichever key their header names.
Being a wrapper, not a subclass of the local store, it never hands out an object's path for
reading in place: readers get plaintext in memory (``get_bytes``) or in a file they chose
(``get_file``).

The address of an object stays the sha256 of its plaintext: identical content is stored once,
and every read is checked against the address after decryption.

Objects written before encryption was turned on (plaintext) stay readable, checked against
their sha256 as before; :meth:`EncryptedArtifactStore.reencrypt` (``meguri keys rotate``)
seals them, and re-seals objects under older keys with the current one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from meguri.errors import ArtifactCorruptedError, ArtifactError, ConfigError, MeguriError
from meguri.store.artifacts import _digest, _sealed
from meguri.store.artifacts._atomic import atomic_write
from meguri.store.artifacts._base import StoredArtifact
from meguri.store.artifacts._fsspec import FsspecArtifactStore
from meguri.store.artifacts._keys import KeyRing

__all__ = ["EncryptedArtifactStore", "RotationReport"]

_OBJECT = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{62})")
_READ_BLOCK = 8 << 20


@dataclass
class RotationReport:
    """What :meth:`EncryptedArtifactStore.reencrypt` did, object by object."""

    key_id: str
    """The current key every object is now sealed with."""
    current: int = 0
    """Objects already sealed with it (left as they were)."""
    resealed: int = 0
    """Objects sealed with an older key, now sealed with the current one."""
    encrypted: int = 0
    """Plaintext objects (written before encryption was on), now sealed."""
    failed: dict[str, str] = field(default_factory=dict)
    """Digest → why it could not be redone (left as it was)."""

    @property
    def done(self) -> bool:
        """Whether every object is now sealed with the current key."""
        return not self.failed


class EncryptedArtifactStore(FsspecArtifactStore):
    """Objects of ``inner`` sealed with ``keys`` (see the module docstring)."""

    encrypts_at_rest = True

    def __init__(self, inner: FsspecArtifactStore, keys: KeyRing) -> None:
        super().__init__(inner.fs, inner.root, inner.url)
        self.inner = inner
        self.keys = keys
        self._boundary_errors = inner._boundary_errors

    def __repr__(self) -> str:
        return f"EncryptedArtifactStore({self.url!r}, key={self.keys.current.id!r})"

    # -- the contract -----------------------------------------------------------------------

    def get_bytes(self, digest: str) -> bytes:
        path = self.object_path(digest)
        with self._translated(f"read sha256:{digest}"):
            try:
                raw = bytes(self.fs.cat_file(path))
            except FileNotFoundError as exc:
                raise self._not_found(digest, exc) from None
        try:
            data = _sealed.unseal_bytes(raw, digest, self.keys)
        except _sealed.NotSealed:
            data = raw  # written before encryption was on: checked by its sha256 below
        except (_sealed.Tampered, _sealed.UnknownKey) as exc:
            if hashlib.sha256(raw).hexdigest() != digest:
                raise self._unreadable(digest, path, exc) from None
            data = raw  # plaintext that merely looks sealed
        _digest.verify(digest, hashlib.sha256(data).hexdigest(), self._where(path))
        return data

    def get_file(self, digest: str, dest: str | Path) -> Path:
        path = self.object_path(digest)
        target = Path(dest)
        hasher = hashlib.sha256()

        def check() -> None:
            _digest.verify(digest, hasher.hexdigest(), self._where(path))

        try:
            with self._open(digest, path) as stream:
                chunks = self._hashed_plain(stream, digest, hasher)
                atomic_write(target, chunks, durable=False, check=check)
        except (_sealed.Tampered, _sealed.UnknownKey) as exc:
            if self._raw_digest(digest, path) != digest:
                raise self._unreadable(digest, path, exc) from None
            return super().get_file(digest, target)  # plaintext that merely looks sealed
        except OSError as exc:
            raise ArtifactError(
                f"Cannot write artifact sha256:{digest} to {str(target)!r}: "
                f"{exc.strerror or exc}. Choose a destination in a writable folder."
            ) from exc
        return target

    def gc_temp(self, older_than_s: float = 86_400.0) -> int:
        return self.inner.gc_temp(older_than_s)

    # -- keys -------------------------------------------------------------------------------

    def key_of(self, digest: str) -> str | None:
        """The id of the key that sealed ``digest``'s object; None for a plaintext one."""
        path = self.object_path(digest)
        with self._translated(f"read sha256:{digest}"):
            try:
                with self.fs.open(path, "rb") as stream:
                    head = stream.read(_sealed.HEAD_BYTES)
            except FileNotFoundError as exc:
                raise self._not_found(digest, exc) from None
        return _sealed.header_key_id(head)

    def digests(self) -> Iterator[str]:
        """The digest of every complete object in the store (temp objects left out)."""
        with self._translated("list the stored objects"):
            paths = self.fs.find(f"{self.root}/sha256")
        prefix = f"{self.root}/"
        for path in paths:
            match = _OBJECT.fullmatch(str(path).removeprefix(prefix))
            if match:
                yield match.group(1) + match.group(2)

    def reencrypt(self, on_object: Callable[[str], None] | None = None) -> RotationReport:
        """Seal every object with the current key, one atomic rewrite per object.

        Objects already sealed with the current key are left alone, so running it again
        after an interruption finishes the job. ``on_object(digest)`` is called after each
        object (for progress). An object that cannot be read is listed in the report's
        ``failed`` and left as it was; the others go on."""
        report = RotationReport(self.keys.current.id)
        for digest in list(self.digests()):
            try:
                outcome = self.reseal(digest)
            except MeguriError as exc:
                report.failed[digest] = str(exc)
            else:
                setattr(report, outcome, getattr(report, outcome) + 1)
            if on_object is not None:
                on_object(digest)
        return report

    def reseal(self, digest: str) -> Literal["current", "resealed", "encrypted"]:
        """Seal ``digest``'s object with the current key unless it is; what was done
        (``current``, ``resealed`` or ``encrypted``)."""
        was = self.key_of(digest)
        if was == self.keys.current.id:
            return "current"
        path = self.object_path(digest)
        try:
            self._rewrite(digest, path, raw=False)
        except (_sealed.Tampered, _sealed.UnknownKey) as exc:
            if self._raw_digest(digest, path) != digest:
                raise self._unreadable(digest, path, exc) from None
            self._rewrite(digest, path, raw=True)  # plaintext that merely looks sealed
            was = None
        return "encrypted" if was is None else "resealed"

    def _rewrite(self, digest: str, path: str, *, raw: bool) -> None:
        """Replace the object at ``path`` by its plaintext sealed with the current key."""
        with self._translated(f"read sha256:{digest}"):
            size = int(self.fs.info(path)["size"])  # near enough to size S3's parts
        hasher = hashlib.sha256()
        with self._open(digest, path) as stream:
            plain = self._hashed_plain(stream, digest, hasher, raw=raw)
            checked = _checked(plain, hasher, digest, self._where(path))
            with self._translated(f"store sha256:{digest}"):
                self.inner._write(path, _sealed.seal(checked, digest, self.keys.current), size)

    # -- internals ----------------------------------------------------------------------------

    def _store(
        self, digest: str, size: int, chunks: Callable[[], Iterator[bytes]]
    ) -> StoredArtifact:
        path = self.object_path(digest)
        key = self.keys.current
        expected = _sealed.sealed_size(size, key.id)
        with self._translated(f"store sha256:{digest}"):
            if self._stored_size(path) != expected:  # absent, truncated or plaintext: (re)write
                self.inner._write(path, _sealed.seal(chunks(), digest, key), expected)
        return StoredArtifact(digest, size)

    def _open(self, digest: str, path: str) -> BinaryIO:
        with self._translated(f"read sha256:{digest}"):
            try:
                stream: BinaryIO = self.fs.open(path, "rb", block_size=_READ_BLOCK)
            except FileNotFoundError as exc:
                raise self._not_found(digest, exc) from None
        return stream

    def _hashed_plain(
        self, stream: BinaryIO, digest: str, hasher: Any, *, raw: bool = False
    ) -> Iterator[bytes]:
        """The plaintext of ``stream`` (sealed or not; ``raw``: taken as plaintext whatever
        it looks like), fed to ``hasher`` as it goes."""

        def read(size: int) -> bytes:
            with self._translated(f"read sha256:{digest}"):
                return bytes(stream.read(size))

        if raw:
            yield from self._hashed(stream, hasher, digest)
            return
        try:
            for chunk in _sealed.unseal(read, digest, self.keys):
                hasher.update(chunk)
                yield chunk
        except _sealed.NotSealed as plain:
            hasher.update(plain.prefix)
            yield plain.prefix
            yield from self._hashed(stream, hasher, digest)

    def _raw_digest(self, digest: str, path: str) -> str:
        with self._translated(f"read sha256:{digest}"), self.fs.open(path, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()

    def _unreadable(self, digest: str, path: str, exc: Exception) -> MeguriError:
        where = self._where(path)
        if isinstance(exc, _sealed.UnknownKey):
            return ConfigError(
                f"Artifact sha256:{digest} is encrypted with the key {exc.key_id!r}, which "
                f"{self.keys.source} does not hold (it holds: {', '.join(self.keys.ids)}). "
                "Add that key's line back below the first line of the key file (older keys "
                "stay there until `meguri keys rotate` has re-encrypted every object); if no "
                f"key of that id ever existed, the object was altered: restore {where}."
            )
        return ArtifactCorruptedError(
            f"Artifact sha256:{digest} is corrupted: the encrypted object at {where} does not "
            f"authenticate ({exc}), so it was altered, cut short or moved from another "
            f"address. Restore {where} from a backup, or delete it and store the original "
            "file again (the same content goes back under the same digest)."
        )

    def _write(self, path: str, chunks: Iterable[bytes], size: int) -> None:
        self.inner._write(path, chunks, size)

    def _translate(self, exc: BaseException, action: str) -> MeguriError:
        return self.inner._translate(exc, action)

    def _not_found(self, digest: str, exc: FileNotFoundError) -> MeguriError:
        return self.inner._not_found(digest, exc)

    def _where(self, path: str) -> str:
        return self.inner._where(path)


def _checked(chunks: Iterator[bytes], hasher: Any, digest: str, where: str) -> Iterator[bytes]:
    """``chunks``, then ArtifactCorruptedError unless they hashed to ``digest`` (so a writer
    consuming them abandons the rewrite of an object whose content is not its address)."""
    yield from chunks
    _digest.verify(digest, hasher.hexdigest(), where)
