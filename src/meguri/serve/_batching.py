"""Adaptive micro-batching: requests that queue up are predicted together, alone ones at once.

The server predicts in its event loop (ONNX Runtime answers one row in microseconds, far less
than a thread hand-off costs). A request parsed from a socket usually runs to its response
without ever yielding, so "others in progress" cannot be seen; what can be seen is several
requests reaching the model in the same turn of the loop. The first one of a turn predicts
inline (no queue, no wait) unless the previous turn was crowded too; the others of that turn
(and every one, while turns stay crowded) are queued, and one flush is scheduled with
``loop.call_soon``, so every request parsed in the same turn joins it; the flush
concatenates the queued columns, calls the model once and hands each request its slice. A flush
runs early once ``max_rows`` rows wait; and while other requests are still reading their bodies
it waits for them, at most ``max_wait_ms``, once per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from meguri.serve._model import LoadedModel, Prediction
from meguri.serve._validate import Batch

__all__ = ["MicroBatcher"]


@dataclass(slots=True)
class _Queued:
    batch: Batch
    rows: int
    future: asyncio.Future[Prediction]


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
    ) -> None:
        self.model = model
        self.max_rows = max(1, max_rows)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch or (lambda rows: None)
        self.arriving = 0
        self._turn = 0
        self._crowded = False
        self._queue: list[_Queued] = []
        self._rows = 0
        self._scheduled = False
        self._waited = False
        self._names = model.signature.names

    async def predict(self, batch: Batch, rows: int) -> Prediction:
        """The prediction for ``batch`` (``rows`` rows), alone or as part of a larger batch."""
        loop = asyncio.get_running_loop()
        if self._turn == 0:
            loop.call_soon(self._end_turn)
        self._turn += 1
        if self._turn == 1 and not self._crowded and not self._queue:
            self.on_batch(rows)
            return self.model.predict(batch)
        future: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append(_Queued(batch, rows, future))
        self._rows += rows
        if self._rows >= self.max_rows:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._scheduled_flush)
        return await future

    def _end_turn(self) -> None:
        self._crowded = self._turn > 1
        self._turn = 0

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
            prediction = self.model.predict(self._merge(queued))
        except Exception as exc:
            for item in queued:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        _hand_out(queued, prediction)

    def _merge(self, queued: list[_Queued]) -> Batch:
        if len(queued) == 1:
            return queued[0].batch
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
