"""Prediction capture: sampled requests written to Parquet by a background thread.

The micro-batcher hands over each predicted batch once (its columns, its prediction, and the id,
row count and arrival time of each request in it). A request is sampled with probability
``rate``: on the event loop that is one numpy draw per batch (none at rate 1) and a few list
appends into the open :class:`_Columns`, nothing else. Those hold arrays, text and numbers
only, none of which the garbage collector tracks: an object per batch kept until the flush
(a few thousand a second under load, held for seconds) made the collector walk them again and
again, which cost the event loop about 5 µs a request, most of capture's price. A daemon thread
wakes every
``flush_seconds`` (or when ``flush_rows`` rows wait), builds one Arrow table per UTC date
(the columns of many batches concatenated: large row groups) and writes it under::

    {url}/model={name}/version={version}/date=YYYY-MM-DD/part-{unix ms}-{random}.parquet

``url`` is a local folder or any fsspec URL (``s3://bucket/capture``). Locally a file is
written under a temporary name (``.part-...tmp``) and renamed, so readers never see half a file;
on object stores a put is atomic already. ``close()`` (at server shutdown) writes what is left.
When the buffer holds ``max_buffer_rows`` rows, new rows are dropped and counted, never waited
for.

With encryption at rest on (the key ring of ``MEGURI_ENCRYPTION_KEY_FILE`` or
``MEGURI_ENCRYPTION_KEY``, read once when the capture is created: server processes inherit
these variables as they inherit every setting), each file is built in memory and written sealed
(:mod:`meguri.serve._sealed_parts`), by the writer thread as before: nothing is added to the
request path, and no byte of a captured row reaches the disk in clear.

One row per predicted row, columns: ``request_id`` (string), ``row`` (index in the request),
``time`` (timestamp[us, UTC]), ``latency_ms`` (arrival to prediction), ``model_name``,
``model_version``, one column per signature input (its batch dtype), ``prediction`` and, for
classifiers, ``probability_<label>`` per label.

The same thread writes two more tables beside the predictions (see :func:`write_part`):

* system samples of the process (:mod:`meguri.serve._system`) under ``{url}/_system/...``,
  a sample every ``flush_seconds``, written with the predictions of the same flush (when idle,
  every ``system_write_seconds``; at shutdown, a last sample and all);
* ground truth posted to ``POST /feedback`` (:func:`parse_feedback`), under
  ``{url}/_feedback/date=YYYY-MM-DD/part-*.parquet`` with the fixed schema of
  :func:`feedback_schema`: ``request_id``, ``row``, ``label`` (text: a classifier's label as
  its signature spells it, a regression target as the number's ``repr``) and ``time``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from meguri.serve._metrics import Metrics
from meguri.serve._model import Array, Prediction
from meguri.serve._sealed_parts import is_local, keys_from_environment, seal_part, write_bytes
from meguri.serve._signature import Output, Signature
from meguri.serve._system import SYSTEM_FOLDER, SystemSample, SystemSampler, system_table
from meguri.serve._validate import BadRequest, Batch, MatrixBatch

if TYPE_CHECKING:
    from meguri.store.artifacts._keys import KeyRing

__all__ = [
    "FEEDBACK_FOLDER",
    "MAX_REQUEST_ID",
    "Capture",
    "FeedbackBatch",
    "LabelRule",
    "feedback_schema",
    "feedback_table",
    "parse_feedback",
    "write_part",
]

FEEDBACK_FOLDER = "_feedback"
MAX_REQUEST_ID = 200
"""Longest request id (characters) feedback accepts."""

log = logging.getLogger("meguri.serve.capture")
_T = TypeVar("_T", "FeedbackBatch", SystemSample)


class _Columns:
    """The predicted batches offered since the last flush, as parallel lists: per batch its
    wall-clock time, prediction time (``perf_counter``), inputs (the matrix, or the dict of
    columns), prediction values and probabilities, request count and ``keep`` mask (``None``:
    all sampled); per request its id, row count and arrival time. The lists are the only
    objects the collector tracks, one set per flush (see the module docstring)."""

    __slots__ = (
        "inputs",
        "keeps",
        "pending",
        "predicted",
        "probabilities",
        "request_ids",
        "requests",
        "rows",
        "started",
        "times",
        "values",
    )

    def __init__(self) -> None:
        self.times: list[float] = []
        self.predicted: list[float] = []
        self.inputs: list[Array | Mapping[str, Array]] = []
        self.values: list[Array] = []
        self.probabilities: list[Array | None] = []
        self.requests: list[int] = []
        self.keeps: list[Array | None] = []
        self.request_ids: list[str] = []
        self.rows: list[int] = []
        self.started: list[float] = []
        self.pending = 0
        """Predicted rows held (sampled or not: their arrays are held whole)."""


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
        metrics: Metrics | None = None,
        system_write_seconds: float = 60.0,
        keys: KeyRing | Literal["environment"] | None = "environment",
    ) -> None:
        import fsspec

        # The ring that seals what is written (None: encryption off); "environment": the
        # variables' setting, as the artifact store reads it (servers are started with it).
        self.keys = keys_from_environment() if isinstance(keys, str) else keys
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = is_local(self.fs)
        self.rate = min(max(rate, 0.0), 1.0)
        self.name, self.version, self.signature = name, version, signature
        self.flush_seconds, self.flush_rows, self.max_rows = (
            flush_seconds,
            flush_rows,
            max_buffer_rows,
        )
        self.captured = self.dropped = self.files = 0
        self._open = _Columns()
        self._swap = threading.Lock()  # the flush takes the open columns whole
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._random = np.random.default_rng()
        self._flushing = threading.Lock()
        self._feedback: deque[FeedbackBatch] = deque()
        self._feedback_rows = 0
        self.system = None if metrics is None else SystemSampler(metrics, interval=flush_seconds)
        self.system_write_seconds = system_write_seconds
        self._system_written = time.monotonic()

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
        now = time.perf_counter()
        with self._swap:
            columns = self._open
            if columns.pending + total > self.max_rows:
                self.dropped += kept
                return
            columns.pending += total
            self.captured += kept
            columns.times.append(time.time())
            columns.predicted.append(now)
            columns.inputs.append(batch.matrix if isinstance(batch, MatrixBatch) else batch)
            columns.values.append(prediction.values)
            columns.probabilities.append(prediction.probabilities)
            columns.requests.append(len(request_ids))
            columns.keeps.append(keep)
            columns.request_ids += request_ids
            columns.rows += rows
            columns.started += started
            full = columns.pending >= self.flush_rows
        if full:
            self._wake.set()

    def stats(self) -> tuple[int, int]:
        return self.captured, self.dropped

    def offer_feedback(self, batch: FeedbackBatch) -> bool:
        """Queue ground truth for the writer (event loop; never blocks); ``False`` when the
        buffer already holds ``max_buffer_rows`` feedback rows."""
        if self._feedback_rows + len(batch.request_ids) > self.max_rows:
            return False
        self._feedback_rows += len(batch.request_ids)
        self._feedback.append(batch)
        return True

    def start(self) -> None:
        """Start the writer thread. pyarrow is imported now, before the server takes requests,
        and so is pandas, which pyarrow imports at its first conversion of any array: at the
        first write instead, that import held the interpreter for half a second of serving
        (a tenth of a 5-second benchmark run)."""
        import pyarrow as pa
        import pyarrow.parquet

        pa.array(np.zeros(1))

        if self.system is not None:
            self.system.start()
            self._system_written = time.monotonic()
        if self._thread is None:
            self._stop = False  # started again after a close (a version routed to again)
            self._thread = threading.Thread(target=self._run, name="meguri-capture", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is buffered and stop the thread."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush(final=True)
        if self.system is not None:
            self.system.stop()

    def _run(self) -> None:
        while not self._stop:
            wait = self.flush_seconds
            if self.system is not None:
                wait = min(wait, self.system.seconds_to_next())
            self._wake.wait(wait)
            self._wake.clear()
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        """Write every buffered record and feedback now, take a system sample when one is due
        and write the samples when their file is due (``final``: sample and write now). The
        thread calls this; tests may too."""
        with self._flushing:
            busy = self._flush_predictions()
            self._flush_feedback()
            self._flush_system(final=final, busy=busy)

    def _flush_predictions(self) -> bool:
        """Write the buffered predictions; whether there were any (system samples are then
        written beside them, so a window's figures and its rows arrive together)."""
        with self._swap:
            columns, self._open = self._open, _Columns()
        if not columns.times:
            return False
        try:
            table = self._table(columns)
            if table is not None:
                days = _days(table)
                for date, part in days.items():
                    self._write(date, part)
        except Exception:  # the server keeps serving; the loss is logged
            log.exception("prediction capture: writing %d batches failed", len(columns.times))
        return True

    def _write(self, date: str, table: Any) -> None:
        folder = f"{self.root}/model={self.name}/version={self.version}/date={date}"
        write_part(self.fs, folder, table, local=self.local, keys=self.keys)
        self.files += 1

    def _flush_feedback(self) -> None:
        batches: list[FeedbackBatch] = []
        while self._feedback:
            batches.append(self._feedback.popleft())
        if not batches:
            return
        self._feedback_rows -= sum(len(b.request_ids) for b in batches)
        try:
            for date, group in _by_date(batches).items():
                table = feedback_table(
                    [i for b in group for i in b.request_ids],
                    [r for b in group for r in b.rows],
                    [label for b in group for label in b.labels],
                    [b.time for b in group for _ in b.request_ids],
                )
                folder = f"{self.root}/{FEEDBACK_FOLDER}/date={date}"
                write_part(self.fs, folder, table, local=self.local, keys=self.keys)
        except Exception:  # the server keeps serving; the loss is logged
            log.exception("feedback capture: writing %d batches failed", len(batches))

    def _flush_system(self, *, final: bool, busy: bool) -> None:
        if self.system is None:
            return
        self.system.sample(force=final)
        due = time.monotonic() - self._system_written >= self.system_write_seconds
        if not (final or busy or due):
            return
        samples = self.system.take()
        self._system_written = time.monotonic()
        if not samples:
            return
        base = f"{self.root}/{SYSTEM_FOLDER}/model={self.name}/version={self.version}"
        try:
            for date, group in _by_date(samples).items():
                table = system_table(group, name=self.name, version=self.version)
                write_part(self.fs, f"{base}/date={date}", table, local=self.local, keys=self.keys)
        except Exception:
            log.exception("system samples: writing %d samples failed", len(samples))

    def _table(self, columns: _Columns) -> Any:
        """One Arrow table of the sampled rows of ``columns`` (writer thread; ``None`` when
        none was sampled). Built from numpy and Arrow arrays without a Python object per row,
        but for each request id once: the thread shares the interpreter with the event loop,
        and only Arrow's own work runs while the loop serves."""
        import pyarrow as pa

        sizes = np.array(columns.rows)
        keep = _row_mask(columns)
        if keep is not None and not keep.any():
            return None
        table_columns = self._request_columns(columns, sizes)
        table_columns.update(self._input_columns(columns.inputs))
        table_columns["prediction"] = np.concatenate(columns.values)
        present = [p for p in columns.probabilities if p is not None]
        if present and len(present) == len(columns.probabilities):
            matrix = np.concatenate(present)
            for i, label in enumerate(self.signature.output.labels):
                table_columns[f"probability_{label}"] = matrix[:, i]
        if keep is not None:
            table_columns = {name: values[keep] for name, values in table_columns.items()}
        count = len(table_columns["row"])
        table = {"request_id": _request_ids(columns.request_ids, sizes, keep)}
        table.update((name, _arrow(values)) for name, values in table_columns.items())
        table["time"] = pa.array(table_columns["time"], type=pa.timestamp("us", tz="UTC"))
        table["model_name"] = pa.repeat(pa.scalar(self.name, pa.string()), count)
        table["model_version"] = pa.repeat(pa.scalar(self.version, pa.string()), count)
        return pa.table(table)

    @staticmethod
    def _request_columns(columns: _Columns, sizes: Array) -> dict[str, Array]:
        """Per row: its index in its request, the batch time and the latency."""
        batch_rows = np.array([len(v) for v in columns.values])
        started = np.array(columns.started)
        predicted = np.repeat(columns.predicted, columns.requests)
        latency = (predicted - started) * 1000.0
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        times = np.repeat(columns.times, batch_rows) * 1e6
        return {
            "row": np.arange(int(sizes.sum())) - starts,
            "time": times.astype("datetime64[us]"),
            "latency_ms": np.repeat(latency, sizes),
        }

    def _input_columns(self, inputs: list[Array | Mapping[str, Array]]) -> dict[str, Array]:
        matrices = [m for m in inputs if isinstance(m, np.ndarray)]
        if len(matrices) == len(inputs):
            by_column = np.ascontiguousarray(np.concatenate(matrices).T)  # no strided copies
            return {name: by_column[i] for i, name in enumerate(self.signature.names)}
        return {
            name: np.concatenate([_column(batch, i, name) for batch in inputs])
            for i, name in enumerate(self.signature.names)
        }


def _column(inputs: Array | Mapping[str, Array], index: int, name: str) -> Array:
    """One input column of a batch held as a matrix or as a dict of columns."""
    return inputs[:, index] if isinstance(inputs, np.ndarray) else inputs[name]


def _arrow(values: Array) -> Any:
    import pyarrow as pa

    if values.dtype == object:
        return pa.array(values.tolist())
    return pa.array(values)


def _request_ids(request_ids: list[str], sizes: Array, keep: Array | None) -> Any:
    """The request id of every captured row, as Arrow text: each id converted once, repeated
    for the rows of its request and filtered by Arrow."""
    import pyarrow as pa

    ids = pa.array(request_ids, pa.string())
    if (sizes != 1).any():
        ids = ids.take(pa.array(np.repeat(np.arange(len(sizes)), sizes)))
    return ids if keep is None else ids.filter(pa.array(keep))


def _row_mask(columns: _Columns) -> Array | None:
    """Which rows of the batches were sampled; ``None``: all of them."""
    if all(k is None for k in columns.keeps):
        return None
    start, masks = 0, []
    for keep, requests, values in zip(columns.keeps, columns.requests, columns.values, strict=True):
        if keep is None:
            masks.append(np.ones(len(values), bool))
        else:
            masks.append(np.repeat(keep, columns.rows[start : start + requests]))
        start += requests
    return np.concatenate(masks)


def _days(table: Any) -> dict[str, Any]:
    """``table`` split by the UTC date of its ``time`` column (one slice each, in order)."""
    import pyarrow.compute as pc

    days = pc.cast(table.column("time"), "date32").combine_chunks()
    first, last = pc.min_max(days).values()
    if first == last:
        return {first.as_py().isoformat(): table}
    return {day.as_py().isoformat(): table.filter(pc.equal(days, day)) for day in pc.unique(days)}


def write_part(
    fs: Any, folder: str, table: Any, *, local: bool, keys: KeyRing | None = None
) -> str:
    """Write ``table`` as a new ``part-{unix ms}-{random}.parquet`` under ``folder`` and return
    its path. The file is built in memory, sealed when ``keys`` is given
    (:func:`~meguri.serve._sealed_parts.seal_part`), then written whole: locally under a hidden
    temporary name and renamed (readers skip hidden files); on object stores one put."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}.parquet"
    path = f"{folder}/{name}"
    sink = pa.BufferOutputStream()
    # Dictionary pages only where values repeat (model name, version, text inputs): tried on
    # every float column, pyarrow builds a dictionary, finds it too large and falls back, which
    # made writing 4-5x slower and the file larger (the writer shares the server's core).
    # Statistics only where readers filter (monitor windows select by time): min/max of every
    # input column would cost writing time and serve no reader.
    repeating = [
        f.name for f in table.schema if pa.types.is_string(f.type) and f.name != "request_id"
    ]
    # LZ4 writes in about two thirds of snappy's time (pyarrow's default) for files of the
    # same size: captured numbers hardly compress either way.
    filtered = [name for name in ("time", "request_id") if name in table.column_names]
    pq.write_table(
        table,
        sink,
        use_dictionary=repeating,
        write_statistics=filtered or False,
        compression="lz4",
    )
    data: bytes | memoryview = memoryview(sink.getvalue())  # no copy into a bytes object
    if keys is not None:
        data = seal_part(bytes(data), path, keys)
    fs.makedirs(folder, exist_ok=True)
    write_bytes(fs, path, data, local=local)
    return path


def _by_date(records: list[_T]) -> dict[str, list[_T]]:
    days: dict[int, list[_T]] = {}
    for record in records:  # one per predicted batch, feedback post or system sample
        days.setdefault(int(record.time // 86400), []).append(record)
    return {
        datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d"): group
        for day, group in days.items()
    }


# -- feedback (ground truth by request id) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class FeedbackBatch:
    """Checked feedback of one post (or one file): parallel lists, one receipt ``time``."""

    request_ids: list[str]
    rows: list[int]
    labels: list[str]
    time: float
    duplicates: int = 0
    """Entries dropped because a later one had the same ``(request_id, row)``."""


def feedback_schema() -> Any:
    """The fixed Arrow schema of the ``_feedback`` table (server and ``meguri feedback``)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("request_id", pa.string()),
            ("row", pa.int64()),
            ("label", pa.string()),
            ("time", pa.timestamp("us", tz="UTC")),
        ]
    )


