"""The guard in front of every route: Host check, identity, the route's rule, CSRF and Origin.

For each HTTP request, in order:

1. The ``Host`` header must name an allowed host (``ServerSettings.allowed_hosts``), else 400:
   a page on ``evil.example`` whose name was re-pointed at 127.0.0.1 (DNS rebinding) sends
   ``Host: evil.example`` and is refused before anything runs.
2. The route is found as the router will find it, with its rule (:mod:`meguri.server._access`).
3. ``public`` routes run as they are (a cookie-less form post to ``/login`` from another origin
   is refused, against login CSRF).
4. The caller: ``Authorization: Bearer mgr_...`` (an API token; a wrong, revoked or expired one
   is a 401, with no fallback to the cookie), else the session cookie. None: 401.
5. A route without a rule: 403. Otherwise the rule decides, with the caller's role on the
   route's project: 403 when it is not enough; an unknown project is a 404.
6. A write (not GET, HEAD, OPTIONS) made with the session cookie needs an ``Origin`` (or
   ``Referer``) of this server and the session's CSRF token, else 403.

The request then carries ``request.state.user`` (the User), ``.role`` (the project role, or
None), ``.project`` (the Project), ``.auth`` (``token`` or ``cookie``), ``.session`` and
``.csrf_token`` (cookie sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meguri.server._access import ROUTED_KEY, Access, match_route, satisfies
from meguri.server._errors import error_response, internal_error
from meguri.server._sessions import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Session, SessionSigner
from meguri.store import Workspace
from meguri.store.metadata import User

__all__ = ["AccessMiddleware", "Caller", "Guard"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)
_FORM = "application/x-www-form-urlencoded"
_MAX_FORM = 64 << 10


@dataclass(frozen=True)
class Guard:
    """What the middleware checks against; one per app."""

    workspace: Workspace
    signer: SessionSigner
    hosts: frozenset[str]
    origins: frozenset[str]


@dataclass(frozen=True)
class Caller:
    user: User
    auth: str
    session: Session | None = None


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers, the first of each name winning as in Starlette; a second
    ``Host`` is refused, so that no layer reads another host than the one checked."""
    found: dict[str, str] = {}
    for raw_key, raw_value in scope["headers"]:
        key = raw_key.decode("latin-1").lower()
        if key == "host" and key in found:
            raise Refusal(400, "bad_host", "More than one Host header.")
        found.setdefault(key, raw_value.decode("latin-1"))
    return found


