"""Datasets and their numbered, immutable versions (the data catalog).

A dataset is a name within a project; each distinct content is a version numbered 1, 2, ...
The caller decides what identifies content (``meguri.data`` hashes the rows and the schema):
adding a version whose ``content_hash`` is already stored for the dataset stores nothing and
returns that version, whichever number it has, so identical data is never kept twice. Numbers
are allocated inside one write transaction that locks the dataset's row (PostgreSQL) or holds
SQLite's write lock; the unique constraints on ``(dataset, version)`` and ``(dataset,
content_hash)`` are the backstop, and a writer that loses a race retries, then finds the
other's version when the content was the same.

A version's parents (the versions it was derived from, in order) are written in the same
transaction as the version, so lineage is never half-recorded. So is each change's audit event
(a new version, a report digest, a tag); changes whose caller names no actor (``by``) are
attributed to ``system``.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import sqlalchemy as sa

from meguri.errors import ConflictError, NotFoundError
from meguri.store._ids import new_id
from meguri.store.metadata._engine import Database
from meguri.store.metadata._entities import Dataset, DatasetVersion, NewAuditEvent
from meguri.store.metadata._schema import (
    dataset_tags,
    dataset_version_parents,
    dataset_versions,
    datasets,
)
from meguri.store.metadata.repositories._named import ensure_named
from meguri.store.metadata.repositories.audit import SYSTEM, record

_RETRIES = 8
DigestKind = Literal["profile", "quality"]
_DIGEST_COLUMNS: dict[str, str] = {"profile": "profile_digest", "quality": "quality_digest"}


@dataclass(frozen=True)
class NewDatasetVersion:
    """What a caller knows of a version before it is stored (see ``add_version``)."""

    content_hash: str
    schema: dict[str, str]
    row_count: int
    byte_size: int
    data_digest: str
    operation: str
    created_by: str
    source_uri: str | None = None
    format: str | None = None
    read_options: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    parents: Sequence[str] = ()
    description: str | None = None


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


_VERSION_COLUMNS = (datasets.c.name, *dataset_versions.c)


def _version(row: sa.Row[Any], parents: tuple[str, ...] = ()) -> DatasetVersion:
    m = row._mapping
    return DatasetVersion(
        id=m["id"],
        dataset_id=m["dataset_id"],
        name=m["name"],
        version=m["version"],
        content_hash=m["content_hash"],
        schema=orjson.loads(m["schema_json"]),
        row_count=m["row_count"],
        byte_size=m["byte_size"],
        source_uri=m["source_uri"],
        format=m["format"],
        read_options=orjson.loads(m["read_options_json"]),
        data_digest=m["data_digest"],
        profile_digest=m["profile_digest"],
        quality_digest=m["quality_digest"],
        operation=m["operation"],
        lineage=orjson.loads(m["lineage_json"]),
        created_at=m["created_at"],
        created_by=m["created_by"],
        parents=parents,
    )


def _select_versions() -> sa.Select[Any]:
    return sa.select(*_VERSION_COLUMNS).join(
        datasets, datasets.c.id == dataset_versions.c.dataset_id
    )


def _parents_of(conn: sa.Connection, ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    p = dataset_version_parents.c
    query = sa.select(p.child_id, p.parent_id).where(p.child_id.in_(wanted))
    found: dict[str, list[str]] = {}
    for child, parent in conn.execute(query.order_by(p.child_id, p.position)).all():
        found.setdefault(child, []).append(parent)
    return {k: tuple(v) for k, v in found.items()}


def _load(conn: sa.Connection, query: sa.Select[Any]) -> list[DatasetVersion]:
    rows = conn.execute(query).all()
    parents = _parents_of(conn, (r.id for r in rows))
    return [_version(r, parents.get(r.id, ())) for r in rows]


def _tags_of(conn: sa.Connection, ids: Iterable[str]) -> dict[str, dict[str, str]]:
    t = dataset_tags.c
    query = sa.select(t.dataset_id, t.key, t.value).where(t.dataset_id.in_(list(set(ids))))
    found: dict[str, dict[str, str]] = {}
    for dataset_id, key, value in conn.execute(query.order_by(t.dataset_id, t.key)).all():
        found.setdefault(dataset_id, {})[key] = value
    return found


def _datasets(conn: sa.Connection, query: sa.Select[Any]) -> list[Dataset]:
    rows = conn.execute(query).all()
    tags = _tags_of(conn, (r.id for r in rows)) if rows else {}
    return [Dataset(**r._mapping, tags=tags.get(r.id, {})) for r in rows]


class DatasetRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- writes --------------------------------------------------------------------------------

    def add_version(
        self, project_id: str, name: str, new: NewDatasetVersion
    ) -> tuple[DatasetVersion, bool]:
        """Store ``new`` as the next version of dataset ``name`` (created if new).

        Returns ``(version, created)``; ``created`` is False when a version with the same
        ``content_hash`` is already stored for the dataset, which is returned unchanged.
        Raises NotFoundError for an unknown project or parent version.
        """
        for _ in range(_RETRIES):
            try:
                with self._db.write() as conn:
                    return self._add(conn, project_id, name, new)
            except sa.exc.IntegrityError:
                continue  # a concurrent writer took the number, the hash or the dataset
        raise ConflictError(
            f"Could not store a new version of dataset {name!r}: other writers kept taking "
            "the next number; try again"
        )

    def _add(
        self, conn: sa.Connection, project_id: str, name: str, new: NewDatasetVersion
    ) -> tuple[DatasetVersion, bool]:
        dataset_id = ensure_named(
            conn,
            datasets,
            prefix="ds",
            project_id=project_id,
            name=name,
            created_by=new.created_by,
            description=new.description,
        )
        same = _load(conn, _select_versions().where(_same_content(dataset_id, new.content_hash)))
        if same:
            return same[0], False
        _require_versions(conn, new.parents)
        row = self._row(conn, dataset_id, new)
        conn.execute(dataset_versions.insert(), row)
        links = [
            {"child_id": row["id"], "parent_id": parent, "position": i}
            for i, parent in enumerate(dict.fromkeys(new.parents))
        ]
        if links:
            conn.execute(dataset_version_parents.insert(), links)
        detail = {
            "name": name,
            "version": row["version"],
            "content_hash": new.content_hash,
            "operation": new.operation,
            "rows": new.row_count,
            "parents": list(dict.fromkeys(new.parents)),
        }
        event = NewAuditEvent(
            new.created_by,
            "dataset.version_added",
            "dataset_version",
            row["id"],
            project_id,
            detail,
        )
        record(conn, [event])
        return _load(conn, _select_versions().where(dataset_versions.c.id == row["id"]))[0], True

    def _row(self, conn: sa.Connection, dataset_id: str, new: NewDatasetVersion) -> dict[str, Any]:
        v = dataset_versions.c
        latest = conn.execute(
            sa.select(sa.func.max(v.version)).where(v.dataset_id == dataset_id)
        ).scalar_one_or_none()
        return {
            "id": new_id("dsv"),
            "dataset_id": dataset_id,
            "version": (latest or 0) + 1,
            "content_hash": new.content_hash,
            "schema_json": _dumps(new.schema),
            "row_count": new.row_count,
            "byte_size": new.byte_size,
            "source_uri": new.source_uri,
            "format": new.format,
            "read_options_json": _dumps(new.read_options),
            "data_digest": new.data_digest,
            "profile_digest": None,
            "quality_digest": None,
            "operation": new.operation,
            "lineage_json": _dumps(new.lineage),
            "created_at": time.time(),
            "created_by": new.created_by,
        }

    def set_digest(
        self, version_id: str, kind: DigestKind, digest: str, *, by: str | None = None
    ) -> DatasetVersion:
        """Record the artifact digest of a version's profile or quality report (replacing any)."""
        column = _DIGEST_COLUMNS.get(kind)
        if column is None:
            raise ValueError(f"kind must be one of {sorted(_DIGEST_COLUMNS)}, not {kind!r}")
        with self._db.write() as conn:
            done = conn.execute(
                dataset_versions.update()
                .where(dataset_versions.c.id == version_id)
                .values({column: digest})
            )
            if done.rowcount != 1:
                raise _no_version(version_id)
            project_id = conn.execute(
                sa.select(datasets.c.project_id)
                .join(dataset_versions, dataset_versions.c.dataset_id == datasets.c.id)
                .where(dataset_versions.c.id == version_id)
            ).scalar_one()
            detail = {"kind": kind, "digest": digest}
            event = NewAuditEvent(
                by or SYSTEM,
                "dataset.report_set",
                "dataset_version",
                version_id,
                project_id,
                detail,
            )
            record(conn, [event])
        return self.get_version(version_id)

    def set_tag(self, dataset_id: str, key: str, value: str = "", *, by: str | None = None) -> None:
        """Set tag ``key`` of a dataset to ``value`` (replacing an earlier value)."""
        t = dataset_tags.c
        with self._db.write() as conn:
            project_id = _project_of(conn, dataset_id)
            if project_id is None:
                raise NotFoundError(
                    f"No dataset with id {dataset_id!r}; `meguri data list` lists them"
                )
            conn.execute(dataset_tags.delete().where(t.dataset_id == dataset_id, t.key == key))
            conn.execute(
                dataset_tags.insert(), {"dataset_id": dataset_id, "key": key, "value": value}
            )
            detail = {"key": key, "value": value}
            record(conn, [_tag_event(by, "dataset.tag_set", dataset_id, project_id, detail)])

    def delete_tag(self, dataset_id: str, key: str, *, by: str | None = None) -> bool:
        """Remove tag ``key``; True when it was set."""
        t = dataset_tags.c
        with self._db.write() as conn:
            done = conn.execute(
                dataset_tags.delete().where(t.dataset_id == dataset_id, t.key == key)
            )
            project_id = _project_of(conn, dataset_id) if done.rowcount else None
            if project_id is not None:
                event = _tag_event(by, "dataset.tag_deleted", dataset_id, project_id, {"key": key})
                record(conn, [event])
        return bool(done.rowcount)

    # -- reads ---------------------------------------------------------------------------------

    def find(self, project_id: str, name: str) -> Dataset | None:
        query = sa.select(datasets).where(
            datasets.c.project_id == project_id, datasets.c.name == name
        )
        with self._db.read() as conn:
            found = _datasets(conn, query)
        return found[0] if found else None

    def get(self, project_id: str, name: str) -> Dataset:
        found = self.find(project_id, name)
        if found is None:
            raise NotFoundError(
                f"No dataset named {name!r} in this project; `meguri data list` lists them, "
                "`meguri data ingest URI --name NAME` adds one"
            )
        return found

    def list(self, project_id: str) -> builtins.list[Dataset]:
        """The project's datasets by name, with their tags."""
        query = sa.select(datasets).where(datasets.c.project_id == project_id)
        with self._db.read() as conn:
            return _datasets(conn, query.order_by(datasets.c.name))

    def versions(self, project_id: str, name: str) -> builtins.list[DatasetVersion]:
        """Every version of dataset ``name``, oldest first."""
        dataset = self.get(project_id, name)
        query = _select_versions().where(dataset_versions.c.dataset_id == dataset.id)
        with self._db.read() as conn:
            return _load(conn, query.order_by(dataset_versions.c.version))

    def version(self, project_id: str, name: str, number: int | None = None) -> DatasetVersion:
        """Version ``number`` of dataset ``name`` (``None``: the latest)."""
        dataset = self.get(project_id, name)
        v = dataset_versions.c
        query = _select_versions().where(v.dataset_id == dataset.id)
        if number is None:
            query = query.order_by(v.version.desc()).limit(1)
        else:
            query = query.where(v.version == number)
        with self._db.read() as conn:
            found = _load(conn, query)
        if not found:
            raise NotFoundError(
                f"Dataset {name!r} has no version {number}; `meguri data history {name}` "
                "lists its versions"
            )
        return found[0]

    def find_by_hash(self, project_id: str, name: str, content_hash: str) -> DatasetVersion | None:
        """The version of dataset ``name`` whose content hash is ``content_hash``, if stored."""
        query = _select_versions().where(
            datasets.c.project_id == project_id,
            datasets.c.name == name,
            dataset_versions.c.content_hash == content_hash,
        )
        with self._db.read() as conn:
            found = _load(conn, query)
        return found[0] if found else None

    def get_version(self, version_id: str) -> DatasetVersion:
        with self._db.read() as conn:
            found = _load(conn, _select_versions().where(dataset_versions.c.id == version_id))
        if not found:
            raise _no_version(version_id)
        return found[0]

    def get_versions(self, version_ids: Iterable[str]) -> dict[str, DatasetVersion]:
        """The versions of ``version_ids`` that exist, by id (one query)."""
        wanted = builtins.list(set(version_ids))
        if not wanted:
            return {}
        with self._db.read() as conn:
            found = _load(conn, _select_versions().where(dataset_versions.c.id.in_(wanted)))
        return {v.id: v for v in found}

    def match(
        self, project_id: str, prefix: str, *, limit: int = 10
    ) -> builtins.list[DatasetVersion]:
        """Versions of the project whose id starts with ``prefix`` (at most ``limit``)."""
        query = _select_versions().where(
            datasets.c.project_id == project_id,
            dataset_versions.c.id.startswith(prefix, autoescape=True),
        )
        with self._db.read() as conn:
            return _load(conn, query.order_by(dataset_versions.c.id).limit(limit))

    def latest_versions(self, project_id: str) -> dict[str, DatasetVersion]:
        """Each dataset's latest version, by dataset name (one query, plus one for parents)."""
        v = dataset_versions.c
        newest = (
            sa.select(v.dataset_id, sa.func.max(v.version).label("version"))
            .group_by(v.dataset_id)
            .subquery()
        )
        query = (
            _select_versions()
            .join(
                newest, sa.and_(newest.c.dataset_id == v.dataset_id, newest.c.version == v.version)
            )
            .where(datasets.c.project_id == project_id)
            .order_by(datasets.c.name)
        )
        with self._db.read() as conn:
            return {found.name: found for found in _load(conn, query)}

    def ancestors(self, version_id: str) -> dict[str, DatasetVersion]:
        """``version_id`` and every version it was derived from, by id (one query per
        generation)."""
        start = self.get_version(version_id)
        found = {start.id: start}
        frontier = set(start.parents)
        while frontier:
            batch = self.get_versions(frontier)
            found.update(batch)
            frontier = {p for v in batch.values() for p in v.parents} - found.keys()
        return found

    def children(self, version_id: str) -> builtins.list[DatasetVersion]:
        """The versions derived directly from ``version_id``."""
        p = dataset_version_parents.c
        query = (
            _select_versions()
            .join(dataset_version_parents, p.child_id == dataset_versions.c.id)
            .where(p.parent_id == version_id)
        )
        with self._db.read() as conn:
            return _load(conn, query.order_by(dataset_versions.c.id))


