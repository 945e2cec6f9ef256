"""Prometheus metrics of one server process, rendered as text at ``GET /metrics``.

Plain integer counters and fixed-bucket histograms updated from the event loop (one thread:
no locks). Series:

* ``meguri_requests_total{endpoint, status}``: requests answered;
* ``meguri_request_duration_seconds{endpoint}``: latency histogram (arrival to response);
* ``meguri_errors_total{code}``: refused or failed requests by error code;
* ``meguri_batch_rows``: rows per ``model.predict`` call (micro-batch sizes);
* ``meguri_model_info{name, version, runtime}``: always 1;
* ``meguri_capture_rows_total`` / ``meguri_capture_dropped_total``: captured and dropped rows.

With ``--workers N`` each process keeps its own numbers and shares them through a folder
(:class:`WorkerMetrics`): every worker replaces its own file there with its numbers each second
and before it answers a scrape, and the scrape sums every file, so whichever worker answers,
the counters are the server's (the other workers' up to a second old) and never go back. The
file of a worker that died stays, so its counts stay in the sums. ``meguri_workers`` says how
many workers a scrape summed.

:meth:`Metrics.snapshot` reads the prediction routes' numbers from another thread (the capture
writer's, for the system samples of :mod:`meguri.serve._system`): each copy it takes (a dict, a
list) is one C call, atomic under the interpreter lock, so the event loop needs no lock and does
no extra work per request. Errors are also counted per prediction route for those samples, on
the error path only.
"""

from __future__ import annotations

import json
import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

__all__ = [
    "LATENCY_BUCKETS",
    "PREDICTION_ENDPOINTS",
    "Metrics",
    "MetricsSnapshot",
    "WorkerMetrics",
    "histogram_quantile",
    "other_workers",
    "write_json",
]

log = logging.getLogger("meguri.serve.metrics")

#: The routes whose requests are the model's traffic (health checks and scrapes are not).
PREDICTION_ENDPOINTS = frozenset({"/invocations", "/v2/models/{name}/infer"})

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of a histogram as Prometheus' ``histogram_quantile`` estimates it:
    ``counts`` per bucket (not cumulative; one more than ``bounds``, the last being +Inf),
    linear interpolation inside the bucket the rank falls in, from 0 for the first bucket; a
    rank in the +Inf bucket gives the highest finite bound. ``None`` without observations.
    One rule for every latency quantile: the rollout's p99 and the monitor windows'."""
    cumulative = list(accumulate(float(c) for c in counts))
    if len(cumulative) != len(bounds) + 1 or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    index = bisect_left(cumulative, rank, 0, len(bounds))
    if index == len(bounds):
        return float(bounds[-1])
    lower = 0.0 if index == 0 else float(bounds[index - 1])
    below = 0.0 if index == 0 else cumulative[index - 1]
    inside = cumulative[index] - below
    if inside <= 0:
        return lower
    return lower + (float(bounds[index]) - lower) * (rank - below) / inside


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def state(self) -> list[Any]:
        return [list(self.counts), self.total, self.count]

    def add(self, state: Sequence[Any]) -> None:
        """Add the numbers of another histogram's :meth:`state` (same bounds)."""
        counts, total, count = state
        self.counts = [a + int(b) for a, b in zip(self.counts, counts, strict=True)]
        self.total += float(total)
        self.count += int(count)

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        plain = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{plain} {self.total!r}")
        out.append(f"{name}_count{plain} {self.count}")
        return out


@dataclass(frozen=True)
class MetricsSnapshot:
    """Cumulative numbers of the prediction routes at one moment."""

    requests: int
    errors: dict[str, int]
    latency_counts: list[int]
    """Per bucket of :data:`LATENCY_BUCKETS`, the last one being +Inf (not cumulative)."""
    latency_sum: float


