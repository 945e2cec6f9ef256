"""Digests, the object layout and hashing streams: what every artifact backend shares.

An object's key under the store's root is ``sha256/<first two hex>/<remaining 62 hex>``.
Temporary objects of a write in progress live in the same folder under a dot-prefixed name
(``.tmp-…``), which never matches a digest, so readers cannot see them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

from meguri.errors import ArtifactCorruptedError, ArtifactError

CHUNK = 1 << 20
"""Bytes read at a time when streaming a file."""

TEMP_PREFIX = ".tmp-"
"""Name prefix of a write in progress; never a valid object name."""

_DIGEST = re.compile(r"[0-9a-f]{64}")


def check_digest(digest: str) -> str:
    """``digest`` itself if it is 64 lowercase hex characters; ArtifactError otherwise."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ArtifactError(
            f"Malformed artifact digest {digest!r}: expected a sha256 written as 64 lowercase "
            "hex characters. Digests come from the metadata store; check the record that "
            "supplied this one."
        )
    return digest


def object_key(digest: str) -> str:
    """The key of ``digest`` relative to the store's root: ``sha256/ab/cdef…``."""
    check_digest(digest)
    return f"sha256/{digest[:2]}/{digest[2:]}"


def file_size(path: Path) -> int:
    """The size of the file at ``path``."""
    try:
        return path.stat().st_size
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def read_file(path: Path) -> bytes:
    """The whole content of the (small) file at ``path``."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def hash_file(path: Path) -> tuple[str, int]:
    """The sha256 hex digest and size of the file at ``path``, read in chunks."""
    try:
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
            return digest, stream.tell()
    except OSError as exc:
        raise _unreadable(path, exc) from exc


def file_chunks(path: Path, digest: str) -> Iterator[bytes]:
    """Chunks of the file at ``path``; ArtifactError at the end unless they hash to ``digest``.

    A writer consumes this before it commits, so content that changed after it was hashed is
    never stored under the old digest.
    """
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
                yield chunk
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if hasher.hexdigest() != digest:
        raise ArtifactError(
            f"{str(path)!r} changed while it was being stored (it no longer hashes to "
            f"sha256:{digest}). Store it again once nothing is writing to it."
        )


def _unreadable(path: Path, exc: OSError) -> ArtifactError:
    return ArtifactError(
        f"Cannot read {str(path)!r} to store it: {exc.strerror or exc}. "
        "Check that the file exists and is readable."
    )


def verify(digest: str, actual: str, where: str) -> None:
    """Raise ArtifactCorruptedError unless the content read from ``where`` hashed to ``digest``."""
    if actual != digest:
        raise ArtifactCorruptedError(
            f"Artifact sha256:{digest} is corrupted: the object at {where} hashes to "
            f"sha256:{actual}. Restore {where} from a backup, or delete it and store the "
            "original file again (the same content goes back under the same digest)."
        )
