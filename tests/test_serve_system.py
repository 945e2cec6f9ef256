"""System samples of the inference server: counters, latency, CPU and memory, read back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import psutil
import pyarrow.parquet as pq

from meguri.monitor._capture import scan_system, system_figures
from meguri.serve import ServeSettings, create_app
from meguri.serve._capture import Capture
from meguri.serve._metrics import LATENCY_BUCKETS, Metrics
from meguri.serve._system import system_schema
from test_serve_support import FEATURES, breast_cancer, onnx_model, running

X, _, _, _ = breast_cancer()
ROWS = X[:5].tolist()
PREDICT = "/invocations"


def _capture(url: str, metrics: Metrics, *, version: str = "1") -> Capture:
    model = onnx_model(version=version)
    return Capture(
        url,
        rate=1.0,
        name=model.name,
        version=version,
        signature=model.signature,
        metrics=metrics,
        flush_seconds=0.05,
        system_write_seconds=3600,
    )


def _prometheus_quantile(q: float, counts: np.ndarray) -> float:
    """histogram_quantile written out from Prometheus' documentation, bucket by bucket."""
    edges = [0.0, *LATENCY_BUCKETS]
    rank, seen = q * counts.sum(), 0
    for i, count in enumerate(counts[:-1]):
        if seen + count >= rank:
            return edges[i] + (edges[i + 1] - edges[i]) * (rank - seen) / count
        seen += count
    return LATENCY_BUCKETS[-1]


def test_samples_match_known_latencies_errors_and_cpu(tmp_path: Path) -> None:
    metrics = Metrics("cancer", "1", "onnx")
    capture = _capture(str(tmp_path), metrics)
    latencies = np.random.default_rng(7).lognormal(np.log(0.004), 0.8, 3000)
    metrics.observe(PREDICT, 200, 0.5)  # before start: not counted
    metrics.error("missing_column", PREDICT)
    cpu_before = sum(os.times()[:2])
    capture.start()
    begun = time.time()
    for i, seconds in enumerate(latencies):
        metrics.observe(PREDICT if i % 3 else "/v2/models/{name}/infer", 200, float(seconds))
        if i == 1500:
            time.sleep(0.12)  # at least one sample in between
    for code, n in (("missing_column", 4), ("malformed_json", 2), ("internal", 1)):
        for _ in range(n):
            metrics.error(code, PREDICT)
            metrics.observe(PREDICT, 400, 0.0009)
    metrics.observe("/ping", 200, 0.0001)  # health checks are no traffic
    metrics.error("not_found", "other")
    burn = time.process_time()
    while time.process_time() - burn < 0.3:
        sum(range(1000))
    capture.close()
    cpu_after = sum(os.times()[:2])
    ended = time.time()

    frame = scan_system(str(tmp_path)).collect()
    assert frame.height >= 2 and set(frame["pid"]) == {os.getpid()}
    assert frame.schema == pl.Schema(pl.from_arrow(system_schema().empty_table()).schema)
    assert frame["interval_seconds"].sum() <= ended - begun + 0.01
    figures = system_figures(frame, begun, ended)
    assert figures["requests"] == len(latencies) + 7
    assert figures["errors.missing_column"] == 4 and figures["errors.internal"] == 1
    assert "errors.not_found" not in figures
    assert figures["error_rate"] == 7 / (len(latencies) + 7)
    assert np.isclose(figures["throughput_rps"], (len(latencies) + 7) / (ended - begun))

    observed = np.concatenate([latencies, np.full(7, 0.0009)])
    counts, _ = np.histogram(observed, bins=[0.0, *LATENCY_BUCKETS, np.inf])
    assert frame["latency_counts"].list.to_array(len(counts)).to_numpy().sum(axis=0).tolist() == (
        counts.tolist()
    )
    assert np.isclose(frame["latency_sum_seconds"].sum(), observed.sum())
    edges = np.array([0.0, *LATENCY_BUCKETS])
    for name, q in (("latency_p50_ms", 0.5), ("latency_p95_ms", 0.95), ("latency_p99_ms", 0.99)):
        estimate = figures[name]
        assert estimate is not None
        assert np.isclose(estimate, _prometheus_quantile(q, counts) * 1000)
        true = np.quantile(observed, q)
        bucket = np.searchsorted(edges, true) - 1  # the true quantile's bucket holds the estimate
        assert edges[bucket] * 1000 <= estimate <= edges[bucket + 1] * 1000

    cpu = float(frame["cpu_seconds"].sum())
    assert 0.25 <= cpu <= cpu_after - cpu_before + 0.02
    assert figures["cpu_percent"] is not None
    assert np.isclose(figures["cpu_percent"], cpu / (ended - begun) * 100)
    rss = psutil.Process().memory_info().rss
    assert abs(frame.sort("time")["rss_bytes"][-1] - rss) < 0.1 * rss
    assert np.isclose(figures["memory_mb"], frame.sort("time")["rss_bytes"][-1] / 2**20)


