"""Micro-batching: the requests parsed in the same turn of the event loop share one model call.

The server predicts in its event loop (ONNX Runtime answers a few rows in tens of
microseconds, less than a thread hand-off costs). uvicorn starts the requests read in one poll
of the sockets in the same turn of the loop, and each runs to its prediction without yielding,
so a request cannot see whether others follow it. Hence every request is queued, and the first
of a turn schedules one flush with ``loop.call_soon``: the flush runs at the next turn, once
every request of this turn has joined, stacks their rows (one ``np.concatenate`` of the request
matrices for all-numeric batches, else one per column), calls the model once and hands each
request its slice. A lone request pays one extra turn of the loop (microseconds); under load
the batches grow with the number of requests per turn. A flush runs early once ``max_rows``
rows wait; while other requests are still reading their bodies it waits for them, at most
``max_wait_ms``, once per batch.

``on_batch(rows)`` sees the size of every model call; ``on_predicted(batch, prediction,
request_ids, rows, started)`` (capture) sees every predicted batch once, with the request id,
row count and arrival time of each request in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from meguri.serve._model import LoadedModel, Prediction
from meguri.serve._validate import Batch, MatrixBatch

__all__ = ["MicroBatcher", "Predicted"]

Predicted = Callable[[Batch, Prediction, list[str], list[int], list[float]], None]
"""``on_predicted(batch, prediction, request_ids, rows, started)``: see the module docstring."""


@dataclass(slots=True)
class _Queued:
    batch: Batch
    rows: int
    future: asyncio.Future[Prediction]
    request_id: str
    started: float


class MicroBatcher:
    """Groups concurrent predictions into one ``model.predict`` call (see the module docstring).

    ``arriving`` counts requests still reading their bodies; the app keeps it (a plain integer:
    everything runs in one event loop).
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_rows: int = 256,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int], None] | None = None,
        on_predicted: Predicted | None = None,
    ) -> None:
        self.model = model
        self.max_rows = max(1, max_rows)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch or (lambda rows: None)
        self.on_predicted = on_predicted
        self.arriving = 0
        self._queue: list[_Queued] = []
        self._rows = 0
        self._scheduled = False
        self._waited = False
        self._names = model.signature.names

    async def predict(
        self, batch: Batch, rows: int, request_id: str = "", started: float = 0.0
    ) -> Prediction:
        """The prediction for ``batch`` (``rows`` rows), as part of this turn's batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append(_Queued(batch, rows, future, request_id, started))
        self._rows += rows
        if self._rows >= self.max_rows:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._scheduled_flush)
        return await future

    def _scheduled_flush(self) -> None:
        if self.arriving > 0 and self.max_wait > 0 and not self._waited:
            self._waited = True
            asyncio.get_running_loop().call_later(self.max_wait, self._scheduled_flush)
            return
        self.flush()

    def flush(self) -> None:
        """Predict everything queued now, in one call."""
        self._scheduled = False
        self._waited = False
        queued, self._queue, rows = self._queue, [], self._rows
        self._rows = 0
        if not queued:
            return
        self.on_batch(rows)
        try:
            batch = self._merge(queued)
            prediction = self.model.predict(batch)
        except Exception as exc:
            for item in queued:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        _hand_out(queued, prediction)
        if self.on_predicted is not None:
            ids, sizes = [q.request_id for q in queued], [q.rows for q in queued]
            self.on_predicted(batch, prediction, ids, sizes, [q.started for q in queued])

    def _merge(self, queued: list[_Queued]) -> Batch:
        if len(queued) == 1:
            return queued[0].batch
        first = queued[0].batch
        if isinstance(first, MatrixBatch):
            matrices = [q.batch.matrix for q in queued if isinstance(q.batch, MatrixBatch)]
            if len(matrices) == len(queued):
                return MatrixBatch(np.concatenate(matrices), first.index)
        return {name: np.concatenate([q.batch[name] for q in queued]) for name in self._names}


def _hand_out(queued: list[_Queued], prediction: Prediction) -> None:
    values, probabilities = prediction.values, prediction.probabilities
    start = 0
    for item in queued:
        end = start + item.rows
        if not item.future.done():
            probs = None if probabilities is None else probabilities[start:end]
            item.future.set_result(Prediction(values[start:end], probs))
        start = end
