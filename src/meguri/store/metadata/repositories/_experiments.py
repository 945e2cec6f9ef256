"""Experiments, the part of the run repository that groups runs: names, tags, lifecycle.

Experiments and runs are one aggregate with one repository (``store.runs``);
:class:`ExperimentStore` is its base class, kept in this file so that each file stays short.
It also holds the dialect-aware upsert both halves use.

Names stay taken while an experiment is deleted (MLflow behaves the same), so restoring one
never collides; :meth:`ExperimentStore.ensure_experiment` refuses a deleted experiment instead
of adding runs to something hidden.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from meguri.errors import ConflictError, NotFoundError, QuerySyntaxError, TrackingError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import Experiment, NewAuditEvent
from meguri.store.metadata._schema import experiment_tags, experiments, runs
from meguri.store.metadata._search import RUN_VIEWS, RunView
from meguri.store.metadata.repositories.audit import record

__all__ = ["ExperimentStore", "check_name"]


class ExperimentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_experiment(self, project_id: str, name: str, created_by: str) -> Experiment:
        """The experiment ``name`` of the project, created when missing; a deleted one is
        refused (ConflictError) rather than silently given new runs."""
        found = self.find_experiment(project_id, name)
        if found is not None:
            return _active_experiment(found)
        row = {
            "id": new_id("exp"),
            "project_id": project_id,
            "name": name,
            "created_at": time.time(),
            "created_by": created_by,
        }
        try:
            with self._db.write() as conn:
                conn.execute(experiments.insert(), row)
                event = NewAuditEvent(
                    created_by,
                    "experiment.created",
                    "experiment",
                    str(row["id"]),
                    project_id,
                    {"name": name},
                )
                record(conn, [event])
        except sa.exc.IntegrityError:
            pass  # created concurrently
        found = self.find_experiment(project_id, name)
        assert found is not None
        return _active_experiment(found)

    def find_experiment(self, project_id: str, name: str) -> Experiment | None:
        """The experiment named ``name``, deleted or not (names stay taken while deleted)."""
        query = sa.select(experiments).where(
            experiments.c.project_id == project_id, experiments.c.name == name
        )
        with self._db.read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else Experiment(**row._mapping)

    def get_experiment(self, experiment_id: str) -> Experiment:
        """The experiment ``experiment_id``, deleted or not; NotFoundError when unknown."""
        with self._db.read() as conn:
            return _experiment_row(conn, experiment_id)

    def list_experiments(self, project_id: str, *, view: RunView = "active") -> list[Experiment]:
        """The project's experiments by name: the active ones, or as ``view`` says."""
        if view not in RUN_VIEWS:
            raise QuerySyntaxError(f"Unknown view {view!r}; use one of: {', '.join(RUN_VIEWS)}.")
        query = sa.select(experiments).where(experiments.c.project_id == project_id)
        if view != "all":
            deleted = experiments.c.deleted_at
            query = query.where(deleted.is_(None) if view == "active" else deleted.is_not(None))
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(experiments.c.name)).all()
        return [Experiment(**r._mapping) for r in rows]

    def rename_experiment(self, experiment_id: str, name: str, *, by: str) -> Experiment:
        """Rename; ConflictError when the project has another experiment of that name."""
        check_name("experiment", name)
        try:
            with self._db.write() as conn:
                old = _experiment_row(conn, experiment_id)
                if old.name == name:
                    return old
                conn.execute(
                    experiments.update().where(experiments.c.id == experiment_id).values(name=name)
                )
                detail = {"from": old.name, "to": name}
                record(conn, [_experiment_event(old, by, "experiment.renamed", detail)])
        except sa.exc.IntegrityError:
            raise ConflictError(
                f"An experiment named {name!r} already exists in this project (perhaps "
                "deleted); choose another name."
            ) from None
        return self.get_experiment(experiment_id)

    def delete_experiment(self, experiment_id: str, *, by: str) -> bool:
        """Delete the experiment and, at the same instant, its active runs; True when it was
        active (of concurrent calls, one deletes)."""
        now = time.time()
        e, r = experiments.c, runs.c
        with self._db.write() as conn:
            found = _experiment_row(conn, experiment_id)
            changed = conn.execute(
                experiments.update()
                .where(e.id == experiment_id, e.deleted_at.is_(None))
                .values(deleted_at=now)
            ).rowcount
            if not changed:
                return False
            hidden = conn.execute(
                runs.update()
                .where(r.experiment_id == experiment_id, r.deleted_at.is_(None))
                .values(deleted_at=now)
            ).rowcount
            detail = {"name": found.name, "runs": hidden}
            record(conn, [_experiment_event(found, by, "experiment.deleted", detail)])
        return True

    def restore_experiment(self, experiment_id: str, *, by: str) -> bool:
        """Restore the experiment and the runs deleted with it (not those deleted before);
        True when it was deleted."""
        e, r = experiments.c, runs.c
        with self._db.write() as conn:
            found = _experiment_row(conn, experiment_id)
            if found.deleted_at is None:
                return False
            changed = conn.execute(
                experiments.update()
                .where(e.id == experiment_id, e.deleted_at == found.deleted_at)
                .values(deleted_at=None)
            ).rowcount
            if not changed:
                return False
            shown = conn.execute(
                runs.update()
                .where(r.experiment_id == experiment_id, r.deleted_at == found.deleted_at)
                .values(deleted_at=None)
            ).rowcount
            detail = {"name": found.name, "runs": shown}
            record(conn, [_experiment_event(found, by, "experiment.restored", detail)])
        return True

    def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, str], *, by: str) -> None:
        """Set (or overwrite) tags of the experiment."""
        if not tags:
            return
        rows = [{"experiment_id": experiment_id, "key": k, "value": v} for k, v in tags.items()]
        with self._db.write() as conn:
            found = _experiment_row(conn, experiment_id)
            self._upsert(conn, experiment_tags, rows, ("value",))
            detail = {"tags": dict(tags)}
            record(conn, [_experiment_event(found, by, "experiment.tags_set", detail)])

    def delete_experiment_tag(self, experiment_id: str, key: str, *, by: str) -> bool:
        """Remove tag ``key`` of the experiment; True when it was set."""
        t = experiment_tags.c
        with self._db.write() as conn:
            found = _experiment_row(conn, experiment_id)
            gone = conn.execute(
                experiment_tags.delete().where(t.experiment_id == experiment_id, t.key == key)
            )
            if gone.rowcount:
                detail = {"key": key}
                record(conn, [_experiment_event(found, by, "experiment.tag_deleted", detail)])
        return bool(gone.rowcount)

    def experiment_tags(self, experiment_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The tags of each experiment that has some, by experiment id."""
        t = experiment_tags.c
        query = sa.select(t.experiment_id, t.key, t.value).where(
            t.experiment_id.in_(list(experiment_ids))
        )
        out: dict[str, dict[str, str]] = {}
        with self._db.read() as conn:
            for experiment_id, key, value in conn.execute(query.order_by(t.key)):
                out.setdefault(experiment_id, {})[key] = value
        return out

    def _insert_for(self, table: sa.Table) -> Any:
        """An INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL share it)."""
        from sqlalchemy.dialects import postgresql, sqlite

        return sqlite.insert(table) if self._db.is_sqlite else postgresql.insert(table)

    def _upsert(
        self,
        conn: sa.Connection,
        table: sa.Table,
        rows: list[dict[str, Any]],
        update: tuple[str, ...],
    ) -> None:
        stmt = self._insert_for(table)
        keys = [c.name for c in table.primary_key.columns]
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={c: stmt.excluded[c] for c in update}
        )
        conn.execute(stmt, rows)


def check_name(kind: str, name: str) -> str:
    if not name.strip() or len(name) > 200:
        raise TrackingError(
            f"A {kind} name must be 1 to 200 characters and not blank, not {name[:60]!r}."
        )
    return name


def _active_experiment(found: Experiment) -> Experiment:
    if found.deleted:
        raise ConflictError(
            f"Experiment {found.name!r} is deleted; restore it (MlflowClient()"
            f".restore_experiment({found.id!r})) or choose another name."
        )
    return found


def _experiment_row(conn: sa.Connection, experiment_id: str) -> Experiment:
    row = conn.execute(
        sa.select(experiments).where(experiments.c.id == experiment_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"No experiment {experiment_id!r}.")
    return Experiment(**row._mapping)


def _experiment_event(
    experiment: Experiment, by: str, action: str, detail: dict[str, Any]
) -> NewAuditEvent:
    return NewAuditEvent(by, action, "experiment", experiment.id, experiment.project_id, detail)
