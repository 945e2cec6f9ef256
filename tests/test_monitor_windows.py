"""Monitor windows from real captures: a registered model served in-process with capture into
the ``production`` environment's folder, normal then shifted traffic, feedback by request id,
alerts to a webhook and the production criteria recorded as checks.

The windows' figures are checked against independent computations on the rows the test sent
(numpy, scikit-learn, scipy)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import numpy as np
import polars as pl
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from meguri import registry
from meguri.errors import MonitorError
from meguri.monitor import record_feedback, relabel_windows, run_monitor
from meguri.monitor._capture import capture_url, scan_predictions
from meguri.monitor._windows import criterion_figure, window_bounds
from meguri.serve._app import create_app
from meguri.serve._server import ServeSettings, app_in_background
from meguri.spec import NotifierSpec, ProjectSpec, parse_spec
from meguri.store import Workspace, open_workspace
from meguri.testing.specs import quick_spec_text
from meguri.train import train
from test_serve_support import send_labelled

SHIFTED = ("mean_radius", "mean_texture", "mean_perimeter", "mean_area", "worst_radius",
           "worst_texture", "worst_perimeter", "worst_area", "mean_concavity", "worst_concavity",
           "mean_compactness", "worst_compactness", "radius_error", "area_error",
           "perimeter_error", "texture_error")  # fmt: skip


@dataclass
class Served:
    ws: Workspace
    spec: ProjectSpec
    held_out: pl.DataFrame
    target: str
    sent: list[tuple[str, int, int]]
    shifted_ids: set[str]
    webhook: list[dict[str, Any]]
    hook_url: str
    train_rows: pl.DataFrame


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("monitor")
    ws = open_workspace(root, project="mon", user="ann")
    text = quick_spec_text("mon", scale_only=True)
    (root / "meguri.yaml").write_text(text, encoding="utf-8")
    spec = parse_spec(text)
    result = train(spec, workspace=ws)
    version = registry.register_model(result, "bc", workspace=ws)
    ws.metadata.deployments.ensure(ws.project.id, "production", "bc", by="ann")
    target = result.prepared.target
    held_out = pl.concat([result.prepared.raw["validation"], result.prepared.raw["test"]])
    shifted = held_out.with_columns(pl.col(c) * 1.25 for c in SHIFTED)
    settings = ServeSettings(capture_rate=1.0, capture_url=capture_url(ws, "production"))
    model = registry.load_model(version.ref, workspace=ws)
    _Hook.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    app = create_app(model, settings=settings)
    with app_in_background(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        sent = send_labelled(client, held_out, target, "normal")
        shifted_sent = send_labelled(client, shifted, target, "shifted")
        bad = client.post(
            "/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1]]}}
        )
        assert bad.status_code == 400
    # leaving the server's context flushes its capture writer
    yield Served(
        ws, spec, held_out, target, sent + shifted_sent, {r for r, _, _ in shifted_sent},
        _Hook.received, f"http://127.0.0.1:{hook.server_address[1]}/hook",
        result.prepared.raw["train"],
    )  # fmt: skip
    hook.shutdown()
    hook.server_close()
    ws.close()


def test_window_bounds_are_epoch_aligned() -> None:
    assert window_bounds(3601.0, 7300.0, 3600.0) == [(3600.0, 7200.0), (7200.0, 10800.0)]
    assert window_bounds(10.0, 10.5, 5.0) == [(10.0, 15.0)]


def test_criteria_map_to_window_figures() -> None:
    assert criterion_figure("drift_share") == "drift.share"
    assert criterion_figure("latency_p95_ms") == "latency_p95_ms"
    assert criterion_figure("roc_auc") == "accuracy.roc_auc"


def test_unknown_environment_is_named(served: Served) -> None:
    with pytest.raises(MonitorError, match=r"no deployment to environment 'nowhere'.*production"):
        run_monitor("nowhere", workspace=served.ws)


def test_one_window_holds_every_figure(served: Served) -> None:
    result = run_monitor("production", workspace=served.ws, alerts=False)
    assert len(result.windows) == 1
    window = result.windows[0]
    f = window.figures
    assert window.rows == len(served.sent)
    assert window.model_versions == {"bc@1": len(served.sent)}
    # system figures: every request answered or refused was sampled (one was refused)
    assert f["requests"] == len({r for r, _, _ in served.sent}) + 1
    assert f["error_rate"] == pytest.approx(1 / f["requests"])
    assert sum(v or 0 for k, v in f.items() if k.startswith("errors.")) == 1, f
    assert f["latency_p99_ms"] is not None and f["latency_p99_ms"] > 0
    # quality: the shifted half lies partly beyond the training maxima
    assert f["quality.missing_rate"] == 0.0
    assert f["quality.out_of_range_rate"] is not None and f["quality.out_of_range_rate"] > 0
    # drift: the window mixes normal and shifted rows; shifted columns drift, others not
    drift = window.details["drift"]
    drifted = {c["name"] for c in drift["columns"] if c["drifted"]}
    assert drifted and drifted <= set(SHIFTED), drifted
    assert f["drift.share"] == pytest.approx(len(drifted) / len(drift["columns"]))


def test_drift_statistic_matches_scipy(served: Served) -> None:
    window = served.ws.metadata.monitor.windows(served.ws.project.id, "production")[-1]
    column = next(c for c in window.details["drift"]["columns"] if c["name"] == "mean_radius")
    if column["method"] != "ks":
        pytest.skip(f"large-reference rule in force ({column['method']})")
    captured = scan_predictions(capture_url(served.ws, "production")).collect()
    expected = stats.ks_2samp(served.train_rows["mean_radius"], captured["mean_radius"])
    assert column["p_value"] == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)


def test_alert_fires_once_to_a_webhook(served: Served) -> None:
    monitor = served.spec.monitor
    hook = NotifierSpec(kind="webhook", url=served.hook_url, allow_private=True)
    alerts = [
        a.model_copy(update={"notify": ["hook"], "windows": 1, "of": 1}) for a in monitor.alerts
    ]
    spec = served.spec.model_copy(
        update={
            "monitor": monitor.model_copy(update={"alerts": alerts, "notifiers": {"hook": hook}})
        }
    )
    result = run_monitor("production", workspace=served.ws, spec=spec, retrain=False)
    firing = {a.rule for a in result.alerts if a.state == "firing"}
    window = result.windows[0]
    assert window.figures["drift.share"] > 0.3  # the criterion drift-production fails
    assert "data-drift" in firing
    deadline = time.monotonic() + 10
    while not served.webhook and time.monotonic() < deadline:
        time.sleep(0.05)
    body = served.webhook[0]
    assert body["status"] == "firing" and body["commonLabels"]["alertname"] in firing
    again = run_monitor("production", workspace=served.ws, spec=spec, retrain=False)
    stored = served.ws.metadata.monitor.alerts(served.ws.project.id, state="firing")
    assert len([a for a in stored if a.rule == "data-drift"]) == 1
    assert all(a.state == "firing" for a in again.alerts if a.rule == "data-drift")


def test_feedback_gives_accuracy_per_window_and_checks(served: Served) -> None:
    feedback = record_feedback(
        served.ws,
        "production",
        [{"request_id": r, "row": i, "label": str(v)} for r, i, v in served.sent],
    )
    assert feedback.rows == len(served.sent)
    windows = relabel_windows(served.ws, "production", feedback)
    assert len(windows) == 1
    f = windows[0].figures
    assert f["labels"] == len(served.sent)
    captured = scan_predictions(capture_url(served.ws, "production")).collect()
    truth = {(r, i): v for r, i, v in served.sent}
    y = np.array([truth[(r, i)] for r, i in captured.select("request_id", "row").rows()])
    assert f["accuracy.roc_auc"] == pytest.approx(
        roc_auc_score(y, captured["probability_1"].to_numpy()), abs=1e-9
    )
    assert f["accuracy.accuracy"] == pytest.approx(
        float(np.mean(captured["prediction"].to_numpy() == y)), abs=1e-9
    )
    checks = served.ws.metadata.checks.for_subject("monitor_window", windows[0].id)
    by_id = {c.criterion_id: c for c in checks}
    assert by_id["auc-production"].value == pytest.approx(f["accuracy.roc_auc"])
    assert by_id["drift-production"].value == pytest.approx(f["drift.share"])