class Metrics:
    """The counters of one process (see the module docstring)."""

    def __init__(self, name: str, version: str, runtime: str) -> None:
        self.info = {"name": name, "version": version, "runtime": runtime}
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.errors: dict[str, int] = {}
        self.prediction_errors: dict[str, int] = {}
        self.batches = _Histogram(tuple(float(b) for b in BATCH_BUCKETS))
        self.capture_stats: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.workers: int | None = None
        """How many workers' numbers these are (``None``: one process, not shared)."""

    def state(self) -> dict[str, Any]:
        """This process's numbers as a JSON document (what :class:`WorkerMetrics` shares)."""
        return {
            "info": self.info,
            "requests": [[endpoint, status, n] for (endpoint, status), n in self.requests.items()],
            "latency": {endpoint: h.state() for endpoint, h in self.latency.items()},
            "errors": dict(self.errors),
            "batches": self.batches.state(),
            "capture": list(self.capture_stats()),
        }

    @classmethod
    def summed(cls, states: Sequence[dict[str, Any]]) -> Metrics:
        """The numbers of several workers' :meth:`state` added up (the model of the first)."""
        info = states[0]["info"]
        total = cls(info["name"], info["version"], info["runtime"])
        captured = dropped = 0
        for state in states:
            for endpoint, status, n in state["requests"]:
                key = (endpoint, int(status))
                total.requests[key] = total.requests.get(key, 0) + int(n)
            for endpoint, histogram in state["latency"].items():
                if endpoint not in total.latency:
                    total.latency[endpoint] = _Histogram(LATENCY_BUCKETS)
                total.latency[endpoint].add(histogram)
            for code, n in state["errors"].items():
                total.errors[code] = total.errors.get(code, 0) + int(n)
            total.batches.add(state["batches"])
            captured, dropped = captured + state["capture"][0], dropped + state["capture"][1]
        total.capture_stats = lambda: (captured, dropped)
        total.workers = len(states)
        return total

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(endpoint)
        if histogram is None:
            histogram = self.latency[endpoint] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def error(self, code: str, endpoint: str = "other") -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        if endpoint in PREDICTION_ENDPOINTS:
            self.prediction_errors[code] = self.prediction_errors.get(code, 0) + 1

    def snapshot(self) -> MetricsSnapshot:
        """The prediction routes' cumulative numbers (safe from another thread: see above)."""
        requests = self.requests.copy()
        errors = self.prediction_errors.copy()
        counts = [0] * (len(LATENCY_BUCKETS) + 1)
        total = 0.0
        for endpoint in PREDICTION_ENDPOINTS:
            histogram = self.latency.get(endpoint)
            if histogram is not None:
                counts = [a + b for a, b in zip(counts, histogram.counts.copy(), strict=True)]
                total += histogram.total
        answered = sum(
            n for (endpoint, _), n in requests.items() if endpoint in PREDICTION_ENDPOINTS
        )
        return MetricsSnapshot(answered, errors, counts, total)

    def batch(self, rows: int) -> None:
        self.batches.observe(float(rows))

    def render(self) -> bytes:
        lines = [
            "# HELP meguri_model_info The model this server predicts with.",
            "# TYPE meguri_model_info gauge",
            f"meguri_model_info{{{_labels(self.info)}}} 1",
            "# HELP meguri_requests_total Requests answered, by endpoint and status.",
            "# TYPE meguri_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            labels = _labels({"endpoint": endpoint, "status": str(status)})
            lines.append(f"meguri_requests_total{{{labels}}} {count}")
        lines += [
            "# HELP meguri_request_duration_seconds Latency from arrival to response.",
            "# TYPE meguri_request_duration_seconds histogram",
        ]
        for endpoint, histogram in sorted(self.latency.items()):
            labels = _labels({"endpoint": endpoint})
            lines += histogram.lines("meguri_request_duration_seconds", labels)
        lines += [
            "# HELP meguri_errors_total Refused or failed requests, by error code.",
            "# TYPE meguri_errors_total counter",
        ]
        lines += [
            f'meguri_errors_total{{code="{code}"}} {n}' for code, n in sorted(self.errors.items())
        ]
        lines += [
            "# HELP meguri_batch_rows Rows per model call (micro-batch size).",
            "# TYPE meguri_batch_rows histogram",
        ]
        lines += self.batches.lines("meguri_batch_rows", "")
        if self.workers is not None:
            lines += [
                "# HELP meguri_workers Worker processes whose numbers this scrape sums.",
                "# TYPE meguri_workers gauge",
                f"meguri_workers {self.workers}",
            ]
        return ("\n".join(lines + self._capture_lines()) + "\n").encode()

    def _capture_lines(self) -> list[str]:
        captured, dropped = self.capture_stats()
        return [
            "# HELP meguri_capture_rows_total Prediction rows handed to capture.",
            "# TYPE meguri_capture_rows_total counter",
            f"meguri_capture_rows_total {captured}",
            "# HELP meguri_capture_dropped_total Rows dropped because the capture buffer was full.",
            "# TYPE meguri_capture_dropped_total counter",
            f"meguri_capture_dropped_total {dropped}",
        ]


def _labels(values: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in values.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class WorkerMetrics:
    """The numbers of every worker of one server, shared through ``folder`` (see the module
    docstring): this worker's file is ``<folder>/<pid>.json``, replaced atomically."""

    PUBLISH_SECONDS = 1.0

    def __init__(self, folder: str | Path, metrics: Metrics, worker: str | None = None) -> None:
        self.folder, self.metrics = Path(folder), metrics
        self.path = self.folder / f"{worker or os.getpid()}.json"

    def publish(self) -> dict[str, Any]:
        """Replace this worker's file with its numbers now; returns them."""
        state = self.metrics.state()
        write_json(self.path, state)
        return state

    def summed(self) -> Metrics:
        """Every worker's numbers added up, this worker's as of now."""
        return Metrics.summed([self.publish(), *other_workers(self.folder, self.path)])


def write_json(path: Path, document: Any) -> None:
    """Replace ``path`` with ``document`` atomically (temp file and rename): the files workers
    share and the deployment state files."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(document), encoding="utf-8")
    os.replace(temp, path)


def other_workers(folder: Path, own: Path) -> list[dict[str, Any]]:
    """The JSON documents of ``folder`` but ``own`` (each worker's file): one unreadable (being
    removed, never half-written) is skipped, so that a scrape never fails over it."""
    documents = []
    for path in sorted(folder.glob("*.json")):
        if path == own:
            continue
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            log.warning("metrics: skipped the unreadable worker file %s", path)
    return documents
