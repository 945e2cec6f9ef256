"""A small HTTP client for probing an endpoint (stdlib only): every reply is kept, so that the
security check can scan all error bodies and headers the tests provoked."""

from __future__ import annotations

import http.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from meguri.errors import ConfigError

__all__ = ["Endpoint", "Reply"]

_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Reply:
    """One response: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def error_column(self) -> str | None:
        """The ``error.column`` of a meguri error body, if there is one."""
        try:
            doc = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        error = doc.get("error") if isinstance(doc, dict) else None
        column = error.get("column") if isinstance(error, dict) else None
        return column if isinstance(column, str) else None


def _reply(response: http.client.HTTPResponse) -> Reply:
    headers = {k.lower(): v for k, v in response.getheaders()}
    return Reply(response.status, headers, response.read())


class Endpoint:
    """``base``: ``http://host:port`` (or ``https://``); ``token``: the bearer token sent
    with every call unless ``auth=False``."""

    def __init__(self, base: str, token: str | None = None) -> None:
        parts = urlsplit(base.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"endpoint URL {base!r} is not an http(s) URL; give one such as "
                "http://127.0.0.1:8080"
            )
        self.base = base.rstrip("/")
        self.host, self.https = parts.hostname, parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path
        self.token = token
        self.replies: list[Reply] = []

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def _connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return kind(self.host, self.port, timeout=_TIMEOUT_S)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> Reply:
        """One request on a fresh connection; the reply is kept in :attr:`replies`."""
        sent = {**(self.auth if auth else {}), **(headers or {})}
        conn = self._connection()
        try:
            conn.request(method, self.prefix + path, body=body, headers=sent)
            reply = _reply(conn.getresponse())
        finally:
            conn.close()
        self.replies.append(reply)
        return reply

    def raw_post(self, path: str, declared: int | None, chunks: Iterable[bytes] | None) -> Reply:
        """A POST that announces ``declared`` bytes and sends none (the server must refuse it
        from the header alone), or sends ``chunks`` with chunked transfer encoding."""
        conn = self._connection()
        try:
            conn.putrequest("POST", self.prefix + path)
            for name, value in {**self.auth, "content-type": "application/json"}.items():
                conn.putheader(name, value)
            if declared is not None:
                conn.putheader("content-length", str(declared))
                conn.endheaders()
            else:
                conn.putheader("transfer-encoding", "chunked")
                conn.endheaders()
                _send_chunks(conn, chunks or [])
            reply = _reply(conn.getresponse())
        finally:
            conn.close()
        self.replies.append(reply)
        return reply


def _send_chunks(conn: http.client.HTTPConnection, chunks: Iterable[bytes]) -> None:
    """Send ``chunks``, stopping early (without error) if the server already answered and
    closed: a refusal may come before the whole body is read."""
    try:
        for chunk in chunks:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except (TimeoutError, BrokenPipeError, ConnectionResetError):
        return