def feedback_table(
    request_ids: list[str], rows: list[int], labels: list[str], times: list[float]
) -> Any:
    """One Arrow table of feedback (``times``: epoch seconds per row)."""
    import pyarrow as pa

    columns = {
        "request_id": request_ids,
        "row": rows,
        "label": labels,
        "time": [int(t * 1e6) for t in times],
    }
    return pa.Table.from_pydict(columns, schema=feedback_schema())


def label_key(value: Any) -> str | None:
    """How a label compares: as text, numbers by value (``1``, ``1.0`` and ``"1"`` are one
    label), booleans as JSON spells them; ``None`` for anything that is no label."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return value if isinstance(value, str) else None


def _number(value: bool | str) -> float | None:
    """``value`` read as a number (a boolean is 1 or 0), ``None`` when it is none."""
    try:
        return float(value)
    except ValueError:
        return None


def _label_text(label: Any) -> str:
    """A signature label as captured predictions spell it once read as text."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return repr(label) if isinstance(label, float) else str(label)


class LabelRule:
    """Which ground-truth labels a model's task takes, and their text in the feedback table:
    a classifier's label must be one of its signature's labels (compared as text by
    :func:`label_key`, then by number: ``true`` is the label 1, ``"1.0"`` the label 1) and is
    written as the signature spells it; a regression target must be a finite number and is
    written as its ``repr``."""

    def __init__(self, output: Output) -> None:
        self.regression = output.task == "regression"
        keys = {label_key(label): _label_text(label) for label in output.labels}
        self.texts = {key: text for key, text in keys.items() if key is not None}

    def text(self, value: Any) -> str | None:
        """The label's text, or ``None`` when ``value`` is no label of this model."""
        if self.regression:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            try:
                number = float(value)
            except OverflowError:  # an integer beyond float's range
                return None
            return repr(number) if math.isfinite(number) else None
        key = label_key(value)
        if key is None or not self.texts:
            return key
        found = self.texts.get(key)
        if found is None and isinstance(value, bool | str):
            by_number = label_key(_number(value))
            found = None if by_number is None else self.texts.get(by_number)
        return found

    def expected(self) -> str:
        if self.regression:
            return "a finite number (a regression target)"
        return "one of the model's labels " + ", ".join(sorted(self.texts.values()))


