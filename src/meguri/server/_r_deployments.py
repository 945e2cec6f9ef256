"""Deployments: each environment's endpoint, its revisions (traffic split, state, reason),
and the admin's actions on it: deploy a version, roll back, stop.

Deploying and rolling back answer once the new revision is recorded and the supervisor is told
(they do not wait for the rollout); ``GET .../{env}`` follows it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import Response

import meguri.deploy as dep
from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.store.metadata import Deployment, DeploymentRevision

router = APIRouter(prefix="/api/v1/projects/{project}/deployments", tags=["deployments"])
VIEWER = access(Access.VIEWER)
ADMIN = access(Access.ADMIN)


def _deployment(d: Deployment) -> dict[str, Any]:
    return {
        "id": d.id,
        "environment": d.environment,
        "model": d.model_name,
        "state": d.state,
        "port": d.port,
        "revision": d.current_number,
        "updated_at": d.updated_at,
        "created_at": d.created_at,
        "created_by": d.created_by,
    }


def revision_json(r: DeploymentRevision) -> dict[str, Any]:
    return {
        "id": r.id,
        "number": r.number,
        "state": r.state,
        "strategy": r.strategy,
        "step": r.step,
        "reason": r.reason,
        "targets": [t.to_dict() for t in r.targets],
        "settings": r.settings,
        "detail": r.detail,
        "updated_at": r.updated_at,
        "created_at": r.created_at,
        "created_by": r.created_by,
    }


@router.get("", openapi_extra=VIEWER)
def list_deployments(ws: WS) -> Response:
    """Every environment of the project with the revision it serves."""
    return ok(
        {"deployments": [_deployment(d) for d in ws.metadata.deployments.list(ws.project.id)]}
    )


@router.get("/{env}", openapi_extra=VIEWER)
def deployment_status(ws: WS, env: str) -> Response:
    """The environment now: state, whether its supervisor runs, its URL, the current revision
    and its traffic split."""
    status = dep.status(env, workspace=ws)
    revision = None if status.revision is None else revision_json(status.revision)
    return ok(
        {
            **_deployment(status.deployment),
            "running": status.running,
            "url": status.url,
            "current": revision,
        }
    )


@router.get("/{env}/history", openapi_extra=VIEWER)
def deployment_history(ws: WS, env: str) -> Response:
    """Every revision of the environment, oldest first."""
    return ok({"revisions": [revision_json(r) for r in dep.history(env, workspace=ws)]})


class Rollback(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)
    to: int | None = Field(
        None,
        ge=1,
        description="Revision to serve again (default: the "
        "last one that served fully before the current one).",
    )


@router.post("/{env}/rollback", openapi_extra=ADMIN, status_code=202)
def rollback(ws: WS, env: str, body: Rollback) -> Response:
    """Serve again an earlier revision's version, at once, as a new revision."""
    revision = dep.rollback(env, reason=body.reason, to=body.to, workspace=ws, wait=False)
    return ok(revision_json(revision), 202)


class Deploy(BaseModel):
    model: str = Field(min_length=1, max_length=300, description="NAME@VERSION or NAME@ALIAS")
    strategy: str | None = Field(None, max_length=50)
    reason: str | None = Field(None, max_length=2000)


@router.post("/{env}", openapi_extra=ADMIN, status_code=202)
def deploy(ws: WS, env: str, body: Deploy) -> Response:
    """Deploy a model version to the environment with the spec's (or the given) strategy."""
    revision = dep.deploy(
        body.model, env=env, workspace=ws, strategy=body.strategy, reason=body.reason, wait=False
    )
    return ok(revision_json(revision), 202)


@router.post("/{env}/stop", openapi_extra=ADMIN)
def stop(ws: WS, env: str) -> Response:
    """Stop the environment's endpoint."""
    return ok(_deployment(dep.stop(env, workspace=ws)))
