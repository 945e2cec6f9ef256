"""Spec versions: every distinct ``meguri.yaml`` of a project, stored once.

The caller decides what identifies a spec (``meguri.spec`` hashes its normalised content);
this repository keeps one version per ``(project, hash)``: adding a spec whose hash is already
stored returns the stored version. Versions are numbered 1, 2, ... in the order they were first
stored (by ``created_at``, then id); the number is derived, not stored.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import asdict

import sqlalchemy as sa

from meguri.errors import NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import NewAuditEvent, SpecVersion
from meguri.store.metadata._schema import projects, spec_versions
from meguri.store.metadata.repositories.audit import record

_ORDER = (spec_versions.c.created_at, spec_versions.c.id)


def _entity(row: sa.Row[tuple[object, ...]]) -> SpecVersion:
    return SpecVersion(**row._mapping)


def _saved_event(version: SpecVersion) -> NewAuditEvent:
    detail = {"hash": version.hash, "message": version.message}
    return NewAuditEvent(
        version.created_by, "spec.saved", "spec_version", version.id, version.project_id, detail
    )


class SpecRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        project_id: str,
        *,
        content: str,
        hash: str,
        created_by: str,
        message: str | None = None,
    ) -> tuple[SpecVersion, bool]:
        """Store a spec version; ``(version, created)``, where ``created`` is False when a
        version with this ``hash`` was already stored for the project (race-safe)."""
        found = self.find_by_hash(project_id, hash)
        if found is not None:
            return found, False
        version = SpecVersion(
            id=new_id("spec"),
            project_id=project_id,
            hash=hash,
            content=content,
            message=message or None,
            created_at=time.time(),
            created_by=created_by,
        )
        try:
            with self._db.write() as conn:
                conn.execute(spec_versions.insert(), asdict(version))
                record(conn, [_saved_event(version)])
        except sa.exc.IntegrityError:
            found = self.find_by_hash(project_id, hash)
            if found is not None:
                return found, False  # another process stored the same spec first
            self._require_project(project_id)
            raise
        return version, True

    def _require_project(self, project_id: str) -> None:
        with self._db.read() as conn:
            query = sa.select(projects.c.id).where(projects.c.id == project_id)
            if conn.execute(query).first() is None:
                raise NotFoundError(
                    f"No project with id {project_id!r}; open the workspace (meguri.init()) "
                    "so that the project exists before saving to it"
                )

    def get(self, version_id: str) -> SpecVersion:
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(spec_versions).where(spec_versions.c.id == version_id)
            ).one_or_none()
        if row is None:
            raise NotFoundError(
                f"No spec version {version_id!r}; `meguri spec history` lists the versions"
            )
        return _entity(row)

    def find_by_hash(self, project_id: str, hash: str) -> SpecVersion | None:
        query = sa.select(spec_versions).where(
            spec_versions.c.project_id == project_id, spec_versions.c.hash == hash
        )
        with self._db.read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _entity(row)

    def latest(self, project_id: str) -> SpecVersion | None:
        """The most recently stored version, or None if the project has none."""
        query = (
            sa.select(spec_versions)
            .where(spec_versions.c.project_id == project_id)
            .order_by(*(c.desc() for c in _ORDER))
            .limit(1)
        )
        with self._db.read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _entity(row)

    def list(self, project_id: str, *, limit: int | None = None) -> builtins.list[SpecVersion]:
        """The project's versions, oldest first (``limit``: the newest ``limit`` of them)."""
        query = sa.select(spec_versions).where(spec_versions.c.project_id == project_id)
        if limit is None:
            query = query.order_by(*_ORDER)
        else:
            query = query.order_by(*(c.desc() for c in _ORDER)).limit(limit)
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        versions = [_entity(r) for r in rows]
        return versions if limit is None else versions[::-1]

    def count(self, project_id: str) -> int:
        query = sa.select(sa.func.count()).where(spec_versions.c.project_id == project_id)
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def nth(self, project_id: str, number: int) -> SpecVersion:
        """Version ``number`` (1 = the first stored)."""
        query = (
            sa.select(spec_versions)
            .where(spec_versions.c.project_id == project_id)
            .order_by(*_ORDER)
            .offset(max(number - 1, 0))
            .limit(1)
        )
        with self._db.read() as conn:
            row = conn.execute(query).one_or_none() if number >= 1 else None
        if row is None:
            total = self.count(project_id)
            raise NotFoundError(
                f"No spec version #{number}; this project has {total} (1 to {total})"
                if total
                else f"No spec version #{number}: none is saved yet; run `meguri spec save`"
            )
        return _entity(row)

    def number(self, version: SpecVersion) -> int:
        """The 1-based number of ``version`` among its project's versions."""
        c = spec_versions.c
        earlier = sa.or_(
            c.created_at < version.created_at,
            sa.and_(c.created_at == version.created_at, c.id <= version.id),
        )
        query = sa.select(sa.func.count()).where(c.project_id == version.project_id, earlier)
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def match(self, project_id: str, prefix: str, *, limit: int = 10) -> builtins.list[SpecVersion]:
        """Versions whose id or hash starts with ``prefix`` (at most ``limit``), oldest first."""
        c = spec_versions.c
        starts = sa.or_(
            c.id.startswith(prefix, autoescape=True), c.hash.startswith(prefix, autoescape=True)
        )
        query = sa.select(spec_versions).where(c.project_id == project_id, starts)
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(*_ORDER).limit(limit)).all()
        return [_entity(r) for r in rows]
