"""Browser sessions: signed cookies, per-session CSRF tokens, and the login rate limit.

A session cookie is ``base64url(payload).base64url(hmac_sha256(secret, payload))``, the
payload holding the user name, a random session id, when it was signed in and the expiry.
Nothing in it is secret, but nobody without the server secret can make one that verifies.
Signing out ends the session id in the metadata store until it would have expired anyway
(``AccessRepository.end_session``: it stays void across restarts and on every server of the
store), and a password change voids every session signed in before it
(``User.sessions_since``); the middleware checks both.

The CSRF token of a session is ``hmac(secret, "csrf" + session id)``: a write made with the
cookie must send it back in the ``X-CSRF-Token`` header (or a ``csrf_token`` form field). A
page on another site can make the browser send the cookie (SameSite=Lax still sends it on
top-level navigations) but cannot read the token, so it cannot forge the write.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

import orjson

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "LoginLimiter", "Session", "SessionSigner"]

SESSION_COOKIE = "meguri_session"
CSRF_COOKIE = "meguri_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    user: str
    sid: str
    expires_at: float
    issued_at: float = 0.0


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens with the server secret."""

    def __init__(self, secret: bytes, ttl_s: float) -> None:
        self._key = hashlib.sha256(b"meguri-session\x00" + secret).digest()
        self._csrf_key = hashlib.sha256(b"meguri-csrf\x00" + secret).digest()
        self.ttl_s = ttl_s

    def issue(self, user: str) -> tuple[str, Session]:
        now = time.time()
        session = Session(user, secrets.token_urlsafe(18), now + self.ttl_s, now)
        fields = {"u": session.user, "s": session.sid, "e": session.expires_at, "i": now}
        payload = _b64(orjson.dumps(fields))
        return f"{payload}.{self._sign(payload)}", session

    def verify(self, cookie: str) -> Session | None:
        """The session of a cookie that this server signed, not expired nor revoked."""
        payload, _, signature = cookie.partition(".")
        if not signature or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = orjson.loads(_unb64(payload))
            session = Session(
                str(data["u"]), str(data["s"]), float(data["e"]), float(data.get("i", 0.0))
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires_at <= time.time():
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).digest())

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token(session))

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


class LoginLimiter:
    """At most ``max_failures`` failed logins per (user name, client address) per
    ``window_s`` seconds; past that, logins from that pair are refused (429) without checking
    the password, until the oldest failure leaves the window."""

    _MAX_KEYS = 100_000

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, user: str, client: str) -> float:
        """Seconds until a login may be tried (0: now)."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get((user.lower(), client))
            if times is None:
                return 0.0
            while times and times[0] <= now - self.window_s:
                times.popleft()
            if len(times) < self.max_failures:
                return 0.0
            return times[0] + self.window_s - now

    def failed(self, user: str, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= self._MAX_KEYS:
                self._prune(now)
            self._failures.setdefault((user.lower(), client), deque()).append(now)

    def succeeded(self, user: str, client: str) -> None:
        with self._lock:
            self._failures.pop((user.lower(), client), None)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window_s
        self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > cutoff}
