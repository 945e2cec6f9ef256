"""Ground truth posted to the platform (``POST /api/v1/projects/{p}/monitor/{env}/feedback``)
over a real server on loopback: a single record and a batch land beside the captures of a model
really served with capture on, the windows they label are recomputed (accuracy checked against
scikit-learn on the captured predictions), and bad bodies are refused with a 4xx naming the
field, nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from meguri import registry
from meguri.monitor import capture_url, run_monitor
from meguri.monitor._capture import scan_feedback, scan_predictions
from meguri.serve._app import create_app as create_serving_app
from meguri.serve._server import ServeSettings, app_in_background
from meguri.server import ServerSettings, create_app
from meguri.spec import parse_spec
from meguri.store import Workspace, open_workspace
from meguri.store.metadata import DeploymentTarget, MonitorWindow
from meguri.store.metadata.repositories.deployments import NewRevision
from meguri.testing.specs import quick_spec_text
from meguri.train import train

SECRET = "f" * 48
ENVIRONMENTS = ("single", "batch", "refusals")
"""Each test labels its own environment (the same traffic captured in each), so that what one
test posts never changes the windows another one checks."""

Truth = list[tuple[str, int, int]]
"""(request id, row in the request, true label) of every row sent."""


@dataclass
class Platform:
    ws: Workspace
    http: httpx.Client
    tokens: dict[str, str]
    truth: Truth

    def post(
        self, environment: str, body: Any, role: str = "editor", **params: str
    ) -> httpx.Response:
        return self.http.post(
            f"/api/v1/projects/fb/monitor/{environment}/feedback",
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {self.tokens[role]}"},
        )


def _deploy(ws: Workspace, environment: str, version_id: str) -> None:
    """The registered version as ``environment``'s current revision (metadata only: the test
    serves it in this process), so that feedback is checked against its labels."""
    version = ws.metadata.models.get_version(version_id)
    deployment = ws.metadata.deployments.ensure(ws.project.id, environment, "bc", by="owner")
    target = DeploymentTarget(version.id, version.ref, version.package_digest, 100.0, "primary")
    ws.metadata.deployments.add_revision(
        deployment.id, NewRevision([target], "all_at_once", "owner"), expected=0
    )


def _send(client: httpx.Client, frame: pl.DataFrame, target: str) -> Truth:
    """The rows in requests of 10 with request ids ``case-N``; the true labels sent."""
    inputs = [c for c in frame.columns if c != target]
    truth: Truth = []
    for i, start in enumerate(range(0, frame.height, 10)):
        rows = frame.slice(start, 10)
        body = {"dataframe_split": {"columns": inputs, "data": rows.select(inputs).rows()}}
        answer = client.post("/invocations", json=body, headers={"x-request-id": f"case-{i}"})
        assert answer.status_code == 200, answer.text
        truth += [(f"case-{i}", j, int(y)) for j, y in enumerate(rows[target].to_list())]
    return truth


def _add_user(ws: Workspace, name: str, role: str) -> str:
    ws.metadata.access.create_user(name, by="owner")
    ws.metadata.access.set_role(ws.project.id, name, role, by="owner")
    return ws.metadata.access.create_token(name, name="test", by="owner")[1]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("feedback")
    ws = open_workspace(root, project="fb", user="owner")
    # 30-day windows: the traffic of a test run falls in one window, bar a month's boundary
    text = quick_spec_text("fb", scale_only=True).replace("window: 1h", "window: 30d")
    (root / "meguri.yaml").write_text(text, encoding="utf-8")
    result = train(parse_spec(text), workspace=ws)
    version = registry.register_model(result, "bc", workspace=ws)
    model = registry.load_model(version.ref, workspace=ws)
    target = result.prepared.target
    held_out = pl.concat([result.prepared.raw["validation"], result.prepared.raw["test"]])
    truth: Truth = []
    for environment in ENVIRONMENTS:
        _deploy(ws, environment, version.id)
        settings = ServeSettings(capture_rate=1.0, capture_url=capture_url(ws, environment))
        serving = create_serving_app(model, settings=settings)
        with app_in_background(serving) as url, httpx.Client(base_url=url, timeout=30) as client:
            truth = _send(client, held_out, target)
        # leaving the server flushed its captures; the windows exist before any label
        windows = run_monitor(environment, workspace=ws, alerts=False).windows
        assert windows and all(w.figures["labels"] == 0 for w in windows)
    tokens = {role: _add_user(ws, role, role) for role in ("viewer", "editor")}
    app = create_app(ServerSettings(secret_key=SECRET), workspace=ws)
    with app_in_background(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield Platform(ws, http, tokens, truth)
    ws.close()


def _stored_labels(ws: Workspace, environment: str) -> dict[tuple[str, int], str]:
    """The labels on disk, read back through meguri.monitor (the latest one of a key wins)."""
    frame = scan_feedback(capture_url(ws, environment)).collect()
    return {(r, i): label for r, i, label in frame.select("request_id", "row", "label").rows()}


def _feedback_parts(ws: Workspace, environment: str) -> list[Path]:
    return sorted((Path(capture_url(ws, environment)) / "_feedback").rglob("*.parquet"))


def _stored_windows(ws: Workspace, environment: str) -> dict[str, MonitorWindow]:
    return {w.id: w for w in ws.metadata.monitor.windows(ws.project.id, environment)}


def _expected_accuracy(
    ws: Workspace, environment: str, window: MonitorWindow, truth: dict[tuple[str, int], int]
) -> tuple[int, float, float | None]:
    """Labelled rows, accuracy and ROC AUC of ``window``'s captured predictions, computed here
    from the captures and ``truth`` (not from the feedback table the monitor reads)."""
    captured = (
        scan_predictions(capture_url(ws, environment), window.start, window.end)
        .collect()
        .select("request_id", "row", "prediction", "probability_1")
    )
    labelled = [r for r in captured.rows() if (r[0], r[1]) in truth]
    y = np.array([truth[(r[0], r[1])] for r in labelled])
    predicted = np.array([int(r[2]) for r in labelled])
    scores = np.array([r[3] for r in labelled])
    auc = float(roc_auc_score(y, scores)) if len(set(y)) == 2 else None
    return len(labelled), float(np.mean(predicted == y)), auc


def test_a_single_record_is_stored_and_its_window_relabelled(platform: Platform) -> None:
    request_id, row, label = platform.truth[13]  # case-1, its 4th row
    answer = platform.post(
        "single", {"records": [{"request_id": request_id, "row": row, "label": label}]}
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["environment"], body["rows"], body["duplicates"]) == ("single", 1, 0)
    assert _stored_labels(platform.ws, "single") == {(request_id, row): str(label)}
    [relabelled] = body["windows"]
    window = _stored_windows(platform.ws, "single")[relabelled["id"]]  # the stored one, answered
    assert relabelled["figures"] == window.figures
    expected = _expected_accuracy(platform.ws, "single", window, {(request_id, row): label})
    assert expected[0] == 1  # the prediction of that row was captured in this window
    assert window.figures["labels"] == 1
    assert window.figures["accuracy.accuracy"] == pytest.approx(expected[1])
    # the window as the API shows it to a viewer carries the same figures
    shown = platform.http.get(
        "/api/v1/projects/fb/monitor/single/windows",
        headers={"Authorization": f"Bearer {platform.tokens['viewer']}"},
    ).json()["windows"]
    assert {w["id"]: w["figures"] for w in shown}[window.id] == window.figures


def test_a_batch_labels_every_prediction_and_accuracy_matches_sklearn(
    platform: Platform,
) -> None:
    truth = {(r, i): y for r, i, y in platform.truth}
    records = [{"request_id": r, "row": i, "label": y} for r, i, y in platform.truth]
    half = len(records) // 2
    before = _stored_windows(platform.ws, "batch")

    # update=false: written, nothing recomputed (the windows still count no label)
    first = platform.post("batch", {"records": records[:half]}, update="false")
    assert first.status_code == 201, first.text
    assert (first.json()["rows"], first.json()["windows"]) == (half, [])
    assert _stored_windows(platform.ws, "batch") == before

    # the rest, as texts and with row 0 left out where it is 0; the first record twice, the
    # wrong label first: the last record of a (request id, row) wins
    wrong = {**records[half], "label": 1 - records[half]["label"]}
    rest = [
        {"request_id": r["request_id"], "label": str(r["label"])}
        if r["row"] == 0
        else {**r, "label": str(r["label"])}
        for r in records[half:]
    ]
    second = platform.post("batch", {"records": [wrong, *rest]})
    assert second.status_code == 201, second.text
    body = second.json()
    assert (body["rows"], body["duplicates"]) == (len(rest), 1)
    stored = _stored_labels(platform.ws, "batch")
    assert stored == {key: str(y) for key, y in truth.items()}

    windows = _stored_windows(platform.ws, "batch")
    assert sorted(w["id"] for w in body["windows"]) == sorted(windows)
    for window in windows.values():
        rows, accuracy, auc = _expected_accuracy(platform.ws, "batch", window, truth)
        assert window.rows == rows  # every captured prediction has its label now
        assert window.figures["labels"] == rows
        assert window.figures["accuracy.accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert auc is not None
        assert window.figures["accuracy.roc_auc"] == pytest.approx(auc, abs=1e-9)
    assert sum(w.figures["labels"] for w in windows.values()) == len(truth)


def test_an_unknown_request_id_is_kept_and_scores_nothing(platform: Platform) -> None:
    """A label may come for a prediction that was not captured (sampled out, or not flushed
    yet): it is kept, and no window counts it."""
    before = _stored_windows(platform.ws, "refusals")
    answer = platform.post("refusals", {"records": [{"request_id": "case-never", "label": 1}]})
    assert answer.status_code == 201, answer.text
    assert (answer.json()["rows"], answer.json()["windows"]) == (1, [])
    assert _stored_labels(platform.ws, "refusals")[("case-never", 0)] == "1"
    assert _stored_windows(platform.ws, "refusals") == before


@pytest.mark.parametrize(
    ("records", "status", "words"),
    [
        ([{"request_id": "case-0", "row": 0}], 422, "records.0.label: Field required"),
        ([{"row": 0, "label": 1}], 422, "records.0.request_id: Field required"),
        ([{"request_id": "case-0", "label": None}], 422, "records.0.label: the label is null"),
        (
            [{"request_id": "case-0", "label": 1}, {"request_id": "case-1", "label": [1]}],
            422,
            "records.1.label: a label is one text, number or true/false, not a JSON list",
        ),
        ([{"request_id": "case-0", "label": {"class": 1}}], 422, "not a JSON object"),
        ([{"request_id": 7, "label": 1}], 422, "records.0.request_id: Input should be a valid"),
        ([{"request_id": "", "label": 1}], 422, "records.0.request_id"),
        ([{"request_id": "x" * 201, "label": 1}], 422, "records.0.request_id"),
        ([{"request_id": "case-0", "row": -1, "label": 1}], 422, "records.0.row"),
        ([{"request_id": "case-0", "row": 2**40, "label": 1}], 422, "records.0.row"),
        ([{"request_id": "case-0", "row": "first", "label": 1}], 422, "records.0.row"),
        ([], 422, "records: List should have at least 1 item"),
        (
            [{"request_id": "case-0", "label": 1}, {"request_id": "case-1", "label": 7}],
            422,
            "label is not one of the model's labels 0, 1 (record 2, counting from 1)",
        ),
        ([{"request_id": "case-0", "label": "yes"}], 422, "label is not one of the model's"),
    ],
)
def test_bad_records_are_refused_naming_the_field_and_nothing_is_written(
    platform: Platform, records: list[dict[str, Any]], status: int, words: str
) -> None:
    parts = _feedback_parts(platform.ws, "refusals")
    answer = platform.post("refusals", {"records": records})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"]
    assert _feedback_parts(platform.ws, "refusals") == parts


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"request_id": "case-0", "label": 1}, "records: Field required"),
        ([{"request_id": "case-0", "label": 1}], "valid dictionary"),
    ],
)
def test_a_body_that_is_not_a_records_object_is_refused(
    platform: Platform, body: Any, words: str
) -> None:
    answer = platform.post("refusals", body)
    assert answer.status_code == 422 and words in answer.json()["error"]["message"]


def test_only_editors_post_and_only_to_deployed_environments(platform: Platform) -> None:
    record = {"records": [{"request_id": "case-0", "label": 1}]}
    parts = _feedback_parts(platform.ws, "refusals")
    assert platform.post("refusals", record, role="viewer").status_code == 403
    anonymous = platform.http.post("/api/v1/projects/fb/monitor/refusals/feedback", json=record)
    assert anonymous.status_code == 401
    assert _feedback_parts(platform.ws, "refusals") == parts
    nowhere = platform.post("nowhere", record)
    assert nowhere.status_code == 422
    assert "no deployment to environment 'nowhere'" in nowhere.json()["error"]["message"]
    assert "batch, refusals, single" in nowhere.json()["error"]["message"]