def _project_of(conn: sa.Connection, dataset_id: str) -> str | None:
    query = sa.select(datasets.c.project_id).where(datasets.c.id == dataset_id)
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else str(found)


def _tag_event(
    by: str | None, action: str, dataset_id: str, project_id: str, detail: dict[str, Any]
) -> NewAuditEvent:
    return NewAuditEvent(by or SYSTEM, action, "dataset", dataset_id, project_id, detail)


def _same_content(dataset_id: str, content_hash: str) -> sa.ColumnElement[bool]:
    v = dataset_versions.c
    return sa.and_(v.dataset_id == dataset_id, v.content_hash == content_hash)


def _require_versions(conn: sa.Connection, ids: Sequence[str]) -> None:
    if not ids:
        return
    query = sa.select(dataset_versions.c.id).where(dataset_versions.c.id.in_(list(ids)))
    missing = set(ids) - set(conn.execute(query).scalars())
    if missing:
        raise NotFoundError(
            f"No dataset version {sorted(missing)[0]!r} to derive from; "
            "`meguri data list` lists the datasets and their versions"
        )


def _no_version(version_id: str) -> NotFoundError:
    return NotFoundError(
        f"No dataset version {version_id!r}; `meguri data list` lists the datasets and "
        "`meguri data history NAME` their versions"
    )
