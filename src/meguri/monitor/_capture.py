"""Reading what the inference servers captured: predictions, system samples and feedback.

A deployment's servers write under one capture folder (:func:`capture_url`; a local folder or
any fsspec URL such as ``s3://bucket/capture``), see :mod:`meguri.serve._capture`::

    model=NAME/version=V/date=YYYY-MM-DD/part-*.parquet            predictions
    _system/model=NAME/version=V/date=YYYY-MM-DD/part-*.parquet    system samples
    _feedback/date=YYYY-MM-DD/part-*.parquet                       ground truth

The scanners list those files with fsspec, keep only the ``date=`` folders a time range can
touch (partition pruning by path, before any file is opened), and return Polars lazy frames
filtered on ``time``. Files being written (``.part-*.tmp``) never match ``part-*.parquet``.
Prediction files of different model versions may hold different input columns (or, for a
column that was all null in one batch, a null type): they are concatenated diagonally with
relaxed types. An empty or missing folder gives an empty frame with the base columns.

:func:`system_figures` turns a window's system samples into the window figures ``requests``,
``throughput_rps``, ``error_rate``, ``errors.<code>``, ``latency_p50_ms`` / ``p95`` / ``p99``
(interpolated within the summed histogram buckets as Prometheus' ``histogram_quantile`` does),
``cpu_percent`` and ``memory_mb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import polars as pl

from meguri.serve._capture import FEEDBACK_FOLDER
from meguri.serve._metrics import LATENCY_BUCKETS
from meguri.serve._system import SYSTEM_FOLDER
from meguri.store._workspace import STATE_DIR

if TYPE_CHECKING:
    from meguri.store import Workspace

__all__ = [
    "FEEDBACK_COLUMNS",
    "PREDICTION_COLUMNS",
    "SYSTEM_COLUMNS",
    "between",
    "capture_url",
    "histogram_quantile",
    "scan_feedback",
    "scan_predictions",
    "scan_system",
    "system_figures",
]

Moment = float | datetime
"""Epoch seconds (UTC) or an aware datetime."""
Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

_TIME = pl.Datetime("us", "UTC")
PREDICTION_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "row": pl.Int64(),
    "time": _TIME,
    "latency_ms": pl.Float64(),
    "model_name": pl.String(),
    "model_version": pl.String(),
    "prediction": pl.Null(),
}
"""Columns every prediction frame has (``prediction`` takes the model's type when any)."""
SYSTEM_COLUMNS: dict[str, pl.DataType] = {
    "time": _TIME,
    "interval_seconds": pl.Float64(),
    "pid": pl.Int64(),
    "model_name": pl.String(),
    "model_version": pl.String(),
    "requests": pl.Int64(),
    "errors": pl.Int64(),
    "error_codes": pl.List(pl.String()),
    "error_counts": pl.List(pl.Int64()),
    "latency_counts": pl.List(pl.Int64()),
    "latency_sum_seconds": pl.Float64(),
    "cpu_seconds": pl.Float64(),
    "rss_bytes": pl.Int64(),
}
FEEDBACK_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "row": pl.Int64(),
    "label": pl.String(),
    "time": _TIME,
}
_QUANTILES = (("latency_p50_ms", 0.5), ("latency_p95_ms", 0.95), ("latency_p99_ms", 0.99))


def capture_url(ws: Workspace, environment: str) -> str:
    """The capture folder of a deployment environment, where ``meguri deploy`` points its
    servers: ``<workspace root>/.meguri/capture/<environment>``."""
    return str(ws.root / STATE_DIR / "capture" / environment)


# -- scanners --------------------------------------------------------------------------------
def scan_predictions(
    url: str, start: Moment | None = None, end: Moment | None = None
) -> pl.LazyFrame:
    """Captured prediction rows with ``start <= time < end`` (either bound may be open)."""
    files = _CaptureFiles(url)
    frames = files.frames("model=*/version=*/", start, end)
    if not frames:
        return pl.LazyFrame(schema=PREDICTION_COLUMNS)
    return between(pl.concat(frames, how="diagonal_relaxed"), start, end)


