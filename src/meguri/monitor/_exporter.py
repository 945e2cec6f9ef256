"""The monitor's figures for Prometheus: text exposition format 0.0.4 at ``GET /metrics``.

Series (all gauges; labels escaped as the format asks: ``\\`` ``"`` and newlines):

* ``meguri_monitor_figure{project, environment, figure}``: each figure of the newest window
  of each environment (``drift.share``, ``latency_p99_ms``, ``accuracy.roc_auc``...); a figure
  the window did not measure has no sample rather than a made-up number;
* ``meguri_monitor_window_end_timestamp_seconds{project, environment}``: when that window ended,
  so ``time() - ...`` alerts on a monitor that stopped running;
* ``meguri_alert_firing{project, environment, rule, severity}``: 1 while the rule's latest alert
  fires, 0 once it resolved.

Samples carry no timestamps: Prometheus stamps them at scrape time, and an old window's end as a
sample time would fall outside its head block.

Two servers answer with :func:`render_monitor_metrics`: :func:`exporter_app`, a raw ASGI app
without authentication for one workspace project (:func:`serve_exporter` runs it alone with
uvicorn: ``meguri monitor exporter``), and the platform server's own route
``GET /api/v1/projects/{project}/metrics`` (:mod:`meguri.server._r_monitor`), which needs a
viewer's token (Prometheus' ``authorization: {credentials: <token>}``); the platform does not
mount :func:`exporter_app`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from meguri.store.metadata import AlertState

if TYPE_CHECKING:
    import uvicorn

    from meguri.store import Workspace

__all__ = [
    "CONTENT_TYPE",
    "escape_label",
    "exporter_app",
    "exporter_server",
    "project_label",
    "render_monitor_metrics",
    "serve_exporter",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_log = logging.getLogger("meguri.monitor.exporter")
_ALERT_HISTORY = 1_000
"""Latest alerts read to say which rules fire (1) and which resolved (0)."""

_FAMILIES = {
    "meguri_monitor_figure": "A figure of the newest monitor window of each deployment "
    "environment (drift, data quality, accuracy, latency, errors).",
    "meguri_monitor_window_end_timestamp_seconds": "End of the newest monitor window of each "
    "environment, in epoch seconds.",
    "meguri_alert_firing": "1 while the alert rule fires in the environment, 0 once resolved.",
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def escape_label(value: str) -> str:
    """A label value as the text format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    pairs = ",".join(f'{key}="{escape_label(text)}"' for key, text in labels.items())
    return f"{name}{{{pairs}}} {_number(value)}"


def render_monitor_metrics(ws: Workspace, project_id: str) -> bytes:
    """The project's newest window figures and alert states in the text format (see the module
    docstring)."""
    project = project_label(ws, project_id)
    samples: dict[str, list[str]] = {name: [] for name in _FAMILIES}
    repo = ws.metadata.monitor
    for environment in repo.environments(project_id):
        newest = repo.windows(project_id, environment, limit=1)
        if not newest:
            continue
        window = newest[-1]
        where = {"project": project, "environment": environment}
        for figure, value in sorted(window.figures.items()):
            if value is not None:
                labels = {**where, "figure": figure}
                samples["meguri_monitor_figure"].append(
                    _sample("meguri_monitor_figure", labels, value)
                )
        name = "meguri_monitor_window_end_timestamp_seconds"
        samples[name].append(_sample(name, where, window.end))
    samples["meguri_alert_firing"] = _alert_samples(ws, project_id, project)
    return _exposition(samples)


def _alert_samples(ws: Workspace, project_id: str, project: str) -> list[str]:
    latest: dict[tuple[str, str], tuple[str, float]] = {}
    for alert in ws.metadata.monitor.alerts(project_id, limit=_ALERT_HISTORY):  # newest first
        key = (alert.environment, alert.rule)
        if key not in latest:
            latest[key] = (alert.severity, 1.0 if alert.state is AlertState.FIRING else 0.0)
    return [
        _sample(
            "meguri_alert_firing",
            {"project": project, "environment": env, "rule": rule, "severity": severity},
            value,
        )
        for (env, rule), (severity, value) in sorted(latest.items())
    ]


def _exposition(samples: dict[str, list[str]]) -> bytes:
    lines = []
    for name, help_text in _FAMILIES.items():
        lines.append(f"# HELP {name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(samples[name])
    return ("\n".join(lines) + "\n").encode("utf-8")


def project_label(ws: Workspace, project_id: str) -> str:
    """The project's name (what alerts and series are labelled with), its id if unknown."""
    if ws.project.id == project_id:
        return ws.project.name
    for project in ws.metadata.projects.list():
        if project.id == project_id:
            return project.name
    return project_id


# --- the ASGI app -----------------------------------------------------------------------------


def exporter_app(workspace_factory: Callable[[], Workspace]) -> ASGIApp:
    """A raw ASGI app: ``GET``/``HEAD /metrics`` renders the workspace project's figures, any
    other path is 404. The workspace is opened on first use (``workspace_factory``) and reused;
    rendering runs in a worker thread so a slow store never blocks the event loop."""
    opened: list[Workspace] = []

    def workspace() -> Workspace:
        if not opened:
            opened.append(workspace_factory())
        return opened[0]

    def render() -> bytes:
        ws = workspace()
        return render_monitor_metrics(ws, ws.project.id)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await _http(scope, send, render)

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(scope: Scope, send: Send, render: Callable[[], bytes]) -> None:
    if scope["path"] != "/metrics":
        await _respond(send, 404, b"not found; Prometheus metrics are at /metrics\n")
    elif scope["method"] not in ("GET", "HEAD"):
        await _respond(send, 405, b"use GET /metrics\n", [(b"allow", b"GET, HEAD")])
    else:
        try:
            body = await asyncio.to_thread(render)
        except Exception as exc:  # the scraper sees the failure; the server stays up
            _log.exception("rendering /metrics failed")
            await _respond(send, 500, f"rendering the metrics failed: {exc}\n".encode())
            return
        head = scope["method"] == "HEAD"
        await _respond(send, 200, body, content_type=CONTENT_TYPE, head=head)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def exporter_server(ws: Workspace, host: str = "127.0.0.1", port: int = 9108) -> uvicorn.Server:
    """A uvicorn server for :func:`exporter_app` over ``ws`` (``.run()`` it, or start it in a
    thread and set ``should_exit`` to stop)."""
    import uvicorn

    config = uvicorn.Config(
        exporter_app(lambda: ws), host=host, port=port, log_level="warning", lifespan="on"
    )
    return uvicorn.Server(config)


def serve_exporter(ws: Workspace, host: str = "127.0.0.1", port: int = 9108) -> None:
    """Serve ``/metrics`` for ``ws``'s project until interrupted (9108: an exporter port)."""
    exporter_server(ws, host, port).run()
