"""The monitor's ``/metrics``: the text format (escaping, HELP/TYPE, alert states), the raw ASGI
app, and a real Prometheus (Debian's package) scraping on loopback both the standalone exporter
and the platform server's ``/api/v1/projects/{project}/metrics`` (with a bearer token)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from meguri.monitor._exporter import (
    CONTENT_TYPE,
    escape_label,
    exporter_app,
    exporter_server,
    render_monitor_metrics,
)
from meguri.serve._server import app_in_background
from meguri.server import ServerSettings, create_app
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import AlertState
from meguri.store.metadata.repositories.monitor import NewWindow

ODD_COLUMN = 'drift.column.a"b\\c\nd'  # a column name with a quote, a backslash, a newline


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_workspace(tmp_path / "proj", project="churn", user="tester")
    yield workspace
    workspace.close()


def store_windows(ws: Workspace) -> None:
    pid = ws.project.id
    ws.metadata.monitor.save_windows(
        [
            NewWindow(pid, "production", 0.0, 3600.0, 10, figures={"drift.share": 0.1}),
            NewWindow(
                pid,
                "production",
                3600.0,
                7200.0,
                12,
                figures={
                    "drift.share": 0.375,
                    "latency_p99_ms": 12.5,
                    "accuracy.roc_auc": None,  # not measured yet: no sample
                    ODD_COLUMN: 0.25,
                },
            ),
            NewWindow(pid, "staging", 0.0, 1800.0, 3, figures={"drift.share": 0.0}),
        ]
    )
    [newest] = ws.metadata.monitor.windows(pid, "production", limit=1)
    older = ws.metadata.monitor.windows(pid, "production", limit=2)[0]
    first = ws.metadata.monitor.open_alert(
        pid, "production", "data-drift", severity="critical", value=0.375, window_id=newest.id
    )
    assert first.state is AlertState.FIRING
    old = ws.metadata.monitor.open_alert(
        pid, "production", "latency", severity="warning", value=30.0, window_id=older.id
    )
    ws.metadata.monitor.update_alert(old.id, state=AlertState.RESOLVED)


def test_render_writes_the_text_format(ws: Workspace) -> None:
    store_windows(ws)
    text = render_monitor_metrics(ws, ws.project.id).decode()
    lines = text.splitlines()
    assert text.endswith("\n")
    for name in (
        "meguri_monitor_figure",
        "meguri_monitor_window_end_timestamp_seconds",
        "meguri_alert_firing",
    ):
        assert f"# TYPE {name} gauge" in lines
        assert any(line.startswith(f"# HELP {name} ") for line in lines)
    assert (
        'meguri_monitor_figure{project="churn",environment="production",figure="drift.share"} '
        "0.375" in lines
    )
    assert (
        'meguri_monitor_figure{project="churn",environment="staging",figure="drift.share"} 0.0'
        in lines
    )
    assert not any("accuracy.roc_auc" in line for line in lines)  # None: no sample
    assert (
        'meguri_monitor_figure{project="churn",environment="production",'
        'figure="drift.column.a\\"b\\\\c\\nd"} 0.25' in lines
    )
    assert (
        'meguri_monitor_window_end_timestamp_seconds{project="churn",environment="production"} '
        "7200.0" in lines
    )
    assert (
        'meguri_alert_firing{project="churn",environment="production",rule="data-drift",'
        'severity="critical"} 1.0' in lines
    )
    assert (
        'meguri_alert_firing{project="churn",environment="production",rule="latency",'
        'severity="warning"} 0.0' in lines
    )


def test_an_independent_parser_reads_the_same_numbers(ws: Workspace) -> None:
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client parses")
    store_windows(ws)
    text = render_monitor_metrics(ws, ws.project.id).decode()
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert {f.type for f in families.values()} == {"gauge"}
    figures = {
        (s.labels["environment"], s.labels["figure"]): s.value
        for s in families["meguri_monitor_figure"].samples
    }
    assert figures == {
        ("production", "drift.share"): 0.375,
        ("production", "latency_p99_ms"): 12.5,
        ("production", ODD_COLUMN): 0.25,
        ("staging", "drift.share"): 0.0,
    }
    firing = {s.labels["rule"]: s.value for s in families["meguri_alert_firing"].samples}
    assert firing == {"data-drift": 1.0, "latency": 0.0}


def test_escape_label_follows_the_format() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label("plain é") == "plain é"


def test_an_empty_project_has_families_and_no_samples(ws: Workspace) -> None:
    text = render_monitor_metrics(ws, ws.project.id).decode()
    assert [line for line in text.splitlines() if not line.startswith("#")] == []


def test_the_asgi_app_serves_metrics_and_404(ws: Workspace) -> None:
    store_windows(ws)
    asyncio.run(_exercise_app(ws))


async def _exercise_app(ws: Workspace) -> None:
    transport = httpx.ASGITransport(app=exporter_app(lambda: ws))
    async with httpx.AsyncClient(transport=transport, base_url="http://exporter") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == CONTENT_TYPE
        assert response.content == render_monitor_metrics(ws, ws.project.id)
        head = await client.head("/metrics")
        assert head.status_code == 200 and head.content == b""
        assert (await client.get("/")).status_code == 404
        assert (await client.get("/metrics/x")).status_code == 404
        post = await client.post("/metrics")
        assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


# --- a real Prometheus -------------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def exporter(ws: Workspace) -> Iterator[int]:
    server = exporter_server(ws, "127.0.0.1", _free_port())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the exporter did not start"
    yield server.config.port
    server.should_exit = True
    thread.join(timeout=10)


needs_prometheus = pytest.mark.skipif(
    not Path(PROMETHEUS).is_file(),
    reason="needs Prometheus (apt-get install prometheus: Debian's package, /usr/bin/prometheus)",
)
Series = list[dict[str, Any]]


@dataclass
class Prometheus:
    """A real Prometheus on loopback, scraping every second; :meth:`poll` waits for data."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a ``GET /api/v1/<path>`` answer; None while Prometheus is not up."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = json.load(response)
        except OSError:
            return None  # not up yet
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> Series:
        data = self.api("query", query=promql)
        return [] if data is None else list(data["result"])

    def poll(self, what: str, read: Callable[[], Any], ready: Callable[[Any], bool]) -> Any:
        """``read()`` once ``ready`` holds for it (25 s at most; fails with Prometheus' log)."""
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            found = read()
            if ready(found):
                return found
            time.sleep(0.25)
        raise AssertionError(f"Prometheus never had {what}: {found}\n{self.log.read_text()}")

    def poll_query(self, promql: str, count: int) -> Series:
        return self.poll(promql, lambda: self.query(promql), lambda found: len(found) == count)


