"""The audit log: every change to the store, append-only and hash-chained.

Each repository records its changes with :func:`record` inside the write transaction that
makes them, so a change is never stored without its event nor an event without its change.

The chain. Event ``n`` (``seq`` 1, 2, ... without gaps) stores ``prev_hash``, the hash of event
``n - 1`` (64 zeros for the first), and ``hash = sha256(prev_hash + canonical)`` where
``canonical`` is the JSON of its other fields (``seq``, ``id``, ``time``, ``actor``,
``action``, ``project_id``, ``subject_kind``, ``subject_id``, ``detail``) with sorted keys, no
spaces, UTF-8 (:func:`event_hash`). The single ``audit_head`` row holds the last ``seq`` and
hash. Editing an event breaks its hash, deleting one leaves a gap in ``seq`` (or, at the end,
a head that points past the last event), inserting one breaks the next ``prev_hash``:
:meth:`AuditRepository.verify` names the first such event. Someone able to rewrite the whole
database can recompute the whole chain; keep the head hash that ``verify`` reports (or an
export) elsewhere to detect that too.

Serialising appends. :func:`record` locks the head row (``SELECT ... FOR UPDATE`` on
PostgreSQL; on SQLite every write transaction already holds the database's write lock), so
concurrent writers queue and the chain never forks. ``record`` must be the last statement of
its transaction: the head lock is then held only until the commit, and a transaction that
holds it never waits for another lock, so no two transactions can deadlock over it.

Not recorded: metric points and heartbeats (a run's params, tags, inputs, artifacts, creation
and end are), the optuna journal of a tuning study, and a token's last-use time.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa

from meguri.errors import DataError, MetadataStoreError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import AuditEvent, AuditVerification, NewAuditEvent
from meguri.store.metadata._schema import audit_events, audit_head

__all__ = [
    "GENESIS",
    "SYSTEM",
    "AuditRepository",
    "NewAuditEvent",
    "canonical_json",
    "event_hash",
    "record",
]

#: The ``prev_hash`` of the first event.
GENESIS = "0" * 64
#: The actor of changes made by meguri itself (the stale-run sweep) or by a caller that named
#: no actor.
SYSTEM = "system"

_E = audit_events.c
_PAGE = 1000
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def canonical_json(value: object) -> str:
    """The one JSON text of ``value`` that hashes are computed over: sorted keys, no spaces,
    non-ASCII kept as is (hashed as UTF-8), floats in Python's shortest round-trip form."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """sha256 of ``prev_hash`` followed by the canonical JSON of an event's ``fields`` (every
    field but ``prev_hash`` and ``hash``)."""
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode("utf-8")).hexdigest()


def _plain(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` as plain JSON values (tuples as lists, enums as their values, NaN as null,
    anything else as its text), so that the stored text reads back to the hashed value."""
    loaded = orjson.loads(orjson.dumps(dict(detail), default=str, option=_JSON_OPTIONS))
    return dict(loaded)


def _fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "id": event.id,
        "time": event.time,
        "actor": event.actor,
        "action": event.action,
        "project_id": event.project_id,
        "subject_kind": event.subject_kind,
        "subject_id": event.subject_id,
        "detail": event.detail,
    }


def _sealed(seq: int, now: float, new: NewAuditEvent, prev_hash: str) -> AuditEvent:
    event = AuditEvent(
        seq=seq,
        id=new_id("aud"),
        time=now,
        actor=new.actor or SYSTEM,
        action=new.action,
        project_id=new.project_id,
        subject_kind=new.subject_kind,
        subject_id=str(new.subject_id),
        detail=_plain(new.detail),
        prev_hash=prev_hash,
        hash="",
    )
    return _with_hash(event)


def _with_hash(event: AuditEvent) -> AuditEvent:
    fields = _fields(event)
    return AuditEvent(**fields, prev_hash=event.prev_hash, hash=event_hash(event.prev_hash, fields))


def _row(event: AuditEvent) -> dict[str, Any]:
    row = _fields(event)
    row["detail_json"] = canonical_json(row.pop("detail"))
    return {**row, "prev_hash": event.prev_hash, "hash": event.hash}


def _event(row: sa.Row[Any]) -> AuditEvent:
    m = dict(row._mapping)
    m["detail"] = json.loads(m.pop("detail_json"))
    return AuditEvent(**m)


def record(conn: sa.Connection, events: Sequence[NewAuditEvent]) -> builtins.list[AuditEvent]:
    """Append ``events`` to the log inside the caller's write transaction (as its last
    statement, see the module docstring); the sealed events, in order."""
    if not events:
        return []
    head = conn.execute(
        sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).one_or_none()
    if head is None:
        raise MetadataStoreError(
            "The audit log's head row (audit_head, id 1) is missing, so no change can be "
            "recorded. Restore the store from a backup; `meguri audit verify` checks the log."
        )
    seq, prev = int(head.seq), str(head.hash)
    now = time.time()
    sealed = []
    for new in events:
        seq += 1
        event = _sealed(seq, now, new, prev)
        sealed.append(event)
        prev = event.hash
    conn.execute(audit_events.insert(), [_row(e) for e in sealed])
    conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=prev))
    return sealed


