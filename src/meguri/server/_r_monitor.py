"""Monitoring: each environment's windows (drift, quality, accuracy, latency), one figure over
time, alerts, and ground truth posted as feedback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from pydantic_core import PydanticCustomError
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


_LABEL_SCHEMA = {
    "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}],
    "description": "The true label: one of a classifier's labels, a number for a regression.",
}


def _scalar_label(value: Any) -> bool | int | float | str:
    """A label is one JSON text, number or boolean: a list, an object or null is refused here,
    naming the field (``records.N.label``), rather than failing deeper as a table column."""
    if value is None:
        raise PydanticCustomError(
            "label_missing", "the label is null; give the true label of that prediction"
        )
    if not isinstance(value, bool | int | float | str):
        kind = (
            "list" if isinstance(value, list) else "object" if isinstance(value, dict) else "value"
        )
        raise PydanticCustomError(
            "label_type",
            "a label is one text, number or true/false, not a JSON {kind}",
            {"kind": kind},
        )
    return value


class Label(BaseModel):
    """One prediction's truth: its request id, its row in that request (0 when left out) and
    the label, checked against the served model by :func:`meguri.monitor.record_feedback`."""

    request_id: str = Field(min_length=1, max_length=200)
    row: int | None = Field(None, ge=0, le=2**31 - 1)
    label: Annotated[Any, AfterValidator(_scalar_label), WithJsonSchema(_LABEL_SCHEMA)]


class Feedback(BaseModel):
    """A batch of labels (one record is a batch of one); nothing is written if one is bad."""

    records: list[Label] = Field(min_length=1, max_length=100_000)


@router.post("/monitor/{env}/feedback", openapi_extra=access(Access.EDITOR), status_code=201)
def feedback(
    ws: WS,
    env: str,
    body: Feedback,
    update: Annotated[
        bool, Query(description="Recompute the windows the labels fall in (false: leave it).")
    ] = True,
) -> Response:
    """Ground truth by request id (and row), checked against the served model's labels and
    written beside the captures. The windows holding the labelled predictions are recomputed at
    once, as ``meguri feedback`` does, so their accuracy counts the new labels; the answer lists
    them. With ``update=false`` nothing is recomputed: a later ``meguri monitor run`` recomputes
    only from its newest window on, so labels of older windows would wait for a relabelling.
    A request id with no captured prediction (sampled out, or not flushed yet) is kept and
    scores nothing until its prediction is captured and its window recomputed."""
    from meguri.monitor import record_feedback, relabel_windows

    records = [r.model_dump(exclude_none=True) for r in body.records]
    result = record_feedback(ws, env, records)
    relabelled = relabel_windows(ws, env, result) if update else []
    return ok(
        {
            "environment": result.environment,
            "rows": result.rows,
            "duplicates": result.duplicates,
            "windows": [_window(w, False) for w in relabelled],
        },
        201,
    )


@router.get("/metrics", openapi_extra=VIEWER)
def prometheus_metrics(ws: WS) -> Response:
    """The latest window figures of every environment and the alert states, in Prometheus'
    text format (scrape with ``authorization: {credentials: <token>}``; see
    :mod:`meguri.monitor._exporter` for the series)."""
    from meguri.monitor._exporter import CONTENT_TYPE, render_monitor_metrics

    return Response(render_monitor_metrics(ws, ws.project.id), media_type=CONTENT_TYPE)
