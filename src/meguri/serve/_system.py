"""System samples: what one server process did between two capture flushes, for monitoring.

Monitoring windows need the traffic, errors, latency, CPU and memory of the workers over any
time range, long after a Prometheus scrape would have been lost. So, when capture is on, the
capture writer thread (not the event loop) takes a sample every flush interval, on a beat
aligned to the wall clock (at multiples of the interval, as monitor windows are: a 5 s beat
fits whole into 1 min and 1 h windows): it reads the
cumulative counters :class:`~meguri.serve._metrics.Metrics` already keeps on the event loop
(:meth:`~meguri.serve._metrics.Metrics.snapshot`: a few C-level copies), subtracts the previous
reading and records the differences. Nothing is added to the work per request. Samples are
written, a batch at a time, under::

    {capture_url}/_system/model={name}/version={version}/date=YYYY-MM-DD/part-*.parquet

with one fixed schema (:func:`system_schema`): ``time`` (the middle of the interval the sample
covers, timestamp[us, UTC]: a sample falls in the window it describes),
``interval_seconds`` (since the previous sample), ``pid``, ``model_name``, ``model_version``,
``requests`` and ``errors`` (answered prediction requests and refused or failed ones; deltas),
``error_codes`` + ``error_counts`` (deltas per error code), ``latency_counts`` (deltas per
bucket of :data:`~meguri.serve._metrics.LATENCY_BUCKETS`, the last one +Inf),
``latency_sum_seconds`` (delta), ``cpu_seconds`` (process user + system CPU, delta) and
``rss_bytes`` (resident memory now).

A deployment worker may serve several model versions in one process (a canary beside the
primary), each with its own capture and sampler; the process's CPU seconds are handed out once
(:class:`_ProcessClock`), so summing ``cpu_seconds`` over every row of a window counts each
CPU second once. ``rss_bytes`` is the process's: a reader takes the latest per ``pid``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from meguri.serve._metrics import Metrics, MetricsSnapshot

__all__ = ["SYSTEM_FOLDER", "SystemSample", "SystemSampler", "system_schema", "system_table"]

SYSTEM_FOLDER = "_system"


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _rss_bytes() -> int:
    """Resident memory of this process: one read of ``/proc/self/statm`` on Linux."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


class _ProcessClock:
    """The process's CPU seconds, each handed to exactly one sampler (see the module
    docstring): :meth:`take` returns the CPU used since the last :meth:`take` by any sampler,
    but never from before the asking sampler started (CPU spent while no sampler ran, or
    before this one began, belongs to none of them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0.0

    def now(self) -> float:
        return _cpu_seconds()

    def take(self, started: float) -> float:
        """CPU seconds since the later of the last hand-out and ``started`` (this sampler's
        start, as :meth:`now` read it)."""
        with self._lock:
            now = _cpu_seconds()
            since = max(self._last, started)
            self._last = now
            return max(now - since, 0.0)


_CLOCK = _ProcessClock()


@dataclass(frozen=True, slots=True)
class SystemSample:
    """One row of the ``_system`` table (see the module docstring)."""

    time: float
    interval_seconds: float
    requests: int
    errors: dict[str, int]
    latency_counts: list[int]
    latency_sum_seconds: float
    cpu_seconds: float
    rss_bytes: int


class SystemSampler:
    """Differences of ``metrics`` every ``interval`` seconds (writer thread only)."""

    def __init__(self, metrics: Metrics, *, interval: float) -> None:
        self.metrics, self.interval = metrics, interval
        self._previous: MetricsSnapshot | None = None
        self._cpu_started = 0.0
        self._previous_at = 0.0
        self._next_at = 0.0
        self._samples: list[SystemSample] = []

    def start(self) -> None:
        """Take the reference reading: the first sample counts from now."""
        self._cpu_started = _CLOCK.now()
        self._previous = self.metrics.snapshot()
        self._previous_at = time.monotonic()
        wall = time.time()
        boundary = (wall // self.interval + 1) * self.interval  # the next multiple
        self._next_at = self._previous_at + (boundary - wall)

    def stop(self) -> None:
        """This sampler is done (its capture closed); a later sample starts it again."""
        self._previous = None

    def seconds_to_next(self) -> float:
        return max(self._next_at - time.monotonic(), 0.0)

    def sample(self, *, force: bool = False) -> None:
        """Record a sample when one is due (or now, with ``force``)."""
        now = time.monotonic()
        if self._previous is None:
            self.start()
            return
        if not force and now < self._next_at:
            return
        current = self.metrics.snapshot()
        cpu = _CLOCK.take(self._cpu_started)
        self._samples.append(_difference(self._previous, current, now - self._previous_at, cpu))
        self._previous, self._previous_at = current, now
        while self._next_at <= now:  # a fixed beat: a late sample does not shift the next
            self._next_at += self.interval

    def take(self) -> list[SystemSample]:
        """The samples recorded since the last call."""
        samples, self._samples = self._samples, []
        return samples


def _difference(
    before: MetricsSnapshot, after: MetricsSnapshot, seconds: float, cpu: float
) -> SystemSample:
    errors = {
        code: count - before.errors.get(code, 0)
        for code, count in after.errors.items()
        if count != before.errors.get(code, 0)
    }
    counts = [a - b for a, b in zip(after.latency_counts, before.latency_counts, strict=True)]
    return SystemSample(
        time=time.time() - seconds / 2,
        interval_seconds=seconds,
        requests=after.requests - before.requests,
        errors=errors,
        latency_counts=counts,
        latency_sum_seconds=after.latency_sum - before.latency_sum,
        cpu_seconds=cpu,
        rss_bytes=_rss_bytes(),
    )


def system_schema() -> Any:
    """The fixed Arrow schema of the ``_system`` table (the same for every version)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("time", pa.timestamp("us", tz="UTC")),
            ("interval_seconds", pa.float64()),
            ("pid", pa.int64()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("requests", pa.int64()),
            ("errors", pa.int64()),
            ("error_codes", pa.list_(pa.string())),
            ("error_counts", pa.list_(pa.int64())),
            ("latency_counts", pa.list_(pa.int64())),
            ("latency_sum_seconds", pa.float64()),
            ("cpu_seconds", pa.float64()),
            ("rss_bytes", pa.int64()),
        ]
    )


def system_table(samples: list[SystemSample], *, name: str, version: str) -> Any:
    """One Arrow table of ``samples`` of this process (few rows: one per flush interval)."""
    import pyarrow as pa

    count = len(samples)
    columns = {
        "time": [int(s.time * 1e6) for s in samples],
        "interval_seconds": [s.interval_seconds for s in samples],
        "pid": [os.getpid()] * count,
        "model_name": [name] * count,
        "model_version": [version] * count,
        "requests": [s.requests for s in samples],
        "errors": [sum(s.errors.values()) for s in samples],
        "error_codes": [sorted(s.errors) for s in samples],
        "error_counts": [[s.errors[c] for c in sorted(s.errors)] for s in samples],
        "latency_counts": [s.latency_counts for s in samples],
        "latency_sum_seconds": [s.latency_sum_seconds for s in samples],
        "cpu_seconds": [s.cpu_seconds for s in samples],
        "rss_bytes": [s.rss_bytes for s in samples],
    }
    return pa.Table.from_pydict(columns, schema=system_schema())
