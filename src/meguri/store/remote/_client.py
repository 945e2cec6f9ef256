"""The metadata store of a meguri platform server, used as if it were local.

:class:`RemoteMetadataStore` is a :class:`~meguri.store.metadata.MetadataStore`: the same
repository attributes with the same methods, signatures and records, so every phase runs
unchanged against ``MEGURI_SERVER``. Each method call is one ``POST
/api/v1/store/<repository>/<method>`` on a kept-alive connection; the server checks the
caller's role on the project the call touches, runs the real repository and answers its
records (see :mod:`meguri.store.remote._codec` for the wire format and
``meguri.server._r_store`` for who may call what).

What differs from a local store, by design:

* Changes are recorded in the name of the token's user: the server overwrites every actor
  argument (``by``, ``created_by``, ...) with it. ``keep_actors=True`` asks the server to keep
  the names given instead, which only a platform admin may do (replaying a history, the
  contract suite).
* There is no ``db``: nothing outside the server touches its database (tuning keeps Optuna's
  journal through the ``tuning`` repository, like everything else).
* Processes started from this one (parallel tuning workers) reopen the store from
  :meth:`RemoteMetadataStore.worker_environment` given to them as environment variables: the
  token travels in the environment of a child process, never in a pickle.
* ``audit.iter_events`` pages through ``audit.events`` (1,000 events a call), bounded by the
  newest matching event when it starts, instead of holding one database snapshot.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn, cast

import httpx
import orjson
from pydantic import ValidationError

from meguri.errors import ConfigError, DataError, MetadataStoreError
from meguri.store.metadata._store import MetadataStore
from meguri.store.metadata.repositories.audit import AuditRepository
from meguri.store.remote._codec import (
    ACTORS_HEADER,
    REPOSITORIES,
    STORE_PATH,
    MethodCodec,
    error_class,
    method_codec,
    public_methods,
)

if TYPE_CHECKING:
    from meguri.store.metadata import AuditEvent
    from meguri.store.metadata._engine import Database
    from meguri.store.metadata.repositories.access import AccessRepository
    from meguri.store.metadata.repositories.checks import CheckRepository
    from meguri.store.metadata.repositories.datasets import DatasetRepository
    from meguri.store.metadata.repositories.deployments import DeploymentRepository
    from meguri.store.metadata.repositories.documents import DocumentRepository
    from meguri.store.metadata.repositories.models import ModelRepository
    from meguri.store.metadata.repositories.monitor import MonitorRepository
    from meguri.store.metadata.repositories.projects import ProjectRepository
    from meguri.store.metadata.repositories.runs import RunRepository
    from meguri.store.metadata.repositories.specs import SpecRepository
    from meguri.store.metadata.repositories.tuning import TuningJournalRepository

__all__ = ["SERVER_VARIABLE", "TOKEN_VARIABLE", "RemoteMetadataStore"]

SERVER_VARIABLE = "MEGURI_SERVER"
TOKEN_VARIABLE = "MEGURI_TOKEN"
_PAGE = 1000
#: Methods that only make sense next to the database; refused before any request.
_LOCAL_ONLY = {
    "audit.record": "it writes inside a transaction of the local database",
}


class RemoteMetadataStore(MetadataStore):
    """The metadata store served by the meguri platform server at ``server_url``
    (``http(s)://host:port``), acting with the API token ``token``.

    ``timeout`` bounds each call (seconds); ``transport`` replaces httpx's (tests). Close it
    with :meth:`close`. See the module docstring for what differs from a local store.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        keep_actors: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # No database: MetadataStore.__init__ is deliberately not called.
        self._server = server_url.rstrip("/")
        self._token = token  # for worker_environment(); never in repr, logs or pickles
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if keep_actors:
            headers[ACTORS_HEADER] = "as-given"
        self._http = httpx.Client(
            base_url=self._server + STORE_PATH,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            follow_redirects=False,
        )
        # a store dropped unclosed (a CLI command's workspace) still closes its connections
        weakref.finalize(self, self._http.close)

    def __repr__(self) -> str:  # never the token
        return f"RemoteMetadataStore({self._server!r})"

    @property
    def url(self) -> str:
        return self._server

    @property
    def db(self) -> Database:
        raise MetadataStoreError(
            f"The metadata store is the server at {self._server} ({SERVER_VARIABLE}): its "
            "database is not reachable from here. Run this where the store is (on the server, "
            f"or with MEGURI_STORE_URL and {SERVER_VARIABLE} unset)"
        )

    @db.setter
    def db(self, value: Database) -> None:
        raise MetadataStoreError("A remote metadata store has no database to set")

    def close(self) -> None:
        self._http.close()

    def caller(self) -> str:
        """The name of the user the token belongs to (who every change is recorded as)."""
        try:
            response = self._http.get(self._server + "/api/v1/me")
        except httpx.TransportError as err:
            raise self._unreachable(err) from None
        if response.status_code == 401:
            _, message = _envelope(response)
            raise ConfigError(
                f"The meguri server at {self._server} refused the API token: {message} Create "
                f"a token (`meguri users token create`) and set {TOKEN_VARIABLE}"
            )
        if response.status_code != 200:
            _, message = _envelope(response)
            raise MetadataStoreError(f"The meguri server at {self._server} answered: {message}")
        return str(response.json()["name"])

    def worker_environment(self) -> dict[str, str]:
        """The environment variables with which a process started from this one opens this
        same store as the same user (``MEGURI_SERVER``, ``MEGURI_TOKEN``). Secrets go to
        children through their environment, which is private to them, rather than through
        pickles, which executors may log, spill to disk or ship to other machines."""
        return {SERVER_VARIABLE: self._server, TOKEN_VARIABLE: self._token}

    def __getstate__(self) -> NoReturn:
        raise TypeError(
            "A RemoteMetadataStore is not picklable (its token must not be): pass the server "
            f"URL and let the other process read {TOKEN_VARIABLE} from its environment"
        )

    def __enter__(self) -> RemoteMetadataStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- repositories ----------------------------------------------------------------------

    @cached_property
    def projects(self) -> ProjectRepository:
        return cast("ProjectRepository", self._repository("projects"))

    @cached_property
    def specs(self) -> SpecRepository:
        return cast("SpecRepository", self._repository("specs"))

    @cached_property
    def documents(self) -> DocumentRepository:
        return cast("DocumentRepository", self._repository("documents"))

    @cached_property
    def checks(self) -> CheckRepository:
        return cast("CheckRepository", self._repository("checks"))

    @cached_property
    def runs(self) -> RunRepository:
        return cast("RunRepository", self._repository("runs"))

    @cached_property
    def datasets(self) -> DatasetRepository:
        return cast("DatasetRepository", self._repository("datasets"))

    @cached_property
    def models(self) -> ModelRepository:
        return cast("ModelRepository", self._repository("models"))

    @cached_property
    def deployments(self) -> DeploymentRepository:
        return cast("DeploymentRepository", self._repository("deployments"))

    @cached_property
    def monitor(self) -> MonitorRepository:
        return cast("MonitorRepository", self._repository("monitor"))

    @cached_property
    def access(self) -> AccessRepository:
        return cast("AccessRepository", self._repository("access"))

    @cached_property
    def audit(self) -> AuditRepository:
        repository = self._repository("audit")
        paged = _paged_events(cast(AuditRepository, repository))
        repository.iter_events = _like(method_codec("audit", "iter_events"), paged)  # type: ignore[attr-defined]
        return cast(AuditRepository, repository)

    @cached_property
    def tuning(self) -> TuningJournalRepository:
        return cast("TuningJournalRepository", self._repository("tuning"))

    def _repository(self, name: str) -> RemoteRepository:
        return RemoteRepository(name, self._call)

    # -- calls -----------------------------------------------------------------------------

    def _call(self, codec: MethodCodec, arguments: dict[str, Any]) -> Any:
        if codec.label in _LOCAL_ONLY:
            raise MetadataStoreError(
                f"{codec.label} is not available from a remote store: {_LOCAL_ONLY[codec.label]}"
            )
        body = codec.encode_arguments(arguments)
        path = f"/{codec.repository}/{codec.name}"
        try:
            response = self._http.post(path, content=body)
        except httpx.TransportError as err:
            raise self._unreachable(err) from None
        if response.status_code != 200:
            self._refused(codec, response)
        try:
            return codec.decode_result(response.content)
        except ValidationError as err:
            raise MetadataStoreError(
                f"The answer of the meguri server at {self._server} to {codec.label} does not "
                f"match this client ({err.error_count()} problems, first: "
                f"{err.errors(include_url=False)[0]['msg']}); run the same meguri version on both"
            ) from None

    def _unreachable(self, err: httpx.TransportError) -> MetadataStoreError:
        reason = str(err) or type(err).__name__
        return MetadataStoreError(
            f"Cannot reach the meguri server at {self._server} ({reason}). Check that it is "
            f"running and that {SERVER_VARIABLE} names it (scheme, host and port), or unset "
            f"{SERVER_VARIABLE} to use a local store"
        )

    def _refused(self, codec: MethodCodec, response: httpx.Response) -> NoReturn:
        code, message = _envelope(response)
        status = response.status_code
        cls = error_class(code)
        if cls is not None and status not in (401, 403):
            raise cls(message)
        if status == 401:
            raise ConfigError(
                f"The meguri server at {self._server} refused the API token: {message} Create "
                f"a token (`meguri users token create`) and set {TOKEN_VARIABLE}"
            )
        if status == 403:
            raise ConfigError(f"The meguri server refused {codec.label}: {message}")
        if status == 413:
            raise DataError(
                f"{codec.label}: {message} Send less per call (e.g. fewer metric points per "
                "log_batch)"
            )
        if status == 404 and code in ("unknown_method", "not_found"):
            raise MetadataStoreError(
                f"The meguri server at {self._server} does not offer {codec.label} "
                f"({message}); it is older than this client or not a meguri server: "
                f"upgrade it, or check {SERVER_VARIABLE}"
            )
        raise MetadataStoreError(
            f"The meguri server at {self._server} failed on {codec.label} (HTTP {status}): "
            f"{message}"
        )


def _envelope(response: httpx.Response) -> tuple[str, str]:
    """The ``code`` and ``message`` of the server's error envelope (or of what came)."""
    try:
        error = orjson.loads(response.content)["error"]
        return str(error["code"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return "", text


class RemoteRepository:
    """One repository of a remote store: each public method of the real repository, with
    its signature and docstring, made into one call to the server."""

    def __init__(self, name: str, call: Callable[[MethodCodec, dict[str, Any]], Any]) -> None:
        self._name = name
        for method in public_methods(REPOSITORIES[name]):
            codec = method_codec(name, method)
            setattr(self, method, _like(codec, _caller(codec, call)))

    def __repr__(self) -> str:
        return f"<remote {REPOSITORIES[self._name].__name__}>"


def _caller(
    codec: MethodCodec, call: Callable[[MethodCodec, dict[str, Any]], Any]
) -> Callable[..., Any]:
    signature, empty = codec.signature, inspect.Parameter.empty

    def method(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)  # a wrong call fails here, as it would locally
        given = {
            name: value
            for name, value in bound.arguments.items()
            if signature.parameters[name].default is empty
            or value is not signature.parameters[name].default
        }
        return call(codec, given)

    return method


def _like(codec: MethodCodec, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` dressed as the real method: name, docstring, signature."""
    function.__name__ = codec.name
    function.__qualname__ = f"{REPOSITORIES[codec.repository].__name__}.{codec.name}"
    function.__doc__ = codec.doc
    function.__signature__ = codec.signature  # type: ignore[attr-defined]
    return function


def _paged_events(audit: AuditRepository) -> Callable[..., Iterator[AuditEvent]]:
    def iter_events(
        *, project_id: str | None = None, since: float | None = None
    ) -> Iterator[AuditEvent]:
        newest = audit.events(project_id=project_id, since=since, limit=1, newest_first=True)
        if not newest:
            return
        last, after = newest[0].seq, 0
        while after < last:
            page = audit.events(project_id=project_id, since=since, after_seq=after, limit=_PAGE)
            yield from (event for event in page if event.seq <= last)
            if len(page) < _PAGE:
                return
            after = page[-1].seq

    return iter_events