def scan_system(url: str, start: Moment | None = None, end: Moment | None = None) -> pl.LazyFrame:
    """System samples (one per server process and flush interval) with ``start <= time < end``."""
    files = _CaptureFiles(url)
    frames = files.frames(f"{SYSTEM_FOLDER}/model=*/version=*/", start, end, SYSTEM_COLUMNS)
    if not frames:
        return pl.LazyFrame(schema=SYSTEM_COLUMNS)
    return between(pl.concat(frames, how="vertical"), start, end)


def scan_feedback(url: str) -> pl.LazyFrame:
    """Ground truth, one row per ``(request_id, row)``: the latest ``time`` wins (for equal
    times, the later file, then the later row)."""
    files = _CaptureFiles(url)
    frames = files.frames(f"{FEEDBACK_FOLDER}/", None, None, FEEDBACK_COLUMNS)
    if not frames:
        return pl.LazyFrame(schema=FEEDBACK_COLUMNS)
    return (
        pl.concat(frames, how="vertical")
        .sort("time", maintain_order=True)
        .unique(["request_id", "row"], keep="last", maintain_order=True)
    )


class _CaptureFiles:
    """The Parquet parts under one capture URL (fsspec), read as lazy frames."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(url)
        protocol = self.fs.protocol
        self.local = "file" in ((protocol,) if isinstance(protocol, str) else tuple(protocol))

    def frames(
        self,
        prefix: str,
        start: Moment | None,
        end: Moment | None,
        schema: dict[str, pl.DataType] | None = None,
    ) -> list[pl.LazyFrame]:
        """One frame per part file in the ``date=`` folders under ``prefix`` that
        ``[start, end)`` can touch, cast to ``schema`` when given."""
        files = self._parts(prefix, start, end)
        frames = [self._scan(path) for path in files]
        if schema is not None:
            frames = [f.select(pl.col(n).cast(t) for n, t in schema.items()) for f in frames]
        return frames

    def _parts(self, prefix: str, start: Moment | None, end: Moment | None) -> list[str]:
        folders = self.fs.glob(f"{self.root}/{prefix}date=*")
        low, high = _day(start), _day(end, exclusive=True)
        kept = [f for f in folders if _in_days(f, low, high)]
        parts = [p for folder in kept for p in self.fs.glob(f"{folder}/part-*.parquet")]
        return sorted(parts, key=lambda p: (p.rsplit("/", 2)[-2], p.rsplit("/", 1)[-1]))

    def _scan(self, path: str) -> pl.LazyFrame:
        if self.local:
            return pl.scan_parquet(path, hive_partitioning=False)
        import pyarrow.parquet as pq

        with self.fs.open(path, "rb") as handle:
            frame = pl.from_arrow(pq.read_table(handle))
        assert isinstance(frame, pl.DataFrame)
        return frame.lazy()


def _moment(value: Moment) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value, UTC)


def _day(value: Moment | None, *, exclusive: bool = False) -> date | None:
    """The UTC date of ``value``; for an exclusive end at midnight, the day before."""
    if value is None:
        return None
    moment = _moment(value)
    if exclusive:
        moment -= timedelta(microseconds=1)
    return moment.date()


def _in_days(folder: str, low: date | None, high: date | None) -> bool:
    name = folder.rstrip("/").rsplit("/", 1)[-1]
    try:
        day = date.fromisoformat(name.removeprefix("date="))
    except ValueError:
        return False  # not a partition this layout writes
    return (low is None or day >= low) and (high is None or day <= high)


def between(frame: Frame, start: Moment | None, end: Moment | None) -> Frame:
    """The rows of ``frame`` (lazy or not) whose ``time`` is in ``[start, end)``."""
    if start is not None:
        frame = frame.filter(pl.col("time") >= _moment(start))
    if end is not None:
        frame = frame.filter(pl.col("time") < _moment(end))
    return frame


# -- figures ---------------------------------------------------------------------------------
def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of a histogram as Prometheus' ``histogram_quantile`` estimates it:
    ``counts`` per bucket (not cumulative; one more than ``bounds``, the last being +Inf),
    linear interpolation inside the bucket the rank falls in, from 0 for the first bucket; a
    rank in the +Inf bucket gives the highest finite bound. ``None`` without observations."""
    cumulative = np.cumsum(np.asarray(counts, dtype=np.float64))
    if len(cumulative) != len(bounds) + 1 or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    index = int(np.searchsorted(cumulative[:-1], rank, side="left"))
    if index == len(bounds):
        return float(bounds[-1])
    lower = 0.0 if index == 0 else float(bounds[index - 1])
    below = 0.0 if index == 0 else float(cumulative[index - 1])
    inside = float(cumulative[index]) - below
    if inside <= 0:
        return lower
    return lower + (float(bounds[index]) - lower) * (float(rank) - below) / inside