def parse_feedback(document: Any, rule: LabelRule) -> FeedbackBatch:
    """Check a ``POST /feedback`` document: ``{"request_id", "row", "label"}``, a list of those,
    or ``{"feedback": [...]}``. Of entries with the same ``(request_id, row)`` the last wins.
    Raises :class:`BadRequest` naming the entry and the field."""
    entries = _feedback_entries(document)
    found: dict[tuple[str, int], str] = {}
    for index, entry in enumerate(entries):
        request_id, row, label = _feedback_entry(index, entry, rule)
        found.pop((request_id, row), None)  # a later entry moves to the end: last wins
        found[(request_id, row)] = label
    return FeedbackBatch(
        [key[0] for key in found],
        [key[1] for key in found],
        list(found.values()),
        time.time(),
        duplicates=len(entries) - len(found),
    )


def _feedback_entries(document: Any) -> list[Any]:
    if isinstance(document, dict) and "feedback" in document:
        document = document["feedback"]
        if not isinstance(document, list):
            raise _bad_feedback('"feedback" must be a list of {request_id, row, label} objects')
    entries = [document] if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise _bad_feedback(
            'send {"request_id": ..., "row": 0, "label": ...}, a list of those, '
            'or {"feedback": [...]}'
        )
    if not entries:
        raise _bad_feedback("the feedback list is empty; send at least one entry", code="no_rows")
    return entries


def _feedback_entry(index: int, entry: Any, rule: LabelRule) -> tuple[str, int, str]:
    where = f"feedback[{index}]"
    if not isinstance(entry, dict):
        raise _bad_feedback(f"{where} is not an object; send {{request_id, row, label}}")
    request_id = entry.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
        raise _bad_feedback(
            f"{where}.request_id must be a non-empty string of at most {MAX_REQUEST_ID} "
            "characters (the X-Request-Id of the prediction)",
            column="request_id",
        )
    row = entry.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < 2**63:
        raise _bad_feedback(
            f"{where}.row must be a whole number >= 0 (the row's index in its request)",
            column="row",
        )
    if entry.get("label") is None:
        raise _bad_feedback(f"{where}.label is missing; send the true label", column="label")
    label = rule.text(entry["label"])
    if label is None:
        raise _bad_feedback(
            f"{where}.label {entry['label']!r} is not {rule.expected()}", column="label"
        )
    return request_id, row, label


def _bad_feedback(
    message: str, *, code: str = "invalid_feedback", column: str | None = None
) -> BadRequest:
    return BadRequest(message, code=code, status=400, column=column)
