"""Errors mapped to HTTP once, for every route (registered on the app, never per route).

meguri's API answers ``{"error": {"code", "message"}}``; the MLflow subset (paths under
``/api/2.0/``) answers MLflow's own ``{"error_code", "message"}`` so that the mlflow client
raises its usual exceptions. A :class:`~meguri.errors.MeguriError` keeps its message (it names
the fix); anything else is a 500 whose body says only where to look: the trace goes to the
server log under an id, never to the client.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from meguri import errors as e

__all__ = [
    "ApiError",
    "error_response",
    "install_error_handlers",
    "internal_error",
    "status_of",
]

log = logging.getLogger("meguri.server")

#: Paths of the MLflow subset: ``/api/2.0/…``, or under a project's prefix.
MLFLOW_PATH = re.compile(r"^(?:/projects/[^/]+)?/api/2\.0/")

#: Most specific first: the first class an error is an instance of decides.
_STATUS: tuple[tuple[type[e.MeguriError], int, str], ...] = (
    (e.NotFoundError, 404, "not_found"),
    (e.ConflictError, 409, "conflict"),
    (e.GateFailedError, 409, "gate_failed"),
    (e.ArtifactCorruptedError, 500, "artifact_corrupted"),
    (e.StoreError, 500, "store_error"),
    (e.QuerySyntaxError, 400, "bad_query"),
    (e.InvalidInputError, 400, "invalid_input"),
    (e.SpecError, 422, "invalid_spec"),
    (e.DataError, 422, "invalid_data"),
    (e.TrackingError, 422, "tracking_error"),
    (e.RegistryError, 422, "registry_error"),
    (e.MonitorError, 422, "monitor_error"),
    (e.PipelineError, 422, "pipeline_error"),
    (e.PackageIntegrityError, 500, "package_corrupted"),
    (e.PackageError, 422, "package_error"),
    (e.TrainError, 422, "train_error"),
    (e.DeploymentError, 503, "deployment_error"),
    (e.ConfigError, 500, "config_error"),
)

_MLFLOW_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "INVALID_PARAMETER_VALUE",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
}


#: MLflow error codes that follow from meguri's code rather than the status alone.
_MLFLOW_BY_CODE = {"gate_failed": "INVALID_STATE"}


class ApiError(Exception):
    """A refusal decided by the server itself (bad field, forbidden, too large)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def status_of(err: e.MeguriError) -> tuple[int, str]:
    for kind, status, code in _STATUS:
        if isinstance(err, kind):
            return status, code
    return 400, "bad_request"


def error_response(
    path: str, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The error body for ``path``: MLflow's shape under ``/api/2.0/``, meguri's elsewhere."""
    if MLFLOW_PATH.match(path):
        body: dict[str, Any] = {
            "error_code": _MLFLOW_BY_CODE.get(code) or _MLFLOW_CODES.get(status, "INTERNAL_ERROR"),
            "message": message,
        }
    else:
        body = {"error": {"code": code, "message": message}}
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def internal_error(method: str, path: str, exc: BaseException) -> Response:
    """The 500 answer: an incident id for the client, the trace for the server log."""
    incident = secrets.token_hex(6)
    log.error("internal error %s on %s %s", incident, method, path, exc_info=exc)
    message = f"Internal error (incident {incident}); the server log has the details."
    return error_response(path, 500, "internal", message)


def _internal(request: Request, exc: BaseException) -> Response:
    return internal_error(request.method, request.url.path, exc)


_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


async def _meguri(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.MeguriError)
    status, code = status_of(exc)
    if isinstance(exc, e.ArtifactCorruptedError | e.PackageIntegrityError):
        return _corrupted(request, exc, code)
    if status >= 500:
        return _internal(request, exc)
    return error_response(request.url.path, status, code, str(exc))


def _corrupted(request: Request, exc: e.MeguriError, code: str) -> Response:
    """A stored object that fails its check: the client learns which one and that an operator
    must restore it (its own code, so SDKs raise the same error class); where it lies on the
    server's storage goes only to the server log."""
    incident = secrets.token_hex(6)
    log.error("corrupted object %s on %s %s: %s", incident, request.method, request.url.path, exc)
    found = _DIGEST.search(str(exc))
    what = f"sha256:{found.group(1)}" if found else "a stored object"
    message = (
        f"{what} is corrupted in the server's store (incident {incident}); an operator must "
        "restore it from a backup (the server log says where it lies)."
    )
    return error_response(request.url.path, 500, code, message)


async def _api(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request.url.path, exc.status, exc.code, exc.message, exc.headers)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(
        request.url.path, exc.status_code, code, str(exc.detail), dict(exc.headers or {})
    )


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for item in exc.errors()[:10]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    message = "Invalid request: " + "; ".join(problems)
    return error_response(request.url.path, 422, "invalid_request", message)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _internal(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.MeguriError, _meguri)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
