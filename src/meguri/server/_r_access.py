"""Users, API tokens, project roles and the audit log.

Anyone signed in sees themselves and manages their own tokens; a new token needs a password
sign-in (a cookie session), so that a leaked token cannot mint fresh ones that outlive its
revocation. Project admins manage the project's roles and read its audit events; platform
admins manage users and verify the whole audit chain.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from meguri.errors import NotFoundError
from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.server._errors import ApiError
from meguri.server._login import renew_session
from meguri.store import Workspace
from meguri.store.metadata import Token, User

router = APIRouter(prefix="/api/v1", tags=["access"])
SIGNED_IN = access(Access.AUTHENTICATED)
PLATFORM = access(Access.PLATFORM_ADMIN)
ADMIN = access(Access.ADMIN)
_Name = Annotated[str, Field(min_length=1, max_length=64)]


def _base(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def _user(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "is_admin": u.is_admin,
        "disabled": u.disabled,
        "created_at": u.created_at,
        "created_by": u.created_by,
    }


def _token(t: Token) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "prefix": t.prefix,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "revoked_at": t.revoked_at,
        "last_used_at": t.last_used_at,
        "active": t.is_active(time.time()),
    }


@router.get("/me", openapi_extra=SIGNED_IN)
def me(request: Request) -> Response:
    """The caller: who they are, how they signed in, their roles per project, and (cookie
    sessions) the CSRF token to send with writes."""
    ws, user = _base(request), request.state.user
    names = {p.id: p.name for p in ws.metadata.projects.list()}
    roles = {names.get(p, p): r for p, r in ws.metadata.access.user_roles(user.name).items()}
    return ok(
        {
            **_user(user),
            "auth": request.state.auth,
            "roles": roles,
            "csrf_token": getattr(request.state, "csrf_token", None),
        }
    )


@router.get("/me/tokens", openapi_extra=SIGNED_IN)
def my_tokens(request: Request) -> Response:
    """The caller's API tokens (never their secrets)."""
    tokens = _base(request).metadata.access.list_tokens(request.state.user.name)
    return ok({"tokens": [_token(t) for t in tokens]})


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    expires_in_days: float | None = Field(90, gt=0, le=3650)


def _mint(request: Request, owner: str, body: NewToken) -> Response:
    """A new token of ``owner``, minted from a password sign-in only: a token cannot make
    tokens, so that revoking a leaked one ends the leak."""
    if request.state.auth != "cookie":
        raise ApiError(
            403,
            "forbidden",
            "Create tokens from a password sign-in (POST /login), not with a token.",
        )
    expires = time.time() + body.expires_in_days * 86400 if body.expires_in_days else None
    token, secret = _base(request).metadata.access.create_token(
        owner, name=body.name, by=request.state.user.name, expires_at=expires
    )
    return ok({**_token(token), "secret": secret}, 201)


@router.post("/me/tokens", openapi_extra=SIGNED_IN, status_code=201)
def create_my_token(request: Request, body: NewToken) -> Response:
    """A new API token of the caller; its secret is in this answer only."""
    return _mint(request, request.state.user.name, body)


@router.delete("/me/tokens/{token_id}", openapi_extra=SIGNED_IN)
def revoke_my_token(request: Request, token_id: str) -> Response:
    """Revoke one of the caller's tokens."""
    repo, user = _base(request).metadata.access, request.state.user
    if all(t.id != token_id for t in repo.list_tokens(user.name)):
        raise NotFoundError(f"You have no API token {token_id!r}.")
    return ok(_token(repo.revoke_token(token_id, by=user.name)))


class PasswordChange(BaseModel):
    current: str = Field(max_length=1024)
    new: str = Field(max_length=1024)


@router.post("/me/password", openapi_extra=SIGNED_IN)
def change_password(request: Request, body: PasswordChange) -> Response:
    """Change the caller's password (the current one is checked first). Every browser session
    signed in before is signed out; a caller signed in with a cookie gets a new session."""
    repo, user = _base(request).metadata.access, request.state.user
    if repo.verify_password(user.name, body.current) is None:
        raise ApiError(403, "forbidden", "The current password is wrong.")
    repo.set_password(user.name, body.new, by=user.name)
    response = Response(status_code=204)
    if getattr(request.state, "session", None) is not None:
        renew_session(request, response, user.name)
    return response


# -- platform admin: users -------------------------------------------------------------------


@router.get("/users", openapi_extra=PLATFORM)
def list_users(request: Request) -> Response:
    return ok({"users": [_user(u) for u in _base(request).metadata.access.list_users()]})


