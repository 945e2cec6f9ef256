"""The metadata store over HTTP: what :class:`~meguri.store.remote.RemoteMetadataStore`
(``MEGURI_SERVER``) talks to.

``POST /api/v1/store/<repository>/<method>`` with the method's arguments as a JSON object
runs ``store.<repository>.<method>(**arguments)`` and answers its result as JSON (the codec is
:mod:`meguri.store.remote._codec`, derived from the repositories' own signatures). The route
itself only needs a signed-in caller; what each method needs is decided here, per call, by the
explicit table of :mod:`meguri.server._r_store_rules` (deny when a method is not in it). Then:

* actor arguments (``by``, ``created_by``, ...) are overwritten with the caller's name, so
  nobody records a change in someone else's name; a platform admin may send
  ``X-Meguri-Actors: as-given`` to keep the names given (replaying a history, the contract
  suite), anyone else is refused for asking;
* errors keep their class and message (``{"error": {"code": "not_found_error", ...}}``);
  the message of a server-side failure (5xx: the store's database) goes to platform admins
  only, others get the incident id that the server log carries;
* bodies are read with a size limit (:data:`MAX_CALL_BYTES`, or the server's upload limit if
  lower).
"""

from __future__ import annotations

import secrets
import typing
from collections.abc import Callable

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from meguri.errors import ConflictError, MeguriError, NotFoundError
from meguri.server._access import Access, access
from meguri.server._errors import ApiError, error_response, log, status_of
from meguri.server._r_store_rules import (
    EXCLUDED,
    RULES,
    Caller,
    Hidden,
    authorise,
    stamp_actors,
)
from meguri.server._upload import read_body
from meguri.store.metadata import MetadataStore, User
from meguri.store.remote._codec import (
    ACTORS_HEADER,
    REPOSITORIES,
    STORE_PATH,
    MethodCodec,
    error_code,
    method_codec,
)
from meguri.train._tracking import reap_stale_runs

__all__ = ["MAX_CALL_BYTES", "router", "store_router"]

#: The largest call body read (a log_batch of about a million points).
MAX_CALL_BYTES = 64 << 20

StoreOf = Callable[[Request], MetadataStore]
_OPENAPI = {
    **access(Access.AUTHENTICATED),  # the role each method needs is checked per call
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "The method's arguments by parameter name.",
                }
            }
        },
    },
}


def _app_store(request: Request) -> MetadataStore:
    store: MetadataStore = request.app.state.workspace.metadata
    return store


def store_router(served: StoreOf = _app_store, *, prefix: str = STORE_PATH) -> APIRouter:
    """The store's router; ``served`` picks the store a request works on (default: the app
    workspace's), ``prefix`` where it is mounted (tests mount a second one elsewhere)."""
    router = APIRouter(prefix=prefix, tags=["store"])

    @router.post("/{repository}/{method}", openapi_extra=_OPENAPI)
    async def call(request: Request, repository: str, method: str) -> Response:
        """Run one metadata-store method (see the module docstring); the role it needs
        depends on the method and on the project its arguments belong to."""
        user: User = request.state.user
        label = f"{repository}.{method}"
        codec = _codec(label)
        as_given = request.headers.get(ACTORS_HEADER, "").strip().lower() == "as-given"
        if as_given and not user.is_admin:
            raise ApiError(
                403,
                "forbidden",
                f"Only a platform admin may keep the actors of a call ({ACTORS_HEADER}); "
                "drop the header: changes are recorded in your name.",
            )
        limit = min(request.app.state.settings.max_upload_bytes, MAX_CALL_BYTES)
        body = await read_body(request, limit)
        store = served(request)
        try:
            return await run_in_threadpool(_run, store, user, codec, body, as_given)
        except (MeguriError, ValueError, TypeError) as err:
            return _error(request, user, err)

    return router


#: Reads before which stale runs are marked failed (the SDK sweeps before the same reads when
#: its store is local; a remote SDK may not sweep every project's runs, so the server does).
_SWEPT_BEFORE = frozenset({"runs.search", "runs.count", "runs.get_run", "runs.resolve_run_id"})


def _codec(label: str) -> MethodCodec:
    if label in EXCLUDED:
        raise ApiError(403, "not_exposed", f"{label} is not offered over HTTP: {EXCLUDED[label]}.")
    repository, _, method = label.partition(".")
    if label not in RULES or repository not in REPOSITORIES:
        raise ApiError(
            404,
            "unknown_method",
            f"The store has no method {label!r} over HTTP; the repositories are "
            f"{', '.join(REPOSITORIES)}.",
        )
    return method_codec(repository, method)


def _run(
    store: MetadataStore, user: User, codec: MethodCodec, body: bytes, as_given: bool
) -> Response:
    """Decode, authorise, stamp the actors, call, filter, encode (in a worker thread)."""
    rule = RULES[codec.label]
    arguments = codec.decode_arguments(body)
    if codec.label in _SWEPT_BEFORE:  # what a local store's reader sweeps for itself
        reap_stale_runs(store)
    caller = Caller(store, user)
    repository = getattr(store, codec.repository)
    try:
        if not user.is_admin:
            authorise(caller, codec.label, rule, arguments)
        if not as_given:
            stamp_actors(rule, arguments, user.name)
        if rule.scoped is not None and not user.is_admin:
            result = rule.scoped(caller, arguments)
        else:
            result = getattr(repository, codec.name)(**arguments)
    except sa.exc.IntegrityError as err:  # locally raised as it is; here a 409, never a 500
        reason = str(err.orig).strip().splitlines()[0] if err.orig is not None else "refused"
        raise ConflictError(
            f"The store refused {codec.label}: {reason}. An id names nothing, or a unique "
            "value is taken; check the arguments"
        ) from None
    except Hidden as hidden:
        if _optional(codec):
            return _json(codec, None)
        raise NotFoundError(str(hidden)) from None
    if rule.post is not None and not user.is_admin:
        result = rule.post(caller, result)
    return _json(codec, result)


def _optional(codec: MethodCodec) -> bool:
    return type(None) in typing.get_args(codec.returns)


def _json(codec: MethodCodec, result: object) -> Response:
    return Response(codec.encode_result(result), 200, media_type="application/json")


def _error(request: Request, user: User, err: BaseException) -> Response:
    """The envelope of an error raised by the store, with its class's code. A server-side
    failure (5xx) is logged with its trace under an incident id; its message, which may name
    the server's database, goes to platform admins only."""
    code = error_code(err) or "meguri_error"
    status = status_of(err)[0] if isinstance(err, MeguriError) else 400
    message = str(err)
    if status >= 500:
        incident = secrets.token_hex(6)
        path = request.url.path
        log.error("store error %s on %s %s", incident, request.method, path, exc_info=err)
        if not user.is_admin:
            message = f"The server's store failed (incident {incident}); its log has the details."
    return error_response(request.url.path, status, code, message)


router = store_router()
