"""Weighted routing inside the server: one ASGI app over several model versions.

A deployment's worker serves a :class:`Router` over one :class:`Backend` per model version (each
a whole :class:`~meguri.serve._app.ServeApp`, with its own validator, micro-batcher and capture).
The routing table is immutable and replaced in one assignment (:meth:`Router.swap`): a request
keeps the backend it was routed to until it is answered, so swapping versions drops nothing.

* Prediction routes (``POST /invocations``, ``POST /v2/models/{name}/infer``) go to the
  ``primary`` and ``canary`` backends by weight: request *i* of this process falls at
  ``(i * 37) mod 100`` in percent, a permutation, so every 100 requests split exactly
  (weights are whole percents).
* A ``shadow`` backend gets a copy of every prediction request after the primary has answered;
  its answer is compared with the primary's (``same`` / ``different`` / ``error``), timed and
  counted, and never returned.
* ``GET /metrics`` adds per-backend series labelled ``model_version`` to the primary's metrics,
  both summed over the deployment's workers (the primary's through its shared metrics folder,
  the series from the other workers' reports, :attr:`Router.peers`); every other route is the
  primary's.

Per backend the router counts requests, errors (5xx), schema violations (4xx refusals of the
input: 400, 413, 415, 422) and a latency histogram; :meth:`Router.snapshot` returns them for the
deployment supervisor, which watches a canary against its thresholds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from meguri.serve._app import Message, Receive, Scope, Send, ServeApp
from meguri.serve._metrics import LATENCY_BUCKETS, _Histogram, _labels

__all__ = ["Backend", "BackendStats", "Route", "Router", "Watcher"]

Watcher = Callable[["Router"], Awaitable[None]]
_PREDICT = "/invocations"
_VIOLATIONS = frozenset({400, 413, 415, 422})
_SCALE = 100
_STRIDE = 37  # coprime with 100: i * 37 mod 100 visits every percent once per 100 requests


@dataclass
class BackendStats:
    """Counters of one backend in this process (cumulative)."""

    requests: int = 0
    errors: int = 0
    violations: int = 0
    latency: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS))
    shadow: dict[str, int] = field(default_factory=dict)

    def record(self, status: int, seconds: float) -> None:
        self.requests += 1
        self.errors += status >= 500
        self.violations += status in _VIOLATIONS
        self.latency.observe(seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "violations": self.violations,
            "latency_counts": list(self.latency.counts),
            "latency_sum": self.latency.total,
            "shadow": dict(self.shadow),
        }

    def add(self, counters: Mapping[str, Any]) -> None:
        """Add another worker's :meth:`to_dict` of the same backend."""
        self.requests += int(counters["requests"])
        self.errors += int(counters["errors"])
        self.violations += int(counters["violations"])
        counts = counters["latency_counts"]
        self.latency.add([counts, counters.get("latency_sum", 0.0), sum(counts)])
        for result, n in counters.get("shadow", {}).items():
            self.shadow[result] = self.shadow.get(result, 0) + int(n)


@dataclass
class Backend:
    """One model version behind the router: ``key`` (its model version id), ``label``
    (``name@version``, the ``model_version`` label) and the app that serves it."""

    key: str
    label: str
    app: ServeApp
    stats: BackendStats = field(default_factory=BackendStats)
    inflight: int = 0
    started: bool = False


class Route(NamedTuple):
    backend: Backend
    weight: float
    """Percent of the prediction requests (primary and canary)."""
    role: str
    """``primary``, ``canary`` or ``shadow``."""


class _Table:
    """An immutable routing table: the answering backends with their percent upper bounds."""

    __slots__ = ("bounds", "generation", "primary", "routes", "shadow")

    def __init__(self, routes: Sequence[Route], generation: int) -> None:
        self.routes = tuple(routes)
        self.generation = generation
        primaries = [r for r in routes if r.role == "primary"]
        if len(primaries) != 1:
            raise ValueError(f"a routing table needs one primary backend, got {len(primaries)}")
        self.primary = primaries[0].backend
        self.shadow = next((r.backend for r in routes if r.role == "shadow"), None)
        answering = [r for r in routes if r.role in ("primary", "canary") and r.weight > 0]
        total = sum(r.weight for r in answering) or 1.0
        running, bounds = 0.0, []
        for route in answering:
            running += route.weight
            bounds.append((round(running * _SCALE / total), route.backend))
        self.bounds = tuple(bounds) or ((_SCALE, self.primary),)

    def pick(self, position: int) -> Backend:
        for bound, backend in self.bounds:
            if position < bound:
                return backend
        return self.bounds[-1][1]

    def backends(self) -> list[Backend]:
        return [r.backend for r in self.routes]


