"""Request bodies read with a size limit, so that an upload cannot exhaust memory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import Request

from meguri.server._errors import ApiError

__all__ = ["read_body", "spool_body"]


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "too_large", f"The body is larger than this server accepts ({limit} bytes)."
    )


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The whole body, refused (413) past ``limit`` (default: the server's upload limit)
    without reading further."""
    limit = limit if limit is not None else request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def spool_body(request: Request, folder: str | None = None) -> Path:
    """Stream the body into a new temporary file (named here, never by the client) and return
    its path; the caller deletes it. Refused (413) past the server's upload limit. With
    encryption at rest on, the file is in this user's private in-memory folder (a tmpfs), so
    the upload's plaintext never reaches a disk on its way to the sealed store."""
    if folder is None and request.app.state.workspace.artifacts.encrypts_at_rest:
        from meguri.store.artifacts import memory_cache_folder

        folder = str(memory_cache_folder(request.app.state.workspace.root))
    limit = request.app.state.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    fd, name = tempfile.mkstemp(prefix="meguri-upload-", dir=folder)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                out.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)