def test_two_versions_in_one_process_count_each_cpu_second_once(tmp_path: Path) -> None:
    first, second = Metrics("cancer", "1", "onnx"), Metrics("cancer", "2", "onnx")
    captures = [_capture(str(tmp_path), first), _capture(str(tmp_path), second, version="2")]
    for capture in captures:
        capture.start()
    started = sum(os.times()[:2])
    for _ in range(3):
        burn = time.process_time()
        while time.process_time() - burn < 0.1:
            sum(range(1000))
        for capture in captures:
            capture.flush(final=True)
    used = sum(os.times()[:2]) - started
    for capture in captures:
        capture.close()
    frame = scan_system(str(tmp_path)).collect()
    assert set(frame["model_version"]) == {"1", "2"}
    assert 0.25 <= frame["cpu_seconds"].sum() <= used + 0.05
    assert (
        system_figures(frame, 0.0, 1.0)["memory_mb"] == frame.sort("time")["rss_bytes"][-1] / 2**20
    )


def test_real_server_traffic_and_refusals_are_sampled(tmp_path: Path) -> None:
    url = str(tmp_path / "capture")
    app = create_app(onnx_model(), settings=ServeSettings(capture_rate=1.0, capture_url=url))
    assert app.capture is not None and app.capture.system is not None
    app.capture.system_write_seconds = 0.0  # every sample its own file, as soon as taken
    sent: dict[str, int] = {"ok": 0, "missing_column": 0, "malformed_json": 0}
    durations: list[float] = []
    with running(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        begun = time.time()
        for i in range(60):
            body: dict[str, object] | list[dict[str, float]] = {"instances": [ROWS[i % 5]]}
            kind = "ok"
            if i % 10 == 3:
                body, kind = [{"f00": 1.0}], "missing_column"
            tick = time.perf_counter()
            if i % 10 == 7:
                response = client.post(PREDICT, content=b"{nope")
                kind = "malformed_json"
            else:
                response = client.post(PREDICT, json=body)
            durations.append(time.perf_counter() - tick)
            assert response.status_code == (200 if kind == "ok" else 400)
            sent[kind] += 1
        assert client.post("/v2/models/other/infer", json={"inputs": []}).status_code == 404
        for path in ("/ping", "/metrics", "/nowhere"):
            client.get(path)
        app.capture.flush()
    ended = time.time()

    frame = scan_system(url, begun - 1, ended + 1).collect()
    figures = system_figures(frame, begun, ended)
    assert figures["requests"] == 61
    assert figures["errors.missing_column"] == sent["missing_column"] == 6
    assert figures["errors.malformed_json"] == sent["malformed_json"] == 6
    assert figures["errors.model_not_found"] == 1
    assert figures["error_rate"] == 13 / 61
    assert frame["latency_counts"].list.sum().sum() == 61
    assert 0 < frame["latency_sum_seconds"].sum() <= sum(durations) + 0.5
    assert set(frame["model_name"]) == {"cancer"} and set(frame["model_version"]) == {"1"}
    files = list((tmp_path / "capture" / "_system").rglob("*.parquet"))
    parts = files[0].relative_to(tmp_path / "capture" / "_system").parts
    assert parts[0] == "model=cancer" and parts[1] == "version=1" and parts[2].startswith("date=")
    assert pq.read_schema(files[0]).equals(system_schema())
    assert not list((tmp_path / "capture").rglob("*.tmp"))


def test_capture_off_writes_no_samples(tmp_path: Path) -> None:
    app = create_app(onnx_model(), settings=ServeSettings())
    with running(app) as base, httpx.Client(base_url=base) as client:
        assert client.post(PREDICT, json=[dict(zip(FEATURES, ROWS[0], strict=True))]).is_success
    assert app.capture is None
    assert not list(tmp_path.rglob("*"))
