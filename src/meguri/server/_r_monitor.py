"""Monitoring: each environment's windows (drift, quality, accuracy, latency), one figure over
time, alerts, and ground truth posted as feedback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from meguri.errors import NotFoundError
from meguri.server._access import Access, access
from meguri.server._deps import WS, ok
from meguri.store.metadata import AlertState, MonitorWindow

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["monitor"])
VIEWER = access(Access.VIEWER)
_Time = Annotated[float | None, Query(description="Epoch seconds (UTC).")]


def _window(w: MonitorWindow, details: bool) -> dict[str, Any]:
    shown = {
        "id": w.id,
        "environment": w.environment,
        "start": w.start,
        "end": w.end,
        "rows": w.rows,
        "model_versions": w.model_versions,
        "figures": w.figures,
        "computed_at": w.created_at,
    }
    return {**shown, "details": w.details} if details else shown


@router.get("/monitor", openapi_extra=VIEWER)
def environments(ws: WS) -> Response:
    """The environments that have monitoring windows."""
    return ok({"environments": ws.metadata.monitor.environments(ws.project.id)})


@router.get("/monitor/{env}/windows", openapi_extra=VIEWER)
def windows(
    ws: WS,
    env: str,
    since: _Time = None,
    until: _Time = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = 500,
    details: bool = False,
) -> Response:
    """The windows starting in ``[since, until)``, oldest first (the latest ``limit``);
    ``details=true`` adds the drift, quality and accuracy breakdowns."""
    found = ws.metadata.monitor.windows(ws.project.id, env, since=since, until=until, limit=limit)
    return ok({"environment": env, "windows": [_window(w, details) for w in found]})


@router.get("/monitor/{env}/windows/{window_id}", openapi_extra=VIEWER)
def window(ws: WS, env: str, window_id: str) -> Response:
    """One window with its details."""
    found = ws.metadata.monitor.get_window(window_id)
    if found.project_id != ws.project.id or found.environment != env:
        raise NotFoundError(f"No monitoring window {window_id!r} in {env!r}.")
    return ok(_window(found, True))


@router.get("/monitor/{env}/series", openapi_extra=VIEWER)
def series(
    ws: WS,
    env: str,
    figure: Annotated[str, Query(min_length=1, max_length=300, examples=["drift.share"])],
    since: _Time = None,
    until: _Time = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> Response:
    """One figure over the windows, for charts: ``[{start, end, value}]``."""
    points = ws.metadata.monitor.figure_series(
        ws.project.id, env, figure, since=since, until=until, limit=limit
    )
    return ok({"environment": env, "figure": figure, "points": [p._asdict() for p in points]})


@router.get("/alerts", openapi_extra=VIEWER)
def alerts(
    ws: WS,
    environment: Annotated[str | None, Query(max_length=100)] = None,
    rule: Annotated[str | None, Query(max_length=200)] = None,
    state: AlertState | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Response:
    """The project's alerts, newest first."""
    found = ws.metadata.monitor.alerts(
        ws.project.id, environment=environment, rule=rule, state=state, limit=limit
    )
    return ok({"alerts": found})


class Label(BaseModel):
    request_id: str = Field(min_length=1, max_length=200)
    row: int | None = Field(None, ge=0)
    label: Any


class Feedback(BaseModel):
    records: list[Label] = Field(min_length=1, max_length=100_000)


@router.post("/monitor/{env}/feedback", openapi_extra=access(Access.EDITOR), status_code=201)
def feedback(ws: WS, env: str, body: Feedback) -> Response:
    """Ground truth by request id (and row), checked against the served model's labels and
    written beside the captures; the next monitoring pass measures accuracy with it."""
    from meguri.monitor import record_feedback

    records = [r.model_dump(exclude_none=True) for r in body.records]
    result = record_feedback(ws, env, records)
    return ok(
        {"environment": result.environment, "rows": result.rows, "duplicates": result.duplicates},
        201,
    )


@router.get("/metrics", openapi_extra=VIEWER)
def prometheus_metrics(ws: WS) -> Response:
    """The latest window figures of every environment and the alert states, in Prometheus'
    text format (scrape with ``authorization: {credentials: <token>}``; see
    :mod:`meguri.monitor._exporter` for the series)."""
    from meguri.monitor._exporter import CONTENT_TYPE, render_monitor_metrics

    return Response(render_monitor_metrics(ws, ws.project.id), media_type=CONTENT_TYPE)
