"""The model registry: models, versions, aliases, gates, gated promotion, cards, package files.

Editors register versions, describe and tag them and move ordinary aliases (``staging``);
admins promote (the gates run; an override needs a reason and is recorded), archive and remove
aliases. ``production`` moves only by promotion.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

import meguri.registry as reg
from meguri.errors import NotFoundError, RegistryError
from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.server._errors import ApiError
from meguri.server._runs_shared import project_run
from meguri.store import Workspace
from meguri.store.metadata import Model, ModelVersion

router = APIRouter(prefix="/api/v1/projects/{project}/models", tags=["models"])
VIEWER = access(Access.VIEWER)
EDITOR = access(Access.EDITOR)
ADMIN = access(Access.ADMIN)


def _model(ws: Workspace, name: str) -> Model:
    found = ws.metadata.models.find_model(ws.project.id, name)
    if found is None:
        raise NotFoundError(f"No model named {name!r} in project {ws.project.name!r}.")
    return found


def _version(ws: Workspace, name: str, selector: str) -> ModelVersion:
    _model(ws, name)
    try:
        return reg.get_model_version(f"{name}@{selector}", workspace=ws)
    except RegistryError as err:
        raise NotFoundError(str(err)) from None


def version_json(v: ModelVersion) -> dict[str, Any]:
    return {
        "id": v.id,
        "name": v.name,
        "version": v.version,
        "ref": v.ref,
        "run_id": v.run_id,
        "status": v.status,
        "aliases": list(v.aliases),
        "task": v.task,
        "runtime": v.runtime,
        "metrics": v.metrics,
        "signature": v.signature,
        "description": v.description,
        "tags": v.tags,
        "spec_version_id": v.spec_version_id,
        "package_digest": v.package_digest,
        "has_card": v.card_html_digest is not None,
        "created_at": v.created_at,
        "created_by": v.created_by,
    }


def _model_json(ws: Workspace, m: Model) -> dict[str, Any]:
    latest = ws.metadata.models.latest(m.id)
    aliases = {a.alias: a.version for a in ws.metadata.models.aliases(m.id)}
    return {
        "id": m.id,
        "name": m.name,
        "description": m.description,
        "tags": m.tags,
        "archived": m.archived,
        "created_at": m.created_at,
        "created_by": m.created_by,
        "aliases": aliases,
        "latest_version": latest.version if latest else None,
    }


@router.get("", openapi_extra=VIEWER)
def list_models(ws: WS, archived: bool = False) -> Response:
    """The project's models (``archived=true``: also those with no ready version)."""
    models = ws.metadata.models.list_models(ws.project.id, include_archived=archived)
    return ok({"models": [_model_json(ws, m) for m in models]})


class Registration(BaseModel):
    run_id: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    tags: dict[str, str] = Field(default_factory=dict, max_length=100)


@router.post("", openapi_extra=EDITOR, status_code=201)
def register(ws: WS, body: Registration) -> Response:
    """Register the model package logged by run ``run_id`` as the next version of ``name``
    (the same package again: that version)."""
    run = project_run(ws, body.run_id)
    version = reg.register_model(
        run.id, body.name, workspace=ws, description=body.description, tags=body.tags
    )
    return ok(version_json(version), 201)


@router.get("/{name}", openapi_extra=VIEWER)
def show_model(ws: WS, name: str) -> Response:
    """A model with every version, newest first."""
    model = _model(ws, name)
    versions = ws.metadata.models.versions(model.id)
    return ok({**_model_json(ws, model), "versions": [version_json(v) for v in versions]})


@router.get("/{name}/events", openapi_extra=VIEWER)
def model_events(ws: WS, name: str) -> Response:
    """The model's history: registrations, alias moves, promotions, overrides, archiving."""
    return ok({"events": ws.metadata.models.events(_model(ws, name).id)})


@router.get("/{name}/versions/{version}", openapi_extra=VIEWER)
def show_version(ws: WS, name: str, version: str) -> Response:
    """One version (by number, alias or ``latest``) with the files of its package."""
    v = _version(ws, name, version)
    return ok({**version_json(v), "files": v.files})


