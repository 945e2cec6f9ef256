"""pytest fixtures of the metadata store, parametrized per backend: ``[sqlite]``, ``[postgres]``
and (``metadata_store`` only) ``[server]``.

PostgreSQL comes from ``MEGURI_TEST_POSTGRES_URL``, the URL of a server where the user may
``CREATE DATABASE`` (``.ci/run`` starts a throwaway one). Each test gets a brand-new database,
dropped afterwards. Without the variable the PostgreSQL cases are skipped, except when ``CI`` is
set: then they fail, so that CI can never pass by silently skipping a backend.

``[server]`` runs the same contract through the platform server: the test gets a
:class:`~meguri.store.remote.RemoteMetadataStore` talking over HTTP to a real uvicorn server,
which serves a brand-new SQLite store of its own to a platform admin's token. One server
runs per test session (started by the first ``[server]`` test, stopped at the end) and serves
each test's own store: starting uvicorn once keeps the cost per test to that of the store.
The server authenticates callers against a workspace of its own, so that the store under test
starts empty (no user, no project, no audit event), as the contract expects. The admin's calls
keep the actor names they give (``keep_actors``), so that the contract's attributions hold;
the overwriting of actors for everyone else is tested in ``tests/test_remote_store.py``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from meguri.store.metadata import MetadataStore, open_metadata_store
from meguri.store.metadata._engine import normalise_url

if TYPE_CHECKING:
    from fastapi import Request

    from meguri.store.metadata._engine import Database

__all__ = [
    "SERVER_SKIPS",
    "fresh_postgres_database",
    "metadata_store",
    "metadata_url",
    "postgres_url",
    "served_metadata_store",
]

POSTGRES_ENV = "MEGURI_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server of the test session (skipped, or failed under CI, when unset)."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(
            f"CI is set but {POSTGRES_ENV} is not: the PostgreSQL suite would be skipped. "
            "Run the tests through .ci/run, which starts PostgreSQL and exports the URL."
        )
    pytest.skip(
        f"{POSTGRES_ENV} is not set: run .ci/run, or set it to a server URL such as "
        "postgresql://postgres@127.0.0.1:5432/postgres"
    )


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server at ``server_url``; its URL, dropped on exit."""
    name = f"meguri_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(
        normalise_url(server_url), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_database_url(server_url, name)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def make_database_url(server_url: str, database: str) -> str:
    """``server_url`` with its database replaced, as the string a user would pass."""
    return sa.make_url(server_url).set(database=database).render_as_string(hide_password=False)


@contextmanager
def _database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'meguri.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a brand-new, empty metadata store (nothing created in it yet)."""
    with _database_url(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "server"],
)
def metadata_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    """A brand-new, opened (migrated) store of each backend, closed after the test; for
    ``[server]``, the same through the platform server."""
    if request.param == "server":
        with served_metadata_store(request, tmp_path) as remote:
            yield remote
        return
    with _database_url(request.param, request, tmp_path) as url:
        store = open_metadata_store(url)
        try:
            yield store
        finally:
            store.close()


# -- [server]: the store through the platform server ------------------------------------------

#: Contract tests that cannot run through the server (``module.test``), with the reason.
SERVER_SKIPS: dict[str, str] = {
    "contract_access.test_passwords_are_scrypt_hashed_and_verified": "checks passwords with "
    "access.verify_password, which the server never offers (signing in is POST /login)",
    "contract_access.test_tokens_are_stored_hashed_shown_once_and_refused_when_forged": "mints "
    "and checks tokens (create_token, authenticate_token), which the server never offers",
    "contract_access.test_tokens_expire_and_revoke": "mints and checks tokens (create_token, "
    "authenticate_token), which the server never offers",
    "contract_access.test_disabled_users_cannot_sign_in_or_use_tokens": "signs in and mints "
    "tokens (verify_password, create_token), which the server never offers",
    "contract_access.test_access_changes_are_audited_without_secrets": "mints and uses a token "
    "(create_token, authenticate_token), which the server never offers",
    "contract_access.test_sessions_end_when_signed_out_or_the_password_changes": "ends browser "
    "sessions (end_session, session_ended), which only the server itself does",
}

_MOUNT = "/contract"  # the store routes of the test server, apart from any the app has itself


@dataclass(frozen=True)
class _StoreServer:
    url: str  # where RemoteMetadataStore finds the store routes
    token: str  # a platform admin's
    serving: list[MetadataStore]  # the store of the running test (one at a time)
    template: Path  # an empty, migrated SQLite store: copied, not migrated, per test


_SERVER = pytest.StashKey[_StoreServer]()


def _store_server(request: pytest.FixtureRequest) -> _StoreServer:
    """The session's store server, started on first use and stopped at the session's end."""
    stash = request.config.stash
    if _SERVER not in stash:
        stack = ExitStack()
        request.config.add_cleanup(stack.close)
        root = request.getfixturevalue("tmp_path_factory").mktemp("store-server")
        stash[_SERVER] = _start_store_server(stack, root)
    return stash[_SERVER]


def _start_store_server(stack: ExitStack, root: Path) -> _StoreServer:
    from meguri.errors import ConfigError
    from meguri.serve._server import app_in_background
    from meguri.server import ServerSettings, create_app
    from meguri.server._r_store import store_router
    from meguri.store import open_workspace
    from meguri.store.remote._codec import STORE_PATH

    ws = open_workspace(root, project="contract-server", user="owner")
    stack.callback(ws.close)
    ws.metadata.access.create_user("contract-admin", by="owner", is_admin=True)
    _, token = ws.metadata.access.create_token("contract-admin", name="contract", by="owner")
    serving: list[MetadataStore] = []

    def served(request: Request) -> MetadataStore:
        if not serving:
            raise ConfigError("No contract test is running: the test server serves no store")
        return serving[-1]

    router = store_router(served, prefix=_MOUNT + STORE_PATH)
    settings = ServerSettings(secret_key=secrets.token_urlsafe(48))
    app = create_app(settings, workspace=ws, extra_routers=[router])
    url = stack.enter_context(app_in_background(app))
    template = root / "template" / "meguri.db"
    open_metadata_store(f"sqlite:///{template}").close()
    return _StoreServer(url + _MOUNT, token, serving, template)


def _contract_name(request: pytest.FixtureRequest) -> str:
    function = request.function
    return f"{function.__module__.rsplit('.', 1)[-1]}.{function.__name__}"


@contextmanager
def served_metadata_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MetadataStore]:
    """A brand-new SQLite store behind the session's server, and a RemoteMetadataStore of a
    platform admin on it. Its ``db`` is the served store's database, for the contract tests
    that edit the database behind the store's back (tampering with the audit log)."""
    from meguri.store.remote import RemoteMetadataStore

    reason = SERVER_SKIPS.get(_contract_name(request))
    if reason is not None:
        pytest.skip(reason)
    server = _store_server(request)
    path = tmp_path / "served" / "meguri.db"
    path.parent.mkdir(parents=True)
    shutil.copyfile(server.template, path)
    store = open_metadata_store(f"sqlite:///{path}")

    class ServedStore(RemoteMetadataStore):
        @property
        def db(self) -> Database:
            return store.db

        @db.setter
        def db(self, value: Database) -> None:
            raise AttributeError("the served store's database is fixed")

    server.serving.append(store)
    remote = ServedStore(server.url, server.token, keep_actors=True)
    try:
        yield remote
    finally:
        remote.close()
        server.serving.remove(store)
        store.close()
