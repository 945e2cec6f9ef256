"""The artifact store over HTTP: what ``HttpArtifactStore`` (``MEGURI_SERVER``) talks to.

==============================  ====================================================  ======
``GET  <base>``                 ``{"encrypts_at_rest", "max_upload_bytes"}``          viewer
``PUT  <base>/<sha256>``        store the body (``Content-Length`` required; it must  editor
                                hash to ``<sha256>``, else 422 and nothing stored)
``GET  <base>/<sha256>``        the content, streamed                                 viewer
``HEAD <base>/<sha256>``        200 if stored; 404 + ``X-Meguri-Artifact: absent``    viewer
==============================  ====================================================  ======

``<base>`` is ``/api/v1/projects/<project>/artifacts``, or ``/api/v1/artifacts`` for the
server's default project; the role is the caller's on that project.

**Digests are capabilities; blobs are shared by content.** The store is content addressed,
one object per content whatever project stored it (storing the same bytes twice, from any
project, keeps one copy). The role check applies to the route's project, not to the blob: a
viewer of any project can read any blob whose sha256 they know. What keeps blobs apart is
that a digest is learnt only from metadata the caller may read (a run's artifacts, a model
version's package, a dataset version), and a sha256 of unknown content cannot be guessed.
Whoever holds a digest obtained legitimately may read it; treat digests of secret content
like the content's own secrets (do not paste them into other projects' records).

**Paths.** No client-supplied path is ever used: ``<sha256>`` must be 64 lowercase hex
characters (else 400 before anything is read) and the store derives the object's location
from it. An encoded slash (``..%2f``) is decoded before routing, so it never reaches a
handler as part of one segment; it matches no route (404).

**Uploads, and encryption at rest.** The body is never spooled in clear: for every store that
:func:`~meguri.store.artifacts.open_artifact_store` opens, it is streamed straight into the
store's own atomic write (a dot-named temp object next to its final place, renamed into place
once complete; with encryption at rest on, sealed with AES-GCM segment by segment before it
is written, which the sealed format allows because the client declares the digest, i.e. the
object's address, up front). If the body does not hash to the declared digest, is cut short
or exceeds the server's upload limit, the write is abandoned and the temp object removed
before the answer is sent. Other kinds of store get the body through ``spool_body`` (a temp
file in memory, ``/dev/shm``, when the store encrypts), deleted in every case.

**Reads** stream what the store holds (decrypted by the server when encrypted) without
checking it first: clients check each read against the digest, as ``HttpArtifactStore`` does.
An encrypted object that fails authentication part-way is logged here and the answer is cut
off, so that no client takes the truncated content for a whole one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path as FilePath
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from meguri.errors import MeguriError, NotFoundError
from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.server._errors import ApiError
from meguri.server._upload import spool_body
from meguri.store import Workspace
from meguri.store.artifacts import ArtifactStore, FsspecArtifactStore, StoredArtifact
from meguri.store.artifacts._http import ABSENT_HEADER, read_stream, store_stream

__all__ = ["router"]

log = logging.getLogger("meguri.server")

router = APIRouter(tags=["artifacts"])

_BASES = ("/api/v1/artifacts", "/api/v1/projects/{project}/artifacts")
_DIGEST = re.compile(r"[0-9a-f]{64}")
Digest = Annotated[str, Path(description="The content's sha256, as 64 lowercase hex characters.")]
_PULL = 1 << 20
"""Bytes gathered from the event loop per hop into the writing thread."""


def _route(method: str, suffix: str, rule: Access) -> Callable[[Any], Any]:
    """Register the decorated handler under both bases (default project and ``{project}``)."""

    def register(handler: Any) -> Any:
        for base in _BASES:
            router.add_api_route(
                base + suffix, handler, methods=[method], openapi_extra=access(rule)
            )
        return handler

    return register


def _digest(raw: str) -> str:
    if not _DIGEST.fullmatch(raw):
        raise ApiError(
            400,
            "invalid_digest",
            f"Malformed artifact digest {raw[:80]!r}: expected a sha256 written as 64 "
            "lowercase hex characters (an artifact is addressed by its content, never by a "
            "path).",
        )
    return raw


@_route("GET", "", Access.VIEWER)
def describe(request: Request, ws: WS) -> Response:
    """What a client needs to know before storing: encryption at rest and the upload limit."""
    return ok(
        {
            "encrypts_at_rest": ws.artifacts.encrypts_at_rest,
            "max_upload_bytes": request.app.state.settings.max_upload_bytes,
        }
    )


@_route("HEAD", "/{digest}", Access.VIEWER)
def exists(ws: WS, digest: Digest) -> Response:
    """200 if a complete object is stored under ``digest``, else 404 (marked ``absent``)."""
    if ws.artifacts.exists(_digest(digest)):
        return Response(status_code=200)
    return Response(status_code=404, headers={ABSENT_HEADER: "absent"})


@_route("GET", "/{digest}", Access.VIEWER)
def download(ws: WS, digest: Digest) -> Response:
    """The content stored under ``digest``, streamed; the client checks it against the digest."""
    store = ws.artifacts
    _require(store, _digest(digest))
    chunks = read_stream(store, digest)
    return StreamingResponse(
        _logged(chunks, digest),
        media_type="application/octet-stream",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-transform"},
    )


@_route("PUT", "/{digest}", Access.EDITOR)
async def upload(request: Request, ws: WS, digest: Digest) -> Response:
    """Store the body under ``digest`` if it hashes to it (see the module docstring)."""
    _digest(digest)
    size = _declared_size(request)
    try:
        if isinstance(ws.artifacts, FsspecArtifactStore):
            body = _Body(request, digest, size)
            stored = await run_in_threadpool(store_stream, ws.artifacts, digest, size, iter(body))
        else:
            stored = await _spooled(request, ws, digest)
    except ClientDisconnect:
        raise _cut_off() from None
    return ok({"digest": stored.digest, "size": stored.size})


def _require(store: ArtifactStore, digest: str) -> None:
    if not store.exists(digest):
        raise NotFoundError(
            f"No artifact sha256:{digest} on this server: it was never stored here. Check the "
            "record that gave the digest, or store the artifact again."
        )


def _logged(chunks: Iterator[bytes], digest: str) -> Iterator[bytes]:
    """``chunks``; a fault part-way is logged, then cuts the answer off (re-raised)."""
    try:
        yield from chunks
    except MeguriError as exc:
        log.error("artifact sha256:%s could not be sent whole: %s", digest, exc)
        raise


def _declared_size(request: Request) -> int:
    declared = request.headers.get("content-length")
    if declared is None:
        raise ApiError(
            411,
            "length_required",
            "Send the artifact with a Content-Length header (chunked uploads are not accepted).",
        )
    if not declared.isdigit():
        raise ApiError(400, "bad_length", "The Content-Length header is not a number of bytes.")
    limit: int = request.app.state.settings.max_upload_bytes
    if int(declared) > limit:
        raise ApiError(
            413, "too_large", f"The body is larger than this server accepts ({limit} bytes)."
        )
    return int(declared)


class _Body:
    """The request body as the blocking iterator the store's writer (in a worker thread)
    consumes: pulled from the event loop a megabyte at a time, counted and hashed. It ends by
    raising unless it was exactly the declared size and hashed to the declared digest, so the
    writer abandons the write and removes its temp object."""

    def __init__(self, request: Request, digest: str, size: int) -> None:
        self._source: AsyncIterator[bytes] = request.stream().__aiter__()
        self.digest, self.size = digest, size

    async def _pull(self) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < _PULL:
            try:
                chunk = await self._source.__anext__()
            except StopAsyncIteration:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def __iter__(self) -> Iterator[bytes]:
        hasher, got = hashlib.sha256(), 0
        while piece := anyio.from_thread.run(self._pull):
            got += len(piece)
            if got > self.size:
                raise ApiError(400, "bad_length", "The body is longer than its Content-Length.")
            hasher.update(piece)
            yield piece
        if got != self.size:
            raise _cut_off()
        _check(self.digest, hasher.hexdigest())


def _cut_off() -> ApiError:
    return ApiError(400, "incomplete_body", "The upload was cut off; nothing was stored.")


def _check(declared: str, actual: str) -> None:
    if actual != declared:
        raise ApiError(
            422,
            "digest_mismatch",
            f"The body hashes to sha256:{actual}, not to the declared sha256:{declared}; "
            "nothing was stored. Send the content whose sha256 is in the URL (it changed, or "
            "was damaged, on its way).",
        )


async def _spooled(request: Request, ws: Workspace, digest: str) -> StoredArtifact:
    """A store that cannot take a stream: through a temp file, deleted in every case."""
    store = ws.artifacts
    spooled = await spool_body(request)  # in memory when the store encrypts
    try:
        return await run_in_threadpool(_put_checked, store, digest, spooled)
    finally:
        os.unlink(spooled)


def _put_checked(store: ArtifactStore, digest: str, path: FilePath) -> StoredArtifact:
    with path.open("rb") as stream:
        _check(digest, hashlib.file_digest(stream, "sha256").hexdigest())
    return store.put_file(path)
