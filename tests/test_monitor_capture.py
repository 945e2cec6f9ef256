"""Reading the capture folder: predictions, system samples, feedback; the system figures."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import httpx
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meguri.monitor._capture import (
    FEEDBACK_COLUMNS,
    PREDICTION_COLUMNS,
    SYSTEM_COLUMNS,
    histogram_quantile,
    scan_feedback,
    scan_predictions,
    scan_system,
    system_figures,
)
from meguri.serve import ServeSettings, create_app
from meguri.serve._capture import FeedbackBatch, feedback_table
from meguri.serve._metrics import LATENCY_BUCKETS, Metrics
from meguri.serve._system import SystemSample, system_table
from test_serve_support import breast_cancer, mixed_model, onnx_model, running

X, _, _, _ = breast_cancer()
DAY = 86400.0
JAN1 = datetime(2020, 1, 1, tzinfo=UTC).timestamp()


def _predictions(times: list[float], version: str = "1") -> pa.Table:
    count = len(times)
    return pa.table(
        {
            "request_id": [f"r{i}" for i in range(count)],
            "row": pa.array([0] * count, pa.int64()),
            "time": pa.array([int(t * 1e6) for t in times], pa.timestamp("us", tz="UTC")),
            "latency_ms": [1.0] * count,
            "model_name": ["m"] * count,
            "model_version": [version] * count,
            "x": [float(i) for i in range(count)],
            "prediction": pa.array([i % 2 for i in range(count)], pa.int64()),
        }
    )


def _put(root: Path, folder: str, table: pa.Table) -> Path:
    path = root / folder / f"part-{uuid.uuid4().hex}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_prediction_scan_prunes_dates_and_filters_time(tmp_path: Path) -> None:
    base = "model=m/version=1"
    _put(tmp_path, f"{base}/date=2020-01-01", _predictions([JAN1 + 10, JAN1 + 20]))
    _put(tmp_path, f"{base}/date=2020-01-03", _predictions([JAN1 + 2 * DAY + 5]))
    broken = tmp_path / f"{base}/date=2020-01-05/part-broken.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not parquet")  # outside the range: never opened
    (broken.parent / ".part-1-abc.parquet.tmp").write_bytes(b"half written")

    found = scan_predictions(str(tmp_path), JAN1 + 15, JAN1 + 4 * DAY).collect()
    assert found["time"].dt.epoch("s").to_list() == [JAN1 + 20, JAN1 + 2 * DAY + 5]
    midnight = scan_predictions(str(tmp_path), JAN1, JAN1 + 4 * DAY).collect()
    assert midnight.height == 3
    exclusive_end = scan_predictions(str(tmp_path), JAN1, datetime(2020, 1, 5, tzinfo=UTC))
    assert exclusive_end.collect().height == 3  # 2020-01-05 holds nothing before its midnight
    with pytest.raises(pl.exceptions.ComputeError):
        scan_predictions(str(tmp_path)).collect()
    broken.unlink()
    assert scan_predictions(str(tmp_path)).collect().height == 3  # the .tmp file is skipped


def test_versions_with_other_columns_concatenate(tmp_path: Path) -> None:
    url = str(tmp_path)
    settings = ServeSettings(capture_rate=1.0, capture_url=url)
    app = create_app(onnx_model(version="1"), settings=settings)
    with running(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/invocations", json={"instances": X[:3].tolist()}).is_success
    mixed = create_app(mixed_model(), settings=settings)
    record = {"amount": 1.5, "count": 2, "flag": True, "city": None, "seen": None}
    with running(mixed) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/invocations", json=[record]).is_success
        assert mixed.capture is not None
        mixed.capture.flush()  # a file whose city column is all null (Arrow's null type)
        named = {**record, "city": "Osaka", "seen": "2024-05-01T10:00:00"}
        assert client.post("/invocations", json=[named, named]).is_success
    frame = scan_predictions(url).collect()
    assert frame.height == 6
    assert {"f00", "f29", "probability_1", "amount", "city", "seen"} <= set(frame.columns)
    by_model = dict(frame.group_by("model_name").len().rows())
    assert by_model == {"cancer": 3, "mixed": 3}
    assert frame.filter(pl.col("model_name") == "mixed")["city"].to_list() == [
        None,
        "Osaka",
        "Osaka",
    ]
    assert frame.filter(pl.col("model_name") == "cancer")["amount"].null_count() == 3
    assert frame["f00"].drop_nulls().to_list() == X[:3, 0].tolist()
    assert scan_system(url).collect()["model_name"].unique().sort().to_list() == [
        "cancer",
        "mixed",
    ]


def test_missing_or_empty_folders_give_empty_frames(tmp_path: Path) -> None:
    for url in (str(tmp_path / "nowhere"), str(tmp_path)):
        assert scan_predictions(url).collect().schema == pl.Schema(PREDICTION_COLUMNS)
        assert scan_system(url, 0, 1).collect().schema == pl.Schema(SYSTEM_COLUMNS)
        assert scan_feedback(url).collect().schema == pl.Schema(FEEDBACK_COLUMNS)
    figures = system_figures(scan_system(str(tmp_path)).collect(), 0.0, 3600.0)
    assert figures == {
        "requests": 0.0,
        "throughput_rps": 0.0,
        "error_rate": None,
        "latency_p50_ms": None,
        "latency_p95_ms": None,
        "latency_p99_ms": None,
        "cpu_percent": None,
        "memory_mb": None,
    }


def test_feedback_scan_keeps_the_latest_label(tmp_path: Path) -> None:
    first = feedback_table(["a", "b", "a"], [0, 0, 1], ["1", "0", "0"], [JAN1 + 5] * 3)
    later = feedback_table(["a", "b"], [0, 0], ["0", "1"], [JAN1 + 9, JAN1 + 1])
    _put(tmp_path, "_feedback/date=2020-01-01", first)
    _put(tmp_path, "_feedback/date=2020-01-02", later)
    rows = scan_feedback(str(tmp_path)).collect().sort("request_id", "row")
    assert rows.select("request_id", "row", "label").rows() == [
        ("a", 0, "0"),  # later time wins
        ("a", 1, "0"),
        ("b", 0, "0"),  # the later file's row is older: the earlier label stays
    ]


def test_memory_filesystem_round_trip() -> None:
    """Any fsspec URL: the capture writer puts files there, the scanners read them back."""
    url = f"memory://capture-{uuid.uuid4().hex}"
    app = create_app(onnx_model(), settings=ServeSettings(capture_rate=1.0, capture_url=url))
    with running(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/invocations", json={"instances": X[:4].tolist()}).is_success
        assert client.post("/feedback", json={"request_id": "x", "label": 0}).status_code == 202
    assert scan_predictions(url).collect().height == 4
    assert scan_system(url).collect()["requests"].sum() == 1
    assert scan_feedback(url).collect()["label"].to_list() == ["0"]
    fs, root = fsspec.core.url_to_fs(url)
    fs.rm(root, recursive=True)


def _sample(at: float, pid: int, rss: int, **fields: object) -> dict[str, object]:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    row: dict[str, object] = {
        "time": datetime.fromtimestamp(at, UTC),
        "interval_seconds": 5.0,
        "pid": pid,
        "model_name": "m",
        "model_version": "1",
        "requests": 0,
        "errors": 0,
        "error_codes": [],
        "error_counts": [],
        "latency_counts": counts,
        "latency_sum_seconds": 0.0,
        "cpu_seconds": 0.0,
        "rss_bytes": rss,
    }
    return row | fields


def test_system_figures_over_workers() -> None:
    counts_a = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
    counts_a[[5, 6, 7]] = [50, 30, 20]  # (2.5, 5] ms, (5, 10] ms, (10, 25] ms
    counts_b = np.zeros_like(counts_a)
    counts_b[[6, 16]] = [48, 2]  # 2 beyond 10 s: the +Inf bucket
    rows = [
        _sample(100, 11, 100 << 20, requests=100, errors=3, cpu_seconds=2.0,
                error_codes=["internal", "missing_column"], error_counts=[1, 2],
                latency_counts=counts_a.tolist()),
        _sample(105, 11, 120 << 20, cpu_seconds=1.0),
        _sample(103, 22, 300 << 20, requests=50, errors=1, error_codes=["missing_column"],
                error_counts=[1], latency_counts=counts_b.tolist(), cpu_seconds=3.0),
        _sample(101, 22, 999 << 20),
    ]  # fmt: skip
    frame = pl.DataFrame(rows, schema=SYSTEM_COLUMNS)
    figures = system_figures(frame, 60.0, 120.0)
    assert figures["requests"] == 150 and figures["throughput_rps"] == 150 / 60
    assert figures["error_rate"] == 4 / 150
    assert figures["errors.missing_column"] == 3 and figures["errors.internal"] == 1
    assert figures["cpu_percent"] == pytest.approx(6.0 / 60 * 100)
    assert figures["memory_mb"] == 120 + 300  # the latest sample per process
    total = counts_a + counts_b  # cumulative: 50 at 5 ms, 128 at 10 ms, 148 at 25 ms
    assert figures["latency_p50_ms"] == pytest.approx(5 + 5 * (75 - 50) / 78)
    assert figures["latency_p95_ms"] == pytest.approx(10 + 15 * (142.5 - 128) / 20)
    assert figures["latency_p99_ms"] == pytest.approx(10_000)  # rank in +Inf: highest bound
    assert histogram_quantile(0.5, LATENCY_BUCKETS, total) == pytest.approx(
        figures["latency_p50_ms"] / 1000
    )


def test_histogram_quantile_is_exact_for_data_uniform_within_buckets() -> None:
    """Linear interpolation inside a bucket is exact when the data spread evenly in it."""
    edges = np.array([0.0, *LATENCY_BUCKETS])
    per_bucket = np.random.default_rng(3).integers(500, 4000, len(LATENCY_BUCKETS))
    spread = [
        lo + (hi - lo) * (np.arange(n) + 0.5) / n  # evenly spaced inside the bucket
        for lo, hi, n in zip(edges[:-1], edges[1:], per_bucket, strict=True)
    ]
    values = np.concatenate(spread)
    counts = [*per_bucket.tolist(), 0]
    for q in (0.1, 0.5, 0.9, 0.95, 0.99):
        estimate = histogram_quantile(q, LATENCY_BUCKETS, counts)
        truth = np.quantile(values, q)
        width = np.diff(edges)[np.searchsorted(edges, truth) - 1]
        assert estimate == pytest.approx(truth, abs=0.02 * width)
    assert histogram_quantile(0.5, LATENCY_BUCKETS, [0] * 17) is None


def test_feedback_batches_and_samples_share_dates_by_time(tmp_path: Path) -> None:
    """The writer groups feedback and samples by their own UTC date (two files across midnight)."""
    from meguri.serve._capture import Capture

    model = onnx_model()
    metrics = Metrics("cancer", "1", "onnx")
    capture = Capture(
        str(tmp_path), rate=1.0, name="cancer", version="1", signature=model.signature,
        metrics=metrics,
    )  # fmt: skip
    capture.offer_feedback(FeedbackBatch(["a"], [0], ["1"], JAN1 - 1))
    capture.offer_feedback(FeedbackBatch(["b"], [0], ["0"], JAN1 + 1))
    assert capture.system is not None
    capture.system.start()
    capture.system._samples.append(SystemSample(JAN1 - 1, 5.0, 1, {}, [0] * 17, 0.0, 0.0, 1))
    capture.flush(final=True)
    dates = sorted(p.parent.name for p in (tmp_path / "_feedback").rglob("*.parquet"))
    assert dates == ["date=2019-12-31", "date=2020-01-01"]
    assert len(list((tmp_path / "_system").rglob("date=2019-12-31/*.parquet"))) == 1
    assert scan_feedback(str(tmp_path)).collect().height == 2
    assert system_table([], name="m", version="1").num_rows == 0