class NewUser(BaseModel):
    name: _Name
    email: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=1024)
    is_admin: bool = False


@router.post("/users", openapi_extra=PLATFORM, status_code=201)
def create_user(request: Request, body: NewUser) -> Response:
    """A new user (without a password they use API tokens only, until one is set)."""
    user = _base(request).metadata.access.create_user(
        body.name,
        by=request.state.user.name,
        password=body.password,
        email=body.email,
        is_admin=body.is_admin,
    )
    return ok(_user(user), 201)


class UserState(BaseModel):
    disabled: bool


@router.patch("/users/{name}", openapi_extra=PLATFORM)
def set_user_state(request: Request, name: str, body: UserState) -> Response:
    """Disable (no sign-in, no token works) or enable a user."""
    repo, by = _base(request).metadata.access, request.state.user.name
    user = repo.disable_user(name, by=by) if body.disabled else repo.enable_user(name, by=by)
    return ok(_user(user))


class NewPassword(BaseModel):
    password: str = Field(max_length=1024)


@router.put("/users/{name}/password", openapi_extra=PLATFORM)
def set_password(request: Request, name: str, body: NewPassword) -> Response:
    _base(request).metadata.access.set_password(name, body.password, by=request.state.user.name)
    return Response(status_code=204)


@router.get("/users/{name}/tokens", openapi_extra=PLATFORM)
def user_tokens(request: Request, name: str) -> Response:
    return ok({"tokens": [_token(t) for t in _base(request).metadata.access.list_tokens(name)]})


@router.post("/users/{name}/tokens", openapi_extra=PLATFORM, status_code=201)
def create_user_token(request: Request, name: str, body: NewToken) -> Response:
    """A new API token of user ``name`` (a robot without a password, e.g. CI); its secret is
    in this answer only."""
    return _mint(request, name, body)


@router.delete("/users/{name}/tokens/{token_id}", openapi_extra=PLATFORM)
def revoke_user_token(request: Request, name: str, token_id: str) -> Response:
    repo = _base(request).metadata.access
    if all(t.id != token_id for t in repo.list_tokens(name)):
        raise NotFoundError(f"User {name!r} has no API token {token_id!r}.")
    return ok(_token(repo.revoke_token(token_id, by=request.state.user.name)))


# -- project admin: roles and audit ----------------------------------------------------------


@router.get("/projects/{project}/roles", openapi_extra=ADMIN)
def project_roles(ws: WS) -> Response:
    """Who holds which role on the project."""
    return ok({"project": ws.project.name, "roles": ws.metadata.access.roles(ws.project.id)})


class RoleChange(BaseModel):
    role: Literal["viewer", "editor", "admin"]


@router.put("/projects/{project}/roles/{user}", openapi_extra=ADMIN)
def set_role(ws: WS, user: str, body: RoleChange) -> Response:
    """Give ``user`` a role on the project (replacing the one they had)."""
    ws.metadata.access.set_role(ws.project.id, user, body.role, by=ws.user)
    return ok({"project": ws.project.name, "user": user, "role": body.role})


@router.delete("/projects/{project}/roles/{user}", openapi_extra=ADMIN)
def remove_role(ws: WS, user: str) -> Response:
    if not ws.metadata.access.remove_role(ws.project.id, user, by=ws.user):
        raise NotFoundError(f"{user!r} holds no role on project {ws.project.name!r}.")
    return Response(status_code=204)


_Since = Annotated[float | None, Query(description="Epoch seconds.")]
_After = Annotated[int | None, Query(ge=0)]
_Limit = Annotated[int, Query(ge=1, le=10_000)]


@router.get("/projects/{project}/audit", openapi_extra=ADMIN)
def project_audit(
    ws: WS, since: _Since = None, after_seq: _After = None, limit: _Limit = 500
) -> Response:
    """The project's audit events, oldest first (page with ``after_seq``)."""
    events = ws.metadata.audit.events(
        project_id=ws.project.id, since=since, after_seq=after_seq, limit=limit
    )
    return ok({"events": events})


@router.get("/audit", openapi_extra=PLATFORM)
def audit(
    request: Request, since: _Since = None, after_seq: _After = None, limit: _Limit = 500
) -> Response:
    """Every audit event (all projects and the platform's own), oldest first."""
    events = _base(request).metadata.audit.events(since=since, after_seq=after_seq, limit=limit)
    return ok({"events": events})


@router.get("/audit/verify", openapi_extra=PLATFORM)
def verify_audit(request: Request) -> Response:
    """Walk the hash chain: ``ok``, or the first edited, inserted or deleted event."""
    return ok(_base(request).metadata.audit.verify())
