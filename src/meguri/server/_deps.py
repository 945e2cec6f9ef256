"""What handlers receive: the workspace as the caller sees it, JSON answers, paging bounds.

The app holds one workspace (its stores are shared by every request). A handler gets a view of
it for the route's project, acting as the signed-in user, so that everything the phases record
(``created_by``, alias moves, revisions) names the real actor, never the server's login.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import orjson
from fastapi import Depends, Query, Request
from starlette.responses import Response

from meguri.server._errors import ApiError
from meguri.store import Workspace

__all__ = ["WS", "Limit", "Offset", "caller_workspace", "ok"]

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def caller_workspace(request: Request) -> Workspace:
    """The app's workspace for the route's project, acting as the caller."""
    base: Workspace = request.app.state.workspace
    user = getattr(request.state, "user", None)
    if user is None:  # the middleware sets it on every non-public route
        raise ApiError(401, "unauthenticated", "Sign in first.")
    return dataclasses.replace(base, project=request.state.project, user=user.name)


WS = Annotated[Workspace, Depends(caller_workspace)]
Limit = Annotated[int, Query(ge=1, le=10_000, description="Items per page.")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")]


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as JSON: dataclasses, enums, numpy arrays as themselves, NaN as null."""
    return Response(orjson.dumps(data, option=_OPTIONS), status, headers, "application/json")