def host_name(host: str) -> str:
    """``Host`` without its port: ``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AccessMiddleware:
    """Pure ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # no route of ours speaks it
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._check(scope, receive)
        except Refusal as refusal:
            if refusal.status == 401 and _browser_page(scope):
                await _to_login(scope, receive, send)
                return
            headers = {"WWW-Authenticate": 'Bearer realm="meguri"'} if refusal.status == 401 else {}
            path, status = scope["path"], refusal.status
            await error_response(path, status, refusal.code, refusal.message, headers)(
                scope, receive, send
            )
            return
        except Exception as exc:  # the store failed while checking: a 500, never a trace
            await internal_error(scope["method"], scope["path"], exc)(scope, receive, send)
            return
        await self._run(scope, receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with safe default headers on each answer; an exception before the answer
        started becomes the 500 envelope here (logged with an incident id), so the connection
        stays usable and no trace reaches the client."""
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _DEFAULT_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:
                raise
            response = internal_error(scope["method"], scope["path"], exc)
            await response(scope, receive, send_with_headers)

    async def _check(self, scope: Scope, receive: Receive) -> Receive:
        headers = _headers(scope)
        if host_name(headers.get("host", "")) not in self.guard.hosts:
            raise Refusal(400, "bad_host", "Invalid Host header: this server does not serve it.")
        matched = match_route(scope["app"].router.routes, scope)
        unsafe = scope["method"] not in SAFE_METHODS
        state = scope.setdefault("state", {})
        if matched.rule is Access.PUBLIC:
            state[ROUTED_KEY] = matched.route
            if unsafe and not self._same_origin(headers, scope, required=False):
                raise Refusal(403, "bad_origin", "Cross-origin request refused.")
            return receive
        caller = await run_in_threadpool(self._caller, headers)
        if caller is None:
            raise Refusal(
                401,
                "unauthenticated",
                "Sign in (POST /login) or send 'Authorization: Bearer <API token>'.",
            )
        state.update(user=caller.user, auth=caller.auth, session=caller.session, role=None)
        state["project"] = self.guard.workspace.project
        if caller.session is not None:
            state["csrf_token"] = self.guard.signer.csrf_token(caller.session)
        if matched.route is None or matched.partial:
            return receive  # the router answers 404 / 405
        if matched.rule is None:
            raise Refusal(403, "forbidden", "No access rule allows this route.")
        await run_in_threadpool(self._authorise, matched.rule, matched.path_params, caller, state)
        state[ROUTED_KEY] = matched.route
        if unsafe and caller.session is not None:
            return await self._check_csrf(scope, receive, headers, caller.session)
        return receive

    def _caller(self, headers: dict[str, str]) -> Caller | None:
        access = self.guard.workspace.metadata.access
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, secret = authorization.partition(" ")
            found = (
                access.authenticate_token(secret.strip()) if scheme.lower() == "bearer" else None
            )
            if found is None or found[0].disabled:
                raise Refusal(
                    401,
                    "bad_token",
                    "The API token is invalid, revoked or expired; create a new one.",
                )
            return Caller(found[0], "token")
        session = self._session(headers)
        if session is None:
            return None
        user = access.find_user(session.user)
        if user is None or user.disabled:
            return None
        if user.sessions_since is not None and session.issued_at < user.sessions_since:
            return None  # signed in before the password changed
        if access.session_ended(session.sid):
            return None  # signed out
        return Caller(user, "cookie", session)

    def _session(self, headers: dict[str, str]) -> Session | None:
        raw = headers.get("cookie")
        if not raw:
            return None
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(raw)
        except Exception:
            return None
        morsel = cookies.get(SESSION_COOKIE)
        return self.guard.signer.verify(morsel.value) if morsel is not None else None

    def _authorise(
        self, rule: Access, params: dict[str, Any], caller: Caller, state: dict[str, Any]
    ) -> None:
        user = caller.user
        if rule is Access.AUTHENTICATED:
            return
        if rule is Access.PLATFORM_ADMIN:
            if not user.is_admin:
                raise Refusal(403, "forbidden", "Only a platform admin may do this.")
            return
        ws = self.guard.workspace
        project = ws.project
        name = params.get("project")
        if name is not None and name != project.name:
            found = ws.metadata.projects.find(str(name))
            if found is None:
                raise Refusal(404, "not_found", f"No project named {name!r}.")
            project = found
        role = "admin" if user.is_admin else ws.metadata.access.role_of(project.id, user.name)
        state.update(project=project, role=role)
        if not satisfies(role, rule):
            held = f"your role there is {role}" if role else "you have no role there"
            raise Refusal(
                403,
                "forbidden",
                f"This needs the {rule.value} role on project {project.name!r}; {held}.",
            )

    def _same_origin(self, headers: dict[str, str], scope: Scope, *, required: bool) -> bool:
        """Whether the request's Origin (or Referer) is this server or a configured origin."""
        origin = headers.get("origin")
        if origin is None or origin == "null":
            referer = headers.get("referer")
            if referer is None:
                return origin is None and not required
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
        return origin.lower() == own or origin.lower() in self.guard.origins

    async def _check_csrf(
        self, scope: Scope, receive: Receive, headers: dict[str, str], session: Session
    ) -> Receive:
        if not self._same_origin(headers, scope, required=True):
            raise Refusal(
                403, "bad_origin", "Cross-origin write refused: the Origin is not this server."
            )
        token = headers.get(CSRF_HEADER)
        if token is None and headers.get("content-type", "").startswith(_FORM):
            body, receive = await _buffer(receive)
            fields = parse_qs(body.decode("latin-1"))
            values = fields.get(CSRF_FIELD)
            token = values[0] if values else None
        if not self.guard.signer.csrf_ok(session, token):
            raise Refusal(403, "csrf", "Missing or wrong CSRF token: send the X-CSRF-Token header.")
        return receive


def _browser_page(scope: Scope) -> bool:
    """A browser asking for a page (GET, ``Accept: text/html``, not the API): sent to the
    Studio's sign-in page instead of a JSON 401."""
    path = str(scope["path"])
    if scope["method"] != "GET" or path.startswith(("/api/", "/login")):
        return False
    return "text/html" in _headers(scope).get("accept", "")


async def _to_login(scope: Scope, receive: Receive, send: Send) -> None:
    from urllib.parse import quote

    from starlette.responses import RedirectResponse

    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    response = RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
    await response(scope, receive, send)


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    """Read a small form body and hand back a ``receive`` that replays it."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_FORM:
            raise Refusal(413, "too_large", "The form is too large.")
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
