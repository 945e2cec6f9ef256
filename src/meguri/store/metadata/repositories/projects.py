"""Projects: the root aggregate every other record belongs to."""

from __future__ import annotations

import time

import sqlalchemy as sa

from meguri.errors import NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import NewAuditEvent, Project
from meguri.store.metadata._schema import projects
from meguri.store.metadata.repositories.audit import record


class ProjectRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure(self, name: str, created_by: str) -> Project:
        """The project called ``name``, created if it does not exist yet (race-safe)."""
        found = self.find(name)
        if found is not None:
            return found
        project_id = new_id("prj")
        row = {
            "id": project_id,
            "name": name,
            "created_at": time.time(),
            "created_by": created_by,
        }
        try:
            with self._db.write() as conn:
                conn.execute(projects.insert(), row)
                event = NewAuditEvent(
                    created_by, "project.created", "project", project_id, project_id, {"name": name}
                )
                record(conn, [event])
        except sa.exc.IntegrityError:
            pass  # another process created it first
        found = self.find(name)
        assert found is not None
        return found

    def find(self, name: str) -> Project | None:
        with self._db.read() as conn:
            row = conn.execute(sa.select(projects).where(projects.c.name == name)).one_or_none()
        return None if row is None else Project(**row._mapping)

    def get(self, name: str) -> Project:
        found = self.find(name)
        if found is None:
            raise NotFoundError(
                f"No project named {name!r}. Run `meguri init` in the project folder."
            )
        return found

    def list(self) -> list[Project]:
        with self._db.read() as conn:
            rows = conn.execute(sa.select(projects).order_by(projects.c.name)).all()
        return [Project(**r._mapping) for r in rows]