class _Walk:
    """The state of a chain walk: the next expected ``seq`` and the hash it must follow."""

    def __init__(self) -> None:
        self.checked = 0
        self.prev = GENESIS

    def problem(self, event: AuditEvent) -> tuple[int, str] | None:
        expected = self.checked + 1
        if event.seq != expected:
            return expected, (
                f"event {expected} is missing (deleted): the chain goes from event "
                f"{expected - 1} to event {event.seq}"
            )
        if event.prev_hash != self.prev:
            return event.seq, (
                f"event {event.seq} does not follow event {event.seq - 1}: its prev_hash is "
                "not that event's hash (an event was inserted, or one was replaced)"
            )
        if event_hash(event.prev_hash, _fields(event)) != event.hash:
            return event.seq, (
                f"event {event.seq} ({event.action} by {event.actor}) was edited: its content "
                "no longer matches its hash"
            )
        self.checked += 1
        self.prev = event.hash
        return None

    def tail_problem(self, head_seq: int, head_hash: str) -> tuple[int, str] | None:
        last = self.checked
        if head_seq > last:
            return last + 1, (
                f"events {last + 1} to {head_seq} are missing (deleted from the end): the "
                f"log's head records {head_seq} events"
            )
        if head_seq < last:
            return head_seq + 1, (
                f"event {head_seq + 1} is past the log's recorded head ({head_seq}): it was "
                "inserted"
            )
        if head_hash != self.prev:
            return last, (
                f"the log's head records another hash for event {last} than the event has: "
                "the head or the event was rewritten"
            )
        return None


class AuditRepository:
    """Read, append to and verify the audit log (``ws.metadata.audit``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- writing ---------------------------------------------------------------------------

    def append(self, event: NewAuditEvent) -> AuditEvent:
        """Append one event in its own transaction (for changes made outside the store, such
        as a sign-in); repositories use :meth:`record` inside their own transaction."""
        with self._db.write() as conn:
            return record(conn, [event])[0]

    @staticmethod
    def record(conn: sa.Connection, events: Sequence[NewAuditEvent]) -> builtins.list[AuditEvent]:
        """The in-transaction variant: see :func:`record`."""
        return record(conn, events)

    # -- reading ---------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """The last ``seq`` and hash of the chain (0 and :data:`GENESIS` when empty)."""
        with self._db.read() as conn:
            row = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)).first()
        return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))

    def events(
        self,
        *,
        project_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        after_seq: int | None = None,
        newest_first: bool = False,
    ) -> builtins.list[AuditEvent]:
        """Events in ``seq`` order (``newest_first``: reversed), narrowed to a project, to
        events at or after time ``since`` and to ``seq`` above ``after_seq``; at most
        ``limit`` of them (the first ones in the chosen order)."""
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise DataError(f"The limit is {limit!r}; give a whole number, 0 or more, or None")
        query = _filtered(sa.select(audit_events), project_id, since, after_seq)
        query = query.order_by(_E.seq.desc() if newest_first else _E.seq).limit(limit)
        with self._db.read() as conn:
            return [_event(r) for r in conn.execute(query)]

    def iter_events(
        self, *, project_id: str | None = None, since: float | None = None
    ) -> Iterator[AuditEvent]:
        """Every matching event in ``seq`` order, read page by page from one consistent
        snapshot (for exports of any size: never all in memory)."""
        with _snapshot(self._db) as conn:
            yield from _pages(conn, _filtered(sa.select(audit_events), project_id, since, None))

    def verify(self) -> AuditVerification:
        """Walk the whole chain (one consistent snapshot) and report the first event that was
        edited, inserted or deleted, if any."""
        with _snapshot(self._db) as conn:
            row = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)).first()
            head = None if row is None else (int(row.seq), str(row.hash))
            walk = _Walk()
            for event in _pages(conn, sa.select(audit_events)):
                bad = walk.problem(event)
                if bad is not None:
                    return _broken(walk, bad, head)
        if head is None:
            return _broken(walk, (walk.checked + 1, "the log's head row is missing"), None)
        bad = walk.tail_problem(*head)
        if bad is not None:
            return _broken(walk, bad, head)
        return AuditVerification(True, walk.checked, None, None, *head)


def _broken(walk: _Walk, bad: tuple[int, str], head: tuple[int, str] | None) -> AuditVerification:
    seq, hash_ = (0, None) if head is None else head
    return AuditVerification(False, walk.checked, bad[0], bad[1], seq, hash_)


def _filtered(
    query: sa.Select[Any], project_id: str | None, since: float | None, after: int | None
) -> sa.Select[Any]:
    if project_id is not None:
        query = query.where(_E.project_id == project_id)
    if since is not None:
        query = query.where(_E.time >= since)
    if after is not None:
        query = query.where(_E.seq > after)
    return query


def _pages(conn: sa.Connection, query: sa.Select[Any]) -> Iterator[AuditEvent]:
    """The rows of ``query`` in ``seq`` order, :data:`_PAGE` at a time (keyset paging)."""
    after = 0
    while True:
        rows = conn.execute(query.where(_E.seq > after).order_by(_E.seq).limit(_PAGE)).all()
        for row in rows:
            yield _event(row)
        if len(rows) < _PAGE:
            return
        after = int(rows[-1].seq)


@contextmanager
def _snapshot(db: Database) -> Iterator[sa.Connection]:
    """A read connection that sees one state of the database throughout: a deferred
    transaction on SQLite (a WAL snapshot, never blocking writers), REPEATABLE READ on
    PostgreSQL. Rolled back on exit: it writes nothing."""
    with db.read() as conn:
        if db.is_sqlite:
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.exec_driver_sql("ROLLBACK")
            return
        conn.execution_options(isolation_level="REPEATABLE READ")
        yield conn