def system_figures(frame: pl.DataFrame, start: Moment, end: Moment) -> dict[str, float | None]:
    """The system figures of the window ``[start, end)`` from its samples ``frame`` (a
    collected :func:`scan_system` of that window). Figures without evidence (latency without
    requests, CPU and memory without samples) are ``None``; ``memory_mb`` is in MiB."""
    seconds = max((_moment(end) - _moment(start)).total_seconds(), 1e-9)
    requests = int(frame["requests"].sum()) if frame.height else 0
    errors = int(frame["errors"].sum()) if frame.height else 0
    figures: dict[str, float | None] = {
        "requests": float(requests),
        "throughput_rps": requests / seconds,
        "error_rate": errors / requests if requests else None,
    }
    figures.update(_error_figures(frame))
    counts = _latency_counts(frame)
    for name, q in _QUANTILES:
        value = histogram_quantile(q, LATENCY_BUCKETS, counts)
        figures[name] = None if value is None else value * 1000.0
    figures["cpu_percent"] = _cpu_percent(frame, seconds)
    figures["memory_mb"] = _memory_mb(frame)
    return figures


def _error_figures(frame: pl.DataFrame) -> dict[str, float | None]:
    if not frame.height:
        return {}
    per_code = (
        frame.select("error_codes", "error_counts")
        .explode(["error_codes", "error_counts"])
        .drop_nulls()
        .group_by("error_codes")
        .agg(pl.col("error_counts").sum())
        .sort("error_codes")
    )
    return {f"errors.{code}": float(n) for code, n in per_code.iter_rows()}


def _latency_counts(frame: pl.DataFrame) -> Any:
    """Counts per bucket summed over the samples (rows of another bucket layout are skipped)."""
    width = len(LATENCY_BUCKETS) + 1
    rows = frame.filter(pl.col("latency_counts").list.len() == width) if frame.height else frame
    if not rows.height:
        return np.zeros(width, dtype=np.int64)
    matrix = rows["latency_counts"].list.to_array(width).to_numpy()
    return np.asarray(matrix, dtype=np.int64).sum(axis=0)


def _cpu_percent(frame: pl.DataFrame, seconds: float) -> float | None:
    """CPU seconds of every worker process over the window's seconds, in percent (200 is two
    cores busy); each process hands each CPU second to one sample (:mod:`meguri.serve._system`)."""
    if not frame.height:
        return None
    return float(frame["cpu_seconds"].sum()) / seconds * 100.0


def _memory_mb(frame: pl.DataFrame) -> float | None:
    """The workers' resident memory: the latest sample of each process, summed."""
    if not frame.height:
        return None
    latest = frame.sort("time").group_by("pid").agg(pl.col("rss_bytes").last())
    return float(latest["rss_bytes"].sum()) / 2**20
