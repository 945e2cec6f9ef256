"""The inference server for real over loopback: every protocol, metrics, auth, capture."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from meguri.serve import ServeSettings, create_app
from test_serve_support import FEATURES, breast_cancer, onnx_model, running

X, Y, PIPELINE, _ = breast_cancer()
ROWS = X[:5].tolist()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = create_app(onnx_model(), settings=ServeSettings(max_body_bytes=1 << 20))
    with running(app) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as c:
        yield c


def test_health_endpoints(client: httpx.Client) -> None:
    for path in ("/ping", "/health", "/v2/health/live", "/v2/health/ready", "/v2"):
        assert client.get(path).status_code == 200, path


def test_invocations_json_forms_match_scikit_learn(client: httpx.Client) -> None:
    expected = PIPELINE.predict(X[:5]).tolist()
    docs = [
        {"dataframe_split": {"columns": FEATURES, "data": ROWS}},
        {"dataframe_records": [dict(zip(FEATURES, r, strict=True)) for r in ROWS]},
        {"instances": ROWS},
        {"inputs": {n: X[:5, i].tolist() for i, n in enumerate(FEATURES)}},
    ]
    for doc in docs:
        response = client.post("/invocations", json=doc)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected}


def test_probabilities_and_csv(client: httpx.Client) -> None:
    response = client.post("/invocations?probabilities=true", json={"instances": ROWS})
    body = response.json()
    assert body["labels"] == [0, 1]
    assert np.abs(np.array(body["probabilities"]) - PIPELINE.predict_proba(X[:5])).max() < 1e-4
    csv = "\n".join(",".join(map(repr, r)) for r in ROWS)
    response = client.post(
        "/invocations", content=csv, headers={"content-type": "text/csv", "accept": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv"
    assert response.text.split() == [str(v) for v in PIPELINE.predict(X[:5])]


def test_v2_metadata_and_infer(client: httpx.Client) -> None:
    meta = client.get("/v2/models/cancer").json()
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert meta["inputs"][0]["datatype"] == "FP64"
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "probabilities"]
    doc = {"id": "r1", "inputs": [{"name": "input-0", "shape": [5, 30], "datatype": "FP64",
                                   "data": ROWS}]}  # fmt: skip
    out = client.post("/v2/models/cancer/infer", json=doc).json()
    assert out["id"] == "r1"
    assert out["model_name"] == "cancer"
    assert out["outputs"][0]["data"] == PIPELINE.predict(X[:5]).tolist()
    assert out["outputs"][1]["shape"] == [5, 2]
    assert client.post("/v2/models/other/infer", json=doc).status_code == 404
    assert client.post("/v2/models/cancer/versions/1/infer", json=doc).status_code == 200


def test_errors_are_json_4xx(client: httpx.Client) -> None:
    response = client.post("/invocations", json=[{"f00": 1.0}])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_column"
    assert response.json()["error"]["column"] == "f01"
    assert client.get("/nowhere").status_code == 404
    assert client.get("/invocations").status_code == 405
    response = client.post("/invocations", content=b"x" * (2 << 20))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    response = client.post("/invocations", content=b"1,2", headers={"content-type": "image/png"})
    assert response.status_code == 415


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    response = client.post("/invocations", json=[ROWS[0]], headers={"x-request-id": "abc-1"})
    assert response.headers["x-request-id"] == "abc-1"
    one = client.get("/ping").headers["x-request-id"]
    two = client.get("/ping").headers["x-request-id"]
    assert one and two and one != two


def test_concurrent_requests_are_batched(url: str, client: httpx.Client) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as ac:
            calls = [ac.post("/invocations", json=[ROWS[i % 5]]) for i in range(200)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    expected = PIPELINE.predict(X[:5]).tolist()
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["predictions"][0] for r in responses] == [expected[i % 5] for i in range(200)]
    metrics = client.get("/metrics").text
    assert 'meguri_model_info{name="cancer",version="1",runtime="onnx"} 1' in metrics
    assert 'meguri_requests_total{endpoint="/invocations",status="200"}' in metrics
    assert 'meguri_errors_total{code="missing_column"}' in metrics or "errors" in metrics
    count = float(_sample(metrics, "meguri_batch_rows_count"))
    total = float(_sample(metrics, "meguri_batch_rows_sum"))
    assert total / count > 1.0, "no request was batched with another"


def _sample(text: str, name: str) -> str:
    return next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))


def test_bearer_token() -> None:
    app = create_app(onnx_model(), settings=ServeSettings(auth_token="s3cret"))
    with running(app) as base, httpx.Client(base_url=base) as c:
        assert c.get("/ping").status_code == 200
        refused = c.post("/invocations", json=[ROWS[0]])
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        wrong = c.post("/invocations", json=[ROWS[0]], headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = c.post("/invocations", json=[ROWS[0]], headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_capture_writes_partitioned_parquet_on_shutdown(tmp_path: Path) -> None:
    settings = ServeSettings(capture_rate=1.0, capture_url=str(tmp_path / "capture"))
    app = create_app(onnx_model(version="3"), settings=settings)
    with running(app) as base, httpx.Client(base_url=base) as c:
        for i in range(5):
            c.post("/invocations", json=[ROWS[i]], headers={"x-request-id": f"q{i}"})
        c.post("/invocations?probabilities=1", json=ROWS[:2])
    files = list((tmp_path / "capture").glob("model=*/*/*/*.parquet"))
    assert files, "nothing captured"
    parts = files[0].relative_to(tmp_path / "capture").parts
    assert parts[0] == "model=cancer" and parts[1] == "version=3" and parts[2].startswith("date=")
    assert not list((tmp_path / "capture").rglob("*.tmp"))
    table = pq.read_table(files).to_pandas() if len(files) == 1 else None
    assert table is not None
    assert len(table) == 7
    assert table["request_id"].tolist()[:5] == [f"q{i}" for i in range(5)]
    assert table["prediction"].tolist()[:5] == PIPELINE.predict(X[:5]).tolist()
    assert table["f00"].tolist()[:5] == X[:5, 0].tolist()
    assert {"latency_ms", "time", "probability_0", "probability_1", "model_version"} <= set(table)


def test_capture_table_of_sampled_requests_across_batch_forms(tmp_path: Path) -> None:
    """Batches held as a matrix and as a dict of columns, requests of several rows, a sampling
    rate: the table holds exactly the rows of the sampled requests, each with its own id, row
    index, inputs and prediction."""
    from meguri.serve._capture import Capture
    from meguri.serve._validate import MatrixBatch

    model = onnx_model()
    capture = Capture(
        str(tmp_path), rate=0.5, name="cancer", version="1", signature=model.signature
    )
    capture._random = np.random.default_rng(7)
    keep = np.random.default_rng(7).random(5) < 0.5  # the draws of both batches, in order
    index = {name: i for i, name in enumerate(FEATURES)}
    matrix = MatrixBatch(np.ascontiguousarray(X[:6]), index)
    by_column = {name: X[6:9, i].copy() for i, name in enumerate(FEATURES)}
    for batch, ids, rows in ((matrix, ["a", "b", "c"], [1, 2, 3]), (by_column, ["d", "e"], [2, 1])):
        capture.offer(batch, model.predict(batch), ids, rows, [0.0] * len(ids))
    table = capture._table(capture._open).to_pandas()

    ids = np.array(["a", "b", "b", "c", "c", "c", "d", "d", "e"])
    rows = np.array([0, 0, 1, 0, 1, 2, 0, 1, 0])
    sampled = np.repeat(keep, [1, 2, 3, 2, 1])
    assert sampled.any() and not sampled.all()
    assert table["request_id"].tolist() == ids[sampled].tolist()
    assert table["row"].tolist() == rows[sampled].tolist()
    assert table["f03"].tolist() == X[:9, 3][sampled].tolist()
    assert table["prediction"].tolist() == PIPELINE.predict(X[:9])[sampled].tolist()
    assert capture.stats() == (int(sampled.sum()), 0)


def test_capture_parts_split_at_utc_midnight() -> None:
    import pyarrow as pa

    from meguri.serve._capture import _days

    before, after = 1577836799.5, 1577836800.25  # the last and first moments of 2019 and 2020
    times = pa.array([int(t * 1e6) for t in (before, after, before)], pa.timestamp("us", "UTC"))
    table = pa.table({"time": times, "row": [0, 1, 2]})
    days = _days(table)
    assert {day: part["row"].to_pylist() for day, part in days.items()} == {
        "2019-12-31": [0, 2],
        "2020-01-01": [1],
    }
    assert _days(table.slice(1, 1)) == {"2020-01-01": table.slice(1, 1)}


def test_capture_sampling_rate(tmp_path: Path) -> None:
    settings = ServeSettings(capture_rate=0.25, capture_url=str(tmp_path))
    app = create_app(onnx_model(), settings=settings)
    with running(app) as base, httpx.Client(base_url=base) as c:
        for _ in range(400):
            c.post("/invocations", json=[ROWS[0]])
    rows = sum(pq.read_metadata(f).num_rows for f in tmp_path.glob("model=*/*/*/*.parquet"))
    assert 50 <= rows <= 150


def test_worker_metrics_sum_every_workers_numbers(tmp_path: Path) -> None:
    from meguri.serve._metrics import Metrics, WorkerMetrics

    first, second = Metrics("cancer", "1", "onnx"), Metrics("cancer", "1", "onnx")
    for metrics, seconds in ((first, [0.001, 0.002]), (second, [0.2])):
        for s in seconds:
            metrics.observe("/invocations", 200, s)
            metrics.batch(len(seconds))
    first.observe("/invocations", 422, 0.0003)
    first.error("missing_column", "/invocations")
    second.error("missing_column", "/invocations")
    second.capture_stats = lambda: (5, 1)
    WorkerMetrics(tmp_path, second, worker="2").publish()
    text = WorkerMetrics(tmp_path, first, worker="1").summed().render().decode()
    assert 'meguri_requests_total{endpoint="/invocations",status="200"} 3' in text
    assert 'meguri_requests_total{endpoint="/invocations",status="422"} 1' in text
    assert 'meguri_request_duration_seconds_count{endpoint="/invocations"} 4' in text
    assert 'meguri_request_duration_seconds_bucket{endpoint="/invocations",le="0.1"} 3' in text
    assert float(_sample(text, 'meguri_request_duration_seconds_sum{endpoint="/invocations"}')) == (
        pytest.approx(0.2033)
    )
    assert 'meguri_errors_total{code="missing_column"} 2' in text
    assert "meguri_batch_rows_count 3" in text and "meguri_batch_rows_sum 5.0" in text
    assert "meguri_capture_rows_total 5" in text and "meguri_capture_dropped_total 1" in text
    assert "meguri_workers 2" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.json", "2.json"]
    (tmp_path / "3.json").write_text("{half a fi")  # never fails a scrape
    assert (
        "meguri_workers 2" in WorkerMetrics(tmp_path, first, worker="1").summed().render().decode()
    )
    assert "meguri_workers" not in first.render().decode()  # one process, nothing shared
