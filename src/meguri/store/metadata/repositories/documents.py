"""Documents (design notes, operations manual, ...) and their numbered versions.

A document is a name within a project; each stored text is a version numbered 1, 2, ... Adding
a text identical to the latest version (same sha256 of its UTF-8 bytes) stores nothing and
returns that version; reverting to an older text is a change and gets a new number. Numbers are
allocated inside one write transaction that locks the document's row, so concurrent writers
queue; the unique constraint on ``(document, version)`` is the backstop, and a writer that
loses a race (e.g. two creating the same new document) retries.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from dataclasses import asdict

import sqlalchemy as sa

from meguri.errors import ConflictError, NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import Document, DocumentVersion, NewAuditEvent
from meguri.store.metadata._schema import document_versions, documents
from meguri.store.metadata.repositories._named import ensure_named
from meguri.store.metadata.repositories.audit import record

_RETRIES = 8


def content_hash(content: str) -> str:
    """The sha256 hex digest of ``content`` encoded as UTF-8."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


class DocumentRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add_version(
        self,
        project_id: str,
        name: str,
        *,
        content: str,
        created_by: str,
        message: str | None = None,
    ) -> tuple[DocumentVersion, bool]:
        """Store ``content`` as the next version of document ``name`` (created if new).

        Returns ``(version, created)``; ``created`` is False when ``content`` equals the latest
        version, which is returned unchanged.
        """
        digest = content_hash(content)
        for _ in range(_RETRIES):
            try:
                with self._db.write() as conn:
                    return self._add(conn, project_id, name, digest, content, created_by, message)
            except sa.exc.IntegrityError:
                continue  # a concurrent writer took the number (or created the document)
        raise ConflictError(
            f"Could not store a new version of document {name!r}: other writers kept taking "
            "the next number; try again"
        )

    def _add(
        self,
        conn: sa.Connection,
        project_id: str,
        name: str,
        digest: str,
        content: str,
        created_by: str,
        message: str | None,
    ) -> tuple[DocumentVersion, bool]:
        document_id = ensure_named(
            conn,
            documents,
            prefix="doc",
            project_id=project_id,
            name=name,
            created_by=created_by,
        )
        latest = _latest(conn, document_id)
        if latest is not None and latest.hash == digest:
            return latest, False
        version = DocumentVersion(
            id=new_id("docv"),
            document_id=document_id,
            version=1 if latest is None else latest.version + 1,
            hash=digest,
            content=content,
            message=message or None,
            created_at=time.time(),
            created_by=created_by,
        )
        conn.execute(document_versions.insert(), asdict(version))
        detail = {"name": name, "version": version.version, "hash": digest, "message": message}
        event = NewAuditEvent(
            created_by, "document.version_added", "document_version", version.id, project_id, detail
        )
        record(conn, [event])
        return version, True

    def find(self, project_id: str, name: str) -> Document | None:
        query = sa.select(documents).where(
            documents.c.project_id == project_id, documents.c.name == name
        )
        with self._db.read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else Document(**row._mapping)

    def get(self, project_id: str, name: str) -> Document:
        found = self.find(project_id, name)
        if found is None:
            raise NotFoundError(
                f"No document named {name!r} in this project; `meguri docs list` lists them, "
                "`meguri docs add NAME FILE` adds one"
            )
        return found

    def list(self, project_id: str) -> builtins.list[Document]:
        """The project's documents by name."""
        query = sa.select(documents).where(documents.c.project_id == project_id)
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(documents.c.name)).all()
        return [Document(**r._mapping) for r in rows]

    def latest_versions(self, project_id: str) -> dict[str, DocumentVersion]:
        """Each document's latest version, by document name (one query)."""
        v = document_versions.c
        newest = (
            sa.select(v.document_id, sa.func.max(v.version).label("version"))
            .group_by(v.document_id)
            .subquery()
        )
        query = (
            sa.select(documents.c.name, document_versions)
            .join(documents, documents.c.id == v.document_id)
            .join(
                newest,
                sa.and_(newest.c.document_id == v.document_id, newest.c.version == v.version),
            )
            .where(documents.c.project_id == project_id)
            .order_by(documents.c.name)
        )
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        return {r.name: _version(r) for r in rows}

    def versions(self, project_id: str, name: str) -> builtins.list[DocumentVersion]:
        """Every version of document ``name``, oldest first."""
        document = self.get(project_id, name)
        query = sa.select(document_versions).where(document_versions.c.document_id == document.id)
        with self._db.read() as conn:
            rows = conn.execute(query.order_by(document_versions.c.version)).all()
        return [_version(r) for r in rows]

    def version(self, project_id: str, name: str, version: int | None = None) -> DocumentVersion:
        """Version ``version`` of document ``name`` (``None``: the latest)."""
        document = self.get(project_id, name)
        with self._db.read() as conn:
            if version is None:
                found = _latest(conn, document.id)
            else:
                found = _numbered(conn, document.id, version)
        if found is None:
            raise NotFoundError(
                f"Document {name!r} has no version {version}; `meguri docs history {name}` "
                "lists its versions"
            )
        return found


def _version(row: sa.Row[tuple[object, ...]]) -> DocumentVersion:
    fields = DocumentVersion.__dataclass_fields__
    return DocumentVersion(**{k: v for k, v in row._mapping.items() if k in fields})


def _latest(conn: sa.Connection, document_id: str) -> DocumentVersion | None:
    query = (
        sa.select(document_versions)
        .where(document_versions.c.document_id == document_id)
        .order_by(document_versions.c.version.desc())
        .limit(1)
    )
    row = conn.execute(query).one_or_none()
    return None if row is None else _version(row)


def _numbered(conn: sa.Connection, document_id: str, number: int) -> DocumentVersion | None:
    query = sa.select(document_versions).where(
        document_versions.c.document_id == document_id, document_versions.c.version == number
    )
    row = conn.execute(query).one_or_none()
    return None if row is None else _version(row)
