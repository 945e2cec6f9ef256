"""The monitor's ``/metrics``: the text format (escaping, HELP/TYPE, alert states), the raw ASGI
app, and a real Prometheus (Debian's package) scraping it on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
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


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = json.load(response)
    except OSError:
        return []  # not up yet
    assert body["status"] == "success"
    return list(body["data"]["result"])


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


@pytest.mark.skipif(
    not Path(PROMETHEUS).is_file(),
    reason="needs Prometheus (apt-get install prometheus: Debian's package, /usr/bin/prometheus)",
)
def test_a_real_prometheus_scrapes_the_figures(
    ws: Workspace, exporter: int, tmp_path: Path
) -> None:
    store_windows(ws)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: meguri\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter}']\n"
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        result = _poll(port, 'meguri_monitor_figure{figure="drift.share"}', process, tmp_path)
        values = {r["metric"]["environment"]: float(r["value"][1]) for r in result}
        assert values == {"production": 0.375, "staging": 0.0}
        assert {r["metric"]["project"] for r in result} == {"churn"}
        # the escaped label arrives as the original name
        odd = _query(port, 'meguri_monitor_figure{figure="drift.column.a\\"b\\\\c\\nd"}')
        assert [float(r["value"][1]) for r in odd] == [0.25]
        firing = _query(port, "meguri_alert_firing == 1")
        assert [r["metric"]["rule"] for r in firing] == ["data-drift"]
        up = _query(port, 'up{job="meguri"}')
        assert [float(r["value"][1]) for r in up] == [1.0]
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _poll(
    port: int, promql: str, process: subprocess.Popen[bytes], folder: Path
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        assert process.poll() is None, (folder / "prometheus.log").read_text()
        result = _query(port, promql)
        if len(result) == 2:
            return result
        time.sleep(0.25)
    raise AssertionError(
        f"Prometheus never had {promql}: {(folder / 'prometheus.log').read_text()}"
    )
