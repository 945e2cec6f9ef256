"""The audit log: the project's events, newest first, or the whole log in order from a given
sequence number; and, on request, a verification of the hash chain.

Site administrators may view every project's events (``?scope=all``); everyone else sees
their project's. A store without an audit log (an older schema) gets a page that says so.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from meguri.store import Workspace
from meguri.studio._access import VIEWER
from meguri.studio._render import Renderer

__all__ = ["register"]

PAGE_SIZES = (50, 100, 500)


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get("/audit", name="studio_audit", openapi_extra=VIEWER, response_class=HTMLResponse)
    def audit(
        request: Request,
        after_seq: Annotated[int | None, Query(ge=0)] = None,
        limit: int = 100,
        scope: str = "project",
        verify: bool = False,
    ) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        everything = scope == "all" and bool(getattr(request.state.user, "is_admin", False))
        context = audit_context(ws, after_seq, limit, everything, verify)
        return renderer.page(request, "audit.html", context)


def audit_context(
    ws: Workspace, after_seq: int | None, limit: int, everything: bool, verify: bool
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "title": "Audit log",
        "section": "audit",
        "available": hasattr(ws.metadata, "audit"),
        "events": [],
        "after_seq": after_seq,
        "limit": limit if limit in PAGE_SIZES else 100,
        "sizes": PAGE_SIZES,
        "scope": "all" if everything else "project",
        "next_after": None,
        "verification": None,
    }
    if not context["available"]:
        return context
    repo = ws.metadata.audit
    size = context["limit"]
    project = None if everything else ws.project.id
    if after_seq is None:  # the newest events
        events = repo.events(project_id=project, limit=size, newest_first=True)
    else:  # the log in order, a page at a time
        events = repo.events(project_id=project, limit=size + 1, after_seq=after_seq)
        if len(events) > size:
            events = events[:size]
            context["next_after"] = events[-1].seq
    context["events"] = events
    if verify:
        context["verification"] = repo.verify()
    return context
