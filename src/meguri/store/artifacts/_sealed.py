"""The sealed object format: artifacts encrypted at rest with AES-256-GCM, in segments.

An object is a header followed by segments::

    header   b"MGRE" | version (1 byte, 1) | segment size (4 bytes, big-endian)
             | key id length (1 byte) | key id (ASCII)
    segment  nonce (12 random bytes) | AES-GCM ciphertext of up to ``segment size`` bytes
             | tag (16 bytes)

Why this shape:

* **Segments** (1 MiB by default) keep memory bounded: a reader or writer holds a segment or
  two, whatever the artifact's size, and a damaged byte is found in the segment it is in.
* **Associated data** of segment *i* is the header, the object's address (the sha256 of the
  plaintext, 32 raw bytes), *i* (8 bytes) and a final flag (1 byte). So the header (which key,
  which segment size) cannot be altered, an object cannot be moved to another address (its
  tag would not match there), segments cannot be reordered, and cutting the object at a
  segment boundary or appending to it fails (the last segment read must carry the final
  flag, and one that carries it must be the last).
* **A random nonce per segment**: 96 random bits under one key are safe up to about 2^32
  segments (4 PiB at 1 MiB each), far beyond one store's content between rotations.

The address stays the sha256 of the plaintext, so identical content still deduplicates and
every read is still checked against it after decryption.

Errors here are plain exceptions (:class:`NotSealed`, :class:`Tampered`, :class:`UnknownKey`)
that the store turns into :mod:`meguri.errors` with the object's digest and location.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from meguri.errors import ConfigError
from meguri.store.artifacts._keys import Key, KeyRing

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "HEAD_BYTES",
    "MAGIC",
    "SEGMENT",
    "NotSealed",
    "Tampered",
    "UnknownKey",
    "header_key_id",
    "seal",
    "sealed_size",
    "unseal",
    "unseal_bytes",
]

MAGIC = b"MGRE"
VERSION = 1
SEGMENT = 1 << 20
"""Plaintext bytes per segment."""
NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG
"""Bytes each segment adds to its plaintext."""

_FIXED = struct.Struct(">4sBIB")  # magic, version, segment size, key id length
_COUNTER = struct.Struct(">QB")  # segment index, final flag
_SEGMENT_RANGE = (1 << 12, 1 << 26)
"""Segment sizes a reader accepts (a forged header must not make it allocate gigabytes)."""


class NotSealed(Exception):
    """The object does not start with a sealed header; ``prefix`` holds the bytes read."""

    def __init__(self, prefix: bytes) -> None:
        super().__init__("not a sealed object")
        self.prefix = prefix


class Tampered(Exception):
    """The object is sealed but does not authenticate (altered, truncated, moved)."""


class UnknownKey(Exception):
    """The object is sealed with a key the ring does not hold."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id


def _header(key_id: str, segment: int) -> bytes:
    encoded = key_id.encode("ascii")
    return _FIXED.pack(MAGIC, VERSION, segment, len(encoded)) + encoded


