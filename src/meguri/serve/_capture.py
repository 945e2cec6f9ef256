"""Prediction capture: sampled requests written to Parquet by a background thread.

The micro-batcher hands over each predicted batch once (its columns, its prediction, and the id,
row count and arrival time of each request in it); capture keeps one record per batch. A
request is sampled with probability ``rate``: on the event loop that is one numpy draw per
batch (none at rate 1) and a deque append, nothing else. A daemon thread wakes every
``flush_seconds`` (or when ``flush_rows`` rows wait), builds one Arrow table per UTC date
(the columns of many batches concatenated: large row groups) and writes it under::

    {url}/model={name}/version={version}/date=YYYY-MM-DD/part-{unix ms}-{random}.parquet

``url`` is a local folder or any fsspec URL (``s3://bucket/capture``). Locally a file is
written under a temporary name (``.part-...tmp``) and renamed, so readers never see half a file;
on object stores a put is atomic already. ``close()`` (at server shutdown) writes what is left.
When the buffer holds ``max_buffer_rows`` rows, new rows are dropped and counted, never waited
for.

One row per predicted row, columns: ``request_id`` (string), ``row`` (index in the request),
``time`` (timestamp[us, UTC]), ``latency_ms`` (arrival to prediction), ``model_name``,
``model_version``, one column per signature input (its batch dtype), ``prediction`` and, for
classifiers, ``probability_<label>`` per label.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from meguri.serve._model import Array, Prediction
from meguri.serve._signature import Signature
from meguri.serve._validate import Batch, MatrixBatch

__all__ = ["Capture"]

log = logging.getLogger("meguri.serve.capture")


@dataclass(slots=True)
class _Record:
    """One predicted batch: ``keep`` (``None``: all) marks the requests sampled."""

    time: float
    predicted: float
    batch: Batch
    prediction: Prediction
    request_ids: list[str]
    rows: list[int]
    started: list[float]
    keep: Array | None


class Capture:
    """Samples predictions and writes them asynchronously (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        rate: float,
        name: str,
        version: str,
        signature: Signature,
        flush_seconds: float = 5.0,
        flush_rows: int = 50_000,
        max_buffer_rows: int = 1_000_000,
    ) -> None:
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = "file" in _protocols(self.fs)
        self.rate = min(max(rate, 0.0), 1.0)
        self.name, self.version, self.signature = name, version, signature
        self.flush_seconds, self.flush_rows, self.max_rows = (
            flush_seconds,
            flush_rows,
            max_buffer_rows,
        )
        self.captured = self.dropped = self.files = 0
        self._buffer: deque[_Record] = deque()
        self._pending_rows = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._random = np.random.default_rng()

    def offer(
        self,
        batch: Batch,
        prediction: Prediction,
        request_ids: list[str],
        rows: list[int],
        started: list[float],
    ) -> None:
        """Maybe keep some requests of this predicted batch (event loop; never blocks)."""
        keep = None
        kept = total = len(prediction.values)
        if self.rate < 1.0:
            keep = self._random.random(len(request_ids)) < self.rate
            if not keep.any():
                return
            kept = total if keep.all() else int(np.dot(keep, rows))
        if self._pending_rows + total > self.max_rows:
            self.dropped += kept
            return
        self._pending_rows += total
        self.captured += kept
        now = time.perf_counter()
        record = _Record(time.time(), now, batch, prediction, request_ids, rows, started, keep)
        self._buffer.append(record)
        if self._pending_rows >= self.flush_rows:
            self._wake.set()

    def stats(self) -> tuple[int, int]:
        return self.captured, self.dropped

    def start(self) -> None:
        """Start the writer thread; pyarrow is imported now, before the server takes requests,
        not at the first write (an import holds the interpreter for a good half second)."""
        import pyarrow.parquet  # noqa: F401

        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="meguri-capture", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is buffered and stop the thread."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every buffered record now (the thread calls this; tests may too)."""
        records: list[_Record] = []
        while self._buffer:
            records.append(self._buffer.popleft())
        if not records:
            return
        self._pending_rows -= sum(len(r.prediction.values) for r in records)
        records = [r for r in records if r.keep is None or r.keep.any()]
        try:
            for date, group in _by_date(records).items():
                self._write(date, group)
        except Exception:  # the server keeps serving; the loss is logged
            log.exception("prediction capture: writing %d records failed", len(records))

    def _write(self, date: str, records: list[_Record]) -> None:
        import pyarrow.parquet as pq

        table = self._table(records)
        folder = f"{self.root}/model={self.name}/version={self.version}/date={date}"
        name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}.parquet"
        self.fs.makedirs(folder, exist_ok=True)
        if self.local:
            temp = f"{folder}/.{name}.tmp"
            pq.write_table(table, temp)
            os.replace(temp, f"{folder}/{name}")
        else:
            with self.fs.open(f"{folder}/{name}", "wb") as handle:
                pq.write_table(table, handle)
        self.files += 1

    def _table(self, records: list[_Record]) -> Any:
        """One Arrow table of the sampled rows of ``records`` (writer thread)."""
        import pyarrow as pa

        sizes = np.concatenate([r.rows for r in records])
        keep = _row_mask(records)
        columns = self._request_columns(records, sizes)
        columns.update(self._input_columns(records))
        columns["prediction"] = np.concatenate([r.prediction.values for r in records])
        probabilities = [r.prediction.probabilities for r in records]
        present = [p for p in probabilities if p is not None]
        if present and len(present) == len(probabilities):
            matrix = np.concatenate(present)
            for i, label in enumerate(self.signature.output.labels):
                columns[f"probability_{label}"] = matrix[:, i]
        if keep is not None:
            columns = {name: values[keep] for name, values in columns.items()}
        table = {name: _arrow(values) for name, values in columns.items()}
        table["time"] = pa.array(columns["time"], type=pa.timestamp("us", tz="UTC"))
        count = len(columns["row"])
        table["model_name"] = pa.array([self.name] * count, type=pa.string())
        table["model_version"] = pa.array([self.version] * count, type=pa.string())
        return pa.table(table)

    def _request_columns(self, records: list[_Record], sizes: Array) -> dict[str, Array]:
        """Per row: its request's id, its index there, the batch time and the latency."""
        ids = np.concatenate([np.asarray(r.request_ids, dtype=object) for r in records])
        batch_rows = np.array([len(r.prediction.values) for r in records])
        latency = np.concatenate([(r.predicted - np.asarray(r.started)) * 1000.0 for r in records])
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        times = np.repeat([r.time for r in records], batch_rows) * 1e6
        return {
            "request_id": np.repeat(ids, sizes),
            "row": np.arange(int(sizes.sum())) - starts,
            "time": times.astype("datetime64[us]"),
            "latency_ms": np.repeat(latency, sizes),
        }

    def _input_columns(self, records: list[_Record]) -> dict[str, Array]:
        batches = [r.batch for r in records]
        if all(isinstance(b, MatrixBatch) for b in batches):
            matrix = np.concatenate([b.matrix for b in batches])  # type: ignore[attr-defined]
            return {name: matrix[:, i] for i, name in enumerate(self.signature.names)}
        return {name: np.concatenate([b[name] for b in batches]) for name in self.signature.names}


def _arrow(values: Array) -> Any:
    import pyarrow as pa

    if values.dtype == object:
        return pa.array(values.tolist())
    return pa.array(values)


def _row_mask(records: list[_Record]) -> Array | None:
    """Which rows of the records' batches were sampled; ``None``: all of them."""
    if all(r.keep is None for r in records):
        return None
    masks = [
        np.ones(len(r.prediction.values), bool) if r.keep is None else np.repeat(r.keep, r.rows)
        for r in records
    ]
    return np.concatenate(masks)


def _by_date(records: list[_Record]) -> dict[str, list[_Record]]:
    days: dict[int, list[_Record]] = {}
    for record in records:  # one per predicted batch
        days.setdefault(int(record.time // 86400), []).append(record)
    return {
        datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d"): group
        for day, group in days.items()
    }


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
