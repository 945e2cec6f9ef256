"""The artifact store over HTTP: the SDK talking to the platform server (``MEGURI_SERVER``)
instead of to the storage itself, and the two store operations that server needs.

The wire protocol (served by ``meguri.server._r_artifacts``; ``<base>`` is
``/api/v1/artifacts`` for the server's default project, ``/api/v1/projects/<name>/artifacts``
for another; every call carries ``Authorization: Bearer <API token>``):

==========================  ==============================================================
``GET  <base>``             ``{"encrypts_at_rest", "max_upload_bytes"}`` (viewer)
``PUT  <base>/<sha256>``    store the body, which must hash to ``<sha256>`` and carry a
                            ``Content-Length`` (editor): ``{"digest", "size"}``
``GET  <base>/<sha256>``    the content, streamed (viewer)
``HEAD <base>/<sha256>``    200 if stored; 404 with ``X-Meguri-Artifact: absent`` if not
==========================  ==============================================================

Why the client does what it does:

* **It never trusts the wire.** Every read is hashed as it arrives and checked against the
  digest it asked for (the server streams what it holds without checking it first), and
  :meth:`HttpArtifactStore.get_file` writes to a temp file next to the destination that is
  renamed into place only once the hash matches, as the local store does.
* **Uploads are streamed with a declared digest.** ``put_file`` hashes the file, then sends
  it a megabyte at a time under that digest; the server seals and writes it as it arrives
  and refuses (422) a body that does not hash to it, so nothing is stored. The body always
  has the declared length (a file that shrank in between is padded, one that grew is cut),
  so the server answers, after cleaning up, instead of seeing a broken connection; the
  client then says the file changed.
* **Errors keep their class.** The server's error envelope ``{"error": {"code", "message"}}``
  becomes the :mod:`meguri.errors` class of its code (``not_found`` → ``NotFoundError``...)
  with the server's message; refusals of the token or role are ``ConfigError`` (a setting to
  fix); a server that cannot be reached is a ``ConfigError`` naming ``MEGURI_SERVER``.
* ``encrypts_at_rest`` is the server's answer, asked once: callers that avoid plaintext copies
  on disk when the store encrypts (the model package cache) keep doing so.

httpx is imported when a store is created, so ``import meguri.store.artifacts`` stays light.
"""

from __future__ import annotations

import hashlib
import itertools
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote, urlsplit

from meguri.errors import (
    ArtifactCorruptedError,
    ArtifactError,
    ConfigError,
    ConflictError,
    MeguriError,
    NotFoundError,
)
from meguri.store.artifacts import _digest, _sealed
from meguri.store.artifacts._atomic import atomic_write
from meguri.store.artifacts._base import ArtifactStore, StoredArtifact
from meguri.store.artifacts._encrypted import EncryptedArtifactStore
from meguri.store.artifacts._fsspec import FsspecArtifactStore

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ABSENT_HEADER",
    "SERVER_VARIABLE",
    "TOKEN_VARIABLE",
    "HttpArtifactStore",
    "read_stream",
    "store_stream",
]

SERVER_VARIABLE = "MEGURI_SERVER"
TOKEN_VARIABLE = "MEGURI_TOKEN"
ABSENT_HEADER = "X-Meguri-Artifact"
"""Set to ``absent`` on the 404 of a HEAD for a digest that is not stored (a 404 without it
means the route or the project does not exist)."""


_CONFIG_CODES = frozenset(
    {"unauthenticated", "bad_token", "forbidden", "bad_host", "bad_origin", "csrf"}
)
_CLASSES: dict[str, type[MeguriError]] = {
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "artifact_corrupted": ArtifactCorruptedError,
    **dict.fromkeys(_CONFIG_CODES, ConfigError),
}
_BY_STATUS: dict[int, type[MeguriError]] = {
    401: ConfigError,
    403: ConfigError,
    404: NotFoundError,
    409: ConflictError,
}


