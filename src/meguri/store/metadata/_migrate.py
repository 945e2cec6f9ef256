"""Bring a metadata store's schema to the current revision, once, under a lock.

Opening a store at the current revision costs one query and takes no lock. Otherwise the
upgrade runs under a lock that every process opening the same store agrees on:

* SQLite: ``fcntl.flock`` on ``<db>.migrate.lock`` next to the database file. The first
  connection to a new file (which switches it to WAL) and the ``CREATE`` statements happen
  only under that lock, and the upgrade itself is one ``BEGIN IMMEDIATE`` transaction.
* PostgreSQL: ``pg_advisory_xact_lock`` inside the upgrade's transaction (DDL is
  transactional there too), released when it commits.

After acquiring the lock the revision is read again, so of N processes opening a new store at
once exactly one creates the schema and the others find it done. A database whose revision this
code does not know was written by a newer meguri: we refuse it, naming the fix, rather than
guess (as optuna's storage does).

Alembic is imported only when an upgrade is due, so opening an up-to-date store stays cheap.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from meguri.errors import ConfigError, MetadataStoreError
from meguri.store.metadata._engine import sqlite_path, store_error, translate_errors

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD_REVISION", "LOCK_KEY", "current_revision", "lock_path", "migrate"]

#: The newest revision under ``migrations/versions`` (a test checks the two agree).
HEAD_REVISION = "0009"
#: The PostgreSQL advisory lock key of migrations (any fixed 64-bit number; this spells "meguri").
LOCK_KEY = int.from_bytes(b"meguri\x00\x01", "big")

_MIGRATIONS = Path(__file__).with_name("migrations")
# Alembic's ``context`` and ``op`` are module-global proxies: one upgrade per process at a time.
_ALEMBIC = threading.Lock()


def migrate(engine: sa.Engine) -> bool:
    """Upgrade the store behind ``engine`` to :data:`HEAD_REVISION`; True when this call did.

    Safe to call from many processes at once. Raises :class:`MetadataStoreError` when the
    store is unreachable or was written by a newer meguri.
    """
    with translate_errors(engine):
        if _looks_current(engine):
            return False
        try:
            with _migration_lock(engine), _transaction(engine) as conn:
                return _upgrade(conn)
        finally:
            if not _in_memory(engine):  # disposing would drop an in-memory database
                engine.dispose()  # no pooled connection keeps state from before the upgrade


def current_revision(conn: sa.Connection) -> str | None:
    """The revision recorded in the store, or None for an empty store."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return _read_revision(conn)


def lock_path(database: Path) -> Path:
    """The lock file that serialises migrations of the SQLite file ``database``."""
    return database.with_name(database.name + ".migrate.lock")


def _read_revision(conn: sa.Connection) -> str | None:
    revisions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(revisions) > 1:
        raise MetadataStoreError(
            f"The metadata store records several schema revisions ({', '.join(revisions)}); "
            "meguri keeps one. Restore the store from a backup."
        )
    return revisions[0] if revisions else None


def _in_memory(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite" and sqlite_path(engine.url) is None


def _looks_current(engine: sa.Engine) -> bool:
    """One query: is the store at the head revision? False when the table is missing. A new or
    empty SQLite file is not even opened here: its first connection belongs under the lock."""
    path = sqlite_path(engine.url) if engine.dialect.name == "sqlite" else None
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        return False
    with engine.connect() as conn:
        try:
            return _read_revision(conn) == HEAD_REVISION
        except (sa.exc.ProgrammingError, sa.exc.OperationalError):
            conn.rollback()  # PostgreSQL aborted the transaction
            if not sa.inspect(conn).has_table("alembic_version"):
                return False
        # The table exists: another process created it between the two queries, or reading it
        # is refused (e.g. no permission). Read it once more; a second failure is the store's.
        try:
            return _read_revision(conn) == HEAD_REVISION
        except (sa.exc.ProgrammingError, sa.exc.OperationalError) as err:
            raise store_error(engine, err.orig) from err


@contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[None]:
    path = sqlite_path(engine.url) if engine.dialect.name == "sqlite" else None
    if path is None:  # PostgreSQL locks inside the transaction; in-memory SQLite is private
        yield
        return
    with _file_lock(lock_path(path)):
        yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise ConfigError(
            f"Cannot create the migration lock {path}: {err.strerror}. Make the folder writable "
            "or set MEGURI_STORE_URL to a writable location."
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file stays (deleting it would race)


@contextmanager
def _transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction for the whole upgrade: BEGIN IMMEDIATE on SQLite (see ``_engine``),
    holding the advisory lock on PostgreSQL."""
    with engine.execution_options(meguri_write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY)))
        yield conn


def _upgrade(conn: sa.Connection) -> bool:
    current = current_revision(conn)  # read again: another process may have done it meanwhile
    if current == HEAD_REVISION:
        return False
    if current is not None and current not in _known_revisions():
        raise _newer_store_error(conn, current)
    from alembic import command

    config = _alembic_config()
    config.attributes["connection"] = conn
    with _ALEMBIC:
        command.upgrade(config, "head")
    return True


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


@cache
def _known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(_MIGRATIONS))
    return frozenset(script.revision for script in scripts.walk_revisions())


def _newer_store_error(conn: sa.Connection, revision: str) -> MetadataStoreError:
    try:
        ours = version("meguri")
    except PackageNotFoundError:  # running from a source tree
        ours = "(source)"
    url = conn.engine.url
    where = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)
    return MetadataStoreError(
        f"The metadata store {where} has schema revision {revision!r}, which meguri "
        f"{ours} does not know: a newer meguri wrote it. Upgrade meguri "
        "(pip install -U meguri) or set MEGURI_STORE_URL to another store."
    )
