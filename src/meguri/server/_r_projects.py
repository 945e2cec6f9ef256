"""Projects, their spec versions (list, show, diff) and documents."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.spec import diff_specs, resolve_spec_version
from meguri.store import Workspace
from meguri.store.metadata import Project, SpecVersion

router = APIRouter(prefix="/api/v1", tags=["projects"])
VIEWER = access(Access.VIEWER)


def _spec_summary(ws: Workspace, version: SpecVersion, number: int | None = None) -> dict[str, Any]:
    return {
        "id": version.id,
        "number": number if number is not None else ws.metadata.specs.number(version),
        "hash": version.hash,
        "message": version.message,
        "created_at": version.created_at,
        "created_by": version.created_by,
    }


@router.get("/projects", openapi_extra=access(Access.AUTHENTICATED))
def list_projects(request: Request) -> Response:
    """The projects the caller holds a role on (every project for a platform admin)."""
    ws: Workspace = request.app.state.workspace
    user = request.state.user
    held = {} if user.is_admin else ws.metadata.access.user_roles(user.name)
    found = [
        {**_project(p), "role": "admin" if user.is_admin else held[p.id]}
        for p in ws.metadata.projects.list()
        if user.is_admin or p.id in held
    ]
    return ok({"projects": found, "default": ws.project.name})


def _project(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "created_at": project.created_at,
        "created_by": project.created_by,
    }


@router.get("/projects/{project}", openapi_extra=VIEWER)
def show_project(ws: WS, request: Request) -> Response:
    """A project with counts of what it holds and the caller's role on it."""
    meta, pid = ws.metadata, ws.project.id
    experiments = meta.runs.list_experiments(pid)
    latest = meta.specs.latest(pid)
    return ok(
        {
            **_project(ws.project),
            "role": request.state.role,
            "spec_versions": meta.specs.count(pid),
            "latest_spec": None if latest is None else _spec_summary(ws, latest),
            "experiments": len(experiments),
            "runs": meta.runs.count([e.id for e in experiments]) if experiments else 0,
            "datasets": len(meta.datasets.list(pid)),
            "models": len(meta.models.list_models(pid)),
            "deployments": [d.environment for d in meta.deployments.list(pid)],
        }
    )


@router.get("/projects/{project}/specs", openapi_extra=VIEWER)
def list_specs(ws: WS) -> Response:
    """Every saved version of the project's spec, oldest first, numbered from 1."""
    versions = ws.metadata.specs.list(ws.project.id)
    return ok({"versions": [_spec_summary(ws, v, i) for i, v in enumerate(versions, 1)]})


@router.get("/projects/{project}/specs/diff", openapi_extra=VIEWER)
def diff_spec_versions(
    ws: WS,
    a: Annotated[str, Query(max_length=100, description="Older version (ref).")] = "latest~1",
    b: Annotated[str, Query(max_length=100, description="Newer version (ref).")] = "latest",
) -> Response:
    """What changed between two spec versions: structured changes and a unified diff."""
    old = resolve_spec_version(ws.metadata, ws.project.id, a)
    new = resolve_spec_version(ws.metadata, ws.project.id, b)
    diff = diff_specs(old.content, new.content, f"{a} ({old.id})", f"{b} ({new.id})")
    changes = [
        {"kind": c.kind, "path": c.path, "old": c.old, "new": c.new, "note": c.note, "text": str(c)}
        for c in diff.changes
    ]
    return ok(
        {
            "a": _spec_summary(ws, old),
            "b": _spec_summary(ws, new),
            "identical": diff.identical,
            "changes": changes,
            "unified": diff.unified,
        }
    )


@router.get("/projects/{project}/specs/{ref}", openapi_extra=VIEWER)
def show_spec(ws: WS, ref: str) -> Response:
    """One spec version with its YAML: ``latest``, ``latest~N``, a number, an id or a hash
    prefix."""
    version = resolve_spec_version(ws.metadata, ws.project.id, ref)
    return ok({**_spec_summary(ws, version), "content": version.content})


@router.get("/projects/{project}/documents", openapi_extra=VIEWER)
def list_documents(ws: WS) -> Response:
    """The project's documents with their latest version number."""
    latest = ws.metadata.documents.latest_versions(ws.project.id)
    return ok(
        {
            "documents": [
                {
                    "name": name,
                    "version": v.version,
                    "updated_at": v.created_at,
                    "updated_by": v.created_by,
                }
                for name, v in sorted(latest.items())
            ]
        }
    )


@router.get("/projects/{project}/documents/{name}", openapi_extra=VIEWER)
def show_document(
    ws: WS, name: str, version: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    """A document's Markdown (its latest version, or ``version``) and its version list."""
    repo = ws.metadata.documents
    shown = repo.version(ws.project.id, name, version)
    versions = [
        {
            "version": v.version,
            "message": v.message,
            "created_at": v.created_at,
            "created_by": v.created_by,
        }
        for v in repo.versions(ws.project.id, name)
    ]
    return ok(
        {"name": name, "version": shown.version, "content": shown.content, "versions": versions}
    )
