"""The MLflow model registry subset, on meguri's registry, for ``MlflowClient()``'s
``get_registered_model``, ``search_registered_models``, ``get_latest_versions``,
``get_model_version``, ``search_model_versions``, ``set_registered_model_alias``,
``delete_registered_model_alias`` and ``get_model_version_by_alias``:

===================================================  ========================================
``GET  registered-models/get``, ``search``           models (search: name and tags, paged)
``GET|POST registered-models/get-latest-versions``   the newest version of each stage
``GET  model-versions/get``, ``search``              versions (name, run_id, version_number,
                                                     tags)
``GET  registered-models/alias``                     the version an alias points at
``POST registered-models/alias``                     move an alias (editor; production: admin)
``DELETE registered-models/alias``                   remove an alias (admin)
``POST registered-models/create``,                   refused: see below
``model-versions/create``
===================================================  ========================================

Aliases move through meguri's own rules, as ``meguri models promote`` and ``meguri models
alias`` move them: ``production`` is set by promotion only, so setting it runs the gates (the
latest result of every success criterion of the version's run must pass) and a failing gate
refuses the move with an error naming each failing criterion; other aliases follow meguri's
alias rules (lowercase names; an archived version carries none).

Versions are numbered as in MLflow; a version's ``source`` is ``runs:/<run_id>/model``, the
package files its training run logged (readable through the artifact routes). MLflow's stages
are derived, since meguri has aliases instead: ``Archived`` for an archived version,
``Production`` or ``Staging`` for one that carries that alias, else ``None``.

Creating registered models or versions from an MLflow client is refused: a meguri model version
is a package in safe formats (ONNX, skops with an allowlist, native booster text) with every
file's sha256, built by ``meguri train`` and registered with ``meguri models register RUN
--name NAME``; an MLflow model directory (often a pickle) is not one. The error says so.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.responses import Response

import meguri.registry as reg
from meguri.errors import NotFoundError, RegistryError
from meguri.server import _mlflow_convert as conv
from meguri.server._access import Access, satisfies
from meguri.server._deps import WS, ok
from meguri.server._errors import ApiError
from meguri.server._mlflow_common import ADMIN, EDITOR, VIEWER, Body
from meguri.store import Workspace
from meguri.store.metadata import Model, ModelAlias, ModelStatus, ModelVersion

__all__ = ["router"]

router = APIRouter(tags=["mlflow"])
_Name = Annotated[str, Query(min_length=1, max_length=200)]
_NOT_HERE = (
    "Creating {what} from an MLflow client is not supported: meguri registers model packages "
    "in safe formats (ONNX, skops, native booster text), never pickles. Train with `meguri "
    "train`, then register the run with `meguri models register RUN --name NAME` (or POST "
    "/api/v1/projects/<project>/models)."
)
_VERSION_FIELDS = ("name", "version_number", "run_id", "creation_timestamp")
_MODEL_FIELDS = ("name", "creation_timestamp", "last_updated_timestamp")


def _model(ws: Workspace, name: str) -> Model:
    found = ws.metadata.models.find_model(ws.project.id, name)
    if found is None:
        raise NotFoundError(f"Registered Model with name={name} not found")
    return found


def _version(ws: Workspace, model: Model, version: str) -> ModelVersion:
    if not version.isdigit():
        raise ApiError(400, "bad_request", f"Version must be a number, not {version!r}.")
    found = ws.metadata.models.find_version(model.id, int(version))
    if found is None:
        raise NotFoundError(f"Model Version (name={model.name}, version={version}) not found")
    return found


def _stage(v: ModelVersion) -> str:
    if v.status is ModelStatus.ARCHIVED:
        return "Archived"
    if "production" in v.aliases:
        return "Production"
    return "Staging" if "staging" in v.aliases else "None"


def _updated(v: ModelVersion, aliases: list[ModelAlias]) -> float:
    moves = [a.updated_at for a in aliases if a.version_id == v.id]
    return max([v.created_at, *moves])


def _version_json(v: ModelVersion, aliases: list[ModelAlias]) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": str(v.version),
        "creation_timestamp": conv.ms(v.created_at),
        "last_updated_timestamp": conv.ms(_updated(v, aliases)),
        "user_id": v.created_by,
        "current_stage": _stage(v),
        "description": v.description or "",
        "source": f"runs:/{v.run_id}/model",
        "run_id": v.run_id,
        "status": "READY",
        "tags": [{"key": k, "value": val} for k, val in v.tags.items()],
        "aliases": list(v.aliases),
    }


def _latest_by_stage(versions: list[ModelVersion], stages: list[str] | None) -> list[ModelVersion]:
    wanted = {s.lower() for s in stages} if stages else None
    latest: dict[str, ModelVersion] = {}
    for v in versions:  # oldest first: the last one of a stage wins
        if wanted is None or _stage(v).lower() in wanted:
            latest[_stage(v)] = v
    return sorted(latest.values(), key=lambda v: v.version)


def _model_record(ws: Workspace, m: Model) -> dict[str, Any]:
    """The model in MLflow's shape (``json``) with what searches filter and order by."""
    repo = ws.metadata.models
    versions, aliases = repo.versions(m.id), repo.aliases(m.id)
    updated = max([m.created_at, *(_updated(v, aliases) for v in versions)])
    body = {
        "name": m.name,
        "creation_timestamp": conv.ms(m.created_at),
        "last_updated_timestamp": conv.ms(updated),
        "user_id": m.created_by,
        "description": m.description or "",
        "latest_versions": [_version_json(v, aliases) for v in _latest_by_stage(versions, None)],
        "tags": [{"key": k, "value": v} for k, v in m.tags.items()],
        "aliases": [{"alias": a.alias, "version": str(a.version)} for a in aliases],
    }
    return {**body, "tags": m.tags, "json": body}