class HttpArtifactStore(ArtifactStore):
    """The artifact store of a meguri platform server at ``server`` (``http(s)://host:port``),
    acting with the API token ``token`` on ``project`` (None: the server's default project).

    Storing needs the editor role on that project, reading the viewer role. ``transport``
    replaces httpx's (tests). Close it with :meth:`close` (or use it as a context manager).
    """

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        project: str | None = None,
        timeout_s: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        self.server = _server_url(server)
        self.project = project
        where = f"/projects/{quote(project, safe='')}" if project else ""
        self.url = f"{self.server}/api/v1{where}/artifacts"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            transport=transport,
            follow_redirects=False,
        )
        # a store dropped unclosed (a CLI command's workspace) still closes its connections
        weakref.finalize(self, self._http.close)
        self._info: dict[str, Any] | None = None

    def __repr__(self) -> str:  # never the token
        return f"HttpArtifactStore({self.url!r})"

    def __enter__(self) -> HttpArtifactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections to the server."""
        self._http.close()

    @property
    def encrypts_at_rest(self) -> bool:
        """Whether the server's store encrypts at rest (asked once)."""
        return bool(self._server_info()["encrypts_at_rest"])

    @encrypts_at_rest.setter
    def encrypts_at_rest(self, value: bool) -> None:
        self._server_info()["encrypts_at_rest"] = value

    # -- the contract -----------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> StoredArtifact:
        digest = hashlib.sha256(data).hexdigest()
        self._check_size(len(data))
        return self._put(digest, len(data), data)

    def put_file(self, path: str | Path) -> StoredArtifact:
        source = Path(path)
        digest, size = _digest.hash_file(source)
        self._check_size(size)
        body = _FileBody(source, size)
        try:
            return self._put(digest, size, body)
        except ArtifactError:
            if body.finished and body.digest != digest:  # the server refused it (422)
                raise _changed(source, digest) from None
            raise

    def get_bytes(self, digest: str) -> bytes:
        _digest.check_digest(digest)
        with self._download(digest) as chunks:
            data = b"".join(chunks)
        self._verify(digest, hashlib.sha256(data).hexdigest())
        return data

    def get_file(self, digest: str, dest: str | Path) -> Path:
        _digest.check_digest(digest)
        target = Path(dest)
        hasher = hashlib.sha256()

        def hashed(chunks: Iterable[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                hasher.update(chunk)
                yield chunk

        with self._download(digest) as chunks:
            try:
                atomic_write(
                    target,
                    hashed(chunks),
                    durable=False,
                    check=lambda: self._verify(digest, hasher.hexdigest()),
                )
            except OSError as exc:
                raise ArtifactError(
                    f"Cannot write artifact sha256:{digest} to {str(target)!r}: "
                    f"{exc.strerror or exc}. Choose a destination in a writable folder."
                ) from exc
        return target

    def exists(self, digest: str) -> bool:
        _digest.check_digest(digest)
        response = self._send("HEAD", f"{self.url}/{digest}", f"look up sha256:{digest}")
        if response.status_code == 200:
            return True
        if response.status_code == 404 and response.headers.get(ABSENT_HEADER) == "absent":
            return False
        # A HEAD answer has no body: ask again with GET for the server's explanation.
        with self._download(digest):
            return True

    # -- internals ----------------------------------------------------------------------------

    def _server_info(self) -> dict[str, Any]:
        if self._info is None:
            response = self._send("GET", self.url, "ask about the artifact store")
            if response.status_code != 200:
                self._raise(response)
            self._info = dict(response.json())
        return self._info

    def _check_size(self, size: int) -> None:
        limit = int(self._server_info()["max_upload_bytes"])
        if size > limit:
            raise ArtifactError(
                f"The artifact is {size} bytes but the meguri server at {self.server} accepts "
                f"uploads of at most {limit} bytes. Ask its operator to raise "
                "ServerSettings.max_upload_bytes, or store it without the server "
                f"(unset {SERVER_VARIABLE})."
            )

    def _put(self, digest: str, size: int, body: bytes | Iterable[bytes]) -> StoredArtifact:
        response = self._send(
            "PUT",
            f"{self.url}/{digest}",
            f"store sha256:{digest}",
            content=body,
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        if response.status_code != 200:
            self._raise(response)
        answer = response.json()
        if answer.get("digest") != digest or answer.get("size") != size:
            raise ArtifactError(
                f"The meguri server at {self.server} answered {answer!r} to storing "
                f"sha256:{digest} ({size} bytes). Check that MEGURI_SERVER names a meguri "
                "server of this version."
            )
        return StoredArtifact(digest, size)

    @contextmanager
    def _download(self, digest: str) -> Iterator[Iterator[bytes]]:
        """The body of ``GET <base>/<digest>`` as chunks, once the server said 200."""
        action = f"read sha256:{digest}"
        response = self._send("GET", f"{self.url}/{digest}", action, stream=True)
        try:
            if response.status_code != 200:
                with self._transport_errors(action):
                    response.read()
                self._raise(response)
            yield self._chunks(response, digest)
        finally:
            response.close()

    def _chunks(self, response: httpx.Response, digest: str) -> Iterator[bytes]:
        import httpx

        try:
            yield from response.iter_bytes(_digest.CHUNK)
        except httpx.TransportError as exc:
            raise ArtifactError(
                f"The meguri server at {self.server} stopped sending artifact sha256:{digest} "
                f"part-way ({type(exc).__name__}: {exc}). Try again; if it happens again, "
                "the server's log says why (an object it cannot decrypt is logged there)."
            ) from exc

    def _send(
        self, method: str, url: str, action: str, *, stream: bool = False, **kw: Any
    ) -> httpx.Response:
        request = self._http.build_request(method, url, **kw)
        with self._transport_errors(action):
            response = self._http.send(request, stream=stream)
        if response.is_redirect:
            response.close()
            raise ConfigError(
                f"The meguri server at {self.server} redirects {url} to "
                f"{response.headers.get('location')!r}. Set {SERVER_VARIABLE} to the URL it "
                "redirects to (https, or another host or port)."
            )
        return response

    @contextmanager
    def _transport_errors(self, action: str) -> Iterator[None]:
        import httpx

        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ConfigError(
                f"Cannot reach the meguri server at {self.server} to {action} ({exc}). Check "
                f"{SERVER_VARIABLE} (the server's URL, e.g. http://127.0.0.1:8000) and that "
                f"the server runs (`meguri server`), or unset {SERVER_VARIABLE} to use the "
                "stores directly."
            ) from exc
        except httpx.TransportError as exc:
            raise ArtifactError(
                f"The connection to the meguri server at {self.server} failed while trying "
                f"to {action} ({type(exc).__name__}: {exc}). Try again; if it happens again, "
                "check the server's log."
            ) from exc

    def _raise(self, response: httpx.Response) -> NoReturn:
        code, message = _envelope(response)
        kind = _CLASSES.get(code) or _BY_STATUS.get(response.status_code, ArtifactError)
        raise kind(message)

    def _verify(self, digest: str, actual: str) -> None:
        if actual != digest:
            raise ArtifactCorruptedError(
                f"Artifact sha256:{digest} is corrupted: the meguri server at {self.server} "
                f"sent content that hashes to sha256:{actual}. Ask its operator to restore "
                "the object from a backup, or store the original file again (the same "
                "content goes back under the same digest)."
            )


class _FileBody:
    """Exactly ``size`` bytes of the file at ``path`` (cut if it grew, zero-padded if it shrank),
    read a chunk at a time and hashed; ``digest`` is the hash of what was sent."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.finished = False
        self._hasher = hashlib.sha256()

    @property
    def digest(self) -> str:
        return self._hasher.hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        left = self.size
        try:
            with self.path.open("rb") as stream:
                while left > 0:
                    chunk = stream.read(min(_digest.CHUNK, left)) or bytes(min(_digest.CHUNK, left))
                    left -= len(chunk)
                    self._hasher.update(chunk)
                    yield chunk
        except OSError as exc:
            raise _digest._unreadable(self.path, exc) from exc
        self.finished = True


def _changed(path: Path, digest: str) -> ArtifactError:
    return ArtifactError(
        f"{str(path)!r} changed while it was being stored (it no longer hashes to "
        f"sha256:{digest}). Store it again once nothing is writing to it."
    )


def _envelope(response: httpx.Response) -> tuple[str, str]:
    """The code and message of an error answer (its text if it is not meguri's envelope)."""
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:300]
        return "", f"HTTP {response.status_code} from {response.url}: {text or 'no body'}"


def _server_url(server: str) -> str:
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{server!r} is not the URL of a meguri server: set {SERVER_VARIABLE} to "
            "http://host:port (or https://...)."
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


# -- the server's side ----------------------------------------------------------------------


def store_stream(
    store: FsspecArtifactStore, digest: str, size: int, chunks: Iterator[bytes]
) -> StoredArtifact:
    """Store ``size`` bytes of ``chunks`` under ``digest`` as they arrive: into the store's own
    atomic write (a temp object next to the final one, renamed into place; sealed on the way
    when the store encrypts, so no plaintext reaches its disk).

    ``chunks`` must raise at its end unless its content hashes to ``digest``: the write is then
    abandoned and nothing is stored. It is read to its end even when the object was already
    stored, so a body that does not match its digest is refused either way."""
    stored = store._store(digest, size, lambda: chunks)
    for _ in chunks:
        pass
    return stored


def read_stream(store: ArtifactStore, digest: str) -> Iterator[bytes]:
    """The content stored under ``digest`` (decrypted), chunk by chunk, *not* verified: the
    reader checks it against ``digest``. The first chunk is read before this returns, so a
    missing or undecryptable object raises here; a fault found later raises mid-stream."""
    if isinstance(store, EncryptedArtifactStore):
        chunks = _sealed_chunks(store, digest)
    elif isinstance(store, FsspecArtifactStore):
        chunks = _plain_chunks(store, digest)
    else:  # another kind of store: its own verified read, in memory
        return iter((store.get_bytes(digest),))
    first = next(chunks, None)
    return chunks if first is None else itertools.chain((first,), chunks)


def _plain_chunks(store: FsspecArtifactStore, digest: str) -> Iterator[bytes]:
    path = store.object_path(digest)
    with store._translated(f"read sha256:{digest}"):
        try:
            stream = store.fs.open(path, "rb", block_size=8 << 20)
        except FileNotFoundError as exc:
            raise store._not_found(digest, exc) from None
    with stream:
        while True:
            with store._translated(f"read sha256:{digest}"):
                chunk = stream.read(_digest.CHUNK)
            if not chunk:
                return
            yield chunk


def _sealed_chunks(store: EncryptedArtifactStore, digest: str) -> Iterator[bytes]:
    path = store.object_path(digest)
    started = False
    try:
        with store._open(digest, path) as stream:
            for chunk in store._hashed_plain(stream, digest, hashlib.sha256()):
                started = True
                yield chunk
    except (_sealed.Tampered, _sealed.UnknownKey) as exc:
        if started or store._raw_digest(digest, path) != digest:
            raise store._unreadable(digest, path, exc) from None
        yield from _plain_chunks(store, digest)  # plaintext that merely looks sealed