@router.get("/{name}/versions/{version}/gates", openapi_extra=VIEWER)
def version_gates(ws: WS, name: str, version: str) -> Response:
    """The latest result of each success criterion for the version: what promotion checks."""
    report = reg.check_gates(_version(ws, name, version).id, workspace=ws)
    return ok(
        {
            "ref": report.version.ref,
            "passed": report.passed,
            "problems": report.problems(),
            "results": report.results,
        }
    )


@router.get("/{name}/versions/{version}/card", openapi_extra=VIEWER)
def version_card(
    ws: WS, name: str, version: str, format: Literal["markdown", "html"] = "markdown"
) -> Response:
    """The model card, Markdown or HTML (a self-contained page, served sandboxed)."""
    v = _version(ws, name, version)
    text = reg.read_card(v.id, html=format == "html", workspace=ws)
    if format == "html":
        return Response(
            text,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": "sandbox"},
        )
    return Response(text, media_type="text/markdown; charset=utf-8")


@router.get("/{name}/versions/{version}/files/{path:path}", openapi_extra=VIEWER)
def package_file(ws: WS, name: str, version: str, path: str) -> Response:
    """One file of the version's package, by its path in the package (sha256-verified)."""
    v = _version(ws, name, version)
    entry = v.files.get(path)
    if entry is None:
        raise ApiError(404, "not_found", f"{v.ref}'s package has no file {path!r}.")
    data = ws.artifacts.get_bytes(str(entry["sha256"]))
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{path.rsplit("/", 1)[-1]}"'},
    )


class Promotion(BaseModel):
    alias: str = Field("production", min_length=1, max_length=64)
    override_reason: str | None = Field(None, max_length=2000)


@router.post("/{name}/versions/{version}/promote", openapi_extra=ADMIN)
def promote(ws: WS, name: str, version: str, body: Promotion) -> Response:
    """Point ``alias`` at the version once its gates pass (409 naming each failing criterion);
    ``override_reason`` promotes anyway and is recorded in the model's history."""
    v = _version(ws, name, version)
    promoted = reg.promote(v.id, body.alias, override_reason=body.override_reason, workspace=ws)
    return ok(version_json(promoted))


class AliasTarget(BaseModel):
    version: int = Field(ge=1)


@router.put("/{name}/aliases/{alias}", openapi_extra=EDITOR)
def set_alias(ws: WS, name: str, alias: str, body: AliasTarget) -> Response:
    """Point an ordinary alias (``staging``, ``champion``) at a version; ``production`` is set
    by promotion only."""
    v = _version(ws, name, str(body.version))
    return ok(version_json(reg.set_alias(v.id, alias, workspace=ws)))


@router.delete("/{name}/aliases/{alias}", openapi_extra=ADMIN)
def remove_alias(ws: WS, name: str, alias: str) -> Response:
    """Remove an alias from the model."""
    _model(ws, name)
    reg.remove_alias(name, alias, workspace=ws)
    return Response(status_code=204)


@router.post("/{name}/versions/{version}/archive", openapi_extra=ADMIN)
def archive(ws: WS, name: str, version: str) -> Response:
    """Archive a version: it keeps its package and history, loses its aliases."""
    return ok(version_json(reg.archive(_version(ws, name, version).id, workspace=ws)))


class Description(BaseModel):
    description: str | None = Field(None, max_length=10_000)
    tags: dict[str, str | None] = Field(default_factory=dict, max_length=100)


@router.patch("/{name}/versions/{version}", openapi_extra=EDITOR)
def update_version(ws: WS, name: str, version: str, body: Description) -> Response:
    """Set the version's description and merge tags (a null value removes a tag)."""
    v = _version(ws, name, version)
    if body.description is not None:
        reg.describe(v.id, body.description, workspace=ws)
    if body.tags:
        reg.tag(v.id, body.tags, workspace=ws)
    return ok(version_json(ws.metadata.models.get_version(v.id)))