def sealed_size(size: int, key_id: str, segment: int = SEGMENT) -> int:
    """Bytes an object of ``size`` plaintext bytes takes once sealed with key ``key_id``."""
    segments = max(1, -(-size // segment))
    return len(_header(key_id, segment)) + size + segments * OVERHEAD


def _aead(secret: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError(
            f"Encryption at rest needs the cryptography package ({exc}); install it with "
            "`pip install cryptography`, or unset the encryption key settings."
        ) from exc
    return AESGCM(secret)


def seal(chunks: Iterable[bytes], digest: str, key: Key, segment: int = SEGMENT) -> Iterator[bytes]:
    """The sealed object of the plaintext ``chunks`` at address ``digest``, piece by piece.

    Exceptions raised by ``chunks`` (a source file that changed, say) pass through, so a
    writer consuming this abandons its write."""
    header = _header(key.id, segment)
    bound = header + bytes.fromhex(digest)
    aead = _aead(key.secret)
    yield header
    index, pending = 0, None
    for piece in _pieces(chunks, segment):
        if pending is not None:
            yield _seal_segment(aead, bound, index, pending, final=False)
            index += 1
        pending = piece
    yield _seal_segment(aead, bound, index, b"" if pending is None else pending, final=True)


def _seal_segment(aead: AESGCM, bound: bytes, index: int, plain: bytes, *, final: bool) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + aead.encrypt(nonce, plain, bound + _COUNTER.pack(index, final))


def _pieces(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``chunks`` cut into pieces of exactly ``size`` bytes, the last one shorter (or none)."""
    buffer = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        if buffer:
            take = size - len(buffer)
            buffer += view[:take]
            view = view[take:]
            if len(buffer) < size:
                continue
            yield bytes(buffer)
            buffer.clear()
        while len(view) >= size:
            yield bytes(view[:size])
            view = view[size:]
        buffer += view
    if buffer:
        yield bytes(buffer)


def header_key_id(head: bytes) -> str | None:
    """The key id in the first bytes ``head`` of an object (at least 74); None if not sealed."""
    fixed = _parse_fixed(head[: _FIXED.size])
    if fixed is None:
        return None
    _, length = fixed
    raw = head[_FIXED.size : _FIXED.size + length]
    return raw.decode("ascii", "replace") if len(raw) == length else None


HEAD_BYTES = _FIXED.size + 64
"""Enough leading bytes of an object for :func:`header_key_id`."""


def _parse_fixed(head: bytes) -> tuple[int, int] | None:
    """Segment size and key id length, or None unless ``head`` begins a sealed object."""
    if len(head) < _FIXED.size or not head.startswith(MAGIC + bytes([VERSION])):
        return None
    _, _, segment, length = _FIXED.unpack(head)
    return segment, length


def unseal(read: Callable[[int], bytes], digest: str, keys: KeyRing) -> Iterator[bytes]:
    """The plaintext of the sealed object that ``read(n)`` returns, segment by segment.

    Raises :class:`NotSealed` before yielding anything if the object has no sealed header,
    :class:`UnknownKey` if its key is not in ``keys``, :class:`Tampered` (possibly after
    some segments were yielded: consumers write to a temp file) if it fails authentication."""
    head = _read_exact(read, _FIXED.size)
    fixed = _parse_fixed(head)
    if fixed is None:
        raise NotSealed(head)
    segment, length = fixed
    if not _SEGMENT_RANGE[0] <= segment <= _SEGMENT_RANGE[1] or not 1 <= length <= 64:
        raise Tampered("its header is malformed")
    raw_id = _read_exact(read, length)
    key = keys.get(raw_id.decode("ascii", "replace"))
    if key is None:
        raise UnknownKey(raw_id.decode("ascii", "replace"))
    bound = head + raw_id + bytes.fromhex(digest)
    yield from _open_segments(read, _aead(key.secret), bound, segment)


def unseal_bytes(raw: bytes, digest: str, keys: KeyRing) -> bytes:
    """:func:`unseal` of a sealed object held whole in memory (same errors)."""
    view, position = memoryview(raw), 0

    def read(size: int) -> bytes:
        nonlocal position
        piece = view[position : position + size]
        position += len(piece)
        return bytes(piece)

    return b"".join(unseal(read, digest, keys))


def _open_segments(
    read: Callable[[int], bytes], aead: AESGCM, bound: bytes, segment: int
) -> Iterator[bytes]:
    from cryptography.exceptions import InvalidTag

    record = segment + OVERHEAD
    current, index = _read_exact(read, record), 0
    while True:
        following = _read_exact(read, record) if len(current) == record else b""
        final = not following
        if len(current) < OVERHEAD:
            raise Tampered(f"it ends inside segment {index}")
        aad = bound + _COUNTER.pack(index, final)
        try:
            yield aead.decrypt(current[:NONCE], current[NONCE:], aad)
        except InvalidTag:
            raise Tampered(f"segment {index} fails authentication") from None
        if final:
            return
        current, index = following, index + 1


def _read_exact(read: Callable[[int], bytes], size: int) -> bytes:
    """``size`` bytes from ``read``, fewer only at the end of the stream."""
    first = read(size)
    if len(first) == size or not first:
        return bytes(first)
    parts, got = [first], len(first)
    while got < size:
        more = read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
