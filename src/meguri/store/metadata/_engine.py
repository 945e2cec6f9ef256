"""Connections to the metadata store: SQLite (embedded default) or PostgreSQL, chosen by URL.

SQLite runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout. Write transactions
start with ``BEGIN IMMEDIATE`` so that two processes never deadlock upgrading a read lock;
reads run in autocommit mode and never block writers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from meguri.errors import ConfigError, MetadataStoreError

_URL_HELP = (
    "Use sqlite:///path/to/meguri.db for the embedded store or "
    "postgresql://user:password@host:5432/dbname for a team server."
)


def normalise_url(url: str) -> sa.URL:
    """Parse a store URL, choosing our drivers (pysqlite, psycopg 3 for PostgreSQL)."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"The metadata store URL {url!r} is not a database URL. {_URL_HELP}"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend != "sqlite":
        raise ConfigError(
            f"The metadata store URL {parsed.render_as_string(hide_password=True)!r} names "
            f"{backend!r}, which meguri does not support. {_URL_HELP}"
        )
    return parsed.set(drivername="sqlite")


def sqlite_path(url: sa.URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    if url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser().resolve()


def _check_folder(path: Path) -> None:
    """Fail early, naming the fix, when the database file or its folder cannot be written (WAL
    mode writes ``-wal`` and ``-shm`` files beside the database)."""
    folder = path.parent
    if path.is_dir():
        raise ConfigError(
            f"The metadata store path {path} is a folder, not a database file. Name a file, "
            f"e.g. MEGURI_STORE_URL=sqlite:///{path / 'meguri.db'}."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"Cannot create the store folder {folder}: {err.strerror}. Choose a folder you can "
            "write to, e.g. with MEGURI_STORE_URL=sqlite:////path/to/meguri.db."
        ) from None
    for target in (folder, path) if path.exists() else (folder,):
        if not os.access(target, os.W_OK):
            raise ConfigError(
                f"Cannot write to {target}: permission denied. Fix its permissions "
                f"(e.g. chmod u+w {target}) or set MEGURI_STORE_URL to a writable location."
            )


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    path = sqlite_path(url)
    options: dict[str, Any] = {}
    if path is None:  # one shared connection, or every thread would see its own empty database
        options["poolclass"] = StaticPool
    else:
        _check_folder(path)
        url = url.set(database=str(path))
    connect_args = {"timeout": 60, "check_same_thread": False}
    engine = sa.create_engine(url, connect_args=connect_args, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("meguri_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_engine(url: str | sa.URL) -> sa.Engine:
    """An engine for ``url`` with meguri's settings; no schema work happens here."""
    parsed = normalise_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=4,
        max_overflow=8,
        connect_args={"connect_timeout": 10},
    )


class Database:
    """An engine plus the two ways in: :meth:`read` (never blocks writers) and :meth:`write`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # On SQLite a plain connection runs each statement in autocommit mode (see _on_begin).
        self._reader = engine
        self._writer = engine.execution_options(meguri_write=True)

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with translate_errors(self.engine), self._reader.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One atomic transaction: committed on success, rolled back on any error."""
        with translate_errors(self.engine), self._writer.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


#: Errors that are the caller's business (constraint violations, bugs in SQL), not the store's.
_PASS_THROUGH = (
    sa.exc.IntegrityError,
    sa.exc.ProgrammingError,
    sa.exc.DataError,
    sa.exc.NotSupportedError,
)


@contextmanager
def translate_errors(engine: sa.Engine) -> Iterator[None]:
    """Turn driver-level failures (unreachable server, locked or foreign file) into a one-line
    :class:`MetadataStoreError` that names the store and the fix."""
    try:
        yield
    except sa.exc.DatabaseError as err:
        if isinstance(err, _PASS_THROUGH):
            raise
        raise store_error(engine, err.orig) from err


def store_error(engine: sa.Engine, cause: object) -> MetadataStoreError:
    """The one-line error for a store that failed with ``cause``."""
    where = engine.url.set(drivername=engine.dialect.name).render_as_string(hide_password=True)
    reason = " ".join(str(cause).split())
    reason += "" if reason.endswith((".", "?", "!")) else "."
    if engine.dialect.name == "sqlite":
        fix = (
            "Check that the file is a meguri store and that you may write to it and its folder, "
            "or set MEGURI_STORE_URL to another location."
        )
    else:
        fix = (
            "Check that the server is running and reachable and that the URL (MEGURI_STORE_URL) "
            "names the right host, port, user, password and database."
        )
    return MetadataStoreError(f"The metadata store {where} failed: {reason} {fix}")
