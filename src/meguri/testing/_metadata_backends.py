"""pytest fixtures of the metadata store, parametrized per backend: ``[sqlite]``, ``[postgres]``.

PostgreSQL comes from ``MEGURI_TEST_POSTGRES_URL``, the URL of a server where the user may
``CREATE DATABASE`` (``.ci/run`` starts a throwaway one). Each test gets a brand-new database,
dropped afterwards. Without the variable the PostgreSQL cases are skipped, except when ``CI`` is
set: then they fail, so that CI can never pass by silently skipping a backend.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from meguri.store.metadata import MetadataStore, open_metadata_store
from meguri.store.metadata._engine import normalise_url

__all__ = ["fresh_postgres_database", "metadata_store", "metadata_url", "postgres_url"]

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


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a brand-new, empty metadata store (nothing created in it yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'meguri.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def metadata_store(metadata_url: str) -> Iterator[MetadataStore]:
    """An opened (migrated) store at :func:`metadata_url`, closed after the test."""
    store = open_metadata_store(metadata_url)
    try:
        yield store
    finally:
        store.close()
