"""The monitoring part of ``meguri demo``: the loop closed on a live production endpoint.

Normal traffic (held-out rows of the bundled dataset), then a shifted stretch (the size and
texture measurements scaled up by a quarter, as a new scanner calibration would), each request
with its own ``X-Request-Id`` → windows computed from the captures: data quality, drift per
column against the training baseline, latency and errors → the true diagnoses arrive later as
feedback, and accuracy per window appears → the alert rules fire: a notification to a webhook
(an Alertmanager-style receiver the demo runs on loopback) → the pipeline retrains on the
source plus the labelled production rows, the candidate passes the same gates and staging tests
and goes to production as a canary while traffic flows → the HTML monitoring report.

The demo's windows are five seconds long (``monitor.window: 5s`` in the demo's copy of the spec,
the workers' sampling beat, and a four-second canary bake) so that the whole turn takes
seconds; a project's own spec says ``1h`` or whatever its traffic needs.
"""

from __future__ import annotations

import csv
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console

if TYPE_CHECKING:
    import polars as pl

    from meguri.data import PreparedData
    from meguri.spec import ProjectSpec
    from meguri.store import Workspace

WINDOW_SECONDS = 5.0
PHASE_WINDOWS = 2
ROWS_PER_REQUEST = 4
#: Measurements a recalibrated scanner reads 25% larger: the shifted stretch of traffic.
SHIFTED = (
    "mean_radius", "mean_texture", "mean_perimeter", "mean_area", "worst_radius",
    "worst_texture", "worst_perimeter", "worst_area", "radius_error", "texture_error",
    "perimeter_error", "area_error", "mean_concavity", "worst_concavity", "mean_compactness",
    "worst_compactness",
)  # fmt: skip
SHIFT = 1.25


@dataclass
class MonitorFigures:
    """What the monitoring part measured, for the demo's summary."""

    sent: int = 0
    labels: int = 0
    windows: int = 0
    normal_drift: float | None = None
    shifted_drift: float | None = None
    normal_auc: float | None = None
    shifted_auc: float | None = None
    alerts: list[str] = field(default_factory=list)
    webhook: list[str] = field(default_factory=list)
    retrain: str = ""
    canary: str = ""
    report: str = ""


