"""Deployments: each environment's traffic split, health, and revision history.

Health is what the store and the host know, without calling the endpoint: the deployment's
state, whether its supervisor process holds its lock (:func:`meguri.deploy.status`), and the
latency, error rate and traffic of the latest monitor window of the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from meguri import deploy
from meguri.deploy._rollout import reached
from meguri.errors import MeguriError
from meguri.store import Workspace
from meguri.store.metadata import Deployment, DeploymentRevision, MonitorWindow, RevisionState
from meguri.studio._access import VIEWER
from meguri.studio._render import Renderer

__all__ = ["register"]

#: The figures of the latest window shown as health, with their labels.
HEALTH_FIGURES = (
    ("latency_p95_ms", "p95 latency (ms)"),
    ("error_rate", "error rate"),
    ("throughput_rps", "requests / s"),
    ("drift.share", "drifted columns"),
)
_ROLE_COLOURS = {"primary": "#0b5cad", "canary": "#bf8700", "shadow": "#8c959f"}


@dataclass(frozen=True)
class Segment:
    """One part of the traffic bar: a target's share, laid out in percent of the width."""

    ref: str
    role: str
    weight: float
    x: float
    colour: str


@dataclass(frozen=True)
class Environment:
    deployment: Deployment
    revision: DeploymentRevision | None
    running: bool | None  # None: not known (the supervisor's state folder is not readable)
    window: MonitorWindow | None
    segments: list[Segment]


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get(
        "/deployments", name="studio_deployments", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def deployments(request: Request) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        found = [_environment(ws, d) for d in ws.metadata.deployments.list(ws.project.id)]
        context = {"title": "Deployments", "section": "deployments", "environments": found,
                   "health": HEALTH_FIGURES}  # fmt: skip
        return renderer.page(request, "deployments.html", context)

    @router.get(
        "/deployments/{environment}",
        name="studio_deployment",
        openapi_extra=VIEWER,
        response_class=HTMLResponse,
    )
    def deployment(request: Request, environment: str) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        return renderer.page(request, "deployment.html", deployment_context(ws, environment))


def deployment_context(ws: Workspace, environment: str) -> dict[str, Any]:
    found = ws.metadata.deployments.get(ws.project.id, environment)
    return {
        "title": f"Deployments · {environment}",
        "section": "deployments",
        "env": _environment(ws, found),
        "revisions": ws.metadata.deployments.revisions(found.id)[::-1],
        "health": HEALTH_FIGURES,
        "split": traffic_split,
    }


def _environment(ws: Workspace, found: Deployment) -> Environment:
    revision = None
    if found.current_revision_id is not None:
        revision = ws.metadata.deployments.get_revision(found.current_revision_id)
    windows = ws.metadata.monitor.windows(ws.project.id, found.environment, limit=1)
    return Environment(
        deployment=found,
        revision=revision,
        running=_running(ws, found),
        window=windows[-1] if windows else None,
        segments=traffic_split(revision),
    )


def _running(ws: Workspace, found: Deployment) -> bool | None:
    if not found.pid:
        return False
    try:
        return deploy.status(found.environment, workspace=ws).running
    except (MeguriError, OSError):
        return None


def traffic_split(revision: DeploymentRevision | None) -> list[Segment]:
    """The routing table the revision is at (its rollout step, or its last phase once live);
    a shadow gets a copy of the traffic, not a share, so it has no segment. A revision that
    was rolled back or failed routes nothing."""
    if revision is None:
        return []
    if revision.state is not RevisionState.LIVE and not revision.state.is_active:
        return []
    segments, x = [], 0.0
    for target, weight, role in reached(revision):
        if role == "shadow" or weight <= 0:
            continue
        colour = _ROLE_COLOURS.get(role, "#57606a")
        segments.append(Segment(target.ref, role, weight, x, colour))
        x += weight
    return segments
