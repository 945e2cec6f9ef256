"""POST /feedback on the inference server: checked, answered 202, written by the capture thread."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from meguri.monitor._capture import scan_feedback, scan_predictions
from meguri.serve import ServeSettings, create_app
from meguri.serve._capture import feedback_schema
from test_serve_support import breast_cancer, mixed_model, onnx_model, running

X, Y, PIPELINE, _ = breast_cancer()
ROWS = X[:5].tolist()


def _settings(url: Path, max_body_bytes: int = 1 << 20) -> ServeSettings:
    return ServeSettings(capture_rate=1.0, capture_url=str(url), max_body_bytes=max_body_bytes)


def test_feedback_forms_dedup_and_read_back(tmp_path: Path) -> None:
    app = create_app(onnx_model(), settings=_settings(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        for i in range(3):
            response = client.post(
                "/invocations", json={"instances": ROWS[:2]}, headers={"x-request-id": f"r{i}"}
            )
            assert response.status_code == 200
        one = client.post("/feedback", json={"request_id": "r0", "label": 1})
        assert one.status_code == 202 and one.json() == {"accepted": 1, "duplicates": 0}
        many = [
            {"request_id": "r1", "row": 1, "label": "0"},
            {"request_id": "r2", "row": 0, "label": 1.0},
            {"request_id": "r1", "row": 1, "label": 1},  # the last of a batch wins
            {"request_id": "r0", "row": 1, "label": True},  # by number: the label 1
            {"request_id": "r2", "row": 1, "label": "0.0"},
        ]
        listed = client.post("/feedback", json=many)
        assert listed.json() == {"accepted": 4, "duplicates": 1}
        time.sleep(0.002)
        wrapped = client.post("/feedback", json={"feedback": [{"request_id": "r0", "label": 0}]})
        assert wrapped.status_code == 202  # a later post replaces r0's label
        assert "/feedback" in client.get("/openapi.json").json()["paths"]
    feedback = scan_feedback(str(tmp_path)).collect().sort("request_id", "row")
    assert feedback.select("request_id", "row", "label").rows() == [
        ("r0", 0, "0"),
        ("r0", 1, "1"),
        ("r1", 1, "1"),
        ("r2", 0, "1"),
        ("r2", 1, "0"),
    ]
    files = list((tmp_path / "_feedback").rglob("part-*.parquet"))
    assert files and all(pq.read_schema(f).equals(feedback_schema()) for f in files)
    assert files[0].parent.name.startswith("date=")
    labelled = scan_predictions(str(tmp_path)).join(
        scan_feedback(str(tmp_path)), on=["request_id", "row"]
    )
    assert labelled.collect().height == 5  # feedback files are not read as predictions
    assert scan_predictions(str(tmp_path)).collect().height == 6


def test_bad_feedback_is_refused_naming_index_and_field(tmp_path: Path) -> None:
    app = create_app(onnx_model(), settings=_settings(tmp_path, max_body_bytes=4096))
    cases = [
        ([{"request_id": "a", "label": 1}, {"request_id": "b"}], "feedback[1].label", "label"),
        ({"request_id": "a", "label": 7}, "feedback[0].label 7 is not one of", "label"),
        ({"request_id": "a", "label": "yes"}, "labels 0, 1", "label"),
        ({"request_id": "a", "label": [1]}, "feedback[0].label", "label"),
        ({"request_id": "x" * 201, "label": 1}, "feedback[0].request_id", "request_id"),
        ({"request_id": "", "label": 1}, "non-empty", "request_id"),
        ({"request_id": 5, "label": 1}, "feedback[0].request_id", "request_id"),
        ([{"request_id": "a", "label": 1, "row": -1}], "feedback[0].row", "row"),
        ([{"request_id": "a", "label": 1, "row": 1.5}], "feedback[0].row", "row"),
        ([{"request_id": "a", "label": 1, "row": True}], "feedback[0].row", "row"),
        ([{"request_id": "a", "label": 1}, 3], "feedback[1] is not an object", None),
        ({"feedback": {"request_id": "a"}}, "must be a list", None),
        ([], "empty", None),
        ("text", "a list of those", None),
    ]
    with running(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        for body, words, field in cases:
            response = client.post("/feedback", json=body)
            assert response.status_code == 400, (body, response.text)
            error = response.json()["error"]
            assert words in error["message"], (words, error)
            assert error["column"] == field
        malformed = client.post("/feedback", content=b"{nope")
        assert malformed.json()["error"]["code"] == "malformed_json"
        large = [{"request_id": f"id-{i}", "label": 1} for i in range(500)]
        assert client.post("/feedback", json=large).status_code == 413
        assert client.get("/feedback").status_code == 405
    assert not (tmp_path / "_feedback").exists()


def test_regression_labels_are_finite_numbers(tmp_path: Path) -> None:
    app = create_app(mixed_model(), settings=_settings(tmp_path))
    with running(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        ok = client.post(
            "/feedback", json=[{"request_id": "a", "label": 2}, {"request_id": "b", "label": 0.1}]
        )
        assert ok.status_code == 202
        for label in ("2.5", None, True, [1]):
            refused = client.post("/feedback", json={"request_id": "c", "label": label})
            assert refused.status_code == 400, label
            assert "feedback[0].label" in refused.json()["error"]["message"]
        huge = client.post("/feedback", content=b'{"request_id": "c", "label": 1e999}')
        assert huge.status_code == 400
    labels = dict(scan_feedback(str(tmp_path)).select("request_id", "label").collect().rows())
    assert labels == {"a": "2.0", "b": "0.1"}
    assert {k: float(v) for k, v in labels.items()} == {"a": 2.0, "b": 0.1}


def test_feedback_without_capture_is_503_and_undocumented() -> None:
    app = create_app(onnx_model(), settings=ServeSettings())
    with running(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        response = client.post("/feedback", json={"request_id": "a", "label": 1})
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "feedback_unavailable" and "--capture-rate" in error["message"]
        assert "/feedback" not in client.get("/openapi.json").json()["paths"]


def test_feedback_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    settings = ServeSettings(capture_rate=1.0, capture_url=str(tmp_path), auth_token="s3cret")
    app = create_app(onnx_model(), settings=settings)
    body = {"request_id": "a", "label": 1}
    with running(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/feedback", json=body).status_code == 401
        headers = {"authorization": "Bearer s3cret"}
        assert client.post("/feedback", json=body, headers=headers).status_code == 202
        doc = client.get("/openapi.json", headers=headers).json()
        assert doc["paths"]["/feedback"]["post"]["security"] == [{"bearer": []}]