class _Receiver:
    """An Alertmanager-style webhook receiver on loopback, keeping what it is sent."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Clients:
    """Client threads sending rows of ``frame`` (MLflow ``dataframe_split``) in a loop, each
    request under its own id; remembers which label each sent row truly has."""

    def __init__(self, url: str, frame: pl.DataFrame, target: str) -> None:
        self.url, self.target = f"{url}/invocations", target
        self.inputs = [c for c in frame.columns if c != target]
        self.frame = frame
        self.shift = False
        self.sent: list[tuple[str, int, Any]] = []
        self.codes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _body(self, start: int) -> tuple[bytes, list[Any]]:
        import polars as pl

        rows = self.frame.slice(start % self.frame.height, ROWS_PER_REQUEST)
        if self.shift:
            rows = rows.with_columns(
                (pl.col(c) * SHIFT).alias(c) for c in SHIFTED if c in rows.columns
            )
        data = rows.select(self.inputs).rows()
        body = {"dataframe_split": {"columns": self.inputs, "data": data}}
        return orjson.dumps(body), rows.get_column(self.target).to_list()

    def _loop(self) -> None:
        import urllib.error
        import urllib.request

        start = 0
        while not self._stop.is_set():
            body, labels = self._body(start)
            start += ROWS_PER_REQUEST
            request_id = f"demo-{uuid.uuid4().hex[:12]}"
            request = urllib.request.Request(
                self.url,
                data=body,
                headers={"content-type": "application/json", "x-request-id": request_id},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    code = response.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            except OSError:
                code = 0
            self.codes.append(code)
            if code == 200:
                self.sent.extend((request_id, i, label) for i, label in enumerate(labels))
            time.sleep(0.05)

    def __enter__(self) -> _Clients:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def demo_spec(spec: ProjectSpec, webhook: str) -> ProjectSpec:
    """The spec with the demo's short windows, its webhook, a quick canary in production and
    staging switched at once (the pre-promotion tests then judge the new version there)."""
    from meguri.spec import NotifierSpec
    from meguri.spec._deploy import DeployEnvironment, StrategySpec

    monitor = spec.monitor
    hook = NotifierSpec(kind="webhook", url=webhook, allow_private=True)
    alerts = [a.model_copy(update={"notify": [*a.notify, "webhook"]}) for a in monitor.alerts]
    monitor = monitor.model_copy(
        update={
            "window": f"{WINDOW_SECONDS:g}s",
            "alerts": alerts,
            "notifiers": {**monitor.notifiers, "webhook": hook},
        }
    )
    environments = dict(spec.deploy.environments)
    production = environments.get("production", DeployEnvironment())
    canary = StrategySpec(kind="canary", steps=[50.0, 100.0], bake_seconds=4.0)
    environments["production"] = production.model_copy(update={"strategy": canary})
    staging = environments.get("staging", DeployEnvironment())
    at_once = StrategySpec(kind="all_at_once")
    environments["staging"] = staging.model_copy(update={"strategy": at_once})
    deploy = spec.deploy.model_copy(update={"environments": environments})
    return spec.model_copy(update={"monitor": monitor, "deploy": deploy})


def monitoring_phase(
    ws: Workspace, spec: ProjectSpec, prepared: PreparedData, url: str, console: Console
) -> MonitorFigures:
    """Run the closed loop on the production endpoint at ``url`` (see the module docstring)."""
    import polars as pl

    from meguri.cli._monitor import alerts_table, windows_table
    from meguri.monitor import record_feedback, relabel_windows, run_monitor

    figures = MonitorFigures()
    held_out = pl.concat([prepared.raw["validation"], prepared.raw["test"]])
    with _Receiver() as receiver:
        local = demo_spec(spec, receiver.url)
        clients = _Clients(url, held_out, prepared.target)
        began = _next_boundary()
        with clients, console.status("sending normal traffic to production…") as status:
            _sleep_until(began + PHASE_WINDOWS * WINDOW_SECONDS)
            clients.shift = True
            status.update("sending shifted traffic (16 measurements read 25% larger)…")
            _sleep_until(began + 2 * PHASE_WINDOWS * WINDOW_SECONDS)
        ended = began + 2 * PHASE_WINDOWS * WINDOW_SECONDS
        figures.sent = len(clients.codes)
        console.print(
            f"sent {figures.sent} requests ({len(clients.sent)} rows) to production: "
            f"{PHASE_WINDOWS * WINDOW_SECONDS:g} s normal, then {PHASE_WINDOWS * WINDOW_SECONDS:g}"
            " s shifted"
        )
        _wait_for_captures(ws, began, ended, console)
        result = run_monitor(
            "production", workspace=ws, since=began, until=ended, alerts=False, spec=local
        )
        console.print(windows_table(result.windows, "production windows: drift before labels"))
        labels = _feedback_file(ws, clients.sent)
        feedback = record_feedback(ws, "production", labels)
        figures.labels = feedback.rows
        console.print(f"feedback: {feedback.rows} true diagnoses arrived for the sent rows")
        windows = relabel_windows(ws, "production", feedback, alerts=False, spec=local)
        console.print(windows_table(windows, "production windows with accuracy"))
        _figures_of(windows, began, figures)
        with _Clients(url, held_out, prepared.target) as more:
            more.shift = True
            with console.status("alert rules → webhook → retraining → canary…"):
                result = run_monitor(
                    "production",
                    workspace=ws,
                    since=began,
                    until=ended,
                    spec=local,
                    reporter=lambda m: console.print(f"[dim]{m}[/]", highlight=False),
                )
                _settle_canary(ws, result, figures, console)
        alerts = ws.metadata.monitor.alerts(ws.project.id, environment="production", limit=5)
        console.print(alerts_table(alerts, "alerts"))
        figures.alerts = [f"{a.rule} ({a.state})" for a in result.alerts]
        figures.webhook = [
            f"{body.get('status')} {body.get('commonLabels', {}).get('alertname')}"
            for body in receiver.received
        ]
        console.print(
            f"webhook receiver got {len(receiver.received)} notification(s): "
            f"{', '.join(figures.webhook) or 'none'}"
        )
    figures.report = str(_report(ws, console))
    return figures


def _next_boundary() -> float:
    now = time.time()
    start = (now // WINDOW_SECONDS + 1) * WINDOW_SECONDS
    time.sleep(start - now)
    return start


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _wait_for_captures(ws: Workspace, began: float, ended: float, console: Console) -> None:
    """The workers write captures every few seconds: wait until the stretch is on disk."""
    import polars as pl

    from meguri.monitor._capture import capture_url, scan_predictions

    url = capture_url(ws, "production")
    deadline = time.monotonic() + 15.0
    with console.status("waiting for the endpoint's capture files…"):
        while time.monotonic() < deadline:
            last = scan_predictions(url, began, ended + 60).select(pl.col("time").max())
            latest = last.collect().item()
            if latest is not None and latest.timestamp() >= ended - 0.5:
                return
            time.sleep(0.5)


def _feedback_file(ws: Workspace, sent: list[tuple[str, int, Any]]) -> Path:
    from meguri.store._workspace import STATE_DIR

    path: Path = ws.root / STATE_DIR / "demo-feedback.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["request_id", "row", "label"])
        writer.writerows(sent)
    return path


def _figures_of(windows: list[Any], began: float, figures: MonitorFigures) -> None:
    figures.windows = len(windows)
    middle = began + PHASE_WINDOWS * WINDOW_SECONDS
    normal = [w for w in windows if w.start < middle]
    shifted = [w for w in windows if w.start >= middle]
    figures.normal_drift = _mean(normal, "drift.share")
    figures.shifted_drift = _mean(shifted, "drift.share")
    figures.normal_auc = _mean(normal, "accuracy.roc_auc")
    figures.shifted_auc = _mean(shifted, "accuracy.roc_auc")


def _mean(windows: list[Any], figure: str) -> float | None:
    values = [w.figures.get(figure) for w in windows]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _settle_canary(ws: Workspace, result: Any, figures: MonitorFigures, console: Console) -> None:
    from meguri.deploy import wait_settled

    for retraining in result.retraining:
        detail = retraining.detail
        figures.retrain = (
            f"{retraining.outcome}: {detail.get('model_version', '-')} from "
            f"{detail.get('rows', {}).get('feedback', 0)} labelled production rows"
        )
        console.print(f"retraining for alert {retraining.alert_id}: {figures.retrain}")
        if retraining.outcome == "deployed":
            settled = wait_settled("production", workspace=ws, timeout=90.0)
            figures.canary = f"revision {settled.number} {settled.state.value}: {settled.reason}"
            console.print(f"canary of {detail['model_version']}: {figures.canary}")


def _report(ws: Workspace, console: Console) -> Path:
    from meguri.monitor._api import write_monitor_report
    from meguri.store._workspace import STATE_DIR

    folder = ws.root / STATE_DIR / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = write_monitor_report("production", folder / "production-monitoring.html", workspace=ws)
    console.print(f"monitoring report: [bold]{path}[/]")
    return path
