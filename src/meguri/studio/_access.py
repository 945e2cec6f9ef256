"""Who is asking, and may they: the Studio's side of access control.

The server's auth middleware authenticates the request and puts the user on
``request.state.user`` and their role in the project on ``request.state.role``. The Studio
checks both again on every page (defence in depth: a Studio mounted without that middleware
serves nothing), and asks ``admin`` for promotion, its one change. Changes also carry the
CSRF token the server issued with the session cookie (``request.state.csrf_token``): it goes
out in each form (``csrf_token``) and in htmx's ``X-CSRF-Token`` header, and a change whose
token differs is refused here even if the middleware let it through.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Request

from meguri.store import Workspace

__all__ = [
    "ADMIN",
    "PUBLIC",
    "ROLES",
    "VIEWER",
    "acting_workspace",
    "check_csrf",
    "read_form",
    "require",
    "role_of",
]

ROLES = ("viewer", "editor", "admin")
#: Each route's rule for the server's access middleware, declared the way the server reads it
#: (``openapi_extra``), without importing the server: reads need ``viewer``, promotion
#: ``admin`` (as promoting through the API does), static files nothing.
VIEWER = {"x-meguri-access": "viewer"}
ADMIN = {"x-meguri-access": "admin"}
PUBLIC = {"x-meguri-access": "public"}
_MAX_FORM_BYTES = 64 * 1024


def role_of(request: Request) -> str | None:
    """The caller's role in the project: the one the middleware set, ``admin`` for a site
    administrator without one, None for anyone else (or nobody)."""
    user = getattr(request.state, "user", None)
    if user is None:
        return None
    role = getattr(request.state, "role", None)
    if role in ROLES:
        return str(role)
    return "admin" if getattr(user, "is_admin", False) else None


def require(request: Request, least: str = "viewer") -> str:
    """The caller's role if it is at least ``least``; else 401 (nobody) or 403."""
    if getattr(request.state, "user", None) is None:
        raise HTTPException(401, "Log in to use the Studio (/login).")
    role = role_of(request)
    if role is None or ROLES.index(role) < ROLES.index(least):
        raise HTTPException(
            403,
            f"This needs the {least!r} role in the project (you have {role or 'none'}); "
            "ask a project admin for it.",
        )
    return role


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the Studio's forms send),
    first value of each field; 413 past 64 KiB, 415 for another content type."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "Send the form as application/x-www-form-urlencoded.")
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise HTTPException(413, "The form is over 64 KiB.")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise HTTPException(400, "The form is not UTF-8.") from None
    return {key: values[0] for key, values in fields.items()}


def check_csrf(request: Request, form: dict[str, str]) -> None:
    """Refuse (403) a change whose CSRF token differs from the session's. Requests without a
    session token (API tokens, no cookie) have nothing a forged page could ride on."""
    expected = getattr(request.state, "csrf_token", None)
    if not expected:
        return
    sent = request.headers.get("X-CSRF-Token") or form.get("csrf_token") or ""
    if not hmac.compare_digest(str(expected).encode(), sent.encode()):
        raise HTTPException(403, "The form's CSRF token is missing or stale; reload the page.")


def acting_workspace(request: Request) -> Workspace:
    """The app's workspace acting as the caller, so that what they change is recorded under
    their name (the stores are shared, not reopened)."""
    ws: Workspace = request.app.state.workspace
    user: Any = request.state.user
    return replace(ws, user=str(user.name))
