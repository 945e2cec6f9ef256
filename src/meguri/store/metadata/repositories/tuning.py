"""The tuning journal: Optuna's journal of each project's studies, kept as numbered logs.

Optuna's ``JournalStorage`` keeps every study (trials, params, intermediate values, states) as
an append-only list of small JSON logs and rebuilds the studies by replaying them. This
repository stores that list per project in the ``optuna_journal`` table, so that tuning works
on SQLite, PostgreSQL and, through the platform server, over HTTP (two methods, each one call).

Contract (the one ``JournalStorage`` relies on):

* ``append_logs(project_id, logs)`` stores the logs, in order, as the next ``seq`` numbers of
  the project: 0, 1, 2, ... without gaps or duplicates, however many processes append at once.
  Appenders of one project are serialised: ``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL the
  project's row is locked ``FOR NO KEY UPDATE`` (which, unlike ``FOR UPDATE``, does not block
  inserts elsewhere that merely reference the project). One call is one transaction: its logs
  are all stored or none.
* Because appenders commit in ``seq`` order, a reader always sees a prefix of the journal, so
  ``read_logs(project_id, n)`` returns exactly the logs numbered ``n, n+1, ...`` that exist,
  in order.
* Logs are stored with the standard library's JSON, as optuna's file backend does: it keeps
  ``inf`` and ``nan`` (which optuna allows as trial and intermediate values), where a strict
  encoder would write ``null`` or fail.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from meguri.errors import DataError, NotFoundError
from meguri.store.metadata._engine import Database
from meguri.store.metadata._schema import optuna_journal, projects

__all__ = ["TuningJournalRepository"]

_J = optuna_journal.c


class TuningJournalRepository:
    """The optuna journal of every project (see the module docstring for the contract)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def read_logs(self, project_id: str, log_number_from: int = 0) -> list[dict[str, Any]]:
        """The logs of ``project_id`` numbered ``log_number_from`` and after, in order (none
        for a project that has no journal yet)."""
        query = (
            sa.select(_J.log_json)
            .where(_J.project_id == project_id, _J.seq >= log_number_from)
            .order_by(_J.seq)
        )
        with self._db.read() as conn:
            rows = conn.execute(query).scalars().all()
        return [json.loads(text) for text in rows]

    def append_logs(self, project_id: str, logs: list[dict[str, Any]]) -> None:
        """Store ``logs`` as the next numbers of the journal of ``project_id``, in one
        transaction; NotFoundError for a project that does not exist."""
        if not logs:
            return
        texts = [_dumps(i, log) for i, log in enumerate(logs)]  # checked before the lock
        with self._db.write() as conn:
            self._lock(conn, project_id)
            start = _next_seq(conn, project_id)
            rows = [
                {"project_id": project_id, "seq": start + i, "log_json": text}
                for i, text in enumerate(texts)
            ]
            conn.execute(optuna_journal.insert(), rows)

    def _lock(self, conn: sa.Connection, project_id: str) -> None:
        """Serialise the appenders of the project (and check that it exists)."""
        query = sa.select(projects.c.id).where(projects.c.id == project_id)
        if not self._db.is_sqlite:  # on SQLite, BEGIN IMMEDIATE already holds the write lock
            query = query.with_for_update(key_share=True)
        if conn.execute(query).first() is None:
            raise NotFoundError(
                f"No project with id {project_id!r} for a tuning journal; open the workspace "
                "(meguri.init()) so that the project exists before tuning in it"
            )


def _next_seq(conn: sa.Connection, project_id: str) -> int:
    query = sa.select(sa.func.max(_J.seq)).where(_J.project_id == project_id)
    last = conn.execute(query).scalar_one()
    return 0 if last is None else int(last) + 1


def _dumps(index: int, log: dict[str, Any]) -> str:
    """The log as JSON (the standard library's: ``NaN``, ``Infinity`` kept, see above)."""
    try:
        return json.dumps(log, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise DataError(
            f"tuning.append_logs: logs[{index}] is not JSON ({err}); pass dicts of strings, "
            "numbers, booleans, None, lists and dicts, as optuna's journal writes"
        ) from None