@contextlib.contextmanager
def prometheus(folder: Path, scrape_configs: str) -> Iterator[Prometheus]:
    """Prometheus scraping every second with ``scrape_configs`` (the YAML list's items)."""
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n{scrape_configs}"
    )
    port = _free_port()
    log_path = folder / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Prometheus(port, process, log_path)
        finally:
            process.terminate()
            process.wait(timeout=20)


@needs_prometheus
def test_a_real_prometheus_scrapes_the_figures(
    ws: Workspace, exporter: int, tmp_path: Path
) -> None:
    store_windows(ws)
    job = (
        "  - job_name: meguri\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter}']\n"
    )
    with prometheus(tmp_path, job) as prom:
        result = prom.poll_query('meguri_monitor_figure{figure="drift.share"}', 2)
        values = {r["metric"]["environment"]: float(r["value"][1]) for r in result}
        assert values == {"production": 0.375, "staging": 0.0}
        assert {r["metric"]["project"] for r in result} == {"churn"}
        # the escaped label arrives as the original name
        odd = prom.query('meguri_monitor_figure{figure="drift.column.a\\"b\\\\c\\nd"}')
        assert [float(r["value"][1]) for r in odd] == [0.25]
        firing = prom.query("meguri_alert_firing == 1")
        assert [r["metric"]["rule"] for r in firing] == ["data-drift"]
        up = prom.query('up{job="meguri"}')
        assert [float(r["value"][1]) for r in up] == [1.0]


# --- a real Prometheus scraping the platform server -------------------------------------------


def _add_user(ws: Workspace, name: str, role: str | None) -> str:
    """A user (with ``role`` on the project, or none) and the secret of an API token of theirs."""
    ws.metadata.access.create_user(name, by="tester")
    if role is not None:
        ws.metadata.access.set_role(ws.project.id, name, role, by="tester")
    return ws.metadata.access.create_token(name, name="prometheus", by="tester")[1]


