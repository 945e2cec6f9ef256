"""``POST /login`` and ``POST /logout``: password sign-in for browsers.

``/login`` takes a form (``username``, ``password``, optional ``next``) or the same as JSON. On
success it sets two cookies: the session (HttpOnly, SameSite=Lax, Secure over https) and the
CSRF token (readable by the page's script, which sends it back as ``X-CSRF-Token``), then
redirects a form post to ``next`` (a path on this server only) or answers JSON with the
token. Failures are counted per user name and client address: past
``login_max_failures`` in ``login_window_s`` the answer is 429 with ``Retry-After``, without
checking the password. The answer never says whether the user name exists.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from meguri.server._access import Access, access
from meguri.server._deps import ok
from meguri.server._errors import ApiError
from meguri.server._sessions import CSRF_COOKIE, SESSION_COOKIE, LoginLimiter, SessionSigner
from meguri.server._upload import read_body
from meguri.store import Workspace
from meguri.store.metadata import NewAuditEvent

router = APIRouter(tags=["session"])
log = logging.getLogger("meguri.server")
_MAX_FORM = 16 << 10


async def _credentials(request: Request) -> dict[str, str]:
    body = await read_body(request, _MAX_FORM)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            data = orjson.loads(body)
            fields = {k: v for k, v in data.items() if isinstance(v, str)}
        else:
            fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise ApiError(
            400, "bad_request", "Send username and password as a form or JSON."
        ) from None
    if not fields.get("username") or not fields.get("password"):
        raise ApiError(400, "bad_request", "Both username and password are needed.")
    return fields


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this server (``/runs?x=1``), else ``/``: never another
    site (``//evil.example``, ``https://…``, ``/\\evil``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(c in target for c in "\\\r\n\t") or ":" in target.split("?", 1)[0]:
        return "/"
    return target


def _wants_html(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return not kind.startswith("application/json") and "text/html" in request.headers.get(
        "accept", ""
    )


def _secure(request: Request) -> bool:
    configured = request.app.state.settings.secure_cookies
    return bool(request.url.scheme == "https" if configured is None else configured)


def _set_cookies(response: Response, request: Request, cookie: str, csrf: str, ttl: float) -> None:
    secure, age = _secure(request), int(ttl)
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=age, path="/", httponly=True, secure=secure, samesite="lax"
    )
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=age, path="/", httponly=False, secure=secure, samesite="strict"
    )


def renew_session(request: Request, response: Response, user: str) -> None:
    """Sign ``user`` in afresh on ``response`` (new session and CSRF cookies): after their
    password changed, which voided the session they made the change with."""
    signer: SessionSigner = request.app.state.signer
    cookie, session = signer.issue(user)
    _set_cookies(response, request, cookie, signer.csrf_token(session), signer.ttl_s)


@router.post("/login", openapi_extra=access(Access.PUBLIC))
async def login(request: Request) -> Response:
    """Sign in with a user name and password; sets the session and CSRF cookies."""
    fields = await _credentials(request)
    name, client = fields["username"][:64], request.client.host if request.client else "?"
    limiter: LoginLimiter = request.app.state.login_limiter
    wait = limiter.retry_after(name, client)
    if wait > 0:
        raise ApiError(
            429,
            "too_many_attempts",
            f"Too many failed sign-ins; try again in {int(wait) + 1} s.",
            {"Retry-After": str(int(wait) + 1)},
        )
    ws: Workspace = request.app.state.workspace
    user = await run_in_threadpool(ws.metadata.access.verify_password, name, fields["password"])
    if user is None:
        limiter.failed(name, client)
        log.warning("failed sign-in for %r from %s", name, client)
        if _wants_html(request):
            where = quote(safe_next(fields.get("next")), safe="")
            return RedirectResponse(f"/login?failed=1&next={where}", 303)
        raise ApiError(401, "bad_credentials", "Wrong user name or password.")
    limiter.succeeded(name, client)
    return await run_in_threadpool(_signed_in, request, ws, user, fields.get("next"))


def _signed_in(request: Request, ws: Workspace, user: Any, target: str | None) -> Response:
    signer: SessionSigner = request.app.state.signer
    cookie, session = signer.issue(user.name)
    csrf = signer.csrf_token(session)
    client = request.client.host if request.client else None
    ws.metadata.audit.append(
        NewAuditEvent(user.name, "session.signed_in", "user", user.name, None, {"client": client})
    )
    response: Response
    if _wants_html(request):
        response = RedirectResponse(safe_next(target), 303)
    else:
        response = ok({"user": user.name, "csrf_token": csrf, "expires_at": session.expires_at})
    _set_cookies(response, request, cookie, csrf, signer.ttl_s)
    return response


@router.post("/logout", openapi_extra=access(Access.AUTHENTICATED))
def logout(request: Request) -> Response:
    """End the cookie session here and now (a token caller has none to end)."""
    session = getattr(request.state, "session", None)
    if session is not None:
        ws: Workspace = request.app.state.workspace
        ws.metadata.access.end_session(session.user, session.sid, session.expires_at)
    response: Response = (
        RedirectResponse("/login", 303) if _wants_html(request) else Response(status_code=204)
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response
