"""Reading what the inference servers captured: predictions, system samples and feedback.

A deployment's servers write under one capture folder (:func:`capture_url`; a local folder or
any fsspec URL such as ``s3://bucket/capture``), see :mod:`meguri.serve._capture`::

    model=NAME/version=V/date=YYYY-MM-DD/part-*.parquet            predictions
    _system/model=NAME/version=V/date=YYYY-MM-DD/part-*.parquet    system samples
    _feedback/date=YYYY-MM-DD/part-*.parquet                       ground truth

The scanners list those files with fsspec, keep only the ``date=`` folders a time range can
touch (partition pruning by path, before any file is opened), and return Polars lazy frames
filtered on ``time``. Files being written (``.part-*.tmp``) never match ``part-*.parquet``.
A part named by the writer (``part-<unix ms>-<random>.parquet``) holds only rows stamped before
it was written, so one written more than :data:`CLOCK_MARGIN_S` before ``start`` is not opened
either (the margin absorbs a clock stepped back between a row and its write).

**Encrypted parts.** With encryption at rest on, the servers seal each part
(:mod:`meguri.serve._sealed_parts`). A sealed part is read whole and decrypted into memory, and
Polars scans those bytes (``pl.scan_parquet`` of the plaintext buffer): still lazy (projection,
predicates and row-group statistics apply), but the I/O and the decryption of every part the
date range and the name leave in happen when the frame is built, not at ``collect``; no
plaintext ever goes to a file. The keys are ``keys`` when given, else the environment's (as the
servers get them; :func:`capture_keys` gives a workspace's). A part that fails authentication
is a :class:`~meguri.errors.MonitorError` raised by the scanner, never rows read or skipped.
Prediction files of different model versions may hold different input columns (or, for a
column that was all null in one batch, a null type): they are concatenated diagonally with
relaxed types. An empty or missing folder gives an empty frame with the base columns.

:func:`system_figures` turns a window's system samples into the window figures ``requests``,
``throughput_rps``, ``error_rate``, ``errors.<code>``, ``latency_p50_ms`` / ``p95`` / ``p99``
(interpolated within the summed histogram buckets as Prometheus' ``histogram_quantile`` does),
``cpu_percent`` and ``memory_mb``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import polars as pl

from meguri.serve._capture import FEEDBACK_FOLDER
from meguri.serve._metrics import LATENCY_BUCKETS, histogram_quantile
from meguri.serve._sealed_parts import is_local, keys_from_environment, open_part
from meguri.serve._system import SYSTEM_FOLDER

if TYPE_CHECKING:
    from meguri.store import Workspace
    from meguri.store.artifacts import KeyRing

__all__ = [
    "CLOCK_MARGIN_S",
    "FEEDBACK_COLUMNS",
    "PREDICTION_COLUMNS",
    "SYSTEM_COLUMNS",
    "between",
    "capture_keys",
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
CLOCK_MARGIN_S = 3600.0
"""How long before ``start`` a part may have been written and still hold rows of the range."""
_WRITTEN = re.compile(r"part-(\d{10,16})-[0-9a-f]{12}\.parquet")

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
    from meguri.deploy._supervisor import capture_dir

    return str(capture_dir(ws.root, environment))


def capture_keys(ws: Workspace) -> KeyRing | None:
    """The keys that open ``ws``'s captures: its artifact store's when that one encrypts (the
    workspace may have been opened with a key file of its own), else the environment's."""
    keys: KeyRing | None = getattr(ws.artifacts, "keys", None)
    if getattr(ws.artifacts, "encrypts_at_rest", False) and keys is not None:
        return keys
    return keys_from_environment()


# -- scanners --------------------------------------------------------------------------------
def scan_predictions(
    url: str,
    start: Moment | None = None,
    end: Moment | None = None,
    *,
    keys: KeyRing | Literal["environment"] | None = "environment",
) -> pl.LazyFrame:
    """Captured prediction rows with ``start <= time < end`` (either bound may be open)."""
    files = _CaptureFiles(url, keys)
    frames = files.frames("model=*/version=*/", start, end)
    if not frames:
        return pl.LazyFrame(schema=PREDICTION_COLUMNS)
    return between(pl.concat(frames, how="diagonal_relaxed"), start, end)


def scan_system(
    url: str,
    start: Moment | None = None,
    end: Moment | None = None,
    *,
    keys: KeyRing | Literal["environment"] | None = "environment",
) -> pl.LazyFrame:
    """System samples (one per server process and flush interval) with ``start <= time < end``."""
    files = _CaptureFiles(url, keys)
    frames = files.frames(f"{SYSTEM_FOLDER}/model=*/version=*/", start, end, SYSTEM_COLUMNS)
    if not frames:
        return pl.LazyFrame(schema=SYSTEM_COLUMNS)
    return between(pl.concat(frames, how="vertical"), start, end)


def scan_feedback(
    url: str, *, keys: KeyRing | Literal["environment"] | None = "environment"
) -> pl.LazyFrame:
    """Ground truth, one row per ``(request_id, row)``: the latest ``time`` wins (for equal
    times, the later file, then the later row)."""
    files = _CaptureFiles(url, keys)
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

    def __init__(self, url: str, keys: KeyRing | Literal["environment"] | None) -> None:
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = is_local(self.fs)
        self.keys = keys_from_environment() if isinstance(keys, str) else keys

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
        if start is not None:
            parts = [p for p in parts if not _written_before(p, start)]
        return sorted(parts, key=lambda p: (p.rsplit("/", 2)[-2], p.rsplit("/", 1)[-1]))

    def _scan(self, path: str) -> pl.LazyFrame:
        with self.fs.open(path, "rb") as handle:
            sealed = handle.read(4) == b"MGRE"
            if sealed:  # decrypted into memory only: see the module docstring
                data = open_part(b"MGRE" + handle.read(), path, self.keys)
                return pl.scan_parquet(data, hive_partitioning=False)
        if self.local:
            return pl.scan_parquet(path, hive_partitioning=False)
        import pyarrow.parquet as pq

        with self.fs.open(path, "rb") as handle:
            frame = pl.from_arrow(pq.read_table(handle))
        assert isinstance(frame, pl.DataFrame)
        return frame.lazy()


def _written_before(path: str, start: Moment) -> bool:
    """Whether the writer named the part at ``path`` more than :data:`CLOCK_MARGIN_S` before
    ``start`` (its rows are all older); False for a name it did not give."""
    match = _WRITTEN.fullmatch(path.rsplit("/", 1)[-1])
    if match is None:
        return False
    return int(match.group(1)) / 1000.0 < _moment(start).timestamp() - CLOCK_MARGIN_S


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
