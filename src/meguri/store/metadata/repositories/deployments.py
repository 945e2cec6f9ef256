"""The deployments aggregate: one deployment per project environment and its numbered revisions.

A revision is numbered 1, 2, ... per deployment. Adding one is optimistic: the caller names the
revision it builds on (``expected``, 0 before the first), and the write transaction, which locks
the deployment's row (PostgreSQL) or holds SQLite's write lock, refuses with
:class:`~meguri.errors.ConflictError` when another writer moved the deployment on meanwhile. Of
two deploy commands racing on one environment, exactly one wins; the unique constraint on
``(deployment, number)`` is the backstop.

Every change is recorded in the audit log in its own transaction (the creation, each revision
and its state changes, the deployment's state, port and supervisor); changes whose caller
names no actor (``by``) are attributed to ``system``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from meguri.errors import ConflictError, NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import (
    Deployment,
    DeploymentRevision,
    DeploymentState,
    DeploymentTarget,
    NewAuditEvent,
    RevisionState,
)
from meguri.store.metadata._schema import deployment_revisions, deployments, projects
from meguri.store.metadata.repositories.audit import SYSTEM, record

__all__ = ["DeploymentRepository", "NewRevision"]


@dataclass(frozen=True)
class NewRevision:
    """A revision before it is stored (see :meth:`DeploymentRepository.add_revision`)."""

    targets: Sequence[DeploymentTarget]
    strategy: str
    created_by: str
    reason: str = "deploy"
    settings: Mapping[str, Any] = field(default_factory=dict)
    state: RevisionState = RevisionState.PENDING


def _dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _deployment(row: sa.Row[Any]) -> Deployment:
    m = dict(row._mapping)
    return Deployment(**{**m, "state": DeploymentState(m["state"])})


def _revision(row: sa.Row[Any]) -> DeploymentRevision:
    m = dict(row._mapping)
    targets = tuple(DeploymentTarget(**t) for t in orjson.loads(m.pop("targets_json")))
    settings = orjson.loads(m.pop("settings_json"))
    detail = orjson.loads(m.pop("detail_json"))
    state = RevisionState(m.pop("state"))
    return DeploymentRevision(**m, targets=targets, settings=settings, detail=detail, state=state)


def _no_deployment(what: str) -> NotFoundError:
    return NotFoundError(
        f"No deployment {what}; `meguri deploy MODEL@VERSION --env ENV` creates one and "
        "`meguri deploy status --env ENV` shows it"
    )


class DeploymentRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- deployments ---------------------------------------------------------------------------

    def ensure(self, project_id: str, environment: str, model_name: str, *, by: str) -> Deployment:
        """The deployment of ``environment`` in the project, created (``starting``) if new."""
        for _ in range(3):
            try:
                with self._db.write() as conn:
                    return self._ensure(conn, project_id, environment, model_name, by)
            except sa.exc.IntegrityError:
                continue  # a concurrent writer created it: read it on the next try
        return self.get(project_id, environment)

    def _ensure(
        self, conn: sa.Connection, project_id: str, environment: str, model_name: str, by: str
    ) -> Deployment:
        found = _find(conn, project_id, environment)
        if found is not None:
            return found
        if (
            conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id)).first()
            is None
        ):
            raise NotFoundError(f"No project with id {project_id!r}; open the workspace first")
        now = time.time()
        row = {
            "id": new_id("dep"),
            "project_id": project_id,
            "environment": environment,
            "model_name": model_name,
            "state": DeploymentState.STARTING.value,
            "port": None,
            "pid": None,
            "current_revision_id": None,
            "current_number": 0,
            "updated_at": now,
            "created_at": now,
            "created_by": by,
        }
        conn.execute(deployments.insert(), row)
        created = _deployment(conn.execute(_by_id(str(row["id"]))).one())
        detail = {"model": model_name}
        record(conn, [_event(by, "deployment.created", created, detail)])
        return created

    def find(self, project_id: str, environment: str) -> Deployment | None:
        with self._db.read() as conn:
            return _find(conn, project_id, environment)

    def get(self, project_id: str, environment: str) -> Deployment:
        found = self.find(project_id, environment)
        if found is None:
            raise _no_deployment(f"for environment {environment!r}")
        return found

    def get_by_id(self, deployment_id: str) -> Deployment:
        with self._db.read() as conn:
            row = conn.execute(_by_id(deployment_id)).one_or_none()
        if row is None:
            raise _no_deployment(repr(deployment_id))
        return _deployment(row)

    def list(self, project_id: str) -> builtins.list[Deployment]:
        """The project's deployments by environment."""
        d = deployments.c
        query = sa.select(deployments).where(d.project_id == project_id).order_by(d.environment)
        with self._db.read() as conn:
            return [_deployment(r) for r in conn.execute(query).all()]

    def update(
        self,
        deployment_id: str,
        *,
        state: DeploymentState | None = None,
        port: int | None = None,
        pid: int | None = None,
        clear_pid: bool = False,
        by: str | None = None,
    ) -> Deployment:
        """Set the given fields (``clear_pid`` empties ``pid``: the supervisor is gone)."""
        values: dict[str, Any] = {"updated_at": time.time()}
        if state is not None:
            values["state"] = state.value
        if port is not None:
            values["port"] = port
        if pid is not None or clear_pid:
            values["pid"] = pid
        with self._db.write() as conn:
            done = conn.execute(
                deployments.update().where(deployments.c.id == deployment_id).values(values)
            )
            if done.rowcount == 0:
                raise _no_deployment(repr(deployment_id))
            updated = _deployment(conn.execute(_by_id(deployment_id)).one())
            detail = {k: v for k, v in values.items() if k != "updated_at"}
            record(conn, [_event(by, "deployment.updated", updated, detail)])
            return updated

    # -- revisions -----------------------------------------------------------------------------

    def add_revision(
        self, deployment_id: str, new: NewRevision, *, expected: int
    ) -> DeploymentRevision:
        """Store ``new`` as revision ``expected + 1`` and make it the deployment's current one.

        Raises :class:`ConflictError` when the deployment's current revision is not ``expected``
        any more (another deploy or rollback won the race)."""
        try:
            with self._db.write() as conn:
                return self._add(conn, deployment_id, new, expected)
        except sa.exc.IntegrityError:
            raise _conflict(expected, expected + 1) from None

    def _add(
        self, conn: sa.Connection, deployment_id: str, new: NewRevision, expected: int
    ) -> DeploymentRevision:
        row = conn.execute(_by_id(deployment_id).with_for_update()).one_or_none()
        if row is None:
            raise _no_deployment(repr(deployment_id))
        if row.current_number != expected:
            raise _conflict(expected, row.current_number)
        now = time.time()
        values = {
            "id": new_id("drev"),
            "deployment_id": deployment_id,
            "number": expected + 1,
            "targets_json": _dumps([t.to_dict() for t in new.targets]),
            "strategy": new.strategy,
            "settings_json": _dumps(dict(new.settings)),
            "state": new.state.value,
            "step": 0,
            "reason": new.reason,
            "detail_json": "{}",
            "updated_at": now,
            "created_at": now,
            "created_by": new.created_by,
        }
        conn.execute(deployment_revisions.insert(), values)
        primary = next((t for t in new.targets if t.role == "primary"), None)
        changes: dict[str, Any] = {
            "current_revision_id": values["id"],
            "current_number": expected + 1,
            "updated_at": now,
        }
        if primary is not None:
            changes["model_name"] = primary.ref.split("@", 1)[0]
        conn.execute(deployments.update().where(deployments.c.id == deployment_id).values(changes))
        revision = _revision(conn.execute(_revision_by_id(str(values["id"]))).one())
        detail = {
            "number": revision.number,
            "targets": [t.to_dict() for t in new.targets],
            "strategy": new.strategy,
            "reason": new.reason,
            "state": new.state.value,
        }
        event = _event(new.created_by, "deployment.revision_added", _deployment(row), detail)
        record(conn, [event])
        return revision

    def set_revision_state(
        self,
        revision_id: str,
        state: RevisionState,
        *,
        step: int | None = None,
        detail: Mapping[str, Any] | None = None,
        reason: str | None = None,
        by: str | None = None,
    ) -> DeploymentRevision:
        """Move a revision on: its ``state``, and when given its ``step``, ``reason`` and
        ``detail`` (merged into the stored detail)."""
        with self._db.write() as conn:
            row = conn.execute(_revision_by_id(revision_id).with_for_update()).one_or_none()
            if row is None:
                raise _no_revision(revision_id)
            values: dict[str, Any] = {"state": state.value, "updated_at": time.time()}
            if step is not None:
                values["step"] = step
            if reason is not None:
                values["reason"] = reason
            if detail:
                values["detail_json"] = _dumps({**orjson.loads(row.detail_json), **detail})
            r = deployment_revisions.c
            conn.execute(deployment_revisions.update().where(r.id == revision_id).values(values))
            deployment = _deployment(conn.execute(_by_id(row.deployment_id)).one())
            change = {k: v for k, v in values.items() if k not in ("updated_at", "detail_json")}
            change.update(number=row.number, detail=dict(detail or {}))
            record(conn, [_event(by, "deployment.revision_state_set", deployment, change)])
            return _revision(conn.execute(_revision_by_id(revision_id)).one())

    def get_revision(self, revision_id: str) -> DeploymentRevision:
        with self._db.read() as conn:
            row = conn.execute(_revision_by_id(revision_id)).one_or_none()
        if row is None:
            raise _no_revision(revision_id)
        return _revision(row)

    def find_revision(self, deployment_id: str, number: int) -> DeploymentRevision | None:
        r = deployment_revisions.c
        query = sa.select(deployment_revisions).where(
            r.deployment_id == deployment_id, r.number == number
        )
        with self._db.read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _revision(row)

    def revisions(self, deployment_id: str) -> builtins.list[DeploymentRevision]:
        """The deployment's revisions, oldest first."""
        r = deployment_revisions.c
        query = (
            sa.select(deployment_revisions)
            .where(r.deployment_id == deployment_id)
            .order_by(r.number)
        )
        with self._db.read() as conn:
            return [_revision(row) for row in conn.execute(query).all()]


