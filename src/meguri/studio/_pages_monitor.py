"""Monitoring: each environment's drift, data quality, accuracy and system figures over its
monitor windows, and the alerts.

The charts are drawn from the windows' flat ``figures`` (the names alerts and Prometheus read:
``drift.share``, ``drift.column.<name>``, ``accuracy.<metric>``, ``latency_p95_ms``, ...).
The full monitoring report of :mod:`meguri.monitor` (every section, distributions included)
is one click away, served as it is under a ``sandbox allow-scripts`` policy: it runs its own
inline plotly.js in an opaque origin, away from the Studio's cookies; and as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from meguri.errors import NotFoundError
from meguri.monitor import criterion_figure, monitor_json, render_monitor_html
from meguri.spec import SuccessCriterion
from meguri.store import Workspace
from meguri.store.metadata import AlertState, MonitorWindow
from meguri.studio._access import VIEWER
from meguri.studio._figures import Figure, time_figure
from meguri.studio._render import Renderer
from meguri.studio._trace import current_spec

__all__ = ["register"]

DEFAULT_WINDOWS, MAX_WINDOWS = 200, 5000
REPORT_POLICY = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:"
)
#: Drift lines per chart: wider tables show the columns that drifted most.
MAX_DRIFT_LINES = 12
_LATENCY = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")

Windows = Annotated[int, Query(ge=1, le=MAX_WINDOWS)]


def register(router: APIRouter, renderer: Renderer) -> None:
    @router.get(
        "/monitoring", name="studio_monitoring", openapi_extra=VIEWER, response_class=HTMLResponse
    )
    def monitoring(request: Request) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        return renderer.page(request, "monitoring.html", overview_context(ws))

    @router.get(
        "/monitoring/{environment}",
        name="studio_monitor_env",
        openapi_extra=VIEWER,
        response_class=HTMLResponse,
    )
    def environment_page(
        request: Request, environment: str, windows: Windows = DEFAULT_WINDOWS
    ) -> HTMLResponse:
        ws: Workspace = request.app.state.workspace
        context = environment_context(ws, environment, windows)
        return renderer.page(request, "monitor_env.html", context)

    @router.get(
        "/monitoring/{environment}/report", name="studio_monitor_report", openapi_extra=VIEWER
    )
    def report(request: Request, environment: str, windows: Windows = DEFAULT_WINDOWS) -> Response:
        ws: Workspace = request.app.state.workspace
        found, alerts, criteria = _facts(ws, environment, windows)
        page = render_monitor_html(
            found, alerts, project=ws.project.name, environment=environment, criteria=criteria
        )
        headers = {"Content-Security-Policy": REPORT_POLICY, "Cache-Control": "no-store"}
        return HTMLResponse(page, headers=headers)

    @router.get(
        "/monitoring/{environment}/report.json", name="studio_monitor_json", openapi_extra=VIEWER
    )
    def report_json(
        request: Request, environment: str, windows: Windows = DEFAULT_WINDOWS
    ) -> JSONResponse:
        ws: Workspace = request.app.state.workspace
        found, alerts, criteria = _facts(ws, environment, windows)
        document = monitor_json(
            found, alerts, project=ws.project.name, environment=environment, criteria=criteria
        )
        return JSONResponse(document, headers={"Cache-Control": "no-store"})


def _environments(ws: Workspace) -> list[str]:
    monitored = ws.metadata.monitor.environments(ws.project.id)
    deployed = [d.environment for d in ws.metadata.deployments.list(ws.project.id)]
    return sorted(set(monitored) | set(deployed))


def overview_context(ws: Workspace) -> dict[str, Any]:
    latest = {}
    for env in _environments(ws):
        found = ws.metadata.monitor.windows(ws.project.id, env, limit=1)
        latest[env] = found[-1] if found else None
    return {
        "title": "Monitoring",
        "section": "monitoring",
        "latest": latest,
        "alerts": ws.metadata.monitor.alerts(ws.project.id, limit=200),
    }


def _production_criteria(ws: Workspace) -> list[SuccessCriterion]:
    spec = current_spec(ws)[0]
    return spec.criteria_on("production") if spec is not None else []


def _facts(
    ws: Workspace, environment: str, limit: int
) -> tuple[list[MonitorWindow], list[Any], list[SuccessCriterion]]:
    if environment not in _environments(ws):
        raise NotFoundError(
            f"No monitoring or deployment for environment {environment!r}; see /monitoring."
        )
    windows = ws.metadata.monitor.windows(ws.project.id, environment, limit=limit)
    alerts = ws.metadata.monitor.alerts(ws.project.id, environment=environment, limit=500)
    return windows, alerts, _production_criteria(ws)


def environment_context(ws: Workspace, environment: str, limit: int) -> dict[str, Any]:
    windows, alerts, criteria = _facts(ws, environment, limit)
    return {
        "title": f"Monitoring · {environment}",
        "section": "monitoring",
        "environment": environment,
        "windows": windows,
        "latest": windows[-1] if windows else None,
        "limit": limit,
        "alerts": alerts,
        "firing": [a for a in alerts if a.state is AlertState.FIRING],
        "criteria": criteria,
        "figures": monitor_figures(windows, criteria),
    }


def _series(windows: Sequence[MonitorWindow], key: str) -> list[object]:
    return [w.figures.get(key) for w in windows]


def _keys(windows: Sequence[MonitorWindow], prefix: str) -> list[str]:
    seen: dict[str, None] = {}
    for w in windows:
        seen.update((k, None) for k in w.figures if k.startswith(prefix))
    return list(seen)


def monitor_figures(
    windows: Sequence[MonitorWindow], criteria: Sequence[SuccessCriterion]
) -> list[Figure]:
    """Drift share, drift per column, accuracy, latency and errors over the windows, each
    with the production criteria checked against its figures as dashed lines; then the rows
    per window. A chart without any figure is left out."""
    if not windows:
        return []
    starts = [w.start for w in windows]
    accuracy = {k: k.removeprefix("accuracy.") for k in _keys(windows, "accuracy.")}
    charts: list[tuple[str, dict[str, str], str]] = [
        ("Share of drifted columns", {"drift.share": "share"}, "share"),
        ("Drift statistic per column", _drift_columns(windows), "statistic"),
        ("Accuracy on labelled rows", accuracy, "metric"),
        ("Latency", {k: k.split("_")[1] for k in _LATENCY}, "ms"),
        ("Errors", {"error_rate": "error rate"}, "error rate"),
    ]
    figures = []
    for title, keys, y_title in charts:
        series = {label: _series(windows, key) for key, label in keys.items()}
        present = {k: v for k, v in series.items() if any(x is not None for x in v)}
        lines = [
            (c.threshold, f"{c.id}: {c.metric} {c.comparison} {c.threshold:g}")
            for c in criteria
            if criterion_figure(c.metric) in keys
        ]
        if present:
            figures.append(time_figure(title, starts, present, y_title=y_title, thresholds=lines))
    rows: dict[str, Sequence[object]] = {"rows": [w.rows for w in windows]}
    return [*figures, time_figure("Rows per window", starts, rows, y_title="rows")]


def _drift_columns(windows: Sequence[MonitorWindow]) -> dict[str, str]:
    """The figures of the columns whose drift statistic peaked highest (at most
    :data:`MAX_DRIFT_LINES`), with the column names as labels."""
    keys = _keys(windows, "drift.column.")

    def peak(key: str) -> float:
        values = _series(windows, key)
        return max((float(v) for v in values if isinstance(v, int | float)), default=0.0)

    top = sorted(keys, key=peak, reverse=True)[:MAX_DRIFT_LINES]
    return {k: k.removeprefix("drift.column.") for k in top}
