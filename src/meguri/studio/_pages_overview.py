"""The project overview: what the project is for, how far it got, and the requirement
traceability matrix (see :mod:`meguri.studio._trace`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from meguri.store import Workspace
from meguri.store.metadata import AlertState
from meguri.studio._access import VIEWER
from meguri.studio._render import Renderer
from meguri.studio._trace import current_spec, traceability

__all__ = ["register"]


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get("/", name="studio_overview", openapi_extra=VIEWER, response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        return renderer.page(request, "overview.html", overview_context(ws))


def overview_context(ws: Workspace) -> dict[str, Any]:
    spec, version, problem = current_spec(ws)
    return {
        "title": "Overview",
        "section": "overview",
        "spec": spec,
        "spec_version": version,
        "spec_number": ws.metadata.specs.count(ws.project.id) if version else None,
        "spec_problem": problem,
        "counts": _counts(ws),
        "rows": traceability(ws, spec),
    }


def _counts(ws: Workspace) -> list[tuple[str, int, str]]:
    """``(label, number, route)`` for the summary cards."""
    meta, pid = ws.metadata, ws.project.id
    experiments = meta.runs.list_experiments(pid)
    firing = meta.monitor.alerts(pid, state=AlertState.FIRING)
    return [
        ("datasets", len(meta.datasets.list(pid)), "studio_data"),
        ("runs", meta.runs.count([e.id for e in experiments]) if experiments else 0,
         "studio_experiments"),
        ("models", len(meta.models.list_models(pid)), "studio_models"),
        ("deployments", len(meta.deployments.list(pid)), "studio_deployments"),
        ("firing alerts", len(firing), "studio_monitoring"),
        ("documents", len(meta.documents.list(pid)), "studio_documents"),
    ]  # fmt: skip