def _event(
    by: str | None, action: str, deployment: Deployment, detail: dict[str, Any]
) -> NewAuditEvent:
    return NewAuditEvent(
        by or SYSTEM,
        action,
        "deployment",
        deployment.id,
        deployment.project_id,
        {"environment": deployment.environment, **detail},
    )


def _find(conn: sa.Connection, project_id: str, environment: str) -> Deployment | None:
    d = deployments.c
    query = sa.select(deployments).where(d.project_id == project_id, d.environment == environment)
    row = conn.execute(query).one_or_none()
    return None if row is None else _deployment(row)


def _by_id(deployment_id: str) -> sa.Select[Any]:
    return sa.select(deployments).where(deployments.c.id == deployment_id)


def _revision_by_id(revision_id: str) -> sa.Select[Any]:
    return sa.select(deployment_revisions).where(deployment_revisions.c.id == revision_id)


def _conflict(expected: int, found: int) -> ConflictError:
    return ConflictError(
        f"The deployment moved on while this change was prepared: it was expected at revision "
        f"{expected} and is at {found} (another deploy or rollback won). Check "
        "`meguri deploy status --env ENV` and try again"
    )


def _no_revision(revision_id: str) -> NotFoundError:
    return NotFoundError(
        f"No deployment revision {revision_id!r}; `meguri deploy history --env ENV` lists them"
    )
