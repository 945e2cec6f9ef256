"""Optuna's journal storage over the metadata store: studies and trials live in our database.

:class:`MetadataJournalBackend` implements ``optuna.storages.journal.BaseJournalBackend``; wrap
it in ``optuna.storages.JournalStorage`` and every study of the project (its trials, params,
intermediate values, states) is kept in the ``optuna_journal`` table, on SQLite and PostgreSQL.

Contract (the one ``JournalStorage`` relies on):

* ``append_logs(logs)`` stores the logs, in order, as the next ``seq`` numbers of the project:
  0, 1, 2, ... without gaps or duplicates, however many processes append at once. Appenders of
  one project are serialised: ``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL the project's row is
  locked ``FOR NO KEY UPDATE`` (which, unlike ``FOR UPDATE``, does not block inserts elsewhere
  that merely reference the project).
* The backend pickles as the store's URL and the project (``JournalStorage`` may be pickled to
  reach other processes); the copy opens its own connections.
* Because appenders commit in ``seq`` order, a reader always sees a prefix of the journal, so
  ``read_logs(n)`` returns exactly the logs numbered ``n, n+1, ...`` that exist, in order.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from meguri.store.metadata._engine import Database, create_engine
from meguri.store.metadata._schema import optuna_journal, projects

__all__ = ["MetadataJournalBackend", "journal_storage"]

_J = optuna_journal.c


class MetadataJournalBackend(BaseJournalBackend):
    """The optuna journal of project ``project_id`` in the metadata database ``db``."""

    def __init__(self, db: Database, project_id: str) -> None:
        self._db = db
        self._project_id = project_id

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        """The logs numbered ``log_number_from`` and after, in order."""
        query = (
            sa.select(_J.log_json)
            .where(_J.project_id == self._project_id, _J.seq >= log_number_from)
            .order_by(_J.seq)
        )
        with self._db.read() as conn:
            rows = conn.execute(query).scalars().all()
        return [json.loads(text) for text in rows]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Store ``logs`` as the next numbers of the journal, in one transaction."""
        if not logs:
            return
        with self._db.write() as conn:
            self._lock(conn)
            start = self._next_seq(conn)
            rows = [
                {"project_id": self._project_id, "seq": start + i, "log_json": _dumps(log)}
                for i, log in enumerate(logs)
            ]
            conn.execute(optuna_journal.insert(), rows)

    def _lock(self, conn: sa.Connection) -> None:
        if self._db.is_sqlite:
            return  # BEGIN IMMEDIATE (Database.write) already holds the database's write lock
        lock = (
            sa.select(projects.c.id)
            .where(projects.c.id == self._project_id)
            .with_for_update(key_share=True)
        )
        conn.execute(lock)

    def _next_seq(self, conn: sa.Connection) -> int:
        query = sa.select(sa.func.max(_J.seq)).where(_J.project_id == self._project_id)
        last = conn.execute(query).scalar_one()
        return 0 if last is None else int(last) + 1

    def __getstate__(self) -> dict[str, str]:
        """Pickled as the store's URL: a copy in another process opens its own connections."""
        url = self._db.engine.url.render_as_string(hide_password=False)
        return {"url": url, "project_id": self._project_id}

    def __setstate__(self, state: dict[str, str]) -> None:
        self._db = Database(create_engine(state["url"]))
        self._project_id = state["project_id"]
        weakref.finalize(self, self._db.dispose)  # this copy owns its connections

    def __repr__(self) -> str:
        return f"{type(self).__name__}(project_id={self._project_id!r})"


def _dumps(log: dict[str, Any]) -> str:
    # The standard library's JSON, as optuna's file backend: it keeps inf and nan (which
    # optuna allows as trial and intermediate values), where orjson would write null.
    return json.dumps(log, separators=(",", ":"))


def journal_storage(db: Database, project_id: str) -> JournalStorage:
    """An optuna storage keeping the studies of ``project_id`` in the metadata store."""
    return JournalStorage(MetadataJournalBackend(db, project_id))