class Router:
    """The ASGI app of a deployment worker (see the module docstring)."""

    def __init__(
        self, routes: Sequence[Route], *, generation: int = 0, watcher: Watcher | None = None
    ) -> None:
        self.table = _Table(routes, generation)
        self._counter = itertools.count()
        self._watcher = watcher
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.retired: dict[str, Backend] = {}
        """Backends swapped out but kept for their counters (by key)."""
        self.peers: Callable[[], Sequence[Mapping[str, Any]]] | None = None
        """The other workers' reports (``{"backends": {key: counters}}``, as
        :meth:`snapshot` gives them), whose counters ``/metrics`` adds to this worker's."""

    @property
    def generation(self) -> int:
        return self.table.generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        table, path = self.table, scope["path"]
        if scope["method"] == "POST" and _is_prediction(path):
            await self._predict(table, scope, receive, send)
        elif path == "/metrics" and scope["method"] == "GET":
            await self._metrics(table, scope, receive, send)
        else:
            await table.primary.app(scope, receive, send)

    # -- predictions --------------------------------------------------------------------------
    async def _predict(self, table: _Table, scope: Scope, receive: Receive, send: Send) -> None:
        backend = table.pick((next(self._counter) * _STRIDE) % _SCALE)
        shadow = table.shadow if backend is table.primary else None
        if shadow is not None:
            body = await _read_body(receive)
            receive = _replay(body)
        status, answer = await self._call(backend, scope, receive, send, keep=shadow is not None)
        if shadow is not None and status < 500:
            self._spawn(self._mirror(shadow, scope, body, answer))

    async def _call(
        self, backend: Backend, scope: Scope, receive: Receive, send: Send, *, keep: bool
    ) -> tuple[int, bytes]:
        started = time.perf_counter()
        status, chunks = 500, []

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif keep:
                chunks.append(message.get("body", b""))
            await send(message)

        backend.inflight += 1
        try:
            await backend.app(scope, receive, watch)
        finally:
            backend.inflight -= 1
            backend.stats.record(status, time.perf_counter() - started)
        return status, b"".join(chunks)

    async def _mirror(self, shadow: Backend, scope: Scope, body: bytes, answer: bytes) -> None:
        async def discard(message: Message) -> None:
            return None

        status, mirrored = await self._call(shadow, scope, _replay(body), discard, keep=True)
        result = "error" if status >= 400 else ("same" if mirrored == answer else "different")
        shadow.stats.shadow[result] = shadow.stats.shadow.get(result, 0) + 1

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # swapped from another thread: hand the task to the server's loop
            if self._loop is None:
                raise
            self._loop.call_soon_threadsafe(self._spawn, coroutine)
            return
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- swapping -----------------------------------------------------------------------------
    def swap(self, routes: Sequence[Route], generation: int) -> None:
        """Serve ``routes`` from the next request on; backends no longer routed to are shut
        down once their requests in flight are answered."""
        new = _Table(routes, generation)
        for backend in new.backends():
            self.retired.pop(backend.key, None)
            if not backend.started:
                backend.app.startup()
                backend.started = True
        kept = {b.key for b in new.backends()}
        gone = [b for b in self.table.backends() if b.key not in kept]
        self.table = new  # the switch: one assignment
        for backend in gone:
            self.retired[backend.key] = backend
            self._spawn(_drain(backend))

    def snapshot(self) -> dict[str, Any]:
        """Counters per backend key (routed and retired), for the supervisor."""
        backends = {**self.retired, **{b.key: b for b in self.table.backends()}}
        return {key: b.stats.to_dict() for key, b in backends.items()}

    # -- metrics ------------------------------------------------------------------------------
    async def _metrics(self, table: _Table, scope: Scope, receive: Receive, send: Send) -> None:
        primary = table.primary.app.metrics_text()
        body = primary + self.render_metrics(table).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def render_metrics(self, table: _Table | None = None) -> str:
        """The per-backend series (``model_version`` and ``role`` labels), summed over the
        workers (:attr:`peers`)."""
        table = table or self.table
        reports = self.peers() if self.peers is not None else []
        lines = [
            "# HELP meguri_route_generation The routing table this process serves.",
            "# TYPE meguri_route_generation gauge",
            f"meguri_route_generation {table.generation}",
        ]
        for name, kind, help_text in _SERIES:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for route in table.routes:
                labels = _labels({"model_version": route.backend.label, "role": route.role})
                lines += _series(name, labels, route, _summed(route.backend, reports))
        return "\n".join(lines) + "\n"

    # -- lifespan -----------------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self.swap(self.table.routes, self.table.generation)
                if self._watcher is not None:
                    self._spawn(self._watcher(self))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in list(self._tasks):
                    task.cancel()
                for backend in self.table.backends():
                    backend.app.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


_SERIES = (
    ("meguri_route_requests_total", "counter", "Prediction requests per model version."),
    ("meguri_route_errors_total", "counter", "Failed (5xx) predictions per model version."),
    ("meguri_route_schema_violations_total", "counter", "Inputs refused by the signature."),
    ("meguri_route_weight_percent", "gauge", "Share of requests routed to the model version."),
    ("meguri_route_request_duration_seconds", "histogram", "Latency per model version."),
    ("meguri_shadow_comparisons_total", "counter", "Shadow answers compared with the primary."),
)


def _summed(backend: Backend, reports: Sequence[Mapping[str, Any]]) -> BackendStats:
    """``backend``'s counters plus those the other workers report for it."""
    if not reports:
        return backend.stats
    total = BackendStats()
    total.add(backend.stats.to_dict())
    for report in reports:
        counters = report.get("backends", {}).get(backend.key)
        if counters is not None:
            total.add(counters)
    return total


def _series(name: str, labels: str, route: Route, stats: BackendStats) -> list[str]:
    if name == "meguri_route_request_duration_seconds":
        return stats.latency.lines(name, labels)
    if name == "meguri_shadow_comparisons_total":
        return [f'{name}{{{labels},result="{k}"}} {n}' for k, n in sorted(stats.shadow.items())]
    value = {
        "meguri_route_requests_total": stats.requests,
        "meguri_route_errors_total": stats.errors,
        "meguri_route_schema_violations_total": stats.violations,
        "meguri_route_weight_percent": route.weight,
    }[name]
    return [f"{name}{{{labels}}} {value}"]


def _is_prediction(path: str) -> bool:
    return path == _PREDICT or (path.startswith("/v2/models/") and path.endswith("/infer"))


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # like a client that keeps the connection open
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _drain(backend: Backend, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while backend.inflight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    with contextlib.suppress(Exception):
        backend.app.shutdown()
    backend.started = False