def _held_figures(ws: Workspace) -> dict[tuple[str, str], float]:
    """What the store holds: each figure of each environment's newest window, None left out."""
    held = {}
    for environment in ws.metadata.monitor.environments(ws.project.id):
        [newest] = ws.metadata.monitor.windows(ws.project.id, environment, limit=1)
        held |= {(environment, k): v for k, v in newest.figures.items() if v is not None}
    return held


def _held_alerts(ws: Workspace) -> dict[tuple[str, str, str], float]:
    """Each rule's latest alert in the store: 1 while firing, 0 otherwise."""
    held: dict[tuple[str, str, str], float] = {}
    for alert in reversed(ws.metadata.monitor.alerts(ws.project.id)):  # oldest first
        firing = 1.0 if alert.state is AlertState.FIRING else 0.0
        held[(alert.environment, alert.rule, alert.severity)] = firing
    return held


def _job(name: str, url: str, token: str | None) -> str:
    address = url.removeprefix("http://")
    auth = f"    authorization: {{type: Bearer, credentials: '{token}'}}\n" if token else ""
    return (
        f"  - job_name: {name}\n    scrape_interval: 1s\n"
        "    metrics_path: /api/v1/projects/churn/metrics\n"
        f"{auth}    static_configs:\n      - targets: ['{address}']\n"
    )


@needs_prometheus
def test_a_real_prometheus_scrapes_the_platform_with_a_token(ws: Workspace, tmp_path: Path) -> None:
    store_windows(ws)
    viewer = _add_user(ws, "grafana", "viewer")
    outsider = _add_user(ws, "stranger", None)  # signed in, no role on the project
    app = create_app(ServerSettings(secret_key="p" * 48), workspace=ws)
    with app_in_background(app) as url:
        jobs = _job("platform", url, viewer) + _job("anonymous", url, None)
        jobs += _job("outsider", url, outsider)
        with prometheus(tmp_path, jobs) as prom:
            held = _held_figures(ws)
            figures = prom.poll_query('meguri_monitor_figure{job="platform"}', len(held))
            scraped = {
                (r["metric"]["environment"], r["metric"]["figure"]): float(r["value"][1])
                for r in figures
            }
            assert scraped == held
            assert {r["metric"]["project"] for r in figures} == {"churn"}
            assert ("production", ODD_COLUMN) in scraped  # escaped on the wire, whole here
            ends = prom.query('meguri_monitor_window_end_timestamp_seconds{job="platform"}')
            newest = {
                e: ws.metadata.monitor.windows(ws.project.id, e, limit=1)[0].end
                for e in ws.metadata.monitor.environments(ws.project.id)
            }
            assert {r["metric"]["environment"]: float(r["value"][1]) for r in ends} == newest
            alerts = prom.query('meguri_alert_firing{job="platform"}')
            states = {
                (r["metric"]["environment"], r["metric"]["rule"], r["metric"]["severity"]): float(
                    r["value"][1]
                )
                for r in alerts
            }
            assert states == _held_alerts(ws) and 1.0 in states.values()
            assert [float(r["value"][1]) for r in prom.query('up{job="platform"}')] == [1.0]
            # without a token, or with one of a user without a role, the scrape is refused
            targets = prom.poll(
                "the refused scrapes",
                lambda: _refused_targets(prom),
                lambda found: set(found) == {"anonymous", "outsider"},
            )
            assert "401" in targets["anonymous"] and "403" in targets["outsider"]
            for job in ("anonymous", "outsider"):
                assert [float(r["value"][1]) for r in prom.query(f'up{{job="{job}"}}')] == [0.0]
                assert prom.query(f'meguri_monitor_figure{{job="{job}"}}') == []
        # the same refusals, asked directly
        assert httpx.get(f"{url}/api/v1/projects/churn/metrics").status_code == 401
        bearer = {"Authorization": f"Bearer {outsider}"}
        assert httpx.get(f"{url}/api/v1/projects/churn/metrics", headers=bearer).status_code == 403


def _refused_targets(prom: Prometheus) -> dict[str, str]:
    """The jobs whose target Prometheus found down, with the error it recorded."""
    data = prom.api("targets", state="active")
    if data is None:
        return {}
    return {
        t["labels"]["job"]: t["lastError"]
        for t in data["activeTargets"]
        if t["health"] == "down" and t["lastError"]
    }