def _page(key: str, records: list[dict[str, Any]], token: str | None, size: int) -> Response:
    """One page of ``records`` (their MLflow ``json``) under ``key``, and the next token."""
    start = conv.from_page_token(token)
    page = records[start : start + size]
    answer: dict[str, Any] = {key: [r["json"] for r in page]}
    if start + len(page) < len(records):
        answer["next_page_token"] = conv.page_token(start + len(page))
    return ok(answer)


# -- registered models -----------------------------------------------------------------------


@router.get("/registered-models/get", openapi_extra=VIEWER)
def get_registered_model(ws: WS, name: _Name) -> Response:
    return ok({"registered_model": _model_record(ws, _model(ws, name))["json"]})


@router.get("/registered-models/search", openapi_extra=VIEWER)
def search_registered_models(
    ws: WS,
    filter: Annotated[str | None, Query(max_length=1000)] = None,
    max_results: Annotated[int, Query(ge=1, le=1000)] = 100,
    order_by: Annotated[list[str] | None, Query(max_length=10)] = None,
    page_token: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """The project's models whose name or tags match ``filter``, by name unless ordered."""
    keep = conv.record_filter(filter, ("name",))
    found = [_model_record(ws, m) for m in ws.metadata.models.list_models(ws.project.id)]
    ordered = conv.sort_records([r for r in found if keep(r)], order_by, _MODEL_FIELDS)
    return _page("registered_models", ordered, page_token, max_results)


class LatestVersions(Body):
    name: str = Field(min_length=1, max_length=200)
    stages: list[str] = Field(default_factory=list, max_length=10)


def _latest_answer(ws: Workspace, body: LatestVersions) -> Response:
    model = _model(ws, body.name)
    repo = ws.metadata.models
    aliases = repo.aliases(model.id)
    latest = _latest_by_stage(repo.versions(model.id), body.stages or None)
    return ok({"model_versions": [_version_json(v, aliases) for v in latest]})


@router.post("/registered-models/get-latest-versions", openapi_extra=VIEWER)
def get_latest_versions(ws: WS, body: LatestVersions) -> Response:
    """The newest version of each stage (``stages``: only those; see the module docstring)."""
    return _latest_answer(ws, body)


@router.get("/registered-models/get-latest-versions", openapi_extra=VIEWER)
def get_latest_versions_by_query(
    ws: WS, name: _Name, stages: Annotated[list[str] | None, Query(max_length=10)] = None
) -> Response:
    return _latest_answer(ws, LatestVersions(name=name, stages=stages or []))


@router.post("/registered-models/create", openapi_extra=EDITOR)
def create_registered_model(ws: WS) -> Response:
    raise RegistryError(_NOT_HERE.format(what="registered models"))


# -- versions --------------------------------------------------------------------------------


@router.get("/model-versions/get", openapi_extra=VIEWER)
def get_model_version(
    ws: WS, name: _Name, version: Annotated[str, Query(min_length=1, max_length=20)]
) -> Response:
    model = _model(ws, name)
    found = _version(ws, model, version)
    aliases = ws.metadata.models.aliases(model.id)
    return ok({"model_version": _version_json(found, aliases)})


def _version_records(ws: Workspace, models: list[Model]) -> list[dict[str, Any]]:
    records = []
    for m in models:
        aliases = ws.metadata.models.aliases(m.id)
        for v in reversed(ws.metadata.models.versions(m.id)):  # newest first
            body = _version_json(v, aliases)
            records.append({**body, "version_number": v.version, "tags": v.tags, "json": body})
    return records


@router.get("/model-versions/search", openapi_extra=VIEWER)
def search_model_versions(
    ws: WS,
    filter: Annotated[str | None, Query(max_length=1000)] = None,
    max_results: Annotated[int, Query(ge=1, le=200_000)] = 10_000,
    order_by: Annotated[list[str] | None, Query(max_length=10)] = None,
    page_token: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Versions whose name, run, number or tags match ``filter``; by name, newest first."""
    keep = conv.record_filter(filter, ("name", "run_id", "version_number"))
    models = ws.metadata.models.list_models(ws.project.id)
    found = [r for r in _version_records(ws, models) if keep(r)]
    ordered = conv.sort_records(found, order_by, _VERSION_FIELDS)
    return _page("model_versions", ordered, page_token, max_results)


@router.post("/model-versions/create", openapi_extra=EDITOR)
def create_model_version(ws: WS) -> Response:
    raise RegistryError(_NOT_HERE.format(what="model versions"))


# -- aliases ---------------------------------------------------------------------------------


class AliasRef(Body):
    name: str = Field(min_length=1, max_length=200)
    alias: str = Field(min_length=1, max_length=64)


class AliasMove(AliasRef):
    version: str = Field(min_length=1, max_length=20)


@router.post("/registered-models/alias", openapi_extra=EDITOR)
def set_registered_model_alias(request: Request, ws: WS, body: AliasMove) -> Response:
    """Point the alias at the version, as the REST API does: editors move ordinary aliases;
    ``production`` is a promotion, for admins only, and the gates run first."""
    version = _version(ws, _model(ws, body.name), body.version)
    if body.alias in reg.PROTECTED_ALIASES:
        if not satisfies(request.state.role, Access.ADMIN):
            raise ApiError(
                403,
                "forbidden",
                f"Moving {body.alias!r} is a promotion: it needs the admin role on project "
                f"{ws.project.name!r}; your role there is {request.state.role}.",
            )
        reg.promote(version.id, body.alias, workspace=ws)
    else:
        reg.set_alias(version.id, body.alias, workspace=ws)
    return ok({})


@router.delete("/registered-models/alias", openapi_extra=ADMIN)
def delete_registered_model_alias(ws: WS, body: AliasRef) -> Response:
    model = _model(ws, body.name)
    if ws.metadata.models.find_alias(model.id, body.alias) is None:
        raise NotFoundError(f"Registered model alias {body.alias} not found.")
    reg.remove_alias(model.name, body.alias, workspace=ws)
    return ok({})


@router.get("/registered-models/alias", openapi_extra=VIEWER)
def get_model_version_by_alias(
    ws: WS, name: _Name, alias: Annotated[str, Query(min_length=1, max_length=64)]
) -> Response:
    model = _model(ws, name)
    found = ws.metadata.models.find_alias(model.id, alias)
    if found is None:
        raise NotFoundError(f"Registered model alias {alias} not found.")
    return ok({"model_version": _version_json(found, ws.metadata.models.aliases(model.id))})
