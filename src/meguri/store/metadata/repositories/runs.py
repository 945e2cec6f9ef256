"""Experiments and runs: params, tags, metric history, inputs and artifact references.

Metric points are written in batches (one ``executemany`` per flush); ``latest_metrics`` keeps
the last point of each key (highest step, then newest time) so that searching and ordering runs
by a metric is one indexed join, however long the histories are.

The audit log records a run's creation and end, each batch that sets params or tags (one event
per call), its inputs and artifacts, attributed to the run's owner; metric points and
heartbeats are not audited, so the hot path of tracking writes no event and takes no lock.
Renaming, deleting, restoring and untagging a run or an experiment are attributed to whoever
did it (``by``).

Deleting hides instead of erasing (``deleted_at``, see ``_schema``): a deleted run keeps its
records and its audit trail, searches and counts leave it out unless asked for another
:data:`~meguri.store.metadata._search.RunView`, and restoring brings it back as it was.
Deleting an experiment deletes its active runs at the same instant; restoring it restores
exactly those.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from meguri.errors import ConflictError, NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import (
    ArtifactRef,
    NewAuditEvent,
    Run,
    RunStatus,
)
from meguri.store.metadata._run_rows import RunLoader
from meguri.store.metadata._schema import (
    experiments,
    latest_metrics,
    run_artifacts,
    run_inputs,
    run_params,
    run_tags,
    runs,
)
from meguri.store.metadata._search import (
    RunView,
    lifecycle_condition,
    ordered_id_queries,
    parse_filter,
    parse_order,
)
from meguri.store.metadata.repositories._experiments import ExperimentStore, check_name
from meguri.store.metadata.repositories.audit import SYSTEM, record

#: One metric point as buffered by the tracking SDK: (key, value, step, timestamp).
PointTuple = tuple[str, float, int, float]


@dataclass(frozen=True, slots=True)
class MetricHistory:
    """All points of one metric of one run, ordered by step then time (columnar)."""

    key: str
    steps: np.ndarray[Any, np.dtype[np.int64]]
    values: np.ndarray[Any, np.dtype[np.float64]]
    timestamps: np.ndarray[Any, np.dtype[np.float64]]

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True, slots=True)
class RunResources:
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None


def _nan_to_null(value: float) -> float | None:
    return None if math.isnan(value) else value


def _null_to_nan(value: float | None) -> float:
    return math.nan if value is None else value


class RunRepository(ExperimentStore):
    """Experiments (see :class:`ExperimentStore`) and their runs."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._loader = RunLoader(db.is_sqlite)
        mark = "?" if db.is_sqlite else "%s"
        self._insert_metrics_sql = (
            "INSERT INTO metrics (run_id, key, step, timestamp, value) "
            f"VALUES ({', '.join([mark] * 5)})"
        )
        self._history_sql = (
            f"SELECT step, value, timestamp FROM metrics WHERE run_id = {mark} AND key = {mark} "
            "ORDER BY step, timestamp"
        )

    # -- run lifecycle -----------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        *,
        created_by: str,
        name: str | None = None,
        parent_run_id: str | None = None,
        spec_version_id: str | None = None,
        code_version: str | None = None,
        host: str | None = None,
        pid: int | None = None,
    ) -> Run:
        now = time.time()
        run_id = new_id("run")
        row = {
            "id": run_id,
            "experiment_id": experiment_id,
            "parent_run_id": parent_run_id,
            "name": name or run_id,
            "status": RunStatus.RUNNING.value,
            "created_at": now,
            "created_by": created_by,
            "heartbeat_at": now,
            "spec_version_id": spec_version_id,
            "code_version": code_version,
            "host": host,
            "pid": pid,
        }
        detail = {"name": row["name"], "experiment_id": experiment_id, "parent": parent_run_id}
        with self._db.write() as conn:
            conn.execute(runs.insert(), row)
            owner = _owner(conn, run_id)
            if owner is not None:
                record(conn, [owner.event("run.created", detail)])
        return self.get_run(run_id)

    def end_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        reason: str | None = None,
        resources: RunResources | None = None,
    ) -> None:
        res = resources or RunResources()
        values = {
            "status": status.value,
            "ended_at": time.time(),
            "status_reason": reason,
            "wall_seconds": res.wall_seconds,
            "cpu_seconds": res.cpu_seconds,
            "peak_memory_bytes": res.peak_memory_bytes,
        }
        with self._db.write() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(**values))
            owner = _owner(conn, run_id)
            if owner is not None:
                record(conn, [owner.event("run.ended", {"status": status.value, "reason": reason})])

    def rename_run(self, run_id: str, name: str, *, by: str) -> None:
        """Give the run another display name (its id stays)."""
        check_name("run", name)
        with self._db.write() as conn:
            owner = _known_owner(conn, run_id)
            old = conn.execute(sa.select(runs.c.name).where(runs.c.id == run_id)).scalar_one()
            if old == name:
                return
            conn.execute(runs.update().where(runs.c.id == run_id).values(name=name))
            record(conn, [owner.event("run.renamed", {"from": old, "to": name}, actor=by)])

    def delete_run(self, run_id: str, *, by: str) -> bool:
        """Hide the run from searches and counts, keeping its records; True when it was
        active (deleting a deleted run changes nothing)."""
        return self._set_deleted(run_id, time.time(), by)

    def restore_run(self, run_id: str, *, by: str) -> bool:
        """Bring a deleted run back, as it was; True when it was deleted."""
        return self._set_deleted(run_id, None, by)

    def _set_deleted(self, run_id: str, stamp: float | None, by: str) -> bool:
        r = runs.c
        state = r.deleted_at.is_(None) if stamp is not None else r.deleted_at.is_not(None)
        with self._db.write() as conn:
            owner = _known_owner(conn, run_id)
            changed = conn.execute(
                runs.update().where(r.id == run_id, state).values(deleted_at=stamp)
            ).rowcount
            if changed:
                action = "run.deleted" if stamp is not None else "run.restored"
                record(conn, [owner.event(action, {}, actor=by)])
        return bool(changed)

    def delete_tag(self, run_id: str, key: str, *, by: str) -> bool:
        """Remove tag ``key`` of the run; True when it was set."""
        t = run_tags.c
        with self._db.write() as conn:
            owner = _known_owner(conn, run_id)
            gone = conn.execute(run_tags.delete().where(t.run_id == run_id, t.key == key))
            if gone.rowcount:
                record(conn, [owner.event("run.tag_deleted", {"key": key}, actor=by)])
        return bool(gone.rowcount)

    def heartbeat(self, run_ids: Sequence[str], peak_memory_bytes: int | None = None) -> None:
        if not run_ids:
            return
        values: dict[str, Any] = {"heartbeat_at": time.time()}
        if peak_memory_bytes is not None:
            values["peak_memory_bytes"] = peak_memory_bytes
        query = runs.update().where(
            runs.c.id.in_(list(run_ids)), runs.c.status == RunStatus.RUNNING.value
        )
        with self._db.write() as conn:
            conn.execute(query.values(**values))

    def fail_stale_runs(self, timeout_seconds: float) -> int:
        """Mark running runs whose heartbeat stopped ``timeout_seconds`` ago as failed."""
        cutoff = time.time() - timeout_seconds
        stale = sa.and_(runs.c.status == RunStatus.RUNNING.value, runs.c.heartbeat_at < cutoff)
        reason = (
            f"no heartbeat for over {timeout_seconds:g} s: the process was killed or lost "
            "(e.g. SIGKILL, out of memory, machine restart)"
        )
        with self._db.read() as conn:
            if conn.execute(sa.select(runs.c.id).where(stale).limit(1)).first() is None:
                return 0
        with self._db.write() as conn:
            owners = _owners(conn, stale, lock=True)  # PostgreSQL re-checks stale once locked
            ids = [o.run_id for o in owners]
            if not ids:
                return 0
            conn.execute(
                runs.update()
                .where(runs.c.id.in_(ids))
                .values(
                    status=RunStatus.FAILED.value,
                    ended_at=runs.c.heartbeat_at,
                    status_reason=reason,
                )
            )
            detail = {"status": RunStatus.FAILED.value, "reason": reason}
            record(conn, [o.event("run.ended", detail, actor=SYSTEM) for o in owners])
        return len(ids)

    # -- logging -----------------------------------------------------------------------------

    def log_batch(
        self,
        run_id: str,
        points: Sequence[PointTuple] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Write metric points, params and tags of one run in one transaction (with one audit
        event when params or tags change; metric points alone are not audited)."""
        with self._db.write() as conn:
            added = self._write_params(conn, run_id, params) if params else {}
            if tags:
                self._upsert(
                    conn,
                    run_tags,
                    [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
                    ("value",),
                )
            if points:
                self._write_points(conn, run_id, points)
            if added or tags:
                owner = _owner(conn, run_id)
                if owner is not None:
                    detail = {"params": added, "tags": dict(tags or {})}
                    record(conn, [owner.event("run.logged", detail)])

    def _write_points(self, conn: sa.Connection, run_id: str, points: Sequence[PointTuple]) -> None:
        # The hot path: one driver-level executemany of plain tuples, no per-row SQL objects.
        rows = [(run_id, k, s, t, None if v != v else v) for k, v, s, t in points]
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(self._insert_metrics_sql, rows)
        finally:
            cursor.close()
        latest: dict[str, PointTuple] = {}
        for point in points:  # the last point of each key: highest (step, timestamp)
            best = latest.get(point[0])
            if best is None or point[2:] >= best[2:]:
                latest[point[0]] = point
        self._upsert_latest(conn, _metric_rows(run_id, list(latest.values())))

    def _upsert_latest(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        stmt = self._insert_for(latest_metrics)
        newer = sa.or_(
            stmt.excluded.step > latest_metrics.c.step,
            sa.and_(
                stmt.excluded.step == latest_metrics.c.step,
                stmt.excluded.timestamp >= latest_metrics.c.timestamp,
            ),
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "key"],
            set_={c: stmt.excluded[c] for c in ("step", "timestamp", "value")},
            where=newer,
        )
        conn.execute(stmt, rows)

    def _write_params(
        self, conn: sa.Connection, run_id: str, params: Mapping[str, str]
    ) -> dict[str, str]:
        """Insert the params not yet set (an equal value is fine, another one is refused);
        the ones inserted."""
        query = sa.select(run_params.c.key, run_params.c.value).where(
            run_params.c.run_id == run_id, run_params.c.key.in_(list(params))
        )
        existing = dict(conn.execute(query).all())
        changed = {
            k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v
        }
        if changed:
            key, (old, new) = next(iter(changed.items()))
            raise ConflictError(
                f"Param {key!r} of run {run_id} is already {old!r}; cannot change it to {new!r}. "
                "Params are immutable: log the new value under another key, or start a new run."
            )
        added = {k: v for k, v in params.items() if k not in existing}
        if added:
            conn.execute(
                run_params.insert(),
                [{"run_id": run_id, "key": k, "value": v} for k, v in added.items()],
            )
        return added

    def add_inputs(self, run_id: str, kind: str, refs: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(refs))
        if not wanted:
            return
        i = run_inputs.c
        stmt = self._insert_for(run_inputs).on_conflict_do_nothing()
        with self._db.write() as conn:
            known = conn.execute(
                sa.select(i.ref).where(i.run_id == run_id, i.kind == kind, i.ref.in_(wanted))
            )
            new = [ref for ref in wanted if ref not in set(known.scalars())]
            if not new:
                return
            conn.execute(stmt, [{"run_id": run_id, "kind": kind, "ref": ref} for ref in new])
            owner = _owner(conn, run_id)
            if owner is not None:
                record(conn, [owner.event("run.inputs_added", {"kind": kind, "refs": new})])

    def add_artifact(self, run_id: str, artifact: ArtifactRef) -> None:
        row = {"run_id": run_id, **{f: getattr(artifact, f) for f in ArtifactRef.__slots__}}
        with self._db.write() as conn:
            self._upsert(conn, run_artifacts, [row], ("digest", "size", "media_type", "created_at"))
            owner = _owner(conn, run_id)
            if owner is not None:
                detail = {"name": artifact.name, "digest": artifact.digest, "size": artifact.size}
                record(conn, [owner.event("run.artifact_logged", detail)])

    def list_artifacts(self, run_id: str) -> list[ArtifactRef]:
        query = sa.select(run_artifacts).where(run_artifacts.c.run_id == run_id)
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(run_artifacts.c.name)).all()
        return [ArtifactRef(**{k: v for k, v in r._mapping.items() if k != "run_id"}) for r in rows]

    # -- reading -----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        found = self._load([run_id])
        if not found:
            raise NotFoundError(f"No run {run_id!r}. List runs with `meguri runs list`.")
        return found[0]

    def resolve_run_id(self, prefix: str) -> str:
        """The one run whose ID (or name) starts with ``prefix``."""
        query = sa.select(runs.c.id).where(
            sa.or_(runs.c.id.startswith(prefix, autoescape=True), runs.c.name == prefix)
        )
        with self._db.read() as conn:
            ids = conn.execute(query.limit(5)).scalars().all()
        if len(ids) == 1:
            return str(ids[0])
        if not ids:
            raise NotFoundError(f"No run matches {prefix!r}. List runs with `meguri runs list`.")
        raise NotFoundError(
            f"{prefix!r} matches several runs ({', '.join(ids)}, ...); give more of the ID."
        )

    def metric_history(self, run_id: str, key: str) -> MetricHistory:
        with self._db.read() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(self._history_sql, (run_id, key))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        if not rows:
            return MetricHistory(key, np.empty(0, np.int64), np.empty(0), np.empty(0))
        # float64 turns NULL (stored NaN) back into NaN in the same pass.
        table = np.array(rows, dtype=np.float64)
        return MetricHistory(key, table[:, 0].astype(np.int64), table[:, 1], table[:, 2])

    def search(
        self,
        experiment_ids: Sequence[str],
        filter: str | None = None,
        order_by: list[str] | None = None,
        max_results: int = 1000,
        offset: int = 0,
        *,
        view: RunView = "active",
    ) -> list[Run]:
        """Runs of the experiments matching ``filter`` (see ``_search``), ordered, one page;
        ``view``: the active runs (default), the ``deleted`` ones or ``all``."""
        queries = ordered_id_queries(
            list(experiment_ids), parse_filter(filter), parse_order(order_by), view
        )
        with self._db.read() as conn:
            return self._loader.complete(conn, _page(conn, queries, max_results, offset))

    def count(self, experiment_ids: Sequence[str], *, view: RunView = "active") -> int:
        query = sa.select(sa.func.count()).select_from(runs)
        query = query.where(runs.c.experiment_id.in_(list(experiment_ids)))
        lifecycle = lifecycle_condition(view)
        if lifecycle is not None:
            query = query.where(lifecycle)
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def _load(self, ids: list[str]) -> list[Run]:
        with self._db.read() as conn:
            return self._loader.load(conn, ids)


@dataclass(frozen=True, slots=True)
class _Owner:
    """Who a run's audit events are attributed to, and where they belong."""

    run_id: str
    created_by: str
    project_id: str

    def event(self, action: str, detail: dict[str, Any], actor: str | None = None) -> NewAuditEvent:
        return NewAuditEvent(
            actor or self.created_by, action, "run", self.run_id, self.project_id, detail
        )


def _owners(
    conn: sa.Connection, where: sa.ColumnElement[bool], *, lock: bool = False
) -> list[_Owner]:
    query = (
        sa.select(runs.c.id, runs.c.created_by, experiments.c.project_id)
        .join(experiments, experiments.c.id == runs.c.experiment_id)
        .where(where)
        .order_by(runs.c.id)
    )
    if lock:
        query = query.with_for_update(of=runs)
    return [_Owner(*row) for row in conn.execute(query)]


def _owner(conn: sa.Connection, run_id: str) -> _Owner | None:
    """The run's owner and project; None for an unknown run (nothing was changed then)."""
    found = _owners(conn, runs.c.id == run_id)
    return found[0] if found else None


def _known_owner(conn: sa.Connection, run_id: str) -> _Owner:
    found = _owner(conn, run_id)
    if found is None:
        raise NotFoundError(f"No run {run_id!r}. List runs with `meguri runs list`.")
    return found


def _metric_rows(run_id: str, points: Sequence[PointTuple]) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "key": k, "value": _nan_to_null(v), "step": s, "timestamp": t}
        for k, v, s, t in points
    ]


def _page(
    conn: sa.Connection, queries: list[sa.Select[Any]], limit: int, offset: int
) -> list[tuple[Any, ...]]:
    """``limit`` rows from ``offset`` of the concatenation of ``queries``' results."""
    rows: list[tuple[Any, ...]] = []
    for query in queries:
        if len(rows) >= limit:
            break
        got = conn.execute(query.limit(limit - len(rows)).offset(offset)).all()
        if offset and not got:  # the page starts past this part: skip all of it
            total = conn.execute(sa.select(sa.func.count()).select_from(query.subquery()))
            offset = max(0, offset - int(total.scalar_one()))
        else:
            offset = 0
        rows.extend(got)
    return rows
