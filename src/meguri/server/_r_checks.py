"""Check results: each success criterion measured on a run, model version or deployment."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from meguri.server._access import Access, access
from meguri.server._deps import WS, ok

router = APIRouter(prefix="/api/v1/projects/{project}/checks", tags=["checks"])
VIEWER = access(Access.VIEWER)


@router.get("", openapi_extra=VIEWER)
def history(
    ws: WS,
    criterion: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> Response:
    """The project's check results, newest first (of one criterion with ``criterion``)."""
    found = ws.metadata.checks.history(ws.project.id, criterion)
    return ok({"checks": found[:limit]})


@router.get("/{kind}/{subject_id}", openapi_extra=VIEWER)
def for_subject(
    ws: WS, kind: Literal["run", "model_version", "deployment"], subject_id: str
) -> Response:
    """Every result recorded for one run, model version or deployment, oldest first."""
    found = ws.metadata.checks.for_subject(kind, subject_id)
    return ok({"checks": [c for c in found if c.project_id == ws.project.id]})
