"""Prediction capture: sampled requests written to Parquet by a background thread.

A request is sampled with probability ``rate``; sampling costs one random draw and a deque
append on the event loop, nothing else. A daemon thread wakes every ``flush_seconds`` (or when
``flush_rows`` rows wait), builds one Arrow table per UTC date and writes it under::

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
import random
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
from meguri.serve._validate import Batch

__all__ = ["Capture"]

log = logging.getLogger("meguri.serve.capture")


@dataclass(slots=True)
class _Record:
    time: float
    request_id: str
    latency: float
    batch: Batch
    prediction: Prediction


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

    def offer(self, request_id: str, batch: Batch, prediction: Prediction, latency: float) -> None:
        """Maybe keep this request (event loop; never blocks)."""
        if self.rate < 1.0 and random.random() >= self.rate:
            return
        rows = len(prediction.values)
        if self._pending_rows + rows > self.max_rows:
            self.dropped += rows
            return
        self._pending_rows += rows
        self.captured += rows
        self._buffer.append(_Record(time.time(), request_id, latency, batch, prediction))
        if self._pending_rows >= self.flush_rows:
            self._wake.set()

    def stats(self) -> tuple[int, int]:
        return self.captured, self.dropped

    def start(self) -> None:
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
        import pyarrow as pa

        sizes = np.array([len(r.prediction.values) for r in records])
        columns: dict[str, Any] = {
            "request_id": pa.array(np.repeat([r.request_id for r in records], sizes)),
            "row": pa.array(np.concatenate([np.arange(n) for n in sizes])),
            "time": pa.array(
                (np.repeat([r.time for r in records], sizes) * 1e6).astype("datetime64[us]"),
                type=pa.timestamp("us", tz="UTC"),
            ),
            "latency_ms": pa.array(np.repeat([r.latency * 1000.0 for r in records], sizes)),
            "model_name": pa.array([self.name] * int(sizes.sum()), type=pa.string()),
            "model_version": pa.array([self.version] * int(sizes.sum()), type=pa.string()),
        }
        for name in self.signature.names:
            columns[name] = _arrow(np.concatenate([r.batch[name] for r in records]))
        columns["prediction"] = _arrow(np.concatenate([r.prediction.values for r in records]))
        probabilities = [r.prediction.probabilities for r in records]
        present = [p for p in probabilities if p is not None]
        if present and len(present) == len(probabilities):
            matrix = np.concatenate(present)
            for i, label in enumerate(self.signature.output.labels):
                columns[f"probability_{label}"] = pa.array(matrix[:, i])
        return pa.table(columns)


def _arrow(values: Array) -> Any:
    import pyarrow as pa

    if values.dtype == object:
        return pa.array(values.tolist())
    return pa.array(values)


def _by_date(records: list[_Record]) -> dict[str, list[_Record]]:
    groups: dict[str, list[_Record]] = {}
    for record in records:
        day = datetime.fromtimestamp(record.time, UTC).strftime("%Y-%m-%d")
        groups.setdefault(day, []).append(record)
    return groups


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
