"""The inference server as a raw ASGI app: no framework between the socket and the model.

``create_app(model, settings=...)`` returns the ASGI callable. Routes (see
:mod:`meguri.serve._protocols` for the bodies and :mod:`meguri.serve._openapi` for the
document):

==========================================  ====================================================
``GET /ping``, ``GET /health``              SageMaker / MLflow health check (200 once loaded)
``POST /invocations``                       predictions: CSV or JSON (SageMaker, MLflow forms)
``GET /v2/health/live``, ``/v2/health/ready``  Open Inference Protocol v2 health
``GET /v2``, ``GET /v2/models/{name}``      v2 server and model metadata
``POST /v2/models/{name}/infer``            v2 inference (also ``/versions/{version}/infer``)
``GET /metrics``                            Prometheus text (:mod:`meguri.serve._metrics`)
``POST /feedback``                          ground truth by request id (capture on; else 503)
``GET /openapi.json``                       the OpenAPI 3 document of these routes
==========================================  ====================================================

Every response carries ``X-Request-Id`` (the request's own, or a generated one). Refusals are
``{"error": {"code", "message", "column"}}`` with a 4xx status; only a failure of the model itself
is a 500. With ``settings.auth_token`` (or its ``auth_token_sha256``) set, every route but the
health checks needs ``Authorization: Bearer <token>`` (its sha256 compared in constant time),
else 401.

With capture on, the capture writer thread also records system samples of the process
(:mod:`meguri.serve._system`) and the feedback ``POST /feedback`` accepts
(:func:`~meguri.serve._capture.parse_feedback`): the answer is 202 with the count accepted,
the rows reach Parquet with the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from meguri.serve import _protocols as proto
from meguri.serve._batching import MicroBatcher
from meguri.serve._capture import Capture, LabelRule, parse_feedback
from meguri.serve._metrics import Metrics, WorkerMetrics
from meguri.serve._model import LoadedModel, Prediction
from meguri.serve._validate import BadRequest, Batch, Limits, MatrixBatch, Validator

if TYPE_CHECKING:
    from meguri.serve._server import ServeSettings

__all__ = ["ServeApp", "create_app"]

log = logging.getLogger("meguri.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[["_Request"], Awaitable[tuple[int, bytes, bytes]]]

JSON = b"application/json"
CSV = b"text/csv"
TEXT = b"text/plain; version=0.0.4; charset=utf-8"
_OPEN = frozenset({"/ping", "/health", "/v2/health/live", "/v2/health/ready"})
_HEADERS = {
    b"accept": "accept",
    b"authorization": "authorization",
    b"content-length": "content_length",
    b"content-type": "content_type",
    b"x-request-id": "given_id",
}


class _Request:
    """One request: its scope, the few headers the server reads (found in one pass over the
    header list), its id and its arrival time."""

    __slots__ = (
        "accept",
        "authorization",
        "content_length",
        "content_type",
        "given_id",
        "path",
        "receive",
        "request_id",
        "scope",
        "started",
    )

    def __init__(self, scope: Scope, receive: Receive, started: float) -> None:
        self.scope, self.receive, self.started = scope, receive, started
        self.path: str = scope["path"]
        self.request_id = ""
        self.accept = self.authorization = self.content_length = self.content_type = b""
        self.given_id = b""
        for key, value in scope["headers"]:
            field = _HEADERS.get(key)
            if field is not None:
                setattr(self, field, value)


def create_app(model: LoadedModel, *, settings: ServeSettings) -> ServeApp:
    """The ASGI app serving ``model`` with ``settings`` (see the module docstring)."""
    return ServeApp(model, settings)


class ServeApp:
    """The ASGI callable; its attributes (``metrics``, ``batcher``, ``capture``) are for tests."""

    def __init__(self, model: LoadedModel, settings: ServeSettings) -> None:
        self.model, self.settings = model, settings
        self.validator = Validator(model.signature, Limits(settings.max_columns, settings.max_rows))
        self.metrics = Metrics(model.name, model.version, model.runtime)
        self.batcher = MicroBatcher(
            model,
            max_rows=settings.max_batch_rows,
            max_wait_ms=settings.max_wait_ms,
            on_batch=self.metrics.batch,
        )
        self.capture: Capture | None = None
        if settings.capture_url and settings.capture_rate > 0:
            self.capture = Capture(
                settings.capture_url,
                rate=settings.capture_rate,
                name=model.name,
                version=model.version,
                signature=model.signature,
                metrics=self.metrics,
            )
            self.metrics.capture_stats = self.capture.stats
            self.batcher.on_predicted = self.capture.offer
        self.shared_metrics: WorkerMetrics | None = None
        self._publishing: asyncio.TimerHandle | None = None
        if settings.metrics_folder:
            self.shared_metrics = WorkerMetrics(settings.metrics_folder, self.metrics)
        self._token = settings.token_digest()
        self._labels = list(model.signature.output.labels)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(6).hex()
        self._openapi: bytes | None = None
        self._routes: dict[tuple[str, str], tuple[str, Handler]] = {
            ("POST", "/invocations"): ("/invocations", self._invocations),
            ("GET", "/ping"): ("/ping", self._ping),
            ("GET", "/health"): ("/health", self._ping),
            ("GET", "/v2/health/live"): ("/v2/health/live", self._live),
            ("GET", "/v2/health/ready"): ("/v2/health/ready", self._ready),
            ("GET", "/v2"): ("/v2", self._v2_server),
            ("GET", "/metrics"): ("/metrics", self._metrics),
            ("GET", "/openapi.json"): ("/openapi.json", self._openapi_doc),
            ("POST", "/feedback"): ("/feedback", self._feedback),
        }
        self._label_rule = LabelRule(model.signature.output)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets are not served
            await send({"type": "websocket.close", "code": 1003})

    # -- the request cycle ------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = _Request(scope, receive, started)
        request.request_id = self._request_id(request.given_id)
        endpoint, handler = self._route(scope["method"], request.path)
        status, body, ctype = await self._handle(request, handler, endpoint)
        headers = [(b"content-type", ctype), (b"x-request-id", request.request_id.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(endpoint, status, time.perf_counter() - started)

    async def _handle(
        self, request: _Request, handler: Handler, endpoint: str
    ) -> tuple[int, bytes, bytes]:
        try:
            if self._token is not None and request.path not in _OPEN:
                self._authorize(request)
            return await handler(request)
        except BadRequest as err:
            self.metrics.error(err.code, endpoint)
            return err.status, _error(err.code, str(err), err.column), JSON
        except Exception as exc:
            log.exception("request %s failed", request.request_id)
            self.metrics.error("internal", endpoint)
            return 500, _error("internal", f"the model failed: {type(exc).__name__}", None), JSON

    def _request_id(self, given: bytes) -> str:
        """The client's ``X-Request-Id`` (up to 128 ASCII characters), else a new one: a random
        prefix per process and a counter."""
        if given and len(given) <= 128 and given.isascii():
            return given.decode()
        return f"{self._id_prefix}-{next(self._ids)}"

    def _route(self, method: str, path: str) -> tuple[str, Handler]:
        found = self._routes.get((method, path))
        if found is not None:
            return found
        if path.startswith("/v2/models/"):
            return self._v2_route(method, path)
        if any(p == path for _, p in self._routes):
            return "other", self._not_allowed
        return "other", self._not_found

    def _v2_route(self, method: str, path: str) -> tuple[str, Handler]:
        parts = path[len("/v2/models/") :].split("/")
        if len(parts) >= 3 and parts[1] == "versions":
            parts = [parts[0], *parts[3:]]
        if parts[1:] == ["infer"]:
            return (
                "/v2/models/{name}/infer",
                self._v2_infer if method == "POST" else self._not_allowed,
            )
        if parts[1:] in ([], ["ready"]):
            handler = self._v2_model if len(parts) == 1 else self._v2_model_ready
            return "/v2/models/{name}", handler if method == "GET" else self._not_allowed
        return "other", self._not_found

    def _authorize(self, request: _Request) -> None:
        scheme, _, secret = request.authorization.partition(b" ")
        presented = hashlib.sha256(secret.strip()).digest()
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented, self._token or b""):
            raise BadRequest(
                "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                code="unauthorized",
                status=401,
            )

    async def _body(self, request: _Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.content_length
        if declared and (not declared.isdigit() or int(declared) > limit):
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the client went away", code="disconnected", status=499)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            if not message.get("more_body", False):
                return chunk if not chunks else b"".join([*chunks, chunk])
            chunks.append(chunk)

    async def _predict(self, request: _Request, batch: Batch) -> Prediction:
        if isinstance(batch, MatrixBatch):
            rows = len(batch.matrix)
        else:
            rows = len(next(iter(batch.values())))
        return await self.batcher.predict(batch, rows, request.request_id, request.started)

    # -- handlers ---------------------------------------------------------------------------
    async def _invocations(self, request: _Request) -> tuple[int, bytes, bytes]:
        body = await self._read(request)
        ctype = request.content_type.decode("latin-1")
        batch = proto.parse_invocation(body, ctype, self.validator)
        prediction = await self._predict(request, batch)
        probabilities = proto.wants_probabilities(request.scope.get("query_string", b""))
        if CSV in request.accept:
            return 200, proto.render_csv(prediction, probabilities), CSV
        return 200, proto.render_predictions(prediction, self._labels, probabilities), JSON

    async def _v2_infer(self, request: _Request) -> tuple[int, bytes, bytes]:
        self._check_model_name(request.path)
        body = await self._read(request)
        batch, request_id, wanted = proto.parse_v2_infer(body, self.validator)
        prediction = await self._predict(request, batch)
        return 200, proto.render_v2(prediction, self.model, request_id, wanted), JSON

    async def _read(self, request: _Request) -> bytes:
        """The body, counted in ``batcher.arriving`` while it is read."""
        self.batcher.arriving += 1
        try:
            return await self._body(request)
        finally:
            self.batcher.arriving -= 1

    async def _feedback(self, request: _Request) -> tuple[int, bytes, bytes]:
        """Ground truth for earlier predictions, written by the capture thread (202)."""
        if self.capture is None:
            raise BadRequest(
                "feedback needs prediction capture, which is off on this server; start it "
                "with --capture-rate and --capture-url (deployments capture by default)",
                code="feedback_unavailable",
                status=503,
            )
        batch = parse_feedback(proto.parse_json(await self._body(request)), self._label_rule)
        if not self.capture.offer_feedback(batch):
            raise BadRequest(
                "the feedback buffer is full; retry in a few seconds",
                code="feedback_buffer_full",
                status=503,
            )
        document = {"accepted": len(batch.request_ids), "duplicates": batch.duplicates}
        return 202, orjson.dumps(document), JSON

    async def _v2_model(self, request: _Request) -> tuple[int, bytes, bytes]:
        self._check_model_name(request.path)
        return 200, proto.v2_metadata(self.model), JSON

    async def _v2_model_ready(self, request: _Request) -> tuple[int, bytes, bytes]:
        self._check_model_name(request.path)
        return 200, orjson.dumps({"name": self.model.name, "ready": True}), JSON

    def _check_model_name(self, path: str) -> None:
        name = path[len("/v2/models/") :].split("/", 1)[0]
        if name != self.model.name:
            raise BadRequest(
                f"unknown model {name!r}; this server serves {self.model.name!r}",
                code="model_not_found",
                status=404,
            )

    async def _ping(self, request: _Request) -> tuple[int, bytes, bytes]:
        return 200, b'{"status":"ok"}', JSON

    async def _live(self, request: _Request) -> tuple[int, bytes, bytes]:
        return 200, b'{"live":true}', JSON

    async def _ready(self, request: _Request) -> tuple[int, bytes, bytes]:
        return 200, b'{"ready":true}', JSON

    async def _v2_server(self, request: _Request) -> tuple[int, bytes, bytes]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            release = version("meguri")
        except PackageNotFoundError:
            release = "unknown"
        doc = {"name": "meguri", "version": release, "extensions": []}
        return 200, orjson.dumps(doc), JSON

    async def _metrics(self, request: _Request) -> tuple[int, bytes, bytes]:
        return 200, self.metrics_text(), TEXT

    def metrics_text(self) -> bytes:
        """The Prometheus text of ``GET /metrics``: every worker's numbers summed when the
        workers share them (``settings.metrics_folder``), else this process's."""
        if self.shared_metrics is None:
            return self.metrics.render()
        return self.shared_metrics.summed().render()

    async def _openapi_doc(self, request: _Request) -> tuple[int, bytes, bytes]:
        if self._openapi is None:
            from meguri.serve._openapi import openapi_document

            secured = self._token is not None
            document = openapi_document(
                self.model, secured=secured, feedback=self.capture is not None
            )
            self._openapi = orjson.dumps(document)
        return 200, self._openapi, JSON

    async def _not_found(self, request: _Request) -> tuple[int, bytes, bytes]:
        raise BadRequest(
            f"no route {request.path!r}; see GET /openapi.json for the endpoints",
            code="not_found",
            status=404,
        )

    async def _not_allowed(self, request: _Request) -> tuple[int, bytes, bytes]:
        method = request.scope["method"]
        raise BadRequest(
            f"{method} is not allowed on {request.path!r}; see GET /openapi.json",
            code="method_not_allowed",
            status=405,
        )

    # -- lifespan ---------------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Start capture, move what start-up allocated out of the garbage collector's sight
        (``gc.freeze``: later collections no longer walk the model and the imported modules,
        which otherwise shows as latency spikes) and log the time since the process started."""
        if self.capture is not None:
            self.capture.start()
        if self.shared_metrics is not None:
            self._publish_metrics()
        gc.collect()
        gc.freeze()
        since = _since_process_start()
        log.info(
            "meguri serve: %s version %s (%s) ready %.2f s after process start",
            self.model.name,
            self.model.version,
            self.model.runtime,
            since,
        )

    def _publish_metrics(self) -> None:
        """Share this worker's numbers now and every ``PUBLISH_SECONDS`` while the loop runs."""
        assert self.shared_metrics is not None
        try:
            self.shared_metrics.publish()
        except OSError as exc:  # a full disk must not stop the serving
            log.warning("metrics: could not share this worker's numbers: %s", exc)
        with contextlib.suppress(RuntimeError):  # no loop running: scrapes still publish
            self._publishing = asyncio.get_running_loop().call_later(
                WorkerMetrics.PUBLISH_SECONDS, self._publish_metrics
            )

    def shutdown(self) -> None:
        """Write the captured predictions still buffered and this worker's last numbers."""
        if self.capture is not None:
            self.capture.close()
        if self.shared_metrics is not None:
            if self._publishing is not None:
                self._publishing.cancel()
            with contextlib.suppress(OSError):
                self.shared_metrics.publish()


def _since_process_start() -> float:
    """Seconds since this process started (10 ms resolution on Linux; 1 s elsewhere)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as uptime:
            return float(uptime.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        import psutil

        return time.time() - psutil.Process().create_time()


def _error(code: str, message: str, column: str | None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "column": column}})


def _too_large(limit: int) -> BadRequest:
    return BadRequest(
        f"the body is larger than the limit of {limit} bytes; split the request "
        "or raise --max-body",
        code="body_too_large",
        status=413,
    )
